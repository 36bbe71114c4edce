//! List parameters and opaque cursors.
//!
//! A cursor carries the keyset position (sort value and id of the last item) and a
//! fingerprint of the filters, so a cursor used with other filters is refused rather than
//! silently skipping or repeating items. Every decoded field is checked, so a crafted cursor
//! is refused too (400 `invalid_cursor`), never passed to the database.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use leeway_domain::access::Actor;
use leeway_domain::kinds::{Category, Level, Status};
use leeway_persistence::{ListQuery, Sort, Visibility};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ProblemCode};
use crate::wire;

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
    ApiError::query(param, detail)
}

pub(crate) fn time(param: &str, v: &str) -> Result<DateTime<Utc>, ApiError> {
    let t = DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| bad(param, "must be an RFC 3339 date-time with a time zone, e.g. 2026-01-31T09:00:00Z"))?;
    leeway_domain::time::moment(param, t).map_err(|e| bad(param, e.message))
}

/// A filter value as the contract states it: 1..200 characters, no NUL; matched exactly.
pub(crate) fn text(param: &str, v: &str) -> Result<String, ApiError> {
    if v.is_empty() || v.chars().count() > 200 || v.contains('\0') {
        return Err(bad(param, "must be 1..200 characters without NUL"));
    }
    Ok(v.to_owned())
}

/// The keyset position in a cursor, when every field of it checks out.
fn decode_cursor(raw: &str, sort: Sort, fingerprint: &str) -> Result<(DateTime<Utc>, String), ApiError> {
    let invalid =
        || ApiError::new(ProblemCode::InvalidCursor, "the cursor is invalid, or was issued for other filters or sort");
    let bytes = URL_SAFE_NO_PAD.decode(raw.as_bytes()).map_err(|_| invalid())?;
    let c: Cursor = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let id = uuid::Uuid::parse_str(&c.id).map_err(|_| invalid())?;
    if c.f != fingerprint || c.s != sort_name(sort) || !leeway_domain::time::plausible(c.t) {
        return Err(invalid());
    }
    Ok((leeway_domain::time::truncate(c.t), id.to_string()))
}

/// Parses the query string of `GET /v1/exceptions`; returns the query and the filters'
/// fingerprint.
pub fn parse(raw: &str, actor: &Actor, now: DateTime<Utc>) -> Result<(ListQuery, String), ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
        .map_err(|e| ApiError::new(ProblemCode::InvalidQuery, format!("invalid query string: {e}")))?;
    let mut q = ListQuery { limit: DEFAULT_LIMIT, now, ..ListQuery::default() };
    let mut cursor = None;
    let mut external_system = None;
    let mut external_id = None;
    let mut filters: Vec<(String, String)> = Vec::new();
    for (k, v) in &pairs {
        match k.as_str() {
            "status" => {
                for s in v.split(',') {
                    q.statuses.push(Status::parse_field(k, s).map_err(|e| bad(k, e.message))?);
                }
            }
            "risk_level" => q.risk_level = Some(Level::parse_field(k, v).map_err(|e| bad(k, e.message))?),
            "category" => q.category = Some(Category::parse_field(k, v).map_err(|e| bad(k, e.message))?),
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
                if v.len() > 4000 {
                    return Err(ApiError::new(ProblemCode::InvalidCursor, "the cursor is invalid: too long"));
                }
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
        q.after = Some(decode_cursor(&c, q.sort, &fingerprint)?);
    }
    if actor.is_restricted() {
        q.visibility =
            Some(Visibility { subject: actor.subject.to_string(), business_unit: actor.business_unit.clone() });
    }
    Ok((q, fingerprint))
}

/// The order of a list.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
pub enum ListSort {
    /// Oldest first (the default).
    #[serde(rename = "created_at")]
    CreatedAt,
    /// Newest first.
    #[serde(rename = "-created_at")]
    CreatedAtDesc,
    /// Least recently changed first: the order for incremental pulls.
    #[serde(rename = "updated_at")]
    UpdatedAt,
    /// Most recently changed first.
    #[serde(rename = "-updated_at")]
    UpdatedAtDesc,
}

/// List filters. Every filter narrows; `status` may repeat (or be comma-separated). Unknown
/// parameters are refused, so a misspelt filter never silently returns everything. Text
/// filters match exactly.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(dead_code, reason = "documents the parameters; `parse` reads the query string itself")]
pub struct ListParams {
    /// Effective status; repeatable.
    status: Option<Vec<wire::Status>>,
    /// Residual risk level.
    risk_level: Option<wire::Level>,
    /// Category.
    category: Option<wire::Category>,
    /// Covers this asset.
    #[param(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*$")]
    asset: Option<String>,
    /// Deviates from this control id.
    #[param(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*$")]
    control_id: Option<String>,
    /// Business unit.
    #[param(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*$")]
    business_unit: Option<String>,
    /// Requester subject.
    #[param(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*$")]
    requester: Option<String>,
    /// Risk owner subject.
    #[param(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*$")]
    risk_owner: Option<String>,
    /// External system; with `external_id`.
    #[param(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*$")]
    external_system: Option<String>,
    /// External id; with `external_system`.
    #[param(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*$")]
    external_id: Option<String>,
    /// `expires_at` strictly before (RFC 3339, 1970..9999).
    #[param(pattern = "^(19[7-9][0-9]|[2-9][0-9]{3})-")]
    expires_before: Option<DateTime<Utc>>,
    /// `expires_at` at or after (RFC 3339, 1970..9999).
    #[param(pattern = "^(19[7-9][0-9]|[2-9][0-9]{3})-")]
    expires_after: Option<DateTime<Utc>>,
    /// `updated_at` at or after (RFC 3339, 1970..9999); pair with `sort=updated_at` for
    /// incremental pulls.
    #[param(pattern = "^(19[7-9][0-9]|[2-9][0-9]{3})-")]
    updated_since: Option<DateTime<Utc>>,
    /// Only exceptions covering right now (`true`) or not (`false`).
    covering: Option<bool>,
    /// Text in title or justification (case-insensitive).
    #[param(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*$")]
    q: Option<String>,
    /// Order; default `created_at`.
    sort: Option<ListSort>,
}

/// A list page: its size and where it starts.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(dead_code, reason = "documents the parameters; `parse` reads the query string itself")]
pub struct PageParams {
    /// 1..500, default 50.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page; the other parameters must be unchanged.
    #[param(max_length = 4000)]
    cursor: Option<String>,
}
