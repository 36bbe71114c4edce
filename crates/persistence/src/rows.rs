//! Row structs, private to this crate, and their conversion to and from the domain.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use leeway_domain::audit::{Entry, Event};
use leeway_domain::ids::{ControlId, ExceptionId, ExceptionKey, Subject};
use leeway_domain::kinds::{
    Category, CheckResult, ControlKind, ControlStatus, Effectiveness, Level, MethodKind, Priority, Reason,
    ReviewOutcome, Role, Status,
};
use leeway_domain::record::{Approval, CheckInterval, Control, ControlCheck, Exception, Fields, Record, Review};
use leeway_domain::risk::{Assessment, Method, RiskSnapshot, Score};
use uuid::Uuid;

use crate::error::StoreError;
use crate::schema::*;

pub(crate) fn naive(t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc()
}

pub(crate) fn utc(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

fn parse<T>(what: &str, v: &str, f: impl Fn(&str) -> Option<T>) -> Result<T, StoreError> {
    f(v).ok_or_else(|| StoreError::corrupt(format!("{what} {v:?}")))
}

fn uuid(v: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(v).map_err(StoreError::corrupt)
}

fn json_list<T: serde::de::DeserializeOwned>(v: &str) -> Result<T, StoreError> {
    serde_json::from_str(v).map_err(StoreError::corrupt)
}

fn score(v: i32) -> Result<Score, StoreError> {
    u32::try_from(v).map(Score).map_err(|_| StoreError::corrupt(format!("score {v}")))
}

fn subject(field: &str, v: &str) -> Result<Subject, StoreError> {
    Subject::parse(field, v).map_err(|e| StoreError::corrupt(format!("{field}: {}", e.message)))
}

fn count(what: &str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::corrupt(format!("{what} {v} does not fit a BIGINT")))
}

fn small(what: &str, v: u32) -> Result<i32, StoreError> {
    i32::try_from(v).map_err(|_| StoreError::corrupt(format!("{what} {v} does not fit an INTEGER")))
}

#[derive(Queryable, Selectable, Insertable, AsChangeset, Debug, Clone)]
#[diesel(table_name = exceptions, treat_none_as_null = true)]
pub(crate) struct ExceptionRow {
    pub id: String,
    pub key_num: i64,
    pub title: String,
    pub category: String,
    pub policy_id: String,
    pub control_ids: String,
    pub assets: String,
    pub business_unit: String,
    pub justification: String,
    pub business_impact: Option<String>,
    pub requester: String,
    pub on_behalf_of: Option<String>,
    pub risk_owner: String,
    pub priority: String,
    pub starts_at: Option<NaiveDateTime>,
    pub expires_at: Option<NaiveDateTime>,
    pub remediation_plan: Option<String>,
    pub remediation_due: Option<chrono::NaiveDate>,
    pub external_refs: String,
    pub tags: String,
    pub status: String,
    pub status_reason: Option<String>,
    pub round: i32,
    pub version: i64,
    pub chronic: bool,
    pub emergency: bool,
    pub at_risk: bool,
    pub residual_level: Option<String>,
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
    pub reminders_sent: String,
    pub at_risk_since: Option<NaiveDateTime>,
    pub pending_expires_at: Option<NaiveDateTime>,
    pub renewal_justification: Option<String>,
    pub approved_level: Option<String>,
}

