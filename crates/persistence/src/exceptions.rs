//! The exception repository: loads the aggregate, writes it back with its audit events,
//! integration events and idempotency record in one transaction, and lists with keysets.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use leeway_domain::DomainError;
use leeway_domain::access::Actor;
use leeway_domain::audit::{Entry, Event, GENESIS};
use leeway_domain::ids::{ExceptionId, ExceptionKey, ExceptionRef};
use leeway_domain::kinds::{Level, Status};
use leeway_domain::record::{Exception, Happening};
use leeway_domain::workflow::{Change, Places};
use serde_json::{Value, json};
use std::collections::HashMap;
use uuid::Uuid;

use crate::connection::{Db, MultiBackend, Store};
use crate::error::StoreError;
use crate::rows::*;
use crate::schema::*;

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

/// An `Idempotency-Key` claimed by a POST: the key is scoped to the caller.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    /// The caller's subject.
    pub subject: String,
    /// The key as sent.
    pub key: String,
    /// SHA-256 of the method, path and body.
    pub request_hash: String,
}

/// A response kept for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: String,
    /// `Location` header, if any.
    pub location: Option<String>,
    /// `ETag` header, if any.
    pub etag: Option<String>,
}

/// The result of a write that may be an idempotent replay.
#[derive(Debug)]
pub enum Outcome<T> {
    /// The write happened now.
    Done(T),
    /// The same request was already answered; here is that answer.
    Replayed(StoredResponse),
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Ordering of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Oldest first (the default).
    #[default]
    CreatedAsc,
    /// Newest first.
    CreatedDesc,
    /// Least recently changed first: the order for incremental pulls with `updated_since`.
    UpdatedAsc,
    /// Most recently changed first.
    UpdatedDesc,
}

/// What a restricted caller (only `requester`) may see.
#[derive(Debug, Clone)]
pub struct Visibility {
    /// Their subject.
    pub subject: String,
    /// Their business unit.
    pub business_unit: Option<String>,
}

/// Filters, order and position of a list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Effective statuses, any of.
    pub statuses: Vec<Status>,
    /// Residual level.
    pub risk_level: Option<Level>,
    /// Category.
    pub category: Option<leeway_domain::kinds::Category>,
    /// Covers this asset.
    pub asset: Option<String>,
    /// Deviates from this control.
    pub control_id: Option<String>,
    /// Business unit.
    pub business_unit: Option<String>,
    /// Requester subject.
    pub requester: Option<String>,
    /// Risk owner subject.
    pub risk_owner: Option<String>,
    /// External reference `(system, id)`.
    pub external: Option<(String, String)>,
    /// `expires_at` strictly before.
    pub expires_before: Option<DateTime<Utc>>,
    /// `expires_at` at or after.
    pub expires_after: Option<DateTime<Utc>>,
    /// `updated_at` at or after.
    pub updated_since: Option<DateTime<Utc>>,
    /// Only covering (true) or only not covering (false) at `now`.
    pub covering: Option<bool>,
    /// Text in title or justification.
    pub q: Option<String>,
    /// Order.
    pub sort: Sort,
    /// Keyset position: the sort value and id of the last item of the previous page.
    pub after: Option<(DateTime<Utc>, String)>,
    /// Page size.
    pub limit: u32,
    /// The moment the effective statuses are computed for.
    pub now: DateTime<Utc>,
    /// Set for restricted callers.
    pub visibility: Option<Visibility>,
}

/// One page of a list.
#[derive(Debug)]
pub struct Page {
    /// The exceptions.
    pub items: Vec<Exception>,
    /// The keyset position after the last item, when more may follow.
    pub next: Option<(DateTime<Utc>, String)>,
}

type Pred = Box<dyn BoxableExpression<exceptions::table, MultiBackend, SqlType = diesel::sql_types::Bool>>;

const LIVE: [&str; 3] = ["approved", "active", "renewal_pending"];

/// The SQL predicate for an effective status at `now` (see `workflow::effective_status`).
fn status_pred(s: Status, now: NaiveDateTime) -> Pred {
    use crate::schema::exceptions::dsl as x;
    let not_expired = || x::expires_at.gt(now).assume_not_null();
    match s {
        Status::Active => Box::new(
            x::status
                .eq("active")
                .and(not_expired())
                .or(x::status.eq("approved").and(x::starts_at.le(now).assume_not_null()).and(not_expired())),
        ),
        Status::Approved => {
            Box::new(x::status.eq("approved").and(x::starts_at.gt(now).assume_not_null()).and(not_expired()))
        }
        Status::RenewalPending => Box::new(x::status.eq("renewal_pending").and(not_expired())),
        Status::Expired => {
            Box::new(x::status.eq("expired").or(x::status.eq_any(LIVE).and(x::expires_at.le(now).assume_not_null())))
        }
        Status::Draft
        | Status::Submitted
        | Status::PendingApproval
        | Status::Rejected
        | Status::Withdrawn
        | Status::Revoked
        | Status::Closed => Box::new(x::status.eq(s.as_str())),
    }
}

