//! Ways to sell: selling prices (a plan's markup over upstream cost, booked per request) and
//! prepaid credit (packs bought through Lemon Squeezy, grants, holds and draws).

use crate::billing::{ORDER, SECRET, deliver, order_created, outcome, refund};
use crate::on_both_backends;
use crate::support::{Backend, TestApp, TestDb, eventually, spawn_mock, start_server, test_config};
use omi::agents::accountant::report;
use omi::config::{Config, CreditPackConfig, PlanConfig};
use omi::store::{Store, UsageRecord};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

const PACK_VARIANT: i64 = 1115460;
const PACK_NANO: i64 = 10_000_000_000;

/// A pay-as-you-go plan at `markup` percent, a $10 pack of it, the webhook on, no per-IP limit
/// (the race below sends more than 100 requests a minute from one address).
fn prepaid(markup: f64) -> impl Fn(&mut Config) + Clone {
    move |c: &mut Config| {
        let payg = PlanConfig { name: "payg".into(), prepaid: true, markup_percent: markup, ..PlanConfig::default() };
        c.plans = vec![payg];
        c.credit_packs =
            vec![CreditPackConfig { variant_ids: vec![PACK_VARIANT], credit_usd: 10.0, plan: "payg".into() }];
        c.lemonsqueezy_signing_secret = Some(SecretString::from(SECRET));
        c.rate_limit_per_minute = 0;
    }
}

/// One SQL number (tests read the ledger directly, as an auditor would).
async fn scalar(store: &Store, sql: &str, customer: Uuid) -> i64 {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    let value: Option<i64> = match store {
        Store::Sqlite(pool) => sqlx::query_scalar(sql).bind(customer).fetch_one(pool).await.expect("query"),
        Store::Postgres(pool) => sqlx::query_scalar(sql).bind(customer).fetch_one(pool).await.expect("query"),
    };
    value.unwrap_or(0)
}

/// The ledger's sum, which the balance must always equal.
async fn ledger_sum(store: &Store, customer: Uuid) -> i64 {
    let sql = "SELECT CAST(SUM(amount_nano) AS BIGINT) FROM credit_ledger WHERE customer_id = $1";
    scalar(store, sql, customer).await
}

/// The balance, once every hold of the customer is settled, checked against the ledger.
async fn settled_balance(store: &Store, customer: Uuid) -> i64 {
    let holds = || scalar(store, "SELECT COUNT(*) FROM credit_holds WHERE customer_id = $1", customer);
    eventually(Duration::from_secs(10), || async { holds().await == 0 }).await.expect("every hold settled");
    let balance = store.credit_balance(customer).await.expect("balance");
    assert_eq!(balance, ledger_sum(store, customer).await, "the balance is the ledger's sum");
    balance
}

async fn customer_of(store: &Store, email: &str) -> Uuid {
    let sql = sqlx::AssertSqlSafe("SELECT id FROM customers WHERE email = $1");
    match store {
        Store::Sqlite(pool) => sqlx::query_scalar(sql).bind(email).fetch_one(pool).await.expect("customer"),
        Store::Postgres(pool) => sqlx::query_scalar(sql).bind(email).fetch_one(pool).await.expect("customer"),
    }
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["error"]["code"].as_str().unwrap_or_default().to_string())
}

fn marked_up(percent: f64) -> impl Fn(&mut Config) {
    move |c: &mut Config| {
        c.plans = vec![PlanConfig { name: "marked".into(), markup_percent: percent, ..PlanConfig::default() }]
    }
}

/// A key on `plan`, and its customer.
async fn key_on(store: &Store, email: &str, plan: &str) -> (String, Uuid) {
    let email = omi::customers::EmailAddress::parse(email).expect("email");
    let (key, listing) = omi::keys::issue(store, &email, plan, None, Default::default()).await.expect("issue");
    (key.expose().to_string(), listing.customer_id)
}

/// A chat body the mock answers with exactly these token counts.
fn costing(prompt_tokens: u64, completion_tokens: u64) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
           "mock": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}})
}

