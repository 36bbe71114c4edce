//! Property tests: no sequence of actions, by anyone, at any time, moves an exception along a
//! row the lifecycle table does not have, and separation of duties always holds. Time moves
//! through the same entry point and the same table as people do.

#![expect(clippy::unwrap_used, reason = "set-up helpers outside #[test] fail loudly")]

use chrono::{DateTime, Duration, TimeZone, Utc};
use leeway_domain::access::Actor;
use leeway_domain::ids::{ControlId, ExceptionId, ExceptionKey, Subject};
use leeway_domain::kinds::{Action, Category, ControlKind, ControlStatus, Effectiveness, ReviewOutcome, Role, Status};
use leeway_domain::lifecycle;
use leeway_domain::policy::ApprovalPolicy;
use leeway_domain::record::{ControlInput, Exception, Fields, FieldsInput, FieldsPatch, Happening};
use leeway_domain::risk::Method;
use leeway_domain::workflow::{
    self, ApproveInput, AssessInput, ControlChange, Ctx, NewException, NoFacts, Operation, RenewalInput, ReviewInput,
};
use proptest::prelude::*;
use uuid::Uuid;

fn actor(sub: &str, roles: &[Role]) -> Actor {
    Actor {
        subject: Subject::parse("sub", sub).unwrap(),
        roles: roles.to_vec(),
        business_unit: Some("payments".into()),
    }
}

