//! An upgrade from the release before "one row per exception": the fixtures are the rows the
//! previous release wrote (`leeway serve` of commit 844cd52, driven through its HTTP API:
//! an active exception with verified and checked controls, two assessments, approvals and a
//! review; a draft; a rejected request), dumped from each backend. Migrating them must keep
//! every value, every audit chain and every integration event, and the chains must go on.
//!
//! SQLite always; PostgreSQL too when `LEEWAY_TEST_DATABASE_URL` names one.

#![expect(clippy::unwrap_used, reason = "a test fails loudly")]

use chrono::Utc;
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use leeway_domain::ApprovalPolicy;
use leeway_domain::access::Actor;
use leeway_domain::audit::first_broken;
use leeway_domain::ids::{ExceptionKey, ExceptionRef, Subject};
use leeway_domain::kinds::{ControlStatus, MethodKind, ReviewOutcome, Role, Status};
use leeway_domain::workflow::{self, Ctx, Operation, ReviewInput};
use leeway_persistence::{CallContext, ListQuery, Outcome, Store, StoredResponse};

/// A fresh database at the last migration before the upgrade, loaded with the fixture.
struct Old {
    store: Store,
    drop_schema: Option<(String, String)>,
    file: Option<std::path::PathBuf>,
}

impl Drop for Old {
    fn drop(&mut self) {
        if let Some((url, schema)) = &self.drop_schema
            && let Ok(mut c) = PgConnection::establish(url)
        {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        }
        if let Some(f) = &self.file {
            let _ = std::fs::remove_file(f);
        }
    }
}

fn old_databases() -> Vec<Old> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let path = std::env::temp_dir().join(format!("leeway-upgrade-{id}.db"));
    let mut out = vec![Old {
        store: Store::connect(&format!("sqlite://{}", path.display()), 1).unwrap(),
        drop_schema: None,
        file: Some(path),
    }];
    if let Ok(url) = std::env::var("LEEWAY_TEST_DATABASE_URL")
        && url.starts_with("postgres")
    {
        let schema = format!("u_{id}");
        let mut c = PgConnection::establish(&url).unwrap();
        // the extension the upgrade creates lives in `public`; tests in parallel must not race for it
        for step in [
            "SELECT pg_advisory_lock(7428)",
            "CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public",
            "SELECT pg_advisory_unlock(7428)",
        ] {
            c.batch_execute(step).unwrap();
        }
        c.batch_execute(&format!("CREATE SCHEMA {schema}")).unwrap();
        let sep = if url.contains('?') { '&' } else { '?' };
        let store = Store::connect(&format!("{url}{sep}options=-csearch_path%3D{schema}"), 1).unwrap();
        out.push(Old { store, drop_schema: Some((url, schema)), file: None });
    }
    for old in &out {
        old.store.migrate_through("2026-11-23-000003").unwrap();
        let fixture = match old.store.backend() {
            "postgres" => include_str!("fixtures/v3-postgres.sql"),
            _ => include_str!("fixtures/v3-sqlite.sql"),
        };
        old.store.conn().unwrap().batch_execute(fixture).unwrap();
    }
    out
}

fn person(sub: &str, role: Role) -> Actor {
    Actor { subject: Subject::parse("sub", sub).unwrap(), roles: vec![role], business_unit: None }
}

fn key(n: u64) -> ExceptionRef {
    ExceptionRef::Key(ExceptionKey::new(n).unwrap())
}

