//! Leeway's storage: one portable diesel schema over SQLite (the embedded default) and
//! PostgreSQL (production), chosen by the URL scheme, with embedded migrations for each.
//!
//! This is the only crate that speaks SQL. Every write runs in one transaction together with
//! its audit events, its integration events (the outbox) and its idempotency record.

mod connection;
mod error;
mod exceptions;
mod rows;
mod schema;

pub use connection::{Backend, Db, Store};
pub use error::StoreError;
pub use exceptions::{CallContext, IdempotencyClaim, ListQuery, Outcome, Page, Sort, StoredResponse, Visibility};
