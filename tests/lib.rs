//! The end-to-end test harness: [`spawn`] starts the real Leeway server on port 0 against a
//! fresh database, on SQLite by default or on PostgreSQL when `LEEWAY_TEST_DATABASE_URL`
//! names one (each test then gets its own schema in that database). Time is a
//! [`ManualClock`] the test moves; nothing sleeps.

#![expect(clippy::expect_used, reason = "test support: a failed set-up should stop the test loudly")]

use chrono::{DateTime, Duration, Utc};
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection, RunQueryDsl};
use leeway_api::Application;
use leeway_api::auth::Auth;
use leeway_api::clock::{Clock, ManualClock};
use leeway_api::config::Config;
use leeway_domain::kinds::Role;
use serde_json::{Value, json};
use std::sync::Arc;

pub use leeway_domain;

/// The secret every test server uses.
pub const SECRET: &str = "test-secret-test-secret-test-secret-0123456789";

/// A database made for one test, removed when the test ends.
enum TestDb {
    Sqlite(std::path::PathBuf),
    Postgres { admin_url: String, schema: String },
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match self {
            TestDb::Sqlite(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            TestDb::Postgres { admin_url, schema } => {
                if let Ok(mut c) = PgConnection::establish(admin_url) {
                    let _ = diesel::sql_query(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&mut c);
                }
            }
        }
    }
}

fn fresh_database() -> (String, TestDb) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    match std::env::var("LEEWAY_TEST_DATABASE_URL") {
        Ok(url) if url.starts_with("postgres") => {
            let schema = format!("t_{id}");
            let mut c = PgConnection::establish(&url).expect("connect to LEEWAY_TEST_DATABASE_URL");
            // The migrations create `pg_trgm` in `public` if it is missing; tests migrating
            // their schemas at once would race to create it, so it is made here, one at a time.
            // (three statements, each committed: unlocking inside one implicit transaction would
            // let the next test in before this one's extension is visible)
            for step in [
                "SELECT pg_advisory_lock(7428)",
                "CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public",
                "SELECT pg_advisory_unlock(7428)",
            ] {
                c.batch_execute(step).expect("create pg_trgm");
            }
            diesel::sql_query(format!("CREATE SCHEMA {schema}")).execute(&mut c).expect("create test schema");
            let sep = if url.contains('?') { '&' } else { '?' };
            let test_url = format!("{url}{sep}options=-csearch_path%3D{schema}");
            (test_url, TestDb::Postgres { admin_url: url, schema })
        }
        _ => {
            let path = std::env::temp_dir().join(format!("leeway-test-{id}.db"));
            (format!("sqlite://{}", path.display()), TestDb::Sqlite(path))
        }
    }
}

/// What a test changes in the server's configuration.
#[derive(Default, Clone)]
pub struct Options {
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Required `aud`.
    pub audience: Option<String>,
    /// The approval policy (default: the spec's).
    pub policy: Option<leeway_domain::ApprovalPolicy>,
    /// Run the webhook worker inside the server every this many milliseconds (default: off;
    /// tests call [`TestApp::deliver`]).
    pub deliver_every_ms: u64,
    /// Refuse webhook URLs on private addresses, as production does (default: allowed, so
    /// that receivers on 127.0.0.1 work).
    pub block_private_webhooks: bool,
    /// `LEEWAY_RATE_LIMIT`, e.g. `2/m burst 3`.
    pub rate_limit: Option<&'static str>,
    /// JWKS mode: the key set's URL and refresh settings.
    pub jwks: Option<leeway_api::jwks::JwksConfig>,
    /// `LEEWAY_ROLE_MAP`.
    pub role_map: Option<&'static str>,
    /// `LEEWAY_JWT_ROLES_CLAIM` (default `roles`).
    pub roles_claim: Option<&'static str>,
    /// No `LEEWAY_JWT_SECRET` (with JWKS: HS256 refused). [`TestApp::token`] still mints
    /// with the test secret, which the server then does not know.
    pub no_secret: bool,
    /// `LEEWAY_JWT_SECRET_PREVIOUS`.
    pub previous_secret: Option<&'static str>,
    /// `LEEWAY_METRICS_LISTEN`.
    pub metrics: leeway_api::config::MetricsAt,
    /// Run the scheduler inside the server every this many seconds, on the manual clock
    /// (default: off; tests call [`TestApp::run_jobs`]).
    pub jobs_every_seconds: u64,
}

