//! The worked risk numbers, the policy's durations, and separation of duties.

use chrono::Duration;
use leeway_e2e::*;
use serde_json::json;

#[tokio::test]
async fn matrix_and_verified_controls_give_the_spec_numbers() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let id = app.submitted(&cast).await;
    let r = app
        .assess(
            &id,
            &cast.analyst,
            json!({"method": "matrix", "likelihood": 4, "impact": 4, "rationale": "Internet-facing"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["risk"]["inherent_score"], 16.0);
    assert_eq!(r.body["risk"]["inherent_level"], "high");
    // proposed controls are theory: no reduction yet
    assert_eq!(r.body["risk"]["residual_score"], 16.0);
    assert_eq!(
        r.body["required_approvals"],
        json!([
            {"role": "security_officer", "reason": "residual level high", "satisfied_by": null},
            {"role": "ciso", "reason": "residual level high", "satisfied_by": null},
        ])
    );
    let controls: Vec<String> =
        r.body["controls"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_owned()).collect();
    for c in &controls {
        let v = app
            .change_control(&id, c, &cast.analyst, json!({"status": "verified", "evidence": "config reviewed"}))
            .await;
        assert_eq!(v.status, 200, "{}", v.body);
    }
    let r = app.get(&format!("/v1/exceptions/{id}"), &cast.analyst).await;
    assert_eq!(r.body["risk"]["residual_score"], 7.2);
    assert_eq!(r.body["risk"]["residual_level"], "medium");
    assert_eq!(r.body["required_approvals"][1]["role"], "asset_owner");
    assert_eq!(r.body["controls"][0]["verified_by"], "bob");
}

#[tokio::test]
async fn cvss_vectors_are_scored_by_the_library() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let id = app.submitted(&cast).await;
    let expires = (app.now() + Duration::days(20)).to_rfc3339();
    let r = app
        .assess(&id, &cast.analyst, json!({"method": "cvss", "vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "rationale": "Remote code execution", "expires_at": expires}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["risk"]["inherent_score"], 9.8);
    assert_eq!(r.body["risk"]["inherent_level"], "critical");
    let roles: Vec<&str> =
        r.body["required_approvals"].as_array().unwrap().iter().map(|x| x["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["security_officer", "ciso", "compliance"]);
    let bad = app
        .assess(&id, &cast.analyst, json!({"method": "cvss", "vector": "CVSS:3.1/AV:X", "rationale": "x y z"}))
        .await;
    assert_eq!((bad.status, bad.fields()), (422, vec!["vector".to_owned()]));
    let missing = app.assess(&id, &cast.analyst, json!({"method": "matrix", "rationale": "x y z"})).await;
    assert_eq!(missing.fields(), ["impact", "likelihood"]);
    let range = app
        .assess(&id, &cast.analyst, json!({"method": "matrix", "likelihood": 0, "impact": 6, "rationale": "x y z"}))
        .await;
    assert_eq!(range.fields(), ["impact", "likelihood"]);
}

#[tokio::test]
async fn a_duration_longer_than_the_level_allows_is_refused_unless_shortened() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    // 60 days requested; high risk allows 90, critical 30
    let id = app.submitted(&cast).await;
    let crit = json!({"method": "matrix", "likelihood": 5, "impact": 4, "rationale": "Exposed admin interface"});
    let r = app.assess(&id, &cast.analyst, crit.clone()).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.str("code"), "duration_exceeds_policy");
    assert_eq!(r.body["max_duration_days"], 30);
    assert_eq!(r.body["residual_level"], "critical");
    let mut shortened = crit;
    shortened["expires_at"] = json!((app.now() + Duration::days(30)).to_rfc3339());
    let r = app.assess(&id, &cast.analyst, shortened).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.str("status"), "pending_approval");
}

#[tokio::test]
async fn approvals_follow_the_residual_level_and_record_the_risk_they_accepted() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let id = app.submitted(&cast).await;
    let r = app
        .assess(&id, &cast.analyst, json!({"method": "matrix", "likelihood": 3, "impact": 3, "rationale": "Moderate"}))
        .await;
    assert_eq!(r.body["risk"]["residual_level"], "medium");
    let r = app.act(&id, "approve", &cast.officer).await;
    assert_eq!(r.str("status"), "pending_approval");
    assert_eq!(r.body["approvals"][0]["risk"]["residual_level"], "medium");
    assert_eq!(r.body["approvals"][0]["risk"]["residual_score"], 9.0);
    // re-assessed higher: the medium approval no longer counts, the new level needs a CISO
    let r = app
        .assess(
            &id,
            &cast.analyst,
            json!({"method": "matrix", "likelihood": 4, "impact": 3, "rationale": "Exploit published"}),
        )
        .await;
    assert_eq!(r.body["risk"]["residual_level"], "high");
    assert_eq!(r.body["approvals"][0]["counts"], false);
    assert_eq!(r.body["required_approvals"][0]["satisfied_by"], serde_json::Value::Null);
    let no_role = app.act(&id, "approve", &cast.asset_owner).await;
    assert_eq!(no_role.status, 403, "asset owner is not required at high: {}", no_role.body);
    let pick = app
        .send(
            "POST",
            &format!("/v1/exceptions/{id}/approve"),
            Some(&cast.officer),
            Some(&json!({"role": "compliance"})),
            &[],
        )
        .await;
    assert_eq!((pick.status, pick.fields()), (422, vec!["role".to_owned()]));
    assert_eq!(app.act(&id, "approve", &cast.officer).await.status, 200);
    let r = app.act(&id, "approve", &cast.ciso).await;
    assert_eq!(r.str("status"), "active", "{}", r.body);
    assert_eq!(r.body["covering"], true);
    assert!(r.body["next_review_at"].is_string(), "review scheduled at activation + 30 days");
}

#[tokio::test]
async fn separation_of_duties_is_enforced() {
    let app = spawn().await;
    // alice requests and also holds approver and analyst roles
    let alice = app.token("alice", "requester,security_officer,analyst", Some("payments"));
    let cast = Cast::new(&app);
    let r = app.post("/v1/exceptions", &alice, exception_body(json!({"submit": true}))).await;
    let id = r.str("id");
    let control = r.body["controls"][0]["id"].as_str().unwrap().to_owned();
    let own_assess =
        app.assess(&id, &alice, json!({"method": "matrix", "likelihood": 3, "impact": 3, "rationale": "Mine"})).await;
    assert_eq!((own_assess.status, own_assess.str("code").as_str()), (403, "separation_of_duties"));
    let own_verify =
        app.change_control(&id, &control, &alice, json!({"status": "verified", "evidence": "trust me"})).await;
    assert_eq!((own_verify.status, own_verify.str("code").as_str()), (403, "separation_of_duties"));
    let requester_verify =
        app.change_control(&id, &control, &cast.requester, json!({"status": "verified", "evidence": "x"})).await;
    assert_eq!(requester_verify.status, 403, "only analysts verify: {}", requester_verify.body);
    app.assess(&id, &cast.analyst, json!({"method": "matrix", "likelihood": 3, "impact": 3, "rationale": "Moderate"}))
        .await;
    let own_approve = app.act(&id, "approve", &alice).await;
    assert_eq!((own_approve.status, own_approve.str("code").as_str()), (403, "separation_of_duties"));
    // one person, two required levels: the second approval is refused
    let both = app.token("hank", "security_officer,asset_owner", None);
    assert_eq!(app.act(&id, "approve", &both).await.status, 200);
    let twice = app.act(&id, "approve", &both).await;
    assert_eq!((twice.status, twice.str("code").as_str()), (403, "separation_of_duties"));
    assert_eq!(app.act(&id, "approve", &cast.asset_owner).await.str("status"), "active");
}
