//! Usage at scale: PostgreSQL's monthly partitions of `usage_records` (migration 0017, made
//! ahead by the server, a DEFAULT partition behind them), SQLite's table kept in time order
//! (migration 0019), and `usage_retention_days`, which deletes whole old months while the daily
//! rollups keep `omi report margins` unchanged.
//! Every time here is relative to the clock the test reads, never a date written in.

use crate::dashboard::usage_record;
use crate::on_both_backends;
use crate::support::{Backend, TestDb};
use chrono::{DateTime, Datelike, Months, NaiveDate, TimeDelta, Utc};
use omi::agents::accountant::{report, upkeep};
use omi::customers::EmailAddress;
use omi::keys;
use omi::store::{KeyListing, MONTHS_AHEAD, Store, UsageRecord};
use sqlx::PgPool;
use std::str::FromStr;

on_both_backends!(retention_deletes_whole_old_months_and_the_margins_report_is_unchanged);

fn month_start(at: DateTime<Utc>) -> DateTime<Utc> {
    let day = at.date_naive().with_day(1).expect("the first of the month");
    day.and_hms_opt(0, 0, 0).expect("midnight").and_utc()
}

fn months(at: DateTime<Utc>, n: i32) -> DateTime<Utc> {
    let shifted = if n >= 0 {
        at.checked_add_months(Months::new(n.unsigned_abs()))
    } else {
        at.checked_sub_months(Months::new(n.unsigned_abs()))
    };
    shifted.expect("a representable month")
}

fn partition_of(at: DateTime<Utc>) -> String {
    format!("usage_records_{}", at.format("%Y_%m"))
}

async fn key(store: &Store) -> KeyListing {
    let email = EmailAddress::parse("ada@example.com").expect("email");
    keys::issue(store, &email, "pro", None, Default::default()).await.expect("issue").1
}

/// Every record, oldest first, as stored.
async fn all_records(store: &Store) -> Vec<UsageRecord> {
    let mut records = store.usage_page(None, months(Utc::now(), 1200), 100_000).await.expect("records");
    records.sort_by_key(|r| (r.at, r.id));
    records
}

fn as_json(records: &[UsageRecord]) -> serde_json::Value {
    serde_json::to_value(records).expect("json")
}

/// Rows per table that holds them (each partition, the DEFAULT one included).
async fn rows_by_partition(pool: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT tableoid::regclass::text, COUNT(*) FROM usage_records GROUP BY 1 ORDER BY 1")
        .fetch_all(pool)
        .await
        .expect("rows by partition")
}

async fn partitions(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'usage_records'::regclass ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("partitions")
}

/// Row level security stays on for every partition (a table Supabase's Data API would expose).
async fn assert_every_partition_has_rls(pool: &PgPool) {
    let open: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class WHERE relispartition AND relkind = 'r' AND NOT relrowsecurity",
    )
    .fetch_all(pool)
    .await
    .expect("rls");
    assert!(open.is_empty(), "partitions without row level security: {open:?}");
}

#[tokio::test]
async fn the_migration_partitions_a_table_of_several_months_keeping_every_row() {
    let Some(db) = TestDb::new(Backend::Postgres).await else { return };
    let pool = PgPool::connect(&db.url).await.expect("connect");
    sqlx::migrate!("./migrations/postgres").run_to(16, &pool).await.expect("the schema before partitioning");
    let store = Store::connect(&db.url).await.expect("connect");
    let key = key(&store).await;
    let now = Utc::now();
    let at = [months(now, -14), months(now, -3), months(now, -1), month_start(now), now, months(now, 4)];
    let records: Vec<UsageRecord> = at
        .iter()
        .enumerate()
        .flat_map(|(i, at)| (0..3).map(move |n| (i * 3 + n, *at)))
        .map(|(i, at)| usage_record(&key, i, at))
        .collect();
    store.insert_usage(&records).await.expect("records in the unpartitioned table");
    let before = all_records(&store).await;
    assert_eq!(before.len(), 18);

    store.migrate().await.expect("migration 0017 and on");
    assert_eq!(as_json(&all_records(&store).await), as_json(&before), "every row, unchanged");
    let mut expected: Vec<(String, i64)> = Vec::new();
    for at in at {
        match expected.iter_mut().find(|(name, _)| *name == partition_of(at)) {
            Some((_, rows)) => *rows += 3,
            None => expected.push((partition_of(at), 3)),
        }
    }
    expected.sort();
    assert_eq!(rows_by_partition(&pool).await, expected, "each row in its month's partition, none in DEFAULT");
    let made = partitions(&pool).await;
    assert!(made.contains(&partition_of(months(now, 1))) && made.contains(&"usage_records_default".to_string()));
    let key_columns: String = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'usage_records'::regclass AND contype = 'p'",
    )
    .fetch_one(&pool)
    .await
    .expect("primary key");
    assert_eq!(key_columns, "PRIMARY KEY (id, at)");
    assert_every_partition_has_rls(&pool).await;
    // The same record twice is still refused.
    assert!(store.insert_usage(&before[..1]).await.is_err(), "(id, at) is unique");
}

