//! KPIs and hotspots for the people who govern exceptions: computed by the database
//! (`leeway_persistence::Store::kpis`, `hotspots`); every definition is in docs/REPORTS.md.

use actix_web::{HttpRequest, HttpResponse, get, web};
use chrono::{DateTime, Duration, Utc};
use leeway_domain::ids::ExceptionKey;
use leeway_domain::kinds::Role;
use leeway_persistence::{Count, KpiQuery};
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::routes::exceptions::query::time;
use crate::routes::integrations::{limit, params};

/// The roles that read reports.
const READERS: [Role; 6] =
    [Role::Analyst, Role::SecurityOfficer, Role::Ciso, Role::Compliance, Role::Auditor, Role::Admin];

fn reader(caller: &Caller) -> Result<(), ApiError> {
    if READERS.iter().any(|r| caller.0.has(*r)) {
        Ok(())
    } else {
        Err(ApiError::needs_roles(
            "reports are for analyst, security_officer, ciso, compliance, auditor or admin",
            &READERS,
        ))
    }
}

fn unit(p: &std::collections::HashMap<String, String>) -> Result<Option<String>, ApiError> {
    p.get("business_unit").map(|v| crate::routes::exceptions::query::text("business_unit", v)).transpose()
}

/// The window and scope of a KPI report.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KpiParams {
    /// Window start, inclusive (RFC 3339, 1970..9999); default: a year before `to`.
    #[param(pattern = "^(19[7-9][0-9]|[2-9][0-9]{3})-")]
    pub from: Option<DateTime<Utc>>,
    /// Window end, exclusive (RFC 3339, 1970..9999); default: now.
    #[param(pattern = "^(19[7-9][0-9]|[2-9][0-9]{3})-")]
    pub to: Option<DateTime<Utc>>,
    /// Only this business unit (1..200 characters, matched exactly).
    #[param(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*$")]
    pub business_unit: Option<String>,
}

/// Exceptions created in one month.
#[derive(Debug, Serialize, ToSchema)]
pub struct MonthVolume {
    /// `YYYY-MM` (UTC).
    pub month: String,
    /// How many.
    pub count: i64,
}

/// Time from the last submit to the final approval.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalTime {
    /// Approvals in the window.
    pub count: usize,
    /// Nearest-rank median, seconds (absent without approvals).
    pub median_seconds: Option<f64>,
    /// Mean, seconds.
    pub mean_seconds: Option<f64>,
    /// Nearest-rank 90th percentile, seconds.
    pub p90_seconds: Option<f64>,
}

/// A part of the live exceptions.
#[derive(Debug, Serialize, ToSchema)]
pub struct Share {
    /// How many are in the part.
    pub count: i64,
    /// Out of how many.
    pub of: i64,
    /// `count / of`, 0..1 (absent when `of` is 0).
    pub share: Option<f64>,
}

/// Lifespans of the exceptions that ended in the window after covering.
#[derive(Debug, Serialize, ToSchema)]
pub struct Lifespan {
    /// How many ended.
    pub ended: i64,
    /// Mean seconds from coverage start to the end.
    pub mean_seconds: Option<f64>,
}

/// Renewals against expiries in the window.
#[derive(Debug, Serialize, ToSchema)]
pub struct Renewals {
    /// Renewals approved.
    pub renewed: i64,
    /// Exceptions that expired.
    pub expired: i64,
    /// `renewed / (renewed + expired)`.
    pub rate: Option<f64>,
}

/// An approver and their approvals.
#[derive(Debug, Serialize, ToSchema)]
pub struct Approver {
    /// The approver's subject.
    pub subject: String,
    /// Approvals recorded in the window.
    pub approvals: i64,
}

