//! Row structs, private to this crate, and their conversion to and from the domain.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use leeway_domain::audit::{Entry, Event};
use leeway_domain::ids::{ExceptionId, ExceptionKey, Subject};
use leeway_domain::kinds::{Category, Level, Priority, Reason, Status};
use leeway_domain::record::{Exception, ExternalRef, Fields, Record};
use serde::{Deserialize, Serialize};

use crate::columns::{Json, Stored};
use crate::document::{StoredApproval, StoredAssessment, StoredCheck, StoredControl, StoredReview};
use crate::error::StoreError;
use crate::schema::*;

/// A moment as stored: UTC, to the microsecond (PostgreSQL's precision; SQLite keeps the same),
/// truncated the same way whichever path writes it.
pub(crate) fn naive(t: DateTime<Utc>) -> NaiveDateTime {
    use chrono::SubsecRound;
    t.naive_utc().trunc_subsecs(6)
}

pub(crate) fn utc(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

fn count(what: &str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::corrupt(format!("{what} {v} does not fit a BIGINT")))
}

fn small(what: &str, v: u32) -> Result<i32, StoreError> {
    i32::try_from(v).map_err(|_| StoreError::corrupt(format!("{what} {v} does not fit an INTEGER")))
}

/// Converts each stored child, failing on the first that does not parse.
fn children<S, T>(stored: Vec<S>, convert: impl Fn(S) -> Result<T, StoreError>) -> Result<Vec<T>, StoreError> {
    stored.into_iter().map(convert).collect()
}

/// An exception's row: the whole aggregate. `None` is written as NULL, both on update and on
/// insert (so that SQLite takes many rows in one INSERT).
#[derive(Queryable, Selectable, Insertable, AsChangeset, Serialize, Deserialize, Debug, Clone)]
#[diesel(table_name = exceptions, treat_none_as_null = true, treat_none_as_default_value = false)]
pub(crate) struct ExceptionRow {
    pub id: Stored<ExceptionId>,
    pub key_num: i64,
    pub title: String,
    pub category: Stored<Category>,
    pub policy_id: String,
    pub control_ids: Json<Vec<String>>,
    pub assets: Json<Vec<String>>,
    pub business_unit: String,
    pub justification: String,
    pub business_impact: Option<String>,
    pub requester: Stored<Subject>,
    pub on_behalf_of: Option<Stored<Subject>>,
    pub risk_owner: Stored<Subject>,
    pub priority: Stored<Priority>,
    pub starts_at: Option<NaiveDateTime>,
    pub expires_at: Option<NaiveDateTime>,
    pub remediation_plan: Option<String>,
    pub remediation_due: Option<chrono::NaiveDate>,
    pub external_refs: Json<Vec<ExternalRef>>,
    pub tags: Json<Vec<String>>,
    pub status: Stored<Status>,
    pub status_reason: Option<Stored<Reason>>,
    pub round: i32,
    pub version: i64,
    pub chronic: bool,
    pub emergency: bool,
    pub at_risk: bool,
    pub residual_level: Option<Stored<Level>>,
    pub search_text: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub submitted_at: Option<NaiveDateTime>,
    pub approved_at: Option<NaiveDateTime>,
    pub closed_at: Option<NaiveDateTime>,
    pub next_review_at: Option<NaiveDateTime>,
    pub next_due_at: Option<NaiveDateTime>,
    pub escalated_at: Option<NaiveDateTime>,
    pub review_notified_at: Option<NaiveDateTime>,
    pub reminders_sent: Json<Vec<String>>,
    pub at_risk_since: Option<NaiveDateTime>,
    pub pending_expires_at: Option<NaiveDateTime>,
    pub renewal_justification: Option<String>,
    pub approved_level: Option<Stored<Level>>,
    pub controls: Json<Vec<StoredControl>>,
    pub assessments: Json<Vec<StoredAssessment>>,
    pub approvals: Json<Vec<StoredApproval>>,
    pub reviews: Json<Vec<StoredReview>>,
    pub control_checks: Json<Vec<StoredCheck>>,
}

