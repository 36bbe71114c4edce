//! Bulk imports: a JSON array, NDJSON or CSV of create bodies, created or upserted by
//! external reference a batch at a time, with one result per row.
//!
//! Each row is checked against the create body's schema and parsed exactly as
//! `POST /v1/exceptions` does; the valid rows are then judged and written by the store in
//! batches of [`BATCH`] rows, one transaction each (see `leeway_persistence::Store::import_batch`).

use actix_web::http::header::CONTENT_TYPE;
use actix_web::{HttpRequest, HttpResponse, post, web};
use futures_util::StreamExt;
use leeway_domain::FieldError;
use leeway_domain::workflow::{self, Ctx, IMPORT_ROLES};
use leeway_persistence::{CallContext, IdempotencyClaim, ImportRow, Imported, Slot, StoredResponse};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Caller;
use crate::body::{IdempotencyHeader, IdempotencyKey, check};
use crate::error::{ApiError, Problem, ProblemCode, current_request_id};
use crate::routes::exceptions::json::{AssessBody, CreateException, Upsert, UpsertException};
use crate::routes::exceptions::unmergeable;
use crate::routes::exports::{CONTROLS, csv_header};

/// Most rows in one import.
pub const MAX_ROWS: usize = 10_000;
/// Most bytes in one import's body.
pub const MAX_BYTES: usize = 16 * 1024 * 1024;
/// Rows per transaction: a crash loses at most the batch in flight.
pub const BATCH: usize = 200;

/// What an import does with each row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportMode {
    /// Every row is a new exception (a row whose reference is held is invalid).
    Create,
    /// A row whose first external reference is held updates that exception, as
    /// `PUT /v1/exceptions/by-ref/{system}/{external_id}` does; the others are created.
    Upsert,
}

/// How an import runs.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportParams {
    /// `create` (default) or `upsert`.
    pub mode: Option<ImportMode>,
    /// Submit every row (drafts otherwise; a JSON row may also say `"submit": true`).
    pub submit: Option<bool>,
    /// Judge every row and write nothing: the answer is what a real run would answer now,
    /// without the ids and keys of rows that would be created.
    pub dry_run: Option<bool>,
    /// `admin` only, `create` mode: rows come in as they stood in the old tool, with `status`,
    /// `created_at`, `risk` (as `PUT .../risk` takes it) and `approvals`
    /// (`[{role, approver, approved_at, comment?}]`); CSV carries `status` and `created_at`.
    pub legacy: Option<bool>,
}

/// What became of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RowStatus {
    /// A new exception.
    Created,
    /// The exception holding the row's reference, changed.
    Updated,
    /// The exception holding the row's reference, already as the row says.
    Unchanged,
    /// Refused: see `errors`; nothing of the row was written.
    Invalid,
}

/// One reason a row was refused.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RowError {
    /// The field (for CSV, the column: `control_2_kind`, `external_id`), or `row` for the
    /// row as a whole.
    pub field: String,
    /// The problem code or field code, as the single-exception endpoints answer it.
    pub code: String,
    /// What to fix.
    pub message: String,
}

/// The result of one row, in input order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RowResult {
    /// 1-based: the array element, the NDJSON line, or the CSV record after the header.
    pub row: u64,
    /// What became of it.
    pub status: RowStatus,
    /// The exception's id (absent for invalid rows, and for rows a dry run would create).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// The exception's key, e.g. `EXC-000042` (likewise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Why the row is invalid.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<RowError>,
}

/// How many rows ended each way.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ImportTotals {
    /// Created.
    pub created: u64,
    /// Updated.
    pub updated: u64,
    /// Unchanged.
    pub unchanged: u64,
    /// Invalid.
    pub invalid: u64,
}

/// The answer of an import.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImportResult {
    /// One per row, in input order.
    pub results: Vec<RowResult>,
    /// The counts.
    pub totals: ImportTotals,
    /// True for a dry run: nothing was written.
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Ndjson,
    Csv,
}

fn format_of(req: &HttpRequest) -> Result<Format, ApiError> {
    let ct = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    match ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase().as_str() {
        "application/json" => Ok(Format::Json),
        "application/x-ndjson" => Ok(Format::Ndjson),
        "text/csv" => Ok(Format::Csv),
        _ => Err(ApiError::new(
            ProblemCode::UnsupportedMediaType,
            "send Content-Type: application/json (an array), application/x-ndjson or text/csv",
        )),
    }
}

