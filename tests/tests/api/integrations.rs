//! Integrations against real HTTP receivers on 127.0.0.1: signed webhooks delivered in order
//! per exception, retried and disabled as the standard says; the change feed; upsert by
//! external reference; coverage now and as it stood.

use base64::Engine;
use chrono::Duration;
use hmac::{Hmac, Mac};
use leeway_e2e::*;
use serde_json::{Value, json};
use sha2::Sha256;

/// Verifies a Standard Webhooks signature with a plain HMAC-SHA256, independent of the
/// `standardwebhooks` crate the server signs with.
fn signature_valid(secret: &str, r: &Received) -> bool {
    let key = base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", r.header("webhook-id"), r.header("webhook-timestamp"), r.body).as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    r.header("webhook-signature").split(' ').any(|s| s == format!("v1,{expected}"))
}

fn admin(app: &TestApp) -> String {
    app.token("ivan", "admin", None)
}

async fn subscribe(app: &TestApp, url: &str, types: Option<Value>) -> (String, String) {
    let mut body = json!({"url": url, "description": "test receiver"});
    if let Some(t) = types {
        body["event_types"] = t;
    }
    let r = app.post("/v1/webhooks", &admin(app), body).await;
    assert_eq!(r.status, 201, "subscribe: {}", r.body);
    (r.str("id"), r.str("secret"))
}

