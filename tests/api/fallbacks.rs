//! Retries and ordered fallbacks, against upstreams on real sockets: a provider that refuses
//! connections (a closed loopback port) and the mock upstream under other provider names and
//! kinds. What the customer sees (`X-Omi-Upstream`, `X-Omi-Attempts`), what is booked (the
//! answering provider and model, priced so, and the attempts), and what is never retried.

use crate::on_both_backends;
use crate::support::{Backend, TestApp, chat_body, eventually, next_request_event, start_server, test_config};
use omi::config::{Config, PlanConfig, ProviderConfig, ProviderKind};
use omi::domain::allowed_models::AllowedModels;
use omi::store::UsageRecord;
use serde_json::{Value, json};
use std::time::Duration;

/// A closed port on loopback: every connection is refused.
const REFUSING_URL: &str = "http://127.0.0.1:9/v1";
/// Where the fallback providers' house keys are read from: a variable cargo and nextest set for
/// every test process (the mock only checks that a key comes; see `sdk.rs`).
const HOUSE_KEY_ENV: &str = "CARGO_MANIFEST_DIR";

fn provider(name: &str, kind: ProviderKind, base_url: &str, models: &[&str]) -> ProviderConfig {
    ProviderConfig {
        kind,
        name: name.into(),
        base_url: base_url.into(),
        api_key_env: Some(HOUSE_KEY_ENV.into()),
        models: models.iter().map(|m| m.to_string()).collect(),
        ..Default::default()
    }
}

