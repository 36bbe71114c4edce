//! Scheduler claims: the exceptions whose time rules are due, claimed and loaded in one
//! statement. On PostgreSQL the rows are locked `FOR UPDATE SKIP LOCKED`, so several nodes
//! share the work and never apply the same rule twice.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use leeway_domain::DomainError;
use leeway_domain::ids::{ExceptionId, ExceptionRef};
use leeway_domain::record::Exception;
use leeway_domain::workflow::Change;

use crate::connection::{Db, Store};
use crate::error::StoreError;
use crate::facts::Reading;
use crate::repository::{CallContext, Locked, lock, save};
use crate::rows::{ExceptionRow, naive};
use crate::schema::exceptions;

/// A claimed exception: loaded with the claim, or (when a row of the batch did not parse)
/// only its id, to be loaded on its own.
enum Claimed {
    Loaded(Box<Locked>),
    Id(String),
}

impl Store {
    /// Applies `work` to up to `batch` exceptions whose `next_due_at` has come, in one
    /// transaction. Returns how many exceptions were looked at.
    pub fn run_due(
        &self,
        ctx: CallContext<'_>,
        batch: i64,
        work: impl Fn(&Exception) -> Result<Change, DomainError>,
    ) -> Result<usize, StoreError> {
        let mut pooled = self.conn()?;
        let conn: &mut Db = &mut pooled;
        let now = naive(ctx.now);
        let run = |conn: &mut Db, careful: bool| {
            self.write_transaction(conn, |conn| {
                let claimed = if careful { claim_ids(conn, now, batch)? } else { claim(conn, now, batch)? };
                let n = claimed.len();
                for c in claimed {
                    apply_one(conn, &ctx, c, &work)?;
                }
                Ok::<_, StoreError>(n)
            })
        };
        match run(conn, false) {
            // a stored row that does not parse must not stop the rules of every other one:
            // claim by id and load each on its own, so that one is set aside
            Err(e @ (StoreError::Database(DieselError::DeserializationError(_)) | StoreError::Corrupt(_))) => {
                tracing::error!(error = %e, "a due exception does not load; claiming one by one");
                run(conn, true)
            }
            other => other,
        }
    }
}

fn claim(conn: &mut Db, now: NaiveDateTime, batch: i64) -> Result<Vec<Claimed>, StoreError> {
    let due = exceptions::table.filter(exceptions::next_due_at.le(now)).order(exceptions::next_due_at).limit(batch);
    let rows: Vec<(ExceptionRow, String)> = match conn {
        Db::Pg(pg) => {
            due.select((ExceptionRow::as_select(), exceptions::audit_head)).for_update().skip_locked().load(pg)?
        }
        Db::Sqlite(lite) => due.select((ExceptionRow::as_select(), exceptions::audit_head)).load(lite)?,
    };
    rows.into_iter()
        .map(|(row, head)| Ok(Claimed::Loaded(Box::new(Locked { exception: row.into_domain()?, head }))))
        .collect()
}

fn claim_ids(conn: &mut Db, now: NaiveDateTime, batch: i64) -> Result<Vec<Claimed>, StoreError> {
    let due = exceptions::table
        .filter(exceptions::next_due_at.le(now))
        .order(exceptions::next_due_at)
        .limit(batch)
        .select(exceptions::id);
    let ids: Vec<String> = match conn {
        Db::Pg(pg) => due.for_update().skip_locked().load(pg)?,
        Db::Sqlite(lite) => due.load(lite)?,
    };
    Ok(ids.into_iter().map(Claimed::Id).collect())
}

/// Applies the rules to one claimed exception in a savepoint: one that fails is logged and set
/// aside for an hour instead of rolling back, and blocking, everyone else's work.
fn apply_one(
    conn: &mut Db,
    ctx: &CallContext<'_>,
    claimed: Claimed,
    work: &impl Fn(&Exception) -> Result<Change, DomainError>,
) -> Result<(), StoreError> {
    let id = match &claimed {
        Claimed::Loaded(l) => l.exception.id.0.to_string(),
        Claimed::Id(id) => id.clone(),
    };
    let one = conn.transaction::<_, StoreError, _>(|conn| {
        let locked = match claimed {
            Claimed::Loaded(l) => *l,
            Claimed::Id(id) => {
                let id = uuid::Uuid::parse_str(&id).map_err(StoreError::corrupt)?;
                lock(conn, ExceptionRef::Id(ExceptionId(id)), Reading::Locked)?
            }
        };
        let change = work(&locked.exception)?;
        if change.happened.is_empty() {
            // nothing was due after all: only move the scheduler's index
            diesel::update(exceptions::table.filter(exceptions::id.eq(&id)))
                .set(exceptions::next_due_at.eq(change.after.next_due_at.map(naive)))
                .execute(conn)?;
        } else {
            save(conn, ctx, &locked, change, None, None)?;
        }
        Ok(())
    });
    if let Err(e) = one {
        tracing::error!(exception = %id, error = %e, "time rules failed; retrying in an hour");
        let retry_at = leeway_domain::time::add(ctx.now, chrono::Duration::hours(1)).unwrap_or(ctx.now);
        diesel::update(exceptions::table.filter(exceptions::id.eq(&id)))
            .set(exceptions::next_due_at.eq(naive(retry_at)))
            .execute(conn)?;
    }
    Ok(())
}
