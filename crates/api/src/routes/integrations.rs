//! What the systems around Leeway use: webhook subscriptions and their delivery log, the
//! change feed, and coverage for SIEMs and CI/CD gates.

pub mod json;

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, delete, get, patch, post, web};
use base64::Engine;
use chrono::{DateTime, Utc};
use leeway_domain::kinds::Role;
use leeway_persistence::{DeliveryQuery, Webhook};
use rand::RngCore;
use utoipa::IntoParams;

use crate::AppState;
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::delivery;
use crate::error::{ApiError, Problem, ProblemCode};
use crate::routes::exceptions::query::{text, time};
use json::*;

/// Most subscriptions one subject may hold.
pub const MAX_WEBHOOKS_PER_OWNER: i64 = 50;
/// Largest page of the feed, of subscriptions and of deliveries.
pub const MAX_PAGE: i64 = 500;
/// Default page.
pub const DEFAULT_PAGE: i64 = 100;
/// Largest page of deliveries (each carries its attempts and the last answer, up to 64 KiB).
pub const MAX_DELIVERY_PAGE: i64 = 100;

/// The query parameters of `raw`, each named at most once and each one known.
pub(crate) fn params(raw: &str, known: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
        .map_err(|e| ApiError::new(ProblemCode::InvalidQuery, format!("invalid query string: {e}")))?;
    let mut out = HashMap::new();
    for (k, v) in pairs {
        if !known.contains(&k.as_str()) {
            return Err(ApiError::query(&k, format!("unknown parameter; known: {}", known.join(", "))));
        }
        if out.insert(k.clone(), v).is_some() {
            return Err(ApiError::query(&k, "given more than once"));
        }
    }
    Ok(out)
}

/// `limit`: 1..`max`, default [`DEFAULT_PAGE`] (or `max` when smaller).
pub(crate) fn limit(p: &HashMap<String, String>, max: i64) -> Result<i64, ApiError> {
    match p.get("limit") {
        None => Ok(DEFAULT_PAGE.min(max)),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::query("limit", format!("must be 1..{max}"))),
    }
}

/// The position after a full page of `n` (its last item's), or none after a shorter one.
pub(crate) fn next_after<T, K>(items: &[T], n: i64, key: impl Fn(&T) -> K) -> Option<K> {
    if i64::try_from(items.len()).unwrap_or(0) == n { items.last().map(key) } else { None }
}

/// A sequence position: a whole number >= 0.
pub(crate) fn seq(p: &HashMap<String, String>, name: &str) -> Result<Option<i64>, ApiError> {
    p.get(name)
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::query(name, "must be a whole number >= 0"))
        })
        .transpose()
}

/// Subscriptions are for `admin` (every one) and `integration` (its own).
fn webhook_owner(caller: &Caller) -> Result<Option<String>, ApiError> {
    if caller.0.has(Role::Admin) {
        Ok(None)
    } else if caller.0.has(Role::Integration) {
        Ok(Some(caller.0.subject.to_string()))
    } else {
        Err(ApiError::forbidden("webhooks are managed by admin or integration"))
    }
}

fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

async fn checked_url(state: &AppState, url: &str) -> Result<(), ApiError> {
    delivery::check_url(url, state.webhook_allow_private)
        .await
        .map(|_| ())
        .map_err(|why| ApiError::new(ProblemCode::WebhookUrlRefused, format!("url: {why}")).with("field", "url"))
}

fn with_secret(w: &Webhook) -> WebhookWithSecret {
    WebhookWithSecret { webhook: WebhookView::from(w), secret: w.secret.clone() }
}

/// Subscribe a receiver to integration events (`admin`, `integration`).
///
/// Every event committed from now on whose type matches is delivered to `url`, signed per
/// Standard Webhooks with the `secret` answered here (and on rotation, never on GET).
#[utoipa::path(
    tag = "integrations",
    security(("bearer" = [])),
    request_body = CreateWebhook,
    responses(
        (status = 201, description = "Subscribed; keep the secret", body = WebhookWithSecret, headers(("Location" = String))),
        (status = 403, description = "Not admin or integration (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (`validation_failed`), a URL that is not http(s) or reaches a private address (`webhook_url_refused`), or 50 subscriptions held already (`limit_exceeded`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/webhooks")]
