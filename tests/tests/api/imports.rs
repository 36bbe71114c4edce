//! Bulk imports: JSON, NDJSON and CSV rows, created or upserted by external reference a
//! batch at a time, with one result per row in input order.

use leeway_e2e::*;
use serde_json::{Value, json};

/// A valid create body holding reference `sheet/R{n}`, with `overrides` on top.
fn row(n: u32, overrides: Value) -> Value {
    let mut b = exception_body(json!({"external_refs": [{"system": "sheet", "id": format!("R{n}")}]}));
    if let (Value::Object(b), Value::Object(o)) = (&mut b, overrides) {
        for (k, v) in o {
            if v.is_null() {
                b.remove(&k);
            } else {
                b.insert(k, v);
            }
        }
    }
    b
}

fn ndjson(rows: &[Value]) -> String {
    rows.iter().map(|r| format!("{r}\n")).collect()
}

fn statuses(r: &Resp) -> Vec<String> {
    r.body["results"].as_array().unwrap().iter().map(|x| x["status"].as_str().unwrap().to_owned()).collect()
}

fn fields_of(r: &Resp, i: usize) -> Vec<String> {
    r.body["results"][i]["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap().to_owned()).collect()
}

async fn count(app: &TestApp, token: &str) -> usize {
    let r = app.get("/v1/exceptions?limit=100", token).await;
    r.body["items"].as_array().unwrap().len()
}

/// The results without what only a real run assigns.
fn without_ids(r: &Resp) -> Value {
    let mut v = r.body["results"].clone();
    for x in v.as_array_mut().unwrap() {
        let x = x.as_object_mut().unwrap();
        x.remove("id");
        x.remove("key");
    }
    v
}

#[tokio::test]
async fn a_json_import_answers_every_row_in_order_and_writes_only_the_valid_ones() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let past = (app.now() - chrono::Duration::days(1)).to_rfc3339();
    let rows = json!([
        row(1, json!({})),
        row(2, json!({"justification": "short", "category": "nope"})),
        row(3, json!({"submit": true, "on_behalf_of": "alice"})),
        // refused by the domain, not the schema: a submit needs an expiry in the future
        row(4, json!({"submit": true, "expires_at": past})),
    ]);
    let r = app.import("", &cast.analyst, "application/json", rows.to_string(), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(statuses(&r), ["created", "invalid", "created", "invalid"]);
    assert_eq!(r.body["results"][1]["row"], 2);
    assert_eq!(fields_of(&r, 1), ["category", "justification"]);
    assert_eq!(fields_of(&r, 3), ["expires_at"]);
    assert_eq!(r.body["results"][3]["errors"][0]["code"], "in_past");
    assert!(r.body["results"][1].get("id").is_none());
    assert_eq!(r.body["totals"], json!({"created": 2, "updated": 0, "unchanged": 0, "invalid": 2}));
    assert_eq!(count(&app, &cast.analyst).await, 2, "invalid rows write nothing");

    // row 3 was filed for alice, submitted, and recorded as imported
    let id = r.body["results"][2]["id"].as_str().unwrap();
    let e = app.get(&format!("/v1/exceptions/{id}"), &cast.requester).await;
    assert_eq!((e.str("status"), e.str("on_behalf_of")), ("submitted".to_owned(), "alice".to_owned()));
    assert_eq!(e.str("key"), r.body["results"][2]["key"].as_str().unwrap());
    let h = app.get(&format!("/v1/exceptions/{id}/history"), &cast.analyst).await;
    let actions: Vec<&str> =
        h.body["items"].as_array().unwrap().iter().map(|x| x["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["imported", "submitted"]);
    assert_eq!(h.body["items"][0]["changes"]["import_row"], 3);
    assert_eq!(h.body["chain"]["valid"], true);

    // who may, and what the body must be
    let one = json!([row(9, json!({}))]).to_string();
    let refused = app.import("", &cast.requester, "application/json", one.clone(), &[]).await;
    assert_eq!((refused.status, refused.str("code")), (403, "forbidden".to_owned()));
    assert_eq!(
        app.import("", &app.token("root", "admin", None), "application/json", one.clone(), &[]).await.status,
        200
    );
    assert_eq!(app.import("", &cast.analyst, "text/plain", one.clone(), &[]).await.status, 415);
    let object = app.import("", &cast.analyst, "application/json", row(10, json!({})).to_string(), &[]).await;
    assert_eq!((object.status, object.fields()), (422, vec!["body".to_owned()]));
    assert_eq!(app.import("", &cast.analyst, "application/json", "[".into(), &[]).await.status, 400);
    assert_eq!(app.import("mode=merge", &cast.analyst, "application/json", one.clone(), &[]).await.status, 400);
    assert_eq!(app.import("dry_run=maybe", &cast.analyst, "application/json", one, &[]).await.status, 400);
}

#[tokio::test]
async fn a_dry_run_answers_what_the_real_run_then_does_and_writes_nothing() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    // R2 is already held: in create mode its row is refused by the database, which makes the
    // batch run again row by row
    let held = app.create(&cast, json!({"external_refs": [{"system": "sheet", "id": "R2"}]})).await;
    let body = ndjson(&[row(1, json!({})), row(2, json!({})), row(3, json!({"submit": true}))]);
    let body = format!("{body}\nnot json\n");

    let dry = app.import("dry_run=true", &cast.analyst, "application/x-ndjson", body.clone(), &[]).await;
    assert_eq!(dry.status, 200, "{}", dry.body);
    assert_eq!(dry.body["dry_run"], true);
    assert_eq!(statuses(&dry), ["created", "invalid", "created", "invalid"]);
    assert!(dry.body["results"][0].get("id").is_none(), "a dry run assigns no ids");
    assert_eq!(count(&app, &cast.analyst).await, 1, "a dry run writes nothing");

    let real = app.import("", &cast.analyst, "application/x-ndjson", body, &[]).await;
    assert_eq!(real.body["dry_run"], false);
    assert_eq!(without_ids(&real), without_ids(&dry), "the dry run told exactly what happened");
    let dup = &real.body["results"][1];
    assert_eq!(dup["errors"][0]["field"], "external_refs");
    assert_eq!(dup["errors"][0]["code"], "duplicate_external_reference");
    assert_eq!(real.body["results"][3]["row"], 5, "NDJSON rows are numbered by line");
    assert_eq!(real.body["results"][3]["errors"][0]["code"], "malformed_json");
    assert_eq!(count(&app, &cast.analyst).await, 3, "the two valid rows, once each");
    let e = app.get(&format!("/v1/exceptions/{held}"), &cast.analyst).await;
    assert_eq!(e.body["version"], 1, "the holder is untouched");
}

#[tokio::test]
async fn an_upsert_import_run_again_changes_nothing_and_a_key_replays_its_answer() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    // more than two batches, so that results cross batch boundaries in order
    let mut rows: Vec<Value> = (1..=450).map(|n| row(n, json!({}))).collect();
    rows.push(row(0, json!({"external_refs": null})));
    let first = app.import("mode=upsert", &cast.analyst, "application/json", json!(rows).to_string(), &[]).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["totals"], json!({"created": 450, "updated": 0, "unchanged": 0, "invalid": 1}));
    let numbers: Vec<u64> =
        first.body["results"].as_array().unwrap().iter().map(|x| x["row"].as_u64().unwrap()).collect();
    assert_eq!(numbers, (1..=451).collect::<Vec<u64>>());
    assert_eq!(fields_of(&first, 450), ["external_refs"], "an upsert needs a reference");

    let again = app.import("mode=upsert", &cast.analyst, "application/json", json!(rows).to_string(), &[]).await;
    assert_eq!(again.body["totals"], json!({"created": 0, "updated": 0, "unchanged": 450, "invalid": 1}));
    assert_eq!(again.body["results"][7]["id"], first.body["results"][7]["id"]);

    rows[7]["title"] = json!("Renamed in the spreadsheet");
    rows[8]["submit"] = json!(true);
    let changed = app.import("mode=upsert", &cast.analyst, "application/json", json!(rows).to_string(), &[]).await;
    assert_eq!(changed.body["totals"], json!({"created": 0, "updated": 2, "unchanged": 448, "invalid": 1}));
    let id = changed.body["results"][7]["id"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/v1/exceptions/{id}"), &cast.analyst).await.str("title"),
        "Renamed in the spreadsheet"
    );
    let id = changed.body["results"][8]["id"].as_str().unwrap();
    assert_eq!(app.get(&format!("/v1/exceptions/{id}"), &cast.analyst).await.str("status"), "submitted");
    let h = app.get(&format!("/v1/exceptions/{id}/history"), &cast.analyst).await;
    let actions: Vec<&str> =
        h.body["items"].as_array().unwrap().iter().map(|x| x["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["imported", "submitted"], "a row that changes nothing records nothing");

    // a retry under the same key replays; another request under it is refused
    let small = json!([row(1000, json!({}))]).to_string();
    let key = [("idempotency-key", "import-chunk-1")];
    let a = app.import("mode=upsert", &cast.analyst, "application/json", small.clone(), &key).await;
    let b = app.import("mode=upsert", &cast.analyst, "application/json", small.clone(), &key).await;
    assert_eq!(statuses(&a), ["created"]);
    assert_eq!(b.body, a.body, "the same answer, not `unchanged`");
    assert_eq!(b.header("idempotent-replayed").as_deref(), Some("true"));
    let other = app.import("", &cast.analyst, "application/json", small, &key).await;
    assert_eq!((other.status, other.str("code")), (422, "idempotency_key_reused".to_owned()));
}

#[tokio::test]
async fn a_csv_export_imports_again_unchanged_and_csv_errors_name_columns() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let auditor = app.token("audrey", "auditor", None);
    for n in 1..=3 {
        app.create(
            &cast,
            json!({"external_refs": [{"system": "sheet", "id": format!("R{n}")}], "tags": ["pci", "legacy"],
                   "assets": [format!("db-{n}"), "shared-gw"], "business_impact": "Card payments stop, \"all\" of them",
                   "remediation_due": "2027-06-30", "priority": "urgent", "submit": n == 2}),
        )
        .await;
    }
    let export = |app: &TestApp| {
        let (client, url, token) =
            (app.client.clone(), format!("{}/v1/exports/exceptions?format=csv", app.base), auditor.clone());
        async move { client.get(url).bearer_auth(token).send().await.unwrap().text().await.unwrap() }
    };
    // one with more than a CSV row carries: a second reference, six controls, a check interval
    let control = |n: u32| json!({"description": format!("Control {n}"), "kind": "detective", "effectiveness": "low", "check_every": 30});
    let wide = app
        .create(
            &cast,
            json!({"external_refs": [{"system": "sheet", "id": "R9"}, {"system": "jira", "id": "SEC-9"}],
                   "controls": (1..=6).map(control).collect::<Vec<_>>()}),
        )
        .await;
    let csv = export(&app).await;
    assert_eq!(csv.lines().count(), 5, "{csv}");

    // into the same database: every row is already as it says
    let same = app.import("mode=upsert", &cast.analyst, "text/csv", csv.clone(), &[]).await;
    assert_eq!(same.body["totals"], json!({"created": 0, "updated": 0, "unchanged": 4, "invalid": 0}), "{}", same.body);
    let w = app.get(&format!("/v1/exceptions/{wide}"), &cast.analyst).await;
    assert_eq!(w.body["external_refs"].as_array().unwrap().len(), 2, "the reference a CSV row lacks stays");
    assert_eq!((w.body["controls"].as_array().unwrap().len(), w.body["version"].as_u64()), (6, Some(1)));

    // into a fresh one: the same exceptions come out again
    let other = spawn().await;
    let analyst = other.token("bob", "analyst", None);
    let created = other.import("mode=upsert", &analyst, "text/csv", csv.clone(), &[]).await;
    assert_eq!(created.body["totals"]["created"], 4, "{}", created.body);
    let again = {
        let (client, url, token) = (
            other.client.clone(),
            format!("{}/v1/exports/exceptions?format=csv", other.base),
            other.token("audrey", "auditor", None),
        );
        client.get(url).bearer_auth(token).send().await.unwrap().text().await.unwrap()
    };
    let columns = |text: &str| -> Vec<Vec<String>> {
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let header: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
        let keep: Vec<usize> =
            (0..header.len()).filter(|i| !["key", "status", "created_at"].contains(&header[*i].as_str())).collect();
        r.records()
            .map(|rec| {
                let rec = rec.unwrap();
                keep.iter().map(|i| rec.get(*i).unwrap_or_default().to_owned()).collect()
            })
            .collect()
    };
    assert_eq!(columns(&again), columns(&csv), "every imported column survives the round trip");

    // errors name the CSV's columns
    let bad = "title,category,policy_id,control_ids,assets,business_unit,justification,risk_owner,external_system,external_id,control_1_description,control_1_kind\n\
               Okay title,configuration,POL-1,AC-1,h1;h2,payments,A justification long enough,erin,sheet,,WAF,sometimes\n\
               Short row,configuration\n";
    let r = app.import("", &cast.analyst, "text/csv", bad.to_owned(), &[]).await;
    assert_eq!(statuses(&r), ["invalid", "invalid"], "{}", r.body);
    assert_eq!(fields_of(&r, 0), ["control_1_effectiveness", "control_1_kind", "external_id"]);
    assert_eq!(r.body["results"][1]["errors"][0]["code"], "malformed_csv");
    let unknown = app.import("", &cast.analyst, "text/csv", "title,colour\nx,red\n".to_owned(), &[]).await;
    assert_eq!((unknown.status, unknown.fields()), (422, vec!["header[1]".to_owned()]));
}

#[tokio::test]
async fn imports_are_bounded_by_rows_and_bytes() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let rows = "{}\n".repeat(10_001);
    let r = app.import("", &cast.analyst, "application/x-ndjson", rows, &[]).await;
    assert_eq!((r.status, r.str("code")), (413, "payload_too_large".to_owned()));
    assert_eq!((r.body["max_rows"].as_u64(), r.body["max_bytes"].as_u64()), (Some(10_000), Some(16 * 1024 * 1024)));
    let array = format!("[{}{{}}]", "{},".repeat(10_000));
    let r = app.import("", &cast.analyst, "application/json", array, &[]).await;
    assert_eq!((r.status, r.body["max_rows"].as_u64()), (413, Some(10_000)), "a JSON array too");
    let huge = format!("[\"{}\"]", "x".repeat(16 * 1024 * 1024));
    assert_eq!(app.import("", &cast.analyst, "application/json", huge, &[]).await.status, 413);
    // other endpoints keep their 1 MiB
    let big = exception_body(json!({"business_impact": "x".repeat(2 * 1024 * 1024)}));
    assert_eq!(app.post("/v1/exceptions", &cast.requester, big).await.status, 413);
}

