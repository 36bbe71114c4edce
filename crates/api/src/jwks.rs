//! The identity provider's signing keys (JWKS mode, `LEEWAY_JWKS_URL`).
//!
//! Keys are fetched from the one configured URL (never from a URL a token names, RFC 8725
//! 3.10) on a thread of their own, cached by `kid`, and each is bound to exactly one
//! algorithm: its own `alg`, or the one its type implies (RSA: RS256, EC P-256: ES256).
//! Only RS256 and ES256 are accepted. The cache is refreshed every `ttl`, and at once when a
//! token names a `kid` it does not hold, at most once per `min_refresh` counted from the last
//! fetch of any kind. A failed fetch keeps the last good keys.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// How long one fetch of the key set may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest key set read.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// The least time between two fetches a request may cause.
pub const MIN_REFRESH_FLOOR: Duration = Duration::from_secs(1);
/// The first wait before a failed fetch is tried again; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// The smallest RSA modulus accepted (RFC 7518 3.3: 2048 bits).
const MIN_RSA_BYTES: usize = 256;

/// Where the keys come from and how often they are fetched again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksConfig {
    /// `LEEWAY_JWKS_URL`.
    pub url: String,
    /// `LEEWAY_JWKS_MIN_REFRESH_SECONDS`: the least time between two fetches.
    pub min_refresh: Duration,
    /// `LEEWAY_JWKS_TTL_SECONDS`: how long keys are used before they are fetched again.
    pub ttl: Duration,
}

/// One usable key and the one algorithm it verifies.
#[derive(Clone)]
pub struct SigningKey {
    /// The key.
    pub key: DecodingKey,
    /// Its algorithm: RS256 or ES256.
    pub algorithm: Algorithm,
}

/// The algorithm a JWK is bound to, when Leeway accepts it: the JWK's own `alg` when it has
/// one, else what its key type implies. Encryption keys and other types are left out.
fn bind(jwk: &Jwk) -> Option<Algorithm> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))) {
        return None;
    }
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            use base64::Engine;
            let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(rsa.n.trim_end_matches('=')).ok()?;
            let significant = n.iter().skip_while(|b| **b == 0).count();
            if significant < MIN_RSA_BYTES {
                return None;
            }
            Algorithm::RS256
        }
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(implied),
        Some(KeyAlgorithm::RS256) if implied == Algorithm::RS256 => Some(implied),
        Some(KeyAlgorithm::ES256) if implied == Algorithm::ES256 => Some(implied),
        // an algorithm Leeway does not accept, or one that does not fit the key
        Some(_) => None,
    }
}

/// The usable keys of a JWKS document, by `kid`. Keys without a `kid`, of another type or
/// algorithm, or that do not parse are skipped (one odd key must not hide the others).
pub fn parse_key_set(body: &[u8]) -> Result<HashMap<String, SigningKey>, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("the key set is not JSON: {e}"))?;
    let items = doc.get("keys").and_then(Value::as_array).ok_or("the key set has no `keys` array")?;
    let mut keys = HashMap::new();
    for item in items {
        let Ok(jwk) = serde_json::from_value::<Jwk>(item.clone()) else { continue };
        let (Some(kid), Some(algorithm)) = (jwk.common.key_id.clone(), bind(&jwk)) else { continue };
        if let Ok(key) = DecodingKey::from_jwk(&jwk) {
            keys.insert(kid, SigningKey { key, algorithm });
        }
    }
    if keys.is_empty() {
        return Err("the key set holds no usable signing key (RS256 or ES256 with a kid)".to_owned());
    }
    Ok(keys)
}

struct Inner {
    config: JwksConfig,
    keys: RwLock<Arc<HashMap<String, SigningKey>>>,
    /// When the last fetch of any kind started.
    last_fetch: Mutex<Option<Instant>>,
    /// Asks the fetcher for a fetch now.
    wake: tokio::sync::Notify,
    /// How many fetches have ended, well or not.
    fetched: tokio::sync::watch::Sender<u64>,
}

/// The cached key set, shared by every worker.
#[derive(Clone)]
pub struct Jwks(Arc<Inner>);

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks").field("url", &self.0.config.url).finish_non_exhaustive()
    }
}

impl Jwks {
    /// Starts the fetcher thread; the first fetch begins at once.
    pub fn start(mut config: JwksConfig) -> Result<Self, String> {
        config.min_refresh = config.min_refresh.max(MIN_REFRESH_FLOOR);
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            // a redirect could lead off the configured URL (or down to plain HTTP)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Leeway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the JWKS client: {e}"))?;
        let (fetched, _) = tokio::sync::watch::channel(0);
        let jwks = Self(Arc::new(Inner {
            config,
            keys: RwLock::new(Arc::default()),
            last_fetch: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
            fetched,
        }));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the JWKS runtime: {e}"))?;
        let fetcher = jwks.clone();
        std::thread::Builder::new()
            .name("leeway-jwks".into())
            .spawn(move || runtime.block_on(fetcher.fetch_forever(client)))
            .map_err(|e| format!("cannot start the JWKS thread: {e}"))?;
        Ok(jwks)
    }

