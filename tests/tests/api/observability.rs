//! `/metrics` in Prometheus's text format: on a listener of its own (nothing on the API's),
//! or on the main one; requests by route template and status, the pool, the scheduler,
//! webhook deliveries by outcome and exceptions by status.

use leeway_api::config::MetricsAt;
use leeway_e2e::*;
use serde_json::json;

async fn scrape(app: &TestApp, base: &str) -> String {
    let r = app.client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    r.text().await.unwrap()
}

/// The value of the one sample whose name and labels start `series` (e.g. `x{a="b"`).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with([' ', ',', '}']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_by_route_deliveries_by_outcome_and_exceptions_by_status() {
    let app = spawn_with(Options {
        metrics: MetricsAt::Listen("127.0.0.1:0".to_owned()),
        jobs_every_seconds: 1,
        ..Options::default()
    })
    .await;
    let base = app.metrics_base.clone().expect("a metrics listener");
    // not on the API's listener, and no token needed on its own
    assert_eq!(app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().status(), 404);

    let cast = Cast::new(&app);
    let receiver = Receiver::start().await;
    let admin = app.token("root", "admin", None);
    assert_eq!(app.post("/v1/webhooks", &admin, json!({"url": receiver.url})).await.status, 201);
    let a = app.create(&cast, json!({})).await;
    let b = app.create(&cast, json!({})).await;
    assert_eq!(app.act(&b, "submit", &cast.requester).await.status, 200);
    for _ in 0..3 {
        assert_eq!(app.get(&format!("/v1/exceptions/{a}"), &cast.requester).await.status, 200);
    }
    assert_eq!(app.get("/v1/exceptions/no-such", &cast.requester).await.status, 404);
    receiver.answer_next(&[500]);
    app.deliver().await;
    app.metrics.sample(app.now()).unwrap();

    let text = scrape(&app, &base).await;
    let get = r#"leeway_http_requests_total{method="GET",route="/v1/exceptions/{id}",status="200""#;
    assert_eq!(value(&text, get), Some(3.0), "{text}");
    let missing = r#"leeway_http_requests_total{method="GET",route="/v1/exceptions/{id}",status="404""#;
    assert_eq!(value(&text, missing), Some(1.0));
    let created = r#"leeway_http_requests_total{method="POST",route="/v1/exceptions",status="201""#;
    assert_eq!(value(&text, created), Some(2.0));
    let latency = r#"leeway_http_request_duration_seconds_count{method="GET",route="/v1/exceptions/{id}",status="200""#;
    assert_eq!(value(&text, latency), Some(3.0));
    // three events (two created, one submitted): the first attempt failed, the rest went
    assert_eq!(value(&text, r#"leeway_webhook_deliveries_total{outcome="retrying""#), Some(1.0), "{text}");
    assert!(value(&text, r#"leeway_webhook_deliveries_total{outcome="delivered""#).is_some_and(|n| n >= 2.0));
    assert_eq!(value(&text, r#"leeway_exceptions{status="draft""#), Some(1.0));
    assert!(value(&text, r#"leeway_exceptions{status="submitted""#).is_some_and(|n| n == 1.0), "{text}");
    assert!(value(&text, "leeway_webhook_oldest_pending_seconds").is_some());
    assert!(value(&text, r#"leeway_db_pool_connections{state="in_use""#).is_some());
    assert_eq!(value(&text, "leeway_db_pool_waiting"), Some(0.0));
    // the scheduler inside the server ran at least once (every second)
    let started = std::time::Instant::now();
    loop {
        let text = scrape(&app, &base).await;
        if value(&text, r#"leeway_scheduler_runs_total{outcome="ok""#).is_some_and(|n| n >= 1.0) {
            assert!(value(&text, "leeway_scheduler_lag_seconds").is_some());
            assert!(value(&text, "leeway_scheduler_due_exceptions").is_some());
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "no scheduler run counted: {text}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn metrics_can_share_the_main_listener_and_are_off_by_default() {
    let app = spawn_with(Options { metrics: MetricsAt::Main, ..Options::default() }).await;
    scrape(&app, &app.base).await;
    // the first scrape is counted like any request
    let text = scrape(&app, &app.base).await;
    assert!(text.contains("# TYPE leeway_http_requests_total counter"), "{text}");
    assert_eq!(value(&text, r#"leeway_http_requests_total{method="GET",route="/metrics",status="200""#), Some(1.0));
    let off = spawn().await;
    assert_eq!(off.client.get(format!("{}/metrics", off.base)).send().await.unwrap().status(), 404);
}
