//! Round trips per request, counted by the store's statement instrumentation (transaction
//! control left out): deterministic, unlike a timing, so they are pinned here while the
//! speed itself is measured by `bench/load.sh`.

use leeway_e2e::*;
use serde_json::{Value, json};

/// The statements the server sent while `f` ran.
async fn counted<F: std::future::Future<Output = Resp>>(app: &TestApp, f: F) -> (u64, Resp) {
    let before = app.store.statements();
    let r = f.await;
    (app.store.statements() - before, r)
}

fn asset_and_controls() -> Value {
    json!({
        "assets": ["srv-1", "srv-2", "srv-3"],
        "control_ids": ["AC-2", "CM-6"],
        "external_refs": [{"system": "servicenow", "id": "RITM0001"}],
        "controls": [
            {"description": "Allow-list at the edge", "kind": "preventive", "effectiveness": "high"},
            {"description": "Daily log review", "kind": "detective", "effectiveness": "medium"},
        ],
    })
}

#[tokio::test]
async fn a_read_is_one_statement() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let id = app.create(&cast, asset_and_controls()).await;
    let key = app.get(&format!("/v1/exceptions/{id}"), &cast.requester).await.str("key");
    for path in [format!("/v1/exceptions/{id}"), format!("/v1/exceptions/{key}")] {
        let (n, r) = counted(&app, app.get(&path, &cast.requester)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["controls"].as_array().map(Vec::len), Some(2), "children come with the row");
        assert_eq!(n, 1, "GET {path}: one statement, with the key lookup and the children folded in");
    }
    for _ in 0..3 {
        app.create(&cast, json!({})).await;
    }
    for query in ["", "?status=draft&limit=2", "?asset=srv-2&sort=-created_at", "?q=legacy&covering=false"] {
        let (n, r) = counted(&app, app.get(&format!("/v1/exceptions{query}"), &cast.officer)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(!r.body["items"].as_array().unwrap().is_empty(), "{query}: {}", r.body);
        assert_eq!(n, 1, "a page{query} is one statement");
    }
}

#[tokio::test]
async fn a_create_is_at_most_four_statements_and_a_change_a_bounded_few() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    // a draft with three assets, two controls, a reference and an idempotency key: the key,
    // the row (its trigger indexes assets, controls and the reference), its events, the
    // idempotency record
    let body = exception_body(asset_and_controls());
    let (n, r) = counted(
        &app,
        app.send("POST", "/v1/exceptions", Some(&cast.requester), Some(&body), &[("idempotency-key", "create-1")]),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(n <= 4, "a create is at most four statements, was {n}");
    let id = r.str("id");
    // without an idempotency key, one fewer
    let (n, r) = counted(&app, app.post("/v1/exceptions", &cast.requester, exception_body(json!({})))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(n <= 3, "a create without Idempotency-Key is at most three statements, was {n}");
    // submitting takes a place: plus the one read of the places under their locks
    let (n, r) = counted(
        &app,
        app.send("POST", &format!("/v1/exceptions/{id}/submit"), Some(&cast.requester), Some(&json!({})), &[]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(n <= 4, "a submit: the row locked, the places, the row, its events; was {n}");
    let (n, r) = counted(
        &app,
        app.send(
            "POST",
            "/v1/exceptions",
            Some(&cast.requester),
            Some(&exception_body(json!({"submit": true, "assets": ["srv-9"]}))),
            &[("idempotency-key", "create-2")],
        ),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(n <= 5, "a create and submit is at most five statements, was {n}");
    // an action that reads no facts: row locked, row, events
    let (n, r) = counted(
        &app,
        app.assess(&id, &cast.analyst, json!({"method": "matrix", "likelihood": 2, "impact": 2, "rationale": "Low"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(n <= 3, "an assessment: the row locked, the row, its events; was {n}");
}

#[tokio::test]
async fn the_counter_counts_what_is_sent() {
    // the instrument the pins above rely on: a request that fails before the database sends
    // nothing, and one that reads sends something
    let app = spawn().await;
    let cast = Cast::new(&app);
    let (n, r) = counted(&app, app.get("/v1/exceptions/EXC-999999", "not-a-token")).await;
    assert_eq!(r.status, 401);
    assert_eq!(n, 0);
    let (n, r) = counted(&app, app.get("/v1/exceptions/EXC-999999", &cast.officer)).await;
    assert_eq!(r.status, 404);
    assert_eq!(n, 1);
}
