//! Governance (spec sections 3 and 4): what time does to an exception, renewal rounds,
//! periodic reviews, control checks, limits, repeats and emergencies.
//!
//! [`tick`] applies every time rule that is due and is idempotent: what it did is recorded
//! on the exception (flags, timestamps, status), so running it twice, or on two nodes one
//! after the other, does nothing the second time. [`next_due`] is the earliest moment any
//! rule may fire; the scheduler only looks at exceptions whose moment has come.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::error::{DomainError, Errors, FieldError};
use crate::lifecycle::{Action, Status};
use crate::policy::ApprovalPolicy;
use crate::record::{CheckResult, ControlCheck, ControlId, ControlStatus, Exception, Review, ReviewOutcome, bounded};
use crate::risk::Level;
use crate::workflow::{
    Ctx, Happening, catch_up, finish_if_complete, guard, happened, plausible, supersede_below, truncate,
};

/// What the database knows at submit that the record does not.
#[derive(Debug, Clone, Default)]
pub struct SubmitFacts {
    /// For each of the exception's assets, the keys of other exceptions covering it now.
    pub covering_on_assets: Vec<(String, Vec<String>)>,
    /// Keys of the exceptions covering now in the same business unit.
    pub business_unit_covering: Vec<String>,
    /// Keys of earlier exceptions (any status but draft and withdrawn) sharing an asset and
    /// a control with this one.
    pub earlier_sharing: Vec<String>,
}

/// Enforces the covering limits and detects repeats; returns the chronic reason, if any.
pub fn judge_submit(
    e: &Exception,
    policy: &ApprovalPolicy,
    facts: &SubmitFacts,
) -> Result<Option<String>, DomainError> {
    for (asset, holders) in &facts.covering_on_assets {
        if holders.len() as u64 + 1 > u64::from(policy.max_covering_per_asset) {
            return Err(DomainError::LimitExceeded {
                scope: "asset",
                name: asset.clone(),
                limit: policy.max_covering_per_asset,
                holders: holders.clone(),
            });
        }
    }
    if let Some(limit) = policy.business_unit_limits.get(&e.fields.business_unit)
        && facts.business_unit_covering.len() as u64 + 1 > u64::from(*limit)
    {
        return Err(DomainError::LimitExceeded {
            scope: "business_unit",
            name: e.fields.business_unit.clone(),
            limit: *limit,
            holders: facts.business_unit_covering.clone(),
        });
    }
    let n = facts.earlier_sharing.len();
    Ok((n as u64 >= u64::from(policy.chronic_threshold)).then(|| {
        format!("{n} earlier exception(s) on the same asset and control: {}", facts.earlier_sharing.join(", "))
    }))
}

/// Break-glass: active at once, for at most the emergency maximum.
pub fn activate_emergency(e: &mut Exception, ctx: &Ctx<'_>) -> Result<Vec<Happening>, DomainError> {
    let now = truncate(ctx.now);
    let latest = now + Duration::hours(i64::from(ctx.policy.emergency_max_hours));
    let expires_at = e.fields.expires_at.filter(|x| *x > now).map_or(latest, |x| x.min(latest));
    e.emergency = true;
    e.fields.starts_at = Some(now);
    e.fields.expires_at = Some(expires_at);
    e.submitted_at = Some(now);
    e.status = Status::Active;
    Ok(vec![happened(
        "activated",
        Status::Draft,
        Status::Active,
        json!({"emergency": true, "expires_at": expires_at}),
        "exception.activated",
    )])
}

