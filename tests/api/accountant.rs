//! The Accountant: every request on the books to the token, margins against hand-computed
//! numbers, nothing lost at shutdown or while the database is away, budgets across instances.

use crate::billing::{SECRET, order_created, sign};
use crate::on_both_backends;
use crate::support::{Backend, Outage, TestApp, TestDb, chat_body, eventually, spawn_mock, start_server, test_config};
use futures_util::StreamExt;
use omi::agents::accountant::{self, WriterSettings};
use omi::billing::prices::PriceTable;
use omi::events::{Event, EventBus, RequestEvent, TokenUsage};
use omi::store::{Store, UsageRecord};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

async fn records(store: &Store) -> Vec<UsageRecord> {
    store.usage_page(None, chrono::Utc::now() + chrono::Duration::hours(1), 1000).await.expect("page")
}

pub(crate) async fn wait_for_records(store: &Store, n: usize) -> Vec<UsageRecord> {
    eventually(Duration::from_secs(10), || async { records(store).await.len() >= n }).await;
    records(store).await
}

fn by_request<'a>(all: &'a [UsageRecord], id: &str) -> &'a UsageRecord {
    all.iter().find(|r| &*r.request_id == id).unwrap_or_else(|| panic!("no record for {id}"))
}

on_both_backends!(
    every_request_is_booked_to_the_token,
    margins_match_hand_computed_numbers,
    a_graceful_restart_loses_nothing
);

async fn every_request_is_booked_to_the_token(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let key = app.create_key("ada@example.com").await;
    let send = |id: &str, body: Value, byok: bool| {
        let mut request = app.chat(&key, body).header("x-request-id", id);
        if byok {
            request = request.header("x-provider-key", "sk-customer-own-1234");
        }
        request.send()
    };
    assert_eq!(send("plain", chat_body(false), false).await.expect("send").status(), 200);
    send("stream", chat_body(true), false).await.expect("send").text().await.expect("text");
    let mut asked = chat_body(true);
    asked["stream_options"] = json!({"include_usage": true});
    send("stream-asked", asked, false).await.expect("send").text().await.expect("text");
    send("byok", chat_body(false), true).await.expect("send");
    let mut failing = chat_body(false);
    failing["mock"] = json!({"status": 500});
    assert_eq!(send("failed", failing, false).await.expect("send").status(), 502);
    let mut unpriced = chat_body(false);
    unpriced["model"] = json!("mystery-model");
    assert_eq!(send("unpriced", unpriced, false).await.expect("send").status(), 200);
    let mut slow = chat_body(true);
    slow["mock"] = json!({"chunks": 5, "chunk_delay_ms": 300});
    let response = send("aborted", slow, false).await.expect("send");
    let mut stream = response.bytes_stream();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("\"content\":\"H") {
        seen.extend_from_slice(&stream.next().await.expect("a chunk").expect("bytes"));
    }
    drop(stream); // the client leaves after the first words
    // Unauthenticated requests are not on the books.
    app.chat("omi_nope", chat_body(false)).send().await.expect("send");

    let all = wait_for_records(&app.state().store, 7).await;
    assert_eq!(all.len(), 7, "seven keyed requests, seven records");
    // The mock bills ceil(24 chars / 4) = 6 prompt and 3 completion tokens:
    // gpt-4o-mini = 6·150 + 3·600 = 2,700 nano-dollars.
    for id in ["plain", "stream", "stream-asked"] {
        let r = by_request(&all, id);
        assert_eq!((r.prompt_tokens, r.completion_tokens, r.cost_nano), (6, 3, Some(2700)), "{id}");
        assert!(!r.byok && !r.usage_estimated && !r.aborted, "{id}");
        assert_eq!(r.streamed, id != "plain");
    }
    let byok = by_request(&all, "byok");
    assert_eq!((byok.byok, byok.cost_nano, byok.prompt_tokens), (true, Some(0), 6), "BYOK costs the house nothing");
    let failed = by_request(&all, "failed");
    assert_eq!((failed.status, failed.prompt_tokens, failed.cost_nano), (502, 0, Some(0)));
    let unpriced = by_request(&all, "unpriced");
    assert_eq!(unpriced.cost_nano, None, "no price: unknown, never $0");
    let aborted = by_request(&all, "aborted");
    // The client left, but the upstream was read on for its own usage (5 chunks, 5 tokens).
    assert!(aborted.aborted && !aborted.usage_estimated, "{aborted:?}");
    assert_eq!((aborted.prompt_tokens, aborted.completion_tokens), (6, 5), "{aborted:?}");
    assert!(all.iter().all(|r| r.latency_us > 0 && &*r.plan == "pro"));
}

