//! Identity providers: RS256 and ES256 tokens checked against a JWKS served on 127.0.0.1,
//! roles mapped from the provider's groups, key rotation without a restart, throttled
//! refetches, a provider that goes down, and the HS256 secret's own rotation.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use leeway_api::jwks::JwksConfig;
use leeway_e2e::*;
use serde_json::{Value, json};

const ISSUER: &str = "https://idp.example/realms/sec";
const AUDIENCE: &str = "leeway";

fn jwk(name: &str) -> Value {
    let text = match name {
        "rsa-a" => include_str!("../../fixtures/jwks/rsa-a.jwk.json"),
        "rsa-b" => include_str!("../../fixtures/jwks/rsa-b.jwk.json"),
        "ec-a" => include_str!("../../fixtures/jwks/ec-a.jwk.json"),
        _ => panic!("no key {name}"),
    };
    serde_json::from_str(text).unwrap()
}

fn private(name: &str) -> EncodingKey {
    match name {
        "rsa-a" => EncodingKey::from_rsa_pem(include_bytes!("../../fixtures/jwks/rsa-a.pem")),
        "rsa-b" => EncodingKey::from_rsa_pem(include_bytes!("../../fixtures/jwks/rsa-b.pem")),
        "rsa-stranger" => EncodingKey::from_rsa_pem(include_bytes!("../../fixtures/jwks/rsa-stranger.pem")),
        "ec-a" => EncodingKey::from_ec_pem(include_bytes!("../../fixtures/jwks/ec-a.pem")),
        _ => panic!("no key {name}"),
    }
    .unwrap()
}

/// A Keycloak-style access token: groups under `realm_access.roles`.
fn claims(app: &TestApp, groups: &[&str]) -> Value {
    let now = app.now().timestamp();
    json!({
        "sub": "kc-7f3a", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600, "iat": now,
        "realm_access": {"roles": groups},
    })
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &str, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &private(key)).unwrap()
}

/// The RS/HS confusion: an HS256 token whose HMAC secret is the RSA public key `rsa-a`.
fn signed_with_public_key(claims: &Value) -> String {
    let public = include_bytes!("../../fixtures/jwks/rsa-a.pub.pem");
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-a".to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(public)).unwrap()
}

async fn idp_app(keys: &KeyServer, min_refresh: u64, ttl: u64, no_secret: bool) -> TestApp {
    spawn_with(Options {
        jwks: Some(JwksConfig {
            url: keys.url.clone(),
            min_refresh: Duration::from_secs(min_refresh),
            ttl: Duration::from_secs(ttl),
        }),
        issuer: Some(ISSUER.to_owned()),
        audience: Some(AUDIENCE.to_owned()),
        roles_claim: Some("realm_access.roles"),
        role_map: Some("grp-sec-officers=security_officer,grp-audit=auditor,grp-audit=compliance"),
        no_secret,
        ..Options::default()
    })
    .await
}

async fn me(app: &TestApp, token: &str) -> Resp {
    app.get("/v1/me", token).await
}

async fn refused(app: &TestApp, token: &str, why: &str) {
    let r = me(app, token).await;
    assert_eq!(r.status, 401, "{why}: {}", r.body);
    assert_eq!(r.str("code"), "unauthorized", "{why}");
}

#[tokio::test]
async fn rs256_and_es256_tokens_of_the_identity_provider_are_accepted_with_mapped_roles() {
    let keys = KeyServer::start(&[jwk("rsa-a"), jwk("ec-a")]).await;
    let app = idp_app(&keys, 300, 3600, true).await;

    // unmapped groups, and Leeway role names the map does not list, give nothing
    let rs = sign(Algorithm::RS256, Some("rsa-a"), "rsa-a", &claims(&app, &["grp-sec-officers", "grp-x", "admin"]));
    let r = me(&app, &rs).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["subject"], "kc-7f3a");
    assert_eq!(r.body["roles"], json!(["security_officer"]));

    // one group may map to several roles
    let es = sign(Algorithm::ES256, Some("ec-a"), "ec-a", &claims(&app, &["grp-audit"]));
    let r = me(&app, &es).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["roles"], json!(["auditor", "compliance"]));
    assert_eq!(keys.fetches(), 1, "both keys came from the one fetch at start");
}

