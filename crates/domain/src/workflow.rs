//! The operations on an exception: each checks state, role and separation of duties, changes
//! the aggregate, and says what happened so that the caller can audit and publish it.

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::error::{DomainError, Errors, FieldError};
use crate::lifecycle::{Action, Status};
use crate::policy::ApprovalPolicy;
use crate::record::{
    Approval, Control, ControlId, ControlInput, ControlStatus, EDITABLE_AFTER_SUBMIT, Exception, ExceptionId,
    ExceptionKey, Fields, FieldsInput, Subject, bounded,
};
use crate::risk::{Assessment, Method};
use crate::role::{Actor, Role};

/// Timestamps are kept to the microsecond so both databases round-trip them identically.
pub fn truncate(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// Whether a timestamp is one a record may hold: 1970..=9999, so that arithmetic on it never
/// overflows and both databases order it alike.
pub fn plausible(t: DateTime<Utc>) -> bool {
    (1970..=9999).contains(&chrono::Datelike::year(&t))
}

/// Most assessments one exception keeps (every re-assessment adds one).
pub const MAX_ASSESSMENTS: usize = 100;

/// Who acts, under which policy, at what time.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The caller.
    pub actor: &'a Actor,
    /// The policy in force.
    pub policy: &'a ApprovalPolicy,
    /// The moment of the action.
    pub now: DateTime<Utc>,
}

/// One thing that happened to an exception: one audit event, and an integration event when
/// `event` is set.
#[derive(Debug, Clone, PartialEq)]
pub struct Happening {
    /// The audit action name (`created`, `submitted`, `approval_recorded`, ...).
    pub action: &'static str,
    /// State before.
    pub from: Option<Status>,
    /// State after.
    pub to: Status,
    /// What changed, as JSON.
    pub changes: Value,
    /// The integration event type, e.g. `exception.submitted`.
    pub event: Option<&'static str>,
    /// True when time, not the caller, caused it.
    pub by_system: bool,
}

pub(crate) fn happened(
    action: &'static str,
    from: Status,
    to: Status,
    changes: Value,
    event: &'static str,
) -> Happening {
    Happening { action, from: Some(from), to, changes, event: Some(event), by_system: false }
}

/// The status to report at `now`: an approved exception whose start has come is active;
/// a covering one past its expiry is expired. Exact without any background job.
pub fn effective_status(e: &Exception, now: DateTime<Utc>) -> Status {
    let expired = e.fields.expires_at.is_some_and(|x| now >= x);
    match e.status {
        Status::Approved | Status::Active | Status::RenewalPending if expired => Status::Expired,
        Status::Approved if e.fields.starts_at.is_none_or(|s| s <= now) => Status::Active,
        other => other,
    }
}

/// Whether the exception permits the deviation at `now`: active or renewal pending, and
/// between `starts_at` and `expires_at`.
pub fn is_covering(e: &Exception, now: DateTime<Utc>) -> bool {
    matches!(effective_status(e, now), Status::Active | Status::RenewalPending)
        && e.fields.starts_at.is_none_or(|s| s <= now)
        && e.fields.expires_at.is_some_and(|x| now < x)
}

/// Persists the transitions time has already made (activation, expiry), as system events,
/// before a caller's action is applied.
pub fn catch_up(e: &mut Exception, now: DateTime<Utc>) -> Vec<Happening> {
    let mut out = Vec::new();
    if e.status == Status::Approved && e.fields.starts_at.is_none_or(|s| s <= now) {
        let at = e.fields.starts_at.unwrap_or(now);
        if e.fields.expires_at.is_none_or(|x| at < x) {
            out.push(Happening {
                by_system: true,
                ..happened("activated", e.status, Status::Active, json!({"effective_at": at}), "exception.activated")
            });
            e.status = Status::Active;
        }
    }
    if matches!(e.status, Status::Approved | Status::Active | Status::RenewalPending)
        && e.fields.expires_at.is_some_and(|x| now >= x)
    {
        out.push(Happening {
            by_system: true,
            ..happened(
                "expired",
                e.status,
                Status::Expired,
                json!({"effective_at": e.fields.expires_at}),
                "exception.expired",
            )
        });
        e.status = Status::Expired;
        e.closed_at = e.fields.expires_at;
    }
    if !out.is_empty() {
        e.updated_at = now;
    }
    out
}

