//! The payloads of docs/integrations, sent to a real server: the recipes stay true.

use leeway_e2e::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;

fn example(name: &str) -> Value {
    let path = format!("{}/../docs/integrations/examples/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test]
async fn the_servicenow_and_jira_bodies_create_then_repeat_harmlessly() {
    let app = spawn().await;
    // the examples' dates are fixed: read them as on the day they were written
    app.clock.set("2026-11-23T09:00:00Z".parse().unwrap());
    let snow = app.token("servicenow", "integration", None);
    let auditor = app.token("audrey", "auditor", None);
    for (name, path, status) in [
        ("servicenow-ritm.json", "/v1/exceptions/by-ref/servicenow/RITM0012345", "submitted"),
        ("jira-issue.json", "/v1/exceptions/by-ref/jira/SEC-4711", "draft"),
    ] {
        let body = example(name);
        let first_key = format!("{name}-1");
        let key = [("idempotency-key", first_key.as_str())];
        let created = app.send("PUT", path, Some(&snow), Some(&body), &key).await;
        assert_eq!(created.status, 201, "{name}: {}", created.body);
        assert_eq!(created.body["status"], status, "{name}");
        let history = format!("/v1/exceptions/{}/history", created.str("id"));
        let events = app.get(&history, &auditor).await.body["items"].as_array().unwrap().len();
        // a retry with the same key replays; the same body under a new key changes nothing
        let replay = app.send("PUT", path, Some(&snow), Some(&body), &key).await;
        assert_eq!(replay.header("idempotent-replayed").as_deref(), Some("true"), "{name}");
        let again = app.send("PUT", path, Some(&snow), Some(&body), &[("idempotency-key", &format!("{name}-2"))]).await;
        assert_eq!(again.status, 200, "{name}: {}", again.body);
        assert_eq!(app.get(&history, &auditor).await.body["items"].as_array().unwrap().len(), events, "{name}");
    }
}

#[tokio::test]
async fn the_documented_webhook_payload_is_what_receivers_get() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let receiver = Receiver::start().await;
    let admin = app.token("ivan", "admin", None);
    let r = app.post("/v1/webhooks", &admin, json!({"url": receiver.url, "event_types": ["exception.approved"]})).await;
    assert_eq!(r.status, 201);
    app.approved(&cast, json!({})).await;
    app.deliver().await;
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    let real = got[0].json();
    let documented = example("webhook-exception-approved.json");
    assert_eq!(keys(&documented), keys(&real), "top level");
    assert_eq!(
        keys(&documented["data"]),
        keys(&real["data"]),
        "data members; a real one: {}",
        serde_json::to_string_pretty(&real).unwrap()
    );
    assert_eq!(documented["type"], real["type"]);
}