async fn deliveries(app: &TestApp, webhook: &str) -> Vec<Value> {
    let r = app.get(&format!("/v1/webhooks/{webhook}/deliveries"), &admin(app)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn events_reach_the_receiver_signed_in_order_with_the_exception_as_it_was() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let receiver = Receiver::start().await;
    let (webhook, secret) = subscribe(&app, &receiver.url, None).await;
    assert!(secret.starts_with("whsec_") && secret.len() >= 6 + 32, "{secret}");
    let got = app.get(&format!("/v1/webhooks/{webhook}"), &admin(&app)).await;
    assert_eq!(got.status, 200);
    assert!(got.body.get("secret").is_none(), "the secret is never shown on GET");

    let id = app.create(&cast, json!({})).await;
    assert_eq!(app.act(&id, "submit", &cast.requester).await.status, 200);
    app.deliver().await;

    let received = receiver.received();
    let types: Vec<String> = received.iter().map(|r| r.json()["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(types, ["exception.created", "exception.submitted"]);
    for r in &received {
        assert!(signature_valid(&secret, r), "signature of {}", r.body);
        assert_eq!(r.header("content-type"), "application/json");
        assert!(r.header("webhook-timestamp").parse::<i64>().is_ok());
    }
    // data is the exception as an auditor read it at that event
    let (created, submitted) = (received[0].json(), received[1].json());
    assert_eq!(created["data"]["id"], id.as_str());
    assert_eq!(created["data"]["status"], "draft");
    assert_eq!(submitted["data"]["status"], "submitted");
    assert!(created["data"]["event_seq"].as_i64().unwrap() < submitted["data"]["event_seq"].as_i64().unwrap());
    assert!(created["timestamp"].as_str().unwrap().ends_with('Z'));

    // the webhook-id is the event's stable id, the one the feed shows
    let feed = app.get("/v1/events", &cast.analyst).await;
    assert_eq!(feed.status, 200, "{}", feed.body);
    let items = feed.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"].as_str().unwrap(), received[0].header("webhook-id"));
    assert_eq!(items[0]["data"], created["data"], "the feed's data is the webhook's data");
    assert_eq!(items[1]["exception_key"], submitted["data"]["key"]);

    let log = deliveries(&app, &webhook).await;
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|d| d["status"] == "succeeded" && d["attempts"].as_array().unwrap().len() == 1));
    assert_eq!(log[0]["attempts"][0]["response_status"], 200);
}

#[tokio::test]
async fn a_failing_receiver_is_retried_on_schedule_and_holds_back_later_events() {
    let policy = leeway_domain::ApprovalPolicy {
        webhook_retry_schedule_seconds: vec![10, 20],
        ..leeway_domain::ApprovalPolicy::default()
    };
    let app = spawn_with(Options { policy: Some(policy), ..Options::default() }).await;
    let cast = Cast::new(&app);
    let receiver = Receiver::start().await;
    let (webhook, secret) = subscribe(&app, &receiver.url, None).await;
    receiver.answer_next(&[500, 503]);

    let id = app.create(&cast, json!({})).await;
    assert_eq!(app.act(&id, "submit", &cast.requester).await.status, 200);
    app.deliver().await;
    // the first event failed; the second waits behind it, however often the worker runs
    app.deliver().await;
    assert_eq!(receiver.received().len(), 1);
    let log = deliveries(&app, &webhook).await;
    assert_eq!(log[0]["status"], "pending");
    assert_eq!(log[0]["attempts"][0]["response_status"], 500);
    assert!(log[0]["attempts"][0]["error"].as_str().unwrap().contains("answered 500"), "the answer is logged");
    assert_eq!(log[1]["attempts"].as_array().unwrap().len(), 0);

    app.clock.advance(Duration::seconds(9));
    app.deliver().await;
    assert_eq!(receiver.received().len(), 1, "not before its time");
    app.clock.advance(Duration::seconds(2));
    app.deliver().await; // 503
    app.clock.advance(Duration::seconds(21));
    app.deliver().await; // 200, then the next event goes
    let received = receiver.received();
    let seen: Vec<(String, u16)> =
        received.iter().map(|r| (r.json()["type"].as_str().unwrap().to_owned(), r.answered)).collect();
    assert_eq!(
        seen,
        [
            ("exception.created".to_owned(), 500),
            ("exception.created".to_owned(), 503),
            ("exception.created".to_owned(), 200),
            ("exception.submitted".to_owned(), 200),
        ]
    );
    // every attempt carries the same webhook-id, each signed afresh
    assert!(received[..3].iter().all(|r| r.header("webhook-id") == received[0].header("webhook-id")));
    assert!(received.iter().all(|r| signature_valid(&secret, r)));
    let log = deliveries(&app, &webhook).await;
    let statuses: Vec<Value> =
        log[0]["attempts"].as_array().unwrap().iter().map(|a| a["response_status"].clone()).collect();
    assert_eq!(statuses, [json!(500), json!(503), json!(200)]);
    assert_eq!(log[0]["status"], "succeeded");
}

#[tokio::test]
async fn after_the_last_retry_a_delivery_fails_the_next_goes_and_a_retry_sends_it_again() {
    let policy = leeway_domain::ApprovalPolicy {
        webhook_retry_schedule_seconds: vec![1],
        ..leeway_domain::ApprovalPolicy::default()
    };
    let app = spawn_with(Options { policy: Some(policy), ..Options::default() }).await;
    let cast = Cast::new(&app);
    let receiver = Receiver::start().await;
    let (webhook, _) = subscribe(&app, &receiver.url, None).await;
    receiver.answer_next(&[500, 500]);
    let id = app.create(&cast, json!({})).await;
    assert_eq!(app.act(&id, "submit", &cast.requester).await.status, 200);
    app.deliver().await;
    app.clock.advance(Duration::seconds(2));
    app.deliver().await;
    let log = deliveries(&app, &webhook).await;
    assert_eq!(log[0]["status"], "failed", "{log:?}");
    assert_eq!(log[1]["status"], "succeeded", "the next event went once the first was given up");
    let failed = app.get(&format!("/v1/webhooks/{webhook}/deliveries?status=failed"), &admin(&app)).await;
    assert_eq!(failed.body["items"].as_array().unwrap().len(), 1);

    let delivery = log[0]["id"].as_str().unwrap();
    let again = app.post(&format!("/v1/webhooks/{webhook}/deliveries/{delivery}/retry"), &admin(&app), json!({})).await;
    assert_eq!(again.status, 202, "{}", again.body);
    app.deliver().await;
    let log = deliveries(&app, &webhook).await;
    assert_eq!(log[0]["status"], "succeeded");
    assert_eq!(log[0]["attempts"].as_array().unwrap().len(), 3);
    let twice = app.post(&format!("/v1/webhooks/{webhook}/deliveries/{delivery}/retry"), &admin(&app), json!({})).await;
    assert_eq!(twice.status, 409);
    assert_eq!(twice.str("code"), "delivery_not_failed");
}

#[tokio::test]
async fn a_410_disables_the_subscription() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let receiver = Receiver::start().await;
    let (webhook, _) = subscribe(&app, &receiver.url, Some(json!(["exception.created"]))).await;
    receiver.answer_next(&[410]);
    app.create(&cast, json!({})).await;
    app.deliver().await;
    let w = app.get(&format!("/v1/webhooks/{webhook}"), &admin(&app)).await;
    assert_eq!(w.body["enabled"], false);
    assert_eq!(w.body["disabled_reason"], "gone");
    assert_eq!(deliveries(&app, &webhook).await[0]["status"], "failed");
    // disabled: nothing more is made or sent
    app.create(&cast, json!({})).await;
    app.deliver().await;
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(deliveries(&app, &webhook).await.len(), 1);
    // enabled again: new events flow
    let r = app
        .send("PATCH", &format!("/v1/webhooks/{webhook}"), Some(&admin(&app)), Some(&json!({"enabled": true})), &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["disabled_reason"], Value::Null);
    app.create(&cast, json!({})).await;
    app.deliver().await;
    assert_eq!(receiver.received().len(), 2);
}

