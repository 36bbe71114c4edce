//! Bearer-token authentication (RFC 8725): HS256 with the shared secret (and a retired one
//! while its tokens run out), and in JWKS mode RS256 or ES256 with the identity provider's
//! keys, each key bound to its one algorithm; at most 8 KiB, no `crit` extension (none is
//! understood), numeric `exp` required, `exp`/`nbf`/`iat` numeric and checked against the
//! injected clock with 60 s leeway, `iss`/`aud` when configured (always in JWKS mode). The
//! caller is an extractor, so no handler can forget it; it also takes the caller's token
//! from the per-subject rate limit.

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;

use crate::AppState;
use crate::clock::Clock;
use crate::config::Config;
use crate::error::ApiError;
use crate::jwks::Jwks;
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
        K::InvalidAlgorithm | K::InvalidAlgorithmName => "the token's algorithm is not allowed".to_owned(),
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

/// The shared secrets HS256 tokens are checked with.
#[derive(Clone)]
struct Hmac {
    current: DecodingKey,
    encoding: EncodingKey,
    /// A retired secret still accepted while its tokens run out (`LEEWAY_JWT_SECRET_PREVIOUS`).
    previous: Option<DecodingKey>,
}

/// Token verification settings.
#[derive(Clone)]
pub struct Auth {
    hmac: Option<Hmac>,
    jwks: Option<Jwks>,
    /// One rule set per accepted algorithm, each allowing only its own (RFC 8725 3.1).
    hs256: Validation,
    rs256: Validation,
    es256: Validation,
    issuer: Option<String>,
    audience: Option<String>,
    roles_claim: String,
    /// Identity-provider values to roles; empty: the values are role names.
    role_map: Arc<HashMap<String, Vec<Role>>>,
    business_unit_claim: String,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("jwks", &self.jwks)
            .finish_non_exhaustive()
    }
}

/// The rules for one algorithm: only it, `exp` and `sub` required, `iss`/`aud` when set.
fn validation(algorithm: Algorithm, issuer: Option<&String>, audience: Option<&String>) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.algorithms = vec![algorithm];
    // exp and nbf are checked below against the injected clock, not the system clock.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.required_spec_claims = ["exp", "sub"].iter().map(|s| (*s).to_owned()).collect();
    // RFC 8725 3.8/3.9: when configured, iss and aud must be present and match.
    match issuer {
        Some(iss) => {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        None => validation.iss = None,
    }
    match audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            validation.required_spec_claims.insert("aud".to_owned());
        }
        None => validation.validate_aud = false,
    }
    validation
}

