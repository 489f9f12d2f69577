//! The official `openai` and `anthropic` Python SDKs against OMI, unchanged: pinned in
//! `tests/sdk/requirements.txt` and installed by `scripts/test` into `target/sdk-venv` (or any
//! interpreter named by `OMI_TEST_PYTHON`). Each script in `tests/sdk` drives one API and prints
//! one JSON report; the tests check it, what reached the mock upstream, and the usage booked
//! (through the admin API) to the token.

use crate::support::{Backend, TestApp, eventually, service_missing};
use omi::config::{ProviderConfig, ProviderKind};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// The Claude model the anthropic-kind provider lists.
const CLAUDE: &str = "claude-sonnet-4-5";
/// Where the anthropic provider's house key is read from: a variable cargo and nextest set for
/// every test process, as a test cannot set one (unsafe code is forbidden) and the mock upstream
/// only checks that a key comes.
const ANTHROPIC_KEY_ENV: &str = "CARGO_MANIFEST_DIR";

/// The interpreter, when it imports every one of `modules` (`"openai, anthropic"`); otherwise
/// reported as missing (fatal under CI=true) and `None`.
fn python_with(modules: &str) -> Option<PathBuf> {
    let candidate = std::env::var_os("OMI_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/sdk-venv/bin/python"));
    let import = format!("import {modules}");
    let ok = std::process::Command::new(&candidate).args(["-c", &import]).output().is_ok_and(|o| o.status.success());
    if !ok {
        service_missing(
            &format!("the Python SDKs ({modules})"),
            "run scripts/test, which installs tests/sdk/requirements.txt into target/sdk-venv",
        );
    }
    ok.then_some(candidate)
}

