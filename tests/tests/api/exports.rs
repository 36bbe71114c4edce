//! Streamed exports: every matching exception, in NDJSON or in the CSV columns an import takes.

use leeway_e2e::*;
use serde_json::{Value, json};

async fn export(app: &TestApp, query: &str, token: &str) -> (u16, String, String) {
    let res =
        app.client.get(format!("{}/v1/exports/exceptions?{query}", app.base)).bearer_auth(token).send().await.unwrap();
    let status = res.status().as_u16();
    let ct = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, ct, res.text().await.unwrap())
}

#[tokio::test]
async fn exports_stream_every_matching_exception_in_ndjson_and_csv() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let auditor = app.token("audrey", "auditor", None);
    // more than one page of rows, through the batch path
    let (store, policy, now) = (app.store.clone(), app.policy.clone(), app.now());
    let seeded = tokio::task::spawn_blocking(move || leeway_api::seed::run(&store, &policy, now, 620, 1000, 7, |_| {}))
        .await
        .unwrap()
        .unwrap();
    let mine = app
        .create(
            &cast,
            json!({"assets": ["gw-1", "gw-2"], "tags": ["pci", "tls"], "submit": true,
            "external_refs": [{"system": "servicenow", "id": "RITM0000042"}]}),
        )
        .await;

    let (status, ct, body) = export(&app, "format=ndjson", &auditor).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ct, "application/x-ndjson");
    let lines: Vec<Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len() as u64, seeded.exceptions + 1, "every exception, across pages");
    let mut ids: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), lines.len(), "none twice");
    assert_eq!(lines.last().unwrap()["id"], mine.as_str(), "in the list's order");

    // the list's filters apply
    let (_, _, body) = export(&app, "format=csv&asset=gw-1&status=submitted", &auditor).await;
    let mut csv = csv::Reader::from_reader(body.as_bytes());
    let header: Vec<String> = csv.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(header[..5], ["title", "category", "policy_id", "control_ids", "assets"]);
    assert!(header.contains(&"control_5_effectiveness".to_owned()) && header.last().unwrap() == "created_at");
    let rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1);
    let col = |name: &str| rows[0].get(header.iter().position(|h| h == name).unwrap()).unwrap().to_owned();
    assert_eq!(col("assets"), "gw-1;gw-2");
    assert_eq!(col("tags"), "pci;tls");
    assert_eq!((col("external_system"), col("external_id")), ("servicenow".to_owned(), "RITM0000042".to_owned()));
    assert_eq!(col("control_1_description"), "IP allow-list to the vendor's range");
    assert_eq!(col("control_2_kind"), "detective");
    assert_eq!(col("control_3_description"), "");
    assert_eq!(col("status"), "submitted");
    assert!(col("justification").contains("Q3 upgrade"));

    assert_eq!(export(&app, "format=ndjson", &cast.requester).await.0, 403);
    assert_eq!(export(&app, "", &auditor).await.0, 400);
    assert_eq!(export(&app, "format=xml", &auditor).await.0, 400);
    assert_eq!(export(&app, "format=csv&limit=10", &auditor).await.0, 400);
    assert_eq!(export(&app, "format=csv&colour=red", &auditor).await.0, 400);
    assert_eq!(export(&app, "format=csv&sort=-updated_at", &auditor).await.0, 400, "only creation order is stable");
    assert_eq!(export(&app, "format=csv&sort=-created_at", &auditor).await.0, 200);
}

fn poam_validator() -> jsonschema::Validator {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/oscal/oscal_poam_schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::options().should_validate_formats(true).build(&schema).unwrap()
}

fn schema_errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

