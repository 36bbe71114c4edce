//! No event is lost when `leeway serve` is killed between a commit and its delivery: the
//! event is in the database with the change, and the next process delivers it. Runs the real
//! binary on SQLite, or on PostgreSQL when `LEEWAY_TEST_DATABASE_URL` names one.

#![expect(clippy::unwrap_used, reason = "a test fails loudly")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use common::{TestDb, free_port, serve, token};

#[tokio::test]
async fn an_event_committed_before_a_kill_is_delivered_after_the_restart() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // the receiver
    let got: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let shared = web::Data::from(got.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook = format!("http://127.0.0.1:{}/hook", listener.local_addr().unwrap().port());
    let server = HttpServer::new(move || {
        App::new().app_data(shared.clone()).default_service(web::to(
            |req: HttpRequest, body: String, got: web::Data<Mutex<Vec<(String, String)>>>| async move {
                let id = req.headers().get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                got.lock().unwrap().push((id, body));
                HttpResponse::Ok().finish()
            },
        ))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);

    let db = TestDb::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let token = token(&db.url, "admin,requester");
    let client = reqwest::Client::new();

    // the first process commits the event, and dies before any worker could send it
    let mut first = serve(&client, &db.url, port, "0").await;
    let auth = format!("Bearer {token}");
    let r = client
        .post(format!("{base}/v1/webhooks"))
        .header("authorization", &auth)
        .json(&serde_json::json!({"url": hook}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body = serde_json::json!({
        "title": "Legacy VPN without MFA", "category": "mfa_bypass", "policy_id": "POL-AC-01",
        "control_ids": ["IA-2"], "assets": ["vpn-01"], "business_unit": "payments",
        "justification": "The appliance cannot do MFA until the upgrade.", "risk_owner": "erin"
    });
    let r =
        client.post(format!("{base}/v1/exceptions")).header("authorization", &auth).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let created: serde_json::Value = r.json().await.unwrap();
    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();

    // the next process delivers it
    let second = serve(&client, &db.url, port, "100").await;
    let started = Instant::now();
    while got.lock().unwrap().is_empty() && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(second);
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "delivered once after the restart: {got:?}");
    let event: serde_json::Value = serde_json::from_str(&got[0].1).unwrap();
    assert_eq!(event["type"], "exception.created");
    assert_eq!(event["data"]["id"], created["id"]);
}
