//! Wire types: what callers send and receive. No business logic; conversions only.

use chrono::{DateTime, NaiveDate, Utc};
use leeway_domain::policy::ApprovalPolicy;
use leeway_domain::record::{self, Exception};
use leeway_domain::risk::{Assessment, Method};
use leeway_domain::role::Actor;
use leeway_domain::workflow::{self, Ctx};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use validator::Validate;

/// Declares a wire enum mirroring a domain enum, with conversions both ways.
macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident => $domain:path { $($v:ident),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $(#[allow(missing_docs)] $v),+ }

        impl From<$domain> for $name {
            fn from(v: $domain) -> Self {
                use $domain as D;
                match v { $(D::$v => $name::$v),+ }
            }
        }

        impl From<$name> for $domain {
            fn from(v: $name) -> Self {
                use $domain as D;
                match v { $($name::$v => D::$v),+ }
            }
        }

        impl $name {
            /// The wire name.
            pub fn as_str(self) -> &'static str {
                <$domain>::from(self).as_str()
            }
        }
    };
}

wire_enum!(
    /// The kind of deviation.
    Category => record::Category { MfaBypass, FirewallRule, PatchDeferral, Encryption, LegacySoftware,
        ElevatedAccess, VendorAccess, Configuration, DataHandling, Other }
);
wire_enum!(
    /// Drives the approval SLA: `urgent` 24 hours, `standard` 5 days.
    Priority => record::Priority { Standard, Urgent }
);
wire_enum!(
    /// Lifecycle state, as effective now (time-driven transitions are applied on read).
    Status => leeway_domain::lifecycle::Status { Draft, Submitted, PendingApproval, Approved, Active, RenewalPending,
        Rejected, Withdrawn, Expired, Revoked, Closed }
);
wire_enum!(
    /// An action on an exception.
    Action => leeway_domain::lifecycle::Action { Update, Submit, Return, Assess, Approve, Reject, Withdraw,
        RequestRenewal, Review, Revoke, Close, AddControl, ChangeControl, Activate, Expire, AutoReject }
);
wire_enum!(
    /// A risk level.
    Level => leeway_domain::risk::Level { Low, Medium, High, Critical }
);
wire_enum!(
    /// A role resolved from the token.
    Role => leeway_domain::role::Role { Requester, Analyst, SecurityOfficer, AssetOwner, Ciso, Compliance, Auditor,
        Admin, Integration }
);
wire_enum!(
    /// How a compensating control acts.
    ControlKind => record::ControlKind { Preventive, Detective, Corrective }
);
wire_enum!(
    /// Risk reduction of a verified control: low 10%, medium 25%, high 40%.
    Effectiveness => leeway_domain::risk::Effectiveness { Low, Medium, High }
);
wire_enum!(
    /// Where a control stands; only `verified` reduces risk.
    ControlStatus => record::ControlStatus { Proposed, Implemented, Verified, Failed }
);
wire_enum!(
    /// What a periodic review concluded.
    ReviewOutcome => record::ReviewOutcome { Continue, Revoke }
);
wire_enum!(
    /// The result of a control check.
    CheckResult => record::CheckResult { Pass, Fail }
);
wire_enum!(
    /// The scoring method.
    MethodKind => leeway_domain::risk::MethodKind { Matrix, Cvss }
);

/// A link to a record in another system; `(system, id)` is unique across all exceptions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct ExternalRef {
    /// e.g. `servicenow`, `jira`.
    #[validate(length(min = 1, max = 50))]
    pub system: String,
    /// The record's id there, e.g. `RITM0012345`.
    #[validate(length(min = 1, max = 200))]
    pub id: String,
    /// Optional link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A compensating control proposed with a request or added later.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct NewControl {
    /// What the control is; 3..2000 characters.
    pub description: String,
    /// How it acts.
    #[schema(value_type = ControlKind)]
    pub kind: String,
    /// How much it reduces risk once verified.
    #[schema(value_type = Effectiveness)]
    pub effectiveness: String,
    /// Re-check interval in days (1..365): a verified control whose check is overdue stops
    /// reducing risk.
    #[serde(default)]
    pub check_every: Option<u32>,
}

impl NewControl {
    /// As the domain takes it.
    pub fn to_domain(&self) -> record::ControlInput {
        record::ControlInput {
            description: self.description.clone(),
            kind: self.kind.clone(),
            effectiveness: self.effectiveness.clone(),
            check_every_days: self.check_every,
        }
    }
}

