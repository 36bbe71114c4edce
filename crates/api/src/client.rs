//! `leeway import` and `leeway export`: the bulk endpoints driven from a laptop.
//!
//! An import splits the file into requests of at most [`CHUNK_ROWS`] rows, each sent with an
//! `Idempotency-Key` derived from the file, the options and the chunk (the same command run
//! again within the server's replay window replays the chunks already answered), retries 429
//! and 5xx with backoff where sending again is safe, and writes the invalid rows' errors to
//! `FILE.errors.csv`.

use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Most rows per request.
pub const CHUNK_ROWS: usize = 5_000;
/// Rows per request unless told otherwise: smaller requests keep the server's memory low
/// (about 30 MiB over its resting size with two in flight) at little cost in speed.
pub const DEFAULT_CHUNK_ROWS: usize = 1_000;
/// Most requests an import keeps in flight.
pub const MAX_PARALLEL: usize = 4;
/// Tries per request (429, 5xx, a connection that failed).
const TRIES: u32 = 6;

/// What `leeway import` was asked.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The file.
    pub file: PathBuf,
    /// The server, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// A bearer token.
    pub token: String,
    /// `csv`, `json` or `ndjson`; from the file's extension when `None`.
    pub format: Option<String>,
    /// Upsert by external reference rather than create.
    pub upsert: bool,
    /// Submit every row.
    pub submit: bool,
    /// Judge every row, write nothing.
    pub dry_run: bool,
    /// The first retry's wait; each next one doubles it.
    pub backoff: Duration,
    /// Rows per request, at most [`CHUNK_ROWS`].
    pub chunk_rows: usize,
    /// Requests in flight at once, 1..[`MAX_PARALLEL`].
    pub parallel: usize,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Totals {
    /// Created.
    pub created: u64,
    /// Updated.
    pub updated: u64,
    /// Unchanged.
    pub unchanged: u64,
    /// Invalid.
    pub invalid: u64,
}

#[derive(Debug, Deserialize)]
struct Answer {
    results: Vec<RowAnswer>,
}

#[derive(Debug, Deserialize)]
struct RowAnswer {
    row: u64,
    status: String,
    #[serde(default)]
    errors: Vec<RowErrorAnswer>,
}

#[derive(Debug, Deserialize)]
struct RowErrorAnswer {
    field: String,
    code: String,
    message: String,
}

/// One request's rows: the body, and the file's row number of each row in it.
struct Chunk {
    body: Vec<u8>,
    rows: Vec<u64>,
}

fn content_type(format: &str) -> &'static str {
    match format {
        "csv" => "text/csv",
        "ndjson" => "application/x-ndjson",
        _ => "application/json",
    }
}

fn format_of(file: &Path, given: Option<&str>) -> Result<String, String> {
    let f = match given {
        Some(f) => f.to_ascii_lowercase(),
        None => file.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase(),
    };
    match f.as_str() {
        "csv" | "json" | "ndjson" => Ok(f),
        "jsonl" => Ok("ndjson".to_owned()),
        _ => Err(format!("cannot tell the format of {}: pass --format csv, json or ndjson", file.display())),
    }
}

/// Most bytes in one request's body, under the server's 16 MiB with room to spare.
const CHUNK_BYTES: usize = 12 * 1024 * 1024;

/// Gathers rows (each already serialized) into chunks of at most `per` rows and
/// [`CHUNK_BYTES`], each body framed by `open`, `sep` and `close`.
struct Chunker<'a> {
    per: usize,
    open: &'a [u8],
    sep: &'a [u8],
    close: &'a [u8],
    current: Chunk,
    out: Vec<Chunk>,
}

impl<'a> Chunker<'a> {
    fn new(per: usize, open: &'a [u8], sep: &'a [u8], close: &'a [u8]) -> Self {
        Self {
            per: per.max(1),
            open,
            sep,
            close,
            current: Chunk { body: Vec::new(), rows: Vec::new() },
            out: Vec::new(),
        }
    }

    fn push(&mut self, n: u64, row: &[u8]) {
        let full = self.current.rows.len() >= self.per
            || self.current.body.len().saturating_add(row.len()).saturating_add(self.sep.len()) > CHUNK_BYTES;
        if full && !self.current.rows.is_empty() {
            self.flush();
        }
        if self.current.rows.is_empty() {
            self.current.body.extend_from_slice(self.open);
        } else {
            self.current.body.extend_from_slice(self.sep);
        }
        self.current.body.extend_from_slice(row);
        self.current.rows.push(n);
    }

