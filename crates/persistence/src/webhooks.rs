//! Webhook subscriptions and their deliveries.
//!
//! A delivery is made for each enabled subscription whose filter matches, in the transaction
//! that numbers the event (see [`crate::feed`]). A worker claims due deliveries under a lease
//! (`FOR UPDATE SKIP LOCKED` on PostgreSQL), so two nodes never send the same attempt, and only
//! the earliest pending delivery of each (subscription, exception): an exception's later event
//! waits until the earlier one succeeded or was given up.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text, Timestamp};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::connection::{Db, Store};
use crate::error::StoreError;
use crate::feed::{self, FeedEvent, Numbered};
use crate::rows::naive;
use crate::schema::{webhook_deliveries, webhooks};

/// A subscription.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = webhooks)]
pub struct Webhook {
    /// Its id (UUID v7).
    pub id: String,
    /// Where deliveries go.
    pub url: String,
    /// The event types it receives, as a JSON array; `None`: every type.
    pub event_types: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Whether deliveries are made and sent.
    pub enabled: bool,
    /// Why it was disabled by Leeway (`gone`: the receiver answered 410).
    pub disabled_reason: Option<String>,
    /// `whsec_...`.
    pub secret: String,
    /// The subject that created it; an `integration` manages only its own.
    pub created_by: String,
    /// Created.
    pub created_at: NaiveDateTime,
    /// Last changed.
    pub updated_at: NaiveDateTime,
}

impl Webhook {
    /// The event types it receives; `None`: every type.
    pub fn types(&self) -> Option<Vec<String>> {
        self.event_types.as_deref().and_then(|t| serde_json::from_str(t).ok())
    }

    fn wants(&self, event_type: &str) -> bool {
        self.types().is_none_or(|t| t.iter().any(|x| x == event_type))
    }
}

/// A change to a subscription; `None` leaves a member as it is.
#[derive(Debug, Clone, Default)]
pub struct WebhookChange {
    /// New URL.
    pub url: Option<String>,
    /// New filter (`Some(None)`: every type).
    pub event_types: Option<Option<Vec<String>>>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// New description (`Some(None)` clears it).
    pub description: Option<Option<String>>,
}

/// One attempt to send a delivery.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Attempt {
    /// When it was sent.
    pub at: DateTime<Utc>,
    /// The receiver's status, when it answered.
    pub response_status: Option<u16>,
    /// What went wrong (and up to 64 KiB of what the receiver said), when it failed.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: u64,
}

/// A delivery: one event for one subscription.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_deliveries)]
pub struct Delivery {
    /// Its id (UUID v7).
    pub id: String,
    /// The subscription.
    pub webhook_id: String,
    /// The event's feed position.
    pub event_seq: i64,
    /// The event's audit seq.
    pub audit_seq: i64,
    /// The event's stable id: `webhook-id`.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// The exception it is about.
    pub exception_id: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    /// Attempts since it was (re)queued.
    pub tries: i32,
    /// Every attempt, as a JSON array of [`Attempt`].
    pub attempts: String,
    /// When it is next sent, while pending.
    pub next_attempt_at: NaiveDateTime,
    /// Made.
    pub created_at: NaiveDateTime,
    /// Last changed.
    pub updated_at: NaiveDateTime,
}

impl Delivery {
    /// Its attempts.
    pub fn attempt_log(&self) -> Vec<Attempt> {
        serde_json::from_str(&self.attempts).unwrap_or_default()
    }
}

#[derive(Insertable)]
#[diesel(table_name = webhook_deliveries)]
struct NewDelivery {
    id: String,
    webhook_id: String,
    event_seq: i64,
    audit_seq: i64,
    event_id: String,
    event_type: String,
    exception_id: String,
    status: &'static str,
    tries: i32,
    attempts: &'static str,
    next_attempt_at: NaiveDateTime,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

/// A delivery claimed for sending, with what is sent.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The delivery.
    pub delivery: Delivery,
    /// Where to send it.
    pub url: String,
    /// What signs it.
    pub secret: String,
    /// The event.
    pub event: FeedEvent,
}

/// What became of a delivery after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Done.
    Succeeded,
    /// Sent again at this moment.
    RetryAt(DateTime<Utc>),
    /// Given up.
    Failed,
}

/// A subscription's deliveries, filtered and paged.
#[derive(Debug, Clone, Default)]
pub struct DeliveryQuery {
    /// Only this status.
    pub status: Option<String>,
    /// Only after this feed position.
    pub after: Option<i64>,
    /// Page size.
    pub limit: i64,
}

