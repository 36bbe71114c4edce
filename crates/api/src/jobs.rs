//! The scheduler: applies the time rules (activation, expiry, reminders, reviews, SLA,
//! timeouts, emergencies, control checks) to every exception whose moment has come.
//!
//! Correct with several nodes on one PostgreSQL: each batch claims its rows with
//! `FOR UPDATE SKIP LOCKED`, the rules are idempotent and what they did is saved with the row,
//! so no transition or event happens twice. On SQLite it is simply single-node.

use chrono::{DateTime, Duration, Utc};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::clock::Clock;
use crate::metrics::Metrics;
use leeway_domain::ApprovalPolicy;
use leeway_domain::access::Actor;
use leeway_domain::workflow::{self, Ctx, NoFacts, Operation};
use leeway_persistence::{CallContext, Store, StoreError};

/// Exceptions handled per transaction.
pub const BATCH: i64 = 100;
/// Most batches per run, so one run always ends.
const MAX_BATCHES: usize = 10_000;

/// What one scheduler run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Exceptions whose due time rules were applied.
    pub exceptions: usize,
    /// Idempotency keys forgotten because their 24-hour window had passed.
    pub purged_keys: usize,
    /// Webhook deliveries forgotten [`DELIVERY_RETENTION_DAYS`] after they ended.
    pub purged_deliveries: usize,
}

/// Days a webhook delivery's log is kept after it succeeded or failed.
pub const DELIVERY_RETENTION_DAYS: i64 = 30;

/// Applies every due time rule at `now` and forgets expired idempotency keys, so that table
/// stays bounded by a day of traffic.
pub fn run_once(store: &Store, policy: &ApprovalPolicy, now: DateTime<Utc>) -> Result<Report, StoreError> {
    run_until(store, policy, now, &AtomicBool::new(false))
}

/// [`run_once`], stopping after the batch in hand once `stop` is set.
fn run_until(
    store: &Store,
    policy: &ApprovalPolicy,
    now: DateTime<Utc>,
    stop: &AtomicBool,
) -> Result<Report, StoreError> {
    let exceptions = batches(store, policy, now, BATCH, stop)?;
    if stop.load(Ordering::Relaxed) {
        // stopping: the purges wait for the next run, on this node or another
        return Ok(Report { exceptions, purged_keys: 0, purged_deliveries: 0 });
    }
    let purged_keys = store.purge_idempotency_keys(now)?;
    let cutoff = now.checked_sub_signed(Duration::days(DELIVERY_RETENTION_DAYS)).unwrap_or(now);
    let purged_deliveries = store.purge_deliveries(cutoff)?;
    Ok(Report { exceptions, purged_keys, purged_deliveries })
}

/// [`run_once`] with `batch` exceptions per transaction.
pub fn run_in_batches(
    store: &Store,
    policy: &ApprovalPolicy,
    now: DateTime<Utc>,
    batch: i64,
) -> Result<usize, StoreError> {
    batches(store, policy, now, batch, &AtomicBool::new(false))
}

fn batches(
    store: &Store,
    policy: &ApprovalPolicy,
    now: DateTime<Utc>,
    batch: i64,
    stop: &AtomicBool,
) -> Result<usize, StoreError> {
    let system = Actor::system();
    let ctx = CallContext { actor: &system, request_id: None, now };
    let dctx = Ctx { actor: &system, policy, now };
    let later = leeway_domain::time::add(now, Duration::minutes(1)).unwrap_or(now);
    let mut total = 0;
    for _ in 0..MAX_BATCHES {
        let n = store.run_due(ctx, batch, |e| {
            // time's rules read no facts: limits are judged where people take a place
            let mut change = workflow::apply(e, &dctx, Operation::Tick, &mut NoFacts)?;
            if let Some(due) = change.after.next_due_at
                && due <= now
            {
                // a rule that stays due would be picked up again at once: look again later
                tracing::warn!(exception = %e.key, %due, "time rule still due after it ran");
                change.after.next_due_at = Some(later);
            }
            Ok(change)
        })?;
        total += n;
        if n < usize::try_from(batch).unwrap_or(0) || stop.load(Ordering::Relaxed) {
            break;
        }
    }
    Ok(total)
}

/// The scheduler inside `serve`: a thread of its own (never an HTTP worker) running every
/// `interval`, stopped between two batches.
pub struct Scheduler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Scheduler {
    /// Starts the thread.
    pub fn spawn(
        store: Store,
        policy: ApprovalPolicy,
        clock: Arc<dyn Clock>,
        interval: std::time::Duration,
        metrics: Metrics,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let spawned = std::thread::Builder::new().name("leeway-jobs".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                // a panic in one run must not stop the scheduler for the life of the process
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_until(&store, &policy, clock.now(), &flag)
                }));
                match run {
                    Ok(Ok(r)) => {
                        metrics.scheduler_run(Ok(r.exceptions));
                        if r != (Report { exceptions: 0, purged_keys: 0, purged_deliveries: 0 }) {
                            tracing::info!(
                                exceptions = r.exceptions,
                                purged_keys = r.purged_keys,
                                purged_deliveries = r.purged_deliveries,
                                "scheduler run"
                            );
                        }
                    }
                    Ok(Err(e)) => {
                        metrics.scheduler_run(Err(()));
                        tracing::error!(error = %e, "scheduler run failed; retrying next interval");
                    }
                    Err(_) => {
                        metrics.scheduler_run(Err(()));
                        tracing::error!("scheduler run panicked; retrying next interval");
                    }
                }
                // sleep in short steps, so a stop is not held up by a long interval
                let until = std::time::Instant::now() + interval;
                while !flag.load(Ordering::Relaxed) && std::time::Instant::now() < until {
                    std::thread::sleep(std::time::Duration::from_millis(100).min(interval));
                }
            }
        });
        let thread = spawned.map_err(|e| tracing::error!(error = %e, "cannot start the scheduler thread")).ok();
        Self { stop, thread }
    }

    /// The flag that stops the thread after its current batch.
    pub fn stopping(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Asks the thread to stop after its current batch and waits for it.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the scheduler thread panicked while stopping");
        }
    }
}
