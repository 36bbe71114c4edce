//! A request's way in: creation, field updates, submit, return, break-glass, and the covering
//! limits with repeat detection that guard every place coverage is taken.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::access::{guard, is_requester_side, roles_for, within_business_unit};
use crate::error::{DomainError, MaxDuration};
use crate::ids::{ControlId, ExceptionId, ExceptionKey, Subject};
use crate::kinds::{Action, AuditAction, EventType, Role, Status};
use crate::record::{Control, ControlSpec, EDITABLE_AFTER_SUBMIT, Exception, Fields, FieldsPatch, Happening, Record};
use crate::text::{Errors, FieldError};
use crate::time;

use super::{Ctx, Facts};

/// Most compensating controls on one exception.
pub const MAX_CONTROLS: usize = 50;

/// A new exception as a caller asks for it, every value parsed.
#[derive(Debug, Clone)]
pub struct NewException {
    /// The record's fields.
    pub fields: Fields,
    /// Compensating controls proposed with it.
    pub controls: Vec<ControlSpec>,
    /// For an integration: the person the request is for.
    pub on_behalf_of: Option<Subject>,
    /// Break-glass: covering at once for at most the emergency maximum (security officer or
    /// CISO only), ratified later by the normal assessment and approvals.
    pub emergency: bool,
    /// Submit in the same request.
    pub submit: bool,
}

/// The places taken under the covering limits around one exception, read from the database.
#[derive(Debug, Clone, Default)]
pub struct Places {
    /// For each of the exception's assets, the keys of the other exceptions holding a place on
    /// it: covering now, or approved to cover later.
    pub on_assets: Vec<(String, Vec<String>)>,
    /// The same in its business unit (read only when the unit has a limit).
    pub in_business_unit: Vec<String>,
    /// Keys of earlier exceptions (any status but draft and withdrawn) sharing an asset and a
    /// control with it.
    pub earlier_sharing: Vec<String>,
}

/// Refuses when taking one more place would exceed the asset's or the business unit's limit.
/// The holders are named only to a caller who may see every exception.
pub fn judge_limits(e: &Record, ctx: &Ctx<'_>, places: &Places) -> Result<(), DomainError> {
    let refuse = |scope, name: &str, limit, holders: &[String]| DomainError::LimitExceeded {
        scope,
        name: name.to_owned(),
        limit,
        held: holders.len(),
        holders: if ctx.actor.is_restricted() { Vec::new() } else { holders.to_vec() },
    };
    let full = |held: &[String], limit: u32| held.len() >= usize::try_from(limit).unwrap_or(usize::MAX);
    let limit = ctx.policy.max_covering_per_asset;
    if let Some((asset, holders)) = places.on_assets.iter().find(|(_, holders)| full(holders, limit)) {
        return Err(refuse("asset", asset, limit, holders));
    }
    if let Some(limit) = ctx.policy.business_unit_limits.get(&e.fields.business_unit).copied()
        && full(&places.in_business_unit, limit)
    {
        return Err(refuse("business_unit", &e.fields.business_unit, limit, &places.in_business_unit));
    }
    Ok(())
}

/// The places around `e`, read through `facts`.
pub(super) fn places(e: &Exception, ctx: &Ctx<'_>, facts: &mut dyn Facts) -> Result<Places, DomainError> {
    let limited = ctx.policy.business_unit_limits.contains_key(&e.fields.business_unit);
    facts.places(e, ctx.now, limited).ok_or(DomainError::FactsUnavailable("the covering limits"))
}

/// Enforces the limits and detects repeats: sets `chronic` and returns why, if it is.
fn take_place(e: &mut Exception, ctx: &Ctx<'_>, facts: &mut dyn Facts) -> Result<Option<String>, DomainError> {
    let places = places(e, ctx, facts)?;
    judge_limits(e, ctx, &places)?;
    let n = places.earlier_sharing.len();
    let chronic = (n >= usize::try_from(ctx.policy.chronic_threshold).unwrap_or(usize::MAX)).then(|| {
        format!("{n} earlier exception(s) on the same asset and control: {}", places.earlier_sharing.join(", "))
    });
    e.chronic = chronic.is_some();
    Ok(chronic)
}

pub(super) fn create(
    ctx: &Ctx<'_>,
    id: ExceptionId,
    key: ExceptionKey,
    input: NewException,
    new_id: &mut dyn FnMut() -> Uuid,
    facts: &mut dyn Facts,
) -> Result<(Exception, Vec<Happening>), DomainError> {
    let a = ctx.actor;
    let action = if input.emergency { Action::Emergency } else { Action::Create };
    if !a.has_any(roles_for(action)) {
        return Err(DomainError::Forbidden { action, needs: roles_for(action).to_vec() });
    }
    // break-glass is declared by officers wherever the incident is
    if !input.emergency {
        within_business_unit(a, &input.fields.business_unit)?;
    }
    let mut errors = Errors::default();
    if input.on_behalf_of.is_some() && !a.has(Role::Integration) {
        errors.push(FieldError::new("on_behalf_of", "not_allowed", "only an integration may act on behalf of someone"));
    }
    if input.controls.len() > MAX_CONTROLS {
        errors.push(FieldError::new("controls", "too_many", format!("allows at most {MAX_CONTROLS} items")));
    }
    errors.finish(Some(()))?;
    let now = time::truncate(ctx.now);
    let mut record = Record::new(id, key, input.fields, a.subject.clone(), input.on_behalf_of, now);
    record.controls = input.controls.into_iter().map(|spec| Control::new(ControlId(new_id()), spec, now)).collect();
    let (mut e, created) = Exception::create(record);
    let mut out = vec![created];
    if input.emergency {
        out.push(break_glass(&mut e, ctx, facts)?);
    } else if input.submit {
        out.extend(submit(&mut e, ctx, facts)?);
    }
    Ok((e, out))
}

