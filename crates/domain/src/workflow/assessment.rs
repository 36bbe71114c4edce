//! Assessing the risk (spec section 2): the residual level decides the approvals, the longest
//! lifetime and the review interval.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::access::guard;
use crate::error::{DomainError, MaxDuration};
use crate::kinds::{Action, AuditAction, EventType, Level, Status};
use crate::record::{Exception, Happening};
use crate::risk::{Assessment, Method};
use crate::text::{Errors, FieldError, bounded};
use crate::time;

use super::{Ctx, Facts, decision};

/// Most assessments one exception keeps (every re-assessment adds one).
pub const MAX_ASSESSMENTS: usize = 100;

/// What an analyst sends to (re)assess, parsed.
#[derive(Debug, Clone)]
pub struct AssessInput {
    /// The new assessment's id.
    pub id: Uuid,
    /// How the inherent risk is scored.
    pub method: Method,
    /// Why.
    pub rationale: String,
    /// Threats considered.
    pub threat_vectors: Vec<String>,
    /// A shorter expiry, to fit the residual level's maximum duration.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The latest expiry a level allows for a lifetime starting at `start`.
pub(super) fn latest_expiry(ctx: &Ctx<'_>, level: Level, start: DateTime<Utc>) -> Result<DateTime<Utc>, DomainError> {
    time::add(start, ctx.policy.max_duration(level)).ok_or(DomainError::Overflow("the latest allowed expiry"))
}

/// Refuses an expiry later than the level allows.
pub(super) fn within_policy(
    ctx: &Ctx<'_>,
    level: Level,
    start: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<(), DomainError> {
    let latest = latest_expiry(ctx, level, start)?;
    if expires_at > latest {
        return Err(DomainError::DurationExceedsPolicy {
            max: MaxDuration::Level { level, days: ctx.policy.level(level).max_duration_days },
            latest_expires_at: latest,
        });
    }
    Ok(())
}

/// Approvals given for a lower residual level than the current one stop counting.
pub(super) fn supersede_below(e: &mut Exception, level: Level) {
    let round = e.round;
    for a in e.approvals.iter_mut().filter(|a| a.round == round && !a.superseded) {
        if a.risk.residual_level < level {
            a.superseded = true;
        }
    }
}

/// Scores the risk; the residual level decides the approvals, duration and reviews.
pub(super) fn assess(
    e: &mut Exception,
    ctx: &Ctx<'_>,
    input: AssessInput,
    facts: &mut dyn Facts,
) -> Result<Vec<Happening>, DomainError> {
    guard(e, ctx.actor, ctx.policy, ctx.now, Action::Assess)?;
    let mut errors = Errors::default();
    let rationale = errors.take(bounded("rationale", &input.rationale, 3, 10_000));
    let mut threats = Vec::new();
    for (i, t) in input.threat_vectors.iter().enumerate() {
        if let Some(t) = errors.take(bounded(&format!("threat_vectors[{i}]"), t, 1, 200)) {
            threats.push(t);
        }
    }
    if input.threat_vectors.len() > 50 {
        errors.push(FieldError::new("threat_vectors", "too_many", "allows at most 50 items"));
    }
    let status = e.effective_status(ctx.now);
    let now = time::truncate(ctx.now);
    // What the assessment's expires_at bounds: the request's own expiry; in a renewal round
    // the requested new expiry; for an emergency, the ratified expiry (which may go beyond
    // the emergency maximum, within the level's).
    let (requested, start) = match status {
        Status::RenewalPending => (e.pending_expires_at.or(e.fields.expires_at), now),
        Status::Active => (None, e.fields.starts_at.unwrap_or(now)),
        _ => (e.fields.expires_at, e.fields.starts_at.unwrap_or(now)),
    };
    let shorter = input.expires_at.and_then(|x| errors.take(time::moment("expires_at", x)));
    if let Some(x) = shorter
        && requested.is_some_and(|current| x > current)
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
    let expires_at = shorter.or(requested).or(e.fields.expires_at);
    match expires_at {
        Some(x) if x <= start || x <= now => {
            errors.push(FieldError::new("expires_at", "before_start", "must be after starts_at and in the future"));
        }
        None => errors.push(FieldError::new(
            "expires_at",
            "required_to_assess",
            "set expires_at first: the level bounds it",
        )),
        Some(_) => {}
    }
    let (rationale, expires_at) = errors.finish(rationale.zip(expires_at))?;
    let inherent = input.method.inherent();
    let mut assessment = Assessment {
        id: input.id,
        round: e.round,
        method: input.method,
        inherent_score: inherent,
        residual_score: inherent,
        rationale,
        threat_vectors: threats,
        assessed_by: ctx.actor.subject.clone(),
        assessed_at: now,
    };
    assessment.recompute(e.effective_controls(ctx.now));
    let level = assessment.residual_level();
    within_policy(ctx, level, start, expires_at)?;
    let changes = json!({
        "method": assessment.method.kind(),
        "inherent_score": assessment.inherent_score.value(),
        "residual_score": assessment.residual_score.value(),
        "residual_level": level,
        "expires_at": (Some(expires_at) != requested).then_some(expires_at),
    });
    match status {
        Status::RenewalPending | Status::Active => e.pending_expires_at = Some(expires_at),
        _ => e.fields.expires_at = Some(expires_at),
    }
    e.assessments.push(assessment);
    supersede_below(e, level);
    let assessed = match e.status() {
        Status::Submitted | Status::PendingApproval => e.enter(
            Action::Assess,
            Status::PendingApproval,
            now,
            AuditAction::Assessed,
            changes,
            Some(EventType::Assessed),
        )?,
        _ => e.note(AuditAction::Assessed, changes, Some(EventType::Assessed)),
    };
    let mut out = vec![assessed];
    out.extend(decision::finish_if_complete(e, ctx, facts)?);
    Ok(out)
}
