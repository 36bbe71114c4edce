//! Request extractors: a JSON body checked against the contract and parsed into the domain's
//! types at once, naming every bad field; `If-Match`; and `Idempotency-Key`.

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, web};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;

use crate::AppState;
use crate::contract::{Contract, field_path};
use crate::error::{ApiError, ProblemCode};
use leeway_domain::FieldError;

/// Largest accepted request body.
pub const MAX_BODY: usize = 1024 * 1024;

/// A request body as it arrives on the wire, and how it becomes the domain's input.
pub trait Wire: DeserializeOwned + 'static {
    /// The parsed input.
    type Parsed: 'static;
    /// Parses the wire value, naming every bad field.
    fn parse(self) -> Result<Self::Parsed, Vec<FieldError>>;
}

/// A JSON body: checked against the contract (every violation named), then parsed into the
/// domain's types; keeps the SHA-256 of the raw bytes for idempotency.
#[derive(Debug)]
pub struct JsonBody<T: Wire> {
    /// The parsed body.
    pub value: T::Parsed,
    /// Hex SHA-256 of the bytes received.
    pub digest: String,
}

fn is_json(req: &HttpRequest) -> bool {
    let Some(ct) = req.headers().get(actix_web::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Every string (and member name) holding a NUL character: PostgreSQL cannot store one, and
/// no legitimate text has one, so it is refused on both backends alike.
fn nul_characters(v: &Value, at: &str, out: &mut Vec<FieldError>) {
    let bad = |at: &str| {
        FieldError::new(
            if at.is_empty() { "body".to_owned() } else { at.to_owned() },
            "invalid_character",
            "must not contain NUL (\\u0000) characters",
        )
    };
    match v {
        Value::String(s) if s.contains('\0') => out.push(bad(at)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                nul_characters(item, &format!("{at}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                let path = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
                if k.contains('\0') {
                    out.push(bad(&path));
                } else {
                    nul_characters(item, &path, out);
                }
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
    }
}

/// The top-level member a field path belongs to (`controls[0].kind` -> `controls`).
fn member(field: &str) -> &str {
    field.split(['.', '[']).next().unwrap_or(field)
}

/// Decodes the body in three steps, so that every problem is reported at once: the contract
/// (structure, types, lengths, enums, formats), serde for what is left of it, then the domain's
/// parse, whose errors count for the members the contract found no fault with.
fn decode<T: Wire>(raw: &[u8], req: &HttpRequest) -> Result<T::Parsed, ApiError> {
    let value: Value = serde_json::from_slice(raw)
        .map_err(|e| ApiError::new(ProblemCode::MalformedJson, format!("the body is not valid JSON: {e}")))?;
    let state = req.app_data::<web::Data<AppState>>().ok_or_else(|| ApiError::internal(&"no app state"))?;
    let pattern = req.match_pattern().unwrap_or_default();
    check::<T>(&state.contract, req.method().as_str(), &pattern, value)?.map_err(ApiError::validation)
}

/// `value` checked against the request-body schema of `method path` (a path template) and
/// parsed: the value, or every invalid field (sorted). `Err` only when the operation takes
/// no body.
pub fn check<T: Wire>(
    contract: &Contract,
    method: &str,
    path: &str,
    mut value: Value,
) -> Result<Result<T::Parsed, Vec<FieldError>>, ApiError> {
    let mut errors = Vec::new();
    nul_characters(&value, "", &mut errors);
    let schema_errors = contract
        .check(method, path, &value)
        .ok_or_else(|| ApiError::internal(&format!("no body schema for {method} {path}")))?;
    errors.extend(schema_errors);
    if value.is_null() && errors.is_empty() {
        value = Value::Object(serde_json::Map::new());
    }
    let faulty: BTreeSet<String> = errors.iter().map(|e| member(&e.field).to_owned()).collect();
    if let Value::Object(map) = &mut value {
        map.retain(|k, _| !faulty.contains(k));
    } else if !errors.is_empty() {
        return Ok(Err(errors));
    }
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(wire) => match wire.parse() {
            Ok(parsed) if errors.is_empty() => return Ok(Ok(parsed)),
            Ok(_) => {}
            Err(more) => errors.extend(more.into_iter().filter(|e| !faulty.contains(member(&e.field)))),
        },
        Err(e) if errors.is_empty() => {
            let at = field_path(&format!("/{}", e.path().to_string().replace('.', "/")));
            let message = e.inner().to_string();
            let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
            errors.push(FieldError::new(if at.is_empty() { "body".to_owned() } else { at }, "invalid_value", message));
        }
        Err(_) => {}
    }
    errors.sort_by(|a, b| a.field.cmp(&b.field));
    Ok(Err(errors))
}

impl<T: Wire> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let bytes = web::Bytes::from_request(&req, payload);
        Box::pin(async move {
            let bytes = bytes.await.map_err(|e| {
                if e.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        ProblemCode::PayloadTooLarge,
                        format!("request bodies are limited to {MAX_BODY} bytes"),
                    )
                    .with("max_bytes", MAX_BODY)
                } else {
                    ApiError::new(ProblemCode::MalformedBody, e.to_string())
                }
            })?;
            // JSON's own white space only (a form feed is not empty, it is malformed)
            let empty = bytes.iter().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
            if !empty && !is_json(&req) {
                return Err(ApiError::new(
                    ProblemCode::UnsupportedMediaType,
                    "send Content-Type: application/json (application/merge-patch+json for PATCH)",
                ));
            }
            if empty {
                let state = req.app_data::<web::Data<AppState>>().ok_or_else(|| ApiError::internal(&"no app state"))?;
                let pattern = req.match_pattern().unwrap_or_default();
                if state.contract.requires_body(req.method().as_str(), &pattern).unwrap_or(true) {
                    return Err(ApiError::validation(vec![FieldError::new(
                        "body",
                        "required",
                        "this operation needs a JSON body",
                    )]));
                }
            }
            // an optional body left out is an empty object: the body's own rules say what it
            // must hold
            let raw: &[u8] = if empty { b"{}" } else { &bytes };
            let digest = hex::encode(Sha256::digest(raw));
            Ok(Self { value: decode::<T>(raw, &req)?, digest })
        })
    }
}

