//! The key vending machine end to end: signed Lemon Squeezy deliveries (fixtures built from
//! contracts.md §1), a fake Postmark over HTTP, a real SMTP server, two backends.

use crate::dashboard::Admin;
use crate::mailer::{SinkTls, SmtpSink, provision_venv};
use crate::on_both_backends;
use crate::support::{Backend, TestApp, chat_body, eventually, start_server, test_config};
use futures_util::StreamExt;
use hmac::{Hmac, KeyInit, Mac};
use omi::config::TestModePolicy;
use omi::domain::key::KeyStatus;
use omi::domain::lemonsqueezy::{Ignored, WAITING_FOR_PURCHASE};
use secrecy::SecretString;
use serde_json::{Value, json};
use sha2::Sha256;
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub(crate) const SECRET: &str = "whsec_test_secret";
pub(crate) const ORDER: i64 = 6922210;
const SUBSCRIPTION: i64 = 1674641;
const EMAIL: &str = "ada@example.com";

pub(crate) fn sign(body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("hmac key");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Event times in Lemon Squeezy's format, on today's UTC date: the ledger books a purchase on its
/// `created_at`, and the reports ask for the current month, so a fixed date breaks when it changes.
fn at(minute: u32) -> String {
    let today = chrono::Utc::now().date_naive();
    format!("{today}T00:{minute:02}:06.000000Z")
}

/// A subscription's next renewal: a month after today, never a date that passes.
fn renews_at() -> String {
    (chrono::Utc::now() + chrono::Duration::days(30)).format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// A live (not test-mode) purchase: only live events vend by default.
pub(crate) fn order_created(order_id: i64, variant_id: i64) -> Value {
    json!({
        "meta": {"event_name": "order_created", "test_mode": false, "webhook_id": "b1d6c0f4-3a5e-4a8e-9d0e-6f1f2a3b4c5d",
                 "custom_data": {"user_id": "42"}},
        "data": {"type": "orders", "id": order_id.to_string(), "attributes": {
            "store_id": 249054, "customer_id": 7238231, "identifier": "89b36d62-4f5c-4353-853f-0c769d0535c8",
            "order_number": 1001, "user_name": "Ada Example", "user_email": EMAIL, "currency": "USD",
            "currency_rate": "1.0000", "subtotal": 2900, "tax": 0, "total": 2900, "refunded_amount": 0,
            "subtotal_usd": 2900, "tax_usd": 0, "total_usd": 2900, "refunded_amount_usd": 0,
            "status": "paid", "status_formatted": "Paid", "refunded": false, "refunded_at": null,
            "first_order_item": {"id": 6862308, "order_id": order_id, "product_id": 708718, "variant_id": variant_id,
                                 "product_name": "OMI Pro API", "variant_name": "Monthly", "price": 2900, "quantity": 1},
            "created_at": at(0), "updated_at": at(0), "test_mode": false},
            "links": {"self": format!("https://api.lemonsqueezy.com/v1/orders/{order_id}")}}
    })
}

/// The subscription an order starts (one per order in these tests).
fn subscription_of(order_id: i64) -> i64 {
    SUBSCRIPTION + order_id - ORDER
}

/// The same delivery made in Lemon Squeezy's test mode.
fn in_test_mode(mut body: Value) -> Value {
    body["meta"]["test_mode"] = json!(true);
    body["data"]["attributes"]["test_mode"] = json!(true);
    body
}

pub(crate) fn subscription(event: &str, order_id: i64, status: &str, minute: u32, ends_at: Option<String>) -> Value {
    json!({
        "meta": {"event_name": event, "test_mode": false, "custom_data": {"user_id": "42"}},
        "data": {"type": "subscriptions", "id": subscription_of(order_id).to_string(), "attributes": {
            "store_id": 249054, "customer_id": 7238231, "order_id": order_id, "order_item_id": 6862308,
            "product_id": 708718, "variant_id": 1115451, "user_name": "Ada Example", "user_email": EMAIL,
            "status": status, "cancelled": status == "cancelled", "pause": null,
            "renews_at": renews_at(), "ends_at": ends_at,
            "created_at": at(0), "updated_at": at(minute), "test_mode": false}}
    })
}

/// An invoice of the order's subscription; its id is `order_id * 100 + minute`, so every
/// order's invoices (and their ledger rows) are its own.
fn invoice(event: &str, order_id: i64, minute: u32, reason: &str) -> Value {
    json!({
        "meta": {"event_name": event, "test_mode": false},
        "data": {"type": "subscription-invoices", "id": (order_id * 100 + i64::from(minute)).to_string(), "attributes": {
            "store_id": 249054, "subscription_id": subscription_of(order_id), "customer_id": 7238231, "user_email": EMAIL,
            "billing_reason": reason, "status": "paid", "total": 2900, "total_usd": 2900,
            "created_at": at(minute), "updated_at": at(minute), "test_mode": false}}
    })
}

pub(crate) fn refund(order_id: i64, minute: u32) -> Value {
    let mut body = order_created(order_id, 1115451);
    body["meta"]["event_name"] = json!("order_refunded");
    let attrs = &mut body["data"]["attributes"];
    attrs["status"] = json!("refunded");
    attrs["refunded"] = json!(true);
    attrs["refunded_amount_usd"] = json!(2900);
    attrs["refunded_at"] = json!(at(minute));
    attrs["updated_at"] = json!(at(minute));
    body
}

pub(crate) async fn postmark() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/email"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"To": EMAIL, "SubmittedAt": "2026-11-27T12:00:00Z", "MessageID": "m-1", "ErrorCode": 0, "Message": "OK"}),
        ))
        .mount(&server)
        .await;
    server
}