/// Most attempts kept in a delivery's log (the first ones and the latest).
const ATTEMPTS_KEPT: usize = 16;
/// What an earlier attempt keeps of its error, in bytes.
const EARLIER_ERROR_KEPT: usize = 512;

/// Cuts `s` to at most `max` bytes, at a character boundary.
fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
}

/// Makes the deliveries of just-numbered events (inside the numbering transaction).
pub(crate) fn fan_out(conn: &mut Db, numbered: &[Numbered], now: NaiveDateTime) -> Result<(), StoreError> {
    let subs: Vec<Webhook> =
        webhooks::table.filter(webhooks::enabled.eq(true)).select(Webhook::as_select()).load(conn)?;
    let rows: Vec<NewDelivery> = numbered
        .iter()
        .flat_map(|n| subs.iter().filter(|w| w.wants(&n.n_event_type)).map(move |w| (n, w)))
        .map(|(n, w)| NewDelivery {
            id: Uuid::now_v7().to_string(),
            webhook_id: w.id.clone(),
            event_seq: n.n_feed_seq,
            audit_seq: n.n_seq,
            event_id: String::new(),
            event_type: n.n_event_type.clone(),
            exception_id: n.n_exception_id.clone(),
            status: "pending",
            tries: 0,
            attempts: "[]",
            next_attempt_at: now,
            created_at: now,
            updated_at: now,
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    // the event ids, read with the events
    let seqs: Vec<i64> = numbered.iter().map(|n| n.n_seq).collect();
    let ids: std::collections::HashMap<i64, String> = crate::schema::audit_events::table
        .filter(crate::schema::audit_events::seq.eq_any(&seqs))
        .select((crate::schema::audit_events::seq, crate::schema::audit_events::event_id))
        .load::<(i64, Option<String>)>(conn)?
        .into_iter()
        .filter_map(|(s, id)| Some((s, id?)))
        .collect();
    let rows: Vec<NewDelivery> = rows
        .into_iter()
        .map(|mut r| {
            r.event_id = ids.get(&r.audit_seq).cloned().unwrap_or_default();
            r
        })
        .collect();
    // 13 binds a row: within both backends' limits
    for chunk in rows.chunks(1000) {
        match conn {
            Db::Pg(pg) => diesel::insert_into(webhook_deliveries::table).values(chunk).execute(pg)?,
            Db::Sqlite(lite) => diesel::insert_into(webhook_deliveries::table).values(chunk).execute(lite)?,
        };
    }
    Ok(())
}

/// The columns a change writes; `None` leaves one as it is.
#[derive(AsChangeset)]
#[diesel(table_name = webhooks)]
struct WebhookSet {
    url: Option<String>,
    event_types: Option<Option<String>>,
    enabled: Option<bool>,
    disabled_reason: Option<Option<String>>,
    description: Option<Option<String>>,
    updated_at: NaiveDateTime,
}

/// Far in the future: when the pending deliveries of a disabled subscription are due, so that
/// claims never walk them.
pub(crate) fn parked() -> NaiveDateTime {
    chrono::NaiveDate::from_ymd_opt(9999, 12, 31).and_then(|d| d.and_hms_opt(0, 0, 0)).unwrap_or_default()
}

/// A disabled subscription's pending deliveries wait out of the claims' way.
fn park(conn: &mut Db, webhook_id: &str) -> Result<(), StoreError> {
    diesel::update(
        webhook_deliveries::table
            .filter(webhook_deliveries::webhook_id.eq(webhook_id))
            .filter(webhook_deliveries::status.eq("pending")),
    )
    .set(webhook_deliveries::next_attempt_at.eq(parked()))
    .execute(conn)?;
    Ok(())
}

/// Enabled again: its pending deliveries are due now.
fn unpark(conn: &mut Db, webhook_id: &str, now: NaiveDateTime) -> Result<(), StoreError> {
    diesel::update(
        webhook_deliveries::table
            .filter(webhook_deliveries::webhook_id.eq(webhook_id))
            .filter(webhook_deliveries::status.eq("pending"))
            .filter(webhook_deliveries::next_attempt_at.eq(parked())),
    )
    .set(webhook_deliveries::next_attempt_at.eq(now))
    .execute(conn)?;
    Ok(())
}

#[derive(QueryableByName)]
struct ClaimedId {
    #[diesel(sql_type = Text)]
    id: String,
}

impl Store {
    /// Saves a new subscription.
    pub fn create_webhook(&self, w: &Webhook) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        diesel::insert_into(webhooks::table).values(w).execute(&mut conn)?;
        Ok(())
    }

    /// Subscriptions after id `after` (all, or those `owner` created), by id.
    pub fn webhooks(&self, owner: Option<&str>, after: Option<&str>, limit: i64) -> Result<Vec<Webhook>, StoreError> {
        let mut conn = self.conn()?;
        let mut q = webhooks::table.select(Webhook::as_select()).order(webhooks::id.asc()).limit(limit).into_boxed();
        if let Some(o) = owner {
            q = q.filter(webhooks::created_by.eq(o.to_owned()));
        }
        if let Some(a) = after {
            q = q.filter(webhooks::id.gt(a.to_owned()));
        }
        Ok(q.load(&mut conn)?)
    }

    /// One subscription (of `owner`, when given).
    pub fn webhook(&self, id: &str, owner: Option<&str>) -> Result<Webhook, StoreError> {
        let mut conn = self.conn()?;
        let w: Webhook = webhooks::table
            .filter(webhooks::id.eq(id))
            .select(Webhook::as_select())
            .first(&mut conn)
            .optional()?
            .ok_or(StoreError::NotFound)?;
        if owner.is_some_and(|o| o != w.created_by) {
            return Err(StoreError::NotFound);
        }
        Ok(w)
    }

    /// Applies `change` to a subscription (of `owner`, when given): only the members sent
    /// are written, so a change never undoes one made meanwhile (the worker disabling it).
    pub fn update_webhook(
        &self,
        id: &str,
        owner: Option<&str>,
        change: &WebhookChange,
        now: DateTime<Utc>,
    ) -> Result<Webhook, StoreError> {
        self.webhook(id, owner)?;
        let event_types = match &change.event_types {
            Some(t) => Some(t.as_ref().map(serde_json::to_string).transpose().map_err(StoreError::corrupt)?),
            None => None,
        };
        let set = WebhookSet {
            url: change.url.clone(),
            event_types,
            enabled: change.enabled,
            // enabling clears why Leeway disabled it
            disabled_reason: (change.enabled == Some(true)).then_some(None),
            description: change.description.clone(),
            updated_at: naive(now),
        };
        let mut pooled = self.conn()?;
        let conn: &mut Db = &mut pooled;
        self.write_transaction(conn, |conn| {
            diesel::update(webhooks::table.filter(webhooks::id.eq(id))).set(&set).execute(conn)?;
            match change.enabled {
                Some(false) => park(conn, id)?,
                Some(true) => unpark(conn, id, naive(now))?,
                None => {}
            }
            Ok::<_, StoreError>(())
        })?;
        drop(pooled);
        self.webhook(id, owner)
    }

    /// Replaces a subscription's secret.
    pub fn rotate_webhook_secret(
        &self,
        id: &str,
        owner: Option<&str>,
        secret: &str,
        now: DateTime<Utc>,
    ) -> Result<Webhook, StoreError> {
        let mut w = self.webhook(id, owner)?;
        w.secret = secret.to_owned();
        w.updated_at = naive(now);
        let mut conn = self.conn()?;
        diesel::update(webhooks::table.filter(webhooks::id.eq(id)))
            .set((webhooks::secret.eq(&w.secret), webhooks::updated_at.eq(w.updated_at)))
            .execute(&mut conn)?;
        Ok(w)
    }

    /// Deletes a subscription; its deliveries go with it (`ON DELETE CASCADE`). The row is
    /// locked before its deliveries, in the order disabling takes them.
    pub fn delete_webhook(&self, id: &str, owner: Option<&str>) -> Result<(), StoreError> {
        self.webhook(id, owner)?;
        let mut pooled = self.conn()?;
        let conn: &mut Db = &mut pooled;
        self.write_transaction(conn, |conn| {
            diesel::delete(webhooks::table.filter(webhooks::id.eq(id))).execute(conn)?;
            Ok::<_, StoreError>(())
        })
    }

    /// Disables a subscription on Leeway's own initiative (`reason`: `gone`).
    pub fn disable_webhook(&self, id: &str, reason: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut pooled = self.conn()?;
        let conn: &mut Db = &mut pooled;
        self.write_transaction(conn, |conn| {
            diesel::update(webhooks::table.filter(webhooks::id.eq(id)))
                .set((
                    webhooks::enabled.eq(false),
                    webhooks::disabled_reason.eq(reason),
                    webhooks::updated_at.eq(naive(now)),
                ))
                .execute(conn)?;
            park(conn, id)?;
            Ok::<_, StoreError>(())
        })
    }

    /// A subscription's deliveries in feed order.
    pub fn deliveries(&self, webhook_id: &str, q: &DeliveryQuery) -> Result<Vec<Delivery>, StoreError> {
        let mut conn = self.conn()?;
        let mut query = webhook_deliveries::table
            .filter(webhook_deliveries::webhook_id.eq(webhook_id.to_owned()))
            .select(Delivery::as_select())
            .order(webhook_deliveries::event_seq.asc())
            .limit(q.limit)
            .into_boxed();
        if let Some(s) = &q.status {
            query = query.filter(webhook_deliveries::status.eq(s.clone()));
        }
        if let Some(a) = q.after {
            query = query.filter(webhook_deliveries::event_seq.gt(a));
        }
        Ok(query.load(&mut conn)?)
    }

    /// Queues a failed delivery for one more attempt, now (or, while its subscription is
    /// disabled, when it is enabled again). `Ok(None)`: it is not failed.
    pub fn retry_delivery(
        &self,
        webhook_id: &str,
        delivery_id: &str,
        last_try: i32,
        now: DateTime<Utc>,
    ) -> Result<Option<Delivery>, StoreError> {
        let mut pooled = self.conn()?;
        let conn: &mut Db = &mut pooled;
        self.write_transaction(conn, |conn| {
            let exists = webhook_deliveries::table
                .filter(webhook_deliveries::id.eq(delivery_id))
                .filter(webhook_deliveries::webhook_id.eq(webhook_id))
                .select(Delivery::as_select())
                .first(conn)
                .optional()?
                .ok_or(StoreError::NotFound)?;
            if exists.status != "failed" {
                return Ok(None);
            }
            // read under a lock an enabling PATCH must wait for (SQLite's writers queue anyway),
            // so the two never cross and leave the delivery parked
            let enabled_q = webhooks::table.filter(webhooks::id.eq(webhook_id)).select(webhooks::enabled);
            let enabled: bool = match conn {
                Db::Pg(pg) => enabled_q.for_share().first(pg)?,
                Db::Sqlite(lite) => enabled_q.first(lite)?,
            };
            let due = if enabled { naive(now) } else { parked() };
            diesel::update(webhook_deliveries::table.filter(webhook_deliveries::id.eq(delivery_id)))
                .set((
                    webhook_deliveries::status.eq("pending"),
                    // one more attempt: if it fails, the delivery is failed again
                    webhook_deliveries::tries.eq(last_try),
                    webhook_deliveries::next_attempt_at.eq(due),
                    webhook_deliveries::updated_at.eq(naive(now)),
                ))
                .execute(conn)?;
            Ok(Some(Delivery {
                status: "pending".into(),
                tries: last_try,
                next_attempt_at: due,
                updated_at: naive(now),
                ..exists
            }))
        })
    }

    /// Forgets deliveries that ended (succeeded or failed) before `before`: the log stays
    /// bounded by a retention window of traffic.
    pub fn purge_deliveries(&self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        Ok(diesel::delete(
            webhook_deliveries::table
                .filter(webhook_deliveries::status.ne("pending"))
                .filter(webhook_deliveries::updated_at.lt(naive(before))),
        )
        .execute(&mut conn)?)
    }

    /// Subscriptions `owner` created.
    pub fn count_webhooks(&self, owner: &str) -> Result<i64, StoreError> {
        let mut conn = self.conn()?;
        Ok(webhooks::table.filter(webhooks::created_by.eq(owner)).count().get_result(&mut conn)?)
    }

    /// Claims up to `limit` due deliveries for `owner` until `lease_until`: for each
    /// (subscription, exception) only the earliest pending one, and only of enabled
    /// subscriptions. Loads what is sent with them.
    pub fn claim_deliveries(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        let mut pooled = self.conn()?;
        let conn: &mut Db = &mut pooled;
        let (now, lease) = (naive(now), naive(lease_until));
        let ids: Vec<ClaimedId> = self.write_transaction(conn, |conn| {
            let picked = "SELECT d.id FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
                 WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND w.enabled \
                 AND (d.lease_until IS NULL OR d.lease_until < $1) \
                 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e WHERE e.webhook_id = d.webhook_id \
                   AND e.exception_id = d.exception_id AND e.status = 'pending' AND e.id <> d.id \
                   AND (e.event_seq < d.event_seq OR e.lease_until >= $1)) \
                 ORDER BY d.next_attempt_at, d.event_seq LIMIT $4";
            let claimed = match conn {
                Db::Pg(pg) => diesel::sql_query(format!(
                    "UPDATE webhook_deliveries SET lease_until = $2, lease_owner = $3 \
                     WHERE id IN ({picked} FOR UPDATE OF d SKIP LOCKED) RETURNING id"
                ))
                .bind::<Timestamp, _>(now)
                .bind::<Timestamp, _>(lease)
                .bind::<Text, _>(owner)
                .bind::<BigInt, _>(limit)
                .load(pg)?,
                // SQLite numbers `$n` parameters by first appearance: say them in order
                Db::Sqlite(lite) => diesel::sql_query(format!(
                    "UPDATE webhook_deliveries SET lease_until = ?2, lease_owner = ?3 WHERE id IN ({}) RETURNING id",
                    picked.replace("$1", "?1").replace("$4", "?4")
                ))
                .bind::<Timestamp, _>(now)
                .bind::<Timestamp, _>(lease)
                .bind::<Text, _>(owner)
                .bind::<BigInt, _>(limit)
                .load(lite)?,
            };
            Ok::<_, StoreError>(claimed)
        })?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = ids.into_iter().map(|c| c.id).collect();
        let rows: Vec<(Delivery, String, String)> = webhook_deliveries::table
            .inner_join(webhooks::table.on(webhooks::id.eq(webhook_deliveries::webhook_id)))
            .filter(webhook_deliveries::id.eq_any(&ids))
            .select((Delivery::as_select(), webhooks::url, webhooks::secret))
            .load(conn)?;
        let seqs: Vec<i64> = rows.iter().map(|r| r.0.audit_seq).collect();
        // one event may go to several subscriptions in one claim
        let events = feed::by_audit_seq(conn, &seqs)?;
        let mut claimed: Vec<Claimed> = rows
            .into_iter()
            .filter_map(|(delivery, url, secret)| {
                let event = events.get(&delivery.audit_seq).cloned().or_else(|| {
                    tracing::error!(delivery = %delivery.id, "the event of a delivery is missing");
                    None
                })?;
                Some(Claimed { delivery, url, secret, event })
            })
            .collect();
        claimed.sort_by_key(|c| c.delivery.event_seq);
        Ok(claimed)
    }

    /// Records an attempt on a delivery this worker (`owner`) still holds, and what follows.
    /// `false`: the lease was lost (another worker took it over), nothing was recorded.
    pub fn finish_delivery(
        &self,
        claimed: &Delivery,
        owner: &str,
        attempt: Attempt,
        next: &Next,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut log = claimed.attempt_log();
        // the latest attempt keeps what the receiver said; earlier ones a line of it
        for a in &mut log {
            if let Some(e) = &mut a.error {
                truncate(e, EARLIER_ERROR_KEPT);
            }
        }
        log.push(attempt);
        if log.len() > ATTEMPTS_KEPT {
            // keep the first attempts and the latest
            log.drain(ATTEMPTS_KEPT / 2..log.len() - ATTEMPTS_KEPT / 2);
        }
        let (status, at) = match next {
            Next::Succeeded => ("succeeded", now),
            Next::RetryAt(t) => ("pending", *t),
            Next::Failed => ("failed", now),
        };
        let mut conn = self.conn()?;
        let n = diesel::update(
            webhook_deliveries::table
                .filter(webhook_deliveries::id.eq(&claimed.id))
                .filter(webhook_deliveries::lease_owner.eq(owner))
                .filter(webhook_deliveries::status.eq("pending")),
        )
        .set((
            webhook_deliveries::status.eq(status),
            webhook_deliveries::tries.eq(claimed.tries.saturating_add(1)),
            webhook_deliveries::attempts.eq(serde_json::to_string(&log).map_err(StoreError::corrupt)?),
            webhook_deliveries::next_attempt_at.eq(naive(at)),
            webhook_deliveries::lease_until.eq(None::<NaiveDateTime>),
            webhook_deliveries::lease_owner.eq(None::<String>),
            webhook_deliveries::updated_at.eq(naive(now)),
        ))
        .execute(&mut conn)?;
        if n == 1
            && let Next::RetryAt(t) = next
        {
            // what follows on the same exception waits with it, out of the claims' way
            diesel::update(
                webhook_deliveries::table
                    .filter(webhook_deliveries::webhook_id.eq(&claimed.webhook_id))
                    .filter(webhook_deliveries::exception_id.eq(&claimed.exception_id))
                    .filter(webhook_deliveries::status.eq("pending"))
                    .filter(webhook_deliveries::event_seq.gt(claimed.event_seq))
                    .filter(webhook_deliveries::next_attempt_at.lt(naive(*t))),
            )
            .set(webhook_deliveries::next_attempt_at.eq(naive(*t)))
            .execute(&mut conn)?;
        }
        Ok(n == 1)
    }
}
