//! What time does to an exception (spec sections 3 and 4): activation, expiry, the approval
//! SLA and timeout, reviews, reminders, emergencies and control checks.
//!
//! [`tick`] applies every rule that is due and is idempotent: what it did is recorded on the
//! exception (flags, timestamps, status), so running it twice, or on two nodes one after the
//! other, does nothing the second time. [`next_due`] is the earliest moment any rule may
//! fire; the scheduler only looks at exceptions whose moment has come.

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::error::DomainError;
use crate::kinds::{Action, AuditAction, EventType, Reason, Status};
use crate::policy::ApprovalPolicy;
use crate::record::{Exception, Happening};
use crate::time;

use super::controls::reassess;

/// Ends the exception by time with a reason.
fn end_by_time(
    e: &mut Exception,
    row: Action,
    to: Status,
    now: DateTime<Utc>,
    reason: Reason,
) -> Result<Happening, DomainError> {
    let (action, event) = match to {
        Status::Rejected => (AuditAction::AutoRejected, EventType::Rejected),
        _ => (AuditAction::Revoked, EventType::Revoked),
    };
    e.status_reason = Some(reason);
    e.enter(row, to, now, action, json!({"reason": reason}), Some(event))
}

/// The transitions time has already made at `now` (activation, expiry).
fn catch_up(e: &mut Exception, now: DateTime<Utc>) -> Result<Vec<Happening>, DomainError> {
    let mut out = Vec::new();
    if e.status() == Status::Approved && e.fields.starts_at.is_none_or(|s| s <= now) {
        let at = e.fields.starts_at.unwrap_or(now);
        if e.fields.expires_at.is_none_or(|x| at < x) {
            out.push(e.enter(
                Action::Activate,
                Status::Active,
                at,
                AuditAction::Activated,
                json!({"effective_at": at}),
                Some(EventType::Activated),
            )?);
        }
    }
    if matches!(e.status(), Status::Approved | Status::Active | Status::RenewalPending)
        && let Some(x) = e.fields.expires_at.filter(|x| now >= *x)
    {
        out.push(e.enter(
            Action::Expire,
            Status::Expired,
            x,
            AuditAction::Expired,
            json!({"effective_at": x}),
            Some(EventType::Expired),
        )?);
    }
    Ok(out)
}

/// The reminder thresholds of the current expiry: name and moment.
fn reminders(e: &Exception, policy: &ApprovalPolicy) -> Vec<(String, DateTime<Utc>)> {
    let (Some(start), Some(end)) = (e.fields.starts_at, e.fields.expires_at) else { return Vec::new() };
    let mut out: Vec<(String, DateTime<Utc>)> = policy
        .reminder_days_before
        .iter()
        .filter_map(|d| time::sub(end, time::days(*d)).map(|at| (format!("{d}d"), at)))
        .collect();
    // at most chrono's whole range in seconds (about 1.7e13) times 100: far inside i64
    let lifetime = (end - start).num_seconds().max(0);
    let pct = policy.reminder_lifetime_percent.min(100);
    if let Some(at) = time::add(start, chrono::Duration::seconds(lifetime * i64::from(pct) / 100)) {
        out.push((format!("{pct}pct"), at));
    }
    out
}

/// The moment an unratified emergency is revoked.
fn emergency_deadline(e: &Exception, policy: &ApprovalPolicy) -> Option<DateTime<Utc>> {
    if !(e.emergency && e.approved_at.is_none()) {
        return None;
    }
    e.fields.starts_at.and_then(|s| time::add(s, time::hours(policy.emergency_max_hours)))
}

fn controls_failed_deadline(e: &Exception, policy: &ApprovalPolicy) -> Option<DateTime<Utc>> {
    e.at_risk_since.and_then(|t| time::add(t, time::days(policy.controls_failed_grace_days)))
}

fn review_revocation(review: DateTime<Utc>, policy: &ApprovalPolicy) -> Option<DateTime<Utc>> {
    time::add(review, time::days(policy.review_grace_days))
}