/// The KPIs of a window (definitions: docs/REPORTS.md).
#[derive(Debug, Serialize, ToSchema)]
pub struct KpiReport {
    /// Window start, inclusive.
    pub from: DateTime<Utc>,
    /// Window end, exclusive.
    pub to: DateTime<Utc>,
    /// The moment the point-in-time shares were taken.
    pub as_of: DateTime<Utc>,
    /// The unit, when one was asked for.
    pub business_unit: Option<String>,
    /// Exceptions created per month in the window.
    pub volume_per_month: Vec<MonthVolume>,
    /// Approvals in the window.
    pub approval_time: ApprovalTime,
    /// Covering exceptions whose periodic review is overdue, of the live ones, now.
    pub overdue_for_review: Share,
    /// Live exceptions with at least one verified compensating control, now.
    pub control_coverage: Share,
    /// Exceptions that ended in the window after covering.
    pub lifespan: Lifespan,
    /// Renewals against expiries.
    pub renewals: Renewals,
    /// The ten who recorded most approvals in the window.
    pub top_approvers: Vec<Approver>,
    /// Exceptions created in the window, by status.
    pub by_status: BTreeMap<String, i64>,
    /// By residual risk level (`unassessed` before an assessment).
    pub by_level: BTreeMap<String, i64>,
    /// By category.
    pub by_category: BTreeMap<String, i64>,
    /// By business unit.
    pub by_business_unit: BTreeMap<String, i64>,
}

/// The nearest-rank `p`-th percentile of `sorted` (ascending): the value at rank
/// `ceil(p / 100 * n)`.
fn percentile(sorted: &[f64], p: u32) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = (u64::from(p).saturating_mul(n as u64)).div_ceil(100).max(1);
    sorted.get(usize::try_from(rank).ok()?.saturating_sub(1)).copied()
}

fn ratio(count: i64, of: i64) -> Option<f64> {
    (of > 0).then(|| count as f64 / of as f64)
}

fn counts(c: Vec<Count>) -> BTreeMap<String, i64> {
    c.into_iter().map(|c| (c.name, c.n)).collect()
}

/// KPIs: volume per month, approval time (median, mean, p90), the share overdue for review,
/// compensating-control coverage, mean lifespan, renewal rate, top approvers, and counts by
/// status, level, category and business unit.
///
/// Roles: `analyst`, `security_officer`, `ciso`, `compliance`, `auditor`, `admin`. Each figure
/// is defined in docs/REPORTS.md.
#[utoipa::path(
    tag = "reports",
    security(("bearer" = [])),
    params(KpiParams),
    responses(
        (status = 200, description = "The KPIs", body = KpiReport),
        (status = 400, description = "Bad parameter, or `from` not before `to` (`invalid_query`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A role that may not read reports (`forbidden`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/reports/kpis")]
pub async fn kpis(state: web::Data<AppState>, req: HttpRequest, caller: Caller) -> Result<HttpResponse, ApiError> {
    reader(&caller)?;
    let p = params(req.query_string(), &["from", "to", "business_unit"])?;
    let now = state.clock.now();
    let to = p.get("to").map(|v| time("to", v)).transpose()?.unwrap_or(now);
    let from = match p.get("from") {
        Some(v) => time("from", v)?,
        None => to.checked_sub_signed(Duration::days(365)).unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
    };
    if from >= to {
        return Err(ApiError::query("from", "must be before to"));
    }
    let business_unit = unit(&p)?;
    let q = KpiQuery { from, to, business_unit: business_unit.clone(), now };
    let st = state.clone();
    let k = web::block(move || st.store.kpis(&q)).await??;
    let secs = &k.approval_seconds;
    let report = KpiReport {
        from,
        to,
        as_of: now,
        business_unit,
        volume_per_month: k.volume_per_month.into_iter().map(|c| MonthVolume { month: c.name, count: c.n }).collect(),
        approval_time: ApprovalTime {
            count: secs.len(),
            median_seconds: percentile(secs, 50),
            mean_seconds: (!secs.is_empty()).then(|| secs.iter().sum::<f64>() / secs.len() as f64),
            p90_seconds: percentile(secs, 90),
        },
        overdue_for_review: Share {
            count: k.overdue_for_review,
            of: k.live,
            share: ratio(k.overdue_for_review, k.live),
        },
        control_coverage: Share {
            count: k.with_verified_control,
            of: k.live,
            share: ratio(k.with_verified_control, k.live),
        },
        lifespan: Lifespan { ended: k.ended, mean_seconds: k.mean_lifespan_seconds },
        renewals: Renewals {
            renewed: k.renewed,
            expired: k.expired,
            rate: ratio(k.renewed, k.renewed.saturating_add(k.expired)),
        },
        top_approvers: k.top_approvers.into_iter().map(|c| Approver { subject: c.name, approvals: c.n }).collect(),
        by_status: counts(k.by_status),
        by_level: counts(k.by_level),
        by_category: counts(k.by_category),
        by_business_unit: counts(k.by_business_unit),
    };
    Ok(HttpResponse::Ok().json(report))
}