/// A running server and what a test needs to talk to it.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// HTTP client.
    pub client: reqwest::Client,
    /// The server's clock.
    pub clock: Arc<ManualClock>,
    /// The database URL the server uses.
    pub database_url: String,
    /// The policy the server runs.
    pub policy: leeway_domain::ApprovalPolicy,
    /// The server's own store: its statement counter sees every statement a request sends.
    pub store: leeway_persistence::Store,
    /// `http://127.0.0.1:PORT` of the metrics listener, when it has one.
    pub metrics_base: Option<String>,
    /// The server's metrics.
    pub metrics: leeway_api::metrics::Metrics,
    auth: Auth,
    _db: TestDb,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// JSON body (Null when empty or not JSON).
    pub body: Value,
}

impl Resp {
    /// Sends `req` and reads the whole answer.
    pub async fn read(req: reqwest::RequestBuilder) -> Self {
        let res = req.send().await.expect("send request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap_or_default();
        Resp { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::Null) }
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }

    /// `body[key]` as a string.
    pub fn str(&self, key: &str) -> String {
        self.body[key].as_str().unwrap_or_default().to_owned()
    }

    /// The fields named in a validation problem.
    pub fn fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|a| a.iter().map(|e| e["field"].as_str().unwrap_or("").to_owned()).collect())
            .unwrap_or_default()
    }
}

/// Starts a server with default options.
pub async fn spawn() -> TestApp {
    spawn_with(Options::default()).await
}

/// Starts a server.
pub async fn spawn_with(options: Options) -> TestApp {
    // reqwest's TLS needs the process's crypto provider (the server installs the same one)
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (database_url, db) = fresh_database();
    let config = Config {
        database_url: database_url.clone(),
        listen: "127.0.0.1:0".to_owned(),
        jwt_secret: (!options.no_secret).then(|| SECRET.to_owned()),
        jwt_previous_secret: options.previous_secret.map(str::to_owned),
        jwks: options.jwks.clone(),
        role_map: options
            .role_map
            .map(|m| leeway_api::config::parse_role_map(m).expect("a role map"))
            .unwrap_or_default(),
        rate_limit: options.rate_limit.map(|r| leeway_api::limits::RateLimit::parse(r).expect("a rate limit")),
        metrics: options.metrics.clone(),
        jwt_issuer: options.issuer.clone(),
        jwt_audience: options.audience.clone(),
        roles_claim: options.roles_claim.unwrap_or("roles").to_owned(),
        business_unit_claim: "business_unit".to_owned(),
        log: "warn".to_owned(),
        log_format: "text".to_owned(),
        pool_size: 4,
        workers: Some(1),
        policy: options.policy.clone().unwrap_or_default(),
        // tests run the scheduler themselves, on the manual clock, unless told otherwise
        jobs_interval_seconds: options.jobs_every_seconds,
        delivery_interval_ms: options.deliver_every_ms,
        webhook_allow_private: !options.block_private_webhooks,
    };
    let clock = Arc::new(ManualClock::default());
    let app = Application::build(&config, clock.clone()).expect("build the application");
    let base = format!("http://127.0.0.1:{}", app.port());
    let metrics_base = app.metrics_port().map(|p| format!("http://127.0.0.1:{p}"));
    let metrics = app.metrics().clone();
    let store = app.store().clone();
    tokio::spawn(app.run());
    let roles_claim = options.roles_claim.unwrap_or("roles").to_owned();
    let auth = Auth::new(SECRET, options.issuer, options.audience, roles_claim, "business_unit".into(), clock.clone());
    TestApp {
        base,
        client: reqwest::Client::new(),
        clock,
        database_url,
        policy: config.policy,
        store,
        metrics_base,
        metrics,
        auth,
        _db: db,
    }
}

