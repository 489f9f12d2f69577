//! What a request costs and who pays: priced by the model sent upstream, unpriced models kept
//! off capped plans, absurd usage saturated and flagged, costly parameters removed, keyless
//! providers and the judge never billed to the house for a customer's own key.

use crate::on_both_backends;
use crate::support::{Backend, HOUSE_KEY, TestApp, TestDb, chat_body, eventually};
use futures_util::StreamExt;
use omi::agents::accountant::{budgets, report};
use omi::config::{JudgeByok, PlanConfig, ProviderConfig, SentinelMode, UnpricedModels};
use omi::events::{Event, RequestEvent, TokenUsage};
use omi::store::{Store, UsageRecord};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

const CUSTOMER_KEY: &str = "sk-customer-own-0123456789";

fn capped_plan(budget_usd: f64) -> PlanConfig {
    PlanConfig {
        name: "capped".into(),
        monthly_price_usd: 5.0,
        variant_ids: vec![],
        monthly_budget_usd: Some(budget_usd),
        monthly_token_quota: None,
        ..Default::default()
    }
}

/// A key on the capped plan, and its customer.
async fn capped_key(app: &TestApp, email: &str) -> (String, Uuid) {
    let email = omi::customers::EmailAddress::parse(email).expect("email");
    let (key, listing) =
        omi::keys::issue(&app.state().store, &email, "capped", None, Default::default()).await.expect("issue");
    (key.expose().to_string(), listing.customer_id)
}

fn body(model: &str, mock: Value) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Say hello in three words"}], "mock": mock})
}

async fn month_to_date(store: &Store, customer: Uuid) -> (i64, i64) {
    store.month_to_date(customer, &budgets::month_key(chrono::Utc::now())).await.expect("month to date")
}

async fn records_of(store: &Store, customer: Uuid, n: usize) -> Vec<UsageRecord> {
    let page = || async {
        let before = chrono::Utc::now() + chrono::Duration::hours(1);
        store.usage_page(Some(customer), before, 100).await.expect("page")
    };
    eventually(Duration::from_secs(10), || async { page().await.len() >= n }).await;
    page().await
}

async fn error_of(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("json");
    let text = |field: &str| body["error"][field].as_str().unwrap_or_default().to_string();
    (status, text("code"), text("message"))
}

on_both_backends!(
    a_provider_prefix_is_priced_and_cannot_escape_the_budget,
    unpriced_models_are_refused_on_capped_plans_unless_allowed,
    absurd_usage_saturates_everywhere_and_is_flagged,
    the_books_saturate_across_batches_and_days,
    cache_writes_are_booked_at_the_cache_write_price
);

async fn a_provider_prefix_is_priced_and_cannot_escape_the_budget(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| c.plans = vec![capped_plan(0.000001)]).await else { return };
    let (key, customer) = capped_key(&app, "escape@example.com").await;
    // The exploit: `openai/gpt-4o-mini` was priced by that string, found no price, and booked
    // 1M + 1M tokens as nothing, again and again.
    let exploit = body("openai/gpt-4o-mini", json!({"prompt_tokens": 1_000_000, "completion_tokens": 1_000_000}));
    assert_eq!(app.chat(&key, exploit.clone()).send().await.expect("send").status(), 200);
    assert_eq!(app.mock.upstream.seen().last().map(|s| s.body["model"].clone()), Some(json!("gpt-4o-mini")));
    // 1M·150 + 1M·600 nano-dollars.
    let store = &app.state().store;
    let billed = eventually(Duration::from_secs(5), || async { month_to_date(store, customer).await.0 > 0 }).await;
    assert!(billed.is_some(), "the request counts against the budget");
    assert_eq!(month_to_date(store, customer).await, (750_000_000, 2_000_000));
    let record = &records_of(store, customer, 1).await[0];
    assert_eq!((record.model.as_deref(), record.provider.as_deref()), (Some("gpt-4o-mini"), Some("openai")));
    assert_eq!(record.cost_nano, Some(750_000_000));
    let (status, code, _) = error_of(app.chat(&key, exploit).send().await.expect("send")).await;
    assert_eq!((status, code.as_str()), (429, "quota_exceeded"), "the budget now stops the customer");
}