async fn records_of(store: &Store, customer: Uuid, n: usize) -> Vec<UsageRecord> {
    let page = || async {
        let before = chrono::Utc::now() + chrono::Duration::hours(1);
        store.usage_page(Some(customer), before, 100).await.expect("page")
    };
    eventually(Duration::from_secs(10), || async { page().await.len() >= n }).await;
    page().await
}

on_both_backends!(
    selling_prices_are_booked_per_request_and_reported,
    prepaid_requests_draw_their_selling_price_and_stop_at_zero,
    credit_packs_credit_once_in_any_event_order,
    the_margins_count_credit_sold_used_and_unused,
    low_balance_and_exhausted_notices_go_out_once_per_crossing
);

/// The selling price is booked with each request: a later markup change (here a second
/// instance configured at 50% instead of 30%) prices new requests only; the margins report
/// shows the selling-price spend beside revenue, cost and margin.
async fn selling_prices_are_booked_per_request_and_reported(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, marked_up(30.0)).await else { return };
    let store = &app.state().store;
    let (key, customer) = key_on(store, "markup@example.com", "marked").await;
    // 1M prompt + 1M completion tokens of gpt-4o-mini: 1M·150 + 1M·600 nano-dollars = $0.75.
    assert_eq!(app.chat(&key, costing(1_000_000, 1_000_000)).send().await.expect("send").status(), 200);
    let first = records_of(store, customer, 1).await;
    assert_eq!((first[0].cost_nano, first[0].spend_nano), (Some(750_000_000), Some(975_000_000)), "cost × 1.3");
    let byok = app.chat(&key, costing(1_000, 1_000)).header("x-provider-key", "sk-customer-own-0123456789");
    assert_eq!(byok.send().await.expect("send").status(), 200);

    let mock = spawn_mock().await;
    let mut config = test_config(&app.db, &mock);
    marked_up(50.0)(&mut config);
    let repriced = start_server(config).await;
    let on_repriced = app.http.post(format!("http://{}/v1/chat/completions", repriced.addr)).bearer_auth(&key);
    assert_eq!(on_repriced.json(&costing(1_000_000, 1_000_000)).send().await.expect("send").status(), 200);
    let records = records_of(store, customer, 3).await;
    let mut sold: Vec<_> = records.iter().map(|r| (r.byok, r.cost_nano, r.spend_nano)).collect();
    sold.sort();
    let expected = [
        (false, Some(750_000_000), Some(975_000_000)),
        (false, Some(750_000_000), Some(1_125_000_000)),
        (true, Some(0), Some(0)),
    ];
    assert_eq!(sold, expected, "history keeps the price it was sold at; BYOK sells for nothing");
    repriced.shutdown().await;

    let first_day = records.iter().map(|r| r.at.date_naive()).min().expect("records");
    let last_day = records.iter().map(|r| r.at.date_naive()).max().expect("records");
    let books = report::build(store, &app.state().config, "m", first_day..last_day + chrono::Days::new(1))
        .await
        .expect("report");
    let line = books.customers.iter().find(|l| l.customer == Some(customer)).expect("the customer's line");
    assert_eq!((line.spend_usd, line.cost_usd, line.margin_usd, line.revenue_usd), (2.1, 1.5, -1.5, 0.0));
    assert_eq!((books.total.spend_usd, books.total.cost_usd), (2.1, 1.5));
    let json = serde_json::to_value(&books).expect("json");
    for field in ["revenue_usd", "spend_usd", "cost_usd", "margin_usd", "margin_pct"] {
        assert!(json["total"].get(field).is_some(), "{field} in {json}");
    }
    let csv = books.to_csv();
    assert!(
        csv.starts_with("email,plan,requests,byok_requests,prompt_tokens,completion_tokens,revenue_usd,spend_usd,")
    );
    assert!(
        csv.contains("\"markup@example.com\",\"marked\",3,1,2001000,2001000,0.00,2.100000,1.500000,-1.500000,"),
        "{csv}"
    );
}

