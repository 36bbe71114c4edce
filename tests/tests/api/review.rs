//! Rules that guard against abuse and drift: ownership of integrations, stale and extreme
//! dates, judged controls, controls failing on a covering exception, and what changes record.

use chrono::Duration;
use leeway_e2e::*;
use serde_json::json;

#[tokio::test]
async fn an_integration_acts_only_on_what_it_created() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let servicenow = app.token("servicenow", "integration", None);
    let jira = app.token("jira", "integration", None);
    let mine = app.post("/v1/exceptions", &servicenow, exception_body(json!({"on_behalf_of": "zoe"}))).await.str("id");
    let alices = app.create(&cast, json!({})).await;
    assert_eq!(app.act(&mine, "submit", &servicenow).await.status, 200);
    for id in [&alices, &mine] {
        let r = app.act(id, "withdraw", &jira).await;
        assert_eq!(r.status, 403, "another integration may not act as requester: {}", r.body);
    }
    let r = app.act(&alices, "submit", &servicenow).await;
    assert_eq!(r.status, 403, "{}", r.body);
    // the audit names on_behalf_of only on the integration's own actions
    app.assess(&mine, &cast.analyst, json!({"method": "matrix", "likelihood": 2, "impact": 2, "rationale": "Low"}))
        .await;
    let h = app.get(&format!("/v1/exceptions/{mine}/history"), &cast.officer).await;
    let items = h.body["items"].as_array().unwrap();
    assert_eq!(items[1]["on_behalf_of"], "zoe");
    assert_eq!(items[2]["on_behalf_of"], serde_json::Value::Null, "the analyst did not act for zoe");
}

#[tokio::test]
async fn dates_must_be_plausible_and_a_passed_expiry_cannot_be_approved() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let r = app
        .post("/v1/exceptions", &cast.requester, exception_body(json!({"expires_at": "+262143-12-01T00:00:00Z"})))
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.fields(), ["expires_at"]);
    let r = app.get("/v1/exceptions?expires_before=%2B10000-01-01T00:00:00Z", &cast.officer).await;
    assert_eq!(r.status, 400);

    let expires = (app.now() + Duration::days(3)).to_rfc3339();
    let id = app.pending(&cast, json!({"expires_at": expires})).await;
    app.clock.advance(Duration::days(4));
    let r = app.act(&id, "approve", &cast.officer).await;
    assert_eq!((r.status, r.fields()), (422, vec!["expires_at".to_owned()]), "{}", r.body);
    assert_eq!(app.act(&id, "return", &cast.analyst).await.status, 200, "the way out is back to the requester");
}

#[tokio::test]
async fn coverage_never_starts_before_the_decision() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let starts = app.now() + Duration::hours(1);
    let id = app.pending(&cast, json!({"starts_at": starts.to_rfc3339()})).await;
    app.clock.advance(Duration::hours(5));
    let r = app.act(&id, "approve", &cast.officer).await;
    assert_eq!(r.str("status"), "active");
    assert_eq!(r.body["starts_at"], r.body["approved_at"], "a start that passed while waiting moves to the approval");
}

#[tokio::test]
async fn the_analyst_may_shorten_but_not_lengthen_the_expiry() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let id = app.submitted(&cast).await;
    let longer = (app.now() + Duration::days(61)).to_rfc3339();
    let r = app
        .assess(
            &id,
            &cast.analyst,
            json!({"method": "matrix", "likelihood": 1, "impact": 1, "rationale": "Low", "expires_at": longer}),
        )
        .await;
    assert_eq!((r.status, r.body["errors"][0]["code"].as_str()), (422, Some("not_shorter")), "{}", r.body);
}

#[tokio::test]
async fn a_judged_control_belongs_to_the_analysts() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let id = app.submitted(&cast).await;
    let c = app.get(&format!("/v1/exceptions/{id}"), &cast.requester).await.body["controls"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.change_control(&id, &c, &cast.analyst, json!({"status": "failed", "evidence": "rule missing"}))
            .await
            .status,
        200
    );
    let r = app.change_control(&id, &c, &cast.requester, json!({"status": "implemented"})).await;
    assert_eq!(r.status, 403, "the requester may not erase a finding: {}", r.body);
    let r = app.change_control(&id, &c, &cast.requester, json!({"evidence": "all fine"})).await;
    assert_eq!(r.status, 403, "nor rewrite its evidence: {}", r.body);
    let r = app.change_control(&id, "not-a-uuid", &cast.analyst, json!({"status": "verified"})).await;
    assert_eq!((r.status, r.str("code").as_str()), (404, "control_not_found"));
}

