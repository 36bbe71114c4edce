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
