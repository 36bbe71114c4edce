//! Streamed exports of the exceptions a caller may see, with the list's filters: NDJSON (one
//! exception per line, as `GET /v1/exceptions/{id}` shows it) and CSV (the columns an import
//! takes). Pages of [`PAGE`] rows are read and written one at a time, so memory stays flat
//! however many rows go out.

use actix_web::http::header::{CONTENT_DISPOSITION, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, get, web};
use chrono::{DateTime, SecondsFormat, Utc};
use leeway_domain::kinds::Role;
use leeway_domain::record::Exception;
use leeway_persistence::ListQuery;
use utoipa::IntoParams;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::routes::exceptions::json::ExceptionView;
use crate::routes::exceptions::query;
use crate::routes::oscal;

/// Rows read and written per page.
pub const PAGE: u32 = 100;
/// Controls an export row carries (`control_1_*` .. `control_5_*`).
pub const CONTROLS: usize = 5;

/// The CSV columns: the create body's fields (lists `;`-separated), the first external
/// reference, up to five controls, then the status and creation time an import of history
/// takes.
pub fn csv_header() -> Vec<String> {
    let mut h: Vec<String> = [
        "title",
        "category",
        "policy_id",
        "control_ids",
        "assets",
        "business_unit",
        "justification",
        "business_impact",
        "risk_owner",
        "priority",
        "starts_at",
        "expires_at",
        "remediation_plan",
        "remediation_due",
        "tags",
        "external_system",
        "external_id",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for i in 1..=CONTROLS {
        for part in ["description", "kind", "effectiveness"] {
            h.push(format!("control_{i}_{part}"));
        }
    }
    h.extend(["key".to_owned(), "status".to_owned(), "created_at".to_owned()]);
    h
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true)).unwrap_or_default()
}

fn csv_row(e: &Exception, now: DateTime<Utc>) -> Vec<String> {
    let f = &e.fields;
    let first_ref = f.external_refs.first();
    let mut row = vec![
        f.title.clone(),
        f.category.as_str().to_owned(),
        f.policy_id.clone(),
        f.control_ids.join(";"),
        f.assets.join(";"),
        f.business_unit.clone(),
        f.justification.clone(),
        f.business_impact.clone().unwrap_or_default(),
        f.risk_owner.to_string(),
        f.priority.as_str().to_owned(),
        time(f.starts_at),
        time(f.expires_at),
        f.remediation_plan.clone().unwrap_or_default(),
        f.remediation_due.map(|d| d.to_string()).unwrap_or_default(),
        f.tags.join(";"),
        first_ref.map(|r| r.system.clone()).unwrap_or_default(),
        first_ref.map(|r| r.id.clone()).unwrap_or_default(),
    ];
    for i in 0..CONTROLS {
        match e.controls.get(i) {
            Some(c) => {
                row.extend([c.description.clone(), c.kind.as_str().to_owned(), c.effectiveness.as_str().to_owned()])
            }
            None => row.extend([String::new(), String::new(), String::new()]),
        }
    }
    row.extend([e.key.to_string(), e.effective_status(now).as_str().to_owned(), time(Some(e.created_at))]);
    row
}

/// The format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// One exception per line, as `GET /v1/exceptions/{id}` shows it.
    Ndjson,
    /// The columns an import takes.
    Csv,
    /// An OSCAL 1.1.3 Plan of Action and Milestones document: each exception a risk and a
    /// POA&M item.
    Oscal,
}

/// The format; every filter of `GET /v1/exceptions` applies too (not `cursor` or `limit`:
/// an export is every matching row, in the list's order).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// `ndjson`, `csv` or `oscal`.
    pub format: ExportFormat,
}

/// Every exception the caller may see that matches the list's filters, streamed.
///
/// Roles: `auditor`, `analyst`, `compliance`, `ciso`, `admin`, `integration`. Rows are read
/// and sent a page at a time, so the server's memory stays flat however many go out.
#[utoipa::path(
    tag = "exceptions",
    security(("bearer" = [])),
    params(ExportParams, query::ListParams),
    responses(
        (status = 200, description = "The export", content(
            (String = "application/x-ndjson"),
            (String = "text/csv"),
            (Object = "application/json"),
        )),
        (status = 400, description = "Bad parameter (`invalid_query`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A role that may not export (`forbidden`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/exports/exceptions")]