/// Applies every time rule that is due at `now`. Idempotent.
pub(super) fn tick(
    e: &mut Exception,
    policy: &ApprovalPolicy,
    now: DateTime<Utc>,
) -> Result<Vec<Happening>, DomainError> {
    let now = time::truncate(now);
    let covering = |e: &Exception| matches!(e.status(), Status::Active | Status::RenewalPending);
    // An unratified emergency is revoked at its maximum, which is also its expiry: the
    // revocation says why it ended, so it comes first.
    if covering(e) && emergency_deadline(e, policy).is_some_and(|d| now >= d) {
        return Ok(vec![end_by_time(e, Action::Revoke, Status::Revoked, now, Reason::EmergencyNotRatified)?]);
    }
    let mut out = catch_up(e, now)?;
    match e.status() {
        Status::Submitted | Status::PendingApproval => {
            let Some(submitted) = e.submitted_at else { return Ok(out) };
            if policy.timeout_deadline(e.fields.priority, submitted).is_some_and(|d| now >= d) {
                out.push(end_by_time(e, Action::AutoReject, Status::Rejected, now, Reason::ApprovalTimeout)?);
                return Ok(out);
            }
            if let Some(sla) = policy.sla_deadline(e.fields.priority, submitted).filter(|d| now >= *d)
                && e.escalated_at.is_none()
            {
                e.escalated_at = Some(now);
                out.push(e.note(AuditAction::Escalated, json!({"sla_due_at": sla}), Some(EventType::Escalated)));
            }
        }
        Status::Active | Status::RenewalPending => {
            if e.status() == Status::RenewalPending && controls_failed_deadline(e, policy).is_some_and(|d| now >= d) {
                out.push(end_by_time(e, Action::Revoke, Status::Revoked, now, Reason::ControlsFailed)?);
                return Ok(out);
            }
            if let Some(review) = e.next_review_at {
                if review_revocation(review, policy).is_some_and(|d| now >= d) {
                    out.push(end_by_time(e, Action::Revoke, Status::Revoked, now, Reason::ReviewOverdue)?);
                    return Ok(out);
                }
                if now >= review && e.review_notified_at != Some(review) {
                    e.review_notified_at = Some(review);
                    out.push(e.note(
                        AuditAction::ReviewDue,
                        json!({"next_review_at": review}),
                        Some(EventType::ReviewDue),
                    ));
                }
            }
            for (name, at) in reminders(e, policy) {
                if now >= at && !e.reminders_sent.contains(&name) {
                    let h = e.note(
                        AuditAction::Expiring,
                        json!({"threshold": name, "expires_at": e.fields.expires_at}),
                        Some(EventType::Expiring),
                    );
                    e.reminders_sent.push(name);
                    out.push(h);
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
        e.status(),
        Status::Submitted | Status::PendingApproval | Status::Approved | Status::Active | Status::RenewalPending
    ) {
        out.extend(reassess(e, policy, now)?);
    }
    Ok(out)
}

/// After a change at `now`: moves the scheduler's next moment.
pub(super) fn settle(e: &mut Exception, policy: &ApprovalPolicy, now: DateTime<Utc>) {
    e.next_due_at = next_due(e, policy, now);
}

/// The earliest moment a time rule may change the exception; `None` when none ever will.
/// `evaluated` is when [`tick`] last ran on it: control checks that fell due by then are
/// already reflected in the residual.
pub fn next_due(e: &Exception, policy: &ApprovalPolicy, evaluated: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut due: Vec<Option<DateTime<Utc>>> = Vec::new();
    match e.status() {
        Status::Submitted | Status::PendingApproval => {
            if let Some(s) = e.submitted_at {
                due.push(policy.timeout_deadline(e.fields.priority, s));
                if e.escalated_at.is_none() {
                    due.push(policy.sla_deadline(e.fields.priority, s));
                }
            }
        }
        Status::Approved => due.push(e.fields.starts_at.or(e.fields.expires_at)),
        Status::Active | Status::RenewalPending => {
            due.push(e.fields.expires_at);
            due.push(emergency_deadline(e, policy));
            if e.status() == Status::RenewalPending {
                due.push(controls_failed_deadline(e, policy));
            }
            if let Some(r) = e.next_review_at {
                due.push(review_revocation(r, policy));
                if e.review_notified_at != Some(r) {
                    due.push(Some(r));
                }
            }
            due.extend(
                reminders(e, policy).into_iter().filter(|(n, _)| !e.reminders_sent.contains(n)).map(|(_, t)| Some(t)),
            );
        }
        Status::Draft | Status::Rejected | Status::Withdrawn | Status::Expired | Status::Revoked | Status::Closed => {}
    }
    // a check falling due after the last evaluation changes the residual (once there is one)
    if !e.status().is_terminal() && e.status() != Status::Draft && e.risk().is_some() {
        due.extend(e.controls.iter().filter_map(|c| c.check_due_at()).filter(|t| *t > evaluated).map(Some));
    }
    due.into_iter().flatten().min()
}