impl ExceptionRow {
    pub(crate) fn from_domain(e: &Exception) -> Result<Self, StoreError> {
        let f = &e.fields;
        Ok(Self {
            id: e.id.0.to_string(),
            key_num: count("key", e.key.number())?,
            title: f.title.clone(),
            category: f.category.as_str().to_owned(),
            policy_id: f.policy_id.clone(),
            control_ids: json(&f.control_ids)?,
            assets: json(&f.assets)?,
            business_unit: f.business_unit.clone(),
            justification: f.justification.clone(),
            business_impact: f.business_impact.clone(),
            requester: e.requester.as_str().to_owned(),
            on_behalf_of: e.on_behalf_of.as_ref().map(|s| s.as_str().to_owned()),
            risk_owner: f.risk_owner.as_str().to_owned(),
            priority: f.priority.as_str().to_owned(),
            starts_at: f.starts_at.map(naive),
            expires_at: f.expires_at.map(naive),
            remediation_plan: f.remediation_plan.clone(),
            remediation_due: f.remediation_due,
            external_refs: json(&f.external_refs)?,
            tags: json(&f.tags)?,
            status: e.status().as_str().to_owned(),
            status_reason: e.status_reason.map(|r| r.as_str().to_owned()),
            round: small("round", e.round)?,
            version: count("version", e.version)?,
            chronic: e.chronic,
            emergency: e.emergency,
            at_risk: e.at_risk,
            residual_level: e.risk().map(|r| r.residual_level().as_str().to_owned()),
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
            reminders_sent: json(&e.reminders_sent)?,
            at_risk_since: e.at_risk_since.map(naive),
            pending_expires_at: e.pending_expires_at.map(naive),
            renewal_justification: e.renewal_justification.clone(),
            approved_level: e.approved_level.map(|l| l.as_str().to_owned()),
        })
    }

    pub(crate) fn into_domain(self, children: Children) -> Result<Exception, StoreError> {
        let Children { assessments, controls, approvals, reviews, control_checks } = children;
        let fields = Fields {
            title: self.title,
            category: parse("category", &self.category, Category::parse)?,
            policy_id: self.policy_id,
            control_ids: json_list(&self.control_ids)?,
            assets: json_list(&self.assets)?,
            business_unit: self.business_unit,
            justification: self.justification,
            business_impact: self.business_impact,
            risk_owner: subject("risk_owner", &self.risk_owner)?,
            priority: parse("priority", &self.priority, Priority::parse)?,
            starts_at: self.starts_at.map(utc),
            expires_at: self.expires_at.map(utc),
            remediation_plan: self.remediation_plan,
            remediation_due: self.remediation_due,
            external_refs: json_list(&self.external_refs)?,
            tags: json_list(&self.tags)?,
        };
        let key = u64::try_from(self.key_num).ok().and_then(ExceptionKey::new);
        let record = Record {
            id: ExceptionId(uuid(&self.id)?),
            key: key.ok_or_else(|| StoreError::corrupt(format!("key {}", self.key_num)))?,
            fields,
            requester: subject("requester", &self.requester)?,
            on_behalf_of: self.on_behalf_of.as_deref().map(|s| subject("on_behalf_of", s)).transpose()?,
            status_reason: self
                .status_reason
                .as_deref()
                .map(|r| parse("status reason", r, Reason::parse))
                .transpose()?,
            round: u32::try_from(self.round).map_err(StoreError::corrupt)?,
            version: u64::try_from(self.version).map_err(StoreError::corrupt)?,
            chronic: self.chronic,
            emergency: self.emergency,
            at_risk: self.at_risk,
            assessments,
            controls,
            approvals,
            created_at: utc(self.created_at),
            updated_at: utc(self.updated_at),
            submitted_at: self.submitted_at.map(utc),
            approved_at: self.approved_at.map(utc),
            closed_at: self.closed_at.map(utc),
            next_review_at: self.next_review_at.map(utc),
            reviews,
            control_checks,
            escalated_at: self.escalated_at.map(utc),
            review_notified_at: self.review_notified_at.map(utc),
            reminders_sent: json_list(&self.reminders_sent)?,
            at_risk_since: self.at_risk_since.map(utc),
            pending_expires_at: self.pending_expires_at.map(utc),
            renewal_justification: self.renewal_justification,
            approved_level: self.approved_level.as_deref().map(|l| parse("level", l, Level::parse)).transpose()?,
            next_due_at: self.next_due_at.map(utc),
        };
        Ok(Exception::restore(parse("status", &self.status, Status::parse)?, record))
    }
}

