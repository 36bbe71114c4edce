//! Connections: the backend is chosen from the URL scheme, never guessed.

use diesel::connection::{
    AnsiTransactionManager, Instrumentation, InstrumentationEvent, SimpleConnection, TransactionManager,
};
use diesel::r2d2::{ManageConnection, Pool, R2D2Connection};
use diesel::{Connection, PgConnection, RunQueryDsl, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::StoreError;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// One connection to either backend.
#[derive(diesel::MultiConnection)]
pub enum Db {
    /// PostgreSQL, for production and several nodes.
    Pg(PgConnection),
    /// Embedded SQLite, the zero-set-up default.
    Sqlite(SqliteConnection),
}

/// Which database a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// `postgres://` or `postgresql://`.
    Postgres(String),
    /// `sqlite://PATH`; the path is kept.
    Sqlite(String),
}

impl Backend {
    /// Parses a database URL by its scheme.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(url.to_owned()))
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(StoreError::Connect("sqlite:// needs a file path, e.g. sqlite://leeway.db".into()));
            }
            Ok(Self::Sqlite(path.to_owned()))
        } else {
            Err(StoreError::Connect(format!(
                "unsupported database URL {url:?}: use sqlite://PATH or postgres://USER@HOST/DB"
            )))
        }
    }

    /// Short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Postgres(_) => "postgres",
            Backend::Sqlite(_) => "sqlite",
        }
    }
}

/// Counts the statements a connection sends, leaving out the transaction's own (`BEGIN`,
/// `COMMIT`, `ROLLBACK`, savepoints): the round trips a change costs.
struct CountStatements {
    count: Arc<AtomicU64>,
    transaction_sql_next: bool,
}

impl Instrumentation for CountStatements {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match event {
            InstrumentationEvent::BeginTransaction { .. }
            | InstrumentationEvent::CommitTransaction { .. }
            | InstrumentationEvent::RollbackTransaction { .. } => self.transaction_sql_next = true,
            InstrumentationEvent::StartQuery { .. } if self.transaction_sql_next => self.transaction_sql_next = false,
            InstrumentationEvent::StartQuery { .. } => {
                self.count.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// Opens connections for the pool, applying SQLite's pragmas to each.
#[derive(Debug)]
pub struct DbManager {
    backend: Backend,
    statements: Arc<AtomicU64>,
}

impl ManageConnection for DbManager {
    type Connection = Db;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<Db, Self::Error> {
        let mut db = match &self.backend {
            Backend::Postgres(url) => {
                PgConnection::establish(url).map(Db::Pg).map_err(diesel::r2d2::Error::ConnectionError)?
            }
            Backend::Sqlite(path) => {
                let mut c = SqliteConnection::establish(path).map_err(diesel::r2d2::Error::ConnectionError)?;
                // busy_timeout first, so that parallel pool start-up waits instead of failing;
                // `optimize` gathers the statistics the planner needs to pick the selective
                // index (the request's asset, not every live exception), within a bounded cost
                c.batch_execute(
                    "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA foreign_keys = ON; PRAGMA analysis_limit = 1000; PRAGMA optimize = 0x10002;",
                )
                .map_err(diesel::r2d2::Error::QueryError)?;
                Db::Sqlite(c)
            }
        };
        db.set_instrumentation(CountStatements { count: self.statements.clone(), transaction_sql_next: false });
        Ok(db)
    }

    /// Not called: the pool does not test connections at checkout (a round trip per request);
    /// a connection that failed is dropped by [`Self::has_broken`] instead.
    fn is_valid(&self, conn: &mut Db) -> Result<(), Self::Error> {
        diesel::sql_query("SELECT 1").execute(conn).map(|_| ()).map_err(diesel::r2d2::Error::QueryError)
    }

    /// A connection handed back while a thread unwinds may hold an open transaction (diesel
    /// does not roll back on panic), and one whose link failed is useless: neither is reused.
    fn has_broken(&self, conn: &mut Db) -> bool {
        std::thread::panicking() || conn.is_broken()
    }
}

impl Store {
    /// Runs `work` in a write transaction. On SQLite, the process's writers first queue on
    /// one mutex (SQLite has one writer; a queue beats the busy handler's sleeps), then the
    /// transaction begins `IMMEDIATE`, taking the write lock first, so that it never has to
    /// upgrade a read lock (which fails under concurrency instead of waiting). Another
    /// process writing the same file (`leeway jobs run-once` from cron) is waited for by the
    /// busy timeout.
    pub(crate) fn write_transaction<T, E: From<diesel::result::Error>>(
        &self,
        conn: &mut Db,
        work: impl FnOnce(&mut Db) -> Result<T, E>,
    ) -> Result<T, E> {
        let _writer = match conn {
            Db::Sqlite(c) => {
                let queued = self.sqlite_writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?;
                Some(queued)
            }
            Db::Pg(_) => {
                <Db as Connection>::TransactionManager::begin_transaction(conn)?;
                None
            }
        };
        match work(conn) {
            Ok(value) => {
                <Db as Connection>::TransactionManager::commit_transaction(conn)?;
                Ok(value)
            }
            Err(e) => {
                // the work's error is what the caller needs; a failed rollback breaks the
                // connection, which the pool then drops
                let _ = <Db as Connection>::TransactionManager::rollback_transaction(conn);
                Err(e)
            }
        }
    }
}

/// The database: a pool of connections to one backend.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: Pool<DbManager>,
    backend: &'static str,
    statements: Arc<AtomicU64>,
    /// Callers waiting for a connection now (r2d2 does not count them).
    waiting: Arc<AtomicU64>,
    /// Keys reserved for this process, the next last.
    pub(crate) keys: Arc<std::sync::Mutex<Vec<leeway_domain::ids::ExceptionKey>>>,
    /// SQLite's writers queue here (see [`Store::write_transaction`]).
    sqlite_writer: Arc<std::sync::Mutex<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend).finish()
    }
}

