//! The audit trail: one hash-chained event per change, with the request id; an integration
//! event written in the same transaction.

use leeway_domain::ids::ExceptionId;
use leeway_e2e::*;
use serde_json::json;

#[tokio::test]
async fn history_is_a_valid_hash_chain_with_one_event_per_change() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let id = app.create(&cast, json!({"submit": true})).await;
    app.assess(&id, &cast.analyst, json!({"method": "matrix", "likelihood": 2, "impact": 2, "rationale": "Low"})).await;
    let r = app
        .send(
            "POST",
            &format!("/v1/exceptions/{id}/approve"),
            Some(&cast.officer),
            Some(&json!({"comment": "ok"})),
            &[("x-request-id", "req-approve-1")],
        )
        .await;
    assert_eq!(r.str("status"), "active");
    let h = app.get(&format!("/v1/exceptions/{id}/history"), &app.token("audrey", "auditor", None)).await;
    assert_eq!(h.status, 200);
    let items = h.body["items"].as_array().unwrap();
    let actions: Vec<&str> = items.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["created", "submitted", "assessed", "approval_recorded", "approved", "activated"]);
    assert_eq!(h.body["chain"], json!({"valid": true, "first_broken_seq": null}));
    assert_eq!(items[0]["prev_hash"], "0".repeat(64));
    for pair in items.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"], "each event links to its predecessor");
    }
    assert_eq!(items[3]["request_id"], "req-approve-1");
    assert_eq!(items[3]["actor"], json!({"subject": "carol", "roles": ["security_officer"]}));
    assert_eq!(
        (items[2]["from_status"].as_str(), items[2]["to_status"].as_str()),
        (Some("submitted"), Some("pending_approval"))
    );

    // the outbox holds the matching integration events, written with each change
    let store = leeway_persistence::Store::connect(&app.database_url, 1).unwrap();
    let eid = ExceptionId(uuid::Uuid::parse_str(&id).unwrap());
    let types: Vec<String> = store.outbox_for(eid).unwrap().into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        types,
        [
            "exception.created",
            "exception.submitted",
            "exception.assessed",
            "exception.approval_recorded",
            "exception.approved",
            "exception.activated"
        ]
    );

    // tampering with a stored event is detected at that event
    let seq = items[2]["seq"].as_i64().unwrap();
    app.sql(&format!("UPDATE audit_events SET changes = '{{\"forged\":true}}' WHERE seq = {seq}"));
    let h = app.get(&format!("/v1/exceptions/{id}/history"), &cast.officer).await;
    assert_eq!(h.body["chain"], json!({"valid": false, "first_broken_seq": seq}));
}

#[tokio::test]
async fn a_refused_change_writes_no_audit_or_integration_event() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let id = app.create(&cast, json!({})).await;
    let r = app.act(&id, "approve", &cast.officer).await;
    assert_eq!(r.status, 409);
    let h = app.get(&format!("/v1/exceptions/{id}/history"), &cast.officer).await;
    assert_eq!(h.body["items"].as_array().unwrap().len(), 1);
    let store = leeway_persistence::Store::connect(&app.database_url, 1).unwrap();
    let eid = ExceptionId(uuid::Uuid::parse_str(&id).unwrap());
    assert_eq!(store.outbox_for(eid).unwrap().len(), 1);
}
