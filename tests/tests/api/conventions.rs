//! API conventions: ETag/If-Match, Idempotency-Key, pagination, problems for every error,
//! request ids, the committed contract and the docs page.

use leeway_e2e::*;
use serde_json::{Value, json};
use std::collections::HashSet;

#[tokio::test]
async fn a_stale_if_match_is_refused_with_412_and_changes_nothing() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let r = app.post("/v1/exceptions", &cast.requester, exception_body(json!({}))).await;
    let id = r.str("id");
    assert_eq!(r.header("etag").as_deref(), Some("\"1\""));
    let path = format!("/v1/exceptions/{id}");
    let ok =
        app.send("PATCH", &path, Some(&cast.requester), Some(&json!({"tags": ["a"]})), &[("if-match", "\"1\"")]).await;
    assert_eq!((ok.status, ok.header("etag").as_deref()), (200, Some("\"2\"")));
    let stale =
        app.send("PATCH", &path, Some(&cast.requester), Some(&json!({"tags": ["b"]})), &[("if-match", "\"1\"")]).await;
    assert_eq!((stale.status, stale.str("code").as_str()), (412, "precondition_failed"));
    assert_eq!(stale.body["current_version"], 2);
    let weak =
        app.send("POST", &format!("{path}/submit"), Some(&cast.requester), None, &[("if-match", "W/\"2\"")]).await;
    assert_eq!(weak.status, 412, "a weak tag never matches");
    let now = app.get(&path, &cast.requester).await;
    assert_eq!((now.body["tags"].clone(), now.str("status")), (json!(["a"]), "draft".to_owned()));
    let submit =
        app.send("POST", &format!("{path}/submit"), Some(&cast.requester), None, &[("if-match", "\"2\"")]).await;
    assert_eq!(submit.status, 200);
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer_and_refuses_another_body() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let body = exception_body(json!({}));
    let key = [("idempotency-key", "\"8e03978e-40d5-43e8-bc93-6894a57f9324\"")];
    let first = app.send("POST", "/v1/exceptions", Some(&cast.requester), Some(&body), &key).await;
    let again = app.send("POST", "/v1/exceptions", Some(&cast.requester), Some(&body), &key).await;
    assert_eq!(first.status, 201);
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body, "the replay is the first answer");
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    let listed = app.get("/v1/exceptions", &cast.officer).await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1, "created once");
    let other = exception_body(json!({"title": "Something else"}));
    let reused = app.send("POST", "/v1/exceptions", Some(&cast.requester), Some(&other), &key).await;
    assert_eq!((reused.status, reused.str("code").as_str()), (422, "idempotency_key_reused"));
    // keys belong to the caller: another caller's identical key is a new request
    let bob = app.token("bob2", "requester", Some("payments"));
    let theirs = app.send("POST", "/v1/exceptions", Some(&bob), Some(&body), &key).await;
    assert_eq!(theirs.status, 201);
    assert_ne!(theirs.body["id"], first.body["id"]);
    // actions too: the second submit replays instead of failing on the state
    let id = first.str("id");
    let k = [("idempotency-key", "submit-1")];
    let s1 = app.send("POST", &format!("/v1/exceptions/{id}/submit"), Some(&cast.requester), None, &k).await;
    let s2 = app.send("POST", &format!("/v1/exceptions/{id}/submit"), Some(&cast.requester), None, &k).await;
    assert_eq!((s1.status, s2.status), (200, 200));
    assert_eq!(s1.body, s2.body);
    // 24 hours later the key is forgotten and the same request creates anew
    app.clock.advance(chrono::Duration::hours(24));
    let later = app.send("POST", "/v1/exceptions", Some(&cast.requester), Some(&body), &key).await;
    assert_eq!(later.status, 201, "{}", later.body);
    assert_ne!(later.body["id"], first.body["id"]);
    assert!(later.header("idempotent-replayed").is_none());
    // the scheduler forgets the other expired keys (bob2's create and the submit); the key
    // just stored again is fresh and stays
    assert_eq!(app.run_scheduler().await.purged_keys, 2);
    let again_later = app.send("POST", "/v1/exceptions", Some(&cast.requester), Some(&body), &key).await;
    assert_eq!(again_later.body, later.body, "the fresh key still replays");
    let bad = app
        .send("POST", "/v1/exceptions", Some(&cast.requester), Some(&body), &[("idempotency-key", "has space")])
        .await;
    assert_eq!((bad.status, bad.str("code").as_str()), (400, "invalid_idempotency_key"));
}