pub async fn export_exceptions(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    const MAY: [Role; 6] = [Role::Auditor, Role::Analyst, Role::Compliance, Role::Ciso, Role::Admin, Role::Integration];
    if !MAY.iter().any(|r| caller.0.has(*r)) {
        return Err(ApiError::needs_roles(
            "exports are for auditor, analyst, compliance, ciso, admin or integration",
            &MAY,
        ));
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string())
        .map_err(|e| ApiError::new(crate::error::ProblemCode::InvalidQuery, format!("invalid query string: {e}")))?;
    let mut format = None;
    let mut rest: Vec<(String, String)> = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "format" if format.is_none() => {
                format = Some(match v.as_str() {
                    "ndjson" => ExportFormat::Ndjson,
                    "csv" => ExportFormat::Csv,
                    "oscal" => ExportFormat::Oscal,
                    _ => return Err(ApiError::query("format", "must be one of: ndjson, csv, oscal")),
                });
            }
            "format" => return Err(ApiError::query("format", "given more than once")),
            "cursor" | "limit" => return Err(ApiError::query(&k, "an export is every matching row: no paging")),
            // a row changed during the export would move in an updated_at order: sent twice,
            // or never
            "sort" if v.contains("updated_at") => {
                return Err(ApiError::query("sort", "an export runs in creation order: created_at or -created_at"));
            }
            _ => rest.push((k, v)),
        }
    }
    let format = format.ok_or_else(|| ApiError::query("format", "is required: ndjson, csv or oscal"))?;
    let now = state.clock.now();
    let rest = serde_urlencoded::to_string(&rest).map_err(|e| ApiError::internal(&e))?;
    let (mut q, _) = query::parse(&rest, &caller.0, now)?;
    q.limit = PAGE;
    if format == ExportFormat::Oscal {
        return Ok(attachment("application/json", "exceptions-poam.json").streaming(oscal(state, q, now)));
    }
    let actor = caller.0.clone();
    let header = (format == ExportFormat::Csv).then(|| {
        let mut w = csv::Writer::from_writer(Vec::new());
        let _ = w.write_record(csv_header());
        w.into_inner().unwrap_or_default()
    });
    // each step reads one page and writes it; the next position rides along
    let pages = futures_util::stream::unfold(Some(q), move |q: Option<ListQuery>| {
        let (state, actor) = (state.clone(), actor.clone());
        async move {
            let q = q?;
            let st = state.clone();
            let read = q.clone();
            let page = match web::block(move || st.store.list(&read)).await {
                Ok(Ok(page)) => page,
                Ok(Err(e)) => return Some((Err(ApiError::from(e)), None)),
                Err(e) => return Some((Err(ApiError::internal(&e)), None)),
            };
            let mut out: Vec<u8> = Vec::with_capacity(page.items.len().saturating_mul(2048));
            match format {
                ExportFormat::Ndjson => {
                    for e in &page.items {
                        let view = ExceptionView::render(e, &actor, &state.policy, now);
                        if let Err(e) = serde_json::to_writer(&mut out, &view) {
                            return Some((Err(ApiError::internal(&e)), None));
                        }
                        out.push(b'\n');
                    }
                }
                ExportFormat::Csv | ExportFormat::Oscal => {
                    let mut w = csv::Writer::from_writer(out);
                    for e in &page.items {
                        if let Err(e) = w.write_record(csv_row(e, now)) {
                            return Some((Err(ApiError::internal(&e)), None));
                        }
                    }
                    out = match w.into_inner() {
                        Ok(o) => o,
                        Err(e) => return Some((Err(ApiError::internal(&e)), None)),
                    };
                }
            }
            let next = page.next.map(|after| ListQuery { after: Some(after), ..q });
            Some((Ok(web::Bytes::from(out)), next))
        }
    });
    let head = futures_util::stream::iter(header.map(|h| Ok::<_, ApiError>(web::Bytes::from(h))));
    let body = futures_util::StreamExt::chain(head, pages);
    let (content_type, name) = match format {
        ExportFormat::Ndjson => ("application/x-ndjson", "exceptions.ndjson"),
        ExportFormat::Csv | ExportFormat::Oscal => ("text/csv; charset=utf-8", "exceptions.csv"),
    };
    Ok(attachment(content_type, name).streaming(body))
}

