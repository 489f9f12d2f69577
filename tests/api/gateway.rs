//! The customer-facing HTTP surface through a real socket.

use crate::on_both_backends;
use crate::support::{Backend, HOUSE_KEY, TestApp, chat_body, eventually, next_request_event};
use futures_util::StreamExt;
use omi::domain::key::KeyStatus;
use serde_json::{Value, json};
use std::time::Duration;

on_both_backends!(chat_round_trip_and_events, streaming_relays_and_books_usage);

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

async fn chat_round_trip_and_events(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let mut events = app.state().events.subscribe("test", 64);
    let key = app.create_key("ada@example.com").await;

    let response = app.chat(&key, chat_body(false)).header("x-request-id", "client-req-1").send().await.expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "client-req-1");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from the mock");

    let seen = app.mock.upstream.seen();
    assert_eq!(seen.last().and_then(|s| s.authorization.clone()), Some(format!("Bearer {HOUSE_KEY}")));

    let event = next_request_event(&mut events).await;
    assert_eq!(event.request_id.as_ref(), "client-req-1");
    assert_eq!(event.status, 200);
    assert_eq!(event.model.as_deref(), Some("gpt-4o-mini"));
    assert!(!event.byok && !event.streamed && !event.aborted);
    let usage = event.usage.expect("usage");
    // "Say hello in three words" is 24 characters: the mock bills ceil(24/4) = 6 prompt tokens.
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (6, 3));
    assert!(event.upstream.is_some() && event.total >= event.upstream.unwrap_or_default());

    // BYOK: the customer's key goes upstream instead of the house key, and is metered as such.
    let byok = "sk-customer-own-key-42";
    let response = app.chat(&key, chat_body(false)).header("x-provider-key", byok).send().await.expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(app.mock.upstream.seen().last().and_then(|s| s.authorization.clone()), Some(format!("Bearer {byok}")));
    let event = next_request_event(&mut events).await;
    assert!(event.byok);
    assert!(!format!("{event:?}").contains(byok), "the BYOK key is never in an event");

    // Models list what is routable.
    let models: Value = app
        .http
        .get(format!("{}/v1/models", app.base))
        .bearer_auth(&key)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(models["object"], "list");
    assert!(models["data"].as_array().expect("data").iter().any(|m| m["id"] == "gpt-4o-mini"));
}

async fn streaming_relays_and_books_usage(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let mut events = app.state().events.subscribe("test", 64);
    let key = app.create_key("ada@example.com").await;

    let response = app.chat(&key, chat_body(true)).send().await.expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.expect("text");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(!text.contains("\"usage\":{"), "the usage chunk the client did not ask for is stripped: {text}");
    let forwarded = app.mock.upstream.seen().last().map(|s| s.body.clone()).expect("seen");
    assert_eq!(forwarded["stream_options"]["include_usage"], true, "usage is always asked of upstream");
    let event = next_request_event(&mut events).await;
    assert!(event.streamed && !event.aborted && !event.usage_estimated);
    assert_eq!(event.usage.map(|u| (u.prompt_tokens, u.completion_tokens)), Some((6, 3)));

    let mut asked = chat_body(true);
    asked["stream_options"] = json!({"include_usage": true});
    let text = app.chat(&key, asked).send().await.expect("send").text().await.expect("text");
    assert!(text.contains("\"choices\":[],") && text.contains("\"usage\":{"), "asked for usage, gets it: {text}");
    next_request_event(&mut events).await;
}

#[tokio::test]
async fn chunks_arrive_as_they_are_produced_and_disconnects_cancel() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else { return };
    let mut events = app.state().events.subscribe("test", 64);
    let key = app.create_key("ada@example.com").await;
    let mut body = chat_body(true);
    body["mock"] = json!({"chunks": 6, "chunk_delay_ms": 300});
    let started = std::time::Instant::now();
    let response = app.chat(&key, body).send().await.expect("send");
    let mut stream = response.bytes_stream();
    let first = stream.next().await.expect("first chunk").expect("bytes");
    let first_at = started.elapsed();
    assert!(!first.is_empty());
    assert!(first_at < Duration::from_millis(900), "first chunk after {first_at:?}: streams are not buffered");
    drop(stream);
    let event = next_request_event(&mut events).await;
    assert!(event.aborted, "a client that leaves is booked as aborted");
    // The upstream is read on (bounded) for its usage, which comes last.
    assert!(!event.usage_estimated, "the upstream's own usage is booked");
    assert_eq!(event.usage.map(|u| u.completion_tokens), Some(6));
    assert!(event.total < Duration::from_secs(4), "the upstream call ended once its usage came");
}

