//! Every intake validation rule, reported at once, each naming its field.

use leeway_e2e::*;
use serde_json::json;

async fn refused(app: &TestApp, token: &str, overrides: serde_json::Value) -> Resp {
    let r = app.post("/v1/exceptions", token, exception_body(overrides)).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.header("content-type").as_deref(), Some("application/problem+json"));
    assert_eq!(r.str("code"), "validation_failed");
    r
}

#[tokio::test]
async fn every_field_rule_is_checked_and_all_bad_fields_are_listed() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let r = refused(
        &app,
        &cast.requester,
        json!({
            "title": "  ab  ",
            "policy_id": "",
            "control_ids": [],
            "assets": ["ok", ""],
            "business_unit": "x".repeat(101),
            "justification": "too short",
            "starts_at": "2030-01-02T00:00:00Z",
            "expires_at": "2030-01-01T00:00:00Z",
            "tags": (0..51).map(|i| format!("t{i}")).collect::<Vec<_>>(),
            "external_refs": [{"system": "jira", "id": "J-1", "url": "ftp://x"}],
            "category": "nope",
            "controls": [{"description": "x", "kind": "magic", "effectiveness": "high"}],
        }),
    )
    .await;
    let mut fields = r.fields();
    fields.sort();
    assert_eq!(
        fields,
        [
            "assets[1]",
            "business_unit",
            "category",
            "control_ids",
            "controls[0].description",
            "controls[0].kind",
            "expires_at",
            "external_refs[0].url",
            "justification",
            "policy_id",
            "tags",
            "title"
        ],
        "{}",
        r.body
    );
    let title = r.body["errors"].as_array().unwrap().iter().find(|e| e["field"] == "title").unwrap();
    assert_eq!(title["code"], "too_short");
    assert_eq!(title["pointer"], "/title");
}

#[tokio::test]
async fn required_fields_are_named() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let r = app.post("/v1/exceptions", &cast.requester, json!({})).await;
    assert_eq!(r.status, 422);
    let mut fields = r.fields();
    fields.sort();
    assert_eq!(
        fields,
        ["assets", "business_unit", "category", "control_ids", "justification", "policy_id", "risk_owner", "title"]
    );
}

#[tokio::test]
async fn lists_have_bounds_and_are_deduplicated() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let too_many: Vec<String> = (0..501).map(|i| format!("host-{i}")).collect();
    let r = refused(&app, &cast.requester, json!({"assets": too_many})).await;
    assert_eq!(r.fields(), ["assets"]);
    let r =
        refused(&app, &cast.requester, json!({"control_ids": (0..51).map(|i| format!("C-{i}")).collect::<Vec<_>>()}))
            .await;
    assert_eq!(r.fields(), ["control_ids"]);
    let r = refused(&app, &cast.requester, json!({"control_ids": ["x".repeat(101)]})).await;
    assert_eq!(r.fields(), ["control_ids[0]"]);
    let r = refused(&app, &cast.requester, json!({"assets": ["a".repeat(201)]})).await;
    assert_eq!(r.fields(), ["assets[0]"]);
    let r = refused(&app, &cast.requester, json!({"title": "t".repeat(201)})).await;
    assert_eq!(r.body["errors"][0]["code"], "too_long");
    let r = refused(&app, &cast.requester, json!({"justification": "j".repeat(10_001)})).await;
    assert_eq!(r.fields(), ["justification"]);
    let r = refused(&app, &cast.requester, json!({"risk_owner": " "})).await;
    assert_eq!(r.fields(), ["risk_owner"]);
    let ok = app
        .post(
            "/v1/exceptions",
            &cast.requester,
            exception_body(json!({"assets": ["a", " a ", "b"], "control_ids": ["C", "C"]})),
        )
        .await;
    assert_eq!(ok.status, 201);
    assert_eq!(ok.body["assets"], json!(["a", "b"]));
    assert_eq!(ok.body["control_ids"], json!(["C"]));
}

#[tokio::test]
async fn unknown_and_server_controlled_members_are_refused() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let r = refused(&app, &cast.requester, json!({"status": "active"})).await;
    assert_eq!(r.fields(), ["status"]);
    assert_eq!(r.body["errors"][0]["code"], "server_controlled");
    let r = refused(&app, &cast.requester, json!({"risk": {"residual_level": "low"}})).await;
    assert_eq!(r.fields(), ["risk"]);
    let r = refused(&app, &cast.requester, json!({"colour": "blue"})).await;
    assert_eq!((r.fields()[0].as_str(), r.body["errors"][0]["code"].as_str()), ("colour", Some("unknown_field")));
    let r = refused(&app, &cast.requester, json!({"controls": [{"description": "abc", "kind": "preventive", "effectiveness": "high", "status": "verified"}]})).await;
    assert_eq!(r.fields(), ["controls[0].status"]);
    let r = refused(&app, &cast.requester, json!({"category": "nope"})).await;
    assert_eq!((r.fields()[0].as_str(), r.body["errors"][0]["code"].as_str()), ("category", Some("invalid_value")));
    let r = refused(&app, &cast.requester, json!({"priority": 3})).await;
    assert_eq!(r.fields(), ["priority"]);
    let id = app.create(&cast, json!({})).await;
    let r = app
        .send("PATCH", &format!("/v1/exceptions/{id}"), Some(&cast.requester), Some(&json!({"version": 9})), &[])
        .await;
    assert_eq!((r.status, r.fields()), (422, vec!["version".to_owned()]));
}

#[tokio::test]
async fn on_behalf_of_is_for_integrations_only() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let r = refused(&app, &cast.requester, json!({"on_behalf_of": "zoe"})).await;
    assert_eq!(r.fields(), ["on_behalf_of"]);
    let integration = app.token("servicenow", "integration", None);
    let r = app.post("/v1/exceptions", &integration, exception_body(json!({"on_behalf_of": "zoe"}))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!((r.str("requester").as_str(), r.str("on_behalf_of").as_str()), ("servicenow", "zoe"));
    let auditor = app.token("audrey", "auditor", None);
    let r = app.post("/v1/exceptions", &auditor, exception_body(json!({}))).await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn submit_needs_an_expiry_in_the_future_and_a_control() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let id = app.create(&cast, json!({"expires_at": null, "controls": []})).await;
    let r = app.act(&id, "submit", &cast.requester).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.fields(), ["expires_at", "controls"]);
    let past = (app.now() - chrono::Duration::days(1)).to_rfc3339();
    let r =
        app.post("/v1/exceptions", &cast.requester, exception_body(json!({"expires_at": past, "submit": true}))).await;
    assert_eq!((r.status, r.fields()), (422, vec!["expires_at".to_owned()]));
    assert_eq!(r.body["errors"][0]["code"], "in_past");
    // nothing was half-written: the refused create left no exception behind
    let all = app.get("/v1/exceptions", &cast.officer).await;
    assert_eq!(all.body["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_external_reference_belongs_to_one_exception() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let refs = json!({"external_refs": [{"system": "servicenow", "id": "RITM0012345"}]});
    let first = app.post("/v1/exceptions", &cast.requester, exception_body(refs.clone())).await;
    assert_eq!(first.status, 201);
    let integration = app.token("servicenow", "integration", None);
    let r = app.post("/v1/exceptions", &integration, exception_body(refs)).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.str("code"), "duplicate_external_reference");
    assert_eq!(r.body["holder"], first.body["key"]);
    let found = app.get("/v1/exceptions?external_system=servicenow&external_id=RITM0012345", &cast.officer).await;
    assert_eq!(found.body["items"].as_array().unwrap().len(), 1);
}