#[tokio::test]
async fn pagination_walks_120_items_without_duplicates_or_gaps() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let mut created = Vec::new();
    for i in 0..120 {
        let body =
            exception_body(json!({"title": format!("Exception number {i}"), "assets": [format!("host-{}", i % 3)]}));
        let r = app.post("/v1/exceptions", &cast.requester, body).await;
        assert_eq!(r.status, 201);
        created.push(r.str("id"));
    }
    for (sort, expected) in [("created_at", created.clone()), ("-created_at", created.iter().rev().cloned().collect())]
    {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut path = format!("/v1/exceptions?limit=25&sort={sort}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let r = app.get(&path, &cast.officer).await;
            assert_eq!(r.status, 200, "{}", r.body);
            pages += 1;
            seen.extend(r.body["items"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_owned()));
            match r.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(pages, 5, "{sort}");
        assert_eq!(seen, expected, "{sort}: every item once, in order");
    }
    // filtered: host-1 holds every third
    let mut seen = HashSet::new();
    let mut path = "/v1/exceptions?asset=host-1&limit=7".to_owned();
    loop {
        let r = app.get(&path, &cast.officer).await;
        for e in r.body["items"].as_array().unwrap() {
            assert_eq!(e["assets"], json!(["host-1"]));
            assert!(seen.insert(e["id"].as_str().unwrap().to_owned()), "duplicate");
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/exceptions?asset=host-1&limit=7&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 40);
    // a cursor is bound to its filters
    let first = app.get("/v1/exceptions?asset=host-1&limit=7", &cast.officer).await;
    let c = first.str("next_cursor");
    let r = app.get(&format!("/v1/exceptions?asset=host-2&limit=7&cursor={c}"), &cast.officer).await;
    assert_eq!((r.status, r.str("code").as_str()), (400, "invalid_cursor"));
    let q = app.get("/v1/exceptions?q=NUMBER%2011&limit=100", &cast.officer).await;
    let titles: Vec<&str> = q.body["items"].as_array().unwrap().iter().map(|e| e["title"].as_str().unwrap()).collect();
    assert_eq!(titles.len(), 11, "11 and 110..119, case-insensitive");
    assert!(titles.iter().all(|t| t.starts_with("Exception number 11")));
    let q = app.get("/v1/exceptions?q=50%25", &cast.officer).await;
    assert!(q.body["items"].as_array().unwrap().is_empty(), "% is matched literally");
}

#[tokio::test]
async fn list_parameters_are_checked() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("status=bogus", "status"),
        ("sort=title", "sort"),
        ("expires_before=tomorrow", "expires_before"),
        ("colour=red", "colour"),
        ("covering=maybe", "covering"),
    ] {
        let r = app.get(&format!("/v1/exceptions?{query}"), &cast.officer).await;
        assert_eq!((r.status, r.str("code").as_str()), (400, "invalid_query"), "{query}");
        assert_eq!(r.str("parameter"), param, "{query}");
    }
    let id = app.create(&cast, json!({})).await;
    app.act(&id, "submit", &cast.requester).await;
    let r = app.get("/v1/exceptions?status=draft&status=submitted", &cast.officer).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    let r = app.get("/v1/exceptions?status=draft", &cast.officer).await;
    assert!(r.body["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn every_error_is_a_problem() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let problem = |r: &Resp, status: u16, code: &str| {
        assert_eq!(r.status, status, "{code}: {}", r.body);
        assert_eq!(r.header("content-type").as_deref(), Some("application/problem+json"), "{code}");
        assert_eq!(r.str("code"), code);
        assert_eq!(r.body["status"], status);
        assert_eq!(r.str("type"), format!("urn:problem-type:leeway:{code}"));
        assert_eq!(r.str("instance"), format!("urn:uuid:{}", r.header("x-request-id").unwrap()));
    };
    problem(&app.get("/v1/nowhere", &cast.officer).await, 404, "not_found");
    problem(&app.get("/v1/exceptions/not-an-id", &cast.officer).await, 404, "not_found");
    let raw = |body: &str, ct: &str| {
        app.client
            .post(format!("{}/v1/exceptions", app.base))
            .bearer_auth(&cast.requester)
            .header("content-type", ct.to_owned())
            .body(body.to_owned())
            .send()
    };
    let to_resp = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null);
        Resp { status, headers, body }
    };
    problem(&to_resp(raw("{\"title\": ", "application/json").await.unwrap()).await, 400, "malformed_json");
    problem(&to_resp(raw("title=x", "text/plain").await.unwrap()).await, 415, "unsupported_media_type");
    let huge = format!("{{\"title\": \"{}\"}}", "x".repeat(1_100_000));
    problem(&to_resp(raw(&huge, "application/json").await.unwrap()).await, 413, "payload_too_large");
    let echoed = app.send("GET", "/v1/me", Some(&cast.officer), None, &[("x-request-id", "trace-123")]).await;
    assert_eq!(echoed.header("x-request-id").as_deref(), Some("trace-123"));
}

#[tokio::test]
async fn health_contract_and_docs_are_served() {
    let app = spawn().await;
    let r = app.send("GET", "/healthz", None, None, &[]).await;
    assert_eq!(r.status, 200);
    let r = app.send("GET", "/readyz", None, None, &[]).await;
    assert_eq!((r.status, r.str("status").as_str()), (200, "ok"));
    let served = app.send("GET", "/openapi.json", None, None, &[]).await;
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(served.body, committed, "the served contract is the committed one");
    let docs = app.client.get(format!("{}/docs/", app.base)).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    let html = docs.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "vendored Swagger UI");
    assert!(!html.contains("https://"), "no CDN: the page works offline");
}