macro_rules! exception_fields {
    ($(#[$m:meta])* $name:ident { $($(#[$em:meta])* $vis:vis $extra:ident : $ety:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, Validate)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// 3..200 characters, trimmed.
            #[serde(default)]
            pub title: Option<String>,
            /// The kind of deviation.
            #[serde(default)]
            #[schema(value_type = Option<Category>)]
            pub category: Option<String>,
            /// The policy deviated from, e.g. `POL-AC-01`; 1..100 characters.
            #[serde(default)]
            pub policy_id: Option<String>,
            /// 1..50 controls deviated from, e.g. `NIST-800-53:AC-2`; de-duplicated.
            #[serde(default)]
            pub control_ids: Option<Vec<String>>,
            /// 1..500 asset identifiers (host names, CMDB CI ids); de-duplicated.
            #[serde(default)]
            pub assets: Option<Vec<String>>,
            /// Owning business unit; 1..100 characters.
            #[serde(default)]
            pub business_unit: Option<String>,
            /// Why compliance is not feasible; 10..10000 characters.
            #[serde(default)]
            pub justification: Option<String>,
            /// What happens without the exception.
            #[serde(default)]
            pub business_impact: Option<String>,
            /// The accountable person who performs periodic reviews.
            #[serde(default)]
            pub risk_owner: Option<String>,
            /// Default `standard`.
            #[serde(default)]
            #[schema(value_type = Option<Priority>)]
            pub priority: Option<String>,
            /// When coverage begins; default: the moment of final approval.
            #[serde(default)]
            pub starts_at: Option<DateTime<Utc>>,
            /// When coverage ends; required at submit; within the residual level's maximum.
            #[serde(default)]
            pub expires_at: Option<DateTime<Utc>>,
            /// How the underlying gap will be fixed.
            #[serde(default)]
            pub remediation_plan: Option<String>,
            /// When the fix is due.
            #[serde(default)]
            pub remediation_due: Option<NaiveDate>,
            /// Links to other systems; at most 20.
            #[serde(default)]
            #[validate(nested)]
            pub external_refs: Option<Vec<ExternalRef>>,
            /// Free labels; at most 50.
            #[serde(default)]
            pub tags: Option<Vec<String>>,
            $($(#[$em])* $vis $extra: $ety,)*
        }

        impl $name {
            /// The record's fields as the domain takes them.
            pub fn fields(&self) -> record::FieldsInput {
                record::FieldsInput {
                    title: self.title.clone(),
                    category: self.category.clone(),
                    policy_id: self.policy_id.clone(),
                    control_ids: self.control_ids.clone(),
                    assets: self.assets.clone(),
                    business_unit: self.business_unit.clone(),
                    justification: self.justification.clone(),
                    business_impact: self.business_impact.clone(),
                    risk_owner: self.risk_owner.clone(),
                    priority: self.priority.clone(),
                    starts_at: self.starts_at,
                    expires_at: self.expires_at,
                    remediation_plan: self.remediation_plan.clone(),
                    remediation_due: self.remediation_due,
                    external_refs: self.external_refs.as_ref().map(|v| v.iter().map(|r| record::ExternalRef {
                        system: r.system.clone(), id: r.id.clone(), url: r.url.clone() }).collect()),
                    tags: self.tags.clone(),
                }
            }
        }
    };
}

exception_fields!(
    /// Create an exception. `title`, `category`, `policy_id`, `control_ids`, `assets`,
    /// `business_unit`, `justification` and `risk_owner` are required; `expires_at` and at
    /// least one control are required at submit. Server-controlled members are refused.
    CreateException {
        /// Compensating controls, each starting `proposed`; at most 50.
        #[serde(default)]
        #[validate(nested)]
        pub controls: Vec<NewControl>,
        /// Submit at once (the answer is then `submitted`).
        #[serde(default)]
        pub submit: bool,
        /// `integration` callers only: the person the request is made for.
        #[serde(default)]
        pub on_behalf_of: Option<String>,
        /// Break-glass (`security_officer` or `ciso` only): active at once for at most the
        /// emergency maximum (72 hours), then ratified by assessment and approvals.
        #[serde(default)]
        pub emergency: bool,
    }
);

exception_fields!(
    /// The writable fields, for a JSON merge patch (RFC 7396): members present replace,
    /// `null` removes. In `draft` every field may change; afterwards only `tags`,
    /// `external_refs`, `remediation_plan` and `remediation_due`.
    ExceptionFields {}
);

impl ExceptionFields {
    /// The current fields, as the base a merge patch applies to.
    pub fn from_domain(f: &record::Fields) -> Self {
        Self {
            title: Some(f.title.clone()),
            category: Some(f.category.as_str().to_owned()),
            policy_id: Some(f.policy_id.clone()),
            control_ids: Some(f.control_ids.clone()),
            assets: Some(f.assets.clone()),
            business_unit: Some(f.business_unit.clone()),
            justification: Some(f.justification.clone()),
            business_impact: f.business_impact.clone(),
            risk_owner: Some(f.risk_owner.to_string()),
            priority: Some(f.priority.as_str().to_owned()),
            starts_at: f.starts_at,
            expires_at: f.expires_at,
            remediation_plan: f.remediation_plan.clone(),
            remediation_due: f.remediation_due,
            external_refs: Some(
                f.external_refs
                    .iter()
                    .map(|r| ExternalRef { system: r.system.clone(), id: r.id.clone(), url: r.url.clone() })
                    .collect(),
            ),
            tags: Some(f.tags.clone()),
        }
    }
}

/// A comment on a lifecycle action.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// Optional remark, kept in the audit trail; at most 5000 characters.
    #[serde(default)]
    #[validate(length(max = 5000))]
    pub comment: Option<String>,
}

/// An approval.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    /// Optional remark; at most 5000 characters.
    #[serde(default)]
    #[validate(length(max = 5000))]
    pub comment: Option<String>,
    /// Which missing level to fill; default: the first missing one (policy order) the
    /// caller holds.
    #[serde(default)]
    pub role: Option<Role>,
}