pub async fn create_webhook(
    state: web::Data<AppState>,
    caller: Caller,
    body: JsonBody<CreateWebhook>,
) -> Result<HttpResponse, ApiError> {
    webhook_owner(&caller)?;
    let input = body.value;
    checked_url(&state, &input.url).await?;
    // every subscription multiplies every event: one owner cannot make them without bound
    let (st, owner) = (state.clone(), caller.0.subject.to_string());
    let held = web::block(move || st.store.count_webhooks(&owner)).await??;
    if held >= MAX_WEBHOOKS_PER_OWNER {
        return Err(ApiError::new(
            ProblemCode::LimitExceeded,
            format!("at most {MAX_WEBHOOKS_PER_OWNER} subscriptions per owner; delete one first"),
        )
        .with("scope", "webhooks")
        .with("limit", MAX_WEBHOOKS_PER_OWNER));
    }
    let now = leeway_domain::time::truncate(state.clock.now()).naive_utc();
    let w = Webhook {
        id: uuid::Uuid::now_v7().to_string(),
        url: input.url,
        event_types: input
            .event_types
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| ApiError::internal(&e))?,
        description: input.description,
        enabled: true,
        disabled_reason: None,
        secret: new_secret(),
        created_by: caller.0.subject.to_string(),
        created_at: now,
        updated_at: now,
    };
    let st = state.clone();
    let saved = w.clone();
    web::block(move || st.store.create_webhook(&saved)).await??;
    Ok(HttpResponse::Created().insert_header(("location", format!("/v1/webhooks/{}", w.id))).json(with_secret(&w)))
}

/// Page of `after` and `limit`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WebhookListParams {
    /// The last id of the previous page (a UUID).
    #[param(pattern = "^[0-9a-fA-F-]{1,64}$")]
    pub after: Option<String>,
    /// 1..500, default 100.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// Subscriptions: every one for `admin`, its own for `integration`.
#[utoipa::path(
    tag = "integrations",
    security(("bearer" = [])),
    params(WebhookListParams),
    responses(
        (status = 200, description = "A page", body = WebhookPage),
        (status = 400, description = "Bad parameter (`invalid_query`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not admin or integration (`forbidden`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/webhooks")]
pub async fn list_webhooks(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let owner = webhook_owner(&caller)?;
    let p = params(req.query_string(), &["after", "limit"])?;
    let n = limit(&p, MAX_PAGE)?;
    let after = p
        .get("after")
        .map(|a| {
            if a.is_empty() || a.len() > 64 || !a.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                Err(ApiError::query("after", "must be the id of a subscription"))
            } else {
                Ok(a.clone())
            }
        })
        .transpose()?;
    let st = state.clone();
    let items = web::block(move || st.store.webhooks(owner.as_deref(), after.as_deref(), n)).await??;
    let next_after = next_after(&items, n, |w| w.id.clone());
    Ok(HttpResponse::Ok().json(WebhookPage { items: items.iter().map(WebhookView::from).collect(), next_after }))
}

/// One subscription, without its secret.
#[utoipa::path(
    tag = "integrations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The subscription's id")),
    responses(
        (status = 200, description = "The subscription", body = WebhookView),
        (status = 403, description = "Not admin or integration (`forbidden`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/webhooks/{id}")]
pub async fn get_webhook(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let owner = webhook_owner(&caller)?;
    let st = state.clone();
    let w = web::block(move || st.store.webhook(&id, owner.as_deref())).await??;
    Ok(HttpResponse::Ok().json(WebhookView::from(&w)))
}