    fn flush(&mut self) {
        let mut done = std::mem::replace(&mut self.current, Chunk { body: Vec::new(), rows: Vec::new() });
        done.body.extend_from_slice(self.close);
        self.out.push(done);
    }

    fn finish(mut self) -> Vec<Chunk> {
        if !self.current.rows.is_empty() {
            self.flush();
        }
        self.out
    }
}

/// Splits `data` into chunks of at most `per` rows (and [`CHUNK_BYTES`]), keeping each row's
/// number in the file (the CSV record after the header, the NDJSON line, the JSON array
/// element).
fn chunks(data: &[u8], format: &str, per: usize) -> Result<Vec<Chunk>, String> {
    match format {
        "csv" => {
            let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(data);
            let header = reader.byte_headers().map_err(|e| format!("the CSV header cannot be read: {e}"))?.clone();
            let line = |record: &csv::ByteRecord| -> Result<Vec<u8>, String> {
                let mut w = csv::Writer::from_writer(Vec::new());
                w.write_byte_record(record).map_err(|e| e.to_string())?;
                w.into_inner().map_err(|e| e.to_string())
            };
            let head = line(&header)?;
            let mut chunker = Chunker::new(per, &head, b"", b"");
            for (record, n) in reader.byte_records().zip(1u64..) {
                let record = record.map_err(|e| format!("CSV record {n} cannot be read: {e}"))?;
                chunker.push(n, &line(&record)?);
            }
            Ok(chunker.finish())
        }
        "ndjson" => {
            let mut chunker = Chunker::new(per, b"", b"", b"");
            for (l, n) in data.split(|b| *b == b'\n').zip(1u64..) {
                if !l.iter().all(u8::is_ascii_whitespace) {
                    chunker.push(n, &[l, b"\n"].concat());
                }
            }
            Ok(chunker.finish())
        }
        _ => {
            let items: Vec<serde_json::Value> =
                serde_json::from_slice(data).map_err(|e| format!("the file is not a JSON array: {e}"))?;
            let mut chunker = Chunker::new(per, b"[", b",", b"]");
            for (item, n) in items.iter().zip(1u64..) {
                chunker.push(n, &serde_json::to_vec(item).map_err(|e| e.to_string())?);
            }
            Ok(chunker.finish())
        }
    }
}

fn client() -> Result<reqwest::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_secs(600)).build().map_err(|e| e.to_string())
}

/// A problem's detail, or the body as it came.
fn describe(status: reqwest::StatusCode, body: &str) -> String {
    let detail = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(500).collect());
    format!("the server answered {status}: {detail}")
}

/// Sends `build()` until it is answered with something other than 429 or 5xx, waiting
/// `backoff`, then twice as long each time (or what `Retry-After` says). Unless `replayable`,
/// only what surely did no work is sent again (429, a connection that never opened): a 5xx
/// or a timeout may come after some of a create import's batches committed, and sending it
/// again would create those rows twice.
async fn send(
    build: impl Fn() -> reqwest::RequestBuilder,
    backoff: Duration,
    replayable: bool,
    note: &dyn Fn(&str),
) -> Result<reqwest::Response, String> {
    let mut wait = backoff;
    for attempt in 1..=TRIES {
        let why = match build().send().await {
            Ok(res) if res.status().is_server_error() && !replayable => {
                let status = res.status();
                let body = res.text().await.unwrap_or_default();
                return Err(format!(
                    "{}; rows of this request may have gone in: run the file again with --mode upsert",
                    describe(status, &body)
                ));
            }
            Err(e) if !replayable && !e.is_connect() => {
                return Err(format!(
                    "{e}; rows of this request may have gone in: run the file again with --mode upsert"
                ));
            }
            Ok(res) if res.status() == 429 || res.status().is_server_error() => {
                let after = res
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                let status = res.status();
                let body = res.text().await.unwrap_or_default();
                if let Some(after) = after {
                    wait = wait.max(after);
                }
                describe(status, &body)
            }
            Ok(res) => return Ok(res),
            Err(e) => e.to_string(),
        };
        if attempt == TRIES {
            return Err(format!("gave up after {TRIES} tries: {why}"));
        }
        note(&format!("{why}; trying again in {:.1} s", wait.as_secs_f64()));
        tokio::time::sleep(wait).await;
        wait = wait.saturating_mul(2).min(Duration::from_secs(60));
    }
    Err("no try was made".to_owned())
}

/// Where progress goes: a bar with rate and ETA on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    total: u64,
}

