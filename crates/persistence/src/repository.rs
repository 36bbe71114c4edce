//! The exception repository: an exception is one row (its children are JSON documents on it),
//! read by one statement and written back, with its audit and integration events and its
//! idempotency record, by one more (see [`crate::write`]).
//!
//! Round trips on PostgreSQL, in the common case:
//!
//! | operation | statements |
//! |---|---|
//! | get | 1: the row, by key or id |
//! | create | 1: the write (+ the places, when it takes a place) (+ a block of keys, one create in 32) |
//! | change | 2: the row with its audit head, the write (+ the places) |
//!
//! A change is judged on reads made without locks and written only if they still hold; a
//! change that keeps finding them moved is judged again under locks (see
//! [`Store::change`](crate::connection::Store)). On SQLite the same steps run in one IMMEDIATE
//! transaction.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use leeway_domain::access::Actor;
use leeway_domain::audit::{Event, GENESIS};
use leeway_domain::ids::{ExceptionId, ExceptionKey, ExceptionRef};
use leeway_domain::record::{Exception, ExternalRef};
use leeway_domain::workflow::{Change, Facts as DomainFacts};

use crate::audit;
use crate::connection::{Db, Store};
use crate::error::StoreError;
use crate::facts::{Facts, Reading};
use crate::idempotency::{IdempotencyClaim, Outcome, StoredResponse};
use crate::rows::{AuditRow, ExceptionRow, IdempotencyRow};
use crate::schema::{audit_events, exceptions, external_refs};
use crate::write::{Write, write};

/// Who is writing, for the audit trail.
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    /// The caller.
    pub actor: &'a Actor,
    /// The request's `X-Request-Id`.
    pub request_id: Option<&'a str>,
    /// The moment of the write.
    pub now: DateTime<Utc>,
}

/// A loaded exception with the hash its audit chain ends on.
pub(crate) struct Locked {
    pub exception: Exception,
    pub head: String,
}

/// Runs `$query` (a select from `exceptions`) filtered to `$target`, binding the id or key.
macro_rules! by_target {
    ($target:expr, |$q:ident| $run:expr) => {
        match $target {
            ExceptionRef::Id(id) => {
                let $q = exceptions::table.filter(exceptions::id.eq(id.0.to_string()));
                $run
            }
            ExceptionRef::Key(k) => {
                // a key beyond BIGINT names nothing stored
                let n = i64::try_from(k.number()).map_err(|_| StoreError::NotFound)?;
                let $q = exceptions::table.filter(exceptions::key_num.eq(n));
                $run
            }
        }
    };
}

/// The exception `target` names, in one statement.
pub(crate) fn load(conn: &mut Db, target: ExceptionRef) -> Result<Exception, StoreError> {
    let row: Option<ExceptionRow> =
        by_target!(target, |q| q.select(ExceptionRow::as_select()).first(conn).optional()?);
    row.ok_or(StoreError::NotFound)?.into_domain()
}

/// The exception `target` names with its audit head, in one statement. With
/// [`Reading::Locked`] the row is locked for the rest of the transaction (on SQLite the
/// transaction already holds the write lock), so a writer queued behind another chains onto
/// its events; without, the write checks that the row is still at the version read.
pub(crate) fn lock(conn: &mut Db, target: ExceptionRef, reading: Reading) -> Result<Locked, StoreError> {
    let row: Option<(ExceptionRow, String)> = match conn {
        Db::Pg(pg) if reading == Reading::Locked => by_target!(target, |q| q
            .select((ExceptionRow::as_select(), exceptions::audit_head))
            .for_update()
            .first(pg)
            .optional()?),
        Db::Pg(pg) => by_target!(target, |q| q
            .select((ExceptionRow::as_select(), exceptions::audit_head))
            .first(pg)
            .optional()?),
        Db::Sqlite(lite) => by_target!(target, |q| q
            .select((ExceptionRow::as_select(), exceptions::audit_head))
            .first(lite)
            .optional()?),
    };
    let (row, head) = row.ok_or(StoreError::NotFound)?;
    Ok(Locked { exception: row.into_domain()?, head })
}