/// Runs `tests/sdk/<script>` with a base URL and a key; its JSON report.
async fn run_script(python: &PathBuf, script: &str, base_url: &str, key: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk").join(script);
    let output = tokio::process::Command::new(python)
        .arg(path)
        .arg(base_url)
        .arg(key)
        // The anthropic SDK would take a key from here over a missing one.
        .env_remove("ANTHROPIC_API_KEY")
        .output()
        .await
        .expect("run python");
    assert!(output.status.success(), "{script} failed: {}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).expect("json report");
    eprintln!("{script} report: {report}");
    report
}

/// A gateway with two providers on the mock upstream: `openai` (the house key, every model no
/// provider lists) and `anthropic` (Anthropic's Messages API, for [`CLAUDE`]).
async fn app_with_anthropic() -> Option<TestApp> {
    TestApp::spawn_with(Backend::Sqlite, |c| {
        let provider = |name: &str, kind: ProviderKind| ProviderConfig {
            name: name.into(),
            kind,
            base_url: c.openai_base_url.clone(),
            api_key_env: None,
            api_key_envs: Vec::new(),
            models: vec![],
            catch_all: false,
            byok: false,
        };
        let openai = ProviderConfig { catch_all: true, ..provider("openai", ProviderKind::OpenAi) };
        let anthropic = ProviderConfig {
            api_key_env: Some(ANTHROPIC_KEY_ENV.into()),
            api_key_envs: Vec::new(),
            models: vec![CLAUDE.into()],
            ..provider("anthropic", ProviderKind::Anthropic)
        };
        c.providers = vec![openai, anthropic];
    })
    .await
}

/// What one booked request must show: route, provider, model, streamed, and tokens as
/// [prompt, cached, completion].
fn booking(route: &str, provider: &str, model: &str, streamed: bool, tokens: [i64; 3]) -> Value {
    json!({"route": route, "provider": provider, "model": model, "streamed": streamed, "tokens": tokens,
           "status": 200, "usage_estimated": false, "aborted": false})
}

/// The usage booked for at least `n` requests, oldest first, as [`booking`] shows it, read
/// through the admin API.
async fn booked(app: &TestApp, n: usize) -> Vec<Value> {
    let page = || async {
        let answer = app.admin(reqwest::Method::GET, "/admin/api/usage?limit=1000").send().await.expect("send");
        assert_eq!(answer.status(), 200, "the admin usage API");
        let page: Value = answer.json().await.expect("json");
        page["data"].as_array().cloned().unwrap_or_default()
    };
    // Polled in the store: the admin API is behind the per-IP rate limit.
    let stored = || async {
        let until = chrono::Utc::now() + chrono::Duration::seconds(1);
        app.state().store.usage_page(None, until, 1000).await.map_or(0, |records| records.len())
    };
    eventually(Duration::from_secs(10), || async { stored().await >= n }).await;
    let mut records = page().await;
    records.reverse();
    records
        .iter()
        .map(|r| {
            json!({"route": r["route"], "provider": r["provider"], "model": r["model"], "streamed": r["streamed"],
                   "tokens": [r["prompt_tokens"], r["cached_tokens"], r["completion_tokens"]],
                   "status": r["status"], "usage_estimated": r["usage_estimated"], "aborted": r["aborted"]})
        })
        .collect()
}

/// Every request the mock upstream saw on `path` went with the anthropic provider's house key,
/// never with the customer's; returns how many there were.
fn sent_with_house_key(app: &TestApp, path: &str, customer_key: &str) -> usize {
    let house_key = std::env::var(ANTHROPIC_KEY_ENV).expect("cargo sets it for every test");
    let seen: Vec<_> = app.mock.upstream.seen().into_iter().filter(|s| s.path == path).collect();
    for request in &seen {
        let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let key = header("x-api-key").or_else(|| header("authorization").map(|a| a.replace("Bearer ", "")));
        assert_eq!(key.as_deref(), Some(house_key.as_str()), "{path}: the house key went upstream");
        assert!(
            request.headers.values().all(|v| !v.to_str().unwrap_or_default().contains(customer_key)),
            "{path}: the customer's key reached the upstream"
        );
        assert!(request.headers.contains_key("anthropic-version"), "{path}: the Messages API requires it");
    }
    seen.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_works_unchanged() {
    let Some(python) = python_with("openai") else { return };
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else { return };
    let key = app.create_key("sdk@example.com").await;
    let report = run_script(&python, "openai_compat.py", &format!("{}/v1", app.base), &key).await;
    assert!(report["models"].as_array().expect("models").iter().any(|m| m == "gpt-4o-mini"));
    assert_eq!(report["content"], "Hello from the mock");
    assert_eq!(report["usage"], json!([6, 3]));
    assert_eq!(report["streamed"], "Hello from the mock");
    assert_eq!(report["usage_chunks"], 1);
    assert_eq!(report["stream_usage"], json!([6, 3]));
    assert_eq!(report["auth_error"], json!([401, "invalid_api_key"]));
}

/// `client.embeddings.create` with a string (the SDK asks for base64 and decodes it) and with a
/// list; prompt tokens = characters / 4 (19 → 5, 4 + 8 → 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_embeds_a_string_and_a_list() {
    let Some(python) = python_with("openai") else { return };
    let Some(app) = app_with_anthropic().await else { return };
    let key = app.create_key("embed@example.com").await;
    let report = run_script(&python, "openai_embeddings.py", &format!("{}/v1", app.base), &key).await;
    let vectors = |indexes: Value, dimensions: Value, norms: Value, tokens: u64| {
        json!({"model": "text-embedding-3-small", "indexes": indexes, "dimensions": dimensions, "norms": norms,
               "usage": [tokens, tokens]})
    };
    assert_eq!(report["string"], vectors(json!([0]), json!([8]), json!([1.0]), 5));
    assert_eq!(report["float_matches_base64"], true);
    assert_eq!(report["list"], vectors(json!([0, 1]), json!([4, 4]), json!([1.0, 1.0]), 3));

    let formats: Vec<Value> = app
        .mock
        .upstream
        .seen()
        .into_iter()
        .filter(|s| s.path == "/v1/embeddings")
        .map(|s| s.body["encoding_format"].clone())
        .collect();
    assert_eq!(formats, [json!("base64"), json!("float"), json!("base64")], "the SDK's encoding went upstream");
    let embedding = |tokens| booking("embeddings", "openai", "text-embedding-3-small", false, [tokens, 0, 0]);
    assert_eq!(booked(&app, 3).await, [embedding(5), embedding(5), embedding(3)]);
}

/// `client.completions.create`, whole and streamed with and without `include_usage`: the
/// usage (24 prompt characters → 6, 3 chunks → 3) is booked exactly either way, and reaches
/// the client only when asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_completes_streamed_and_not() {
    let Some(python) = python_with("openai") else { return };
    let Some(app) = app_with_anthropic().await else { return };
    let key = app.create_key("complete@example.com").await;
    let report = run_script(&python, "openai_completions.py", &format!("{}/v1", app.base), &key).await;
    assert_eq!(report["text"], "Hello from the mock");
    assert_eq!(report["finish_reason"], "stop");
    assert_eq!(report["usage"], json!([6, 3]));
    let streamed = |usages: Value| json!({"text": "Hello from the mock", "finish_reason": "stop", "usages": usages});
    assert_eq!(report["streamed"], streamed(json!([])), "no usage unless asked for");
    assert_eq!(report["streamed_with_usage"], streamed(json!([[6, 3]])));

    let completion = |streamed| booking("completions", "openai", "gpt-3.5-turbo-instruct", streamed, [6, 0, 3]);
    assert_eq!(booked(&app, 3).await, [completion(false), completion(true), completion(true)]);
}

