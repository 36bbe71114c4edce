//! KPIs and hotspots, computed by the database: aggregates over the exceptions and the audit
//! trail, a few statements each, never a load of every exception. Where the two backends
//! spell a function differently (months, seconds between two times, JSON arrays), each gets
//! its own fragment. The definitions are in docs/REPORTS.md.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Nullable, Text, Timestamp};

use crate::connection::{Db, Store};
use crate::error::StoreError;
use crate::rows::naive;

/// What a KPI report covers.
#[derive(Debug, Clone)]
pub struct KpiQuery {
    /// Window start (inclusive).
    pub from: DateTime<Utc>,
    /// Window end (exclusive).
    pub to: DateTime<Utc>,
    /// Only this business unit.
    pub business_unit: Option<String>,
    /// The moment the point-in-time shares are taken at.
    pub now: DateTime<Utc>,
}

/// A count under a name (a month, a status, a subject...).
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Count {
    /// The name.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// How many.
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

/// The KPI figures (see docs/REPORTS.md for each definition).
#[derive(Debug, Clone, Default)]
pub struct Kpis {
    /// Exceptions created per month (`YYYY-MM`), oldest first.
    pub volume_per_month: Vec<Count>,
    /// Seconds from the last submit to the final approval, for each approval in the window,
    /// ascending.
    pub approval_seconds: Vec<f64>,
    /// Live exceptions now (approved, active, renewal pending).
    pub live: i64,
    /// Of those, covering ones whose periodic review is overdue now.
    pub overdue_for_review: i64,
    /// Of the live ones, those with at least one verified control.
    pub with_verified_control: i64,
    /// Mean seconds from the first activation to the end, for those that ended in the window
    /// after covering.
    pub mean_lifespan_seconds: Option<f64>,
    /// How many ended in the window after covering.
    pub ended: i64,
    /// Renewals approved in the window.
    pub renewed: i64,
    /// Expiries in the window.
    pub expired: i64,
    /// Most approvals recorded in the window, at most ten.
    pub top_approvers: Vec<Count>,
    /// Exceptions created in the window, by status, residual level, category, business unit.
    pub by_status: Vec<Count>,
    /// By residual level (`unassessed` before any assessment).
    pub by_level: Vec<Count>,
    /// By category.
    pub by_category: Vec<Count>,
    /// By business unit.
    pub by_business_unit: Vec<Count>,
}

/// A repeat: exceptions (beyond draft and withdrawn) on the same asset and control.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Repeat {
    /// The asset.
    #[diesel(sql_type = Text)]
    pub asset: String,
    /// The control.
    #[diesel(sql_type = Text)]
    pub control_id: String,
    /// How many exceptions.
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

/// A business unit's volume.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct UnitVolume {
    /// The unit.
    #[diesel(sql_type = Text)]
    pub business_unit: String,
    /// Every exception.
    #[diesel(sql_type = BigInt)]
    pub total: i64,
    /// Live ones.
    #[diesel(sql_type = BigInt)]
    pub live: i64,
}

/// A chronic case.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Chronic {
    /// Its key number.
    #[diesel(sql_type = BigInt)]
    pub key_num: i64,
    /// Its title.
    #[diesel(sql_type = Text)]
    pub title: String,
    /// Its status.
    #[diesel(sql_type = Text)]
    pub status: String,
    /// Its unit.
    #[diesel(sql_type = Text)]
    pub business_unit: String,
}

/// Hotspots, each list at most `limit` long.
#[derive(Debug, Clone, Default)]
pub struct Hotspots {
    /// Asset and control pairs with two exceptions or more, most first.
    pub repeats: Vec<Repeat>,
    /// Volume per business unit, most first.
    pub business_units: Vec<UnitVolume>,
    /// Chronic exceptions, newest first.
    pub chronic: Vec<Chronic>,
    /// Assets whose live exceptions reach the per-asset limit.
    pub assets_at_limit: Vec<Count>,
}

#[derive(QueryableByName)]
struct Secs {
    /// NULL for an approval without a submit before it in the trail (a legacy import's).
    #[diesel(sql_type = Nullable<Double>)]
    secs: Option<f64>,
}

