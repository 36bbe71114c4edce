//! Moments and their arithmetic. A record only holds moments between 1970 and 9999, kept to
//! the microsecond so both databases round-trip them identically, and every sum of a moment
//! and a duration is checked: it is `None` on overflow, never a panic.

use chrono::{DateTime, Datelike, Duration, NaiveDate, SubsecRound, Utc};

use crate::text::FieldError;

/// The first year a record's moment or date may fall in.
pub const FIRST_YEAR: i32 = 1970;
/// The last year a record's moment or date may fall in.
pub const LAST_YEAR: i32 = 9999;

/// Timestamps are kept to the microsecond.
pub fn truncate(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// Whether a moment is one a record may hold.
pub fn plausible(t: DateTime<Utc>) -> bool {
    (FIRST_YEAR..=LAST_YEAR).contains(&t.year())
}

/// A moment a caller sent, kept when it falls in 1970..=9999 (truncated to the microsecond).
pub fn moment(field: &str, t: DateTime<Utc>) -> Result<DateTime<Utc>, FieldError> {
    if plausible(t) {
        Ok(truncate(t))
    } else {
        Err(FieldError::new(field, "out_of_range", format!("must fall in the years {FIRST_YEAR}..{LAST_YEAR}")))
    }
}

/// A date a caller sent, kept when it falls in 1970..=9999.
pub fn day(field: &str, d: NaiveDate) -> Result<NaiveDate, FieldError> {
    if (FIRST_YEAR..=LAST_YEAR).contains(&d.year()) {
        Ok(d)
    } else {
        Err(FieldError::new(field, "out_of_range", format!("must fall in the years {FIRST_YEAR}..{LAST_YEAR}")))
    }
}

/// `t + d`, or `None` when the sum leaves chrono's range.
pub fn add(t: DateTime<Utc>, d: Duration) -> Option<DateTime<Utc>> {
    t.checked_add_signed(d)
}

/// `t - d`, or `None` when the difference leaves chrono's range.
pub fn sub(t: DateTime<Utc>, d: Duration) -> Option<DateTime<Utc>> {
    t.checked_sub_signed(d)
}

/// `n` days.
pub fn days(n: u32) -> Duration {
    Duration::days(i64::from(n))
}

/// `n` hours.
pub fn hours(n: u32) -> Duration {
    Duration::hours(i64::from(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_never_panics() {
        assert_eq!(add(DateTime::<Utc>::MAX_UTC, days(1)), None);
        assert_eq!(sub(DateTime::<Utc>::MIN_UTC, days(1)), None);
        assert_eq!(add(Utc::now(), days(u32::MAX)), None, "eleven million years do not fit");
        assert!(add(Utc::now(), days(36_500)).is_some(), "the longest policy duration fits");
    }

    #[test]
    fn moments_and_days_are_bounded() {
        let ok: DateTime<Utc> = "2026-01-01T00:00:00.1234567Z".parse().unwrap();
        assert_eq!(moment("t", ok).unwrap().timestamp_subsec_nanos(), 123_456_000);
        let early: DateTime<Utc> = "1969-12-31T23:59:59Z".parse().unwrap();
        assert_eq!(moment("t", early).unwrap_err().code, "out_of_range");
        assert!(day("d", NaiveDate::from_ymd_opt(9999, 12, 31).unwrap()).is_ok());
        assert!(day("d", NaiveDate::from_ymd_opt(-262_143, 1, 1).unwrap()).is_err());
    }
}