/// An exception's child records, loaded apart from its row.
#[derive(Debug, Default)]
pub(crate) struct Children {
    pub assessments: Vec<Assessment>,
    pub controls: Vec<Control>,
    pub approvals: Vec<Approval>,
    pub reviews: Vec<Review>,
    pub control_checks: Vec<ControlCheck>,
}

/// Lists and references are stored as JSON text.
fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(StoreError::corrupt)
}

#[derive(Queryable, Selectable, Insertable, AsChangeset, Debug, Clone, PartialEq)]
#[diesel(table_name = controls, treat_none_as_null = true)]
pub(crate) struct ControlRow {
    pub id: String,
    pub exception_id: String,
    pub position: i32,
    pub description: String,
    pub kind: String,
    pub effectiveness: String,
    pub status: String,
    pub evidence: Option<String>,
    pub verified_by: Option<String>,
    pub verified_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub check_every_days: Option<i32>,
    pub last_checked_at: Option<NaiveDateTime>,
}

impl ControlRow {
    pub(crate) fn from_domain(exception: &str, position: usize, c: &Control) -> Result<Self, StoreError> {
        Ok(Self {
            id: c.id.0.to_string(),
            exception_id: exception.to_owned(),
            position: i32::try_from(position).map_err(StoreError::corrupt)?,
            description: c.description.clone(),
            kind: c.kind.as_str().to_owned(),
            effectiveness: c.effectiveness.as_str().to_owned(),
            status: c.status.as_str().to_owned(),
            evidence: c.evidence.clone(),
            verified_by: c.verified_by.as_ref().map(|s| s.as_str().to_owned()),
            verified_at: c.verified_at.map(naive),
            created_at: naive(c.created_at),
            check_every_days: c.check_every.map(|d| i32::from(d.days())),
            last_checked_at: c.last_checked_at.map(naive),
        })
    }

    pub(crate) fn into_domain(self) -> Result<Control, StoreError> {
        Ok(Control {
            id: ControlId(uuid(&self.id)?),
            description: self.description,
            kind: parse("control kind", &self.kind, ControlKind::parse)?,
            effectiveness: parse("effectiveness", &self.effectiveness, Effectiveness::parse)?,
            status: parse("control status", &self.status, ControlStatus::parse)?,
            evidence: self.evidence,
            verified_by: self.verified_by.map(|s| subject("verified_by", &s)).transpose()?,
            verified_at: self.verified_at.map(utc),
            created_at: utc(self.created_at),
            check_every: self
                .check_every_days
                .map(|d| CheckInterval::parse("check_every", i64::from(d)).map_err(|e| StoreError::corrupt(e.message)))
                .transpose()?,
            last_checked_at: self.last_checked_at.map(utc),
        })
    }
}

#[derive(Queryable, Selectable, Insertable, Debug, Clone)]
#[diesel(table_name = reviews)]
pub(crate) struct ReviewRow {
    pub id: String,
    pub exception_id: String,
    pub round: i32,
    pub reviewer: String,
    pub reviewed_at: NaiveDateTime,
    pub controls_effective: bool,
    pub justification_valid: bool,
    pub better_option_available: bool,
    pub outcome: String,
    pub comment: Option<String>,
}

impl ReviewRow {
    pub(crate) fn from_domain(exception: &str, r: &Review) -> Result<Self, StoreError> {
        Ok(Self {
            id: r.id.to_string(),
            exception_id: exception.to_owned(),
            round: small("round", r.round)?,
            reviewer: r.reviewer.as_str().to_owned(),
            reviewed_at: naive(r.at),
            controls_effective: r.controls_effective,
            justification_valid: r.justification_valid,
            better_option_available: r.better_option_available,
            outcome: r.outcome.as_str().to_owned(),
            comment: r.comment.clone(),
        })
    }

