//! Every JWT refusal answers 401 problem+json; roles and business unit come from claims.

use chrono::{Duration, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use leeway_e2e::*;
use serde_json::json;

fn sign(alg: Algorithm, claims: &serde_json::Value, secret: &str) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

fn claims(app: &TestApp) -> serde_json::Value {
    let now = app.now().timestamp();
    json!({"sub": "alice", "roles": ["requester"], "exp": now + 600, "nbf": now - 10})
}

async fn refused(app: &TestApp, token: &str, why: &str) {
    let r = app.get("/v1/me", token).await;
    assert_eq!(r.status, 401, "{why}: {}", r.body);
    assert_eq!(r.header("content-type").as_deref(), Some("application/problem+json"), "{why}");
    assert_eq!(r.str("code"), "unauthorized", "{why}");
}

#[tokio::test]
async fn each_bad_token_is_refused() {
    let app = spawn().await;
    let good = sign(Algorithm::HS256, &claims(&app), SECRET);
    assert_eq!(app.get("/v1/me", &good).await.status, 200);

    // alg none: header {"alg":"none"} and an empty signature
    use base64::Engine;
    let b64 = |v: &serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&claims(&app)));
    refused(&app, &none, "alg none").await;
    refused(&app, &sign(Algorithm::HS384, &claims(&app), SECRET), "another algorithm").await;
    refused(
        &app,
        &sign(Algorithm::HS256, &claims(&app), "another-secret-another-secret-another-secret"),
        "bad signature",
    )
    .await;
    let mut expired = claims(&app);
    expired["exp"] = json!(app.now().timestamp() - 61);
    refused(&app, &sign(Algorithm::HS256, &expired, SECRET), "expired beyond the leeway").await;
    let mut early = claims(&app);
    early["nbf"] = json!(app.now().timestamp() + 120);
    refused(&app, &sign(Algorithm::HS256, &early, SECRET), "not yet valid").await;
    let mut no_exp = claims(&app);
    no_exp.as_object_mut().unwrap().remove("exp");
    refused(&app, &sign(Algorithm::HS256, &no_exp, SECRET), "no exp").await;
    refused(&app, "not-a-jwt", "garbage").await;
    let r = app.send("GET", "/v1/me", None, None, &[]).await;
    assert_eq!((r.status, r.header("www-authenticate").as_deref()), (401, Some("Bearer")));
    let r = app.send("GET", "/v1/me", None, None, &[("authorization", &format!("Basic {good}"))]).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn expiry_has_sixty_seconds_of_leeway_on_the_servers_clock() {
    let app = spawn().await;
    let mut c = claims(&app);
    c["exp"] = json!(app.now().timestamp() - 30);
    let token = sign(Algorithm::HS256, &c, SECRET);
    assert_eq!(app.get("/v1/me", &token).await.status, 200, "within the leeway");
    app.clock.advance(Duration::seconds(40));
    refused(&app, &token, "past the leeway").await;
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let app = spawn_with(Options {
        issuer: Some("https://idp.example".into()),
        audience: Some("leeway".into()),
        ..Options::default()
    })
    .await;
    let mut c = claims(&app);
    refused(&app, &sign(Algorithm::HS256, &c, SECRET), "no iss or aud").await;
    c["iss"] = json!("https://idp.example");
    c["aud"] = json!("someone-else");
    refused(&app, &sign(Algorithm::HS256, &c, SECRET), "wrong aud").await;
    c["aud"] = json!("leeway");
    c["iss"] = json!("https://evil.example");
    refused(&app, &sign(Algorithm::HS256, &c, SECRET), "wrong iss").await;
    c["iss"] = json!("https://idp.example");
    assert_eq!(app.get("/v1/me", &sign(Algorithm::HS256, &c, SECRET)).await.status, 200);
}

#[tokio::test]
async fn me_shows_resolved_roles_and_unknown_roles_are_dropped() {
    let app = spawn().await;
    let now = Utc::now().timestamp();
    let t = sign(
        Algorithm::HS256,
        &json!({"sub": "zoe", "roles": ["analyst", "wizard"], "business_unit": "ops", "exp": now + 60}),
        SECRET,
    );
    let r = app.get("/v1/me", &t).await;
    assert_eq!(r.body, json!({"subject": "zoe", "roles": ["analyst"], "business_unit": "ops", "restricted": false}));
    let p = app.get("/v1/policy", &t).await;
    assert_eq!(p.body["levels"][3]["approvals"], json!(["security_officer", "ciso", "compliance"]));
    assert_eq!(p.body["levels"][1]["max_duration_days"], 180);
}
