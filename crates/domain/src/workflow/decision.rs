//! Decisions (spec sections 3 and 5): approvals and what the last one completes, rejection,
//! and the endings people choose: withdraw, revoke, close.

use serde_json::json;
use uuid::Uuid;

use crate::access::{awaiting_ratification, guard, missing_roles};
use crate::error::DomainError;
use crate::kinds::{Action, AuditAction, EventType, Level, Reason, Role, Status};
use crate::record::{Approval, Exception, Happening};
use crate::risk::Assessment;
use crate::time;

use super::assessment::within_policy;
use super::intake::{judge_limits, places};
use super::{Ctx, Facts};

/// What an approver sends, parsed.
#[derive(Debug, Clone)]
pub struct ApproveInput {
    /// The approval's id.
    pub id: Uuid,
    /// Which missing level to fill; default: the first missing one the caller holds.
    pub role: Option<Role>,
    /// Optional remark.
    pub comment: Option<String>,
}

/// Records one approval; the last required one approves (or activates, renews, ratifies).
pub(super) fn approve(
    e: &mut Exception,
    ctx: &Ctx<'_>,
    input: ApproveInput,
    facts: &mut dyn Facts,
) -> Result<Vec<Happening>, DomainError> {
    guard(e, ctx.actor, ctx.policy, ctx.now, Action::Approve)?;
    let missing = missing_roles(e, ctx.policy);
    let role = match input.role {
        Some(role) if !missing.contains(&role) => {
            return Err(DomainError::field(
                "role",
                "not_missing",
                format!(
                    "{role} is not a missing approval of this round; missing: {}",
                    missing.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        Some(role) if !ctx.actor.has(role) => {
            return Err(DomainError::Forbidden { action: Action::Approve, needs: vec![role] });
        }
        Some(role) => role,
        None => match missing.iter().find(|r| ctx.actor.has(**r)) {
            Some(r) => *r,
            None => return Err(DomainError::Forbidden { action: Action::Approve, needs: missing }),
        },
    };
    let comment = super::comment(input.comment.as_deref())?;
    let Some(risk) = e.risk().map(Assessment::snapshot) else {
        return Err(DomainError::field("risk", "assessment_required", "the exception has not been assessed"));
    };
    // The last approval may not accept a lifetime longer than the level allows (a failed
    // control can raise the level after the assessment checked the duration).
    if missing.len() == 1 {
        check_duration(e, ctx, risk.residual_level)?;
    }
    let round = e.round;
    e.approvals.push(Approval {
        id: input.id,
        round,
        role,
        approver: ctx.actor.subject.clone(),
        comment,
        at: time::truncate(ctx.now),
        risk,
        superseded: false,
        policy: Some(ctx.policy.fingerprint()),
    });
    let mut out = vec![e.note(AuditAction::ApprovalRecorded, json!({"role": role}), Some(EventType::ApprovalRecorded))];
    out.extend(finish_if_complete(e, ctx, facts)?);
    Ok(out)
}

/// The lifetime the round would approve, checked against the level's maximum.
fn check_duration(e: &Exception, ctx: &Ctx<'_>, level: Level) -> Result<(), DomainError> {
    let now = time::truncate(ctx.now);
    let (start, target) = match e.status() {
        Status::RenewalPending => (now, e.pending_expires_at.or(e.fields.expires_at)),
        Status::Active => (e.fields.starts_at.unwrap_or(now), e.pending_expires_at.or(e.fields.expires_at)),
        _ => (e.fields.starts_at.map_or(now, |s| s.max(now)), e.fields.expires_at),
    };
    match target {
        Some(x) => within_policy(ctx, level, start, x),
        None => Ok(()),
    }
}

/// When every required approval of the round is in: approve (and activate when the start
/// has come), renew, or ratify. Approving takes a place under the covering limits, judged
/// under the same lock as a submit.
pub(super) fn finish_if_complete(
    e: &mut Exception,
    ctx: &Ctx<'_>,
    facts: &mut dyn Facts,
) -> Result<Vec<Happening>, DomainError> {
    let Some(level) = e.risk().map(Assessment::residual_level) else { return Ok(Vec::new()) };
    let complete = !ctx.policy.required_approvals(e).is_empty() && missing_roles(e, ctx.policy).is_empty();
    if !complete {
        return Ok(Vec::new());
    }
    let now = time::truncate(ctx.now);
    let review_from =
        |at| time::add(at, ctx.policy.review_interval(level)).ok_or(DomainError::Overflow("the next review"));
    match e.status() {
        Status::PendingApproval => {
            let places = places(e, ctx, facts)?;
            judge_limits(e, ctx, &places)?;
            // Coverage never starts before the decision: a start that passed while the request
            // waited moves to the moment of approval.
            let start = e.fields.starts_at.map_or(now, |s| s.max(now));
            e.fields.starts_at = Some(start);
            e.approved_at = Some(now);
            e.approved_level = Some(level);
            e.next_review_at = Some(review_from(start)?);
            let mut out = vec![e.enter(
                Action::Approve,
                Status::Approved,
                now,
                AuditAction::Approved,
                json!({"starts_at": start}),
                Some(EventType::Approved),
            )?];
            if start <= now {
                out.push(e.enter(
                    Action::Activate,
                    Status::Active,
                    now,
                    AuditAction::Activated,
                    json!({}),
                    Some(EventType::Activated),
                )?);
            }
            Ok(out)
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
            e.next_review_at = Some(review_from(now)?);
            e.review_notified_at = None;
            let changes = json!({"round": e.round, "expires_at": e.fields.expires_at, "previous_expires_at": old});
            Ok(vec![e.enter(
                Action::Approve,
                Status::Active,
                now,
                AuditAction::Renewed,
                changes,
                Some(EventType::Renewed),
            )?])
        }
        Status::Active if awaiting_ratification(e) => {
            let old = e.fields.expires_at;
            e.fields.expires_at = e.pending_expires_at.take().or(old);
            e.approved_at = Some(now);
            e.approved_level = Some(level);
            e.at_risk = false;
            e.at_risk_since = None;
            e.next_review_at = Some(review_from(now)?);
            e.reminders_sent.clear();
            let changes = json!({"expires_at": e.fields.expires_at, "previous_expires_at": old});
            Ok(vec![e.enter(
                Action::Approve,
                Status::Active,
                now,
                AuditAction::Ratified,
                changes,
                Some(EventType::Approved),
            )?])
        }
        Status::Draft
        | Status::Submitted
        | Status::Approved
        | Status::Active
        | Status::Rejected
        | Status::Withdrawn
        | Status::Expired
        | Status::Revoked
        | Status::Closed => Ok(Vec::new()),
    }
}

/// Refuses the request; for a renewal round, back to `active` with the old expiry; for a round
/// opened by failed controls, revoked.
pub(super) fn reject(e: &mut Exception, ctx: &Ctx<'_>, comment: Option<&str>) -> Result<Vec<Happening>, DomainError> {
    guard(e, ctx.actor, ctx.policy, ctx.now, Action::Reject)?;
    let comment = super::comment(comment)?;
    let to = match e.status() {
        // the round opened because controls failed: refusing it leaves nothing that covers
        // the higher risk, so the exception ends
        Status::RenewalPending if e.at_risk_since.is_some() => {
            e.status_reason = Some(Reason::ControlsFailed);
            Status::Revoked
        }
        Status::RenewalPending => {
            e.pending_expires_at = None;
            e.renewal_justification = None;
            Status::Active
        }
        _ => Status::Rejected,
    };
    Ok(vec![e.enter(
        Action::Reject,
        to,
        ctx.now,
        AuditAction::Rejected,
        json!({"comment": comment}),
        Some(EventType::Rejected),
    )?])
}

/// The requester takes the request back.
pub(super) fn withdraw(e: &mut Exception, ctx: &Ctx<'_>, comment: Option<&str>) -> Result<Vec<Happening>, DomainError> {
    end(e, ctx, Action::Withdraw, Status::Withdrawn, comment, (AuditAction::Withdrawn, EventType::Withdrawn))
}

/// An officer ends the exception early.
pub(super) fn revoke(e: &mut Exception, ctx: &Ctx<'_>, comment: Option<&str>) -> Result<Vec<Happening>, DomainError> {
    end(e, ctx, Action::Revoke, Status::Revoked, comment, (AuditAction::Revoked, EventType::Revoked))
}

/// The gap was remediated: the exception is no longer needed.
pub(super) fn close(e: &mut Exception, ctx: &Ctx<'_>, comment: Option<&str>) -> Result<Vec<Happening>, DomainError> {
    end(e, ctx, Action::Close, Status::Closed, comment, (AuditAction::Closed, EventType::Closed))
}

fn end(
    e: &mut Exception,
    ctx: &Ctx<'_>,
    action: Action,
    to: Status,
    comment: Option<&str>,
    (audit, event): (AuditAction, EventType),
) -> Result<Vec<Happening>, DomainError> {
    guard(e, ctx.actor, ctx.policy, ctx.now, action)?;
    let comment = super::comment(comment)?;
    Ok(vec![e.enter(action, to, ctx.now, audit, json!({"comment": comment}), Some(event))?])
}
