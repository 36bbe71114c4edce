//! `leeway`: the security-exception service and its operator commands.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;

use leeway_api::auth::Auth;
use leeway_api::clock::{Clock, SystemClock};
use leeway_api::config::Config;
use leeway_api::{Application, openapi};
use leeway_domain::kinds::Role;

/// Leeway manages security exceptions: time-boxed, risk-assessed, approved deviations from
/// security policy. Configuration comes from LEEWAY_* environment variables, to which a
/// KEY=VALUE file (--config) may add; see the README's configuration table.
#[derive(Parser)]
#[command(name = "leeway", version, about)]
struct Cli {
    /// A file of KEY=VALUE lines (e.g. LEEWAY_DATABASE_URL=...); environment variables win.
    #[arg(long, global = true, env = "LEEWAY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the HTTP service (applies pending migrations first).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print a signed bearer token for testing and scripts (uses the same secret as serve).
    Token {
        /// The subject (`sub`), e.g. alice.
        #[arg(long)]
        sub: String,
        /// Comma-separated roles: requester, analyst, security_officer, asset_owner, ciso,
        /// compliance, auditor, admin, integration.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// The caller's business unit.
        #[arg(long)]
        business_unit: Option<String>,
        /// Lifetime: 90s, 30m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// Print the OpenAPI document (the committed openapi/openapi.json is this output).
    Openapi,
    /// Fill the database with realistic exceptions in every state, with full histories and
    /// valid audit chains, for benchmarks and trials (applies pending migrations first).
    Seed {
        /// How many exceptions (spread over 10,000 assets, 200 controls, 20 business units).
        #[arg(long)]
        exceptions: u64,
        /// Exceptions per transaction.
        #[arg(long, default_value_t = 1000)]
        batch: u32,
        /// The random seed: the same seed gives the same data.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Background jobs, for operators who prefer cron to the scheduler inside `serve`.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Import a CSV, JSON or NDJSON file of exceptions through a running server, in requests
    /// of 1,000 rows (at most 5,000). Exits 1 when a row was invalid (its errors in FILE.errors.csv),
    /// 2 when the import could not run.
    Import {
        /// The file: .csv, .json (an array) or .ndjson.
        file: PathBuf,
        /// The server.
        #[arg(long, env = "LEEWAY_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// A bearer token (analyst, integration or admin).
        #[arg(long, env = "LEEWAY_TOKEN", hide_env_values = true)]
        token: String,
        /// `create` (every row new) or `upsert` (by external reference: a re-run finishes the job).
        #[arg(long, default_value = "create", value_parser = ["create", "upsert"])]
        mode: String,
        /// Submit every row.
        #[arg(long)]
        submit: bool,
        /// Judge every row, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// `csv`, `json` or `ndjson` (default: from the file's extension).
        #[arg(long, value_parser = ["csv", "json", "ndjson"])]
        format: Option<String>,
        /// Rows per request, 1..5000.
        #[arg(long, default_value_t = leeway_api::client::DEFAULT_CHUNK_ROWS)]
        chunk_rows: usize,
        /// Requests in flight at once (1..4): the server checks one chunk while the database
        /// writes another. Default: 2 for an upsert of drafts (a re-run settles any race), 1
        /// otherwise (rows judged in file order).
        #[arg(long)]
        parallel: Option<usize>,
    },
    /// Export the exceptions a token may see, streamed to stdout, with a progress bar on
    /// stderr.
    Export {
        /// The server.
        #[arg(long, env = "LEEWAY_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// A bearer token.
        #[arg(long, env = "LEEWAY_TOKEN", hide_env_values = true)]
        token: String,
        /// `csv`, `ndjson` or `oscal` (an OSCAL 1.1 POA&M document).
        #[arg(long, value_parser = ["csv", "ndjson", "oscal"])]
        format: String,
        /// A filter of `GET /v1/exceptions`, e.g. `--filter status=active --filter asset=db-1`.
        #[arg(long = "filter", value_parser = parse_filter)]
        filters: Vec<(String, String)>,
    },
}

fn parse_filter(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("a filter is name=value, got {s:?}"))
}

/// The first retry's wait of `import` and `export`.
const BACKOFF: std::time::Duration = std::time::Duration::from_millis(500);

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Apply every due time rule once (activation, expiry, reminders, reviews, SLA and
    /// timeouts, emergencies, control checks) and exit. Safe beside running servers.
    RunOnce,
}

fn parse_ttl(s: &str) -> Result<chrono::Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = n.parse().map_err(|_| format!("invalid --ttl {s:?}: use e.g. 90s, 30m, 1h, 7d"))?;
    match unit {
        "" | "s" => Ok(chrono::Duration::seconds(n)),
        "m" => Ok(chrono::Duration::minutes(n)),
        "h" => Ok(chrono::Duration::hours(n)),
        "d" => Ok(chrono::Duration::days(n)),
        _ => Err(format!("invalid --ttl unit {unit:?}: use s, m, h or d")),
    }
}