fn too_large(detail: String) -> ApiError {
    ApiError::new(ProblemCode::PayloadTooLarge, detail).with("max_rows", MAX_ROWS).with("max_bytes", MAX_BYTES)
}

/// One input row before it is checked: its number and its create body, or why it has none.
type RawRow = (u64, Result<Value, Vec<RowError>>);

fn row_error(field: &str, code: &str, message: impl Into<String>) -> RowError {
    RowError { field: field.to_owned(), code: code.to_owned(), message: message.into() }
}

fn count_rows(n: usize) -> Result<(), ApiError> {
    if n > MAX_ROWS {
        return Err(too_large(format!("an import takes at most {MAX_ROWS} rows; split the file")));
    }
    Ok(())
}

/// A JSON array of at most [`MAX_ROWS`] rows, refused at the first element beyond (a body of
/// millions of tiny elements is not parsed whole first).
struct BoundedRows(Vec<Value>);

impl<'de> serde::Deserialize<'de> for BoundedRows {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Rows;
        impl<'de> serde::de::Visitor<'de> for Rows {
            type Value = BoundedRows;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of create bodies")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<BoundedRows, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<Value>()? {
                    if out.len() == MAX_ROWS {
                        return Err(serde::de::Error::custom(TOO_MANY));
                    }
                    out.push(v);
                }
                Ok(BoundedRows(out))
            }
        }
        d.deserialize_seq(Rows)
    }
}

const TOO_MANY: &str = "more rows than an import takes";

fn json_rows(body: &[u8]) -> Result<Vec<RawRow>, ApiError> {
    let rows = match serde_json::from_slice::<BoundedRows>(body) {
        Ok(rows) => rows.0,
        Err(e) if e.to_string().starts_with(TOO_MANY) => {
            return Err(too_large(format!("an import takes at most {MAX_ROWS} rows; split the file")));
        }
        // valid JSON, but not an array
        Err(e) if e.is_data() && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() => {
            return Err(ApiError::validation(vec![FieldError::new(
                "body",
                "invalid_type",
                "a JSON import is an array of create bodies",
            )]));
        }
        Err(e) => return Err(ApiError::new(ProblemCode::MalformedJson, format!("the body is not valid JSON: {e}"))),
    };
    Ok(rows.into_iter().zip(1u64..).map(|(v, n)| (n, Ok(v))).collect())
}

fn ndjson_rows(body: &[u8]) -> Result<Vec<RawRow>, ApiError> {
    let mut out = Vec::new();
    for (line, n) in body.split(|b| *b == b'\n').zip(1u64..) {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        count_rows(out.len().saturating_add(1))?;
        let parsed = serde_json::from_slice::<Value>(line)
            .map_err(|e| vec![row_error("row", "malformed_json", format!("the line is not valid JSON: {e}"))]);
        out.push((n, parsed));
    }
    Ok(out)
}

/// The CSV columns that are lists, `;`-separated.
const LIST_COLUMNS: [&str; 3] = ["control_ids", "assets", "tags"];
/// Columns an export writes that an import does not take: the server sets them.
const SERVER_COLUMNS: [&str; 3] = ["key", "status", "created_at"];

fn csv_rows(body: &[u8], legacy: bool) -> Result<Vec<RawRow>, ApiError> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(body);
    let known = csv_header();
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| ApiError::new(ProblemCode::MalformedBody, format!("the CSV header cannot be read: {e}")))?
        .iter()
        .map(|h| h.trim().to_owned())
        .collect();
    let mut bad = Vec::new();
    for (i, h) in header.iter().enumerate() {
        if !known.contains(h) {
            bad.push(FieldError::new(
                format!("header[{i}]"),
                "unknown_column",
                format!("unknown column {h:?}; the columns are: {}", known.join(", ")),
            ));
        } else if header[..i].contains(h) {
            bad.push(FieldError::new(format!("header[{i}]"), "duplicate_column", format!("column {h:?} is repeated")));
        }
    }
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
    let mut out = Vec::new();
    for (record, n) in reader.records().zip(1u64..) {
        count_rows(out.len().saturating_add(1))?;
        let value = match record {
            Err(e) => Err(vec![row_error("row", "malformed_csv", format!("the record cannot be read: {e}"))]),
            Ok(r) if r.len() != header.len() => Err(vec![row_error(
                "row",
                "malformed_csv",
                format!("{} fields where the header has {}", r.len(), header.len()),
            )]),
            Ok(r) => Ok(csv_body(&header, &r, legacy)),
        };
        out.push((n, value));
    }
    Ok(out)
}

