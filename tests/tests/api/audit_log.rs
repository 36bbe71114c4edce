//! The auditor's views of the whole trail: the global log, the verification of every chain,
//! and time-bound audit access.

use chrono::Duration;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use leeway_e2e::*;
use serde_json::{Value, json};

fn auditor_until(app: &TestApp, until: &str) -> String {
    let now = app.now().timestamp();
    let claims =
        json!({"sub": "audrey", "iat": now, "exp": now + 3 * 86_400, "roles": ["auditor"], "auditor_until": until});
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

fn seqs(r: &Resp) -> Vec<i64> {
    r.body["items"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn the_global_log_is_filtered_and_paged_for_auditors() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let auditor = app.token("audrey", "auditor", None);
    let first = app.create(&cast, json!({"submit": true})).await;
    app.clock.advance(Duration::hours(1));
    let later = app.now();
    let second = app.create(&cast, json!({})).await;
    app.assess(&first, &cast.analyst, json!({"method": "matrix", "likelihood": 2, "impact": 2, "rationale": "Low"}))
        .await;

    assert_eq!(app.get("/v1/audit/events", &cast.analyst).await.status, 403);
    let all = app.get("/v1/audit/events", &auditor).await;
    assert_eq!(all.status, 200, "{}", all.body);
    assert_eq!(all.body["items"].as_array().unwrap().len(), 4);
    assert!(seqs(&all).windows(2).all(|w| w[0] < w[1]), "in seq order");
    assert_eq!(all.body["items"][0]["exception_id"], first.as_str());
    assert_eq!(all.body["items"][0]["action"], "created");

    let by = |q: &str| {
        let (app, auditor) = (&app, auditor.clone());
        let q = q.to_owned();
        async move { app.get(&format!("/v1/audit/events?{q}"), &auditor).await }
    };
    let bob = by("actor=bob").await;
    assert_eq!(bob.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(bob.body["items"][0]["action"], "assessed");
    assert_eq!(by("action=submitted").await.body["items"][0]["exception_id"], first.as_str());
    let theirs = by(&format!("exception_id={second}")).await;
    assert_eq!(theirs.body["items"].as_array().unwrap().len(), 1);
    let since = by(&format!("from={}", later.to_rfc3339().replace('+', "%2B"))).await;
    assert_eq!(since.body["items"].as_array().unwrap().len(), 2, "{}", since.body);

    let (mut after, mut paged) = (0, Vec::new());
    loop {
        let page = by(&format!("limit=3&after={after}")).await;
        paged.extend(seqs(&page));
        match page.body["next_after"].as_i64() {
            Some(n) => after = n,
            None => break,
        }
    }
    assert_eq!(paged, seqs(&all));
    assert_eq!(by("limit=0").await.status, 400);
    assert_eq!(by("who=bob").await.status, 400);
}

#[tokio::test]
async fn verify_walks_every_chain_and_names_the_first_break() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let auditor = app.token("audrey", "auditor", None);
    let a = app.create(&cast, json!({"submit": true})).await;
    let b = app.create(&cast, json!({"submit": true})).await;
    let ok = app.get("/v1/audit/verify", &auditor).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body, json!({"valid": true, "exceptions_checked": 2, "events_checked": 4}));

    // an event rewritten in place
    let history = app.get(&format!("/v1/exceptions/{b}/history"), &auditor).await;
    let tampered = history.body["items"][1]["seq"].as_i64().unwrap();
    app.sql(&format!("UPDATE audit_events SET changes = '{{\"chronic\":true}}' WHERE seq = {tampered}"));
    let broken = app.get("/v1/audit/verify", &auditor).await;
    assert_eq!(broken.body["valid"], false);
    assert_eq!(broken.body["first_broken"], json!({"exception_id": b, "seq": tampered}));

    // the last event of a chain deleted: its exception's recorded head no longer matches
    app.sql(&format!("DELETE FROM audit_events WHERE exception_id = '{b}'"));
    let history = app.get(&format!("/v1/exceptions/{a}/history"), &auditor).await;
    let last = history.body["items"][1]["seq"].as_i64().unwrap();
    app.sql(&format!("DELETE FROM audit_events WHERE seq = {last}"));
    let cut = app.get("/v1/audit/verify", &auditor).await;
    assert_eq!(cut.body["valid"], false);
    let first_broken = &cut.body["first_broken"];
    assert!(
        *first_broken == json!({"exception_id": a, "seq": 0}) || *first_broken == json!({"exception_id": b, "seq": 0}),
        "{first_broken}"
    );
    assert_eq!(app.get("/v1/audit/verify", &cast.analyst).await.status, 403);
}

#[tokio::test]
async fn auditor_until_ends_audit_access_after_that_day() {
    let app = spawn().await;
    let today = app.now().date_naive();
    let valid = auditor_until(&app, &today.to_string());
    assert_eq!(app.get("/v1/audit/events", &valid).await.status, 200, "the last day still counts");
    let lapsed = auditor_until(&app, &(today - Duration::days(1)).to_string());
    assert_eq!(app.get("/v1/audit/events", &lapsed).await.status, 403);
    let me: Value = app.get("/v1/me", &lapsed).await.body;
    assert_eq!(me["roles"], json!([]));
    assert_eq!(app.get("/v1/audit/events", &auditor_until(&app, "next week")).await.status, 401);
    app.clock.advance(Duration::days(1));
    assert_eq!(app.get("/v1/audit/events", &valid).await.status, 403, "honoured until that day ends");
}

#[tokio::test]
async fn the_audit_package_holds_everything_and_the_policy_at_each_approval() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let auditor = app.token("audrey", "auditor", None);
    let id = app.approved(&cast, json!({})).await;
    let path = format!("/v1/exceptions/{id}/audit-package");
    assert_eq!(app.get(&path, &cast.analyst).await.status, 403);
    let p = app.get(&path, &auditor).await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.body["exception"]["id"], id.as_str());
    assert_eq!(p.body["exception"]["status"], "active");
    let history = p.body["history"]["items"].as_array().unwrap();
    assert_eq!(history.len(), 6, "created .. activated");
    assert_eq!(p.body["history"]["chain"]["valid"], true);
    let approval = &p.body["exception"]["approvals"][0];
    assert_eq!(
        p.body["rounds"],
        json!([{
            "round": 1,
            "assessment_ids": [p.body["exception"]["assessments"][0]["id"]],
            "approval_ids": [approval["id"]],
        }])
    );
    // the policy in force at the approval, under the fingerprint the approval recorded
    let policies = p.body["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0]["fingerprint"], approval["policy"]);
    assert_eq!(policies[0]["approval_ids"], json!([approval["id"]]));
    assert_eq!(policies[0]["policy"]["max_covering_per_asset"], app.policy.max_covering_per_asset);
    assert_eq!(policies[0]["policy"]["low"]["max_duration_days"], app.policy.low.max_duration_days);
    assert_eq!(p.body["approvals_without_policy"], json!([]));
    assert_eq!(app.get("/v1/exceptions/EXC-999999/audit-package", &auditor).await.status, 404);
}

#[tokio::test]
async fn the_audit_package_sees_a_chain_cut_short_and_empty_auditor_until_is_none() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let auditor = app.token("audrey", "auditor", None);
    let id = app.create(&cast, json!({"submit": true})).await;
    let history = app.get(&format!("/v1/exceptions/{id}/history"), &auditor).await;
    let last = history.body["items"][1]["seq"].as_i64().unwrap();
    app.sql(&format!("DELETE FROM audit_events WHERE seq = {last}"));
    let p = app.get(&format!("/v1/exceptions/{id}/audit-package"), &auditor).await;
    assert_eq!(p.body["history"]["chain"], json!({"valid": false, "first_broken_seq": 0}), "{}", p.body);

    let now = app.now().timestamp();
    for empty in [json!(""), Value::Null] {
        let claims =
            json!({"sub": "audrey", "iat": now, "exp": now + 600, "roles": ["auditor"], "auditor_until": empty});
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes()))
                .unwrap();
        assert_eq!(app.get("/v1/audit/events", &token).await.status, 200, "{empty} is no limit");
    }
}
