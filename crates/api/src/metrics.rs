//! Prometheus metrics (`LEEWAY_METRICS_LISTEN`): requests by route template and status,
//! the database pool, the scheduler, webhook deliveries and exceptions by status.
//!
//! Each server has its own registry (the `prometheus` crate), so several servers in one
//! process (the tests) do not mix their figures. Counters and histograms are kept as things
//! happen; the pool is read at scrape time (no query); the data's figures (exceptions by
//! status, the scheduler's lag, the oldest pending delivery) come from one cheap sample every
//! [`SAMPLE_EVERY`], taken only when metrics are served, never per scrape.

use chrono::{DateTime, Utc};
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use leeway_persistence::Store;

/// How often the data's figures are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(15);

/// Latency buckets, in seconds.
const BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

struct Inner {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    rate_limited: IntCounter,
    pool: IntGaugeVec,
    pool_waiting: IntGauge,
    scheduler_runs: IntCounterVec,
    scheduler_applied: IntCounter,
    scheduler_due: IntGauge,
    scheduler_lag: Gauge,
    deliveries: IntCounterVec,
    oldest_pending: Gauge,
    exceptions: IntGaugeVec,
    store: Store,
}

/// One server's metrics.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn register<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    made: prometheus::Result<T>,
) -> Result<T, String> {
    let metric = made.map_err(|e| e.to_string())?;
    registry.register(Box::new(metric.clone())).map_err(|e| e.to_string())?;
    Ok(metric)
}

impl Metrics {
    /// A registry with every Leeway metric, reading the pool of `store`.
    pub fn new(store: Store) -> Result<Self, String> {
        let r = Registry::new();
        let labels = &["method", "route", "status"];
        Ok(Self(Arc::new(Inner {
            requests: register(
                &r,
                IntCounterVec::new(Opts::new("leeway_http_requests_total", "HTTP requests answered"), labels),
            )?,
            latency: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("leeway_http_request_duration_seconds", "Time to answer an HTTP request")
                        .buckets(BUCKETS.to_vec()),
                    labels,
                ),
            )?,
            rate_limited: register(
                &r,
                IntCounter::new("leeway_rate_limited_total", "Requests refused by the per-subject rate limit"),
            )?,
            pool: register(
                &r,
                IntGaugeVec::new(Opts::new("leeway_db_pool_connections", "Database connections by state"), &["state"]),
            )?,
            pool_waiting: register(
                &r,
                IntGauge::new("leeway_db_pool_waiting", "Callers waiting for a database connection"),
            )?,
            scheduler_runs: register(
                &r,
                IntCounterVec::new(Opts::new("leeway_scheduler_runs_total", "Scheduler runs by outcome"), &["outcome"]),
            )?,
            scheduler_applied: register(
                &r,
                IntCounter::new("leeway_scheduler_exceptions_total", "Exceptions whose due time rules were applied"),
            )?,
            scheduler_due: register(
                &r,
                IntGauge::new("leeway_scheduler_due_exceptions", "Exceptions with due time rules in the last run"),
            )?,
            scheduler_lag: register(
                &r,
                Gauge::new(
                    "leeway_scheduler_lag_seconds",
                    "How long the earliest due time rule has waited (0 when none is due), at the last sample",
                ),
            )?,
            deliveries: register(
                &r,
                IntCounterVec::new(
                    Opts::new("leeway_webhook_deliveries_total", "Webhook delivery attempts by outcome"),
                    &["outcome"],
                ),
            )?,
            oldest_pending: register(
                &r,
                Gauge::new(
                    "leeway_webhook_oldest_pending_seconds",
                    "Age of the oldest pending webhook delivery (0 when none), at the last sample",
                ),
            )?,
            exceptions: register(
                &r,
                IntGaugeVec::new(
                    Opts::new("leeway_exceptions", "Exceptions by status, at the last sample"),
                    &["status"],
                ),
            )?,
            registry: r,
            store,
        })))
    }

    /// Counts an answered request under its route template (`unmatched` when none).
    pub fn request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let status = status.to_string();
        let labels = [method, route, status.as_str()];
        self.0.requests.with_label_values(&labels).inc();
        self.0.latency.with_label_values(&labels).observe(elapsed.as_secs_f64());
    }

    /// Counts a request refused by the rate limit.
    pub fn rate_limited(&self) {
        self.0.rate_limited.inc();
    }

    /// Counts a scheduler run and how many exceptions it handled.
    pub fn scheduler_run(&self, outcome: Result<usize, ()>) {
        match outcome {
            Ok(n) => {
                self.0.scheduler_runs.with_label_values(&["ok"]).inc();
                self.0.scheduler_applied.inc_by(u64::try_from(n).unwrap_or(u64::MAX));
                self.0.scheduler_due.set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            Err(()) => self.0.scheduler_runs.with_label_values(&["failed"]).inc(),
        }
    }

    /// Counts a webhook delivery attempt: `delivered`, `retrying` or `failed` (given up).
    pub fn delivery(&self, outcome: &str) {
        self.0.deliveries.with_label_values(&[outcome]).inc();
    }

    /// Takes a sample of the data's figures.
    pub fn sample(&self, now: DateTime<Utc>) -> Result<(), String> {
        let s = self.0.store.sample().map_err(|e| e.to_string())?;
        let age = |at: Option<DateTime<Utc>>| {
            at.map_or(0.0, |at| (now.signed_duration_since(at).num_milliseconds().max(0) as f64) / 1000.0)
        };
        self.0.scheduler_lag.set(age(s.oldest_due));
        self.0.oldest_pending.set(age(s.oldest_pending_delivery));
        // a status no exception has any more must read 0, not keep its last count
        self.0.exceptions.reset();
        for c in s.by_status {
            self.0.exceptions.with_label_values(&[c.name.as_str()]).set(c.n);
        }
        Ok(())
    }

    /// Samples every [`SAMPLE_EVERY`] on a thread of its own.
    pub fn spawn_sampler(&self, clock: Arc<dyn Clock>) {
        let metrics = self.clone();
        let spawned = std::thread::Builder::new().name("leeway-metrics".into()).spawn(move || {
            loop {
                if let Err(e) = metrics.sample(clock.now()) {
                    tracing::warn!(error = %e, "sampling the metrics failed; retrying next interval");
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the metrics thread");
        }
    }

    /// Everything, in Prometheus's text format.
    pub fn render(&self) -> Result<String, String> {
        let pool = self.0.store.pool_state();
        self.0.pool.with_label_values(&["in_use"]).set(i64::from(pool.connections.saturating_sub(pool.idle)));
        self.0.pool.with_label_values(&["idle"]).set(i64::from(pool.idle));
        self.0.pool_waiting.set(i64::try_from(pool.waiting).unwrap_or(i64::MAX));
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.0.registry.gather(), &mut out).map_err(|e| e.to_string())?;
        String::from_utf8(out).map_err(|e| e.to_string())
    }
}
