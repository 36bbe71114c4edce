//! Imports: rows judged and written a batch at a time, each batch in one transaction, so a
//! crash loses at most the batch in flight and never half a row.
//!
//! Every row of a batch is judged under the locks of [`Reading::Locked`] and written as a
//! create or a change is, with its audit events. A row the domain refuses writes nothing and
//! leaves the others. A row the database refuses (an external reference another exception
//! holds) aborts the transaction, so the batch then runs again with a savepoint around each
//! row. A dry run does all of it and rolls back: its answer is the one a real run would give.

use std::collections::HashSet;

use diesel::Connection;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use leeway_domain::ids::{ExceptionId, ExceptionKey, ExceptionRef};
use leeway_domain::record::Exception;
use leeway_domain::workflow::{Change, Facts as DomainFacts};
use uuid::Uuid;

use crate::connection::{Db, Store};
use crate::error::StoreError;
use crate::facts::{Facts, Reading};
use crate::repository::{CallContext, NewRow, find_by_ref, holder, insert, lock, save};
use crate::rows::{ExceptionRow, NewAuditRow};
use crate::seed::{insert_many, reserve_keys_on};

/// Keys reserved at a time while a batch creates.
const KEYS_AT_ONCE: usize = 32;

/// Where an import row lands.
#[derive(Debug)]
pub enum Slot<'a> {
    /// A new exception, with its id and key.
    New(ExceptionId, ExceptionKey),
    /// The exception holding the row's reference.
    Existing(&'a Exception),
}

/// One row to import.
#[derive(Debug, Clone)]
pub struct ImportRow<T> {
    /// The external reference (`system`, `id`) the row upserts by; `None` always creates.
    pub by_ref: Option<(String, String)>,
    /// What the caller's judge makes of it.
    pub input: T,
}

/// What became of a row.
#[derive(Debug)]
pub enum Imported {
    /// A new exception.
    Created(Exception),
    /// The exception holding the reference, changed.
    Updated(Exception),
    /// The exception holding the reference, already as the row says.
    Unchanged(Exception),
}

/// Why a batch's transaction ends without committing.
enum Stop {
    Fail(StoreError),
    /// A row was refused by the database: run the batch again with savepoints.
    Again,
    /// A dry run's results, rolled back.
    DryRun(Vec<Result<Imported, StoreError>>),
}

impl From<diesel::result::Error> for Stop {
    fn from(e: diesel::result::Error) -> Self {
        Stop::Fail(e.into())
    }
}

/// A refusal that concerns the row alone (the others go on).
fn row_level(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Domain(_)
            | StoreError::NotFound
            | StoreError::PreconditionFailed { .. }
            | StoreError::DuplicateExternalRef { .. }
            | StoreError::RefsTaken(_)
    )
}

/// A failure that another run of the batch may not meet: what a row was judged on moved
/// under it (a place freed by the scheduler, a reference moved), or the database broke a
/// deadlock or a serialization conflict (imports take their locks in file order).
fn transient(e: &StoreError) -> bool {
    match e {
        StoreError::Stale => true,
        StoreError::Database(DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _)) => true,
        StoreError::Database(DieselError::DatabaseError(_, info)) => {
            let m = info.message();
            m.contains("deadlock detected") || m.contains("database is locked")
        }
        _ => false,
    }
}

/// A row the database refused for itself (a reference another exception holds): the batch
/// runs again row by row, where that row gets its answer and the others go in.
fn refused(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::RefsTaken(_)
            | StoreError::Database(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _))
    )
}

/// How many times a batch runs: once without savepoints, then with one per row, again while
/// a failure is [`transient`].
const TRIES: u32 = 4;

