//! Issue 6: each defect found by probing, pinned by a test on both backends, and the contract
//! a generated client can trust.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use leeway_e2e::*;
use serde_json::{Value, json};

fn problem(r: &Resp, status: u16, code: &str) {
    assert_eq!((r.status, r.str("code").as_str()), (status, code), "{}", r.body);
    assert_eq!(r.header("content-type").as_deref(), Some("application/problem+json"));
}

fn control(check_every: Value) -> Value {
    json!([{"description": "Allow-list", "kind": "preventive", "effectiveness": "high", "check_every": check_every}])
}

#[tokio::test]
async fn check_every_is_enforced_and_never_stored_out_of_range() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    for bad in [json!(0), json!(366), json!(2_147_483_647_i64), json!(4_294_967_296_i64), json!(-1), json!(1.5)] {
        let r = app
            .post("/v1/exceptions", &cast.requester, exception_body(json!({"controls": control(bad.clone())})))
            .await;
        problem(&r, 422, "validation_failed");
        assert_eq!(r.fields(), ["controls[0].check_every"], "{bad}: {}", r.body);
    }
    let id = app.create(&cast, json!({"controls": control(json!(365)), "submit": true})).await;
    let e = app.get(&format!("/v1/exceptions/{id}"), &cast.officer).await;
    assert_eq!(e.body["controls"][0]["check_every"], 365);
    let c = e.body["controls"][0]["id"].as_str().unwrap().to_owned();
    let added = app
        .post(
            &format!("/v1/exceptions/{id}/controls"),
            &cast.analyst,
            json!({"description": "Monitoring", "kind": "detective", "effectiveness": "low", "check_every": 2_147_483_647_i64}),
        )
        .await;
    assert_eq!((added.status, added.fields()), (422, vec!["check_every".to_owned()]), "{}", added.body);
    // verifying the control computes its next check without overflow
    let r = app.change_control(&id, &c, &cast.analyst, json!({"status": "verified", "evidence": "rules loaded"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["controls"][0]["check_due_at"].is_string());
}

#[tokio::test]
async fn a_damaged_stored_value_answers_a_500_problem_not_a_dropped_connection() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let id = app.create(&cast, json!({"controls": control(json!(30))})).await;
    // a value from before the fix (check_every of 2^31 - 1), written behind the API's back
    app.sql(&format!(
        "UPDATE exceptions SET controls = replace(controls, '\"check_every\":30', '\"check_every\":2147483647') \
         WHERE id = '{id}'"
    ));
    for path in [format!("/v1/exceptions/{id}"), "/v1/exceptions".to_owned()] {
        let r = app.get(&path, &cast.officer).await;
        problem(&r, 500, "internal");
        assert_eq!(r.str("instance"), format!("urn:uuid:{}", r.header("x-request-id").unwrap()));
    }
    // the other exceptions stay readable one by one
    let other = app.create(&cast, json!({})).await;
    assert_eq!(app.get(&format!("/v1/exceptions/{other}"), &cast.officer).await.status, 200);
}