impl Progress {
    fn new(total: u64, unit: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = if total > 0 { ProgressBar::new(total) } else { ProgressBar::new_spinner() };
            let template = if total > 0 {
                format!("{{elapsed_precise}} [{{wide_bar}}] {{pos}}/{{len}} {unit} {{per_sec}} ETA {{eta}}")
            } else {
                "{spinner} {elapsed_precise} {bytes} {bytes_per_sec}".to_owned()
            };
            if let Ok(style) = ProgressStyle::with_template(&template) {
                bar.set_style(style);
            }
            bar
        });
        Self { bar, started: Instant::now(), total }
    }

    fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// `done` of `total` reached; a plain line says so with the rate and what is left.
    fn reached(&self, done: u64, unit: &str) {
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None => {
                let secs = self.started.elapsed().as_secs_f64().max(0.001);
                let rate = done as f64 / secs;
                let left = self.total.saturating_sub(done) as f64 / rate.max(0.001);
                eprintln!("{done}/{} {unit}, {rate:.0} {unit}/s, ETA {left:.0} s", self.total);
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `FILE.errors.csv`.
pub fn errors_file(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".errors.csv");
    PathBuf::from(name)
}

/// Imports `opts.file`; the totals, with the invalid rows' errors in `FILE.errors.csv` (removed
/// when every row went in).
pub async fn import(opts: &ImportOptions) -> Result<Totals, String> {
    let data = std::fs::read(&opts.file).map_err(|e| format!("cannot read {}: {e}", opts.file.display()))?;
    let format = format_of(&opts.file, opts.format.as_deref())?;
    let per = opts.chunk_rows.clamp(1, CHUNK_ROWS);
    let chunks = chunks(&data, &format, per)?;
    let total: u64 = chunks.iter().map(|c| c.rows.len() as u64).sum();
    let mode = if opts.upsert { "upsert" } else { "create" };
    let query = format!("mode={mode}&submit={}&dry_run={}", opts.submit, opts.dry_run);
    // the same file with the same options is the same request: a re-run replays
    let digest = hex::encode(Sha256::digest([format!("{query}\n{per}\n").as_bytes(), &data].concat()));
    drop(data);
    let http = client()?;
    let url = format!("{}/v1/imports?{query}", opts.url.trim_end_matches('/'));
    let progress = Progress::new(total, "rows");
    let mut totals = Totals::default();
    let mut failures: Vec<(u64, RowErrorAnswer)> = Vec::new();
    let mut done = 0u64;
    // `parallel` requests at a time, answers taken in file order: the server parses and checks
    // one chunk while the database writes another
    let (http, url, format, progress_ref) = (&http, &url, &format, &progress);
    // after a failure no further chunk is sent; those already in flight are awaited
    let stop = std::sync::atomic::AtomicBool::new(false);
    let stop = &stop;
    let sent = futures_util::stream::iter(chunks.into_iter().enumerate().map(|(i, chunk)| {
        let key = format!("leeway-import-{}-{i}", &digest[..32]);
        async move {
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                return (chunk.rows, None);
            }
            let res = send(
                || {
                    http.post(url)
                        .bearer_auth(&opts.token)
                        .header("content-type", content_type(format))
                        .header("idempotency-key", &key)
                        .body(chunk.body.clone())
                },
                opts.backoff,
                opts.upsert || opts.dry_run,
                &|line| progress_ref.note(line),
            )
            .await;
            let answer = match res {
                Ok(res) => {
                    let status = res.status();
                    match res.text().await.map_err(|e| e.to_string()) {
                        Ok(body) if status.is_success() => {
                            serde_json::from_str::<Answer>(&body).map_err(|e| format!("an unexpected answer: {e}"))
                        }
                        Ok(body) => Err(describe(status, &body)),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            if answer.is_err() {
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            (chunk.rows, Some(answer))
        }
    }));
    let mut answers = futures_util::StreamExt::buffered(sent, opts.parallel.clamp(1, MAX_PARALLEL));
    let mut failed: Vec<String> = Vec::new();
    while let Some((rows, answer)) = futures_util::StreamExt::next(&mut answers).await {
        let answer = match answer {
            Some(Ok(a)) => a,
            Some(Err(e)) => {
                failed.push(e);
                continue;
            }
            // not sent: an earlier chunk failed
            None => continue,
        };
        for r in answer.results {
            let n = match r.status.as_str() {
                "created" => &mut totals.created,
                "updated" => &mut totals.updated,
                "unchanged" => &mut totals.unchanged,
                _ => &mut totals.invalid,
            };
            *n = n.saturating_add(1);
            // the server numbers the chunk's rows; the file's number is kept here
            let at = usize::try_from(r.row.saturating_sub(1)).ok().and_then(|k| rows.get(k)).copied();
            let row = at.unwrap_or(r.row);
            failures.extend(r.errors.into_iter().map(|e| (row, e)));
        }
        done = done.saturating_add(rows.len() as u64);
        progress.reached(done, "rows");
    }
    progress.finish();
    // what the chunks that were answered did is kept: their errors, and the totals
    write_errors(&opts.file, &failures)?;
    match failed.first() {
        None => Ok(totals),
        Some(e) => Err(format!(
            "{e} (answered before it stopped: {} created, {} updated, {} unchanged, {} invalid)",
            totals.created, totals.updated, totals.unchanged, totals.invalid
        )),
    }
}

/// Writes `FILE.errors.csv` with `failures`, or removes a stale one when there are none.
fn write_errors(file: &Path, failures: &[(u64, RowErrorAnswer)]) -> Result<(), String> {
    let path = errors_file(file);
    if failures.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("cannot remove the stale {}: {e}", path.display()))
            }
            _ => Ok(()),
        };
    }
    let mut w = csv::Writer::from_path(&path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    w.write_record(["row", "field", "code", "message"]).map_err(|e| e.to_string())?;
    for (row, e) in failures {
        w.write_record([row.to_string().as_str(), &e.field, &e.code, &e.message]).map_err(|e| e.to_string())?;
    }
    w.flush().map_err(|e| e.to_string())
}

/// What `leeway export` was asked.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The server.
    pub url: String,
    /// A bearer token.
    pub token: String,
    /// `csv`, `ndjson` or `oscal`.
    pub format: String,
    /// The list's filters, as `name=value`.
    pub filters: Vec<(String, String)>,
    /// The first retry's wait.
    pub backoff: Duration,
}