#[tokio::test]
async fn the_oscal_export_is_a_poam_valid_against_nists_schema() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let auditor = app.token("audrey", "auditor", None);
    let approved = app
        .approved(&cast, json!({"remediation_plan": "Replace the appliance", "remediation_due": "2027-05-31", "control_ids": ["OSCAL-1"]}))
        .await;
    let requested = app.create(&cast, json!({"submit": true, "control_ids": ["OSCAL-1"]})).await;
    let ended = app.pending(&cast, json!({"control_ids": ["OSCAL-1"]})).await;
    assert_eq!(app.act(&ended, "reject", &cast.officer).await.status, 200);
    let validator = poam_validator();

    let (status, ct, body) = export(&app, "format=oscal&control_id=OSCAL-1", &auditor).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ct, "application/json");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(schema_errors(&validator, &doc), Vec::<String>::new(), "valid OSCAL 1.1.3");
    let poam = &doc["plan-of-action-and-milestones"];
    assert_eq!(poam["metadata"]["oscal-version"], "1.1.3");
    let risks = poam["risks"].as_array().unwrap();
    let items = poam["poam-items"].as_array().unwrap();
    assert_eq!((risks.len(), items.len()), (3, 3));
    let mut keys = Vec::new();
    for id in [&approved, &requested, &ended] {
        keys.push(app.get(&format!("/v1/exceptions/{id}"), &auditor).await.str("key"));
    }
    let risk_of = |key: &str| {
        risks
            .iter()
            .find(|r| r["props"].as_array().unwrap().iter().any(|p| p["name"] == "exception-key" && p["value"] == key))
            .unwrap()
            .clone()
    };
    let a = risk_of(&keys[0]);
    assert_eq!(a["status"], "deviation-approved");
    let facets: Vec<(&str, &str)> = a["characterizations"][0]["facets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap(), f["value"].as_str().unwrap()))
        .collect();
    assert!(facets.contains(&("likelihood", "low")) && facets.contains(&("impact", "low")), "{facets:?}");
    assert_eq!(a["mitigating-factors"].as_array().unwrap().len(), 2, "the compensating controls");
    let e = app.get(&format!("/v1/exceptions/{approved}"), &auditor).await;
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(a["deadline"].as_str().unwrap()).unwrap(),
        chrono::DateTime::parse_from_rfc3339(&e.str("expires_at")).unwrap(),
        "the deadline is the expiry"
    );
    let log: Vec<&str> =
        a["risk-log"]["entries"].as_array().unwrap().iter().map(|x| x["status-change"].as_str().unwrap()).collect();
    assert_eq!(log.first(), Some(&"deviation-requested"));
    assert_eq!(log.last(), Some(&"deviation-approved"), "its status changes: {log:?}");
    assert_eq!(a["remediations"][0]["description"], "Replace the appliance");
    assert_eq!(risk_of(&keys[1])["status"], "deviation-requested");
    assert_eq!(risk_of(&keys[2])["status"], "closed");
    // every item points at a risk of the document
    for item in items {
        let target = item["related-risks"][0]["risk-uuid"].as_str().unwrap();
        assert!(risks.iter().any(|r| r["uuid"] == target), "{item}");
    }
    // the same exception keeps its UUIDs from one export to the next
    let (_, _, again) = export(&app, "format=oscal&control_id=OSCAL-1", &auditor).await;
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["plan-of-action-and-milestones"]["risks"][0]["uuid"], risks[0]["uuid"]);

    // the schema does catch a broken document: OSCAL wants version 4 or 5 UUIDs, and a
    // risk's statement
    let mut broken = doc.clone();
    broken["plan-of-action-and-milestones"]["risks"][0]["uuid"] = json!(approved);
    assert_eq!(schema_errors(&validator, &broken).len(), 1, "an exception's own v7 id is no OSCAL UUID");
    let mut broken = doc.clone();
    broken["plan-of-action-and-milestones"]["risks"][1].as_object_mut().unwrap().remove("statement");
    assert_eq!(schema_errors(&validator, &broken).len(), 1);

    // nothing matched: still a valid document, with the one item OSCAL requires
    let (status, _, body) = export(&app, "format=oscal&control_id=NOTHING-HAS-THIS", &auditor).await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(schema_errors(&validator, &doc), Vec::<String>::new());
    assert!(doc["plan-of-action-and-milestones"].get("risks").is_none());
    assert_eq!(doc["plan-of-action-and-milestones"]["poam-items"].as_array().unwrap().len(), 1);
}
