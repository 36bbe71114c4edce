//! The audit chain and the integration events it carries. An event integrations care about
//! is an audit event with a type and an id: one multi-row INSERT writes a change's whole trail,
//! and the two can never disagree.

use chrono::{DateTime, SecondsFormat, Utc};
use diesel::prelude::*;
use leeway_domain::access::Actor;
use leeway_domain::audit::Entry;
use leeway_domain::ids::ExceptionId;
use leeway_domain::record::{Happening, Record};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::connection::{Db, Store};
use crate::error::StoreError;
use crate::rows::{AuditRow, NewAuditRow};
use crate::schema::audit_events;

/// The events for `happenings` on `e`, caused by `actor` at `at`, chained after `head`; and
/// the new head. Integration events carry `snapshot`, the exception's row after the change.
pub(crate) fn chain(
    actor: &Actor,
    request_id: Option<&str>,
    e: &Record,
    at: DateTime<Utc>,
    head: &str,
    happenings: &[Happening],
    snapshot: Option<&str>,
) -> Result<(Vec<NewAuditRow>, String), StoreError> {
    let mut prev = head.to_owned();
    let mut rows = Vec::with_capacity(happenings.len());
    for h in happenings {
        let entry = Entry::new(e, h, actor, at, request_id);
        let event = h.event.map(|t| (t.as_str().to_owned(), Uuid::now_v7().to_string()));
        let row = NewAuditRow::from_domain(&entry, prev, event, snapshot)?;
        prev = row.hash.clone();
        rows.push(row);
    }
    Ok((rows, prev))
}

/// An exception's row as an integration event keeps it: what webhooks and the feed show of
/// the exception at that event.
pub(crate) fn snapshot(row: &crate::rows::ExceptionRow) -> Result<String, StoreError> {
    serde_json::to_string(row).map_err(StoreError::corrupt)
}

/// Appends `rows`: one statement for a change's events; a seed's many take one per
/// [`AUDIT_ROWS_PER_INSERT`].
pub(crate) fn insert(conn: &mut Db, rows: &[NewAuditRow]) -> Result<(), StoreError> {
    for chunk in rows.chunks(AUDIT_ROWS_PER_INSERT) {
        // MultiConnection has no multi-row insert: each backend runs its own
        match conn {
            Db::Pg(pg) => diesel::insert_into(audit_events::table).values(chunk).execute(pg)?,
            Db::Sqlite(lite) => diesel::insert_into(audit_events::table).values(chunk).execute(lite)?,
        };
    }
    Ok(())
}

/// Rows per INSERT, within the bind limits of both backends (14 binds a row; SQLite allows
/// 32,766 binds a statement, PostgreSQL 65,535).
const AUDIT_ROWS_PER_INSERT: usize = 2000;

impl Store {
    /// The integration events written for an exception, oldest first, each as
    /// `(type, {id, type, timestamp, data: {exception_id, status, from_status, actor, changes,
    /// audit_seq}})`.
    pub fn outbox_for(&self, id: ExceptionId) -> Result<Vec<(String, Value)>, StoreError> {
        let mut conn = self.conn()?;
        let rows: Vec<(AuditRow, Option<String>, Option<String>)> = audit_events::table
            .filter(audit_events::exception_id.eq(id.0.to_string()))
            .filter(audit_events::event_type.is_not_null())
            .order(audit_events::seq.asc())
            .select((AuditRow::as_select(), audit_events::event_type, audit_events::event_id))
            .load(&mut conn)?;
        Ok(rows
            .into_iter()
            .filter_map(|(row, event_type, event_id)| {
                let (event_type, event_id) = (event_type?, event_id?);
                let event = row.into_domain();
                let payload = json!({
                    "id": event_id,
                    "type": event_type,
                    "timestamp": event.entry.at.to_rfc3339_opts(SecondsFormat::Micros, true),
                    "data": {
                        "exception_id": event.entry.exception_id,
                        "status": event.entry.to_status,
                        "from_status": event.entry.from_status,
                        "actor": event.entry.actor,
                        "changes": event.entry.changes,
                        "audit_seq": event.seq,
                    },
                });
                Some((event_type, payload))
            })
            .collect())
    }
}