/// Streams the export to `out`; how many bytes.
pub async fn export(opts: &ExportOptions, out: &mut dyn Write) -> Result<u64, String> {
    let mut query = vec![("format".to_owned(), opts.format.clone())];
    query.extend(opts.filters.iter().cloned());
    let query = serde_urlencoded::to_string(&query).map_err(|e| e.to_string())?;
    let url = format!("{}/v1/exports/exceptions?{query}", opts.url.trim_end_matches('/'));
    let http = client()?;
    let progress = Progress::new(0, "bytes");
    let mut res = send(|| http.get(&url).bearer_auth(&opts.token), opts.backoff, true, &|l| progress.note(l)).await?;
    if !res.status().is_success() {
        let status = res.status();
        return Err(describe(status, &res.text().await.unwrap_or_default()));
    }
    let mut written = 0u64;
    while let Some(bytes) = res.chunk().await.map_err(|e| format!("the export broke off: {e}"))? {
        out.write_all(&bytes).map_err(|e| e.to_string())?;
        written = written.saturating_add(bytes.len() as u64);
        if let Some(bar) = &progress.bar {
            bar.set_position(written);
        }
    }
    out.flush().map_err(|e| e.to_string())?;
    progress.finish();
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_keep_each_rows_number_in_the_file() {
        let csv = b"title,assets\n\"a, quoted\",h1\nb,h2\nc,h3\n";
        let parts = chunks(csv, "csv", 2).unwrap_or_default();
        assert_eq!(parts.iter().map(|c| c.rows.clone()).collect::<Vec<_>>(), [vec![1, 2], vec![3]]);
        assert_eq!(String::from_utf8_lossy(&parts[1].body), "title,assets\nc,h3\n", "each chunk has the header");
        let nd = b"{\"a\":1}\n\n{\"a\":2}\n{\"a\":3}\n";
        let parts = chunks(nd, "ndjson", 2).unwrap_or_default();
        assert_eq!(parts.iter().map(|c| c.rows.clone()).collect::<Vec<_>>(), [vec![1, 3], vec![4]]);
        let json = b"[1,2,3,4,5]";
        let parts = chunks(json, "json", 2).unwrap_or_default();
        assert_eq!(parts.iter().map(|c| c.rows.clone()).collect::<Vec<_>>(), [vec![1, 2], vec![3, 4], vec![5]]);
        assert_eq!(parts[2].body, b"[5]");
    }

    #[test]
    fn the_format_comes_from_the_extension_unless_given() {
        assert_eq!(format_of(Path::new("x.CSV"), None).as_deref(), Ok("csv"));
        assert_eq!(format_of(Path::new("x.jsonl"), None).as_deref(), Ok("ndjson"));
        assert_eq!(format_of(Path::new("x.txt"), Some("json")).as_deref(), Ok("json"));
        assert!(format_of(Path::new("x.txt"), None).is_err());
        assert_eq!(errors_file(Path::new("/tmp/a.csv")), PathBuf::from("/tmp/a.csv.errors.csv"));
    }
}