impl TestApp {
    /// A token for `sub` with `roles` (comma-separated) and an optional business unit.
    pub fn token(&self, sub: &str, roles: &str, business_unit: Option<&str>) -> String {
        let roles: Vec<Role> =
            roles.split(',').filter(|r| !r.is_empty()).map(|r| Role::parse(r).expect("known role")).collect();
        self.auth.mint(sub, &roles, business_unit, Duration::days(3650), self.clock.now()).expect("mint a token")
    }

    /// Runs SQL directly against the test's database (to simulate tampering).
    pub fn sql(&self, statement: &str) {
        if let Some(path) = self.database_url.strip_prefix("sqlite://") {
            let mut c = diesel::SqliteConnection::establish(path).expect("open the test database");
            diesel::sql_query(statement).execute(&mut c).expect("run SQL");
        } else {
            let mut c = PgConnection::establish(&self.database_url).expect("open the test database");
            diesel::sql_query(statement).execute(&mut c).expect("run SQL");
        }
    }

    /// Runs the scheduler once at the server's clock, as `leeway jobs run-once` would;
    /// returns how many exceptions had due rules.
    pub async fn run_jobs(&self) -> usize {
        self.run_scheduler().await.exceptions
    }

    /// Runs the scheduler once at the server's clock and reports everything it did.
    pub async fn run_scheduler(&self) -> leeway_api::jobs::Report {
        let (url, policy, now) = (self.database_url.clone(), self.policy.clone(), self.now());
        tokio::task::spawn_blocking(move || {
            let store = leeway_persistence::Store::connect(&url, 1).expect("connect");
            leeway_api::jobs::run_once(&store, &policy, now).expect("run the scheduler")
        })
        .await
        .expect("scheduler thread")
    }

    /// Numbers the events committed so far into the feed and sends every due webhook
    /// delivery, as the worker inside `serve` does each interval; runs passes until every
    /// committed event has a feed position (a numbering may skip its turn while another
    /// holds the sequencer).
    pub async fn deliver(&self) -> leeway_api::delivery::Pass {
        let d = leeway_api::delivery::Deliverer::new(self.store.clone(), self.policy.clone(), self.clock.clone(), true)
            .expect("a webhook deliverer")
            .with_metrics(self.metrics.clone());
        let mut total = leeway_api::delivery::Pass::default();
        for _ in 0..500 {
            let pass = d.run_once().await.expect("a delivery pass");
            total.numbered += pass.numbered;
            total.attempted += pass.attempted;
            total.succeeded += pass.succeeded;
            if self.store.unnumbered_events().expect("count unnumbered events") == 0 {
                return total;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("events still wait for a feed position after 5 s");
    }

    /// Moves the clock and runs the scheduler.
    pub async fn advance(&self, by: Duration) -> usize {
        self.clock.advance(by);
        self.run_jobs().await
    }

    /// Now, on the server's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Sends a request; `headers` are extra headers.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Resp::read(req).await
    }

    /// `POST /v1/imports?{query}` with `body` as `content_type`.
    pub async fn import(
        &self,
        query: &str,
        token: &str,
        content_type: &str,
        body: String,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = self
            .client
            .post(format!("{}/v1/imports?{query}", self.base))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Resp::read(req).await
    }

    /// GET.
    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.send("GET", path, Some(token), None, &[]).await
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.send("POST", path, Some(token), Some(&body), &[]).await
    }

    /// An action on an exception: `POST /v1/exceptions/{id}/{action}`.
    pub async fn act(&self, id: &str, action: &str, token: &str) -> Resp {
        self.send("POST", &format!("/v1/exceptions/{id}/{action}"), Some(token), Some(&json!({})), &[]).await
    }