fn covering_pred(now: NaiveDateTime) -> Pred {
    use crate::schema::exceptions::dsl as x;
    Box::new(
        x::status.eq_any(LIVE).and(x::starts_at.le(now).assume_not_null()).and(x::expires_at.gt(now).assume_not_null()),
    )
}

fn is_unique_violation(e: &StoreError) -> bool {
    matches!(e, StoreError::Database(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)))
}

impl Store {
    /// Runs `work` in one write transaction together with the idempotency record: a key seen
    /// before with the same request replays its response, with another request is refused.
    fn write<T>(
        &self,
        idem: Option<&IdempotencyClaim>,
        now: DateTime<Utc>,
        mut work: impl FnMut(&mut Db) -> Result<T, StoreError>,
        respond: impl Fn(&T) -> StoredResponse,
    ) -> Result<Outcome<T>, StoreError> {
        let mut pooled = self.conn()?;
        let conn: &mut Db = &mut pooled;
        // Two tries: a concurrent request with the same key makes the first fail on the
        // key's primary key after that request committed; the second try replays it.
        let mut tries = 0;
        loop {
            tries += 1;
            let result = conn.transaction::<_, StoreError, _>(|conn| {
                if let Db::Sqlite(_) = conn {
                    // Take SQLite's write lock first so a read never has to be upgraded.
                    diesel::sql_query("UPDATE counters SET value = value WHERE name = 'exception_key'")
                        .execute(conn)?;
                }
                if let Some(claim) = idem
                    && let Some(stored) = find_idempotent(conn, claim, now)?
                {
                    return Ok(Outcome::Replayed(stored));
                }
                let value = work(conn)?;
                if let Some(claim) = idem {
                    let r = respond(&value);
                    diesel::insert_into(idempotency_keys::table)
                        .values(IdempotencyRow {
                            subject: claim.subject.clone(),
                            idem_key: claim.key.clone(),
                            request_hash: claim.request_hash.clone(),
                            status: i32::from(r.status),
                            body: r.body,
                            location: r.location,
                            etag: r.etag,
                            created_at: naive(now),
                        })
                        .execute(conn)?;
                }
                Ok(Outcome::Done(value))
            });
            match (result, idem) {
                (Err(e), Some(_)) if tries < 2 && is_unique_violation(&e) => continue,
                // A concurrent request with the same key may have committed while this one
                // waited for the row lock and was then judged on the changed state: replay it.
                (Err(e), Some(claim)) => {
                    return match conn.transaction(|conn| find_idempotent(conn, claim, now)) {
                        Ok(Some(stored)) => Ok(Outcome::Replayed(stored)),
                        _ => Err(e),
                    };
                }
                (other, _) => return other,
            }
        }
    }

    /// Creates an exception built by `build` from the next key, with its audit trail.
    pub fn create(
        &self,
        ctx: CallContext<'_>,
        idem: Option<&IdempotencyClaim>,
        build: impl Fn(ExceptionKey, &mut dyn leeway_domain::workflow::Facts) -> Result<Change, StoreError>,
        respond: impl Fn(&Exception) -> StoredResponse,
    ) -> Result<Outcome<Exception>, StoreError> {
        self.write(
            idem,
            ctx.now,
            |conn| {
                let n: i64 = diesel::update(counters::table.filter(counters::name.eq("exception_key")))
                    .set(counters::value.eq(counters::value + 1))
                    .returning(counters::value)
                    .get_result(conn)?;
                let key = u64::try_from(n)
                    .ok()
                    .and_then(ExceptionKey::new)
                    .ok_or_else(|| StoreError::corrupt(format!("key counter {n}")))?;
                // the facts a submit needs read other rows only; this one is not written yet
                let mut facts = Facts::new(conn);
                let change = facts.run(|f| build(key, f))?;
                let Change { after: e, happened } = change;
                let row = ExceptionRow::from_domain(&e)?;
                diesel::insert_into(exceptions::table).values(&row).execute(conn)?;
                save_children(conn, None, &e, ctx.actor)?;
                append_events(conn, &ctx, &e, &happened)?;
                Ok(e)
            },
            respond,
        )
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
        op: impl Fn(&Exception, &mut dyn leeway_domain::workflow::Facts) -> Result<Change, StoreError>,
        respond: impl Fn(&Exception) -> StoredResponse,
    ) -> Result<Outcome<Exception>, StoreError> {
        self.write(
            idem,
            ctx.now,
            |conn| {
                let id = resolve(conn, target)?;
                // Lock the row (PostgreSQL) before reading it, so concurrent writers queue.
                let locked = diesel::update(exceptions::table.find(&id))
                    .set(exceptions::version.eq(exceptions::version))
                    .execute(conn)?;
                if locked == 0 {
                    return Err(StoreError::NotFound);
                }
                let before = load(conn, &id)?;
                if !ctx.actor.can_see(&before) {
                    return Err(StoreError::NotFound);
                }
                if let Some(v) = if_match
                    && v != before.version
                {
                    return Err(StoreError::PreconditionFailed { current: before.version });
                }
                let change = Facts::new(conn).run(|f| op(&before, f))?;
                persist(conn, &ctx, &before, change)
            },
            respond,
        )
    }

