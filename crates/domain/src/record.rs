//! The exception record (spec section 1): identifiers, parsed value types and the aggregate.

use chrono::{DateTime, NaiveDate, Utc};
use std::fmt;
use uuid::Uuid;

use crate::error::{DomainError, Errors, FieldError};
use crate::lifecycle::Status;
use crate::risk::{Assessment, Effectiveness, RiskSnapshot};
use crate::role::Role;

/// An exception's immutable identifier (UUID v7, so ids sort by creation time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExceptionId(pub Uuid);

impl fmt::Display for ExceptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The human-friendly key, `EXC-000042`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExceptionKey(pub u64);

impl fmt::Display for ExceptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EXC-{:06}", self.0)
    }
}

impl ExceptionKey {
    /// Parses `EXC-` followed by six or more digits.
    pub fn parse(s: &str) -> Option<Self> {
        let digits = s.strip_prefix("EXC-")?;
        if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().map(Self)
    }
}

/// Either form a caller may use to name an exception.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceptionRef {
    /// By UUID.
    Id(ExceptionId),
    /// By `EXC-` key.
    Key(ExceptionKey),
}

impl ExceptionRef {
    /// Parses a path segment: a UUID or an `EXC-` key.
    pub fn parse(s: &str) -> Option<Self> {
        if let Some(k) = ExceptionKey::parse(s) {
            return Some(Self::Key(k));
        }
        Uuid::parse_str(s).ok().map(|u| Self::Id(ExceptionId(u)))
    }
}

/// A person or service account, as named by the `sub` claim of a token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Subject(String);

impl Subject {
    /// Parses a subject: 1..200 characters after trimming.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        bounded(field, raw, 1, 200).map(Self)
    }
    /// The subject as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Trims `raw` and checks its length in characters.
pub fn bounded(field: &str, raw: &str, min: usize, max: usize) -> Result<String, FieldError> {
    let s = raw.trim();
    let n = s.chars().count();
    if n < min {
        let code = if n == 0 { "required" } else { "too_short" };
        return Err(FieldError::new(field, code, format!("must be at least {min} characters")));
    }
    if n > max {
        return Err(FieldError::new(field, "too_long", format!("must be at most {max} characters")));
    }
    Ok(s.to_owned())
}