/// `openai` (the house key) at `primary_url` serves gpt-4o-mini and gpt-4.1-mini; `backup`
/// (OpenAI kind) and `anthropic` (Anthropic kind) are the mock. gpt-4o-mini falls back to
/// `backup/gpt-4o` (another price), gpt-4.1-mini to a model no provider serves (skipped),
/// then to Claude.
fn with_fallbacks(config: &mut Config, primary_url: &str) {
    config.providers = vec![
        ProviderConfig {
            api_key_env: None,
            ..provider("openai", ProviderKind::OpenAi, primary_url, &["gpt-4o-mini", "gpt-4.1-mini"])
        },
        provider("backup", ProviderKind::OpenAi, &config.openai_base_url, &[]),
        provider("anthropic", ProviderKind::Anthropic, &config.openai_base_url, &["claude-haiku-4-5"]),
    ];
    config.fallbacks = [
        ("gpt-4o-mini".to_string(), vec!["backup/gpt-4o".to_string()]),
        ("gpt-4.1-mini".to_string(), vec!["nowhere/model".to_string(), "anthropic/claude-haiku-4-5".to_string()]),
    ]
    .into();
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn upstream_calls(app: &TestApp, path: &str) -> usize {
    app.mock.upstream.seen().iter().filter(|seen| seen.path == path).count()
}

async fn records(app: &TestApp) -> Vec<UsageRecord> {
    let until = chrono::Utc::now() + chrono::Duration::hours(1);
    app.state().store.usage_page(None, until, 1000).await.expect("page")
}

on_both_backends!(a_refused_provider_falls_back_to_the_next_and_is_billed_at_its_model);

/// Provider A refuses every connection; B answers every request: no error reaches the client,
/// and each request is booked with B's provider and model, at B's price, after 2 attempts.
async fn a_refused_provider_falls_back_to_the_next_and_is_billed_at_its_model(backend: Backend) {
    const REQUESTS: usize = 50;
    // Circuits off: each request is to pay A's refusal (with them on, see `an_open_circuit_*`).
    let circuits_off = |c: &mut Config| {
        with_fallbacks(c, REFUSING_URL);
        c.circuit_failures = 0;
    };
    let Some(app) = TestApp::spawn_with(backend, circuits_off).await else { return };
    let key = app.create_key("ada@example.com").await;
    let answers = futures_util::future::join_all((0..REQUESTS).map(|i| {
        let app = &app;
        let key = &key;
        async move {
            let stream = i % 2 == 1;
            let response = app.chat(key, chat_body(stream)).send().await.expect("send");
            let seen =
                (response.status().as_u16(), header(&response, "x-omi-upstream"), header(&response, "x-omi-attempts"));
            response.bytes().await.expect("body");
            seen
        }
    }))
    .await;
    for answer in &answers {
        assert_eq!(answer, &(200, Some("backup/gpt-4o".into()), Some("2".into())));
    }
    assert_eq!(upstream_calls(&app, "/v1/chat/completions"), REQUESTS, "B answered each request once");

    let booked = eventually(Duration::from_secs(10), || async { records(&app).await.len() >= REQUESTS }).await;
    assert!(booked.is_some(), "every request is on the books");
    let gpt_4o = app.state().prices.get("gpt-4o").expect("gpt-4o is priced");
    assert_ne!(app.state().prices.get("gpt-4o-mini"), Some(gpt_4o), "the prices tell the models apart");
    for record in records(&app).await {
        assert_eq!(
            (record.provider.as_deref(), record.model.as_deref(), record.attempts, record.status),
            (Some("backup"), Some("gpt-4o"), 2, 200)
        );
        let usage = omi::events::TokenUsage {
            prompt_tokens: record.prompt_tokens as u64,
            cached_tokens: record.cached_tokens as u64,
            cache_write_tokens: record.cache_write_tokens as u64,
            completion_tokens: record.completion_tokens as u64,
        };
        assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);
        assert_eq!(record.cost_nano, Some(gpt_4o.cost(&usage) as i64), "billed at the answering model's price");
    }
    let metrics = omi::telemetry::metrics_handle().render();
    for counted in [r#"provider="openai",outcome="retried""#, r#"provider="backup",outcome="ok""#] {
        assert!(
            metrics.lines().any(|l| l.starts_with("omi_upstream_attempts_total") && l.contains(counted)),
            "{counted}: {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_kind_failure_falls_back_to_a_claude_model_on_chat_completions() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| with_fallbacks(c, REFUSING_URL)).await else { return };
    let key = app.create_key("ada@example.com").await;
    let mut rx = app.state().events.subscribe("test", 64);
    let mut body = chat_body(false);
    body["model"] = json!("gpt-4.1-mini");
    let response = app.chat(&key, body).send().await.expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-omi-upstream").as_deref(), Some("anthropic/claude-haiku-4-5"));
    assert_eq!(header(&response, "x-omi-attempts").as_deref(), Some("2"), "the unroutable fallback is skipped");
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["object"], "chat.completion", "translated back to the API the customer spoke: {answer}");
    assert!(answer["choices"][0]["message"]["content"].as_str().is_some_and(|c| !c.is_empty()), "{answer}");
    assert_eq!(upstream_calls(&app, "/v1/messages"), 1);
    let event = next_request_event(&mut rx).await;
    assert_eq!(
        (event.provider.as_deref(), event.model.as_deref(), event.attempts, event.status),
        (Some("anthropic"), Some("claude-haiku-4-5"), 2, 200)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_only_provider_is_retried_up_to_the_attempts_then_the_client_gets_502() {
    // Circuits off: 9 failures in a row would open it after `circuit_failures`.
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| c.circuit_failures = 0).await else { return };
    let key = app.create_key("ada@example.com").await;
    let mut rx = app.state().events.subscribe("test", 64);
    for status in [503, 529] {
        let mut body = chat_body(false);
        body["mock"] = json!({"status": status});
        let before = upstream_calls(&app, "/v1/chat/completions");
        let response = app.chat(&key, body).send().await.expect("send");
        assert_eq!(response.status(), 502, "the last failure, mapped as always ({status})");
        assert_eq!(header(&response, "x-omi-attempts").as_deref(), Some("3"), "{status}");
        assert_eq!(header(&response, "x-omi-upstream").as_deref(), Some("openai/gpt-4o-mini"));
        assert_eq!(upstream_calls(&app, "/v1/chat/completions") - before, 3, "{status}");
        let event = next_request_event(&mut rx).await;
        assert_eq!((event.attempts, event.status), (3, 502));
    }

    // A 429 says the key is busy: with no other key or candidate, retrying at once would only
    // be refused again. The client gets the 429; the key rests, and the next request is
    // refused without a call, with the wait in `Retry-After`.
    let mut limited = chat_body(false);
    limited["mock"] = json!({"status": 429});
    let before = upstream_calls(&app, "/v1/chat/completions");
    let response = app.chat(&key, limited).send().await.expect("send");
    assert_eq!((response.status().as_u16(), header(&response, "x-omi-attempts")), (429, Some("1".into())));
    let response = app.chat(&key, chat_body(false)).send().await.expect("send");
    assert_eq!((response.status().as_u16(), header(&response, "x-omi-attempts")), (429, Some("0".into())));
    assert_eq!(header(&response, "retry-after").as_deref(), Some("1"), "the rest left, rounded up");
    assert_eq!(upstream_calls(&app, "/v1/chat/completions") - before, 1, "no call to a resting key");
    assert_eq!(next_request_event(&mut rx).await.attempts, 1);
    assert_eq!(next_request_event(&mut rx).await.attempts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_customers_errors_and_started_streams_are_never_retried() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        let mock = c.openai_base_url.clone();
        with_fallbacks(c, &mock);
    })
    .await
    else {
        return;
    };
    let key = app.create_key("ada@example.com").await;
    let mut rx = app.state().events.subscribe("test", 64);
    // 401 and 403 are the customer's only for the customer's own key (a house key refused is
    // taken out of its pool, and the request goes on: `hawk::a_refused_key_of_a_pool_*`).
    for (status, own_key) in [(400, false), (404, false), (413, false), (422, false), (401, true), (403, true)] {
        let mut body = chat_body(false);
        body["mock"] = json!({"status": status});
        let before = upstream_calls(&app, "/v1/chat/completions");
        let mut request = app.chat(&key, body);
        if own_key {
            request = request.header("x-provider-key", "sk-customer-own-key");
        }
        let response = request.send().await.expect("send");
        assert_eq!(response.status().as_u16(), if status == 403 { 401 } else { status }, "{status}");
        assert_eq!(header(&response, "x-omi-attempts").as_deref(), Some("1"), "{status}");
        assert_eq!(header(&response, "x-omi-upstream").as_deref(), Some("openai/gpt-4o-mini"));
        assert_eq!(upstream_calls(&app, "/v1/chat/completions") - before, 1, "{status}: no fallback either");
        assert_eq!(next_request_event(&mut rx).await.attempts, 1);
    }

    // The upstream ends the stream after its first event: the client's stream started, so it
    // is relayed as far as it went and neither retried nor sent to the fallback.
    let mut cut = chat_body(true);
    cut["mock"] = json!({"cut_after": 1, "chunks": 5});
    let before = upstream_calls(&app, "/v1/chat/completions");
    let response = app.chat(&key, cut).send().await.expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-omi-attempts").as_deref(), Some("1"));
    let text = response.text().await.expect("text");
    assert!(text.contains("data: "), "{text}");
    let last = text.trim_end().rsplit("\n\n").next().unwrap_or_default();
    assert!(
        last.starts_with("data: {\"error\"") && last.contains("upstream_error"),
        "ends with an error event: {text}"
    );
    assert_eq!(upstream_calls(&app, "/v1/chat/completions") - before, 1);
    let event = next_request_event(&mut rx).await;
    assert_eq!(
        (event.attempts, event.provider.as_deref(), event.model.as_deref()),
        (1, Some("openai"), Some("gpt-4o-mini"))
    );
}

/// On a capped plan an unpriced model is refused (its cost could not count): as a fallback it is
/// skipped, and the next one answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_the_plan_cannot_count_is_never_tried() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        with_fallbacks(c, REFUSING_URL);
        c.fallbacks.insert("gpt-4o-mini".into(), vec!["backup/mystery-model".into(), "backup/gpt-4o".into()]);
        c.plans = vec![PlanConfig {
            name: "pro".into(),
            monthly_price_usd: 29.0,
            variant_ids: vec![],
            monthly_budget_usd: Some(100.0),
            monthly_token_quota: None,
            ..Default::default()
        }];
    })
    .await
    else {
        return;
    };
    let key = app.create_key("ada@example.com").await;
    let response = app.chat(&key, chat_body(false)).send().await.expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-omi-upstream").as_deref(), Some("backup/gpt-4o"));
    assert_eq!(header(&response, "x-omi-attempts").as_deref(), Some("2"));
    let models: Vec<Value> = app.mock.upstream.seen().into_iter().map(|seen| seen.body["model"].clone()).collect();
    assert_eq!(models, [json!("gpt-4o")], "the unpriced fallback never went upstream");
}

