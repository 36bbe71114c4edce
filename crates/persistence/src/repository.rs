//! The exception repository: an exception is one row (its children are JSON documents on it),
//! read by one statement and written back, with its audit and integration events, by a
//! bounded few in one transaction.
//!
//! | operation | statements |
//! |---|---|
//! | get | 1: the row, by key or id |
//! | create | key, row, events (+ places when it takes a place) (+ idempotency key) |
//! | change | row locked with its audit head, row, events (+ places) (+ idempotency key) |

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use leeway_domain::access::Actor;
use leeway_domain::audit::{Event, GENESIS};
use leeway_domain::ids::{ExceptionId, ExceptionKey, ExceptionRef};
use leeway_domain::record::{Exception, ExternalRef};
use leeway_domain::workflow::{Change, Facts as DomainFacts};

use crate::audit;
use crate::connection::{Db, Store};
use crate::error::StoreError;
use crate::facts::Facts;
use crate::idempotency::{IdempotencyClaim, Outcome, StoredResponse};
use crate::rows::{AuditRow, ExceptionRow};
use crate::schema::{audit_events, exceptions, external_refs};

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

/// The exception `target` names with its audit head, locked for the rest of the transaction
/// (on SQLite the transaction already holds the write lock), in one statement. The head is
/// read from the locked row version, so a writer queued behind another chains onto its events.
pub(crate) fn lock(conn: &mut Db, target: ExceptionRef) -> Result<Locked, StoreError> {
    let row: Option<(ExceptionRow, String)> = match conn {
        Db::Pg(pg) => by_target!(target, |q| q
            .select((ExceptionRow::as_select(), exceptions::audit_head))
            .for_update()
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

/// Writes a new exception's row and its events; the external references it holds are
/// claimed by the row's trigger.
fn insert(conn: &mut Db, ctx: &CallContext<'_>, change: &Change) -> Result<(), StoreError> {
    let e = &change.after;
    let (events, head) = audit::chain(ctx.actor, ctx.request_id, e, e.updated_at, GENESIS, &change.happened)?;
    diesel::insert_into(exceptions::table)
        .values((ExceptionRow::from_domain(e)?, exceptions::audit_head.eq(head)))
        .execute(conn)
        .map_err(|err| refs_taken(err, &e.fields.external_refs))?;
    audit::insert(conn, &events)
}

/// Saves a changed exception: its row (with the new audit head), then its events. A change in
/// which nothing happened writes nothing.
pub(crate) fn save(
    conn: &mut Db,
    ctx: &CallContext<'_>,
    locked: &Locked,
    change: Change,
) -> Result<Exception, StoreError> {
    let Change { after, happened } = change;
    if happened.is_empty() {
        return Ok(after);
    }
    // stamped with the change's moment (a write queued behind a later one acts then)
    let (events, head) = audit::chain(ctx.actor, ctx.request_id, &after, after.updated_at, &locked.head, &happened)?;
    diesel::update(exceptions::table.filter(exceptions::id.eq(after.id.0.to_string())))
        .set((ExceptionRow::from_domain(&after)?, exceptions::audit_head.eq(head)))
        .execute(conn)
        .map_err(|err| refs_taken(err, &after.fields.external_refs))?;
    audit::insert(conn, &events)?;
    Ok(after)
}

/// A unique violation on `external_refs` (raised by the row's trigger) means another
/// exception holds one of `refs`; which one is found after the transaction rolled back.
fn refs_taken(err: DieselError, refs: &[ExternalRef]) -> StoreError {
    match &err {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
            if info.table_name() == Some("external_refs") || info.message().contains("external_refs.") =>
        {
            StoreError::RefsTaken(refs.to_vec())
        }
        _ => StoreError::Database(err),
    }
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
        let written = self.write_once(
            idem,
            ctx.now,
            |conn| {
                let key = next_key(conn)?;
                // the facts a submit needs read other rows only; this one is not written yet
                let change = Facts::new(conn).run(|f| build(key, f))?;
                insert(conn, &ctx, &change)?;
                Ok(change.after)
            },
            respond,
        );
        self.name_holder(written, ctx.actor)
    }

    /// Loads the exception under a write lock, applies `op`, and saves what changed with its
    /// audit and integration events. `if_match` guards against lost updates. `op` may ask
    /// the database for facts (limits, repeats) through [`Facts`], in the same transaction.
    pub fn mutate(
        &self,
        ctx: CallContext<'_>,
        target: ExceptionRef,
        if_match: Option<u64>,
        idem: Option<&IdempotencyClaim>,
        op: impl Fn(&Exception, &mut dyn DomainFacts) -> Result<Change, StoreError>,
        respond: impl Fn(&Exception) -> StoredResponse,
    ) -> Result<Outcome<Exception>, StoreError> {
        let written = self.write_once(
            idem,
            ctx.now,
            |conn| {
                let locked = lock(conn, target)?;
                let before = &locked.exception;
                if !ctx.actor.can_see(before) {
                    return Err(StoreError::NotFound);
                }
                if let Some(v) = if_match
                    && v != before.version
                {
                    return Err(StoreError::PreconditionFailed { current: before.version });
                }
                let change = Facts::new(conn).run(|f| op(before, f))?;
                save(conn, &ctx, &locked, change)
            },
            respond,
        );
        self.name_holder(written, ctx.actor)
    }

    /// Turns "one of these references is taken" into the reference and, for a caller who may
    /// see every exception, the key of the exception holding it. Runs only on that refusal.
    fn name_holder<T>(&self, written: Result<T, StoreError>, actor: &Actor) -> Result<T, StoreError> {
        let refs = match written {
            Err(StoreError::RefsTaken(refs)) => refs,
            other => return other,
        };
        let mut conn = self.conn()?;
        for r in &refs {
            let holder: Option<i64> = external_refs::table
                .inner_join(exceptions::table.on(exceptions::id.eq(external_refs::exception_id)))
                .filter(external_refs::system.eq(&r.system).and(external_refs::ext_id.eq(&r.id)))
                .select(exceptions::key_num)
                .first(&mut conn)
                .optional()?;
            if let Some(k) = holder {
                return Err(duplicate(r, Some(k), actor));
            }
        }
        // the holder let go in the meantime: the refusal still stands for the first reference
        match refs.first() {
            Some(r) => Err(duplicate(r, None, actor)),
            None => Err(StoreError::corrupt("a reference conflict without references")),
        }
    }

    /// One exception, if it exists and the caller may see it: one statement.
    pub fn get(&self, target: ExceptionRef, actor: &Actor) -> Result<Exception, StoreError> {
        let mut conn = self.conn()?;
        let e = load(&mut conn, target)?;
        if actor.can_see(&e) { Ok(e) } else { Err(StoreError::NotFound) }
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

/// The next key: from a sequence on PostgreSQL (never blocks a concurrent create; a rolled
/// back create leaves a gap), from the counter row on SQLite (whose one writer holds the lock
/// anyway).
fn next_key(conn: &mut Db) -> Result<ExceptionKey, StoreError> {
    #[derive(QueryableByName)]
    struct Next {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        key: i64,
    }
    let n = match conn {
        Db::Pg(pg) => diesel::sql_query("SELECT nextval('exception_keys') AS key").get_result::<Next>(pg)?,
        Db::Sqlite(lite) => diesel::sql_query(
            "UPDATE counters SET value = value + 1 WHERE name = 'exception_key' RETURNING value AS key",
        )
        .get_result::<Next>(lite)?,
    }
    .key;
    u64::try_from(n).ok().and_then(ExceptionKey::new).ok_or_else(|| StoreError::corrupt(format!("key sequence at {n}")))
}
