//! The exception resource: create, read, list, patch, and every lifecycle action.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, patch, post, put, web};
use chrono::{DateTime, Utc};
use leeway_domain::DomainError;
use leeway_domain::governance::{self, ReviewInput};
use leeway_domain::record::{ControlId, Exception, ExceptionId, ExceptionRef};
use leeway_domain::workflow::{self, ApproveInput, AssessInput, ControlChange, Ctx, Happening, NewException};
use leeway_persistence::{CallContext, Facts, IdempotencyClaim, Outcome, StoreError, StoredResponse, verify_chain};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Caller;
use crate::body::{IdempotencyKey, IfMatch, JsonBody, flatten};
use crate::dto::*;
use crate::error::{ApiError, Problem, current_request_id};
use crate::listing;

fn target(raw: &str) -> Result<ExceptionRef, ApiError> {
    ExceptionRef::parse(raw).ok_or_else(ApiError::not_found)
}

fn claim(req: &HttpRequest, caller: &Caller, key: &IdempotencyKey, digest: &str) -> Option<IdempotencyClaim> {
    key.0.as_ref().map(|k| IdempotencyClaim {
        subject: caller.0.subject.to_string(),
        key: k.clone(),
        request_hash: hex::encode(Sha256::digest(format!("{} {}\n{digest}", req.method(), req.path()))),
    })
}

fn respond(state: &AppState, caller: &Caller, now: DateTime<Utc>, e: &Exception, status: StatusCode) -> StoredResponse {
    let view = ExceptionView::render(e, &caller.0, &state.policy, now);
    StoredResponse {
        status: status.as_u16(),
        body: serde_json::to_string(&view).unwrap_or_default(),
        location: (status == StatusCode::CREATED).then(|| format!("/v1/exceptions/{}", e.id)),
        etag: Some(format!("\"{}\"", e.version)),
    }
}

fn to_http(r: StoredResponse, replayed: bool) -> HttpResponse {
    let mut res = HttpResponse::build(StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK));
    res.content_type("application/json");
    if let Some(l) = r.location {
        res.insert_header(("location", l));
    }
    if let Some(t) = r.etag {
        res.insert_header(("etag", t));
    }
    if replayed {
        res.insert_header(("idempotent-replayed", "true"));
    }
    res.body(r.body)
}

/// Everything a write handler needs besides its operation.
struct Write {
    req: HttpRequest,
    caller: Caller,
    id: String,
    if_match: IfMatch,
    key: IdempotencyKey,
    digest: String,
    status: StatusCode,
}

/// An operation on one exception, with access to the database's facts.
type Op = dyn Fn(&mut Exception, &Ctx<'_>, &mut Facts<'_>) -> Result<Vec<Happening>, StoreError> + Send;

/// Time rules first (so the action is judged on the true state), then the operation, then
/// the scheduler's next moment.
fn governed(e: &mut Exception, ctx: &Ctx<'_>, facts: &mut Facts<'_>, op: &Op) -> Result<Vec<Happening>, StoreError> {
    // a write that waited behind a later one (a scheduler batch) acts at that later moment
    let later = Ctx { now: ctx.now.max(e.updated_at), ..*ctx };
    let ctx = &later;
    let mut happened = governance::tick(e, ctx.policy, ctx.now);
    happened.extend(op(e, ctx, facts)?);
    governance::settle(e, ctx.policy, ctx.now, !happened.is_empty());
    Ok(happened)
}

async fn mutate(
    state: web::Data<AppState>,
    w: Write,
    op: impl Fn(&mut Exception, &Ctx<'_>, &mut Facts<'_>) -> Result<Vec<Happening>, StoreError> + Send + 'static,
) -> Result<HttpResponse, ApiError> {
    let target = target(&w.id)?;
    let claim = claim(&w.req, &w.caller, &w.key, &w.digest);
    let now = state.clock.now();
    let request_id = current_request_id();
    let st = state.clone();
    let caller = w.caller.clone();
    let status = w.status;
    let outcome = web::block(move || {
        let ctx = CallContext { actor: &caller.0, request_id: request_id.as_deref(), now };
        let dctx = Ctx { actor: &caller.0, policy: &st.policy, now };
        st.store.mutate(
            ctx,
            target,
            w.if_match.0,
            claim.as_ref(),
            |e, facts| governed(e, &dctx, facts, &op),
            |e| respond(&st, &caller, now, e, status),
        )
    })
    .await??;
    Ok(match outcome {
        Outcome::Done(e) => to_http(respond(&state, &w.caller, now, &e, w.status), false),
        Outcome::Replayed(r) => to_http(r, true),
    })
}