/// SQLite's twin of the partitioning above: migration 0019 rebuilds `usage_records` as a
/// table kept in time order (WITHOUT ROWID, keyed by `(at, id)`), without the `at` index the
/// key now serves. Every row must survive the rebuild, and what read the index must still work.
#[tokio::test]
async fn the_sqlite_migration_keeps_the_records_in_time_order_and_every_row() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else { return };
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(&db.url).expect("url").create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.expect("connect");
    sqlx::migrate!("./migrations/sqlite").run_to(18, &pool).await.expect("the schema before 0019");
    let store = Store::connect(&db.url).await.expect("connect");
    let key = key(&store).await;
    let now = Utc::now();
    // Written out of time order, as two instances' batches or a late stream would be.
    let at = [now, months(now, -3), months(now, -14), now - TimeDelta::seconds(5), months(now, -1)];
    let records: Vec<UsageRecord> = at.iter().enumerate().map(|(i, at)| usage_record(&key, i, *at)).collect();
    store.insert_usage(&records).await.expect("records in the rowid table");
    let before = all_records(&store).await;
    assert_eq!(before.len(), 5);

    store.migrate().await.expect("migration 0019");
    assert_eq!(as_json(&all_records(&store).await), as_json(&before), "every row, unchanged");
    let table: String = sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE name = 'usage_records'")
        .fetch_one(&pool)
        .await
        .expect("sql");
    assert!(table.contains("PRIMARY KEY (at, id)") && table.contains("WITHOUT ROWID"), "{table}");
    let indexes: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'usage_records'")
            .fetch_all(&pool)
            .await
            .expect("indexes");
    assert_eq!(indexes, ["usage_records_customer_at_idx"], "the `at` index is the table's key now");
    // The newest first, from the table's own order.
    let page = store.usage_page(None, now + TimeDelta::seconds(1), 2).await.expect("page");
    assert_eq!(page.iter().map(|r| r.at).collect::<Vec<_>>(), [now, now - TimeDelta::seconds(5)]);
    // Retention deletes by the key's order too.
    let pruned = store.prune_usage_before(months(now, -2)).await.expect("prune");
    assert_eq!(pruned.rows, 2, "the records of three and fourteen months ago");
    assert_eq!(all_records(&store).await.len(), 3);
    // New records still go in after the rebuild.
    store.insert_usage(&[usage_record(&key, 9, now)]).await.expect("a record after 0019");
    assert_eq!(all_records(&store).await.len(), 4);
}

