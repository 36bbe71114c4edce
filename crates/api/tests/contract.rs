//! The committed contract (`openapi/openapi.json`) must be exactly what the code generates.
//! Regenerate with `cargo run -p leeway-api -- openapi > openapi/openapi.json`.

#[test]
fn committed_openapi_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi/openapi.json");
    let generated = leeway_api::openapi().to_pretty_json().unwrap();
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed.trim_end() == generated.trim_end(),
        "openapi/openapi.json is stale: run `cargo run -p leeway-api -- openapi > openapi/openapi.json`"
    );
}

#[test]
fn every_operation_documents_errors_and_every_v1_operation_needs_a_token() {
    let doc: serde_json::Value = serde_json::from_str(&leeway_api::openapi().to_json().unwrap()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let responses = op["responses"].as_object().unwrap();
            assert!(op["description"].is_string() || op["summary"].is_string(), "{method} {path} has no description");
            if path.starts_with("/v1") {
                assert!(responses.contains_key("401"), "{method} {path} documents no 401");
                assert_eq!(
                    op["security"][0]["bearer"],
                    serde_json::json!([]),
                    "{method} {path} is not marked as bearer-protected"
                );
                for (code, r) in responses.iter().filter(|(c, _)| c.starts_with('4')) {
                    assert!(
                        r["content"]["application/problem+json"].is_object(),
                        "{method} {path} {code} is not problem+json"
                    );
                }
            }
        }
    }
    assert_eq!(operations, 41, "a new operation must be added to this count on purpose");
}