impl ExceptionRow {
    pub(crate) fn from_domain(e: &Exception) -> Result<Self, StoreError> {
        let f = &e.fields;
        Ok(Self {
            id: Stored(e.id),
            key_num: count("key", e.key.number())?,
            title: f.title.clone(),
            category: Stored(f.category),
            policy_id: f.policy_id.clone(),
            control_ids: Json(f.control_ids.clone()),
            assets: Json(f.assets.clone()),
            business_unit: f.business_unit.clone(),
            justification: f.justification.clone(),
            business_impact: f.business_impact.clone(),
            requester: Stored(e.requester.clone()),
            on_behalf_of: e.on_behalf_of.clone().map(Stored),
            risk_owner: Stored(f.risk_owner.clone()),
            priority: Stored(f.priority),
            starts_at: f.starts_at.map(naive),
            expires_at: f.expires_at.map(naive),
            remediation_plan: f.remediation_plan.clone(),
            remediation_due: f.remediation_due,
            external_refs: Json(f.external_refs.clone()),
            tags: Json(f.tags.clone()),
            status: Stored(e.status()),
            status_reason: e.status_reason.map(Stored),
            round: small("round", e.round)?,
            version: count("version", e.version)?,
            chronic: e.chronic,
            emergency: e.emergency,
            at_risk: e.at_risk,
            residual_level: e.risk().map(|r| Stored(r.residual_level())),
            search_text: format!("{}\n{}", f.title, f.justification).to_lowercase(),
            created_at: naive(e.created_at),
            updated_at: naive(e.updated_at),
            submitted_at: e.submitted_at.map(naive),
            approved_at: e.approved_at.map(naive),
            closed_at: e.closed_at.map(naive),
            next_review_at: e.next_review_at.map(naive),
            next_due_at: e.next_due_at.map(naive),
            escalated_at: e.escalated_at.map(naive),
            review_notified_at: e.review_notified_at.map(naive),
            reminders_sent: Json(e.reminders_sent.clone()),
            at_risk_since: e.at_risk_since.map(naive),
            pending_expires_at: e.pending_expires_at.map(naive),
            renewal_justification: e.renewal_justification.clone(),
            approved_level: e.approved_level.map(Stored),
            controls: Json(e.controls.iter().map(StoredControl::from_domain).collect()),
            assessments: Json(e.assessments.iter().map(StoredAssessment::from_domain).collect()),
            approvals: Json(e.approvals.iter().map(StoredApproval::from_domain).collect()),
            reviews: Json(e.reviews.iter().map(StoredReview::from_domain).collect()),
            control_checks: Json(e.control_checks.iter().map(StoredCheck::from_domain).collect()),
        })
    }

    pub(crate) fn into_domain(self) -> Result<Exception, StoreError> {
        let fields = Fields {
            title: self.title,
            category: self.category.0,
            policy_id: self.policy_id,
            control_ids: self.control_ids.0,
            assets: self.assets.0,
            business_unit: self.business_unit,
            justification: self.justification,
            business_impact: self.business_impact,
            risk_owner: self.risk_owner.0,
            priority: self.priority.0,
            starts_at: self.starts_at.map(utc),
            expires_at: self.expires_at.map(utc),
            remediation_plan: self.remediation_plan,
            remediation_due: self.remediation_due,
            external_refs: self.external_refs.0,
            tags: self.tags.0,
        };
        let key = u64::try_from(self.key_num).ok().and_then(ExceptionKey::new);
        let record = Record {
            id: self.id.0,
            key: key.ok_or_else(|| StoreError::corrupt(format!("key {}", self.key_num)))?,
            fields,
            requester: self.requester.0,
            on_behalf_of: self.on_behalf_of.map(|s| s.0),
            status_reason: self.status_reason.map(|r| r.0),
            round: u32::try_from(self.round).map_err(StoreError::corrupt)?,
            version: u64::try_from(self.version).map_err(StoreError::corrupt)?,
            chronic: self.chronic,
            emergency: self.emergency,
            at_risk: self.at_risk,
            assessments: children(self.assessments.0, StoredAssessment::into_domain)?,
            controls: children(self.controls.0, StoredControl::into_domain)?,
            approvals: children(self.approvals.0, StoredApproval::into_domain)?,
            created_at: utc(self.created_at),
            updated_at: utc(self.updated_at),
            submitted_at: self.submitted_at.map(utc),
            approved_at: self.approved_at.map(utc),
            closed_at: self.closed_at.map(utc),
            next_review_at: self.next_review_at.map(utc),
            reviews: children(self.reviews.0, StoredReview::into_domain)?,
            control_checks: children(self.control_checks.0, StoredCheck::into_domain)?,
            escalated_at: self.escalated_at.map(utc),
            review_notified_at: self.review_notified_at.map(utc),
            reminders_sent: self.reminders_sent.0,
            at_risk_since: self.at_risk_since.map(utc),
            pending_expires_at: self.pending_expires_at.map(utc),
            renewal_justification: self.renewal_justification,
            approved_level: self.approved_level.map(|l| l.0),
            next_due_at: self.next_due_at.map(utc),
        };
        Ok(Exception::restore(self.status.0, record))
    }
}