#[tokio::test]
async fn nul_characters_are_refused_at_the_edge_naming_where() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let r = app
        .post(
            "/v1/exceptions",
            &cast.requester,
            exception_body(json!({"title": "Legacy\u{0}VPN", "tags": ["ok", "b\u{0}d"], "business_impact": "\u{0}"})),
        )
        .await;
    problem(&r, 422, "validation_failed");
    let mut fields = r.fields();
    fields.sort();
    assert_eq!(fields, ["business_impact", "tags[1]", "title"], "{}", r.body);
    assert!(r.body["errors"].as_array().unwrap().iter().all(|e| e["code"] == "invalid_character"));
    let r = app.get("/v1/exceptions?asset=vpn%00x", &cast.officer).await;
    problem(&r, 400, "invalid_query");
    assert_eq!(r.str("parameter"), "asset");
    let r = app.get("/v1/exceptions?q=%00", &cast.officer).await;
    assert_eq!(r.str("parameter"), "q");
    let r = app.get("/v1/exceptions?cursor=%00", &cast.officer).await;
    problem(&r, 400, "invalid_cursor");
    // a token claim with NUL
    let now = app.now().timestamp();
    let sign = |claims: Value| {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes()))
            .unwrap()
    };
    let t = sign(json!({"sub": "ali\u{0}ce", "roles": ["requester"], "exp": now + 60}));
    problem(&app.get("/v1/me", &t).await, 401, "unauthorized");
    let t = sign(json!({"sub": "alice", "roles": ["requester"], "business_unit": "pay\u{0}", "exp": now + 60}));
    problem(&app.get("/v1/me", &t).await, 401, "unauthorized");
    // nothing was written
    assert!(app.get("/v1/exceptions", &cast.officer).await.body["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn dates_outside_1970_to_9999_are_refused_in_bodies_and_cursors() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    for (field, value) in [
        ("remediation_due", "-262143-01-01"),
        ("remediation_due", "0001-01-01"),
        ("expires_at", "0001-01-01T00:00:00Z"),
        ("starts_at", "1969-12-31T23:59:59Z"),
    ] {
        let r = app.post("/v1/exceptions", &cast.requester, exception_body(json!({field: value}))).await;
        problem(&r, 422, "validation_failed");
        assert_eq!(r.fields(), [field], "{value}: {}", r.body);
    }
    let r = app.post("/v1/exceptions", &cast.requester, exception_body(json!({"expires_at": "next tuesday"}))).await;
    let message = r.body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("RFC 3339") && message.contains("2026-01-31T09:00:00Z"), "{message}");
    // a crafted cursor: the real one with its position moved outside the calendar, or its id
    // replaced, is refused, never sent to the database
    for _ in 0..3 {
        app.create(&cast, json!({})).await;
    }
    let page = app.get("/v1/exceptions?limit=1", &cast.officer).await;
    let cursor = page.str("next_cursor");
    let mut decoded: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&cursor).unwrap()).unwrap();
    assert_eq!(app.get(&format!("/v1/exceptions?limit=1&cursor={cursor}"), &cast.officer).await.status, 200);
    for (member, forged) in
        [("t", json!("0001-01-01T00:00:00Z")), ("t", json!("+262142-01-01T00:00:00Z")), ("id", json!("x' OR 1=1"))]
    {
        let original = decoded[member].clone();
        decoded[member] = forged;
        let c = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&decoded).unwrap());
        problem(&app.get(&format!("/v1/exceptions?limit=1&cursor={c}"), &cast.officer).await, 400, "invalid_cursor");
        decoded[member] = original;
    }
}