#[tokio::test]
async fn the_worker_inside_serve_delivers_within_two_seconds() {
    let app = spawn_with(Options { deliver_every_ms: 100, ..Options::default() }).await;
    let cast = Cast::new(&app);
    let receiver = Receiver::start().await;
    subscribe(&app, &receiver.url, None).await;
    app.create(&cast, json!({})).await;
    let started = std::time::Instant::now();
    while receiver.received().is_empty() {
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "no delivery within 2 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn subscriptions_belong_to_admin_or_their_integration_and_rotate_secrets() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let receiver = Receiver::start().await;
    let integration = app.token("snow", "integration", None);
    let other = app.token("jira", "integration", None);
    let r = app.post("/v1/webhooks", &cast.analyst, json!({"url": receiver.url})).await;
    assert_eq!(r.status, 403);
    let r = app
        .post("/v1/webhooks", &integration, json!({"url": receiver.url, "event_types": ["exception.approved"]}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let (id, first) = (r.str("id"), r.str("secret"));
    assert_eq!(r.header("location").unwrap(), format!("/v1/webhooks/{id}"));
    assert_eq!(app.get(&format!("/v1/webhooks/{id}"), &other).await.status, 404, "another integration's");
    assert_eq!(app.get("/v1/webhooks", &other).await.body["items"], json!([]));
    assert_eq!(app.get("/v1/webhooks", &admin(&app)).await.body["items"].as_array().unwrap().len(), 1);
    let rotated = app.post(&format!("/v1/webhooks/{id}/secret"), &integration, json!({})).await;
    assert_eq!(rotated.status, 200);
    assert!(rotated.str("secret").starts_with("whsec_") && rotated.str("secret") != first);
    let bad =
        app.post("/v1/webhooks", &integration, json!({"url": receiver.url, "event_types": ["exception.nope"]})).await;
    assert_eq!(bad.status, 422);
    assert_eq!(bad.fields(), ["event_types[0]"]);
    let gone = app.send("DELETE", &format!("/v1/webhooks/{id}"), Some(&integration), None, &[]).await;
    assert_eq!(gone.status, 204);
    assert_eq!(app.get(&format!("/v1/webhooks/{id}"), &integration).await.status, 404);
}

#[tokio::test]
async fn webhook_urls_that_reach_private_addresses_are_refused() {
    let app = spawn_with(Options { block_private_webhooks: true, ..Options::default() }).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:192.168.0.1]/hook",
        "ftp://example.com/hook",
        "https://user:pw@example.com/hook",
    ] {
        let r = app.post("/v1/webhooks", &admin(&app), json!({"url": url})).await;
        assert_eq!(r.status, 422, "{url}: {}", r.body);
        assert_eq!(r.str("code"), "webhook_url_refused", "{url}");
    }
}

#[tokio::test]
async fn the_feed_pages_every_event_once_for_roles_beyond_requester() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    assert_eq!(app.get("/v1/events", &cast.requester).await.status, 403);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(app.create(&cast, json!({"submit": true})).await);
    }
    app.deliver().await;
    let (mut after, mut seen) = (0_i64, Vec::new());
    loop {
        let r = app.get(&format!("/v1/events?after={after}&limit=2"), &cast.analyst).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let items = r.body["items"].as_array().unwrap().clone();
        if items.is_empty() {
            assert_eq!(r.body["next_after"], after);
            break;
        }
        for i in &items {
            assert!(i["seq"].as_i64().unwrap() > after, "in seq order");
            after = i["seq"].as_i64().unwrap();
            seen.push((i["exception_id"].as_str().unwrap().to_owned(), i["type"].as_str().unwrap().to_owned()));
        }
        assert_eq!(r.body["next_after"], after);
    }
    assert_eq!(seen.len(), 6);
    for id in &ids {
        let mine: Vec<&str> = seen.iter().filter(|(e, _)| e == id).map(|(_, t)| t.as_str()).collect();
        assert_eq!(mine, ["exception.created", "exception.submitted"]);
    }
    assert_eq!(app.get("/v1/events?after=-1", &cast.analyst).await.status, 400);
    assert_eq!(app.get("/v1/events?limit=501", &cast.analyst).await.status, 400);
    assert_eq!(app.get("/v1/events?since=1", &cast.analyst).await.status, 400);
}