    /// Applies `work` to up to `batch` exceptions whose `next_due_at` has come, in one
    /// transaction. On PostgreSQL the rows are claimed `FOR UPDATE SKIP LOCKED`, so several
    /// schedulers share the work and never apply the same rule twice. Returns how many
    /// exceptions were looked at.
    pub fn run_due(
        &self,
        ctx: CallContext<'_>,
        batch: i64,
        work: impl Fn(&Exception) -> Result<Change, DomainError>,
    ) -> Result<usize, StoreError> {
        let outcome = self.write(
            None,
            ctx.now,
            |conn| {
                let now = naive(ctx.now);
                let ids: Vec<String> = match conn {
                    Db::Pg(pg) => diesel::sql_query(
                        "SELECT id FROM exceptions WHERE next_due_at <= $1 ORDER BY next_due_at LIMIT $2 FOR UPDATE SKIP LOCKED",
                    )
                    .bind::<diesel::sql_types::Timestamp, _>(now)
                    .bind::<diesel::sql_types::BigInt, _>(batch)
                    .load::<IdRow>(pg)?
                    .into_iter()
                    .map(|r| r.id)
                    .collect(),
                    Db::Sqlite(_) => exceptions::table
                        .filter(exceptions::next_due_at.le(now))
                        .order(exceptions::next_due_at)
                        .limit(batch)
                        .select(exceptions::id)
                        .load(conn)?,
                };
                let retry_at = leeway_domain::time::add(ctx.now, chrono::Duration::hours(1)).unwrap_or(ctx.now);
                for id in &ids {
                    // a savepoint per exception: one that fails is logged and set aside for an
                    // hour instead of rolling back, and blocking, everyone else's work
                    let one = conn.transaction::<_, StoreError, _>(|conn| {
                        let before = load(conn, id)?;
                        let change = work(&before)?;
                        if change.happened.is_empty() {
                            // nothing was due after all: only move the scheduler's index
                            diesel::update(exceptions::table.find(id))
                                .set(exceptions::next_due_at.eq(change.after.next_due_at.map(naive)))
                                .execute(conn)?;
                        } else {
                            persist(conn, &ctx, &before, change)?;
                        }
                        Ok(())
                    });
                    if let Err(e) = one {
                        tracing::error!(exception = %id, error = %e, "time rules failed; retrying in an hour");
                        diesel::update(exceptions::table.find(id))
                            .set(exceptions::next_due_at.eq(naive(retry_at)))
                            .execute(conn)?;
                    }
                }
                Ok(ids.len())
            },
            |_| StoredResponse { status: 200, body: String::new(), location: None, etag: None },
        )?;
        match outcome {
            Outcome::Done(n) => Ok(n),
            Outcome::Replayed(_) => Ok(0),
        }
    }

    /// One exception, if it exists and the caller may see it.
    pub fn get(&self, target: ExceptionRef, actor: &Actor) -> Result<Exception, StoreError> {
        let mut conn = self.conn()?;
        let id = resolve(&mut conn, target)?;
        let e = load(&mut conn, &id)?;
        if actor.can_see(&e) { Ok(e) } else { Err(StoreError::NotFound) }
    }