async fn unpriced_models_are_refused_on_capped_plans_unless_allowed(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| c.plans = vec![capped_plan(20.0)]).await else { return };
    let (key, customer) = capped_key(&app, "unpriced@example.com").await;
    let seen = app.mock.upstream.seen().len();
    for model in ["mystery-model", "openai/mystery-model"] {
        let (status, code, message) =
            error_of(app.chat(&key, body(model, json!({}))).send().await.expect("send")).await;
        assert_eq!((status, code.as_str()), (403, "model_not_allowed"), "{model}");
        assert!(message.contains("`mystery-model` has no price"), "{message}");
    }
    assert_eq!(app.mock.upstream.seen().len(), seen, "nothing went upstream");
    // A customer's own key costs the house nothing: no budget to escape.
    let byok = app.chat(&key, body("mystery-model", json!({}))).header("x-provider-key", CUSTOMER_KEY);
    assert_eq!(byok.send().await.expect("send").status(), 200);
    // Plans without limits were never at risk.
    let unlimited = app.create_key("free@example.com").await;
    assert_eq!(app.chat(&unlimited, body("mystery-model", json!({}))).send().await.expect("send").status(), 200);
    let mut booked: Vec<_> = records_of(&app.state().store, customer, 3)
        .await
        .iter()
        .map(|r| (r.status, r.byok, r.prompt_tokens, r.cost_nano))
        .collect();
    booked.sort();
    assert_eq!(booked, [(200, true, 6, Some(0)), (403, false, 0, Some(0)), (403, false, 0, Some(0))]);

    let Some(allowing) = TestApp::spawn_with(backend, |c| {
        c.plans = vec![capped_plan(20.0)];
        c.unpriced_models = UnpricedModels::Allow;
    })
    .await
    else {
        return;
    };
    let (key, customer) = capped_key(&allowing, "allowed@example.com").await;
    assert_eq!(allowing.chat(&key, body("mystery-model", json!({}))).send().await.expect("send").status(), 200);
    let record = &records_of(&allowing.state().store, customer, 1).await[0];
    assert_eq!(record.cost_nano, None, "allowed, and booked as unknown");
}

async fn absurd_usage_saturates_everywhere_and_is_flagged(backend: Backend) {
    // A model only this test uses: the metric below holds exactly its traffic.
    let model = format!("absurd-{}", crate::support::random_suffix());
    let Some(app) = TestApp::spawn_with(backend, |c| {
        c.prices.insert(
            model.clone(),
            omi::config::ModelPrice { input: 1.0, cached_input: None, cache_write: None, output: 2.0 },
        );
        // A budget no saturated counter reaches, so both requests are served and summed.
        c.plans = vec![capped_plan(1e12)];
    })
    .await
    else {
        return;
    };
    let (key, customer) = capped_key(&app, "absurd@example.com").await;
    let absurd = json!({"prompt_tokens": u64::MAX, "completion_tokens": u64::MAX});
    assert_eq!(app.chat(&key, body(&model, absurd.clone())).send().await.expect("send").status(), 200);
    let mut streamed = body(&model, absurd);
    streamed["stream"] = json!(true);
    let mut stream = app.chat(&key, streamed).send().await.expect("send").bytes_stream();
    while let Some(chunk) = stream.next().await {
        chunk.expect("bytes");
    }

    let store = &app.state().store;
    let records = records_of(store, customer, 2).await;
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!((r.prompt_tokens, r.completion_tokens, r.cost_nano), (i64::MAX, i64::MAX, Some(i64::MAX)), "{r:?}");
    }
    let counted =
        eventually(Duration::from_secs(5), || async { month_to_date(store, customer).await == (i64::MAX, i64::MAX) })
            .await;
    assert!(counted.is_some(), "the month saturates: {:?}", month_to_date(store, customer).await);
    let today = chrono::Utc::now().date_naive();
    let books = report::build(store, &app.state().config, "today", today..today + chrono::Days::new(1))
        .await
        .expect("the report sums without overflow");
    let line = books.customers.iter().find(|l| l.customer == Some(customer)).expect("the customer's line");
    assert_eq!((line.requests, line.prompt_tokens, line.completion_tokens), (2, i64::MAX, i64::MAX));
    assert_eq!(line.cost_usd, books.total.cost_usd);
    assert!(line.cost_usd >= 9.2e9, "the largest cost, never a wrapped one: {}", line.cost_usd);

    let alerted = eventually(Duration::from_secs(5), || async {
        let (alerts, _) = store.list_alerts(None, 50, 0).await.expect("alerts");
        alerts.iter().any(|a| a.rule == "suspicious_usage" && a.subject == "openai")
    })
    .await;
    assert!(alerted.is_some(), "the Hawk raises an alert about the provider");
    let metrics = app.admin(reqwest::Method::GET, "/metrics").send().await.expect("send").text().await.expect("text");
    let flagged = format!("omi_usage_suspicious_total{{model=\"{model}\"}} 2");
    assert!(metrics.contains(&flagged), "both requests are flagged: {flagged} not in the metrics");
    let tokens = format!("omi_tokens_total{{kind=\"prompt\",model=\"{model}\"}} 0\n");
    assert!(metrics.contains(&tokens), "suspicious usage stays out of the token counters, which would wrap");
}

