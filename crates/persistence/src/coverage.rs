//! Coverage: which exceptions permit a deviation on an asset (for a control) at a moment, now
//! or in the past.
//!
//! The answer comes from `coverage_periods`, which a trigger on `exceptions` keeps: while an
//! exception holds a place (approved, active, renewal pending) it has one open row per
//! (asset, control id) with the dates and level in force; any change to those closes the rows
//! at the change's moment and opens new ones. The past is never rewritten, so "was this asset
//! covered at T?" is answered exactly as it stood at T. One index range per asset.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;

use crate::connection::Store;
use crate::error::StoreError;
use crate::rows::{naive, utc};
use crate::schema::coverage_periods;

/// An exception covering an asset at a moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Covering {
    /// The exception's id.
    pub exception_id: String,
    /// Its key number.
    pub key_num: i64,
    /// Its status at that moment (`approved` once its start has come reads as `active`).
    pub status: String,
    /// Its residual risk level then.
    pub risk_level: Option<String>,
    /// Its expiry then.
    pub expires_at: Option<DateTime<Utc>>,
    /// The control it was for.
    pub control_id: String,
}

type PeriodRow = (String, String, i64, String, Option<String>, Option<NaiveDateTime>, String);

impl Store {
    /// For each asset in `assets`, the exceptions covering it at `at`, for any control: one
    /// statement for the whole batch. The caller filters by control.
    pub fn coverage(&self, assets: &[&str], at: DateTime<Utc>) -> Result<HashMap<String, Vec<Covering>>, StoreError> {
        let t = naive(at);
        let mut conn = self.conn()?;
        let rows: Vec<PeriodRow> = coverage_periods::table
            .filter(coverage_periods::asset.eq_any(assets))
            .filter(coverage_periods::held_from.le(t))
            .filter(coverage_periods::held_until.is_null().or(coverage_periods::held_until.gt(t)))
            .filter(coverage_periods::starts_at.is_null().or(coverage_periods::starts_at.le(t)))
            .filter(coverage_periods::expires_at.gt(t))
            .order((coverage_periods::asset, coverage_periods::key_num, coverage_periods::control_id))
            .select((
                coverage_periods::asset,
                coverage_periods::exception_id,
                coverage_periods::key_num,
                coverage_periods::status,
                coverage_periods::residual_level,
                coverage_periods::expires_at,
                coverage_periods::control_id,
            ))
            .load(&mut conn)?;
        let mut out: HashMap<String, Vec<Covering>> = HashMap::new();
        for (asset, exception_id, key_num, status, risk_level, expires_at, control_id) in rows {
            // an approved exception whose start has come is active (the start was checked above)
            let status = if status == "approved" { "active".to_owned() } else { status };
            out.entry(asset).or_default().push(Covering {
                exception_id,
                key_num,
                status,
                risk_level,
                expires_at: expires_at.map(utc),
                control_id,
            });
        }
        Ok(out)
    }
}
