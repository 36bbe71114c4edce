//! No event is lost when `leeway serve` is killed between a commit and its delivery: the
//! event is in the database with the change, and the next process delivers it. Runs the real
//! binary on SQLite, or on PostgreSQL when `LEEWAY_TEST_DATABASE_URL` names one.

#![expect(clippy::unwrap_used, reason = "a test fails loudly")]

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use diesel::{Connection, RunQueryDsl};

const SECRET: &str = "kill-test-secret-kill-test-secret-0123456789";

fn database() -> (String, Option<(String, String)>) {
    match std::env::var("LEEWAY_TEST_DATABASE_URL") {
        Ok(url) if url.starts_with("postgres") => {
            let schema = format!("k_{}", uuid::Uuid::new_v4().simple());
            let mut c = diesel::PgConnection::establish(&url).unwrap();
            diesel::sql_query(format!("CREATE SCHEMA {schema}")).execute(&mut c).unwrap();
            let sep = if url.contains('?') { '&' } else { '?' };
            (format!("{url}{sep}options=-csearch_path%3D{schema}"), Some((url, schema)))
        }
        _ => {
            let path = std::env::temp_dir().join(format!("leeway-kill-{}.db", uuid::Uuid::new_v4().simple()));
            (format!("sqlite://{}", path.display()), None)
        }
    }
}

fn leeway(db: &str, port: u16, deliver_every_ms: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_leeway"));
    c.args(args)
        .env("LEEWAY_DATABASE_URL", db)
        .env("LEEWAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("LEEWAY_JWT_SECRET", SECRET)
        .env("LEEWAY_DELIVERY_INTERVAL_MS", deliver_every_ms)
        .env("LEEWAY_WEBHOOK_ALLOW_PRIVATE", "true")
        .env("LEEWAY_JOBS_INTERVAL_SECONDS", "0")
        .env("LEEWAY_LOG", "warn")
        .stdout(Stdio::null());
    c
}

/// A child process killed when the test ends, passed or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn ready(client: &reqwest::Client, base: &str, child: &mut Child) {
    let started = Instant::now();
    loop {
        if client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "leeway serve exited");
        assert!(started.elapsed() < Duration::from_secs(30), "leeway serve never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

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

    let (db, schema) = database();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let token = String::from_utf8(
        leeway(&db, port, "0", &["token", "--sub", "ops", "--roles", "admin,requester", "--ttl", "1h"])
            .stdout(Stdio::piped())
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let client = reqwest::Client::new();

    // the first process commits the event, and dies before any worker could send it
    let mut first = Running(leeway(&db, port, "0", &["serve"]).spawn().unwrap());
    ready(&client, &base, &mut first.0).await;
    let auth = format!("Bearer {}", token.trim());
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
    let mut second = Running(leeway(&db, port, "100", &["serve"]).spawn().unwrap());
    ready(&client, &base, &mut second.0).await;
    let started = Instant::now();
    while got.lock().unwrap().is_empty() && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(second);
    let got = got.lock().unwrap().clone();
    if let Some((url, schema)) = schema {
        let mut c = diesel::PgConnection::establish(&url).unwrap();
        diesel::sql_query(format!("DROP SCHEMA {schema} CASCADE")).execute(&mut c).unwrap();
    } else if let Some(path) = db.strip_prefix("sqlite://") {
        for suffix in ["", "-wal", "-shm", ".jwt-secret"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    }
    assert_eq!(got.len(), 1, "delivered once after the restart: {got:?}");
    let event: serde_json::Value = serde_json::from_str(&got[0].1).unwrap();
    assert_eq!(event["type"], "exception.created");
    assert_eq!(event["data"]["id"], created["id"]);
}