/// The database's own arithmetic: rollup upserts and month counters add in SQL, and the
/// report sums days; each batch here is one record, so the sums happen there, not in Rust.
async fn the_books_saturate_across_batches_and_days(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let store = db.store().await;
    let email = omi::customers::EmailAddress::parse("books@example.com").expect("email");
    let (_, key) = omi::keys::issue(&store, &email, "capped", None, Default::default()).await.expect("issue");
    let today = chrono::Utc::now();
    let record = |at: chrono::DateTime<chrono::Utc>| UsageRecord {
        id: Uuid::now_v7(),
        request_id: Uuid::now_v7().to_string().into(),
        at,
        key_id: key.id,
        customer_id: key.customer_id,
        plan: "capped".into(),
        route: Some("chat".into()),
        model: Some("gpt-4o-mini".into()),
        provider: Some("openai".into()),
        prompt_tokens: i64::MAX,
        cached_tokens: 0,
        cache_write_tokens: 0,
        completion_tokens: i64::MAX,
        cost_nano: Some(i64::MAX),
        spend_nano: Some(i64::MAX),
        status: 200,
        latency_us: 1,
        upstream_us: Some(1),
        streamed: false,
        byok: false,
        usage_estimated: false,
        aborted: false,
        attempts: 1,
    };
    let yesterday = today - chrono::Duration::days(1);
    for at in [today, today, yesterday] {
        store.insert_usage(&[record(at)]).await.expect("a saturated rollup, not an overflow error");
    }
    let days = yesterday.date_naive()..today.date_naive() + chrono::Days::new(1);
    let totals = store.usage_totals(days).await.expect("summed without overflow");
    let total = totals.iter().find(|t| t.customer_id == key.customer_id).expect("the customer's totals");
    assert_eq!(
        (total.requests, total.prompt_tokens, total.cost_nano, total.spend_nano),
        (3, i64::MAX, i64::MAX, i64::MAX)
    );
    for _ in 0..2 {
        let month = budgets::month_key(today);
        let counted = store.add_to_month(key.customer_id, &month, i64::MAX, i64::MAX).await.expect("saturated");
        assert_eq!(counted, (i64::MAX, i64::MAX));
    }
}

