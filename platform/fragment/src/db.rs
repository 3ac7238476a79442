//! One database per service: an embedded SQLite file by default, a PostgreSQL schema when configured.
//!
//! On PostgreSQL a service connects either with the one URL of a single-team install
//! (`TESSERA_POSTGRES_URL`: one role for every schema) or with a URL of its own
//! (`TESSERA_POSTGRES_URLS__<SERVICE>`), whose role `tessera db provision` made the owner of that
//! service's schema and of nothing else: a compromised fragment then cannot read another service's data.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, AnyPool, Connection, Executor};

use crate::fs::{create_private_dir, create_private_file, restrict_to_owner};

/// Where services keep their data: this module's section of the process settings (`TESSERA_DATA_DIR`,
/// `TESSERA_POSTGRES_URL`, `TESSERA_SCHEMA_PREFIX`, `TESSERA_POSTGRES_POOL_SIZE`).
#[derive(Clone, Serialize, Deserialize)]
pub struct StoreSettings {
    /// Directory of the SQLite files (`<data_dir>/<service>.sqlite`).
    pub data_dir: PathBuf,
    /// When set, every service uses PostgreSQL at this URL instead, each in its own schema, all with
    /// this URL's one role (a single-team install).
    pub postgres_url: Option<String>,
    /// A service's own PostgreSQL URL, by service name (`TESSERA_POSTGRES_URLS__CATALOG`): its role
    /// owns that service's schema only (`tessera db provision` makes them). A service listed here uses
    /// its URL; one not listed uses `postgres_url`, and without that, refuses to start.
    pub postgres_urls: BTreeMap<String, String>,
    /// Prefix of the PostgreSQL schema names (`<prefix><service>`); tests use a unique one per run.
    pub schema_prefix: String,
    /// Connections per service pool on PostgreSQL. The server's `max_connections` (100 by default) is
    /// shared by every service of every process using it, so this stays small.
    pub postgres_pool_size: u32,
}

/// Default connections per service pool on PostgreSQL.
pub const DEFAULT_POSTGRES_POOL_SIZE: u32 = 10;

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            data_dir: PathBuf::from("data"),
            postgres_url: None,
            postgres_urls: BTreeMap::new(),
            schema_prefix: "tessera_".into(),
            postgres_pool_size: DEFAULT_POSTGRES_POOL_SIZE,
        }
    }
}

impl std::fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The database URL may hold a password: never print it.
        f.debug_struct("StoreSettings")
            .field("data_dir", &self.data_dir)
            .field("postgres", &self.postgres_url.as_ref().map(|_| "<set>"))
            .field("postgres_urls", &self.postgres_urls.keys().collect::<Vec<_>>())
            .field("schema_prefix", &self.schema_prefix)
            .field("postgres_pool_size", &self.postgres_pool_size)
            .finish()
    }
}

/// Which engine a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

static RUNTIME_SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
static RUNTIME_POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

/// The runtime's own tables in every fragment's database: the outbox, its deliveries and the inbox.
pub static RUNTIME_MIGRATIONS: Migrations = Migrations { sqlite: &RUNTIME_SQLITE, postgres: &RUNTIME_POSTGRES };

/// Migrations already resolved (embedded), handed to [`Migrator::new`] to get a migrator of our own.
#[derive(Debug)]
struct Resolved(Vec<sqlx::migrate::Migration>);

impl sqlx::migrate::MigrationSource<'static> for Resolved {
    fn resolve(self) -> futures::future::BoxFuture<'static, Result<Vec<sqlx::migrate::Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move { Ok(self.0) })
    }
}

/// A service's migrations, one set per backend (the SQL dialects differ in types and defaults).
pub struct Migrations {
    pub sqlite: &'static Migrator,
    pub postgres: &'static Migrator,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("invalid service name {0:?}")]
    ServiceName(String),
    #[error("cannot open the {service} database: {source}")]
    Connect { service: String, source: sqlx::Error },
    #[error("cannot migrate the {service} database: {source}")]
    Migrate { service: String, source: sqlx::migrate::MigrateError },
    #[error("waiting for another instance to finish starting the {service} database: {source}")]
    StartLock { service: String, source: sqlx::Error },
    #[error("no PostgreSQL URL for the {service} service: set TESSERA_POSTGRES_URLS__{} (or TESSERA_POSTGRES_URL for every service)", .service.to_uppercase())]
    NoUrl { service: String },
}

