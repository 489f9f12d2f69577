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
    ($tx:expr, $key_id:expr, $customer_id:expr, $hash:expr, $prefix:expr, $name:expr, $plan:expr, $status:expr, $expires_at:expr, $now:expr) => {{
        sqlx::query(
            "INSERT INTO api_keys (id, customer_id, key_hash, prefix, name, plan, status, expires_at, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind($key_id)
        .bind($customer_id)
        .bind(&$hash.0[..])
        .bind($prefix)
        .bind($name)
        .bind($plan)
        .bind($status)
        .bind($expires_at)
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

/// Writes one credit-ledger row (once per `source`: a replayed delivery or a second settlement
/// adds nothing) and adds it to the customer's balance in the same transaction, so the balance
/// is always the ledger's sum. When the balance crosses down to the low-balance threshold or to
/// zero, a notice email is queued in the outbox in the same transaction, once per crossing.
/// Evaluates to that notice, if one was queued.
macro_rules! add_credit {
    ($tx:expr, $customer_id:expr, $kind:expr, $amount_nano:expr, $source:expr, $note:expr, $now:expr) => {{
        let inserted = sqlx::query(
            "INSERT INTO credit_ledger (id, customer_id, kind, amount_nano, source, note, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (source) DO NOTHING",
        )
        .bind(uuid::Uuid::now_v7())
        .bind($customer_id)
        .bind($kind)
        .bind($amount_nano)
        .bind($source)
        .bind($note)
        .bind($now)
        .execute(&mut *$tx)
        .await?
        .rows_affected()
            == 1;
        let mut notice: Option<$crate::store::CreditNotice> = None;
        if inserted {
            let (balance, low, notified): (i64, i64, Option<String>) = sqlx::query_as(
                "INSERT INTO credit_balances (customer_id, balance_nano) VALUES ($1, $2) ON CONFLICT (customer_id)
                 DO UPDATE SET balance_nano = credit_balances.balance_nano + excluded.balance_nano
                 RETURNING balance_nano, low_balance_nano, notified",
            )
            .bind($customer_id)
            .bind($amount_nano)
            .fetch_one(&mut *$tx)
            .await?;
            let level = $crate::store::CreditLevel::of(balance, low);
            let told = notified.as_deref().and_then($crate::store::CreditLevel::parse);
            if level != told {
                sqlx::query("UPDATE credit_balances SET notified = $2 WHERE customer_id = $1")
                    .bind($customer_id)
                    .bind(level.map($crate::store::CreditLevel::as_str))
                    .execute(&mut *$tx)
                    .await?;
            }
            // Told only going down: rising from zero into the low band re-arms the zero notice.
            if let Some(level) = level.filter(|level| told.is_none_or(|told| *level > told)) {
                let (email,): (String,) = sqlx::query_as("SELECT email FROM customers WHERE id = $1")
                    .bind($customer_id)
                    .fetch_one(&mut *$tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO email_outbox (id, customer_id, to_email, plan, status, next_attempt_at, created_at,
                         kind, credit_nano)
                     VALUES ($1, $2, $3, '', 'pending', $4, $4, $5, $6)",
                )
                .bind(uuid::Uuid::now_v7())
                .bind($customer_id)
                .bind(&email)
                .bind($now)
                .bind(level.as_str())
                .bind(balance)
                .execute(&mut *$tx)
                .await?;
                notice = Some($crate::store::CreditNotice {
                    customer_id: $customer_id,
                    email,
                    level,
                    balance_nano: balance,
                });
            }
        }
        notice
    }};
}

/// The customer's balance, its row locked until the transaction ends (a no-op UPDATE: a row
/// lock on PostgreSQL, and SQLite's writers are serialized anyway); 0 without a row.
macro_rules! locked_balance {
    ($tx:expr, $customer_id:expr) => {{
        let row: Option<(i64,)> = sqlx::query_as(
            "UPDATE credit_balances SET balance_nano = balance_nano WHERE customer_id = $1 RETURNING balance_nano",
        )
        .bind($customer_id)
        .fetch_optional(&mut *$tx)
        .await?;
        row.map_or(0, |(balance,)| balance)
    }};
}

mod admin;
mod alerts;
pub mod backup;
mod billing;
mod credits;
mod findings;
mod idle_lane;
mod keys;
mod partitions;
mod portal;
mod schema;
mod traffic;
mod usage;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

pub use admin::{CustomerDetail, DailyUsage, KeySearch, WebhookEventRow};
pub use alerts::{AlertRecord, IncidentClock, IncidentNotice};
pub use billing::{Applied, OldKey, OutboxEmail, PurchaseOf, Rotated, RotationRecord, SealedRotation, VendedKey};
pub use credits::{CreditHold, CreditLevel, CreditNotice, CreditTotals, LowCredit};
pub use findings::{FindingQuery, FindingRecord, FindingSource, NewFinding, Strikes, kind_name, severity_name};
pub use idle_lane::{IdleLane, LaneError};
pub use keys::{KeyListing, KeyRecord, NewKey};
pub use partitions::{MONTHS_AHEAD, UsagePruned};
pub use portal::{CustomerLedgerEntry, CustomerPurchase, ModelUsage, PORTAL_LINK_EMAIL, PortalLink, Redeemed};
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

/// The database's migrations against this binary's, by version.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MigrationStatus {
    /// Migrations this binary has.
    pub known: usize,
    /// Known, not applied yet (`omi migrate` or `omi serve` applies them).
    pub pending: Vec<i64>,
    /// Applied, unknown to this binary: a newer omi migrated the database (sqlx refuses to run).
    pub unknown: Vec<i64>,
    /// Applied from a different text than this binary's (sqlx refuses to run).
    pub modified: Vec<i64>,
}

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

/// Which database a `DATABASE_URL` names, and for SQLite the file.
pub(crate) enum DatabaseUrl<'a> {
    Postgres,
    Sqlite(&'a str),
}

impl<'a> DatabaseUrl<'a> {
    pub(crate) fn parse(url: &'a str) -> StoreResult<DatabaseUrl<'a>> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseUrl::Postgres)
        } else if let Some(path) = sqlite_path(url) {
            Ok(DatabaseUrl::Sqlite(path))
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }
}

/// How every connection to a SQLite file is opened (WAL, so readers never block the writer).
fn sqlite_options(path: &str) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5))
}

