//! Renewal rounds and periodic reviews (spec section 4).

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::access::guard;
use crate::error::DomainError;
use crate::kinds::{Action, AuditAction, EventType, Level, Reason, ReviewOutcome, Status};
use crate::record::{Exception, Happening, Review};
use crate::risk::Assessment;
use crate::text::{Errors, FieldError, bounded};
use crate::time;

use super::Ctx;

/// A renewal request, parsed.
#[derive(Debug, Clone)]
pub struct RenewalInput {
    /// The new expiry asked for.
    pub expires_at: DateTime<Utc>,
    /// Why the exception is still needed.
    pub justification: String,
}

/// A periodic review, parsed.
#[derive(Debug, Clone)]
pub struct ReviewInput {
    /// The review's id.
    pub id: Uuid,
    /// Are the compensating controls still effective?
    pub controls_effective: bool,
    /// Is the justification still valid?
    pub justification_valid: bool,
    /// Is there a better option now?
    pub better_option_available: bool,
    /// Continue or revoke.
    pub outcome: ReviewOutcome,
    /// Remark.
    pub comment: Option<String>,
}

/// Asks for a new expiry with a fresh justification: a new round opens, still covering until
/// the old expiry.
pub(super) fn request(e: &mut Exception, ctx: &Ctx<'_>, input: RenewalInput) -> Result<Vec<Happening>, DomainError> {
    guard(e, ctx.actor, ctx.policy, ctx.now, Action::RequestRenewal)?;
    let mut errors = Errors::default();
    let justification = errors.take(bounded("justification", &input.justification, 10, 10_000));
    let expires_at = errors.take(time::moment("expires_at", input.expires_at));
    if let Some(x) = expires_at
        && e.fields.expires_at.is_some_and(|current| x <= current)
    {
        errors.push(FieldError::new("expires_at", "not_later", "must be after the current expires_at"));
    }
    let (justification, expires_at) = errors.finish(justification.zip(expires_at))?;
    e.round += 1;
    e.pending_expires_at = Some(expires_at);
    e.renewal_justification = Some(justification.clone());
    let changes = json!({"round": e.round, "expires_at": expires_at, "justification": justification});
    Ok(vec![e.enter(
        Action::RequestRenewal,
        Status::RenewalPending,
        ctx.now,
        AuditAction::RenewalRequested,
        changes,
        Some(EventType::RenewalRequested),
    )?])
}

/// Records a periodic review; moves `next_review_at`; `revoke` revokes.
pub(super) fn review(e: &mut Exception, ctx: &Ctx<'_>, input: ReviewInput) -> Result<Vec<Happening>, DomainError> {
    guard(e, ctx.actor, ctx.policy, ctx.now, Action::Review)?;
    let comment = super::comment(input.comment.as_deref())?;
    let now = time::truncate(ctx.now);
    let level = e.risk().map_or(Level::Low, Assessment::residual_level);
    let next_review_at =
        time::add(now, ctx.policy.review_interval(level)).ok_or(DomainError::Overflow("the next review"))?;
    let round = e.round;
    e.reviews.push(Review {
        id: input.id,
        round,
        reviewer: ctx.actor.subject.clone(),
        at: now,
        controls_effective: input.controls_effective,
        justification_valid: input.justification_valid,
        better_option_available: input.better_option_available,
        outcome: input.outcome,
        comment,
    });
    e.next_review_at = Some(next_review_at);
    e.review_notified_at = None;
    let changes = json!({"outcome": input.outcome, "controls_effective": input.controls_effective,
        "justification_valid": input.justification_valid, "better_option_available": input.better_option_available,
        "next_review_at": next_review_at});
    let mut out = vec![e.note(AuditAction::Reviewed, changes, Some(EventType::Reviewed))];
    if input.outcome == ReviewOutcome::Revoke {
        e.status_reason = Some(Reason::ReviewRevoked);
        out.push(e.enter(
            Action::Review,
            Status::Revoked,
            now,
            AuditAction::Revoked,
            json!({"reason": Reason::ReviewRevoked}),
            Some(EventType::Revoked),
        )?);
    }
    Ok(out)
}
