//! End-to-end tests through HTTP. Each test starts the real server on port 0 against a fresh
//! database: SQLite by default, PostgreSQL when `LEEWAY_TEST_DATABASE_URL` names one.

#![expect(clippy::unwrap_used, reason = "helpers outside #[test] functions fail loudly too")]

mod audit_log;
mod auth;
mod conventions;
mod coverage;
mod exports;
mod governance;
mod hardening;
mod identity;
mod imports;
mod intake;
mod integrations;
mod lifecycle;
mod observability;
mod plans;
mod rate_limits;
mod recipes;
mod reports;
mod review;
mod risk;
mod statements;
mod trail;
mod upsert;
mod visibility;