/// A plan's `models` pick the fallbacks too: one it does not include is skipped without a call
/// and the next, included by `anthropic/*`, answers; a requested model the plan does not include
/// is refused before anything goes upstream, even though its fallback would be allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_outside_the_plan_is_skipped_and_a_requested_model_outside_it_is_refused() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        with_fallbacks(c, REFUSING_URL);
        c.fallbacks.insert("gpt-4o-mini".into(), vec!["backup/gpt-4o".into(), "anthropic/claude-haiku-4-5".into()]);
        let models = vec!["gpt-4o-mini".to_string(), "anthropic/*".to_string()];
        let models = AllowedModels::try_from(models).expect("valid patterns");
        c.plans = vec![PlanConfig { name: "pro".into(), models: Some(models), ..PlanConfig::default() }];
    })
    .await
    else {
        return;
    };
    let key = app.create_key("ada@example.com").await;
    let mut rx = app.state().events.subscribe("test", 64);
    let response = app.chat(&key, chat_body(false)).send().await.expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-omi-upstream").as_deref(), Some("anthropic/claude-haiku-4-5"));
    assert_eq!(header(&response, "x-omi-attempts").as_deref(), Some("2"), "the refusing primary, then Claude");
    response.bytes().await.expect("body");
    assert_eq!(upstream_calls(&app, "/v1/chat/completions"), 0, "backup/gpt-4o is outside the plan: never called");
    assert_eq!(upstream_calls(&app, "/v1/messages"), 1);
    next_request_event(&mut rx).await;

    // gpt-4.1-mini is outside the plan; its fallback anthropic/claude-haiku-4-5 is inside.
    let mut body = chat_body(false);
    body["model"] = json!("gpt-4.1-mini");
    let response = app.chat(&key, body).send().await.expect("send");
    assert_eq!(response.status(), 403);
    assert_eq!(header(&response, "x-omi-attempts"), None, "refused before the attempt loop");
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["code"], "model_not_allowed", "{error}");
    assert_eq!(app.mock.upstream.seen().len(), 1, "the allowed fallback was not called either");
    let event = next_request_event(&mut rx).await;
    assert_eq!((event.status, event.error_code), (403, Some("model_not_allowed")));
}