#[tokio::test]
async fn the_per_asset_limit_holds_at_the_final_approval() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let asset = json!({"assets": ["db-01"]});
    for i in 0..4 {
        app.approved(&cast, json!({"assets": ["db-01"], "control_ids": [format!("A-{i}")]})).await;
    }
    // three more submitted and assessed while four hold the asset: each submit is within the limit
    let mut waiting = Vec::new();
    for i in 0..3 {
        let mut body = asset.clone();
        body["control_ids"] = json!([format!("B-{i}")]);
        waiting.push(app.pending(&cast, body).await);
    }
    assert_eq!(app.act(&waiting[0], "approve", &cast.officer).await.str("status"), "active", "the fifth place");
    for id in &waiting[1..] {
        let r = app.act(id, "approve", &cast.officer).await;
        problem(&r, 422, "limit_exceeded");
        assert_eq!((r.str("asset").as_str(), r.body["limit"].as_u64()), ("db-01", Some(5)));
        assert_eq!(r.body["held_by"].as_array().unwrap().len(), 5);
        let e = app.get(&format!("/v1/exceptions/{id}"), &cast.officer).await;
        assert_eq!(e.str("status"), "pending_approval", "the refused approval changed nothing");
        assert!(e.body["approvals"].as_array().unwrap().is_empty());
    }
    let covering = app.get("/v1/exceptions?asset=db-01&covering=true&limit=50", &cast.officer).await;
    assert_eq!(covering.body["items"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn tokens_with_bad_time_claims_crit_or_excess_size_are_refused() {
    let app = spawn().await;
    let now = app.now().timestamp();
    let sign = |header: Header, claims: Value| {
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
    };
    let claims = || json!({"sub": "alice", "roles": ["requester"], "exp": now + 600, "nbf": now - 10, "iat": now});
    let good = sign(Header::new(Algorithm::HS256), claims());
    assert_eq!(app.get("/v1/me", &good).await.status, 200);
    for (claim, value) in
        [("nbf", json!("soon")), ("iat", json!("yesterday")), ("exp", json!("tomorrow")), ("iat", json!(now + 3600))]
    {
        let mut c = claims();
        c[claim] = value.clone();
        let r = app.get("/v1/me", &sign(Header::new(Algorithm::HS256), c)).await;
        problem(&r, 401, "unauthorized");
        assert!(r.str("detail").contains(claim), "{claim}={value}: {}", r.body);
    }
    let mut crit = Header::new(Algorithm::HS256);
    crit.crit = Some(vec!["exp".into()]);
    let r = app.get("/v1/me", &sign(crit, claims())).await;
    problem(&r, 401, "unauthorized");
    assert!(r.str("detail").contains("crit"), "{}", r.body);
    let mut big = claims();
    big["padding"] = json!("x".repeat(8 * 1024));
    problem(&app.get("/v1/me", &sign(Header::new(Algorithm::HS256), big)).await, 401, "unauthorized");
    let r = app.get("/v1/me", "not-a-jwt").await;
    problem(&r, 401, "unauthorized");
    let detail = r.str("detail");
    assert!(detail.contains("malformed") && !detail.contains("InvalidToken") && !detail.contains("Base64"), "{detail}");
    // a request head beyond what Leeway reads answers a problem too
    let r = app.send("GET", "/v1/me", Some(&good), None, &[("x-padding", &"p".repeat(40 * 1024))]).await;
    problem(&r, 431, "request_header_fields_too_large");
}

#[tokio::test]
async fn a_requester_files_only_in_their_own_business_unit() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let elsewhere = exception_body(json!({"business_unit": "marketing"}));
    let r = app.post("/v1/exceptions", &cast.requester, elsewhere.clone()).await;
    problem(&r, 403, "forbidden");
    assert_eq!(r.str("business_unit"), "payments");
    for token in [
        app.token("ana", "requester,analyst", Some("payments")),
        app.token("servicenow", "integration", Some("payments")),
        app.token("nobu", "requester", None),
    ] {
        assert_eq!(app.post("/v1/exceptions", &token, elsewhere.clone()).await.status, 201);
    }
}

#[tokio::test]
async fn request_ids_are_kept_only_when_short_and_plain() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let kept = app.send("GET", "/v1/me", Some(&cast.officer), None, &[("x-request-id", "trace-123:a.b_c")]).await;
    assert_eq!(kept.header("x-request-id").as_deref(), Some("trace-123:a.b_c"));
    for bad in ["a".repeat(129), "has space".to_owned(), "semi;colon".to_owned(), "<script>".to_owned()] {
        let r = app.send("GET", "/v1/me", Some(&cast.officer), None, &[("x-request-id", &bad)]).await;
        let id = r.header("x-request-id").unwrap();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{bad} replaced by a generated id, got {id}");
    }
    // and the audit trail records only the sane one
    let r = app
        .send(
            "POST",
            "/v1/exceptions",
            Some(&cast.requester),
            Some(&exception_body(json!({}))),
            &[("x-request-id", "x y")],
        )
        .await;
    let history = app.get(&format!("/v1/exceptions/{}/history", r.str("id")), &cast.requester).await;
    assert_eq!(history.body["items"][0]["request_id"].as_str(), r.header("x-request-id").as_deref());
}

