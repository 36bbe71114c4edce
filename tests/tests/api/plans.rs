//! The plans of the list statements the store really runs: every filter and order of the
//! contract walks an index, on seeded data with fresh statistics. PostgreSQL is asked with
//! sequential scans discouraged (as a large table would); SQLite with `EXPLAIN QUERY PLAN`.

use chrono::Duration;
use leeway_api::routes::exceptions::query;
use leeway_domain::access::Actor;
use leeway_domain::ids::Subject;
use leeway_domain::kinds::Role;
use leeway_e2e::*;

fn person(sub: &str, role: Role, business_unit: Option<&str>) -> Actor {
    Actor {
        subject: Subject::parse("sub", sub).unwrap(),
        roles: vec![role],
        business_unit: business_unit.map(str::to_owned),
    }
}

#[tokio::test]
async fn every_list_filter_and_order_walks_an_index() {
    let app = spawn().await;
    let now = app.now();
    let (store, policy) = (app.store.clone(), app.policy.clone());
    tokio::task::spawn_blocking(move || {
        leeway_api::seed::run(&store, &policy, now, 3000, 1000, 7, |_| {}).unwrap();
        store.analyze().unwrap();
    })
    .await
    .unwrap();
    let cast = Cast::new(&app);
    app.create(&cast, serde_json::json!({"title": "A quixotic appliance"})).await;
    let officer = person("carol", Role::SecurityOfficer, None);
    let requester = person("req-03-1", Role::Requester, Some("bu-03"));
    let day = |d: i64| (now + Duration::days(d)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let pg = app.store.backend() == "postgres";
    // (query, caller, the indexes PostgreSQL may use: one of them)
    let cases: Vec<(String, &Actor, &str)> = vec![
        (String::new(), &officer, "exceptions_created_id"),
        ("sort=-created_at".into(), &officer, "exceptions_created_id"),
        ("sort=updated_at".into(), &officer, "exceptions_updated_id"),
        ("sort=-updated_at".into(), &officer, "exceptions_updated_id"),
        (format!("updated_since={}&sort=updated_at", day(-30)), &officer, "exceptions_updated_id"),
        ("status=submitted".into(), &officer, "exceptions_status_created|exceptions_status_expires"),
        ("status=pending_approval".into(), &officer, "exceptions_status_created|exceptions_status_expires"),
        ("status=active".into(), &officer, "exceptions_live_created"),
        ("status=expired".into(), &officer, "exceptions_created_id"),
        ("covering=true".into(), &officer, "exceptions_live_created|exceptions_status_expires"),
        ("covering=false".into(), &officer, "exceptions_created_id"),
        ("asset=asset-00007".into(), &officer, "exception_assets_pkey"),
        ("covering=true&asset=asset-00007".into(), &officer, "exception_assets_pkey"),
        ("control_id=CTRL-007".into(), &officer, "exception_control_ids_pkey"),
        ("business_unit=bu-03".into(), &officer, "exceptions_bu_created"),
        ("requester=req-03-1".into(), &officer, "exceptions_requester_created"),
        ("risk_owner=owner-7".into(), &officer, "exceptions_owner_created"),
        ("external_system=servicenow&external_id=RITM0000000001".into(), &officer, "external_refs_pkey"),
        (format!("expires_before={}", day(-600)), &officer, "exceptions_expires_id"),
        ("risk_level=critical".into(), &officer, "exceptions_created_id"),
        ("category=encryption".into(), &officer, "exceptions_created_id"),
        // a rare word: the text index, not a walk that filters every row
        ("q=quixotic".into(), &officer, "exceptions_search"),
        (String::new(), &requester, "exceptions_bu_created"),
    ];
    let mut wrong = Vec::new();
    for (raw, caller, index) in cases {
        let (q, _) = query::parse(&raw, caller, now).map_err(|e| format!("{raw}: {e:?}")).unwrap();
        let plan = app.store.explain_list(&q).unwrap();
        if pg {
            if plan.contains("Seq Scan") || !index.split('|').any(|i| plan.contains(i)) {
                wrong.push(format!("?{raw} should walk {index}:\n{plan}"));
            }
        } else {
            // a bare `SCAN exceptions` (no index) reads every row
            if plan.lines().any(|l| l.trim_start().starts_with("SCAN exceptions") && !l.contains("INDEX")) {
                wrong.push(format!("?{raw} scans the table:\n{plan}"));
            }
        }
        // a deep page is a range of the same index, not a longer walk
        let mut deep = q.clone();
        deep.after = Some((now - Duration::days(400), "01000000-0000-7000-8000-000000000000".into()));
        let plan = app.store.explain_list(&deep).unwrap();
        if pg && plan.contains("Seq Scan") {
            wrong.push(format!("?{raw} after a cursor scans the table:\n{plan}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}