#[tokio::test]
async fn errors_use_openai_shape_and_status_codes() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.max_body_bytes = 4096;
        c.upstream_first_byte_timeout_ms = 400;
        // Its failing cases are not to open the mock's circuit.
        c.circuit_failures = 0;
    })
    .await
    else {
        return;
    };
    let key = app.create_key("ada@example.com").await;
    let url = format!("{}/v1/chat/completions", app.base);
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (app.http.post(&url).json(&chat_body(false)), 401, "invalid_api_key"),
        (app.http.post(&url).bearer_auth("omi_short").json(&chat_body(false)), 401, "invalid_api_key"),
        (
            app.http.post(&url).bearer_auth(omi::domain::key::ApiKey::generate().expect("key").expose()).json(&chat_body(false)),
            401,
            "invalid_api_key",
        ),
        (app.http.post(&url).bearer_auth(&key).body("{not json"), 400, "invalid_request"),
        (app.chat(&key, json!({"messages": [{"role": "user", "content": "x"}]})), 400, "invalid_request"),
        (app.chat(&key, json!({"model": "gpt-4o-mini", "messages": []})), 400, "invalid_request"),
        (app.chat(&key, json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x".repeat(5000)}]})), 413, "request_too_large"),
        (app.chat(&key, chat_body(false)).header("x-provider-key", "bad key with spaces"), 400, "invalid_request"),
        (app.chat(&key, json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "mock": {"status": 500}})), 502, "upstream_error"),
        (app.chat(&key, json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "mock": {"status": 503}})), 502, "upstream_error"),
        (app.chat(&key, json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "mock": {"status": 400}})), 400, "invalid_request"),
        (app.chat(&key, json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "mock": {"latency_ms": 1500}})), 504, "upstream_timeout"),
        // Last: a 429 rests the only house key (a request right after is refused without a call).
        (app.chat(&key, json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "mock": {"status": 429}})), 429, "rate_limited"),
    ];
    for (i, (request, status, code)) in cases.into_iter().enumerate() {
        let response = request.send().await.expect("send");
        assert_eq!(response.status().as_u16(), status, "case {i}");
        assert!(response.headers().contains_key("x-request-id"), "case {i}");
        let body: Value = response.json().await.expect("json error body");
        assert_eq!(error_code(&body), code, "case {i}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "case {i}");
        assert!(body["error"]["type"].is_string(), "case {i}");
        let text = body.to_string();
        assert!(!text.contains(HOUSE_KEY) && !text.contains("127.0.0.1"), "case {i} leaks: {text}");
    }

    // Suspended and revoked keys.
    let store = &app.state().store;
    let suspended = app.create_key("sus@example.com").await;
    let id = store.resolve_key(&suspended[..12]).await.expect("resolve").id;
    store.set_key_status(id, KeyStatus::Suspended).await.expect("suspend");
    app.state().verifier.sync_changes().await.expect("sync");
    let response = app.chat(&suspended, chat_body(false)).send().await.expect("send");
    assert_eq!(response.status(), 403);
    assert_eq!(error_code(&response.json().await.expect("json")), "key_suspended");
    store.set_key_status(id, KeyStatus::Revoked).await.expect("revoke");
    app.state().verifier.sync_changes().await.expect("sync");
    let response = app.chat(&suspended, chat_body(false)).send().await.expect("send");
    assert_eq!(response.status(), 403);
    assert_eq!(error_code(&response.json().await.expect("json")), "key_revoked");
}

#[tokio::test]
async fn unreachable_upstream_is_a_sanitized_502() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        // A closed port on loopback: connection refused.
        c.openai_base_url = "http://127.0.0.1:9/v1".into();
    })
    .await
    else {
        return;
    };
    let key = app.create_key("ada@example.com").await;
    let response = app.chat(&key, chat_body(false)).send().await.expect("send");
    assert_eq!(response.status(), 502);
    let text = response.text().await.expect("text");
    assert!(text.contains("upstream_error") && !text.contains("127.0.0.1") && !text.contains(":9"), "{text}");
}