#[tokio::test]
async fn tokens_the_key_set_does_not_vouch_for_are_refused() {
    let keys = KeyServer::start(&[jwk("rsa-a"), jwk("ec-a")]).await;
    let app = idp_app(&keys, 300, 3600, true).await;
    let good = claims(&app, &["grp-sec-officers"]);
    assert_eq!(me(&app, &sign(Algorithm::RS256, Some("rsa-a"), "rsa-a", &good)).await.status, 200);

    refused(&app, &sign(Algorithm::RS256, Some("rsa-stranger"), "rsa-stranger", &good), "a key not in the set").await;
    refused(&app, &sign(Algorithm::RS256, Some("rsa-a"), "rsa-stranger", &good), "another key under a known kid").await;
    refused(&app, &sign(Algorithm::RS256, None, "rsa-a", &good), "no kid").await;
    refused(&app, &sign(Algorithm::PS256, Some("rsa-a"), "rsa-a", &good), "an algorithm not bound to the key").await;
    // the classic confusion: HS256 with the RSA public key as the HMAC secret
    refused(&app, &signed_with_public_key(&good), "HS256 signed with the public key").await;
    // no LEEWAY_JWT_SECRET: Leeway's own HS256 tokens are refused in JWKS mode
    let r = me(&app, &app.token("alice", "admin", None)).await;
    assert_eq!(r.status, 401);
    assert!(r.str("detail").contains("HS256"), "{}", r.body);
    // iss and aud are required and must match
    for (claim, value) in [("aud", Value::Null), ("aud", json!("other")), ("iss", Value::Null), ("iss", json!("x"))] {
        let mut c = good.clone();
        if value.is_null() {
            c.as_object_mut().unwrap().remove(claim);
        } else {
            c[claim] = value.clone();
        }
        refused(&app, &sign(Algorithm::RS256, Some("rsa-a"), "rsa-a", &c), &format!("{claim} = {value}")).await;
    }
}