#[derive(QueryableByName)]
struct Live {
    #[diesel(sql_type = BigInt)]
    live: i64,
    #[diesel(sql_type = BigInt)]
    overdue: i64,
    #[diesel(sql_type = BigInt)]
    verified: i64,
}

#[derive(QueryableByName)]
struct Ended {
    #[diesel(sql_type = BigInt)]
    ended: i64,
    #[diesel(sql_type = Nullable<Double>)]
    mean: Option<f64>,
}

#[derive(QueryableByName)]
struct Events {
    #[diesel(sql_type = BigInt)]
    renewed: i64,
    #[diesel(sql_type = BigInt)]
    expired: i64,
}

/// The statuses that hold a place (as `list::LIVE`), as SQL.
const LIVE_SQL: &str = "('approved', 'active', 'renewal_pending')";

/// What differs between the backends.
struct Dialect {
    /// `YYYY-MM` of a time column.
    month: fn(&str) -> String,
    /// Seconds from `a` to `b`.
    seconds: fn(&str, &str) -> String,
    /// Whether the JSON array of controls in column `c` holds a verified one.
    verified: fn(&str) -> String,
    /// The n-th bind parameter.
    bind: fn(usize) -> String,
}

const PG: Dialect = Dialect {
    month: |c| format!("to_char({c}, 'YYYY-MM')"),
    seconds: |a, b| format!("EXTRACT(EPOCH FROM ({b} - {a}))::DOUBLE PRECISION"),
    verified: |c| format!("EXISTS (SELECT 1 FROM json_array_elements({c}::JSON) x WHERE x->>'status' = 'verified')"),
    bind: |n| format!("${n}"),
};

const SQLITE: Dialect = Dialect {
    month: |c| format!("strftime('%Y-%m', {c})"),
    seconds: |a, b| format!("CAST((julianday({b}) - julianday({a})) * 86400.0 AS REAL)"),
    verified: |c| {
        format!("EXISTS (SELECT 1 FROM json_each({c}) x WHERE json_extract(x.value, '$.status') = 'verified')")
    },
    bind: |n| format!("?{n}"),
};

fn dialect(conn: &Db) -> &'static Dialect {
    match conn {
        Db::Pg(_) => &PG,
        Db::Sqlite(_) => &SQLITE,
    }
}

/// Runs `sql`, whose FROM starts with `params` (the window `p_from`..`p_to`, the unit `p_unit`,
/// NULL for all, and `p_now`): each statement binds the four once, whichever it uses.
fn load<T: QueryableByName<diesel::pg::Pg> + QueryableByName<diesel::sqlite::Sqlite> + 'static>(
    conn: &mut Db,
    sql: &str,
    q: &KpiQuery,
) -> Result<Vec<T>, StoreError> {
    let b = dialect(conn).bind;
    let sql = format!(
        "WITH params AS (SELECT {} AS p_from, {} AS p_to, {} AS p_unit, {} AS p_now) {sql}",
        b(1),
        b(2),
        b(3),
        b(4)
    );
    let sql = sql.as_str();
    let (from, to, now) = (naive(q.from), naive(q.to), naive(q.now));
    let unit = q.business_unit.clone();
    Ok(match conn {
        Db::Pg(c) => diesel::sql_query(sql)
            .bind::<Timestamp, _>(from)
            .bind::<Timestamp, _>(to)
            .bind::<Nullable<Text>, _>(unit)
            .bind::<Timestamp, _>(now)
            .load(c)?,
        Db::Sqlite(c) => diesel::sql_query(sql)
            .bind::<Timestamp, _>(from)
            .bind::<Timestamp, _>(to)
            .bind::<Nullable<Text>, _>(unit)
            .bind::<Timestamp, _>(now)
            .load(c)?,
    })
}

/// Runs a report's statements in one read-only transaction: on PostgreSQL at REPEATABLE READ
/// (one snapshot, so the figures agree with each other) and without JIT compilation (these
/// aggregates are costed high enough to trigger it, and compiling took longer than running
/// them); on SQLite a read transaction is one snapshot already.
fn report_transaction<T>(conn: &mut Db, f: impl FnOnce(&mut Db) -> Result<T, StoreError>) -> Result<T, StoreError> {
    use diesel::connection::SimpleConnection;
    conn.transaction(|conn| {
        if let Db::Pg(pg) = conn {
            pg.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET LOCAL jit = off")?;
        }
        f(conn)
    })
}