#[test]
fn what_the_previous_release_wrote_survives_the_upgrade_and_its_chains_go_on() {
    let auditor = person("audrey", Role::Auditor);
    for old in old_databases() {
        let store = &old.store;
        let backend = store.backend();
        assert_eq!(store.migrate().unwrap().len(), 4, "{backend}: the migrations left");

        let e = store.get(key(1), &auditor).unwrap();
        assert_eq!(e.status(), Status::Active, "{backend}");
        assert_eq!(e.fields.assets, ["vpn-01.example.net", "vpn-02.example.net"], "{backend}");
        assert_eq!(e.fields.external_refs.len(), 1, "{backend}");
        assert_eq!(e.controls.len(), 2, "{backend}: controls in their order");
        assert_eq!(e.controls[0].status, ControlStatus::Verified, "{backend}");
        assert_eq!(e.controls[0].check_every.map(|d| d.days()), Some(30), "{backend}");
        assert!(e.controls[0].last_checked_at.is_some(), "{backend}: the check moved last_checked_at");
        assert_eq!(e.controls[1].description, "Session recording", "{backend}");
        let methods: Vec<MethodKind> = e.assessments.iter().map(|a| a.method.kind()).collect();
        assert_eq!(methods, [MethodKind::Matrix, MethodKind::Cvss], "{backend}: assessments oldest first");
        assert_eq!(e.approvals.len(), 2, "{backend}");
        assert!(e.approvals.iter().all(|a| a.risk.assessment_id == e.assessments[1].id), "{backend}");
        assert_eq!(e.reviews.len(), 1, "{backend}");
        assert_eq!(e.reviews[0].outcome, ReviewOutcome::Continue, "{backend}");
        assert_eq!(e.control_checks.len(), 1, "{backend}");
        assert_eq!(e.control_checks[0].control_id, e.controls[0].id, "{backend}");
        assert_eq!(store.get(key(3), &auditor).unwrap().status(), Status::Rejected, "{backend}");

        let history = store.history(e.id).unwrap();
        assert_eq!(history.len(), 11, "{backend}");
        assert_eq!(first_broken(&history), None, "{backend}: the chain is intact");
        let events: Vec<String> = store.outbox_for(e.id).unwrap().into_iter().map(|(t, _)| t).collect();
        assert_eq!(events.len(), 11, "{backend}: every integration event kept: {events:?}");
        assert_eq!(events[0], "exception.created", "{backend}");
        // every old event is in the change feed, in its old order, and what covers today
        // covers in the history coverage is answered from
        let feed = store.feed(0, 1000).unwrap();
        let mine: Vec<&str> =
            feed.iter().filter(|f| f.exception_id == e.id.to_string()).map(|f| f.event_type.as_str()).collect();
        assert_eq!(mine, events, "{backend}: the feed holds the old events");
        assert!(feed.windows(2).all(|w| w[0].seq < w[1].seq), "{backend}");
        let covering = store.coverage(&["vpn-02.example.net"], Utc::now()).unwrap();
        assert_eq!(covering["vpn-02.example.net"][0].key_num, 1, "{backend}: {covering:?}");

        // the chain goes on from the head the upgrade put on the row
        let analyst = person("bob", Role::Analyst);
        let policy = ApprovalPolicy::default();
        let now = Utc::now();
        let ctx = CallContext { actor: &analyst, request_id: Some("upgrade-test"), now };
        let dctx = Ctx { actor: &analyst, policy: &policy, now };
        let review = ReviewInput {
            id: uuid::Uuid::now_v7(),
            controls_effective: true,
            justification_valid: true,
            better_option_available: false,
            outcome: ReviewOutcome::Continue,
            comment: None,
        };
        let changed = store
            .mutate(
                ctx,
                key(1),
                None,
                None,
                |e, f| Ok(workflow::apply(e, &dctx, Operation::Review(review.clone()), f)?),
                |_| StoredResponse { status: 200, body: String::new(), location: None, etag: None },
            )
            .unwrap();
        assert!(matches!(changed, Outcome::Done(_)), "{backend}");
        let history = store.history(e.id).unwrap();
        assert_eq!(history.len(), 12, "{backend}");
        assert_eq!(first_broken(&history), None, "{backend}: the new event links to the last old one");

        // keys go on after the last one handed out
        let requester = person("alice", Role::Requester);
        let draft = store.get(key(2), &auditor).unwrap().fields.clone();
        let created = store
            .create(
                CallContext { actor: &requester, request_id: None, now },
                None,
                |k, f| {
                    let input = workflow::NewException {
                        fields: draft.clone(),
                        controls: Vec::new(),
                        on_behalf_of: None,
                        emergency: false,
                        submit: false,
                    };
                    let ctx = Ctx { actor: &requester, policy: &policy, now };
                    Ok(workflow::create(
                        &ctx,
                        leeway_domain::ids::ExceptionId(uuid::Uuid::now_v7()),
                        k,
                        input,
                        &mut uuid::Uuid::now_v7,
                        f,
                    )?)
                },
                |_| StoredResponse { status: 201, body: String::new(), location: None, etag: None },
            )
            .unwrap();
        let Outcome::Done(created) = created else { panic!("{backend}: a replay") };
        assert_eq!(created.key.number(), 4, "{backend}");

        // the indexes derived from the rows answer for the old rows
        let q = ListQuery { q: Some("vendor".into()), limit: 10, now, ..ListQuery::default() };
        let found: Vec<u64> = store.list(&q).unwrap().items.iter().map(|e| e.key.number()).collect();
        assert_eq!(found, [1, 3], "{backend}: text search over the old rows");
        let q = ListQuery { asset: Some("a-1".into()), limit: 10, now, ..ListQuery::default() };
        let found: Vec<u64> = store.list(&q).unwrap().items.iter().map(|e| e.key.number()).collect();
        assert_eq!(found, [2, 3, 4], "{backend}: assets, old and new");
    }
}