/// An audit event as stored.
#[derive(Queryable, Selectable, Debug, Clone)]
#[diesel(table_name = audit_events)]
pub(crate) struct AuditRow {
    pub seq: i64,
    pub exception_id: String,
    pub action: String,
    pub actor_subject: String,
    pub actor_roles: String,
    pub on_behalf_of: Option<String>,
    pub at: NaiveDateTime,
    pub from_status: Option<String>,
    pub to_status: String,
    pub changes: String,
    pub request_id: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRow {
    /// The event as stored, verbatim: nothing is parsed but the JSON columns, and a JSON
    /// column that no longer parses is kept as its text, so that the chain, not a 500,
    /// reports a tampered row.
    pub(crate) fn into_domain(self) -> Event {
        let roles = serde_json::from_str::<Vec<String>>(&self.actor_roles).unwrap_or_else(|_| vec![self.actor_roles]);
        let changes = serde_json::from_str(&self.changes).unwrap_or(serde_json::Value::String(self.changes));
        Event {
            seq: self.seq,
            entry: Entry {
                exception_id: self.exception_id,
                action: self.action,
                actor: self.actor_subject,
                roles,
                on_behalf_of: self.on_behalf_of,
                at: utc(self.at),
                from_status: self.from_status,
                to_status: self.to_status,
                changes,
                request_id: self.request_id,
            },
            prev_hash: self.prev_hash,
            hash: self.hash,
        }
    }
}

/// An audit event to append, with its integration event's type and id when it has one.
/// `None` is written as NULL, so that SQLite takes many rows in one INSERT.
#[derive(Insertable, Serialize, Debug)]
#[diesel(table_name = audit_events, treat_none_as_default_value = false)]
pub(crate) struct NewAuditRow {
    pub exception_id: String,
    pub action: String,
    pub actor_subject: String,
    pub actor_roles: String,
    pub on_behalf_of: Option<String>,
    pub at: NaiveDateTime,
    pub from_status: Option<String>,
    pub to_status: String,
    pub changes: String,
    pub request_id: Option<String>,
    pub prev_hash: String,
    pub hash: String,
    pub event_type: Option<String>,
    pub event_id: Option<String>,
    /// For an integration event: the exception's row after the change, as JSON.
    pub snapshot: Option<String>,
}

impl NewAuditRow {
    /// The row for `entry`, which follows `prev_hash`; an integration event carries
    /// `snapshot`.
    pub(crate) fn from_domain(
        entry: &Entry,
        prev_hash: String,
        event: Option<(String, String)>,
        snapshot: Option<&str>,
    ) -> Result<Self, StoreError> {
        let hash = entry.hash(&prev_hash);
        let (event_type, event_id) = event.unzip();
        Ok(Self {
            exception_id: entry.exception_id.clone(),
            action: entry.action.clone(),
            actor_subject: entry.actor.clone(),
            actor_roles: serde_json::to_string(&entry.roles).map_err(StoreError::corrupt)?,
            on_behalf_of: entry.on_behalf_of.clone(),
            at: naive(entry.at),
            from_status: entry.from_status.clone(),
            to_status: entry.to_status.clone(),
            changes: entry.changes.to_string(),
            request_id: entry.request_id.clone(),
            prev_hash,
            hash,
            snapshot: event_type.as_ref().and(snapshot).map(str::to_owned),
            event_type,
            event_id,
        })
    }
}

#[derive(Queryable, Selectable, Insertable, Serialize, Debug)]
#[diesel(table_name = idempotency_keys)]
pub(crate) struct IdempotencyRow {
    pub subject: String,
    pub idem_key: String,
    pub request_hash: String,
    pub status: i32,
    pub body: String,
    pub location: Option<String>,
    pub etag: Option<String>,
    pub created_at: NaiveDateTime,
}
