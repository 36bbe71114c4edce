//! KPIs and hotspots on a dataset small enough to compute by hand (docs/REPORTS.md defines
//! each figure).

use chrono::Duration;
use leeway_e2e::*;
use serde_json::{Value, json};

fn hours(v: &Value) -> f64 {
    v.as_f64().unwrap() / 3600.0
}

#[tokio::test]
async fn kpis_and_hotspots_match_a_hand_computed_dataset() {
    let policy = leeway_domain::ApprovalPolicy { max_covering_per_asset: 2, ..Default::default() };
    let app = spawn_with(Options { policy: Some(policy), ..Default::default() }).await;
    let cast = Cast::new(&app);
    let auditor = app.token("audrey", "auditor", None);
    let t0 = app.now();
    let shared = json!({"assets": ["shared-1"]});

    // A, B and E share an asset and a control; E, the third, is chronic
    let a = app.pending(&cast, shared.clone()).await;
    let b = app.pending(&cast, shared.clone()).await;
    let e = app.pending(&cast, shared.clone()).await;
    // approval times: A 2 h, B 8 h, C 1 h
    app.advance(Duration::hours(2)).await;
    assert_eq!(app.act(&a, "approve", &cast.officer).await.status, 200);
    app.advance(Duration::hours(6)).await;
    assert_eq!(app.act(&b, "approve", &cast.officer).await.status, 200);
    assert_eq!(app.act(&e, "reject", &cast.officer).await.status, 200);
    let c = app.pending(&cast, json!({})).await;
    app.advance(Duration::hours(1)).await;
    assert_eq!(app.act(&c, "approve", &app.token("ivy", "security_officer", None)).await.status, 200);
    // C covers for 24 h, then is revoked: the one lifespan
    app.advance(Duration::hours(24)).await;
    assert_eq!(app.act(&c, "revoke", &cast.officer).await.status, 200);
    // A has a verified control: one live exception of two covered
    let ctl = app.get(&format!("/v1/exceptions/{a}"), &cast.analyst).await.body["controls"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app.change_control(&a, &ctl, &cast.analyst, json!({"status": "verified", "evidence": "seen"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // D, a draft in another unit, filed by an integration
    let integration = app.token("snow", "integration", None);
    let d = app.post("/v1/exceptions", &integration, exception_body(json!({"business_unit": "retail"}))).await;
    assert_eq!(d.status, 201);

    let from = (t0 - Duration::hours(1)).to_rfc3339().replace('+', "%2B");
    // `to` is exclusive: a moment after the last change (the test's clock stands still)
    let to = (app.now() + Duration::seconds(1)).to_rfc3339().replace('+', "%2B");
    let r = app.get(&format!("/v1/reports/kpis?from={from}&to={to}"), &auditor).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let k = &r.body;
    let month = t0.format("%Y-%m").to_string();
    let volume: i64 = k["volume_per_month"].as_array().unwrap().iter().map(|m| m["count"].as_i64().unwrap()).sum();
    assert_eq!(volume, 5);
    assert_eq!(k["volume_per_month"][0]["month"], month);
    let t = &k["approval_time"];
    assert_eq!(t["count"], 3);
    assert!((hours(&t["median_seconds"]) - 2.0).abs() < 0.01, "{t}");
    assert!((hours(&t["mean_seconds"]) - 11.0 / 3.0).abs() < 0.01, "{t}");
    assert!((hours(&t["p90_seconds"]) - 8.0).abs() < 0.01, "{t}");
    assert_eq!(k["control_coverage"], json!({"count": 1, "of": 2, "share": 0.5}));
    assert_eq!(k["overdue_for_review"], json!({"count": 0, "of": 2, "share": 0.0}));
    assert_eq!(k["lifespan"]["ended"], 1);
    assert!((hours(&k["lifespan"]["mean_seconds"]) - 24.0).abs() < 0.01, "{}", k["lifespan"]);
    assert_eq!(k["renewals"], json!({"renewed": 0, "expired": 0, "rate": null}));
    assert_eq!(k["top_approvers"], json!([{"subject": "carol", "approvals": 2}, {"subject": "ivy", "approvals": 1}]));
    assert_eq!(k["by_status"], json!({"active": 2, "draft": 1, "rejected": 1, "revoked": 1}));
    assert_eq!(k["by_level"], json!({"low": 4, "unassessed": 1}));
    assert_eq!(k["by_category"], json!({"mfa_bypass": 5}));
    assert_eq!(k["by_business_unit"], json!({"payments": 4, "retail": 1}));

    // one unit; a window with nothing in it
    let r = app.get(&format!("/v1/reports/kpis?from={from}&to={to}&business_unit=retail"), &auditor).await;
    assert_eq!(r.body["by_status"], json!({"draft": 1}));
    assert_eq!(
        r.body["approval_time"],
        json!({"count": 0, "median_seconds": null, "mean_seconds": null, "p90_seconds": null})
    );
    assert_eq!(r.body["control_coverage"]["share"], Value::Null);
    let r = app.get("/v1/reports/kpis?from=2001-01-01T00:00:00Z&to=2002-01-01T00:00:00Z", &auditor).await;
    assert_eq!((r.body["volume_per_month"].clone(), r.body["top_approvers"].clone()), (json!([]), json!([])));

    let h = app.get("/v1/reports/hotspots", &auditor).await;
    assert_eq!(h.status, 200, "{}", h.body);
    assert_eq!(h.body["repeats"], json!([{"asset": "shared-1", "control_id": "NIST-800-53:IA-2", "exceptions": 3}]));
    let e_key = app.get(&format!("/v1/exceptions/{e}"), &auditor).await.str("key");
    assert_eq!(h.body["chronic"].as_array().unwrap().len(), 1);
    assert_eq!(h.body["chronic"][0]["key"], e_key.as_str());
    assert_eq!(h.body["assets_at_limit"], json!([{"asset": "shared-1", "live": 2, "limit": 2}]));
    assert_eq!(
        h.body["business_units"],
        json!([{"business_unit": "payments", "total": 4, "live": 2}, {"business_unit": "retail", "total": 1, "live": 0}])
    );
    let h = app.get("/v1/reports/hotspots?business_unit=retail&limit=1", &auditor).await;
    assert_eq!(h.body["repeats"], json!([]));

    // months ahead, every review is overdue (the scheduler has not run)
    app.clock.advance(Duration::days(400));
    let r = app.get("/v1/reports/kpis", &auditor).await;
    assert_eq!(r.body["overdue_for_review"], json!({"count": 2, "of": 2, "share": 1.0}));

    // and past their expiry (which the scheduler has yet to apply), they no longer hold the
    // asset's places
    let h = app.get("/v1/reports/hotspots", &auditor).await;
    assert_eq!(h.body["assets_at_limit"], json!([]));

    // who may read them, and bad windows
    assert_eq!(app.get("/v1/reports/kpis", &cast.requester).await.status, 403);
    assert_eq!(app.get("/v1/reports/hotspots", &cast.requester).await.status, 403);
    assert_eq!(
        app.get("/v1/reports/kpis?from=2030-01-01T00:00:00Z&to=2020-01-01T00:00:00Z", &auditor).await.status,
        400
    );
    assert_eq!(app.get("/v1/reports/hotspots?limit=0", &auditor).await.status, 400);
}