    async fn fetch_forever(self, client: reqwest::Client) {
        let mut retry = FIRST_RETRY;
        loop {
            let started = Instant::now();
            *self.0.last_fetch.lock().unwrap_or_else(PoisonError::into_inner) = Some(started);
            let next = match self.fetch(&client).await {
                Ok(keys) => {
                    let mut kids: Vec<&String> = keys.keys().collect();
                    kids.sort();
                    tracing::info!(url = %self.0.config.url, kids = ?kids, "fetched the JWKS");
                    *self.0.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
                    retry = FIRST_RETRY;
                    self.0.config.ttl
                }
                Err(e) => {
                    tracing::warn!(url = %self.0.config.url, error = %e, "JWKS fetch failed; keeping the last good keys");
                    // a failed fetch is tried again soon, backing off, never later than the TTL
                    let wait = retry.min(self.0.config.ttl);
                    retry = retry.saturating_mul(2).min(MAX_RETRY);
                    wait
                }
            };
            self.0.fetched.send_modify(|n| *n = n.wrapping_add(1));
            // the next fetch: when its time has come, or when a request reserved one
            loop {
                tokio::select! {
                    () = tokio::time::sleep(next.saturating_sub(started.elapsed())) => break,
                    () = self.0.wake.notified() => {
                        // a request reserves a fetch by stamping `last_fetch`; a wake-up whose
                        // reservation came before this fetch started was answered by it
                        let reserved = *self.0.last_fetch.lock().unwrap_or_else(PoisonError::into_inner);
                        if reserved.is_some_and(|at| at > started) {
                            break;
                        }
                    }
                }
            }
        }
    }

    async fn fetch(&self, client: &reqwest::Client) -> Result<HashMap<String, SigningKey>, String> {
        let mut res = client.get(&self.0.config.url).send().await.map_err(|e| e.to_string())?;
        if !res.status().is_success() {
            return Err(format!("answered {}", res.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| e.to_string())? {
            if body.len().saturating_add(chunk.len()) > MAX_JWKS_BYTES {
                return Err(format!("the key set is over {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        parse_key_set(&body)
    }

    /// The key `kid` names, fetching the set again first when it is unknown and a fetch is
    /// allowed (at most one per `min_refresh`). Waits for the first fetch to end.
    pub async fn key(&self, kid: &str) -> Option<SigningKey> {
        let mut ended = self.0.fetched.subscribe();
        // before the first fetch has ended there is nothing to look in
        if *ended.borrow_and_update() == 0 {
            let _ = tokio::time::timeout(FETCH_TIMEOUT + Duration::from_secs(1), ended.wait_for(|n| *n > 0)).await;
        }
        if let Some(key) = self.cached(kid) {
            return Some(key);
        }
        let seen = *ended.borrow_and_update();
        {
            // check and reserve under one lock, so two requests cannot both fetch
            let mut last = self.0.last_fetch.lock().unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < self.0.config.min_refresh) {
                return None;
            }
            *last = Some(Instant::now());
        }
        self.0.wake.notify_one();
        let _ = tokio::time::timeout(FETCH_TIMEOUT + Duration::from_secs(1), ended.wait_for(|n| *n != seen)).await;
        self.cached(kid)
    }

    /// Whether a fetch has ever brought usable keys (until then the node is not ready).
    pub fn has_keys(&self) -> bool {
        !self.0.keys.read().unwrap_or_else(PoisonError::into_inner).is_empty()
    }

    fn cached(&self, kid: &str) -> Option<SigningKey> {
        self.0.keys.read().unwrap_or_else(PoisonError::into_inner).get(kid).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RSA: &str = include_str!("../../../tests/fixtures/jwks/rsa-a.jwk.json");
    const EC: &str = include_str!("../../../tests/fixtures/jwks/ec-a.jwk.json");

    fn set(keys: &[Value]) -> Vec<u8> {
        serde_json::to_vec(&json!({ "keys": keys })).unwrap_or_default()
    }

    fn parsed(s: &str) -> Value {
        serde_json::from_str(s).unwrap_or(Value::Null)
    }

    #[test]
    fn each_key_is_bound_to_the_one_algorithm_its_type_allows() {
        let keys = parse_key_set(&set(&[parsed(RSA), parsed(EC)])).unwrap_or_default();
        assert_eq!(keys.get("rsa-a").map(|k| k.algorithm), Some(Algorithm::RS256));
        assert_eq!(keys.get("ec-a").map(|k| k.algorithm), Some(Algorithm::ES256));
    }

    #[test]
    fn keys_leeway_cannot_use_are_skipped_not_fatal() {
        let mut hs = parsed(RSA);
        hs["kid"] = json!("wrong-alg");
        hs["alg"] = json!("PS256");
        let mut enc = parsed(EC);
        enc["kid"] = json!("enc");
        enc["use"] = json!("enc");
        let mut nokid = parsed(RSA);
        nokid.as_object_mut().map(|o| o.remove("kid"));
        let oct = json!({"kty":"oct","kid":"secret","k":"c2VjcmV0"});
        let odd = json!({"kty":"OKP","kid":"odd","crv":"X448","x":"AA"});
        let keys = parse_key_set(&set(&[hs, enc, nokid, oct, odd, parsed(RSA)])).unwrap_or_default();
        let mut kids: Vec<&String> = keys.keys().collect();
        kids.sort();
        assert_eq!(kids, ["rsa-a"]);
    }

    #[test]
    fn a_set_without_a_usable_key_is_an_error() {
        assert!(parse_key_set(b"{}").is_err());
        assert!(parse_key_set(b"not json").is_err());
        assert!(parse_key_set(&set(&[json!({"kty":"oct","kid":"s","k":"c2VjcmV0"})])).is_err());
    }
}