fn attachment(content_type: &str, name: &str) -> actix_web::HttpResponseBuilder {
    let mut res = HttpResponse::Ok();
    res.content_type(content_type.to_owned());
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        res.insert_header((CONTENT_DISPOSITION, v));
    }
    res
}

/// Where an OSCAL export stands: the risks, then the POA&M items, of the same rows.
struct Walk {
    q: ListQuery,
    first: ListQuery,
    items: bool,
    /// Risks written, sorted by id: the items pass writes an item only for those, so every
    /// item's risk is in the document even when rows change between the passes.
    risks: Vec<uuid::Uuid>,
    /// Items written.
    written: u64,
}

/// The OSCAL POA&M, streamed in two passes over the list: every risk, then every item.
fn oscal(
    state: web::Data<AppState>,
    q: ListQuery,
    now: DateTime<Utc>,
) -> impl futures_util::Stream<Item = Result<web::Bytes, ApiError>> {
    let head = oscal::head(uuid::Uuid::new_v4(), now);
    let start = Walk { q: q.clone(), first: q, items: false, risks: Vec::new(), written: 0 };
    let pages = futures_util::stream::unfold(Some(start), move |walk: Option<Walk>| {
        let state = state.clone();
        async move {
            let mut walk = walk?;
            let st = state.clone();
            let (read, risks) = (walk.q.clone(), !walk.items);
            let page = web::block(move || {
                let page = st.store.list(&read)?;
                let ids: Vec<_> = page.items.iter().map(|e| e.id).collect();
                let changes = if risks { st.store.status_changes(&ids)? } else { Vec::new() };
                Ok::<_, leeway_persistence::StoreError>((page, changes))
            })
            .await;
            let (page, changes) = match page {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => return Some((Err(ApiError::from(e)), None)),
                Err(e) => return Some((Err(ApiError::internal(&e)), None)),
            };
            let mut out = String::new();
            for e in &page.items {
                let part = if walk.items {
                    if walk.risks.binary_search(&e.id.0).is_err() {
                        continue;
                    }
                    out.push_str(if walk.written == 0 { ",\"poam-items\":[" } else { "," });
                    walk.written = walk.written.saturating_add(1);
                    oscal::item(e)
                } else {
                    out.push_str(if walk.risks.is_empty() { ",\"risks\":[" } else { "," });
                    walk.risks.push(e.id.0);
                    let id = e.id.0.to_string();
                    let mine: Vec<_> = changes.iter().filter(|c| c.entry.exception_id == id).collect();
                    oscal::risk(e, &mine, now)
                };
                out.push_str(&part.to_string());
            }
            let next = match page.next {
                Some(after) => Some(Walk { q: ListQuery { after: Some(after), ..walk.q.clone() }, ..walk }),
                None if !walk.items => {
                    if !walk.risks.is_empty() {
                        out.push(']');
                    }
                    walk.risks.sort_unstable();
                    Some(Walk { q: walk.first.clone(), items: true, ..walk })
                }
                None => {
                    // OSCAL wants at least one item
                    if walk.written == 0 {
                        out.push_str(",\"poam-items\":[");
                        out.push_str(&oscal::no_item(now).to_string());
                    }
                    out.push_str(oscal::TAIL);
                    None
                }
            };
            Some((Ok(web::Bytes::from(out)), next))
        }
    });
    futures_util::StreamExt::chain(futures_util::stream::iter([Ok(web::Bytes::from(head))]), pages)
}