    /// A page of exceptions: index-backed filters and a keyset, so deep pages cost what the
    /// first costs; children are loaded with one query per table for the whole page.
    pub fn list(&self, q: &ListQuery) -> Result<Page, StoreError> {
        use crate::schema::exceptions::dsl as x;
        let now = naive(q.now);
        let mut query = exceptions::table.into_boxed::<MultiBackend>();
        if !q.statuses.is_empty() {
            let mut preds = q.statuses.iter().map(|s| status_pred(*s, now));
            if let Some(first) = preds.next() {
                let any = preds.fold(first, |acc, p| Box::new(acc.or(p)) as Pred);
                query = query.filter(any);
            }
        }
        if let Some(l) = q.risk_level {
            query = query.filter(x::residual_level.eq(l.as_str()));
        }
        if let Some(c) = &q.category {
            query = query.filter(x::category.eq(c.as_str()));
        }
        if let Some(a) = &q.asset {
            query = query.filter(
                x::id.eq_any(
                    exception_assets::table
                        .filter(exception_assets::asset.eq(a.clone()))
                        .select(exception_assets::exception_id),
                ),
            );
        }
        if let Some(c) = &q.control_id {
            query = query.filter(
                x::id.eq_any(
                    exception_control_ids::table
                        .filter(exception_control_ids::control_id.eq(c.clone()))
                        .select(exception_control_ids::exception_id),
                ),
            );
        }
        if let Some((system, id)) = &q.external {
            query = query.filter(
                x::id.eq_any(
                    external_refs::table
                        .filter(external_refs::system.eq(system.clone()).and(external_refs::ext_id.eq(id.clone())))
                        .select(external_refs::exception_id),
                ),
            );
        }
        if let Some(b) = &q.business_unit {
            query = query.filter(x::business_unit.eq(b.clone()));
        }
        if let Some(r) = &q.requester {
            query = query.filter(x::requester.eq(r.clone()));
        }
        if let Some(r) = &q.risk_owner {
            query = query.filter(x::risk_owner.eq(r.clone()));
        }
        if let Some(t) = q.expires_before {
            query = query.filter(x::expires_at.lt(naive(t)));
        }
        if let Some(t) = q.expires_after {
            query = query.filter(x::expires_at.ge(naive(t)));
        }
        if let Some(t) = q.updated_since {
            query = query.filter(x::updated_at.ge(naive(t)));
        }
        match q.covering {
            Some(true) => query = query.filter(covering_pred(now)),
            Some(false) => {
                use diesel::dsl::not;
                query = query.filter(not(covering_pred(now)));
            }
            None => {}
        }
        if let Some(text) = &q.q {
            let escaped = text.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            query = query.filter(x::search_text.like(format!("%{escaped}%")).escape('\\'));
        }
        if let Some(v) = &q.visibility {
            let sub = v.subject.clone();
            let mut p: Pred = Box::new(
                x::requester
                    .eq(sub.clone())
                    .or(x::risk_owner.eq(sub.clone()))
                    .or(x::on_behalf_of.eq(sub).assume_not_null()),
            );
            if let Some(bu) = &v.business_unit {
                p = Box::new(p.or(x::business_unit.eq(bu.clone())));
            }
            query = query.filter(p);
        }
        if let Some((t, id)) = &q.after {
            let t = naive(*t);
            let id = id.clone();
            query = match q.sort {
                Sort::CreatedAsc => query.filter(x::created_at.gt(t).or(x::created_at.eq(t).and(x::id.gt(id)))),
                Sort::CreatedDesc => query.filter(x::created_at.lt(t).or(x::created_at.eq(t).and(x::id.lt(id)))),
                Sort::UpdatedAsc => query.filter(x::updated_at.gt(t).or(x::updated_at.eq(t).and(x::id.gt(id)))),
                Sort::UpdatedDesc => query.filter(x::updated_at.lt(t).or(x::updated_at.eq(t).and(x::id.lt(id)))),
            };
        }
        query = match q.sort {
            Sort::CreatedAsc => query.order((x::created_at.asc(), x::id.asc())),
            Sort::CreatedDesc => query.order((x::created_at.desc(), x::id.desc())),
            Sort::UpdatedAsc => query.order((x::updated_at.asc(), x::id.asc())),
            Sort::UpdatedDesc => query.order((x::updated_at.desc(), x::id.desc())),
        };
        let limit = i64::from(q.limit.max(1));
        let mut conn = self.conn()?;
        let mut rows: Vec<ExceptionRow> = query.limit(limit + 1).select(ExceptionRow::as_select()).load(&mut conn)?;
        let more = rows.len() > q.limit.max(1) as usize;
        rows.truncate(q.limit.max(1) as usize);
        let items = load_many(&mut conn, rows)?;
        let next = if more {
            items.last().map(|e| {
                let t = match q.sort {
                    Sort::CreatedAsc | Sort::CreatedDesc => e.created_at,
                    Sort::UpdatedAsc | Sort::UpdatedDesc => e.updated_at,
                };
                (t, e.id.0.to_string())
            })
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// An exception's audit events, oldest first (the caller checks visibility first).
    pub fn history(&self, id: ExceptionId) -> Result<Vec<Event>, StoreError> {
        let mut conn = self.conn()?;
        audit_events::table
            .filter(audit_events::exception_id.eq(id.0.to_string()))
            .order(audit_events::seq.asc())
            .select(AuditRow::as_select())
            .load(&mut conn)?
            .into_iter()
            .map(|r| Ok(AuditRow::into_domain(r)))
            .collect()
    }

    /// Forgets the idempotency keys whose replay window has passed at `now`; returns how many.
    pub fn purge_idempotency_keys(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let before = naive(now - chrono::Duration::hours(IDEMPOTENCY_WINDOW_HOURS));
        let mut conn = self.conn()?;
        Ok(diesel::delete(idempotency_keys::table.filter(idempotency_keys::created_at.le(before)))
            .execute(&mut conn)?)
    }
}

/// How long a key replays its first answer; an older key is forgotten and starts afresh.
pub const IDEMPOTENCY_WINDOW_HOURS: i64 = 24;

/// Saves a changed exception: version, row, children, then its audit and integration events.
fn persist(conn: &mut Db, ctx: &CallContext<'_>, before: &Exception, change: Change) -> Result<Exception, StoreError> {
    let Change { after, happened } = change;
    if happened.is_empty() {
        return Ok(after);
    }
    let id = after.id.0.to_string();
    diesel::update(exceptions::table.find(&id)).set(ExceptionRow::from_domain(&after)?).execute(conn)?;
    save_children(conn, Some(before), &after, ctx.actor)?;
    append_events(conn, ctx, &after, &happened)?;
    Ok(after)
}

#[derive(diesel::QueryableByName)]
struct IdRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
}

/// What the database knows that a domain rule needs, read inside the write transaction. A
/// read that fails keeps its error here, so the caller sees the real cause rather than the
/// domain's "facts unavailable".
pub(crate) struct Facts<'a> {
    conn: &'a mut Db,
    failure: Option<StoreError>,
}

