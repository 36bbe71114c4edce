//! The exception record (spec section 1) and its parts, each parsed so that a value in hand
//! obeys its rules, and the one door through which its status changes.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};
use std::ops::{Deref, DerefMut};
use uuid::Uuid;

use crate::error::DomainError;
use crate::ids::{ControlId, ExceptionId, ExceptionKey, Subject};
use crate::kinds::{
    Action, AuditAction, Category, CheckResult, ControlKind, ControlStatus, Effectiveness, EventType, Level, Priority,
    Reason, ReviewOutcome, Role, Status,
};
use crate::lifecycle;
use crate::risk::{Assessment, RiskSnapshot};
use crate::text::{Errors, FieldError, bounded};
use crate::time;

/// A link to a record in another system; `(system, id)` is unique across exceptions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExternalRef {
    /// The other system, e.g. `servicenow`, `jira`.
    pub system: String,
    /// The record's id there.
    pub id: String,
    /// An optional link to it.
    pub url: Option<String>,
}

/// The caller-writable fields of an exception as they arrive: typed, not yet checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldsInput {
    /// See [`Fields::title`].
    pub title: Option<String>,
    /// The kind of deviation.
    pub category: Option<Category>,
    /// Policy deviated from.
    pub policy_id: Option<String>,
    /// Controls deviated from.
    pub control_ids: Option<Vec<String>>,
    /// Assets covered.
    pub assets: Option<Vec<String>>,
    /// Owning business unit.
    pub business_unit: Option<String>,
    /// Why compliance is not feasible.
    pub justification: Option<String>,
    /// What happens without the exception.
    pub business_impact: Option<String>,
    /// The accountable person.
    pub risk_owner: Option<String>,
    /// Drives the approval SLA; default `standard`.
    pub priority: Option<Priority>,
    /// When coverage begins.
    pub starts_at: Option<DateTime<Utc>>,
    /// When coverage ends.
    pub expires_at: Option<DateTime<Utc>>,
    /// How the gap will be fixed.
    pub remediation_plan: Option<String>,
    /// When the fix is due.
    pub remediation_due: Option<NaiveDate>,
    /// Links to other systems.
    pub external_refs: Option<Vec<ExternalRef>>,
    /// Free labels.
    pub tags: Option<Vec<String>>,
}

/// A JSON merge patch (RFC 7396) of the fields: `None` keeps a field, `Some(None)` removes
/// it, `Some(Some(v))` replaces it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldsPatch {
    /// Title.
    pub title: Option<Option<String>>,
    /// Category.
    pub category: Option<Option<Category>>,
    /// Policy.
    pub policy_id: Option<Option<String>>,
    /// Controls deviated from.
    pub control_ids: Option<Option<Vec<String>>>,
    /// Assets.
    pub assets: Option<Option<Vec<String>>>,
    /// Business unit.
    pub business_unit: Option<Option<String>>,
    /// Justification.
    pub justification: Option<Option<String>>,
    /// Business impact.
    pub business_impact: Option<Option<String>>,
    /// Risk owner.
    pub risk_owner: Option<Option<String>>,
    /// Priority.
    pub priority: Option<Option<Priority>>,
    /// Coverage start.
    pub starts_at: Option<Option<DateTime<Utc>>>,
    /// Coverage end.
    pub expires_at: Option<Option<DateTime<Utc>>>,
    /// Remediation plan.
    pub remediation_plan: Option<Option<String>>,
    /// Remediation due date.
    pub remediation_due: Option<Option<NaiveDate>>,
    /// External references.
    pub external_refs: Option<Option<Vec<ExternalRef>>>,
    /// Tags.
    pub tags: Option<Option<Vec<String>>>,
}

/// Calls `$m!` with the names of the caller-writable fields: the one list the structs that
/// walk them field by field share.
macro_rules! each_field {
    ($m:ident) => {
        $m!(
            title,
            category,
            policy_id,
            control_ids,
            assets,
            business_unit,
            justification,
            business_impact,
            risk_owner,
            priority,
            starts_at,
            expires_at,
            remediation_plan,
            remediation_due,
            external_refs,
            tags
        )
    };
}