async fn margins_match_hand_computed_numbers(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| {
        c.lemonsqueezy_signing_secret = Some(SecretString::from(SECRET));
        c.payment_fee_percent = 5.0;
        c.payment_fee_fixed_cents = 50;
    })
    .await
    else {
        return;
    };
    // A $29 purchase (no mailer configured: the key waits in the outbox, which the test reads).
    let body = order_created(7001, 1).to_string();
    let response = app
        .http
        .post(format!("{}/webhooks/lemonsqueezy", app.base))
        .header("x-signature", sign(&body))
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let key: String = match &app.state().store {
        Store::Sqlite(p) => {
            sqlx::query_scalar("SELECT key_plaintext FROM email_outbox").fetch_one(p).await.expect("key")
        }
        Store::Postgres(p) => {
            sqlx::query_scalar("SELECT key_plaintext FROM email_outbox").fetch_one(p).await.expect("key")
        }
    };
    let mut big = chat_body(false);
    big["mock"] = json!({"prompt_tokens": 1_000_000, "completion_tokens": 1_000_000});
    for _ in 0..2 {
        assert_eq!(app.chat(&key, big.clone()).send().await.expect("send").status(), 200);
    }
    let mut byok = app.chat(&key, big.clone()).header("x-provider-key", "sk-own-key-5678").send().await.expect("send");
    assert_eq!(byok.status(), 200);
    byok = app.chat(&key, big).header("x-provider-key", "sk-own-key-5678").send().await.expect("send");
    assert_eq!(byok.status(), 200);
    wait_for_records(&app.state().store, 4).await;

    // By hand: revenue $29.00 − (5% = $1.45 + $0.50) = $27.05; cost 2 × (1M × $0.15 + 1M × $0.60)
    // = $1.50 (BYOK adds nothing); margin $25.55 = 94.45% of revenue.
    let month = omi::agents::accountant::report::current_month();
    let report: Value = app
        .admin(reqwest::Method::GET, &format!("/admin/api/margins?month={month}"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let ada = &report["customers"][0];
    assert_eq!(ada["email"], "ada@example.com");
    assert_eq!(ada["plan"], "pro");
    assert_eq!(ada["requests"], 4);
    assert_eq!(ada["byok_requests"], 2);
    assert_eq!(ada["prompt_tokens"], 4_000_000);
    assert_eq!(ada["completion_tokens"], 4_000_000);
    assert_eq!(ada["revenue_usd"], 27.05);
    assert_eq!(ada["cost_usd"], 1.5);
    assert_eq!(ada["margin_usd"], 25.55);
    assert_eq!(ada["margin_pct"], 94.45);
    assert_eq!(report["total"]["margin_usd"], 25.55);
    assert_eq!(report["month"], month);

    // The CLI gives the same numbers, in every format.
    let run = |format: &'static str| {
        let url = app.db.url.clone();
        let month = month.clone();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_omi"))
                .args(["report", "margins", "--month", &month, "--format", format])
                .env("DATABASE_URL", url)
                .env_remove("OMI_CONFIG")
                .output()
                .await
                .expect("run omi");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let json: Value = serde_json::from_str(&run("json").await).expect("json");
    // The CLI runs without the fee settings: revenue is the full $29.00.
    assert_eq!(json["customers"][0]["revenue_usd"], 29.0);
    assert_eq!(json["customers"][0]["cost_usd"], 1.5);
    assert_eq!(json["customers"][0]["spend_usd"], 1.5, "no markup: sold at cost");
    assert_eq!(json["total"]["margin_usd"], 27.5);
    let csv = run("csv").await;
    assert!(
        csv.lines().nth(1).is_some_and(|l| l
            .starts_with("\"ada@example.com\",\"pro\",4,2,4000000,4000000,29.00,1.500000,1.500000,27.500000,94.83")),
        "{csv}"
    );
    let table = run("table").await;
    assert!(table.contains("ada@example.com") && table.contains("TOTAL"), "{table}");
    let bad = tokio::process::Command::new(env!("CARGO_BIN_EXE_omi"))
        .args(["report", "margins", "--month", "2026-13"])
        .env("DATABASE_URL", &app.db.url)
        .output()
        .await
        .expect("run");
    assert_eq!(bad.status.code(), Some(2));
}

async fn a_graceful_restart_loses_nothing(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else { return };
    let key = app.create_key("ada@example.com").await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        tasks.push(app.chat(&key, chat_body(false)).send());
    }
    for response in futures_util::future::join_all(tasks).await {
        assert_eq!(response.expect("send").status(), 200);
    }
    let store = Store::connect(&app.db.url).await.expect("connect");
    app.stop().await; // SIGTERM's path: drain, flush, exit
    assert_eq!(records(&store).await.len(), 50, "50 requests, 50 records");
}

