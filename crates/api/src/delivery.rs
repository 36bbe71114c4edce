//! Webhook delivery, following Standard Webhooks: each due delivery is claimed under a lease,
//! signed with its subscription's secret (the `standardwebhooks` crate) and POSTed with a 10 s
//! timeout and no redirects; the attempt and what follows (success, a retry on the policy's
//! schedule, failure) are recorded. A 410 disables the subscription.
//!
//! Outbound URLs are guarded against SSRF: only http(s), and no loopback, private, link-local,
//! shared or metadata address, neither in the URL nor in what its host resolves to at the
//! moment of sending (a resolver that filters, so DNS rebinding cannot slip one in), unless
//! `LEEWAY_WEBHOOK_ALLOW_PRIVATE` allows it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use leeway_domain::ApprovalPolicy;
use leeway_domain::access::Actor;
use leeway_domain::ids::Subject;
use leeway_domain::kinds::Role;
use leeway_persistence::{Attempt, Claimed, FeedEvent, Next, Store, StoreError};
use serde_json::Value;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::routes::exceptions::json::ExceptionView;

/// Longest wait for a receiver's answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Most of a receiver's answer kept in the attempt log.
pub const RESPONSE_KEPT: usize = 64 * 1024;
/// How a send refused for naming a private address starts its error.
const REFUSED_LITERAL: &str = "the URL names a private address";
/// Claim rounds per pass at most (the next pass goes on).
const MAX_ROUNDS: usize = 64;
/// Deliveries claimed per round.
const CLAIM_BATCH: i64 = 32;
/// How long a claim holds a delivery: well beyond the timeout, so a live worker never loses
/// it, and a dead one's claim lapses.
const LEASE: chrono::Duration = chrono::Duration::seconds(60);

/// Whether `ip` is one a webhook may not reach unless private addresses are allowed:
/// unspecified, loopback, private, shared (CGNAT), link-local (incl. cloud metadata at
/// 169.254.169.254), unique-local IPv6, multicast, broadcast, documentation and reserved.
pub fn blocked(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || o[0] >= 240
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (18..20).contains(&o[1]))
                || (o[0] == 192 && o[1] == 88 && o[2] == 99)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return blocked(IpAddr::V4(v4));
            }
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| std::net::Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
            // NAT64 (64:ff9b::a.b.c.d, what DNS64 answers for IPv4-only hosts) and IPv4-translated
            // (::ffff:0:a.b.c.d) addresses reach the IPv4 address they embed
            if (s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|x| *x == 0))
                || (s[..4].iter().all(|x| *x == 0) && s[4] == 0xffff && s[5] == 0)
            {
                return blocked(IpAddr::V4(embedded(s[6], s[7])));
            }
            // IPv4-compatible (::a.b.c.d, deprecated) and 6to4 (2002:a.b.c.d::) embed an IPv4
            // address a relay may reach
            if s[..6].iter().all(|x| *x == 0) && !v6.is_loopback() && !v6.is_unspecified() {
                return blocked(IpAddr::V4(embedded(s[6], s[7])));
            }
            if s[0] == 0x2002 && blocked(IpAddr::V4(embedded(s[1], s[2]))) {
                return true;
            }
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0] == 0x2001 && s[1] == 0xdb8)
                || (s[0] == 0x2001 && s[1] == 0)
                || (s[0] == 0x100 && s[1..4].iter().all(|x| *x == 0))
                || (s[0] == 0x64 && s[1] == 0xff9b)
        }
    }
}