impl<'a> Facts<'a> {
    fn new(conn: &'a mut Db) -> Self {
        Self { conn, failure: None }
    }

    /// Runs a domain change that may read facts, and restores a read's error.
    fn run<T>(
        &mut self,
        f: impl FnOnce(&mut dyn leeway_domain::workflow::Facts) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match f(self) {
            Err(StoreError::Domain(DomainError::FactsUnavailable(_))) if self.failure.is_some() => {
                Err(self.failure.take().unwrap_or(StoreError::NotFound))
            }
            other => other,
        }
    }

    /// The places around `e`: holders per asset (and in the business unit when it has a
    /// limit) and earlier exceptions sharing an asset and a control. On PostgreSQL the assets,
    /// and the business unit when it has a limit, are locked for the rest of the transaction,
    /// so two concurrent writers cannot both take the last place under a limit.
    fn read_places(
        &mut self,
        e: &Exception,
        now: DateTime<Utc>,
        business_unit_limited: bool,
    ) -> Result<Places, StoreError> {
        let conn = &mut *self.conn;
        let me = e.id.0.to_string();
        let now = naive(now);
        if let Db::Pg(pg) = conn {
            let mut keys: Vec<String> = e.fields.assets.iter().map(|a| format!("asset:{a}")).collect();
            if business_unit_limited {
                keys.push(format!("bu:{}", e.fields.business_unit));
            }
            keys.sort();
            for k in keys {
                diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext($1)::bigint)")
                    .bind::<diesel::sql_types::Text, _>(k)
                    .execute(pg)?;
            }
        }
        let key = |n: i64| {
            u64::try_from(n)
                .ok()
                .and_then(ExceptionKey::new)
                .map(|k| k.to_string())
                .ok_or_else(|| StoreError::corrupt(format!("key {n}")))
        };
        // covering now, or approved to cover later: both hold a place under the limit
        let holds_place = || exceptions::status.eq_any(LIVE).and(exceptions::expires_at.gt(now).assume_not_null());
        let held: Vec<(String, i64)> = exception_assets::table
            .inner_join(exceptions::table.on(exceptions::id.eq(exception_assets::exception_id)))
            .filter(exception_assets::asset.eq_any(&e.fields.assets))
            .filter(exceptions::id.ne(&me))
            .filter(holds_place())
            .select((exception_assets::asset, exceptions::key_num))
            .load(conn)?;
        let mut on_assets: Vec<(String, Vec<String>)> = Vec::new();
        for (asset, k) in held {
            let k = key(k)?;
            match on_assets.iter_mut().find(|(a, _)| *a == asset) {
                Some((_, keys)) => keys.push(k),
                None => on_assets.push((asset, vec![k])),
            }
        }
        let in_business_unit = if business_unit_limited {
            exceptions::table
                .filter(exceptions::business_unit.eq(&e.fields.business_unit))
                .filter(exceptions::id.ne(&me))
                .filter(holds_place())
                .select(exceptions::key_num)
                .load::<i64>(conn)?
                .into_iter()
                .map(key)
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        let earlier_sharing = exceptions::table
            .filter(
                exceptions::id.eq_any(
                    exception_assets::table
                        .filter(exception_assets::asset.eq_any(&e.fields.assets))
                        .select(exception_assets::exception_id),
                ),
            )
            .filter(
                exceptions::id.eq_any(
                    exception_control_ids::table
                        .filter(exception_control_ids::control_id.eq_any(&e.fields.control_ids))
                        .select(exception_control_ids::exception_id),
                ),
            )
            .filter(exceptions::status.ne_all(["draft", "withdrawn"]))
            .filter(exceptions::id.ne(&me))
            .filter(exceptions::created_at.le(naive(e.created_at)))
            .order(exceptions::key_num)
            .limit(50)
            .select(exceptions::key_num)
            .load::<i64>(conn)?
            .into_iter()
            .map(key)
            .collect::<Result<_, _>>()?;
        Ok(Places { on_assets, in_business_unit, earlier_sharing })
    }
}