fn request_event(customer: uuid::Uuid, n: usize) -> Event {
    Event::Request(Box::new(RequestEvent {
        key_id: Some(uuid::Uuid::now_v7()),
        customer_id: Some(customer),
        plan: Some(Arc::from("pro")),
        model: Some("gpt-4o-mini".into()),
        provider: Some(Arc::from("openai")),
        status: 200,
        total: Duration::from_millis(3),
        upstream: Some(Duration::from_millis(2)),
        usage: Some(TokenUsage { prompt_tokens: 10, cached_tokens: 0, cache_write_tokens: 0, completion_tokens: 5 }),
        request_bytes: 1,
        response_bytes: 1,
        ..RequestEvent::new(format!("r{n}").into(), "chat", [127, 0, 0, 1].into())
    }))
}

fn usage_records(customer: uuid::Uuid, n: usize) -> Vec<UsageRecord> {
    let prices = PriceTable::new(&Default::default());
    (0..n)
        .filter_map(|i| match request_event(customer, i) {
            Event::Request(request) => accountant::record_of(&request, &prices),
            _ => None,
        })
        .collect()
}

/// The scheduling policy (field 41 of `/proc/self/task/N/stat`) of each of this process's
/// threads whose name starts with `prefix`.
fn thread_policies(prefix: &str) -> Vec<u32> {
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
    tasks
        .filter_map(|task| {
            let dir = task.ok()?.path();
            let name = std::fs::read_to_string(dir.join("comm")).ok()?;
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            // Fields after the name (which may hold spaces) start at field 3.
            let after_name = &stat[stat.rfind(')')? + 2..];
            let policy = after_name.split(' ').nth(41 - 3)?.parse().ok()?;
            name.starts_with(prefix).then_some(policy)
        })
        .collect()
}