/// `openai` refuses every connection: after `circuit_failures` requests its circuit is open,
/// and the next requests go straight to the fallback (one attempt), or fail at once with the
/// outage's 502 when the model has no fallback; `/metrics` shows the circuit open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_is_skipped_without_a_call_and_shown_in_metrics() {
    const CIRCUIT_FAILURES: u32 = 2;
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        with_fallbacks(c, REFUSING_URL);
        c.circuit_failures = CIRCUIT_FAILURES;
    })
    .await
    else {
        return;
    };
    let key = app.create_key("ada@example.com").await;
    let mut rx = app.state().events.subscribe("test", 64);
    let circuit_open = |provider: &str| {
        let gauge = format!(r#"omi_upstream_circuit_open{{provider="{provider}"}} "#);
        omi::telemetry::metrics_handle().render().lines().find_map(|l| l.strip_prefix(&gauge).map(str::to_owned))
    };
    for (request, attempts) in [(1, "2"), (2, "2"), (3, "1"), (4, "1")] {
        let response = app.chat(&key, chat_body(false)).send().await.expect("send");
        assert_eq!(response.status(), 200, "request {request}");
        assert_eq!(header(&response, "x-omi-upstream").as_deref(), Some("backup/gpt-4o"), "request {request}");
        assert_eq!(header(&response, "x-omi-attempts").as_deref(), Some(attempts), "request {request}");
        if request == CIRCUIT_FAILURES {
            assert_eq!(circuit_open("openai").as_deref(), Some("1"));
        }
        next_request_event(&mut rx).await;
    }
    assert_eq!(circuit_open("backup").as_deref(), Some("0"), "every provider's circuit is shown");

    // No fallback: the outage's 502 at once, booked as unreachable, without a call.
    let body = json!({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "Hi"}]});
    let response = app.chat(&key, body).send().await.expect("send");
    assert_eq!(response.status(), 502);
    assert_eq!(header(&response, "x-omi-attempts").as_deref(), Some("0"));
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["code"], "upstream_error", "{error}");
    let event = next_request_event(&mut rx).await;
    assert_eq!((event.error_code, event.attempts), (Some(omi::events::UPSTREAM_UNREACHABLE), 0));
}

