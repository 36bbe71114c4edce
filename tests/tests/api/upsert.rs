//! `PUT /v1/exceptions/by-ref/{system}/{external_id}`: how ServiceNow and Jira push records.

use leeway_e2e::*;
use serde_json::{Value, json};

async fn put(app: &TestApp, path: &str, token: &str, body: &Value, headers: &[(&str, &str)]) -> Resp {
    app.send("PUT", path, Some(token), Some(body), headers).await
}

async fn history_len(app: &TestApp, id: &str) -> usize {
    let auditor = app.token("audrey", "auditor", None);
    app.get(&format!("/v1/exceptions/{id}/history"), &auditor).await.body["items"].as_array().unwrap().len()
}

#[tokio::test]
async fn upsert_creates_then_merges_and_an_identical_repeat_writes_nothing() {
    let app = spawn().await;
    let snow = app.token("snow", "integration", None);
    let path = "/v1/exceptions/by-ref/servicenow/RITM0010001";
    let mut body = exception_body(json!({"on_behalf_of": "alice"}));

    let created = put(&app, path, &snow, &body, &[]).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.str("id");
    assert_eq!(created.header("location").unwrap(), format!("/v1/exceptions/{id}"));
    assert_eq!(created.body["external_refs"], json!([{"system": "servicenow", "id": "RITM0010001"}]));
    assert_eq!(created.body["on_behalf_of"], "alice");
    assert_eq!(history_len(&app, &id).await, 1);

    // the same body again: nothing changes, nothing is written
    let again = put(&app, path, &snow, &body, &[]).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.str("id"), id);
    assert_eq!(again.body["version"], created.body["version"]);
    assert_eq!(history_len(&app, &id).await, 1);

    // a change in draft merges; members not sent stay
    body["title"] = json!("Legacy VPN without MFA, phase 2");
    body.as_object_mut().unwrap().remove("expires_at");
    let changed = put(&app, path, &snow, &body, &[]).await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(changed.body["title"], "Legacy VPN without MFA, phase 2");
    assert_eq!(changed.body["expires_at"], created.body["expires_at"], "a member not sent stays");
    assert_eq!(history_len(&app, &id).await, 2);

    // submit through the same call
    body["submit"] = json!(true);
    let submitted = put(&app, path, &snow, &body, &[]).await;
    assert_eq!(submitted.status, 200, "{}", submitted.body);
    assert_eq!(submitted.body["status"], "submitted");
    let n = history_len(&app, &id).await;
    assert_eq!(put(&app, path, &snow, &body, &[]).await.status, 200, "a repeat after submit is harmless");
    assert_eq!(history_len(&app, &id).await, n);

    // after submit only some fields may change: the others are named
    body["title"] = json!("Another title");
    body["justification"] = json!("Another justification, long enough.");
    let locked = put(&app, path, &snow, &body, &[]).await;
    assert_eq!(locked.status, 409, "{}", locked.body);
    assert_eq!(locked.str("code"), "field_locked");
    assert_eq!(locked.fields(), ["justification", "title"]);
    body["title"] = submitted.body["title"].clone();
    body["justification"] = submitted.body["justification"].clone();
    body["controls"] =
        json!([{"description": "Something else entirely", "kind": "preventive", "effectiveness": "low"}]);
    let controls = put(&app, path, &snow, &body, &[]).await;
    assert_eq!((controls.status, controls.fields()), (409, vec!["controls".to_owned()]), "{}", controls.body);
    body.as_object_mut().unwrap().remove("controls");

    // what may change after submit does, and an Idempotency-Key replays the answer
    body["tags"] = json!(["servicenow"]);
    let tagged = put(&app, path, &snow, &body, &[("idempotency-key", "ritm-10001-v7")]).await;
    assert_eq!(tagged.status, 200, "{}", tagged.body);
    assert_eq!(tagged.body["tags"], json!(["servicenow"]));
    let replay = put(&app, path, &snow, &body, &[("idempotency-key", "ritm-10001-v7")]).await;
    assert_eq!(replay.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(replay.body, tagged.body);
}

#[tokio::test]
async fn a_reference_held_where_the_caller_cannot_see_is_taken() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let path = "/v1/exceptions/by-ref/jira/SEC-42";
    let first = put(&app, path, &cast.requester, &exception_body(json!({})), &[]).await;
    assert_eq!(first.status, 201, "{}", first.body);
    // a requester of the same unit sees it, and may not change what is not theirs
    let yan = app.token("yan", "requester", Some("payments"));
    assert_eq!(put(&app, path, &yan, &exception_body(json!({})), &[]).await.status, 403);
    // one who cannot see it is told only that the reference is taken
    let zed = app.token("zed", "requester", Some("ops"));
    let other = put(&app, path, &zed, &exception_body(json!({})), &[]).await;
    assert_eq!(other.status, 409, "{}", other.body);
    assert_eq!(other.str("code"), "duplicate_external_reference");
    assert!(other.body.get("holder").is_none_or(Value::is_null), "no enumeration: {}", other.body);
    let bad =
        put(&app, &format!("/v1/exceptions/by-ref/{}/x", "s".repeat(51)), &zed, &exception_body(json!({})), &[]).await;
    assert_eq!(bad.status, 400);
}