/// Scope and length of the hotspot lists.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HotspotParams {
    /// Only this business unit (1..200 characters, matched exactly).
    #[param(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*$")]
    pub business_unit: Option<String>,
    /// Items per list, 1..100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// An asset and control with repeated exceptions.
#[derive(Debug, Serialize, ToSchema)]
pub struct RepeatView {
    /// The asset.
    pub asset: String,
    /// The control.
    pub control_id: String,
    /// Exceptions on both, beyond draft and withdrawn.
    pub exceptions: i64,
}

/// A business unit's volume.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnitView {
    /// The unit.
    pub business_unit: String,
    /// Every exception.
    pub total: i64,
    /// Live ones.
    pub live: i64,
}

/// A chronic case.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChronicView {
    /// `EXC-000042`.
    pub key: String,
    /// Title.
    pub title: String,
    /// Status.
    pub status: String,
    /// Business unit.
    pub business_unit: String,
}

/// An asset at its covering limit.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssetAtLimit {
    /// The asset.
    pub asset: String,
    /// Live exceptions holding its places.
    pub live: i64,
    /// The policy's limit per asset.
    pub limit: u32,
}

/// Where exceptions concentrate.
#[derive(Debug, Serialize, ToSchema)]
pub struct HotspotReport {
    /// Asset and control pairs with two exceptions or more, most first.
    pub repeats: Vec<RepeatView>,
    /// Volume per business unit, most first.
    pub business_units: Vec<UnitView>,
    /// Exceptions flagged chronic, newest first.
    pub chronic: Vec<ChronicView>,
    /// Assets whose live exceptions reach the per-asset limit.
    pub assets_at_limit: Vec<AssetAtLimit>,
}

/// Hotspots: repeat exceptions per asset and control, volume per business unit, chronic
/// cases, assets at their covering limit. Each list at most `limit` long.
///
/// Roles: as for KPIs.
#[utoipa::path(
    tag = "reports",
    security(("bearer" = [])),
    params(HotspotParams),
    responses(
        (status = 200, description = "The hotspots", body = HotspotReport),
        (status = 400, description = "Bad parameter (`invalid_query`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A role that may not read reports (`forbidden`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/reports/hotspots")]
pub async fn hotspots(state: web::Data<AppState>, req: HttpRequest, caller: Caller) -> Result<HttpResponse, ApiError> {
    reader(&caller)?;
    let p = params(req.query_string(), &["business_unit", "limit"])?;
    let business_unit = unit(&p)?;
    let n = if p.contains_key("limit") { limit(&p, 100)? } else { 20 };
    let per_asset = state.policy.max_covering_per_asset;
    let (st, now) = (state.clone(), state.clock.now());
    let h = web::block(move || st.store.hotspots(business_unit.as_deref(), n, i64::from(per_asset), now)).await??;
    Ok(HttpResponse::Ok().json(HotspotReport {
        repeats: h
            .repeats
            .into_iter()
            .map(|r| RepeatView { asset: r.asset, control_id: r.control_id, exceptions: r.n })
            .collect(),
        business_units: h
            .business_units
            .into_iter()
            .map(|u| UnitView { business_unit: u.business_unit, total: u.total, live: u.live })
            .collect(),
        chronic: h
            .chronic
            .into_iter()
            .map(|c| ChronicView {
                key: u64::try_from(c.key_num)
                    .ok()
                    .and_then(ExceptionKey::new)
                    .map_or_else(|| c.key_num.to_string(), |k| k.to_string()),
                title: c.title,
                status: c.status,
                business_unit: c.business_unit,
            })
            .collect(),
        assets_at_limit: h
            .assets_at_limit
            .into_iter()
            .map(|a| AssetAtLimit { asset: a.name, live: a.n, limit: per_asset })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 50), Some(5.0));
        assert_eq!(percentile(&v, 90), Some(9.0));
        assert_eq!(percentile(&[7.0], 90), Some(7.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 50), Some(2.0));
        assert_eq!(percentile(&[], 50), None);
    }
}