/// Why a webhook URL is refused, or the URL.
pub async fn check_url(raw: &str, allow_private: bool) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {} is not http or https", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("a URL may not carry credentials; put them in the receiver's verification of the signature".into());
    }
    let host = url.host_str().ok_or("the URL names no host")?.to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    if allow_private {
        return Ok(url);
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host((bare, port)))
            .await
            .map_err(|_| format!("{host} did not resolve in time"))?
            .map_err(|e| format!("{host} does not resolve: {e}"))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(format!("{host} does not resolve"));
    }
    // the address is not told: the answer must not map internal names for the caller
    if addrs.iter().any(|a| blocked(a.ip())) {
        return Err(format!(
            "{host} is or resolves to a loopback, private, link-local or metadata address \
             (LEEWAY_WEBHOOK_ALLOW_PRIVATE=true allows it)"
        ));
    }
    Ok(url)
}

/// Resolves hosts and drops every address a webhook may not reach.
struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.filter(|a| !blocked(a.ip())).collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no address a webhook may reach").into());
            }
            let out: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(out)
        })
    }
}

/// The payload of an event: `{type, timestamp, data}`, where `data` is the exception as an
/// auditor reads it at that event, plus `event_seq`; `None` when it cannot be rendered.
pub fn payload(event: &FeedEvent, policy: &ApprovalPolicy) -> Option<Value> {
    Some(serde_json::json!({
        "type": event.event_type,
        "timestamp": event.at.to_rfc3339_opts(SecondsFormat::Micros, true),
        "data": data(event, policy)?,
    }))
}

/// The exception at the event, as an auditor reads it, plus `event_seq`; `None` when the
/// stored exception does not read.
pub fn data(event: &FeedEvent, policy: &ApprovalPolicy) -> Option<Value> {
    let e = event.exception.as_ref().ok()?;
    let auditor = Actor { subject: Subject::system(), roles: vec![Role::Auditor], business_unit: None };
    let view = ExceptionView::render(e, &auditor, policy, event.at);
    let mut data = serde_json::to_value(&view).ok()?;
    if let Value::Object(m) = &mut data {
        m.insert("event_seq".into(), event.seq.into());
    }
    Some(data)
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Events numbered into the feed.
    pub numbered: usize,
    /// Deliveries attempted.
    pub attempted: usize,
    /// Of which succeeded.
    pub succeeded: usize,
}

/// Numbers the feed and sends due deliveries.
#[derive(Clone)]
pub struct Deliverer {
    store: Store,
    policy: Arc<ApprovalPolicy>,
    clock: Arc<dyn Clock>,
    client: reqwest::Client,
    owner: String,
    allow_private: bool,
    metrics: Option<Metrics>,
}

impl Deliverer {
    /// A deliverer over `store`; `allow_private` lets it reach private addresses.
    pub fn new(
        store: Store,
        policy: ApprovalPolicy,
        clock: Arc<dyn Clock>,
        allow_private: bool,
    ) -> Result<Self, String> {
        // one crypto provider for the process (installing twice is harmless)
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Leeway-Webhooks/", env!("CARGO_PKG_VERSION")))
            .no_proxy();
        if !allow_private {
            builder = builder.dns_resolver(Arc::new(GuardedResolver));
        }
        let client = builder.build().map_err(|e| format!("cannot build the webhook client: {e}"))?;
        let owner = format!("{}-{}", std::process::id(), uuid::Uuid::now_v7());
        Ok(Self {
            store,
            policy: Arc::new(policy),
            clock,
            client,
            owner: owner.chars().take(64).collect(),
            allow_private,
            metrics: None,
        })
    }

    /// Counts each attempt's outcome in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Numbers new events, then sends every due delivery, a claim at a time.
    pub async fn run_once(&self) -> Result<Pass, StoreError> {
        let numbered = self.number().await?;
        let mut pass = self.send_due().await?;
        pass.numbered = numbered;
        Ok(pass)
    }

