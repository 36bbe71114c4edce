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