impl FieldsInput {
    /// These fields with a merge patch applied.
    pub fn patched(mut self, p: FieldsPatch) -> Self {
        macro_rules! apply {
            ($($f:ident),+) => { $(if let Some(v) = p.$f { self.$f = v; })+ };
        }
        each_field!(apply);
        self
    }
}

/// The caller-writable fields of an exception, parsed: every value here obeys section 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Fields {
    /// 3..200 characters.
    pub title: String,
    /// The kind of deviation.
    pub category: Category,
    /// 1..100 characters.
    pub policy_id: String,
    /// 1..50 distinct control ids of 1..100 characters.
    pub control_ids: Vec<String>,
    /// 1..500 distinct asset ids of 1..200 characters.
    pub assets: Vec<String>,
    /// 1..100 characters.
    pub business_unit: String,
    /// 10..10000 characters.
    pub justification: String,
    /// Up to 10000 characters.
    pub business_impact: Option<String>,
    /// The accountable person who reviews the exception.
    pub risk_owner: Subject,
    /// Drives the approval SLA.
    pub priority: Priority,
    /// When coverage begins; `None` means at final approval.
    pub starts_at: Option<DateTime<Utc>>,
    /// When coverage ends; required at submit.
    pub expires_at: Option<DateTime<Utc>>,
    /// Up to 10000 characters.
    pub remediation_plan: Option<String>,
    /// When the fix is due, 1970..9999.
    pub remediation_due: Option<NaiveDate>,
    /// At most 20 unique `(system, id)` links.
    pub external_refs: Vec<ExternalRef>,
    /// Up to 50 distinct labels of 1..100 characters.
    pub tags: Vec<String>,
}

/// The fields that may still change once an exception has been submitted.
pub const EDITABLE_AFTER_SUBMIT: &[&str] = &["tags", "external_refs", "remediation_plan", "remediation_due"];

fn list(
    errors: &mut Errors,
    field: &str,
    raw: Option<&[String]>,
    (min, max): (usize, usize),
    item_max: usize,
) -> Vec<String> {
    let Some(raw) = raw else {
        if min > 0 {
            errors.push(FieldError::new(field, "required", "is required"));
        }
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::with_capacity(raw.len().min(max));
    let mut bad_items = false;
    for (i, item) in raw.iter().enumerate() {
        match errors.take(bounded(&format!("{field}[{i}]"), item, 1, item_max)) {
            Some(v) if !out.contains(&v) => out.push(v),
            Some(_) => {}
            None => bad_items = true,
        }
    }
    if out.len() < min && !bad_items {
        errors.push(FieldError::new(field, "too_few", format!("needs at least {min} item(s)")));
    }
    if raw.len() > max {
        errors.push(FieldError::new(field, "too_many", format!("allows at most {max} items")));
    }
    out
}

fn optional_text(errors: &mut Errors, field: &str, raw: Option<&str>, max: usize) -> Option<String> {
    let v = errors.take(bounded(field, raw?, 0, max))?;
    (!v.is_empty()).then_some(v)
}

fn required<'a, T: ?Sized>(errors: &mut Errors, field: &str, raw: Option<&'a T>) -> Option<&'a T> {
    if raw.is_none() {
        errors.push(FieldError::new(field, "required", "is required"));
    }
    raw
}

fn external_refs(errors: &mut Errors, raw: Option<&[ExternalRef]>) -> Vec<ExternalRef> {
    let raw = raw.unwrap_or_default();
    let mut out: Vec<ExternalRef> = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let system = errors.take(bounded(&format!("external_refs[{i}].system"), &r.system, 1, 50));
        let id = errors.take(bounded(&format!("external_refs[{i}].id"), &r.id, 1, 200));
        let url = match &r.url {
            Some(u)
                if !(u.starts_with("https://") || u.starts_with("http://"))
                    || u.chars().count() > 2000
                    || u.contains(char::is_control) =>
            {
                errors.push(FieldError::new(
                    format!("external_refs[{i}].url"),
                    "invalid_url",
                    "must be an http(s) URL of at most 2000 characters",
                ));
                None
            }
            other => other.clone(),
        };
        if let (Some(system), Some(id)) = (system, id) {
            if out.iter().any(|x| x.system == system && x.id == id) {
                errors.push(FieldError::new(
                    format!("external_refs[{i}]"),
                    "duplicate",
                    "repeats an earlier (system, id) pair",
                ));
            } else {
                out.push(ExternalRef { system, id, url });
            }
        }
    }
    if raw.len() > 20 {
        errors.push(FieldError::new("external_refs", "too_many", "allows at most 20 items"));
    }
    out
}