fn init_logs(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // colour only on a terminal: logs written to a file or a pipe carry no escape codes
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if config.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// How `leeway` ends: 1 when an import had invalid rows (or a server command failed), 2 when
/// `import` or `export` could not run.
enum Failure {
    Rows(String),
    Client(String),
    Other(String),
}

/// Runs `import` or `export`; `None` for the server's commands.
fn client_command(command: &Command) -> Option<Result<(), Failure>> {
    match command {
        Command::Import { file, url, token, mode, submit, dry_run, format, chunk_rows, parallel } => {
            let opts = leeway_api::client::ImportOptions {
                file: file.clone(),
                url: url.clone(),
                token: token.clone(),
                format: format.clone(),
                upsert: mode == "upsert",
                submit: *submit,
                dry_run: *dry_run,
                backoff: BACKOFF,
                chunk_rows: (*chunk_rows).clamp(1, leeway_api::client::CHUNK_ROWS),
                parallel: parallel
                    .unwrap_or(if mode == "upsert" && !*submit { 2 } else { 1 })
                    .clamp(1, leeway_api::client::MAX_PARALLEL),
            };
            let ran = runtime().and_then(|rt| rt.block_on(leeway_api::client::import(&opts)));
            Some(match ran {
                Err(e) => Err(Failure::Client(e)),
                Ok(t) => {
                    let what = if *dry_run { "would be" } else { "were" };
                    println!(
                        "{} created, {} updated, {} unchanged, {} invalid ({what} on the server)",
                        t.created, t.updated, t.unchanged, t.invalid
                    );
                    if t.invalid > 0 {
                        let errors = leeway_api::client::errors_file(file);
                        Err(Failure::Rows(format!("{} row(s) invalid: see {}", t.invalid, errors.display())))
                    } else {
                        Ok(())
                    }
                }
            })
        }
        Command::Export { url, token, format, filters } => {
            let opts = leeway_api::client::ExportOptions {
                url: url.clone(),
                token: token.clone(),
                format: format.clone(),
                filters: filters.clone(),
                backoff: BACKOFF,
            };
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let ran = runtime().and_then(|rt| rt.block_on(leeway_api::client::export(&opts, &mut out)));
            Some(ran.map(|bytes| eprintln!("exported {bytes} bytes")).map_err(Failure::Client))
        }
        _ => None,
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match client_command(&cli.command) {
        Some(done) => done,
        None => server_command(cli.config, cli.command).map_err(Failure::Other),
    }
}

fn server_command(config: Option<PathBuf>, command: Command) -> Result<(), String> {
    let config = Config::load(config.as_deref())?;
    match command {
        Command::Serve => {
            init_logs(&config);
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            let app = Application::build(&config, clock)?;
            tracing::info!(listen = %config.listen, port = app.port(), database = %redact(&config.database_url), "leeway serving");
            actix_web::rt::System::new().block_on(app.run()).map_err(|e| e.to_string())
        }
        Command::Migrate => {
            init_logs(&config);
            let store = leeway_persistence::Store::connect(&config.database_url, 1).map_err(|e| e.to_string())?;
            let applied = store.migrate().map_err(|e| e.to_string())?;
            println!("{} migration(s) applied on {}", applied.len(), store.backend());
            Ok(())
        }
        Command::Token { sub, roles, business_unit, ttl } => {
            if config.jwks.is_some() && config.jwt_secret.is_none() {
                return Err("with LEEWAY_JWKS_URL, tokens come from the identity provider; set LEEWAY_JWT_SECRET as well for `leeway token` and HS256 tokens".into());
            }
            let (secret, _) = config.resolve_secret(true)?;
            let mut parsed = Vec::new();
            for r in &roles {
                parsed.push(Role::parse(r.trim()).ok_or_else(|| {
                    format!(
                        "unknown role {r:?}; one of {}",
                        Role::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
                    )
                })?);
            }
            let clock = Arc::new(SystemClock);
            let auth = Auth::from_config(&config, Some(&secret), None, clock.clone());
            let token = auth.mint(&sub, &parsed, business_unit.as_deref(), parse_ttl(&ttl)?, clock.now())?;
            println!("{token}");
            Ok(())
        }
        Command::Jobs { command: JobsCommand::RunOnce } => {
            init_logs(&config);
            let store = leeway_persistence::Store::connect(&config.database_url, 1).map_err(|e| e.to_string())?;
            store.migrate().map_err(|e| e.to_string())?;
            let r = leeway_api::jobs::run_once(&store, &config.policy, SystemClock.now()).map_err(|e| e.to_string())?;
            println!(
                "{} exception(s) had due time rules applied; {} expired idempotency key(s) forgotten",
                r.exceptions, r.purged_keys
            );
            // then what the webhook worker inside `serve` does each interval: number new
            // events into the change feed, send every due delivery
            let deliverer = leeway_api::delivery::Deliverer::new(
                store,
                config.policy.clone(),
                Arc::new(SystemClock),
                config.webhook_allow_private,
            )?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            let pass = rt.block_on(deliverer.run_once()).map_err(|e| e.to_string())?;
            println!(
                "{} event(s) entered the change feed; {} webhook delivery attempt(s), {} succeeded",
                pass.numbered, pass.attempted, pass.succeeded
            );
            Ok(())
        }
        Command::Seed { exceptions, batch, seed } => {
            init_logs(&config);
            let store = leeway_persistence::Store::connect(&config.database_url, 2).map_err(|e| e.to_string())?;
            store.migrate().map_err(|e| e.to_string())?;
            store.record_policy(&config.policy, SystemClock.now()).map_err(|e| e.to_string())?;
            let started = std::time::Instant::now();
            let mut shown = 0;
            let report =
                leeway_api::seed::run(&store, &config.policy, SystemClock.now(), exceptions, batch, seed, |r| {
                    // a line per tenth: enough to see it move, little enough for a log
                    if r.exceptions * 10 / exceptions.max(1) > shown || r.exceptions == exceptions {
                        shown = r.exceptions * 10 / exceptions.max(1);
                        let rate = r.exceptions as f64 / started.elapsed().as_secs_f64().max(0.001);
                        eprintln!("seeded {}/{exceptions} exceptions, {} events ({rate:.0}/s)", r.exceptions, r.events);
                    }
                })
                .map_err(|e| e.to_string())?;
            // the seeded histories enter the change feed now, not through the first minutes
            // of a server's worker
            let now = SystemClock.now();
            while store.number_feed(now).map_err(|e| e.to_string())? > 0 {}
            store.analyze().map_err(|e| e.to_string())?;
            let statuses: Vec<String> = report.by_status.iter().map(|(s, n)| format!("{s} {n}")).collect();
            println!(
                "{} exception(s) and {} audit event(s) seeded on {} in {:.1} s: {}",
                report.exceptions,
                report.events,
                store.backend(),
                started.elapsed().as_secs_f64(),
                statuses.join(", ")
            );
            Ok(())
        }
        Command::Openapi => {
            let doc = openapi().to_pretty_json().map_err(|e| e.to_string())?;
            println!("{doc}");
            Ok(())
        }
        Command::Import { .. } | Command::Export { .. } => Err("a client command reached the server's".to_owned()),
    }
}

/// Hides a password in a database URL for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}://{user}:***@{}", &url[..s], &url[at + 1..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

fn main() {
    match run(Cli::parse()) {
        Ok(()) => {}
        Err(Failure::Rows(e)) | Err(Failure::Other(e)) => {
            eprintln!("leeway: {e}");
            std::process::exit(1);
        }
        Err(Failure::Client(e)) => {
            eprintln!("leeway: {e}");
            std::process::exit(2);
        }
    }
}
