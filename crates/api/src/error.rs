//! The one place errors become HTTP: RFC 9457 `application/problem+json` with a stable
//! `code` from a closed list, per-field `errors`, and the request id as `instance`. A 500 is
//! logged in full and told to the client in one line.

use actix_web::http::StatusCode;
use actix_web::http::header::HeaderValue;
use actix_web::{HttpResponse, ResponseError};
use leeway_domain::error::MaxDuration;
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

macro_rules! problem_codes {
    ($($(#[$doc:meta])* $v:ident = ($code:literal, $status:ident, $title:literal)),+ $(,)?) => {
        /// Every problem Leeway answers with. Each is documented in docs/API-DESIGN.md and
        /// used somewhere in the code (a test checks both).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ProblemCode { $($(#[$doc])* $v),+ }

        impl ProblemCode {
            /// Every code.
            pub const ALL: &'static [ProblemCode] = &[$(ProblemCode::$v),+];

            /// The stable machine token.
            pub fn as_str(self) -> &'static str {
                match self { $(ProblemCode::$v => $code),+ }
            }

            /// The HTTP status it is answered with.
            pub fn status(self) -> StatusCode {
                match self { $(ProblemCode::$v => StatusCode::$status),+ }
            }

            /// The problem type's title (RFC 9457: the same on every occurrence).
            pub fn title(self) -> &'static str {
                match self { $(ProblemCode::$v => $title),+ }
            }

            /// The variant's name in the source, for the test that checks each is used.
            pub fn variant(self) -> &'static str {
                match self { $(ProblemCode::$v => stringify!($v)),+ }
            }
        }
    };
}

problem_codes!(
    /// The body is not valid JSON.
    MalformedJson = ("malformed_json", BAD_REQUEST, "The request is malformed"),
    /// The body could not be read.
    MalformedBody = ("malformed_body", BAD_REQUEST, "The request is malformed"),
    /// An unknown or bad query parameter.
    InvalidQuery = ("invalid_query", BAD_REQUEST, "The request is malformed"),
    /// A cursor that was not issued for this list.
    InvalidCursor = ("invalid_cursor", BAD_REQUEST, "The request is malformed"),
    /// A bad `Idempotency-Key` header.
    InvalidIdempotencyKey = ("invalid_idempotency_key", BAD_REQUEST, "The request is malformed"),
    /// A bad path parameter.
    InvalidPath = ("invalid_path", BAD_REQUEST, "The request is malformed"),
    /// No token, or a token that is refused.
    Unauthorized = ("unauthorized", UNAUTHORIZED, "Authentication is required"),
    /// The caller's roles or relation to the exception do not permit the action.
    Forbidden = ("forbidden", FORBIDDEN, "The caller's roles do not permit this"),
    /// Separation of duties forbids the action.
    SeparationOfDuties = ("separation_of_duties", FORBIDDEN, "Separation of duties forbids this"),
    /// Absent, or not visible to the caller.
    NotFound = ("not_found", NOT_FOUND, "Not found"),
    /// No such compensating control.
    ControlNotFound = ("control_not_found", NOT_FOUND, "No such compensating control"),
    /// The path exists, the method does not.
    MethodNotAllowed = ("method_not_allowed", METHOD_NOT_ALLOWED, "The method is not allowed here"),
    /// The action is not allowed in the current state.
    InvalidTransition = ("invalid_transition", CONFLICT, "The action is not allowed in the current state"),
    /// The external reference belongs to another exception.
    DuplicateExternalReference =
        ("duplicate_external_reference", CONFLICT, "The external reference belongs to another exception"),
    /// `If-Match` does not name the current version.
    PreconditionFailed = ("precondition_failed", PRECONDITION_FAILED, "If-Match does not match the current version"),
    /// The body is too large.
    PayloadTooLarge = ("payload_too_large", PAYLOAD_TOO_LARGE, "The body is too large"),
    /// The body is not JSON.
    UnsupportedMediaType = ("unsupported_media_type", UNSUPPORTED_MEDIA_TYPE, "The body must be JSON"),
    /// One or more fields are invalid.
    ValidationFailed = ("validation_failed", UNPROCESSABLE_ENTITY, "The request is not valid"),
    /// The lifetime asked for is longer than the policy allows.
    DurationExceedsPolicy =
        ("duration_exceeds_policy", UNPROCESSABLE_ENTITY, "The requested duration exceeds the policy"),
    /// The `Idempotency-Key` was used for another request.
    IdempotencyKeyReused =
        ("idempotency_key_reused", UNPROCESSABLE_ENTITY, "The Idempotency-Key was used for another request"),
    /// A covering-exception limit would be exceeded.
    LimitExceeded = ("limit_exceeded", UNPROCESSABLE_ENTITY, "A covering-exception limit would be exceeded"),
    /// The request's head is too large.
    RequestHeaderFieldsTooLarge =
        ("request_header_fields_too_large", REQUEST_HEADER_FIELDS_TOO_LARGE, "The request's headers are too large"),
    /// A webhook URL that is not http(s), or reaches a private address.
    WebhookUrlRefused = ("webhook_url_refused", UNPROCESSABLE_ENTITY, "The webhook URL is refused"),
    /// Only a failed delivery can be sent again.
    DeliveryNotFailed = ("delivery_not_failed", CONFLICT, "The delivery is not failed"),
    /// An upsert would change fields the exception's state does not allow changing.
    FieldLocked = ("field_locked", CONFLICT, "A field cannot change in the current state"),
    /// A bug: logged in full, told in one line.
    Internal = ("internal", INTERNAL_SERVER_ERROR, "Internal error"),
    /// The caller's subject is over its rate limit.
    RateLimited = ("rate_limited", TOO_MANY_REQUESTS, "Too many requests"),
    /// The database is unreachable or migrations are pending.
    NotReady = ("not_ready", SERVICE_UNAVAILABLE, "Not ready"),
);

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
    /// `urn:uuid:<request id>` (the `X-Request-Id` of the response; `urn:leeway:request:<id>` when
    /// the caller's own id is not a UUID).
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
#[error("{}: {}", .0.code.as_str(), .0.detail)]
pub struct ApiError(Box<Details>);