impl Fields {
    /// Parses every field and reports every invalid one.
    pub fn parse(input: &FieldsInput) -> Result<Self, Vec<FieldError>> {
        let mut e = Errors::default();
        let title = required(&mut e, "title", input.title.as_deref()).and_then(|v| e.take(bounded("title", v, 3, 200)));
        let category = required(&mut e, "category", input.category.as_ref()).copied();
        let policy_id = required(&mut e, "policy_id", input.policy_id.as_deref())
            .and_then(|v| e.take(bounded("policy_id", v, 1, 100)));
        let control_ids = list(&mut e, "control_ids", input.control_ids.as_deref(), (1, 50), 100);
        let assets = list(&mut e, "assets", input.assets.as_deref(), (1, 500), 200);
        let business_unit = required(&mut e, "business_unit", input.business_unit.as_deref())
            .and_then(|v| e.take(bounded("business_unit", v, 1, 100)));
        let justification = required(&mut e, "justification", input.justification.as_deref())
            .and_then(|v| e.take(bounded("justification", v, 10, 10_000)));
        let business_impact = optional_text(&mut e, "business_impact", input.business_impact.as_deref(), 10_000);
        let risk_owner = required(&mut e, "risk_owner", input.risk_owner.as_deref())
            .and_then(|v| e.take(Subject::parse("risk_owner", v)));
        let starts_at = input.starts_at.and_then(|t| e.take(time::moment("starts_at", t)));
        let expires_at = input.expires_at.and_then(|t| e.take(time::moment("expires_at", t)));
        if let (Some(s), Some(x)) = (starts_at, expires_at)
            && x <= s
        {
            e.push(FieldError::new("expires_at", "before_start", "must be after starts_at"));
        }
        let remediation_plan = optional_text(&mut e, "remediation_plan", input.remediation_plan.as_deref(), 10_000);
        let remediation_due = input.remediation_due.and_then(|d| e.take(time::day("remediation_due", d)));
        let external_refs = external_refs(&mut e, input.external_refs.as_deref());
        let tags = list(&mut e, "tags", input.tags.as_deref(), (0, 50), 100);
        let parsed = (|| {
            Some(Self {
                title: title?,
                category: category?,
                policy_id: policy_id?,
                control_ids,
                assets,
                business_unit: business_unit?,
                justification: justification?,
                business_impact,
                risk_owner: risk_owner?,
                priority: input.priority.unwrap_or(Priority::Standard),
                starts_at,
                expires_at,
                remediation_plan,
                remediation_due,
                external_refs,
                tags,
            })
        })();
        e.finish(parsed)
    }

    /// The fields as input again, so that a merge patch can be applied and the result parsed.
    pub fn to_input(&self) -> FieldsInput {
        FieldsInput {
            title: Some(self.title.clone()),
            category: Some(self.category),
            policy_id: Some(self.policy_id.clone()),
            control_ids: Some(self.control_ids.clone()),
            assets: Some(self.assets.clone()),
            business_unit: Some(self.business_unit.clone()),
            justification: Some(self.justification.clone()),
            business_impact: self.business_impact.clone(),
            risk_owner: Some(self.risk_owner.as_str().to_owned()),
            priority: Some(self.priority),
            starts_at: self.starts_at,
            expires_at: self.expires_at,
            remediation_plan: self.remediation_plan.clone(),
            remediation_due: self.remediation_due,
            external_refs: Some(self.external_refs.clone()),
            tags: Some(self.tags.clone()),
        }
    }

    /// The names and values of the fields that differ between `self` and `other`, as
    /// `{field: {from, to}}` for the audit trail.
    pub fn diff(&self, other: &Fields) -> serde_json::Map<String, Value> {
        let mut out = serde_json::Map::new();
        macro_rules! cmp {
            ($($f:ident),+) => {
                $(if self.$f != other.$f {
                    out.insert(stringify!($f).to_owned(), json!({"from": self.$f, "to": other.$f}));
                })+
            };
        }
        each_field!(cmp);
        out
    }
}

