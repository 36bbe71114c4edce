//! The exception resource: create, read, list, patch, and every lifecycle action.

pub mod json;
pub mod query;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, patch, post, put, web};
use chrono::{DateTime, Utc};
use leeway_domain::audit::first_broken;
use leeway_domain::ids::{ControlId, ExceptionId, ExceptionRef};
use leeway_domain::record::Exception;
use leeway_domain::workflow::{self, ApproveInput, Ctx, Operation};
use leeway_persistence::{CallContext, IdempotencyClaim, Outcome, StoredResponse};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Caller;
use crate::body::{IdempotencyHeader, IdempotencyKey, IfMatch, IfMatchHeader, JsonBody};
use crate::error::{ApiError, Problem, ProblemCode, current_request_id};
use json::*;
use query::ListParams;

fn target(raw: &str) -> Result<ExceptionRef, ApiError> {
    ExceptionRef::parse(raw).ok_or_else(ApiError::not_found)
}

/// A control id from the path; one that is not a UUID names no control.
fn control_ref(raw: &str) -> Result<ControlId, ApiError> {
    control_id(raw)
        .ok_or_else(|| ApiError::new(ProblemCode::ControlNotFound, format!("the exception has no control {raw}")))
}

fn claim(req: &HttpRequest, caller: &Caller, key: &IdempotencyKey, digest: &str) -> Option<IdempotencyClaim> {
    key.0.as_ref().map(|k| IdempotencyClaim {
        subject: caller.0.subject.to_string(),
        key: k.clone(),
        request_hash: hex::encode(Sha256::digest(format!("{} {}\n{digest}", req.method(), req.path()))),
    })
}

fn respond(state: &AppState, caller: &Caller, now: DateTime<Utc>, e: &Exception, status: StatusCode) -> StoredResponse {
    // a change queued behind a later one was stamped at that later moment: show it as of then
    let view = ExceptionView::render(e, &caller.0, &state.policy, now.max(e.updated_at));
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
}