pub(crate) fn billing_config(config: &mut omi::config::Config, postmark_url: &str) {
    config.lemonsqueezy_signing_secret = Some(SecretString::from(SECRET));
    config.postmark_server_token = Some(SecretString::from("pm-server-token"));
    config.postmark_api_url = Some(postmark_url.to_string());
    config.email_from = Some("keys@omi.example".into());
    config.public_url = Some("https://api.omi.example".into());
}

pub(crate) async fn deliver(app: &TestApp, body: &Value) -> reqwest::Response {
    let text = body.to_string();
    app.http
        .post(format!("{}/webhooks/lemonsqueezy", app.base))
        .header("content-type", "application/json")
        .header("x-event-name", body["meta"]["event_name"].as_str().unwrap_or(""))
        .header("x-signature", sign(&text))
        .body(text)
        .send()
        .await
        .expect("deliver")
}

pub(crate) async fn outcome(app: &TestApp, body: &Value) -> String {
    let response = deliver(app, body).await;
    assert_eq!(response.status(), 200, "{body}");
    let reply: Value = response.json().await.expect("json");
    reply["outcome"].as_str().unwrap_or_default().to_string()
}

/// Keys found in the emails Postmark received, in order.
async fn emailed_keys(postmark: &MockServer) -> Vec<String> {
    let requests = postmark.received_requests().await.unwrap_or_default();
    requests
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .filter_map(|b| b["TextBody"].as_str().map(str::to_owned))
        .filter_map(|text| {
            // The first whole key (a rotation's email also names the replaced key by its prefix).
            text.split_whitespace()
                .map(|w| w.trim_matches('"'))
                .find(|w| omi::domain::key::ApiKey::parse(w).is_ok())
                .map(str::to_owned)
        })
        .collect()
}

pub(crate) async fn wait_for_emails(postmark: &MockServer, n: usize) -> Vec<String> {
    eventually(Duration::from_secs(10), || async { emailed_keys(postmark).await.len() >= n }).await;
    emailed_keys(postmark).await
}

async fn count(app: &TestApp, table: &str) -> i64 {
    let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"));
    match &app.state().store {
        omi::store::Store::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.expect("count"),
        omi::store::Store::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.expect("count"),
    }
}

async fn status_with(app: &TestApp, key: &str) -> (u16, String) {
    let response = app.chat(key, chat_body(false)).send().await.expect("send");
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["error"]["code"].as_str().unwrap_or("").to_string())
}

on_both_backends!(
    a_purchase_becomes_one_working_key_in_the_inbox,
    racing_duplicate_deliveries_vend_exactly_once,
    the_subscription_lifecycle_moves_the_key,
    test_mode_events_are_recorded_and_change_nothing,
    every_pair_of_lifecycle_events_ends_the_same_in_either_order,
    a_refund_racing_its_order_is_never_lost
);

async fn a_purchase_becomes_one_working_key_in_the_inbox(backend: Backend) {
    let postmark = postmark().await;
    let uri = postmark.uri();
    let Some(app) = TestApp::spawn_with(backend, |c| billing_config(c, &uri)).await else { return };
    let mut events = app.state().events.subscribe("test", 64);

    assert_eq!(outcome(&app, &order_created(ORDER, 1115451)).await, "vended");
    assert_eq!(outcome(&app, &subscription("subscription_created", ORDER, "active", 1, None)).await, "already_vended");
    let keys = wait_for_emails(&postmark, 1).await;
    assert_eq!(keys.len(), 1, "one purchase, one email");
    let request = &postmark.received_requests().await.expect("recorded")[0];
    assert_eq!(request.headers.get("x-postmark-server-token").map(|v| v.as_bytes()), Some(&b"pm-server-token"[..]));
    let email: Value = serde_json::from_slice(&request.body).expect("json");
    assert_eq!(email["To"], EMAIL);
    assert!(email["TextBody"].as_str().is_some_and(|t| t.contains("https://api.omi.example/v1")));

    assert_eq!(status_with(&app, &keys[0]).await, (200, String::new()), "the emailed key works");
    assert_eq!(count(&app, "api_keys").await, 1);
    assert_eq!(count(&app, "customers").await, 1);
    assert_eq!(count(&app, "webhook_events").await, 2);
    assert_eq!(count(&app, "revenue_ledger").await, 1);

    // After the confirmed send the database holds no plaintext key.
    eventually(Duration::from_secs(5), || async {
        count(&app, "email_outbox WHERE key_plaintext IS NULL AND status = 'sent'").await == 1
    })
    .await
    .expect("outbox row marked sent and erased");
    let vended = loop {
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.expect("event").expect("open");
        if let omi::events::Event::KeyVended { .. } = &*event {
            break event;
        }
    };
    let serialized = serde_json::to_string(&*vended).expect("json");
    assert!(serialized.contains("\"plan\":\"pro\"") && !serialized.contains(&keys[0]), "{serialized}");
}