#[tokio::test]
async fn a_control_failing_on_a_covering_exception_flags_it_at_risk() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    // low: 1 x 4 = 4 -> one security officer; verify the high control first (4 x 0.6 = 2.4)
    let id = app.create(&cast, json!({"submit": true})).await;
    let c = app.get(&format!("/v1/exceptions/{id}"), &cast.analyst).await.body["controls"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.change_control(&id, &c, &cast.analyst, json!({"status": "verified", "evidence": "seen"})).await;
    let r = app
        .assess(&id, &cast.analyst, json!({"method": "matrix", "likelihood": 3, "impact": 3, "rationale": "Moderate"}))
        .await;
    assert_eq!(
        (r.body["risk"]["residual_score"].as_f64(), r.body["risk"]["residual_level"].as_str()),
        (Some(5.4), Some("medium"))
    );
    app.act(&id, "approve", &cast.officer).await;
    let r = app.act(&id, "approve", &cast.asset_owner).await;
    assert_eq!(r.str("status"), "active");
    let r = app.change_control(&id, &c, &cast.analyst, json!({"status": "failed", "evidence": "rule removed"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["risk"]["residual_level"], "medium", "9.0 is still medium");
    assert_eq!(r.body["at_risk"], true, "a failed control flags the exception (spec section 4)");
    assert_eq!(
        (r.str("status").as_str(), r.body["round"].as_u64()),
        ("active", Some(1)),
        "the level did not rise: no round"
    );
    // verified again, every control works: the flag clears
    let r =
        app.change_control(&id, &c, &cast.analyst, json!({"status": "verified", "evidence": "rule restored"})).await;
    assert_eq!(r.body["at_risk"], false, "{}", r.body);
    // a second exception whose failure crosses a level
    let id = app.create(&cast, json!({"submit": true})).await;
    let c = app.get(&format!("/v1/exceptions/{id}"), &cast.analyst).await.body["controls"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.change_control(&id, &c, &cast.analyst, json!({"status": "verified", "evidence": "seen"})).await;
    let r = app.assess(&id, &cast.analyst, json!({"method": "matrix", "likelihood": 4, "impact": 3, "rationale": "High", "expires_at": (app.now() + Duration::days(30)).to_rfc3339()})).await;
    assert_eq!(r.body["risk"]["residual_level"], "medium", "12 x 0.6 = 7.2");
    app.act(&id, "approve", &cast.officer).await;
    assert_eq!(app.act(&id, "approve", &cast.asset_owner).await.str("status"), "active");
    let r = app.change_control(&id, &c, &cast.analyst, json!({"status": "failed", "evidence": "rule removed"})).await;
    assert_eq!(
        (r.body["risk"]["residual_level"].as_str(), r.body["at_risk"].as_bool()),
        (Some("high"), Some(true)),
        "{}",
        r.body
    );
    assert_eq!(
        (r.str("status").as_str(), r.body["round"].as_u64()),
        ("renewal_pending", Some(2)),
        "above the approved level: a round"
    );
    let h = app.get(&format!("/v1/exceptions/{id}/history"), &cast.officer).await;
    assert!(h.body["items"].as_array().unwrap().iter().any(|e| e["action"] == "at_risk"));
}

#[tokio::test]
async fn the_last_approval_cannot_accept_a_lifetime_the_level_forbids() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    // assessed low (365 days allowed), 200 days requested; then a verified control fails
    let expires = (app.now() + Duration::days(200)).to_rfc3339();
    let id = app.create(&cast, json!({"submit": true, "expires_at": expires})).await;
    let c = app.get(&format!("/v1/exceptions/{id}"), &cast.analyst).await.body["controls"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.change_control(&id, &c, &cast.analyst, json!({"status": "verified", "evidence": "seen"})).await;
    let r = app
        .assess(
            &id,
            &cast.analyst,
            json!({"method": "matrix", "likelihood": 2, "impact": 4, "rationale": "Low after control"}),
        )
        .await;
    assert_eq!(r.body["risk"]["residual_level"], "low", "8 x 0.6 = 4.8: {}", r.body);
    app.change_control(&id, &c, &cast.analyst, json!({"status": "failed", "evidence": "rule removed"})).await;
    let r = app.act(&id, "approve", &cast.officer).await;
    assert_eq!(r.status, 200, "a first approval of medium is fine: {}", r.body);
    let r = app.act(&id, "approve", &cast.asset_owner).await;
    assert_eq!((r.status, r.str("code").as_str()), (422, "duration_exceeds_policy"), "{}", r.body);
    assert_eq!(r.body["max_duration_days"], 180);
}

#[tokio::test]
async fn updates_record_what_changed_from_and_to() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let id = app.create(&cast, json!({})).await;
    app.send(
        "PATCH",
        &format!("/v1/exceptions/{id}"),
        Some(&cast.requester),
        Some(&json!({"title": "Renamed exception"})),
        &[],
    )
    .await;
    let h = app.get(&format!("/v1/exceptions/{id}/history"), &cast.requester).await;
    assert_eq!(
        h.body["items"][1]["changes"],
        json!({"title": {"from": "Legacy VPN without MFA", "to": "Renamed exception"}})
    );
}

#[tokio::test]
async fn a_token_without_leeway_roles_sees_nothing() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let id = app.create(&cast, json!({})).await;
    let nobody = app.token("nobody", "", Some("payments"));
    assert_eq!(app.get("/v1/exceptions", &nobody).await.status, 403);
    assert_eq!(app.get(&format!("/v1/exceptions/{id}"), &nobody).await.status, 404);
    // and a restricted requester is not told who holds an external reference
    let refs = json!({"external_refs": [{"system": "jira", "id": "SEC-1"}]});
    assert_eq!(app.post("/v1/exceptions", &cast.requester, exception_body(refs.clone())).await.status, 201);
    let outsider = app.token("mallory", "requester", Some("marketing"));
    let mut refs = exception_body(refs);
    refs["business_unit"] = json!("marketing");
    let r = app.post("/v1/exceptions", &outsider, refs).await;
    assert_eq!(r.status, 409);
    assert!(r.body.get("holder").is_none(), "{}", r.body);
}