/// Roles that may take `action` at all (before ownership and separation of duties).
pub fn roles_for(action: Action) -> &'static [Role] {
    use Role::*;
    match action {
        Action::Update | Action::AddControl => &[Requester, Integration, Analyst],
        Action::Submit | Action::Withdraw => &[Requester, Integration],
        Action::Return | Action::Reject => &[Analyst, SecurityOfficer, AssetOwner, Ciso, Compliance],
        Action::Assess => &[Analyst],
        Action::ChangeControl => &[Analyst, Requester, Integration],
        Action::Approve => &[SecurityOfficer, AssetOwner, Ciso, Compliance],
        Action::RequestRenewal => &[Requester, Integration],
        Action::Review => &[Analyst, Requester],
        Action::Revoke => &[SecurityOfficer, Ciso, Admin],
        Action::Close => &[Requester, Analyst, Integration],
        Action::Activate | Action::Expire | Action::AutoReject => &[],
    }
}

/// The exception as the requester side sees it: the requester, the person it was made for,
/// or (for closing and reviews) the risk owner.
fn is_requester_side(e: &Exception, a: &Actor) -> bool {
    (a.has(Role::Integration) && e.requester == a.subject) || (a.has(Role::Requester) && e.is_requester(&a.subject))
}

/// Checks everything but the body of a request: state, role, ownership, separation of duties.
pub fn guard(e: &Exception, ctx: &Ctx<'_>, action: Action) -> Result<(), DomainError> {
    let status = effective_status(e, ctx.now);
    let refused = || DomainError::InvalidTransition {
        action,
        current: status,
        allowed: Action::ALL.iter().copied().filter(|a| a.is_human() && state_allows(e, status, *a)).collect(),
    };
    if !state_allows(e, status, action) || !action.is_human() {
        return Err(refused());
    }
    let a = ctx.actor;
    let forbidden = || DomainError::Forbidden { action, needs: roles_for(action).to_vec() };
    let analyst = a.has(Role::Analyst);
    let owner = e.fields.risk_owner == a.subject;
    let ok = match action {
        Action::Update | Action::AddControl => is_requester_side(e, a) || (analyst && status != Status::Draft),
        Action::Submit | Action::Withdraw | Action::RequestRenewal => {
            is_requester_side(e, a) || (owner && action == Action::RequestRenewal)
        }
        Action::Close => is_requester_side(e, a) || owner || analyst,
        Action::Review => owner || analyst,
        Action::ChangeControl => is_requester_side(e, a) || analyst,
        Action::Return | Action::Reject | Action::Revoke | Action::Approve | Action::Assess => {
            a.has_any(roles_for(action)) && (action != Action::Assess || analyst)
        }
        Action::Activate | Action::Expire | Action::AutoReject => false,
    };
    if !ok {
        return Err(forbidden());
    }
    if matches!(action, Action::Assess | Action::Approve) && e.fields.expires_at.is_some_and(|x| x <= ctx.now) {
        return Err(DomainError::field(
            "expires_at",
            "in_past",
            "the requested expiry has passed; return the exception so the requester can set a new one",
        ));
    }
    match action {
        Action::Assess => {
            if e.is_requester(&a.subject) {
                return Err(DomainError::SeparationOfDuties("the requester may not assess their own exception".into()));
            }
        }
        Action::Approve => {
            if e.is_requester(&a.subject) {
                return Err(DomainError::SeparationOfDuties(
                    "the requester may not approve their own exception".into(),
                ));
            }
            match status {
                Status::Active | Status::RenewalPending if !assessed_this_round(e) => {
                    return Err(DomainError::field(
                        "risk",
                        "assessment_required",
                        "this round needs a fresh assessment before any approval",
                    ));
                }
                _ => {}
            }
            if e.current_approvals().any(|x| x.approver == a.subject) {
                return Err(DomainError::SeparationOfDuties(
                    "one person satisfies at most one required approval in a round".into(),
                ));
            }
            let missing = missing_roles(e, ctx.policy);
            if !missing.iter().any(|r| a.has(*r)) {
                return Err(DomainError::Forbidden { action, needs: missing });
            }
        }
        Action::Update
        | Action::Submit
        | Action::Return
        | Action::Reject
        | Action::Withdraw
        | Action::RequestRenewal
        | Action::Review
        | Action::Revoke
        | Action::Close
        | Action::AddControl
        | Action::ChangeControl
        | Action::Activate
        | Action::Expire
        | Action::AutoReject => {}
    }
    Ok(())
}

