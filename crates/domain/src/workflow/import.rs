//! Imports: rows from a spreadsheet or another tool, filed the way an integration files a
//! request (the importer is the requester of record; `on_behalf_of` names the person), or
//! merged into the exception that holds the row's external reference. The event that records
//! the row is `imported` (`exception.imported`); a submit in the same row stays `submitted`.

use uuid::Uuid;

use crate::access::Actor;
use crate::error::DomainError;
use crate::ids::{ExceptionId, ExceptionKey};
use crate::kinds::{AuditAction, EventType, Role, Status};
use crate::record::{Exception, Fields, FieldsPatch};

use super::{Change, Ctx, Facts, NewException, Operation, apply, create};

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