#[tokio::test]
async fn partitions_are_made_ahead_and_a_month_without_one_still_takes_records() {
    let Some(db) = TestDb::new(Backend::Postgres).await else { return };
    let store = db.store().await;
    let pool = PgPool::connect(&db.url).await.expect("connect");
    let key = key(&store).await;
    let now = Utc::now();

    store.prepare_usage_partitions(now).await.expect("prepare");
    let made = partitions(&pool).await;
    for ahead in 0..=MONTHS_AHEAD as i32 {
        assert!(made.contains(&partition_of(months(now, ahead))), "month +{ahead} is ready: {made:?}");
    }
    assert!(store.prepare_usage_partitions(now).await.expect("again").is_empty(), "nothing more to make");

    // A month nobody prepared (the server stopped for half a year): the DEFAULT partition takes it.
    let later = months(now, 6);
    let records = vec![usage_record(&key, 1, later), usage_record(&key, 2, now)];
    store.insert_usage(&records).await.expect("an insert never fails for want of a partition");
    let default_rows = ("usage_records_default".to_string(), 1);
    assert!(rows_by_partition(&pool).await.contains(&default_rows), "{:?}", rows_by_partition(&pool).await);
    let before = all_records(&store).await;

    // The next upkeep gives the month its partition and moves the row there; two instances at once.
    let other = Store::connect(&db.url).await.expect("a second instance");
    let (a, b) = tokio::join!(store.prepare_usage_partitions(later), other.prepare_usage_partitions(later));
    let created = [a.expect("one instance"), b.expect("the other")].concat();
    assert_eq!(created.iter().filter(|name| **name == partition_of(later)).count(), 1, "made once: {created:?}");
    let rows = rows_by_partition(&pool).await;
    assert!(rows.contains(&(partition_of(later), 1)) && !rows.iter().any(|(name, _)| name == "usage_records_default"));
    assert_eq!(as_json(&all_records(&store).await), as_json(&before), "the record moved, unchanged");
    assert_every_partition_has_rls(&pool).await;
}

/// `usage_retention_days` deletes the records of every month that ended before the cutoff's
/// month began (PostgreSQL drops its partition; SQLite deletes its rows); `usage_daily` stays.
async fn retention_deletes_whole_old_months_and_the_margins_report_is_unchanged(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let store = db.store().await;
    let key = key(&store).await;
    let now = Utc::now();
    let retention_days = 100;
    let cutoff_month = month_start(now - TimeDelta::days(retention_days));
    let old_month = months(cutoff_month, -2);
    let old = [old_month + TimeDelta::days(14), cutoff_month - TimeDelta::milliseconds(1)];
    let kept = [cutoff_month, now - TimeDelta::days(retention_days) + TimeDelta::hours(1), now];
    let records: Vec<UsageRecord> =
        old.iter().chain(&kept).enumerate().map(|(i, at)| usage_record(&key, i, *at)).collect();
    store.insert_usage(&records).await.expect("records");

    let config = omi::config::Config::default();
    let old_days = |at: DateTime<Utc>| {
        let first: NaiveDate = month_start(at).date_naive();
        first..first.checked_add_months(Months::new(1)).expect("next month")
    };
    let report_of = |at: DateTime<Utc>| {
        let (store, config) = (&store, &config);
        async move { report::build(store, config, "month", old_days(at)).await.expect("report").to_csv() }
    };
    let before = [report_of(old[0]).await, report_of(old[1]).await];
    assert!(before.iter().all(|csv| csv.contains("ada@example.com")), "the old months have usage: {before:?}");

    upkeep::run(&store, Some(retention_days as u32), now).await;
    let left: Vec<DateTime<Utc>> = all_records(&store).await.iter().map(|r| r.at).collect();
    let expected: Vec<DateTime<Utc>> = records[old.len()..].iter().map(|r| r.at).collect();
    assert_eq!(left.len(), kept.len(), "the cutoff's own month is kept whole");
    for (stored, wanted) in left.iter().zip(&expected) {
        assert!((*stored - *wanted).num_milliseconds().abs() < 1, "{stored} vs {wanted}");
    }
    assert_eq!([report_of(old[0]).await, report_of(old[1]).await], before, "the rollups still answer for them");

    if let Store::Postgres(pool) = &store {
        let left = partitions(pool).await;
        assert!(!left.contains(&partition_of(old[0])) && !left.contains(&partition_of(old[1])), "{left:?}");
        assert!(left.contains(&partition_of(cutoff_month)) && left.contains(&partition_of(now)), "{left:?}");
    }
    // Unset: nothing is ever deleted.
    upkeep::run(&store, None, months(now, 120)).await;
    assert_eq!(all_records(&store).await.len(), kept.len());

    // The report names each customer's newest key's plan.
    let email = EmailAddress::parse("ada@example.com").expect("email");
    keys::issue(&store, &email, "team", None, Default::default()).await.expect("a newer key");
    let newest = report::build(&store, &config, "month", old_days(now)).await.expect("report");
    assert_eq!(newest.customers[0].plan.as_deref(), Some("team"));
}
