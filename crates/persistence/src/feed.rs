//! The change feed: integration events in the order they became visible, which a reader can
//! page through with `after` and never miss one that committed late.
//!
//! An event's `seq` is taken while its transaction runs, so a transaction holding seq 10 can
//! commit after one holding seq 11 was read. The feed therefore pages by `feed_seq`, handed
//! out after commit by [`Store::number_feed`], one numbering at a time: on PostgreSQL under
//! `feed_state`'s row lock (`leeway_number_feed`, see the migration), so readers see a prefix
//! of the positions and a late commit gets the next one; on SQLite, whose writers commit one
//! after another, in `seq` order. The numbering also makes each webhook subscription's
//! deliveries, in the same transaction.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Text};
use leeway_domain::record::Exception;

use crate::connection::{Db, Store};
use crate::error::StoreError;
use crate::rows::{ExceptionRow, naive, utc};
use crate::schema::{audit_events, exceptions};
use crate::webhooks;

/// One integration event as the feed and webhooks show it.
#[derive(Debug, Clone)]
pub struct FeedEvent {
    /// Its position in the feed.
    pub seq: i64,
    /// `exception.approved`, ...
    pub event_type: String,
    /// Its stable id (`webhook-id`).
    pub event_id: String,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The exception's id.
    pub exception_id: String,
    /// The exception as it was after the change; for events written before snapshots were
    /// kept (an upgrade, `leeway seed`), or whose snapshot no longer reads, as it is now.
    /// `Err` (why) when neither reads: the event is still listed, without its data.
    pub exception: Result<Exception, String>,
}

/// An event just numbered.
#[derive(QueryableByName, Debug, Clone)]
pub(crate) struct Numbered {
    #[diesel(sql_type = BigInt)]
    pub n_feed_seq: i64,
    #[diesel(sql_type = BigInt)]
    pub n_seq: i64,
    #[diesel(sql_type = Text)]
    pub n_event_type: String,
    #[diesel(sql_type = Text)]
    pub n_exception_id: String,
}

/// Events numbered per pass.
pub const NUMBER_BATCH: i32 = 1000;

/// An audit row as the feed reads it.
type EventRow = (Option<i64>, i64, Option<String>, Option<String>, NaiveDateTime, String, Option<String>);

impl Store {
    /// Numbers the events that can no longer be overtaken, up to [`NUMBER_BATCH`], and makes
    /// their webhook deliveries, in one transaction. Returns how many it numbered: none when
    /// another node is numbering.
    pub fn number_feed(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut pooled = self.conn()?;
        let conn: &mut Db = &mut pooled;
        self.write_transaction(conn, |conn| {
            let numbered: Vec<Numbered> = match conn {
                Db::Pg(pg) => diesel::sql_query("SELECT * FROM leeway_number_feed($1)")
                    .bind::<Integer, _>(NUMBER_BATCH)
                    .load(pg)?,
                // writers hold the one write lock in turn: events commit in seq order
                Db::Sqlite(lite) => diesel::sql_query(
                    "UPDATE audit_events SET feed_seq = seq WHERE seq IN (SELECT seq FROM audit_events \
                     WHERE event_type IS NOT NULL AND feed_seq IS NULL ORDER BY seq LIMIT $1) \
                     RETURNING feed_seq AS n_feed_seq, seq AS n_seq, event_type AS n_event_type, \
                     exception_id AS n_exception_id",
                )
                .bind::<Integer, _>(NUMBER_BATCH)
                .load(lite)?,
            };
            if !numbered.is_empty() {
                webhooks::fan_out(conn, &numbered, naive(now))?;
            }
            Ok(numbered.len())
        })
    }

    /// How many committed events wait for a feed position (on PostgreSQL, those a write
    /// transaction still running anywhere on the server holds back).
    pub fn unnumbered_events(&self) -> Result<i64, StoreError> {
        let mut conn = self.conn()?;
        Ok(audit_events::table
            .filter(audit_events::event_type.is_not_null())
            .filter(audit_events::feed_seq.is_null())
            .count()
            .get_result(&mut conn)?)
    }