/// Applies `op` to one exception in one transaction, through the domain's one entry point.
async fn mutate(state: web::Data<AppState>, w: Write, op: Operation) -> Result<HttpResponse, ApiError> {
    let target = target(&w.id)?;
    let claim = claim(&w.req, &w.caller, &w.key, &w.digest);
    let now = state.clock.now();
    let request_id = current_request_id();
    let st = state.clone();
    let caller = w.caller.clone();
    let outcome = web::block(move || {
        let ctx = CallContext { actor: &caller.0, request_id: request_id.as_deref(), now };
        let dctx = Ctx { actor: &caller.0, policy: &st.policy, now };
        st.store.mutate(
            ctx,
            target,
            w.if_match.0,
            claim.as_ref(),
            |e, facts| Ok(workflow::apply(e, &dctx, op.clone(), facts)?),
            |e| respond(&st, &caller, now, e, StatusCode::OK),
        )
    })
    .await??;
    Ok(match outcome {
        Outcome::Done(e) => to_http(respond(&state, &w.caller, now, &e, StatusCode::OK), false),
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
    params(IdempotencyHeader),
    responses(
        (status = 201, description = "Created", body = ExceptionView, headers(("Location" = String), ("ETag" = String))),
        (status = 403, description = "Role cannot create, or a requester outside their business unit (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An external reference belongs to another exception (`duplicate_external_reference`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (`validation_failed`, every field in `errors`), an emergency longer than 72 hours (`duration_exceeds_policy`), a covering limit at submit or emergency (`limit_exceeded`), or a reused key (`idempotency_key_reused`)", body = Problem, content_type = "application/problem+json"),
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
    let input = body.value;
    let claim = claim(&req, &caller, &key, &body.digest);
    let now = state.clock.now();
    let request_id = current_request_id();
    let st = state.clone();
    let c = caller.clone();
    let id = ExceptionId(Uuid::now_v7());
    let outcome = web::block(move || {
        let ctx = CallContext { actor: &c.0, request_id: request_id.as_deref(), now };
        let dctx = Ctx { actor: &c.0, policy: &st.policy, now };
        st.store.create(
            ctx,
            claim.as_ref(),
            |k, facts| Ok(workflow::create(&dctx, id, k, input.clone(), &mut Uuid::now_v7, facts)?),
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
    params(ListParams, query::PageParams),
    responses(
        (status = 200, description = "A page", body = ExceptionPage),
        (status = 400, description = "Bad parameter (`invalid_query`) or cursor (`invalid_cursor`)", body = Problem, content_type = "application/problem+json"),
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
    let (query, fingerprint) = query::parse(req.query_string(), &caller.0, now)?;
    let st = state.clone();
    let q = query.clone();
    let page = web::block(move || st.store.list(&q)).await??;
    let next_cursor = page.next.map(|(t, id)| query::encode_cursor(query.sort, t, &id, &fingerprint));
    let items = page.items.iter().map(|e| ExceptionView::render(e, &caller.0, &state.policy, now)).collect();
    // one allocation for the whole page (about 3 KiB an exception) rather than a buffer
    // doubled a dozen times while it is written
    let page = ExceptionPage { items, next_cursor };
    let mut body = Vec::with_capacity(page.items.len().saturating_mul(4096).saturating_add(64));
    serde_json::to_writer(&mut body, &page).map_err(|e| ApiError::internal(&e))?;
    Ok(HttpResponse::Ok().content_type("application/json").body(body))
}

/// Change fields with a JSON merge patch: every field in `draft` (requester), afterwards
/// only `tags`, `external_refs`, `remediation_plan` and `remediation_due` (requester or
/// analyst). Send `If-Match` with the ETag to avoid lost updates.
#[utoipa::path(
    tag = "exceptions",
    security(("bearer" = [])),
    request_body(content = ExceptionPatch, content_type = "application/merge-patch+json"),
    params(("id" = String, Path, description = "UUID or key"), IfMatchHeader),
    responses(
        (status = 200, description = "Updated", body = ExceptionView, headers(("ETag" = String))),
        (status = 403, description = "Not the requester or an analyst (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Duplicate external reference", body = Problem, content_type = "application/problem+json"),
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
    body: JsonBody<ExceptionPatch>,
) -> Result<HttpResponse, ApiError> {
    let w = Write { req, caller, id: id.into_inner(), if_match, key: IdempotencyKey(None), digest: body.digest };
    mutate(state, w, Operation::Update(body.value)).await
}

macro_rules! action {
    ($(#[$doc:meta])* $fn:ident, $path:literal, $op:expr, $conflict:literal, $unprocessable:literal) => {
        $(#[$doc])*
        #[utoipa::path(
            tag = "lifecycle",
            security(("bearer" = [])),
            request_body(content = Option<ActionBody>, description = "Optional comment"),
            params(
                ("id" = String, Path, description = "UUID or key"),
                IfMatchHeader,
                IdempotencyHeader,
            ),
            responses(
                (status = 200, description = "The updated exception", body = ExceptionView, headers(("ETag" = String))),
                (status = 403, description = "Role or ownership does not permit it (`forbidden`)", body = Problem, content_type = "application/problem+json"),
                (status = 409, description = $conflict, body = Problem, content_type = "application/problem+json"),
                (status = 422, description = $unprocessable, body = Problem, content_type = "application/problem+json"),
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
            let w = Write { req, caller, id: id.into_inner(), if_match, key, digest: body.digest };
            mutate(state, w, ($op)(body.value)).await
        }
    };
}

action!(
    /// Submit a draft for assessment (requester or integration). Needs `expires_at` in the
    /// future and at least one compensating control.
    submit_exception, "/exceptions/{id}/submit", |_| Operation::Submit,
    "Not a draft (`invalid_transition`, with `current_state` and `allowed_actions`)",
    "No expiry in the future or no control (`validation_failed`), a covering limit (`limit_exceeded`), or a reused Idempotency-Key (`idempotency_key_reused`)"
);
action!(
    /// Return to the requester for more information (analyst or approver); approvals so far
    /// stop counting.
    return_exception, "/exceptions/{id}/return", Operation::Return,
    "Not submitted or pending approval (`invalid_transition`)",
    "A comment over 5000 characters (`validation_failed`), or a reused Idempotency-Key (`idempotency_key_reused`)"
);
action!(
    /// Reject (analyst or approver). A renewal round rejected returns to `active` with the
    /// old expiry.
    reject_exception, "/exceptions/{id}/reject", Operation::Reject,
    "Not submitted, pending approval or renewal pending (`invalid_transition`)",
    "A comment over 5000 characters (`validation_failed`), or a reused Idempotency-Key (`idempotency_key_reused`)"
);
action!(
    /// Withdraw (the requester) from `draft`, `submitted`, `pending_approval` or `approved`.
    withdraw_exception, "/exceptions/{id}/withdraw", Operation::Withdraw,
    "Already active or ended (`invalid_transition`)",
    "A comment over 5000 characters (`validation_failed`), or a reused Idempotency-Key (`idempotency_key_reused`)"
);
action!(
    /// Revoke (`security_officer`, `ciso`, `admin`) an approved, active or renewal-pending
    /// exception.
    revoke_exception, "/exceptions/{id}/revoke", Operation::Revoke,
    "Not approved, active or renewal pending (`invalid_transition`)",
    "A comment over 5000 characters (`validation_failed`), or a reused Idempotency-Key (`idempotency_key_reused`)"
);
action!(
    /// Close because the gap was remediated (requester, risk owner, analyst).
    close_exception, "/exceptions/{id}/close", Operation::Close,
    "Not active or renewal pending (`invalid_transition`)",
    "A comment over 5000 characters (`validation_failed`), or a reused Idempotency-Key (`idempotency_key_reused`)"
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
        IfMatchHeader,
        IdempotencyHeader,
    ),
    responses(
        (status = 200, description = "The updated exception", body = ExceptionView, headers(("ETag" = String))),
        (status = 403, description = "No missing level the caller holds (`forbidden`) or separation of duties (`separation_of_duties`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not pending approval (`invalid_transition`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`role` is not a missing level (`validation_failed`), the last approval would exceed a covering limit (`limit_exceeded`) or the level's duration (`duration_exceeds_policy`), or a reused Idempotency-Key (`idempotency_key_reused`)", body = Problem, content_type = "application/problem+json"),
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
    let Approval { role, comment } = body.value;
    let w = Write { req, caller, id: id.into_inner(), if_match, key, digest: body.digest };
    mutate(state, w, Operation::Approve(ApproveInput { id: Uuid::now_v7(), role, comment })).await
}

/// Assess (or re-assess) the risk (an analyst who is not the requester). The residual level
/// decides the approvals, the maximum duration and the review interval; when the level's
/// maximum is shorter than the requested duration the answer is 422
/// `duration_exceeds_policy`, unless `expires_at` in the same body shortens it.
#[utoipa::path(
    tag = "lifecycle",
    security(("bearer" = [])),
    request_body = AssessBody,
    params(("id" = String, Path, description = "UUID or key"), IfMatchHeader),
    responses(
        (status = 200, description = "Assessed; `pending_approval`", body = ExceptionView, headers(("ETag" = String))),
        (status = 403, description = "Not an analyst (`forbidden`), or the requester (`separation_of_duties`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not submitted, pending approval, renewal pending, or an emergency awaiting ratification (`invalid_transition`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid method values (`validation_failed`), too long for the level (`duration_exceeds_policy`, with `max_duration_days` and `latest_expires_at`), or an assessment that completes the approvals beyond a covering limit (`limit_exceeded`)", body = Problem, content_type = "application/problem+json"),
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
    let w = Write { req, caller, id: id.into_inner(), if_match, key: IdempotencyKey(None), digest: body.digest };
    mutate(state, w, Operation::Assess(body.value.input(Uuid::now_v7()))).await
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
        IfMatchHeader,
        IdempotencyHeader,
    ),
    responses(
        (status = 200, description = "Added; the new control is the last of `controls`", body = ExceptionView, headers(("ETag" = String))),
        (status = 403, description = "Role or ownership does not permit it", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The exception has ended (`invalid_transition`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid control, or the exception already has 50 (`validation_failed`); a reused Idempotency-Key (`idempotency_key_reused`)", body = Problem, content_type = "application/problem+json"),
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
    let w = Write { req, caller, id: id.into_inner(), if_match, key, digest: body.digest };
    mutate(state, w, Operation::AddControl(ControlId(Uuid::now_v7()), body.value)).await
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
        IfMatchHeader,
    ),
    responses(
        (status = 200, description = "Changed", body = ExceptionView, headers(("ETag" = String))),
        (status = 403, description = "Not an analyst (`forbidden`) or the requester verifying (`separation_of_duties`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Absent, not visible, or no such control (`control_not_found`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The exception has ended (`invalid_transition`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid change, or verification without evidence (`validation_failed`); a change that completes the approvals beyond a covering limit (`limit_exceeded`) or the level's duration (`duration_exceeds_policy`)", body = Problem, content_type = "application/problem+json"),
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
    let w = Write { req, caller, id, if_match, key: IdempotencyKey(None), digest: body.digest };
    mutate(state, w, Operation::ChangeControl(control, body.value)).await
}

/// The exception's audit events, oldest first, with the hash chain verified.
#[utoipa::path(
    tag = "exceptions",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "UUID or key")),
    responses(
        (status = 200, description = "The history", body = HistoryView),
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
    let broken = first_broken(&events).and_then(|i| events.get(i)).map(|e| e.seq);
    let items = events.into_iter().map(AuditEventView::from).collect();
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
        IfMatchHeader,
        IdempotencyHeader,
    ),
    responses(
        (status = 200, description = "Renewal round opened", body = ExceptionView, headers(("ETag" = String))),
        (status = 403, description = "Not the requester or the risk owner (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not active (`invalid_transition`)", body = Problem, content_type = "application/problem+json"),
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
    let w = Write { req, caller, id: id.into_inner(), if_match, key, digest: body.digest };
    mutate(state, w, Operation::RequestRenewal(body.value)).await
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
        IfMatchHeader,
        IdempotencyHeader,
    ),
    responses(
        (status = 200, description = "Reviewed", body = ExceptionView, headers(("ETag" = String))),
        (status = 403, description = "Not the risk owner or an analyst (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not active or renewal pending (`invalid_transition`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid review (`validation_failed`), or a reused Idempotency-Key (`idempotency_key_reused`)", body = Problem, content_type = "application/problem+json"),
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
    let input = body.value.input(Uuid::now_v7());
    let w = Write { req, caller, id: id.into_inner(), if_match, key, digest: body.digest };
    mutate(state, w, Operation::Review(input)).await
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
        IfMatchHeader,
        IdempotencyHeader,
    ),
    responses(
        (status = 200, description = "Checked", body = ExceptionView, headers(("ETag" = String))),
        (status = 403, description = "Not an analyst (`forbidden`), or the requester (`separation_of_duties`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Absent, not visible, or no such control (`control_not_found`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The exception has ended (`invalid_transition`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid check (`validation_failed`); a check that completes the approvals beyond a covering limit (`limit_exceeded`) or the level's duration (`duration_exceeds_policy`); a reused Idempotency-Key (`idempotency_key_reused`)", body = Problem, content_type = "application/problem+json"),
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
    let input = body.value.input(Uuid::now_v7());
    let w = Write { req, caller, id, if_match, key, digest: body.digest };
    mutate(state, w, Operation::CheckControl(control, input)).await
}

/// A path segment of an external reference, as the contract states it: `system` is
/// `[A-Za-z0-9._-]`, `external_id` printable ASCII without spaces, each of bounded length.
fn ref_part(name: &str, v: &str, max: usize, system: bool) -> Result<String, ApiError> {
    let allowed = |c: char| if system { c.is_ascii_alphanumeric() || "._-".contains(c) } else { c.is_ascii_graphic() };
    if v.is_empty() || v.len() > max || !v.chars().all(allowed) {
        let what = if system { "letters, digits, '.', '_' or '-'" } else { "printable ASCII without spaces" };
        return Err(ApiError::new(ProblemCode::InvalidPath, format!("{name} must be 1..{max} characters of {what}")));
    }
    Ok(v.to_owned())
}

/// The members of a create body an upsert cannot merge into an existing exception, when
/// they differ from it: the emergency flag, `on_behalf_of`, and the controls (changed through
/// their own endpoints).
pub(crate) fn unmergeable(e: &Exception, new: &workflow::NewException) -> Vec<leeway_domain::FieldError> {
    let mut locked = Vec::new();
    let mut refuse = |field: &str, why: &str| {
        locked.push(leeway_domain::FieldError::new(field, "not_editable", why.to_owned()));
    };
    if new.emergency && !e.emergency {
        refuse("emergency", "an existing exception cannot become an emergency");
    }
    if new.on_behalf_of.is_some() && new.on_behalf_of != e.on_behalf_of {
        refuse("on_behalf_of", "the person a request is made for is fixed at creation");
    }
    let same_controls = new.controls.len() == e.controls.len()
        && new.controls.iter().zip(&e.controls).all(|(n, c)| {
            n.description == c.description
                && n.kind == c.kind
                && n.effectiveness == c.effectiveness
                && n.check_every == c.check_every
        });
    if !new.controls.is_empty() && !same_controls {
        refuse("controls", "controls of an existing exception change through /v1/exceptions/{id}/controls");
    }
    locked
}

/// A refusal whose every field is `not_editable` is a 409 naming them; anything else as usual.
fn upsert_error(e: leeway_persistence::StoreError) -> ApiError {
    match e {
        leeway_persistence::StoreError::Domain(leeway_domain::DomainError::Invalid(errors))
            if !errors.is_empty() && errors.iter().all(|f| f.code == "not_editable") =>
        {
            ApiError::locked(errors)
        }
        other => other.into(),
    }
}

/// Create or update the exception holding an external reference: how ServiceNow and Jira push
/// their records.
///
/// The body is a create body (`POST /v1/exceptions`). When no exception holds
/// (`system`, `external_id`), one is created with the reference added (201 + `Location`).
/// When one does, the members sent are merged into it as far as its state allows (200); a
/// member the state does not let change answers 409 `field_locked` naming it, and
/// `"submit": true` submits a draft. The same body again changes nothing and writes no
/// event. Roles: those that may create; `integration` may name `on_behalf_of`.
#[utoipa::path(
    tag = "exceptions",
    security(("bearer" = [])),
    request_body = CreateException,
    params(
        ("system" = String, Path, description = "e.g. `servicenow`, `jira`: 1..50 letters, digits, `.`, `_` or `-`", pattern = "^[A-Za-z0-9._-]{1,50}$"),
        ("external_id" = String, Path, description = "The record's id there, e.g. `RITM0012345`: 1..200 printable ASCII characters without spaces", pattern = "^[!-~]{1,200}$"),
        IdempotencyHeader,
    ),
    responses(
        (status = 200, description = "Updated, or unchanged", body = ExceptionView, headers(("ETag" = String))),
        (status = 201, description = "Created", body = ExceptionView, headers(("Location" = String), ("ETag" = String))),
        (status = 403, description = "Role cannot create or change it (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A member the state does not let change (`field_locked`), a reference held by an exception the caller cannot see or another reference taken (`duplicate_external_reference`), or a submit the state refuses (`invalid_transition`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (`validation_failed`), a covering limit (`limit_exceeded`), a duration beyond policy (`duration_exceeds_policy`), or a reused key (`idempotency_key_reused`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[put("/exceptions/by-ref/{system}/{external_id}")]
pub async fn upsert_by_ref(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    key: IdempotencyKey,
    path: web::Path<(String, String)>,
    body: JsonBody<UpsertException>,
) -> Result<HttpResponse, ApiError> {
    let (system, external_id) = path.into_inner();
    let system = ref_part("system", &system, 50, true)?;
    let external_id = ref_part("external_id", &external_id, 200, false)?;
    let Upsert { mut new, mut patch } = body.value;
    // the path's reference is the exception's, whatever the body lists
    let held =
        |refs: &[leeway_domain::record::ExternalRef]| refs.iter().any(|r| r.system == system && r.id == external_id);
    if !held(&new.fields.external_refs) {
        if new.fields.external_refs.len() >= 20 {
            return Err(ApiError::validation(vec![leeway_domain::FieldError::new(
                "external_refs",
                "too_many",
                "at most 20, counting the reference in the path",
            )]));
        }
        new.fields.external_refs.push(leeway_domain::record::ExternalRef {
            system: system.clone(),
            id: external_id.clone(),
            url: None,
        });
    }
    if let Some(Some(refs)) = &mut patch.external_refs
        && !held(refs)
    {
        refs.push(leeway_domain::record::ExternalRef { system: system.clone(), id: external_id.clone(), url: None });
    }
    let claim = claim(&req, &caller, &key, &body.digest);
    let now = state.clock.now();
    let request_id = current_request_id();
    let st = state.clone();
    let c = caller.clone();
    let (outcome, created) = web::block(move || {
        let ctx = CallContext { actor: &c.0, request_id: request_id.as_deref(), now };
        let dctx = Ctx { actor: &c.0, policy: &st.policy, now };
        // a concurrent upsert of the same reference may create it between the lookup and the
        // create: the create is then refused, and the second round updates
        for _ in 0..2 {
            let Some(id) = st.store.find_by_ref(&system, &external_id)? else {
                let eid = ExceptionId(Uuid::now_v7());
                let created = st.store.create(
                    ctx,
                    claim.as_ref(),
                    |k, facts| Ok(workflow::create(&dctx, eid, k, new.clone(), &mut Uuid::now_v7, facts)?),
                    |e| respond(&st, &c, now, e, StatusCode::CREATED),
                );
                match created {
                    // taken meanwhile: if by the path's reference, the next round updates (the
                    // refusal may name another of the body's references, so ask again)
                    Err(e @ leeway_persistence::StoreError::DuplicateExternalRef { .. }) => {
                        if st.store.find_by_ref(&system, &external_id)?.is_none() {
                            return Err(e);
                        }
                        continue;
                    }
                    other => return other.map(|o| (o, true)),
                }
            };
            let updated = st.store.mutate(
                ctx,
                ExceptionRef::Id(id),
                None,
                claim.as_ref(),
                |e, facts| {
                    let locked = unmergeable(e, &new);
                    if !locked.is_empty() {
                        return Err(leeway_domain::DomainError::Invalid(locked).into());
                    }
                    let submit = new.submit && e.status() == leeway_domain::Status::Draft;
                    // the caller's right to change it is judged even when nothing changes; an
                    // identical repeat happens nothing and writes nothing
                    let mut change = workflow::apply(e, &dctx, Operation::Update(patch.clone()), facts)?;
                    if submit {
                        let then = workflow::apply(&change.after, &dctx, Operation::Submit, facts)?;
                        change.happened.extend(then.happened);
                        change.after = then.after;
                    }
                    Ok(change)
                },
                |e| respond(&st, &c, now, e, StatusCode::OK),
            );
            return match updated {
                // the holder is not visible to the caller: the reference is taken
                Err(leeway_persistence::StoreError::NotFound) => {
                    Err(leeway_persistence::StoreError::DuplicateExternalRef {
                        system: system.clone(),
                        id: external_id.clone(),
                        holder: None,
                    })
                }
                other => other.map(|o| (o, false)),
            };
        }
        Err(leeway_persistence::StoreError::DuplicateExternalRef {
            system: system.clone(),
            id: external_id.clone(),
            holder: None,
        })
    })
    .await?
    .map_err(upsert_error)?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(match outcome {
        Outcome::Done(e) => to_http(respond(&state, &caller, now, &e, status), false),
        Outcome::Replayed(r) => to_http(r, true),
    })
}