/// Change a subscription's URL, filter, description, or enable or disable it.
#[utoipa::path(
    tag = "integrations",
    security(("bearer" = [])),
    request_body(content = WebhookPatch, content_type = "application/merge-patch+json"),
    params(("id" = String, Path, description = "The subscription's id")),
    responses(
        (status = 200, description = "Changed", body = WebhookView),
        (status = 403, description = "Not admin or integration (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (`validation_failed`) or a refused URL (`webhook_url_refused`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[patch("/webhooks/{id}")]
pub async fn patch_webhook(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    body: JsonBody<WebhookPatch>,
) -> Result<HttpResponse, ApiError> {
    let owner = webhook_owner(&caller)?;
    let change = body.value;
    if let Some(url) = &change.url {
        checked_url(&state, url).await?;
    }
    let now = state.clock.now();
    let st = state.clone();
    let w = web::block(move || st.store.update_webhook(&id, owner.as_deref(), &change, now)).await??;
    Ok(HttpResponse::Ok().json(WebhookView::from(&w)))
}

/// Unsubscribe: the subscription and its delivery log are deleted.
#[utoipa::path(
    tag = "integrations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The subscription's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not admin or integration (`forbidden`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/webhooks/{id}")]
pub async fn delete_webhook(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let owner = webhook_owner(&caller)?;
    let st = state.clone();
    web::block(move || st.store.delete_webhook(&id, owner.as_deref())).await??;
    Ok(HttpResponse::NoContent().finish())
}

/// Rotate the signing secret: the new one signs every delivery from now on.
#[utoipa::path(
    tag = "integrations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The subscription's id")),
    responses(
        (status = 200, description = "The new secret", body = WebhookWithSecret),
        (status = 403, description = "Not admin or integration (`forbidden`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/webhooks/{id}/secret")]
pub async fn rotate_webhook_secret(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let owner = webhook_owner(&caller)?;
    let now = state.clock.now();
    let st = state.clone();
    let w = web::block(move || st.store.rotate_webhook_secret(&id, owner.as_deref(), &new_secret(), now)).await??;
    Ok(HttpResponse::Ok().json(with_secret(&w)))
}

/// Filter and page of the delivery log.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryListParams {
    /// Only deliveries in this status.
    pub status: Option<DeliveryStatus>,
    /// The last `event_seq` of the previous page.
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// 1..100, default 100.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// A subscription's deliveries with every attempt, in feed order.
#[utoipa::path(
    tag = "integrations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The subscription's id"), DeliveryListParams),
    responses(
        (status = 200, description = "A page", body = DeliveryPage),
        (status = 400, description = "Bad parameter (`invalid_query`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not admin or integration (`forbidden`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/webhooks/{id}/deliveries")]
pub async fn list_deliveries(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let owner = webhook_owner(&caller)?;
    let p = params(req.query_string(), &["status", "after", "limit"])?;
    let status = p
        .get("status")
        .map(|s| match s.as_str() {
            "pending" | "succeeded" | "failed" => Ok(s.clone()),
            _ => Err(ApiError::query("status", "must be one of: pending, succeeded, failed")),
        })
        .transpose()?;
    let n = limit(&p, MAX_DELIVERY_PAGE)?;
    let q = DeliveryQuery { status, after: seq(&p, "after")?, limit: n };
    let st = state.clone();
    let items = web::block(move || {
        st.store.webhook(&id, owner.as_deref())?;
        st.store.deliveries(&id, &q)
    })
    .await??;
    let next_after = next_after(&items, n, |d| d.event_seq);
    Ok(HttpResponse::Ok().json(DeliveryPage { items: items.iter().map(DeliveryView::from).collect(), next_after }))
}

/// Send a failed delivery once more, now. Later events of the same exception wait for it.
#[utoipa::path(
    tag = "integrations",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The subscription's id"),
        ("delivery_id" = String, Path, description = "The delivery's id"),
    ),
    responses(
        (status = 202, description = "Queued", body = DeliveryView),
        (status = 403, description = "Not admin or integration (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The delivery is not failed (`delivery_not_failed`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/webhooks/{id}/deliveries/{delivery_id}/retry")]
pub async fn retry_delivery(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let owner = webhook_owner(&caller)?;
    let (id, delivery_id) = path.into_inner();
    let now = state.clock.now();
    let last_try = i32::try_from(state.policy.webhook_retry_schedule_seconds.len()).unwrap_or(i32::MAX);
    let st = state.clone();
    let queued = web::block(move || {
        st.store.webhook(&id, owner.as_deref())?;
        st.store.retry_delivery(&id, &delivery_id, last_try, now)
    })
    .await??;
    match queued {
        Some(d) => Ok(HttpResponse::build(StatusCode::ACCEPTED).json(DeliveryView::from(&d))),
        None => Err(ApiError::new(ProblemCode::DeliveryNotFailed, "only a failed delivery can be sent again")),
    }
}

