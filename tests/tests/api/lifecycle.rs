//! Every row of the lifecycle table, allowed and refused, and time-driven status.

use chrono::Duration;
use leeway_e2e::*;
use serde_json::{Value, json};

/// The states a test can reach through the API in this release, and how.
const STATES: &[&str] = &[
    "draft",
    "submitted",
    "pending_approval",
    "approved",
    "active",
    "rejected",
    "withdrawn",
    "expired",
    "revoked",
    "closed",
];

async fn reach(app: &TestApp, cast: &Cast, state: &str) -> String {
    match state {
        "draft" => app.create(cast, json!({})).await,
        "submitted" => app.submitted(cast).await,
        "pending_approval" => app.pending(cast, json!({})).await,
        "approved" => {
            let starts = (app.now() + Duration::days(10)).to_rfc3339();
            app.approved(cast, json!({"starts_at": starts})).await
        }
        "active" => app.approved(cast, json!({})).await,
        "rejected" => {
            let id = app.submitted(cast).await;
            assert_eq!(app.act(&id, "reject", &cast.analyst).await.status, 200);
            id
        }
        "withdrawn" => {
            let id = app.create(cast, json!({})).await;
            assert_eq!(app.act(&id, "withdraw", &cast.requester).await.status, 200);
            id
        }
        "expired" => {
            let expires = (app.now() + Duration::seconds(5)).to_rfc3339();
            let id = app.approved(cast, json!({"expires_at": expires})).await;
            app.clock.advance(Duration::seconds(6));
            id
        }
        "revoked" => {
            let id = app.approved(cast, json!({})).await;
            assert_eq!(app.act(&id, "revoke", &cast.officer).await.status, 200);
            id
        }
        "closed" => {
            let id = app.approved(cast, json!({})).await;
            assert_eq!(app.act(&id, "close", &cast.requester).await.status, 200);
            id
        }
        other => panic!("unknown state {other}"),
    }
}

/// (action, states it is allowed from, the state it leads to from each).
fn table() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    vec![
        ("submit", vec![("draft", "submitted")]),
        ("return", vec![("submitted", "draft"), ("pending_approval", "draft")]),
        ("assess", vec![("submitted", "pending_approval"), ("pending_approval", "pending_approval")]),
        ("approve", vec![("pending_approval", "active")]),
        ("reject", vec![("submitted", "rejected"), ("pending_approval", "rejected")]),
        (
            "withdraw",
            vec![
                ("draft", "withdrawn"),
                ("submitted", "withdrawn"),
                ("pending_approval", "withdrawn"),
                ("approved", "withdrawn"),
            ],
        ),
        ("revoke", vec![("approved", "revoked"), ("active", "revoked")]),
        ("close", vec![("active", "closed")]),
    ]
}

async fn perform(app: &TestApp, cast: &Cast, id: &str, action: &str) -> Resp {
    match action {
        "submit" | "withdraw" | "close" => app.act(id, action, &cast.requester).await,
        "return" | "reject" => app.act(id, action, &cast.analyst).await,
        "approve" | "revoke" => app.act(id, action, &cast.officer).await,
        "assess" => {
            app.assess(
                id,
                &cast.analyst,
                json!({"method": "matrix", "likelihood": 2, "impact": 2, "rationale": "Low exposure"}),
            )
            .await
        }
        other => panic!("unknown action {other}"),
    }
}

#[tokio::test]
async fn every_action_from_every_reachable_state_follows_the_table() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    for (action, allowed) in table() {
        for state in STATES {
            let id = reach(&app, &cast, state).await;
            let before = app.get(&format!("/v1/exceptions/{id}"), &cast.officer).await;
            assert_eq!(before.str("status"), *state, "set-up of {state}");
            let r = perform(&app, &cast, &id, action).await;
            match allowed.iter().find(|(from, _)| from == state) {
                Some((_, to)) => {
                    assert_eq!(r.status, 200, "{action} from {state}: {}", r.body);
                    assert_eq!(r.str("status"), *to, "{action} from {state}");
                    assert_eq!(
                        r.body["version"],
                        before.body["version"].as_u64().unwrap() + 1,
                        "{action} from {state} bumps the version"
                    );
                }
                None => {
                    assert_eq!(r.status, 409, "{action} from {state} must be refused: {}", r.body);
                    assert_eq!(r.str("code"), "invalid_transition");
                    assert_eq!(r.str("current_state"), *state);
                    assert!(r.body["allowed_actions"].is_array());
                    assert!(!r.body["allowed_actions"].as_array().unwrap().contains(&json!(action)));
                    assert!(r.str("detail").contains(state), "the problem names the state: {}", r.body);
                    let after = app.get(&format!("/v1/exceptions/{id}"), &cast.officer).await;
                    assert_eq!(after.body["version"], before.body["version"], "a refused action changes nothing");
                }
            }
        }
    }
}