/// How often a verified control must be checked: 1..365 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckInterval(u16);

impl CheckInterval {
    /// The longest interval, in days.
    pub const MAX_DAYS: u16 = 365;

    /// Parses a number of days.
    pub fn parse(field: &str, days: i64) -> Result<Self, FieldError> {
        u16::try_from(days)
            .ok()
            .filter(|d| (1..=Self::MAX_DAYS).contains(d))
            .map(Self)
            .ok_or_else(|| FieldError::new(field, "out_of_range", "must be a whole number of days from 1 to 365"))
    }

    /// The interval in days.
    pub fn days(self) -> u16 {
        self.0
    }
}

/// A compensating control as a caller proposes it: typed, not yet checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlInput {
    /// What it is.
    pub description: String,
    /// How it acts.
    pub kind: ControlKind,
    /// How much it reduces risk once verified.
    pub effectiveness: Effectiveness,
    /// Re-check interval in days, if the control must be checked periodically.
    pub check_every: Option<i64>,
}

/// A compensating control ready to be added: every value checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlSpec {
    /// 3..2000 characters.
    pub description: String,
    /// How it acts.
    pub kind: ControlKind,
    /// How much it reduces risk once verified.
    pub effectiveness: Effectiveness,
    /// Re-check interval, if any.
    pub check_every: Option<CheckInterval>,
}

impl ControlInput {
    /// Parses it; errors are named relative to the control (`description`, `check_every`).
    pub fn parse(&self) -> Result<ControlSpec, Vec<FieldError>> {
        let mut e = Errors::default();
        let description = e.take(bounded("description", &self.description, 3, 2000));
        let check_every = match self.check_every {
            Some(d) => e.take(CheckInterval::parse("check_every", d)).map(Some),
            None => Some(None),
        };
        let spec = (|| {
            Some(ControlSpec {
                description: description?,
                kind: self.kind,
                effectiveness: self.effectiveness,
                check_every: check_every?,
            })
        })();
        e.finish(spec)
    }
}

/// A compensating control (spec section 2).
#[derive(Debug, Clone, PartialEq)]
pub struct Control {
    /// Its id.
    pub id: ControlId,
    /// What it is; 3..2000 characters.
    pub description: String,
    /// How it acts.
    pub kind: ControlKind,
    /// How much it reduces risk when verified.
    pub effectiveness: Effectiveness,
    /// Where it stands.
    pub status: ControlStatus,
    /// Evidence for its status.
    pub evidence: Option<String>,
    /// Who verified it.
    pub verified_by: Option<Subject>,
    /// When it was verified.
    pub verified_at: Option<DateTime<Utc>>,
    /// When it was added.
    pub created_at: DateTime<Utc>,
    /// A verified control must be re-checked this often, or it stops reducing risk.
    pub check_every: Option<CheckInterval>,
    /// The last passing check (or verification).
    pub last_checked_at: Option<DateTime<Utc>>,
}

impl Control {
    /// A new, `proposed` control.
    pub fn new(id: ControlId, spec: ControlSpec, now: DateTime<Utc>) -> Self {
        Self {
            id,
            description: spec.description,
            kind: spec.kind,
            effectiveness: spec.effectiveness,
            status: ControlStatus::Proposed,
            evidence: None,
            verified_by: None,
            verified_at: None,
            created_at: time::truncate(now),
            check_every: spec.check_every,
            last_checked_at: None,
        }
    }

    /// When the next check is due, for a verified control that must be checked. A moment
    /// beyond the calendar's end is never due.
    pub fn check_due_at(&self) -> Option<DateTime<Utc>> {
        let every = self.check_every?;
        if self.status != ControlStatus::Verified {
            return None;
        }
        let last = self.last_checked_at.max(self.verified_at).unwrap_or(self.created_at);
        time::add(last, time::days(u32::from(every.days())))
    }

    /// Only a verified control whose check is not overdue reduces risk.
    pub fn reduces_risk(&self, now: DateTime<Utc>) -> bool {
        self.status == ControlStatus::Verified && self.check_due_at().is_none_or(|due| now < due)
    }