/// Position and page size of the change feed.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedParams {
    /// The last `seq` seen; 0 or absent: from the start.
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// 1..500, default 100.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// The change feed: every integration event in `seq` order, for platforms that pull.
///
/// Poll with `after` = the last `seq` seen (`next_after`): no event is ever skipped, not even
/// one whose transaction committed after later ones were read (positions are handed out after
/// commit, one numbering at a time; see docs/integrations/README.md). Any role but a plain
/// requester.
#[utoipa::path(
    tag = "integrations",
    security(("bearer" = [])),
    params(FeedParams),
    responses(
        (status = 200, description = "A page", body = FeedPage),
        (status = 400, description = "Bad parameter (`invalid_query`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A plain requester (`forbidden`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/events")]
pub async fn feed(state: web::Data<AppState>, req: HttpRequest, caller: Caller) -> Result<HttpResponse, ApiError> {
    if caller.0.is_restricted() {
        return Err(ApiError::forbidden("the change feed is for roles other than a plain requester"));
    }
    let p = params(req.query_string(), &["after", "limit"])?;
    let after = seq(&p, "after")?.unwrap_or(0);
    let n = limit(&p, MAX_PAGE)?;
    let st = state.clone();
    let events = web::block(move || st.store.feed(after, n)).await??;
    let next_after = events.last().map_or(after, |e| e.seq);
    let items = events
        .iter()
        .map(|e| FeedItem {
            seq: e.seq,
            type_: e.event_type.clone(),
            id: e.event_id.clone(),
            exception_id: e.exception_id.clone(),
            exception_key: e.exception.as_ref().ok().map(|x| x.key.to_string()),
            at: e.at,
            data: delivery::data(e, &state.policy),
            error: e.exception.as_ref().err().map(|why| format!("the stored exception does not read: {why}")),
        })
        .collect();
    Ok(HttpResponse::Ok().json(FeedPage { items, next_after }))
}

/// The question of `GET /v1/coverage`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CoverageParams {
    /// The asset; 1..200 characters.
    #[param(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*$")]
    pub asset: String,
    /// The control; absent: any control. 1..200 characters.
    #[param(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*$")]
    pub control_id: Option<String>,
    /// The moment (RFC 3339, 1970..9999); default now. A past moment is answered from
    /// history, exactly.
    #[param(pattern = "^(19[7-9][0-9]|[2-9][0-9]{3})-")]
    pub at: Option<DateTime<Utc>>,
}

fn answer(
    asset: &str,
    control_id: Option<&str>,
    at: DateTime<Utc>,
    found: &HashMap<String, Vec<leeway_persistence::Covering>>,
) -> CoverageView {
    let mut exceptions: Vec<CoveringView> = Vec::new();
    for c in found.get(asset).into_iter().flatten() {
        if control_id.is_some_and(|want| want != c.control_id) {
            continue;
        }
        // one entry per exception, however many of its controls matched
        if exceptions.last().is_some_and(|last| last.id == c.exception_id) {
            continue;
        }
        let key = u64::try_from(c.key_num)
            .ok()
            .and_then(leeway_domain::ids::ExceptionKey::new)
            .map(|k| k.to_string())
            .unwrap_or_default();
        exceptions.push(CoveringView {
            id: c.exception_id.clone(),
            key,
            status: c.status.clone(),
            risk_level: c.risk_level.clone(),
            expires_at: c.expires_at,
        });
    }
    CoverageView {
        asset: asset.to_owned(),
        control_id: control_id.map(str::to_owned),
        at,
        covered: !exceptions.is_empty(),
        exceptions,
    }
}

/// Is this asset covered for this control right now (or at `at`)? For SIEM suppression and
/// CI/CD gates: any authenticated caller; the answer carries no free text.
#[utoipa::path(
    tag = "integrations",
    security(("bearer" = [])),
    params(CoverageParams),
    responses(
        (status = 200, description = "The answer", body = CoverageView),
        (status = 400, description = "Bad parameter (`invalid_query`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/coverage")]