async fn racing_duplicate_deliveries_vend_exactly_once(backend: Backend) {
    let postmark = postmark().await;
    let uri = postmark.uri();
    let Some(app) = TestApp::spawn_with(backend, |c| billing_config(c, &uri)).await else { return };
    let created = order_created(ORDER, 1115451);
    let sub = subscription("subscription_created", ORDER, "active", 1, None);
    let mut tasks = Vec::new();
    for i in 0..24 {
        let body = if i % 2 == 0 { created.clone() } else { sub.clone() };
        let (http, base, text) = (app.http.clone(), app.base.clone(), body.to_string());
        tasks.push(tokio::spawn(async move {
            http.post(format!("{base}/webhooks/lemonsqueezy"))
                .header("x-signature", sign(&text))
                .body(text)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("join").expect("send"), 200);
    }
    let keys = wait_for_emails(&postmark, 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(emailed_keys(&postmark).await.len(), 1, "exactly one email");
    assert_eq!(keys.len(), 1);
    assert_eq!(count(&app, "api_keys").await, 1, "exactly one key");
    assert_eq!(count(&app, "customers").await, 1);
    assert_eq!(count(&app, "purchases").await, 1);
    assert_eq!(count(&app, "email_outbox").await, 1);
    assert_eq!(count(&app, "webhook_events").await, 2, "duplicates are not stored twice");
    assert_eq!(count(&app, "revenue_ledger").await, 1, "paid once, booked once");
}

async fn the_subscription_lifecycle_moves_the_key(backend: Backend) {
    let postmark = postmark().await;
    let uri = postmark.uri();
    let Some(app) = TestApp::spawn_with(backend, |c| {
        billing_config(c, &uri);
        c.payment_grace_hours = 0; // a failed payment suspends at once
    })
    .await
    else {
        return;
    };
    outcome(&app, &order_created(ORDER, 1115451)).await;
    outcome(&app, &subscription("subscription_created", ORDER, "active", 1, None)).await;
    let key = wait_for_emails(&postmark, 1).await.remove(0);
    let ok = (200, String::new());
    let suspended = (403, "key_suspended".to_string());
    let revoked = (403, "key_revoked".to_string());

    let future_end = Some("2099-01-01T00:00:00.000000Z".to_string());
    let steps: Vec<(Value, (u16, String), &str)> = vec![
        (
            subscription("subscription_cancelled", ORDER, "cancelled", 2, future_end.clone()),
            ok.clone(),
            "cancelled keeps working until ends_at",
        ),
        (subscription("subscription_resumed", ORDER, "active", 3, None), ok.clone(), "resumed"),
        (subscription("subscription_paused", ORDER, "paused", 4, None), suspended.clone(), "paused suspends"),
        (subscription("subscription_unpaused", ORDER, "active", 5, None), ok.clone(), "unpaused restores"),
        (subscription("subscription_updated", ORDER, "paused", 4, None), ok.clone(), "older news is ignored"),
        (
            invoice("subscription_payment_failed", ORDER, 6, "renewal"),
            suspended.clone(),
            "failed payment after grace suspends",
        ),
        (invoice("subscription_payment_recovered", ORDER, 7, "renewal"), ok.clone(), "recovered payment restores"),
        (invoice("subscription_payment_success", ORDER, 8, "renewal"), ok.clone(), "renewal paid"),
    ];
    for (body, expected, why) in steps {
        outcome(&app, &body).await;
        assert_eq!(status_with(&app, &key).await, expected, "{why}");
    }

    // The Sentinel's suspension holds through billing's news; only an operator lifts it.
    let store = &app.state().store;
    let id = store.resolve_key(&key[..12]).await.expect("resolve").id;
    assert!(store.hold_key(id).await.expect("hold").held_since.is_some());
    app.state().verifier.sync_changes().await.expect("sync"); // as the Sentinel does after a hold
    assert_eq!(status_with(&app, &key).await, suspended, "held");
    outcome(&app, &subscription("subscription_updated", ORDER, "active", 9, None)).await;
    outcome(&app, &invoice("subscription_payment_success", ORDER, 10, "renewal")).await;
    assert_eq!(status_with(&app, &key).await, suspended, "a payment does not lift the Sentinel's hold");
    let restored = store.set_key_status(id, KeyStatus::Active).await.expect("restore");
    assert!(restored.held_since.is_none(), "restoring lifts the hold");
    app.state().verifier.sync_changes().await.expect("sync");
    assert_eq!(status_with(&app, &key).await, ok, "restored by the operator");

    let steps: Vec<(Value, (u16, String), &str)> = vec![
        (subscription("subscription_expired", ORDER, "expired", 11, None), revoked.clone(), "expired revokes"),
        (
            subscription("subscription_updated", ORDER, "active", 12, None),
            revoked.clone(),
            "nothing resurrects a revoked key",
        ),
    ];
    for (body, expected, why) in steps {
        outcome(&app, &body).await;
        assert_eq!(status_with(&app, &key).await, expected, "{why}");
    }
    assert_eq!(
        count(&app, "revenue_ledger WHERE kind = 'payment'").await,
        3,
        "order + two renewals (recovered is not a payment)"
    );

    // A second purchase, refunded in full: revoked, and the refund is on the books.
    outcome(&app, &order_created(ORDER + 1, 1115451)).await;
    let second = wait_for_emails(&postmark, 2).await.remove(1);
    assert_eq!(status_with(&app, &second).await, ok);
    assert_eq!(outcome(&app, &refund(ORDER + 1, 20)).await, "refunded");
    assert_eq!(status_with(&app, &second).await, revoked);
    assert_eq!(count(&app, "revenue_ledger WHERE kind = 'refund' AND amount_cents = 2900").await, 1);

    // A third, cancelled with its term already over: the sweeper's rule revokes it.
    outcome(&app, &order_created(ORDER + 2, 1115451)).await;
    let third = wait_for_emails(&postmark, 3).await.remove(2);
    let past_end = Some("2020-01-01T00:00:00.000000Z".to_string());
    outcome(&app, &subscription("subscription_cancelled", ORDER + 2, "cancelled", 30, past_end)).await;
    assert_eq!(status_with(&app, &third).await, revoked);
}

#[tokio::test]
async fn signatures_and_bad_input_are_refused_without_storing() {
    let postmark = postmark().await;
    let uri = postmark.uri();
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        billing_config(c, &uri);
        c.plans = vec![omi::config::PlanConfig {
            name: "pro".into(),
            monthly_price_usd: 29.0,
            variant_ids: vec![1115451],
            monthly_budget_usd: None,
            monthly_token_quota: None,
            ..Default::default()
        }];
    })
    .await
    else {
        return;
    };
    let url = format!("{}/webhooks/lemonsqueezy", app.base);
    let body = order_created(ORDER, 1115451).to_string();
    let unsigned = app.http.post(&url).body(body.clone()).send().await.expect("send");
    assert_eq!(unsigned.status(), 401);
    let tampered = app
        .http
        .post(&url)
        .header("x-signature", sign(&body))
        .body(body.replace("2900", "1"))
        .send()
        .await
        .expect("send");
    assert_eq!(tampered.status(), 401);
    assert_eq!(count(&app, "webhook_events").await, 0, "nothing stored before the signature verifies");

    let garbage = "{\"meta\": 1}";
    let malformed = app.http.post(&url).header("x-signature", sign(garbage)).body(garbage).send().await.expect("send");
    assert_eq!(malformed.status(), 400);
    assert_eq!(count(&app, "webhook_events WHERE outcome = 'malformed'").await, 1, "kept for audit");

    let unknown = json!({"meta": {"event_name": "affiliate_activated"}, "data": {"type": "affiliates", "id": "5", "attributes": {}}});
    assert_eq!(outcome(&app, &unknown).await, "ignored");
    assert_eq!(outcome(&app, &order_created(ORDER, 999)).await, "no_plan", "a variant that maps to no plan");
    assert_eq!(count(&app, "api_keys").await, 0);
    assert_eq!(outcome(&app, &order_created(ORDER + 1, 1115451)).await, "vended");
    assert_eq!(wait_for_emails(&postmark, 1).await.len(), 1);
}

#[tokio::test]
async fn without_a_signing_secret_every_call_is_refused() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else { return };
    let response = deliver(&app, &order_created(ORDER, 1)).await;
    assert_eq!(response.status(), 401);
    assert_eq!(count(&app, "webhook_events").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_survives_an_outage_and_a_restart() {
    // Postmark is unreachable (a closed port): the email waits in the outbox.
    let Some(mut app) = TestApp::spawn_with(Backend::Sqlite, |c| billing_config(c, "http://127.0.0.1:9")).await else {
        return;
    };
    assert_eq!(outcome(&app, &order_created(ORDER, 1115451)).await, "vended");
    eventually(Duration::from_secs(5), || async { count(&app, "email_outbox WHERE attempts >= 1").await == 1 })
        .await
        .expect("a delivery was attempted and failed");
    app.stop().await;
    assert_eq!(count_pending(&app.db.url).await, 1, "the email survives the restart, key and all");

    let postmark = postmark().await;
    let mut config = test_config(&app.db, &app.mock);
    billing_config(&mut config, &postmark.uri());
    let restarted = start_server(config).await;
    let keys = wait_for_emails(&postmark, 1).await;
    assert_eq!(keys.len(), 1, "delivered after the restart");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(emailed_keys(&postmark).await.len(), 1, "and only once");
    let response = app
        .http
        .post(format!("http://{}/v1/chat/completions", restarted.addr))
        .bearer_auth(&keys[0])
        .json(&chat_body(false))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    restarted.shutdown().await;
    assert_eq!(count_pending(&app.db.url).await, 0);
}

async fn count_pending(url: &str) -> i64 {
    let pool = sqlx::SqlitePool::connect(url).await.expect("connect");
    let n =
        sqlx::query_scalar("SELECT COUNT(*) FROM email_outbox WHERE status = 'pending' AND key_plaintext IS NOT NULL")
            .fetch_one(&pool)
            .await
            .expect("count");
    pool.close().await;
    n
}

#[tokio::test]
async fn resending_rotates_the_key() {
    let postmark = postmark().await;
    let uri = postmark.uri();
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| billing_config(c, &uri)).await else { return };
    outcome(&app, &order_created(ORDER, 1115451)).await;
    let first = wait_for_emails(&postmark, 1).await.remove(0);
    let id = app.state().store.resolve_key(&first[..12]).await.expect("resolve").id;
    let resent = app.admin(reqwest::Method::POST, &format!("/admin/api/keys/{id}/resend")).send().await.expect("send");
    assert_eq!(resent.status(), 200);
    let keys = wait_for_emails(&postmark, 2).await;
    assert_ne!(keys[1], first);
    assert_eq!(status_with(&app, &first).await, (403, "key_revoked".to_string()), "the old key stops working");
    assert_eq!(status_with(&app, &keys[1]).await, (200, String::new()));
    // The CLI does the same for an operator at a terminal.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_omi"))
        .args(["keys", "resend", &keys[1][..12]])
        .env("DATABASE_URL", &app.db.url)
        .output()
        .await
        .expect("run omi");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let keys = wait_for_emails(&postmark, 3).await;
    assert_eq!(keys.len(), 3, "the running server's worker sends what the CLI queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_emails_go_out_through_a_real_smtp_server() {
    let Some(python) = provision_venv() else { return };
    let sink = SmtpSink::start(&python, SinkTls::None, false).await;
    let smtp_url = format!("smtp://127.0.0.1:{}?tls=none", sink.port);
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.lemonsqueezy_signing_secret = Some(SecretString::from(SECRET));
        c.smtp_url = Some(SecretString::from(smtp_url));
        c.email_from = Some("keys@omi.example".into());
    })
    .await
    else {
        return;
    };
    assert_eq!(outcome(&app, &order_created(ORDER, 1115451)).await, "vended");
    eventually(Duration::from_secs(10), || async { !sink.messages().is_empty() })
        .await
        .expect("the SMTP server got the email");
    let message = &sink.messages()[0];
    assert_eq!(message["to"], EMAIL);
    let text = message["text"].as_str().expect("text part");
    let key =
        text.split_whitespace().find(|w| w.starts_with("omi_")).map(|w| w.trim_matches('"')).expect("key in body");
    assert_eq!(status_with(&app, key).await, (200, String::new()));
}

