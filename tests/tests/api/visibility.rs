//! A requester sees their own, their business unit's and those they own as risk owner;
//! anything else is 404 and never listed.

use leeway_e2e::*;
use serde_json::json;

#[tokio::test]
async fn requesters_see_only_what_concerns_them() {
    let app = spawn().await;
    let cast = Cast::new(&app);
    let id = app.create(&cast, json!({"assets": ["vpn-01"]})).await;
    let key = app.get(&format!("/v1/exceptions/{id}"), &cast.requester).await.str("key");
    let outsider = app.token("mallory", "requester", Some("marketing"));
    let colleague = app.token("paul", "requester", Some("payments"));
    let owner = app.token("erin", "requester", Some("hr"));
    for path in
        [format!("/v1/exceptions/{id}"), format!("/v1/exceptions/{key}"), format!("/v1/exceptions/{id}/history")]
    {
        let r = app.get(&path, &outsider).await;
        assert_eq!((r.status, r.str("code").as_str()), (404, "not_found"), "{path}");
    }
    let r = app.get("/v1/exceptions/00000000-0000-7000-8000-000000000000", &outsider).await;
    assert_eq!(r.status, 404, "absent and invisible look the same");
    let r = app.act(&id, "withdraw", &outsider).await;
    assert_eq!(r.status, 404, "no action on what one cannot see");
    let listed = app.get("/v1/exceptions", &outsider).await;
    assert!(listed.body["items"].as_array().unwrap().is_empty());
    let listed = app.get("/v1/exceptions?asset=vpn-01", &outsider).await;
    assert!(listed.body["items"].as_array().unwrap().is_empty());
    for (who, token) in
        [("colleague", &colleague), ("risk owner", &owner), ("auditor", &app.token("audrey", "auditor", None))]
    {
        assert_eq!(app.get(&format!("/v1/exceptions/{id}"), token).await.status, 200, "{who}");
        assert_eq!(app.get("/v1/exceptions", token).await.body["items"].as_array().unwrap().len(), 1, "{who}");
    }
    // the colleague sees it but may not act as its requester
    let r = app.act(&id, "withdraw", &colleague).await;
    assert_eq!(r.status, 403, "{}", r.body);
}
