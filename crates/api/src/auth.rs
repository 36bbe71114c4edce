//! Bearer-token authentication (RFC 8725): HS256 only, at most 8 KiB, no `crit` extension
//! (none is understood), numeric `exp` required, `exp`/`nbf`/`iat` numeric and checked against
//! the injected clock with 60 s leeway, `iss`/`aud` when configured. The caller is an
//! extractor, so no handler can forget it.

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value, json};
use std::sync::Arc;

use crate::AppState;
use crate::clock::Clock;
use crate::config::Config;
use crate::error::ApiError;
use leeway_domain::access::Actor;
use leeway_domain::ids::Subject;
use leeway_domain::kinds::Role;

/// Allowed clock skew for `exp`, `nbf` and `iat`.
pub const LEEWAY_SECONDS: i64 = 60;

/// The longest token accepted.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// A NumericDate (RFC 7519): a JSON number of seconds, possibly fractional.
fn numeric_date(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_f64().filter(|f| f.is_finite() && f.abs() < 1e15).map(|f| f.floor() as i64))
}

/// Why a token was refused, told without the parser's internals.
fn refusal(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature => "the token's signature does not verify".to_owned(),
        K::InvalidAlgorithm | K::InvalidAlgorithmName => "the token's algorithm is not allowed (HS256 only)".to_owned(),
        K::MissingRequiredClaim(c) => format!("the token has no usable {c} claim"),
        K::InvalidIssuer => "the token's iss is not the configured issuer".to_owned(),
        K::InvalidAudience => "the token's aud does not name this service".to_owned(),
        K::InvalidSubject => "the token's sub is not usable".to_owned(),
        K::InvalidClaimFormat(c) => format!("the token's {c} claim is not a number of seconds"),
        _ => {
            "the token is malformed: expected a JWT of three base64url parts, a JSON header and JSON claims".to_owned()
        }
    }
}

/// Token verification settings.
#[derive(Clone)]
pub struct Auth {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
    issuer: Option<String>,
    audience: Option<String>,
    roles_claim: String,
    business_unit_claim: String,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("issuer", &self.issuer).field("audience", &self.audience).finish_non_exhaustive()
    }
}

