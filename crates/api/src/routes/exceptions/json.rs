//! Wire types of the exception resource: what callers send (each parsed into the domain's
//! input) and what they receive. No business logic; conversions only.

use chrono::{DateTime, NaiveDate, Utc};
use leeway_domain::access::{Actor, allowed_actions};
use leeway_domain::ids::{ControlId, Subject};
use leeway_domain::policy::ApprovalPolicy;
use leeway_domain::record::{self, ControlInput, Exception, Fields, FieldsInput, FieldsPatch};
use leeway_domain::risk::{Assessment, Method};
use leeway_domain::text::Errors;
use leeway_domain::workflow::{AssessInput, CheckInput, ControlChange, NewException, RenewalInput, ReviewInput};
use leeway_domain::{FieldError, Status as DomainStatus};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
use uuid::Uuid;

use crate::body::Wire;
use crate::wire::{
    Action, Category, CheckResult, ControlKind, ControlStatus, Effectiveness, Level, MethodKind, Priority,
    ReviewOutcome, Role, Status,
};

/// An array of strings, each `min..=max` characters, at most `items` of them (at least one
/// when `required`).
fn strings(required: bool, items: usize, max: usize) -> ArrayBuilder {
    ArrayBuilder::new()
        .items(ObjectBuilder::new().schema_type(Type::String).min_length(Some(1)).max_length(Some(max)))
        .min_items(Some(usize::from(required)))
        .max_items(Some(items))
}

fn control_ids_schema() -> ArrayBuilder {
    strings(true, 50, 100).description(Some(
        "1..50 controls deviated from, e.g. `NIST-800-53:AC-2`; each 1..100 characters; de-duplicated.",
    ))
}

fn assets_schema() -> ArrayBuilder {
    strings(true, 500, 200)
        .description(Some("1..500 asset identifiers (host names, CMDB CI ids); each 1..200 characters; de-duplicated."))
}

fn tags_schema() -> ArrayBuilder {
    strings(false, 50, 100)
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .description(Some("Free labels: at most 50, each 1..100 characters; de-duplicated; `null` is none."))
}

fn threat_vectors_schema() -> ArrayBuilder {
    strings(false, 50, 200).description(Some("Threats considered: at most 50, each 1..200 characters."))
}

/// Absent is `None`; `null` is `Some(None)`: a merge patch tells them apart.
#[expect(clippy::option_option, reason = "absent, null and a value are three things in a merge patch")]
pub(crate) fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A link to a record in another system; `(system, id)` is unique across all exceptions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalRef {
    /// e.g. `servicenow`, `jira`; 1..50 characters.
    #[schema(min_length = 1, max_length = 50)]
    pub system: String,
    /// The record's id there, e.g. `RITM0012345`; 1..200 characters.
    #[schema(min_length = 1, max_length = 200)]
    pub id: String,
    /// Optional http(s) link, at most 2000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 2000, pattern = "^https?://")]
    pub url: Option<String>,
}

impl ExternalRef {
    fn to_domain(&self) -> record::ExternalRef {
        record::ExternalRef { system: self.system.clone(), id: self.id.clone(), url: self.url.clone() }
    }

    fn from_domain(r: &record::ExternalRef) -> Self {
        Self { system: r.system.clone(), id: r.id.clone(), url: r.url.clone() }
    }
}

/// A compensating control proposed with a request or added later; it starts `proposed`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewControl {
    /// What the control is; 3..2000 characters.
    #[schema(min_length = 3, max_length = 2000)]
    pub description: String,
    /// How it acts.
    pub kind: ControlKind,
    /// How much it reduces risk once verified.
    pub effectiveness: Effectiveness,
    /// Re-check interval in days: a verified control whose check is overdue stops reducing risk.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 365)]
    pub check_every: Option<i64>,
}

impl NewControl {
    fn to_domain(&self) -> ControlInput {
        ControlInput {
            description: self.description.clone(),
            kind: self.kind.into(),
            effectiveness: self.effectiveness.into(),
            check_every: self.check_every,
        }
    }
}