async fn test_mode_events_are_recorded_and_change_nothing(backend: Backend) {
    let postmark = postmark().await;
    let uri = postmark.uri();
    let Some(app) = TestApp::spawn_with(backend, |c| billing_config(c, &uri)).await else { return };
    let ignored = Ignored::TestMode.outcome();

    // A test checkout vends nothing: recorded, acknowledged with 200, no customer, key or money.
    assert_eq!(outcome(&app, &in_test_mode(order_created(ORDER, 1115451))).await, ignored);
    let sub = in_test_mode(subscription("subscription_created", ORDER, "active", 1, None));
    assert_eq!(outcome(&app, &sub).await, ignored);
    assert_eq!(count(&app, "webhook_events WHERE test_mode = TRUE").await, 2, "both recorded");
    for table in ["purchases", "api_keys", "customers", "revenue_ledger", "email_outbox", "waiting_webhook_events"] {
        assert_eq!(count(&app, table).await, 0, "{table}: a test-mode event changes nothing");
    }

    // A live order vends; test-mode news about it neither revokes nor suspends its key.
    assert_eq!(outcome(&app, &order_created(ORDER + 1, 1115451)).await, "vended");
    let key = wait_for_emails(&postmark, 1).await.remove(0);
    for news in [
        refund(ORDER + 1, 20),
        subscription("subscription_expired", ORDER + 1, "expired", 11, None),
        subscription("subscription_paused", ORDER + 1, "paused", 4, None),
    ] {
        assert_eq!(outcome(&app, &in_test_mode(news)).await, ignored);
        assert_eq!(status_with(&app, &key).await, (200, String::new()), "the live key still works");
    }
    assert_eq!(count(&app, "revenue_ledger").await, 1, "only the live payment is booked");
    assert_eq!(count(&app, "api_keys").await, 1);

    let html = Admin::sign_in(&app.base).await.page("/admin/webhooks").await;
    assert_eq!(html.matches("test mode, ignored").count(), 5, "the webhooks page says so for each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_mode_events_vend_when_the_operator_accepts_them() {
    let postmark = postmark().await;
    let uri = postmark.uri();
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        billing_config(c, &uri);
        c.lemonsqueezy_test_mode = TestModePolicy::Accept;
    })
    .await
    else {
        return;
    };
    assert_eq!(outcome(&app, &in_test_mode(order_created(ORDER, 1115451))).await, "vended");
    let key = wait_for_emails(&postmark, 1).await.remove(0);
    assert_eq!(status_with(&app, &key).await, (200, String::new()));
    assert_eq!(outcome(&app, &in_test_mode(refund(ORDER, 20))).await, "refunded");
    assert_eq!(status_with(&app, &key).await, (403, "key_revoked".to_string()));
    assert_eq!(count(&app, "revenue_ledger WHERE test_mode = TRUE").await, 2, "booked as test money");
    let now = chrono::Utc::now();
    let window = chrono::Duration::days(40);
    let revenue = app.state().store.revenue_totals(now - window, now + window).await.expect("revenue");
    assert!(revenue.is_empty(), "test money is no revenue in the reports: {revenue:?}");
}