macro_rules! enum_str {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v),+];
            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s),+ }
            }
            /// Parses the wire name.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($name::$v),)+ _ => None }
            }
            /// Parses the wire name, or names the field and the allowed values.
            pub fn parse_field(field: &str, s: &str) -> Result<Self, $crate::error::FieldError> {
                Self::parse(s).ok_or_else(|| $crate::error::FieldError::new(field, "invalid_value", format!(
                    "must be one of: {}", Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "))))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use enum_str;

enum_str!(
    /// What kind of deviation the exception is.
    Category {
        /// Multi-factor authentication bypass.
        MfaBypass = "mfa_bypass",
        /// A firewall rule outside policy.
        FirewallRule = "firewall_rule",
        /// A deferred patch.
        PatchDeferral = "patch_deferral",
        /// Encryption below policy.
        Encryption = "encryption",
        /// Unsupported software.
        LegacySoftware = "legacy_software",
        /// Privileges beyond policy.
        ElevatedAccess = "elevated_access",
        /// Third-party access.
        VendorAccess = "vendor_access",
        /// A configuration deviation.
        Configuration = "configuration",
        /// Data handling outside policy.
        DataHandling = "data_handling",
        /// Anything else.
        Other = "other",
    }
);

enum_str!(
    /// Drives the approval SLA.
    Priority {
        /// 5-day SLA.
        Standard = "standard",
        /// 24-hour SLA.
        Urgent = "urgent",
    }
);

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

/// The caller-writable fields of an exception, unparsed, as they arrive.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldsInput {
    /// See [`Fields::title`].
    pub title: Option<String>,
    /// Category wire name.
    pub category: Option<String>,
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
    /// Priority wire name.
    pub priority: Option<String>,
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
    /// When the fix is due.
    pub remediation_due: Option<NaiveDate>,
    /// Unique `(system, id)` links.
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
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
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
    if out.len() > max {
        errors.push(FieldError::new(field, "too_many", format!("allows at most {max} items")));
    }
    out
}

fn optional_text(errors: &mut Errors, field: &str, raw: Option<&str>, max: usize) -> Option<String> {
    let raw = raw?;
    let v = errors.take(bounded(field, raw, 0, max))?;
    (!v.is_empty()).then_some(v)
}

fn required<'a>(errors: &mut Errors, field: &str, raw: Option<&'a str>) -> Option<&'a str> {
    if raw.is_none() {
        errors.push(FieldError::new(field, "required", "is required"));
    }
    raw
}

impl Fields {
    /// Parses every field and reports every invalid one.
    pub fn parse(input: &FieldsInput) -> Result<Self, DomainError> {
        let mut e = Errors::default();
        let title = required(&mut e, "title", input.title.as_deref()).and_then(|v| e.take(bounded("title", v, 3, 200)));
        let category = required(&mut e, "category", input.category.as_deref())
            .and_then(|v| e.take(Category::parse_field("category", v)));
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
        let priority = match input.priority.as_deref() {
            None => Some(Priority::Standard),
            Some(v) => e.take(Priority::parse_field("priority", v)),
        };
        for (name, t) in [("starts_at", input.starts_at), ("expires_at", input.expires_at)] {
            if let Some(t) = t
                && !crate::workflow::plausible(t)
            {
                e.push(FieldError::new(name, "out_of_range", "must be between 1970 and 9999"));
            }
        }
        if let (Some(s), Some(x)) = (input.starts_at, input.expires_at)
            && x <= s
        {
            e.push(FieldError::new("expires_at", "before_start", "must be after starts_at"));
        }
        let remediation_plan = optional_text(&mut e, "remediation_plan", input.remediation_plan.as_deref(), 10_000);
        let mut external_refs: Vec<ExternalRef> = Vec::new();
        for (i, r) in input.external_refs.iter().flatten().enumerate() {
            let system = e.take(bounded(&format!("external_refs[{i}].system"), &r.system, 1, 50));
            let id = e.take(bounded(&format!("external_refs[{i}].id"), &r.id, 1, 200));
            let url = match &r.url {
                Some(u) if !(u.starts_with("https://") || u.starts_with("http://")) || u.len() > 2000 => {
                    e.push(FieldError::new(
                        format!("external_refs[{i}].url"),
                        "invalid_url",
                        "must be an http(s) URL of at most 2000 characters",
                    ));
                    None
                }
                other => other.clone(),
            };
            if let (Some(system), Some(id)) = (system, id) {
                if external_refs.iter().any(|x| x.system == system && x.id == id) {
                    e.push(FieldError::new(
                        format!("external_refs[{i}]"),
                        "duplicate",
                        "repeats an earlier (system, id) pair",
                    ));
                } else {
                    external_refs.push(ExternalRef { system, id, url });
                }
            }
        }
        if external_refs.len() > 20 {
            e.push(FieldError::new("external_refs", "too_many", "allows at most 20 items"));
        }
        let tags = list(&mut e, "tags", input.tags.as_deref(), (0, 50), 100);
        e.finish()?;
        match (title, category, policy_id, business_unit, justification, risk_owner, priority) {
            (
                Some(title),
                Some(category),
                Some(policy_id),
                Some(business_unit),
                Some(justification),
                Some(risk_owner),
                Some(priority),
            ) => Ok(Self {
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
                starts_at: input.starts_at.map(crate::workflow::truncate),
                expires_at: input.expires_at.map(crate::workflow::truncate),
                remediation_plan,
                remediation_due: input.remediation_due,
                external_refs,
                tags,
            }),
            _ => Err(DomainError::field("body", "invalid", "the request is incomplete")),
        }
    }

    /// The fields as input again, so a merge patch can be applied to them and re-parsed.
    pub fn to_input(&self) -> FieldsInput {
        FieldsInput {
            title: Some(self.title.clone()),
            category: Some(self.category.as_str().to_owned()),
            policy_id: Some(self.policy_id.clone()),
            control_ids: Some(self.control_ids.clone()),
            assets: Some(self.assets.clone()),
            business_unit: Some(self.business_unit.clone()),
            justification: Some(self.justification.clone()),
            business_impact: self.business_impact.clone(),
            risk_owner: Some(self.risk_owner.as_str().to_owned()),
            priority: Some(self.priority.as_str().to_owned()),
            starts_at: self.starts_at,
            expires_at: self.expires_at,
            remediation_plan: self.remediation_plan.clone(),
            remediation_due: self.remediation_due,
            external_refs: Some(self.external_refs.clone()),
            tags: Some(self.tags.clone()),
        }
    }

    /// One field's value as JSON, for the audit trail.
    pub fn value_of(&self, name: &str) -> serde_json::Value {
        use serde_json::json;
        match name {
            "title" => json!(self.title),
            "category" => json!(self.category.as_str()),
            "policy_id" => json!(self.policy_id),
            "control_ids" => json!(self.control_ids),
            "assets" => json!(self.assets),
            "business_unit" => json!(self.business_unit),
            "justification" => json!(self.justification),
            "business_impact" => json!(self.business_impact),
            "risk_owner" => json!(self.risk_owner.as_str()),
            "priority" => json!(self.priority.as_str()),
            "starts_at" => json!(self.starts_at),
            "expires_at" => json!(self.expires_at),
            "remediation_plan" => json!(self.remediation_plan),
            "remediation_due" => json!(self.remediation_due),
            "external_refs" => json!(self.external_refs),
            "tags" => json!(self.tags),
            _ => serde_json::Value::Null,
        }
    }

    /// The names of the fields that differ between `self` and `other`.
    pub fn changed(&self, other: &Fields) -> Vec<&'static str> {
        let mut out = Vec::new();
        macro_rules! cmp {
            ($($f:ident),+) => { $(if self.$f != other.$f { out.push(stringify!($f)); })+ };
        }
        cmp!(
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
        );
        out
    }
}