impl Wire for NewControl {
    type Parsed = record::ControlSpec;
    fn parse(self) -> Result<Self::Parsed, Vec<FieldError>> {
        self.to_domain().parse()
    }
}

/// Create an exception. `expires_at` and at least one control are required at submit (with
/// `"submit": true`, now). Members only the server sets are refused.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateException {
    /// 3..200 characters, trimmed.
    #[schema(value_type = String, required = true, min_length = 3, max_length = 200)]
    pub title: Option<String>,
    /// The kind of deviation.
    #[schema(value_type = Category, required = true)]
    pub category: Option<Category>,
    /// The policy deviated from, e.g. `POL-AC-01`; 1..100 characters.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 100)]
    pub policy_id: Option<String>,
    /// Controls deviated from.
    #[schema(schema_with = control_ids_schema, required = true)]
    pub control_ids: Option<Vec<String>>,
    /// Assets covered.
    #[schema(schema_with = assets_schema, required = true)]
    pub assets: Option<Vec<String>>,
    /// Owning business unit; 1..100 characters. A requester whose token names a unit may only
    /// file in that unit.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 100)]
    pub business_unit: Option<String>,
    /// Why compliance is not feasible; 10..10000 characters.
    #[schema(value_type = String, required = true, min_length = 10, max_length = 10000)]
    pub justification: Option<String>,
    /// What happens without the exception; at most 10000 characters.
    #[serde(default)]
    #[schema(max_length = 10000)]
    pub business_impact: Option<String>,
    /// The accountable person who performs periodic reviews; 1..200 characters.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 200)]
    pub risk_owner: Option<String>,
    /// Default `standard`.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// When coverage begins (1970..9999); default: the moment of final approval.
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    /// When coverage ends (1970..9999); required at submit; within the residual level's maximum.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// How the underlying gap will be fixed; at most 10000 characters.
    #[serde(default)]
    #[schema(max_length = 10000)]
    pub remediation_plan: Option<String>,
    /// When the fix is due (1970..9999).
    #[serde(default)]
    pub remediation_due: Option<NaiveDate>,
    /// Links to other systems; at most 20.
    #[serde(default)]
    #[schema(max_items = 20)]
    pub external_refs: Option<Vec<ExternalRef>>,
    /// Tags.
    #[serde(default)]
    #[schema(schema_with = tags_schema)]
    pub tags: Option<Vec<String>>,
    /// Compensating controls, each starting `proposed`; at most 50.
    #[serde(default)]
    #[schema(max_items = 50)]
    pub controls: Vec<NewControl>,
    /// Submit at once (the answer is then `submitted`).
    #[serde(default)]
    pub submit: bool,
    /// `integration` callers only: the person the request is made for; 1..200 characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub on_behalf_of: Option<String>,
    /// Break-glass (`security_officer` or `ciso` only): covering at once for at most the
    /// emergency maximum (72 hours; a later `expires_at` is refused), then ratified by
    /// assessment and approvals.
    #[serde(default)]
    pub emergency: bool,
}

impl CreateException {
    fn fields(&self) -> FieldsInput {
        FieldsInput {
            title: self.title.clone(),
            category: self.category.map(Into::into),
            policy_id: self.policy_id.clone(),
            control_ids: self.control_ids.clone(),
            assets: self.assets.clone(),
            business_unit: self.business_unit.clone(),
            justification: self.justification.clone(),
            business_impact: self.business_impact.clone(),
            risk_owner: self.risk_owner.clone(),
            priority: self.priority.map(Into::into),
            starts_at: self.starts_at,
            expires_at: self.expires_at,
            remediation_plan: self.remediation_plan.clone(),
            remediation_due: self.remediation_due,
            external_refs: self.external_refs.as_ref().map(|v| v.iter().map(ExternalRef::to_domain).collect()),
            tags: self.tags.clone(),
        }
    }
}