/// The lifecycle events of one purchase, in the order Lemon Squeezy would send them (the
/// minute is their `updated_at`). The purchase is `order_created` + `subscription_created`.
const LIFECYCLE: [&str; 14] = [
    "order_created",
    "subscription_created",
    "subscription_cancelled",
    "subscription_resumed",
    "subscription_paused",
    "subscription_unpaused",
    "subscription_payment_failed",
    "subscription_payment_recovered",
    "subscription_payment_success",
    "subscription_payment_refunded",
    "subscription_cancelled_term_over",
    "subscription_expired",
    "subscription_updated",
    "order_refunded",
];

fn lifecycle_event(name: &str, order_id: i64) -> Value {
    let day = chrono::Duration::days(1);
    let at_offset = |d: chrono::Duration| (chrono::Utc::now() + d).format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    match name {
        "order_created" => order_created(order_id, 1115451),
        "subscription_created" => subscription(name, order_id, "active", 1, None),
        "subscription_cancelled" => subscription(name, order_id, "cancelled", 2, Some(at_offset(day * 30))),
        "subscription_resumed" => subscription(name, order_id, "active", 3, None),
        "subscription_paused" => subscription(name, order_id, "paused", 4, None),
        "subscription_unpaused" => subscription(name, order_id, "active", 5, None),
        "subscription_payment_failed" => invoice(name, order_id, 6, "renewal"),
        "subscription_payment_recovered" => invoice(name, order_id, 7, "renewal"),
        "subscription_payment_success" => invoice(name, order_id, 8, "renewal"),
        "subscription_payment_refunded" => invoice(name, order_id, 9, "renewal"),
        "subscription_cancelled_term_over" => {
            subscription("subscription_cancelled", order_id, "cancelled", 10, Some(at_offset(-day)))
        }
        "subscription_expired" => subscription(name, order_id, "expired", 11, None),
        "subscription_updated" => subscription(name, order_id, "active", 12, None),
        "order_refunded" => refund(order_id, 20),
        other => panic!("no fixture for {other}"),
    }
}