impl Store {
    /// Opens a pool of `size` connections to the database the URL names.
    pub fn connect(url: &str, size: u32) -> Result<Self, StoreError> {
        let backend = Backend::from_url(url)?;
        let name = backend.name();
        let statements = Arc::new(AtomicU64::new(0));
        // SQLite serialises writers anyway; a small pool keeps readers concurrent under WAL.
        let pool = Pool::builder()
            .max_size(size.max(1))
            .connection_timeout(Duration::from_secs(10))
            .test_on_check_out(false)
            .build(DbManager { backend, statements: statements.clone() })
            .map_err(|e| StoreError::Connect(e.to_string()))?;
        Ok(Self {
            pool,
            backend: name,
            statements,
            waiting: Arc::default(),
            keys: Arc::default(),
            sqlite_writer: Arc::default(),
        })
    }

    /// How many statements this store's connections have sent, transactions' own left out.
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// A pooled connection.
    pub fn conn(&self) -> Result<diesel::r2d2::PooledConnection<DbManager>, StoreError> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let conn = self.pool.get();
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        Ok(conn?)
    }

    /// Callers waiting for a connection now.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Applies pending migrations; returns the versions applied.
    pub fn migrate(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn()?;
        let applied = match &mut *conn {
            Db::Pg(c) => {
                c.run_pending_migrations(POSTGRES_MIGRATIONS).map(|v| v.iter().map(|m| m.to_string()).collect())
            }
            Db::Sqlite(c) => {
                c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.iter().map(|m| m.to_string()).collect())
            }
        };
        applied.map_err(|e| StoreError::Migration(e.to_string()))
    }

    /// Applies pending migrations up to and including `version` (the upgrade tests load data
    /// as an older release wrote it, then migrate the rest of the way).
    #[doc(hidden)]
    pub fn migrate_through(&self, version: &str) -> Result<(), StoreError> {
        fn through<C: MigrationHarness<B>, B: diesel::backend::Backend>(
            c: &mut C,
            source: fn() -> EmbeddedMigrations,
            version: &str,
        ) -> Result<(), StoreError>
        where
            EmbeddedMigrations: diesel::migration::MigrationSource<B>,
        {
            let fail = |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Migration(e.to_string());
            while c.has_pending_migration(source()).map_err(fail)? {
                let applied = c.run_next_migration(source()).map_err(fail)?;
                // diesel names a version by its digits alone
                let digits = |v: &str| v.chars().filter(char::is_ascii_digit).collect::<String>();
                if digits(&applied.to_string()) == digits(version) {
                    return Ok(());
                }
            }
            Err(StoreError::Migration(format!("no migration {version}")))
        }
        let mut conn = self.conn()?;
        match &mut *conn {
            Db::Pg(c) => through(c, || POSTGRES_MIGRATIONS, version),
            Db::Sqlite(c) => through(c, || SQLITE_MIGRATIONS, version),
        }
    }

    /// Readiness: the database answers and no migration is pending.
    pub fn ready(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let pending = match &mut *conn {
            Db::Pg(c) => c.has_pending_migration(POSTGRES_MIGRATIONS),
            Db::Sqlite(c) => c.has_pending_migration(SQLITE_MIGRATIONS),
        }
        .map_err(|e| StoreError::Migration(e.to_string()))?;
        if pending { Err(StoreError::Migration("migrations are pending; run `leeway migrate`".into())) } else { Ok(()) }
    }
}
