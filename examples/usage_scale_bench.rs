//! Usage at scale on PostgreSQL (`bench/usage_scale.sh`): a month of usage records for 10,000
//! customers written through the Accountant's batch path (`Store::insert_usage`, batches of
//! `WriterSettings::default().batch`, so `usage_daily` and the traffic rollup are kept as in
//! production), timing the margins report (`omi report margins`) before any record, at each
//! checkpoint, and after retention dropped the month's partition (it must not change).
//!
//!   cargo run --release --example usage_scale_bench -- ROWS [CHECKPOINT...]
//!   e.g. `-- 10000000 1000000` writes 10M rows and also times the report at 1M.
//!   OMI_BENCH_PG_URL: the server (default postgres://postgres@127.0.0.1:5432/postgres); the
//!   bench creates its own database and drops it at the end unless `OMI_BENCH_KEEP=1`.

use chrono::{Datelike, Months, TimeDelta, Utc};
use futures_util::StreamExt;
use omi::agents::accountant::{WriterSettings, report};
use omi::config::Config;
use omi::customers::EmailAddress;
use omi::store::{KeyListing, Store, UsageRecord};
use std::time::{Duration, Instant};

const CUSTOMERS: usize = 10_000;
const REPORT_RUNS: usize = 5;

/// Reproducible and fast: spreads records over customers and token counts.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn record(i: usize, key: &KeyListing, at: chrono::DateTime<Utc>, rng: &mut XorShift) -> UsageRecord {
    let latency_us = 150_000 + (rng.next() % 2_500_000) as i64;
    let cost_nano = 100_000 + (rng.next() % 900_000) as i64;
    UsageRecord {
        id: uuid::Uuid::now_v7(),
        request_id: format!("bench-{i}").into(),
        at,
        key_id: key.id,
        customer_id: key.customer_id,
        plan: "pro".into(),
        route: Some("chat".into()),
        model: Some("gpt-4o-mini".into()),
        provider: Some("openai".into()),
        prompt_tokens: 200 + (rng.next() % 3_000) as i64,
        cached_tokens: 0,
        cache_write_tokens: 0,
        completion_tokens: 50 + (rng.next() % 800) as i64,
        cost_nano: Some(cost_nano),
        spend_nano: Some(cost_nano),
        status: if rng.next().is_multiple_of(100) { 502 } else { 200 },
        latency_us,
        upstream_us: Some(latency_us - 200 - (rng.next() % 2_000) as i64),
        streamed: i.is_multiple_of(3),
        byok: i.is_multiple_of(17),
        usage_estimated: false,
        aborted: false,
        attempts: 1,
    }
}

/// The margins report's median time over a few runs, and its totals (requests, cost).
async fn time_report(store: &Store, config: &Config, month: &str) -> anyhow::Result<(Duration, (i64, f64))> {
    let mut times = Vec::with_capacity(REPORT_RUNS);
    let mut totals = (0, 0.0);
    for _ in 0..REPORT_RUNS {
        let started = Instant::now();
        let books = report::margins(store, config, month).await?;
        times.push(started.elapsed());
        totals = (books.total.requests, books.total.cost_usd);
    }
    times.sort();
    Ok((times[REPORT_RUNS / 2], totals))
}