    /// Numbers the events committed so far into the feed (and makes their deliveries).
    async fn number(&self) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let (store, now) = (self.store.clone(), self.clock.now());
            let n = blocking(move || store.number_feed(now)).await?;
            total += n;
            if n < usize::try_from(leeway_persistence::NUMBER_BATCH).unwrap_or(usize::MAX) {
                return Ok(total);
            }
        }
    }

    /// Sends every due delivery, a claim at a time.
    async fn send_due(&self) -> Result<Pass, StoreError> {
        let mut pass = Pass::default();
        // each round sends the earliest pending delivery of each (subscription, exception);
        // the next round, what followed those that succeeded
        for _ in 0..MAX_ROUNDS {
            let now = self.clock.now();
            let (store, owner) = (self.store.clone(), self.owner.clone());
            let lease = now.checked_add_signed(LEASE).unwrap_or(now);
            let claimed = blocking(move || store.claim_deliveries(&owner, now, lease, CLAIM_BATCH)).await?;
            let n = claimed.len();
            let sent = futures_util::future::join_all(claimed.iter().map(|c| self.attempt(c))).await;
            pass.attempted += n;
            pass.succeeded += sent.iter().filter(|ok| matches!(ok, Ok(true))).count();
            if let Some(Err(e)) = sent.into_iter().find(Result::is_err) {
                return Err(e);
            }
            if n == 0 {
                break;
            }
        }
        Ok(pass)
    }

    /// Sends one claimed delivery and records the attempt; `Ok(true)` when it succeeded.
    async fn attempt(&self, c: &Claimed) -> Result<bool, StoreError> {
        let started = Instant::now();
        let at = self.clock.now();
        let (response_status, error) = self.send(c, at).await;
        // an event that cannot be rendered, or a URL naming a private address, will not do
        // better later
        let hopeless = c.event.exception.is_err() || error.as_deref().is_some_and(|e| e.starts_with(REFUSED_LITERAL));
        let attempt = Attempt {
            at,
            response_status,
            error,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        let tries = usize::try_from(c.delivery.tries).unwrap_or(0).saturating_add(1);
        let gone = response_status == Some(410);
        let next = match response_status {
            Some(s) if (200..300).contains(&s) => Next::Succeeded,
            _ if gone || hopeless => Next::Failed,
            _ => match self.policy.webhook_retry_schedule_seconds.get(tries - 1) {
                Some(wait) => Next::RetryAt(
                    at.checked_add_signed(chrono::Duration::seconds(i64::from(*wait)))
                        .unwrap_or(DateTime::<Utc>::MAX_UTC),
                ),
                None => Next::Failed,
            },
        };
        let ok = next == Next::Succeeded;
        if let Some(m) = &self.metrics {
            m.delivery(match next {
                Next::Succeeded => "delivered",
                Next::RetryAt(_) => "retrying",
                Next::Failed => "failed",
            });
        }
        let (store, owner, delivery) = (self.store.clone(), self.owner.clone(), c.delivery.clone());
        let webhook = c.delivery.webhook_id.clone();
        let now = self.clock.now();
        blocking(move || {
            if gone {
                tracing::warn!(webhook = %webhook, "the receiver answered 410 Gone: subscription disabled");
                store.disable_webhook(&webhook, "gone", now)?;
            }
            if !store.finish_delivery(&delivery, &owner, attempt, &next, now)? {
                tracing::warn!(delivery = %delivery.id, "lost the lease on a delivery; its attempt is not recorded");
            }
            Ok(())
        })
        .await?;
        Ok(ok)
    }

    /// POSTs the signed event; the receiver's status, and what went wrong if it was not 2xx.
    async fn send(&self, c: &Claimed, at: DateTime<Utc>) -> (Option<u16>, Option<String>) {
        let body = match payload(&c.event, &self.policy).map(|p| serde_json::to_vec(&p)) {
            Some(Ok(b)) => b,
            Some(Err(e)) => return (None, Some(format!("cannot serialize the event: {e}"))),
            None => {
                let why = c.event.exception.as_ref().err().cloned().unwrap_or_default();
                return (None, Some(format!("the event cannot be rendered: {why}")));
            }
        };
        // an address literal never meets the resolver that guards names
        if !self.allow_private
            && let Ok(url) = reqwest::Url::parse(&c.url)
            && let Some(host) = url.host_str()
            && let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>()
            && blocked(ip)
        {
            return (None, Some(format!("{REFUSED_LITERAL}; refused")));
        }
        let timestamp = at.timestamp();
        let signature = match standardwebhooks::Webhook::new(&c.secret)
            .and_then(|w| w.sign(&c.delivery.event_id, timestamp, &body))
        {
            Ok(s) => s,
            Err(e) => return (None, Some(format!("cannot sign: {e}"))),
        };
        let sent = self
            .client
            .post(&c.url)
            .header("content-type", "application/json")
            .header("webhook-id", &c.delivery.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(res) => {
                let status = res.status().as_u16();
                if res.status().is_success() {
                    return (Some(status), None);
                }
                let text = read_capped(res).await;
                (Some(status), Some(format!("HTTP {status}: {text}")))
            }
            Err(e) if e.is_timeout() => (None, Some(format!("no answer within {} s", TIMEOUT.as_secs()))),
            Err(e) => (None, Some(format!("cannot send: {}", error_chain(&e)))),
        }
    }

    /// Runs a pass every `interval` on its own thread, off the HTTP workers.
    pub fn spawn(self, interval: Duration) {
        let spawned = std::thread::Builder::new().name("leeway-webhooks".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the webhook runtime");
                    return;
                }
            };
            // the feed is numbered on its own beat: slow receivers never hold it up, and a
            // failed numbering never stops the sending
            let numbering = async {
                loop {
                    if let Err(e) = self.number().await {
                        tracing::error!(error = %e, "numbering the change feed failed; retrying next interval");
                    }
                    tokio::time::sleep(interval).await;
                }
            };
            let sending = async {
                loop {
                    match self.send_due().await {
                        Ok(p) if p.attempted > 0 => {
                            tracing::debug!(attempted = p.attempted, succeeded = p.succeeded, "webhook pass");
                        }
                        Ok(_) => {}
                        Err(e) => tracing::error!(error = %e, "webhook pass failed; retrying next interval"),
                    }
                    tokio::time::sleep(interval).await;
                }
            };
            rt.block_on(async { tokio::join!(numbering, sending) });
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the webhook thread");
        }
    }
}