/// Nothing left: 402 before anything goes upstream (BYOK too: it draws nothing, but the plan
/// is credit). With credit, each answered request draws exactly its booked selling price.
async fn prepaid_requests_draw_their_selling_price_and_stop_at_zero(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, prepaid(30.0)).await else { return };
    let store = &app.state().store;
    let (key, customer) = key_on(store, "payg@example.com", "payg").await;
    let seen = app.mock.upstream.seen().len();
    let refused = error_code(app.chat(&key, costing(10, 10)).send().await.expect("send")).await;
    assert_eq!(refused, (402, "insufficient_credits".to_string()));
    let byok = app.chat(&key, costing(10, 10)).header("x-provider-key", "sk-customer-own-0123456789");
    assert_eq!(error_code(byok.send().await.expect("send")).await.0, 402);
    assert_eq!(app.mock.upstream.seen().len(), seen, "nothing went upstream");

    let (_, granted) = store.grant_credit("payg@example.com", 1_000_000_000, Some("welcome")).await.expect("grant");
    assert_eq!(granted, 1_000_000_000);
    // $0.75 of gpt-4o-mini at 30% markup: $0.975.
    assert_eq!(app.chat(&key, costing(1_000_000, 1_000_000)).send().await.expect("send").status(), 200);
    assert_eq!(settled_balance(store, customer).await, 25_000_000, "drawn: exactly the selling price");
    let record = &records_of(store, customer, 3).await[0];
    assert_eq!(record.spend_nano, Some(975_000_000));
    let byok = app.chat(&key, costing(1_000_000, 1_000_000)).header("x-provider-key", "sk-customer-own-0123456789");
    assert_eq!(byok.send().await.expect("send").status(), 200);
    assert_eq!(settled_balance(store, customer).await, 25_000_000, "BYOK draws nothing");
    let shown: Value = app
        .http
        .get(format!("{}/v1/key", app.base))
        .bearer_auth(&key)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(shown["credits"], json!({"balance_usd": 0.025}), "GET /v1/key shows the ledger's sum");
    assert_eq!(shown["month"]["spend_usd"], json!(0.975), "the selling price, BYOK sold at 0");
    let draws = scalar(store, "SELECT COUNT(*) FROM credit_ledger WHERE customer_id = $1 AND kind = 'draw'", customer);
    assert_eq!(draws.await, 1);

    // Exactly zero is nothing left.
    store.grant_credit("payg@example.com", -25_000_000, Some("correction")).await.expect("take back");
    let seen = app.mock.upstream.seen().len();
    assert_eq!(error_code(app.chat(&key, costing(10, 10)).send().await.expect("send")).await.0, 402);
    assert_eq!(app.mock.upstream.seen().len(), seen, "nothing went upstream");
    assert_eq!(settled_balance(store, customer).await, 0);
}

