//! Property tests: no sequence of actions, by anyone, at any time, reaches a state the
//! lifecycle table does not allow, and separation of duties always holds.

#![expect(clippy::unwrap_used, reason = "set-up helpers outside #[test] fail loudly")]

use chrono::{DateTime, Duration, TimeZone, Utc};
use leeway_domain::governance;
use leeway_domain::lifecycle::{Action, Status};
use leeway_domain::policy::ApprovalPolicy;
use leeway_domain::record::{ControlId, ControlInput, ExceptionId, ExceptionKey, FieldsInput, Subject};
use leeway_domain::risk::Method;
use leeway_domain::role::{Actor, Role};
use leeway_domain::workflow::{self, ApproveInput, AssessInput, ControlChange, Ctx, NewException};
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

/// The states the spec's table lets `action` lead to from `from` (spec section 5). Assessing
/// or verifying a control that lowers the residual level below what the approvals already
/// cover completes the approval, as the last approval would.
fn targets(action: Action, from: Status) -> Vec<Status> {
    use Status::*;
    let completes = vec![from, Approved, Active];
    match (action, from) {
        (Action::Submit, Draft) => vec![Submitted],
        (Action::Return, Submitted | PendingApproval) => vec![Draft],
        (Action::Assess, Submitted | PendingApproval) => vec![PendingApproval, Approved, Active],
        (Action::Assess, RenewalPending) => vec![RenewalPending, Active],
        (Action::Approve, PendingApproval) => completes,
        (Action::Approve, RenewalPending) => vec![RenewalPending, Active],
        (Action::RequestRenewal, Active) => vec![RenewalPending],
        (Action::Review, Active | RenewalPending) => vec![from, Revoked],
        (Action::Reject, Submitted | PendingApproval) => vec![Rejected],
        (Action::Reject, RenewalPending) => vec![Active],
        (Action::Withdraw, Draft | Submitted | PendingApproval | Approved) => vec![Withdrawn],
        (Action::Revoke, Approved | Active | RenewalPending) => vec![Revoked],
        (Action::Close, Active | RenewalPending) => vec![Closed],
        (Action::Update | Action::AddControl, _) => vec![from],
        (Action::ChangeControl, PendingApproval) => completes,
        (Action::ChangeControl, Active) => vec![Active, RenewalPending],
        (Action::ChangeControl, _) => vec![from],
        _ => vec![],
    }
}

const ACTIONS: &[Action] = &[
    Action::Submit,
    Action::Return,
    Action::Assess,
    Action::Approve,
    Action::Reject,
    Action::Withdraw,
    Action::Revoke,
    Action::Close,
    Action::Update,
    Action::AddControl,
    Action::ChangeControl,
    Action::RequestRenewal,
    Action::Review,
];

