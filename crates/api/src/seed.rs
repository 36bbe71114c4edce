//! `leeway seed`: fills a database with realistic exceptions for benchmarks and trials.
//!
//! Every exception is driven through the domain's own workflow, by the people the policy
//! asks for, at simulated moments spread over the two years before now: created, submitted,
//! assessed, approved level by level, reviewed when due, checked, renewed, closed, revoked,
//! withdrawn or rejected, and finally brought up to now by the time rules. The domain decides
//! every state (a request the covering limit refuses stays where it was refused), so the data
//! holds every status with full, valid audit chains. Nothing goes through HTTP: batches are
//! written by the store's batch path, a few multi-row INSERTs per thousand exceptions.
//!
//! The data is deterministic for a given `--seed`: N exceptions over 10,000 assets, 200
//! controls and 20 business units.

use chrono::{DateTime, Duration, Utc};
use leeway_domain::access::Actor;
use leeway_domain::ids::{ExceptionId, ExceptionKey, Subject};
use leeway_domain::kinds::{Category, CheckResult, ControlKind, Effectiveness, Priority, ReviewOutcome, Role, Status};
use leeway_domain::record::{ControlInput, Exception, ExternalRef, Fields, FieldsInput};
use leeway_domain::risk::Method;
use leeway_domain::workflow::{
    self, ApproveInput, AssessInput, Change, CheckInput, Ctx, NewException, Operation, Places, RenewalInput,
    ReviewInput,
};
use leeway_domain::{ApprovalPolicy, DomainError};
use leeway_persistence::{SeedStep, Seeded, Store, StoreError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use uuid::{NoContext, Timestamp, Uuid};

/// Assets the exceptions are spread over.
pub const ASSETS: u32 = 10_000;
/// Controls deviated from.
pub const CONTROLS: u32 = 200;
/// Business units.
pub const BUSINESS_UNITS: u32 = 20;
/// How far back the oldest exception was created.
const SPAN_DAYS: i64 = 730;

const CATEGORIES: [Category; 10] = [
    Category::MfaBypass,
    Category::FirewallRule,
    Category::PatchDeferral,
    Category::Encryption,
    Category::LegacySoftware,
    Category::ElevatedAccess,
    Category::VendorAccess,
    Category::Configuration,
    Category::DataHandling,
    Category::Other,
];

const SYSTEMS: [&str; 4] = ["apache", "openssh", "windows-server", "oracle-db"];
const GAPS: [&str; 6] = [
    "cannot enforce MFA",
    "runs an unsupported version",
    "needs an inbound rule from the vendor",
    "stores backups unencrypted",
    "requires a shared admin account",
    "misses the monthly patch window",
];

/// Where each seeded exception is meant to go; the domain may stop it earlier.
#[derive(Debug, Clone, Copy)]
enum Path {
    Draft,
    Withdraw,
    Reject,
    Stall,
    Approve(After),
}

/// What happens to an approved exception.
#[derive(Debug, Clone, Copy)]
enum After {
    Live,
    Close,
    Revoke,
    Renew,
}

/// The places other exceptions hold, from what was generated before (their final states).
#[derive(Default)]
struct Index {
    by_asset: HashMap<String, Vec<Held>>,
}

struct Held {
    key: u64,
    live_until: Option<DateTime<Utc>>,
    controls: Vec<String>,
    counts_as_repeat: bool,
}

impl Index {
    fn add(&mut self, e: &Exception) {
        let live = matches!(e.status(), Status::Approved | Status::Active | Status::RenewalPending);
        for a in &e.fields.assets {
            self.by_asset.entry(a.clone()).or_default().push(Held {
                key: e.key.number(),
                live_until: if live { e.fields.expires_at } else { None },
                controls: e.fields.control_ids.clone(),
                counts_as_repeat: !matches!(e.status(), Status::Draft | Status::Withdrawn),
            });
        }
    }
}

impl workflow::Facts for Index {
    fn places(&mut self, e: &Exception, now: DateTime<Utc>, _business_unit_limited: bool) -> Option<Places> {
        let empty = Vec::new();
        let mut places = Places::default();
        let mut earlier = Vec::new();
        for a in &e.fields.assets {
            let held = self.by_asset.get(a).unwrap_or(&empty);
            let holders: Vec<String> = held
                .iter()
                .filter(|h| h.live_until.is_some_and(|t| t > now))
                .filter_map(|h| ExceptionKey::new(h.key).map(|k| k.to_string()))
                .collect();
            if !holders.is_empty() {
                places.on_assets.push((a.clone(), holders));
            }
            earlier.extend(
                held.iter()
                    .filter(|h| h.counts_as_repeat && h.key < e.key.number())
                    .filter(|h| h.controls.iter().any(|c| e.fields.control_ids.contains(c)))
                    .map(|h| h.key),
            );
        }
        earlier.sort_unstable();
        earlier.dedup();
        places.earlier_sharing =
            earlier.into_iter().take(50).filter_map(ExceptionKey::new).map(|k| k.to_string()).collect();
        Some(places)
    }
}

/// One person of the cast, by role.
fn person(subject: String, role: Role, business_unit: Option<String>) -> Actor {
    let subject = Subject::parse("sub", &subject).unwrap_or_else(|_| Subject::system());
    Actor { subject, roles: vec![role], business_unit }
}

/// A version-7 id stamped with the simulated moment, so ids sort as the data's own time does.
fn id_at(t: DateTime<Utc>, rng: &mut StdRng) -> Uuid {
    let secs = u64::try_from(t.timestamp()).unwrap_or(0);
    let mut id = Uuid::new_v7(Timestamp::from_unix(NoContext, secs, t.timestamp_subsec_nanos())).into_bytes();
    // the generator's own random bits, for runs that repeat exactly
    rng.fill(&mut id[8..]);
    id[8] = (id[8] & 0x3f) | 0x80;
    Uuid::from_bytes(id)
}

/// The generator: deterministic for its seed.
pub struct Generator {
    policy: ApprovalPolicy,
    now: DateTime<Utc>,
    total: u64,
    rng: StdRng,
    index: Index,
}

/// The trail of one exception being built.
struct Trail {
    e: Exception,
    steps: Vec<SeedStep>,
}

impl Generator {
    /// A generator of `total` exceptions ending at `now`.
    pub fn new(policy: ApprovalPolicy, now: DateTime<Utc>, total: u64, seed: u64) -> Self {
        Self { policy, now, total, rng: StdRng::seed_from_u64(seed), index: Index::default() }
    }

    /// The exceptions for `keys`, the `first`-th exception of the run onwards.
    pub fn batch(&mut self, first: u64, keys: &[ExceptionKey]) -> Vec<Seeded> {
        let mut out = Vec::with_capacity(keys.len());
        for (i, key) in (first..).zip(keys) {
            if let Some(t) = self.one(i, *key) {
                self.index.add(&t.e);
                out.push(Seeded { exception: t.e, steps: t.steps });
            }
        }
        out
    }

    /// Applies `op` at `at` as `actor`; keeps the change when the domain allows it.
    fn act(&mut self, t: &mut Trail, actor: &Actor, at: DateTime<Utc>, op: Operation) -> Result<(), DomainError> {
        if at > self.now {
            return Err(DomainError::Overflow("the future"));
        }
        let ctx = Ctx { actor, policy: &self.policy, now: at };
        let Change { after, happened } = workflow::apply(&t.e, &ctx, op, &mut self.index)?;
        if !happened.is_empty() {
            t.steps.push(SeedStep { actor: actor.clone(), at: after.updated_at, happened });
        }
        t.e = after;
        Ok(())
    }

    fn one(&mut self, i: u64, key: ExceptionKey) -> Option<Trail> {
        let start = self.now - Duration::days(SPAN_DAYS);
        let offset = Duration::seconds(
            i64::try_from(u128::from(i) * (SPAN_DAYS as u128 * 86_400) / u128::from(self.total.max(1))).ok()?,
        );
        let created = start + offset + Duration::seconds(self.rng.random_range(0..600));
        let bu_n = self.rng.random_range(1..=BUSINESS_UNITS);
        let bu = format!("bu-{bu_n:02}");
        let requester =
            person(format!("req-{bu_n:02}-{}", self.rng.random_range(1..=25)), Role::Requester, Some(bu.clone()));
        let analyst = person(format!("analyst-{}", self.rng.random_range(1..=8)), Role::Analyst, None);
        let path = match self.rng.random_range(0..100) {
            0..5 => Path::Draft,
            5..10 => Path::Withdraw,
            10..20 => Path::Reject,
            20..25 => Path::Stall,
            25..40 => Path::Approve(After::Close),
            40..48 => Path::Approve(After::Revoke),
            48..60 => Path::Approve(After::Renew),
            _ => Path::Approve(After::Live),
        };
        let fields = self.fields(&bu, created, key)?;
        let controls = (0..self.rng.random_range(1..=3)).map(|_| self.control()).collect::<Option<Vec<_>>>()?;
        let input = NewException {
            fields,
            controls,
            on_behalf_of: None,
            emergency: false,
            submit: !matches!(path, Path::Draft),
        };
        let ctx = Ctx { actor: &requester, policy: &self.policy, now: created };
        let id = ExceptionId(id_at(created, &mut self.rng));
        let rng = &mut self.rng;
        let mut new_id = || id_at(created, rng);
        // a submit the covering limit refuses leaves a draft, as it would for a person
        let created = match workflow::create(&ctx, id, key, input.clone(), &mut new_id, &mut self.index) {
            Ok(change) => change,
            Err(_) => {
                workflow::create(&ctx, id, key, NewException { submit: false, ..input }, &mut new_id, &mut self.index)
                    .ok()?
            }
        };
        let Change { after, happened } = created;
        let mut t =
            Trail { steps: vec![SeedStep { actor: requester.clone(), at: after.updated_at, happened }], e: after };
        // each path walks as far as the domain and the clock let it; a refusal ends the walk
        let _ = self.walk(&mut t, path, &requester, &analyst);
        // bring it up to now: the time rules that fell due since its last change
        let _ = self.act(&mut t, &Actor::system(), self.now, Operation::Tick);
        Some(t)
    }

    fn walk(&mut self, t: &mut Trail, path: Path, requester: &Actor, analyst: &Actor) -> Result<(), DomainError> {
        let mut at = t.e.updated_at + self.hours(1, 48);
        match path {
            Path::Draft => return Ok(()),
            Path::Withdraw => {
                return self.act(t, requester, at, Operation::Withdraw(Some("No longer needed".into())));
            }
            Path::Reject | Path::Stall | Path::Approve(_) => {}
        }
        self.assess(t, analyst, at)?;
        at = t.e.updated_at + self.hours(2, 72);
        match path {
            Path::Stall => return Ok(()),
            Path::Reject => {
                let officer = self.approver(Role::SecurityOfficer);
                return self.act(t, &officer, at, Operation::Reject(Some("Fix it instead".into())));
            }
            _ => {}
        }
        // one approval per required role, each by its own person, until the last one decides
        while t.e.status() == Status::PendingApproval {
            let missing = self.policy.required_approvals(&t.e).into_iter().find(|r| r.satisfied_by.is_none());
            let Some(req) = missing else { break };
            let approver = self.approver(req.role);
            let input = ApproveInput { id: id_at(at, &mut self.rng), role: Some(req.role), comment: None };
            self.act(t, &approver, at, Operation::Approve(input))?;
            at = t.e.updated_at + self.hours(1, 24);
        }
        let Path::Approve(after) = path else { return Ok(()) };
        self.live(t, after, requester, analyst)
    }

    /// The covered life: checks and reviews when due, then its ending.
    fn live(&mut self, t: &mut Trail, after: After, requester: &Actor, analyst: &Actor) -> Result<(), DomainError> {
        let Some(expires) = t.e.fields.expires_at else { return Ok(()) };
        let lifetime = expires - t.e.updated_at;
        let end = t.e.updated_at + lifetime * self.rng.random_range(20..95) / 100;
        loop {
            let review = t.e.next_review_at.filter(|r| *r < end && *r < expires);
            let Some(due) = review else { break };
            let at = due - self.hours(24, 24 * 7);
            // one review in twenty is forgotten: the time rules then take over
            if self.rng.random_range(0..20) == 0 || at <= t.e.updated_at {
                break;
            }
            let input = ReviewInput {
                id: id_at(at, &mut self.rng),
                controls_effective: true,
                justification_valid: true,
                better_option_available: false,
                outcome: ReviewOutcome::Continue,
                comment: Some("Still needed; controls seen working".into()),
            };
            self.act(t, analyst, at, Operation::Review(input))?;
        }
        if let Some(c) = t.e.controls.first().map(|c| c.id) {
            let at = t.e.updated_at + self.hours(1, 72);
            let input =
                CheckInput { id: id_at(at, &mut self.rng), result: CheckResult::Pass, evidence: "Log sample".into() };
            // a control that cannot be checked in its state is simply not checked
            let _ = self.act(t, analyst, at, Operation::CheckControl(c, input));
        }
        let at = end.max(t.e.updated_at + Duration::hours(1));
        match after {
            After::Live => Ok(()),
            After::Close => self.act(t, requester, at, Operation::Close(Some("Remediated".into()))),
            After::Revoke => {
                let officer = self.approver(Role::SecurityOfficer);
                self.act(t, &officer, at, Operation::Revoke(Some("Compensating control removed".into())))
            }
            After::Renew => {
                let input = RenewalInput {
                    expires_at: expires + Duration::days(90),
                    justification: "The upgrade slipped a quarter".into(),
                };
                self.act(t, requester, expires - Duration::days(10), Operation::RequestRenewal(input))
            }
        }
    }

    /// Assesses with a matrix score, shortening the expiry when the level asks for it.
    fn assess(&mut self, t: &mut Trail, analyst: &Actor, at: DateTime<Utc>) -> Result<(), DomainError> {
        let (l, i) = match self.rng.random_range(0..100) {
            0..55 => (self.rng.random_range(1..=2), self.rng.random_range(1..=3)),
            55..85 => (3, self.rng.random_range(2..=4)),
            85..97 => (4, 4),
            _ => (5, 5),
        };
        let method = Method::matrix(l, i).map_err(|_| DomainError::Overflow("a matrix score"))?;
        let mut input = AssessInput {
            id: id_at(at, &mut self.rng),
            method,
            rationale: "Exposure limited to the internal network".into(),
            threat_vectors: vec!["credential stuffing".into()],
            expires_at: None,
        };
        match self.act(t, analyst, at, Operation::Assess(input.clone())) {
            Err(DomainError::DurationExceedsPolicy { latest_expires_at, .. }) => {
                input.expires_at = Some(latest_expires_at);
                self.act(t, analyst, at, Operation::Assess(input))
            }
            other => other,
        }
    }

    fn approver(&mut self, role: Role) -> Actor {
        let n = self.rng.random_range(1..=4);
        person(format!("{}-{n}", role.as_str().replace('_', "-")), role, None)
    }

    fn hours(&mut self, min: i64, max: i64) -> Duration {
        Duration::minutes(self.rng.random_range(min * 60..=max * 60))
    }

    fn fields(&mut self, bu: &str, created: DateTime<Utc>, key: ExceptionKey) -> Option<Fields> {
        let system = SYSTEMS[self.rng.random_range(0..SYSTEMS.len())];
        let gap = GAPS[self.rng.random_range(0..GAPS.len())];
        let assets = (0..self.rng.random_range(1..=3))
            .map(|_| format!("asset-{:05}", self.rng.random_range(1..=ASSETS)))
            .collect::<std::collections::BTreeSet<_>>();
        let controls = (0..self.rng.random_range(1..=2))
            .map(|_| format!("CTRL-{:03}", self.rng.random_range(1..=CONTROLS)))
            .collect::<std::collections::BTreeSet<_>>();
        let days: i64 = [30, 60, 90, 180, 365][self.rng.random_range(0..5)];
        let refs = (self.rng.random_range(0..10) < 3).then(|| {
            vec![ExternalRef {
                system: "servicenow".into(),
                // one ticket per exception: references are unique
                id: format!("RITM{:010}", key.number()),
                url: None,
            }]
        });
        let input = FieldsInput {
            title: Some(format!("{system} {gap}")),
            category: Some(CATEGORIES[self.rng.random_range(0..CATEGORIES.len())]),
            policy_id: Some(format!("POL-{:02}", self.rng.random_range(1..=30))),
            control_ids: Some(controls.into_iter().collect()),
            assets: Some(assets.into_iter().collect()),
            business_unit: Some(bu.to_owned()),
            justification: Some(format!(
                "The {system} estate {gap}; the vendor's fix lands with the next upgrade, and replacing it sooner would stop production."
            )),
            business_impact: Some("Order processing stops without it".into()),
            risk_owner: Some(format!("owner-{}", self.rng.random_range(1..=50))),
            priority: Some(if self.rng.random_range(0..10) == 0 { Priority::Urgent } else { Priority::Standard }),
            // one in five starts later than its approval: approved, not yet covering
            starts_at: (self.rng.random_range(0..5) == 0)
                .then(|| created + Duration::days(self.rng.random_range(3..=days / 3))),
            expires_at: Some(created + Duration::days(days)),
            remediation_plan: Some("Upgrade to the supported release".into()),
            remediation_due: Some((created + Duration::days(days)).date_naive()),
            external_refs: refs,
            tags: Some(vec![system.to_owned()]),
        };
        Fields::parse(&input).ok()
    }

    fn control(&mut self) -> Option<leeway_domain::record::ControlSpec> {
        let (description, kind) = [
            ("IP allow-list to the vendor's range", ControlKind::Preventive),
            ("Session recording reviewed weekly", ControlKind::Detective),
            ("Restore drill from offline backup", ControlKind::Corrective),
        ][self.rng.random_range(0..3)];
        ControlInput {
            description: description.to_owned(),
            kind,
            effectiveness: [Effectiveness::Low, Effectiveness::Medium, Effectiveness::High]
                [self.rng.random_range(0..3)],
            check_every: None,
        }
        .parse()
        .ok()
    }
}

/// What a seed run wrote.
#[derive(Debug, Default)]
pub struct Report {
    /// Exceptions written.
    pub exceptions: u64,
    /// Audit events written.
    pub events: u64,
    /// Exceptions per status.
    pub by_status: std::collections::BTreeMap<&'static str, u64>,
}

/// Seeds `total` exceptions into `store`, `batch` per transaction, generating the next batch
/// on a second thread while the store writes the last. `progress` is told after each batch.
pub fn run(
    store: &Store,
    policy: &ApprovalPolicy,
    now: DateTime<Utc>,
    total: u64,
    batch: u32,
    seed: u64,
    mut progress: impl FnMut(&Report),
) -> Result<Report, StoreError> {
    let batch = u64::from(batch.clamp(1, 10_000));
    let (seeded_tx, seeded_rx) = std::sync::mpsc::sync_channel::<Vec<Seeded>>(1);
    let (keys_tx, keys_rx) = std::sync::mpsc::sync_channel::<Vec<ExceptionKey>>(2);
    let mut generator = Generator::new(policy.clone(), now, total, seed);
    let producer = std::thread::spawn(move || {
        let mut first = 0;
        for keys in keys_rx {
            let n = keys.len() as u64;
            if seeded_tx.send(generator.batch(first, &keys)).is_err() {
                break;
            }
            first += n;
        }
    });
    let mut report = Report::default();
    let (mut asked, mut sent, mut written) = (0u64, 0u64, 0u64);
    let result = (|| {
        loop {
            // keep two batches in flight: one generated while the other is written
            while sent < written + 2 && asked < total {
                let n = (total - asked).min(batch);
                let keys = store.reserve_keys(u32::try_from(n).unwrap_or(u32::MAX))?;
                asked += n;
                if keys_tx.send(keys).is_err() {
                    return Err(StoreError::Corrupt("the seed generator stopped".into()));
                }
                sent += 1;
            }
            if written == sent {
                return Ok(());
            }
            let seeded = seeded_rx.recv().map_err(|_| StoreError::Corrupt("the seed generator stopped".into()))?;
            report.events += store.insert_seeded(&seeded)? as u64;
            for s in &seeded {
                *report.by_status.entry(s.exception.status().as_str()).or_default() += 1;
            }
            report.exceptions += seeded.len() as u64;
            written += 1;
            progress(&report);
        }
    })();
    drop(keys_tx);
    drop(seeded_rx);
    let _ = producer.join();
    result.map(|()| report)
}
