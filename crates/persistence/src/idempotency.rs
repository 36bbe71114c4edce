//! `Idempotency-Key`: the first answer to a request, kept for 24 hours in the same transaction
//! as the change it answers, and replayed to a retry.
//!
//! The key is written last, optimistically: a first request costs one INSERT and no lookup.
//! When the key turns out to be taken (its INSERT conflicts, or the change is refused because
//! an earlier request with the key already made it), the transaction is rolled back and the
//! stored answer decides: the same request replays it, another is refused.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use crate::connection::{Db, Store, write_transaction};
use crate::error::StoreError;
use crate::rows::{IdempotencyRow, naive, utc};
use crate::schema::idempotency_keys;

/// How long a key replays its first answer; an older key is forgotten and starts afresh.
pub const IDEMPOTENCY_WINDOW_HOURS: i64 = 24;

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

/// What a claimed key holds.
enum Held {
    /// Nothing, or only an expired answer (now forgotten).
    Free,
    /// The answer to this very request.
    Answer(StoredResponse),
}

fn lookup(conn: &mut Db, claim: &IdempotencyClaim, now: DateTime<Utc>) -> Result<Held, StoreError> {
    let row: Option<IdempotencyRow> = idempotency_keys::table
        .find((&claim.subject, &claim.key))
        .select(IdempotencyRow::as_select())
        .first(conn)
        .optional()?;
    match row {
        None => Ok(Held::Free),
        Some(r) if utc(r.created_at) + chrono::Duration::hours(IDEMPOTENCY_WINDOW_HOURS) <= now => {
            diesel::delete(idempotency_keys::table.find((&claim.subject, &claim.key))).execute(conn)?;
            Ok(Held::Free)
        }
        Some(r) if r.request_hash != claim.request_hash => Err(StoreError::IdempotencyKeyReused),
        Some(r) => Ok(Held::Answer(StoredResponse {
            status: u16::try_from(r.status).map_err(StoreError::corrupt)?,
            body: r.body,
            location: r.location,
            etag: r.etag,
        })),
    }
}

fn remember(conn: &mut Db, claim: &IdempotencyClaim, r: StoredResponse, now: DateTime<Utc>) -> Result<(), StoreError> {
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
    Ok(())
}

fn is_unique_violation(e: &StoreError) -> bool {
    matches!(e, StoreError::Database(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)))
}

impl Store {
    /// Runs `work` in one write transaction and, when a key is claimed, keeps `respond`'s
    /// answer under it in the same transaction; a retry of the same request replays it.
    pub(crate) fn write_once<T>(
        &self,
        claim: Option<&IdempotencyClaim>,
        now: DateTime<Utc>,
        mut work: impl FnMut(&mut Db) -> Result<T, StoreError>,
        respond: impl Fn(&T) -> StoredResponse,
    ) -> Result<Outcome<T>, StoreError> {
        let mut pooled = self.conn()?;
        let conn: &mut Db = &mut pooled;
        let Some(claim) = claim else {
            return write_transaction(conn, |conn| work(conn)).map(Outcome::Done);
        };
        // Two tries: an expired answer under the key is forgotten, then the work runs again.
        for _ in 0..2 {
            let result = write_transaction(conn, |conn| {
                let value = work(conn)?;
                remember(conn, claim, respond(&value), now)?;
                Ok(value)
            });
            let refused = match result {
                Ok(value) => return Ok(Outcome::Done(value)),
                Err(e) => e,
            };
            // The key may be taken: by this very request (replay), another request (refuse),
            // or an expired one (forget it and try again). If it is free, the refusal stands.
            match write_transaction(conn, |conn| lookup(conn, claim, now))? {
                Held::Answer(stored) => return Ok(Outcome::Replayed(stored)),
                Held::Free if is_unique_violation(&refused) => continue,
                Held::Free => return Err(refused),
            }
        }
        Err(StoreError::Corrupt("an idempotency key stayed taken after it was forgotten".into()))
    }

    /// Forgets the idempotency keys whose replay window has passed at `now`; returns how many.
    pub fn purge_idempotency_keys(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let before = naive(now - chrono::Duration::hours(IDEMPOTENCY_WINDOW_HOURS));
        let mut conn = self.conn()?;
        Ok(diesel::delete(idempotency_keys::table.filter(idempotency_keys::created_at.le(before)))
            .execute(&mut conn)?)
    }
}