/// Three, with the usage writer's own connection beside them (`idle_lane.rs`): four threads.
const SQLITE_MAX_CONNECTIONS: u32 = 3;

impl Store {
    pub async fn connect(url: &str) -> StoreResult<Store> {
        match DatabaseUrl::parse(url)? {
            DatabaseUrl::Postgres => {
                let options = PgConnectOptions::from_str(url)?.application_name("omi");
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with(options)
                    .await?;
                Ok(Store::Postgres(pool))
            }
            DatabaseUrl::Sqlite(path) => {
                let options = sqlite_options(path).create_if_missing(true);
                // Few: SQLite has one writer at a time, the machine few cores, and each
                // connection's thread keeps about 1.5 MiB of glibc arena (bench/README.md).
                let pool =
                    SqlitePoolOptions::new().max_connections(SQLITE_MAX_CONNECTIONS).connect_with(options).await?;
                Ok(Store::Sqlite(pool))
            }
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

    /// How the database's applied migrations compare with this binary's (`omi doctor`).
    /// Reads only: a database never migrated has no `_sqlx_migrations` table, and every
    /// migration is pending.
    pub async fn migration_status(&self) -> StoreResult<MigrationStatus> {
        // Whether the table exists is asked of each backend's own catalog.
        let (migrator, has_table): (&sqlx::migrate::Migrator, bool) = match self {
            Store::Sqlite(pool) => (
                &SQLITE_MIGRATOR,
                sqlx::query_scalar(
                    "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
                )
                .fetch_one(pool)
                .await?,
            ),
            Store::Postgres(pool) => (
                &PG_MIGRATOR,
                sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetch_one(pool).await?,
            ),
        };
        let applied: Vec<(i64, Vec<u8>)> = if has_table {
            with_pool!(self, pool => sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations WHERE success ORDER BY version")
                .fetch_all(pool)
                .await)?
        } else {
            Vec::new()
        };
        let known: Vec<&sqlx::migrate::Migration> =
            migrator.iter().filter(|m| !m.migration_type.is_down_migration()).collect();
        let mut status = MigrationStatus { known: known.len(), ..MigrationStatus::default() };
        for migration in &known {
            match applied.iter().find(|(version, _)| *version == migration.version) {
                None => status.pending.push(migration.version),
                Some((_, checksum)) if *checksum != *migration.checksum => status.modified.push(migration.version),
                Some(_) => {}
            }
        }
        status.unknown =
            applied.iter().map(|(version, _)| *version).filter(|v| !known.iter().any(|m| m.version == *v)).collect();
        Ok(status)
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

/// The file of a `sqlite://PATH` (or `sqlite:PATH`) URL.
pub fn sqlite_path(url: &str) -> Option<&str> {
    url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))
}

pub(crate) fn pg_migrator() -> &'static sqlx::migrate::Migrator {
    &PG_MIGRATOR
}
