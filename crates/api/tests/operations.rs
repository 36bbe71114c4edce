//! What operators rely on, through the real binary: one JSON log line per request with its
//! route template, subject and exception (never the token), and SIGTERM draining a request in
//! flight before a clean exit. Runs on SQLite, or on PostgreSQL when
//! `LEEWAY_TEST_DATABASE_URL` names one.

#![expect(clippy::unwrap_used, reason = "a test fails loudly")]

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Running, TestDb, free_port, leeway, token};
use serde_json::{Value, json};

fn row(n: usize) -> Value {
    json!({
        "title": format!("Legacy appliance {n} without MFA"), "category": "mfa_bypass", "policy_id": "POL-AC-01",
        "control_ids": ["IA-2"], "assets": [format!("appliance-{n}")], "business_unit": "payments",
        "justification": "The appliance cannot do MFA until the vendor ships the upgrade.", "risk_owner": "erin"
    })
}

#[tokio::test]
async fn json_logs_name_route_subject_and_exception_and_sigterm_drains_the_request_in_flight() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = TestDb::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let token = token(&db.url, "admin,analyst,requester");
    let client = reqwest::Client::new();
    let mut server = Running(
        leeway(&db.url, port, "0", &["serve"])
            .env("LEEWAY_LOG_FORMAT", "json")
            // the scheduler runs too, so the stop waits for it
            .env("LEEWAY_JOBS_INTERVAL_SECONDS", "1")
            .env("LEEWAY_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while !client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(started.elapsed() < Duration::from_secs(30), "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let auth = format!("Bearer {token}");
    let created = client.post(format!("{base}/v1/exceptions")).header("authorization", &auth).json(&row(0));
    let created: Value = created.send().await.unwrap().json().await.unwrap();
    let (id, key) = (created["id"].as_str().unwrap().to_owned(), created["key"].as_str().unwrap().to_owned());
    let got = client.get(format!("{base}/v1/exceptions/{key}")).header("authorization", &auth).send().await.unwrap();
    assert_eq!(got.status(), 200);

    // an import of thousands of rows is in flight when SIGTERM comes
    let rows: Vec<Value> = (1..=4000).map(row).collect();
    let import = tokio::spawn({
        let (client, auth, url) = (client.clone(), auth.clone(), format!("{base}/v1/imports"));
        async move {
            let r = client.post(url).header("authorization", auth).json(&rows).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap(), Instant::now())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!import.is_finished(), "the import should still be running; make it bigger");
    let pid = server.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let signalled = Instant::now();
    let (status, body, answered) = import.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["totals"]["created"], 4000, "the request in flight was answered whole");
    assert!(answered > signalled);
    let exited = loop {
        if let Some(s) = server.0.try_wait().unwrap() {
            break s;
        }
        assert!(signalled.elapsed() < Duration::from_secs(40), "leeway did not stop after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exited.success(), "a drained stop exits 0: {exited:?}");
    assert_eq!(db.count("SELECT count(*) AS n FROM exceptions"), 4001);

    let mut logs = String::new();
    server.0.stderr.take().unwrap().read_to_string(&mut logs).unwrap();
    assert!(!logs.contains(&token), "the token never reaches the log");
    let requests: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "request")
        .map(|l| l["fields"].clone())
        .collect();
    let find = |method: &str, route: &str| {
        requests.iter().find(|r| r["method"] == method && r["route"] == route).cloned().unwrap_or_else(|| {
            panic!("no {method} {route} line in {logs}");
        })
    };
    let post = find("POST", "/v1/exceptions");
    assert_eq!(post["status"], 201);
    assert_eq!(post["subject"], "ops");
    assert_eq!(post["exception"], id.as_str(), "the created exception");
    let get = find("GET", "/v1/exceptions/{id}");
    assert_eq!(get["status"], 200);
    assert_eq!(get["exception"], key.as_str(), "the exception the path named");
    assert!(get["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(get["duration_ms"].as_f64().is_some());
    let probe = find("GET", "/readyz");
    assert!(probe.get("subject").is_none(), "no subject on an unauthenticated probe: {probe}");
    assert!(logs.contains("letting the scheduler finish its batch"), "the scheduler was told: {logs}");
    assert!(logs.contains("\"stopped\""), "the shutdown is logged: {logs}");
}