/// `client.responses.create`, whole (`output_text`, usage with cached and reasoning tokens) and
/// streamed (every typed event passed on, deltas, usage from `response.completed`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_responses_streamed_and_not() {
    let Some(python) = python_with("openai") else { return };
    let Some(app) = app_with_anthropic().await else { return };
    let key = app.create_key("respond@example.com").await;
    let report = run_script(&python, "openai_responses.py", &format!("{}/v1", app.base), &key).await;
    assert_eq!(report["output_text"], "Hello from the mock");
    assert_eq!(report["status"], "completed");
    // "Be brief." and the 24-character input: 33 characters → 9; the rest as the mock was steered.
    assert_eq!(report["usage"], json!({"input": 9, "cached": 4, "output": 7, "reasoning": 2, "total": 16}));
    let streamed = &report["streamed"];
    assert_eq!(streamed["deltas"], json!(["Hello f", "rom the", " mock"]));
    assert_eq!(streamed["output_text"], "Hello from the mock");
    assert_eq!(streamed["usage"], json!({"input": 6, "cached": 3, "output": 3, "reasoning": 1, "total": 9}));
    assert_eq!(
        streamed["event_types"],
        json!([
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ])
    );

    assert_eq!(
        booked(&app, 2).await,
        [
            booking("responses", "openai", "gpt-4o-mini", false, [9, 4, 7]),
            booking("responses", "openai", "gpt-4o-mini", true, [6, 3, 3])
        ]
    );
}