    pub(crate) fn into_domain(self) -> Result<Review, StoreError> {
        Ok(Review {
            id: uuid(&self.id)?,
            round: u32::try_from(self.round).map_err(StoreError::corrupt)?,
            reviewer: subject("reviewer", &self.reviewer)?,
            at: utc(self.reviewed_at),
            controls_effective: self.controls_effective,
            justification_valid: self.justification_valid,
            better_option_available: self.better_option_available,
            outcome: parse("outcome", &self.outcome, ReviewOutcome::parse)?,
            comment: self.comment,
        })
    }
}

#[derive(Queryable, Selectable, Insertable, Debug, Clone)]
#[diesel(table_name = control_checks)]
pub(crate) struct ControlCheckRow {
    pub id: String,
    pub exception_id: String,
    pub control_id: String,
    pub result: String,
    pub evidence: String,
    pub checker: String,
    pub checked_at: NaiveDateTime,
}

impl ControlCheckRow {
    pub(crate) fn from_domain(exception: &str, c: &ControlCheck) -> Self {
        Self {
            id: c.id.to_string(),
            exception_id: exception.to_owned(),
            control_id: c.control_id.0.to_string(),
            result: c.result.as_str().to_owned(),
            evidence: c.evidence.clone(),
            checker: c.checker.as_str().to_owned(),
            checked_at: naive(c.at),
        }
    }

    pub(crate) fn into_domain(self) -> Result<ControlCheck, StoreError> {
        Ok(ControlCheck {
            id: uuid(&self.id)?,
            control_id: ControlId(uuid(&self.control_id)?),
            result: parse("result", &self.result, CheckResult::parse)?,
            evidence: self.evidence,
            checker: subject("checker", &self.checker)?,
            at: utc(self.checked_at),
        })
    }
}

#[derive(Queryable, Selectable, Insertable, AsChangeset, Debug, Clone, PartialEq)]
#[diesel(table_name = assessments, treat_none_as_null = true)]
pub(crate) struct AssessmentRow {
    pub id: String,
    pub exception_id: String,
    pub round: i32,
    pub method: String,
    pub likelihood: Option<i32>,
    pub impact: Option<i32>,
    pub vector: Option<String>,
    pub inherent_score: i32,
    pub residual_score: i32,
    pub rationale: String,
    pub threat_vectors: String,
    pub assessed_by: String,
    pub assessed_at: NaiveDateTime,
}

impl AssessmentRow {
    pub(crate) fn from_domain(exception: &str, a: &Assessment) -> Result<Self, StoreError> {
        let (likelihood, impact, vector) = match &a.method {
            Method::Matrix { likelihood, impact } => (Some(i32::from(*likelihood)), Some(i32::from(*impact)), None),
            Method::Cvss { vector, .. } => (None, None, Some(vector.clone())),
        };
        Ok(Self {
            id: a.id.to_string(),
            exception_id: exception.to_owned(),
            round: small("round", a.round)?,
            method: a.method.kind().as_str().to_owned(),
            likelihood,
            impact,
            vector,
            inherent_score: small("score", a.inherent_score.0)?,
            residual_score: small("score", a.residual_score.0)?,
            rationale: a.rationale.clone(),
            threat_vectors: json(&a.threat_vectors)?,
            assessed_by: a.assessed_by.as_str().to_owned(),
            assessed_at: naive(a.assessed_at),
        })
    }

    pub(crate) fn into_domain(self) -> Result<Assessment, StoreError> {
        let method =
            match (parse("method", &self.method, MethodKind::parse)?, self.likelihood, self.impact, self.vector) {
                (MethodKind::Matrix, Some(l), Some(i), _) => Method::matrix(i64::from(l), i64::from(i))
                    .map_err(|_| StoreError::corrupt(format!("assessment {} likelihood {l} impact {i}", self.id)))?,
                // the score computed when the vector was assessed stands: a later library
                // version never silently rescores what was accepted
                (MethodKind::Cvss, _, _, Some(vector)) => Method::Cvss { vector, score: score(self.inherent_score)? },
                _ => return Err(StoreError::corrupt(format!("assessment {} has no method values", self.id))),
            };
        Ok(Assessment {
            id: uuid(&self.id)?,
            round: u32::try_from(self.round).map_err(StoreError::corrupt)?,
            method,
            inherent_score: score(self.inherent_score)?,
            residual_score: score(self.residual_score)?,
            rationale: self.rationale,
            threat_vectors: json_list(&self.threat_vectors)?,
            assessed_by: subject("assessed_by", &self.assessed_by)?,
            assessed_at: utc(self.assessed_at),
        })
    }
}