fn one<T>(rows: Vec<T>) -> Result<T, StoreError> {
    rows.into_iter().next().ok_or_else(|| StoreError::corrupt("an aggregate without a row"))
}

impl Store {
    /// The KPIs of `q` (docs/REPORTS.md): eight aggregate statements.
    pub fn kpis(&self, q: &KpiQuery) -> Result<Kpis, StoreError> {
        let mut conn = self.conn()?;
        report_transaction(&mut conn, |conn| self.kpis_on(conn, q))
    }

    fn kpis_on(&self, conn: &mut Db, q: &KpiQuery) -> Result<Kpis, StoreError> {
        let d = dialect(conn);
        let (from, to, now) = ("params.p_from", "params.p_to", "params.p_now");
        let in_unit = |alias: &str| format!("(params.p_unit IS NULL OR {alias}business_unit = params.p_unit)");
        let created = format!("e.created_at >= {from} AND e.created_at < {to} AND {}", in_unit("e."));
        let volume_per_month = load::<Count>(
            conn,
            &format!(
                "SELECT {} AS name, count(*) AS n FROM params, exceptions e WHERE {created} GROUP BY 1 ORDER BY 1",
                (d.month)("e.created_at")
            ),
            q,
        )?;
        let approval_seconds = load::<Secs>(
            conn,
            &format!(
                "SELECT {} AS secs FROM params, audit_events a JOIN exceptions e ON e.id = a.exception_id \
                 WHERE a.action = 'approved' AND a.at >= {from} AND a.at < {to} AND {} ORDER BY 1",
                (d.seconds)(
                    "(SELECT max(s.at) FROM audit_events s \
                      WHERE s.exception_id = a.exception_id AND s.action = 'submitted' AND s.seq < a.seq)",
                    "a.at"
                ),
                in_unit("e.")
            ),
            q,
        )?
        .into_iter()
        .filter_map(|s| s.secs)
        .collect();
        let live = one(load::<Live>(
            conn,
            &format!(
                "SELECT count(*) AS live, \
                 count(CASE WHEN e.status IN ('active', 'renewal_pending') AND e.next_review_at < {now} THEN 1 END) AS overdue, \
                 count(CASE WHEN {} THEN 1 END) AS verified \
                 FROM params, exceptions e WHERE e.status IN {LIVE_SQL} AND {}",
                (d.verified)("e.controls"),
                in_unit("e.")
            ),
            q,
        )?)?;
        // coverage starts at the first activation; exceptions that never covered do not count
        let activated = "(SELECT a.at FROM audit_events a WHERE a.exception_id = e.id AND a.action = 'activated' ORDER BY a.seq LIMIT 1)";
        let ended = one(load::<Ended>(
            conn,
            &format!(
                "SELECT count(l.secs) AS ended, avg(l.secs) AS mean FROM (SELECT {} AS secs FROM params, exceptions e \
                 WHERE e.status IN ('expired', 'revoked', 'closed') \
                 AND e.closed_at >= {from} AND e.closed_at < {to} AND {}) l",
                (d.seconds)(activated, "e.closed_at"),
                in_unit("e.")
            ),
            q,
        )?)?;
        let events = one(load::<Events>(
            conn,
            &format!(
                "SELECT count(CASE WHEN a.action = 'renewed' THEN 1 END) AS renewed, \
                 count(CASE WHEN a.action = 'expired' THEN 1 END) AS expired \
                 FROM params, audit_events a JOIN exceptions e ON e.id = a.exception_id \
                 WHERE a.action IN ('renewed', 'expired') AND a.at >= {from} AND a.at < {to} AND {}",
                in_unit("e.")
            ),
            q,
        )?)?;
        let top_approvers = load::<Count>(
            conn,
            &format!(
                "SELECT a.actor_subject AS name, count(*) AS n \
                 FROM params, audit_events a JOIN exceptions e ON e.id = a.exception_id \
                 WHERE a.action = 'approval_recorded' AND a.at >= {from} AND a.at < {to} AND {} \
                 GROUP BY a.actor_subject ORDER BY n DESC, name LIMIT 10",
                in_unit("e.")
            ),
            q,
        )?;
        let by = |conn: &mut Db, column: &str| {
            load::<Count>(
                conn,
                &format!(
                    "SELECT {column} AS name, count(*) AS n FROM params, exceptions e WHERE {created} GROUP BY 1 ORDER BY n DESC, name"
                ),
                q,
            )
        };
        Ok(Kpis {
            volume_per_month,
            approval_seconds,
            live: live.live,
            overdue_for_review: live.overdue,
            with_verified_control: live.verified,
            mean_lifespan_seconds: ended.mean,
            ended: ended.ended,
            renewed: events.renewed,
            expired: events.expired,
            top_approvers,
            by_status: by(conn, "e.status")?,
            by_level: by(conn, "COALESCE(e.residual_level, 'unassessed')")?,
            by_category: by(conn, "e.category")?,
            by_business_unit: by(conn, "e.business_unit")?,
        })
    }

