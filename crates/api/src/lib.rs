//! Leeway's HTTP API: actix-web handlers over the domain and the store, the OpenAPI
//! contract generated from them (utoipa), and the `leeway` binary's building blocks.
//!
//! Handlers are thin: extractors authenticate and parse, one domain operation runs inside
//! one store transaction on a blocking thread, and one response type comes back.

pub mod auth;
pub mod body;
pub mod clock;
pub mod config;
pub mod dto;
pub mod error;
pub mod jobs;
pub mod listing;
pub mod routes;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, HttpServer, web};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::Auth;
use crate::clock::Clock;
use crate::config::Config;
use crate::error::{REQUEST_ID, not_found_route};
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
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Leeway",
        description = "Security exceptions: formally accepted, time-boxed deviations from a security policy, with risk assessment, compensating controls, approvals, expiry and review.\n\nConventions (errors, pagination, concurrency, idempotency) are in docs/API-DESIGN.md. Every error is `application/problem+json` (RFC 9457) with a stable `code`; validation problems list every bad field in `errors`.",
        license(name = "Apache-2.0")
    ),
    modifiers(&Security),
    tags(
        (name = "exceptions", description = "Create, read, list and change exceptions"),
        (name = "lifecycle", description = "Submit, assess, approve, reject, return, withdraw, revoke, close"),
        (name = "controls", description = "Compensating controls"),
        (name = "governance", description = "Renewals and periodic reviews"),
        (name = "system", description = "Health, the caller, the policy"),
    )
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.bearer_format = Some("JWT".to_owned());
        http.description =
            Some("HS256 JWT with `sub`, `exp`, `roles` (array) and optionally `business_unit`".to_owned());
        components.add_security_scheme("bearer", SecurityScheme::Http(http));
    }
}

/// The OpenAPI document generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, api) =
        App::new().into_utoipa_app().openapi(ApiDoc::openapi()).configure(routes::configure).split_for_parts();
    api
}

/// Sets `X-Request-Id` (the caller's when it is sane, else a new UUID), makes it available
/// to problems and logs, and logs one line per request.
async fn request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.path().to_owned();
    let mut res = REQUEST_ID.scope(id.clone(), next.call(req)).await?;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(HeaderName::from_static("x-request-id"), v);
    }
    tracing::info!(
        request_id = %id,
        method = %method,
        path = %path,
        status = res.status().as_u16(),
        elapsed_us = start.elapsed().as_micros() as u64,
        "request"
    );
    Ok(res)
}

/// A built server, bound to its port, not yet running.
pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    /// Connects and migrates the database, resolves the token secret, binds the listener.
    pub fn build(config: &Config, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let store = Store::connect(&config.database_url, config.pool_size).map_err(|e| e.to_string())?;
        let applied = store.migrate().map_err(|e| e.to_string())?;
        if !applied.is_empty() {
            tracing::info!(migrations = ?applied, "applied pending migrations");
        }
        let (secret, generated) = config.resolve_secret(true)?;
        if let Some(path) = generated {
            tracing::warn!(path = %path.display(), "no LEEWAY_JWT_SECRET: generated a secret into this file (mode 0600); `leeway token` uses it");
        }
        let auth = Auth::from_config(config, &secret, clock.clone());
        if config.jobs_interval_seconds > 0 {
            jobs::spawn(
                store.clone(),
                config.policy.clone(),
                clock.clone(),
                std::time::Duration::from_secs(config.jobs_interval_seconds),
            );
        }
        let state = web::Data::new(AppState { store, auth, policy: config.policy.clone(), clock });
        let listener =
            TcpListener::bind(&config.listen).map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let api = openapi();
        let mut server = HttpServer::new(move || {
            let (app, _) = App::new().into_utoipa_app().configure(routes::configure).split_for_parts();
            app.app_data(state.clone())
                .app_data(web::PayloadConfig::new(body::MAX_BODY))
                .app_data(web::QueryConfig::default().error_handler(error::query_error))
                .app_data(web::PathConfig::default().error_handler(error::path_error))
                .app_data(web::JsonConfig::default().limit(body::MAX_BODY).error_handler(error::json_error))
                .wrap(from_fn(request_id))
                .service(web::redirect("/docs", "/docs/"))
                .service(
                    SwaggerUi::new("/docs/{_:.*}")
                        .url("/openapi.json", api.clone())
                        .config(utoipa_swagger_ui::Config::new(["/openapi.json"]).validator_url("none")),
                )
                .default_service(web::to(not_found_route))
        })
        .listen(listener)
        .map_err(|e| e.to_string())?;
        if let Some(n) = config.workers {
            server = server.workers(n);
        }
        Ok(Self { port, server: server.run() })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until stopped.
    pub async fn run(self) -> std::io::Result<()> {
        self.server.await
    }
}