async fn usage_bytes(pool: &sqlx::PgPool) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(pg_total_relation_size(inhrelid)), 0) AS BIGINT),
                (SELECT pg_total_relation_size('usage_daily'))
         FROM pg_inherits WHERE inhparent = 'usage_records'::regclass",
    )
    .fetch_one(pool)
    .await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let rows = args.next().transpose()?.unwrap_or(1_000_000);
    let mut checkpoints: Vec<usize> = args.collect::<Result<_, _>>()?;
    checkpoints.push(rows);
    checkpoints.sort_unstable();
    checkpoints.dedup();

    let admin =
        std::env::var("OMI_BENCH_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("omi_scale_bench_{}", std::process::id());
    let admin_pool = sqlx::PgPool::connect(&admin).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&admin_pool).await?;
    let url = format!("{}/{name}", admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base));
    let store = Store::connect(&url).await?;
    store.migrate().await?;
    let Store::Postgres(pool) = &store else { anyhow::bail!("PostgreSQL only") };

    // Last whole month, with its partition made the way the server makes them.
    let now = Utc::now();
    let first = now.date_naive().with_day(1).and_then(|d| d.checked_sub_months(Months::new(1)));
    let first = first.and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc()).ok_or(anyhow::anyhow!("month"))?;
    let end = first.checked_add_months(Months::new(1)).ok_or(anyhow::anyhow!("month"))?;
    let month = first.format("%Y-%m").to_string();
    store.prepare_usage_partitions(first).await?;

    let started = Instant::now();
    let issued: Vec<anyhow::Result<KeyListing>> = futures_util::stream::iter(0..CUSTOMERS)
        .map(|i| {
            let store = &store;
            async move {
                let email = EmailAddress::parse(&format!("customer-{i}@example.com"))?;
                Ok(omi::keys::issue(store, &email, "pro", None, Default::default()).await?.1)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let keys = issued.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    println!("{CUSTOMERS} customers with a key in {:.1} s", started.elapsed().as_secs_f64());

    let config = Config::default();
    let (empty, _) = time_report(&store, &config, &month).await?;
    println!("margins report for {month} with no records: {:.1} ms", empty.as_secs_f64() * 1e3);

    // Records in time order through the month, customers drawn uniformly: every customer has
    // usage on every day, the rollup's worst case (10,000 × days rows for the month).
    let span_us = (end - first).num_microseconds().ok_or(anyhow::anyhow!("span"))?;
    let batch_size = WriterSettings::default().batch;
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let (mut written, mut phase_start, mut phase_rows) = (0, Instant::now(), 0);
    let mut batch = Vec::with_capacity(batch_size);
    for checkpoint in checkpoints {
        while written < checkpoint {
            batch.clear();
            for i in written..(written + batch_size).min(checkpoint) {
                // In i128: 10M rows times a month of microseconds overflows an i64.
                let offset = (i128::from(span_us) * i as i128 / rows as i128) as i64;
                let key = &keys[(rng.next() % CUSTOMERS as u64) as usize];
                batch.push(record(i, key, first + TimeDelta::microseconds(offset), &mut rng));
            }
            store.insert_usage(&batch).await?;
            written += batch.len();
            phase_rows += batch.len();
        }
        let elapsed = phase_start.elapsed().as_secs_f64();
        sqlx::query("VACUUM ANALYZE usage_records").execute(pool).await?; // autovacuum's work on a live database
        sqlx::query("VACUUM ANALYZE usage_daily").execute(pool).await?;
        let (took, (requests, cost)) = time_report(&store, &config, &month).await?;
        let (records_bytes, daily_bytes) = usage_bytes(pool).await?;
        println!(
            "{written} records: inserted {phase_rows} in {elapsed:.1} s = {:.0} records/s; margins report {:.1} ms \
             (median of {REPORT_RUNS}; {requests} requests, ${cost:.2}); usage_records {} MiB, usage_daily {} MiB",
            phase_rows as f64 / elapsed,
            took.as_secs_f64() * 1e3,
            records_bytes >> 20,
            daily_bytes >> 20
        );
        anyhow::ensure!(requests == written as i64, "the report counts every record");
        (phase_start, phase_rows) = (Instant::now(), 0);
    }

    // Retention past the month: its partition is dropped, the report reads the same rollups.
    let (before, totals) = time_report(&store, &config, &month).await?;
    let started = Instant::now();
    let pruned = store.prune_usage_before(end).await?;
    let dropped = started.elapsed();
    let (after, totals_after) = time_report(&store, &config, &month).await?;
    println!(
        "retention dropped {:?} in {:.1} ms; margins report {:.1} ms before, {:.1} ms after, totals {}",
        pruned.partitions,
        dropped.as_secs_f64() * 1e3,
        before.as_secs_f64() * 1e3,
        after.as_secs_f64() * 1e3,
        if totals == totals_after { "unchanged" } else { "CHANGED" }
    );
    anyhow::ensure!(totals == totals_after, "retention changed the margins report");
    store.close().await;
    if std::env::var_os("OMI_BENCH_KEEP").is_some() {
        println!("kept the database {name}");
    } else {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)"))).execute(&admin_pool).await?;
    }
    Ok(())
}