    /// Verified but its check is overdue, or failed: it no longer does what it was trusted for.
    pub fn is_failing(&self, now: DateTime<Utc>) -> bool {
        self.status == ControlStatus::Failed || (self.status == ControlStatus::Verified && !self.reduces_risk(now))
    }
}

/// One approver's decision for one required level, with the risk as it stood then.
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    /// Its id.
    pub id: Uuid,
    /// The round it belongs to.
    pub round: u32,
    /// The required role it satisfies.
    pub role: Role,
    /// Who approved.
    pub approver: Subject,
    /// Optional remark.
    pub comment: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
    /// The risk accepted.
    pub risk: RiskSnapshot,
    /// No longer counts: the exception was returned, or re-assessed at a higher level.
    pub superseded: bool,
    /// The fingerprint of the approval policy in force when it was given
    /// ([`crate::ApprovalPolicy::fingerprint`]); `None` for approvals recorded before Leeway
    /// kept it.
    pub policy: Option<String>,
}

/// A periodic review (spec section 4).
#[derive(Debug, Clone, PartialEq)]
pub struct Review {
    /// Its id.
    pub id: Uuid,
    /// The round it happened in.
    pub round: u32,
    /// The risk owner or analyst who reviewed.
    pub reviewer: Subject,
    /// When.
    pub at: DateTime<Utc>,
    /// Are the compensating controls still effective?
    pub controls_effective: bool,
    /// Is the justification still valid?
    pub justification_valid: bool,
    /// Is there now a better option than the exception?
    pub better_option_available: bool,
    /// Continue or revoke.
    pub outcome: ReviewOutcome,
    /// Remark.
    pub comment: Option<String>,
}

/// One check of a compensating control.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlCheck {
    /// Its id.
    pub id: Uuid,
    /// The control checked.
    pub control_id: ControlId,
    /// Pass or fail.
    pub result: CheckResult,
    /// What was seen.
    pub evidence: String,
    /// Who checked.
    pub checker: Subject,
    /// When.
    pub at: DateTime<Utc>,
}

/// Everything about an exception but its status, which only [`Exception::enter`] changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Immutable id.
    pub id: ExceptionId,
    /// Human-friendly key.
    pub key: ExceptionKey,
    /// Caller-writable fields.
    pub fields: Fields,
    /// Who asked (the token's subject).
    pub requester: Subject,
    /// The person an integration asked for.
    pub on_behalf_of: Option<Subject>,
    /// Why the exception ended by itself or by a review.
    pub status_reason: Option<Reason>,
    /// 1, then +1 per round (renewal, or failed controls).
    pub round: u32,
    /// +1 on every change; the ETag.
    pub version: u64,
    /// Repeat of earlier exceptions on the same asset and control.
    pub chronic: bool,
    /// Break-glass exception.
    pub emergency: bool,
    /// A control failed or its check is overdue.
    pub at_risk: bool,
    /// Every assessment, oldest first; the last is the current one.
    pub assessments: Vec<Assessment>,
    /// Compensating controls.
    pub controls: Vec<Control>,
    /// Every approval of every round.
    pub approvals: Vec<Approval>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Last submit.
    pub submitted_at: Option<DateTime<Utc>>,
    /// Final approval (of the last completed round).
    pub approved_at: Option<DateTime<Utc>>,
    /// Reached a terminal state.
    pub closed_at: Option<DateTime<Utc>>,
    /// Next periodic review.
    pub next_review_at: Option<DateTime<Utc>>,
    /// Periodic reviews, oldest first.
    pub reviews: Vec<Review>,
    /// Control checks, oldest first.
    pub control_checks: Vec<ControlCheck>,
    /// When the approval SLA breach was escalated (once).
    pub escalated_at: Option<DateTime<Utc>>,
    /// The `next_review_at` for which `review_due` was already emitted.
    pub review_notified_at: Option<DateTime<Utc>>,
    /// Expiry reminders already emitted (`30d`, `14d`, `75pct`), for the current expiry.
    pub reminders_sent: Vec<String>,
    /// When the exception was flagged at risk (the clock of `controls_failed`).
    pub at_risk_since: Option<DateTime<Utc>>,
    /// The expiry a renewal round or an emergency ratification will set when approved.
    pub pending_expires_at: Option<DateTime<Utc>>,
    /// The fresh justification of the current renewal round.
    pub renewal_justification: Option<String>,
    /// The earliest moment a time rule may change this exception (the scheduler's index).
    pub next_due_at: Option<DateTime<Utc>>,
    /// The residual level the last completed round's approvals accepted.
    pub approved_level: Option<Level>,
}