/// A CSV record as a create body: empty cells are absent, lists split on `;`, controls and the
/// external reference gathered into their objects.
fn csv_body(header: &[String], record: &csv::StringRecord, legacy: bool) -> Value {
    let mut body = Map::new();
    let mut controls: Vec<Map<String, Value>> = Vec::new();
    let mut reference = Map::new();
    for (column, cell) in header.iter().zip(record.iter()) {
        let cell = cell.trim();
        let history = legacy && (column == "status" || column == "created_at");
        if cell.is_empty() || (SERVER_COLUMNS.contains(&column.as_str()) && !history) {
            continue;
        }
        if let Some((i, part)) = control_column(column) {
            if controls.len() <= i {
                controls.resize_with(i.saturating_add(1), Map::new);
            }
            if let Some(c) = controls.get_mut(i) {
                c.insert(part.to_owned(), Value::String(cell.to_owned()));
            }
        } else if column == "external_system" {
            reference.insert("system".to_owned(), Value::String(cell.to_owned()));
        } else if column == "external_id" {
            reference.insert("id".to_owned(), Value::String(cell.to_owned()));
        } else if LIST_COLUMNS.contains(&column.as_str()) {
            let items = cell.split(';').map(str::trim).filter(|s| !s.is_empty());
            body.insert(column.clone(), Value::Array(items.map(|s| Value::String(s.to_owned())).collect()));
        } else {
            body.insert(column.clone(), Value::String(cell.to_owned()));
        }
    }
    if !controls.is_empty() {
        body.insert("controls".to_owned(), Value::Array(controls.into_iter().map(Value::Object).collect()));
    }
    if !reference.is_empty() {
        body.insert("external_refs".to_owned(), Value::Array(vec![Value::Object(reference)]));
    }
    Value::Object(body)
}

/// `control_2_kind` -> (1, "kind").
fn control_column(column: &str) -> Option<(usize, &str)> {
    let rest = column.strip_prefix("control_")?;
    let (n, part) = rest.split_once('_')?;
    let n: usize = n.parse().ok()?;
    (1..=CONTROLS).contains(&n).then(|| (n - 1, part))
}

/// A field as the input names it: for CSV, the column it came from.
fn rename(format: Format, field: String) -> String {
    if format == Format::Csv { csv_field(&field) } else { field }
}

/// A field of the create body as the CSV column it came from.
fn csv_field(field: &str) -> String {
    if let Some(rest) = field.strip_prefix("controls[")
        && let Some((i, part)) = rest.split_once("].")
        && let Ok(i) = i.parse::<usize>()
    {
        return format!("control_{}_{part}", i.saturating_add(1));
    }
    if let Some(rest) = field.strip_prefix("external_refs[0]") {
        return match rest {
            ".system" => "external_system".to_owned(),
            ".id" => "external_id".to_owned(),
            _ => "external_id".to_owned(),
        };
    }
    match field.split_once('[') {
        Some((list, _)) if LIST_COLUMNS.contains(&list) => list.to_owned(),
        _ => field.to_owned(),
    }
}

/// A refusal of one row as row errors: each invalid field, or the problem as a whole under
/// the field it concerns.
fn refusal(e: ApiError) -> Vec<RowError> {
    let p = e.problem();
    if !p.errors.is_empty() {
        return p.errors.into_iter().map(|f| RowError { field: f.field, code: f.code, message: f.message }).collect();
    }
    let field = match p.code.as_str() {
        "duplicate_external_reference" => "external_refs",
        "duration_exceeds_policy" => "expires_at",
        "limit_exceeded" => match p.extra.get("scope").and_then(Value::as_str) {
            Some("business_unit") => "business_unit",
            _ => "assets",
        },
        _ => "row",
    };
    vec![RowError { field: field.to_owned(), code: p.code, message: p.detail }]
}