impl leeway_domain::workflow::Facts for Facts<'_> {
    fn places(&mut self, e: &Exception, now: DateTime<Utc>, business_unit_limited: bool) -> Option<Places> {
        match self.read_places(e, now, business_unit_limited) {
            Ok(p) => Some(p),
            Err(err) => {
                self.failure = Some(err);
                None
            }
        }
    }
}

fn find_idempotent(
    conn: &mut Db,
    claim: &IdempotencyClaim,
    now: DateTime<Utc>,
) -> Result<Option<StoredResponse>, StoreError> {
    let row: Option<IdempotencyRow> = idempotency_keys::table
        .find((&claim.subject, &claim.key))
        .select(IdempotencyRow::as_select())
        .first(conn)
        .optional()?;
    match row {
        None => Ok(None),
        Some(r) if utc(r.created_at) + chrono::Duration::hours(IDEMPOTENCY_WINDOW_HOURS) <= now => {
            diesel::delete(idempotency_keys::table.find((&claim.subject, &claim.key))).execute(conn)?;
            Ok(None)
        }
        Some(r) if r.request_hash != claim.request_hash => Err(StoreError::IdempotencyKeyReused),
        Some(r) => Ok(Some(StoredResponse {
            status: u16::try_from(r.status).map_err(StoreError::corrupt)?,
            body: r.body,
            location: r.location,
            etag: r.etag,
        })),
    }
}

fn resolve(conn: &mut Db, target: ExceptionRef) -> Result<String, StoreError> {
    match target {
        ExceptionRef::Id(id) => Ok(id.0.to_string()),
        ExceptionRef::Key(k) => exceptions::table
            .filter(exceptions::key_num.eq(i64::try_from(k.number()).map_err(|_| StoreError::NotFound)?))
            .select(exceptions::id)
            .first(conn)
            .optional()?
            .ok_or(StoreError::NotFound),
    }
}

fn load(conn: &mut Db, id: &str) -> Result<Exception, StoreError> {
    let row: ExceptionRow = exceptions::table
        .find(id)
        .select(ExceptionRow::as_select())
        .first(conn)
        .optional()?
        .ok_or(StoreError::NotFound)?;
    load_many(conn, vec![row])?.pop().ok_or(StoreError::NotFound)
}

/// Converts child rows and groups them by their exception, keeping their order.
fn group<R, T>(
    rows: Vec<R>,
    key: impl Fn(&R) -> String,
    convert: impl Fn(R) -> Result<T, StoreError>,
) -> Result<HashMap<String, Vec<T>>, StoreError> {
    let mut out: HashMap<String, Vec<T>> = HashMap::new();
    for r in rows {
        out.entry(key(&r)).or_default().push(convert(r)?);
    }
    Ok(out)
}