/// What a purchase left behind that matters: whether its key works (`none` when there is no
/// key or it is revoked) and its ledger rows (invoices by their minute).
async fn purchase_result(app: &TestApp, order_id: i64) -> (String, Vec<String>) {
    let status_sql = "SELECT k.status FROM purchases p JOIN api_keys k ON k.id = p.key_id WHERE p.order_id = $1";
    let ledger_sql = "SELECT kind, source, source_id, amount_cents FROM revenue_ledger
                      WHERE source_id = $1 OR source_id / 100 = $1";
    type Row = (String, String, i64, i64);
    let (status, rows): (Option<String>, Vec<Row>) = match &app.state().store {
        omi::store::Store::Sqlite(pool) => (
            sqlx::query_scalar(status_sql).bind(order_id).fetch_optional(pool).await.expect("status"),
            sqlx::query_as(ledger_sql).bind(order_id).fetch_all(pool).await.expect("ledger"),
        ),
        omi::store::Store::Postgres(pool) => (
            sqlx::query_scalar(status_sql).bind(order_id).fetch_optional(pool).await.expect("status"),
            sqlx::query_as(ledger_sql).bind(order_id).fetch_all(pool).await.expect("ledger"),
        ),
    };
    let mut ledger: Vec<String> = rows
        .into_iter()
        .map(|(kind, source, id, cents)| {
            let which =
                if source == "order" { "the order".to_string() } else { format!("invoice {}", id - order_id * 100) };
            format!("{kind} of {which}: {cents}")
        })
        .collect();
    ledger.sort();
    let access = status.filter(|s| s != "revoked").unwrap_or_else(|| "none".into());
    (access, ledger)
}

