//! The customer's own key: `GET /v1/key` agrees with the books, expiry is obeyed on every
//! request, rotation (grace, every instance, idempotent retries, the CLI), trials.

use crate::billing::{ORDER, billing_config, order_created, outcome, postmark, subscription};
use crate::cli::{omi, stdout};
use crate::on_both_backends;
use crate::support::{Backend, TestApp, TestDb, chat_body, eventually, start_server, test_config};
use chrono::{DateTime, Utc};
use omi::agents::accountant::report;
use omi::config::PlanConfig;
use omi::customers::EmailAddress;
use omi::firewall::KeyLimit;
use serde_json::{Value, json};
use std::time::Duration;

on_both_backends!(
    the_key_api_shows_what_the_margins_report_books,
    a_key_past_its_expiry_is_refused_on_every_request,
    a_rotated_key_works_through_its_grace_then_is_refused_on_every_instance,
    a_retried_rotation_returns_the_same_key_and_a_new_idempotency_key_mints_another,
    a_trial_plan_and_lemon_squeezy_trials_set_the_key_expiry
);

fn plan(name: &str) -> PlanConfig {
    PlanConfig { name: name.into(), monthly_price_usd: 29.0, variant_ids: vec![], ..PlanConfig::default() }
}

async fn get_key(base: &str, key: &str) -> reqwest::Response {
    reqwest::Client::new().get(format!("{base}/v1/key")).bearer_auth(key).send().await.expect("GET /v1/key")
}

async fn rotate(base: &str, key: &str, body: Value, idempotency_key: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().post(format!("{base}/v1/key/rotate")).bearer_auth(key).json(&body);
    if let Some(value) = idempotency_key {
        request = request.header("idempotency-key", value);
    }
    request.send().await.expect("POST /v1/key/rotate")
}

async fn chat_status(base: &str, key: &str) -> u16 {
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat_body(false))
        .send()
        .await
        .expect("chat");
    response.status().as_u16()
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("json error");
    (status, body["error"]["code"].as_str().unwrap_or_default().to_owned())
}

fn time(value: &Value) -> DateTime<Utc> {
    value.as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()).expect("an RFC 3339 time").to_utc()
}

/// Requests through the mock upstream, then `/v1/key`'s month equals the margins report's line
/// for the customer; the key's own rate limit (2 a minute, spent) never refuses `/v1/key`, and
/// reading it books nothing.
async fn the_key_api_shows_what_the_margins_report_books(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| {
        let models = vec!["gpt-4o-mini".to_string(), "anthropic/*".to_string()];
        let models = Some(omi::domain::allowed_models::AllowedModels::try_from(models).expect("patterns"));
        c.plans = vec![PlanConfig {
            monthly_budget_usd: Some(1.0),
            monthly_token_quota: Some(1_000_000),
            models,
            ..plan("capped")
        }];
        c.rate_limits.plans.insert("capped".into(), KeyLimit { requests_per_minute: Some(2), tokens_per_minute: None });
    })
    .await
    else {
        return;
    };
    let email = EmailAddress::parse("ada@example.com").expect("email");
    let (key, listing) = omi::keys::issue(&app.state().store, &email, "capped", Some("laptop"), Default::default())
        .await
        .expect("issue");
    let key = key.expose().to_string();
    assert_eq!(chat_status(&app.base, &key).await, 200);
    assert_eq!(chat_status(&app.base, &key).await, 200);
    for _ in 0..3 {
        assert_eq!(get_key(&app.base, &key).await.status(), 200, "the key's own limit does not apply");
    }
    assert_eq!(chat_status(&app.base, &key).await, 429, "the key's limit is spent");

    let month = report::current_month();
    let store = &app.state().store;
    let config = &app.state().config;
    let line = |r: &report::MarginReport| r.customers.iter().find(|l| l.customer == Some(listing.customer_id)).cloned();
    let booked = eventually(Duration::from_secs(10), || async {
        let margins = report::margins(store, config, &month).await.expect("margins");
        line(&margins).is_some_and(|l| l.requests == 3)
    })
    .await;
    assert!(booked.is_some(), "three requests booked (two answered, one refused by the key's limit)");
    let margins = line(&report::margins(store, config, &month).await.expect("margins")).expect("line");

    let shown: Value = get_key(&app.base, &key).await.json().await.expect("json");
    assert_eq!(shown["id"], json!(listing.id));
    assert_eq!(shown["prefix"], json!(listing.prefix));
    assert_eq!((shown["name"].as_str(), shown["plan"].as_str()), (Some("laptop"), Some("capped")));
    assert_eq!((shown["status"].as_str(), shown["expires_at"].is_null()), (Some("active"), true));
    assert_eq!(time(&shown["created_at"]), listing.created_at);
    assert_eq!(shown["limits"], json!({"requests_per_minute": 2, "tokens_per_minute": null}));
    let m = &shown["month"];
    assert_eq!(m["requests"], json!(margins.requests));
    assert_eq!(m["prompt_tokens"], json!(margins.prompt_tokens));
    assert_eq!(m["completion_tokens"], json!(margins.completion_tokens));
    assert_eq!(m["spend_usd"], json!(margins.spend_usd));
    assert!(margins.cost_usd > 0.0 && margins.prompt_tokens > 0, "real usage: {margins:?}");
    assert_eq!(m["budget_usd"], json!(1.0));
    let remaining = m["remaining_usd"].as_f64().expect("remaining");
    assert!((remaining - (1.0 - margins.cost_usd)).abs() < 1e-9, "{remaining} vs {}", margins.cost_usd);
    let used = margins.prompt_tokens + margins.completion_tokens;
    assert_eq!((m["token_quota"].as_i64(), m["remaining_tokens"].as_i64()), (Some(1_000_000), Some(1_000_000 - used)));
    let (start, resets_at) = (time(&m["start"]), time(&m["resets_at"]));
    let days = report::month_range(&month).expect("month");
    assert_eq!((start, resets_at), (report::midnight(days.start), report::midnight(days.end)));
    assert!(shown["credits"].is_null(), "no prepaid credit");
    assert_eq!(shown["models"], json!(["gpt-4o-mini", "anthropic/*"]), "the plan's patterns");

    // Reading the key is not a model request: nothing more is booked.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let again = line(&report::margins(store, config, &month).await.expect("margins")).expect("line");
    assert_eq!(again.requests, 3);
    let (status, code) = error_code(get_key(&app.base, "omi_nope").await).await;
    assert_eq!((status, code.as_str()), (401, "invalid_api_key"));
}