#[tokio::test]
async fn a_legacy_import_brings_exceptions_in_as_they_stood_and_holds_every_rule() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let admin = app.token("root", "admin", None);
    let now = app.now();
    let ago = |days: i64| (now - chrono::Duration::days(days)).to_rfc3339();
    let low = json!({"method": "matrix", "likelihood": 2, "impact": 2, "rationale": "Old register: low"});
    let officer = |days: i64| json!([{"role": "security_officer", "approver": "carol", "approved_at": ago(days), "comment": "ok"}]);
    let rows = json!([
        // active for a month
        row(1, json!({"status": "active", "created_at": ago(30), "risk": low, "approvals": officer(29)})),
        // approved long ago, past its expiry since: lands expired
        row(
            2,
            json!({"status": "active", "created_at": ago(200), "expires_at": ago(10), "risk": low, "approvals": officer(199)})
        ),
        row(3, json!({"status": "draft", "created_at": ago(5)})),
        row(4, json!({"status": "rejected", "created_at": ago(40), "risk": low})),
        // refused: the history does not reach the status, or breaks a rule
        row(5, json!({"status": "active", "created_at": ago(2), "risk": low})),
        row(
            6,
            json!({"status": "active", "created_at": ago(30), "risk": low,
                      "approvals": [{"role": "ciso", "approver": "dave", "approved_at": ago(29)}]})
        ),
        row(
            7,
            json!({"status": "active", "created_at": ago(400), "expires_at": ago(-30), "risk": low, "approvals": officer(399)})
        ),
        row(8, json!({"status": "sleeping", "created_at": "yesterday", "risk": {"method": "matrix"}})),
    ]);
    let r = app.import("legacy=true", &admin, "application/json", rows.to_string(), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        statuses(&r),
        ["created", "created", "created", "created", "invalid", "invalid", "invalid", "invalid"],
        "{}",
        r.body
    );
    let status_of = |i: usize| {
        let id = r.body["results"][i]["id"].as_str().unwrap().to_owned();
        let app = &app;
        let token = cast.analyst.clone();
        async move { app.get(&format!("/v1/exceptions/{id}"), &token).await }
    };
    let active = status_of(0).await;
    assert_eq!(active.str("status"), "active");
    assert_eq!(active.body["approvals"][0]["approver"], "carol");
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(&active.str("created_at")).unwrap().timestamp(),
        (now - chrono::Duration::days(30)).timestamp(),
        "the historic creation time"
    );
    assert_eq!(status_of(1).await.str("status"), "expired");
    assert_eq!(status_of(2).await.str("status"), "draft");
    assert_eq!(status_of(3).await.str("status"), "rejected");

    // one event, `imported`, by the importer, with the original values; the chain holds
    let id = r.body["results"][0]["id"].as_str().unwrap();
    let h = app.get(&format!("/v1/exceptions/{id}/history"), &cast.analyst).await;
    let items = h.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", h.body);
    assert_eq!((items[0]["action"].as_str(), items[0]["actor"]["subject"].as_str()), (Some("imported"), Some("root")));
    assert_eq!(items[0]["to_status"], "active");
    assert_eq!(items[0]["changes"]["legacy"]["approvals"][0]["approver"], "carol");
    assert_eq!(items[0]["changes"]["legacy"]["status"], "active");
    assert_eq!(h.body["chain"]["valid"], true);

    let reason = |i: usize| r.body["results"][i]["errors"].clone();
    assert_eq!(reason(4)[0]["field"], "status");
    assert!(reason(4)[0]["message"].as_str().unwrap().contains("leads to pending_approval"), "{}", reason(4));
    assert_eq!(reason(5)[0]["code"], "forbidden", "a ciso signature the low level does not need: {}", reason(5));
    assert_eq!(reason(6)[0]["code"], "duration_exceeds_policy", "low allows 365 days: {}", reason(6));
    let bad = reason(7);
    let fields: Vec<&str> = bad.as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["created_at", "risk.rationale", "status"], "{}", reason(7));

    // approved in Leeway after the import: the trail has no submit before that approval, and
    // the KPIs leave it out of the approval time rather than fail
    let waiting = json!([row(20, json!({"status": "pending_approval", "created_at": ago(2), "risk": low}))]);
    let r = app.import("legacy=true", &admin, "application/json", waiting.to_string(), &[]).await;
    let id = r.body["results"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(app.act(&id, "approve", &cast.officer).await.status, 200);
    let to = (app.now() + chrono::Duration::seconds(1)).to_rfc3339().replace('+', "%2B");
    let k = app.get(&format!("/v1/reports/kpis?to={to}"), &app.token("audrey", "auditor", None)).await;
    assert_eq!(k.status, 200, "{}", k.body);
    assert_eq!(k.body["approval_time"]["count"], 0);
    assert_eq!(k.body["top_approvers"][0]["subject"], "carol");

    // only an admin, only creating
    let one = json!([row(9, json!({"status": "draft", "created_at": ago(1)}))]).to_string();
    assert_eq!(app.import("legacy=true", &cast.analyst, "application/json", one.clone(), &[]).await.status, 403);
    assert_eq!(app.import("legacy=true&mode=upsert", &admin, "application/json", one.clone(), &[]).await.status, 400);
    // without legacy=true, the legacy members are unknown members of a create body
    let plain = app.import("", &admin, "application/json", one, &[]).await;
    assert_eq!(plain.body["results"][0]["status"], "invalid");
}

