//! Request extractors: a JSON body that names every bad field, `If-Match`, and
//! `Idempotency-Key`.

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, web};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::pin::Pin;
use validator::{Validate, ValidationErrors, ValidationErrorsKind};

use crate::error::ApiError;
use leeway_domain::FieldError;

/// Largest accepted request body.
pub const MAX_BODY: usize = 1024 * 1024;

/// Members of the exception resource that only the server sets.
const SERVER_CONTROLLED: &[&str] = &[
    "id",
    "key",
    "status",
    "status_reason",
    "covering",
    "round",
    "version",
    "risk",
    "controls_summary",
    "approvals",
    "required_approvals",
    "allowed_actions",
    "reviews",
    "requester",
    "chronic",
    "at_risk",
    "created_at",
    "updated_at",
    "submitted_at",
    "approved_at",
    "closed_at",
    "next_review_at",
    "verified_by",
    "verified_at",
];

/// A JSON body, deserialised strictly (unknown members refused) and validated; keeps the
/// SHA-256 of the raw bytes for idempotency.
#[derive(Debug)]
pub struct JsonBody<T> {
    /// The parsed body.
    pub value: T,
    /// Hex SHA-256 of the bytes received.
    pub digest: String,
}

/// A 400 or 413 for a body that could not be read.
pub fn payload_problem(detail: &str) -> ApiError {
    ApiError::bad_request("malformed_body", detail.to_owned())
}

fn is_json(req: &HttpRequest) -> bool {
    let Some(ct) = req.headers().get(actix_web::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Turns serde's error into a problem: syntax errors are 400, wrong values 422 naming the
/// field (and the unknown member itself, for unknown fields).
fn decode_problem(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = err.path().to_string();
    let inner = err.inner();
    match inner.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof | serde_json::error::Category::Io => {
            ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {inner}"))
        }
        serde_json::error::Category::Data => ApiError::validation(field_errors(&path, &inner.to_string())),
    }
}

/// Names the field a serde data error is about: the unknown member itself for unknown
/// fields, the missing member for missing ones, else the path.
pub fn field_errors(path: &str, msg: &str) -> Vec<FieldError> {
    let msg = msg.split(" at line ").next().unwrap_or(msg).to_owned();
    // serde_path_to_error's path already ends with an unknown member's name; not so for a
    // missing one.
    let join = |name: &str| match path {
        "." | "" => name.to_owned(),
        p if p == name || p.ends_with(&format!(".{name}")) => p.to_owned(),
        p => format!("{p}.{name}"),
    };
    if let Some(name) = msg.strip_prefix("unknown field `").and_then(|r| r.split('`').next()) {
        let (code, message) = if SERVER_CONTROLLED.contains(&name) {
            ("server_controlled", format!("`{name}` is set by the server and cannot be sent"))
        } else {
            ("unknown_field", msg.clone())
        };
        return vec![FieldError::new(join(name), code, message)];
    }
    if let Some(name) = msg.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
        return vec![FieldError::new(join(name), "required", "is required")];
    }
    let field = if path == "." || path.is_empty() { "body".to_owned() } else { path.to_owned() };
    let code = if msg.starts_with("unknown variant") { "invalid_value" } else { "invalid_type" };
    vec![FieldError::new(field, code, msg)]
}