/// A (re)assessment. `matrix` needs `likelihood` and `impact`; `cvss` needs `vector`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct AssessBody {
    /// The scoring method.
    pub method: MethodKind,
    /// `matrix`: 1 very low .. 5 very high.
    #[serde(default)]
    pub likelihood: Option<i64>,
    /// `matrix`: 1 very low .. 5 very high.
    #[serde(default)]
    pub impact: Option<i64>,
    /// `cvss`: a `CVSS:3.1/...` or `CVSS:4.0/...` vector.
    #[serde(default)]
    pub vector: Option<String>,
    /// Why the analyst scored it so.
    pub rationale: String,
    /// Threats considered.
    #[serde(default)]
    pub threat_vectors: Vec<String>,
    /// A shorter expiry, to fit the residual level's maximum duration.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

impl AssessBody {
    /// The method, with every missing or invalid value named.
    pub fn method(&self) -> Result<Method, Vec<leeway_domain::FieldError>> {
        use leeway_domain::FieldError;
        match self.method {
            MethodKind::Matrix => match (self.likelihood, self.impact) {
                (Some(l), Some(i)) => Method::matrix(l, i),
                (l, i) => Err([("likelihood", l), ("impact", i)]
                    .iter()
                    .filter(|(_, v)| v.is_none())
                    .map(|(n, _)| FieldError::new(*n, "required", "is required for method matrix"))
                    .collect()),
            },
            MethodKind::Cvss => match &self.vector {
                Some(v) => Method::cvss(v).map_err(|e| vec![e]),
                None => Err(vec![FieldError::new("vector", "required", "is required for method cvss")]),
            },
        }
    }
}

/// A change to a compensating control. Only an analyst who is not the requester may set
/// `verified` (with evidence) or `failed`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct ControlChangeBody {
    /// The new status.
    #[serde(default)]
    pub status: Option<ControlStatus>,
    /// Evidence for it; at most 10000 characters.
    #[serde(default)]
    pub evidence: Option<String>,
}