    /// Up to `limit` events after feed position `after`, in feed order: one statement (two
    /// when some event predates snapshots).
    pub fn feed(&self, after: i64, limit: i64) -> Result<Vec<FeedEvent>, StoreError> {
        let mut conn = self.conn()?;
        let rows: Vec<EventRow> = audit_events::table
            .filter(audit_events::feed_seq.gt(after))
            .order(audit_events::feed_seq.asc())
            .limit(limit)
            .select(event_columns())
            .load(&mut conn)?;
        events(&mut conn, rows)
    }
}

fn event_columns() -> (
    audit_events::feed_seq,
    audit_events::seq,
    audit_events::event_type,
    audit_events::event_id,
    audit_events::at,
    audit_events::exception_id,
    audit_events::snapshot,
) {
    (
        audit_events::feed_seq,
        audit_events::seq,
        audit_events::event_type,
        audit_events::event_id,
        audit_events::at,
        audit_events::exception_id,
        audit_events::snapshot,
    )
}

/// The events with audit sequence numbers `seqs`, by audit seq.
pub(crate) fn by_audit_seq(conn: &mut Db, seqs: &[i64]) -> Result<HashMap<i64, FeedEvent>, StoreError> {
    let rows: Vec<EventRow> =
        audit_events::table.filter(audit_events::seq.eq_any(seqs)).select(event_columns()).load(conn)?;
    let audit: Vec<i64> = rows.iter().map(|r| r.1).collect();
    Ok(audit.into_iter().zip(events(conn, rows)?).collect())
}

/// Turns audit rows into events, loading the current row of any that has no snapshot (or one
/// that no longer reads). One event that cannot be read does not take the others with it.
fn events(conn: &mut Db, rows: Vec<EventRow>) -> Result<Vec<FeedEvent>, StoreError> {
    let decoded: Vec<Option<Result<Exception, StoreError>>> = rows
        .iter()
        .map(|r| {
            r.6.as_deref().map(|s| {
                serde_json::from_str::<ExceptionRow>(s).map_err(StoreError::corrupt).and_then(ExceptionRow::into_domain)
            })
        })
        .collect();
    let missing: Vec<&str> =
        rows.iter().zip(&decoded).filter(|(_, d)| !matches!(d, Some(Ok(_)))).map(|(r, _)| r.5.as_str()).collect();
    let mut current: HashMap<String, ExceptionRow> = HashMap::new();
    if !missing.is_empty() {
        let loaded: Vec<ExceptionRow> =
            exceptions::table.filter(exceptions::id.eq_any(&missing)).select(ExceptionRow::as_select()).load(conn)?;
        current = loaded.into_iter().map(|r| (r.id.0.0.to_string(), r)).collect();
    }
    Ok(rows
        .into_iter()
        .zip(decoded)
        .map(|((feed_seq, seq, event_type, event_id, at, exception_id, _), snapshot)| {
            let exception = match snapshot {
                Some(Ok(e)) => Ok(e),
                other => {
                    if let Some(Err(e)) = other {
                        tracing::error!(audit_seq = seq, error = %e, "an event's snapshot does not read; showing the exception as it is now");
                    }
                    match current.get(&exception_id).cloned().map(ExceptionRow::into_domain) {
                        Some(Ok(e)) => Ok(e),
                        Some(Err(e)) => Err(format!("the exception does not read: {e}")),
                        None => Err("the exception is missing".to_owned()),
                    }
                }
            };
            FeedEvent {
                seq: feed_seq.unwrap_or_default(),
                event_type: event_type.unwrap_or_default(),
                event_id: event_id.unwrap_or_default(),
                at: utc(at),
                exception_id,
                exception,
            }
        })
        .collect())
}
