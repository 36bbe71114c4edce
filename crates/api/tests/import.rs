//! `leeway import` and `leeway export` against a running `leeway serve`, and an import that
//! survives the server being killed in the middle of it. The real binary, on SQLite, or on
//! PostgreSQL when `LEEWAY_TEST_DATABASE_URL` names one.

#![expect(clippy::unwrap_used, reason = "a test fails loudly")]

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{TestDb, free_port, leeway, serve, token};
use serde_json::{Value, json};

const HEADER: &str = "title,category,policy_id,control_ids,assets,business_unit,justification,risk_owner,expires_at,external_system,external_id,control_1_description,control_1_kind,control_1_effectiveness";

fn csv_row(n: u32, category: &str) -> String {
    format!(
        "Legacy TLS {n},{category},POL-1,AC-1;AC-2,host-{n};gw,payments,The appliance cannot be upgraded yet,erin,2027-03-01T00:00:00Z,sheet,R{n},WAF in front,detective,medium"
    )
}

/// `leeway ARGS` as a client: its exit code, stdout and stderr.
fn client(db: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = leeway(db, 0, "0", args).stdout(Stdio::piped()).stderr(Stdio::piped()).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_imports_a_file_with_a_bad_row_exits_non_zero_and_writes_its_errors() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = TestDb::new();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let token = token(&db.url, "analyst,auditor");
    let http = reqwest::Client::new();
    let _server = serve(&http, &db.url, port, "0").await;

    let dir = std::env::temp_dir().join(format!("leeway-import-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("legacy.csv");
    let rows = [csv_row(1, "configuration"), csv_row(2, "nope"), csv_row(3, "encryption"), csv_row(4, "other")];
    std::fs::write(&file, format!("{HEADER}\n{}\n", rows.join("\n"))).unwrap();
    let path = file.to_str().unwrap();
    // three requests of two rows, one bad row in the second
    let args = ["import", path, "--url", &url, "--token", &token, "--mode", "upsert", "--chunk-rows", "2"];

    let (code, out, err) = client(&db.url, &args);
    assert_eq!(code, Some(1), "a failed row fails the command: {out} {err}");
    assert!(out.contains("3 created, 0 updated, 0 unchanged, 1 invalid"), "{out}");
    assert!(err.contains("legacy.csv.errors.csv"), "{err}");
    assert!(err.contains("4/4 rows"), "plain progress lines off a terminal: {err}");
    let errors = std::fs::read_to_string(dir.join("legacy.csv.errors.csv")).unwrap();
    let mut lines = errors.lines();
    assert_eq!(lines.next(), Some("row,field,code,message"));
    let bad = lines.next().unwrap();
    assert!(bad.starts_with("2,category,invalid_value,"), "the file's row number and the column: {errors}");
    assert_eq!(lines.next(), None);

    // the same command again replays each chunk's answer; a dry run of the fixed file says
    // what a real run then does
    let (code, out, _) = client(&db.url, &args);
    assert_eq!(code, Some(1));
    assert!(out.contains("3 created, 0 updated, 0 unchanged, 1 invalid"), "replayed, not re-run: {out}");
    let fixed = rows.join("\n").replace(",nope,", ",other,");
    std::fs::write(&file, format!("{HEADER}\n{fixed}\n")).unwrap();
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let (code, out, _) = client(&db.url, &dry);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1 created, 0 updated, 3 unchanged, 0 invalid (would be"), "{out}");
    let (code, out, _) = client(&db.url, &args);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1 created, 0 updated, 3 unchanged, 0 invalid"), "{out}");
    assert!(!dir.join("legacy.csv.errors.csv").exists(), "no stale errors once every row went in");

    // and out again
    let (code, out, err) =
        client(&db.url, &["export", "--url", &url, "--token", &token, "--format", "csv", "--filter", "asset=gw"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().count(), 5, "the header and four rows: {out}");
    assert!(out.contains("Legacy TLS 2,other,"), "{out}");
    let (code, _, err) = client(&db.url, &["export", "--url", &url, "--token", "nonsense", "--format", "csv"]);
    assert_eq!(code, Some(2), "a refused export is a failure to run: {err}");
    assert!(err.contains("401"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn an_import_killed_midway_loses_only_its_batch_in_flight_and_a_rerun_finishes_it() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = TestDb::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let token = token(&db.url, "analyst,auditor");
    let http = reqwest::Client::new();
    let rows: Vec<Value> = (0..5000)
        .map(|n| {
            json!({
                "title": format!("Imported {n}"), "category": "other", "policy_id": "POL-1",
                "control_ids": ["AC-1"], "assets": [format!("host-{n}")], "business_unit": "payments",
                "justification": "Brought in from the old register", "risk_owner": "erin",
                "external_refs": [{"system": "old", "id": format!("X{n}")}]
            })
        })
        .collect();
    let body = rows.iter().map(|r| format!("{r}\n")).collect::<String>();
    let import = |http: reqwest::Client, body: String| {
        let (url, token) = (format!("{base}/v1/imports?mode=upsert"), token.clone());
        async move {
            http.post(url).bearer_auth(token).header("content-type", "application/x-ndjson").body(body).send().await
        }
    };

    let mut first = serve(&http, &db.url, port, "0").await;
    let running = tokio::spawn(import(http.clone(), body.clone()));
    // SIGKILL once some batches are in, well before the last
    let started = Instant::now();
    let mut seen = 0;
    while seen == 0 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(5)).await;
        seen = db.count("SELECT count(*) AS n FROM exceptions");
    }
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    assert!(running.await.unwrap().is_err(), "the answer was lost with the process");
    let kept = db.count("SELECT count(*) AS n FROM exceptions");
    assert!(kept > 0 && kept < 5000, "killed midway: {kept} rows in");
    assert_eq!(kept % 200, 0, "whole batches only: {kept}");
    assert_eq!(
        db.count("SELECT count(*) AS n FROM audit_events WHERE action = 'imported'"),
        kept,
        "every row kept has its event, none without"
    );

    // the next process: every chain holds, and the same import again finishes the job
    let _second = serve(&http, &db.url, port, "0").await;
    let verify: Value =
        http.get(format!("{base}/v1/audit/verify")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(verify["valid"], true, "{verify}");
    let again: Value = import(http.clone(), body).await.unwrap().json().await.unwrap();
    let kept = u64::try_from(kept).unwrap();
    assert_eq!(again["totals"], json!({"created": 5000 - kept, "updated": 0, "unchanged": kept, "invalid": 0}));
    assert_eq!(db.count("SELECT count(*) AS n FROM exceptions"), 5000, "nothing lost, nothing twice");
    assert_eq!(db.count("SELECT count(DISTINCT title) AS n FROM exceptions"), 5000);
}
