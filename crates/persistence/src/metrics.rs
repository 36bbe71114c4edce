//! What the metrics endpoint reports about the data, sampled now and then by three
//! aggregates (exceptions by status over their status index, the earliest due rule over its
//! index, the pending deliveries through their partial index), never per scrape, and the
//! pool's state.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Timestamp};

use crate::connection::{Db, Store};
use crate::error::StoreError;
use crate::reports::Count;

/// One sample of the data's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    /// Exceptions by status.
    pub by_status: Vec<Count>,
    /// The earliest time rule still waiting to be applied (the scheduler's lag, when past).
    pub oldest_due: Option<DateTime<Utc>>,
    /// When the oldest pending webhook delivery was made.
    pub oldest_pending_delivery: Option<DateTime<Utc>>,
}

/// The pool's connections at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    /// Connections open.
    pub connections: u32,
    /// Of those, idle.
    pub idle: u32,
    /// Callers asking the pool for a connection at this moment (those served at once
    /// included, for the instant it takes).
    pub waiting: u64,
}

#[derive(QueryableByName)]
struct Oldest {
    #[diesel(sql_type = Nullable<Timestamp>)]
    at: Option<NaiveDateTime>,
}

const BY_STATUS: &str = "SELECT status AS name, count(*) AS n FROM exceptions GROUP BY status ORDER BY status";
const OLDEST_DUE: &str = "SELECT min(next_due_at) AS at FROM exceptions";
// a disabled subscription's deliveries wait, parked at 9999-12-31, for it to be enabled:
// they are not late, and would make the age grow for ever
const OLDEST_PENDING: &str =
    "SELECT min(created_at) AS at FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at < '9999-12-31'";

impl Store {
    /// Counts exceptions by status and finds the oldest due rule and pending delivery.
    pub fn sample(&self) -> Result<Sample, StoreError> {
        let mut conn = self.conn()?;
        let oldest = |conn: &mut Db, sql: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
            let rows: Vec<Oldest> = match conn {
                Db::Pg(c) => diesel::sql_query(sql).load(c)?,
                Db::Sqlite(c) => diesel::sql_query(sql).load(c)?,
            };
            Ok(rows.into_iter().next().and_then(|r| r.at).map(|t| t.and_utc()))
        };
        let by_status: Vec<Count> = match &mut *conn {
            Db::Pg(c) => diesel::sql_query(BY_STATUS).load(c)?,
            Db::Sqlite(c) => diesel::sql_query(BY_STATUS).load(c)?,
        };
        let oldest_due = oldest(&mut conn, OLDEST_DUE)?;
        let oldest_pending_delivery = oldest(&mut conn, OLDEST_PENDING)?;
        Ok(Sample { by_status, oldest_due, oldest_pending_delivery })
    }

    /// The pool's connections in use, idle and awaited.
    pub fn pool_state(&self) -> PoolState {
        let s = self.pool.state();
        PoolState { connections: s.connections, idle: s.idle_connections, waiting: self.waiting() }
    }
}