/// Recomputes the residual with the controls as they stand at `now` (failed or overdue ones
/// no longer count). A higher level during approval needs its own approvals. On a covering
/// exception a control that stopped reducing risk flags it at risk; when that raises the
/// level above the one its approvals accepted, a new round opens by itself.
pub fn reassess_controls(e: &mut Exception, policy: &ApprovalPolicy, now: DateTime<Utc>) -> Vec<Happening> {
    let controls = e.controls.clone();
    let status = e.status;
    let Some(r) = e.assessments.last_mut() else { return Vec::new() };
    let (old_score, old) = (r.residual_score, r.residual_level());
    r.recompute(&controls, now);
    let (score, new) = (r.residual_score, r.residual_level());
    let mut out = Vec::new();
    if score != old_score {
        out.push(Happening {
            event: None,
            ..happened(
                "risk_recomputed",
                status,
                status,
                json!({"residual_score": score.value(), "residual_level": new.as_str(), "previous_level": old.as_str()}),
                "",
            )
        });
    }
    if new > old && status == Status::PendingApproval {
        supersede_below(e, new);
    }
    let covering = matches!(status, Status::Active | Status::RenewalPending);
    let failing = e
        .controls
        .iter()
        .any(|c| c.status == ControlStatus::Failed || (c.status == ControlStatus::Verified && !c.reduces_risk(now)));
    if covering && failing && !e.at_risk {
        e.at_risk = true;
        out.push(happened(
            "at_risk",
            status,
            status,
            json!({"residual_level": new.as_str(), "approved_level": e.approved_level.map(Level::as_str)}),
            "exception.at_risk",
        ));
    }
    // Only a recompute that itself raised the level opens a round: a renewal's fresh
    // assessment at a higher level is judged by that round's own approvals.
    if status == Status::Active
        && new > old
        && e.at_risk_since.is_none()
        && let Some(approved) = e.approved_level
        && new > approved
    {
        e.at_risk = true;
        e.at_risk_since = Some(truncate(now));
        e.status = Status::RenewalPending;
        e.round += 1;
        e.pending_expires_at = None;
        out.push(happened(
            "renewal_requested",
            Status::Active,
            Status::RenewalPending,
            json!({"round": e.round, "reason": "controls_failed", "approved_level": approved.as_str(),
                "residual_level": new.as_str(),
                "revoke_after": truncate(now) + Duration::days(i64::from(policy.controls_failed_grace_days))}),
            "exception.renewal_requested",
        ));
    }
    // every control works again and no round is running because of them: the flag clears
    if covering && !failing && e.at_risk && e.at_risk_since.is_none() {
        e.at_risk = false;
        out.push(happened(
            "at_risk_cleared",
            status,
            status,
            json!({"residual_level": new.as_str()}),
            "exception.updated",
        ));
    }
    out
}

fn end_by_time(e: &mut Exception, action: &'static str, to: Status, reason: &str, event: &'static str) -> Happening {
    let from = e.status;
    e.status = to;
    e.status_reason = Some(reason.to_owned());
    Happening { by_system: true, ..happened(action, from, to, json!({"reason": reason}), event) }
}

/// The reminder thresholds of the current expiry: name and moment.
fn reminders(e: &Exception, policy: &ApprovalPolicy) -> Vec<(String, DateTime<Utc>)> {
    let (Some(start), Some(end)) = (e.fields.starts_at, e.fields.expires_at) else { return Vec::new() };
    let mut out: Vec<(String, DateTime<Utc>)> =
        policy.reminder_days_before.iter().map(|d| (format!("{d}d"), end - Duration::days(i64::from(*d)))).collect();
    let lifetime = (end - start).num_seconds().max(0);
    let pct = i64::from(policy.reminder_lifetime_percent.min(100));
    out.push((format!("{pct}pct"), start + Duration::seconds(lifetime * pct / 100)));
    out
}

/// Applies every time rule that is due at `now`. Idempotent.
pub fn tick(e: &mut Exception, policy: &ApprovalPolicy, now: DateTime<Utc>) -> Vec<Happening> {
    let now = truncate(now);
    // An unratified emergency is revoked at its maximum, which is also its expiry: the
    // revocation says why it ended, so it comes first.
    if matches!(e.status, Status::Active | Status::RenewalPending)
        && e.emergency
        && e.approved_at.is_none()
        && e.fields.starts_at.is_some_and(|s| now >= s + Duration::hours(i64::from(policy.emergency_max_hours)))
    {
        e.closed_at = Some(now);
        e.updated_at = now;
        return vec![end_by_time(e, "revoked", Status::Revoked, "emergency_not_ratified", "exception.revoked")];
    }
    let mut out = catch_up(e, now);
    match e.status {
        Status::Submitted | Status::PendingApproval => {
            let Some(submitted) = e.submitted_at else { return out };
            if now >= policy.timeout_deadline(e.fields.priority, submitted) {
                e.closed_at = Some(now);
                out.push(end_by_time(e, "auto_rejected", Status::Rejected, "approval_timeout", "exception.rejected"));
                return out;
            }
            let sla = policy.sla_deadline(e.fields.priority, submitted);
            if now >= sla && e.escalated_at.is_none() {
                e.escalated_at = Some(now);
                let s = e.status;
                out.push(Happening {
                    by_system: true,
                    ..happened("escalated", s, s, json!({"sla_due_at": sla}), "exception.escalated")
                });
            }
        }
        Status::Active | Status::RenewalPending => {
            let revoke = |e: &mut Exception, reason: &str, out: &mut Vec<Happening>| {
                e.closed_at = Some(now);
                out.push(end_by_time(e, "revoked", Status::Revoked, reason, "exception.revoked"));
            };
            if e.status == Status::RenewalPending
                && e.at_risk_since
                    .is_some_and(|t| now >= t + Duration::days(i64::from(policy.controls_failed_grace_days)))
            {
                revoke(e, "controls_failed", &mut out);
                return out;
            }
            if let Some(review) = e.next_review_at {
                if now >= review + Duration::days(i64::from(policy.review_grace_days)) {
                    revoke(e, "review_overdue", &mut out);
                    return out;
                }
                if now >= review && e.review_notified_at != Some(review) {
                    e.review_notified_at = Some(review);
                    let s = e.status;
                    out.push(Happening {
                        by_system: true,
                        ..happened("review_due", s, s, json!({"next_review_at": review}), "exception.review_due")
                    });
                }
            }
            for (name, at) in reminders(e, policy) {
                if now >= at && !e.reminders_sent.contains(&name) {
                    e.reminders_sent.push(name.clone());
                    let s = e.status;
                    out.push(Happening {
                        by_system: true,
                        ..happened(
                            "expiring",
                            s,
                            s,
                            json!({"threshold": name, "expires_at": e.fields.expires_at}),
                            "exception.expiring",
                        )
                    });
                }
            }
        }
        Status::Draft
        | Status::Approved
        | Status::Rejected
        | Status::Withdrawn
        | Status::Expired
        | Status::Revoked
        | Status::Closed => {}
    }
    // Controls whose check fell due stop reducing risk in every live state, not only once
    // covering: an approval must never accept a residual that no longer holds.
    if matches!(
        e.status,
        Status::Submitted | Status::PendingApproval | Status::Approved | Status::Active | Status::RenewalPending
    ) {
        let changed = reassess_controls(e, policy, now);
        out.extend(changed.into_iter().map(|h| Happening { by_system: true, ..h }));
    }
    if !out.is_empty() {
        e.updated_at = now;
    }
    out
}

