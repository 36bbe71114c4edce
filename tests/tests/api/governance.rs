//! Issue 3: time rules driven by the injectable clock and the scheduler, renewals, reviews,
//! limits, repeats, emergencies and control checks, on both backends.

use chrono::{DateTime, Duration, Utc};
use leeway_e2e::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Integration event types written for an exception, with their counts.
fn events(app: &TestApp, id: &str) -> BTreeMap<String, usize> {
    let store = leeway_persistence::Store::connect(&app.database_url, 1).unwrap();
    let id = leeway_domain::ids::ExceptionId(uuid::Uuid::parse_str(id).unwrap());
    let mut out = BTreeMap::new();
    for (t, _) in store.outbox_for(id).unwrap() {
        *out.entry(t).or_insert(0) += 1;
    }
    out
}

fn payloads(app: &TestApp, id: &str, kind: &str) -> Vec<Value> {
    let store = leeway_persistence::Store::connect(&app.database_url, 1).unwrap();
    let id = leeway_domain::ids::ExceptionId(uuid::Uuid::parse_str(id).unwrap());
    store.outbox_for(id).unwrap().into_iter().filter(|(t, _)| t == kind).map(|(_, p)| p).collect()
}

async fn status(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/v1/exceptions/{id}"), &app.token("audrey", "auditor", None)).await.body
}

/// Whole hours from the server's now to `t` (stored times are truncated to microseconds).
fn hours_until(app: &TestApp, t: &str) -> i64 {
    let t: DateTime<Utc> = t.parse().unwrap();
    ((t - app.now()).num_milliseconds() as f64 / 3_600_000.0).round() as i64
}

fn at(app: &TestApp, days: i64) -> String {
    (app.now() + Duration::days(days)).to_rfc3339()
}

/// Active, medium: 3 x 4 = 12, reduced to 7.2 by one verified high control (which, failing,
/// makes it high). Returns the exception and the control.
async fn active_medium_with_verified_control(app: &TestApp, cast: &Cast) -> (String, String) {
    let id = app.create(cast, json!({"submit": true, "expires_at": at(app, 60)})).await;
    let c = status(app, &id).await["controls"][0]["id"].as_str().unwrap().to_owned();
    app.change_control(&id, &c, &cast.analyst, json!({"status": "verified", "evidence": "rules loaded"})).await;
    let r = app
        .assess(&id, &cast.analyst, json!({"method": "matrix", "likelihood": 3, "impact": 4, "rationale": "Web app"}))
        .await;
    assert_eq!(r.body["risk"]["residual_level"], "medium");
    app.act(&id, "approve", &cast.officer).await;
    assert_eq!(app.act(&id, "approve", &cast.asset_owner).await.str("status"), "active");
    (id, c)
}

/// An analyst's failing check of control `c`.
async fn fail_check(app: &TestApp, cast: &Cast, id: &str, c: &str) -> Resp {
    app.post(
        &format!("/v1/exceptions/{id}/controls/{c}/checks"),
        &cast.analyst,
        json!({"result": "fail", "evidence": "rules gone"}),
    )
    .await
}

/// Runs two schedulers on their own threads and connections at the server's clock, in
/// two-row batches so their transactions interleave; returns how many exceptions they looked at.
fn two_schedulers_at_once(app: &TestApp) -> usize {
    let (url, policy, now) = (app.database_url.clone(), app.policy.clone(), app.now());
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let (url, policy) = (url.clone(), policy.clone());
            std::thread::spawn(move || {
                let store = leeway_persistence::Store::connect(&url, 1).unwrap();
                leeway_api::jobs::run_in_batches(&store, &policy, now, 2).unwrap()
            })
        })
        .collect();
    runs.into_iter().map(|h| h.join().unwrap()).sum()
}

