//! Persistent state behind one type, [`Store`], over SQLite (the embedded default) or
//! PostgreSQL (Supabase or any 13+). Every query is written once with `$N` placeholders and
//! runs unchanged on both backends through [`with_pool!`]; only the DDL differs, in
//! `migrations/sqlite` and `migrations/postgres`.

mod keys;
mod schema;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

pub use keys::{KeyListing, KeyRecord, NewKey};
pub use schema::postgres_schema;

static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported DATABASE_URL scheme (use postgres://… or sqlite://…)")]
    UnsupportedUrl,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same code against whichever pool the store holds; each arm is type-checked
/// for its own database, so one SQL text serves both.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::store::Store::Sqlite($pool) => $body,
            $crate::store::Store::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

impl Store {
    pub async fn connect(url: &str) -> StoreResult<Store> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?.application_name("omi");
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(options)
                .await?;
            Ok(Store::Postgres(pool))
        } else if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            let options = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePoolOptions::new().max_connections(8).connect_with(options).await?;
            Ok(Store::Sqlite(pool))
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }

    pub async fn migrate(&self) -> StoreResult<()> {
        match self {
            Store::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await?,
            Store::Postgres(pool) => PG_MIGRATOR.run(pool).await?,
        }
        Ok(())
    }

    /// Cheap liveness probe for `/readyz`.
    pub async fn ping(&self) -> StoreResult<()> {
        with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }
}

pub(crate) fn pg_migrator() -> &'static sqlx::migrate::Migrator {
    &PG_MIGRATOR
}
