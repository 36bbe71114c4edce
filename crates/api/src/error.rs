//! The one place errors become HTTP: RFC 9457 `application/problem+json` with a stable
//! `code`, per-field `errors`, and the request id as `instance`. A 500 is logged in full and
//! told to the client in one line.

use actix_web::http::StatusCode;
use actix_web::http::header::{ContentType, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use leeway_domain::{DomainError, FieldError};
use leeway_persistence::StoreError;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

tokio::task_local! {
    /// The current request's id, set by the request-id middleware.
    pub static REQUEST_ID: String;
}

/// The current request's id, when inside a request.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// One invalid field.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldProblem {
    /// The field's path, e.g. `assets[2]` or `controls[0].kind`.
    pub field: String,
    /// The same as a JSON Pointer into the request body (RFC 6901), e.g. `/assets/2`.
    pub pointer: String,
    /// Stable machine token: `required`, `too_short`, `too_long`, `invalid_value`, ...
    pub code: String,
    /// What to fix.
    pub message: String,
}

/// An RFC 9457 problem. Extension members: `code` always; `errors` for validation;
/// `current_state` and `allowed_actions` for refused transitions; `current_version` for 412.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// `urn:problem-type:leeway:<code>`; documented in docs/API-DESIGN.md.
    #[serde(rename = "type")]
    pub type_: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status, repeated.
    pub status: u16,
    /// What happened this time, for a person.
    pub detail: String,
    /// `urn:uuid:<request id>` (the `X-Request-Id` of the response).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Stable machine code.
    pub code: String,
    /// Every invalid field, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldProblem>,
    /// Further members, by problem type.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extra: Map<String, Value>,
}

/// An error on its way to becoming a problem response (boxed: errors are the rare path).
#[derive(Debug, thiserror::Error)]
#[error("{}: {}", .0.code, .0.detail)]
pub struct ApiError(Box<Details>);

#[derive(Debug)]
struct Details {
    status: StatusCode,
    code: &'static str,
    title: &'static str,
    detail: String,
    errors: Vec<FieldProblem>,
    extra: Map<String, Value>,
    headers: Vec<(&'static str, String)>,
}

/// `assets[2].id` -> `/assets/2/id`.
pub fn pointer(field: &str) -> String {
    let mut out = String::new();
    for part in field.split('.') {
        let (name, rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        if !name.is_empty() {
            out.push('/');
            out.push_str(&name.replace('~', "~0").replace('/', "~1"));
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            out.push('/');
            out.push_str(idx.trim_end_matches(']'));
        }
    }
    out
}

impl ApiError {
    /// A problem with no field errors.
    pub fn new(status: StatusCode, code: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self(Box::new(Details {
            status,
            code,
            title,
            detail: detail.into(),
            errors: Vec::new(),
            extra: Map::new(),
            headers: Vec::new(),
        }))
    }

    /// Adds an extension member.
    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        self.0.extra.insert(key.to_owned(), serde_json::to_value(value).unwrap_or(Value::Null));
        self
    }

    /// Adds a response header.
    pub fn header(mut self, name: &'static str, value: String) -> Self {
        self.0.headers.push((name, value));
        self
    }

    /// 422 with every invalid field.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let n = errors.len();
        let mut e = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "The request is not valid",
            format!(
                "{n} field(s) are invalid: {}",
                errors.iter().map(|f| f.field.as_str()).collect::<Vec<_>>().join(", ")
            ),
        );
        e.0.errors = errors
            .into_iter()
            .map(|f| FieldProblem {
                pointer: pointer(&f.field),
                field: f.field,
                code: f.code.to_owned(),
                message: f.message,
            })
            .collect();
        e
    }

    /// 400 for a malformed body or parameter.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, "The request is malformed", detail)
    }

    /// 401.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "Authentication is required", detail)
            .header("www-authenticate", "Bearer".to_owned())
    }

    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "The caller's roles do not permit this", detail)
    }

    /// 404, the same for absent and not visible.
    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "Not found",
            "no such resource, or it is not visible to the caller",
        )
    }

    /// 500: the cause is logged, the client is told one line.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, request_id = current_request_id().unwrap_or_default(), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "an internal error occurred; quote the request id",
        )
    }

    /// The problem body, for tests and the OpenAPI examples.
    pub fn problem(&self) -> Problem {
        let d = &self.0;
        Problem {
            type_: format!("urn:problem-type:leeway:{}", d.code),
            title: d.title.to_owned(),
            status: d.status.as_u16(),
            detail: d.detail.clone(),
            instance: current_request_id().map(|id| format!("urn:uuid:{id}")),
            code: d.code.to_owned(),
            errors: d.errors.clone(),
            extra: d.extra.clone(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.0.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.0.status);
        res.insert_header(ContentType("application/problem+json".parse().unwrap_or(mime_json())));
        for (k, v) in &self.0.headers {
            if let Ok(v) = HeaderValue::from_str(v) {
                res.insert_header((*k, v));
            }
        }
        res.body(serde_json::to_string(&self.problem()).unwrap_or_default())
    }
}

