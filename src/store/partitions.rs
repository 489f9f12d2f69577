//! How long raw usage records live. On PostgreSQL `usage_records` is partitioned by UTC month
//! (migration 0017): partitions named `usage_records_YYYY_MM`, created ahead of time here, and a
//! DEFAULT partition that takes a record whose month has none yet (an insert never fails for
//! want of a partition) until the next upkeep moves it into its month. Retention drops whole
//! months; `usage_daily` keeps their totals, so reports over them do not change. SQLite has no
//! partitions: its retention deletes the same months' rows in batches.

use super::{Store, StoreResult};
use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use sqlx::{Connection, PgConnection};

/// Months prepared after the current one: a server that stops running upkeep (stopped, or its
/// database unreachable) still has two months before records land in the DEFAULT partition.
pub const MONTHS_AHEAD: u32 = 2;

/// Serializes partition upkeep across instances (`pg_advisory_xact_lock`; any constant that no
/// other lock of this database uses).
const PARTITION_LOCK: i64 = 0x6f6d_695f_7061_7274; // "omi_part"

/// A waiting DDL statement queues every insert behind it: give up and try at the next upkeep.
const DDL_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '5s'";

/// Rows deleted per statement on SQLite, so the writer is never held for long.
const SQLITE_DELETE_BATCH: i64 = 10_000;

const PARTITION_PREFIX: &str = "usage_records_";

/// What retention removed: PostgreSQL's dropped partitions, and rows deleted one by one
/// (SQLite's, or old rows still in PostgreSQL's DEFAULT partition).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UsagePruned {
    pub partitions: Vec<String>,
    pub rows: u64,
}

/// The first day of `at`'s UTC month.
fn month_of(at: DateTime<Utc>) -> NaiveDate {
    let day = at.date_naive();
    day.with_day(1).unwrap_or(day)
}

fn partition_name(month: NaiveDate) -> String {
    format!("{PARTITION_PREFIX}{}", month.format("%Y_%m"))
}

/// The month of a partition this module names; `None` for the DEFAULT partition or any other.
fn month_of_partition(name: &str) -> Option<NaiveDate> {
    let suffix = name.strip_prefix(PARTITION_PREFIX)?;
    NaiveDate::parse_from_str(&format!("{suffix}_01"), "%Y_%m_%d").ok()
}

/// A month's lower bound as a `timestamptz` literal (UTC midnight).
fn bound(month: NaiveDate) -> String {
    format!("{} 00:00:00+00", month.format("%Y-%m-%d"))
}

impl Store {
    /// Creates the partitions of `now`'s month and the [`MONTHS_AHEAD`] after it, and those of
    /// the months of any rows in the DEFAULT partition (moving the rows into them). Returns the
    /// partitions created. Safe to run from every instance at once. SQLite: nothing to do.
    pub async fn prepare_usage_partitions(&self, now: DateTime<Utc>) -> StoreResult<Vec<String>> {
        let Store::Postgres(pool) = self else { return Ok(Vec::new()) };
        let mut conn = pool.acquire().await?;
        let existing = partitions(&mut conn).await?;
        let stray: Vec<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT DISTINCT date_trunc('month', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' FROM usage_records_default",
        )
        .fetch_all(&mut *conn)
        .await?;
        let current = month_of(now);
        let mut months: Vec<NaiveDate> =
            (0..=MONTHS_AHEAD).filter_map(|n| current.checked_add_months(Months::new(n))).collect();
        months.extend(stray.into_iter().map(month_of));
        months.sort_unstable();
        months.dedup();
        let mut created = Vec::new();
        for month in months {
            let name = partition_name(month);
            if !existing.contains(&name) && create_partition(&mut conn, month).await? {
                tracing::info!(partition = %name, "usage partition created");
                created.push(name);
            }
        }
        Ok(created)
    }