/// Create an exception: `draft`, or `submitted` with `"submit": true`.
///
/// Roles: `requester`, `integration` (which may name `on_behalf_of`). Answers 201 with
/// `Location`, `ETag` and the exception. Send `Idempotency-Key` to retry safely.
#[utoipa::path(
    tag = "exceptions",
    security(("bearer" = [])),
    request_body = CreateException,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for 24 hours; another body with the same key is refused")),
    responses(
        (status = 201, description = "Created", body = ExceptionView, headers(("Location" = String), ("ETag" = String))),
        (status = 400, description = "Malformed JSON (`malformed_json`) or Idempotency-Key (`invalid_idempotency_key`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token (`unauthorized`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Role cannot create (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An external reference belongs to another exception (`duplicate_external_reference`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 1 MiB (`payload_too_large`)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON (`unsupported_media_type`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (`validation_failed`, every field in `errors`) or reused key (`idempotency_key_reused`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/exceptions")]
pub async fn create_exception(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    key: IdempotencyKey,
    body: JsonBody<CreateException>,
) -> Result<HttpResponse, ApiError> {
    let input = NewException {
        fields: body.value.fields(),
        controls: body.value.controls.iter().map(NewControl::to_domain).collect(),
        on_behalf_of: body.value.on_behalf_of.clone(),
        emergency: body.value.emergency,
    };
    let submit = body.value.submit && !body.value.emergency;
    let claim = claim(&req, &caller, &key, &body.digest);
    let now = state.clock.now();
    let request_id = current_request_id();
    let st = state.clone();
    let c = caller.clone();
    let outcome = web::block(move || {
        let ctx = CallContext { actor: &c.0, request_id: request_id.as_deref(), now };
        let dctx = Ctx { actor: &c.0, policy: &st.policy, now };
        let id = ExceptionId(Uuid::now_v7());
        st.store.create(
            ctx,
            claim.as_ref(),
            |k, facts| {
                let (mut e, mut happened) = workflow::create(&dctx, id, k, &input, Uuid::now_v7)?;
                if submit {
                    happened.extend(submit_with_facts(&mut e, &dctx, facts)?);
                } else if e.emergency {
                    // break-glass skips approval, not the limits or repeat detection
                    let f = facts_for(&e, &dctx, facts)?;
                    e.chronic = governance::judge_submit(&e, dctx.policy, &f)?.is_some();
                }
                governance::settle(&mut e, dctx.policy, now, true);
                Ok((e, happened))
            },
            |e| respond(&st, &c, now, e, StatusCode::CREATED),
        )
    })
    .await??;
    Ok(match outcome {
        Outcome::Done(e) => to_http(respond(&state, &caller, now, &e, StatusCode::CREATED), false),
        Outcome::Replayed(r) => to_http(r, true),
    })
}