async fn deliver_in_turn(app: &TestApp, order_id: i64, names: &[&str]) -> (String, Vec<String>) {
    for name in names {
        let body = lifecycle_event(name, order_id);
        let result = outcome(app, &body).await;
        assert!(!result.is_empty() && result != "duplicate", "{name} of {order_id}: {result}");
    }
    purchase_result(app, order_id).await
}

/// For every pair of lifecycle events, each in both orders and both before the purchase
/// (the rest of `order_created` + `subscription_created` follows), the purchase ends as it
/// does when everything arrives in time order: same key status, same ledger, one key at most.
async fn every_pair_of_lifecycle_events_ends_the_same_in_either_order(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| {
        c.lemonsqueezy_signing_secret = Some(SecretString::from(SECRET));
        c.payment_grace_hours = 0; // a failed payment suspends at once
        c.rate_limit_per_minute = 0; // 1,100 deliveries from one address
    })
    .await
    else {
        return;
    };
    let mut runs = Vec::new();
    for (i, first) in LIFECYCLE.iter().enumerate() {
        for second in &LIFECYCLE[i + 1..] {
            let purchase: Vec<&str> = LIFECYCLE[..2].iter().copied().filter(|e| e != first && e != second).collect();
            let in_time_order: Vec<&str> =
                LIFECYCLE.iter().copied().filter(|e| purchase.contains(e) || e == first || e == second).collect();
            let forward: Vec<&str> = [*first, *second].into_iter().chain(purchase.iter().copied()).collect();
            let backward: Vec<&str> = [*second, *first].into_iter().chain(purchase.iter().copied()).collect();
            runs.push((format!("{first} + {second}"), in_time_order, forward, backward));
        }
    }
    let pairs = runs.len();
    let checked = futures_util::stream::iter(runs.into_iter().enumerate())
        .map(|(n, (pair, in_time_order, forward, backward))| {
            let app = &app;
            async move {
                let base = 7_000_000 + 3 * i64::try_from(n).expect("small");
                let expected = deliver_in_turn(app, base, &in_time_order).await;
                assert_eq!(deliver_in_turn(app, base + 1, &forward).await, expected, "{pair}: {forward:?}");
                assert_eq!(deliver_in_turn(app, base + 2, &backward).await, expected, "{pair}: {backward:?}");
                expected
            }
        })
        .buffer_unordered(6)
        .collect::<Vec<_>>()
        .await;
    assert_eq!(checked.len(), pairs);
    assert_eq!(pairs, 91);
    // The table means something: each kind of ending occurs.
    for access in ["active", "suspended", "none"] {
        assert!(checked.iter().any(|(a, _)| a == access), "no pair ends {access}");
    }
    // Exactly once: one key per vended purchase, one email per key, nothing left waiting.
    let vended = count(&app, "purchases WHERE key_id IS NOT NULL").await;
    assert_eq!(count(&app, "api_keys").await, vended);
    assert_eq!(count(&app, "email_outbox").await, vended);
    assert_eq!(count(&app, "waiting_webhook_events").await, 0);
    assert_eq!(count(&app, "purchases").await, 3 * 91);
}