/// Break-glass: covering at once, for at most the emergency maximum. Emergencies skip the
/// approvals, not the limits or repeat detection.
fn break_glass(e: &mut Exception, ctx: &Ctx<'_>, facts: &mut dyn Facts) -> Result<Happening, DomainError> {
    let now = time::truncate(ctx.now);
    let hours = ctx.policy.emergency_max_hours;
    let latest = time::add(now, time::hours(hours)).ok_or(DomainError::Overflow("the emergency maximum"))?;
    let expires_at = match e.fields.expires_at {
        None => latest,
        Some(x) if x <= now => {
            return Err(DomainError::field("expires_at", "in_past", "must be in the future"));
        }
        Some(x) if x > latest => {
            return Err(DomainError::DurationExceedsPolicy {
                max: MaxDuration::Emergency { hours },
                latest_expires_at: latest,
            });
        }
        Some(x) => x,
    };
    if e.fields.starts_at.is_some_and(|s| s > now) {
        return Err(DomainError::field("starts_at", "not_allowed", "an emergency exception covers at once"));
    }
    e.emergency = true;
    e.fields.starts_at = Some(now);
    e.fields.expires_at = Some(expires_at);
    e.submitted_at = Some(now);
    let chronic = take_place(e, ctx, facts)?;
    e.enter(
        Action::Emergency,
        Status::Active,
        now,
        AuditAction::Activated,
        json!({"emergency": true, "expires_at": expires_at, "chronic": chronic}),
        Some(EventType::Activated),
    )
}

/// `draft` -> `submitted`, once the record is complete enough to assess and within limits.
pub(super) fn submit(e: &mut Exception, ctx: &Ctx<'_>, facts: &mut dyn Facts) -> Result<Vec<Happening>, DomainError> {
    guard(e, ctx.actor, ctx.policy, ctx.now, Action::Submit)?;
    let mut errors = Errors::default();
    match e.fields.expires_at {
        None => {
            errors.push(FieldError::new("expires_at", "required_at_submit", "a submit needs an expiry: set expires_at"))
        }
        Some(x) if x <= ctx.now => errors.push(FieldError::new("expires_at", "in_past", "must be in the future")),
        Some(_) => {}
    }
    if e.controls.is_empty() {
        errors.push(FieldError::new(
            "controls",
            "required_at_submit",
            "a submit needs at least one compensating control",
        ));
    }
    errors.finish(Some(()))?;
    let chronic = take_place(e, ctx, facts)?;
    e.submitted_at = Some(time::truncate(ctx.now));
    e.escalated_at = None;
    Ok(vec![e.enter(
        Action::Submit,
        Status::Submitted,
        ctx.now,
        AuditAction::Submitted,
        json!({"chronic": chronic}),
        Some(EventType::Submitted),
    )?])
}

/// Applies a merge patch of the fields: everything in `draft` (the requester side), only
/// the fields editable after submit otherwise.
pub(super) fn update(e: &mut Exception, ctx: &Ctx<'_>, patch: FieldsPatch) -> Result<Vec<Happening>, DomainError> {
    guard(e, ctx.actor, ctx.policy, ctx.now, Action::Update)?;
    let fields = Fields::parse(&e.fields.to_input().patched(patch))?;
    let diff = e.fields.diff(&fields);
    let status = e.effective_status(ctx.now);
    if !(status == Status::Draft && is_requester_side(e, ctx.actor)) {
        let locked: Vec<FieldError> = diff
            .keys()
            .filter(|f| !EDITABLE_AFTER_SUBMIT.contains(&f.as_str()))
            .map(|f| {
                FieldError::new(
                    f.clone(),
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
    if diff.is_empty() {
        return Ok(Vec::new());
    }
    if diff.contains_key("business_unit") {
        within_business_unit(ctx.actor, &fields.business_unit)?;
    }
    e.fields = fields;
    Ok(vec![e.note(AuditAction::Updated, Value::Object(diff), Some(EventType::Updated))])
}

/// Sends the exception back to the requester; approvals collected so far no longer count.
pub(super) fn return_to_requester(
    e: &mut Exception,
    ctx: &Ctx<'_>,
    comment: Option<&str>,
) -> Result<Vec<Happening>, DomainError> {
    guard(e, ctx.actor, ctx.policy, ctx.now, Action::Return)?;
    let comment = super::comment(comment)?;
    let round = e.round;
    for a in e.approvals.iter_mut().filter(|a| a.round == round) {
        a.superseded = true;
    }
    Ok(vec![e.enter(
        Action::Return,
        Status::Draft,
        ctx.now,
        AuditAction::Returned,
        json!({"comment": comment}),
        Some(EventType::Returned),
    )?])
}
