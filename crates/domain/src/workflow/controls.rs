//! Compensating controls (spec sections 2 and 4): adding, judging and checking them, and what a
//! control that stops working does to the residual risk and to a covering exception.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::access::guard;
use crate::error::DomainError;
use crate::ids::ControlId;
use crate::kinds::{Action, AuditAction, CheckResult, ControlStatus, EventType, Level, Role, Status};
use crate::policy::ApprovalPolicy;
use crate::record::{Control, ControlCheck, ControlSpec, Exception, Happening};
use crate::text::{Errors, FieldError, bounded};
use crate::time;

use super::assessment::supersede_below;
use super::intake::MAX_CONTROLS;
use super::{Ctx, Facts, decision};

/// A change to a control, parsed.
#[derive(Debug, Clone, Default)]
pub struct ControlChange {
    /// The new status.
    pub status: Option<ControlStatus>,
    /// Evidence for it.
    pub evidence: Option<String>,
}

/// A check of a control, parsed.
#[derive(Debug, Clone)]
pub struct CheckInput {
    /// The check's id.
    pub id: Uuid,
    /// Pass or fail.
    pub result: CheckResult,
    /// What was seen.
    pub evidence: String,
}

/// Adds a proposed compensating control.
pub(super) fn add(
    e: &mut Exception,
    ctx: &Ctx<'_>,
    id: ControlId,
    spec: ControlSpec,
) -> Result<Vec<Happening>, DomainError> {
    guard(e, ctx.actor, ctx.policy, ctx.now, Action::AddControl)?;
    if e.controls.len() >= MAX_CONTROLS {
        return Err(DomainError::field(
            "controls",
            "too_many",
            format!("an exception has at most {MAX_CONTROLS} controls"),
        ));
    }
    let control = Control::new(id, spec, ctx.now);
    let changes = json!({"control_id": id.0, "description": control.description, "kind": control.kind,
        "effectiveness": control.effectiveness});
    e.controls.push(control);
    Ok(vec![e.note(AuditAction::ControlAdded, changes, Some(EventType::Updated))])
}

/// Only an analyst who is not the requester judges a control (verifies or fails it) or touches
/// one already judged, so a requester can never vouch for or erase a finding.
fn judge(e: &Exception, ctx: &Ctx<'_>, what: &str) -> Result<(), DomainError> {
    if !ctx.actor.has(Role::Analyst) {
        return Err(DomainError::Forbidden { action: Action::ChangeControl, needs: vec![Role::Analyst] });
    }
    if e.is_requester(&ctx.actor.subject) {
        return Err(DomainError::SeparationOfDuties(format!("the requester may not {what} of their own exception")));
    }
    Ok(())
}

fn find(e: &Exception, id: ControlId) -> Result<usize, DomainError> {
    e.controls.iter().position(|c| c.id == id).ok_or_else(|| DomainError::NoSuchControl(id.to_string()))
}