#[tokio::test]
async fn the_contract_reports_every_problem_at_once() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    // an unknown member and a missing one, both named
    let mut body = exception_body(json!({"colour": "blue"}));
    body.as_object_mut().unwrap().remove("title");
    let r = app.post("/v1/exceptions", &cast.requester, body).await;
    problem(&r, 422, "validation_failed");
    let codes: Vec<(String, String)> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["field"].as_str().unwrap().to_owned(), e["code"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(codes, [("colour".to_owned(), "unknown_field".to_owned()), ("title".to_owned(), "required".to_owned())]);
    // an optional action body may be null, as its schema says
    let id = app.create(&cast, json!({})).await;
    let r =
        app.send("POST", &format!("/v1/exceptions/{id}/submit"), Some(&cast.requester), Some(&Value::Null), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // a role that can never act is told so before the state is looked at
    let draft = app.create(&cast, json!({})).await;
    let r = app.act(&draft, "approve", &cast.requester).await;
    problem(&r, 403, "forbidden");
    // a method a path does not have: 405 with Allow
    let r = app.send("DELETE", "/v1/exceptions", Some(&cast.officer), None, &[]).await;
    problem(&r, 405, "method_not_allowed");
    assert_eq!(r.header("allow").as_deref(), Some("GET, POST"));
    let r = app.send("PUT", &format!("/v1/exceptions/{id}/approve"), Some(&cast.officer), None, &[]).await;
    assert_eq!((r.status, r.header("allow").as_deref()), (405, Some("POST")));
    problem(&app.send("GET", "/v1/nowhere", Some(&cast.officer), None, &[]).await, 404, "not_found");
}

#[tokio::test]
async fn a_risk_owner_without_the_requester_role_still_reviews_closes_and_renews() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let owner = app.token("erin", "asset_owner", None);
    let id = app.approved(&cast, json!({"risk_owner": "erin"})).await;
    let r = app
        .post(
            &format!("/v1/exceptions/{id}/reviews"),
            &owner,
            json!({"controls_effective": true, "justification_valid": true, "better_option_available": false, "outcome": "continue"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let expires = r.body["expires_at"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap();
    let r = app
        .post(
            &format!("/v1/exceptions/{id}/renewal"),
            &owner,
            json!({"expires_at": (expires + chrono::Duration::days(10)).to_rfc3339(), "justification": "The migration slipped a month"}),
        )
        .await;
    assert_eq!((r.status, r.str("status").as_str()), (200, "renewal_pending"), "{}", r.body);
    assert_eq!(app.act(&id, "close", &owner).await.str("status"), "closed");
    // someone else with the same roles is refused before the state is looked at
    let other = app.token("olga", "asset_owner", None);
    let id = app.approved(&cast, json!({"risk_owner": "erin"})).await;
    problem(&app.act(&id, "close", &other).await, 403, "forbidden");
}

#[tokio::test]
async fn the_business_unit_rule_holds_for_updates_and_not_for_emergencies() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let id = app.create(&cast, json!({})).await;
    let r = app
        .send(
            "PATCH",
            &format!("/v1/exceptions/{id}"),
            Some(&cast.requester),
            Some(&json!({"business_unit": "marketing"})),
            &[],
        )
        .await;
    problem(&r, 403, "forbidden");
    let e = app.get(&format!("/v1/exceptions/{id}"), &cast.requester).await;
    assert_eq!(e.str("business_unit"), "payments", "nothing changed");
    // an officer who also files as a requester declares an emergency wherever it is
    let officer = app.token("olive", "requester,security_officer", Some("payments"));
    let r = app
        .post(
            "/v1/exceptions",
            &officer,
            exception_body(json!({"emergency": true, "expires_at": null, "business_unit": "plant"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    // an empty business unit claim is no unit at all
    let blank = app.token("bea", "requester", Some(" "));
    assert_eq!(app.post("/v1/exceptions", &blank, exception_body(json!({"business_unit": "plant"}))).await.status, 201);
}

#[tokio::test]
async fn a_tampered_audit_row_breaks_the_chain_rather_than_the_read() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let id = app.submitted(&cast).await;
    let path = format!("/v1/exceptions/{id}/history");
    let h = app.get(&path, &cast.requester).await;
    assert_eq!(h.body["chain"]["valid"], true);
    let (first, second) = (h.body["items"][0]["seq"].as_i64().unwrap(), h.body["items"][1]["seq"].as_i64().unwrap());
    // white space a parser would forgive, in the second event
    app.sql(&format!("UPDATE audit_events SET actor_subject = 'alice ' WHERE seq = {second}"));
    let h = app.get(&path, &cast.requester).await;
    assert_eq!(
        (h.status, h.body["chain"]["valid"].as_bool(), h.body["chain"]["first_broken_seq"].as_i64()),
        (200, Some(false), Some(second))
    );
    // a status no lifecycle has, and roles that are not JSON, in the first
    app.sql(&format!("UPDATE audit_events SET to_status = 'approved_by_ceo', actor_roles = 'ceo' WHERE seq = {first}"));
    let h = app.get(&path, &cast.requester).await;
    assert_eq!((h.status, h.body["chain"]["first_broken_seq"].as_i64()), (200, Some(first)), "{}", h.body);
    assert_eq!(h.body["items"][0]["to_status"], "approved_by_ceo", "shown as recorded");
}

#[tokio::test]
async fn tags_may_be_cleared_with_null() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let id = app.create(&cast, json!({"tags": ["q3", "vpn"]})).await;
    let r = app
        .send("PATCH", &format!("/v1/exceptions/{id}"), Some(&cast.requester), Some(&json!({"tags": null})), &[])
        .await;
    assert_eq!((r.status, r.body["tags"].clone()), (200, json!([])), "{}", r.body);
    assert_eq!(app.post("/v1/exceptions", &cast.requester, exception_body(json!({"tags": null}))).await.status, 201);
}