fn people() -> Vec<Actor> {
    use Role::*;
    vec![
        actor("alice", &[Requester]),
        actor("bob", &[Analyst]),
        actor("carol", &[SecurityOfficer]),
        actor("frank", &[AssetOwner]),
        actor("dave", &[Ciso]),
        actor("gina", &[Compliance]),
        actor("hank", &[SecurityOfficer, AssetOwner, Ciso]),
        actor("erin", &[Requester, Analyst, SecurityOfficer]),
    ]
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn new_exception(policy: &ApprovalPolicy, requester: &Actor, starts_in_hours: Option<i64>) -> Exception {
    let now = start();
    let fields = Fields::parse(&FieldsInput {
        title: Some("Legacy VPN".into()),
        category: Some(Category::MfaBypass),
        policy_id: Some("POL-1".into()),
        control_ids: Some(vec!["AC-2".into()]),
        assets: Some(vec!["vpn-01".into()]),
        business_unit: Some("payments".into()),
        justification: Some("No MFA until the upgrade".into()),
        risk_owner: Some("erin".into()),
        starts_at: starts_in_hours.map(|h| now + Duration::hours(h)),
        expires_at: Some(now + Duration::days(25)),
        ..FieldsInput::default()
    })
    .unwrap();
    let control = ControlInput {
        description: "Allow-list".into(),
        kind: ControlKind::Preventive,
        effectiveness: Effectiveness::High,
        check_every: Some(20),
    }
    .parse()
    .unwrap();
    let input = NewException { fields, controls: vec![control], on_behalf_of: None, emergency: false, submit: false };
    let ctx = Ctx { actor: requester, policy, now };
    let key = ExceptionKey::new(1).unwrap();
    workflow::create(&ctx, ExceptionId(Uuid::nil()), key, input, &mut Uuid::now_v7, &mut NoFacts).unwrap().after
}

/// The operation a step asks for, with inputs drawn from the step's numbers.
fn operation(action: Action, e: &Exception, now: DateTime<Utc>, l: i64, i: i64, hours: i64) -> Operation {
    match action {
        Action::Submit => Operation::Submit,
        Action::Return => Operation::Return(None),
        Action::Assess => Operation::Assess(AssessInput {
            id: Uuid::now_v7(),
            method: Method::matrix(l, i).unwrap(),
            rationale: "because".into(),
            threat_vectors: vec![],
            expires_at: Some(now + Duration::days(10)),
        }),
        Action::Approve => Operation::Approve(ApproveInput { id: Uuid::now_v7(), role: None, comment: None }),
        Action::Reject => Operation::Reject(None),
        Action::Withdraw => Operation::Withdraw(None),
        Action::Revoke => Operation::Revoke(None),
        Action::Close => Operation::Close(None),
        Action::RequestRenewal => Operation::RequestRenewal(RenewalInput {
            expires_at: now + Duration::days(l * 7),
            justification: "Still needed for the migration".into(),
        }),
        Action::Review => Operation::Review(ReviewInput {
            id: Uuid::now_v7(),
            controls_effective: true,
            justification_valid: true,
            better_option_available: false,
            outcome: if i == 5 { ReviewOutcome::Revoke } else { ReviewOutcome::Continue },
            comment: None,
        }),
        Action::AddControl => Operation::AddControl(
            ControlId(Uuid::now_v7()),
            ControlInput {
                description: "Monitoring".into(),
                kind: ControlKind::Detective,
                effectiveness: Effectiveness::Medium,
                check_every: None,
            }
            .parse()
            .unwrap(),
        ),
        Action::ChangeControl => Operation::ChangeControl(
            e.controls[0].id,
            ControlChange {
                status: Some(if i == 1 { ControlStatus::Failed } else { ControlStatus::Verified }),
                evidence: Some("seen".into()),
            },
        ),
        _ => Operation::Update(FieldsPatch { tags: Some(Some(vec![format!("t{hours}")])), ..FieldsPatch::default() }),
    }
}

/// The actions steps draw from, with weights: the ones that move a request forward come more
/// often than the ones that end it, so that sequences reach every state.
const ACTIONS: &[(Action, usize)] = &[
    (Action::Submit, 4),
    (Action::Assess, 4),
    (Action::Approve, 8),
    (Action::ChangeControl, 3),
    (Action::RequestRenewal, 3),
    (Action::Review, 2),
    (Action::Update, 1),
    (Action::AddControl, 1),
    (Action::Return, 1),
    (Action::Reject, 1),
    (Action::Withdraw, 1),
    (Action::Revoke, 1),
    (Action::Close, 1),
];

fn action(n: usize) -> Action {
    let mut n = n % ACTIONS.iter().map(|(_, w)| w).sum::<usize>();
    for (a, w) in ACTIONS {
        if n < *w {
            return *a;
        }
        n -= w;
    }
    Action::Update
}

/// Mostly someone whose roles allow the action, sometimes anyone (refusals are tested too).
fn pick(people: &[Actor], action: Action, who: usize) -> &Actor {
    let able: Vec<&Actor> = people.iter().filter(|p| p.has_any(leeway_domain::access::roles_for(action))).collect();
    if who < 6 && !able.is_empty() { able[who % able.len()] } else { &people[who % people.len()] }
}

/// Every change of status is a row of the table, and the happenings chain from state to state.
fn follows_the_table(before: Status, happened: &[Happening]) -> Result<Status, String> {
    let mut at = before;
    for h in happened {
        if h.from != Some(at) {
            return Err(format!("{} starts from {:?}, the exception was {at}", h.action, h.from));
        }
        match h.row {
            Some(row) if lifecycle::leads_to(at, row).contains(&h.to) => {}
            Some(row) => return Err(format!("{row} moved {at} to {}, which the table has no row for", h.to)),
            None if h.to != at => return Err(format!("{} moved {at} to {} without a row", h.action, h.to)),
            None => {}
        }
        at = h.to;
    }
    Ok(at)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn no_sequence_leaves_the_table(
        steps in proptest::collection::vec((0usize..31, 0usize..8, 0i64..48, 1i64..6, 1i64..6), 1..80),
        starts_in in proptest::option::of(1i64..100),
    ) {
        let policy = ApprovalPolicy::default();
        let people = people();
        let system = Actor::system();
        let mut now = start();
        let mut e = new_exception(&policy, &people[0], starts_in);
        for (a, who, hours, l, i) in steps {
            now += Duration::hours(hours);
            // time alone, as the scheduler moves it
            let ticked = workflow::apply(&e, &Ctx { actor: &system, policy: &policy, now }, Operation::Tick, &mut NoFacts).unwrap();
            prop_assert!(ticked.happened.iter().all(|h| h.by_system), "time's happenings are the system's");
            let reached = follows_the_table(e.status(), &ticked.happened).map_err(TestCaseError::fail)?;
            prop_assert_eq!(reached, ticked.after.status());
            e = ticked.after;
            let again = workflow::apply(&e, &Ctx { actor: &system, policy: &policy, now }, Operation::Tick, &mut NoFacts).unwrap();
            prop_assert!(again.happened.is_empty(), "tick is idempotent");
            if let Some(due) = e.next_due_at {
                prop_assert!(due > now, "a due rule left undone at {}: {}", now, due);
            }
            // a person's action
            let action = action(a);
            let ctx = Ctx { actor: pick(&people, action, who), policy: &policy, now };
            let from = e.status();
            // a refused action returns no exception: nothing changed
            if let Ok(change) = workflow::apply(&e, &ctx, operation(action, &e, now, l, i, hours), &mut NoFacts) {
                prop_assert!(lifecycle::permits(e.effective_status(now), action) || lifecycle::permits(from, action),
                    "{} succeeded from {}", action, from);
                let reached = follows_the_table(from, &change.happened).map_err(TestCaseError::fail)?;
                prop_assert_eq!(reached, change.after.status());
                e = change.after;
            }
            // separation of duties, whatever happened
            let counted: Vec<_> = e.current_approvals().collect();
            prop_assert!(counted.iter().all(|a| !e.is_requester(&a.approver)), "the requester approved");
            for a in &counted {
                prop_assert_eq!(counted.iter().filter(|b| b.approver == a.approver).count(), 1, "one person, two levels");
            }
            prop_assert!(e.controls.iter().all(|c| c.verified_by.as_ref().is_none_or(|v| !e.is_requester(v))));
            prop_assert!(e.assessments.iter().all(|a| !e.is_requester(&a.assessed_by)));
            // coverage is never reported outside [starts_at, expires_at)
            if e.is_covering(now) {
                prop_assert!(e.fields.expires_at.is_some_and(|x| now < x));
                prop_assert!(e.fields.starts_at.is_some_and(|s| s <= now));
            }
            // an ended exception stays ended
            if from.is_terminal() {
                prop_assert_eq!(e.status(), from);
            }
        }
    }
}
