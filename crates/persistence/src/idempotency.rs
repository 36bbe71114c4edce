//! `Idempotency-Key`: the first answer to a request, kept for 24 hours in the same transaction
//! as the change it answers, and replayed to a retry.
//!
//! The key is written with the change, optimistically: a first request costs no lookup. When
//! the key turns out to be taken (its INSERT conflicts, or the change is refused because an
//! earlier request with the key already made it), nothing was written and the stored answer
//! decides: the same request replays it, another is refused.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use crate::connection::{Db, Store};
use crate::error::StoreError;
use crate::facts::Reading;
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

/// When an answer kept at `created` stops replaying (`None`: beyond the calendar, never).
fn window_end(created: chrono::NaiveDateTime) -> Option<DateTime<Utc>> {
    utc(created).checked_add_signed(chrono::Duration::hours(IDEMPOTENCY_WINDOW_HOURS))
}

fn lookup(conn: &mut Db, claim: &IdempotencyClaim, now: DateTime<Utc>) -> Result<Held, StoreError> {
    let row: Option<IdempotencyRow> = idempotency_keys::table
        .find((&claim.subject, &claim.key))
        .select(IdempotencyRow::as_select())
        .first(conn)
        .optional()?;
    match row {
        None => Ok(Held::Free),
        Some(r) if window_end(r.created_at).is_some_and(|end| end <= now) => {
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

impl IdempotencyRow {
    /// The record of `answer` to the request `claim` stands for.
    pub(crate) fn new(claim: &IdempotencyClaim, answer: StoredResponse, now: DateTime<Utc>) -> Self {
        Self {
            subject: claim.subject.clone(),
            idem_key: claim.key.clone(),
            request_hash: claim.request_hash.clone(),
            status: i32::from(answer.status),
            body: answer.body,
            location: answer.location,
            etag: answer.etag,
            created_at: naive(now),
        }
    }
}

fn is_unique_violation(e: &StoreError) -> bool {
    matches!(e, StoreError::Database(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)))
}

/// Tries without locks before taking them: on PostgreSQL a change is first judged on plain
/// reads and written by one statement that refuses if they moved; after this many refusals it
/// is judged under locks, which always succeeds.
const OPTIMISTIC_TRIES: u32 = 3;

impl Store {
    /// Runs one change until it is written, and replays the answer a retry of the same
    /// request already got.
    ///
    /// `attempt` judges the change from what it reads and writes it, with its idempotency
    /// record when a key is claimed (see [`crate::write`]). On PostgreSQL it first runs with
    /// [`Reading::Optimistic`] outside any transaction (no `BEGIN`/`COMMIT` round trips);
    /// after [`OPTIMISTIC_TRIES`] stale tries, in a transaction with [`Reading::Locked`]. On
    /// SQLite always the latter, in an IMMEDIATE transaction.
    ///
    /// When the change fails and a key is claimed, the key decides: the same request already
    /// answered is replayed (its first try may have moved the state this try was refused
    /// on), another request under the key is refused, an expired answer is forgotten.
    pub(crate) fn change<T>(
        &self,
        claim: Option<&IdempotencyClaim>,
        now: DateTime<Utc>,
        mut attempt: impl FnMut(&mut Db, Reading) -> Result<T, StoreError>,
    ) -> Result<Outcome<T>, StoreError> {
        let mut pooled = self.conn()?;
        let conn: &mut Db = &mut pooled;
        let optimistic = matches!(conn, Db::Pg(_));
        // two rounds: an expired answer under the key is forgotten, then the change runs again
        for _ in 0..2 {
            let mut stale = 0;
            let result = loop {
                let tried = if optimistic && stale < OPTIMISTIC_TRIES {
                    attempt(conn, Reading::Optimistic)
                } else {
                    self.write_transaction(conn, |conn| attempt(conn, Reading::Locked))
                };
                match tried {
                    // bounded: under locks only a place freed by the clock can still move
                    Err(StoreError::Stale) if stale < OPTIMISTIC_TRIES + 5 => stale += 1,
                    other => break other,
                }
            };
            let refused = match (result, claim) {
                (Ok(value), _) => return Ok(Outcome::Done(value)),
                (Err(e), None) => return Err(e),
                (Err(e), Some(_)) => e,
            };
            let Some(claim) = claim else { return Err(refused) };
            match self.write_transaction(conn, |conn| lookup(conn, claim, now))? {
                Held::Answer(stored) => return Ok(Outcome::Replayed(stored)),
                Held::Free if is_unique_violation(&refused) => continue,
                Held::Free => return Err(refused),
            }
        }
        Err(StoreError::Corrupt("an idempotency key stayed taken after it was forgotten".into()))
    }

    /// The answer kept for the request `claim` stands for, if it was answered within the
    /// replay window; `IdempotencyKeyReused` when the key was used for another request. For
    /// requests written in several transactions (imports), which cannot keep their answer
    /// in the transaction of their change.
    pub fn recall(&self, claim: &IdempotencyClaim, now: DateTime<Utc>) -> Result<Option<StoredResponse>, StoreError> {
        let mut conn = self.conn()?;
        match self.write_transaction(&mut conn, |conn| lookup(conn, claim, now))? {
            Held::Free => Ok(None),
            Held::Answer(stored) => Ok(Some(stored)),
        }
    }

    /// Keeps `answer` for the request `claim` stands for. When a concurrent run of the same
    /// request kept its answer first, that answer is returned to be replayed instead.
    pub fn remember(
        &self,
        claim: &IdempotencyClaim,
        answer: StoredResponse,
        now: DateTime<Utc>,
    ) -> Result<Option<StoredResponse>, StoreError> {
        let mut conn = self.conn()?;
        let row = IdempotencyRow::new(claim, answer, now);
        let kept = self.write_transaction(&mut conn, |conn| {
            diesel::insert_into(idempotency_keys::table).values(&row).execute(conn).map_err(StoreError::from)
        });
        match kept {
            Ok(_) => Ok(None),
            Err(e) if is_unique_violation(&e) => self.recall(claim, now),
            Err(e) => Err(e),
        }
    }

    /// Forgets the idempotency keys whose replay window has passed at `now`; returns how many.
    pub fn purge_idempotency_keys(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let Some(before) = now.checked_sub_signed(chrono::Duration::hours(IDEMPOTENCY_WINDOW_HOURS)) else {
            return Ok(0);
        };
        let before = naive(before);
        let mut conn = self.conn()?;
        Ok(diesel::delete(idempotency_keys::table.filter(idempotency_keys::created_at.le(before)))
            .execute(&mut conn)?)
    }
}