/// A key past `expires_at` gets 401 `key_expired`; one that expires while cached is refused as
/// soon as the clock passes it, with no cache invalidation. `/v1/key` still tells it why. The
/// admin API creates keys that expire.
async fn a_key_past_its_expiry_is_refused_on_every_request(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let store = &app.state().store;
    let email = EmailAddress::parse("ada@example.com").expect("email");
    let past = DateTime::parse_from_rfc3339("2021-03-04T05:06:07Z").expect("time").to_utc();
    let (expired, _) = omi::keys::issue(
        store,
        &email,
        "pro",
        None,
        omi::keys::KeyTerms { expires_at: Some(past), ..Default::default() },
    )
    .await
    .expect("issue");
    let (status, code) = error_code(app.chat(expired.expose(), chat_body(false)).send().await.expect("chat")).await;
    assert_eq!((status, code.as_str()), (401, "key_expired"));
    let shown: Value = get_key(&app.base, expired.expose()).await.json().await.expect("json");
    assert_eq!((shown["status"].as_str(), time(&shown["expires_at"])), (Some("expired"), past));

    // The admin API sets an expiry by instant or by lifetime, and shows it.
    let created = app
        .admin(reqwest::Method::POST, "/admin/api/keys")
        .json(&json!({"email": "bob@example.com", "expires_in": "15m"}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.expect("json");
    let in_15_minutes = Utc::now() + chrono::Duration::minutes(15);
    assert!((in_15_minutes - time(&created["expires_at"])).num_seconds().abs() < 60, "{created}");
    let at_instant = app
        .admin(reqwest::Method::POST, "/admin/api/keys")
        .json(&json!({"email": "bob@example.com", "expires_at": "2021-03-04T05:06:07Z"}))
        .send()
        .await
        .expect("create");
    let at_instant: Value = at_instant.json().await.expect("json");
    let (status, code) =
        error_code(app.chat(at_instant["key"].as_str().expect("key"), chat_body(false)).send().await.expect("chat"))
            .await;
    assert_eq!((status, code.as_str()), (401, "key_expired"));
    for bad in [
        json!({"email": "bob@example.com", "expires_in": "soon"}),
        json!({"email": "bob@example.com", "expires_in": "1d", "expires_at": "2031-01-01T00:00:00Z"}),
    ] {
        let refused = app.admin(reqwest::Method::POST, "/admin/api/keys").json(&bad).send().await.expect("create");
        assert_eq!(refused.status(), 400, "{bad}");
    }
    let listed: Value =
        app.admin(reqwest::Method::GET, "/admin/api/keys").send().await.expect("list").json().await.unwrap();
    let listed = listed["data"].as_array().expect("keys");
    assert!(
        listed.iter().any(|k| k["id"] == created["id"] && k["expires_at"].is_string()),
        "the listing shows expiries"
    );

    let soon = Utc::now() + chrono::Duration::milliseconds(1500);
    let (short, _) = omi::keys::issue(
        store,
        &email,
        "pro",
        None,
        omi::keys::KeyTerms { expires_at: Some(soon), ..Default::default() },
    )
    .await
    .expect("issue");
    assert_eq!(chat_status(&app.base, short.expose()).await, 200, "cached as valid");
    tokio::time::sleep((soon - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(50)).await;
    let (status, code) = error_code(app.chat(short.expose(), chat_body(false)).send().await.expect("chat")).await;
    assert_eq!((status, code.as_str()), (401, "key_expired"));
}

/// The old key keeps working on both instances through `grace_secs`, then both refuse it; a
/// rotation with no grace is refused at once here and within 2 s on the other instance. Each
/// rotation is emailed, naming the replaced key.
async fn a_rotated_key_works_through_its_grace_then_is_refused_on_every_instance(backend: Backend) {
    let Some(a) = TestApp::spawn(backend).await else { return };
    let b = start_server(test_config(&a.db, &a.mock)).await;
    let b_base = format!("http://{}", b.addr);
    let old = a.create_key("ada@example.com").await;
    assert_eq!(chat_status(&a.base, &old).await, 200);
    assert_eq!(chat_status(&b_base, &old).await, 200, "cached as valid on B too");

    let response = rotate(&a.base, &old, json!({"grace_secs": 2}), None).await;
    assert_eq!(response.status(), 201);
    let rotated: Value = response.json().await.expect("json");
    let new = rotated["key"].as_str().expect("key").to_owned();
    assert_eq!(rotated["prefix"].as_str(), Some(&new[..12]));
    let old_expires_at = time(&rotated["old_key_expires_at"]);
    assert!(old_expires_at > Utc::now(), "the grace has not run out yet");
    for base in [&a.base, &b_base] {
        assert_eq!(chat_status(base, &old).await, 200, "the old key works during its grace");
        assert_eq!(chat_status(base, &new).await, 200, "the new key works everywhere");
    }
    let shown: Value = get_key(&b_base, &new).await.json().await.expect("json");
    assert_eq!((shown["id"].clone(), shown["plan"].as_str()), (rotated["id"].clone(), Some("pro")));

    tokio::time::sleep((old_expires_at - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(50)).await;
    for base in [&a.base, &b_base] {
        let refused = app_refuses(base, &old, "key_expired").await;
        assert!(refused, "the old key is refused after its grace on {base}");
    }

    let response = rotate(&b_base, &new, json!({}), None).await;
    assert_eq!(response.status(), 201, "no body field: grace 0");
    let third: Value = response.json().await.expect("json");
    assert!(time(&third["old_key_expires_at"]) <= Utc::now());
    let (status, code) = error_code(b_chat(&b_base, &new).await).await;
    assert_eq!((status, code.as_str()), (401, "key_expired"), "refused at once where it was rotated");
    let took = eventually(Duration::from_secs(2), || app_refuses(&a.base, &new, "key_expired")).await;
    assert!(took.is_some(), "refused on the other instance within 2 s");
    assert_eq!(chat_status(&a.base, third["key"].as_str().expect("key")).await, 200);

    let keys = a.state().store.list_keys().await.expect("list");
    assert_eq!(keys.len(), 3, "one customer, three keys");
    assert!(keys.iter().all(|k| k.customer_id == keys[0].customer_id && k.plan == "pro"));
    let replaced = outbox_replacements(&a.state().store).await;
    assert_eq!(replaced, vec![old[..12].to_owned(), new[..12].to_owned()], "each rotation emailed, naming the old key");
    b.shutdown().await;
}

async fn b_chat(base: &str, key: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat_body(false))
        .send()
        .await
        .expect("chat")
}

async fn app_refuses(base: &str, key: &str, code: &str) -> bool {
    let (status, got) = error_code(b_chat(base, key).await).await;
    status == 401 && got == code
}

/// The display prefixes named by the queued rotation emails, oldest first.
pub(crate) async fn outbox_replacements(store: &omi::store::Store) -> Vec<String> {
    let sql = "SELECT replaces_prefix FROM email_outbox WHERE replaces_prefix IS NOT NULL ORDER BY created_at";
    match store {
        omi::store::Store::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await.expect("outbox"),
        omi::store::Store::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await.expect("outbox"),
    }
}

/// The stored idempotency records' sealed keys.
async fn sealed_keys(store: &omi::store::Store) -> Vec<Vec<u8>> {
    let sql = "SELECT sealed_key FROM key_rotations";
    match store {
        omi::store::Store::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await.expect("rotations"),
        omi::store::Store::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await.expect("rotations"),
    }
}

/// Same `Idempotency-Key` from the same key: the same new key, even after the old key is
/// refused; another value mints another key; the database never holds a key in plaintext.
async fn a_retried_rotation_returns_the_same_key_and_a_new_idempotency_key_mints_another(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let old = app.create_key("ada@example.com").await;
    let first: Value = rotate(&app.base, &old, json!({"grace_secs": 60}), Some("retry-a")).await.json().await.unwrap();
    let again = rotate(&app.base, &old, json!({"grace_secs": 60}), Some("retry-a")).await;
    assert_eq!(again.status(), 201);
    let again: Value = again.json().await.expect("json");
    assert_eq!((&again["key"], &again["id"]), (&first["key"], &first["id"]), "the same new key");
    let other: Value = rotate(&app.base, &old, json!({"grace_secs": 60}), Some("retry-b")).await.json().await.unwrap();
    assert_ne!(other["key"], first["key"], "another Idempotency-Key mints another key");
    assert_eq!(app.state().store.list_keys().await.expect("list").len(), 3);

    // With no grace the old key is refused at once, yet its retry still gets the key it made.
    let second = first["key"].as_str().expect("key");
    let made: Value = rotate(&app.base, second, json!({"grace_secs": 0}), Some("retry-c")).await.json().await.unwrap();
    let (status, code) = error_code(app.chat(second, chat_body(false)).send().await.expect("chat")).await;
    assert_eq!((status, code.as_str()), (401, "key_expired"));
    let retried = rotate(&app.base, second, json!({"grace_secs": 0}), Some("retry-c")).await;
    assert_eq!(retried.status(), 201);
    assert_eq!(retried.json::<Value>().await.expect("json")["key"], made["key"]);
    let (status, code) = error_code(rotate(&app.base, second, json!({}), Some("retry-d")).await).await;
    assert_eq!((status, code.as_str()), (401, "key_expired"), "a new rotation needs a working key");
    assert_eq!(app.state().store.list_keys().await.expect("list").len(), 4);

    // Two retries racing each other: one mints, the other returns its key.
    let third = made["key"].as_str().expect("key");
    let (left, right) = tokio::join!(
        rotate(&app.base, third, json!({"grace_secs": 5}), Some("race")),
        rotate(&app.base, third, json!({"grace_secs": 5}), Some("race"))
    );
    assert_eq!((left.status(), right.status()), (reqwest::StatusCode::CREATED, reqwest::StatusCode::CREATED));
    let (left, right): (Value, Value) = (left.json().await.expect("json"), right.json().await.expect("json"));
    assert_eq!(left["key"], right["key"], "racing retries get one key");
    assert_eq!(app.state().store.list_keys().await.expect("list").len(), 5);

    let sealed = sealed_keys(&app.state().store).await;
    assert_eq!(sealed.len(), 4);
    for key in [&first["key"], &other["key"], &made["key"]] {
        let plain = key.as_str().expect("key").as_bytes();
        assert!(sealed.iter().all(|s| s.windows(12).all(|w| w != &plain[..12])), "never stored in plaintext");
    }
    let forgotten =
        app.state().store.forget_rotations(Utc::now() + chrono::Duration::seconds(1)).await.expect("forget");
    assert_eq!(forgotten, 4, "the sweep erases the records (the lifecycle task runs it after 24 h)");

    for (body, header) in
        [(json!({"grace_secs": 86_401}), None), (json!({"grace_secs": -1}), None), (json!({"grace": 5}), None)]
            .into_iter()
            .chain([(json!({}), Some("with space"))])
    {
        let (status, code) = error_code(rotate(&app.base, made["key"].as_str().unwrap(), body, header).await).await;
        assert_eq!((status, code.as_str()), (400, "invalid_request"));
    }
}

/// A plan's `trial_days` sets the vended key's expiry; a subscription `on_trial` moves it to
/// `trial_ends_at`, and a later `active` clears it.
async fn a_trial_plan_and_lemon_squeezy_trials_set_the_key_expiry(backend: Backend) {
    let postmark = postmark().await;
    let Some(app) = TestApp::spawn_with(backend, |c| {
        billing_config(c, &postmark.uri());
        c.plans = vec![PlanConfig { variant_ids: vec![1115451], trial_days: Some(14), ..plan("trial") }];
    })
    .await
    else {
        return;
    };
    let before = Utc::now();
    assert_eq!(outcome(&app, &order_created(ORDER, 1115451)).await, "vended");
    let expiry = || async {
        let keys = app.state().store.list_keys().await.expect("list");
        assert_eq!(keys.len(), 1);
        keys[0].expires_at
    };
    let trial = expiry().await.expect("a trial key expires");
    assert!(trial >= before + chrono::Duration::days(14) && trial <= Utc::now() + chrono::Duration::days(14));

    let trial_ends = (Utc::now() + chrono::Duration::days(3)).format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let mut on_trial = subscription("subscription_created", ORDER, "on_trial", 1, None);
    on_trial["data"]["attributes"]["trial_ends_at"] = json!(trial_ends);
    assert_eq!(outcome(&app, &on_trial).await, "already_vended", "the order vended the key");
    let ends = DateTime::parse_from_rfc3339(&trial_ends).expect("time").to_utc();
    assert_eq!(expiry().await, Some(ends), "the subscription's trial end");

    let mut active = subscription("subscription_updated", ORDER, "active", 2, None);
    active["data"]["attributes"]["trial_ends_at"] = json!(trial_ends);
    assert_eq!(outcome(&app, &active).await, "updated");
    assert_eq!(expiry().await, None, "a paid subscription does not expire");
    // Older news does not bring the trial back.
    let mut stale = subscription("subscription_updated", ORDER, "on_trial", 1, None);
    stale["data"]["attributes"]["trial_ends_at"] = json!(trial_ends);
    outcome(&app, &stale).await;
    assert_eq!(expiry().await, None);
}

#[tokio::test]
async fn the_cli_rotates_a_key_and_creates_keys_that_expire() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else { return };
    let bad = omi(&db, &["keys", "create", "--email", "ada@example.com", "--expires-in", "14w"]).await;
    assert_eq!(bad.status.code(), Some(2), "a bad duration is a usage error");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("`14w` is not a key lifetime") && stderr.lines().count() == 1, "{stderr}");

    let made = omi(&db, &["keys", "create", "--email", "ada@example.com", "--expires-in", "14d", "--json"]).await;
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let made: Value = serde_json::from_slice(&made.stdout).expect("json");
    let listed: Value = serde_json::from_slice(&omi(&db, &["keys", "list", "--json"]).await.stdout).expect("json");
    let expires_at = time(&listed[0]["expires_at"]);
    let in_14_days = Utc::now() + chrono::Duration::days(14);
    assert!(expires_at <= in_14_days && expires_at > in_14_days - chrono::Duration::minutes(1));
    assert!(stdout(&omi(&db, &["keys", "list"]).await).contains("EXPIRES"));

    let too_long = omi(&db, &["keys", "rotate", made["prefix"].as_str().unwrap(), "--grace-secs", "86401"]).await;
    assert_eq!(too_long.status.code(), Some(2));
    let rotated = omi(&db, &["keys", "rotate", made["prefix"].as_str().unwrap(), "--grace-secs", "30", "--json"]).await;
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    let rotated: Value = serde_json::from_slice(&rotated.stdout).expect("one JSON object");
    let new = rotated["key"].as_str().expect("key");
    assert!(omi::domain::key::ApiKey::parse(new).is_ok());
    assert_eq!(rotated["prefix"].as_str(), Some(&new[..12]));
    let old_expires_at = time(&rotated["old_key_expires_at"]);
    assert!(old_expires_at > Utc::now() && old_expires_at <= Utc::now() + chrono::Duration::seconds(30));

    let store = db.store().await;
    let keys = store.list_keys().await.expect("list");
    let new_listing = keys.iter().find(|k| k.id.to_string() == rotated["id"].as_str().unwrap()).expect("new key");
    assert_eq!(new_listing.expires_at, Some(expires_at), "a rotation never lengthens a key's term");
    let plain = omi(&db, &["keys", "rotate", &new[..12]]).await;
    assert!(plain.status.success());
    assert!(omi::domain::key::ApiKey::parse(stdout(&plain).trim()).is_ok(), "the key alone on stdout");
}