/// An assessment of the risk.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RiskView {
    /// Its id.
    pub id: String,
    /// The round it belongs to.
    pub round: u32,
    /// The method.
    pub method: MethodKind,
    /// `matrix` only.
    pub likelihood: Option<u8>,
    /// `matrix` only.
    pub impact: Option<u8>,
    /// `cvss` only.
    pub vector: Option<String>,
    /// Inherent score: likelihood x impact (1..25) or the CVSS base score (0.0..10.0).
    pub inherent_score: f64,
    /// Inherent level.
    pub inherent_level: Level,
    /// Inherent x max(0.2, product of (1 - e) over verified controls), half-up to one decimal.
    pub residual_score: f64,
    /// Residual level; decides approvals, maximum duration and review interval.
    pub residual_level: Level,
    /// Why.
    pub rationale: String,
    /// Threats considered.
    pub threat_vectors: Vec<String>,
    /// Who assessed.
    pub assessed_by: String,
    /// When.
    pub assessed_at: DateTime<Utc>,
}

impl From<&Assessment> for RiskView {
    fn from(a: &Assessment) -> Self {
        let (likelihood, impact, vector) = match &a.method {
            Method::Matrix { likelihood, impact } => (Some(*likelihood), Some(*impact), None),
            Method::Cvss { vector } => (None, None, Some(vector.clone())),
        };
        Self {
            id: a.id.to_string(),
            round: a.round,
            method: a.method.kind().into(),
            likelihood,
            impact,
            vector,
            inherent_score: a.inherent_score.value(),
            inherent_level: a.inherent_level().into(),
            residual_score: a.residual_score.value(),
            residual_level: a.residual_level().into(),
            rationale: a.rationale.clone(),
            threat_vectors: a.threat_vectors.clone(),
            assessed_by: a.assessed_by.to_string(),
            assessed_at: a.assessed_at,
        }
    }
}

/// A compensating control.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ControlView {
    /// Its id (for `PATCH .../controls/{control_id}`).
    pub id: String,
    /// What it is.
    pub description: String,
    /// How it acts.
    pub kind: ControlKind,
    /// Risk reduction once verified.
    pub effectiveness: Effectiveness,
    /// Where it stands.
    pub status: ControlStatus,
    /// Evidence.
    pub evidence: Option<String>,
    /// Who verified it.
    pub verified_by: Option<String>,
    /// When.
    pub verified_at: Option<DateTime<Utc>>,
    /// Re-check interval, days.
    pub check_every: Option<u32>,
    /// Last passing check.
    pub last_checked_at: Option<DateTime<Utc>>,
    /// When the next check is due (verified controls with `check_every`).
    pub check_due_at: Option<DateTime<Utc>>,
    /// Whether it reduces risk right now (verified, check not overdue).
    pub reduces_risk: bool,
}

/// A periodic review.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReviewView {
    /// Its id.
    pub id: String,
    /// The round.
    pub round: u32,
    /// Who reviewed.
    pub reviewer: String,
    /// When.
    pub reviewed_at: DateTime<Utc>,
    /// Controls still effective.
    pub controls_effective: bool,
    /// Justification still valid.
    pub justification_valid: bool,
    /// A better option exists now.
    pub better_option_available: bool,
    /// `continue` or `revoke`.
    pub outcome: String,
    /// Remark.
    pub comment: Option<String>,
}

/// One check of a compensating control.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ControlCheckView {
    /// Its id.
    pub id: String,
    /// The control.
    pub control_id: String,
    /// `pass` or `fail`.
    pub result: String,
    /// What was seen.
    pub evidence: String,
    /// Who checked.
    pub checker: String,
    /// When.
    pub checked_at: DateTime<Utc>,
}

/// A renewal request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct RenewalBody {
    /// The new expiry asked for; must be after the current one.
    pub expires_at: DateTime<Utc>,
    /// Why the exception is still needed; 10..10000 characters.
    pub justification: String,
}

/// A periodic review.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    /// Are the compensating controls still effective?
    pub controls_effective: bool,
    /// Is the justification still valid?
    pub justification_valid: bool,
    /// Is there now a better option than the exception?
    pub better_option_available: bool,
    /// `continue` keeps it (and schedules the next review); `revoke` revokes it.
    #[schema(value_type = ReviewOutcome)]
    pub outcome: String,
    /// Remark; at most 5000 characters.
    #[serde(default)]
    pub comment: Option<String>,
}

/// A control check.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct CheckBody {
    /// `pass` keeps the control verified and restarts its interval; `fail` stops it reducing
    /// risk.
    #[schema(value_type = CheckResult)]
    pub result: String,
    /// What was seen; 3..10000 characters.
    pub evidence: String,
}