/// Whether `controls` are the exception's first ones (description, kind, effectiveness): what
/// a CSV export of it carries.
fn same_first_controls(e: &leeway_domain::record::Exception, controls: &[leeway_domain::record::ControlSpec]) -> bool {
    controls.len() <= e.controls.len()
        && controls
            .iter()
            .zip(&e.controls)
            .all(|(n, c)| n.description == c.description && n.kind == c.kind && n.effectiveness == c.effectiveness)
}

/// A checked row, ready for the store.
#[derive(Debug, Clone)]
struct Checked {
    row: u64,
    upsert: Upsert,
    legacy: Option<History>,
    /// From CSV, which carries one reference and five controls: merged, the row adds its
    /// reference rather than replacing the list, and its controls need only match the
    /// exception's first ones.
    csv: bool,
}

/// What a legacy row adds to a create body, parsed.
#[derive(Debug, Clone)]
struct History {
    status: leeway_domain::Status,
    created_at: chrono::DateTime<chrono::Utc>,
    risk: Option<crate::routes::exceptions::json::Assessed>,
    approvals: Vec<workflow::LegacyApproval>,
    original: Value,
}

/// One approval of a legacy row, as sent.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalRow {
    role: String,
    approver: String,
    approved_at: chrono::DateTime<chrono::Utc>,
    #[serde(default)]
    comment: Option<String>,
}

/// Takes the legacy members out of `value` (what is left is a create body) and parses them.
fn history(
    contract: &crate::contract::Contract,
    value: &mut Value,
) -> Result<Result<History, Vec<FieldError>>, ApiError> {
    let Value::Object(map) = value else { return Ok(Err(Vec::new())) };
    let mut take = |k: &str| map.remove(k);
    let (status, created_at, risk, approvals) = (take("status"), take("created_at"), take("risk"), take("approvals"));
    let original = json!({"status": status, "created_at": created_at, "risk": risk, "approvals": approvals});
    let mut errors = Vec::new();
    let status = match status.as_ref().and_then(Value::as_str) {
        Some(s) => leeway_domain::Status::parse_field("status", s).map_err(|e| errors.push(e)).ok(),
        None => {
            errors.push(FieldError::new("status", "required", "a legacy row says where it stood"));
            None
        }
    };
    let created_at = match created_at.as_ref().and_then(Value::as_str) {
        Some(s) => match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) => leeway_domain::time::moment("created_at", t.with_timezone(&chrono::Utc))
                .map_err(|e| errors.push(e))
                .ok(),
            Err(_) => {
                errors.push(FieldError::new("created_at", "invalid_value", "an RFC 3339 date-time"));
                None
            }
        },
        None => {
            errors.push(FieldError::new("created_at", "required", "a legacy row says when it was created"));
            None
        }
    };
    let risk = match risk {
        None | Some(Value::Null) => None,
        Some(r) => match check::<AssessBody>(contract, "PUT", "/v1/exceptions/{id}/risk", r)? {
            Ok(a) => Some(a),
            Err(more) => {
                errors.extend(more.into_iter().map(|f| f.under("risk")));
                None
            }
        },
    };
    let mut parsed = Vec::new();
    if let Some(a) = approvals.filter(|a| !a.is_null()) {
        match serde_json::from_value::<Vec<ApprovalRow>>(a) {
            Err(e) => errors.push(FieldError::new(
                "approvals",
                "invalid_value",
                format!("[{{role, approver, approved_at, comment?}}]: {e}"),
            )),
            Ok(rows) => {
                for (i, a) in rows.into_iter().enumerate() {
                    let at = |f: &str| format!("approvals[{i}].{f}");
                    let role =
                        leeway_domain::kinds::Role::parse_field(&at("role"), &a.role).map_err(|e| errors.push(e)).ok();
                    let approver = leeway_domain::ids::Subject::parse(&at("approver"), &a.approver)
                        .map_err(|e| errors.push(e))
                        .ok();
                    if let (Some(role), Some(approver)) = (role, approver) {
                        parsed.push(workflow::LegacyApproval {
                            role,
                            approver,
                            approved_at: a.approved_at,
                            comment: a.comment,
                        });
                    }
                }
            }
        }
    }
    if !errors.is_empty() {
        return Ok(Err(errors));
    }
    match (status, created_at) {
        (Some(status), Some(created_at)) => Ok(Ok(History { status, created_at, risk, approvals: parsed, original })),
        _ => Ok(Err(errors)),
    }
}

