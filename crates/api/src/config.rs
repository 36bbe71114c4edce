//! Configuration from environment variables, to which a `KEY=VALUE` file may add.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use leeway_domain::ApprovalPolicy;
use leeway_domain::kinds::Role;

use crate::jwks::JwksConfig;
use crate::limits::RateLimit;

/// Where `/metrics` is served.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MetricsAt {
    /// Not served (the default).
    #[default]
    Off,
    /// On the main listener, beside the API (`LEEWAY_METRICS_LISTEN=main`).
    Main,
    /// On a listener of its own at this address.
    Listen(String),
}

/// Everything `leeway serve` needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// `LEEWAY_DATABASE_URL`: `sqlite://PATH` or `postgres://...`.
    pub database_url: String,
    /// `LEEWAY_LISTEN`: address to bind.
    pub listen: String,
    /// `LEEWAY_JWT_SECRET`: the HS256 secret; generated beside the SQLite file when absent.
    pub jwt_secret: Option<String>,
    /// `LEEWAY_JWT_SECRET_PREVIOUS`: a retired HS256 secret still accepted (never used to
    /// sign) while tokens signed with it run out.
    pub jwt_previous_secret: Option<String>,
    /// `LEEWAY_JWKS_URL` and its refresh settings: JWKS mode (RS256/ES256 tokens from an
    /// identity provider).
    pub jwks: Option<JwksConfig>,
    /// `LEEWAY_ROLE_MAP`: identity-provider group or role values to Leeway roles.
    pub role_map: HashMap<String, Vec<Role>>,
    /// `LEEWAY_RATE_LIMIT`: the per-subject token bucket, when set.
    pub rate_limit: Option<RateLimit>,
    /// `LEEWAY_METRICS_LISTEN`: where `/metrics` is served.
    pub metrics: MetricsAt,
    /// `LEEWAY_JWT_ISSUER`: required `iss`, when set.
    pub jwt_issuer: Option<String>,
    /// `LEEWAY_JWT_AUDIENCE`: required `aud`, when set.
    pub jwt_audience: Option<String>,
    /// `LEEWAY_JWT_ROLES_CLAIM`: the claim holding the roles array.
    pub roles_claim: String,
    /// `LEEWAY_JWT_BUSINESS_UNIT_CLAIM`: the claim holding the business unit.
    pub business_unit_claim: String,
    /// `LEEWAY_LOG`: tracing filter.
    pub log: String,
    /// `LEEWAY_LOG_FORMAT`: `text` or `json`.
    pub log_format: String,
    /// `LEEWAY_DB_POOL_SIZE`: connections in the pool.
    pub pool_size: u32,
    /// `LEEWAY_WORKERS`: HTTP worker threads (default: one per core).
    pub workers: Option<usize>,
    /// `LEEWAY_POLICY_FILE`: a JSON approval policy replacing the defaults.
    pub policy: ApprovalPolicy,
    /// `LEEWAY_JOBS_INTERVAL_SECONDS`: how often `serve` runs the scheduler; 0 disables it
    /// (for operators who run `leeway jobs run-once` from cron instead).
    pub jobs_interval_seconds: u64,
    /// `LEEWAY_DELIVERY_INTERVAL_MS`: how often `serve` numbers new events into the change
    /// feed and sends due webhook deliveries (default 250); 0 disables it.
    pub delivery_interval_ms: u64,
    /// `LEEWAY_WEBHOOK_ALLOW_PRIVATE`: allow webhook URLs on loopback, private and link-local
    /// addresses (tests, on-premise receivers). Off by default: such URLs are refused.
    pub webhook_allow_private: bool,
}

/// `1,1,2`: seconds between retries.
fn parse_schedule(v: &str) -> Result<Vec<u32>, String> {
    v.split(',')
        .map(|n| {
            n.trim()
                .parse::<u32>()
                .map_err(|_| format!("LEEWAY_WEBHOOK_RETRY_SCHEDULE must be comma-separated whole seconds, got {v:?}"))
        })
        .collect()
}

/// The key set is fetched over HTTPS: over plain HTTP anyone on the path could serve keys
/// of their own. Plain HTTP is allowed to a loopback address only (a local proxy, tests).
pub fn check_jwks_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("LEEWAY_JWKS_URL is not a URL ({e}): {url:?}"))?;
    let host = parsed.host_str().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
    let loopback =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!("LEEWAY_JWKS_URL must be https:// (plain http only to a loopback address), got {url:?}")),
    }
}

