//! Lists: every filter in the contract backed by an index, keyset pages that cost the same at
//! any depth, and one statement per page (the children are on each row).

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};
use leeway_domain::kinds::{Category, Level, Status};
use leeway_domain::record::Exception;

use crate::connection::{Db, MultiBackend, Store};
use crate::error::StoreError;
use crate::rows::{ExceptionRow, naive};
use crate::schema::{exception_assets, exception_control_ids, exceptions, external_refs};

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
    pub category: Option<Category>,
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

type Pred = Box<dyn BoxableExpression<exceptions::table, MultiBackend, SqlType = Bool>>;

/// The statuses that hold a place: covering now, or approved to cover later.
pub(crate) const LIVE: [&str; 3] = ["approved", "active", "renewal_pending"];

/// The SQL predicate for an effective status at `now` (see `workflow::effective_status`).
fn status_pred(s: Status, now: NaiveDateTime) -> Pred {
    use crate::schema::exceptions::dsl as x;
    let not_expired = || x::expires_at.gt(now).assume_not_null();
    match s {
        // one status range and no OR at the top, so that PostgreSQL walks the index of live
        // rows in the list's order (an OR of two statuses would be gathered, then sorted)
        Status::Active => Box::new(
            x::status
                .eq_any(["active", "approved"])
                .and(not_expired())
                .and(x::status.eq("active").or(x::starts_at.le(now).assume_not_null())),
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

/// Text in the title or justification, backed by each backend's text index: a trigram GIN
/// index under `LIKE` on PostgreSQL, the FTS5 trigram table on SQLite (which needs three
/// characters; a shorter text scans).
fn text_pred(text: &str, sqlite: bool) -> Pred {
    use crate::schema::exceptions::dsl as x;
    let text = text.to_lowercase();
    if sqlite && text.chars().count() >= 3 {
        // an FTS5 phrase: every character literal but the quote, which is doubled
        let phrase = format!("\"{}\"", text.replace('"', "\"\""));
        return Box::new(
            diesel::dsl::sql::<Bool>("key_num IN (SELECT rowid FROM exceptions_search WHERE exceptions_search MATCH ")
                .bind::<Text, _>(phrase)
                .sql(")"),
        );
    }
    let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    Box::new(x::search_text.like(format!("%{escaped}%")).escape('\\'))
}

/// The statement for one page, without its limit and columns.
fn page_query(q: &ListQuery, sqlite: bool) -> exceptions::BoxedQuery<'static, MultiBackend> {
    use crate::schema::exceptions::dsl as x;
    let now = naive(q.now);
    let mut query = exceptions::table.into_boxed::<MultiBackend>();
    let mut statuses = q.statuses.iter().map(|s| status_pred(*s, now));
    if let Some(first) = statuses.next() {
        query = query.filter(statuses.fold(first, |acc, p| Box::new(acc.or(p)) as Pred));
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
        Some(false) => query = query.filter(diesel::dsl::not(covering_pred(now))),
        None => {}
    }
    if let Some(text) = &q.q {
        query = query.filter(text_pred(text, sqlite));
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
    // `t >= after AND (t > after OR id > last)`: the first conjunct bounds the index scan
    if let Some((t, id)) = &q.after {
        let (t, id) = (naive(*t), id.clone());
        query = match q.sort {
            Sort::CreatedAsc => query.filter(x::created_at.ge(t).and(x::created_at.gt(t).or(x::id.gt(id)))),
            Sort::CreatedDesc => query.filter(x::created_at.le(t).and(x::created_at.lt(t).or(x::id.lt(id)))),
            Sort::UpdatedAsc => query.filter(x::updated_at.ge(t).and(x::updated_at.gt(t).or(x::id.gt(id)))),
            Sort::UpdatedDesc => query.filter(x::updated_at.le(t).and(x::updated_at.lt(t).or(x::id.lt(id)))),
        };
    }
    match q.sort {
        Sort::CreatedAsc => query.order((x::created_at.asc(), x::id.asc())),
        Sort::CreatedDesc => query.order((x::created_at.desc(), x::id.desc())),
        Sort::UpdatedAsc => query.order((x::updated_at.asc(), x::id.asc())),
        Sort::UpdatedDesc => query.order((x::updated_at.desc(), x::id.desc())),
    }
}

impl Store {
    /// A page of exceptions in one statement: index-backed filters and a keyset, so deep
    /// pages cost what the first costs.
    pub fn list(&self, q: &ListQuery) -> Result<Page, StoreError> {
        let mut conn = self.conn()?;
        let sqlite = matches!(*conn, Db::Sqlite(_));
        let size = q.limit.max(1);
        let mut rows: Vec<ExceptionRow> =
            page_query(q, sqlite).limit(i64::from(size) + 1).select(ExceptionRow::as_select()).load(&mut conn)?;
        let more = rows.len() > size as usize;
        rows.truncate(size as usize);
        let items = rows.into_iter().map(ExceptionRow::into_domain).collect::<Result<Vec<_>, _>>()?;
        let next = more.then(|| items.last()).flatten().map(|e| {
            let t = match q.sort {
                Sort::CreatedAsc | Sort::CreatedDesc => e.created_at,
                Sort::UpdatedAsc | Sort::UpdatedDesc => e.updated_at,
            };
            (t, e.id.0.to_string())
        });
        Ok(Page { items, next })
    }

    /// The plan the database chooses for the statement [`Store::list`] runs, one line per
    /// node (for the index tests). On PostgreSQL sequential scans are discouraged, as the
    /// planner does by itself on a large table, so a plan without an index shows as a
    /// `Seq Scan`; on SQLite it is `EXPLAIN QUERY PLAN`.
    #[doc(hidden)]
    pub fn explain_list(&self, q: &ListQuery) -> Result<String, StoreError> {
        let mut conn = self.conn()?;
        let sqlite = matches!(*conn, Db::Sqlite(_));
        let query = page_query(q, sqlite).limit(i64::from(q.limit.max(1)) + 1).select(ExceptionRow::as_select());
        crate::explain::plan(&mut conn, query)
    }
}
