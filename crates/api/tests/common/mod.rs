//! What the tests that run the real binary share: a fresh database of either backend, the
//! binary's command line, and a server process killed when the test ends.

#![allow(dead_code, reason = "each test binary uses a part")]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diesel::{Connection, RunQueryDsl};

pub const SECRET: &str = "kill-test-secret-kill-test-secret-0123456789";

/// A fresh database: a new schema on `LEEWAY_TEST_DATABASE_URL` when it names PostgreSQL, a
/// new SQLite file otherwise. Dropped with the value.
pub struct TestDb {
    pub url: String,
    schema: Option<(String, String)>,
}

impl TestDb {
    pub fn new() -> Self {
        match std::env::var("LEEWAY_TEST_DATABASE_URL") {
            Ok(url) if url.starts_with("postgres") => {
                let schema = format!("k_{}", uuid::Uuid::new_v4().simple());
                let mut c = diesel::PgConnection::establish(&url).unwrap();
                diesel::sql_query(format!("CREATE SCHEMA {schema}")).execute(&mut c).unwrap();
                let sep = if url.contains('?') { '&' } else { '?' };
                Self { url: format!("{url}{sep}options=-csearch_path%3D{schema}"), schema: Some((url, schema)) }
            }
            _ => {
                let path = std::env::temp_dir().join(format!("leeway-bin-{}.db", uuid::Uuid::new_v4().simple()));
                Self { url: format!("sqlite://{}", path.display()), schema: None }
            }
        }
    }

    /// The number `sql` (a `SELECT count(*) AS n ...`) counts.
    pub fn count(&self, sql: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let n: N = if let Some(path) = self.url.strip_prefix("sqlite://") {
            let mut c = diesel::SqliteConnection::establish(path).unwrap();
            diesel::sql_query(sql).get_result(&mut c).unwrap()
        } else {
            let mut c = diesel::PgConnection::establish(&self.url).unwrap();
            diesel::sql_query(sql).get_result(&mut c).unwrap()
        };
        n.n
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((url, schema)) = &self.schema {
            if let Ok(mut c) = diesel::PgConnection::establish(url) {
                let _ = diesel::sql_query(format!("DROP SCHEMA {schema} CASCADE")).execute(&mut c);
            }
        } else if let Some(path) = self.url.strip_prefix("sqlite://") {
            for suffix in ["", "-wal", "-shm", ".jwt-secret"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
        }
    }
}

/// `leeway ARGS` on `db`, serving on `port` when it serves.
pub fn leeway(db: &str, port: u16, deliver_every_ms: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_leeway"));
    c.args(args)
        .env("LEEWAY_DATABASE_URL", db)
        .env("LEEWAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("LEEWAY_JWT_SECRET", SECRET)
        .env("LEEWAY_DELIVERY_INTERVAL_MS", deliver_every_ms)
        .env("LEEWAY_WEBHOOK_ALLOW_PRIVATE", "true")
        .env("LEEWAY_JOBS_INTERVAL_SECONDS", "0")
        .env("LEEWAY_LOG", "warn")
        .env_remove("LEEWAY_URL")
        .env_remove("LEEWAY_TOKEN")
        .stdout(Stdio::null());
    c
}

/// A token minted by the binary.
pub fn token(db: &str, roles: &str) -> String {
    let out = leeway(db, 0, "0", &["token", "--sub", "ops", "--roles", roles, "--ttl", "1h"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A child process killed when the test ends, passed or not.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `leeway serve` on `db` and `port`, ready.
pub async fn serve(client: &reqwest::Client, db: &str, port: u16, deliver_every_ms: &str) -> Running {
    let mut child = Running(leeway(db, port, deliver_every_ms, &["serve"]).spawn().unwrap());
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        if client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
            return child;
        }
        assert!(child.0.try_wait().unwrap().is_none(), "leeway serve exited");
        assert!(started.elapsed() < Duration::from_secs(30), "leeway serve never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