impl Store {
    /// Imports `rows` in one transaction (rolled back when `dry_run`), judging each with
    /// `judge`; one result per row, in order. `Err` only when the batch as a whole failed
    /// (then nothing of it was written).
    pub fn import_batch<T>(
        &self,
        ctx: CallContext<'_>,
        rows: &[ImportRow<T>],
        dry_run: bool,
        judge: impl Fn(&T, Slot<'_>, &mut dyn DomainFacts) -> Result<Change, StoreError>,
    ) -> Result<Vec<Result<Imported, StoreError>>, StoreError> {
        let mut pooled = self.conn()?;
        let conn: &mut Db = &mut pooled;
        for tries in 0..TRIES {
            // first without savepoints (one round trip a row less); a row the database
            // refuses aborts the transaction, and the batch runs again row by row
            let savepoints = tries > 0;
            let ran = self.write_transaction(conn, |conn| {
                let mut keys: Vec<ExceptionKey> = Vec::new();
                let mut out = Vec::with_capacity(rows.len());
                // without savepoints, new drafts are held back and written together
                let mut pending = (!savepoints).then(Pending::default);
                for (i, row) in rows.iter().enumerate() {
                    // keys are taken outside a row's savepoint: a row rolled back on SQLite
                    // must not roll back the counter under keys still in hand
                    if keys.is_empty() {
                        let n = (rows.len() - i).min(KEYS_AT_ONCE);
                        keys =
                            reserve_keys_on(conn, u32::try_from(n).map_err(StoreError::corrupt).map_err(Stop::Fail)?)
                                .map_err(Stop::Fail)?;
                        keys.reverse();
                    }
                    let done = match pending.as_mut() {
                        None => conn.transaction(|c| import_row(c, &ctx, row, &mut keys, None, &judge)),
                        Some(p) => import_row(conn, &ctx, row, &mut keys, Some(p), &judge),
                    };
                    match done {
                        Ok(imported) => out.push(Ok(imported)),
                        // a failed statement: on PostgreSQL the transaction is aborted, on
                        // SQLite part of the row may be written
                        Err(e @ (StoreError::RefsTaken(_) | StoreError::Database(_))) if !savepoints => {
                            return Err(if refused(&e) || transient(&e) { Stop::Again } else { Stop::Fail(e) });
                        }
                        Err(e) if transient(&e) => return Err(Stop::Again),
                        Err(StoreError::RefsTaken(refs)) => out.push(Err(holder(conn, &refs, ctx.actor))),
                        Err(e) if row_level(&e) => out.push(Err(e)),
                        Err(e) => return Err(Stop::Fail(e)),
                    }
                }
                if let Some(p) = pending.as_mut() {
                    // a reference another exception holds fails the whole INSERT: row by row
                    // then, where the row that holds it is named
                    p.flush(conn)
                        .map_err(|e| if refused(&e) || transient(&e) { Stop::Again } else { Stop::Fail(e) })?;
                }
                if dry_run { Err(Stop::DryRun(out)) } else { Ok(out) }
            });
            match ran {
                Ok(out) | Err(Stop::DryRun(out)) => return Ok(out),
                Err(Stop::Again) => {}
                Err(Stop::Fail(e)) if transient(&e) => {}
                Err(Stop::Fail(e)) => return Err(e),
            }
        }
        Err(StoreError::corrupt("an import batch kept meeting conflicts; run it again"))
    }
}

/// New drafts a batch holds back, to write them with a few multi-row INSERTs (see
/// `seed::insert_many`) rather than a statement each.
#[derive(Default)]
struct Pending {
    rows: Vec<(ExceptionRow, String)>,
    events: Vec<NewAuditRow>,
    /// Their references: a later row looking one up must find it written.
    refs: HashSet<(String, String)>,
}

impl Pending {
    fn flush(&mut self, conn: &mut Db) -> Result<(), StoreError> {
        if !self.rows.is_empty() {
            insert_many(conn, &self.rows, &self.events)?;
            self.rows.clear();
            self.events.clear();
            self.refs.clear();
        }
        Ok(())
    }
}

/// Judges and writes one row: merged into the exception holding its reference, if any,
/// else created under the next of `keys`. With `pending`, a new row that took no place is
/// held back there.
fn import_row<T>(
    conn: &mut Db,
    ctx: &CallContext<'_>,
    row: &ImportRow<T>,
    keys: &mut Vec<ExceptionKey>,
    mut pending: Option<&mut Pending>,
    judge: &impl Fn(&T, Slot<'_>, &mut dyn DomainFacts) -> Result<Change, StoreError>,
) -> Result<Imported, StoreError> {
    if let (Some(p), Some(r)) = (pending.as_deref_mut(), &row.by_ref)
        && p.refs.contains(r)
    {
        p.flush(conn)?;
    }
    let found = match &row.by_ref {
        Some((system, id)) => find_by_ref(conn, system, id)?.map(|found| (system, id, found)),
        None => None,
    };
    if let Some((system, id, found)) = found {
        let locked = lock(conn, ExceptionRef::Id(found), Reading::Locked)?;
        // the reference may have moved between the lookup and the lock
        if !locked.exception.fields.external_refs.iter().any(|r| &r.system == system && &r.id == id) {
            return Err(StoreError::Stale);
        }
        if !ctx.actor.can_see(&locked.exception) {
            // held by an exception the caller cannot see: the reference is taken
            return Err(StoreError::DuplicateExternalRef { system: system.clone(), id: id.clone(), holder: None });
        }
        let mut facts = Facts::new(conn, Reading::Locked);
        let change = facts.run(|f| judge(&row.input, Slot::Existing(&locked.exception), f))?;
        let seen = facts.seen();
        let changed = !change.happened.is_empty();
        let after = save(conn, ctx, &locked, change, seen, None)?;
        return Ok(if changed { Imported::Updated(after) } else { Imported::Unchanged(after) });
    }
    let key = *keys.last().ok_or_else(|| StoreError::corrupt("no key reserved for an import row"))?;
    let mut facts = Facts::new(conn, Reading::Locked);
    let change = facts.run(|f| judge(&row.input, Slot::New(ExceptionId(Uuid::now_v7()), key), f))?;
    let seen = facts.seen();
    let e = match (pending, seen) {
        // nothing to check again under locks: held back, written with the batch's others
        (Some(p), None) => {
            let NewRow { exception, row, head, mut events } = NewRow::of(ctx, change)?;
            p.refs.extend(exception.fields.external_refs.iter().map(|r| (r.system.clone(), r.id.clone())));
            p.rows.push((row, head));
            p.events.append(&mut events);
            exception
        }
        (_, seen) => insert(conn, ctx, change, seen, None)?,
    };
    // taken only once used: a refused row leaves its key to the next
    keys.pop();
    Ok(Imported::Created(e))
}