/// The risk as it stood when an approval was given.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RiskSnapshotView {
    /// The assessment accepted.
    pub assessment_id: String,
    /// Its method.
    pub method: MethodKind,
    /// Inherent score then.
    pub inherent_score: f64,
    /// Inherent level then.
    pub inherent_level: Level,
    /// Residual score then.
    pub residual_score: f64,
    /// Residual level then.
    pub residual_level: Level,
}

/// One approval.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApprovalView {
    /// Its id.
    pub id: String,
    /// The round.
    pub round: u32,
    /// The required role it satisfies.
    pub role: Role,
    /// Who approved.
    pub approver: String,
    /// Remark.
    pub comment: Option<String>,
    /// When.
    pub approved_at: DateTime<Utc>,
    /// Whether it still counts: false after the exception was returned, or re-assessed at a
    /// higher residual level than it accepted.
    pub counts: bool,
    /// The risk accepted.
    pub risk: RiskSnapshotView,
}

/// A running renewal round.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RenewalView {
    /// The expiry the round will set when approved (null: unchanged, for a round opened by
    /// failed controls).
    pub requested_expires_at: Option<DateTime<Utc>>,
    /// The fresh justification.
    pub justification: Option<String>,
    /// `requested` or `controls_failed`.
    pub reason: String,
}

/// One approval the current round needs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RequiredApprovalView {
    /// The role that must sign.
    pub role: Role,
    /// Why: `residual level high`, `chronic`.
    pub reason: String,
    /// Who satisfied it in this round; null while missing.
    pub satisfied_by: Option<String>,
}

/// An exception as the API returns it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExceptionView {
    /// UUID v7.
    pub id: String,
    /// `EXC-000042`; accepted wherever an id is.
    pub key: String,
    /// Effective status now.
    pub status: Status,
    /// Why it ended by itself, e.g. `approval_timeout`.
    pub status_reason: Option<String>,
    /// Whether it permits the deviation right now.
    pub covering: bool,
    /// 1, +1 per renewal.
    pub round: u32,
    /// +1 on every change; the ETag.
    pub version: u64,
    /// A repeat of earlier exceptions on the same asset and control.
    pub chronic: bool,
    /// Break-glass exception.
    pub emergency: bool,
    /// A control failed or its check is overdue.
    pub at_risk: bool,
    /// Title.
    pub title: String,
    /// Category.
    pub category: Category,
    /// Policy deviated from.
    pub policy_id: String,
    /// Controls deviated from.
    pub control_ids: Vec<String>,
    /// Assets covered.
    pub assets: Vec<String>,
    /// Business unit.
    pub business_unit: String,
    /// Justification.
    pub justification: String,
    /// Business impact.
    pub business_impact: Option<String>,
    /// Who asked.
    pub requester: String,
    /// The person an integration asked for.
    pub on_behalf_of: Option<String>,
    /// Accountable person.
    pub risk_owner: String,
    /// Priority.
    pub priority: Priority,
    /// Coverage start.
    pub starts_at: Option<DateTime<Utc>>,
    /// Coverage end.
    pub expires_at: Option<DateTime<Utc>>,
    /// Remediation plan.
    pub remediation_plan: Option<String>,
    /// Remediation due date.
    pub remediation_due: Option<NaiveDate>,
    /// External references.
    pub external_refs: Vec<ExternalRef>,
    /// Tags.
    pub tags: Vec<String>,
    /// The current assessment; null before assessment.
    pub risk: Option<RiskView>,
    /// Every assessment of every round, oldest first.
    pub assessments: Vec<RiskView>,
    /// Compensating controls.
    pub controls: Vec<ControlView>,
    /// Periodic reviews, oldest first.
    pub reviews: Vec<ReviewView>,
    /// Control checks, oldest first.
    pub control_checks: Vec<ControlCheckView>,
    /// The running renewal round, while `renewal_pending`.
    pub renewal: Option<RenewalView>,
    /// When the approval SLA breach was escalated.
    pub escalated_at: Option<DateTime<Utc>>,
    /// When the exception was flagged at risk (revoked `controls_failed` 14 days later unless
    /// the new round is approved).
    pub at_risk_since: Option<DateTime<Utc>>,
    /// Expiry reminders already sent for the current expiry (`30d`, `14d`, `75pct`).
    pub reminders_sent: Vec<String>,
    /// Every approval of every round, oldest first.
    pub approvals: Vec<ApprovalView>,
    /// What the current round needs, and who gave it.
    pub required_approvals: Vec<RequiredApprovalView>,
    /// What the caller may do now.
    pub allowed_actions: Vec<Action>,
    /// When the approval SLA runs out (submitted exceptions).
    pub approval_sla_due_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Submitted.
    pub submitted_at: Option<DateTime<Utc>>,
    /// Finally approved.
    pub approved_at: Option<DateTime<Utc>>,
    /// Reached a terminal state.
    pub closed_at: Option<DateTime<Utc>>,
    /// Next periodic review.
    pub next_review_at: Option<DateTime<Utc>>,
}

