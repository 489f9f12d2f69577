//! Streams and upstream answers as billed (any JSON layout and SSE line end, clients that
//! leave early), the bounds on what an upstream may send, and the per-IP connection cap.

use crate::support::{Backend, TestApp, chat_body, next_request_event};
use futures_util::StreamExt;
use omi::events::RequestEvent;
use secrecy::SecretString;
use serde_json::{Value, json};
use std::time::Duration;

fn tokens(event: &RequestEvent) -> Option<(u64, u64)> {
    event.usage.map(|u| (u.prompt_tokens, u.completion_tokens))
}

/// Issue 17 item 1: `"usage": {` pretty-printed over several CRLF `data:` lines (Python
/// servers) is billed exactly, and the usage chunk the client did not ask for never reaches it.
#[tokio::test]
async fn a_pretty_printed_crlf_stream_is_billed_exactly_and_its_usage_chunk_stripped() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else { return };
    let mut events = app.state().events.subscribe("test", 64);
    let key = app.create_key("ada@example.com").await;
    let mut body = chat_body(true);
    body["mock"] = json!({"pretty": true, "prompt_tokens": 1_000_000, "completion_tokens": 42});

    let text = app.chat(&key, body.clone()).send().await.expect("send").text().await.expect("text");
    assert!(text.contains("data:   \"choices\": [\r\n"), "the mock wrote pretty JSON: {text}");
    assert!(text.ends_with("data: [DONE]\r\n\r\n"), "{text}");
    assert!(!text.contains("prompt_tokens"), "the usage chunk the client did not ask for is stripped: {text}");
    let event = next_request_event(&mut events).await;
    assert!(!event.usage_estimated && !event.aborted);
    assert_eq!(tokens(&event), Some((1_000_000, 42)));

    body["stream_options"] = json!({"include_usage": true});
    let text = app.chat(&key, body).send().await.expect("send").text().await.expect("text");
    assert!(text.contains("\"prompt_tokens\": 1000000"), "asked for usage, gets it as upstream wrote it: {text}");
    assert_eq!(tokens(&next_request_event(&mut events).await), Some((1_000_000, 42)));
}

/// Issue 17 item 3: the client hangs up right after the last content chunk; the upstream's
/// usage comes later and is what gets booked, not an estimate.
#[tokio::test]
async fn a_client_that_hangs_up_after_the_content_is_billed_the_upstreams_usage() {
    let Some(mut app) = TestApp::spawn(Backend::Sqlite).await else { return };
    let mut events = app.state().events.subscribe("test", 64);
    let key = app.create_key("ada@example.com").await;
    let mut body = chat_body(true);
    body["mock"] = json!({"chunks": 3, "usage_delay_ms": 600, "prompt_tokens": 1_000_000, "completion_tokens": 3});
    let response = app.chat(&key, body).send().await.expect("send");
    let mut stream = response.bytes_stream();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("\"finish_reason\":\"stop\"") {
        seen.extend_from_slice(&stream.next().await.expect("more").expect("bytes"));
    }
    drop(stream);
    let event = next_request_event(&mut events).await;
    assert!(event.aborted, "the client left");
    assert!(!event.usage_estimated, "the upstream's own usage, read after the client left");
    assert_eq!(tokens(&event), Some((1_000_000, 3)));
    assert!(event.total >= Duration::from_millis(600), "booked once the usage came: {:?}", event.total);
    app.stop().await;
}

/// A stream cut before its usage is estimated from what was sent upstream (the operator's
/// system prompt included) and the answer already relayed, and marked as an estimate.
#[tokio::test]
async fn a_stream_that_never_reports_usage_is_estimated_with_the_system_prompt_and_the_answer() {
    let system_prompt = "You are the house assistant. ".repeat(200);
    let Some(app) =
        TestApp::spawn_with(Backend::Sqlite, |c| c.system_prompt = Some(SecretString::from(system_prompt.clone())))
            .await
    else {
        return;
    };
    let mut events = app.state().events.subscribe("test", 64);
    let key = app.create_key("ada@example.com").await;
    let mut body = chat_body(true);
    // The role chunk and two content pieces of 40 characters, then the upstream hangs up.
    body["mock"] = json!({"chunks": 2, "content": "x".repeat(80), "cut_after": 3});
    let text = app.chat(&key, body).send().await.expect("send").text().await.expect("text");
    assert_eq!(text.matches("xxxxxxxxxx").count(), 8, "{text}");
    let event = next_request_event(&mut events).await;
    assert!(event.usage_estimated && event.aborted);
    let (prompt, completion) = tokens(&event).expect("estimated usage");
    assert!(prompt > system_prompt.len() as u64 / 4, "the system prompt is counted: {prompt}");
    assert_eq!(completion, 20, "80 characters relayed, about 4 a token");
}

/// Issue 17 item 15: a non-streamed upstream answer is read within `max_upstream_body_bytes`;
/// over it the customer gets a 502 and the gateway buffers no more.
#[tokio::test]
async fn a_non_streamed_answer_over_the_bound_is_a_502() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| c.max_upstream_body_bytes = 8 * 1024).await else {
        return;
    };
    let key = app.create_key("ada@example.com").await;
    let mut body = chat_body(false);
    body["mock"] = json!({"body_bytes": 4 * 1024});
    assert_eq!(app.chat(&key, body.clone()).send().await.expect("send").status(), 200, "under the bound");
    body["mock"] = json!({"body_bytes": 64 * 1024});
    let response = app.chat(&key, body).send().await.expect("send");
    assert_eq!(response.status(), 502);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["code"], "upstream_error");
}

/// A non-streamed answer without usage is still booked: estimated, and marked so.
#[tokio::test]
async fn a_non_streamed_answer_without_usage_is_booked_as_an_estimate() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else { return };
    let mut events = app.state().events.subscribe("test", 64);
    let key = app.create_key("ada@example.com").await;
    let mut body = chat_body(false);
    body["mock"] = json!({"no_usage": true, "content": "y".repeat(40)});
    assert_eq!(app.chat(&key, body).send().await.expect("send").status(), 200);
    let event = next_request_event(&mut events).await;
    assert!(event.usage_estimated);
    let (prompt, completion) = tokens(&event).expect("estimated usage");
    assert!(prompt > 0);
    assert_eq!(completion, 10);
}

/// Issue 17 item 15: one client IP holds at most `max_connections_per_ip` connections; more
/// are closed at once and counted.
#[tokio::test]
async fn connections_over_the_per_ip_cap_are_closed_and_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| c.max_connections_per_ip = 2).await else { return };
    let held = [
        tokio::net::TcpStream::connect(app.addr).await.expect("one"),
        tokio::net::TcpStream::connect(app.addr).await.expect("two"),
    ];
    let mut third = tokio::net::TcpStream::connect(app.addr).await.expect("the kernel accepts");
    let _ = third.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf)).await.expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "closed unanswered: {read:?}");
    let metrics = omi::telemetry::metrics_handle().render();
    assert!(metrics.contains("omi_firewall_rejections_total{reason=\"connections_per_ip\"}"), "{metrics}");
    drop(held);
    let served = crate::support::eventually(Duration::from_secs(5), || async {
        app.http.get(format!("{}/healthz", app.base)).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(served.is_some(), "closed connections give their slots back");
}