/// Loads the children of many exceptions with one query per child table.
fn load_many(conn: &mut Db, rows: Vec<ExceptionRow>) -> Result<Vec<Exception>, StoreError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let mut controls_by = group(
        controls::table
            .filter(controls::exception_id.eq_any(&ids))
            .order((controls::exception_id, controls::position))
            .select(ControlRow::as_select())
            .load(conn)?,
        |c| c.exception_id.clone(),
        ControlRow::into_domain,
    )?;
    let mut assessments_by = group(
        assessments::table
            .filter(assessments::exception_id.eq_any(&ids))
            .order((assessments::exception_id, assessments::assessed_at, assessments::id))
            .select(AssessmentRow::as_select())
            .load(conn)?,
        |a| a.exception_id.clone(),
        AssessmentRow::into_domain,
    )?;
    let mut approvals_by = group(
        approvals::table
            .filter(approvals::exception_id.eq_any(&ids))
            .order((approvals::exception_id, approvals::approved_at, approvals::id))
            .select(ApprovalRow::as_select())
            .load(conn)?,
        |a| a.exception_id.clone(),
        ApprovalRow::into_domain,
    )?;
    let mut reviews_by = group(
        reviews::table
            .filter(reviews::exception_id.eq_any(&ids))
            .order((reviews::exception_id, reviews::reviewed_at, reviews::id))
            .select(ReviewRow::as_select())
            .load(conn)?,
        |r| r.exception_id.clone(),
        ReviewRow::into_domain,
    )?;
    let mut checks_by = group(
        control_checks::table
            .filter(control_checks::exception_id.eq_any(&ids))
            .order((control_checks::exception_id, control_checks::checked_at, control_checks::id))
            .select(ControlCheckRow::as_select())
            .load(conn)?,
        |c| c.exception_id.clone(),
        ControlCheckRow::into_domain,
    )?;
    rows.into_iter()
        .map(|r| {
            let id = r.id.clone();
            r.into_domain(Children {
                assessments: assessments_by.remove(&id).unwrap_or_default(),
                controls: controls_by.remove(&id).unwrap_or_default(),
                approvals: approvals_by.remove(&id).unwrap_or_default(),
                reviews: reviews_by.remove(&id).unwrap_or_default(),
                control_checks: checks_by.remove(&id).unwrap_or_default(),
            })
        })
        .collect()
}

/// Writes what changed in the children between `before` and `after`.
fn save_children(
    conn: &mut Db,
    before: Option<&Exception>,
    after: &Exception,
    actor: &Actor,
) -> Result<(), StoreError> {
    let id = after.id.0.to_string();
    let f = &after.fields;
    if before.is_none_or(|b| b.fields.assets != f.assets) {
        diesel::delete(exception_assets::table.filter(exception_assets::exception_id.eq(&id))).execute(conn)?;
        for a in &f.assets {
            diesel::insert_into(exception_assets::table)
                .values((exception_assets::asset.eq(a), exception_assets::exception_id.eq(&id)))
                .execute(conn)?;
        }
    }
    if before.is_none_or(|b| b.fields.control_ids != f.control_ids) {
        diesel::delete(exception_control_ids::table.filter(exception_control_ids::exception_id.eq(&id)))
            .execute(conn)?;
        for c in &f.control_ids {
            diesel::insert_into(exception_control_ids::table)
                .values((exception_control_ids::control_id.eq(c), exception_control_ids::exception_id.eq(&id)))
                .execute(conn)?;
        }
    }
    if before.is_none_or(|b| b.fields.external_refs != f.external_refs) {
        diesel::delete(external_refs::table.filter(external_refs::exception_id.eq(&id))).execute(conn)?;
        for r in &f.external_refs {
            let holder: Option<i64> = external_refs::table
                .inner_join(exceptions::table.on(exceptions::id.eq(external_refs::exception_id)))
                .filter(external_refs::system.eq(&r.system).and(external_refs::ext_id.eq(&r.id)))
                .select(exceptions::key_num)
                .first(conn)
                .optional()?;
            let duplicate = |holder: Option<i64>| StoreError::DuplicateExternalRef {
                system: r.system.clone(),
                id: r.id.clone(),
                // a restricted caller is not told which exception it is (no enumeration)
                holder: holder
                    .filter(|_| !actor.is_restricted())
                    .and_then(|k| u64::try_from(k).ok().and_then(ExceptionKey::new))
                    .map(|k| k.to_string()),
            };
            if holder.is_some() {
                return Err(duplicate(holder));
            }
            diesel::insert_into(external_refs::table)
                .values((
                    external_refs::system.eq(&r.system),
                    external_refs::ext_id.eq(&r.id),
                    external_refs::exception_id.eq(&id),
                ))
                .execute(conn)
                .map_err(|e| match e {
                    // a concurrent writer took it between the check and the insert
                    DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => duplicate(None),
                    other => StoreError::Database(other),
                })?;
        }
    }
    for (i, c) in after.controls.iter().enumerate() {
        match before.and_then(|b| b.controls.iter().find(|x| x.id == c.id)) {
            Some(old) if old == c => {}
            Some(_) => {
                diesel::update(controls::table.find(c.id.0.to_string()))
                    .set(ControlRow::from_domain(&id, i, c)?)
                    .execute(conn)?;
            }
            None => {
                diesel::insert_into(controls::table).values(ControlRow::from_domain(&id, i, c)?).execute(conn)?;
            }
        }
    }
    for a in &after.assessments {
        match before.and_then(|b| b.assessments.iter().find(|x| x.id == a.id)) {
            Some(old) if old == a => {}
            Some(_) => {
                diesel::update(assessments::table.find(a.id.to_string()))
                    .set(AssessmentRow::from_domain(&id, a)?)
                    .execute(conn)?;
            }
            None => {
                diesel::insert_into(assessments::table).values(AssessmentRow::from_domain(&id, a)?).execute(conn)?;
            }
        }
    }
    for a in &after.approvals {
        match before.and_then(|b| b.approvals.iter().find(|x| x.id == a.id)) {
            Some(old) if old == a => {}
            Some(_) => {
                diesel::update(approvals::table.find(a.id.to_string()))
                    .set(ApprovalRow::from_domain(&id, a)?)
                    .execute(conn)?;
            }
            None => {
                diesel::insert_into(approvals::table).values(ApprovalRow::from_domain(&id, a)?).execute(conn)?;
            }
        }
    }
    let known = |id: &Uuid, before: Option<&Exception>, pick: fn(&Exception) -> Vec<Uuid>| {
        before.is_some_and(|b| pick(b).contains(id))
    };
    for r in &after.reviews {
        if !known(&r.id, before, |b| b.reviews.iter().map(|x| x.id).collect()) {
            diesel::insert_into(reviews::table).values(ReviewRow::from_domain(&id, r)?).execute(conn)?;
        }
    }
    for c in &after.control_checks {
        if !known(&c.id, before, |b| b.control_checks.iter().map(|x| x.id).collect()) {
            diesel::insert_into(control_checks::table).values(ControlCheckRow::from_domain(&id, c)).execute(conn)?;
        }
    }
    Ok(())
}