/// The table, narrowed by the conditions it states: in `active`, assessing and approving are
/// only for an emergency exception awaiting ratification.
fn state_allows(e: &Exception, status: Status, action: Action) -> bool {
    status.permits(action)
        && match (status, action) {
            (Status::Active, Action::Assess | Action::Approve) => awaiting_ratification(e),
            (Status::Active, Action::RequestRenewal) => !awaiting_ratification(e),
            _ => true,
        }
}

fn awaiting_ratification(e: &Exception) -> bool {
    e.emergency && e.approved_at.is_none()
}

fn assessed_this_round(e: &Exception) -> bool {
    e.risk().is_some_and(|r| r.round == e.round)
}

/// Required roles of the current round that no counting approval satisfies yet.
pub fn missing_roles(e: &Exception, policy: &ApprovalPolicy) -> Vec<Role> {
    policy.required_approvals(e).into_iter().filter(|r| r.satisfied_by.is_none()).map(|r| r.role).collect()
}

/// The human actions the caller may take now.
pub fn allowed_actions(e: &Exception, ctx: &Ctx<'_>) -> Vec<Action> {
    Action::ALL.iter().copied().filter(|a| a.is_human() && guard(e, ctx, *a).is_ok()).collect()
}

/// What a caller sends to create an exception.
#[derive(Debug, Clone, Default)]
pub struct NewException {
    /// The record's fields.
    pub fields: FieldsInput,
    /// Compensating controls proposed with it.
    pub controls: Vec<ControlInput>,
    /// For an integration: the person the request is for.
    pub on_behalf_of: Option<String>,
    /// Break-glass: active at once for at most the emergency maximum (security officer or
    /// CISO only), ratified later by the normal assessment and approvals.
    pub emergency: bool,
}

/// Creates an exception in `draft` (an emergency one: `active` at once). Submitting in the
/// same request is [`submit`] right after, with the database's facts.
pub fn create(
    ctx: &Ctx<'_>,
    id: ExceptionId,
    key: ExceptionKey,
    input: &NewException,
    mut new_id: impl FnMut() -> Uuid,
) -> Result<(Exception, Vec<Happening>), DomainError> {
    let a = ctx.actor;
    let creators: &[Role] =
        if input.emergency { &[Role::SecurityOfficer, Role::Ciso] } else { &[Role::Requester, Role::Integration] };
    if !a.has_any(creators) {
        return Err(DomainError::Forbidden { action: Action::Update, needs: creators.to_vec() });
    }
    let mut errors = Errors::default();
    let on_behalf_of = match &input.on_behalf_of {
        Some(_) if !a.has(Role::Integration) => {
            errors.push(FieldError::new(
                "on_behalf_of",
                "not_allowed",
                "only an integration may act on behalf of someone",
            ));
            None
        }
        Some(s) => errors.take(Subject::parse("on_behalf_of", s)),
        None => None,
    };
    let fields = match Fields::parse(&input.fields) {
        Ok(f) => Some(f),
        Err(DomainError::Invalid(v)) => {
            errors.extend(v);
            None
        }
        Err(other) => return Err(other),
    };
    if input.controls.len() > 50 {
        errors.push(FieldError::new("controls", "too_many", "allows at most 50 items"));
    }
    let now = truncate(ctx.now);
    let mut controls = Vec::new();
    for (i, c) in input.controls.iter().enumerate() {
        match c.parse(&format!("controls[{i}]"), ControlId(new_id()), now) {
            Ok(c) => controls.push(c),
            Err(v) => errors.extend(v),
        }
    }
    errors.finish()?;
    let Some(fields) = fields else { return Err(DomainError::field("body", "invalid", "incomplete")) };
    let mut e = Exception {
        id,
        key,
        fields,
        requester: a.subject.clone(),
        on_behalf_of,
        status: Status::Draft,
        status_reason: None,
        round: 1,
        version: 1,
        chronic: false,
        emergency: false,
        at_risk: false,
        assessments: Vec::new(),
        controls,
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
    };
    let mut out = vec![Happening {
        action: "created",
        from: None,
        to: Status::Draft,
        changes: json!({"key": key.to_string(), "title": e.fields.title}),
        event: Some("exception.created"),
        by_system: false,
    }];
    if input.emergency {
        out.extend(crate::governance::activate_emergency(&mut e, ctx)?);
    }
    Ok((e, out))
}