async fn read_body(mut payload: web::Payload) -> Result<web::BytesMut, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::new(ProblemCode::MalformedBody, e.to_string()))?;
        if body.len().saturating_add(chunk.len()) > MAX_BYTES {
            return Err(too_large(format!("an import body is limited to {MAX_BYTES} bytes; split the file")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn flag(p: &std::collections::HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match p.get(name).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ApiError::query(name, "must be true or false")),
    }
}

/// Import exceptions in bulk.
///
/// Roles: `analyst`, `integration`, `admin`. The body is a JSON array of create bodies
/// (`application/json`), one per line (`application/x-ndjson`), or CSV (`text/csv`) whose
/// header names the create fields: `assets`, `control_ids` and `tags` `;`-separated,
/// `control_1_description`, `control_1_kind`, `control_1_effectiveness` .. `control_5_*`,
/// `external_system` and `external_id`; `key`, `status` and `created_at` (an export's) are
/// ignored, so an export imports again unchanged. At most 10,000 rows and 16 MiB.
///
/// Every row gets a result in input order; an invalid row writes nothing and leaves the others.
/// Rows are filed as an integration files them (the importer is the requester of record;
/// `on_behalf_of` names the person) and recorded as `exception.imported`. Rows commit 200 at
/// a time: a crash loses at most the batch in flight, and a re-run in `upsert` mode finishes
/// the job. Send `Idempotency-Key` to have a retry replay the answer.
#[utoipa::path(
    tag = "exceptions",
    security(("bearer" = [])),
    params(ImportParams, IdempotencyHeader),
    request_body(description = "The rows", content(
        (Vec<CreateException> = "application/json"),
        (String = "application/x-ndjson"),
        (String = "text/csv"),
    )),
    responses(
        (status = 200, description = "One result per row, and the totals", body = ImportResult),
        (status = 400, description = "A bad parameter (`invalid_query`), a body that is not JSON (`malformed_json`) or a CSV header that cannot be read (`malformed_body`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A role that may not import (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "More than 10,000 rows or 16 MiB (`payload_too_large`, with `max_rows` and `max_bytes`)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Another content type (`unsupported_media_type`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A JSON body that is not an array, or an unknown or repeated CSV column (`validation_failed`); a reused key (`idempotency_key_reused`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/imports")]
pub async fn import_exceptions(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    key: IdempotencyKey,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let Some(importer) = workflow::importer(&caller.0) else {
        return Err(ApiError::needs_roles("imports are for analyst, integration or admin", IMPORT_ROLES));
    };
    let p = crate::routes::integrations::params(req.query_string(), &["mode", "submit", "dry_run", "legacy"])?;
    let mode = match p.get("mode").map(String::as_str) {
        None | Some("create") => ImportMode::Create,
        Some("upsert") => ImportMode::Upsert,
        Some(_) => return Err(ApiError::query("mode", "must be create or upsert")),
    };
    let submit_all = flag(&p, "submit")?;
    let dry_run = flag(&p, "dry_run")?;
    let legacy = flag(&p, "legacy")?;
    if legacy && !caller.0.has(leeway_domain::kinds::Role::Admin) {
        return Err(ApiError::forbidden("a legacy import is for admin").with("required_roles", ["admin"]));
    }
    if legacy && (mode == ImportMode::Upsert || submit_all) {
        return Err(ApiError::query("legacy", "a legacy import creates, as the rows say: no mode=upsert or submit"));
    }
    let format = format_of(&req)?;
    let body = read_body(payload).await?;
    let claim = key.0.as_ref().filter(|_| !dry_run).map(|k| IdempotencyClaim {
        subject: caller.0.subject.to_string(),
        key: k.clone(),
        request_hash: hex::encode(Sha256::digest(
            [format!("POST /v1/imports?{}\n", req.query_string()).as_bytes(), &body].concat(),
        )),
    });
    let now = state.clock.now();
    if let Some(c) = claim.clone() {
        let st = state.clone();
        if let Some(stored) = web::block(move || st.store.recall(&c, now)).await?? {
            return Ok(replay(stored));
        }
    }
    let (st, options, body) = (state.clone(), Options { format, legacy, mode, submit_all }, body.freeze());
    let (mut results, valid) = web::block(move || prepare(&st.contract, &body, options)).await??;
    // batches, one transaction each; one blocking call per batch keeps the workers free
    let request_id = current_request_id();
    let importer = std::sync::Arc::new(importer);
    // a dry run judges every row in one transaction, so that later rows see what earlier
    // ones would have written, as in a real run
    let size = if dry_run { valid.len().max(1) } else { BATCH };
    for batch in valid.chunks(size) {
        let rows: Vec<ImportRow<Checked>> = batch.iter().map(|(_, r)| r.clone()).collect();
        let (st, c, a, rid) = (state.clone(), caller.clone(), importer.clone(), request_id.clone());
        let done = web::block(move || {
            let ctx = CallContext { actor: &c.0, request_id: rid.as_deref(), now };
            let dctx = Ctx { actor: &a, policy: &st.policy, now };
            st.store.import_batch(ctx, &rows, dry_run, |input, slot, facts| match slot {
                Slot::New(id, key) => match &input.legacy {
                    None => Ok(workflow::import_create(
                        &dctx,
                        id,
                        key,
                        input.upsert.new.clone(),
                        input.row,
                        &mut Uuid::now_v7,
                        facts,
                    )?),
                    Some(h) => Ok(workflow::import_legacy(
                        &dctx,
                        id,
                        key,
                        workflow::Legacy {
                            new: input.upsert.new.clone(),
                            status: h.status,
                            created_at: h.created_at,
                            risk: h.risk.as_ref().map(|r| r.input(Uuid::now_v7())),
                            approvals: h.approvals.clone(),
                            original: h.original.clone(),
                        },
                        input.row,
                        &mut Uuid::now_v7,
                        facts,
                    )?),
                },
                Slot::Existing(e) => {
                    let mut new = std::borrow::Cow::Borrowed(&input.upsert.new);
                    let mut patch = input.upsert.patch.clone();
                    if input.csv {
                        // the exception holds the row's reference (it was found by it): its
                        // other references stay; controls that match its first ones are no change
                        patch.external_refs = None;
                        if same_first_controls(e, &new.controls) {
                            new.to_mut().controls.clear();
                        }
                    }
                    let locked = unmergeable(e, &new);
                    if !locked.is_empty() {
                        return Err(leeway_domain::DomainError::Invalid(locked).into());
                    }
                    Ok(workflow::import_merge(e, &dctx, patch, new.submit, input.row, facts)?)
                }
            })
        })
        .await??;
        for ((i, r), outcome) in batch.iter().zip(done) {
            let row = r.input.row;
            // the id and key of a row a dry run would create are not known
            let landed = |status, e: &leeway_domain::record::Exception, known: bool| RowResult {
                row,
                status,
                id: known.then_some(e.id.0),
                key: known.then(|| e.key.to_string()),
                errors: Vec::new(),
            };
            let result = match outcome {
                Ok(Imported::Created(e)) => landed(RowStatus::Created, &e, !dry_run),
                Ok(Imported::Updated(e)) => landed(RowStatus::Updated, &e, true),
                Ok(Imported::Unchanged(e)) => landed(RowStatus::Unchanged, &e, true),
                Err(e) => RowResult {
                    row,
                    status: RowStatus::Invalid,
                    id: None,
                    key: None,
                    errors: refusal(e.into())
                        .into_iter()
                        .map(|f| RowError { field: rename(format, f.field), ..f })
                        .collect(),
                },
            };
            if let Some(slot) = results.get_mut(*i) {
                *slot = Some(result);
            }
        }
    }
    let results: Vec<RowResult> = results.into_iter().flatten().collect();
    let mut totals = ImportTotals::default();
    for r in &results {
        let n = match r.status {
            RowStatus::Created => &mut totals.created,
            RowStatus::Updated => &mut totals.updated,
            RowStatus::Unchanged => &mut totals.unchanged,
            RowStatus::Invalid => &mut totals.invalid,
        };
        *n = n.saturating_add(1);
    }
    let answer = StoredResponse {
        status: 200,
        body: serde_json::to_string(&ImportResult { results, totals, dry_run }).map_err(|e| ApiError::internal(&e))?,
        location: None,
        etag: None,
    };
    if let Some(c) = claim {
        let (st, kept) = (state.clone(), answer.clone());
        if let Some(first) = web::block(move || st.store.remember(&c, kept, now)).await?? {
            return Ok(replay(first));
        }
    }
    Ok(HttpResponse::Ok().content_type("application/json").body(answer.body))
}

/// What a request asks of its rows.
#[derive(Debug, Clone, Copy)]
struct Options {
    format: Format,
    legacy: bool,
    mode: ImportMode,
    submit_all: bool,
}

/// Rows as the store takes them, each at its index in the results.
type Prepared = (Vec<Option<RowResult>>, Vec<(usize, ImportRow<Checked>)>);

/// Splits the body into rows and checks each as a create body (on a blocking thread: up to
/// 16 MiB of parsing and 10,000 schema checks): the invalid ones get their result now, the
/// valid ones go to the store.
fn prepare(contract: &crate::contract::Contract, body: &[u8], o: Options) -> Result<Prepared, ApiError> {
    let Options { format, legacy, mode, submit_all } = o;
    let raw = match format {
        Format::Json => json_rows(body)?,
        Format::Ndjson => ndjson_rows(body)?,
        Format::Csv => csv_rows(body, legacy)?,
    };
    // each row checked as a create body; the valid ones go to the store
    let mut results: Vec<Option<RowResult>> = Vec::with_capacity(raw.len());
    let mut valid: Vec<(usize, ImportRow<Checked>)> = Vec::new();
    for (i, (row, value)) in raw.into_iter().enumerate() {
        let invalid =
            |errors: Vec<RowError>| RowResult { row, status: RowStatus::Invalid, id: None, key: None, errors };
        let as_rows = |errors: Vec<FieldError>| -> Vec<RowError> {
            errors
                .into_iter()
                .map(|f| RowError { field: rename(format, f.field), code: f.code.to_owned(), message: f.message })
                .collect()
        };
        let parsed = match value {
            Err(errors) => Err(errors),
            Ok(mut v) => {
                let past = if legacy { Some(history(contract, &mut v)?) } else { None };
                let create = check::<UpsertException>(contract, "POST", "/v1/exceptions", v)?;
                match (create, past) {
                    (Ok(u), None) => Ok((u, None)),
                    (Ok(u), Some(Ok(h))) => Ok((u, Some(h))),
                    (create, past) => {
                        let mut all = create.err().unwrap_or_default();
                        all.extend(past.and_then(Result::err).unwrap_or_default());
                        all.sort_by(|x, y| x.field.cmp(&y.field));
                        Err(as_rows(all))
                    }
                }
            }
        };
        let (mut upsert, legacy_row) = match parsed {
            Ok(u) => u,
            Err(errors) => {
                results.push(Some(invalid(errors)));
                continue;
            }
        };
        if submit_all && !upsert.new.emergency {
            upsert.new.submit = true;
        }
        let by_ref = upsert.new.fields.external_refs.first().map(|r| (r.system.clone(), r.id.clone()));
        let by_ref = match (mode, by_ref) {
            (ImportMode::Create, _) => None,
            (ImportMode::Upsert, Some(r)) => Some(r),
            (ImportMode::Upsert, None) => {
                let field = if format == Format::Csv { "external_id" } else { "external_refs" };
                results.push(Some(invalid(vec![row_error(
                    field,
                    "required",
                    "an upsert goes by external reference: give one (CSV: external_system and external_id)",
                )])));
                continue;
            }
        };
        results.push(None);
        valid.push((
            i,
            ImportRow { by_ref, input: Checked { row, upsert, legacy: legacy_row, csv: format == Format::Csv } },
        ));
    }
    Ok((results, valid))
}

fn replay(stored: StoredResponse) -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").insert_header(("idempotent-replayed", "true")).body(stored.body)
}
