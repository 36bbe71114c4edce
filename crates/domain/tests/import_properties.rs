//! Property tests of legacy imports: whatever a legacy row claims, it either comes in where
//! it says (or `expired`, when its expiry has passed) with one `imported` happening, or it is
//! refused; and a row whose history keeps every rule comes in.

#![expect(clippy::unwrap_used, reason = "set-up helpers outside #[test] fail loudly")]

use chrono::{DateTime, Duration, TimeZone, Utc};
use leeway_domain::access::Actor;
use leeway_domain::ids::{ExceptionId, ExceptionKey, Subject};
use leeway_domain::kinds::{AuditAction, Category, ControlKind, Effectiveness, Role, Status};
use leeway_domain::policy::ApprovalPolicy;
use leeway_domain::record::{ControlInput, Fields, FieldsInput};
use leeway_domain::risk::Method;
use leeway_domain::workflow::{self, AssessInput, Ctx, Legacy, LegacyApproval, NewException, NoFacts};
use proptest::prelude::*;
use uuid::Uuid;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap()
}

fn admin() -> Actor {
    workflow::importer(&Actor {
        subject: Subject::parse("sub", "root").unwrap(),
        roles: vec![Role::Admin],
        business_unit: None,
    })
    .unwrap()
}

fn row(created_days_ago: i64, expires_after_days: i64) -> NewException {
    let created = now() - Duration::days(created_days_ago);
    let fields = Fields::parse(&FieldsInput {
        title: Some("Legacy VPN".into()),
        category: Some(Category::MfaBypass),
        policy_id: Some("POL-1".into()),
        control_ids: Some(vec!["AC-2".into()]),
        assets: Some(vec!["vpn-01".into()]),
        business_unit: Some("payments".into()),
        justification: Some("No MFA until the upgrade".into()),
        risk_owner: Some("erin".into()),
        expires_at: Some(created + Duration::days(expires_after_days)),
        ..FieldsInput::default()
    })
    .unwrap();
    let control = ControlInput {
        description: "Allow-list".into(),
        kind: ControlKind::Preventive,
        effectiveness: Effectiveness::Medium,
        check_every: None,
    }
    .parse()
    .unwrap();
    NewException { fields, controls: vec![control], on_behalf_of: None, emergency: false, submit: false }
}

fn risk(likelihood: i64, impact: i64) -> AssessInput {
    AssessInput {
        id: Uuid::now_v7(),
        method: Method::matrix(likelihood, impact).unwrap(),
        rationale: "From the old register".into(),
        threat_vectors: Vec::new(),
        expires_at: None,
    }
}

const APPROVER_ROLES: [Role; 4] = [Role::SecurityOfficer, Role::AssetOwner, Role::Ciso, Role::Compliance];

fn import(legacy: Legacy, policy: &ApprovalPolicy) -> Result<workflow::Change, leeway_domain::DomainError> {
    let importer = admin();
    let ctx = Ctx { actor: &importer, policy, now: now() };
    let key = ExceptionKey::new(7).unwrap();
    workflow::import_legacy(&ctx, ExceptionId(Uuid::nil()), key, legacy, 1, &mut Uuid::now_v7, &mut NoFacts)
}