/// The version named by `If-Match`, if the header was sent (`*` matches anything). A tag that
/// is not a strong `"<version>"` never matches (RFC 9110 strong comparison).
#[derive(Debug, Clone, Copy)]
pub struct IfMatch(pub Option<u64>);

impl FromRequest for IfMatch {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(v) = req.headers().get(actix_web::http::header::IF_MATCH) else {
            return std::future::ready(Ok(Self(None)));
        };
        let v = String::from_utf8_lossy(v.as_bytes());
        let v = v.trim();
        if v == "*" {
            return std::future::ready(Ok(Self(None)));
        }
        let tag = v.strip_prefix('"').and_then(|r| r.strip_suffix('"'));
        std::future::ready(Ok(Self(Some(tag.and_then(|t| t.parse::<u64>().ok()).unwrap_or(u64::MAX)))))
    }
}

/// The `Idempotency-Key` header: 1..255 visible ASCII characters; one pair of surrounding
/// quotes (the draft standard's sf-string form) is not part of the key.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub Option<String>);

impl IdempotencyKey {
    /// Parses a header value.
    pub fn parse(raw: &[u8]) -> Result<String, ApiError> {
        let bad = || {
            ApiError::new(
                ProblemCode::InvalidIdempotencyKey,
                "Idempotency-Key must be 1..255 visible ASCII characters (a UUID is recommended)",
            )
        };
        if raw.is_empty() || raw.len() > 255 || !raw.iter().all(u8::is_ascii_graphic) {
            return Err(bad());
        }
        let v = std::str::from_utf8(raw).map_err(|_| bad())?;
        let inner = v.strip_prefix('"').and_then(|r| r.strip_suffix('"')).filter(|k| !k.is_empty());
        Ok(inner.unwrap_or(v).to_owned())
    }
}

impl FromRequest for IdempotencyKey {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let parse = || {
            let mut values = req.headers().get_all("idempotency-key");
            let Some(v) = values.next() else { return Ok(Self(None)) };
            if values.next().is_some() {
                return Err(ApiError::new(ProblemCode::InvalidIdempotencyKey, "send Idempotency-Key once"));
            }
            Self::parse(v.as_bytes()).map(|k| Self(Some(k)))
        };
        std::future::ready(parse())
    }
}

/// The `Idempotency-Key` header as the contract documents it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyHeader {
    /// Replays the first answer (status, body, `Location`, `ETag`) for 24 hours; the same key
    /// with another request is refused (422 `idempotency_key_reused`). 1..255 visible ASCII
    /// characters; one pair of surrounding quotes is not part of the key.
    #[param(rename = "Idempotency-Key", min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    pub idempotency_key: Option<String>,
}

/// The `If-Match` header as the contract documents it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IfMatchHeader {
    /// The `ETag` last read (`"<version>"`), or `*`; any other value never matches (412).
    #[param(rename = "If-Match")]
    pub if_match: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_are_found_anywhere() {
        let v: Value =
            serde_json::from_str(r#"{"a": "x\u0000", "b": [{"c": "ok"}, {"d\u0000": 1}], "e": "fine"}"#).unwrap();
        let mut out = Vec::new();
        nul_characters(&v, "", &mut out);
        let fields: Vec<&str> = out.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["a", "b[1].d\u{0}"]);
    }

    #[test]
    fn idempotency_keys_are_visible_ascii_with_optional_quotes() {
        assert_eq!(IdempotencyKey::parse(b"\"abc\"").unwrap(), "abc");
        assert_eq!(IdempotencyKey::parse(b"abc").unwrap(), "abc");
        assert_eq!(IdempotencyKey::parse(b"\"\"").unwrap(), "\"\"");
        assert!(IdempotencyKey::parse(b"has space").is_err());
        assert!(IdempotencyKey::parse(&[b'a'; 256]).is_err());
    }
}
