//! Coverage for SIEMs and CI/CD gates: now, in batches, and as it stood at a past moment.

use chrono::{Duration, SecondsFormat};
use leeway_e2e::*;
use serde_json::{Value, json};

fn covered(r: &Resp) -> bool {
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["covered"].as_bool().unwrap()
}

#[tokio::test]
async fn coverage_answers_now_in_batches_and_as_it_stood() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let gate = app.token("ci-gate", "integration", None);
    let before = app.now();
    app.clock.advance(Duration::minutes(1));
    let id = app.approved(&cast, json!({"assets": ["gw-1"], "control_ids": ["CIS-4.1", "CIS-4.2"]})).await;
    let key = app.get(&format!("/v1/exceptions/{id}"), &cast.analyst).await.str("key");
    app.clock.advance(Duration::minutes(1));
    let during = app.now();
    let at = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true).replace('+', "%2B");

    let now = app.get("/v1/coverage?asset=gw-1&control_id=CIS-4.1", &gate).await;
    assert!(covered(&now));
    let found = &now.body["exceptions"][0];
    assert_eq!((found["id"].as_str().unwrap(), found["key"].as_str().unwrap()), (id.as_str(), key.as_str()));
    assert_eq!(found["status"], "active");
    assert_eq!(found["risk_level"], "low");
    let members: Vec<&String> = found.as_object().unwrap().keys().collect();
    assert_eq!(members, ["expires_at", "id", "key", "risk_level", "status"], "no free text");
    assert!(covered(&app.get("/v1/coverage?asset=gw-1", &gate).await), "any control");
    assert_eq!(app.get("/v1/coverage?asset=gw-1", &gate).await.body["exceptions"].as_array().unwrap().len(), 1);
    assert!(!covered(&app.get("/v1/coverage?asset=gw-1&control_id=CIS-9", &gate).await));
    assert!(!covered(&app.get("/v1/coverage?asset=gw-2", &gate).await));
    assert!(!covered(&app.get(&format!("/v1/coverage?asset=gw-1&at={}", at(before)), &gate).await), "before approval");

    let batch = app
        .post(
            "/v1/coverage:batch",
            &gate,
            json!({"items": [{"asset": "gw-1", "control_id": "CIS-4.2"}, {"asset": "gw-2"}, {"asset": "gw-1"}]}),
        )
        .await;
    assert_eq!(batch.status, 200, "{}", batch.body);
    let answers: Vec<(Value, bool)> = batch.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["asset"].clone(), a["covered"].as_bool().unwrap()))
        .collect();
    assert_eq!(answers, [(json!("gw-1"), true), (json!("gw-2"), false), (json!("gw-1"), true)]);

    // revoked: not covered now, and the past still says what it was
    app.clock.advance(Duration::minutes(1));
    let r = app.act(&id, "revoke", &cast.officer).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!covered(&app.get("/v1/coverage?asset=gw-1&control_id=CIS-4.1", &gate).await));
    let past = app.get(&format!("/v1/coverage?asset=gw-1&control_id=CIS-4.1&at={}", at(during)), &gate).await;
    assert!(covered(&past), "as of a moment it covered");
    assert_eq!(past.body["exceptions"][0]["status"], "active");
    let batch_past = app.post("/v1/coverage:batch", &gate, json!({"at": during, "items": [{"asset": "gw-1"}]})).await;
    assert_eq!(batch_past.body["items"][0]["covered"], true);

    // bad questions are named
    assert_eq!(app.get("/v1/coverage", &gate).await.status, 400);
    assert_eq!(app.get("/v1/coverage?asset=gw-1&at=yesterday", &gate).await.status, 400);
    let too_many: Vec<Value> = (0..1001).map(|i| json!({"asset": format!("a-{i}")})).collect();
    assert_eq!(app.post("/v1/coverage:batch", &gate, json!({"items": too_many})).await.status, 422);
}

#[tokio::test]
async fn coverage_ends_at_expiry_without_waiting_for_the_scheduler() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let gate = app.token("siem", "requester", None);
    let expires = app.now() + Duration::days(10);
    app.approved(&cast, json!({"assets": ["db-7"], "expires_at": expires})).await;
    assert!(covered(&app.get("/v1/coverage?asset=db-7", &gate).await));
    app.clock.advance(Duration::days(10) + Duration::seconds(1));
    assert!(!covered(&app.get("/v1/coverage?asset=db-7", &gate).await), "past its expiry");
}