/// Whatever a legacy row claims, it lands where it says (or expired) with one `imported`
/// happening, or is refused; and enough generated rows land for that to mean something.
#[test]
fn a_legacy_row_lands_where_it_says_or_is_refused() {
    use proptest::test_runner::TestRunner;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let accepted = AtomicUsize::new(0);
    // any state, dates and signatures, drawn near the policy's bounds (365 days at low, the
    // 14-day approval timeout, officers and asset owners for low and medium) so that both
    // sides of each rule are hit
    let strategy = (
        prop::sample::select(Status::ALL.to_vec()),
        0i64..400,
        1i64..400,
        prop::option::of((1i64..=3, 1i64..=3)),
        prop::collection::vec((0usize..2, 1i64..400), 0..3),
    );
    TestRunner::new(ProptestConfig::with_cases(512))
        .run(&strategy, |(status, created_days_ago, expires_after_days, assessed, approvals)| {
            let policy = ApprovalPolicy::default();
            let created = now() - Duration::days(created_days_ago);
            let approvals: Vec<LegacyApproval> = approvals
                .into_iter()
                .enumerate()
                .map(|(i, (role, hours))| LegacyApproval {
                    role: APPROVER_ROLES[role],
                    approver: Subject::parse("sub", &format!("approver-{i}")).unwrap(),
                    approved_at: created + Duration::hours(hours),
                    comment: None,
                })
                .collect();
            // an assessment and signatures where the state has them (the domain's own
            // refusals of the others are not what this property is about)
            let decided = !matches!(status, Status::Draft | Status::Submitted | Status::Withdrawn);
            let signed = decided && !matches!(status, Status::PendingApproval | Status::Rejected);
            let legacy = Legacy {
                new: row(created_days_ago, expires_after_days),
                status,
                created_at: created,
                risk: assessed.filter(|_| decided).map(|(l, i)| risk(l, i)),
                approvals: if signed { approvals } else { Vec::new() },
                original: serde_json::json!({}),
            };
            if let Ok(change) = import(legacy, &policy) {
                accepted.fetch_add(1, Ordering::Relaxed);
                let e = &change.after;
                let landed = e.effective_status(now());
                prop_assert!(
                    landed == status
                        || (matches!(status, Status::Approved | Status::Active) && landed == Status::Expired),
                    "asked {status}, landed {landed}"
                );
                prop_assert_eq!(change.happened.len(), 1);
                prop_assert_eq!(change.happened[0].action, AuditAction::Imported);
                prop_assert_eq!(e.created_at, created);
                prop_assert!(e.approvals.iter().all(|a| a.at >= created && a.at <= now()));
                prop_assert_eq!(e.version, 1);
            }
            Ok(())
        })
        .unwrap();
    eprintln!("{} of 512 generated legacy rows landed", accepted.load(Ordering::Relaxed));
    // enough land for the property to mean something (a rule refusing everything would fail)
    assert!(accepted.load(Ordering::Relaxed) > 100, "only {} of 512 landed", accepted.load(Ordering::Relaxed));
}

#[test]
fn a_history_that_keeps_every_rule_comes_in_and_one_that_does_not_is_refused() {
    let policy = ApprovalPolicy::default();
    let created = now() - Duration::days(30);
    // low (2 x 2): one security officer, within the approval timeout
    let good = Legacy {
        new: row(30, 90),
        status: Status::Active,
        created_at: created,
        risk: Some(risk(2, 2)),
        approvals: vec![LegacyApproval {
            role: Role::SecurityOfficer,
            approver: Subject::parse("sub", "carol").unwrap(),
            approved_at: created + Duration::days(1),
            comment: None,
        }],
        original: serde_json::json!({"status": "active"}),
    };
    let change = import(good.clone(), &policy).unwrap();
    assert_eq!(change.after.status(), Status::Active);
    assert_eq!(change.happened[0].changes["legacy"]["status"], "active");
    // the same approval after the approval timeout (14 days): the history leads elsewhere
    let mut late = good.clone();
    late.approvals[0].approved_at = created + Duration::days(20);
    assert!(import(late, &policy).is_err());
    // longer than the low level allows (365 days)
    let mut long = good;
    long.new = row(30, 400);
    assert!(import(long, &policy).is_err());
}

#[test]
fn every_state_but_a_renewal_round_can_be_imported() {
    let policy = ApprovalPolicy::default();
    let officer = |created: DateTime<Utc>| {
        vec![LegacyApproval {
            role: Role::SecurityOfficer,
            approver: Subject::parse("sub", "carol").unwrap(),
            approved_at: created + Duration::days(1),
            comment: None,
        }]
    };
    // (status, created days ago, expiry days after creation, assessed, approved)
    let cases = [
        (Status::Draft, 5, 90, false, false),
        (Status::Submitted, 5, 90, false, false),
        (Status::PendingApproval, 5, 90, true, false),
        (Status::Active, 30, 90, true, true),
        (Status::Expired, 100, 50, true, true),
        (Status::Rejected, 30, 90, true, false),
        (Status::Withdrawn, 5, 90, false, false),
        (Status::Revoked, 30, 90, true, true),
        (Status::Closed, 30, 90, true, true),
    ];
    for (status, ago, expires, assessed, approved) in cases {
        let created = now() - Duration::days(ago);
        let legacy = Legacy {
            new: row(ago, expires),
            status,
            created_at: created,
            risk: assessed.then(|| risk(2, 2)),
            approvals: if approved { officer(created) } else { Vec::new() },
            original: serde_json::json!({}),
        };
        let change = import(legacy.clone(), &policy).unwrap_or_else(|e| panic!("{status}: {e:?}"));
        assert_eq!(change.after.effective_status(now()), status);
        let renewal = Legacy { status: Status::RenewalPending, ..legacy };
        assert!(import(renewal, &policy).is_err());
    }
}