/// A claim by name, or by a dotted path into nested objects (`realm_access.roles`); a claim
/// whose own name holds dots (`https://example.com/roles`) is found by its name first.
fn claim<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let first = claims.get(parts.next()?)?;
    parts.try_fold(first, |v, part| v.get(part))
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
        let mut auth = Self::without_secret(issuer, audience, roles_claim, business_unit_claim, clock);
        auth.hmac = Some(Hmac {
            current: DecodingKey::from_secret(secret.as_bytes()),
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            previous: None,
        });
        auth
    }

    fn without_secret(
        issuer: Option<String>,
        audience: Option<String>,
        roles_claim: String,
        business_unit_claim: String,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            hmac: None,
            jwks: None,
            hs256: validation(Algorithm::HS256, issuer.as_ref(), audience.as_ref()),
            rs256: validation(Algorithm::RS256, issuer.as_ref(), audience.as_ref()),
            es256: validation(Algorithm::ES256, issuer.as_ref(), audience.as_ref()),
            issuer,
            audience,
            roles_claim,
            role_map: Arc::default(),
            business_unit_claim,
            clock,
        }
    }

    /// Verification as configured: HS256 with `secret` (resolved by
    /// [`Config::resolve_secret`]) and the previous secret, and, with `jwks`, the identity
    /// provider's keys and role map.
    pub fn from_config(config: &Config, secret: Option<&str>, jwks: Option<Jwks>, clock: Arc<dyn Clock>) -> Self {
        let (issuer, audience) = (config.jwt_issuer.clone(), config.jwt_audience.clone());
        let (roles, unit) = (config.roles_claim.clone(), config.business_unit_claim.clone());
        let mut auth = match secret {
            Some(secret) => Self::new(secret, issuer, audience, roles, unit, clock),
            None => Self::without_secret(issuer, audience, roles, unit, clock),
        };
        if let (Some(hmac), Some(previous)) = (auth.hmac.as_mut(), &config.jwt_previous_secret) {
            hmac.previous = Some(DecodingKey::from_secret(previous.as_bytes()));
        }
        auth.jwks = jwks;
        auth.role_map = Arc::new(config.role_map.clone());
        auth
    }

    /// False in JWKS mode until a fetch has brought usable keys: until then no token of the
    /// identity provider can be checked, and the node should not get traffic.
    pub fn keys_ready(&self) -> bool {
        self.jwks.as_ref().is_none_or(Jwks::has_keys)
    }

    /// The claims of a token whose signature, algorithm, `iss` and `aud` hold, and whether its
    /// key came from the identity provider.
    async fn claims(&self, token: &str, header: &Header) -> Result<(Map<String, Value>, bool), ApiError> {
        let refused = |e: jsonwebtoken::errors::Error| ApiError::unauthorized(refusal(&e));
        match header.alg {
            Algorithm::HS256 => {
                // never checked against a key of the set: no HMAC with a public key (RFC 8725 2.1)
                let hmac = self.hmac.as_ref().ok_or_else(|| {
                    ApiError::unauthorized(
                        "HS256 tokens are not accepted here: use a token from the identity provider (RS256 or ES256)",
                    )
                })?;
                let current = jsonwebtoken::decode::<Map<String, Value>>(token, &hmac.current, &self.hs256);
                let data = match (current, &hmac.previous) {
                    (Err(e), Some(previous)) if *e.kind() == jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                        jsonwebtoken::decode::<Map<String, Value>>(token, previous, &self.hs256)
                    }
                    (result, _) => result,
                };
                Ok((data.map_err(refused)?.claims, false))
            }
            Algorithm::RS256 | Algorithm::ES256 if self.jwks.is_some() => {
                let jwks = self.jwks.as_ref().ok_or_else(|| ApiError::internal(&"no key set"))?;
                let kid = header.kid.as_deref().ok_or_else(|| {
                    ApiError::unauthorized(
                        "the token has no kid header, so no key of the identity provider can check it",
                    )
                })?;
                let key = jwks.key(kid).await.ok_or_else(|| {
                    ApiError::unauthorized("the token's kid names no key of the identity provider's key set")
                })?;
                // each key verifies exactly one algorithm (RFC 8725 3.1)
                if key.algorithm != header.alg {
                    return Err(ApiError::unauthorized(
                        "the token's alg is not the algorithm of the key its kid names",
                    ));
                }
                let rules = if key.algorithm == Algorithm::RS256 { &self.rs256 } else { &self.es256 };
                let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, rules).map_err(refused)?;
                Ok((data.claims, true))
            }
            _ => Err(ApiError::unauthorized(if self.jwks.is_some() {
                "the token's algorithm is not allowed (RS256 or ES256 from the identity provider)"
            } else {
                "the token's algorithm is not allowed (HS256 only)"
            })),
        }
    }

    /// The roles a token's claim carries: identity-provider values through the role map when
    /// one is set, Leeway role names otherwise.
    fn roles(&self, claims: &Map<String, Value>, from_idp: bool) -> Vec<Role> {
        let values: Vec<&str> = match claim(claims, &self.roles_claim) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            // a space-separated string, as some identity providers send scopes
            Some(Value::String(s)) => s.split_whitespace().collect(),
            _ => Vec::new(),
        };
        let mut roles: Vec<Role> = Vec::new();
        for v in values {
            let mapped: Vec<Role> = if from_idp && !self.role_map.is_empty() {
                self.role_map.get(v).cloned().unwrap_or_default()
            } else {
                Role::parse(v).into_iter().collect()
            };
            for r in mapped {
                if !roles.contains(&r) {
                    roles.push(r);
                }
            }
        }
        roles
    }

    /// Verifies a token and resolves the caller.
    pub async fn verify(&self, token: &str) -> Result<Actor, ApiError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(ApiError::unauthorized(format!("the token is longer than {MAX_TOKEN_BYTES} bytes")));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| ApiError::unauthorized(refusal(&e)))?;
        // RFC 7515 4.1.11: an extension the recipient does not understand must be refused,
        // and Leeway understands none
        if let Some(crit) = header.crit.as_ref().filter(|c| !c.is_empty()) {
            return Err(ApiError::unauthorized(format!(
                "the token's crit header names extensions this service does not understand: {}",
                crit.join(", ")
            )));
        }
        let (claims, from_idp) = self.claims(token, &header).await?;
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
        let mut roles = self.roles(&claims, from_idp);
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
        let hmac = self.hmac.as_ref().ok_or("no LEEWAY_JWT_SECRET: tokens come from the identity provider")?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &hmac.encoding).map_err(|e| e.to_string())
    }
}

/// The authenticated caller of a `/v1` request.
#[derive(Debug, Clone)]
pub struct Caller(pub Actor);

/// The subject of a request, kept for its log line.
#[derive(Debug, Clone)]
pub struct LoggedSubject(pub String);

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
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
            let actor = state.auth.verify(token.trim()).await?;
            req.extensions_mut().insert(LoggedSubject(actor.subject.to_string()));
            if let Some(limiter) = &state.limiter
                && let Err(wait) = limiter.check(actor.subject.as_str())
            {
                state.metrics.rate_limited();
                return Err(ApiError::rate_limited(wait));
            }
            Ok(Caller(actor))
        })
    }
}
