//! The auditor's views of the whole trail: the global audit log and the verification of
//! every chain (`auditor`, `admin`).

pub mod json;

use actix_web::{HttpRequest, HttpResponse, get, web};
use leeway_domain::kinds::Role;
use leeway_persistence::AuditQuery;
use utoipa::IntoParams;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::routes::exceptions::json::{AuditEventView, ChainView, ExceptionView, HistoryView};
use crate::routes::exceptions::query::{text, time};
use crate::routes::integrations::{MAX_PAGE, limit, next_after, params, seq};
use json::{AuditLogItem, AuditLogPage, AuditPackage, BrokenAt, PolicyInForce, RoundView, VerifyView};

fn auditor(caller: &Caller) -> Result<(), ApiError> {
    if caller.0.has(Role::Auditor) || caller.0.has(Role::Admin) {
        Ok(())
    } else {
        Err(ApiError::forbidden("the audit trail is for auditor or admin").with("required_roles", ["auditor", "admin"]))
    }
}

/// Filters and page of the global audit log.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditLogParams {
    /// The last `seq` seen; absent: from the start.
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// 1..500, default 100.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Only this actor's events (a subject, or `system`).
    #[param(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*$")]
    pub actor: Option<String>,
    /// Only this action (`created`, `approved`, ...).
    #[param(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*$")]
    pub action: Option<String>,
    /// At or after (RFC 3339, 1970..9999).
    #[param(pattern = "^(19[7-9][0-9]|[2-9][0-9]{3})-")]
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// Before (RFC 3339, 1970..9999).
    #[param(pattern = "^(19[7-9][0-9]|[2-9][0-9]{3})-")]
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    /// Only this exception's events (its UUID).
    #[param(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*$")]
    pub exception_id: Option<String>,
}

/// Every exception's audit events in `seq` order, filtered and keyset paged.
#[utoipa::path(
    tag = "audit",
    security(("bearer" = [])),
    params(AuditLogParams),
    responses(
        (status = 200, description = "A page", body = AuditLogPage),
        (status = 400, description = "Bad parameter (`invalid_query`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not auditor or admin (`forbidden`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/audit/events")]
pub async fn audit_events(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    auditor(&caller)?;
    let p = params(req.query_string(), &["after", "limit", "actor", "action", "from", "to", "exception_id"])?;
    let q = AuditQuery {
        after: seq(&p, "after")?.unwrap_or(0),
        limit: limit(&p, MAX_PAGE)?,
        actor: p.get("actor").map(|v| text("actor", v)).transpose()?,
        action: p.get("action").map(|v| text("action", v)).transpose()?,
        from: p.get("from").map(|v| time("from", v)).transpose()?,
        to: p.get("to").map(|v| time("to", v)).transpose()?,
        exception_id: p.get("exception_id").map(|v| text("exception_id", v)).transpose()?,
    };
    let (st, n) = (state.clone(), q.limit);
    let events = web::block(move || st.store.audit_log(&q)).await??;
    let next_after = next_after(&events, n, |e| e.seq);
    let items = events
        .into_iter()
        .map(|e| AuditLogItem { exception_id: e.entry.exception_id.clone(), event: AuditEventView::from(e) })
        .collect();
    Ok(HttpResponse::Ok().json(AuditLogPage { items, next_after }))
}

/// Verify every exception's audit chain: each event's hash, its link to the one before, and
/// that each chain ends on the head recorded with its exception. Streams through the
/// database in bounded memory; names the first break.
#[utoipa::path(
    tag = "audit",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The verification", body = VerifyView),
        (status = 403, description = "Not auditor or admin (`forbidden`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/audit/verify")]
pub async fn audit_verify(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    auditor(&caller)?;
    let st = state.clone();
    let v = web::block(move || st.store.verify_chains()).await??;
    Ok(HttpResponse::Ok().json(VerifyView {
        valid: v.first_broken.is_none(),
        exceptions_checked: v.exceptions_checked,
        events_checked: v.events_checked,
        first_broken: v.first_broken.map(|(exception_id, seq)| BrokenAt { exception_id, seq }),
    }))
}

/// Everything an auditor needs about one exception, in one document to file: the exception
/// with every assessment, approval, review, control check and round; its full history with
/// the chain verified; and the approval policy in force at each approval.
#[utoipa::path(
    tag = "audit",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "UUID or key")),
    responses(
        (status = 200, description = "The package", body = AuditPackage),
        (status = 403, description = "Not auditor or admin (`forbidden`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/exceptions/{id}/audit-package")]
pub async fn audit_package(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    auditor(&caller)?;
    let target = leeway_domain::ids::ExceptionRef::parse(&id).ok_or_else(ApiError::not_found)?;
    let (st, actor) = (state.clone(), caller.0.clone());
    let (e, events, head, policies) = web::block(move || {
        let e = st.store.get(target, &actor)?;
        let (events, head) = st.store.history_with_head(e.id)?;
        let mut fingerprints: Vec<String> = e.approvals.iter().filter_map(|a| a.policy.clone()).collect();
        fingerprints.sort();
        fingerprints.dedup();
        let policies = st.store.policies(&fingerprints)?;
        Ok::<_, leeway_persistence::StoreError>((e, events, head, policies))
    })
    .await??;
    let now = state.clock.now();
    // a chain that does not end on the head recorded with the exception lost its last events
    let broken = leeway_persistence::break_in(&events, head.as_deref()).map(|i| events.get(i).map_or(0, |ev| ev.seq));
    let history = HistoryView {
        items: events.into_iter().map(AuditEventView::from).collect(),
        chain: ChainView { valid: broken.is_none(), first_broken_seq: broken },
    };
    let mut rounds: std::collections::BTreeMap<u32, RoundView> = std::collections::BTreeMap::new();
    let fresh = |n: u32| RoundView { round: n, assessment_ids: Vec::new(), approval_ids: Vec::new() };
    for a in &e.assessments {
        rounds.entry(a.round).or_insert_with(|| fresh(a.round)).assessment_ids.push(a.id.to_string());
    }
    for a in &e.approvals {
        rounds.entry(a.round).or_insert_with(|| fresh(a.round)).approval_ids.push(a.id.to_string());
    }
    let rounds: Vec<RoundView> = rounds.into_values().collect();
    let mut in_force: Vec<PolicyInForce> = Vec::with_capacity(policies.len());
    for (fingerprint, document, first_seen) in policies {
        let policy = serde_json::from_str(&document)
            .map_err(|err| ApiError::internal(&format!("stored policy {fingerprint} does not read: {err}")))?;
        let approval_ids = e
            .approvals
            .iter()
            .filter(|a| a.policy.as_deref() == Some(fingerprint.as_str()))
            .map(|a| a.id.to_string())
            .collect();
        in_force.push(PolicyInForce { fingerprint, first_seen, approval_ids, policy });
    }
    // approvals older than the record of policies, or whose policy is not on record here
    let approvals_without_policy = e
        .approvals
        .iter()
        .filter(|a| a.policy.as_ref().is_none_or(|f| !in_force.iter().any(|p| p.fingerprint == *f)))
        .map(|a| a.id.to_string())
        .collect();
    let policies = in_force;
    let exception = ExceptionView::render(&e, &caller.0, &state.policy, now);
    Ok(HttpResponse::Ok().json(AuditPackage {
        generated_at: now,
        exception,
        rounds,
        history,
        policies,
        approvals_without_policy,
    }))
}