/// Appends one audit event per happening to the exception's hash chain, and an outbox event
/// for each that integrations care about.
fn append_events(
    conn: &mut Db,
    ctx: &CallContext<'_>,
    e: &Exception,
    happenings: &[Happening],
) -> Result<(), StoreError> {
    let id = e.id.0.to_string();
    let mut prev: String = audit_events::table
        .filter(audit_events::exception_id.eq(&id))
        .order(audit_events::seq.desc())
        .select(audit_events::hash)
        .first(conn)
        .optional()?
        .unwrap_or_else(|| GENESIS.to_owned());
    // the moment the change was stamped with (a write queued behind a later one acts then)
    let at = e.updated_at;
    for h in happenings {
        let entry = Entry::new(e, h, ctx.actor, at, ctx.request_id);
        let hash = entry.hash(&prev);
        let seq: i64 = diesel::insert_into(audit_events::table)
            .values(NewAuditRow::from_domain(&entry, std::mem::take(&mut prev), hash.clone())?)
            .returning(audit_events::seq)
            .get_result(conn)?;
        if let Some(event_type) = h.event {
            let event_id = Uuid::now_v7().to_string();
            let payload = json!({
                "id": event_id,
                "type": event_type,
                "timestamp": rfc3339(at),
                "data": {
                    "exception_id": id,
                    "key": e.key.to_string(),
                    "status": h.to,
                    "from_status": h.from,
                    "version": e.version,
                    "actor": entry.actor,
                    "changes": h.changes,
                    "audit_seq": seq,
                },
            });
            diesel::insert_into(outbox::table)
                .values(NewOutboxRow {
                    id: event_id,
                    event_type: event_type.as_str().to_owned(),
                    exception_id: id.clone(),
                    audit_seq: seq,
                    payload: payload.to_string(),
                    created_at: naive(at),
                })
                .execute(conn)?;
        }
        prev = hash;
    }
    Ok(())
}

/// Outbox events of one exception, oldest first (for tests and, later, delivery).
impl Store {
    /// The integration events written for an exception, oldest first.
    pub fn outbox_for(&self, id: ExceptionId) -> Result<Vec<(String, Value)>, StoreError> {
        let mut conn = self.conn()?;
        let rows: Vec<(String, String)> = outbox::table
            .filter(outbox::exception_id.eq(id.0.to_string()))
            .order(outbox::seq.asc())
            .select((outbox::event_type, outbox::payload))
            .load(&mut conn)?;
        rows.into_iter().map(|(t, p)| Ok((t, serde_json::from_str(&p).map_err(StoreError::corrupt)?))).collect()
    }
}
