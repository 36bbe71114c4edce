//! The batch write path: many finished exceptions, each with the trail of how it got where
//! it is, written with a few multi-row INSERTs in one transaction. `leeway seed` fills a
//! database through it (the domain decides every state; this only stores).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use leeway_domain::access::Actor;
use leeway_domain::audit::GENESIS;
use leeway_domain::ids::ExceptionKey;
use leeway_domain::record::{Exception, Happening};

use crate::audit;
use crate::connection::{Db, Store};
use crate::error::StoreError;
use crate::rows::ExceptionRow;
use crate::schema::exceptions;

/// One change in a seeded exception's past: who, when, and what happened.
#[derive(Debug, Clone)]
pub struct SeedStep {
    /// The caller (or the system, for what time did).
    pub actor: Actor,
    /// The moment of the change.
    pub at: DateTime<Utc>,
    /// What happened, in order.
    pub happened: Vec<Happening>,
}

/// An exception as it is now, with every change that led there.
#[derive(Debug, Clone)]
pub struct Seeded {
    /// The exception now.
    pub exception: Exception,
    /// Its changes, oldest first: each becomes audit events on one hash chain.
    pub steps: Vec<SeedStep>,
}

/// Rows per INSERT, within the bind limits of both backends (about 50 binds a row).
const EXCEPTION_ROWS_PER_INSERT: usize = 500;

impl Store {
    /// `n` fresh keys in one statement (on PostgreSQL from the sequence, on SQLite from the
    /// counter row), in increasing order.
    pub fn reserve_keys(&self, n: u32) -> Result<Vec<ExceptionKey>, StoreError> {
        reserve_keys_on(&mut *self.conn()?, n)
    }

    /// Readies the tables after a bulk load, before anyone waits for autovacuum: `VACUUM
    /// ANALYZE` on PostgreSQL (fresh statistics, the text index's pending entries merged, the
    /// visibility map set), `ANALYZE` on SQLite.
    pub fn analyze(&self) -> Result<(), StoreError> {
        use diesel::connection::SimpleConnection;
        let mut conn = self.conn()?;
        match &mut *conn {
            Db::Pg(pg) => pg.batch_execute("VACUUM (ANALYZE)")?,
            Db::Sqlite(lite) => lite.batch_execute("PRAGMA analysis_limit = 0; ANALYZE")?,
        }
        Ok(())
    }

    /// Writes `batch` in one transaction: the rows with a multi-row INSERT per
    /// [`EXCEPTION_ROWS_PER_INSERT`], their audit events likewise. Returns how many events.
    pub fn insert_seeded(&self, batch: &[Seeded]) -> Result<usize, StoreError> {
        let mut rows = Vec::with_capacity(batch.len());
        let mut events = Vec::new();
        for s in batch {
            let e = &s.exception;
            let mut head = GENESIS.to_owned();
            for step in &s.steps {
                let (mut written, next) = audit::chain(&step.actor, None, e, step.at, &head, &step.happened, None)?;
                events.append(&mut written);
                head = next;
            }
            rows.push((ExceptionRow::from_domain(e)?, exceptions::audit_head.eq(head)));
        }
        let mut conn = self.conn()?;
        self.write_transaction(&mut conn, |conn| {
            for chunk in rows.chunks(EXCEPTION_ROWS_PER_INSERT) {
                match conn {
                    Db::Pg(pg) => diesel::insert_into(exceptions::table).values(chunk).execute(pg)?,
                    Db::Sqlite(lite) => diesel::insert_into(exceptions::table).values(chunk).execute(lite)?,
                };
            }
            audit::insert(conn, &events)
        })?;
        Ok(events.len())
    }
}

/// Writes new exceptions that took no place (nothing to check again under locks) with a few
/// multi-row INSERTs, their events likewise: how an import writes the drafts of a batch.
pub(crate) fn insert_many(
    conn: &mut Db,
    rows: &[(ExceptionRow, String)],
    events: &[crate::rows::NewAuditRow],
) -> Result<(), StoreError> {
    for chunk in rows.chunks(EXCEPTION_ROWS_PER_INSERT) {
        let values: Vec<_> = chunk.iter().map(|(row, head)| (row, exceptions::audit_head.eq(head))).collect();
        match conn {
            Db::Pg(pg) => diesel::insert_into(exceptions::table).values(values).execute(pg)?,
            Db::Sqlite(lite) => diesel::insert_into(exceptions::table).values(values).execute(lite)?,
        };
    }
    audit::insert(conn, events)
}

/// `n` fresh keys through `conn` (inside its transaction, if one is open).
pub(crate) fn reserve_keys_on(conn: &mut Db, n: u32) -> Result<Vec<ExceptionKey>, StoreError> {
    #[derive(QueryableByName)]
    struct Key {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        key: i64,
    }
    let numbers: Vec<i64> = match conn {
        Db::Pg(pg) => diesel::sql_query("SELECT nextval('exception_keys') AS key FROM generate_series(1, $1)")
            .bind::<diesel::sql_types::Integer, _>(i32::try_from(n).map_err(StoreError::corrupt)?)
            .load::<Key>(pg)?
            .into_iter()
            .map(|k| k.key)
            .collect(),
        Db::Sqlite(lite) => {
            let last = diesel::sql_query(
                "UPDATE counters SET value = value + ?1 WHERE name = 'exception_key' RETURNING value AS key",
            )
            .bind::<diesel::sql_types::BigInt, _>(i64::from(n))
            .get_result::<Key>(lite)?
            .key;
            (last - i64::from(n) + 1..=last).collect()
        }
    };
    let mut keys = numbers
        .into_iter()
        .map(|n| {
            u64::try_from(n).ok().and_then(ExceptionKey::new).ok_or_else(|| StoreError::corrupt(format!("key {n}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    keys.sort_unstable_by_key(|k| k.number());
    Ok(keys)
}