    /// Hotspots at `now`, each list at most `limit` long; `per_asset_limit` is the policy's
    /// covering limit per asset.
    pub fn hotspots(
        &self,
        business_unit: Option<&str>,
        limit: i64,
        per_asset_limit: i64,
        now: DateTime<Utc>,
    ) -> Result<Hotspots, StoreError> {
        let mut conn = self.conn()?;
        report_transaction(&mut conn, |conn| hotspots_on(conn, business_unit, limit, per_asset_limit, now))
    }
}

fn hotspots_on(
    conn: &mut Db,
    business_unit: Option<&str>,
    limit: i64,
    per_asset_limit: i64,
    now: DateTime<Utc>,
) -> Result<Hotspots, StoreError> {
    // the limits are integers the caller parsed, written into the SQL; the unit and the
    // moment are bound (through `params`, as for the KPIs)
    let (lim, per) = (limit.clamp(1, 1000), per_asset_limit.max(1));
    let q = KpiQuery { from: now, to: now, business_unit: business_unit.map(str::to_owned), now };
    let in_unit = "(params.p_unit IS NULL OR e.business_unit = params.p_unit)";
    Ok(Hotspots {
        repeats: load::<Repeat>(
            conn,
            &format!(
                "SELECT p.asset, p.control_id, count(*) AS n FROM params, exception_pairs p \
                 JOIN exceptions e ON e.id = p.exception_id \
                 WHERE e.status NOT IN ('draft', 'withdrawn') AND {in_unit} \
                 GROUP BY p.asset, p.control_id HAVING count(*) >= 2 ORDER BY n DESC, p.asset, p.control_id LIMIT {lim}"
            ),
            &q,
        )?,
        business_units: load::<UnitVolume>(
            conn,
            &format!(
                "SELECT e.business_unit, count(*) AS total, \
                 count(CASE WHEN e.status IN {LIVE_SQL} THEN 1 END) AS live \
                 FROM params, exceptions e WHERE {in_unit} \
                 GROUP BY e.business_unit ORDER BY total DESC, e.business_unit LIMIT {lim}"
            ),
            &q,
        )?,
        chronic: load::<Chronic>(
            conn,
            &format!(
                "SELECT e.key_num, e.title, e.status, e.business_unit FROM params, exceptions e \
                 WHERE e.chronic AND {in_unit} ORDER BY e.created_at DESC, e.id LIMIT {lim}"
            ),
            &q,
        )?,
        // as the limit itself counts: live, and not past the expiry the scheduler has yet
        // to apply
        assets_at_limit: load::<Count>(
            conn,
            &format!(
                "SELECT a.asset AS name, count(*) AS n FROM params, exception_assets a \
                 JOIN exceptions e ON e.id = a.exception_id \
                 WHERE e.status IN {LIVE_SQL} AND (e.expires_at IS NULL OR e.expires_at > params.p_now) AND {in_unit} \
                 GROUP BY a.asset HAVING count(*) >= {per} ORDER BY n DESC, a.asset LIMIT {lim}"
            ),
            &q,
        )?,
    })
}