/// What time alone may do (spec section 5 and the governance rules of section 4).
fn time_allows(from: Status, to: Status) -> bool {
    use Status::*;
    matches!(
        (from, to),
        (Approved, Active)
            | (Approved | Active | RenewalPending, Expired)
            | (Submitted | PendingApproval, Rejected)
            | (Active | RenewalPending, Revoked)
            | (Active, RenewalPending)
    )
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn new_exception(policy: &ApprovalPolicy, requester: &Actor, starts_in_hours: Option<i64>) -> leeway_domain::Exception {
    let now = start();
    let input = NewException {
        fields: FieldsInput {
            title: Some("Legacy VPN".into()),
            category: Some("mfa_bypass".into()),
            policy_id: Some("POL-1".into()),
            control_ids: Some(vec!["AC-2".into()]),
            assets: Some(vec!["vpn-01".into()]),
            business_unit: Some("payments".into()),
            justification: Some("No MFA until the upgrade".into()),
            risk_owner: Some("erin".into()),
            starts_at: starts_in_hours.map(|h| now + Duration::hours(h)),
            expires_at: Some(now + Duration::days(25)),
            ..FieldsInput::default()
        },
        controls: vec![ControlInput {
            description: "Allow-list".into(),
            kind: "preventive".into(),
            effectiveness: "high".into(),
            check_every_days: Some(20),
        }],
        on_behalf_of: None,
        emergency: false,
    };
    let ctx = Ctx { actor: requester, policy, now };
    workflow::create(&ctx, ExceptionId(Uuid::nil()), ExceptionKey(1), &input, Uuid::now_v7).unwrap().0
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn no_sequence_leaves_the_table(
        steps in proptest::collection::vec((0..ACTIONS.len(), 0usize..8, 0i64..200, 1i64..6, 1i64..6), 1..40),
        starts_in in proptest::option::of(1i64..100),
    ) {
        let policy = ApprovalPolicy::default();
        let people = people();
        let mut now = start();
        let mut e = new_exception(&policy, &people[0], starts_in);
        for (a, who, hours, l, i) in steps {
            now += Duration::hours(hours);
            for h in governance::tick(&mut e, &policy, now) {
                prop_assert!(h.by_system);
                if let Some(f) = h.from
                    && f != h.to
                {
                    prop_assert!(time_allows(f, h.to), "time moved {} to {}", f, h.to);
                }
            }
            prop_assert!(governance::tick(&mut e.clone(), &policy, now).is_empty(), "tick is idempotent");
            if let Some(due) = governance::next_due(&e, &policy, now) {
                prop_assert!(due > now, "a due rule left undone at {}: {}", now, due);
            }
            let from = e.status;
            let action = ACTIONS[a];
            let actor = &people[who];
            let ctx = Ctx { actor, policy: &policy, now };
            let before = e.clone();
            let result = match action {
                Action::Submit => workflow::submit(&mut e, &ctx, &governance::SubmitFacts::default()),
                Action::RequestRenewal => governance::request_renewal(&mut e, &ctx, now + Duration::days(l * 7), "Still needed for the migration"),
                Action::Review => governance::review(&mut e, &ctx, &governance::ReviewInput {
                    controls_effective: true,
                    justification_valid: true,
                    better_option_available: false,
                    outcome: if i == 5 { "revoke".into() } else { "continue".into() },
                    comment: None,
                }, Uuid::now_v7()),
                Action::Return => workflow::return_to_requester(&mut e, &ctx, None),
                Action::Assess => workflow::assess(&mut e, &ctx, AssessInput {
                    method: Method::matrix(l, i).unwrap(),
                    rationale: "because".into(),
                    threat_vectors: vec![],
                    expires_at: Some(now + Duration::days(10)),
                }, Uuid::now_v7()),
                Action::Approve => workflow::approve(&mut e, &ctx, &ApproveInput::default(), Uuid::now_v7()),
                Action::Reject => workflow::reject(&mut e, &ctx, None),
                Action::Withdraw => workflow::withdraw(&mut e, &ctx, None),
                Action::Revoke => workflow::revoke(&mut e, &ctx, None),
                Action::Close => workflow::close(&mut e, &ctx, None),
                Action::Update => {
                    let mut f = e.fields.to_input();
                    f.tags = Some(vec![format!("t{hours}")]);
                    workflow::update(&mut e, &ctx, &f)
                }
                Action::AddControl => workflow::add_control(&mut e, &ctx, &ControlInput {
                    description: "Monitoring".into(), kind: "detective".into(), effectiveness: "medium".into(), check_every_days: None,
                }, ControlId(Uuid::now_v7())).map(|(_, h)| h),
                Action::ChangeControl => {
                    let id = e.controls[0].id;
                    workflow::change_control(&mut e, &ctx, id, &ControlChange { status: Some("verified".into()), evidence: Some("seen".into()) })
                }
                _ => unreachable!(),
            };
            match result {
                Ok(happened) => {
                    prop_assert!(from.permits(action), "{action} succeeded from {from}");
                    prop_assert!(targets(action, from).contains(&e.status), "{action} from {from} reached {}", e.status);
                    if e.status != from {
                        prop_assert!(!happened.is_empty(), "a transition without an audit event");
                    }
                }
                Err(_) => prop_assert_eq!(&e, &before, "a refused {} changed the exception", action),
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
            if workflow::is_covering(&e, now) {
                prop_assert!(e.fields.expires_at.is_some_and(|x| now < x));
                prop_assert!(e.fields.starts_at.is_some_and(|s| s <= now));
            }
        }
    }
}
