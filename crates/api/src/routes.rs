//! Every route, in one table, and the conventions every operation's contract states.

pub mod audit;
pub mod exceptions;
pub mod exports;
pub mod imports;
pub mod integrations;
pub mod oscal;
pub mod reports;
pub mod system;

use utoipa::openapi::header::Header;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, ResponseBuilder};
use utoipa_actix_web::scope;
use utoipa_actix_web::service_config::ServiceConfig;

/// Registers every documented route.
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(system::healthz).service(system::readyz).service(
        scope("/v1")
            .service(system::me)
            .service(system::policy)
            .service(exceptions::create_exception)
            .service(exceptions::upsert_by_ref)
            .service(exceptions::list_exceptions)
            .service(exports::export_exceptions)
            .service(imports::import_exceptions)
            .service(exceptions::get_exception)
            .service(exceptions::patch_exception)
            .service(exceptions::submit_exception)
            .service(exceptions::return_exception)
            .service(exceptions::approve_exception)
            .service(exceptions::reject_exception)
            .service(exceptions::withdraw_exception)
            .service(exceptions::revoke_exception)
            .service(exceptions::close_exception)
            .service(exceptions::assess_exception)
            .service(exceptions::add_control)
            .service(exceptions::change_control)
            .service(exceptions::exception_history)
            .service(exceptions::request_renewal)
            .service(exceptions::review_exception)
            .service(exceptions::check_control)
            .service(integrations::create_webhook)
            .service(integrations::list_webhooks)
            .service(integrations::get_webhook)
            .service(integrations::patch_webhook)
            .service(integrations::delete_webhook)
            .service(integrations::rotate_webhook_secret)
            .service(integrations::list_deliveries)
            .service(integrations::retry_delivery)
            .service(integrations::feed)
            .service(integrations::coverage)
            .service(integrations::coverage_batch)
            .service(reports::kpis)
            .service(reports::hotspots)
            .service(audit::audit_events)
            .service(audit::audit_verify)
            .service(audit::audit_package),
    );
}

/// The answers every operation may give besides its own, added to each one's contract where
/// the handler did not document them itself: a malformed or oversized body, a bad
/// `Idempotency-Key`, no token, a head too large, and the 500 that is always a bug.
pub struct Conventions;

fn problem(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content("application/problem+json", Content::new(Some(Ref::from_schema_name("Problem"))))
            .build(),
    )
}

fn document(op: &mut Operation, versioned: bool, names_an_exception: bool) {
    let has_body = op.request_body.is_some();
    let header = |name: &str| {
        op.parameters.iter().flatten().any(|p| match p {
            RefOr::T(p) => p.parameter_in == ParameterIn::Header && p.name.eq_ignore_ascii_case(name),
            RefOr::Ref(_) => false,
        })
    };
    let (idempotent, conditional) = (header("Idempotency-Key"), header("If-Match"));
    let mut bad_request = Vec::new();
    if has_body {
        bad_request.push("the body is not valid JSON (`malformed_json`) or cannot be read (`malformed_body`)");
    }
    if idempotent {
        bad_request.push("a bad Idempotency-Key (`invalid_idempotency_key`)");
    }
    let mut unprocessable = Vec::new();
    if has_body {
        unprocessable.push("invalid fields, every one named in `errors` (`validation_failed`)");
    }
    if idempotent {
        unprocessable.push("an Idempotency-Key used for another request (`idempotency_key_reused`)");
    }
    let mut add = |status: &str, description: String| {
        op.responses.responses.entry(status.to_owned()).or_insert_with(|| problem(&description));
    };
    if !bad_request.is_empty() {
        add("400", format!("Malformed: {}", bad_request.join("; ")));
    }
    if versioned {
        add("401", "No token, or a token refused (`unauthorized`)".to_owned());
    }
    if names_an_exception {
        add("404", "No such exception, or one the caller may not see (`not_found`)".to_owned());
    }
    if conditional {
        add("412", "If-Match names another version (`precondition_failed`, with `current_version`)".to_owned());
    }
    if has_body {
        add("413", "The body is over 1 MiB (`payload_too_large`)".to_owned());
        add("415", "The body is not JSON (`unsupported_media_type`)".to_owned());
    }
    if !unprocessable.is_empty() {
        add("422", format!("Refused: {}", unprocessable.join("; ")));
    }
    add("431", "Over 64 header fields or 32 KiB of headers (`request_header_fields_too_large`)".to_owned());
    add("500", "A bug, logged in full; quote the request id (`internal`)".to_owned());
    if versioned {
        op.responses.responses.entry("429".to_owned()).or_insert_with(|| {
            let mut retry_after = Header::new(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)));
            retry_after.description = Some("Seconds until the subject's next request is allowed".to_owned());
            RefOr::T(
                ResponseBuilder::new()
                    .description("The token's subject is over its rate limit (`rate_limited`)")
                    .header("Retry-After", retry_after)
                    .content("application/problem+json", Content::new(Some(Ref::from_schema_name("Problem"))))
                    .build(),
            )
        });
    }
}

impl utoipa::Modify for Conventions {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.bearer_format = Some("JWT".to_owned());
        http.description = Some(
            "A JWT with `sub`, numeric `exp`, `roles` (array) and optionally `business_unit`; at most 8 KiB. HS256 with the configured secret, or, with an identity provider (`LEEWAY_JWKS_URL`), RS256 or ES256 signed by a key of its key set, with `iss` and `aud`"
                .to_owned(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(http));
        // what a created exception leads to: every operation on it, for generated clients
        // and stateful fuzzing
        let mut links = Vec::new();
        for (path, item) in &openapi.paths.paths {
            let Some(rest) = path.strip_prefix("/v1/exceptions/{id}") else { continue };
            let control = rest.contains("{control_id}");
            for op in [&item.get, &item.put, &item.post, &item.delete, &item.patch].into_iter().flatten() {
                if let Some(operation) = &op.operation_id {
                    let mut link = LinkBuilder::new().operation_id(operation).parameter("id", "$response.body#/id");
                    if control {
                        link = link.parameter("control_id", "$response.body#/controls/0/id");
                    }
                    links.push((operation.clone(), link.build()));
                }
            }
        }
        if let Some(RefOr::T(created)) = openapi
            .paths
            .paths
            .get_mut("/v1/exceptions")
            .and_then(|item| item.post.as_mut())
            .and_then(|op| op.responses.responses.get_mut("201"))
        {
            for (name, link) in links {
                created.links.insert(name, RefOr::T(link));
            }
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            let versioned = path.starts_with("/v1");
            for op in
                [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch].into_iter().flatten()
            {
                document(op, versioned, path.contains("{id}"));
            }
        }
    }
}