/// A pack variant's order adds its credit once, whatever the order of its deliveries, their
/// replays and a restart between them; its refund takes back what is left (the rest was used).
async fn credit_packs_credit_once_in_any_event_order(backend: Backend) {
    let Some(mut app) = TestApp::spawn_with(backend, prepaid(0.0)).await else { return };
    let pack = |order_id: i64, email: &str| {
        let mut body = order_created(order_id, PACK_VARIANT);
        body["data"]["attributes"]["user_email"] = json!(email);
        body
    };
    let refunded = |order_id: i64, email: &str| {
        let mut body = refund(order_id, 30);
        body["data"]["attributes"]["user_email"] = json!(email);
        body["data"]["attributes"]["first_order_item"]["variant_id"] = json!(PACK_VARIANT);
        body
    };
    // (email, deliveries in arrival order, final balance)
    let scenarios: [(&str, Vec<Value>, i64); 5] = [
        ("bought@example.com", vec![pack(ORDER, "bought@example.com")], PACK_NANO),
        ("replayed@example.com", vec![pack(ORDER + 1, "replayed@example.com"); 3], PACK_NANO),
        (
            "refunded@example.com",
            vec![pack(ORDER + 2, "refunded@example.com"), refunded(ORDER + 2, "refunded@example.com")],
            0,
        ),
        (
            "early-refund@example.com",
            vec![refunded(ORDER + 3, "early-refund@example.com"), pack(ORDER + 3, "early-refund@example.com")],
            0,
        ),
        (
            "both-replayed@example.com",
            vec![
                refunded(ORDER + 4, "both-replayed@example.com"),
                pack(ORDER + 4, "both-replayed@example.com"),
                refunded(ORDER + 4, "both-replayed@example.com"),
                pack(ORDER + 4, "both-replayed@example.com"),
            ],
            0,
        ),
    ];
    for (_, deliveries, _) in &scenarios {
        for body in deliveries {
            assert_eq!(deliver(&app, body).await.status(), 200, "{body}");
        }
    }
    // A refund that waits for its order across a restart.
    assert_eq!(outcome(&app, &refunded(ORDER + 5, "restart@example.com")).await, "waiting_for_purchase");
    app.stop().await;
    let mut config = test_config(&app.db, &app.mock);
    prepaid(0.0)(&mut config);
    let restarted = start_server(config).await;
    app.base = format!("http://{}", restarted.addr);
    app.server = Some(restarted);
    assert_eq!(outcome(&app, &pack(ORDER + 5, "restart@example.com")).await, "vended");
    assert_eq!(outcome(&app, &pack(ORDER + 5, "restart@example.com")).await, "duplicate");

    let store = &app.state().store;
    for (email, _, expected) in
        scenarios.iter().map(|(e, d, b)| (*e, d, *b)).chain([("restart@example.com", &vec![], 0)])
    {
        let customer = customer_of(store, email).await;
        assert_eq!(settled_balance(store, customer).await, expected, "{email}");
        let keys = scalar(store, "SELECT COUNT(*) FROM api_keys WHERE customer_id = $1 AND plan = 'payg'", customer);
        assert_eq!(keys.await, 1, "{email}: one payg key, whatever became of the pack");
    }

    // A second pack of a customer with a key adds credit to that key; credit used before a
    // refund stays used, and the refund takes back only what is left, never below zero.
    let (email, customer) = ("bought@example.com", customer_of(store, "bought@example.com").await);
    assert_eq!(outcome(&app, &pack(ORDER + 6, email)).await, "credited");
    let keys = scalar(store, "SELECT COUNT(*) FROM api_keys WHERE customer_id = $1", customer);
    assert_eq!(keys.await, 1, "no second key");
    assert_eq!(settled_balance(store, customer).await, 2 * PACK_NANO);
    store.grant_credit(email, -(2 * PACK_NANO - 4_000_000_000), Some("spent all but $4")).await.expect("use");
    assert_eq!(outcome(&app, &refunded(ORDER + 6, email)).await, "refunded");
    assert_eq!(settled_balance(store, customer).await, 0, "the $4 left is taken back; the other $6 was used");
    assert_eq!(outcome(&app, &refunded(ORDER, email)).await, "refunded");
    assert_eq!(settled_balance(store, customer).await, 0, "never below zero");
    let note = "SELECT COUNT(*) FROM credit_ledger WHERE customer_id = $1 AND kind = 'refund'
                AND note LIKE '%4000000000 nano-dollars left taken back, 6000000000 used'";
    assert_eq!(scalar(store, note, customer).await, 1, "the ledger says what was used");
    let key = scalar(store, "SELECT COUNT(*) FROM api_keys WHERE customer_id = $1 AND status = 'active'", customer);
    assert_eq!(key.await, 1, "a pack's refund never moves the key");
}