#[tokio::test]
async fn tags_and_remediation_stay_editable_after_submit_but_nothing_else() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let id = app.pending(&cast, json!({})).await;
    let ok = app
        .send(
            "PATCH",
            &format!("/v1/exceptions/{id}"),
            Some(&cast.requester),
            Some(&json!({"tags": ["q3"], "remediation_plan": "Upgrade appliance"})),
            &[],
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["tags"], json!(["q3"]));
    let locked = app
        .send(
            "PATCH",
            &format!("/v1/exceptions/{id}"),
            Some(&cast.requester),
            Some(&json!({"title": "Another title", "assets": ["x"]})),
            &[],
        )
        .await;
    assert_eq!(locked.status, 422, "{}", locked.body);
    assert_eq!(locked.fields(), ["assets", "title"]);
    assert_eq!(locked.body["errors"][0]["code"], "not_editable");
    // in draft, the requester may change everything
    let draft = app.create(&cast, json!({})).await;
    let r = app
        .send(
            "PATCH",
            &format!("/v1/exceptions/{draft}"),
            Some(&cast.requester),
            Some(&json!({"title": "Renamed", "business_impact": null})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.str("title"), "Renamed");
    // an analyst may not rewrite a requester's draft
    let r = app
        .send(
            "PATCH",
            &format!("/v1/exceptions/{draft}"),
            Some(&cast.analyst),
            Some(&json!({"title": "Hijacked"})),
            &[],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
}

#[tokio::test]
async fn return_sends_back_to_draft_and_old_approvals_stop_counting() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    // medium: security officer and asset owner
    let id = app.create(&cast, json!({"submit": true})).await;
    let r = app
        .assess(&id, &cast.analyst, json!({"method": "matrix", "likelihood": 3, "impact": 3, "rationale": "Moderate"}))
        .await;
    assert_eq!(r.body["risk"]["residual_level"], "medium");
    assert_eq!(app.act(&id, "approve", &cast.officer).await.status, 200);
    let r = app.act(&id, "return", &cast.asset_owner).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.str("status"), "draft");
    assert_eq!(r.body["approvals"][0]["counts"], false);
    assert_eq!(app.act(&id, "submit", &cast.requester).await.status, 200);
    let r = app
        .assess(&id, &cast.analyst, json!({"method": "matrix", "likelihood": 3, "impact": 3, "rationale": "Moderate"}))
        .await;
    let sat: Vec<&Value> =
        r.body["required_approvals"].as_array().unwrap().iter().map(|x| &x["satisfied_by"]).collect();
    assert!(sat.iter().all(|s| s.is_null()), "no approval survives a return: {}", r.body);
}

#[tokio::test]
async fn approved_with_a_future_start_becomes_active_when_the_start_comes() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let starts = app.now() + Duration::hours(2);
    let id = app.approved(&cast, json!({"starts_at": starts.to_rfc3339()})).await;
    let r = app.get(&format!("/v1/exceptions/{id}"), &cast.officer).await;
    assert_eq!((r.str("status").as_str(), r.body["covering"].as_bool()), ("approved", Some(false)));
    app.clock.advance(Duration::hours(2));
    let r = app.get(&format!("/v1/exceptions/{id}"), &cast.officer).await;
    assert_eq!((r.str("status").as_str(), r.body["covering"].as_bool()), ("active", Some(true)));
    let listed = app.get("/v1/exceptions?status=active&covering=true", &cast.officer).await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_exception_expiring_seconds_after_approval_reads_expired_and_never_covers() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let expires = app.now() + Duration::seconds(4);
    let id = app.approved(&cast, json!({"expires_at": expires.to_rfc3339()})).await;
    let r = app.get(&format!("/v1/exceptions/{id}"), &cast.officer).await;
    assert_eq!((r.str("status").as_str(), r.body["covering"].as_bool()), ("active", Some(true)));
    app.clock.advance(Duration::seconds(4));
    let r = app.get(&format!("/v1/exceptions/{id}"), &cast.officer).await;
    assert_eq!(r.str("status"), "expired");
    assert_eq!(r.body["covering"], false);
    assert!(r.body["allowed_actions"].as_array().unwrap().iter().all(|a| a == "update"));
    let covering = app.get("/v1/exceptions?covering=true", &cast.officer).await;
    assert!(covering.body["items"].as_array().unwrap().is_empty());
    let expired = app.get("/v1/exceptions?status=expired", &cast.officer).await;
    assert_eq!(expired.body["items"][0]["id"], json!(id));
    let active = app.get("/v1/exceptions?status=active", &cast.officer).await;
    assert!(active.body["items"].as_array().unwrap().is_empty());
    // ended by time: closing is refused, naming the expired state
    let r = app.act(&id, "close", &cast.requester).await;
    assert_eq!((r.status, r.str("current_state").as_str()), (409, "expired"));
}