impl Record {
    /// A record as creation leaves it: round 1, version 1, nothing decided.
    pub fn new(
        id: ExceptionId,
        key: ExceptionKey,
        fields: Fields,
        requester: Subject,
        on_behalf_of: Option<Subject>,
        now: DateTime<Utc>,
    ) -> Self {
        let now = time::truncate(now);
        Self {
            id,
            key,
            fields,
            requester,
            on_behalf_of,
            status_reason: None,
            round: 1,
            version: 1,
            chronic: false,
            emergency: false,
            at_risk: false,
            assessments: Vec::new(),
            controls: Vec::new(),
            approvals: Vec::new(),
            created_at: now,
            updated_at: now,
            submitted_at: None,
            approved_at: None,
            closed_at: None,
            next_review_at: None,
            reviews: Vec::new(),
            control_checks: Vec::new(),
            escalated_at: None,
            review_notified_at: None,
            reminders_sent: Vec::new(),
            at_risk_since: None,
            pending_expires_at: None,
            renewal_justification: None,
            next_due_at: None,
            approved_level: None,
        }
    }

    /// The current assessment, if any.
    pub fn risk(&self) -> Option<&Assessment> {
        self.assessments.last()
    }

    /// Whether `subject` is this exception's requester or the person it was requested for.
    pub fn is_requester(&self, subject: &Subject) -> bool {
        &self.requester == subject || self.on_behalf_of.as_ref() == Some(subject)
    }

    /// The approvals that count in the current round.
    pub fn current_approvals(&self) -> impl Iterator<Item = &Approval> {
        self.approvals.iter().filter(move |a| a.round == self.round && !a.superseded)
    }

    /// The effectiveness of the controls that reduce risk at `now`: verified, check not due.
    pub fn effective_controls(&self, now: DateTime<Utc>) -> impl Iterator<Item = Effectiveness> + '_ {
        self.controls.iter().filter(move |c| c.reduces_risk(now)).map(|c| c.effectiveness)
    }
}

/// One thing that happened to an exception: one audit event, and an integration event when
/// `event` is set.
#[derive(Debug, Clone, PartialEq)]
pub struct Happening {
    /// What the audit trail records.
    pub action: AuditAction,
    /// The table row that moved the status, for a change of status.
    pub row: Option<Action>,
    /// State before (`None` at creation).
    pub from: Option<Status>,
    /// State after.
    pub to: Status,
    /// What changed, as JSON.
    pub changes: Value,
    /// The integration event, if integrations care.
    pub event: Option<EventType>,
    /// True when time, not the caller, caused it.
    pub by_system: bool,
}

/// The exception aggregate: the record and its status.
#[derive(Debug, Clone, PartialEq)]
pub struct Exception {
    status: Status,
    record: Record,
}

impl Deref for Exception {
    type Target = Record;
    fn deref(&self) -> &Record {
        &self.record
    }
}

impl DerefMut for Exception {
    fn deref_mut(&mut self) -> &mut Record {
        &mut self.record
    }
}

impl Exception {
    /// A new exception: a `draft`, with the happening that records its creation.
    pub fn create(record: Record) -> (Self, Happening) {
        let changes = json!({"key": record.key.to_string(), "title": record.fields.title});
        let e = Self { status: Status::Draft, record };
        let created = Happening {
            action: AuditAction::Created,
            row: None,
            from: None,
            to: Status::Draft,
            changes,
            event: Some(EventType::Created),
            by_system: false,
        };
        (e, created)
    }

    /// An exception as it was stored: loading is not a change of status.
    pub fn restore(status: Status, record: Record) -> Self {
        Self { status, record }
    }

