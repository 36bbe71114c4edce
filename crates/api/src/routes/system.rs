//! Health, the caller, the policy.

pub mod json;

use actix_web::{HttpResponse, get, web};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, Problem, ProblemCode};
use crate::wire::Role;
use json::{HealthView, MeView, PolicyView};

/// Liveness: the process answers.
#[utoipa::path(tag = "system", responses((status = 200, description = "Alive", body = HealthView)))]
#[get("/healthz")]
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(HealthView { status: "ok".into(), database: state.store.backend().into() })
}

/// Readiness: the database answers, every migration is applied, and in JWKS mode the
/// identity provider's keys have been fetched.
#[utoipa::path(tag = "system", responses(
    (status = 200, description = "Ready", body = HealthView),
    (status = 503, description = "Database unreachable, migrations pending, or (JWKS mode) no key fetched yet", body = Problem, content_type = "application/problem+json"),
))]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if !state.auth.keys_ready() {
        tracing::warn!("not ready: no usable key from the identity provider's JWKS yet");
        return Err(ApiError::new(
            ProblemCode::NotReady,
            "the identity provider's keys have not been fetched yet; see the service log",
        ));
    }
    let store = state.store.clone();
    let result = web::block(move || store.ready()).await?;
    match result {
        Ok(()) => {
            Ok(HttpResponse::Ok().json(HealthView { status: "ok".into(), database: state.store.backend().into() }))
        }
        Err(e) => {
            // the cause may name hosts and users: log it, do not tell an unauthenticated caller
            tracing::warn!(error = %e, "not ready");
            Err(ApiError::new(
                ProblemCode::NotReady,
                "the database is unreachable or migrations are pending; see the service log",
            ))
        }
    }
}

/// The caller's subject and resolved roles.
#[utoipa::path(tag = "system", security(("bearer" = [])), responses(
    (status = 200, description = "The caller", body = MeView),
))]
#[get("/me")]
pub async fn me(caller: Caller) -> HttpResponse {
    let a = caller.0;
    HttpResponse::Ok().json(MeView {
        subject: a.subject.to_string(),
        restricted: a.is_restricted(),
        roles: a.roles.iter().map(|r| Role::from(*r)).collect(),
        business_unit: a.business_unit,
    })
}

/// The approval policy in force: per residual level, who approves, how long an exception
/// may last and how often it is reviewed; SLAs and limits.
#[utoipa::path(tag = "system", security(("bearer" = [])), responses(
    (status = 200, description = "The policy", body = PolicyView),
))]
#[get("/policy")]
pub async fn policy(state: web::Data<AppState>, _caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(PolicyView::from(&state.policy))
}