/// `draft` -> `submitted`, once the record is complete enough to assess.
pub fn submit(
    e: &mut Exception,
    ctx: &Ctx<'_>,
    facts: &crate::governance::SubmitFacts,
) -> Result<Vec<Happening>, DomainError> {
    guard(e, ctx, Action::Submit)?;
    let mut errors = Errors::default();
    match e.fields.expires_at {
        None => errors.push(FieldError::new("expires_at", "required", "is required at submit")),
        Some(x) if x <= ctx.now => errors.push(FieldError::new("expires_at", "in_past", "must be in the future")),
        Some(_) => {}
    }
    if e.controls.is_empty() {
        errors.push(FieldError::new("controls", "required", "at least one compensating control is required at submit"));
    }
    errors.finish()?;
    let chronic = crate::governance::judge_submit(e, ctx.policy, facts)?;
    let from = e.status;
    e.status = Status::Submitted;
    e.submitted_at = Some(truncate(ctx.now));
    e.escalated_at = None;
    e.chronic = chronic.is_some();
    Ok(vec![happened("submitted", from, e.status, json!({"chronic": chronic}), "exception.submitted")])
}

/// Applies new field values (a merge patch already applied to [`Fields::to_input`]).
pub fn update(e: &mut Exception, ctx: &Ctx<'_>, input: &FieldsInput) -> Result<Vec<Happening>, DomainError> {
    guard(e, ctx, Action::Update)?;
    let fields = Fields::parse(input)?;
    let changed = e.fields.changed(&fields);
    let status = effective_status(e, ctx.now);
    let may_change_all = status == Status::Draft && is_requester_side(e, ctx.actor);
    if !may_change_all {
        let locked: Vec<FieldError> = changed
            .iter()
            .filter(|f| !EDITABLE_AFTER_SUBMIT.contains(f))
            .map(|f| {
                FieldError::new(
                    *f,
                    "not_editable",
                    format!(
                        "cannot change in state {status}; only {} may change after submit",
                        EDITABLE_AFTER_SUBMIT.join(", ")
                    ),
                )
            })
            .collect();
        if !locked.is_empty() {
            return Err(DomainError::Invalid(locked));
        }
    }
    if changed.is_empty() {
        return Ok(Vec::new());
    }
    let diff: serde_json::Map<String, Value> = changed
        .iter()
        .map(|f| ((*f).to_owned(), json!({"from": e.fields.value_of(f), "to": fields.value_of(f)})))
        .collect();
    e.fields = fields;
    Ok(vec![happened("updated", status, status, Value::Object(diff), "exception.updated")])
}

/// Sends the exception back to the requester; approvals collected so far no longer count.
pub fn return_to_requester(
    e: &mut Exception,
    ctx: &Ctx<'_>,
    comment: Option<&str>,
) -> Result<Vec<Happening>, DomainError> {
    guard(e, ctx, Action::Return)?;
    let from = e.status;
    let round = e.round;
    for a in e.approvals.iter_mut().filter(|a| a.round == round) {
        a.superseded = true;
    }
    e.status = Status::Draft;
    Ok(vec![happened("returned", from, e.status, json!({"comment": comment}), "exception.returned")])
}