impl Wire for CreateException {
    type Parsed = NewException;
    fn parse(self) -> Result<NewException, Vec<FieldError>> {
        let mut e = Errors::default();
        let fields = e.take_all(Fields::parse(&self.fields()));
        let mut controls = Vec::with_capacity(self.controls.len());
        for (i, c) in self.controls.iter().enumerate() {
            let parsed =
                c.to_domain().parse().map_err(|v| v.into_iter().map(|f| f.under(&format!("controls[{i}]"))).collect());
            controls.extend(e.take_all(parsed));
        }
        let on_behalf_of = match &self.on_behalf_of {
            Some(s) => e.take(Subject::parse("on_behalf_of", s)).map(Some),
            None => Some(None),
        };
        let parsed = fields.zip(on_behalf_of).map(|(fields, on_behalf_of)| NewException {
            fields,
            controls,
            on_behalf_of,
            emergency: self.emergency,
            submit: self.submit && !self.emergency,
        });
        e.finish(parsed)
    }
}

/// The body of `PUT /v1/exceptions/by-ref/{system}/{external_id}`: a create body, which
/// creates the exception or is merged into the one holding the reference.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct UpsertException(pub CreateException);

/// A parsed upsert: the exception to create, and the same body as a merge patch of the
/// members sent.
#[derive(Debug, Clone)]
pub struct Upsert {
    /// For a create.
    pub new: NewException,
    /// For an update: only the members present.
    pub patch: FieldsPatch,
}

impl Wire for UpsertException {
    type Parsed = Upsert;
    fn parse(self) -> Result<Upsert, Vec<FieldError>> {
        let f = self.0.fields();
        let patch = FieldsPatch {
            title: f.title.map(Some),
            category: f.category.map(Some),
            policy_id: f.policy_id.map(Some),
            control_ids: f.control_ids.map(Some),
            assets: f.assets.map(Some),
            business_unit: f.business_unit.map(Some),
            justification: f.justification.map(Some),
            business_impact: f.business_impact.map(Some),
            risk_owner: f.risk_owner.map(Some),
            priority: f.priority.map(Some),
            starts_at: f.starts_at.map(Some),
            expires_at: f.expires_at.map(Some),
            remediation_plan: f.remediation_plan.map(Some),
            remediation_due: f.remediation_due.map(Some),
            external_refs: f.external_refs.map(Some),
            tags: f.tags.map(Some),
        };
        Ok(Upsert { new: self.0.parse()?, patch })
    }
}

/// The writable fields as a JSON merge patch (RFC 7396): members present replace, `null`
/// removes (required members cannot be removed). In `draft` every field may change;
/// afterwards only `tags`, `external_refs`, `remediation_plan` and `remediation_due`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExceptionPatch {
    /// 3..200 characters, trimmed.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, min_length = 3, max_length = 200)]
    pub title: Option<Option<String>>,
    /// The kind of deviation.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Category)]
    pub category: Option<Option<Category>>,
    /// 1..100 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, min_length = 1, max_length = 100)]
    pub policy_id: Option<Option<String>>,
    /// Controls deviated from.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = control_ids_schema)]
    pub control_ids: Option<Option<Vec<String>>>,
    /// Assets covered.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = assets_schema)]
    pub assets: Option<Option<Vec<String>>>,
    /// 1..100 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, min_length = 1, max_length = 100)]
    pub business_unit: Option<Option<String>>,
    /// 10..10000 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, min_length = 10, max_length = 10000)]
    pub justification: Option<Option<String>>,
    /// At most 10000 characters; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 10000)]
    pub business_impact: Option<Option<String>>,
    /// 1..200 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, min_length = 1, max_length = 200)]
    pub risk_owner: Option<Option<String>>,
    /// `null` restores the default, `standard`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Priority>)]
    pub priority: Option<Option<Priority>>,
    /// `null`: coverage starts at final approval.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub starts_at: Option<Option<DateTime<Utc>>>,
    /// `null` removes it (it is required at submit).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub expires_at: Option<Option<DateTime<Utc>>>,
    /// At most 10000 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 10000)]
    pub remediation_plan: Option<Option<String>>,
    /// When the fix is due.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<NaiveDate>)]
    pub remediation_due: Option<Option<NaiveDate>>,
    /// Links to other systems; at most 20; `null` removes them all.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<ExternalRef>>, max_items = 20)]
    pub external_refs: Option<Option<Vec<ExternalRef>>>,
    /// Tags; `null` removes them all.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = tags_schema)]
    pub tags: Option<Option<Vec<String>>>,
}

