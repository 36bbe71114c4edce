//! The audit chain and the integration events it carries. An event integrations care about
//! is an audit event with a type and an id: one multi-row INSERT writes a change's whole trail,
//! and the two can never disagree.

use chrono::{DateTime, SecondsFormat, Utc};
use diesel::prelude::*;
use leeway_domain::access::Actor;
use leeway_domain::audit::{Entry, Event, GENESIS};
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

/// Filters of the global audit log; `None` leaves one out.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only after this seq.
    pub after: i64,
    /// Only this actor's.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only at or after this moment.
    pub from: Option<DateTime<Utc>>,
    /// Only before this moment.
    pub to: Option<DateTime<Utc>>,
    /// Only this exception's.
    pub exception_id: Option<String>,
    /// Page size.
    pub limit: i64,
}

/// What verifying every chain found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    /// Exceptions whose chains were walked.
    pub exceptions_checked: u64,
    /// Events checked.
    pub events_checked: u64,
    /// The first event (exception id, seq) that does not match its hash or its predecessor;
    /// seq 0 when the chain does not end on the head recorded on the exception's row.
    pub first_broken: Option<(String, i64)>,
}

/// Exceptions whose chains are read per trip while verifying.
const VERIFY_CHUNK: i64 = 500;

impl Store {
    /// The global audit log in seq order, filtered: one index range per page.
    pub fn audit_log(&self, q: &AuditQuery) -> Result<Vec<Event>, StoreError> {
        let mut conn = self.conn()?;
        let mut query = audit_events::table
            .filter(audit_events::seq.gt(q.after))
            .order(audit_events::seq.asc())
            .limit(q.limit)
            .select(AuditRow::as_select())
            .into_boxed();
        if let Some(a) = &q.actor {
            query = query.filter(audit_events::actor_subject.eq(a.clone()));
        }
        if let Some(a) = &q.action {
            query = query.filter(audit_events::action.eq(a.clone()));
        }
        if let Some(t) = q.from {
            query = query.filter(audit_events::at.ge(crate::rows::naive(t)));
        }
        if let Some(t) = q.to {
            query = query.filter(audit_events::at.lt(crate::rows::naive(t)));
        }
        if let Some(id) = &q.exception_id {
            query = query.filter(audit_events::exception_id.eq(id.clone()));
        }
        Ok(query.load(&mut conn)?.into_iter().map(AuditRow::into_domain).collect())
    }

    /// The events that moved the status of the exceptions `ids` (their creation included),
    /// by exception then oldest first: one statement for a page of exceptions.
    pub fn status_changes(&self, ids: &[leeway_domain::ids::ExceptionId]) -> Result<Vec<Event>, StoreError> {
        let ids: Vec<String> = ids.iter().map(|id| id.0.to_string()).collect();
        let mut conn = self.conn()?;
        Ok(audit_events::table
            .filter(audit_events::exception_id.eq_any(ids))
            .filter(
                audit_events::from_status
                    .is_null()
                    .or(audit_events::from_status.ne(audit_events::to_status.nullable())),
            )
            .order((audit_events::exception_id.asc(), audit_events::seq.asc()))
            .select(AuditRow::as_select())
            .load(&mut conn)?
            .into_iter()
            .map(AuditRow::into_domain)
            .collect())
    }

    /// Walks every exception's chain, [`VERIFY_CHUNK`] exceptions at a time (their ids by
    /// index, then their events by index), so memory stays bounded whatever the size of the
    /// trail; stops at the first break. Each chain must also end on the head recorded on its
    /// exception's row, or an event deleted from the end would go unseen.
    pub fn verify_chains(&self) -> Result<Verification, StoreError> {
        use crate::schema::exceptions;
        let mut conn = self.conn()?;
        let mut v = Verification::default();
        let mut after = String::new();
        loop {
            let chunk: Vec<(String, String)> = exceptions::table
                .filter(exceptions::id.gt(&after))
                .order(exceptions::id.asc())
                .limit(VERIFY_CHUNK)
                .select((exceptions::id, exceptions::audit_head))
                .load(&mut conn)?;
            let Some((last, _)) = chunk.last() else { break };
            after = last.clone();
            let ids: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
            let rows: Vec<AuditRow> = audit_events::table
                .filter(audit_events::exception_id.eq_any(&ids))
                .order((audit_events::exception_id.asc(), audit_events::seq.asc()))
                .select(AuditRow::as_select())
                .load(&mut conn)?;
            let mut events = rows.into_iter().map(AuditRow::into_domain).peekable();
            for (id, head) in &chunk {
                v.exceptions_checked += 1;
                let chain: Vec<Event> =
                    std::iter::from_fn(|| events.next_if(|e| e.entry.exception_id == *id)).collect();
                // (events checked, seq of the first break)
                let broken = match break_in(&chain, Some(head)) {
                    None => None,
                    Some(i) if i < chain.len() => Some((i + 1, chain[i].seq)),
                    // the head was read before this exception's events: a change committed in
                    // between moves it, so a chain that seems cut is judged again on one snapshot
                    Some(_) => {
                        let (again, head) = chain_snapshot(&mut conn, id)?;
                        break_in(&again, head.as_deref()).map(|i| (chain.len(), again.get(i).map_or(0, |e| e.seq)))
                    }
                };
                let checked = broken.map_or(chain.len(), |(n, _)| n);
                v.events_checked += u64::try_from(checked).unwrap_or(u64::MAX);
                if let Some((_, seq)) = broken {
                    v.first_broken = Some((id.clone(), seq));
                    return Ok(v);
                }
            }
            if i64::try_from(chunk.len()).unwrap_or(0) < VERIFY_CHUNK {
                break;
            }
        }
        Ok(v)
    }
}