    /// The stored status; [`Exception::effective_status`] is the one to report.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The only way a status changes: the lifecycle table must lead from the current state to
    /// `to` by `row`. Entering a terminal state stamps `closed_at` with `at`.
    pub(crate) fn enter(
        &mut self,
        row: Action,
        to: Status,
        at: DateTime<Utc>,
        action: AuditAction,
        changes: Value,
        event: Option<EventType>,
    ) -> Result<Happening, DomainError> {
        let from = self.status;
        if !lifecycle::leads_to(from, row).contains(&to) {
            return Err(DomainError::InvalidTransition {
                action: row,
                current: from,
                allowed: lifecycle::human_actions(from),
            });
        }
        self.status = to;
        if to.is_terminal() && !from.is_terminal() {
            self.record.closed_at = Some(time::truncate(at));
        }
        Ok(Happening { action, row: Some(row), from: Some(from), to, changes, event, by_system: false })
    }

    /// Something that happened without a change of status.
    pub(crate) fn note(&self, action: AuditAction, changes: Value, event: Option<EventType>) -> Happening {
        Happening { action, row: None, from: Some(self.status), to: self.status, changes, event, by_system: false }
    }

    /// The status to report at `now`: an approved exception whose start has come is active;
    /// a covering one past its expiry is expired. Exact without any background job.
    pub fn effective_status(&self, now: DateTime<Utc>) -> Status {
        let expired = self.fields.expires_at.is_some_and(|x| now >= x);
        match self.status {
            Status::Approved | Status::Active | Status::RenewalPending if expired => Status::Expired,
            Status::Approved if self.fields.starts_at.is_none_or(|s| s <= now) => Status::Active,
            other => other,
        }
    }

    /// Whether the exception permits the deviation at `now`: active or renewal pending, and
    /// between `starts_at` and `expires_at`.
    pub fn is_covering(&self, now: DateTime<Utc>) -> bool {
        matches!(self.effective_status(now), Status::Active | Status::RenewalPending)
            && self.fields.starts_at.is_none_or(|s| s <= now)
            && self.fields.expires_at.is_some_and(|x| now < x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> FieldsInput {
        FieldsInput {
            title: Some("Legacy VPN".into()),
            category: Some(Category::MfaBypass),
            policy_id: Some("POL-1".into()),
            control_ids: Some(vec!["AC-2".into()]),
            assets: Some(vec!["vpn-01".into()]),
            business_unit: Some("payments".into()),
            justification: Some("No MFA until the upgrade".into()),
            risk_owner: Some("erin".into()),
            ..FieldsInput::default()
        }
    }

    #[test]
    fn every_bad_field_is_named_and_nothing_is_returned() {
        let mut bad = input();
        bad.title = Some(" ab ".into());
        bad.remediation_due = NaiveDate::from_ymd_opt(-262_143, 1, 1);
        bad.tags = Some(vec!["a\0b".into()]);
        let fields: Vec<String> = Fields::parse(&bad).unwrap_err().into_iter().map(|f| f.field).collect();
        assert_eq!(fields, ["title", "remediation_due", "tags[0]"]);
        assert!(Fields::parse(&input()).is_ok());
    }

    #[test]
    fn a_control_out_of_range_is_refused_whole() {
        let c = |d| ControlInput {
            description: "Allow-list".into(),
            kind: ControlKind::Preventive,
            effectiveness: Effectiveness::High,
            check_every: Some(d),
        };
        for bad in [0, 366, i64::from(i32::MAX), i64::MAX, -1] {
            let err = c(bad).parse().unwrap_err();
            assert_eq!((err[0].field.as_str(), err[0].code), ("check_every", "out_of_range"), "{bad}");
        }
        assert_eq!(c(365).parse().unwrap().check_every.map(CheckInterval::days), Some(365));
    }

    #[test]
    fn a_patch_keeps_removes_and_replaces() {
        let p = FieldsPatch {
            title: Some(Some("New title".into())),
            business_impact: Some(None),
            ..FieldsPatch::default()
        };
        let mut base = input();
        base.business_impact = Some("impact".into());
        let patched = base.clone().patched(p);
        assert_eq!(patched.title.as_deref(), Some("New title"));
        assert_eq!(patched.business_impact, None);
        assert_eq!(patched.assets, base.assets);
    }
}
