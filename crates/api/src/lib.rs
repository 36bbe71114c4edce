//! Leeway's HTTP API: actix-web handlers over the domain and the store, the OpenAPI
//! contract generated from them (utoipa), and the `leeway` binary's building blocks.
//!
//! Handlers are thin: extractors authenticate and parse (bodies against the contract itself),
//! one domain operation runs inside one store transaction on a blocking thread, and one
//! response type comes back.

pub mod auth;
pub mod body;
pub mod client;
pub mod clock;
pub mod config;
pub mod contract;
pub mod delivery;
pub mod error;
pub mod jobs;
pub mod jwks;
pub mod limits;
pub mod metrics;
pub mod middleware;
pub mod routes;
pub mod seed;
pub mod wire;

use actix_web::{App, HttpResponse, HttpServer, web};
use std::net::TcpListener;
use std::sync::Arc;
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::Auth;
use crate::clock::Clock;
use crate::config::{Config, MetricsAt};
use crate::contract::Contract;
use leeway_domain::ApprovalPolicy;
use leeway_persistence::Store;

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// Token verification.
    pub auth: Auth,
    /// The approval policy in force.
    pub policy: ApprovalPolicy,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The request-body schemas of the published contract.
    pub contract: Contract,
    /// Whether webhook URLs may name private addresses.
    pub webhook_allow_private: bool,
    /// The per-subject rate limit, when one is set.
    pub limiter: Option<limits::Limiter>,
    /// This server's metrics.
    pub metrics: metrics::Metrics,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Leeway",
        description = "Security exceptions: formally accepted, time-boxed deviations from a security policy, with risk assessment, compensating controls, approvals, expiry and review.\n\nConventions (errors, pagination, concurrency, idempotency) are in docs/API-DESIGN.md. Every error is `application/problem+json` (RFC 9457) with a stable `code`; validation problems list every bad field in `errors`. Request bodies are checked against the schemas of this document: what it requires, the server requires.",
        license(name = "Apache-2.0")
    ),
    components(schemas(
        routes::exceptions::query::ListSort,
        routes::integrations::json::WebhookEvent,
        routes::integrations::json::DeliveryStatus,
        routes::exports::ExportFormat,
        routes::imports::ImportMode
    )),
    tags(
        (name = "exceptions", description = "Create, read, list and change exceptions"),
        (name = "lifecycle", description = "Submit, assess, approve, reject, return, withdraw, revoke, close"),
        (name = "controls", description = "Compensating controls"),
        (name = "governance", description = "Renewals and periodic reviews"),
        (name = "integrations", description = "Webhooks, the change feed, coverage for gates"),
        (name = "audit", description = "The whole audit trail and its verification"),
        (name = "reports", description = "KPIs and hotspots"),
        (name = "system", description = "Health, the caller, the policy"),
    )
)]
struct ApiDoc;

/// The OpenAPI document generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut api) =
        App::new().into_utoipa_app().openapi(ApiDoc::openapi()).configure(routes::configure).split_for_parts();
    // the modifiers see the paths only once they are registered
    utoipa::Modify::modify(&routes::Conventions, &mut api);
    api.webhooks = Some(routes::integrations::webhook_contract());
    api
}

/// A built server, bound to its port, not yet running.
pub struct Application {
    port: u16,
    metrics_port: Option<u16>,
    server: actix_web::dev::Server,
    metrics_server: Option<actix_web::dev::Server>,
    store: Store,
    scheduler: Option<jobs::Scheduler>,
    metrics: metrics::Metrics,
}

/// Waits for SIGTERM (a graceful stop) or SIGINT (at once), then tells the scheduler and
/// stops the server.
#[cfg(unix)]
async fn on_signal(stopping: Option<Arc<std::sync::atomic::AtomicBool>>, server: actix_web::dev::ServerHandle) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot listen for SIGTERM and SIGINT; stop the process with SIGKILL");
        return std::future::pending().await;
    };
    let graceful = tokio::select! {
        _ = term.recv() => true,
        _ = int.recv() => false,
    };
    tracing::info!(graceful, "stopping");
    if let Some(flag) = stopping {
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    server.stop(graceful).await;
}