/// Prompt-cache writes (Anthropic's `cache_creation_input_tokens`) are booked and cost the
/// cache-write price: in the record the admin API shows, the month a budget counts, the margins.
async fn cache_writes_are_booked_at_the_cache_write_price(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| c.plans = vec![capped_plan(20.0)]).await else { return };
    let email = omi::customers::EmailAddress::parse("cache@example.com").expect("email");
    let (_, key) =
        omi::keys::issue(&app.state().store, &email, "capped", None, Default::default()).await.expect("issue");
    // A fixed day, so the month and the report below never straddle a boundary.
    let day = chrono::NaiveDate::from_ymd_opt(2025, 6, 15).expect("a date");
    let at = day.and_hms_opt(12, 0, 0).expect("noon").and_utc();
    let usage =
        TokenUsage { prompt_tokens: 10_000, cached_tokens: 4_000, cache_write_tokens: 3_000, completion_tokens: 1_000 };
    app.state().events.publish(Event::Request(Box::new(RequestEvent {
        at,
        key_id: Some(key.id),
        customer_id: Some(key.customer_id),
        plan: Some("capped".into()),
        model: Some("claude-sonnet-4-5".into()),
        provider: Some("anthropic".into()),
        status: 200,
        usage: Some(usage),
        ..RequestEvent::new("cache-writes".into(), "chat", [127, 0, 0, 1].into())
    })));
    // 3,000 plain + 4,000 read + 3,000 written prompt tokens and 1,000 completion tokens at
    // $3.00 / $0.30 / $3.75 / $15.00 per million: 9,000,000 + 1,200,000 + 11,250,000 + 15,000,000.
    const COST_NANO: i64 = 36_450_000;

    let path = format!("/admin/api/usage?customer={}", key.customer_id);
    let page = || async {
        let response = app.admin(reqwest::Method::GET, &path).send().await.expect("send");
        response.json::<Value>().await.expect("json")
    };
    eventually(Duration::from_secs(10), || async { page().await["data"].as_array().is_some_and(|d| !d.is_empty()) })
        .await;
    let page = page().await;
    let record = &page["data"][0];
    assert_eq!(record["request_id"], "cache-writes", "{page}");
    let tokens = ["prompt_tokens", "cached_tokens", "cache_write_tokens", "completion_tokens"].map(|f| &record[f]);
    assert_eq!(tokens, [&json!(10_000), &json!(4_000), &json!(3_000), &json!(1_000)], "{record}");
    assert_eq!(record["cost_nano"], COST_NANO, "{record}");

    let store = &app.state().store;
    let month = budgets::month_key(at);
    let counted = eventually(Duration::from_secs(5), || async {
        store.month_to_date(key.customer_id, &month).await.is_ok_and(|m| m.0 > 0)
    })
    .await;
    assert!(counted.is_some(), "the budget counts the request");
    assert_eq!(store.month_to_date(key.customer_id, &month).await.expect("month"), (COST_NANO, 11_000));
    let books =
        report::build(store, &app.state().config, "day", day..day + chrono::Days::new(1)).await.expect("report");
    let line = books.customers.iter().find(|l| l.customer == Some(key.customer_id)).expect("the customer's line");
    assert_eq!(line.cost_usd, omi::billing::prices::nano_to_usd(i128::from(COST_NANO)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn costly_options_are_removed_before_upstream_unless_allowed() {
    let costly = || {
        let mut body = chat_body(false);
        body["service_tier"] = json!("priority");
        body["store"] = json!(true);
        body
    };
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else { return };
    let key = app.create_key("tier@example.com").await;
    assert_eq!(app.chat(&key, costly()).send().await.expect("send").status(), 200);
    let sent = app.mock.upstream.seen().last().map(|s| s.body.clone()).expect("a request upstream");
    assert!(sent.get("service_tier").is_none() && sent.get("store").is_none(), "{sent}");

    let Some(allowing) = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.passthrough_service_tier = true;
        c.passthrough_store = true;
    })
    .await
    else {
        return;
    };
    let key = allowing.create_key("tier@example.com").await;
    assert_eq!(allowing.chat(&key, costly()).send().await.expect("send").status(), 200);
    let sent = allowing.mock.upstream.seen().last().map(|s| s.body.clone()).expect("a request upstream");
    assert_eq!((&sent["service_tier"], &sent["store"]), (&json!("priority"), &json!(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_providers_take_customer_keys_only_when_marked_byok() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        let provider = |name: &str, byok: bool| ProviderConfig {
            kind: Default::default(),
            name: name.into(),
            base_url: c.openai_base_url.clone(),
            api_key_env: None,
            models: vec![],
            catch_all: false,
            byok,
            ..Default::default()
        };
        c.providers = vec![provider("openai", false), provider("internal", false), provider("shared", true)];
    })
    .await
    else {
        return;
    };
    let key = app.create_key("byok@example.com").await;
    let send = |model: &str, own_key: bool| {
        let mut request = app.chat(&key, body(model, json!({})));
        if own_key {
            request = request.header("x-provider-key", CUSTOMER_KEY);
        }
        request.send()
    };
    let seen = app.mock.upstream.seen().len();
    for own_key in [true, false] {
        let (status, code, message) = error_of(send("internal/llama", own_key).await.expect("send")).await;
        assert_eq!((status, code.as_str()), (403, "model_not_allowed"), "own key: {own_key}");
        assert!(message.contains("does not take X-Provider-Key"), "{message}");
    }
    assert_eq!(app.mock.upstream.seen().len(), seen, "any string in X-Provider-Key once bought free use");
    assert_eq!(send("shared/llama", true).await.expect("send").status(), 200);
    let authorization = app.mock.upstream.seen().last().and_then(|s| s.authorization.clone());
    assert_eq!(authorization, Some(format!("Bearer {CUSTOMER_KEY}")));
    let (status, _, message) = error_of(send("shared/llama", false).await.expect("send")).await;
    assert_eq!(status, 502);
    assert!(message.contains("send X-Provider-Key"), "{message}");
    // A provider with a house key takes either.
    assert_eq!(send("openai/gpt-4o-mini", false).await.expect("send").status(), 200);
    let authorization = app.mock.upstream.seen().last().and_then(|s| s.authorization.clone());
    assert_eq!(authorization, Some(format!("Bearer {HOUSE_KEY}")));
    assert_eq!(send("openai/gpt-4o-mini", true).await.expect("send").status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_judge_never_bills_the_house_for_a_byok_request_unless_configured() {
    const JUDGE_KEY: &str = "sk-judge-0123456789abcdef";
    let judge_calls = |app: &TestApp| {
        let judge = Some(format!("Bearer {JUDGE_KEY}"));
        app.mock.upstream.seen().iter().filter(|s| s.authorization == judge).count()
    };
    let judging = |byok: JudgeByok| {
        move |c: &mut omi::config::Config| {
            c.sentinel_mode = Some(SentinelMode::Llm);
            c.sentinel_api_key = Some(SecretString::from(JUDGE_KEY));
            c.sentinel_judge_all = true;
            c.sentinel_judge_byok = byok;
        }
    };

    let Some(app) = TestApp::spawn_with(Backend::Sqlite, judging(JudgeByok::Skip)).await else { return };
    let key = app.create_key("judged@example.com").await;
    let byok = app.chat(&key, chat_body(false)).header("x-provider-key", CUSTOMER_KEY);
    assert_eq!(byok.send().await.expect("send").status(), 200);
    assert_eq!(app.chat(&key, chat_body(false)).send().await.expect("send").status(), 200);
    let judged = eventually(Duration::from_secs(5), || async { judge_calls(&app) >= 1 }).await;
    assert!(judged.is_some(), "the house request is judged");
    // The BYOK prompt was queued first: had it been judged, its call would be out by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(judge_calls(&app), 1, "only the house request is judged at the house's cost");

    let Some(paying) = TestApp::spawn_with(Backend::Sqlite, judging(JudgeByok::House)).await else { return };
    let key = paying.create_key("judged@example.com").await;
    let byok = paying.chat(&key, chat_body(false)).header("x-provider-key", CUSTOMER_KEY);
    assert_eq!(byok.send().await.expect("send").status(), 200);
    let judged = eventually(Duration::from_secs(5), || async { judge_calls(&paying) == 1 }).await;
    assert!(judged.is_some(), "sentinel_judge_byok = \"house\": the house pays to judge BYOK requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_money_page_lists_routed_models_without_a_price() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.providers = vec![ProviderConfig {
            kind: Default::default(),
            name: "openai".into(),
            base_url: c.openai_base_url.clone(),
            api_key_env: None,
            models: vec!["gpt-4o-mini".into(), "house-special".into()],
            catch_all: true,
            byok: false,
            ..Default::default()
        }];
    })
    .await
    else {
        return;
    };
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let signed_in = http
        .post(format!("{}/admin/login", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("key={}", crate::support::ADMIN_KEY))
        .send()
        .await
        .expect("sign in");
    let set_cookie = signed_in.headers()["set-cookie"].to_str().expect("ascii");
    let cookie = set_cookie.split(';').next().expect("a session cookie").to_string();
    let response = http.get(format!("{}/admin/money", app.base)).header("cookie", cookie).send().await.expect("get");
    assert_eq!(response.status(), 200);
    let html = response.text().await.expect("text");
    let (_, section) = html.split_once("Models without a price").expect("the section");
    let section = section.split("</section>").next().unwrap_or_default();
    assert!(section.contains("house-special</th><td>openai"), "{section}");
    assert!(!section.contains("gpt-4o-mini"), "priced models are not listed: {section}");
    assert!(section.contains("model_not_allowed") && section.contains("go to\n    <code>openai</code>"), "{section}");
}