impl ExceptionView {
    /// Renders an exception for `actor` at `now`.
    pub fn render(e: &Exception, actor: &Actor, policy: &ApprovalPolicy, now: DateTime<Utc>) -> Self {
        let ctx = Ctx { actor, policy, now };
        let f = &e.fields;
        let status = workflow::effective_status(e, now);
        Self {
            id: e.id.to_string(),
            key: e.key.to_string(),
            status: status.into(),
            status_reason: e.status_reason.clone(),
            covering: workflow::is_covering(e, now),
            round: e.round,
            version: e.version,
            chronic: e.chronic,
            emergency: e.emergency,
            at_risk: e.at_risk,
            title: f.title.clone(),
            category: f.category.into(),
            policy_id: f.policy_id.clone(),
            control_ids: f.control_ids.clone(),
            assets: f.assets.clone(),
            business_unit: f.business_unit.clone(),
            justification: f.justification.clone(),
            business_impact: f.business_impact.clone(),
            requester: e.requester.to_string(),
            on_behalf_of: e.on_behalf_of.as_ref().map(ToString::to_string),
            risk_owner: f.risk_owner.to_string(),
            priority: f.priority.into(),
            starts_at: f.starts_at,
            expires_at: f.expires_at,
            remediation_plan: f.remediation_plan.clone(),
            remediation_due: f.remediation_due,
            external_refs: f
                .external_refs
                .iter()
                .map(|r| ExternalRef { system: r.system.clone(), id: r.id.clone(), url: r.url.clone() })
                .collect(),
            tags: f.tags.clone(),
            risk: e.risk().map(RiskView::from),
            assessments: e.assessments.iter().map(RiskView::from).collect(),
            controls: e
                .controls
                .iter()
                .map(|c| ControlView {
                    id: c.id.0.to_string(),
                    description: c.description.clone(),
                    kind: c.kind.into(),
                    effectiveness: c.effectiveness.into(),
                    status: c.status.into(),
                    evidence: c.evidence.clone(),
                    verified_by: c.verified_by.as_ref().map(ToString::to_string),
                    verified_at: c.verified_at,
                    check_every: c.check_every_days,
                    last_checked_at: c.last_checked_at,
                    check_due_at: c.check_due_at(),
                    reduces_risk: c.reduces_risk(now),
                })
                .collect(),
            reviews: e
                .reviews
                .iter()
                .map(|r| ReviewView {
                    id: r.id.to_string(),
                    round: r.round,
                    reviewer: r.reviewer.to_string(),
                    reviewed_at: r.at,
                    controls_effective: r.controls_effective,
                    justification_valid: r.justification_valid,
                    better_option_available: r.better_option_available,
                    outcome: r.outcome.as_str().to_owned(),
                    comment: r.comment.clone(),
                })
                .collect(),
            control_checks: e
                .control_checks
                .iter()
                .map(|c| ControlCheckView {
                    id: c.id.to_string(),
                    control_id: c.control_id.0.to_string(),
                    result: c.result.as_str().to_owned(),
                    evidence: c.evidence.clone(),
                    checker: c.checker.to_string(),
                    checked_at: c.at,
                })
                .collect(),
            renewal: (e.status == leeway_domain::Status::RenewalPending).then(|| RenewalView {
                requested_expires_at: e.pending_expires_at,
                justification: e.renewal_justification.clone(),
                reason: if e.at_risk_since.is_some() { "controls_failed".to_owned() } else { "requested".to_owned() },
            }),
            escalated_at: e.escalated_at,
            at_risk_since: e.at_risk_since,
            reminders_sent: e.reminders_sent.clone(),
            approvals: e
                .approvals
                .iter()
                .map(|a| ApprovalView {
                    id: a.id.to_string(),
                    round: a.round,
                    role: a.role.into(),
                    approver: a.approver.to_string(),
                    comment: a.comment.clone(),
                    approved_at: a.at,
                    counts: !a.superseded && a.round == e.round,
                    risk: RiskSnapshotView {
                        assessment_id: a.risk.assessment_id.to_string(),
                        method: a.risk.method.into(),
                        inherent_score: a.risk.inherent_score.value(),
                        inherent_level: a.risk.inherent_level.into(),
                        residual_score: a.risk.residual_score.value(),
                        residual_level: a.risk.residual_level.into(),
                    },
                })
                .collect(),
            required_approvals: policy
                .required_approvals(e)
                .into_iter()
                .map(|r| RequiredApprovalView {
                    role: r.role.into(),
                    reason: r.reason,
                    satisfied_by: r.satisfied_by.map(|s| s.to_string()),
                })
                .collect(),
            allowed_actions: workflow::allowed_actions(e, &ctx).into_iter().map(Action::from).collect(),
            approval_sla_due_at: match status {
                leeway_domain::Status::Submitted | leeway_domain::Status::PendingApproval => {
                    workflow::sla_deadline(policy, e)
                }
                _ => None,
            },
            created_at: e.created_at,
            updated_at: e.updated_at,
            submitted_at: e.submitted_at,
            approved_at: e.approved_at,
            closed_at: e.closed_at,
            next_review_at: e.next_review_at,
        }
    }
}

