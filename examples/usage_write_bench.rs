//! Sustained usage writing into PostgreSQL the way the Accountant's writer does it (issue:
//! the Accountant; target ≥ 10,000 records/s). Run: `bench/accountant.sh`, or
//! `cargo run --release --example usage_write_bench -- [records]` with PostgreSQL at
//! `OMI_BENCH_PG_URL` (default postgres://postgres@127.0.0.1:5432/postgres).

use omi::agents::accountant::{self, WriterSettings};
use omi::billing::prices::PriceTable;
use omi::events::{Event, RequestEvent, TokenUsage};
use omi::store::Store;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn event(customer: uuid::Uuid, key: uuid::Uuid, n: usize) -> Event {
    Event::Request(Box::new(RequestEvent {
        key_id: Some(key),
        customer_id: Some(customer),
        plan: Some(Arc::from("pro")),
        model: Some("gpt-4o-mini".into()),
        provider: Some(Arc::from("openai")),
        status: 200,
        total: Duration::from_millis(12),
        upstream: Some(Duration::from_millis(11)),
        usage: Some(TokenUsage { prompt_tokens: 120, cached_tokens: 20, cache_write_tokens: 0, completion_tokens: 80 }),
        byok: n.is_multiple_of(10),
        streamed: n.is_multiple_of(2),
        request_bytes: 300,
        response_bytes: 900,
        ..RequestEvent::new(format!("bench-{n}").into(), "chat", [127, 0, 0, 1].into())
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total: usize = std::env::args().nth(1).map(|n| n.parse()).transpose()?.unwrap_or(200_000);
    let admin =
        std::env::var("OMI_BENCH_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("omi_bench_{}", std::process::id());
    let admin_pool = sqlx::PgPool::connect(&admin).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&admin_pool).await?;
    let url = format!("{}/{name}", admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base));
    let store = Store::connect(&url).await?;
    store.migrate().await?;

    // The writer's database side, as it runs it: records priced by `record_of`, written in
    // batches of `WriterSettings::default().batch` rows per transaction.
    let prices = PriceTable::new(&Default::default());
    let batch = WriterSettings::default().batch;
    let (customer, key) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let records: Vec<_> = (0..total)
        .filter_map(|n| match event(customer, key, n) {
            Event::Request(request) => accountant::record_of(&request, &prices),
            _ => None,
        })
        .collect();
    let started = Instant::now();
    for chunk in records.chunks(batch) {
        store.insert_usage(chunk).await?;
    }
    let elapsed = started.elapsed();
    let (count,): (i64,) = match &store {
        Store::Postgres(pool) => sqlx::query_as("SELECT COUNT(*) FROM usage_records").fetch_one(pool).await?,
        Store::Sqlite(_) => anyhow::bail!("PostgreSQL only"),
    };
    println!(
        "usage writer → PostgreSQL: {count} records in {:.2} s = {:.0} records/s",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
    store.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)"))).execute(&admin_pool).await?;
    Ok(())
}