/// `client.messages.create` and `client.messages.stream` on `/v1/messages` with the customer's
/// key as the SDK sends it (a bearer) and as `x-api-key`: text, stop reasons, cache usage, a
/// streamed tool call and a tool-use round trip; booked with every cached token in the prompt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_sdk_messages_streamed_and_not_with_tools() {
    let Some(python) = python_with("anthropic") else { return };
    let Some(app) = app_with_anthropic().await else { return };
    let key = app.create_key("claude@example.com").await;
    let report = run_script(&python, "anthropic_messages.py", &app.base, &key).await;
    let usage = |input: u64, cache_creation: u64, cache_read: u64| json!({"input": input, "output": 3, "cache_creation": cache_creation, "cache_read": cache_read});
    assert_eq!(report["text"], "Hello from the mock");
    assert_eq!(report["stop_reason"], "end_turn");
    // "Be brief." and the 24-character question: 33 characters → 9.
    assert_eq!(report["usage"], usage(9, 7, 5));
    assert_eq!(
        report["streamed"],
        json!({"pieces": ["Hello f", "rom the", " mock"], "text": "Hello from the mock", "stop_reason": "end_turn",
               "usage": usage(6, 0, 6)})
    );
    let tool_call = &report["streamed_tool_call"];
    assert_eq!((&tool_call["tool"], &tool_call["stop_reason"]), (&json!("get_weather"), &json!("tool_use")));
    assert_eq!(tool_call["input"], json!({"city": "Paris"}));
    assert_eq!(
        tool_call["event_types"],
        json!([
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ])
    );
    let round_trip = &report["tool_round_trip"];
    assert_eq!(
        round_trip["call"],
        json!({"stop_reason": "tool_use", "tool": "get_weather", "input": {"city": "Paris"}, "usage": usage(8, 0, 0)})
    );
    // The question (29 characters) and the tool's result (17): 46 → 12.
    assert_eq!(
        round_trip["answer"],
        json!({"stop_reason": "end_turn", "text": "It is 18 degrees and sunny in Paris.", "usage": usage(12, 0, 0)})
    );
    assert_eq!(report["x_api_key_text"], "Hello from the mock");
    assert_eq!(report["auth_error"], 401);

    assert_eq!(sent_with_house_key(&app, "/v1/messages", &key), 6);
    let message = |streamed, tokens| booking("messages", "anthropic", CLAUDE, streamed, tokens);
    assert_eq!(
        booked(&app, 6).await,
        [
            message(false, [9 + 7 + 5, 5, 3]),
            message(true, [6 + 6, 6, 3]),
            message(true, [6, 0, 3]),
            message(false, [8, 0, 3]),
            message(false, [12, 0, 3]),
            message(false, [6, 0, 3])
        ]
    );
}

/// `client.chat.completions.create` on a Claude model: translated to Anthropic's Messages API
/// upstream and back, whole and streamed with and without `include_usage`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_chats_with_a_claude_model_through_the_messages_api() {
    let Some(python) = python_with("openai") else { return };
    let Some(app) = app_with_anthropic().await else { return };
    let key = app.create_key("translate@example.com").await;
    let report = run_script(&python, "openai_chat_claude.py", &format!("{}/v1", app.base), &key).await;
    assert_eq!(report["content"], "Hello from the mock");
    assert_eq!(report["finish_reason"], "stop");
    assert_eq!(report["model"], CLAUDE);
    // "Be brief." and the 24-character question: 33 characters → 9 ([prompt, cached, completion]).
    assert_eq!(report["usage"], json!([9, 0, 3]));
    let streamed = |usages: Value| json!({"text": "Hello from the mock", "finish_reason": "stop", "usages": usages});
    assert_eq!(report["streamed"], streamed(json!([])), "no usage unless asked for");
    assert_eq!(report["streamed_with_usage"], streamed(json!([[9, 0, 3]])));
    assert_eq!(
        report["streamed_tool_call"],
        json!({"calls": [{"name": "get_weather", "arguments": {}, "has_id": true}], "finish_reason": "tool_calls"}),
        "a tool call streamed through the translation"
    );
    let sent = app.mock.upstream.seen().last().map(|s| s.body.clone()).expect("seen");
    assert_eq!(sent["tool_choice"], json!({"type": "tool", "name": "get_weather"}));
    assert_eq!(sent["tools"][0]["input_schema"]["properties"]["city"]["type"], "string");

    assert_eq!(sent_with_house_key(&app, "/v1/messages", &key), 4);
    assert!(app.mock.upstream.seen().iter().all(|s| s.path != "/v1/chat/completions"), "translated, not forwarded");
    let chat = |streamed| booking("chat", "anthropic", CLAUDE, streamed, [9, 0, 3]);
    let booked = booked(&app, 4).await;
    assert_eq!(booked[..3], [chat(false), chat(true), chat(true)]);
}