/// A refund and a failed payment that come before their purchase survive a restart, are applied
/// once when it arrives (no key for a refunded order), and replays of any of it change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_lifecycle_events_survive_a_restart_and_replays() {
    let Some(mut app) =
        TestApp::spawn_with(Backend::Sqlite, |c| c.lemonsqueezy_signing_secret = Some(SecretString::from(SECRET)))
            .await
    else {
        return;
    };
    let refunded = [
        refund(ORDER, 20),
        order_created(ORDER, 1115451),
        subscription("subscription_created", ORDER, "active", 1, None),
    ];
    let failed = [
        invoice("subscription_payment_failed", ORDER + 1, 6, "renewal"),
        order_created(ORDER + 1, 1115451),
        subscription("subscription_created", ORDER + 1, "active", 1, None),
    ];
    assert_eq!(outcome(&app, &refunded[0]).await, WAITING_FOR_PURCHASE);
    assert_eq!(outcome(&app, &failed[0]).await, WAITING_FOR_PURCHASE);
    app.stop().await;

    let mut config = test_config(&app.db, &app.mock);
    config.lemonsqueezy_signing_secret = Some(SecretString::from(SECRET));
    config.payment_grace_hours = 0;
    let restarted = start_server(config).await;
    app.base = format!("http://{}", restarted.addr);
    app.server = Some(restarted);
    assert_eq!(outcome(&app, &refunded[1]).await, "purchase_over", "no key for a refunded order");
    assert_eq!(outcome(&app, &refunded[2]).await, "purchase_over");
    assert_eq!(outcome(&app, &failed[1]).await, "vended");
    assert_eq!(outcome(&app, &failed[2]).await, "already_vended");
    assert_eq!(purchase_result(&app, ORDER).await.0, "none");
    assert_eq!(purchase_result(&app, ORDER + 1).await.0, "suspended", "the failed payment waited for its subscription");
    assert_eq!(count(&app, "webhook_events WHERE outcome = 'waiting_for_purchase'").await, 0, "applied, and marked so");
    assert_eq!(count(&app, "waiting_webhook_events").await, 0);

    for body in refunded.iter().chain(&failed) {
        assert_eq!(outcome(&app, body).await, "duplicate");
    }
    assert_eq!(count(&app, "api_keys").await, 1, "one key, for the order not refunded");
    assert_eq!(count(&app, "email_outbox").await, 1);
    assert_eq!(
        count(&app, "revenue_ledger WHERE source = 'order' AND source_id = 6922210").await,
        2,
        "paid and refunded"
    );
}

/// `OMI_PAYMENT_GRACE_HOURS` of any size is a grace, not a panic in the webhook.
#[tokio::test]
async fn an_enormous_payment_grace_never_ends() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.lemonsqueezy_signing_secret = Some(SecretString::from(SECRET));
        c.payment_grace_hours = u64::MAX >> 1; // i64::MAX hours: more than chrono can hold
    })
    .await
    else {
        return;
    };
    assert_eq!(outcome(&app, &order_created(ORDER, 1115451)).await, "vended");
    assert_eq!(outcome(&app, &subscription("subscription_created", ORDER, "active", 1, None)).await, "already_vended");
    assert_eq!(outcome(&app, &invoice("subscription_payment_failed", ORDER, 6, "renewal")).await, "updated");
    assert_eq!(purchase_result(&app, ORDER).await.0, "active");
}

/// A refund and its order delivered at the same moment, for many orders: whichever commits
/// first, the refund is applied (PostgreSQL's per-order lock; SQLite serializes writers).
async fn a_refund_racing_its_order_is_never_lost(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| {
        c.lemonsqueezy_signing_secret = Some(SecretString::from(SECRET));
        c.rate_limit_per_minute = 0;
        // 200 deliveries at once from one address: more than the per-IP connection cap allows.
        c.max_connections_per_ip = 0;
    })
    .await
    else {
        return;
    };
    let orders: Vec<i64> = (0..100).map(|n| 8_000_000 + n).collect();
    let mut tasks = Vec::new();
    for &order_id in &orders {
        for body in [refund(order_id, 20), order_created(order_id, 1115451)] {
            let (http, base, text) = (app.http.clone(), app.base.clone(), body.to_string());
            tasks.push(tokio::spawn(async move {
                // As Lemon Squeezy does: a delivery answered 503 (the database busy past its
                // timeout under this burst) is sent again; what must never happen is a loss.
                let mut status = 0;
                for attempt in 0..5 {
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                    }
                    status = http
                        .post(format!("{base}/webhooks/lemonsqueezy"))
                        .header("x-signature", sign(&text))
                        .body(text.clone())
                        .send()
                        .await?
                        .status()
                        .as_u16();
                    if status != 503 {
                        break;
                    }
                }
                Ok::<u16, reqwest::Error>(status)
            }));
        }
    }
    for task in tasks {
        assert_eq!(task.await.expect("join").expect("send"), 200);
    }
    for order_id in orders {
        let (access, ledger) = purchase_result(&app, order_id).await;
        assert_eq!(access, "none", "order {order_id}: refunded, so no working key");
        assert_eq!(ledger, ["payment of the order: 2900", "refund of the order: 2900"], "order {order_id}");
    }
    assert_eq!(count(&app, "waiting_webhook_events").await, 0);
}
