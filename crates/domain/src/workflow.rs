//! The one road for every change: [`create`] makes an exception, [`apply`] changes one.
//!
//! [`apply`] always does the same three things at one moment: the time rules that are due
//! (so an action is judged on the true state), then the operation, then settling (the stamp
//! of the change and the scheduler's next moment). The HTTP handlers and the scheduler call
//! nothing else.

mod assessment;
mod clock;
mod controls;
mod decision;
mod import;
mod intake;
mod renewal;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::access::Actor;
use crate::error::DomainError;
use crate::ids::{ControlId, ExceptionId, ExceptionKey};
use crate::policy::ApprovalPolicy;
use crate::record::{Exception, FieldsPatch, Happening};

pub use assessment::AssessInput;
pub use clock::next_due;
pub use controls::{CheckInput, ControlChange};
pub use decision::ApproveInput;
pub use import::{IMPORT_ROLES, Legacy, LegacyApproval, import_create, import_legacy, import_merge, importer};
pub use intake::{NewException, Places, judge_limits};
pub use renewal::{RenewalInput, ReviewInput};

/// Who acts, under which policy, at what time.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The caller (or [`Actor::system`] for the scheduler).
    pub actor: &'a Actor,
    /// The policy in force.
    pub policy: &'a ApprovalPolicy,
    /// The moment of the change.
    pub now: DateTime<Utc>,
}

/// What the database knows that a rule needs: the places taken under the covering limits.
/// An implementation that cannot read them answers `None` and keeps the cause itself.
pub trait Facts {
    /// For `e`: the exceptions holding a place on each of its assets and (when
    /// `business_unit_limited`) in its business unit, and the earlier exceptions sharing an
    /// asset and a control with it. Read under a lock that keeps concurrent writers from
    /// taking the same last place.
    fn places(&mut self, e: &Exception, now: DateTime<Utc>, business_unit_limited: bool) -> Option<Places>;
}

/// Facts for changes that never need them (tests, and operations on one's own record).
#[derive(Debug, Default)]
pub struct NoFacts;

impl Facts for NoFacts {
    fn places(&mut self, _: &Exception, _: DateTime<Utc>, _: bool) -> Option<Places> {
        Some(Places::default())
    }
}

/// A change a person asks for, with its parsed input; or `Tick`, time alone.
#[derive(Debug, Clone)]
pub enum Operation {
    /// Time passes: only the due time rules apply.
    Tick,
    /// A JSON merge patch of the fields.
    Update(FieldsPatch),
    /// Send for assessment.
    Submit,
    /// Send back to the requester.
    Return(Option<String>),
    /// (Re)assess the risk.
    Assess(AssessInput),
    /// Sign one required approval.
    Approve(ApproveInput),
    /// Refuse.
    Reject(Option<String>),
    /// Take back.
    Withdraw(Option<String>),
    /// End early.
    Revoke(Option<String>),
    /// End because remediated.
    Close(Option<String>),
    /// Add a compensating control.
    AddControl(ControlId, crate::record::ControlSpec),
    /// Change or verify a compensating control.
    ChangeControl(ControlId, ControlChange),
    /// Record a check of a compensating control.
    CheckControl(ControlId, CheckInput),
    /// Ask for a new expiry.
    RequestRenewal(RenewalInput),
    /// Record a periodic review.
    Review(ReviewInput),
}

/// An exception after a change, and what happened to it.
#[derive(Debug, Clone)]
pub struct Change {
    /// The exception as it is now.
    pub after: Exception,
    /// Every happening, in order: one audit event each.
    pub happened: Vec<Happening>,
}

/// Creates an exception: a `draft`, submitted at once when asked, or an emergency covering at
/// once. `new_id` gives the ids of its controls.
pub fn create(
    ctx: &Ctx<'_>,
    id: ExceptionId,
    key: ExceptionKey,
    input: intake::NewException,
    new_id: &mut dyn FnMut() -> Uuid,
    facts: &mut dyn Facts,
) -> Result<Change, DomainError> {
    let (mut e, happened) = intake::create(ctx, id, key, input, new_id, facts)?;
    clock::settle(&mut e, ctx.policy, ctx.now);
    Ok(Change { after: e, happened })
}

/// Applies `op` to `e` at `ctx.now`: due time rules, the operation, settling. A refused
/// operation changes nothing (the time rules are then left to the scheduler too).
pub fn apply(e: &Exception, ctx: &Ctx<'_>, op: Operation, facts: &mut dyn Facts) -> Result<Change, DomainError> {
    // a write that waited behind a later one (a scheduler batch) acts at that later moment
    let ctx = Ctx { now: crate::time::truncate(ctx.now.max(e.updated_at)), ..*ctx };
    let mut e = e.clone();
    let mut happened = clock::tick(&mut e, ctx.policy, ctx.now)?;
    happened.iter_mut().for_each(|h| h.by_system = true);
    let caused = match op {
        Operation::Tick => Vec::new(),
        Operation::Update(patch) => intake::update(&mut e, &ctx, patch)?,
        Operation::Submit => intake::submit(&mut e, &ctx, facts)?,
        Operation::Return(comment) => intake::return_to_requester(&mut e, &ctx, comment.as_deref())?,
        Operation::Assess(input) => assessment::assess(&mut e, &ctx, input, facts)?,
        Operation::Approve(input) => decision::approve(&mut e, &ctx, input, facts)?,
        Operation::Reject(comment) => decision::reject(&mut e, &ctx, comment.as_deref())?,
        Operation::Withdraw(comment) => decision::withdraw(&mut e, &ctx, comment.as_deref())?,
        Operation::Revoke(comment) => decision::revoke(&mut e, &ctx, comment.as_deref())?,
        Operation::Close(comment) => decision::close(&mut e, &ctx, comment.as_deref())?,
        Operation::AddControl(id, spec) => controls::add(&mut e, &ctx, id, spec)?,
        Operation::ChangeControl(id, change) => controls::change(&mut e, &ctx, id, change, facts)?,
        Operation::CheckControl(id, check) => controls::check(&mut e, &ctx, id, check, facts)?,
        Operation::RequestRenewal(input) => renewal::request(&mut e, &ctx, input)?,
        Operation::Review(input) => renewal::review(&mut e, &ctx, input)?,
    };
    happened.extend(caused);
    if !happened.is_empty() {
        e.version = e.version.checked_add(1).ok_or(DomainError::Overflow("the version"))?;
        e.updated_at = ctx.now;
    }
    clock::settle(&mut e, ctx.policy, ctx.now);
    Ok(Change { after: e, happened })
}

/// The comment of an action: at most 5000 characters, blank means none.
fn comment(raw: Option<&str>) -> Result<Option<String>, DomainError> {
    match raw {
        Some(c) => Ok(Some(crate::text::bounded("comment", c, 0, 5000)?).filter(|c| !c.is_empty())),
        None => Ok(None),
    }
}