/// Saves a change to a loaded exception: its row (with the new audit head, only if still at
/// the version loaded), its events, the idempotency record. A change in which nothing
/// happened writes only the idempotency record.
pub(crate) fn save(
    conn: &mut Db,
    ctx: &CallContext<'_>,
    locked: &Locked,
    change: Change,
    facts: Option<crate::write::PlacesSeen>,
    idempotency: Option<IdempotencyRow>,
) -> Result<Exception, StoreError> {
    let Change { after, happened } = change;
    let version = i64::try_from(locked.exception.version).map_err(StoreError::corrupt)?;
    let row = if happened.is_empty() {
        if idempotency.is_none() {
            return Ok(after);
        }
        (None, Vec::new())
    } else {
        // stamped with the change's moment (a write queued behind a later one acts then)
        let row = ExceptionRow::from_domain(&after)?;
        let snapshot = audit::snapshot(&row)?;
        let (events, head) = audit::chain(
            ctx.actor,
            ctx.request_id,
            &after,
            after.updated_at,
            &locked.head,
            &happened,
            Some(&snapshot),
        )?;
        (Some((row, head)), events)
    };
    let (row, events) = row;
    write(
        conn,
        &Write { row, insert: false, version, events, idempotency, places: facts, refs: &after.fields.external_refs },
    )?;
    Ok(after)
}

/// A new exception as it is written: its row, the head of its audit chain, its events.
pub(crate) struct NewRow {
    pub exception: Exception,
    pub row: ExceptionRow,
    pub head: String,
    pub events: Vec<crate::rows::NewAuditRow>,
}

impl NewRow {
    /// The rows a create writes, its events chained from the genesis.
    pub(crate) fn of(ctx: &CallContext<'_>, change: Change) -> Result<Self, StoreError> {
        let Change { after: exception, happened } = change;
        let row = ExceptionRow::from_domain(&exception)?;
        let snapshot = audit::snapshot(&row)?;
        let (events, head) = audit::chain(
            ctx.actor,
            ctx.request_id,
            &exception,
            exception.updated_at,
            GENESIS,
            &happened,
            Some(&snapshot),
        )?;
        Ok(Self { exception, row, head, events })
    }
}

/// Writes a new exception with its audit trail and idempotency record.
pub(crate) fn insert(
    conn: &mut Db,
    ctx: &CallContext<'_>,
    change: Change,
    places: Option<crate::write::PlacesSeen>,
    idempotency: Option<IdempotencyRow>,
) -> Result<Exception, StoreError> {
    let NewRow { exception: e, row, head, events } = NewRow::of(ctx, change)?;
    write(
        conn,
        &Write {
            row: Some((row, head)),
            insert: true,
            version: 0,
            events,
            idempotency,
            places,
            refs: &e.fields.external_refs,
        },
    )?;
    Ok(e)
}

impl Store {
    /// Creates an exception built by `build` from the next key, with its audit trail.
    pub fn create(
        &self,
        ctx: CallContext<'_>,
        idem: Option<&IdempotencyClaim>,
        build: impl Fn(ExceptionKey, &mut dyn DomainFacts) -> Result<Change, StoreError>,
        respond: impl Fn(&Exception) -> StoredResponse,
    ) -> Result<Outcome<Exception>, StoreError> {
        let key = self.next_key()?;
        let written = self.change(idem, ctx.now, |conn, reading| {
            let mut facts = Facts::new(conn, reading);
            let change = facts.run(|f| build(key, f))?;
            let seen = facts.seen();
            let idempotency = idem.map(|c| IdempotencyRow::new(c, respond(&change.after), ctx.now));
            insert(conn, &ctx, change, seen, idempotency)
        });
        self.name_holder(written, ctx.actor)
    }

    /// Loads the exception, applies `op`, and saves what changed with its audit and
    /// integration events. `if_match` guards against lost updates. `op` may ask the database
    /// for facts (limits, repeats) through [`Facts`].
    pub fn mutate(
        &self,
        ctx: CallContext<'_>,
        target: ExceptionRef,
        if_match: Option<u64>,
        idem: Option<&IdempotencyClaim>,
        op: impl Fn(&Exception, &mut dyn DomainFacts) -> Result<Change, StoreError>,
        respond: impl Fn(&Exception) -> StoredResponse,
    ) -> Result<Outcome<Exception>, StoreError> {
        let written = self.change(idem, ctx.now, |conn, reading| {
            let locked = lock(conn, target, reading)?;
            let before = &locked.exception;
            if !ctx.actor.can_see(before) {
                return Err(StoreError::NotFound);
            }
            if let Some(v) = if_match
                && v != before.version
            {
                return Err(StoreError::PreconditionFailed { current: before.version });
            }
            let mut facts = Facts::new(conn, reading);
            let change = facts.run(|f| op(before, f))?;
            let seen = facts.seen();
            let idempotency = idem.map(|c| IdempotencyRow::new(c, respond(&change.after), ctx.now));
            save(conn, &ctx, &locked, change, seen, idempotency)
        });
        self.name_holder(written, ctx.actor)
    }