/// A page of exceptions.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExceptionPage {
    /// The exceptions, in the requested order.
    pub items: Vec<ExceptionView>,
    /// Pass as `cursor` for the next page; null at the end.
    pub next_cursor: Option<String>,
}

/// List filters. Every filter narrows; `status` may repeat (or be comma-separated).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Effective status; repeatable.
    pub status: Option<Vec<Status>>,
    /// Residual risk level.
    pub risk_level: Option<Level>,
    /// Category.
    pub category: Option<Category>,
    /// Covers this asset.
    pub asset: Option<String>,
    /// Deviates from this control id.
    pub control_id: Option<String>,
    /// Business unit.
    pub business_unit: Option<String>,
    /// Requester subject.
    pub requester: Option<String>,
    /// Risk owner subject.
    pub risk_owner: Option<String>,
    /// External system; with `external_id`.
    pub external_system: Option<String>,
    /// External id; with `external_system`.
    pub external_id: Option<String>,
    /// `expires_at` strictly before (RFC 3339).
    pub expires_before: Option<DateTime<Utc>>,
    /// `expires_at` at or after (RFC 3339).
    pub expires_after: Option<DateTime<Utc>>,
    /// `updated_at` at or after (RFC 3339); pair with `sort=updated_at` for incremental pulls.
    pub updated_since: Option<DateTime<Utc>>,
    /// Only exceptions covering right now (`true`) or not (`false`).
    pub covering: Option<bool>,
    /// Text in title or justification (case-insensitive).
    pub q: Option<String>,
    /// `created_at` (default), `-created_at`, `updated_at`, `-updated_at`.
    pub sort: Option<String>,
    /// 1..500, default 50.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page; the other parameters must be unchanged.
    pub cursor: Option<String>,
}

/// The caller as Leeway sees them.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeView {
    /// The token's subject.
    pub subject: String,
    /// Roles resolved from the token (unknown names dropped).
    pub roles: Vec<Role>,
    /// Business unit from the token.
    pub business_unit: Option<String>,
    /// True when only `requester`: the caller sees their own exceptions, those they own as
    /// risk owner, and those of their business unit.
    pub restricted: bool,
}

/// What one residual level demands.
#[derive(Debug, Serialize, ToSchema)]
pub struct LevelPolicyView {
    /// The level.
    pub level: Level,
    /// Roles that must each approve, by distinct people.
    pub approvals: Vec<Role>,
    /// Longest lifetime, days.
    pub max_duration_days: u32,
    /// Review interval, days.
    pub review_every_days: u32,
}