/// One exception by id or key, with risk, controls, approvals and `allowed_actions` for
/// the caller. An exception the caller may not see answers 404.
#[utoipa::path(
    tag = "exceptions",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "UUID or key (`EXC-000042`)")),
    responses(
        (status = 200, description = "The exception", body = ExceptionView, headers(("ETag" = String))),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Absent or not visible (`not_found`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/exceptions/{id}")]
pub async fn get_exception(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let target = target(&id)?;
    let st = state.clone();
    let actor = caller.0.clone();
    let e = web::block(move || st.store.get(target, &actor)).await??;
    let now = state.clock.now();
    Ok(to_http(respond(&state, &caller, now, &e, StatusCode::OK), false))
}

/// List exceptions the caller may see, filtered, ordered and paged by cursor.
#[utoipa::path(
    tag = "exceptions",
    security(("bearer" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "A page", body = ExceptionPage),
        (status = 400, description = "Bad parameter (`invalid_query`) or cursor (`invalid_cursor`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token carries no Leeway role (`forbidden`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/exceptions")]
pub async fn list_exceptions(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    if caller.0.roles.is_empty() {
        return Err(ApiError::forbidden("the token carries no Leeway role"));
    }
    let now = state.clock.now();
    let (query, fingerprint) = listing::parse(req.query_string(), &caller.0, now)?;
    let st = state.clone();
    let q = query.clone();
    let page = web::block(move || st.store.list(&q)).await??;
    let next_cursor = page.next.map(|(t, id)| listing::encode_cursor(query.sort, t, &id, &fingerprint));
    let items = page.items.iter().map(|e| ExceptionView::render(e, &caller.0, &state.policy, now)).collect();
    Ok(HttpResponse::Ok().json(ExceptionPage { items, next_cursor }))
}

/// Decodes the merge-patched fields, naming every bad member.
fn patched_fields(base: &ExceptionFields, patch: &Map<String, Value>) -> Result<ExceptionFields, DomainError> {
    let mut doc = serde_json::to_value(base).map_err(|e| DomainError::field("body", "invalid", e.to_string()))?;
    if let Value::Object(target) = &mut doc {
        for (k, v) in patch {
            if v.is_null() {
                target.remove(k);
            } else {
                target.insert(k.clone(), v.clone());
            }
        }
    }
    let fields: ExceptionFields = serde_path_to_error::deserialize(doc).map_err(|e| {
        let problem = crate::body::field_errors(&e.path().to_string(), &e.inner().to_string());
        DomainError::Invalid(problem)
    })?;
    validator::Validate::validate(&fields).map_err(|e| DomainError::Invalid(flatten(&e)))?;
    Ok(fields)
}

/// A JSON merge patch (RFC 7396) of the record's fields.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = ExceptionFields)]
pub struct MergePatch(pub Map<String, Value>);

impl validator::Validate for MergePatch {
    fn validate(&self) -> Result<(), validator::ValidationErrors> {
        Ok(())
    }
}

/// Change fields with a JSON merge patch: every field in `draft` (requester), afterwards
/// only `tags`, `external_refs`, `remediation_plan` and `remediation_due` (requester or
/// analyst). Send `If-Match` with the ETag to avoid lost updates.
#[utoipa::path(
    tag = "exceptions",
    security(("bearer" = [])),
    request_body(content = ExceptionFields, content_type = "application/merge-patch+json"),
    params(("id" = String, Path, description = "UUID or key"), ("If-Match" = Option<String>, Header, description = "The ETag last read")),
    responses(
        (status = 200, description = "Updated", body = ExceptionView, headers(("ETag" = String))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the requester or an analyst (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Absent or not visible", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Duplicate external reference", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Stale If-Match (`precondition_failed`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid, unknown, server-controlled or locked fields (`validation_failed`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[patch("/exceptions/{id}")]
pub async fn patch_exception(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    id: web::Path<String>,
    if_match: IfMatch,
    body: JsonBody<MergePatch>,
) -> Result<HttpResponse, ApiError> {
    let patch = body.value.0;
    let w = Write {
        req,
        caller,
        id: id.into_inner(),
        if_match,
        key: IdempotencyKey(None),
        digest: body.digest,
        status: StatusCode::OK,
    };
    mutate(state, w, move |e, ctx, _| {
        let fields = patched_fields(&ExceptionFields::from_domain(&e.fields), &patch)?;
        Ok(workflow::update(e, ctx, &fields.fields())?)
    })
    .await
}

macro_rules! action {
    ($(#[$doc:meta])* $fn:ident, $path:literal, $op:expr, $conflict:literal) => {
        $(#[$doc])*
        #[utoipa::path(
            tag = "lifecycle",
            security(("bearer" = [])),
            request_body(content = Option<ActionBody>, description = "Optional comment"),
            params(
                ("id" = String, Path, description = "UUID or key"),
                ("If-Match" = Option<String>, Header, description = "The ETag last read"),
                ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for 24 hours"),
            ),
            responses(
                (status = 200, description = "The updated exception", body = ExceptionView, headers(("ETag" = String))),
                (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
                (status = 403, description = "Role or ownership does not permit it (`forbidden`)", body = Problem, content_type = "application/problem+json"),
                (status = 404, description = "Absent or not visible", body = Problem, content_type = "application/problem+json"),
                (status = 409, description = $conflict, body = Problem, content_type = "application/problem+json"),
                (status = 412, description = "Stale If-Match (`precondition_failed`)", body = Problem, content_type = "application/problem+json"),
                (status = 422, description = "Invalid body (`validation_failed`) or reused Idempotency-Key", body = Problem, content_type = "application/problem+json"),
            )
        )]
        #[post($path)]
        pub async fn $fn(
            state: web::Data<AppState>,
            req: HttpRequest,
            caller: Caller,
            id: web::Path<String>,
            if_match: IfMatch,
            key: IdempotencyKey,
            body: JsonBody<ActionBody>,
        ) -> Result<HttpResponse, ApiError> {
            let comment = body.value.comment.clone();
            let w = Write { req, caller, id: id.into_inner(), if_match, key, digest: body.digest, status: StatusCode::OK };
            mutate(state, w, move |e, ctx, facts| ($op)(e, ctx, comment.as_deref(), facts)).await
        }
    };
}

/// What the database knows that limits and repeat detection need (the business unit's
/// count only when the policy limits that unit).
fn facts_for(e: &Exception, ctx: &Ctx<'_>, facts: &mut Facts<'_>) -> Result<governance::SubmitFacts, StoreError> {
    let limited = ctx.policy.business_unit_limits.contains_key(&e.fields.business_unit);
    facts.submit_facts(e, ctx.now, limited)
}

/// Submits with what the database knows: covering limits and earlier repeats.
fn submit_with_facts(e: &mut Exception, ctx: &Ctx<'_>, facts: &mut Facts<'_>) -> Result<Vec<Happening>, StoreError> {
    let f = facts_for(e, ctx, facts)?;
    Ok(workflow::submit(e, ctx, &f)?)
}

/// A control id from the path; one that is not a UUID names no control.
fn control_ref(raw: &str) -> Result<ControlId, ApiError> {
    Uuid::parse_str(raw).map(ControlId).map_err(|_| ApiError::from(DomainError::NoSuchControl(raw.to_owned())))
}

/// Adapts a comment-taking domain action to a handler operation.
macro_rules! plain {
    ($op:path) => {
        |e: &mut Exception,
         ctx: &Ctx<'_>,
         comment: Option<&str>,
         _: &mut Facts<'_>|
         -> Result<Vec<Happening>, StoreError> { Ok($op(e, ctx, comment)?) }
    };
}

action!(
    /// Submit a draft for assessment (requester or integration). Needs `expires_at` in the
    /// future and at least one compensating control.
    submit_exception, "/exceptions/{id}/submit",
    |e: &mut Exception, ctx: &Ctx<'_>, _: Option<&str>, facts: &mut Facts<'_>| submit_with_facts(e, ctx, facts),
    "Not a draft (`invalid_transition`, with `current_state` and `allowed_actions`)"
);
action!(
    /// Return to the requester for more information (analyst or approver); approvals so far
    /// stop counting.
    return_exception, "/exceptions/{id}/return", plain!(workflow::return_to_requester),
    "Not submitted or pending approval (`invalid_transition`)"
);
action!(
    /// Reject (analyst or approver). A renewal round rejected returns to `active` with the
    /// old expiry.
    reject_exception, "/exceptions/{id}/reject", plain!(workflow::reject),
    "Not submitted, pending approval or renewal pending (`invalid_transition`)"
);
action!(
    /// Withdraw (the requester) from `draft`, `submitted`, `pending_approval` or `approved`.
    withdraw_exception, "/exceptions/{id}/withdraw", plain!(workflow::withdraw),
    "Already active or ended (`invalid_transition`)"
);
action!(
    /// Revoke (`security_officer`, `ciso`, `admin`) an approved, active or renewal-pending
    /// exception.
    revoke_exception, "/exceptions/{id}/revoke", plain!(workflow::revoke),
    "Not approved, active or renewal pending (`invalid_transition`)"
);
action!(
    /// Close because the gap was remediated (requester, risk owner, analyst).
    close_exception, "/exceptions/{id}/close", plain!(workflow::close),
    "Not active or renewal pending (`invalid_transition`)"
);

/// Approve one required level. `role` picks the level; without it, the first missing level
/// (policy order) the caller holds. The requester may not approve; one person fills at most
/// one level per round. The last required approval approves the exception, and activates it
/// when `starts_at` has come.
#[utoipa::path(
    tag = "lifecycle",
    security(("bearer" = [])),
    request_body(content = Option<ApproveBody>),
    params(
        ("id" = String, Path, description = "UUID or key"),
        ("If-Match" = Option<String>, Header, description = "The ETag last read"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for 24 hours"),
    ),
    responses(
        (status = 200, description = "The updated exception", body = ExceptionView, headers(("ETag" = String))),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "No missing level the caller holds (`forbidden`) or separation of duties (`separation_of_duties`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Absent or not visible", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not pending approval (`invalid_transition`)", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Stale If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`role` is not a missing level (`validation_failed`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/exceptions/{id}/approve")]
pub async fn approve_exception(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    id: web::Path<String>,
    if_match: IfMatch,
    key: IdempotencyKey,
    body: JsonBody<ApproveBody>,
) -> Result<HttpResponse, ApiError> {
    let input =
        ApproveInput { comment: body.value.comment.clone(), role: body.value.role.map(|r| r.as_str().to_owned()) };
    let w = Write { req, caller, id: id.into_inner(), if_match, key, digest: body.digest, status: StatusCode::OK };
    mutate(state, w, move |e, ctx, _| Ok(workflow::approve(e, ctx, &input, Uuid::now_v7())?)).await
}

/// Assess (or re-assess) the risk (an analyst who is not the requester). The residual level
/// decides the approvals, the maximum duration and the review interval; when the level's
/// maximum is shorter than the requested duration the answer is 422
/// `duration_exceeds_policy`, unless `expires_at` in the same body shortens it.
#[utoipa::path(
    tag = "lifecycle",
    security(("bearer" = [])),
    request_body = AssessBody,
    params(("id" = String, Path, description = "UUID or key"), ("If-Match" = Option<String>, Header, description = "The ETag last read")),
    responses(
        (status = 200, description = "Assessed; `pending_approval`", body = ExceptionView, headers(("ETag" = String))),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an analyst (`forbidden`), or the requester (`separation_of_duties`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Absent or not visible", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not submitted or pending approval (`invalid_transition`)", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Stale If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid method values (`validation_failed`) or too long for the level (`duration_exceeds_policy`, with `max_duration_days` and `latest_expires_at`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[put("/exceptions/{id}/risk")]
pub async fn assess_exception(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    id: web::Path<String>,
    if_match: IfMatch,
    body: JsonBody<AssessBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.value;
    let method = b.method().map_err(ApiError::validation)?;
    let input =
        AssessInput { method, rationale: b.rationale, threat_vectors: b.threat_vectors, expires_at: b.expires_at };
    let w = Write {
        req,
        caller,
        id: id.into_inner(),
        if_match,
        key: IdempotencyKey(None),
        digest: body.digest,
        status: StatusCode::OK,
    };
    mutate(state, w, move |e, ctx, _| Ok(workflow::assess(e, ctx, input.clone(), Uuid::now_v7())?)).await
}

/// Add a compensating control (requester; analyst after submit). It starts `proposed`.
/// Answers 200 with the exception, like every action; the new control is the last of
/// `controls`.
#[utoipa::path(
    tag = "controls",
    security(("bearer" = [])),
    request_body = NewControl,
    params(
        ("id" = String, Path, description = "UUID or key"),
        ("If-Match" = Option<String>, Header, description = "The ETag last read"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for 24 hours"),
    ),
    responses(
        (status = 200, description = "Added; the new control is the last of `controls`", body = ExceptionView, headers(("ETag" = String))),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Role or ownership does not permit it", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Absent or not visible", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The exception has ended (`invalid_transition`)", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Stale If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid control (`validation_failed`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/exceptions/{id}/controls")]
pub async fn add_control(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    id: web::Path<String>,
    if_match: IfMatch,
    key: IdempotencyKey,
    body: JsonBody<NewControl>,
) -> Result<HttpResponse, ApiError> {
    let input = body.value.to_domain();
    let w = Write { req, caller, id: id.into_inner(), if_match, key, digest: body.digest, status: StatusCode::OK };
    mutate(state, w, move |e, ctx, _| Ok(workflow::add_control(e, ctx, &input, ControlId(Uuid::now_v7()))?.1)).await
}

/// Change a control's status or evidence. `verified` (with evidence) and `failed` only by
/// an analyst who is not the requester; the residual risk is recomputed at once.
#[utoipa::path(
    tag = "controls",
    security(("bearer" = [])),
    request_body = ControlChangeBody,
    params(
        ("id" = String, Path, description = "UUID or key"),
        ("control_id" = String, Path, description = "The control's id"),
        ("If-Match" = Option<String>, Header, description = "The ETag last read"),
    ),
    responses(
        (status = 200, description = "Changed", body = ExceptionView, headers(("ETag" = String))),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an analyst (`forbidden`) or the requester verifying (`separation_of_duties`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Absent, not visible, or no such control (`control_not_found`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The exception has ended (`invalid_transition`)", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Stale If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid change (`validation_failed`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[patch("/exceptions/{id}/controls/{control_id}")]
pub async fn change_control(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    path: web::Path<(String, String)>,
    if_match: IfMatch,
    body: JsonBody<ControlChangeBody>,
) -> Result<HttpResponse, ApiError> {
    let (id, control) = path.into_inner();
    let control = control_ref(&control)?;
    let ControlChangeBody { status, evidence } = body.value;
    let change = ControlChange { status: status.map(|s| s.as_str().to_owned()), evidence };
    let w = Write { req, caller, id, if_match, key: IdempotencyKey(None), digest: body.digest, status: StatusCode::OK };
    mutate(state, w, move |e, ctx, _| Ok(workflow::change_control(e, ctx, control, &change)?)).await
}

/// The exception's audit events, oldest first, with the hash chain verified.
#[utoipa::path(
    tag = "exceptions",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "UUID or key")),
    responses(
        (status = 200, description = "The history", body = HistoryView),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Absent or not visible", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/exceptions/{id}/history")]
pub async fn exception_history(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let target = target(&id)?;
    let st = state.clone();
    let events = web::block(move || {
        let e = st.store.get(target, &caller.0)?;
        st.store.history(e.id)
    })
    .await??;
    let broken = verify_chain(&events).and_then(|i| events.get(i)).map(|e| e.seq);
    let items = events
        .into_iter()
        .map(|e| AuditEventView {
            seq: e.seq,
            action: e.action,
            actor: ActorView { subject: e.actor_subject, roles: e.actor_roles },
            on_behalf_of: e.on_behalf_of,
            at: e.at,
            from_status: e.from_status,
            to_status: e.to_status,
            changes: e.changes,
            request_id: e.request_id,
            prev_hash: e.prev_hash,
            hash: e.hash,
        })
        .collect();
    Ok(HttpResponse::Ok()
        .json(HistoryView { items, chain: ChainView { valid: broken.is_none(), first_broken_seq: broken } }))
}

/// Ask for a new expiry (requester or risk owner, on an `active` exception). A renewal round
/// opens: `renewal_pending`, still covering until the old expiry, `round` + 1. The round
/// needs a fresh assessment, then the approvals of its residual level. Approved: the new
/// expiry, back to `active`. Rejected: `active` with the old expiry. Undecided at the old
/// expiry: `expired`.
#[utoipa::path(
    tag = "governance",
    security(("bearer" = [])),
    request_body = RenewalBody,
    params(
        ("id" = String, Path, description = "UUID or key"),
        ("If-Match" = Option<String>, Header, description = "The ETag last read"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for 24 hours"),
    ),
    responses(
        (status = 200, description = "Renewal round opened", body = ExceptionView, headers(("ETag" = String))),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the requester or the risk owner (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Absent or not visible", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not active (`invalid_transition`)", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Stale If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "expires_at not later than the current one, or justification too short (`validation_failed`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/exceptions/{id}/renewal")]
pub async fn request_renewal(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    id: web::Path<String>,
    if_match: IfMatch,
    key: IdempotencyKey,
    body: JsonBody<RenewalBody>,
) -> Result<HttpResponse, ApiError> {
    let RenewalBody { expires_at, justification } = body.value;
    let w = Write { req, caller, id: id.into_inner(), if_match, key, digest: body.digest, status: StatusCode::OK };
    mutate(state, w, move |e, ctx, _| Ok(governance::request_renewal(e, ctx, expires_at, &justification)?)).await
}

/// Record a periodic review (the risk owner or an analyst) of an `active` or
/// `renewal_pending` exception. Moves `next_review_at` by the level's interval; `revoke`
/// revokes.
#[utoipa::path(
    tag = "governance",
    security(("bearer" = [])),
    request_body = ReviewBody,
    params(
        ("id" = String, Path, description = "UUID or key"),
        ("If-Match" = Option<String>, Header, description = "The ETag last read"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for 24 hours"),
    ),
    responses(
        (status = 200, description = "Reviewed", body = ExceptionView, headers(("ETag" = String))),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the risk owner or an analyst (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Absent or not visible", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not active or renewal pending (`invalid_transition`)", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Stale If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid review (`validation_failed`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/exceptions/{id}/reviews")]
pub async fn review_exception(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    id: web::Path<String>,
    if_match: IfMatch,
    key: IdempotencyKey,
    body: JsonBody<ReviewBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.value;
    let input = ReviewInput {
        controls_effective: b.controls_effective,
        justification_valid: b.justification_valid,
        better_option_available: b.better_option_available,
        outcome: b.outcome,
        comment: b.comment,
    };
    let w = Write { req, caller, id: id.into_inner(), if_match, key, digest: body.digest, status: StatusCode::OK };
    mutate(state, w, move |e, ctx, _| Ok(governance::review(e, ctx, &input, Uuid::now_v7())?)).await
}

/// Record a check of a compensating control (an analyst who is not the requester). `pass`
/// keeps it verified and restarts its `check_every` interval; `fail` stops it reducing risk.
/// The residual is recomputed; above the approved level a covering exception is flagged at
/// risk and a new round opens by itself.
#[utoipa::path(
    tag = "controls",
    security(("bearer" = [])),
    request_body = CheckBody,
    params(
        ("id" = String, Path, description = "UUID or key"),
        ("control_id" = String, Path, description = "The control's id"),
        ("If-Match" = Option<String>, Header, description = "The ETag last read"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for 24 hours"),
    ),
    responses(
        (status = 200, description = "Checked", body = ExceptionView, headers(("ETag" = String))),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an analyst (`forbidden`), or the requester (`separation_of_duties`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Absent, not visible, or no such control (`control_not_found`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The exception has ended (`invalid_transition`)", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Stale If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid check (`validation_failed`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/exceptions/{id}/controls/{control_id}/checks")]
pub async fn check_control(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    path: web::Path<(String, String)>,
    if_match: IfMatch,
    key: IdempotencyKey,
    body: JsonBody<CheckBody>,
) -> Result<HttpResponse, ApiError> {
    let (id, control) = path.into_inner();
    let control = control_ref(&control)?;
    let CheckBody { result, evidence } = body.value;
    let w = Write { req, caller, id, if_match, key, digest: body.digest, status: StatusCode::OK };
    mutate(state, w, move |e, ctx, _| {
        Ok(governance::check_control(e, ctx, control, &result, &evidence, Uuid::now_v7())?)
    })
    .await
}
