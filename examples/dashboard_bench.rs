//! Dashboard benchmark (`bench/dashboard.sh`): seeds PostgreSQL with 1,000 customers and a
//! month of usage through `Store::insert_usage`, starts the real server, signs in, and
//! times every page. Each page must render in under 100 ms.
//!
//!   OMI_BENCH_ROWS=1500000 cargo run --release --example dashboard_bench
//!   OMI_BENCH_KEEP=1 … keeps the seeded database for the next run.
//!   OMI_BENCH_DB=name … seeds that database instead of `omi_dashboard_bench`.

use omi::config::Config;
use omi::customers::EmailAddress;
use omi::server::Server;
use omi::store::{KeyListing, Store, UsageRecord};
use secrecy::SecretString;
use std::time::{Duration, Instant};

const CUSTOMERS: usize = 1_000;
const DEFAULT_DATABASE: &str = "omi_dashboard_bench";
const ADMIN_KEY: &str = "bench-admin-key-0123456789";
const RUNS: usize = 15;
const BUDGET: Duration = Duration::from_millis(100);

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    omi::install_crypto_provider();
    let admin_url = env_or("OMI_BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres");
    let rows: usize = env_or("OMI_BENCH_ROWS", "1500000").parse()?;
    let keep = std::env::var("OMI_BENCH_KEEP").is_ok();
    let database = env_or("OMI_BENCH_DB", DEFAULT_DATABASE);
    anyhow::ensure!(
        !database.is_empty() && database.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "OMI_BENCH_DB must be lowercase letters, digits and underscores"
    );
    let base = admin_url.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or_else(|| admin_url.clone());
    let url = format!("{base}/{database}");

    let admin = sqlx::PgPool::connect(&admin_url).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&database)
        .fetch_one(&admin)
        .await?;
    let store = if exists && keep {
        println!("reusing the seeded database {database}");
        Store::connect(&url).await?
    } else {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")))
            .execute(&admin)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}"))).execute(&admin).await?;
        let store = Store::connect(&url).await?;
        store.migrate().await?;
        seed(&store, rows).await?;
        store
    };
    admin.close().await;

    let config = Config {
        database_url: SecretString::from(url.clone()),
        admin_key: Some(SecretString::from(ADMIN_KEY)),
        // Every request comes from 127.0.0.1: the per-IP limit would refuse the timing runs.
        rate_limit_per_minute: 0,
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = Server::start(config, listener).await?;
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let login = http
        .post(format!("{base}/admin/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("key={ADMIN_KEY}"))
        .send()
        .await?;
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| anyhow::anyhow!("no session cookie"))?
        .to_string();
    // Keys are listed oldest first: customer 0 has the most traffic, customer 999 the least.
    let keys = store.list_keys().await?;
    let (busiest, quietest): (&KeyListing, &KeyListing) = (
        keys.first().ok_or_else(|| anyhow::anyhow!("no keys"))?,
        keys.last().ok_or_else(|| anyhow::anyhow!("no keys"))?,
    );

    let pages = [
        "/admin".to_string(),
        "/admin?range=day".into(),
        "/admin/money".into(),
        "/admin/money?sort=cost&dir=desc&page=3".into(),
        "/admin/money.csv".into(),
        "/admin/keys".into(),
        "/admin/keys?q=customer-42".into(),
        format!("/admin/customers/{}", busiest.customer_id),
        format!("/admin/customers/{}", quietest.customer_id),
        "/admin/webhooks".into(),
        "/admin/alerts".into(),
        "/admin/findings".into(),
        "/admin/shield".into(),
    ];
    println!("\n{:<48} {:>9} {:>9} {:>9} {:>9}", "page (server on PostgreSQL)", "min ms", "median", "max ms", "KiB");
    let mut slow = Vec::new();
    for page in &pages {
        let mut times = Vec::with_capacity(RUNS);
        let mut size = 0;
        for run in 0..RUNS + 2 {
            let started = Instant::now();
            let response = http.get(format!("{base}{page}")).header("cookie", &cookie).send().await?;
            anyhow::ensure!(response.status() == 200, "{page}: {}", response.status());
            size = response.bytes().await?.len();
            if run >= 2 {
                times.push(started.elapsed()); // the first two warm the caches
            }
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let median = times[times.len() / 2];
        println!(
            "{:<48} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            page,
            ms(times[0]),
            ms(median),
            ms(times[times.len() - 1]),
            size as f64 / 1024.0
        );
        if median > BUDGET {
            slow.push(page.clone());
        }
    }
    server.shutdown().await;
    if !keep {
        let admin = sqlx::PgPool::connect(&admin_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")))
            .execute(&admin)
            .await?;
    }
    anyhow::ensure!(slow.is_empty(), "over {} ms (median): {slow:?}", BUDGET.as_millis());
    println!("every page under {} ms (median of {RUNS})", BUDGET.as_millis());
    Ok(())
}

/// 1,000 customers with a key and a payment each; `rows` usage records over the last 30
/// days, a few customers heavy and most light, as real traffic is.
async fn seed(store: &Store, rows: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut keys = Vec::with_capacity(CUSTOMERS);
    for i in 0..CUSTOMERS {
        let email = EmailAddress::parse(&format!("customer-{i}@example.com"))?;
        let (_, listing) =
            omi::keys::issue(store, &email, "pro", Some(&format!("Customer {i}")), Default::default()).await?;
        keys.push(listing);
    }
    if let Store::Postgres(pool) = store {
        let now = chrono::Utc::now();
        for (i, key) in keys.iter().enumerate() {
            sqlx::query(
                "INSERT INTO revenue_ledger (id, kind, source, source_id, customer_id, amount_cents, currency, test_mode, occurred_at)
                 VALUES ($1, 'payment', 'order', $2, $3, 2900, 'USD', FALSE, $4)",
            )
            .bind(uuid::Uuid::now_v7())
            .bind(i as i64)
            .bind(key.customer_id)
            .bind(now - chrono::Duration::days((i % 20) as i64))
            .execute(pool)
            .await?;
        }
    }
    println!("seeded {CUSTOMERS} customers in {:.1} s", started.elapsed().as_secs_f64());

    let started = Instant::now();
    let now = chrono::Utc::now();
    let span_ms = 30 * 24 * 3600 * 1000i64;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        // xorshift: reproducible, fast, good enough to spread load.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..rows {
        // Skewed: customer k gets traffic in proportion to 1/(k+1).
        let r = (next() % 1_000_000) as f64 / 1_000_000.0;
        let customer = ((CUSTOMERS as f64).powf(r) - 1.0) as usize % CUSTOMERS;
        let key = &keys[customer];
        let latency_us = 150_000 + (next() % 2_500_000) as i64;
        let at = now - chrono::Duration::milliseconds(span_ms * (rows - i) as i64 / rows as i64);
        // In the order the fields drew them before: the same seed gives the same data.
        let prompt_tokens = 200 + (next() % 3_000) as i64;
        let completion_tokens = 50 + (next() % 800) as i64;
        let cost_nano = (i % 500 != 0).then(|| 100_000 + (next() % 900_000) as i64);
        batch.push(UsageRecord {
            id: uuid::Uuid::now_v7(),
            request_id: format!("bench-{i}").into(),
            at,
            key_id: key.id,
            customer_id: key.customer_id,
            plan: "pro".into(),
            route: Some("chat".into()),
            model: Some(if i % 500 == 0 { "mystery-model" } else { "gpt-4o-mini" }.into()),
            provider: Some("openai".into()),
            prompt_tokens,
            cached_tokens: 0,
            cache_write_tokens: 0,
            completion_tokens,
            cost_nano,
            spend_nano: cost_nano,
            status: if next() % 100 == 0 { 502 } else { 200 },
            latency_us,
            upstream_us: Some(latency_us - 200 - (next() % 2_000) as i64),
            streamed: i % 3 == 0,
            byok: i % 17 == 0,
            usage_estimated: false,
            aborted: false,
            attempts: 1,
        });
        if batch.len() == batch.capacity() {
            store.insert_usage(&batch).await?;
            batch.clear();
        }
    }
    store.insert_usage(&batch).await?;
    if let Store::Postgres(pool) = store {
        // What autovacuum would have done on a live database.
        sqlx::query("VACUUM ANALYZE").execute(pool).await?;
    }
    println!("seeded {rows} usage records in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