impl Auth {
    /// Verification with a shared HS256 secret.
    pub fn new(
        secret: &str,
        issuer: Option<String>,
        audience: Option<String>,
        roles_claim: String,
        business_unit_claim: String,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        // exp and nbf are checked below against the injected clock, not the system clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims = ["exp", "sub"].iter().map(|s| (*s).to_owned()).collect();
        // RFC 8725 3.8/3.9: when configured, iss and aud must be present and match.
        match &issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                validation.required_spec_claims.insert("iss".to_owned());
            }
            None => validation.iss = None,
        }
        match &audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".to_owned());
            }
            None => validation.validate_aud = false,
        }
        Self {
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            validation,
            issuer,
            audience,
            roles_claim,
            business_unit_claim,
            clock,
        }
    }

    /// Verification as configured, with `secret` resolved by [`Config::resolve_secret`].
    pub fn from_config(config: &Config, secret: &str, clock: Arc<dyn Clock>) -> Self {
        Self::new(
            secret,
            config.jwt_issuer.clone(),
            config.jwt_audience.clone(),
            config.roles_claim.clone(),
            config.business_unit_claim.clone(),
            clock,
        )
    }

    /// Verifies a token and resolves the caller.
    pub fn verify(&self, token: &str) -> Result<Actor, ApiError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(ApiError::unauthorized(format!("the token is longer than {MAX_TOKEN_BYTES} bytes")));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| ApiError::unauthorized(refusal(&e)))?;
        // RFC 7515 4.1.11: an extension the recipient does not understand must be refused,
        // and Leeway understands none
        if let Some(crit) = header.crit.filter(|c| !c.is_empty()) {
            return Err(ApiError::unauthorized(format!(
                "the token's crit header names extensions this service does not understand: {}",
                crit.join(", ")
            )));
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.decoding, &self.validation)
            .map_err(|e| ApiError::unauthorized(refusal(&e)))?;
        let claims = data.claims;
        let now = self.clock.now().timestamp();
        let time = |name: &str| match claims.get(name) {
            None => Ok(None),
            Some(v) => numeric_date(v)
                .map(Some)
                .ok_or_else(|| ApiError::unauthorized(format!("the token's {name} claim is not a number of seconds"))),
        };
        let exp = time("exp")?.ok_or_else(|| ApiError::unauthorized("the token has no exp claim"))?;
        if now > exp.saturating_add(LEEWAY_SECONDS) {
            return Err(ApiError::unauthorized("the token has expired"));
        }
        if let Some(nbf) = time("nbf")?
            && now.saturating_add(LEEWAY_SECONDS) < nbf
        {
            return Err(ApiError::unauthorized("the token is not valid yet (nbf)"));
        }
        if let Some(iat) = time("iat")?
            && now.saturating_add(LEEWAY_SECONDS) < iat
        {
            return Err(ApiError::unauthorized("the token was issued in the future (iat)"));
        }
        let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
        let subject =
            Subject::parse("sub", sub).map_err(|_| ApiError::unauthorized("the token has no usable sub claim"))?;
        let mut roles: Vec<Role> = match claims.get(&self.roles_claim) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).filter_map(Role::parse).collect(),
            // a space-separated string, as some identity providers send scopes
            Some(Value::String(s)) => s.split_whitespace().filter_map(Role::parse).collect(),
            _ => Vec::new(),
        };
        // time-bound audit access: `auditor_until` (a date, inclusive, UTC) ends the auditor
        // role after that day; the token's other roles stay
        // an empty or null value is none, as identity providers send for an unset attribute
        if let Some(v) = claims.get("auditor_until").filter(|v| !v.is_null() && v.as_str() != Some("")) {
            let until = v
                .as_str()
                .and_then(|s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
                .ok_or_else(|| ApiError::unauthorized("the token's auditor_until claim is not a date (YYYY-MM-DD)"))?;
            if self.clock.now().date_naive() > until {
                roles.retain(|r| *r != Role::Auditor);
            }
        }
        // a unit is a non-blank string; anything else (absent, empty, a list of groups) is none,
        // as identity providers send "" for an unset attribute
        let business_unit = match claims.get(&self.business_unit_claim).and_then(Value::as_str) {
            Some(b) if b.contains('\0') => {
                return Err(ApiError::unauthorized(format!(
                    "the token's {} claim holds a NUL character",
                    self.business_unit_claim
                )));
            }
            Some(b) if !b.trim().is_empty() => Some(b.trim().to_owned()),
            Some(_) | None => None,
        };
        Ok(Actor { subject, roles, business_unit })
    }

    /// Signs a token for `subject` (the `leeway token` command and tests).
    pub fn mint(
        &self,
        subject: &str,
        roles: &[Role],
        business_unit: Option<&str>,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<String, String> {
        let mut claims = json!({
            "sub": subject,
            "iat": now.timestamp(),
            "nbf": now.timestamp(),
            "exp": (now + ttl).timestamp(),
        });
        claims[&self.roles_claim] = json!(roles.iter().map(|r| r.as_str()).collect::<Vec<_>>());
        if let Some(bu) = business_unit {
            claims[&self.business_unit_claim] = json!(bu);
        }
        if let Some(iss) = &self.issuer {
            claims["iss"] = json!(iss);
        }
        if let Some(aud) = &self.audience {
            claims["aud"] = json!(aud);
        }
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(|e| e.to_string())
    }
}

/// The authenticated caller of a `/v1` request.
#[derive(Debug, Clone)]
pub struct Caller(pub Actor);

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let verify = || {
            let state = req.app_data::<web::Data<AppState>>().ok_or_else(|| ApiError::internal(&"no app state"))?;
            let header = req
                .headers()
                .get(actix_web::http::header::AUTHORIZATION)
                .ok_or_else(|| ApiError::unauthorized("send Authorization: Bearer <token>"))?;
            let value = header.to_str().map_err(|_| ApiError::unauthorized("the Authorization header is not ASCII"))?;
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .ok_or_else(|| ApiError::unauthorized("the Authorization scheme must be Bearer"))?;
            state.auth.verify(token.trim()).map(Caller)
        };
        std::future::ready(verify())
    }
}