/// Up to [`RESPONSE_KEPT`] bytes of an answer, as text.
async fn read_capped(mut res: reqwest::Response) -> String {
    let mut kept: Vec<u8> = Vec::new();
    while let Ok(Some(chunk)) = res.chunk().await {
        let room = RESPONSE_KEPT.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if kept.len() >= RESPONSE_KEPT {
            break;
        }
    }
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    // replacement characters may have made it longer than the bytes kept
    if text.len() > RESPONSE_KEPT {
        let mut at = RESPONSE_KEPT;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
    }
    text
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Connect(format!("worker thread: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_reserved_addresses_are_blocked_in_every_form() {
        for a in [
            "127.0.0.1",
            "10.0.0.8",
            "172.16.4.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "fec0::1",
            "::ffff:10.0.0.1",
            "::169.254.169.254",
            "2002:a00:1::",
            "64:ff9b::a00:1",
        ] {
            assert!(blocked(a.parse().unwrap_or_else(|_| panic!("{a}"))), "{a} must be blocked");
        }
        assert!(blocked("::ffff:0:a00:1".parse().unwrap_or_else(|_| panic!("::ffff:0:a00:1"))));
        assert!(blocked("2001:0:4136:e378:8000:63bf:3fff:fdd2".parse().unwrap_or_else(|_| panic!("teredo"))));
        for a in ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "2002:5db8:d822::1", "64:ff9b::5db8:d822"] {
            assert!(!blocked(a.parse().unwrap_or_else(|_| panic!("{a}"))), "{a} is public");
        }
    }
}
