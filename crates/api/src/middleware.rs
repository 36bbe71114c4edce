//! What wraps every request: its id and log line, a bound on its head, a 500 problem instead
//! of a dropped connection when a handler panics, and a problem for every unmatched path
//! (404) or method (405 with `Allow`).

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ResourceDef, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use crate::AppState;
use crate::auth::LoggedSubject;
use crate::error::{ApiError, ProblemCode, REQUEST_ID};

/// Most bytes of request headers (names, values and the target) Leeway reads; actix itself
/// refuses a head over 128 KiB or 96 headers with an empty 431, before any of this runs.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;
/// Most request header fields.
pub const MAX_HEADER_FIELDS: usize = 64;

/// A caller's `X-Request-Id` is kept when it is 1..128 of `[A-Za-z0-9._:-]`.
fn sane_request_id(v: &str) -> bool {
    (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// The exception a request named (`{id}`: its key or id) or created (its id, from
/// `Location`), for the request's log line.
fn exception_of(res: &ServiceResponse<impl MessageBody>, route: &str) -> Option<String> {
    if route.starts_with("/v1/exceptions/{id}") {
        return res.request().match_info().get("id").map(str::to_owned);
    }
    let location = res.headers().get("location")?.to_str().ok()?;
    location.strip_prefix("/v1/exceptions/").filter(|rest| !rest.contains('/')).map(str::to_owned)
}

/// Sets `X-Request-Id` (the caller's when it is sane, else a new UUID), makes it available
/// to problems and logs, logs one line per request (with its route template, the token's
/// subject and the exception involved; never the token) and counts it in the metrics.
pub async fn request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane_request_id(v))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.path().to_owned();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let res = REQUEST_ID.scope(id.clone(), next.call(req)).await;
    let elapsed = start.elapsed();
    let (status, route, subject, exception) = match &res {
        Ok(res) => {
            let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".to_owned());
            let subject = res.request().extensions().get::<LoggedSubject>().map(|s| s.0.clone());
            let exception = exception_of(res, &route);
            (res.status(), route, subject, exception)
        }
        // a problem that escaped as an error carries the request id itself (see ApiError)
        Err(e) => (e.as_response_error().status_code(), "unmatched".to_owned(), None, None),
    };
    if let Some(state) = &state {
        // a client may send any method token: only the ones the contract uses get a label
        let label = match method.as_str() {
            m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => m,
            _ => "OTHER",
        };
        state.metrics.request(label, &route, status.as_u16(), elapsed);
    }
    tracing::info!(
        request_id = %id,
        method = %method,
        route = %route,
        path = %path,
        status = status.as_u16(),
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        subject = subject.as_deref(),
        exception = exception.as_deref(),
        "request"
    );
    let mut res = res?.map_into_boxed_body();
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(HeaderName::from_static("x-request-id"), v);
    }
    Ok(res)
}

/// Refuses a head larger than Leeway reads with a 431 problem.
pub async fn limit_head(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let fields = req.headers().len();
    let bytes: usize = req.headers().iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum::<usize>()
        + req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if fields > MAX_HEADER_FIELDS || bytes > MAX_HEAD_BYTES {
        let e = ApiError::new(
            ProblemCode::RequestHeaderFieldsTooLarge,
            format!("send at most {MAX_HEADER_FIELDS} header fields and {MAX_HEAD_BYTES} bytes of headers"),
        )
        .with("max_header_fields", MAX_HEADER_FIELDS)
        .with("max_head_bytes", MAX_HEAD_BYTES);
        return Err(e.into());
    }
    next.call(req).await.map(ServiceResponse::map_into_boxed_body)
}

/// A handler that panics answers a 500 problem instead of dropping the connection.
pub async fn catch_panics(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let (method, path) = (req.method().clone(), req.path().to_owned());
    match AssertUnwindSafe(next.call(req)).catch_unwind().await {
        Ok(res) => res.map(ServiceResponse::map_into_boxed_body),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(ApiError::internal(&format!("{method} {path} panicked: {what}")).into())
        }
    }
}

/// Every path template and the methods it answers, to tell a wrong method (405) from a
/// wrong path (404).
#[derive(Clone)]
pub struct Methods(Arc<Vec<(ResourceDef, Vec<String>)>>);

impl Methods {
    /// From the contract's paths, and the unversioned pages outside it.
    pub fn from_openapi(doc: &utoipa::openapi::OpenApi) -> Self {
        let mut routes: Vec<(ResourceDef, Vec<String>)> = Vec::new();
        let doc = serde_json::to_value(doc).unwrap_or_default();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            let mut methods: Vec<String> =
                item.as_object().into_iter().flatten().map(|(m, _)| m.to_ascii_uppercase()).collect();
            methods.sort();
            routes.push((ResourceDef::new(path.as_str()), methods));
        }
        for path in ["/openapi.json", "/docs", "/docs/{_:.*}"] {
            routes.push((ResourceDef::new(path), vec!["GET".to_owned()]));
        }
        Self(Arc::new(routes))
    }

    fn allowed(&self, path: &str) -> Option<String> {
        let allowed: Vec<&str> = self
            .0
            .iter()
            .filter(|(def, _)| def.is_match(path))
            .flat_map(|(_, methods)| methods.iter().map(String::as_str))
            .collect();
        (!allowed.is_empty()).then(|| allowed.join(", "))
    }
}

/// What no route took: 405 with `Allow` when the path exists, else 404.
pub async fn unmatched(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let allowed = req.app_data::<web::Data<Methods>>().and_then(|m| m.allowed(req.path()));
    match allowed {
        Some(allow) => Err(ApiError::new(
            ProblemCode::MethodNotAllowed,
            format!("{} is not allowed on {}; allowed: {allow}", req.method(), req.path()),
        )
        .header("allow", allow)),
        None => Err(ApiError::not_found()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::App;
    use actix_web::test as call;

    #[actix_web::test]
    async fn a_handler_that_panics_answers_a_500_problem() {
        let app = call::init_service(
            App::new()
                .wrap(actix_web::middleware::from_fn(catch_panics))
                .route(
                    "/boom",
                    web::get().to(|| async { if true { panic!("boom") } else { HttpResponse::Ok().finish() } }),
                )
                .route("/fine", web::get().to(|| async { HttpResponse::Ok().finish() })),
        )
        .await;
        let err = call::try_call_service(&app, call::TestRequest::get().uri("/boom").to_request()).await.err();
        let res = err.map(|e| e.error_response());
        assert_eq!(res.as_ref().map(HttpResponse::status), Some(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR));
        let content_type = res.as_ref().and_then(|r| r.headers().get("content-type")).and_then(|v| v.to_str().ok());
        assert_eq!(content_type, Some("application/problem+json"));
        // the worker goes on serving
        let ok = call::call_service(&app, call::TestRequest::get().uri("/fine").to_request()).await;
        assert_eq!(ok.status(), actix_web::http::StatusCode::OK);
    }

    #[test]
    fn request_ids_are_short_and_plain() {
        assert!(sane_request_id("trace-123:a.b_c"));
        assert!(!sane_request_id(""));
        assert!(!sane_request_id(&"a".repeat(129)));
        assert!(!sane_request_id("has space"));
        assert!(!sane_request_id("semi;colon"));
    }
}