fn mime_json() -> actix_web::mime::Mime {
    actix_web::mime::APPLICATION_JSON
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid(errors) => ApiError::validation(errors),
            DomainError::InvalidTransition { action, current, allowed } => ApiError::new(
                StatusCode::CONFLICT,
                "invalid_transition",
                "The action is not allowed in the current state",
                format!(
                    "cannot {action} an exception in state {current}; allowed from {current}: {}",
                    if allowed.is_empty() { "nothing".to_owned() } else { allowed.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ") }
                ),
            )
            .with("current_state", current.as_str())
            .with("allowed_actions", allowed.iter().map(|a| a.as_str()).collect::<Vec<_>>()),
            DomainError::Forbidden { action, needs } => ApiError::forbidden(format!(
                "{action} needs one of the roles: {}",
                needs.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
            ))
            .with("required_roles", needs.iter().map(|r| r.as_str()).collect::<Vec<_>>()),
            DomainError::SeparationOfDuties(why) => {
                ApiError::new(StatusCode::FORBIDDEN, "separation_of_duties", "Separation of duties forbids this", why)
            }
            DomainError::DurationExceedsPolicy { level, max_days, latest_expires_at } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "duration_exceeds_policy",
                "The requested duration exceeds the policy",
                format!("residual level {level} allows at most {max_days} days; send expires_at no later than {latest_expires_at}"),
            )
            .with("residual_level", level.as_str())
            .with("max_duration_days", max_days)
            .with("latest_expires_at", latest_expires_at),
            DomainError::LimitExceeded { scope, name, limit, holders } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "limit_exceeded",
                "A covering-exception limit would be exceeded",
                format!(
                    "{scope} {name} already has {} covering exception(s) ({}); the limit is {limit}",
                    holders.len(),
                    holders.join(", ")
                ),
            )
            .with("scope", scope)
            .with(scope, name)
            .with("limit", limit)
            .with("held_by", holders),
            DomainError::NoSuchControl(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                "control_not_found",
                "No such compensating control",
                format!("the exception has no control {id}"),
            ),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Domain(d) => d.into(),
            StoreError::NotFound => ApiError::not_found(),
            StoreError::PreconditionFailed { current } => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "If-Match does not match the current version",
                format!("the exception is at version {current}; fetch it again and retry with If-Match: \"{current}\""),
            )
            .with("current_version", current)
            .header("etag", format!("\"{current}\"")),
            StoreError::IdempotencyKeyReused => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "The Idempotency-Key was used for another request",
                "this Idempotency-Key was already used with a different request; use a new key",
            ),
            StoreError::DuplicateExternalRef { system, id, holder } => {
                let e = ApiError::new(
                    StatusCode::CONFLICT,
                    "duplicate_external_reference",
                    "The external reference belongs to another exception",
                    format!("external reference ({system}, {id}) already belongs to another exception"),
                );
                match holder {
                    Some(h) => e.with("holder", h),
                    None => e,
                }
            }
            other => ApiError::internal(&other),
        }
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        ApiError::internal(&e)
    }
}

/// Errors of actix's own extractors, as problems.
pub fn query_error(err: actix_web::error::QueryPayloadError, _req: &actix_web::HttpRequest) -> actix_web::Error {
    ApiError::bad_request("invalid_query", format!("invalid query string: {err}")).into()
}

/// Path segment errors, as problems.
pub fn path_error(err: actix_web::error::PathError, _req: &actix_web::HttpRequest) -> actix_web::Error {
    ApiError::bad_request("invalid_path", format!("invalid path parameter: {err}")).into()
}

/// actix's JSON extractor errors (only reached if a handler uses `web::Json`).
pub fn json_error(err: actix_web::error::JsonPayloadError, _req: &actix_web::HttpRequest) -> actix_web::Error {
    crate::body::payload_problem(&err.to_string()).into()
}

/// Unmatched routes.
pub async fn not_found_route() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found())
}