#[tokio::test]
async fn health_readiness_metrics_and_admin_guard() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else { return };
    let get = |path: &str| app.http.get(format!("{}{path}", app.base));
    assert_eq!(get("/healthz").send().await.expect("send").status(), 200);
    assert_eq!(get("/readyz").send().await.expect("send").status(), 200);
    assert_eq!(get("/metrics").send().await.expect("send").status(), 401, "metrics need admin when configured");
    let key = app.create_key("ada@example.com").await;
    app.chat(&key, chat_body(false)).send().await.expect("send");
    let metrics = app.admin(reqwest::Method::GET, "/metrics").send().await.expect("send").text().await.expect("text");
    assert!(metrics.contains("omi_gateway_overhead_seconds"), "{metrics}");
    assert!(metrics.contains("omi_requests_total"));
    assert_eq!(get("/admin/api/keys").send().await.expect("send").status(), 401);
    let wrong = get("/admin/api/keys").bearer_auth("wrong").send().await.expect("send");
    assert_eq!(wrong.status(), 401);
}

#[tokio::test]
async fn readiness_fails_when_the_database_is_gone() {
    let Some(mut app) = TestApp::spawn(Backend::Sqlite).await else { return };
    app.state().store.close().await;
    let response = app.http.get(format!("{}/readyz", app.base)).send().await.expect("send");
    assert_eq!(response.status(), 503);
    app.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_streams() {
    let Some(mut app) = TestApp::spawn(Backend::Sqlite).await else { return };
    let mut events = app.state().events.subscribe("test", 64);
    let key = app.create_key("ada@example.com").await;
    let mut body = chat_body(true);
    body["mock"] = json!({"chunks": 4, "chunk_delay_ms": 200});
    let response = app.chat(&key, body).send().await.expect("send");
    let reader = tokio::spawn(async move { response.text().await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let addr = app.addr;
    app.stop().await;
    let text = reader.await.expect("join").expect("the in-flight stream completes");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let event = next_request_event(&mut events).await;
    assert!(!event.aborted);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer accepting");
}

/// The names of this process's threads that are serving lanes.
fn lane_threads() -> Vec<String> {
    let tasks = std::fs::read_dir("/proc/self/task").expect("a Linux /proc");
    let names = tasks.filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok());
    names.map(|name| name.trim().to_owned()).filter(|name| name.starts_with("omi-lane-")).collect()
}

/// Counts the process's lane threads: nextest runs each test in a process of its own.
#[tokio::test]
async fn one_lane_a_core_serves_and_the_lanes_end_with_their_server() {
    let Some(mut app) = TestApp::spawn(Backend::Sqlite).await else { return };
    let lanes = lane_threads();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let expected = std::env::var("TOKIO_WORKER_THREADS").ok().and_then(|n| n.parse().ok()).unwrap_or(cores);
    assert_eq!(lanes.len(), expected, "one lane a core: {lanes:?}");
    let key = app.create_key("ada@example.com").await;
    for stream in [false, true] {
        let response = app.chat(&key, chat_body(stream)).send().await.expect("send");
        assert_eq!(response.status(), 200);
        assert!(!response.text().await.expect("body").is_empty());
    }
    app.stop().await;
    let ended = eventually(Duration::from_secs(5), || async { lane_threads().is_empty() }).await;
    assert!(ended.is_some(), "lanes left running: {:?}", lane_threads());
}

#[tokio::test]
async fn admin_api_creates_lists_and_revokes_keys() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else { return };
    let created = app
        .admin(reqwest::Method::POST, "/admin/api/keys")
        .json(&json!({"email": "Dana@Example.com", "plan": "pro"}))
        .send()
        .await
        .expect("send");
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.expect("json");
    let key = created["key"].as_str().expect("key shown once").to_string();
    assert_eq!(created["email"], "dana@example.com");
    assert_eq!(app.chat(&key, chat_body(false)).send().await.expect("send").status(), 200);

    let listed: Value =
        app.admin(reqwest::Method::GET, "/admin/api/keys").send().await.expect("send").json().await.expect("json");
    assert!(!listed.to_string().contains(&key), "listings never show secrets");
    assert_eq!(listed["data"][0]["status"], "active");

    let bad =
        app.admin(reqwest::Method::POST, "/admin/api/keys").json(&json!({"email": "nope"})).send().await.expect("send");
    assert_eq!(bad.status(), 400);

    let id = created["id"].as_str().expect("id");
    let revoked = app.admin(reqwest::Method::DELETE, &format!("/admin/api/keys/{id}")).send().await.expect("send");
    assert_eq!(revoked.status(), 200);
    let response = app.chat(&key, chat_body(false)).send().await.expect("send");
    assert_eq!(response.status(), 403, "revoked through the admin API: refused at once on this instance");
    let missing = app.admin(reqwest::Method::DELETE, "/admin/api/keys/omi_nothing").send().await.expect("send");
    assert_eq!(missing.status(), 404);
}