impl Wire for ExceptionPatch {
    type Parsed = FieldsPatch;
    fn parse(self) -> Result<FieldsPatch, Vec<FieldError>> {
        let enumerated = |v: Option<Option<Category>>| v.map(|o| o.map(Into::into));
        Ok(FieldsPatch {
            title: self.title,
            category: enumerated(self.category),
            policy_id: self.policy_id,
            control_ids: self.control_ids,
            assets: self.assets,
            business_unit: self.business_unit,
            justification: self.justification,
            business_impact: self.business_impact,
            risk_owner: self.risk_owner,
            priority: self.priority.map(|o| o.map(Into::into)),
            starts_at: self.starts_at,
            expires_at: self.expires_at,
            remediation_plan: self.remediation_plan,
            remediation_due: self.remediation_due,
            external_refs: self.external_refs.map(|o| o.map(|v| v.iter().map(ExternalRef::to_domain).collect())),
            tags: self.tags,
        })
    }
}

/// A comment on a lifecycle action. The body may be omitted.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// Optional remark, kept in the audit trail; at most 5000 characters.
    #[serde(default)]
    #[schema(max_length = 5000)]
    pub comment: Option<String>,
}

impl Wire for ActionBody {
    type Parsed = Option<String>;
    fn parse(self) -> Result<Option<String>, Vec<FieldError>> {
        Ok(self.comment)
    }
}

/// An approval. The body may be omitted.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    /// Optional remark; at most 5000 characters.
    #[serde(default)]
    #[schema(max_length = 5000)]
    pub comment: Option<String>,
    /// Which missing level to fill; default: the first missing one (policy order) the
    /// caller holds.
    #[serde(default)]
    pub role: Option<Role>,
}

/// An approval, parsed; the handler gives it its id.
#[derive(Debug, Clone)]
pub struct Approval {
    /// The level to fill.
    pub role: Option<leeway_domain::Role>,
    /// The remark.
    pub comment: Option<String>,
}

impl Wire for ApproveBody {
    type Parsed = Approval;
    fn parse(self) -> Result<Approval, Vec<FieldError>> {
        Ok(Approval { role: self.role.map(Into::into), comment: self.comment })
    }
}

/// A (re)assessment. `matrix` needs `likelihood` and `impact`; `cvss` needs `vector`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssessBody {
    /// The scoring method.
    pub method: MethodKind,
    /// `matrix`: 1 very low .. 5 very high.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 5)]
    pub likelihood: Option<i64>,
    /// `matrix`: 1 very low .. 5 very high.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 5)]
    pub impact: Option<i64>,
    /// `cvss`: a `CVSS:3.1/...` or `CVSS:4.0/...` vector; at most 200 characters.
    #[serde(default)]
    #[schema(max_length = 200)]
    pub vector: Option<String>,
    /// Why the analyst scored it so; 3..10000 characters.
    #[schema(min_length = 3, max_length = 10000)]
    pub rationale: String,
    /// Threats considered.
    #[serde(default)]
    #[schema(schema_with = threat_vectors_schema)]
    pub threat_vectors: Vec<String>,
    /// A shorter expiry, to fit the residual level's maximum duration.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// An assessment, parsed; the handler gives it its id.