/// Held by the one process that is setting up a service's PostgreSQL schema (creating it, migrating it,
/// seeding it): a session advisory lock on a connection of its own, so it is released when the step ends
/// or, if the process dies half-way, when PostgreSQL sees the connection close. Any number of instances
/// may start at the same moment; the others wait, then find the work done (`IF NOT EXISTS`, applied
/// migrations, a seed that skips a filled table). SQLite needs none: one process owns a file.
pub struct StartLock(Option<AnyConnection>);

impl StartLock {
    /// Ends the step: closes the lock's connection, which releases the lock.
    pub async fn release(self) {
        if let Some(connection) = self.0 {
            let _ = connection.close().await;
        }
    }
}

/// The advisory-lock key of a schema's start-up steps: 64 bits of a digest of its name.
fn start_lock_key(schema: &str) -> i64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("tessera-start:{schema}").as_bytes());
    i64::from_be_bytes(digest.as_ref()[..8].try_into().expect("eight bytes"))
}

/// The longest a starting instance waits for another to finish migrating or seeding.
const START_LOCK_TIMEOUT: &str = "180s";

impl StoreSettings {
    pub fn backend(&self) -> Backend {
        if self.postgres_url.is_some() || !self.postgres_urls.is_empty() {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    /// The PostgreSQL URL `service` connects with: its own, else the shared one; `None` on SQLite.
    pub fn postgres_url_of(&self, service: &str) -> Result<Option<&str>, DbError> {
        if self.backend() == Backend::Sqlite {
            return Ok(None);
        }
        match self.postgres_urls.get(service).or(self.postgres_url.as_ref()) {
            Some(url) => Ok(Some(url)),
            None => Err(DbError::NoUrl { service: service.to_owned() }),
        }
    }

    /// The PostgreSQL schema of `service`.
    pub fn schema_of(&self, service: &str) -> String {
        format!("{}{service}", self.schema_prefix)
    }

    /// Opens (creating if needed) and migrates the database of `service` with its own migrations.
    pub async fn open(&self, service: &str, migrations: &Migrations) -> Result<AnyPool, DbError> {
        self.open_with(service, &[migrations]).await
    }

    /// Opens a fragment's database: its own migrations, then the runtime's event tables (outbox,
    /// deliveries, inbox), which every fragment has whatever it publishes or consumes.
    pub async fn open_fragment(&self, service: &str, migrations: &Migrations) -> Result<AnyPool, DbError> {
        self.open_with(service, &[migrations, &RUNTIME_MIGRATIONS]).await
    }

    /// Waits for, then holds, the start-up lock of `service`'s schema (see [`StartLock`]).
    pub async fn start_lock(&self, service: &str) -> Result<StartLock, DbError> {
        sqlx::any::install_default_drivers();
        let Some(url) = self.postgres_url_of(service)? else {
            return Ok(StartLock(None));
        };
        let failed = |source| DbError::StartLock { service: service.to_owned(), source };
        let mut connection = AnyConnection::connect(url).await.map_err(failed)?;
        connection.execute(format!("SET lock_timeout = '{START_LOCK_TIMEOUT}'").as_str()).await.map_err(failed)?;
        // `pg_advisory_lock` returns void, which the Any driver cannot decode: select from it instead.
        sqlx::query("SELECT 1 FROM (SELECT pg_advisory_lock($1)) AS locked")
            .bind(start_lock_key(&self.schema_of(service)))
            .execute(&mut connection)
            .await
            .map_err(failed)?;
        Ok(StartLock(Some(connection)))
    }

    /// Opens the database and runs each set of migrations in turn, holding the start-up lock. The sets
    /// share sqlx's bookkeeping table, so each ignores the versions of the others (the runtime's start at
    /// 9000).
    async fn open_with(&self, service: &str, sets: &[&Migrations]) -> Result<AnyPool, DbError> {
        sqlx::any::install_default_drivers();
        if service.is_empty() || !service.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            return Err(DbError::ServiceName(service.to_owned()));
        }
        let lock = self.start_lock(service).await?;
        let opened = self.open_and_migrate(service, sets).await;
        lock.release().await;
        opened
    }

    async fn open_and_migrate(&self, service: &str, sets: &[&Migrations]) -> Result<AnyPool, DbError> {
        let (pool, backend) = match self.postgres_url_of(service)? {
            None => (self.open_sqlite(service).await?, Backend::Sqlite),
            Some(url) => (self.open_postgres(url, service).await?, Backend::Postgres),
        };
        let migrate = |source| DbError::Migrate { service: service.to_owned(), source };
        for set in sets {
            let migrator = match backend {
                Backend::Sqlite => set.sqlite,
                Backend::Postgres => set.postgres,
            };
            if sets.len() == 1 {
                migrator.run(&pool).await.map_err(migrate)?;
                continue;
            }
            let mut shared = Migrator::new(Resolved(migrator.iter().cloned().collect())).await.map_err(migrate)?;
            shared.set_ignore_missing(true);
            shared.run(&pool).await.map_err(migrate)?;
        }
        Ok(pool)
    }

    /// The service's SQLite file in the data dir, owner-only, in WAL mode.
    async fn open_sqlite(&self, service: &str) -> Result<AnyPool, DbError> {
        let connect = |source| DbError::Connect { service: service.to_owned(), source };
        // Owner-only: the data dir holds every service's data and the generated secrets. The
        // file is made 0600 before SQLite opens it; SQLite gives its WAL and shared-memory files
        // the database file's mode.
        let data_dir_error = |source| DbError::DataDir { path: self.data_dir.clone(), source };
        create_private_dir(&self.data_dir).map_err(data_dir_error)?;
        let path = self.data_dir.join(format!("{service}.sqlite"));
        match create_private_file(&path) {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => restrict_to_owner(&path).map_err(data_dir_error)?,
            Err(error) => return Err(data_dir_error(error)),
        }
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let options = AnyConnectOptions::from_str(&url).map_err(connect)?;
        AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|connection, _| {
                Box::pin(async move {
                    // WAL lets readers run beside the writer; busy_timeout queues writers instead
                    // of failing them; foreign keys are off by default in SQLite.
                    connection.execute("PRAGMA journal_mode = WAL").await?;
                    connection.execute("PRAGMA busy_timeout = 5000").await?;
                    connection.execute("PRAGMA foreign_keys = ON").await?;
                    connection.execute("PRAGMA synchronous = NORMAL").await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(connect)
    }

    /// A pool of connections pinned to the service's own schema (created if missing).
    async fn open_postgres(&self, url: &str, service: &str) -> Result<AnyPool, DbError> {
        let connect = |source| DbError::Connect { service: service.to_owned(), source };
        let schema = self.schema_of(service);
        if !schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(DbError::ServiceName(schema));
        }
        let options = AnyConnectOptions::from_str(url).map_err(connect)?;
        // Create the schema once with a plain connection, then pin every pooled connection to it. A
        // provisioned role owns its schema but may not create any (`CREATE SCHEMA IF NOT EXISTS` checks
        // that right first), so an existing schema is left alone.
        let bootstrap = AnyPoolOptions::new().max_connections(1).connect_with(options.clone()).await.map_err(connect)?;
        let (exists,): (bool,) =
            sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)").bind(&schema).fetch_one(&bootstrap).await.map_err(connect)?;
        if !exists {
            bootstrap.execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str()).await.map_err(connect)?;
        }
        bootstrap.close().await;
        // JIT compilation pays off for long analytical queries, not for these short ones, and the
        // large cost estimates of generic plans can trigger it. (Measured on the catalog listing: no
        // difference either way; missing statistics after a bulk load were the real cost.)
        let search_path = format!("SET search_path TO {schema}; SET jit = off");
        AnyPoolOptions::new()
            .max_connections(self.postgres_pool_size.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |connection, _| {
                let search_path = search_path.clone();
                Box::pin(async move {
                    connection.execute(search_path.as_str()).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(connect)
    }
}

/// Seconds since the epoch, the one timestamp type both backends store the same way (`BIGINT`).
pub use shared_auth::keys::now_seconds;

/// Milliseconds since the epoch (event and lease times).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// Whether a database error is worth retrying the whole transaction for: PostgreSQL serialization
/// failures and deadlocks, SQLite's busy/locked answers.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            matches!(db.code().as_deref(), Some("40001" | "40P01" | "5" | "6" | "261" | "262" | "517")) || db.message().contains("database is locked")
        }
        _ => false,
    }
}

/// Runs `attempt` (a whole transaction) again when it failed on a transient conflict.
pub async fn retrying<T, E, F, Fut>(mut attempt: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: AsDbError,
{
    let mut tries = 0u64;
    loop {
        match attempt().await {
            Err(error) if tries < 10 && error.db_error().is_some_and(is_transient) => {
                tries += 1;
                tracing::debug!(tries, "retrying a transaction after a transient conflict");
                tokio::time::sleep(std::time::Duration::from_millis(5 * tries * tries)).await;
            }
            other => return other,
        }
    }
}

/// Errors that may wrap a database error.
pub trait AsDbError {
    fn db_error(&self) -> Option<&sqlx::Error>;
}

impl AsDbError for sqlx::Error {
    fn db_error(&self) -> Option<&sqlx::Error> {
        Some(self)
    }
}
