//! Wire types of the global audit log and its verification.

use serde::Serialize;
use utoipa::ToSchema;

use crate::routes::exceptions::json::AuditEventView;

/// One event of the global log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditLogItem {
    /// The exception it belongs to.
    pub exception_id: String,
    /// The event, as an exception's history shows it.
    #[serde(flatten)]
    pub event: AuditEventView,
}

/// A page of the global log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditLogPage {
    /// Events in `seq` order.
    pub items: Vec<AuditLogItem>,
    /// Pass as `after` for the next page; `null` on the last.
    pub next_after: Option<i64>,
}

/// Where a chain breaks.
#[derive(Debug, Serialize, ToSchema)]
pub struct BrokenAt {
    /// The exception.
    pub exception_id: String,
    /// The first event that does not match its hash or its predecessor; 0 when the chain does
    /// not end on the head recorded with the exception (its last events are missing).
    pub seq: i64,
}

/// What verifying every chain found.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyView {
    /// Every chain holds.
    pub valid: bool,
    /// Exceptions whose chains were walked (all, when valid).
    pub exceptions_checked: u64,
    /// Events checked.
    pub events_checked: u64,
    /// The first break; absent when valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_broken: Option<BrokenAt>,
}

/// A policy an approval was given under.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyInForce {
    /// Its fingerprint (SHA-256 of its JSON), as each approval records it.
    pub fingerprint: String,
    /// When a server first ran with it.
    pub first_seen: chrono::DateTime<chrono::Utc>,
    /// The approvals given under it.
    pub approval_ids: Vec<String>,
    /// The policy, as `GET /v1/policy` showed it then (the domain's `ApprovalPolicy`).
    #[schema(value_type = Object)]
    pub policy: serde_json::Value,
}

/// One round of an exception's life: the first request, or a renewal.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoundView {
    /// The round's number (1: the request; later: renewals and re-approvals).
    pub round: u32,
    /// Its assessments' ids.
    pub assessment_ids: Vec<String>,
    /// Its approvals' ids.
    pub approval_ids: Vec<String>,
}

/// Everything an auditor files about one exception.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPackage {
    /// When the package was made.
    pub generated_at: chrono::DateTime<chrono::Utc>,
    /// The exception with every assessment, control, approval, review and control check.
    pub exception: crate::routes::exceptions::json::ExceptionView,
    /// Its rounds, with what each assessed and approved.
    pub rounds: Vec<RoundView>,
    /// Every event, oldest first, with the chain verified.
    pub history: crate::routes::exceptions::json::HistoryView,
    /// The policy in force at each approval.
    pub policies: Vec<PolicyInForce>,
    /// Approvals recorded before Leeway kept the policy they were given under.
    pub approvals_without_policy: Vec<String>,
}
