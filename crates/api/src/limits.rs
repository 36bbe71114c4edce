//! Per-subject rate limits (`LEEWAY_RATE_LIMIT`): a token bucket per token subject, kept in
//! this node's memory (the `governor` crate's GCRA). Several nodes each allow the rate:
//! docs/OPERATIONS.md says what a shared limit would take.

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A rate and a burst, e.g. `50/s burst 100`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per `per`.
    pub count: NonZeroU32,
    /// The period `count` is spread over.
    pub per: Duration,
    /// Requests allowed at once after a quiet spell.
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// Parses `N/s`, `N/m` or `N/h`, optionally followed by `burst M` (default: N).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!("LEEWAY_RATE_LIMIT must look like `50/s burst 100` (N/s, N/m or N/h, burst optional), got {text:?}")
        };
        let mut words = text.split_whitespace();
        let rate = words.next().ok_or_else(bad)?;
        let (count, unit) = rate.split_once('/').ok_or_else(bad)?;
        let count = count.parse::<NonZeroU32>().map_err(|_| bad())?;
        let per = match unit {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        let burst = match (words.next(), words.next(), words.next()) {
            (None, _, _) => count,
            (Some("burst"), Some(n), None) => n.parse::<NonZeroU32>().map_err(|_| bad())?,
            _ => return Err(bad()),
        };
        Ok(Self { count, per, burst })
    }

    fn quota(&self) -> Option<Quota> {
        let interval = self.per.checked_div(self.count.get()).filter(|d| !d.is_zero())?;
        Quota::with_period(interval).map(|q| q.allow_burst(self.burst))
    }
}

/// Checks made between two sweeps of idle subjects' buckets.
const SWEEP_EVERY: u64 = 4096;

/// The buckets of one node.
#[derive(Clone)]
pub struct Limiter {
    buckets: Arc<DefaultKeyedRateLimiter<String>>,
    checks: Arc<AtomicU64>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("subjects", &self.buckets.len()).finish()
    }
}

impl Limiter {
    /// Buckets for `limit`.
    pub fn new(limit: RateLimit) -> Result<Self, String> {
        let quota = limit.quota().ok_or("LEEWAY_RATE_LIMIT allows more than one request per nanosecond")?;
        Ok(Self { buckets: Arc::new(governor::RateLimiter::keyed(quota)), checks: Arc::default() })
    }

    /// Takes a token from `subject`'s bucket; when it is empty, says how long until the next.
    pub fn check(&self, subject: &str) -> Result<(), Duration> {
        // buckets that have refilled hold nothing worth keeping: forget them now and then,
        // so the map is bounded by the subjects active recently
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.buckets.retain_recent();
        }
        match self.buckets.check_key(&subject.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => Err(not_until.wait_time_from(DefaultClock::default().now())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN)
    }

    #[test]
    fn rates_parse_with_and_without_a_burst() {
        assert_eq!(
            RateLimit::parse("50/s burst 100"),
            Ok(RateLimit { count: n(50), per: Duration::from_secs(1), burst: n(100) })
        );
        assert_eq!(
            RateLimit::parse(" 600/m "),
            Ok(RateLimit { count: n(600), per: Duration::from_secs(60), burst: n(600) })
        );
        for bad in ["", "50", "50/d", "0/s", "50/s burst", "50/s burst 0", "50/s burst 10 more", "-1/s", "50/s bust 9"]
        {
            assert!(RateLimit::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn a_subject_gets_its_burst_then_waits_and_others_are_not_held_up() {
        let limiter = Limiter::new(RateLimit { count: n(1), per: Duration::from_secs(60), burst: n(3) });
        let Ok(limiter) = limiter else { panic!("a limiter") };
        for _ in 0..3 {
            assert_eq!(limiter.check("alice"), Ok(()));
        }
        let wait = limiter.check("alice").err();
        assert!(wait.is_some_and(|w| w > Duration::from_secs(50) && w <= Duration::from_secs(60)), "{wait:?}");
        assert_eq!(limiter.check("bob"), Ok(()));
    }
}