/// Two instances on one PostgreSQL database, 24 concurrent requests of $1.000025 each on $3.50
/// of credit: every admission sees the holds made before it, so exactly four are served and the
/// overdraw stays within one hold (the bound stated in `billing/README.md`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_racing_on_the_last_dollar_overdraw_at_most_one_hold() {
    let Some(a) = TestApp::spawn_with(Backend::Postgres, prepaid(0.0)).await else { return };
    let mock = spawn_mock().await;
    let mut config = test_config(&a.db, &mock);
    prepaid(0.0)(&mut config);
    let b = start_server(config).await;
    let store = &a.state().store;
    let (key, customer) = key_on(store, "race@example.com", "payg").await;
    store.grant_credit("race@example.com", 3_500_000_000, Some("race")).await.expect("grant");
    // gpt-4o: $2.50 / $10.00 per million. 10 + 100,000 tokens: 25,000 + 1,000,000,000 nano-dollars.
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100_000,
                      "mock": {"prompt_tokens": 10, "completion_tokens": 100_000, "latency_ms": 300}});
    const PRICE: i64 = 1_000_025_000;
    let sends = (0..24).map(|i| {
        let base = if i % 2 == 0 { a.base.clone() } else { format!("http://{}", b.addr) };
        let request = a.http.post(format!("{base}/v1/chat/completions")).bearer_auth(&key).json(&body);
        async move { request.send().await.expect("send").status().as_u16() }
    });
    let statuses = futures_util::future::join_all(sends).await;
    let served = statuses.iter().filter(|s| **s == 200).count() as i64;
    assert_eq!(statuses.iter().filter(|s| **s == 402).count() as i64, 24 - served, "{statuses:?}");
    let balance = settled_balance(store, customer).await;
    assert_eq!(balance, 3_500_000_000 - served * PRICE, "each served request drew its price");
    // A hold: every body byte as a gpt-4o prompt token (2,500 each) + 100,000 answer tokens.
    let largest_hold = 2 * body.to_string().len() as i64 * 2_500 + 1_000_000_000;
    assert!(balance < 0 && balance > -largest_hold, "overdraw {balance} beyond one hold {largest_hold}");
    assert_eq!(served, 4, "three leave $0.50, the fourth is admitted on it, no fifth: {statuses:?}");
    b.shutdown().await;
}

/// `omi credits grant` writes one ledger row with its note and prints the new balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_grant_writes_the_ledger_and_prints_the_balance() {
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    let store = db.store().await;
    let (_, customer) = key_on(&store, "grant@example.com", "payg").await;
    let omi = |args: &[&str]| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_omi"))
            .args(args)
            .env("DATABASE_URL", &db.url)
            .env_remove("OMI_CONFIG")
            .output()
    };
    let out = omi(&["credits", "grant", "--email", "grant@example.com", "--usd", "2.5", "--note", "goodwill"])
        .await
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "credit balance of grant@example.com: $2.500000\n");
    let out = omi(&["credits", "grant", "--email", "grant@example.com", "--usd", "-0.25"]).await.expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "credit balance of grant@example.com: $2.250000\n");
    let noted = "SELECT COUNT(*) FROM credit_ledger WHERE customer_id = $1 AND kind = 'grant' AND note = 'goodwill'";
    assert_eq!(scalar(&store, noted, customer).await, 1);
    assert_eq!(ledger_sum(&store, customer).await, 2_250_000_000);
    assert_eq!(store.credit_balance(customer).await.expect("balance"), 2_250_000_000);

    let zero = omi(&["credits", "grant", "--email", "grant@example.com", "--usd", "0"]).await.expect("run");
    assert_eq!(zero.status.code(), Some(2), "a usage error");
    let unknown = omi(&["credits", "grant", "--email", "nobody@example.com", "--usd", "1"]).await.expect("run");
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no customer with email nobody@example.com"));
}

/// Credit is earned when used: the month's margin is its revenue less the upstream cost less the
/// credit sold and not used yet, which the report shows apart (sold, used, unused).
async fn the_margins_count_credit_sold_used_and_unused(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, prepaid(30.0)).await else { return };
    let store = &app.state().store;
    let (key, customer) = key_on(store, "books@example.com", "payg").await;
    let mut order = order_created(ORDER, PACK_VARIANT);
    order["data"]["attributes"]["user_email"] = json!("books@example.com");
    assert_eq!(outcome(&app, &order).await, "credited", "the customer's key gets the credit");
    assert_eq!(app.chat(&key, costing(1_000_000, 1_000_000)).send().await.expect("send").status(), 200);
    assert_eq!(settled_balance(store, customer).await, PACK_NANO - 975_000_000);
    records_of(store, customer, 1).await;

    let today = chrono::Utc::now().date_naive();
    let books =
        report::build(store, &app.state().config, "d", today..today + chrono::Days::new(1)).await.expect("report");
    let line = books.customers.iter().find(|l| l.customer == Some(customer)).expect("the customer's line");
    let credit = (line.credit_sold_usd, line.credit_used_usd, line.credit_unused_usd);
    assert_eq!(credit, (10.0, 0.975, 9.025));
    assert_eq!((line.revenue_usd, line.spend_usd, line.cost_usd), (29.0, 0.975, 0.75));
    // 29.00 − 0.75 − (10.00 − 0.975) not yet earned.
    assert_eq!(line.margin_usd, 19.225);
    assert_eq!((books.total.credit_unused_usd, books.total.margin_usd), (9.025, 19.225));
    assert!(books.to_table().contains("prepaid credit: sold 10.000000, used 0.975000, unused 9.025000"));
    assert!(books.to_csv().lines().nth(1).is_some_and(|l| l.ends_with(",10.000000,0.975000,9.025000")));
}