    /// Deletes the usage records of every whole UTC month that ended before `cutoff`'s month
    /// began (the records, not their `usage_daily` totals). PostgreSQL drops those months'
    /// partitions; SQLite deletes their rows in batches.
    pub async fn prune_usage_before(&self, cutoff: DateTime<Utc>) -> StoreResult<UsagePruned> {
        let keep_from = month_of(cutoff);
        let boundary = keep_from.and_hms_opt(0, 0, 0).map_or(cutoff, |t| t.and_utc());
        let mut pruned = UsagePruned::default();
        match self {
            Store::Sqlite(pool) => loop {
                let deleted = sqlx::query(
                    "DELETE FROM usage_records WHERE (at, id) IN
                         (SELECT at, id FROM usage_records WHERE at < $1 ORDER BY at LIMIT $2)",
                )
                .bind(boundary)
                .bind(SQLITE_DELETE_BATCH)
                .execute(pool)
                .await?
                .rows_affected();
                pruned.rows += deleted;
                if deleted < SQLITE_DELETE_BATCH as u64 {
                    break;
                }
            },
            Store::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                let months: Vec<NaiveDate> =
                    partitions(&mut conn).await?.iter().filter_map(|name| month_of_partition(name)).collect();
                for month in months.into_iter().filter(|month| *month < keep_from) {
                    let name = partition_name(month);
                    let mut tx = conn.begin().await?;
                    serialize_upkeep(&mut tx).await?;
                    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {name}"))).execute(&mut *tx).await?;
                    tx.commit().await?;
                    pruned.partitions.push(name);
                }
                pruned.rows = sqlx::query("DELETE FROM usage_records_default WHERE at < $1")
                    .bind(boundary)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
            }
        }
        Ok(pruned)
    }
}

/// The partitions of `usage_records`, DEFAULT included.
async fn partitions(conn: &mut PgConnection) -> StoreResult<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT c.relname::TEXT FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'usage_records'::regclass ORDER BY 1",
    )
    .fetch_all(conn)
    .await?)
}

async fn serialize_upkeep(tx: &mut PgConnection) -> StoreResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(PARTITION_LOCK).execute(&mut *tx).await?;
    sqlx::query(DDL_LOCK_TIMEOUT).execute(&mut *tx).await?;
    Ok(())
}

/// Creates `month`'s partition in one transaction: a table like the parent, filled with the
/// month's rows taken out of the DEFAULT partition, then attached (attaching fails while the
/// DEFAULT partition holds a row of the month, so a plain `PARTITION OF` could not be used).
/// Row level security is not inherited: turned on like every table's. `false` when another
/// instance created it first.
async fn create_partition(conn: &mut PgConnection, month: NaiveDate) -> StoreResult<bool> {
    let name = partition_name(month);
    let next = month.checked_add_months(Months::new(1)).unwrap_or(month);
    let (from, to) = (bound(month), bound(next));
    let mut tx = conn.begin().await?;
    serialize_upkeep(&mut tx).await?;
    // Taken now rather than by ATTACH: no insert may add a row of the month to the DEFAULT
    // partition after its rows were moved (ATTACH would then fail).
    sqlx::query("LOCK TABLE usage_records_default IN ACCESS EXCLUSIVE MODE").execute(&mut *tx).await?;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(&name).fetch_one(&mut *tx).await?;
    if exists {
        return Ok(false);
    }
    let statements = [
        format!("CREATE TABLE {name} (LIKE usage_records INCLUDING DEFAULTS)"),
        format!("ALTER TABLE {name} ENABLE ROW LEVEL SECURITY"),
        format!(
            "WITH moved AS (DELETE FROM usage_records_default WHERE at >= '{from}' AND at < '{to}' RETURNING *)
             INSERT INTO {name} SELECT * FROM moved"
        ),
        format!("ALTER TABLE usage_records ATTACH PARTITION {name} FOR VALUES FROM ('{from}') TO ('{to}')"),
    ];
    for sql in statements {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_named_by_month_and_read_back() {
        let at = DateTime::parse_from_rfc3339("2026-12-31T23:59:59.999Z").expect("time").to_utc();
        let month = month_of(at);
        assert_eq!(partition_name(month), "usage_records_2026_12");
        assert_eq!(month_of_partition("usage_records_2026_12"), Some(month));
        assert_eq!(bound(month), "2026-12-01 00:00:00+00");
        assert_eq!(month_of_partition("usage_records_default"), None);
        assert_eq!(month_of_partition("usage_records_2026_13"), None);
    }
}