    /// Turns "one of these references is taken" into the reference and, for a caller who may
    /// see every exception, the key of the exception holding it. Runs only on that refusal.
    fn name_holder<T>(&self, written: Result<T, StoreError>, actor: &Actor) -> Result<T, StoreError> {
        match written {
            Err(StoreError::RefsTaken(refs)) => Err(holder(&mut *self.conn()?, &refs, actor)),
            other => other,
        }
    }

    /// One exception, if it exists and the caller may see it: one statement.
    pub fn get(&self, target: ExceptionRef, actor: &Actor) -> Result<Exception, StoreError> {
        let mut conn = self.conn()?;
        let e = load(&mut conn, target)?;
        if actor.can_see(&e) { Ok(e) } else { Err(StoreError::NotFound) }
    }

    /// The id of the exception holding external reference (`system`, `id`), if any.
    pub fn find_by_ref(&self, system: &str, id: &str) -> Result<Option<ExceptionId>, StoreError> {
        find_by_ref(&mut *self.conn()?, system, id)
    }

    /// An exception's audit events, oldest first (the caller checks visibility first).
    pub fn history(&self, id: ExceptionId) -> Result<Vec<Event>, StoreError> {
        let mut conn = self.conn()?;
        Ok(audit_events::table
            .filter(audit_events::exception_id.eq(id.0.to_string()))
            .order(audit_events::seq.asc())
            .select(AuditRow::as_select())
            .load(&mut conn)?
            .into_iter()
            .map(AuditRow::into_domain)
            .collect())
    }
}

/// The id of the exception holding external reference (`system`, `id`), through `conn`.
pub(crate) fn find_by_ref(conn: &mut Db, system: &str, id: &str) -> Result<Option<ExceptionId>, StoreError> {
    let found: Option<String> = external_refs::table
        .filter(external_refs::system.eq(system).and(external_refs::ext_id.eq(id)))
        .select(external_refs::exception_id)
        .first(conn)
        .optional()?;
    found.map(|s| uuid::Uuid::parse_str(&s).map(ExceptionId).map_err(StoreError::corrupt)).transpose()
}

/// The refusal for `refs`, one of which another exception holds: the first one held, with
/// its holder's key when `actor` may see every exception.
pub(crate) fn holder(conn: &mut Db, refs: &[ExternalRef], actor: &Actor) -> StoreError {
    for r in refs {
        let held: Result<Option<i64>, _> = external_refs::table
            .inner_join(exceptions::table.on(exceptions::id.eq(external_refs::exception_id)))
            .filter(external_refs::system.eq(&r.system).and(external_refs::ext_id.eq(&r.id)))
            .select(exceptions::key_num)
            .first(conn)
            .optional();
        match held {
            Ok(Some(k)) => return duplicate(r, Some(k), actor),
            Ok(None) => {}
            Err(e) => return e.into(),
        }
    }
    // the holder let go in the meantime: the refusal still stands for the first reference
    match refs.first() {
        Some(r) => duplicate(r, None, actor),
        None => StoreError::corrupt("a reference conflict without references"),
    }
}

fn duplicate(r: &ExternalRef, holder: Option<i64>, actor: &Actor) -> StoreError {
    StoreError::DuplicateExternalRef {
        system: r.system.clone(),
        id: r.id.clone(),
        // a restricted caller is not told which exception it is (no enumeration)
        holder: holder
            .filter(|_| !actor.is_restricted())
            .and_then(|k| u64::try_from(k).ok().and_then(ExceptionKey::new))
            .map(|k| k.to_string()),
    }
}

/// Keys handed out per trip to the database: a create costs no round trip for its key but
/// one create in this many. A key taken by a create that then failed is a gap, and on several
/// nodes keys interleave: keys are unique and increase over time, not dense (docs/DECISIONS.md).
pub(crate) const KEY_BLOCK: u32 = 32;

impl Store {
    /// The next key from this process's block, taking a new block when it runs out.
    fn next_key(&self) -> Result<ExceptionKey, StoreError> {
        let mut block = self.keys.lock().map_err(|_| StoreError::corrupt("the key block lock is poisoned"))?;
        if block.is_empty() {
            let mut fresh = self.reserve_keys(KEY_BLOCK)?;
            fresh.reverse();
            *block = fresh;
        }
        block.pop().ok_or_else(|| StoreError::corrupt("an empty block of keys"))
    }
}