/// `grp-sec=security_officer,grp-ciso=ciso`: one value may map to several roles. `names`
/// (an empty map) takes the provider's values as role names.
pub fn parse_role_map(v: &str) -> Result<HashMap<String, Vec<Role>>, String> {
    let mut map: HashMap<String, Vec<Role>> = HashMap::new();
    if v.trim() == "names" {
        return Ok(map);
    }
    for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (from, to) = pair
            .split_once('=')
            .map(|(f, t)| (f.trim(), t.trim()))
            .filter(|(f, _)| !f.is_empty())
            .ok_or_else(|| format!("LEEWAY_ROLE_MAP must be comma-separated VALUE=ROLE pairs, got {pair:?}"))?;
        let role = Role::parse(to).ok_or_else(|| {
            format!(
                "LEEWAY_ROLE_MAP maps {from:?} to {to:?}, which is not a role; one of {}",
                Role::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
            )
        })?;
        let roles = map.entry(from.to_owned()).or_default();
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    // an empty map means `names`: it must be asked for by name, never by a blank value
    if map.is_empty() {
        return Err("LEEWAY_ROLE_MAP is blank: give VALUE=ROLE pairs, or `names`".to_owned());
    }
    Ok(map)
}

/// Reads `KEY=VALUE` lines (blank lines and `#` comments ignored).
pub fn read_file(path: &Path) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut out = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once('=').ok_or_else(|| format!("{}:{}: expected KEY=VALUE", path.display(), n + 1))?;
        out.insert(k.trim().to_owned(), v.trim().trim_matches('"').to_owned());
    }
    Ok(out)
}

