//! Leeway's storage: one portable diesel schema over SQLite (the embedded default) and
//! PostgreSQL (production), chosen by the URL scheme, with embedded migrations for each.
//!
//! This is the only crate that speaks SQL. An exception is one row; every write runs in one
//! transaction together with its audit events, which carry the integration events, and its
//! idempotency record.
//!
//! - [`repository`]: get, create, change; the row and its audit head.
//! - [`list`]: filtered, keyset-paged lists.
//! - [`facts`]: the places under the covering limits a rule needs, under their locks.
//! - [`write`]: one change's write, in one statement on PostgreSQL.
//! - [`idempotency`]: `Idempotency-Key` replay, and the loop that writes a change.
//! - [`audit`]: the hash chain and the integration events on it.
//! - [`scheduler`]: claims of due time rules.
//! - [`feed`]: the change feed, numbered after commit so that no reader skips an event.
//! - [`webhooks`]: subscriptions and their deliveries, claimed under leases.
//! - [`coverage`]: which exceptions cover an asset at a moment, now or in the past.
//! - [`import`]: imports, a batch of rows per transaction.
//! - [`reports`]: KPIs and hotspots, aggregated by the database.
//! - [`seed`]: the batch write path `leeway seed` fills a database through.

mod audit;
mod columns;
mod connection;
mod coverage;
mod document;
mod error;
mod explain;
mod facts;
mod feed;
mod idempotency;
mod import;
mod list;
mod metrics;
mod reports;
mod repository;
mod rows;
mod scheduler;
mod schema;
mod seed;
mod webhooks;
mod write;

pub use audit::{AuditQuery, Verification, break_in};
pub use connection::{Backend, Db, Store};
pub use coverage::Covering;
pub use error::StoreError;
pub use feed::{FeedEvent, NUMBER_BATCH};
pub use idempotency::{IDEMPOTENCY_WINDOW_HOURS, IdempotencyClaim, Outcome, StoredResponse};
pub use import::{ImportRow, Imported, Slot};
pub use list::{ListQuery, Page, Sort, Visibility};
pub use metrics::{PoolState, Sample};
pub use reports::{Chronic, Count, Hotspots, KpiQuery, Kpis, Repeat, UnitVolume};
pub use repository::CallContext;
pub use seed::{SeedStep, Seeded};
pub use webhooks::{Attempt, Claimed, Delivery, DeliveryQuery, Next, Webhook, WebhookChange};
