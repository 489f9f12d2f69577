//! Ways to sell: selling prices (a plan's markup over upstream cost, booked per request).

use crate::on_both_backends;
use crate::support::{Backend, TestApp, eventually, spawn_mock, start_server, test_config};
use omi::agents::accountant::report;
use omi::config::{Config, PlanConfig};
use omi::store::{Store, UsageRecord};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

fn marked_up(percent: f64) -> impl Fn(&mut Config) {
    move |c: &mut Config| {
        c.plans = vec![PlanConfig { name: "marked".into(), markup_percent: percent, ..PlanConfig::default() }]
    }
}

/// A key on `plan`, and its customer.
async fn key_on(store: &Store, email: &str, plan: &str) -> (String, Uuid) {
    let email = omi::customers::EmailAddress::parse(email).expect("email");
    let (key, listing) = omi::keys::issue(store, &email, plan, None).await.expect("issue");
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

on_both_backends!(selling_prices_are_booked_per_request_and_reported);

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