/// A compensating control's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ControlId(pub Uuid);

enum_str!(
    /// How a compensating control acts.
    ControlKind {
        /// Stops the threat.
        Preventive = "preventive",
        /// Notices the threat.
        Detective = "detective",
        /// Repairs after the threat.
        Corrective = "corrective",
    }
);

enum_str!(
    /// Where a compensating control stands; only `verified` reduces risk.
    ControlStatus {
        /// Planned.
        Proposed = "proposed",
        /// In place, not yet checked.
        Implemented = "implemented",
        /// Checked by an analyst who is not the requester.
        Verified = "verified",
        /// Checked and found not working.
        Failed = "failed",
    }
);

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
    /// A verified control must be re-checked this often (days), or it stops reducing risk.
    pub check_every_days: Option<u32>,
    /// The last passing check (or verification).
    pub last_checked_at: Option<DateTime<Utc>>,
}

impl Control {
    /// When the next check is due, for a verified control that must be checked.
    pub fn check_due_at(&self) -> Option<DateTime<Utc>> {
        let every = self.check_every_days?;
        if self.status != ControlStatus::Verified {
            return None;
        }
        let last = self.last_checked_at.max(self.verified_at).unwrap_or(self.created_at);
        Some(last + chrono::Duration::days(i64::from(every)))
    }

    /// Only a verified control whose check is not overdue reduces risk.
    pub fn reduces_risk(&self, now: DateTime<Utc>) -> bool {
        self.status == ControlStatus::Verified && self.check_due_at().is_none_or(|due| now < due)
    }
}

/// A compensating control as a caller proposes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlInput {
    /// What it is.
    pub description: String,
    /// Kind wire name.
    pub kind: String,
    /// Effectiveness wire name.
    pub effectiveness: String,
    /// Re-check interval in days (1..365), if the control must be checked periodically.
    pub check_every_days: Option<u32>,
}

impl ControlInput {
    /// Parses it into a new, `proposed` control.
    pub fn parse(&self, field: &str, id: ControlId, now: DateTime<Utc>) -> Result<Control, Vec<FieldError>> {
        let mut e = Errors::default();
        let description = e.take(bounded(&format!("{field}.description"), &self.description, 3, 2000));
        let kind = e.take(ControlKind::parse_field(&format!("{field}.kind"), &self.kind));
        let effectiveness = e.take(Effectiveness::parse_field(&format!("{field}.effectiveness"), &self.effectiveness));
        if self.check_every_days.is_some_and(|d| !(1..=365).contains(&d)) {
            e.push(FieldError::new(format!("{field}.check_every"), "out_of_range", "must be 1..365 days"));
        }
        match (description, kind, effectiveness) {
            (Some(description), Some(kind), Some(effectiveness)) => Ok(Control {
                id,
                description,
                kind,
                effectiveness,
                status: ControlStatus::Proposed,
                evidence: None,
                verified_by: None,
                verified_at: None,
                created_at: now,
                check_every_days: self.check_every_days,
                last_checked_at: None,
            }),
            _ => match e.finish() {
                Err(DomainError::Invalid(v)) => Err(v),
                _ => Err(Vec::new()),
            },
        }
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
}

enum_str!(
    /// What a periodic review concluded.
    ReviewOutcome {
        /// The exception stays.
        Continue = "continue",
        /// The exception is revoked.
        Revoke = "revoke",
    }
);

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

enum_str!(
    /// The result of a control check.
    CheckResult {
        /// The control works.
        Pass = "pass",
        /// The control does not work.
        Fail = "fail",
    }
);

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

/// The exception aggregate: everything the lifecycle and the policy decide on.
#[derive(Debug, Clone, PartialEq)]
pub struct Exception {
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
    /// Stored status; see [`crate::workflow::effective_status`] for the one to report.
    pub status: Status,
    /// Why the exception reached a terminal state by itself (`approval_timeout`, ...).
    pub status_reason: Option<String>,
    /// 1, then +1 per renewal.
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
    /// Server-maintained timestamps.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Last submit.
    pub submitted_at: Option<DateTime<Utc>>,
    /// Final approval.
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
    /// When the exception was flagged at risk (the 14-day clock of `controls_failed`).
    pub at_risk_since: Option<DateTime<Utc>>,
    /// The expiry a renewal round or an emergency ratification will set when approved.
    pub pending_expires_at: Option<DateTime<Utc>>,
    /// The fresh justification of the current renewal round.
    pub renewal_justification: Option<String>,
    /// The earliest moment a time rule may change this exception (the scheduler's index).
    pub next_due_at: Option<DateTime<Utc>>,
    /// The residual level the last completed round's approvals accepted.
    pub approved_level: Option<crate::risk::Level>,
}

impl Exception {
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
}
