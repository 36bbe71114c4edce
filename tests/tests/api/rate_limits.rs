//! The per-subject rate limit: a burst, then 429 with `Retry-After` and a problem; other
//! subjects and unauthenticated probes are not held up.

use leeway_e2e::*;

#[tokio::test]
async fn a_subject_over_its_limit_gets_429_with_retry_after_and_others_go_on() {
    let app = spawn_with(Options { rate_limit: Some("1/m burst 3"), ..Options::default() }).await;
    let alice = app.token("alice", "requester", None);
    for n in 0..3 {
        assert_eq!(app.get("/v1/me", &alice).await.status, 200, "request {n} of the burst");
    }
    let r = app.get("/v1/me", &alice).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.header("content-type").as_deref(), Some("application/problem+json"));
    assert_eq!(r.str("code"), "rate_limited");
    let retry: u64 = r.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry), "one token per minute: {retry}");
    assert_eq!(r.body["retry_after_seconds"], retry);

    // another subject has a bucket of its own; probes carry no subject and are not limited
    let bob = app.token("bob", "requester", None);
    assert_eq!(app.get("/v1/me", &bob).await.status, 200);
    for _ in 0..5 {
        assert_eq!(app.client.get(format!("{}/healthz", app.base)).send().await.unwrap().status(), 200);
    }
    // a refused token costs nothing from anyone's bucket and is told 401, not 429
    assert_eq!(app.get("/v1/me", "not-a-token").await.status, 401);
}

#[tokio::test]
async fn without_a_limit_nothing_is_refused() {
    let app = spawn().await;
    let alice = app.token("alice", "requester", None);
    for _ in 0..50 {
        assert_eq!(app.get("/v1/me", &alice).await.status, 200);
    }
}