/// Flattens validator's nested errors into field paths.
pub fn flatten(errors: &ValidationErrors) -> Vec<FieldError> {
    fn walk(prefix: &str, errors: &ValidationErrors, out: &mut Vec<FieldError>) {
        for (field, kind) in errors.errors() {
            let path = if prefix.is_empty() { field.to_string() } else { format!("{prefix}.{field}") };
            match kind {
                ValidationErrorsKind::Field(list) => {
                    for e in list {
                        let message = e.message.as_ref().map_or_else(|| describe(e), ToString::to_string);
                        out.push(FieldError::new(path.clone(), code_of(&e.code), message));
                    }
                }
                ValidationErrorsKind::Struct(inner) => walk(&path, inner, out),
                ValidationErrorsKind::List(items) => {
                    for (i, inner) in items {
                        walk(&format!("{path}[{i}]"), inner, out);
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    walk("", errors, &mut out);
    out.sort_by(|a, b| a.field.cmp(&b.field));
    out
}

fn code_of(code: &str) -> &'static str {
    match code {
        "length" => "invalid_length",
        "range" => "out_of_range",
        "required" => "required",
        _ => "invalid_value",
    }
}

fn describe(e: &validator::ValidationError) -> String {
    let p = |k: &str| e.params.get(k).map(ToString::to_string);
    match (e.code.as_ref(), p("min"), p("max")) {
        ("length", Some(min), Some(max)) => format!("length must be between {min} and {max}"),
        ("length", None, Some(max)) => format!("length must be at most {max}"),
        ("length", Some(min), None) => format!("length must be at least {min}"),
        ("range", Some(min), Some(max)) => format!("must be between {min} and {max}"),
        _ => format!("is invalid ({})", e.code),
    }
}

impl<T: DeserializeOwned + Validate + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let bytes = web::Bytes::from_request(&req, payload);
        Box::pin(async move {
            let bytes = bytes.await.map_err(|e| {
                if e.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "The body is too large",
                        format!("request bodies are limited to {MAX_BODY} bytes"),
                    )
                } else {
                    payload_problem(&e.to_string())
                }
            })?;
            let empty = bytes.iter().all(u8::is_ascii_whitespace);
            if !empty && !is_json(&req) {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "The body must be JSON",
                    "send Content-Type: application/json",
                ));
            }
            let raw: &[u8] = if empty { b"{}" } else { &bytes };
            let mut de = serde_json::Deserializer::from_slice(raw);
            let value: T = serde_path_to_error::deserialize(&mut de).map_err(decode_problem)?;
            de.end().map_err(|e| {
                ApiError::bad_request("malformed_json", format!("trailing characters after the JSON body: {e}"))
            })?;
            value.validate().map_err(|e| ApiError::validation(flatten(&e)))?;
            Ok(Self { value, digest: hex::encode(Sha256::digest(raw)) })
        })
    }
}

/// The version named by `If-Match`, if the header was sent (`*` matches anything).
#[derive(Debug, Clone, Copy)]
pub struct IfMatch(pub Option<u64>);

impl FromRequest for IfMatch {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let parse = || {
            let Some(v) = req.headers().get(actix_web::http::header::IF_MATCH) else { return Ok(Self(None)) };
            let v = v.to_str().map_err(|_| ApiError::bad_request("invalid_if_match", "If-Match is not ASCII"))?.trim();
            if v == "*" {
                return Ok(Self(None));
            }
            // A weak tag never satisfies If-Match (RFC 9110 strong comparison): it cannot match.
            let tag = v.strip_prefix('"').and_then(|r| r.strip_suffix('"')).filter(|_| !v.starts_with("W/"));
            match tag.and_then(|t| t.parse::<u64>().ok()) {
                Some(n) => Ok(Self(Some(n))),
                None => Ok(Self(Some(u64::MAX))),
            }
        };
        std::future::ready(parse())
    }
}

/// The `Idempotency-Key` header: 1..255 visible ASCII characters, quotes optional.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub Option<String>);

impl FromRequest for IdempotencyKey {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let parse = || {
            let mut values = req.headers().get_all("idempotency-key");
            let Some(v) = values.next() else { return Ok(Self(None)) };
            if values.next().is_some() {
                return Err(ApiError::bad_request("invalid_idempotency_key", "send Idempotency-Key once"));
            }
            let v = v.to_str().unwrap_or("").trim();
            let v = v.strip_prefix('"').and_then(|r| r.strip_suffix('"')).unwrap_or(v);
            if v.is_empty() || v.len() > 255 || !v.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ApiError::bad_request(
                    "invalid_idempotency_key",
                    "Idempotency-Key must be 1..255 visible ASCII characters (a UUID is recommended)",
                ));
            }
            Ok(Self(Some(v.to_owned())))
        };
        std::future::ready(parse())
    }
}