#[tokio::test]
async fn a_dry_run_sees_what_its_earlier_batches_would_write() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    // the last row repeats the first one's reference, more than a batch later
    let mut rows: Vec<Value> = (1..=250).map(|n| row(n, json!({}))).collect();
    rows.push(row(1, json!({"title": "The same reference again"})));
    let body = json!(rows).to_string();
    let dry = app.import("dry_run=true", &cast.analyst, "application/json", body.clone(), &[]).await;
    assert_eq!(dry.body["totals"], json!({"created": 250, "updated": 0, "unchanged": 0, "invalid": 1}), "{}", dry.body);
    assert_eq!(dry.body["results"][250]["errors"][0]["code"], "duplicate_external_reference");
    let real = app.import("", &cast.analyst, "application/json", body, &[]).await;
    assert_eq!(without_ids(&real), without_ids(&dry));
    // and in upsert mode the repeat updates what the first row created
    let mut again: Vec<Value> = (1001..=1250).map(|n| row(n, json!({}))).collect();
    again.push(row(1001, json!({"title": "The same reference again"})));
    let dry =
        app.import("mode=upsert&dry_run=true", &cast.analyst, "application/json", json!(again).to_string(), &[]).await;
    assert_eq!(dry.body["totals"], json!({"created": 250, "updated": 1, "unchanged": 0, "invalid": 0}), "{}", dry.body);
}
