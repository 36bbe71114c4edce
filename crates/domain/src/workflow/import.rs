//! Imports: rows from a spreadsheet or another tool, filed the way an integration files a
//! request (the importer is the requester of record; `on_behalf_of` names the person), or
//! merged into the exception that holds the row's external reference. The event that records
//! the row is `imported` (`exception.imported`); a submit in the same row stays `submitted`.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::access::Actor;
use crate::error::DomainError;
use crate::ids::{ExceptionId, ExceptionKey, Subject};
use crate::kinds::{AuditAction, EventType, Role, Status};
use crate::record::{Exception, Fields, FieldsPatch, Happening};
use crate::text::{Errors, FieldError};
use crate::time;

use super::{ApproveInput, AssessInput, Change, Ctx, Facts, NewException, Operation, apply, create};

/// The roles that may import.
pub const IMPORT_ROLES: &[Role] = &[Role::Analyst, Role::Integration, Role::Admin];

/// The caller as an import judges it: with the `integration` role added, so that it files
/// rows as an integration does (and may name `on_behalf_of`). `None` for a role that may not
/// import.
pub fn importer(actor: &Actor) -> Option<Actor> {
    if !actor.has_any(IMPORT_ROLES) {
        return None;
    }
    let mut a = actor.clone();
    if !a.has(Role::Integration) {
        a.roles.push(Role::Integration);
    }
    // an importer files for every unit
    a.business_unit = None;
    Some(a)
}

/// Records a row's creation or merge as `imported`.
fn imported(mut change: Change, row: u64) -> Change {
    for h in &mut change.happened {
        if matches!(h.action, AuditAction::Created | AuditAction::Updated) {
            h.action = AuditAction::Imported;
            h.event = Some(EventType::Imported);
            if let Some(map) = h.changes.as_object_mut() {
                map.insert("import_row".to_owned(), row.into());
            }
        }
    }
    change
}

/// A new exception from import row `row` (1-based); `ctx.actor` is the [`importer`].
pub fn import_create(
    ctx: &Ctx<'_>,
    id: ExceptionId,
    key: ExceptionKey,
    input: NewException,
    row: u64,
    new_id: &mut dyn FnMut() -> Uuid,
    facts: &mut dyn Facts,
) -> Result<Change, DomainError> {
    Ok(imported(create(ctx, id, key, input, new_id, facts)?, row))
}

/// Import row `row` merged into `e`, the exception holding its reference: the members sent
/// change as far as the state allows, and a draft is submitted when `submit`. Nothing to
/// change writes nothing.
pub fn import_merge(
    e: &Exception,
    ctx: &Ctx<'_>,
    patch: FieldsPatch,
    submit: bool,
    row: u64,
    facts: &mut dyn Facts,
) -> Result<Change, DomainError> {
    // a row already as the exception is changes nothing, whoever may change it: a re-run, or
    // an export imported again, is `unchanged` rather than refused
    let same = Fields::parse(&e.fields.to_input().patched(patch.clone())).is_ok_and(|f| e.fields.diff(&f).is_empty());
    if same && !(submit && e.status() == Status::Draft) {
        return Ok(Change { after: e.clone(), happened: Vec::new() });
    }
    let mut change = apply(e, ctx, Operation::Update(patch), facts)?;
    if submit && change.after.status() == Status::Draft {
        let then = apply(&change.after, ctx, Operation::Submit, facts)?;
        change.happened.extend(then.happened);
        change.after = then.after;
    }
    Ok(imported(change, row))
}

/// One approval a legacy row says was given.
#[derive(Debug, Clone)]
pub struct LegacyApproval {
    /// The role it was given in.
    pub role: Role,
    /// Who gave it.
    pub approver: Subject,
    /// When.
    pub approved_at: DateTime<Utc>,
    /// Their remark.
    pub comment: Option<String>,
}

/// A legacy row: an exception as it stood in the tool it comes from.
#[derive(Debug, Clone)]
pub struct Legacy {
    /// The create fields and controls.
    pub new: NewException,
    /// Where it stood.
    pub status: Status,
    /// When it was created there.
    pub created_at: DateTime<Utc>,
    /// Its risk assessment, as `PUT /v1/exceptions/{id}/risk` takes it.
    pub risk: Option<AssessInput>,
    /// The approvals given.
    pub approvals: Vec<LegacyApproval>,
    /// The row's original values, for the audit event.
    pub original: Value,
}