#[derive(Debug, Clone)]
pub struct Assessed {
    /// The method, scored.
    pub method: Method,
    /// Why.
    pub rationale: String,
    /// Threats.
    pub threat_vectors: Vec<String>,
    /// A shorter expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

impl Assessed {
    /// As the domain takes it.
    pub fn input(&self, id: Uuid) -> AssessInput {
        AssessInput {
            id,
            method: self.method.clone(),
            rationale: self.rationale.clone(),
            threat_vectors: self.threat_vectors.clone(),
            expires_at: self.expires_at,
        }
    }
}

impl Wire for AssessBody {
    type Parsed = Assessed;
    fn parse(self) -> Result<Assessed, Vec<FieldError>> {
        let method = match self.method {
            MethodKind::Matrix => match (self.likelihood, self.impact) {
                (Some(l), Some(i)) => Method::matrix(l, i)?,
                (l, i) => {
                    return Err([("likelihood", l), ("impact", i)]
                        .iter()
                        .filter(|(_, v)| v.is_none())
                        .map(|(n, _)| FieldError::new(*n, "required_for_method", "method matrix needs it"))
                        .collect());
                }
            },
            MethodKind::Cvss => match &self.vector {
                Some(v) => Method::cvss(v).map_err(|e| vec![e])?,
                None => {
                    return Err(vec![FieldError::new("vector", "required_for_method", "method cvss needs a vector")]);
                }
            },
        };
        Ok(Assessed {
            method,
            rationale: self.rationale,
            threat_vectors: self.threat_vectors,
            expires_at: self.expires_at,
        })
    }
}

/// A change to a compensating control: a status, evidence, or both. Only an analyst who is
/// not the requester may set `verified` (with evidence) or `failed`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlChangeBody {
    /// The new status.
    #[serde(default)]
    pub status: Option<ControlStatus>,
    /// Evidence for it; 1..10000 characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 10000)]
    pub evidence: Option<String>,
}

impl Wire for ControlChangeBody {
    type Parsed = ControlChange;
    fn parse(self) -> Result<ControlChange, Vec<FieldError>> {
        Ok(ControlChange { status: self.status.map(Into::into), evidence: self.evidence })
    }
}

/// A renewal request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewalBody {
    /// The new expiry asked for; after the current one.
    pub expires_at: DateTime<Utc>,
    /// Why the exception is still needed; 10..10000 characters.
    #[schema(min_length = 10, max_length = 10000)]
    pub justification: String,
}

impl Wire for RenewalBody {
    type Parsed = RenewalInput;
    fn parse(self) -> Result<RenewalInput, Vec<FieldError>> {
        Ok(RenewalInput { expires_at: self.expires_at, justification: self.justification })
    }
}

/// A periodic review.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    /// Are the compensating controls still effective?
    pub controls_effective: bool,
    /// Is the justification still valid?
    pub justification_valid: bool,
    /// Is there now a better option than the exception?
    pub better_option_available: bool,
    /// `continue` keeps it (and schedules the next review); `revoke` revokes it.
    pub outcome: ReviewOutcome,
    /// Remark; at most 5000 characters.
    #[serde(default)]
    #[schema(max_length = 5000)]
    pub comment: Option<String>,
}

impl ReviewBody {
    /// As the domain takes it.
    pub fn input(&self, id: Uuid) -> ReviewInput {
        ReviewInput {
            id,
            controls_effective: self.controls_effective,
            justification_valid: self.justification_valid,
            better_option_available: self.better_option_available,
            outcome: self.outcome.into(),
            comment: self.comment.clone(),
        }
    }
}

impl Wire for ReviewBody {
    type Parsed = Self;
    fn parse(self) -> Result<Self, Vec<FieldError>> {
        Ok(self)
    }
}

/// A control check.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckBody {
    /// `pass` keeps the control verified and restarts its interval; `fail` stops it reducing
    /// risk.
    pub result: CheckResult,
    /// What was seen; 3..10000 characters.
    #[schema(min_length = 3, max_length = 10000)]
    pub evidence: String,
}

impl CheckBody {
    /// As the domain takes it.
    pub fn input(&self, id: Uuid) -> CheckInput {
        CheckInput { id, result: self.result.into(), evidence: self.evidence.clone() }
    }
}