/// High risk (4 x 4, no verified control): security officer and CISO; reviews every 30 days.
async fn active_high(app: &TestApp, cast: &Cast, overrides: Value) -> String {
    let id = app
        .create(
            cast,
            json!({"submit": true})
                .as_object()
                .unwrap()
                .clone()
                .into_iter()
                .chain(overrides.as_object().unwrap().clone())
                .collect::<serde_json::Map<_, _>>()
                .into(),
        )
        .await;
    let r = app
        .assess(&id, &cast.analyst, json!({"method": "matrix", "likelihood": 4, "impact": 4, "rationale": "Exposed"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    app.act(&id, "approve", &cast.officer).await;
    let r = app.act(&id, "approve", &cast.ciso).await;
    assert_eq!(r.str("status"), "active", "{}", r.body);
    id
}

#[tokio::test]
async fn activation_and_expiry_are_persisted_by_the_scheduler_once() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let id = app.approved(&cast, json!({"starts_at": at(&app, 2), "expires_at": at(&app, 20)})).await;
    assert_eq!(app.run_jobs().await, 0, "nothing is due yet");
    app.advance(Duration::days(2)).await;
    let h = app.get(&format!("/v1/exceptions/{id}/history"), &cast.officer).await;
    let activated = h.body["items"].as_array().unwrap().iter().find(|e| e["action"] == "activated").unwrap().clone();
    assert_eq!(activated["actor"]["subject"], "system");
    assert_eq!(status(&app, &id).await["status"], "active");
    app.advance(Duration::days(18)).await;
    app.run_jobs().await;
    let e = events(&app, &id);
    assert_eq!((e["exception.activated"], e["exception.expired"]), (1, 1), "{e:?}");
    assert_eq!(status(&app, &id).await["status"], "expired");
}

#[tokio::test]
async fn expiry_reminders_fire_once_each() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    // 60 days: 75% of the lifetime is day 45, 30 days before is day 30, 14 days before day 46
    let id = app.approved(&cast, json!({"expires_at": at(&app, 60)})).await;
    for _ in 0..61 {
        app.advance(Duration::days(1)).await;
        app.run_jobs().await;
    }
    let thresholds: Vec<String> = payloads(&app, &id, "exception.expiring")
        .iter()
        .map(|p| p["data"]["changes"]["threshold"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(thresholds, ["30d", "75pct", "14d"], "each once, in the order they were crossed");
    assert_eq!(events(&app, &id)["exception.expired"], 1);
}

#[tokio::test]
async fn reviews_fall_due_and_an_overdue_review_revokes() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let id = active_high(&app, &cast, json!({"expires_at": at(&app, 80)})).await;
    let next = status(&app, &id).await["next_review_at"].as_str().unwrap().to_owned();
    assert_eq!(hours_until(&app, &next), 30 * 24, "high risk: every 30 days");
    app.advance(Duration::days(30)).await;
    app.run_jobs().await;
    assert_eq!(events(&app, &id)["exception.review_due"], 1);
    // the risk owner reviews: the next review moves 30 days on
    let owner = app.token("erin", "requester", Some("hr"));
    let body = json!({"controls_effective": true, "justification_valid": true, "better_option_available": false, "outcome": "continue", "comment": "still needed"});
    let not_owner = app.post(&format!("/v1/exceptions/{id}/reviews"), &cast.requester, body.clone()).await;
    assert_eq!(not_owner.status, 403, "{}", not_owner.body);
    let r = app.post(&format!("/v1/exceptions/{id}/reviews"), &owner, body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["reviews"][0]["outcome"], "continue");
    assert_eq!(r.body["reviews"][0]["reviewer"], "erin");
    assert_eq!(hours_until(&app, r.body["next_review_at"].as_str().unwrap()), 30 * 24);
    // not reviewed again: due at day 60, revoked more than 14 days later
    app.advance(Duration::days(30)).await;
    app.advance(Duration::days(13)).await;
    assert_eq!(status(&app, &id).await["status"], "active");
    app.advance(Duration::days(1)).await;
    let e = status(&app, &id).await;
    assert_eq!((e["status"].as_str(), e["status_reason"].as_str()), (Some("revoked"), Some("review_overdue")));
    let ev = events(&app, &id);
    assert_eq!((ev["exception.review_due"], ev["exception.reviewed"], ev["exception.revoked"]), (2, 1, 1), "{ev:?}");
}

#[tokio::test]
async fn a_review_may_revoke() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let id = app.approved(&cast, json!({})).await;
    let body = json!({"controls_effective": false, "justification_valid": false, "better_option_available": true, "outcome": "revoke"});
    let r = app.post(&format!("/v1/exceptions/{id}/reviews"), &cast.analyst, body).await;
    assert_eq!((r.str("status").as_str(), r.str("status_reason").as_str()), ("revoked", "review_revoked"));
}

#[tokio::test]
async fn approval_sla_escalates_once_and_timeout_rejects() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let standard = app.submitted(&cast).await;
    let urgent = app.create(&cast, json!({"submit": true, "priority": "urgent"})).await;
    app.advance(Duration::hours(24)).await;
    assert_eq!(events(&app, &urgent)["exception.escalated"], 1);
    assert!(!events(&app, &standard).contains_key("exception.escalated"));
    app.advance(Duration::hours(48)).await;
    let u = status(&app, &urgent).await;
    assert_eq!((u["status"].as_str(), u["status_reason"].as_str()), (Some("rejected"), Some("approval_timeout")));
    app.advance(Duration::days(2)).await;
    app.run_jobs().await;
    assert_eq!(events(&app, &standard)["exception.escalated"], 1, "five days: escalated once");
    app.advance(Duration::days(9)).await;
    let s = status(&app, &standard).await;
    assert_eq!((s["status"].as_str(), s["status_reason"].as_str()), (Some("rejected"), Some("approval_timeout")));
    assert_eq!(events(&app, &standard)["exception.rejected"], 1);
}