/// A transaction that took its events' sequence numbers first and commits last: a reader
/// paging by position must still see its event, and every other one exactly once.
#[tokio::test]
async fn the_feed_never_skips_an_event_that_commits_late() {
    let app = spawn_with(Options { deliver_every_ms: 20, ..Options::default() }).await;
    if !app.database_url.starts_with("postgres") {
        // SQLite writers commit one after another, in the order they took their numbers
        return;
    }
    let cast = Cast::new(&app);
    let holder = app.create(&cast, json!({})).await;
    // transaction A: an event written, not committed
    let url = app.database_url.clone();
    let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let late_event = uuid::Uuid::now_v7().to_string();
    let late = late_event.clone();
    let a = std::thread::spawn(move || {
        use diesel::connection::SimpleConnection;
        use diesel::{Connection, PgConnection};
        let mut c = PgConnection::establish(&url).unwrap();
        c.batch_execute(&format!(
            "BEGIN; INSERT INTO audit_events (exception_id, action, actor_subject, actor_roles, at, to_status, \
             changes, prev_hash, hash, event_type, event_id) VALUES ('{holder}', 'updated', 'late', '[]', \
             now(), 'draft', '{{}}', 'x', 'y', 'exception.updated', '{late}')"
        ))
        .unwrap();
        ready_tx.send(()).unwrap();
        hold_rx.recv().unwrap();
        c.batch_execute("COMMIT").unwrap();
    });
    ready_rx.recv().unwrap();

    // writers, and a reader polling all the while
    let reader = async {
        let (mut after, mut seen) = (0_i64, Vec::<String>::new());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut quiet = 0;
        loop {
            let r = app.get(&format!("/v1/events?after={after}&limit=7"), &cast.analyst).await;
            let items = r.body["items"].as_array().unwrap().clone();
            for i in &items {
                after = i["seq"].as_i64().unwrap();
                seen.push(i["id"].as_str().unwrap().to_owned());
            }
            quiet = if items.is_empty() { quiet + 1 } else { 0 };
            if seen.contains(&late_event) && quiet > 20 {
                return seen;
            }
            assert!(std::time::Instant::now() < deadline, "the reader never saw every event: {} seen", seen.len());
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    let writers = async {
        let mut created = Vec::new();
        for round in 0..4 {
            let batch =
                futures_util::future::join_all((0..5).map(|_| app.create(&cast, json!({"submit": true})))).await;
            created.extend(batch);
            if round == 1 {
                // A commits after later events were written and read
                hold_tx.send(()).unwrap();
            }
        }
        created
    };
    let (seen, _) = tokio::join!(reader, writers);
    a.join().unwrap();
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "an event was read twice");
    assert!(seen.contains(&late_event), "the late event was skipped");
    let total: Vec<Count> = diesel_count(&app, "SELECT count(*) AS n FROM audit_events WHERE event_type IS NOT NULL");
    assert_eq!(i64::try_from(seen.len()).unwrap(), total[0].n, "every event, exactly once");
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

fn diesel_count(app: &TestApp, sql: &str) -> Vec<Count> {
    use diesel::{Connection, PgConnection, RunQueryDsl};
    let mut c = PgConnection::establish(&app.database_url).unwrap();
    diesel::sql_query(sql).load(&mut c).unwrap()
}

/// Two nodes' workers over one PostgreSQL, running at once: every event reaches the receiver,
/// and no attempt is sent by both.
#[tokio::test]
async fn two_workers_never_send_the_same_attempt() {
    let app = spawn().await;
    if !app.database_url.starts_with("postgres") {
        return;
    }
    let cast = Cast::new(&app);
    let receiver = Receiver::start().await;
    subscribe(&app, &receiver.url, None).await;
    let ids = futures_util::future::join_all((0..15).map(|_| app.create(&cast, json!({"submit": true})))).await;
    let node = || {
        let store = leeway_persistence::Store::connect(&app.database_url, 4).unwrap();
        leeway_api::delivery::Deliverer::new(store, app.policy.clone(), app.clock.clone(), true).unwrap()
    };
    let (a, b) = (node(), node());
    let run = |d: leeway_api::delivery::Deliverer| async move {
        let mut attempted = 0;
        for _ in 0..5 {
            attempted += d.run_once().await.unwrap().attempted;
        }
        attempted
    };
    let (by_a, by_b) = tokio::join!(run(a), run(b));
    app.deliver().await;
    let received = receiver.received();
    assert_eq!(received.len(), ids.len() * 2, "every event once (a: {by_a}, b: {by_b})");
    let mut once: Vec<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    once.sort_unstable();
    once.dedup();
    assert_eq!(once.len(), received.len(), "an attempt was sent twice");
    // and per exception in order
    for id in &ids {
        let mine: Vec<String> = received
            .iter()
            .map(Received::json)
            .filter(|b| b["data"]["id"] == id.as_str())
            .map(|b| b["type"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(mine, ["exception.created", "exception.submitted"]);
    }
}

#[tokio::test]
async fn delivery_logs_are_kept_thirty_days_and_subscriptions_are_bounded_per_owner() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let receiver = Receiver::start().await;
    let (webhook, _) = subscribe(&app, &receiver.url, None).await;
    app.create(&cast, json!({})).await;
    app.deliver().await;
    assert_eq!(deliveries(&app, &webhook).await.len(), 1);
    app.clock.advance(Duration::days(29));
    assert_eq!(app.run_scheduler().await.purged_deliveries, 0);
    app.clock.advance(Duration::days(2));
    assert_eq!(app.run_scheduler().await.purged_deliveries, 1);
    assert_eq!(deliveries(&app, &webhook).await.len(), 0);

    let hooks = app.token("many", "integration", None);
    for _ in 0..50 {
        assert_eq!(app.post("/v1/webhooks", &hooks, json!({"url": receiver.url})).await.status, 201);
    }
    let over = app.post("/v1/webhooks", &hooks, json!({"url": receiver.url})).await;
    assert_eq!(over.status, 422, "{}", over.body);
    assert_eq!(over.str("code"), "limit_exceeded");
    assert_eq!(over.body["limit"], 50);
}

/// A URL saved while private receivers were allowed, sent by a worker that refuses them: the
/// name is checked by the resolver at connection time, and an address literal before it.
#[tokio::test]
async fn a_worker_that_refuses_private_addresses_checks_each_connection() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let receiver = Receiver::start().await;
    let by_name = receiver.url.replace("127.0.0.1", "localhost");
    let (named, _) = subscribe(&app, &by_name, None).await;
    let (literal, _) = subscribe(&app, &receiver.url, None).await;
    app.create(&cast, json!({})).await;
    app.deliver().await; // numbers the event and sends it (this worker allows private receivers)
    assert_eq!(receiver.received().len(), 2, "both subscriptions got the event in one pass");
    app.create(&cast, json!({})).await;
    let strict =
        leeway_api::delivery::Deliverer::new(app.store.clone(), app.policy.clone(), app.clock.clone(), false).unwrap();
    strict.run_once().await.unwrap();
    assert_eq!(receiver.received().len(), 2, "nothing reached the private receiver");
    // a name may resolve elsewhere later: retried; an address literal never changes: failed
    for (webhook, why, status) in
        [(named, "resolves to no address a webhook may reach", "pending"), (literal, "private address", "failed")]
    {
        let log = deliveries(&app, &webhook).await;
        let error = log[1]["attempts"][0]["error"].as_str().unwrap().to_owned();
        assert!(error.contains(why), "{error}");
        assert_eq!(log[1]["status"], status);
    }
}

#[tokio::test]
async fn a_disabled_subscription_holds_its_pending_deliveries_until_enabled() {
    let policy = leeway_domain::ApprovalPolicy {
        webhook_retry_schedule_seconds: vec![10],
        ..leeway_domain::ApprovalPolicy::default()
    };
    let app = spawn_with(Options { policy: Some(policy), ..Options::default() }).await;
    let cast = Cast::new(&app);
    let receiver = Receiver::start().await;
    let (webhook, _) = subscribe(&app, &receiver.url, None).await;
    receiver.answer_next(&[500]);
    app.create(&cast, json!({})).await;
    app.deliver().await;
    let patch = |enabled: bool| {
        let (app, webhook) = (&app, webhook.clone());
        async move {
            let body = json!({"enabled": enabled});
            app.send("PATCH", &format!("/v1/webhooks/{webhook}"), Some(&admin(app)), Some(&body), &[]).await
        }
    };
    assert_eq!(patch(false).await.status, 200);
    let parked = deliveries(&app, &webhook).await;
    assert_eq!((parked[0]["status"].clone(), parked[0]["next_attempt_at"].clone()), (json!("pending"), Value::Null));
    app.clock.advance(Duration::seconds(11));
    app.deliver().await;
    assert_eq!(receiver.received().len(), 1, "nothing is sent while disabled");
    assert_eq!(patch(true).await.status, 200);
    app.deliver().await;
    assert_eq!(receiver.received().len(), 2, "sent once enabled again");
    assert_eq!(deliveries(&app, &webhook).await[0]["status"], "succeeded");
}