/// A pooled key answering 429 with `Retry-After: 2` rests: it gets no call for 2 s while the
/// other key serves every request, then it is called again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_key_rests_for_its_retry_after_and_then_serves_again() {
    const LIMITED_ENV: &str = "CARGO_MANIFEST_DIR";
    const SERVING_ENV: &str = "CARGO_PKG_NAME";
    let limited = std::env::var(LIMITED_ENV).expect("cargo sets it");
    let failing = omi::mock_upstream::FailingKey { key: limited.clone(), status: 429, retry_after_secs: Some(2) };
    let mock = omi::mock_upstream::MockConfig { failing_keys: vec![failing], ..Default::default() };
    let Some(app) = TestApp::spawn_with_mock(Backend::Sqlite, mock, |c| {
        c.providers = vec![ProviderConfig {
            api_key_env: None,
            api_key_envs: vec![LIMITED_ENV.into(), SERVING_ENV.into()],
            catch_all: true,
            ..provider("openai", ProviderKind::OpenAi, &c.openai_base_url, &["gpt-4o-mini"])
        }];
    })
    .await
    else {
        return;
    };
    let key = app.create_key("ada@example.com").await;
    let calls_with_limited =
        || app.mock.upstream.seen().iter().filter(|s| s.authorization == Some(format!("Bearer {limited}"))).count();
    let chat = || async {
        let response = app.chat(&key, chat_body(false)).send().await.expect("send");
        let status = response.status().as_u16();
        response.bytes().await.expect("body");
        status
    };
    // The first two calls go to each key once: the limited one answers 429 and is retried on
    // the other at once.
    assert_eq!((chat().await, chat().await), (200, 200));
    assert_eq!(calls_with_limited(), 1);
    let rested_from = std::time::Instant::now();
    while rested_from.elapsed() < Duration::from_millis(1500) {
        assert_eq!(chat().await, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(calls_with_limited(), 1, "no call while it rests");
    tokio::time::sleep(Duration::from_millis(2300).saturating_sub(rested_from.elapsed())).await;
    for _ in 0..4 {
        assert_eq!(chat().await, 200, "the other key answers what the limited one cannot");
    }
    assert_eq!(calls_with_limited(), 2, "called again once its rest was over, then resting again");
}

/// A provider's own `first_byte_timeout_ms` ends its call early enough for the fallback to
/// answer within the request's deadline; its `idle_timeout_ms` cuts a stream that goes quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_own_timeouts_bound_its_calls_and_streams() {
    // Every answer of this upstream starts after 3 s (the global first-byte timeout is 120 s).
    let slow =
        crate::support::spawn_mock_with(omi::mock_upstream::MockConfig { latency_ms: 3_000, ..Default::default() })
            .await;
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        let mock = c.openai_base_url.clone();
        c.providers = vec![
            ProviderConfig {
                first_byte_timeout_ms: Some(200),
                ..provider("slow", ProviderKind::OpenAi, &slow.url, &["gpt-4o-mini"])
            },
            ProviderConfig {
                idle_timeout_ms: Some(200),
                ..provider("backup", ProviderKind::OpenAi, &mock, &["gpt-4o"])
            },
        ];
        c.fallbacks = [("gpt-4o-mini".to_string(), vec!["backup/gpt-4o".to_string()])].into();
    })
    .await
    else {
        return;
    };
    let key = app.create_key("ada@example.com").await;
    let response = app.chat(&key, chat_body(false)).send().await.expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-omi-upstream").as_deref(), Some("backup/gpt-4o"), "the slow call was given up");
    assert_eq!(header(&response, "x-omi-attempts").as_deref(), Some("2"));
    assert_eq!(slow.upstream.seen().len(), 1);

    // The backup's stream pauses 1 s between events: past its 200 ms idle timeout it is cut.
    let mut quiet = chat_body(true);
    quiet["model"] = json!("backup/gpt-4o");
    quiet["mock"] = json!({"chunks": 3, "chunk_delay_ms": 1000});
    let response = app.chat(&key, quiet).send().await.expect("send");
    assert_eq!(response.status(), 200);
    let body = response.text().await;
    assert!(body.as_ref().map_or(true, |text| !text.contains("[DONE]")), "cut before its end: {body:?}");
}