    /// `PUT /v1/exceptions/{id}/risk`.
    pub async fn assess(&self, id: &str, token: &str, body: Value) -> Resp {
        self.send("PUT", &format!("/v1/exceptions/{id}/risk"), Some(token), Some(&body), &[]).await
    }

    /// `PATCH /v1/exceptions/{id}/controls/{control}`.
    pub async fn change_control(&self, id: &str, control: &str, token: &str, body: Value) -> Resp {
        self.send("PATCH", &format!("/v1/exceptions/{id}/controls/{control}"), Some(token), Some(&body), &[]).await
    }
}

/// A complete, valid create body; `overrides` replace members.
pub fn exception_body(overrides: Value) -> Value {
    let mut body = json!({
        "title": "Legacy VPN without MFA",
        "category": "mfa_bypass",
        "policy_id": "POL-AC-01",
        "control_ids": ["NIST-800-53:IA-2"],
        // distinct per exception, so tests that do not mean to are never chronic or at a limit
        "assets": [format!("vpn-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])],
        "business_unit": "payments",
        "justification": "The vendor appliance cannot do MFA until the Q3 upgrade.",
        "risk_owner": "erin",
        "expires_at": (Utc::now() + Duration::days(60)).to_rfc3339(),
        "controls": [
            {"description": "IP allow-list to the vendor's range", "kind": "preventive", "effectiveness": "high"},
            {"description": "Session recording", "kind": "detective", "effectiveness": "medium"}
        ]
    });
    if let (Value::Object(b), Value::Object(o)) = (&mut body, overrides) {
        for (k, v) in o {
            if v.is_null() {
                b.remove(&k);
            } else {
                b.insert(k, v);
            }
        }
    }
    body
}

/// The people of a typical walk: tokens for each role.
pub struct Cast {
    /// alice, requester in payments.
    pub requester: String,
    /// bob, analyst.
    pub analyst: String,
    /// carol, security officer.
    pub officer: String,
    /// frank, asset owner.
    pub asset_owner: String,
    /// dave, CISO.
    pub ciso: String,
    /// gina, compliance.
    pub compliance: String,
}

impl Cast {
    /// Tokens for the usual people.
    pub fn new(app: &TestApp) -> Self {
        Self {
            requester: app.token("alice", "requester", Some("payments")),
            analyst: app.token("bob", "analyst", None),
            officer: app.token("carol", "security_officer", None),
            asset_owner: app.token("frank", "asset_owner", None),
            ciso: app.token("dave", "ciso", None),
            compliance: app.token("gina", "compliance", None),
        }
    }
}

impl TestApp {
    /// Creates an exception (draft unless `overrides` says `submit: true`); returns its id.
    pub async fn create(&self, cast: &Cast, overrides: Value) -> String {
        let r = self.post("/v1/exceptions", &cast.requester, exception_body(overrides)).await;
        assert_eq!(r.status, 201, "create: {}", r.body);
        r.str("id")
    }

    /// Draft -> submitted.
    pub async fn submitted(&self, cast: &Cast) -> String {
        self.create(cast, json!({"submit": true})).await
    }

    /// Submitted -> pending approval (matrix 2 x 2 = 4, low: one security officer approves).
    pub async fn pending(&self, cast: &Cast, overrides: Value) -> String {
        let id = self.create(cast, overrides).await;
        assert_eq!(self.act(&id, "submit", &cast.requester).await.status, 200);
        let r = self
            .assess(
                &id,
                &cast.analyst,
                json!({"method": "matrix", "likelihood": 2, "impact": 2, "rationale": "Low exposure"}),
            )
            .await;
        assert_eq!(r.status, 200, "assess: {}", r.body);
        id
    }

    /// Pending approval -> approved (future start) or active.
    pub async fn approved(&self, cast: &Cast, overrides: Value) -> String {
        let id = self.pending(cast, overrides).await;
        let r = self.act(&id, "approve", &cast.officer).await;
        assert_eq!(r.status, 200, "approve: {}", r.body);
        id
    }
}

/// A request a [`Receiver`] took.
#[derive(Debug, Clone)]
pub struct Received {
    /// Its headers, lower-case names.
    pub headers: std::collections::HashMap<String, String>,
    /// Its body, as sent.
    pub body: String,
    /// What the receiver answered.
    pub answered: u16,
}

impl Received {
    /// A header.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct ReceiverState {
    received: std::sync::Mutex<Vec<Received>>,
    script: std::sync::Mutex<std::collections::VecDeque<u16>>,
}

/// A webhook receiver on 127.0.0.1: records every request and answers 200, or the statuses
/// it was told to answer next.
pub struct Receiver {
    /// `http://127.0.0.1:PORT/hook`.
    pub url: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    /// Starts one on a free port.
    pub async fn start() -> Self {
        use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
        let state = Arc::new(ReceiverState::default());
        let shared = web::Data::from(state.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a receiver");
        let port = listener.local_addr().expect("receiver address").port();
        let server = HttpServer::new(move || {
            App::new().app_data(shared.clone()).default_service(web::to(
                |req: HttpRequest, body: web::Bytes, s: web::Data<ReceiverState>| async move {
                    let answered = s.script.lock().expect("script").pop_front().unwrap_or(200);
                    let headers = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                        .collect();
                    let body = String::from_utf8_lossy(&body).into_owned();
                    s.received.lock().expect("received").push(Received { headers, body, answered });
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(answered).expect("a status"))
                        .body(format!("answered {answered}"))
                },
            ))
        })
        .workers(1)
        .listen(listener)
        .expect("listen")
        .run();
        tokio::spawn(server);
        Self { url: format!("http://127.0.0.1:{port}/hook"), state }
    }

    /// The next requests are answered with `statuses`, in order; then 200 again.
    pub fn answer_next(&self, statuses: &[u16]) {
        self.state.script.lock().expect("script").extend(statuses.iter().copied());
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("received").clone()
    }
}

#[derive(Default)]
struct KeyServerState {
    /// The key set served; `None` answers 503 (the identity provider is down).
    body: std::sync::Mutex<Option<String>>,
    fetches: std::sync::atomic::AtomicUsize,
}

/// An identity provider's JWKS endpoint on 127.0.0.1, serving the key set it is given.
pub struct KeyServer {
    /// `http://127.0.0.1:PORT/jwks`.
    pub url: String,
    state: Arc<KeyServerState>,
}

impl KeyServer {
    /// Starts one serving `keys` (JWKs).
    pub async fn start(keys: &[Value]) -> Self {
        use actix_web::{App, HttpResponse, HttpServer, web};
        let state = Arc::new(KeyServerState::default());
        let shared = web::Data::from(state.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a key server");
        let port = listener.local_addr().expect("key server address").port();
        let server = HttpServer::new(move || {
            App::new().app_data(shared.clone()).default_service(web::to(|s: web::Data<KeyServerState>| async move {
                s.fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                match s.body.lock().expect("key set").clone() {
                    Some(body) => HttpResponse::Ok().content_type("application/json").body(body),
                    None => HttpResponse::ServiceUnavailable().finish(),
                }
            }))
        })
        .workers(1)
        .listen(listener)
        .expect("listen")
        .run();
        tokio::spawn(server);
        let this = Self { url: format!("http://127.0.0.1:{port}/jwks"), state };
        this.serve(keys);
        this
    }

    /// Serves `keys` from now on.
    pub fn serve(&self, keys: &[Value]) {
        *self.state.body.lock().expect("key set") = Some(serde_json::json!({ "keys": keys }).to_string());
    }

    /// Answers 503 from now on.
    pub fn go_down(&self) {
        *self.state.body.lock().expect("key set") = None;
    }

    /// How many times the key set was asked for.
    pub fn fetches(&self) -> usize {
        self.state.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}