#[tokio::test]
async fn a_renewal_round_needs_a_fresh_assessment_and_its_approvals() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let old_expiry = at(&app, 30);
    let id = app.approved(&cast, json!({"expires_at": old_expiry})).await;
    let renewal = json!({"expires_at": at(&app, 120), "justification": "The upgrade slipped to next quarter"});
    let r = app.post(&format!("/v1/exceptions/{id}/renewal"), &cast.analyst, renewal.clone()).await;
    assert_eq!(r.status, 403, "only the requester or the risk owner asks");
    let r = app.post(&format!("/v1/exceptions/{id}/renewal"), &cast.requester, renewal).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.str("status").as_str(), r.body["round"].as_u64(), r.body["covering"].as_bool()),
        ("renewal_pending", Some(2), Some(true))
    );
    let early = app.act(&id, "approve", &cast.officer).await;
    assert_eq!((early.status, early.fields()), (422, vec!["risk".to_owned()]), "{}", early.body);
    let r = app
        .assess(&id, &cast.analyst, json!({"method": "matrix", "likelihood": 2, "impact": 2, "rationale": "Unchanged"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = app.act(&id, "approve", &cast.officer).await;
    assert_eq!(r.str("status"), "active", "{}", r.body);
    assert_eq!(hours_until(&app, r.body["expires_at"].as_str().unwrap()), 120 * 24, "the renewal's expiry");
    assert_eq!(r.body["assessments"].as_array().unwrap().len(), 2, "every round's assessment is kept");
    assert_eq!(r.body["approvals"].as_array().unwrap().len(), 2, "and every round's approvals");
    assert_eq!(events(&app, &id)["exception.renewed"], 1);

    // a rejected renewal keeps the old expiry; an undecided one expires at it
    let other = app.approved(&cast, json!({"expires_at": old_expiry})).await;
    app.post(
        &format!("/v1/exceptions/{other}/renewal"),
        &cast.requester,
        json!({"expires_at": at(&app, 90), "justification": "Still waiting for the vendor"}),
    )
    .await;
    let r = app.act(&other, "reject", &cast.officer).await;
    assert_eq!(
        (r.str("status").as_str(), r.body["expires_at"].clone()),
        ("active", status(&app, &other).await["expires_at"].clone())
    );
    let undecided = app.approved(&cast, json!({"expires_at": at(&app, 10)})).await;
    app.post(
        &format!("/v1/exceptions/{undecided}/renewal"),
        &cast.requester,
        json!({"expires_at": at(&app, 90), "justification": "Still waiting for the vendor"}),
    )
    .await;
    app.advance(Duration::days(10)).await;
    assert_eq!(status(&app, &undecided).await["status"], "expired");
}

#[tokio::test]
async fn limits_per_asset_and_business_unit_are_enforced_at_submit() {
    let mut policy = leeway_domain::ApprovalPolicy::default();
    policy.business_unit_limits.insert("tiny".to_owned(), 1);
    let app = spawn_with(Options { policy: Some(policy), ..Options::default() }).await;
    let cast = Cast::new(&app);
    let mut holders = Vec::new();
    for i in 0..5 {
        // distinct controls, so they are not repeats of each other
        let id = app.approved(&cast, json!({"assets": ["db-01"], "control_ids": [format!("C-{i}")]})).await;
        holders.push(status(&app, &id).await["key"].as_str().unwrap().to_owned());
    }
    let r = app
        .post(
            "/v1/exceptions",
            &cast.requester,
            exception_body(json!({"assets": ["web-01", "db-01"], "control_ids": ["C-9"], "submit": true})),
        )
        .await;
    assert_eq!((r.status, r.str("code").as_str()), (422, "limit_exceeded"), "{}", r.body);
    assert_eq!(
        (r.str("asset").as_str(), r.body["limit"].as_u64(), r.body["held"].as_u64()),
        ("db-01", Some(5), Some(5))
    );
    assert!(r.body.get("held_by").is_none(), "a requester is not told which exceptions hold the places: {}", r.body);
    // a caller who may see every exception is told which hold them
    let integration = app.token("servicenow", "integration", None);
    let r = app
        .post(
            "/v1/exceptions",
            &integration,
            exception_body(json!({"assets": ["db-01"], "control_ids": ["C-9"], "submit": true})),
        )
        .await;
    assert_eq!((r.status, r.str("code").as_str()), (422, "limit_exceeded"), "{}", r.body);
    let mut held: Vec<String> =
        r.body["held_by"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_owned()).collect();
    held.sort();
    assert_eq!(held, holders);
    // a draft may still be written; only the submit is refused
    assert_eq!(
        app.post("/v1/exceptions", &cast.requester, exception_body(json!({"assets": ["db-01"]}))).await.status,
        201
    );
    // business unit limit
    let tiny = app.token("tim", "requester", Some("tiny"));
    let first = app
        .post("/v1/exceptions", &tiny, exception_body(json!({"business_unit": "tiny", "submit": true})))
        .await
        .str("id");
    app.assess(&first, &cast.analyst, json!({"method": "matrix", "likelihood": 1, "impact": 1, "rationale": "Low"}))
        .await;
    assert_eq!(app.act(&first, "approve", &cast.officer).await.str("status"), "active");
    let r = app.post("/v1/exceptions", &tiny, exception_body(json!({"business_unit": "tiny", "submit": true}))).await;
    assert_eq!(
        (r.status, r.str("business_unit").as_str(), r.body["limit"].as_u64()),
        (422, "tiny", Some(1)),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn repeats_on_the_same_asset_and_control_are_chronic_and_need_the_ciso() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let same = json!({"assets": ["legacy-erp"], "control_ids": ["CIS:5.2"]});
    for _ in 0..2 {
        let id = app.create(&cast, json!({"assets": ["legacy-erp"], "control_ids": ["CIS:5.2"], "submit": true})).await;
        assert_eq!(status(&app, &id).await["chronic"], false);
    }
    let mut body = same.clone();
    body["submit"] = json!(true);
    let third = app.create(&cast, body).await;
    let r = app
        .assess(&third, &cast.analyst, json!({"method": "matrix", "likelihood": 1, "impact": 2, "rationale": "Low"}))
        .await;
    assert_eq!(r.body["chronic"], true);
    assert_eq!(
        r.body["required_approvals"],
        json!([
            {"role": "security_officer", "reason": "residual level low", "satisfied_by": null},
            {"role": "ciso", "reason": "chronic", "satisfied_by": null},
        ])
    );
    assert_eq!(app.act(&third, "approve", &cast.officer).await.str("status"), "pending_approval");
    assert_eq!(app.act(&third, "approve", &cast.ciso).await.str("status"), "active");
}

#[tokio::test]
async fn emergencies_are_active_at_once_and_revoked_unless_ratified() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let r = app
        .post("/v1/exceptions", &cast.requester, exception_body(json!({"emergency": true, "expires_at": null})))
        .await;
    assert_eq!(r.status, 403, "only a security officer or the CISO declares an emergency");
    // an emergency asked for longer than its maximum is refused, naming the maximum, never
    // silently shortened
    let r = app
        .post("/v1/exceptions", &cast.officer, exception_body(json!({"emergency": true, "expires_at": at(&app, 5)})))
        .await;
    assert_eq!((r.status, r.str("code").as_str()), (422, "duration_exceeds_policy"), "{}", r.body);
    assert_eq!((r.body["max_duration_hours"].as_u64(), r.body["emergency"].as_bool()), (Some(72), Some(true)));
    assert_eq!(hours_until(&app, r.body["latest_expires_at"].as_str().unwrap()), 72);
    let r =
        app.post("/v1/exceptions", &cast.officer, exception_body(json!({"emergency": true, "expires_at": null}))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        (r.str("status").as_str(), r.body["covering"].as_bool(), r.body["emergency"].as_bool()),
        ("active", Some(true), Some(true))
    );
    assert_eq!(hours_until(&app, &r.str("expires_at")), 72, "at most 72 hours");
    let unratified = r.str("id");

    // a second one is ratified: assessed, approved, then its expiry may move past 72 hours
    let ratified = app
        .post(
            "/v1/exceptions",
            &app.token("dave", "ciso", None),
            exception_body(json!({"emergency": true, "expires_at": null})),
        )
        .await
        .str("id");
    let r = app.assess(&ratified, &cast.analyst, json!({"method": "matrix", "likelihood": 2, "impact": 2, "rationale": "Contained", "expires_at": at(&app, 20)})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = app.act(&ratified, "approve", &cast.officer).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(hours_until(&app, &r.str("expires_at")), 20 * 24);
    assert!(r.body["approved_at"].is_string());

    app.advance(Duration::hours(72)).await;
    let e = status(&app, &unratified).await;
    assert_eq!((e["status"].as_str(), e["status_reason"].as_str()), (Some("revoked"), Some("emergency_not_ratified")));
    assert_eq!(status(&app, &ratified).await["status"], "active");
}

#[tokio::test]
async fn overdue_control_checks_put_the_exception_at_risk_and_revoke_it_after_14_days() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let controls =
        json!([{"description": "WAF rule set", "kind": "preventive", "effectiveness": "high", "check_every": 7}]);
    let id = app.create(&cast, json!({"submit": true, "controls": controls, "expires_at": at(&app, 80)})).await;
    let c = status(&app, &id).await["controls"][0]["id"].as_str().unwrap().to_owned();
    app.change_control(&id, &c, &cast.analyst, json!({"status": "verified", "evidence": "rules loaded"})).await;
    // 3 x 4 = 12 x 0.6 = 7.2 medium; without the control 12: high
    let r = app
        .assess(&id, &cast.analyst, json!({"method": "matrix", "likelihood": 3, "impact": 4, "rationale": "Web app"}))
        .await;
    assert_eq!(r.body["risk"]["residual_level"], "medium");
    app.act(&id, "approve", &cast.officer).await;
    assert_eq!(app.act(&id, "approve", &cast.asset_owner).await.str("status"), "active");
    // a passing check restarts the interval
    app.advance(Duration::days(6)).await;
    let pass = app
        .post(
            &format!("/v1/exceptions/{id}/controls/{c}/checks"),
            &cast.analyst,
            json!({"result": "pass", "evidence": "rules still loaded"}),
        )
        .await;
    assert_eq!(pass.status, 200, "{}", pass.body);
    assert_eq!(pass.body["control_checks"][0]["result"], "pass");
    app.advance(Duration::days(6)).await;
    assert_eq!(status(&app, &id).await["at_risk"], false);
    // then no check: overdue at day 13
    app.advance(Duration::days(2)).await;
    let e = status(&app, &id).await;
    assert_eq!(
        (e["at_risk"].as_bool(), e["status"].as_str(), e["round"].as_u64()),
        (Some(true), Some("renewal_pending"), Some(2)),
        "{e}"
    );
    assert_eq!(e["risk"]["residual_level"], "high");
    assert_eq!(e["controls"][0]["reduces_risk"], false);
    assert_eq!(e["renewal"]["reason"], "controls_failed");
    assert_eq!(e["covering"], true, "still covering while the round runs");
    app.advance(Duration::days(13)).await;
    assert_eq!(status(&app, &id).await["status"], "renewal_pending");
    app.advance(Duration::days(1)).await;
    let e = status(&app, &id).await;
    assert_eq!((e["status"].as_str(), e["status_reason"].as_str()), (Some("revoked"), Some("controls_failed")));
    let ev = events(&app, &id);
    assert_eq!(
        (ev["exception.at_risk"], ev["exception.renewal_requested"], ev["exception.revoked"]),
        (1, 1, 1),
        "{ev:?}"
    );
}

#[tokio::test]
async fn a_failed_check_round_is_saved_by_the_new_levels_approvals() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let (id, c) = active_medium_with_verified_control(&app, &cast).await;
    let fail = fail_check(&app, &cast, &id, &c).await;
    assert_eq!(
        (fail.str("status").as_str(), fail.body["at_risk"].as_bool()),
        ("renewal_pending", Some(true)),
        "{}",
        fail.body
    );
    app.assess(
        &id,
        &cast.analyst,
        json!({"method": "matrix", "likelihood": 3, "impact": 4, "rationale": "Without the WAF"}),
    )
    .await;
    app.act(&id, "approve", &cast.officer).await;
    let r = app.act(&id, "approve", &cast.ciso).await;
    assert_eq!((r.str("status").as_str(), r.body["at_risk"].as_bool()), ("active", Some(false)), "{}", r.body);
    app.advance(Duration::days(15)).await;
    assert_eq!(status(&app, &id).await["status"], "active", "approved in time: not revoked");
}

#[tokio::test]
async fn two_schedulers_at_once_apply_each_transition_and_event_exactly_once() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let mut ids = Vec::new();
    for i in 0..24 {
        let id = match i % 4 {
            0 => app.approved(&cast, json!({"starts_at": at(&app, 1), "expires_at": at(&app, 40)})).await,
            1 => app.approved(&cast, json!({"expires_at": at(&app, 40)})).await,
            2 => app.submitted(&cast).await,
            _ => app.create(&cast, json!({"submit": true, "priority": "urgent"})).await,
        };
        ids.push(id);
    }
    // 41 days later every one of them has several rules due at once
    app.clock.advance(Duration::days(41));
    let looked_at = two_schedulers_at_once(&app);
    assert!(looked_at >= 24, "the two runs covered all the work: {looked_at}");
    assert_eq!(app.run_jobs().await, 0, "nothing is left due");
    for (i, id) in ids.iter().enumerate() {
        let ev = events(&app, id);
        let h = app.get(&format!("/v1/exceptions/{id}/history"), &cast.officer).await;
        let actions: Vec<&str> =
            h.body["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
        let mut seen = std::collections::HashSet::new();
        for a in actions.iter().filter(|a| **a != "approval_recorded") {
            assert!(seen.insert(*a), "exception {i}: {a} happened twice: {actions:?}");
        }
        for (kind, n) in &ev {
            let expected = if kind == "exception.approval_recorded" || kind == "exception.expiring" { *n } else { 1 };
            assert_eq!(*n, expected, "exception {i}: {kind} emitted {n} times");
        }
        match i % 4 {
            0 | 1 => assert_eq!(status(&app, id).await["status"], "expired", "exception {i}"),
            _ => assert_eq!(status(&app, id).await["status_reason"], "approval_timeout", "exception {i}"),
        }
        if i % 4 <= 1 {
            let thresholds: Vec<String> = payloads(&app, id, "exception.expiring")
                .iter()
                .map(|p| p["data"]["changes"]["threshold"].as_str().unwrap().to_owned())
                .collect();
            let unique: std::collections::HashSet<&String> = thresholds.iter().collect();
            assert_eq!(unique.len(), thresholds.len(), "exception {i}: a reminder twice: {thresholds:?}");
        }
    }
}

#[tokio::test]
async fn rejecting_a_round_opened_by_failed_controls_revokes() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let (id, c) = active_medium_with_verified_control(&app, &cast).await;
    let r = fail_check(&app, &cast, &id, &c).await;
    assert_eq!(r.str("status"), "renewal_pending");
    let r = app.act(&id, "reject", &cast.officer).await;
    assert_eq!(
        (r.str("status").as_str(), r.str("status_reason").as_str(), r.body["covering"].as_bool()),
        ("revoked", "controls_failed", Some(false)),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn a_renewal_assessed_higher_is_judged_by_its_own_round() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let id = app.approved(&cast, json!({"expires_at": at(&app, 30)})).await;
    app.post(
        &format!("/v1/exceptions/{id}/renewal"),
        &cast.requester,
        json!({"expires_at": at(&app, 60), "justification": "The vendor slipped again"}),
    )
    .await;
    let r = app
        .assess(&id, &cast.analyst, json!({"method": "matrix", "likelihood": 4, "impact": 4, "rationale": "Worse now"}))
        .await;
    assert_eq!(r.body["risk"]["residual_level"], "high");
    app.act(&id, "approve", &cast.officer).await;
    let e = status(&app, &id).await;
    assert_eq!(
        (e["at_risk"].as_bool(), e["status"].as_str(), e["covering"].as_bool()),
        (Some(false), Some("renewal_pending"), Some(true)),
        "{e}"
    );
    app.advance(Duration::days(20)).await;
    assert_eq!(status(&app, &id).await["status"], "renewal_pending", "not revoked: no control failed");
    app.advance(Duration::days(10)).await;
    assert_eq!(status(&app, &id).await["status"], "expired", "undecided at the old expiry");
}

#[tokio::test]
async fn an_emergency_cannot_be_renewed_before_ratification_and_counts_against_limits() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let id = app
        .post(
            "/v1/exceptions",
            &cast.officer,
            exception_body(json!({"emergency": true, "expires_at": null, "risk_owner": "erin"})),
        )
        .await
        .str("id");
    let owner = app.token("erin", "requester", None);
    let r = app
        .post(
            &format!("/v1/exceptions/{id}/renewal"),
            &owner,
            json!({"expires_at": at(&app, 30), "justification": "Need more time for the fix"}),
        )
        .await;
    assert_eq!((r.status, r.str("code").as_str()), (409, "invalid_transition"), "{}", r.body);
    // five exceptions hold an asset (one approved to start later): a sixth emergency is refused
    for i in 0..4 {
        app.approved(&cast, json!({"assets": ["core-sw"], "control_ids": [format!("X-{i}")]})).await;
    }
    app.approved(&cast, json!({"assets": ["core-sw"], "control_ids": ["X-9"], "starts_at": at(&app, 3)})).await;
    let r = app
        .post(
            "/v1/exceptions",
            &cast.officer,
            exception_body(json!({"emergency": true, "expires_at": null, "assets": ["core-sw"]})),
        )
        .await;
    assert_eq!(
        (r.status, r.str("code").as_str(), r.body["held_by"].as_array().map(Vec::len)),
        (422, "limit_exceeded", Some(5)),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn an_assessed_request_times_out_too() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let id = app.pending(&cast, json!({"priority": "urgent"})).await;
    app.advance(Duration::hours(72)).await;
    let e = status(&app, &id).await;
    assert_eq!((e["status"].as_str(), e["status_reason"].as_str()), (Some("rejected"), Some("approval_timeout")));
}

#[tokio::test]
async fn two_schedulers_agree_on_events_that_do_not_end_the_exception() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let mut ids = Vec::new();
    for i in 0..20 {
        let id = match i % 3 {
            // 20-day lifetime: the 30d reminder is due at once, the 14d one at day 6
            0 => app.approved(&cast, json!({"expires_at": at(&app, 20)})).await,
            1 => app.approved(&cast, json!({"starts_at": at(&app, 1), "expires_at": at(&app, 20)})).await,
            // standard priority: escalated after 5 days, rejected after 14
            _ => app.submitted(&cast).await,
        };
        ids.push(id);
    }
    app.clock.advance(Duration::days(6));
    two_schedulers_at_once(&app);
    assert_eq!(app.run_jobs().await, 0);
    for (i, id) in ids.iter().enumerate() {
        let ev = events(&app, id);
        if i % 3 == 2 {
            assert_eq!(ev.get("exception.escalated"), Some(&1), "exception {i}: {ev:?}");
            assert_eq!(status(&app, id).await["status"], "submitted");
        } else {
            let thresholds: Vec<String> = payloads(&app, id, "exception.expiring")
                .iter()
                .map(|p| p["data"]["changes"]["threshold"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(thresholds, ["30d", "14d"], "exception {i}: each reminder exactly once");
            assert_eq!(status(&app, id).await["status"], "active");
            if i % 3 == 1 {
                assert_eq!(ev.get("exception.activated"), Some(&1), "exception {i}: {ev:?}");
            }
        }
    }
}