/// One exception's events, oldest first, and the chain head recorded on its row, read by one
/// statement (so by one snapshot: a change committing meanwhile shows in both or in neither).
fn chain_snapshot(conn: &mut Db, id: &str) -> Result<(Vec<Event>, Option<String>), StoreError> {
    use crate::schema::exceptions;
    let head = exceptions::table.filter(exceptions::id.eq(id.to_owned())).select(exceptions::audit_head).single_value();
    let rows: Vec<(AuditRow, Option<String>)> = audit_events::table
        .filter(audit_events::exception_id.eq(id.to_owned()))
        .order(audit_events::seq.asc())
        .select((AuditRow::as_select(), head))
        .load(conn)?;
    let head = match rows.first() {
        Some(r) => r.1.clone(),
        // no events at all: the head alone says whether there were some
        None => exceptions::table
            .filter(exceptions::id.eq(id.to_owned()))
            .select(exceptions::audit_head)
            .first::<String>(conn)
            .optional()?,
    };
    Ok((rows.into_iter().map(|(r, _)| r.into_domain()).collect(), head))
}

/// Where a chain breaks: the index of the first event that does not match its hash or its
/// predecessor, or `len` when the chain does not end on `head` (its last events are gone).
pub fn break_in(events: &[Event], head: Option<&str>) -> Option<usize> {
    if let Some(i) = leeway_domain::audit::first_broken(events) {
        return Some(i);
    }
    let last = events.last().map_or(GENESIS, |e| e.hash.as_str());
    match head {
        Some(h) if h != last => Some(events.len()),
        _ => None,
    }
}

impl Store {
    /// An exception's events with the chain head recorded on its row, from one snapshot.
    pub fn history_with_head(
        &self,
        id: leeway_domain::ids::ExceptionId,
    ) -> Result<(Vec<Event>, Option<String>), StoreError> {
        let mut conn = self.conn()?;
        chain_snapshot(&mut conn, &id.0.to_string())
    }

    /// Keeps the approval rules a server runs with, under their fingerprint (once).
    pub fn record_policy(&self, policy: &leeway_domain::ApprovalPolicy, now: DateTime<Utc>) -> Result<(), StoreError> {
        use crate::schema::policies;
        let (fingerprint, document) = (policy.fingerprint(), policy.rules_document());
        let (fingerprint, document) = (fingerprint.as_str(), document.as_str());
        let mut conn = self.conn()?;
        let known: i64 = policies::table.filter(policies::fingerprint.eq(fingerprint)).count().get_result(&mut conn)?;
        if known > 0 {
            return Ok(());
        }
        let inserted = diesel::insert_into(policies::table)
            .values((
                policies::fingerprint.eq(fingerprint),
                policies::document.eq(document),
                policies::first_seen.eq(crate::rows::naive(now)),
            ))
            .execute(&mut conn);
        match inserted {
            // another node recorded it meanwhile
            Err(diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)) => Ok(()),
            other => other.map(|_| ()).map_err(StoreError::from),
        }
    }

    /// The recorded policies among `fingerprints`: (fingerprint, JSON document, first seen).
    pub fn policies(&self, fingerprints: &[String]) -> Result<Vec<(String, String, DateTime<Utc>)>, StoreError> {
        use crate::schema::policies;
        let mut conn = self.conn()?;
        let rows: Vec<(String, String, chrono::NaiveDateTime)> = policies::table
            .filter(policies::fingerprint.eq_any(fingerprints))
            .order(policies::first_seen.asc())
            .select((policies::fingerprint, policies::document, policies::first_seen))
            .load(&mut conn)?;
        Ok(rows.into_iter().map(|(f, d, t)| (f, d, crate::rows::utc(t))).collect())
    }
}
