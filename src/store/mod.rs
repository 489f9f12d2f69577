//! Persistent state behind one type, [`Store`], over SQLite (the embedded default) or
//! PostgreSQL (Supabase or any 13+). Every query is written once with `$N` placeholders and
//! runs unchanged on both backends through [`with_pool!`]; only the DDL differs, in
//! `migrations/sqlite` and `migrations/postgres`.

/// Appends to the key-change log inside the caller's transaction (a macro because the
/// transaction's database type differs per arm of `with_pool!`).
macro_rules! log_change {
    ($tx:expr, $hash:expr, $at:expr) => {
        sqlx::query("INSERT INTO key_changes (key_hash, changed_at) VALUES ($1, $2)")
            .bind(&$hash.0[..])
            .bind($at)
            .execute(&mut *$tx)
            .await
    };
}

/// Inserts a key row (hash and display prefix only) and logs the change, inside `$tx`.
macro_rules! insert_key_row {
    ($tx:expr, $key_id:expr, $customer_id:expr, $hash:expr, $prefix:expr, $name:expr, $plan:expr, $status:expr, $now:expr) => {{
        sqlx::query(
            "INSERT INTO api_keys (id, customer_id, key_hash, prefix, name, plan, status, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind($key_id)
        .bind($customer_id)
        .bind(&$hash.0[..])
        .bind($prefix)
        .bind($name)
        .bind($plan)
        .bind($status)
        .bind($now)
        .execute(&mut *$tx)
        .await?;
        log_change!($tx, $hash, $now)?;
    }};
}

/// Creates or refreshes a customer by email (the identity), returning its id, inside `$tx`.
/// Known details are never erased by a later event that lacks them.
macro_rules! upsert_customer {
    ($tx:expr, $email:expr, $name:expr, $ls_customer_id:expr, $custom_data:expr, $now:expr) => {{
        let (id,): (uuid::Uuid,) = sqlx::query_as(
            "INSERT INTO customers (id, email, name, ls_customer_id, custom_data, created_at) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (email) DO UPDATE SET
                 name = COALESCE(excluded.name, customers.name),
                 ls_customer_id = COALESCE(excluded.ls_customer_id, customers.ls_customer_id),
                 custom_data = COALESCE(excluded.custom_data, customers.custom_data)
             RETURNING id",
        )
        .bind(uuid::Uuid::now_v7())
        .bind($email)
        .bind($name)
        .bind($ls_customer_id)
        .bind($custom_data)
        .bind($now)
        .fetch_one(&mut *$tx)
        .await?;
        id
    }};
}

mod admin;
mod alerts;
mod billing;
mod findings;
mod keys;
mod partitions;
mod schema;
mod traffic;
mod usage;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

pub use admin::{CustomerDetail, DailyUsage, KeySearch, WebhookEventRow};
pub use alerts::AlertRecord;
pub use billing::{Applied, OutboxEmail, VendedKey};
pub use findings::{FindingQuery, FindingRecord, FindingSource, NewFinding, Strikes, kind_name, severity_name};
pub use keys::{KeyListing, KeyRecord, NewKey};
pub use partitions::{MONTHS_AHEAD, UsagePruned};
pub use schema::postgres_schema;
pub use traffic::{Bucket, TRAFFIC_KEPT, TrafficRow, bin_bounds, latency_bin};
pub use usage::{CustomerInfo, RevenueTotals, UsageRecord, UsageTotals, day_key};

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
    /// A new key would take the customer past its plan's `max_keys`.
    #[error("{email} already has {max} keys on plan `{plan}` (its max_keys); revoke one first")]
    MaxKeys { email: String, plan: String, max: u32 },
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

/// Starts a transaction that will write. SQLite must take its write lock up front
/// (`BEGIN IMMEDIATE`): a deferred transaction that later upgrades can fail at once with
/// "database is locked" instead of waiting its turn.
pub(crate) trait BeginWrite {
    type Db: sqlx::Database;
    fn begin_write(&self) -> impl Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>> + Send;
}

impl BeginWrite for SqlitePool {
    type Db = sqlx::Sqlite;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl BeginWrite for PgPool {
    type Db = sqlx::Postgres;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.begin().await
    }
}

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