#[derive(Debug)]
struct Details {
    code: ProblemCode,
    /// The request it answers, taken when the error is made (it may be rendered outside the
    /// request's scope, by actix, after the middleware returned it).
    request_id: Option<String>,
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
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Self {
        Self(Box::new(Details {
            code,
            request_id: current_request_id(),
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
            ProblemCode::ValidationFailed,
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

    /// 409 naming each field the state does not let change.
    pub fn locked(errors: Vec<FieldError>) -> Self {
        let mut e = Self::validation(errors);
        e.0.code = ProblemCode::FieldLocked;
        e.0.detail = format!(
            "the state does not allow changing: {}",
            e.0.errors.iter().map(|f| f.field.as_str()).collect::<Vec<_>>().join(", ")
        );
        e
    }

    /// 400 for a bad query parameter, naming it.
    pub fn query(param: &str, detail: impl std::fmt::Display) -> Self {
        Self::new(ProblemCode::InvalidQuery, format!("{param}: {detail}")).with("parameter", param)
    }

    /// 401.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(ProblemCode::Unauthorized, detail).header("www-authenticate", "Bearer".to_owned())
    }

    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(ProblemCode::Forbidden, detail)
    }

    /// 403 for a caller holding none of `roles`, naming them in `required_roles`.
    pub fn needs_roles(detail: impl Into<String>, roles: &[leeway_domain::kinds::Role]) -> Self {
        Self::forbidden(detail).with("required_roles", roles.iter().map(|r| r.as_str()).collect::<Vec<_>>())
    }

    /// 429: the subject's bucket is empty for `wait` (told in whole seconds, at least 1, in
    /// `Retry-After` and `retry_after_seconds`).
    pub fn rate_limited(wait: std::time::Duration) -> Self {
        let seconds = wait.as_secs().saturating_add(u64::from(wait.subsec_nanos() > 0)).max(1);
        Self::new(
            ProblemCode::RateLimited,
            format!("this subject is over its rate limit; retry in {seconds} s (Retry-After)"),
        )
        .with("retry_after_seconds", seconds)
        .header("retry-after", seconds.to_string())
    }

    /// 404, the same for absent and not visible.
    pub fn not_found() -> Self {
        Self::new(ProblemCode::NotFound, "no such resource, or it is not visible to the caller")
    }

    /// 500: the cause is logged, the client is told one line.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, request_id = current_request_id().unwrap_or_default(), "internal error");
        Self::new(ProblemCode::Internal, "an internal error occurred; quote the request id")
    }

    /// The problem body.
    pub fn problem(&self) -> Problem {
        let d = &self.0;
        Problem {
            type_: format!("urn:problem-type:leeway:{}", d.code.as_str()),
            title: d.code.title().to_owned(),
            status: d.code.status().as_u16(),
            detail: d.detail.clone(),
            instance: d.request_id.as_ref().map(|id| match uuid::Uuid::parse_str(id) {
                Ok(_) => format!("urn:uuid:{id}"),
                // a caller's own request id is not a UUID: still a URI naming the occurrence
                Err(_) => format!("urn:leeway:request:{id}"),
            }),
            code: d.code.as_str().to_owned(),
            errors: d.errors.clone(),
            extra: d.extra.clone(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.0.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        res.insert_header(("content-type", "application/problem+json"));
        if let Some(id) = self.0.request_id.as_deref().and_then(|id| HeaderValue::from_str(id).ok()) {
            res.insert_header(("x-request-id", id));
        }
        for (k, v) in &self.0.headers {
            if let Ok(v) = HeaderValue::from_str(v) {
                res.insert_header((*k, v));
            }
        }
        res.body(serde_json::to_string(&self.problem()).unwrap_or_default())
    }
}

fn names<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        "nothing".to_owned()
    } else {
        items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid(errors) => ApiError::validation(errors),
            DomainError::InvalidTransition { action, current, allowed } => ApiError::new(
                ProblemCode::InvalidTransition,
                format!("cannot {action} an exception in state {current}; allowed from {current}: {}", names(&allowed)),
            )
            .with("current_state", current)
            .with("allowed_actions", allowed),
            DomainError::Forbidden { action, needs } => {
                ApiError::forbidden(format!("{action} needs one of the roles: {}", names(&needs)))
                    .with("required_roles", needs)
            }
            DomainError::OutsideBusinessUnit { unit } => ApiError::forbidden(format!(
                "a requester may only create exceptions in their own business unit ({unit}); an analyst or an integration may file for others"
            ))
            .with("business_unit", unit),
            DomainError::SeparationOfDuties(why) => ApiError::new(ProblemCode::SeparationOfDuties, why),
            DomainError::DurationExceedsPolicy { max, latest_expires_at } => {
                let e = ApiError::new(ProblemCode::DurationExceedsPolicy, match max {
                    MaxDuration::Level { level, days } => format!(
                        "residual level {level} allows at most {days} days; send expires_at no later than {latest_expires_at}"
                    ),
                    MaxDuration::Emergency { hours } => format!(
                        "an emergency exception lasts at most {hours} hours until it is ratified; send expires_at no later than {latest_expires_at}"
                    ),
                })
                .with("latest_expires_at", latest_expires_at);
                match max {
                    MaxDuration::Level { level, days } => {
                        e.with("residual_level", level).with("max_duration_days", days)
                    }
                    MaxDuration::Emergency { hours } => e.with("emergency", true).with("max_duration_hours", hours),
                }
            }
            DomainError::LimitExceeded { scope, name, limit, held, holders } => {
                let e = ApiError::new(
                    ProblemCode::LimitExceeded,
                    format!("{scope} {name} already has {held} exception(s) holding its places; the limit is {limit}"),
                )
                .with("scope", scope)
                .with(scope, name)
                .with("limit", limit)
                .with("held", held);
                // the holders' keys only for a caller who may see every exception
                if holders.is_empty() { e } else { e.with("held_by", holders) }
            }
            DomainError::NoSuchControl(id) => {
                ApiError::new(ProblemCode::ControlNotFound, format!("the exception has no control {id}"))
            }
            other @ (DomainError::Overflow(_) | DomainError::FactsUnavailable(_)) => ApiError::internal(&other),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Domain(d) => d.into(),
            StoreError::NotFound => ApiError::not_found(),
            StoreError::PreconditionFailed { current } => ApiError::new(
                ProblemCode::PreconditionFailed,
                format!("the exception is at version {current}; fetch it again and retry with If-Match: \"{current}\""),
            )
            .with("current_version", current)
            .header("etag", format!("\"{current}\"")),
            StoreError::IdempotencyKeyReused => ApiError::new(
                ProblemCode::IdempotencyKeyReused,
                "this Idempotency-Key was already used with a different request; use a new key",
            ),
            StoreError::DuplicateExternalRef { system, id, holder } => {
                let e = ApiError::new(
                    ProblemCode::DuplicateExternalReference,
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

/// actix's own query-string errors, as problems.
pub fn query_error(err: actix_web::error::QueryPayloadError, _req: &actix_web::HttpRequest) -> actix_web::Error {
    ApiError::new(ProblemCode::InvalidQuery, format!("invalid query string: {err}")).into()
}

/// Path segment errors, as problems.
pub fn path_error(err: actix_web::error::PathError, _req: &actix_web::HttpRequest) -> actix_web::Error {
    ApiError::new(ProblemCode::InvalidPath, format!("invalid path parameter: {err}")).into()
}

/// actix's JSON extractor errors (only reached if a handler uses `web::Json`).
pub fn json_error(err: actix_web::error::JsonPayloadError, _req: &actix_web::HttpRequest) -> actix_web::Error {
    ApiError::new(ProblemCode::MalformedBody, err.to_string()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code is used outside its declaration and documented in docs/API-DESIGN.md.
    #[test]
    fn every_problem_code_is_used_and_documented() {
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut sources = String::new();
        let mut dirs = vec![std::path::PathBuf::from(src)];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    sources.push_str(&std::fs::read_to_string(&path).unwrap());
                }
            }
        }
        let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/API-DESIGN.md")).unwrap();
        for code in ProblemCode::ALL {
            let uses = sources.matches(&format!("ProblemCode::{}", code.variant())).count();
            assert!(uses >= 1, "ProblemCode::{} is never used", code.variant());
            assert!(
                docs.contains(&format!("| {} | `{}` |", code.status().as_u16(), code.as_str())),
                "`{}` ({}) is not in docs/API-DESIGN.md's table",
                code.as_str(),
                code.status().as_u16()
            );
        }
    }

    #[test]
    fn field_paths_become_pointers() {
        assert_eq!(pointer("assets[2]"), "/assets/2");
        assert_eq!(pointer("controls[0].kind"), "/controls/0/kind");
        assert_eq!(pointer("a/b"), "/a~1b");
    }
}