const SCHED_IDLE: u32 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_lane_books_on_an_idle_class_thread_and_rolls_back_past_its_budget() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else { return };
    let store = db.store().await;
    let mut lane = store.idle_lane().expect("SQLite on Linux has an idle lane");
    let customer = uuid::Uuid::now_v7();

    let late = lane.insert_usage(&usage_records(customer, 500), Duration::ZERO).await;
    assert!(matches!(late, Err(omi::store::LaneError::OutOfTime(_))), "past its budget: {late:?}");
    assert_eq!(records(&store).await.len(), 0, "an interrupted write leaves nothing behind");

    lane.insert_usage(&usage_records(customer, 500), Duration::from_secs(30)).await.expect("written in time");
    assert_eq!(records(&store).await.len(), 500, "the lane's next write is whole");
    let today = chrono::Utc::now().date_naive();
    let days = today - chrono::Days::new(1)..today + chrono::Days::new(2);
    let totals = store.usage_totals(days).await.expect("totals");
    let requests: Vec<_> = totals.iter().map(|t| (t.customer_id, t.requests)).collect();
    assert_eq!(requests, vec![(customer, 500)], "the daily rollup counts the whole write once");
    // The interrupted connection's thread may still be ending; it too had lowered itself.
    let lane_threads = thread_policies("omi-idle-lane");
    assert!(
        !lane_threads.is_empty() && lane_threads.iter().all(|&p| p == SCHED_IDLE),
        "the lane's thread runs SCHED_IDLE: {lane_threads:?}"
    );
    let normal = thread_policies("sqlx-sqlite-wor");
    assert!(!normal.is_empty() && normal.iter().all(|&p| p == 0), "the normal pool stays SCHED_OTHER: {normal:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_the_idle_lane_cannot_finish_in_time_are_booked_once_on_the_normal_pool() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else { return };
    let store = db.store().await;
    let bus = EventBus::default();
    let settings = WriterSettings { idle_lane_budget: Some(Duration::ZERO), batch: 200, ..WriterSettings::default() };
    let writer = accountant::spawn_writer(&bus, store.clone(), PriceTable::new(&Default::default()), settings);
    let customer = uuid::Uuid::now_v7();
    for n in 0..600 {
        bus.publish(request_event(customer, n));
    }
    bus.close();
    writer.await.expect("writer stops");
    let booked = records(&store).await;
    let ids: std::collections::BTreeSet<_> = booked.iter().map(|r| &*r.request_id).collect();
    assert_eq!((booked.len(), ids.len()), (600, 600), "every record once, none lost, none twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_holds_records_then_writes_them_and_counts_drops() {
    let Some(db) = TestDb::new(Backend::Postgres).await else { return };
    db.store().await;
    let pg: std::net::SocketAddr = "127.0.0.1:5432".parse().expect("addr");
    let outage = Outage::start(pg).await;
    let via_proxy = db.url.replace("127.0.0.1:5432", &outage.addr.to_string());
    let store = Store::connect(&via_proxy).await.expect("connect through the proxy");
    let direct = Store::connect(&db.url).await.expect("connect");
    let bus = EventBus::default();
    let mut drops = bus.subscribe("watch", 64);
    let settings = WriterSettings {
        flush_every: Duration::from_millis(100),
        batch: 50,
        max_buffered: 120,
        shutdown_retry: Duration::from_secs(5),
        ..WriterSettings::default()
    };
    let writer = accountant::spawn_writer(&bus, store, PriceTable::new(&Default::default()), settings);
    let customer = uuid::Uuid::now_v7();

    outage.down();
    // `down` cuts open connections within 20 ms: until then a flush could still get through.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 0..150 {
        bus.publish(request_event(customer, n));
    }
    let dropped = loop {
        let event =
            tokio::time::timeout(Duration::from_secs(5), drops.recv()).await.expect("a drop event").expect("open");
        if let Event::UsageDropped { dropped } = &*event {
            break *dropped;
        }
    };
    assert!(dropped >= 1, "beyond the bound, records are dropped and reported");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(records(&direct).await.len(), 0, "nothing written while the database is away");
    outage.up();
    let written = eventually(Duration::from_secs(10), || async { records(&direct).await.len() == 120 }).await;
    assert!(written.is_some(), "the 120 held records are written once it is back: {}", records(&direct).await.len());
    bus.close();
    writer.await.expect("writer stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_hold_across_two_instances() {
    let capped = |c: &mut omi::config::Config| {
        c.plans = vec![omi::config::PlanConfig {
            name: "capped".into(),
            monthly_price_usd: 5.0,
            variant_ids: vec![],
            monthly_budget_usd: None,
            monthly_token_quota: Some(10),
            ..Default::default()
        }];
    };
    let Some(a) = TestApp::spawn_with(Backend::Postgres, capped).await else { return };
    let mock = spawn_mock().await;
    let mut config = test_config(&a.db, &mock);
    capped(&mut config);
    let b = start_server(config).await;
    let email = omi::customers::EmailAddress::parse("cap@example.com").expect("email");
    let (key, _) = omi::keys::issue(&a.state().store, &email, "capped", None, Default::default()).await.expect("issue");
    let key = key.expose().to_string();
    let on_b = |body: Value| {
        a.http.post(format!("http://{}/v1/chat/completions", b.addr)).bearer_auth(&key).json(&body).send()
    };
    let month = accountant::budgets::month_key(chrono::Utc::now());
    let customer_id = a
        .state()
        .store
        .find_key(&omi::domain::key::ApiKey::parse(&key).expect("parse").hash())
        .await
        .expect("find")
        .expect("key")
        .customer_id;
    let used = || async { a.state().store.month_to_date(customer_id, &month).await.expect("mtd").1 };

    // 9 tokens a request against a quota of 10.
    assert_eq!(a.chat(&key, chat_body(false)).send().await.expect("send").status(), 200);
    eventually(Duration::from_secs(5), || async { used().await == 9 }).await.expect("counted");
    assert_eq!(on_b(chat_body(false)).await.expect("send").status(), 200, "9 < 10: the other instance still serves");
    eventually(Duration::from_secs(5), || async { used().await == 18 }).await.expect("counted");
    for response in
        [a.chat(&key, chat_body(false)).send().await.expect("send"), on_b(chat_body(false)).await.expect("send")]
    {
        assert_eq!(response.status(), 429);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "quota_exceeded");
    }
    b.shutdown().await;
}
