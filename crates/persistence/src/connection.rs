//! Connections: the backend is chosen from the URL scheme, never guessed.

use diesel::connection::SimpleConnection;
use diesel::r2d2::{ManageConnection, Pool};
use diesel::{Connection, PgConnection, RunQueryDsl, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
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

/// Opens connections for the pool, applying SQLite's pragmas to each.
#[derive(Debug)]
pub struct DbManager {
    backend: Backend,
}

impl ManageConnection for DbManager {
    type Connection = Db;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<Db, Self::Error> {
        match &self.backend {
            Backend::Postgres(url) => {
                PgConnection::establish(url).map(Db::Pg).map_err(diesel::r2d2::Error::ConnectionError)
            }
            Backend::Sqlite(path) => {
                let mut c = SqliteConnection::establish(path).map_err(diesel::r2d2::Error::ConnectionError)?;
                // busy_timeout first, so that parallel pool start-up waits instead of failing.
                c.batch_execute(
                    "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                )
                .map_err(diesel::r2d2::Error::QueryError)?;
                Ok(Db::Sqlite(c))
            }
        }
    }

    fn is_valid(&self, conn: &mut Db) -> Result<(), Self::Error> {
        diesel::sql_query("SELECT 1").execute(conn).map(|_| ()).map_err(diesel::r2d2::Error::QueryError)
    }

    /// A connection handed back while a thread unwinds may hold an open transaction (diesel
    /// does not roll back on panic): never reuse it.
    fn has_broken(&self, _conn: &mut Db) -> bool {
        std::thread::panicking()
    }
}

/// The database: a pool of connections to one backend.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: Pool<DbManager>,
    backend: &'static str,
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
        // SQLite serialises writers anyway; a small pool keeps readers concurrent under WAL.
        let pool = Pool::builder()
            .max_size(size.max(1))
            .connection_timeout(Duration::from_secs(10))
            .build(DbManager { backend })
            .map_err(|e| StoreError::Connect(e.to_string()))?;
        Ok(Self { pool, backend: name })
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// A pooled connection.
    pub fn conn(&self) -> Result<diesel::r2d2::PooledConnection<DbManager>, StoreError> {
        Ok(self.pool.get()?)
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