impl Config {
    /// Environment first, then the file's values, then defaults.
    pub fn load(file: Option<&Path>) -> Result<Self, String> {
        let from_file = match file {
            Some(p) => read_file(p)?,
            None => HashMap::new(),
        };
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty()).or_else(|| from_file.get(k).cloned());
        let mut policy = match get("LEEWAY_POLICY_FILE") {
            Some(p) => {
                let text = std::fs::read_to_string(&p).map_err(|e| format!("cannot read policy {p}: {e}"))?;
                let policy: ApprovalPolicy = serde_json::from_str(&text).map_err(|e| format!("policy {p}: {e}"))?;
                policy.check()?;
                policy
            }
            None => ApprovalPolicy::default(),
        };
        if let Some(v) = get("LEEWAY_WEBHOOK_RETRY_SCHEDULE") {
            policy.webhook_retry_schedule_seconds = parse_schedule(&v)?;
            policy.check()?;
        }
        let number = |k: &str| -> Result<Option<u64>, String> {
            get(k).map(|v| v.parse::<u64>().map_err(|_| format!("{k} must be a whole number, got {v:?}"))).transpose()
        };
        let seconds = |k: &str, default: u64| -> Result<std::time::Duration, String> {
            Ok(std::time::Duration::from_secs(number(k)?.unwrap_or(default)))
        };
        let jwks = match get("LEEWAY_JWKS_URL") {
            None => None,
            Some(url) => {
                check_jwks_url(&url)?;
                if get("LEEWAY_JWT_ISSUER").is_none() || get("LEEWAY_JWT_AUDIENCE").is_none() {
                    return Err("with LEEWAY_JWKS_URL, set LEEWAY_JWT_ISSUER and LEEWAY_JWT_AUDIENCE too: tokens from an identity provider must name their issuer and this service (RFC 8725 3.8, 3.9)".to_owned());
                }
                if get("LEEWAY_ROLE_MAP").is_none() {
                    return Err("with LEEWAY_JWKS_URL, set LEEWAY_ROLE_MAP: the identity provider's groups mapped to roles (grp-sec=security_officer,...), or `names` to take its values as role names (only when no one but Leeway's admins can name a group or role `admin`)".to_owned());
                }
                Some(JwksConfig {
                    url,
                    min_refresh: seconds("LEEWAY_JWKS_MIN_REFRESH_SECONDS", 300)?.max(crate::jwks::MIN_REFRESH_FLOOR),
                    ttl: seconds("LEEWAY_JWKS_TTL_SECONDS", 3600)?.max(std::time::Duration::from_secs(1)),
                })
            }
        };
        Ok(Self {
            jwt_previous_secret: get("LEEWAY_JWT_SECRET_PREVIOUS"),
            jwks,
            role_map: get("LEEWAY_ROLE_MAP").map(|v| parse_role_map(&v)).transpose()?.unwrap_or_default(),
            rate_limit: get("LEEWAY_RATE_LIMIT").map(|v| RateLimit::parse(&v)).transpose()?,
            metrics: match get("LEEWAY_METRICS_LISTEN") {
                None => MetricsAt::Off,
                Some(v) if v == "main" => MetricsAt::Main,
                Some(v) => MetricsAt::Listen(v),
            },
            database_url: get("LEEWAY_DATABASE_URL").unwrap_or_else(|| "sqlite://leeway.db".to_owned()),
            listen: get("LEEWAY_LISTEN").unwrap_or_else(|| "127.0.0.1:8080".to_owned()),
            jwt_secret: get("LEEWAY_JWT_SECRET"),
            jwt_issuer: get("LEEWAY_JWT_ISSUER"),
            jwt_audience: get("LEEWAY_JWT_AUDIENCE"),
            roles_claim: get("LEEWAY_JWT_ROLES_CLAIM").unwrap_or_else(|| "roles".to_owned()),
            business_unit_claim: get("LEEWAY_JWT_BUSINESS_UNIT_CLAIM").unwrap_or_else(|| "business_unit".to_owned()),
            log: get("LEEWAY_LOG").unwrap_or_else(|| "info".to_owned()),
            log_format: get("LEEWAY_LOG_FORMAT").unwrap_or_else(|| "text".to_owned()),
            pool_size: number("LEEWAY_DB_POOL_SIZE")?.map_or(8, |n| n.clamp(1, 256) as u32),
            workers: number("LEEWAY_WORKERS")?.map(|n| n.clamp(1, 256) as usize),
            jobs_interval_seconds: number("LEEWAY_JOBS_INTERVAL_SECONDS")?.unwrap_or(60),
            delivery_interval_ms: number("LEEWAY_DELIVERY_INTERVAL_MS")?.unwrap_or(250),
            webhook_allow_private: match get("LEEWAY_WEBHOOK_ALLOW_PRIVATE").as_deref() {
                None | Some("false" | "0") => false,
                Some("true" | "1") => true,
                Some(v) => return Err(format!("LEEWAY_WEBHOOK_ALLOW_PRIVATE must be true or false, got {v:?}")),
            },
            policy,
        })
    }

    /// Where a generated secret is kept: beside the SQLite database file.
    pub fn secret_file(&self) -> Option<PathBuf> {
        let path = self.database_url.strip_prefix("sqlite://")?;
        Some(PathBuf::from(format!("{path}.jwt-secret")))
    }

    /// The configured secret, or the one kept beside the SQLite file (created when
    /// `create` is set). Returns the secret and whether it was generated now.
    pub fn resolve_secret(&self, create: bool) -> Result<(String, Option<PathBuf>), String> {
        if let Some(s) = &self.jwt_secret {
            if s.len() < 32 {
                return Err(
                    "LEEWAY_JWT_SECRET must be at least 32 characters (RFC 8725: no memorable passwords)".into()
                );
            }
            return Ok((s.clone(), None));
        }
        let Some(path) = self.secret_file() else {
            return Err("LEEWAY_JWT_SECRET is required with PostgreSQL".into());
        };
        if let Ok(s) = std::fs::read_to_string(&path) {
            let s = s.trim();
            if s.len() < 32 {
                return Err(format!(
                    "{} holds no usable secret (under 32 characters): delete it to generate a new one",
                    path.display()
                ));
            }
            return Ok((s.to_owned(), None));
        }
        if !create {
            return Err(format!("no secret at {}: start `leeway serve` once or set LEEWAY_JWT_SECRET", path.display()));
        }
        use base64::Engine;
        let bytes: [u8; 48] = rand::random();
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        write_private(&path, &secret).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok((secret, Some(path)))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(content.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    std::fs::write(path, content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_set_comes_over_https_or_from_loopback() {
        assert!(check_jwks_url("https://login.example.com/keys").is_ok());
        for ok in ["http://127.0.0.1:9000/jwks", "http://localhost/jwks", "http://[::1]:80/jwks"] {
            assert!(check_jwks_url(ok).is_ok(), "{ok}");
        }
        for bad in
            ["http://idp.example.com/jwks", "http://10.0.0.5/jwks", "ftp://x/jwks", "not a url", "file:///etc/keys"]
        {
            assert!(check_jwks_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn role_maps_map_values_to_roles_or_take_names_on_purpose() {
        let map = parse_role_map("grp-a=analyst, grp-a=auditor,grp-c=ciso").unwrap_or_default();
        assert_eq!(map.get("grp-a"), Some(&vec![Role::Analyst, Role::Auditor]));
        assert_eq!(map.get("grp-c"), Some(&vec![Role::Ciso]));
        assert_eq!(parse_role_map("names"), Ok(HashMap::new()));
        for bad in ["grp=wizard", "=analyst", "grp-a", "", " , ", ","] {
            assert!(parse_role_map(bad).is_err(), "{bad}");
        }
    }
}