#[tokio::test]
async fn a_rotated_key_set_is_picked_up_without_a_restart() {
    let keys = KeyServer::start(&[jwk("rsa-a")]).await;
    let app = idp_app(&keys, 1, 3600, true).await;
    let c = claims(&app, &["grp-sec-officers"]);
    let old = sign(Algorithm::RS256, Some("rsa-a"), "rsa-a", &c);
    let new = sign(Algorithm::RS256, Some("rsa-b"), "rsa-b", &c);
    assert_eq!(me(&app, &old).await.status, 200);
    refused(&app, &new, "a kid the provider does not publish yet").await;

    // the provider rolls its keys: the new one appears and the old one goes; once the
    // minimum interval (1 s) has passed, the unknown kid makes Leeway fetch again
    keys.serve(&[jwk("rsa-b")]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = me(&app, &new).await;
    assert_eq!(r.status, 200, "the unknown kid made Leeway fetch again: {}", r.body);
    refused(&app, &old, "the retired key").await;
}

#[tokio::test]
async fn unknown_kids_refetch_at_most_once_per_minimum_interval() {
    let keys = KeyServer::start(&[jwk("rsa-a")]).await;
    let app = idp_app(&keys, 300, 3600, true).await;
    let c = claims(&app, &["grp-sec-officers"]);
    assert_eq!(me(&app, &sign(Algorithm::RS256, Some("rsa-a"), "rsa-a", &c)).await.status, 200);
    keys.serve(&[jwk("rsa-a"), jwk("rsa-b")]);
    let new = sign(Algorithm::RS256, Some("rsa-b"), "rsa-b", &c);
    for _ in 0..5 {
        refused(&app, &new, "the set was fetched less than 300 s ago").await;
    }
    assert_eq!(keys.fetches(), 1, "tokens with unknown kids do not hammer the provider");
}

#[tokio::test]
async fn a_provider_that_goes_down_leaves_the_last_good_keys_in_use() {
    let keys = KeyServer::start(&[jwk("rsa-a")]).await;
    let app = idp_app(&keys, 1, 1, true).await;
    let token = sign(Algorithm::RS256, Some("rsa-a"), "rsa-a", &claims(&app, &["grp-sec-officers"]));
    assert_eq!(me(&app, &token).await.status, 200);
    keys.go_down();
    let before = keys.fetches();
    // the time to live (1 s) passes: Leeway fetches again, fails, and keeps what it had
    let started = std::time::Instant::now();
    while keys.fetches() < before + 2 {
        assert!(started.elapsed() < Duration::from_secs(10), "no refetch after the time to live");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = me(&app, &token).await;
    assert_eq!(r.status, 200, "cached keys still serve: {}", r.body);
    // a kid it never had is refused after one failed fetch, not hung
    let unknown = sign(Algorithm::RS256, Some("rsa-b"), "rsa-b", &claims(&app, &["grp-sec-officers"]));
    refused(&app, &unknown, "unknown kid while the provider is down").await;
}

#[tokio::test]
async fn with_a_secret_set_too_leeway_tokens_keep_working_beside_the_providers() {
    let keys = KeyServer::start(&[jwk("rsa-a")]).await;
    let app = idp_app(&keys, 300, 3600, false).await;
    // Leeway's own tokens carry Leeway role names; the provider's map is not applied to them
    let r = me(&app, &app.token("svc-import", "integration", None)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["roles"], json!(["integration"]));
    let rs = sign(Algorithm::RS256, Some("rsa-a"), "rsa-a", &claims(&app, &["grp-audit"]));
    assert_eq!(me(&app, &rs).await.body["roles"], json!(["auditor", "compliance"]));
    // with a secret to check HS256 against, the public key still is not one
    let confused = signed_with_public_key(&claims(&app, &["grp-audit"]));
    refused(&app, &confused, "HS256 signed with the public key, a secret configured").await;
}

#[tokio::test]
async fn many_requests_with_unknown_kids_at_once_cause_one_fetch() {
    let keys = KeyServer::start(&[jwk("rsa-a")]).await;
    let app = idp_app(&keys, 1, 3600, true).await;
    let c = claims(&app, &["grp-sec-officers"]);
    assert_eq!(me(&app, &sign(Algorithm::RS256, Some("rsa-a"), "rsa-a", &c)).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    keys.serve(&[jwk("rsa-a"), jwk("rsa-b")]);
    let new = sign(Algorithm::RS256, Some("rsa-b"), "rsa-b", &c);
    let answers = futures_util::future::join_all((0..12).map(|_| me(&app, &new))).await;
    assert_eq!(keys.fetches(), 2, "the start's fetch and one more, however many asked");
    // those that waited for the fetch got in; none was let in by a key it did not have
    assert!(answers.iter().all(|r| r.status == 200 || r.status == 401));
    assert!(answers.iter().any(|r| r.status == 200));
    assert_eq!(me(&app, &new).await.status, 200);
}

#[tokio::test]
async fn a_node_is_not_ready_until_the_first_key_set_arrives() {
    let keys = KeyServer::start(&[jwk("rsa-a")]).await;
    keys.go_down();
    let app = idp_app(&keys, 300, 3600, true).await;
    let ready = || async { app.client.get(format!("{}/readyz", app.base)).send().await.unwrap().status().as_u16() };
    // the first fetch fails: not ready, and provider tokens cannot be checked
    let started = std::time::Instant::now();
    while keys.fetches() == 0 {
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ready().await, 503);
    // the provider comes back: the failed fetch is retried soon, not after the time to live
    keys.serve(&[jwk("rsa-a")]);
    while ready().await != 200 {
        assert!(started.elapsed() < Duration::from_secs(10), "never ready after the provider came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = sign(Algorithm::RS256, Some("rsa-a"), "rsa-a", &claims(&app, &["grp-sec-officers"]));
    assert_eq!(me(&app, &token).await.status, 200);
}

#[tokio::test]
async fn a_retired_secret_is_accepted_while_its_tokens_run_out() {
    const NEW: &str = "the-new-secret-the-new-secret-the-new-secret-0001";
    let app = spawn_with(Options { previous_secret: Some(NEW), ..Options::default() }).await;
    // the harness's secret plays the current one; NEW here plays the retired one
    let now = app.now().timestamp();
    let c = json!({"sub": "alice", "roles": ["requester"], "exp": now + 600});
    let retired = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &c, &EncodingKey::from_secret(NEW.as_bytes()));
    assert_eq!(me(&app, &retired.unwrap()).await.status, 200);
    assert_eq!(me(&app, &app.token("alice", "requester", None)).await.status, 200);
    let other = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &c,
        &EncodingKey::from_secret(b"neither-secret-neither-secret-neither-secret-00"),
    );
    refused(&app, &other.unwrap(), "a third secret").await;
}