pub async fn coverage(state: web::Data<AppState>, req: HttpRequest, _caller: Caller) -> Result<HttpResponse, ApiError> {
    let p = params(req.query_string(), &["asset", "control_id", "at"])?;
    let asset = text("asset", p.get("asset").ok_or_else(|| ApiError::query("asset", "is required"))?)?;
    let control_id = p.get("control_id").map(|c| text("control_id", c)).transpose()?;
    let at = match p.get("at") {
        Some(v) => time("at", v)?,
        None => leeway_domain::time::truncate(state.clock.now()),
    };
    let st = state.clone();
    let a = asset.clone();
    let found = web::block(move || st.store.coverage(&[a.as_str()], at)).await??;
    Ok(HttpResponse::Ok().json(answer(&asset, control_id.as_deref(), at, &found)))
}

/// Up to 1,000 coverage questions at one moment, answered in the order asked, in one
/// statement.
#[utoipa::path(
    tag = "integrations",
    security(("bearer" = [])),
    request_body = CoverageBatch,
    responses(
        (status = 200, description = "The answers", body = CoverageAnswers),
        (status = 422, description = "Invalid fields (`validation_failed`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/coverage:batch")]
pub async fn coverage_batch(
    state: web::Data<AppState>,
    _caller: Caller,
    body: JsonBody<CoverageBatch>,
) -> Result<HttpResponse, ApiError> {
    let batch = body.value;
    let at = batch.at.unwrap_or_else(|| state.clock.now());
    let at = leeway_domain::time::truncate(at);
    let mut assets: Vec<String> = batch.items.iter().map(|q| q.asset.clone()).collect();
    assets.sort_unstable();
    assets.dedup();
    let st = state.clone();
    let found = web::block(move || {
        let refs: Vec<&str> = assets.iter().map(String::as_str).collect();
        st.store.coverage(&refs, at)
    })
    .await??;
    let items = batch.items.iter().map(|q| answer(&q.asset, q.control_id.as_deref(), at, &found)).collect();
    Ok(HttpResponse::Ok().json(CoverageAnswers { at, items }))
}

/// The outbound call every subscription receives, for the contract's `webhooks` section.
pub fn webhook_contract() -> utoipa::openapi::Paths {
    use utoipa::openapi::path::{OperationBuilder, ParameterBuilder, ParameterIn};
    use utoipa::openapi::request_body::RequestBodyBuilder;
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    use utoipa::openapi::{Content, HttpMethod, PathItem, PathsBuilder, Ref, Required, ResponseBuilder};
    let header = |name: &str, description: &str| {
        ParameterBuilder::new()
            .name(name)
            .parameter_in(ParameterIn::Header)
            .required(Required::True)
            .description(Some(description))
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
            .build()
    };
    let op = OperationBuilder::new()
        .summary(Some("An integration event, POSTed to each subscription whose filter matches"))
        .description(Some(
            "Standard Webhooks: sign `{webhook-id}.{webhook-timestamp}.{body}` with HMAC-SHA256 keyed by the \
             base64-decoded secret after `whsec_` and compare with each `v1,` entry of `webhook-signature`. \
             At least once, in order per exception; any 2xx is success, 410 disables the subscription, \
             anything else (or no answer in 10 s) is retried on the policy's `webhook_retry_schedule_seconds`.",
        ))
        .operation_id(Some("exception_event"))
        .tag("integrations")
        .parameter(header("webhook-id", "The event's id: the same on every retry; deduplicate on it"))
        .parameter(header("webhook-timestamp", "Unix seconds of this attempt; refuse more than 5 minutes off"))
        .parameter(header("webhook-signature", "Space-separated `v1,<base64 HMAC-SHA256>` entries"))
        .request_body(Some(
            RequestBodyBuilder::new()
                .content("application/json", Content::new(Some(Ref::from_schema_name("WebhookEvent"))))
                .required(Some(Required::True))
                .build(),
        ))
        .response("200", ResponseBuilder::new().description("Received (any 2xx)"))
        .response("410", ResponseBuilder::new().description("Gone: Leeway disables the subscription"))
        .build();
    PathsBuilder::new().path("exceptionEvent", PathItem::new(HttpMethod::Post, op)).build()
}