/// Elsewhere, Ctrl-C stops gracefully.
#[cfg(not(unix))]
async fn on_signal(stopping: Option<Arc<std::sync::atomic::AtomicBool>>, server: actix_web::dev::ServerHandle) {
    if tokio::signal::ctrl_c().await.is_ok() {
        if let Some(flag) = stopping {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        server.stop(true).await;
    }
}

/// `GET /metrics`: every metric in Prometheus's text format, without authentication.
async fn serve_metrics(state: web::Data<AppState>) -> HttpResponse {
    match state.metrics.render() {
        Ok(text) => HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(text),
        Err(e) => actix_web::ResponseError::error_response(&error::ApiError::internal(&e)),
    }
}

impl Application {
    /// Connects and migrates the database, resolves the token secret, binds the listener.
    pub fn build(config: &Config, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let store = Store::connect(&config.database_url, config.pool_size).map_err(|e| e.to_string())?;
        let applied = store.migrate().map_err(|e| e.to_string())?;
        if !applied.is_empty() {
            tracing::info!(migrations = ?applied, "applied pending migrations");
        }
        // the policy this server gives approvals under, kept for audit packages
        store.record_policy(&config.policy, clock.now()).map_err(|e| e.to_string())?;
        // with an identity provider, HS256 tokens are accepted only when a secret is set too
        let secret = match (&config.jwks, &config.jwt_secret) {
            (Some(_), None) => None,
            _ => {
                let (secret, generated) = config.resolve_secret(true)?;
                if let Some(path) = generated {
                    tracing::warn!(path = %path.display(), "no LEEWAY_JWT_SECRET: generated a secret into this file (mode 0600); `leeway token` uses it");
                }
                Some(secret)
            }
        };
        if config.jwt_previous_secret.as_ref().is_some_and(|s| s.len() < 32) {
            return Err("LEEWAY_JWT_SECRET_PREVIOUS must be at least 32 characters, as the secret it was".into());
        }
        if let Some(j) = &config.jwks {
            // Config::load says so too; a Config built in code must not skip it
            config::check_jwks_url(&j.url)?;
            if config.jwt_issuer.is_none() || config.jwt_audience.is_none() {
                return Err("JWKS mode needs an issuer and an audience (LEEWAY_JWT_ISSUER, LEEWAY_JWT_AUDIENCE)".into());
            }
        }
        let jwks = config.jwks.clone().map(jwks::Jwks::start).transpose()?;
        let auth = Auth::from_config(config, secret.as_deref(), jwks, clock.clone());
        let limiter = config.rate_limit.map(limits::Limiter::new).transpose()?;
        let metrics = metrics::Metrics::new(store.clone())?;
        if config.metrics != MetricsAt::Off {
            metrics.spawn_sampler(clock.clone());
        }
        let scheduler = (config.jobs_interval_seconds > 0).then(|| {
            jobs::Scheduler::spawn(
                store.clone(),
                config.policy.clone(),
                clock.clone(),
                std::time::Duration::from_secs(config.jobs_interval_seconds),
                metrics.clone(),
            )
        });
        if config.delivery_interval_ms > 0 {
            delivery::Deliverer::new(
                store.clone(),
                config.policy.clone(),
                clock.clone(),
                config.webhook_allow_private,
            )?
            .with_metrics(metrics.clone())
            .spawn(std::time::Duration::from_millis(config.delivery_interval_ms));
        }
        let api = openapi();
        let contract = Contract::from_openapi(&api)?;
        let methods = middleware::Methods::from_openapi(&api);
        // the document is served as the bytes it serializes to, shared by every worker: the
        // structure itself is dropped here (a copy per worker cost megabytes of memory)
        let document = web::Bytes::from(api.to_json().map_err(|e| e.to_string())?);
        drop(api);
        let state = web::Data::new(AppState {
            store: store.clone(),
            auth,
            policy: config.policy.clone(),
            clock,
            contract,
            webhook_allow_private: config.webhook_allow_private,
            limiter,
            metrics: metrics.clone(),
        });
        let metrics_on_main = config.metrics == MetricsAt::Main;
        let listener =
            TcpListener::bind(&config.listen).map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let state_for_metrics = state.clone();
        let mut server = HttpServer::new(move || {
            let (app, _) = App::new().into_utoipa_app().configure(routes::configure).split_for_parts();
            app.app_data(state.clone())
                .app_data(web::Data::new(methods.clone()))
                .app_data(web::PayloadConfig::new(body::MAX_BODY))
                .app_data(web::QueryConfig::default().error_handler(error::query_error))
                .app_data(web::PathConfig::default().error_handler(error::path_error))
                .app_data(web::JsonConfig::default().limit(body::MAX_BODY).error_handler(error::json_error))
                .wrap(actix_web::middleware::from_fn(middleware::catch_panics))
                .wrap(actix_web::middleware::from_fn(middleware::limit_head))
                .wrap(actix_web::middleware::from_fn(middleware::request_id))
                .configure(|cfg| {
                    if metrics_on_main {
                        cfg.route("/metrics", web::get().to(serve_metrics));
                    }
                })
                .service(web::redirect("/docs", "/docs/"))
                .service(web::resource("/openapi.json").route(web::get().to({
                    let document = document.clone();
                    move || {
                        let document = document.clone();
                        async move { HttpResponse::Ok().content_type("application/json").body(document) }
                    }
                })))
                .service(
                    SwaggerUi::new("/docs/{_:.*}")
                        .config(utoipa_swagger_ui::Config::new(["/openapi.json"]).validator_url("none")),
                )
                .default_service(web::to(middleware::unmatched))
        })
        .listen(listener)
        .map_err(|e| e.to_string())?
        // `run` handles the signals, so that the scheduler hears of a stop at once
        .disable_signals();
        if let Some(n) = config.workers {
            server = server.workers(n);
        }
        let (metrics_server, metrics_port) = match &config.metrics {
            MetricsAt::Listen(addr) => {
                let listener =
                    TcpListener::bind(addr).map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?;
                let port = listener.local_addr().map_err(|e| e.to_string())?.port();
                let state = state_for_metrics;
                let server = HttpServer::new(move || {
                    App::new().app_data(state.clone()).route("/metrics", web::get().to(serve_metrics))
                })
                .workers(1)
                .disable_signals()
                .listen(listener)
                .map_err(|e| e.to_string())?
                .run();
                (Some(server), Some(port))
            }
            MetricsAt::Off | MetricsAt::Main => (None, None),
        };

        Ok(Self { port, metrics_port, server: server.run(), metrics_server, store, scheduler, metrics })
    }

    /// The server's metrics (tests take samples and count deliveries with them).
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.metrics
    }

    /// The metrics listener's port, when `/metrics` has a listener of its own.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_port
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's store (its statement counter is what the statement-count tests read).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until stopped. SIGTERM tells the scheduler to stop after its current batch and,
    /// at the same moment, closes the listener and answers the requests in flight (up to
    /// 30 s); this returns once both are done. SIGINT stops at once (the scheduler's batch in
    /// hand still ends: a batch is one transaction). Webhook attempts in flight are abandoned
    /// to their lease, and another node or the next start sends them again.
    pub async fn run(self) -> std::io::Result<()> {
        let Self { server, metrics_server, scheduler, .. } = self;
        let stopping = scheduler.as_ref().map(jobs::Scheduler::stopping);
        let handle = server.handle();
        let server = async move {
            let signals = std::pin::pin!(on_signal(stopping, handle));
            match futures_util::future::select(std::pin::pin!(server), signals).await {
                futures_util::future::Either::Left((served, _)) => served,
                futures_util::future::Either::Right(((), server)) => server.await,
            }
        };
        let served = match metrics_server {
            // the metrics listener stops with the API's
            Some(metrics) => {
                let handle = metrics.handle();
                let api = async {
                    let served = server.await;
                    handle.stop(false).await;
                    served
                };
                futures_util::future::join(api, metrics).await.0
            }
            None => server.await,
        };
        if let Some(s) = scheduler {
            tracing::info!("stopping: letting the scheduler finish its batch");
            let _ = web::block(move || s.stop()).await;
        }
        tracing::info!("stopped");
        served
    }
}
