//! What the database knows that a domain rule needs, read inside the write transaction: the
//! places taken under the covering limits around an exception, and its earlier repeats.
//!
//! One statement either way. On PostgreSQL it calls `leeway_places` (a migration defines
//! it), which first locks the exception's assets, and its business unit only when that unit
//! has a limit, then reads under a fresh snapshot: two writers can never both take the last
//! place, and writers on other assets never wait. On SQLite the transaction already holds the
//! database's one write lock, and the same read runs as one UNION ALL.
//!
//! Repeats are found through `exception_pairs` (asset, control id, key): index ranges over
//! the request's own pairs, so an asset with a long history costs no more than a new one.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Text, Timestamp};
use leeway_domain::DomainError;
use leeway_domain::ids::ExceptionKey;
use leeway_domain::record::Exception;
use leeway_domain::workflow::Places;
use sha2::{Digest, Sha256};

use crate::connection::Db;
use crate::error::StoreError;
use crate::rows::naive;
use crate::write::PlacesSeen;

/// The SQLite form of `leeway_places`' read (the lists are bound as JSON arrays).
const SQLITE_PLACES: &str = "\
SELECT 'asset' AS place_kind, x.asset AS place_name, e.key_num AS place_key
FROM exception_assets x JOIN exceptions e ON e.id = x.exception_id
WHERE x.asset IN (SELECT value FROM json_each(?1)) AND e.id <> ?3
  AND e.status IN ('approved', 'active', 'renewal_pending') AND e.expires_at > ?6
UNION ALL
SELECT 'business_unit', e.business_unit, e.key_num
FROM exceptions e
WHERE ?5 AND e.business_unit = ?4 AND e.id <> ?3
  AND e.status IN ('approved', 'active', 'renewal_pending') AND e.expires_at > ?6
UNION ALL
SELECT * FROM (SELECT DISTINCT 'earlier', '', p.key_num
FROM exception_pairs p JOIN exceptions e ON e.id = p.exception_id
WHERE p.asset IN (SELECT value FROM json_each(?1)) AND p.control_id IN (SELECT value FROM json_each(?2))
  AND e.id <> ?3 AND e.created_at <= ?7 AND e.status NOT IN ('draft', 'withdrawn')
ORDER BY p.key_num LIMIT 50)";