impl Wire for CheckBody {
    type Parsed = Self;
    fn parse(self) -> Result<Self, Vec<FieldError>> {
        Ok(self)
    }
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
            Method::Cvss { vector, .. } => (None, None, Some(vector.clone())),
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
    pub check_every: Option<u16>,
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
    pub outcome: ReviewOutcome,
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
    pub result: CheckResult,
    /// What was seen.
    pub evidence: String,
    /// Who checked.
    pub checker: String,
    /// When.
    pub checked_at: DateTime<Utc>,
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
    /// Fingerprint of the approval policy in force when it was given (the audit package
    /// shows that policy); null for approvals older than the record of it.
    pub policy: Option<String>,
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
    /// Why it ended by itself or by a review: `approval_timeout`, `review_overdue`,
    /// `review_revoked`, `controls_failed`, `emergency_not_ratified`.
    pub status_reason: Option<String>,
    /// Whether it permits the deviation right now.
    pub covering: bool,
    /// 1, +1 per round.
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
        let f = &e.fields;
        let status = e.effective_status(now);
        Self {
            id: e.id.to_string(),
            key: e.key.to_string(),
            status: status.into(),
            status_reason: e.status_reason.map(|r| r.as_str().to_owned()),
            covering: e.is_covering(now),
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
            external_refs: f.external_refs.iter().map(ExternalRef::from_domain).collect(),
            tags: f.tags.clone(),
            risk: e.risk().map(RiskView::from),
            assessments: e.assessments.iter().map(RiskView::from).collect(),
            controls: e
                .controls
                .iter()
                .map(|c| ControlView {
                    id: c.id.to_string(),
                    description: c.description.clone(),
                    kind: c.kind.into(),
                    effectiveness: c.effectiveness.into(),
                    status: c.status.into(),
                    evidence: c.evidence.clone(),
                    verified_by: c.verified_by.as_ref().map(ToString::to_string),
                    verified_at: c.verified_at,
                    check_every: c.check_every.map(record::CheckInterval::days),
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
                    outcome: r.outcome.into(),
                    comment: r.comment.clone(),
                })
                .collect(),
            control_checks: e
                .control_checks
                .iter()
                .map(|c| ControlCheckView {
                    id: c.id.to_string(),
                    control_id: c.control_id.to_string(),
                    result: c.result.into(),
                    evidence: c.evidence.clone(),
                    checker: c.checker.to_string(),
                    checked_at: c.at,
                })
                .collect(),
            renewal: (e.status() == DomainStatus::RenewalPending).then(|| RenewalView {
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
                    policy: a.policy.clone(),
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
            allowed_actions: allowed_actions(e, actor, policy, now).into_iter().filter_map(Action::of).collect(),
            approval_sla_due_at: match status {
                DomainStatus::Submitted | DomainStatus::PendingApproval => {
                    e.submitted_at.and_then(|s| policy.sla_deadline(f.priority, s))
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

/// The actor of an audit event, as recorded.
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
    /// State before (null for creation): a status name as recorded.
    pub from_status: Option<String>,
    /// State after: a status name as recorded.
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

impl From<leeway_domain::audit::Event> for AuditEventView {
    fn from(e: leeway_domain::audit::Event) -> Self {
        let entry = e.entry;
        Self {
            seq: e.seq,
            action: entry.action,
            actor: ActorView { subject: entry.actor, roles: entry.roles },
            on_behalf_of: entry.on_behalf_of,
            at: entry.at,
            from_status: entry.from_status,
            to_status: entry.to_status,
            changes: entry.changes,
            request_id: entry.request_id,
            prev_hash: e.prev_hash,
            hash: e.hash,
        }
    }
}

/// The result of checking a hash chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChainView {
    /// Every event matches its hash and links to its predecessor.
    pub valid: bool,
    /// The first event that does not match, if any; 0 (audit package) when the chain does not
    /// end on the head recorded with the exception: its last events are gone.
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

/// A control id from the path; one that is not a UUID names no control.
pub fn control_id(raw: &str) -> Option<ControlId> {
    Uuid::parse_str(raw).ok().map(ControlId)
}