/// Changes a control's status or evidence and recomputes the residual risk.
pub(super) fn change(
    e: &mut Exception,
    ctx: &Ctx<'_>,
    id: ControlId,
    change: ControlChange,
    facts: &mut dyn Facts,
) -> Result<Vec<Happening>, DomainError> {
    guard(e, ctx.actor, ctx.policy, ctx.now, Action::ChangeControl)?;
    let mut errors = Errors::default();
    let evidence = change.evidence.as_deref().and_then(|s| errors.take(bounded("evidence", s, 1, 10_000)));
    if change.status.is_none() && change.evidence.is_none() {
        errors.push(FieldError::new("status", "empty_change", "send a status, evidence, or both"));
    }
    errors.finish(Some(()))?;
    let idx = find(e, id)?;
    let before = e.controls[idx].status;
    let judged = matches!(before, ControlStatus::Verified | ControlStatus::Failed);
    if judged || matches!(change.status, Some(ControlStatus::Verified | ControlStatus::Failed)) {
        judge(e, ctx, "verify, fail or change a judged control")?;
    }
    if change.status == Some(ControlStatus::Verified) && evidence.is_none() && e.controls[idx].evidence.is_none() {
        return Err(DomainError::field("evidence", "evidence_required", "verifying a control needs evidence"));
    }
    let now = time::truncate(ctx.now);
    let c: &mut Control = &mut e.controls[idx];
    if let Some(s) = change.status {
        c.status = s;
        if s == ControlStatus::Verified {
            c.verified_by = Some(ctx.actor.subject.clone());
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
    let changes = json!({"control_id": id.0, "from": before, "to": c.status});
    let changed = e.note(AuditAction::ControlChanged, changes, Some(EventType::Updated));
    consequences(e, ctx, facts, changed)
}

/// What a control's new standing leads to: the residual recomputed (and the exception at
/// risk, or a new round), and the approvals complete when the residual fell.
fn consequences(
    e: &mut Exception,
    ctx: &Ctx<'_>,
    facts: &mut dyn Facts,
    judged: Happening,
) -> Result<Vec<Happening>, DomainError> {
    let mut out = vec![judged];
    out.extend(reassess(e, ctx.policy, ctx.now)?);
    out.extend(decision::finish_if_complete(e, ctx, facts)?);
    Ok(out)
}

/// Records a check: a pass keeps the control verified and restarts its check interval; a fail
/// stops it reducing risk.
pub(super) fn check(
    e: &mut Exception,
    ctx: &Ctx<'_>,
    control: ControlId,
    input: CheckInput,
    facts: &mut dyn Facts,
) -> Result<Vec<Happening>, DomainError> {
    guard(e, ctx.actor, ctx.policy, ctx.now, Action::ChangeControl)?;
    let evidence = bounded("evidence", &input.evidence, 3, 10_000)?;
    judge(e, ctx, "check a control")?;
    let idx = find(e, control)?;
    let now = time::truncate(ctx.now);
    let c: &mut Control = &mut e.controls[idx];
    let before = c.status;
    match input.result {
        CheckResult::Pass => {
            if c.status != ControlStatus::Verified {
                c.verified_by = Some(ctx.actor.subject.clone());
                c.verified_at = Some(now);
            }
            c.status = ControlStatus::Verified;
            c.last_checked_at = Some(now);
        }
        CheckResult::Fail => {
            c.status = ControlStatus::Failed;
            c.verified_by = None;
            c.verified_at = None;
        }
    }
    c.evidence = Some(evidence.clone());
    let changes = json!({"control_id": control.0, "result": input.result, "from": before, "to": c.status});
    e.control_checks.push(ControlCheck {
        id: input.id,
        control_id: control,
        result: input.result,
        evidence,
        checker: ctx.actor.subject.clone(),
        at: now,
    });
    let checked = e.note(AuditAction::ControlChecked, changes, Some(EventType::Updated));
    consequences(e, ctx, facts, checked)
}

/// Recomputes the residual with the controls as they stand at `now` (failed or overdue ones no
/// longer count). A higher level during approval needs its own approvals. On a covering
/// exception a control that stopped reducing risk flags it at risk; when that raises the level
/// above the one its approvals accepted, a new round opens by itself.
pub(super) fn reassess(
    e: &mut Exception,
    policy: &ApprovalPolicy,
    now: DateTime<Utc>,
) -> Result<Vec<Happening>, DomainError> {
    let status = e.status();
    let effective: Vec<_> = e.effective_controls(now).collect();
    let Some(r) = e.assessments.last_mut() else { return Ok(Vec::new()) };
    let (old_score, old) = (r.residual_score, r.residual_level());
    r.recompute(effective);
    let (score, new) = (r.residual_score, r.residual_level());
    let mut out = Vec::new();
    if score != old_score {
        out.push(e.note(
            AuditAction::RiskRecomputed,
            json!({"residual_score": score.value(), "residual_level": new, "previous_level": old}),
            None,
        ));
    }
    if new > old && status == Status::PendingApproval {
        supersede_below(e, new);
    }
    let covering = matches!(status, Status::Active | Status::RenewalPending);
    let failing = e.controls.iter().any(|c| c.is_failing(now));
    if covering && failing && !e.at_risk {
        e.at_risk = true;
        out.push(e.note(
            AuditAction::AtRisk,
            json!({"residual_level": new, "approved_level": e.approved_level}),
            Some(EventType::AtRisk),
        ));
    }
    // Only a recompute that itself raised the level opens a round: a renewal's fresh
    // assessment at a higher level is judged by that round's own approvals.
    if status == Status::Active
        && new > old
        && e.at_risk_since.is_none()
        && let Some(approved) = e.approved_level.filter(|a: &Level| new > *a)
    {
        let now = time::truncate(now);
        let revoke_after = time::add(now, time::days(policy.controls_failed_grace_days))
            .ok_or(DomainError::Overflow("the controls-failed deadline"))?;
        e.at_risk = true;
        e.at_risk_since = Some(now);
        e.round += 1;
        e.pending_expires_at = None;
        out.push(e.enter(
            Action::OpenRound,
            Status::RenewalPending,
            now,
            AuditAction::RenewalRequested,
            json!({"round": e.round, "reason": "controls_failed", "approved_level": approved,
                "residual_level": new, "revoke_after": revoke_after}),
            Some(EventType::RenewalRequested),
        )?);
    }
    // every control works again and no round is running because of them: the flag clears
    if covering && !failing && e.at_risk && e.at_risk_since.is_none() {
        e.at_risk = false;
        out.push(e.note(AuditAction::AtRiskCleared, json!({"residual_level": new}), Some(EventType::Updated)));
    }
    Ok(out)
}