/// The advisory lock keys for the assets of `e` (and its business unit when it has a limit),
/// sorted, so that every writer takes them in the same order. A key is the first eight bytes
/// of the SHA-256 of its name: the same on every node, whatever its build.
fn lock_keys(e: &Exception, bu_limited: bool) -> Vec<i64> {
    let names = e.fields.assets.iter().map(|a| format!("asset:{a}"));
    let bu = bu_limited.then(|| format!("bu:{}", e.fields.business_unit));
    let mut keys: Vec<i64> = names
        .chain(bu)
        .map(|name| {
            let digest = Sha256::digest(name.as_bytes());
            let mut first = [0u8; 8];
            first.copy_from_slice(&digest[..8]);
            i64::from_be_bytes(first)
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The places as `leeway_places_seen` renders them: `kind|name|key` lines, sorted by kind
/// and name bytewise (`COLLATE "C"`), then key.
fn canonical(rows: &[PlaceRow]) -> String {
    let mut sorted: Vec<&PlaceRow> = rows.iter().collect();
    sorted.sort_by(|a, b| {
        (a.place_kind.as_bytes(), a.place_name.as_bytes(), a.place_key).cmp(&(
            b.place_kind.as_bytes(),
            b.place_name.as_bytes(),
            b.place_key,
        ))
    });
    sorted.iter().map(|r| format!("{}|{}|{}", r.place_kind, r.place_name, r.place_key)).collect::<Vec<_>>().join("\n")
}

#[derive(QueryableByName)]
struct PlaceRow {
    #[diesel(sql_type = Text)]
    place_kind: String,
    #[diesel(sql_type = Text)]
    place_name: String,
    #[diesel(sql_type = BigInt)]
    place_key: i64,
}

/// How a change reads its facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reading {
    /// Without locks: the write checks them again under their locks (PostgreSQL's first tries).
    Optimistic,
    /// Under the locks, held to the end of the transaction (SQLite always, where the
    /// transaction holds the one write lock; PostgreSQL when optimism kept failing).
    Locked,
}

/// The database's answers to the domain's questions for one change. A read that fails keeps
/// its error here, so the caller sees the real cause rather than the domain's "facts
/// unavailable"; a read that succeeds is kept for the write to check again.
pub(crate) struct Facts<'a> {
    conn: &'a mut Db,
    reading: Reading,
    failure: Option<StoreError>,
    seen: Option<PlacesSeen>,
}

impl<'a> Facts<'a> {
    pub(crate) fn new(conn: &'a mut Db, reading: Reading) -> Self {
        Self { conn, reading, failure: None, seen: None }
    }

    /// Runs a domain change that may read facts, and restores a read's error.
    pub(crate) fn run<T>(
        &mut self,
        f: impl FnOnce(&mut dyn leeway_domain::workflow::Facts) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match f(self) {
            Err(StoreError::Domain(DomainError::FactsUnavailable(what))) => {
                Err(self.failure.take().unwrap_or(StoreError::Domain(DomainError::FactsUnavailable(what))))
            }
            other => other,
        }
    }

    /// The places the change was judged on, for the write to check.
    pub(crate) fn seen(self) -> Option<PlacesSeen> {
        self.seen
    }

    fn read_places(&mut self, e: &Exception, now: DateTime<Utc>, bu_limited: bool) -> Result<Places, StoreError> {
        if self.seen.is_some() && self.reading == Reading::Optimistic {
            // one write checks one read; a change that asks twice is judged under the locks
            // (where the last read is the one the write checks: nothing moves under them)
            return Err(StoreError::Stale);
        }
        let f = &e.fields;
        let me = e.id.0.to_string();
        let locks = lock_keys(e, bu_limited);
        let rows: Vec<PlaceRow> = match &mut *self.conn {
            Db::Pg(pg) => diesel::sql_query(
                "SELECT place_kind, place_name, place_key FROM leeway_places($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind::<Text, _>(&me)
            .bind::<Array<BigInt>, _>(if self.reading == Reading::Locked { locks.clone() } else { Vec::new() })
            .bind::<Array<Text>, _>(&f.assets)
            .bind::<Array<Text>, _>(&f.control_ids)
            .bind::<Text, _>(&f.business_unit)
            .bind::<Bool, _>(bu_limited)
            .bind::<Timestamp, _>(naive(now))
            .bind::<Timestamp, _>(naive(e.created_at))
            .load(pg)?,
            Db::Sqlite(lite) => diesel::sql_query(SQLITE_PLACES)
                .bind::<Text, _>(serde_json::to_string(&f.assets).map_err(StoreError::corrupt)?)
                .bind::<Text, _>(serde_json::to_string(&f.control_ids).map_err(StoreError::corrupt)?)
                .bind::<Text, _>(&me)
                .bind::<Text, _>(&f.business_unit)
                .bind::<Bool, _>(bu_limited)
                .bind::<Timestamp, _>(naive(now))
                .bind::<Timestamp, _>(naive(e.created_at))
                .load(lite)?,
        };
        self.seen = Some(PlacesSeen {
            me,
            locks,
            assets: f.assets.clone(),
            control_ids: f.control_ids.clone(),
            business_unit: f.business_unit.clone(),
            business_unit_limited: bu_limited,
            at: now,
            created: e.created_at,
            text: canonical(&rows),
        });
        let mut places = Places::default();
        let mut earlier = Vec::new();
        for row in rows {
            let key = u64::try_from(row.place_key)
                .ok()
                .and_then(ExceptionKey::new)
                .ok_or_else(|| StoreError::corrupt(format!("key {}", row.place_key)))?
                .to_string();
            match row.place_kind.as_str() {
                "asset" => match places.on_assets.iter_mut().find(|(a, _)| *a == row.place_name) {
                    Some((_, keys)) => keys.push(key),
                    None => places.on_assets.push((row.place_name, vec![key])),
                },
                "business_unit" => places.in_business_unit.push(key),
                "earlier" => earlier.push((row.place_key, key)),
                other => return Err(StoreError::corrupt(format!("place kind {other:?}"))),
            }
        }
        // oldest first, whatever order the backend combined the parts in
        earlier.sort_unstable();
        places.earlier_sharing = earlier.into_iter().map(|(_, k)| k).collect();
        Ok(places)
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