/// The approval policy in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyView {
    /// Per residual level, low to critical.
    pub levels: Vec<LevelPolicyView>,
    /// Approval SLA for `urgent`, hours from submit.
    pub sla_urgent_hours: u32,
    /// Approval SLA for `standard`, hours from submit.
    pub sla_standard_hours: u32,
    /// Automatic rejection for `urgent`, hours from submit.
    pub timeout_urgent_hours: u32,
    /// Automatic rejection for `standard`, hours from submit.
    pub timeout_standard_hours: u32,
    /// Most covering exceptions per asset.
    pub max_covering_per_asset: u32,
    /// Earlier exceptions on the same asset and control that make a request chronic.
    pub chronic_threshold: u32,
    /// Role added to a chronic exception's approvals.
    pub chronic_approver: Role,
    /// Longest life of an unratified emergency exception, hours.
    pub emergency_max_hours: u32,
    /// Days a review may be overdue before the exception is revoked.
    pub review_grace_days: u32,
    /// Expiry reminders, days before `expires_at`.
    pub reminder_days_before: Vec<u32>,
    /// Expiry reminder at this percentage of the lifetime.
    pub reminder_lifetime_percent: u32,
    /// Days a round opened by failed controls has before `controls_failed` revokes.
    pub controls_failed_grace_days: u32,
    /// Covering-exception limits per business unit.
    pub business_unit_limits: std::collections::BTreeMap<String, u32>,
    /// Only verified controls reduce risk: effectiveness -> reduction.
    pub control_reduction: Value,
}

impl From<&ApprovalPolicy> for PolicyView {
    fn from(p: &ApprovalPolicy) -> Self {
        use leeway_domain::risk::Level as L;
        Self {
            levels: [L::Low, L::Medium, L::High, L::Critical]
                .into_iter()
                .map(|l| {
                    let lp = p.level(l);
                    LevelPolicyView {
                        level: l.into(),
                        approvals: lp.approvals.iter().map(|r| Role::from(*r)).collect(),
                        max_duration_days: lp.max_duration_days,
                        review_every_days: lp.review_every_days,
                    }
                })
                .collect(),
            sla_urgent_hours: p.sla_urgent_hours,
            sla_standard_hours: p.sla_standard_hours,
            timeout_urgent_hours: p.timeout_urgent_hours,
            timeout_standard_hours: p.timeout_standard_hours,
            max_covering_per_asset: p.max_covering_per_asset,
            chronic_threshold: p.chronic_threshold,
            chronic_approver: p.chronic_approver.into(),
            emergency_max_hours: p.emergency_max_hours,
            review_grace_days: p.review_grace_days,
            reminder_days_before: p.reminder_days_before.clone(),
            reminder_lifetime_percent: p.reminder_lifetime_percent,
            controls_failed_grace_days: p.controls_failed_grace_days,
            business_unit_limits: p.business_unit_limits.clone(),
            control_reduction: serde_json::json!({"low": 0.10, "medium": 0.25, "high": 0.40, "floor": 0.2}),
        }
    }
}

/// The actor of an audit event.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActorView {
    /// Subject, or `system` for time-driven transitions.
    pub subject: String,
    /// Roles at the time.
    pub roles: Vec<String>,
}

/// One audit event.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventView {
    /// Global order.
    pub seq: i64,
    /// `created`, `submitted`, `assessed`, `approval_recorded`, `approved`, `activated`, ...
    pub action: String,
    /// Who.
    pub actor: ActorView,
    /// The person an integration acted for.
    pub on_behalf_of: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
    /// State before (null for creation).
    pub from_status: Option<String>,
    /// State after.
    pub to_status: String,
    /// What changed.
    #[schema(value_type = Object)]
    pub changes: Value,
    /// The request that caused it.
    pub request_id: Option<String>,
    /// Previous hash in this exception's chain (64 zeros for the first).
    pub prev_hash: String,
    /// SHA-256 over `prev_hash`, a newline and the canonical JSON of the event.
    pub hash: String,
}

/// The result of checking a hash chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChainView {
    /// Every event matches its hash and links to its predecessor.
    pub valid: bool,
    /// The first event that does not match, if any.
    pub first_broken_seq: Option<i64>,
}

/// An exception's audit trail, oldest first, with its chain verified.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryView {
    /// The events.
    pub items: Vec<AuditEventView>,
    /// The chain's verification.
    pub chain: ChainView,
}

/// Liveness or readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthView {
    /// `ok`, or what is wrong.
    pub status: String,
    /// `sqlite` or `postgres`.
    pub database: String,
}