#[derive(Queryable, Selectable, Insertable, AsChangeset, Debug, Clone, PartialEq)]
#[diesel(table_name = approvals, treat_none_as_null = true)]
pub(crate) struct ApprovalRow {
    pub id: String,
    pub exception_id: String,
    pub round: i32,
    pub role: String,
    pub approver: String,
    pub comment: Option<String>,
    pub approved_at: NaiveDateTime,
    pub assessment_id: String,
    pub method: String,
    pub inherent_score: i32,
    pub inherent_level: String,
    pub residual_score: i32,
    pub residual_level: String,
    pub superseded: bool,
}

impl ApprovalRow {
    pub(crate) fn from_domain(exception: &str, a: &Approval) -> Result<Self, StoreError> {
        Ok(Self {
            id: a.id.to_string(),
            exception_id: exception.to_owned(),
            round: small("round", a.round)?,
            role: a.role.as_str().to_owned(),
            approver: a.approver.as_str().to_owned(),
            comment: a.comment.clone(),
            approved_at: naive(a.at),
            assessment_id: a.risk.assessment_id.to_string(),
            method: a.risk.method.as_str().to_owned(),
            inherent_score: small("score", a.risk.inherent_score.0)?,
            inherent_level: a.risk.inherent_level.as_str().to_owned(),
            residual_score: small("score", a.risk.residual_score.0)?,
            residual_level: a.risk.residual_level.as_str().to_owned(),
            superseded: a.superseded,
        })
    }

    pub(crate) fn into_domain(self) -> Result<Approval, StoreError> {
        Ok(Approval {
            id: uuid(&self.id)?,
            round: u32::try_from(self.round).map_err(StoreError::corrupt)?,
            role: parse("role", &self.role, Role::parse)?,
            approver: subject("approver", &self.approver)?,
            comment: self.comment,
            at: utc(self.approved_at),
            risk: RiskSnapshot {
                assessment_id: uuid(&self.assessment_id)?,
                method: parse("method", &self.method, MethodKind::parse)?,
                inherent_score: score(self.inherent_score)?,
                inherent_level: parse("level", &self.inherent_level, Level::parse)?,
                residual_score: score(self.residual_score)?,
                residual_level: parse("level", &self.residual_level, Level::parse)?,
            },
            superseded: self.superseded,
        })
    }
}

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

#[derive(Insertable, Debug)]
#[diesel(table_name = audit_events)]
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

impl NewAuditRow {
    pub(crate) fn from_domain(entry: &Entry, prev_hash: String, hash: String) -> Result<Self, StoreError> {
        Ok(Self {
            exception_id: entry.exception_id.clone(),
            action: entry.action.clone(),
            actor_subject: entry.actor.clone(),
            actor_roles: json(&entry.roles)?,
            on_behalf_of: entry.on_behalf_of.clone(),
            at: naive(entry.at),
            from_status: entry.from_status.clone(),
            to_status: entry.to_status.clone(),
            changes: entry.changes.to_string(),
            request_id: entry.request_id.clone(),
            prev_hash,
            hash,
        })
    }
}

#[derive(Insertable, Debug)]
#[diesel(table_name = outbox)]
pub(crate) struct NewOutboxRow {
    pub id: String,
    pub event_type: String,
    pub exception_id: String,
    pub audit_seq: i64,
    pub payload: String,
    pub created_at: NaiveDateTime,
}

#[derive(Queryable, Selectable, Insertable, Debug)]
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