/// A draw that takes the balance to 20% of the last pack, or to zero, queues one email in the
/// outbox and publishes one bus event (for n8n); staying below says nothing again, and a new
/// pack re-arms both.
async fn low_balance_and_exhausted_notices_go_out_once_per_crossing(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, prepaid(0.0)).await else { return };
    let store = &app.state().store;
    let mut bus = app.state().events.subscribe("notices-under-test", 1024);
    let (key, customer) = key_on(store, "low@example.com", "payg").await;
    let buy = |order_id: i64| {
        let mut order = order_created(order_id, PACK_VARIANT);
        order["data"]["attributes"]["user_email"] = json!("low@example.com");
        order
    };
    assert_eq!(outcome(&app, &buy(ORDER)).await, "credited");
    // gpt-4o input is $2.50 a million: each step's price, then the balance it leaves.
    let steps: [(u64, i64); 5] = [
        (3_000_000, 2_500_000_000), // $2.50 left: above the $2.00 threshold
        (300_000, 1_750_000_000),   // low: told
        (300_000, 1_000_000_000),   // still low: not told again
        (600_000, -500_000_000),    // exhausted: told
        (3_000_000, 2_000_000_000), // after a second pack ($9.50): at the threshold, told again
    ];
    for (i, (prompt_tokens, balance)) in steps.into_iter().enumerate() {
        if i == 4 {
            assert_eq!(outcome(&app, &buy(ORDER + 1)).await, "credited");
        }
        let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1,
                          "mock": {"prompt_tokens": prompt_tokens, "completion_tokens": 0}});
        assert_eq!(app.chat(&key, body).send().await.expect("send").status(), 200, "step {i}");
        assert_eq!(settled_balance(store, customer).await, balance, "step {i}");
    }
    let queued = |kind: &'static str| {
        let sql = format!("SELECT COUNT(*) FROM email_outbox WHERE customer_id = $1 AND kind = '{kind}'");
        async move { scalar(store, &sql, customer).await }
    };
    assert_eq!((queued("credit_low").await, queued("credit_exhausted").await), (2, 1));
    let told = "SELECT CAST(MIN(credit_nano) AS BIGINT) FROM email_outbox WHERE customer_id = $1 AND kind = 'credit_exhausted'";
    assert_eq!(scalar(store, told, customer).await, -500_000_000, "the email says the balance");

    let mut notices = Vec::new();
    while notices.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(10), bus.recv()).await.expect("in time").expect("open");
        if let omi::events::Event::CreditNotice { level, balance_usd, email, .. } = &*event {
            assert_eq!(email, "low@example.com");
            notices.push((*level, *balance_usd));
        }
    }
    assert_eq!(notices, [("credit_low", 1.75), ("credit_exhausted", -0.5), ("credit_low", 2.0)]);

    // The dashboard marks the customer until a pack lifts the balance above the threshold.
    let admin = crate::dashboard::Admin::sign_in(&app.base).await;
    let money = admin.page("/admin/money").await;
    let marked = format!("{customer}\">low@example.com</a> <span class=\"flag\">low</span>");
    assert!(money.contains(&marked) && money.contains("$2.00"), "{money}");
    assert_eq!(outcome(&app, &buy(ORDER + 2)).await, "credited");
    let money = admin.page("/admin/money").await;
    assert!(money.contains("No prepaid customer is low on credit."), "{money}");
}
