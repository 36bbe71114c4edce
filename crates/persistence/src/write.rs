//! One change's write: the exception's row (inserted, or updated only if it is still at the
//! version the change was made from), its audit events and its idempotency record, all or
//! nothing.
//!
//! On PostgreSQL that is one statement, `leeway_write` (a migration defines it), outside any
//! explicit transaction: the change was judged on reads made without locks, and the write
//! refuses (`StoreError::Stale`) when what they read has moved (the row's version, or the
//! places under the covering limits, read again under their locks). The caller then judges
//! again. A create that takes a place is two round trips, a create that does not is one.
//!
//! On SQLite the caller holds the database's one write lock for the whole change, so nothing
//! can move: the same rows are written by a few statements in that transaction.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamp};
use leeway_domain::record::ExternalRef;
use serde::Serialize;

use crate::audit;
use crate::connection::Db;
use crate::error::StoreError;
use crate::rows::{ExceptionRow, IdempotencyRow, NewAuditRow, naive};
use crate::schema::{exceptions, idempotency_keys};

/// The places a change's rules were judged on, with what reads them again.
#[derive(Debug, Clone)]
pub(crate) struct PlacesSeen {
    pub me: String,
    pub locks: Vec<i64>,
    pub assets: Vec<String>,
    pub control_ids: Vec<String>,
    pub business_unit: String,
    pub business_unit_limited: bool,
    pub at: DateTime<Utc>,
    pub created: DateTime<Utc>,
    /// Their canonical text (see `facts.rs`).
    pub text: String,
}

/// Everything one change writes.
pub(crate) struct Write<'a> {
    /// The row with its new audit head, unless only the idempotency record is written.
    pub row: Option<(ExceptionRow, String)>,
    /// Insert (a create) rather than update.
    pub insert: bool,
    /// For an update: the version the change was made from.
    pub version: i64,
    /// The audit events, chained.
    pub events: Vec<NewAuditRow>,
    /// The answer to keep under an `Idempotency-Key`.
    pub idempotency: Option<IdempotencyRow>,
    /// The places the rules read, to be checked again under their locks.
    pub places: Option<PlacesSeen>,
    /// The exception's references, to name them if one is taken.
    pub refs: &'a [ExternalRef],
}

#[derive(Serialize)]
struct RowJson<'a> {
    #[serde(flatten)]
    row: &'a ExceptionRow,
    audit_head: &'a str,
}

#[derive(QueryableByName)]
struct Result1 {
    #[diesel(sql_type = Text)]
    result: String,
}

fn json(v: &impl Serialize) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(StoreError::corrupt)
}

/// Writes `w`. `StoreError::Stale` when the row or the places moved since they were read.
pub(crate) fn write(conn: &mut Db, w: &Write<'_>) -> Result<(), StoreError> {
    match conn {
        Db::Pg(pg) => {
            let row = w.row.as_ref().map(|(row, head)| json(&RowJson { row, audit_head: head })).transpose()?;
            let idem = w.idempotency.as_ref().map(json).transpose()?;
            let empty = PlacesSeen {
                me: String::new(),
                locks: Vec::new(),
                assets: Vec::new(),
                control_ids: Vec::new(),
                business_unit: String::new(),
                business_unit_limited: false,
                at: DateTime::<Utc>::UNIX_EPOCH,
                created: DateTime::<Utc>::UNIX_EPOCH,
                text: String::new(),
            };
            let p = w.places.as_ref().unwrap_or(&empty);
            let done = diesel::sql_query(
                "SELECT leeway_write($1::JSON, $2, $3, $4::JSON, $5::JSON, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                 AS result",
            )
            .bind::<Nullable<Text>, _>(row)
            .bind::<Bool, _>(w.insert)
            .bind::<BigInt, _>(w.version)
            .bind::<Text, _>(json(&w.events)?)
            .bind::<Nullable<Text>, _>(idem)
            .bind::<Array<BigInt>, _>(&p.locks)
            .bind::<Nullable<Text>, _>(w.places.as_ref().map(|p| p.text.as_str()))
            .bind::<Text, _>(&p.me)
            .bind::<Array<Text>, _>(&p.assets)
            .bind::<Array<Text>, _>(&p.control_ids)
            .bind::<Text, _>(&p.business_unit)
            .bind::<Bool, _>(p.business_unit_limited)
            .bind::<Timestamp, _>(naive(p.at))
            .bind::<Timestamp, _>(naive(p.created))
            .get_result::<Result1>(pg)
            .map_err(|e| refs_taken(e, w.refs))?;
            match done.result.as_str() {
                "ok" => Ok(()),
                "stale" => Err(StoreError::Stale),
                other => Err(StoreError::corrupt(format!("leeway_write answered {other:?}"))),
            }
        }
        Db::Sqlite(_) => {
            if let Some((row, head)) = &w.row {
                let written = if w.insert {
                    diesel::insert_into(exceptions::table).values((row, exceptions::audit_head.eq(head))).execute(conn)
                } else {
                    diesel::update(
                        exceptions::table.filter(exceptions::id.eq(&row.id)).filter(exceptions::version.eq(w.version)),
                    )
                    .set((row, exceptions::audit_head.eq(head)))
                    .execute(conn)
                }
                .map_err(|e| refs_taken(e, w.refs))?;
                if written == 0 {
                    return Err(StoreError::Stale);
                }
            }
            audit::insert(conn, &w.events)?;
            if let Some(idem) = &w.idempotency {
                diesel::insert_into(idempotency_keys::table).values(idem).execute(conn)?;
            }
            Ok(())
        }
    }
}

/// A unique violation on `external_refs` (raised by the row's trigger) means another
/// exception holds one of `refs`; which one is found after the write was refused.
fn refs_taken(err: DieselError, refs: &[ExternalRef]) -> StoreError {
    match &err {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
            if info.table_name() == Some("external_refs") || info.message().contains("external_refs") =>
        {
            StoreError::RefsTaken(refs.to_vec())
        }
        _ => StoreError::Database(err),
    }
}
