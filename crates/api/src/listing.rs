//! List parameters and opaque cursors.
//!
//! A cursor carries the keyset position (sort value and id of the last item) and a
//! fingerprint of the filters, so a cursor used with other filters is refused rather than
//! silently skipping or repeating items.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use leeway_domain::lifecycle::Status;
use leeway_domain::risk::Level;
use leeway_domain::role::Actor;
use leeway_persistence::{ListQuery, Sort, Visibility};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Default page size.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page size.
pub const MAX_LIMIT: u32 = 500;

#[derive(Serialize, Deserialize)]
struct Cursor {
    s: String,
    t: DateTime<Utc>,
    id: String,
    f: String,
}

fn sort_name(s: Sort) -> &'static str {
    match s {
        Sort::CreatedAsc => "created_at",
        Sort::CreatedDesc => "-created_at",
        Sort::UpdatedAsc => "updated_at",
        Sort::UpdatedDesc => "-updated_at",
    }
}

/// Encodes the position after the last item of a page.
pub fn encode_cursor(sort: Sort, t: DateTime<Utc>, id: &str, fingerprint: &str) -> String {
    let c = Cursor { s: sort_name(sort).to_owned(), t, id: id.to_owned(), f: fingerprint.to_owned() };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap_or_default())
}

fn bad(param: &str, detail: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_query", format!("{param}: {detail}")).with("parameter", param)
}

fn time(param: &str, v: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| bad(param, format!("not an RFC 3339 timestamp ({e})")))
        .and_then(|t| {
            if leeway_domain::workflow::plausible(t) { Ok(t) } else { Err(bad(param, "must be between 1970 and 9999")) }
        })
}

fn text(param: &str, v: &str) -> Result<String, ApiError> {
    let v = v.trim();
    if v.is_empty() || v.chars().count() > 200 {
        return Err(bad(param, "must be 1..200 characters"));
    }
    Ok(v.to_owned())
}

/// Parses the query string of `GET /v1/exceptions`; returns the query and the filters'
/// fingerprint.
pub fn parse(raw: &str, actor: &Actor, now: DateTime<Utc>) -> Result<(ListQuery, String), ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
        .map_err(|e| ApiError::bad_request("invalid_query", format!("invalid query string: {e}")))?;
    let mut q = ListQuery { limit: DEFAULT_LIMIT, now, ..ListQuery::default() };
    let mut cursor = None;
    let mut external_system = None;
    let mut external_id = None;
    let mut filters: Vec<(String, String)> = Vec::new();
    for (k, v) in &pairs {
        match k.as_str() {
            "status" => {
                for s in v.split(',').filter(|s| !s.is_empty()) {
                    q.statuses.push(Status::parse(s).ok_or_else(|| {
                        bad(
                            "status",
                            format!(
                                "unknown status {s:?}; one of {}",
                                Status::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                            ),
                        )
                    })?);
                }
            }
            "risk_level" => {
                q.risk_level = Some(Level::parse(v).ok_or_else(|| bad(k, "one of low, medium, high, critical"))?)
            }
            "category" => {
                leeway_domain::record::Category::parse(v).ok_or_else(|| bad(k, "unknown category"))?;
                q.category = Some(v.clone());
            }
            "asset" => q.asset = Some(text(k, v)?),
            "control_id" => q.control_id = Some(text(k, v)?),
            "business_unit" => q.business_unit = Some(text(k, v)?),
            "requester" => q.requester = Some(text(k, v)?),
            "risk_owner" => q.risk_owner = Some(text(k, v)?),
            "external_system" => external_system = Some(text(k, v)?),
            "external_id" => external_id = Some(text(k, v)?),
            "expires_before" => q.expires_before = Some(time(k, v)?),
            "expires_after" => q.expires_after = Some(time(k, v)?),
            "updated_since" => q.updated_since = Some(time(k, v)?),
            "covering" => {
                q.covering = Some(match v.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad(k, "must be true or false")),
                })
            }
            "q" => q.q = Some(text(k, v)?),
            "sort" => {
                q.sort = match v.as_str() {
                    "created_at" => Sort::CreatedAsc,
                    "-created_at" => Sort::CreatedDesc,
                    "updated_at" => Sort::UpdatedAsc,
                    "-updated_at" => Sort::UpdatedDesc,
                    _ => return Err(bad(k, "one of created_at, -created_at, updated_at, -updated_at")),
                }
            }
            "limit" => {
                let n: u32 = v.parse().map_err(|_| bad(k, "must be a whole number from 1 to 500"))?;
                if n == 0 || n > MAX_LIMIT {
                    return Err(bad(k, "must be a whole number from 1 to 500"));
                }
                q.limit = n;
                continue;
            }
            "cursor" => {
                cursor = Some(v.clone());
                continue;
            }
            other => return Err(bad(other, "unknown parameter")),
        }
        filters.push((k.clone(), v.clone()));
    }
    match (external_system, external_id) {
        (Some(s), Some(i)) => q.external = Some((s, i)),
        (None, None) => {}
        _ => return Err(bad("external_id", "external_system and external_id go together")),
    }
    filters.sort();
    let fingerprint = hex::encode(&Sha256::digest(serde_json::to_vec(&filters).unwrap_or_default())[..8]);
    if let Some(c) = cursor {
        let invalid = || {
            ApiError::bad_request("invalid_cursor", "the cursor is invalid, or was issued for other filters or sort")
        };
        let bytes = URL_SAFE_NO_PAD.decode(c.as_bytes()).map_err(|_| invalid())?;
        let c: Cursor = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if c.f != fingerprint || c.s != sort_name(q.sort) {
            return Err(invalid());
        }
        q.after = Some((c.t, c.id));
    }
    if actor.is_restricted() {
        q.visibility =
            Some(Visibility { subject: actor.subject.to_string(), business_unit: actor.business_unit.clone() });
    }
    Ok((q, fingerprint))
}