/// After a change at `now`: stamps it and moves the scheduler's next moment.
pub fn settle(e: &mut Exception, policy: &ApprovalPolicy, now: DateTime<Utc>, changed: bool) {
    if changed {
        e.updated_at = truncate(now);
    }
    e.next_due_at = next_due(e, policy, now);
}

/// The earliest moment a time rule may change the exception; `None` when none ever will.
/// `evaluated` is when [`tick`] last ran on it: control checks that fell due by then are
/// already reflected in the residual.
pub fn next_due(e: &Exception, policy: &ApprovalPolicy, evaluated: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut due: Vec<DateTime<Utc>> = Vec::new();
    match e.status {
        Status::Submitted | Status::PendingApproval => {
            if let Some(s) = e.submitted_at {
                due.push(policy.timeout_deadline(e.fields.priority, s));
                if e.escalated_at.is_none() {
                    due.push(policy.sla_deadline(e.fields.priority, s));
                }
            }
        }
        Status::Approved => due.extend(e.fields.starts_at.or(e.fields.expires_at)),
        Status::Active | Status::RenewalPending => {
            due.extend(e.fields.expires_at);
            if e.emergency && e.approved_at.is_none() {
                due.extend(e.fields.starts_at.map(|s| s + Duration::hours(i64::from(policy.emergency_max_hours))));
            }
            if e.status == Status::RenewalPending {
                due.extend(e.at_risk_since.map(|t| t + Duration::days(i64::from(policy.controls_failed_grace_days))));
            }
            if let Some(r) = e.next_review_at {
                due.push(r + Duration::days(i64::from(policy.review_grace_days)));
                if e.review_notified_at != Some(r) {
                    due.push(r);
                }
            }
            due.extend(reminders(e, policy).into_iter().filter(|(n, _)| !e.reminders_sent.contains(n)).map(|(_, t)| t));
            // a check that fell due after the last save has not been applied yet
        }
        Status::Draft | Status::Rejected | Status::Withdrawn | Status::Expired | Status::Revoked | Status::Closed => {}
    }
    // a check falling due after the last evaluation changes the residual (once there is one)
    if !e.status.is_terminal() && e.status != Status::Draft && e.risk().is_some() {
        due.extend(e.controls.iter().filter_map(|c| c.check_due_at()).filter(|t| *t > evaluated));
    }
    due.into_iter().min()
}

/// Asks for a new expiry with a fresh justification: a new round opens, still covering until
/// the old expiry.
pub fn request_renewal(
    e: &mut Exception,
    ctx: &Ctx<'_>,
    expires_at: DateTime<Utc>,
    justification: &str,
) -> Result<Vec<Happening>, DomainError> {
    guard(e, ctx, Action::RequestRenewal)?;
    let mut errors = Errors::default();
    let justification = errors.take(bounded("justification", justification, 10, 10_000));
    if !plausible(expires_at) || e.fields.expires_at.is_some_and(|x| expires_at <= x) {
        errors.push(FieldError::new("expires_at", "not_later", "must be after the current expires_at"));
    }
    errors.finish()?;
    let from = e.status;
    e.status = Status::RenewalPending;
    e.round += 1;
    e.pending_expires_at = Some(truncate(expires_at));
    e.renewal_justification = justification;
    Ok(vec![happened(
        "renewal_requested",
        from,
        Status::RenewalPending,
        json!({"round": e.round, "expires_at": e.pending_expires_at, "justification": e.renewal_justification}),
        "exception.renewal_requested",
    )])
}