/// A legacy row brought in as it was: its history is replayed through the lifecycle (create
/// and submit at `created_at`, the assessment then, each approval at its `approved_at` by its
/// approver in its role, the terminal action the status names at the last of those moments,
/// then time up to now), so every rule holds: a state the table does not reach, a duration
/// beyond policy, approvals the residual level does not need, or approvals after the
/// approval timeout make the row invalid with the domain's reason. The result must be the
/// status the row names; an approved or active row past its expiry lands `expired`. Only one
/// event is written, `imported`, at `ctx.now` by the importer, with the original values:
/// Leeway records that it was told this history, not that it saw it.
pub fn import_legacy(
    ctx: &Ctx<'_>,
    id: ExceptionId,
    key: ExceptionKey,
    input: Legacy,
    row: u64,
    new_id: &mut dyn FnMut() -> Uuid,
    facts: &mut dyn Facts,
) -> Result<Change, DomainError> {
    let now = time::truncate(ctx.now);
    let Legacy { mut new, status: wanted, created_at, risk, mut approvals, original } = input;
    let created_at = time::truncate(created_at);
    let mut errors = Errors::default();
    if created_at > now {
        errors.push(FieldError::new("created_at", "in_future", "must not be after the import"));
    }
    if new.emergency {
        errors.push(FieldError::new("emergency", "not_allowed", "an emergency cannot be imported as legacy"));
    }
    if wanted == Status::RenewalPending {
        errors.push(FieldError::new(
            "status",
            "not_importable",
            "import it active and request the renewal in Leeway: a renewal round has no legacy form",
        ));
    }
    approvals.sort_by_key(|a| a.approved_at);
    for (i, a) in approvals.iter().enumerate() {
        if a.approved_at < created_at || a.approved_at > now {
            errors.push(FieldError::new(
                format!("approvals[{i}].approved_at"),
                "out_of_range",
                "must be between created_at and the import",
            ));
        }
    }
    errors.finish(Some(()))?;
    new.submit = false;
    let legacy_analyst = Actor { subject: Subject::legacy_import(), roles: vec![Role::Analyst], business_unit: None };
    let at = |moment: DateTime<Utc>| Ctx { now: moment, ..*ctx };
    let start = at(created_at);
    let mut e = create(&start, id, key, new, new_id, facts)?.after;
    let step =
        |e: &Exception, c: &Ctx<'_>, op: Operation, facts: &mut dyn Facts| apply(e, c, op, facts).map(|ch| ch.after);
    // a draft stays one, and a withdrawn row without an assessment was withdrawn as a draft
    let stays_draft = wanted == Status::Draft || (wanted == Status::Withdrawn && risk.is_none());
    if !stays_draft {
        e = step(&e, &start, Operation::Submit, facts)?;
    }
    if let Some(risk) = risk {
        e = step(&e, &Ctx { actor: &legacy_analyst, ..start }, Operation::Assess(risk), facts)?;
    }
    let mut last = created_at;
    for a in &approvals {
        let approver = Actor { subject: a.approver.clone(), roles: vec![a.role], business_unit: None };
        let input = ApproveInput { id: new_id(), role: Some(a.role), comment: a.comment.clone() };
        e = step(&e, &Ctx { actor: &approver, now: a.approved_at, ..*ctx }, Operation::Approve(input), facts)?;
        last = last.max(a.approved_at);
    }
    let end = at(last);
    let terminal = match wanted {
        Status::Rejected => Some((Operation::Reject(None), &legacy_analyst)),
        Status::Withdrawn => Some((Operation::Withdraw(None), ctx.actor)),
        Status::Revoked => Some((Operation::Revoke(None), ctx.actor)),
        Status::Closed => Some((Operation::Close(None), ctx.actor)),
        _ => None,
    };
    if let Some((op, actor)) = terminal {
        e = step(&e, &Ctx { actor, ..end }, op, facts)?;
    }
    // Leeway has no record of the old tool's reviews: one overdue falls due just after the
    // import (the scheduler's next pass notifies it and the grace period runs from then),
    // rather than revoking the exception at the import
    if let Some(due) = e.next_review_at
        && due <= now
    {
        e.next_review_at = time::add(now, chrono::Duration::seconds(1));
    }
    e = step(&e, &at(now), Operation::Tick, facts)?;
    let landed = e.effective_status(now);
    let expected =
        landed == wanted || (matches!(wanted, Status::Approved | Status::Active) && landed == Status::Expired);
    if !expected {
        return Err(DomainError::field(
            "status",
            "history_mismatch",
            format!(
                "the row says {wanted}, but its history leads to {landed}{}",
                e.status_reason.map(|r| format!(" ({r})")).unwrap_or_default()
            ),
        ));
    }
    // reminders due at the import are sent by the scheduler's next pass
    e.reminders_sent.clear();
    e.version = 1;
    e.updated_at = now;
    let imported = Happening {
        action: AuditAction::Imported,
        row: None,
        from: None,
        to: e.status(),
        changes: json!({"import_row": row, "key": e.key.to_string(), "legacy": original}),
        event: Some(EventType::Imported),
        by_system: false,
    };
    Ok(Change { after: e, happened: vec![imported] })
}