/// OpenRouter's `"models": [...]` in the body names the request's own fallbacks, in place of
/// `[fallbacks]`: those the plan does not include are skipped, the list never goes upstream,
/// and a malformed list is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requests_own_models_list_is_its_fallbacks_within_the_plan() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        with_fallbacks(c, REFUSING_URL);
        let models = vec!["gpt-4o-mini".to_string(), "anthropic/*".to_string(), "backup/gpt-4.1".to_string()];
        let models = AllowedModels::try_from(models).expect("valid patterns");
        c.plans = vec![PlanConfig { name: "pro".into(), models: Some(models), ..PlanConfig::default() }];
    })
    .await
    else {
        return;
    };
    let key = app.create_key("ada@example.com").await;
    let mut body = chat_body(false);
    // The configured fallback (backup/gpt-4o) is replaced; backup/gpt-4o is outside the plan
    // anyway, and the requested model is not tried twice.
    body["models"] = json!(["gpt-4o-mini", "backup/gpt-4o", "backup/gpt-4.1", "anthropic/claude-haiku-4-5"]);
    let response = app.chat(&key, body).send().await.expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-omi-upstream").as_deref(), Some("backup/gpt-4.1"));
    assert_eq!(header(&response, "x-omi-attempts").as_deref(), Some("2"), "the refusing primary, then gpt-4.1");
    let seen = app.mock.upstream.seen();
    assert_eq!(seen.len(), 1, "backup/gpt-4o (outside the plan) was never called");
    assert_eq!(seen[0].body["model"], "gpt-4.1");
    assert!(seen[0].body.get("models").is_none(), "the list stays here: {}", seen[0].body);

    for models in [json!("gpt-4o"), json!([1]), json!([""]), json!(vec!["gpt-4o"; 9])] {
        let mut body = chat_body(false);
        body["models"] = models.clone();
        let response = app.chat(&key, body).send().await.expect("send");
        assert_eq!(response.status(), 400, "{models}");
        let error: Value = response.json().await.expect("json");
        assert!(error["error"]["message"].as_str().is_some_and(|m| m.contains("`models`")), "{error}");
    }
    assert_eq!(app.mock.upstream.seen().len(), 1, "nothing else went upstream");
}

/// Two instances on one PostgreSQL database, the same provider refusing both: each keeps its
/// own circuit (A's opening does not spare B a call: B pays the refusal until its own failures
/// open its circuit), and every request, whichever instance served it, is booked once, with the
/// answering provider and model and its own attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_keep_their_own_circuits_and_book_each_request_once() {
    const CIRCUIT_FAILURES: u32 = 2;
    let refusing = |c: &mut Config| {
        with_fallbacks(c, REFUSING_URL);
        c.circuit_failures = CIRCUIT_FAILURES;
    };
    let Some(a) = TestApp::spawn_with(Backend::Postgres, refusing).await else { return };
    let mut config = test_config(&a.db, &a.mock);
    refusing(&mut config);
    let b = start_server(config).await;
    let key = a.create_key("ada@example.com").await;
    let send = |addr: std::net::SocketAddr| {
        let key = &key;
        let http = &a.http;
        async move {
            let response = http
                .post(format!("http://{addr}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&chat_body(false))
                .send()
                .await
                .expect("send");
            assert_eq!(response.status(), 200);
            assert_eq!(header(&response, "x-omi-upstream").as_deref(), Some("backup/gpt-4o"));
            let seen = (
                header(&response, omi::web::request_id::HEADER.as_str()).expect("request id"),
                header(&response, "x-omi-attempts").expect("attempts").parse::<i32>().expect("a number"),
            );
            response.bytes().await.expect("body");
            seen
        }
    };

    // A's failures open A's circuit; B then still calls the refusing provider until its own
    // failures open B's.
    let mut expected = Vec::new();
    for (instance, attempts) in [(a.addr, [2, 2, 1]), (b.addr, [2, 2, 1])] {
        for (request, want) in attempts.into_iter().enumerate() {
            let (request_id, attempts) = send(instance).await;
            assert_eq!(attempts, want, "request {request} on {instance}");
            expected.push((request_id, attempts));
        }
    }
    let (request_id, attempts) = send(a.addr).await;
    assert_eq!(attempts, 1, "A's circuit is still open");
    expected.push((request_id, attempts));

    let booked = eventually(Duration::from_secs(10), || async { records(&a).await.len() >= expected.len() }).await;
    assert!(booked.is_some(), "both instances' requests are on the books");
    let on_books = records(&a).await;
    assert_eq!(on_books.len(), expected.len(), "each request booked once: {on_books:?}");
    let gpt_4o = a.state().prices.get("gpt-4o").expect("gpt-4o is priced");
    for (request_id, attempts) in expected {
        let record = on_books.iter().find(|r| *r.request_id == *request_id).expect("the request is booked");
        assert_eq!(
            (record.provider.as_deref(), record.model.as_deref(), record.attempts, record.status),
            (Some("backup"), Some("gpt-4o"), attempts, 200),
            "{request_id}"
        );
        let usage = omi::events::TokenUsage {
            prompt_tokens: record.prompt_tokens as u64,
            cached_tokens: record.cached_tokens as u64,
            cache_write_tokens: record.cache_write_tokens as u64,
            completion_tokens: record.completion_tokens as u64,
        };
        assert_eq!(record.cost_nano, Some(gpt_4o.cost(&usage) as i64), "billed at the answering model's price");
    }
    b.shutdown().await;
}