/// What a reviewer sends.
#[derive(Debug, Clone)]
pub struct ReviewInput {
    /// Are the compensating controls still effective?
    pub controls_effective: bool,
    /// Is the justification still valid?
    pub justification_valid: bool,
    /// Is there a better option now?
    pub better_option_available: bool,
    /// Continue or revoke, wire name.
    pub outcome: String,
    /// Remark.
    pub comment: Option<String>,
}

/// Records a periodic review; moves `next_review_at`; `revoke` revokes.
pub fn review(e: &mut Exception, ctx: &Ctx<'_>, input: &ReviewInput, id: Uuid) -> Result<Vec<Happening>, DomainError> {
    guard(e, ctx, Action::Review)?;
    let outcome = ReviewOutcome::parse_field("outcome", &input.outcome).map_err(|f| DomainError::Invalid(vec![f]))?;
    let comment = match input.comment.as_deref() {
        Some(c) => Some(bounded("comment", c, 0, 5000).map_err(|f| DomainError::Invalid(vec![f]))?),
        None => None,
    };
    let now = truncate(ctx.now);
    let level = e.risk().map_or(Level::Low, crate::risk::Assessment::residual_level);
    e.reviews.push(Review {
        id,
        round: e.round,
        reviewer: ctx.actor.subject.clone(),
        at: now,
        controls_effective: input.controls_effective,
        justification_valid: input.justification_valid,
        better_option_available: input.better_option_available,
        outcome,
        comment: comment.filter(|c| !c.is_empty()),
    });
    let from = e.status;
    e.next_review_at = Some(now + ctx.policy.review_interval(level));
    e.review_notified_at = None;
    let mut out = vec![happened(
        "reviewed",
        from,
        from,
        json!({"outcome": outcome.as_str(), "controls_effective": input.controls_effective,
            "justification_valid": input.justification_valid, "better_option_available": input.better_option_available,
            "next_review_at": e.next_review_at}),
        "exception.reviewed",
    )];
    if outcome == ReviewOutcome::Revoke {
        e.status = Status::Revoked;
        e.status_reason = Some("review_revoked".to_owned());
        e.closed_at = Some(now);
        out.push(happened("revoked", from, Status::Revoked, json!({"reason": "review_revoked"}), "exception.revoked"));
    }
    Ok(out)
}

/// Records a check of a compensating control (an analyst who is not the requester): a pass
/// keeps it verified and restarts its check interval; a fail stops it reducing risk.
pub fn check_control(
    e: &mut Exception,
    ctx: &Ctx<'_>,
    control: ControlId,
    result: &str,
    evidence: &str,
    id: Uuid,
) -> Result<Vec<Happening>, DomainError> {
    guard(e, ctx, Action::ChangeControl)?;
    let mut errors = Errors::default();
    let result = errors.take(CheckResult::parse_field("result", result));
    let evidence = errors.take(bounded("evidence", evidence, 3, 10_000));
    errors.finish()?;
    let (Some(result), Some(evidence)) = (result, evidence) else {
        return Err(DomainError::field("body", "invalid", "incomplete"));
    };
    if !ctx.actor.has(crate::role::Role::Analyst) {
        return Err(DomainError::Forbidden { action: Action::ChangeControl, needs: vec![crate::role::Role::Analyst] });
    }
    if e.is_requester(&ctx.actor.subject) {
        return Err(DomainError::SeparationOfDuties(
            "the requester may not check a control of their own exception".into(),
        ));
    }
    let now = truncate(ctx.now);
    let Some(c) = e.controls.iter_mut().find(|c| c.id == control) else {
        return Err(DomainError::NoSuchControl(control.0.to_string()));
    };
    let before = c.status;
    match result {
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
    let after = c.status;
    e.control_checks.push(ControlCheck {
        id,
        control_id: control,
        result,
        evidence,
        checker: ctx.actor.subject.clone(),
        at: now,
    });
    let s = e.status;
    let mut out = vec![happened(
        "control_checked",
        s,
        s,
        json!({"control_id": control.0, "result": result.as_str(), "from": before.as_str(), "to": after.as_str()}),
        "exception.updated",
    )];
    out.extend(reassess_controls(e, ctx.policy, ctx.now));
    out.extend(finish_if_complete(e, ctx));
    Ok(out)
}