/// What an analyst sends to (re)assess.
#[derive(Debug, Clone)]
pub struct AssessInput {
    /// How the inherent risk is scored.
    pub method: Method,
    /// Why.
    pub rationale: String,
    /// Threats considered.
    pub threat_vectors: Vec<String>,
    /// A shorter expiry, to fit the residual level's maximum duration.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Scores the risk; the residual level decides the approvals, duration and reviews.
pub fn assess(e: &mut Exception, ctx: &Ctx<'_>, input: AssessInput, id: Uuid) -> Result<Vec<Happening>, DomainError> {
    guard(e, ctx, Action::Assess)?;
    let mut errors = Errors::default();
    let rationale = errors.take(bounded("rationale", &input.rationale, 3, 10_000));
    let mut threats = Vec::new();
    for (i, t) in input.threat_vectors.iter().enumerate() {
        if let Some(t) = errors.take(bounded(&format!("threat_vectors[{i}]"), t, 1, 200)) {
            threats.push(t);
        }
    }
    if threats.len() > 50 {
        errors.push(FieldError::new("threat_vectors", "too_many", "allows at most 50 items"));
    }
    let status = effective_status(e, ctx.now);
    let now = truncate(ctx.now);
    // What the assessment's expires_at bounds: the request's own expiry; in a renewal round
    // the requested new expiry; for an emergency, the ratified expiry (which may go beyond
    // the emergency maximum, within the level's).
    let (requested, start) = match status {
        Status::RenewalPending => (e.pending_expires_at.or(e.fields.expires_at), now),
        Status::Active => (None, e.fields.starts_at.unwrap_or(now)),
        _ => (e.fields.expires_at, e.fields.starts_at.unwrap_or(now)),
    };
    if let Some(x) = input.expires_at
        && (!plausible(x) || requested.is_some_and(|current| x > current))
    {
        errors.push(FieldError::new("expires_at", "not_shorter", "may only shorten the requested expires_at"));
    }
    if e.assessments.len() >= MAX_ASSESSMENTS {
        errors.push(FieldError::new(
            "risk",
            "too_many",
            format!("an exception keeps at most {MAX_ASSESSMENTS} assessments"),
        ));
    }
    let expires_at = input.expires_at.map(truncate).or(requested).or(e.fields.expires_at);
    match expires_at {
        Some(x) if x <= start || x <= now => {
            errors.push(FieldError::new("expires_at", "before_start", "must be after starts_at and in the future"));
        }
        None => errors.push(FieldError::new("expires_at", "required", "is required")),
        Some(_) => {}
    }
    errors.finish()?;
    let (Some(rationale), Some(expires_at)) = (rationale, expires_at) else {
        return Err(DomainError::field("body", "invalid", "incomplete"));
    };
    let inherent = input.method.inherent();
    let mut assessment = Assessment {
        id,
        round: e.round,
        method: input.method,
        inherent_score: inherent,
        residual_score: inherent,
        rationale,
        threat_vectors: threats,
        assessed_by: ctx.actor.subject.clone(),
        assessed_at: now,
    };
    assessment.recompute(&e.controls, ctx.now);
    let level = assessment.residual_level();
    let latest = start + ctx.policy.max_duration(level);
    if expires_at > latest {
        return Err(DomainError::DurationExceedsPolicy {
            level,
            max_days: ctx.policy.level(level).max_duration_days,
            latest_expires_at: latest,
        });
    }
    let from = e.status;
    let changes = json!({
        "method": assessment.method.kind().as_str(),
        "inherent_score": assessment.inherent_score.value(),
        "residual_score": assessment.residual_score.value(),
        "residual_level": level.as_str(),
        "expires_at": (Some(expires_at) != requested).then_some(expires_at),
    });
    match status {
        Status::RenewalPending | Status::Active => e.pending_expires_at = Some(expires_at),
        _ => e.fields.expires_at = Some(expires_at),
    }
    e.assessments.push(assessment);
    supersede_below(e, level);
    if matches!(from, Status::Submitted | Status::PendingApproval) {
        e.status = Status::PendingApproval;
    }
    let mut out = vec![happened("assessed", from, e.status, changes, "exception.assessed")];
    out.extend(finish_if_complete(e, ctx));
    Ok(out)
}

/// Approvals given for a lower residual level than the current one stop counting.
pub(crate) fn supersede_below(e: &mut Exception, level: crate::risk::Level) {
    let round = e.round;
    for a in e.approvals.iter_mut().filter(|a| a.round == round && !a.superseded) {
        if a.risk.residual_level < level {
            a.superseded = true;
        }
    }
}

/// What an approver sends.
#[derive(Debug, Clone, Default)]
pub struct ApproveInput {
    /// Optional remark.
    pub comment: Option<String>,
    /// Which missing level to fill; default: the first missing one the caller holds.
    pub role: Option<String>,
}

/// Records one approval; the last required one approves (or activates, renews, ratifies).
pub fn approve(
    e: &mut Exception,
    ctx: &Ctx<'_>,
    input: &ApproveInput,
    id: Uuid,
) -> Result<Vec<Happening>, DomainError> {
    guard(e, ctx, Action::Approve)?;
    let missing = missing_roles(e, ctx.policy);
    let role = match input.role.as_deref() {
        Some(raw) => {
            let role = Role::parse_field("role", raw).map_err(|f| DomainError::Invalid(vec![f]))?;
            if !missing.contains(&role) {
                return Err(DomainError::field(
                    "role",
                    "not_missing",
                    format!(
                        "{role} is not a missing approval of this round; missing: {}",
                        missing.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            if !ctx.actor.has(role) {
                return Err(DomainError::Forbidden { action: Action::Approve, needs: vec![role] });
            }
            role
        }
        None => match missing.iter().find(|r| ctx.actor.has(**r)) {
            Some(r) => *r,
            None => return Err(DomainError::Forbidden { action: Action::Approve, needs: missing }),
        },
    };
    let comment = match input.comment.as_deref() {
        Some(c) => Some(bounded("comment", c, 0, 5000).map_err(|f| DomainError::Invalid(vec![f]))?),
        None => None,
    };
    let Some(risk) = e.risk().map(Assessment::snapshot) else {
        return Err(DomainError::field("risk", "assessment_required", "the exception has not been assessed"));
    };
    // The last approval may not accept a lifetime longer than the level allows (a failed
    // control can raise the level after the assessment checked the duration).
    if missing.len() == 1 {
        check_duration(e, ctx, risk.residual_level)?;
    }
    let from = e.status;
    e.approvals.push(Approval {
        id,
        round: e.round,
        role,
        approver: ctx.actor.subject.clone(),
        comment: comment.filter(|c| !c.is_empty()),
        at: truncate(ctx.now),
        risk,
        superseded: false,
    });
    let mut out =
        vec![happened("approval_recorded", from, from, json!({"role": role.as_str()}), "exception.approval_recorded")];
    out.extend(finish_if_complete(e, ctx));
    Ok(out)
}

fn check_duration(e: &Exception, ctx: &Ctx<'_>, level: crate::risk::Level) -> Result<(), DomainError> {
    let now = truncate(ctx.now);
    let (start, target) = match e.status {
        Status::RenewalPending => (now, e.pending_expires_at.or(e.fields.expires_at)),
        Status::Active => (e.fields.starts_at.unwrap_or(now), e.pending_expires_at.or(e.fields.expires_at)),
        _ => (e.fields.starts_at.map_or(now, |s| s.max(now)), e.fields.expires_at),
    };
    let latest = start + ctx.policy.max_duration(level);
    match target {
        Some(x) if x > latest => Err(DomainError::DurationExceedsPolicy {
            level,
            max_days: ctx.policy.level(level).max_duration_days,
            latest_expires_at: latest,
        }),
        _ => Ok(()),
    }
}

/// When every required approval of the round is in: approve (and activate when the start
/// has come), renew, or ratify.
pub(crate) fn finish_if_complete(e: &mut Exception, ctx: &Ctx<'_>) -> Vec<Happening> {
    let Some(level) = e.risk().map(Assessment::residual_level) else { return Vec::new() };
    let complete = !ctx.policy.required_approvals(e).is_empty() && missing_roles(e, ctx.policy).is_empty();
    if !complete {
        return Vec::new();
    }
    let now = truncate(ctx.now);
    let from = e.status;
    match from {
        Status::PendingApproval => {
            // Coverage never starts before the decision: a start that passed while the request
            // waited moves to the moment of approval.
            let start = e.fields.starts_at.map_or(now, |s| s.max(now));
            e.fields.starts_at = Some(start);
            e.approved_at = Some(now);
            e.approved_level = Some(level);
            e.next_review_at = Some(start + ctx.policy.review_interval(level));
            e.status = Status::Approved;
            let mut out =
                vec![happened("approved", from, Status::Approved, json!({"starts_at": start}), "exception.approved")];
            if start <= now {
                e.status = Status::Active;
                out.push(happened("activated", Status::Approved, Status::Active, json!({}), "exception.activated"));
            }
            out
        }
        Status::RenewalPending => {
            let old = e.fields.expires_at;
            e.fields.expires_at = e.pending_expires_at.take().or(old);
            e.renewal_justification = None;
            e.at_risk = false;
            e.at_risk_since = None;
            if e.fields.expires_at != old {
                e.reminders_sent.clear();
            }
            e.approved_at = Some(now);
            e.approved_level = Some(level);
            e.next_review_at = Some(now + ctx.policy.review_interval(level));
            e.review_notified_at = None;
            e.status = Status::Active;
            vec![happened(
                "renewed",
                from,
                Status::Active,
                json!({"round": e.round, "expires_at": e.fields.expires_at, "previous_expires_at": old}),
                "exception.renewed",
            )]
        }
        Status::Active if e.emergency && e.approved_at.is_none() => {
            let old = e.fields.expires_at;
            e.fields.expires_at = e.pending_expires_at.take().or(old);
            e.approved_at = Some(now);
            e.approved_level = Some(level);
            e.at_risk = false;
            e.at_risk_since = None;
            e.next_review_at = Some(now + ctx.policy.review_interval(level));
            e.reminders_sent.clear();
            vec![happened(
                "ratified",
                from,
                Status::Active,
                json!({"expires_at": e.fields.expires_at, "previous_expires_at": old}),
                "exception.approved",
            )]
        }
        Status::Draft
        | Status::Submitted
        | Status::Approved
        | Status::Active
        | Status::Rejected
        | Status::Withdrawn
        | Status::Expired
        | Status::Revoked
        | Status::Closed => Vec::new(),
    }
}

/// Refuses the request (for a renewal round: back to `active` with the old expiry).
pub fn reject(e: &mut Exception, ctx: &Ctx<'_>, comment: Option<&str>) -> Result<Vec<Happening>, DomainError> {
    guard(e, ctx, Action::Reject)?;
    let from = e.status;
    if from == Status::RenewalPending && e.at_risk_since.is_some() {
        // the round opened because controls failed: refusing it leaves nothing that covers the
        // higher risk, so the exception ends
        e.status = Status::Revoked;
        e.status_reason = Some("controls_failed".to_owned());
        e.closed_at = Some(truncate(ctx.now));
    } else if from == Status::RenewalPending {
        // the old expiry stands
        e.status = Status::Active;
        e.pending_expires_at = None;
        e.renewal_justification = None;
    } else {
        e.status = Status::Rejected;
        e.closed_at = Some(truncate(ctx.now));
    }
    Ok(vec![happened("rejected", from, e.status, json!({"comment": comment}), "exception.rejected")])
}

/// The requester takes the request back.
pub fn withdraw(e: &mut Exception, ctx: &Ctx<'_>, comment: Option<&str>) -> Result<Vec<Happening>, DomainError> {
    end(e, ctx, Action::Withdraw, Status::Withdrawn, comment, "withdrawn", "exception.withdrawn")
}

/// An officer ends the exception early.
pub fn revoke(e: &mut Exception, ctx: &Ctx<'_>, comment: Option<&str>) -> Result<Vec<Happening>, DomainError> {
    end(e, ctx, Action::Revoke, Status::Revoked, comment, "revoked", "exception.revoked")
}

/// The gap was remediated: the exception is no longer needed.
pub fn close(e: &mut Exception, ctx: &Ctx<'_>, comment: Option<&str>) -> Result<Vec<Happening>, DomainError> {
    end(e, ctx, Action::Close, Status::Closed, comment, "closed", "exception.closed")
}

fn end(
    e: &mut Exception,
    ctx: &Ctx<'_>,
    action: Action,
    to: Status,
    comment: Option<&str>,
    name: &'static str,
    event: &'static str,
) -> Result<Vec<Happening>, DomainError> {
    guard(e, ctx, action)?;
    let from = e.status;
    e.status = to;
    e.closed_at = Some(truncate(ctx.now));
    Ok(vec![happened(name, from, to, json!({"comment": comment}), event)])
}

/// Adds a proposed compensating control.
pub fn add_control(
    e: &mut Exception,
    ctx: &Ctx<'_>,
    input: &ControlInput,
    id: ControlId,
) -> Result<(ControlId, Vec<Happening>), DomainError> {
    guard(e, ctx, Action::AddControl)?;
    if e.controls.len() >= 50 {
        return Err(DomainError::field("controls", "too_many", "an exception has at most 50 controls"));
    }
    let control = input.parse("", id, truncate(ctx.now)).map_err(|v| {
        DomainError::Invalid(
            v.into_iter().map(|f| FieldError { field: f.field.trim_start_matches('.').to_owned(), ..f }).collect(),
        )
    })?;
    let changes = json!({"control_id": id.0, "description": control.description, "kind": control.kind.as_str(),
        "effectiveness": control.effectiveness.as_str()});
    e.controls.push(control);
    let s = e.status;
    Ok((id, vec![happened("control_added", s, s, changes, "exception.updated")]))
}

/// What a caller sends to change a control.
#[derive(Debug, Clone, Default)]
pub struct ControlChange {
    /// New status wire name.
    pub status: Option<String>,
    /// Evidence for it.
    pub evidence: Option<String>,
}

/// Changes a control's status (only an analyst who is not the requester verifies or fails
/// it) and recomputes the residual risk.
pub fn change_control(
    e: &mut Exception,
    ctx: &Ctx<'_>,
    id: ControlId,
    change: &ControlChange,
) -> Result<Vec<Happening>, DomainError> {
    guard(e, ctx, Action::ChangeControl)?;
    let mut errors = Errors::default();
    let status = change.status.as_deref().and_then(|s| errors.take(ControlStatus::parse_field("status", s)));
    let evidence = change.evidence.as_deref().and_then(|s| errors.take(bounded("evidence", s, 1, 10_000)));
    if change.status.is_none() && change.evidence.is_none() {
        errors.push(FieldError::new("status", "required", "send a status, evidence, or both"));
    }
    errors.finish()?;
    let a = ctx.actor;
    let requester = e.is_requester(&a.subject);
    let Some(idx) = e.controls.iter().position(|c| c.id == id) else {
        return Err(DomainError::NoSuchControl(id.0.to_string()));
    };
    let judged = matches!(e.controls[idx].status, ControlStatus::Verified | ControlStatus::Failed);
    let changes_judgement = status.is_some_and(|s| matches!(s, ControlStatus::Verified | ControlStatus::Failed));
    if judged || changes_judgement {
        if !a.has(Role::Analyst) {
            return Err(DomainError::Forbidden { action: Action::ChangeControl, needs: vec![Role::Analyst] });
        }
        if requester {
            return Err(DomainError::SeparationOfDuties(
                "the requester may not verify, fail or change a judged control of their own exception".into(),
            ));
        }
    }
    if let Some(s) = status {
        match s {
            ControlStatus::Verified | ControlStatus::Failed => {
                if !a.has(Role::Analyst) {
                    return Err(DomainError::Forbidden { action: Action::ChangeControl, needs: vec![Role::Analyst] });
                }
                if requester {
                    return Err(DomainError::SeparationOfDuties(
                        "the requester may not verify a control of their own exception".into(),
                    ));
                }
                if s == ControlStatus::Verified && evidence.is_none() && e.controls[idx].evidence.is_none() {
                    return Err(DomainError::field("evidence", "required", "verifying a control needs evidence"));
                }
            }
            ControlStatus::Proposed | ControlStatus::Implemented => {}
        }
    }
    let now = truncate(ctx.now);
    let before = e.controls[idx].status;
    let c: &mut Control = &mut e.controls[idx];
    if let Some(s) = status {
        c.status = s;
        if s == ControlStatus::Verified {
            c.verified_by = Some(a.subject.clone());
            c.verified_at = Some(now);
            c.last_checked_at = Some(now);
        } else {
            c.verified_by = None;
            c.verified_at = None;
        }
    }
    if evidence.is_some() {
        c.evidence = evidence;
    }
    let after = c.status;
    let mut out = vec![happened(
        "control_changed",
        e.status,
        e.status,
        json!({"control_id": id.0, "from": before.as_str(), "to": after.as_str()}),
        "exception.updated",
    )];
    out.extend(crate::governance::reassess_controls(e, ctx.policy, ctx.now));
    out.extend(finish_if_complete(e, ctx));
    Ok(out)
}

/// The moment an exception of `priority` submitted at `submitted_at` passes its SLA.
pub fn sla_deadline(policy: &ApprovalPolicy, e: &Exception) -> Option<DateTime<Utc>> {
    e.submitted_at.map(|s| policy.sla_deadline(e.fields.priority, s))
}
