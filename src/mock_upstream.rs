//! A mock OpenAI-compatible upstream for tests, demos and benchmarks (`mock-upstream`
//! binary). Each request may steer it with a `"mock"` object in its body:
//! `{"latency_ms", "status", "error_message", "chunks", "chunk_delay_ms", "cut_after",
//! "prompt_tokens", "completion_tokens", "content", "usage_delay_ms", "pretty", "body_bytes", "no_usage"}`;
//! server-wide defaults come from [`MockConfig`]. `pretty` writes each streamed event as
//! pretty-printed JSON over several `data:` lines with CRLF line ends (as some Python servers
//! do); `usage_delay_ms` pauses before the usage chunk; `body_bytes` pads a non-streamed
//! answer's content to about that many bytes; `no_usage` leaves usage out of a non-streamed answer.
//! Usage is deterministic: prompt tokens = message characters / 4 (rounded up) unless
//! given, completion tokens = number of chunks.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug, Default)]
pub struct MockConfig {
    pub latency_ms: u64,
    pub chunk_delay_ms: u64,
    pub chunks: usize,
}

/// What the mock saw of one request (for tests asserting what the gateway forwarded).
#[derive(Clone, Debug)]
pub struct Seen {
    pub authorization: Option<String>,
    pub body: Value,
}

#[derive(Clone, Default)]
pub struct MockUpstream {
    config: MockConfig,
    seen: Arc<Mutex<Vec<Seen>>>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
struct Steering {
    latency_ms: Option<u64>,
    status: Option<u16>,
    error_message: Option<String>,
    chunks: Option<usize>,
    chunk_delay_ms: Option<u64>,
    cut_after: Option<usize>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    content: Option<String>,
    usage_delay_ms: Option<u64>,
    pretty: bool,
    body_bytes: Option<usize>,
    no_usage: bool,
}

impl MockUpstream {
    pub fn new(config: MockConfig) -> MockUpstream {
        MockUpstream { config, seen: Arc::default() }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .with_state(self.clone())
    }

    /// Requests seen so far (the last 1,000).
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn remember(&self, headers: &HeaderMap, body: &Value) {
        if let Ok(mut seen) = self.seen.lock() {
            if seen.len() >= 1000 {
                seen.remove(0);
            }
            let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
            seen.push(Seen { authorization, body: body.clone() });
        }
    }
}

async fn models(headers: HeaderMap) -> Response {
    if headers.get(header::AUTHORIZATION).is_none() {
        return error(StatusCode::UNAUTHORIZED, "missing key");
    }
    Json(json!({"object": "list", "data": [
        {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"},
        {"id": "gpt-4o", "object": "model", "created": 1715367049, "owned_by": "system"}
    ]}))
    .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}})))
        .into_response()
}

fn prompt_tokens_of(body: &Value) -> u64 {
    let chars: usize = body["messages"]
        .as_array()
        .map(|messages| messages.iter().filter_map(|m| m["content"].as_str()).map(|c| c.chars().count()).sum())
        .unwrap_or(0);
    (chars as u64).div_ceil(4).max(1)
}

async fn chat(State(mock): State<MockUpstream>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "body is not JSON");
    };
    mock.remember(&headers, &body);
    if headers.get(header::AUTHORIZATION).is_none() {
        return error(StatusCode::UNAUTHORIZED, "You didn't provide an API key.");
    }
    let steer: Steering = body.get("mock").cloned().and_then(|m| serde_json::from_value(m).ok()).unwrap_or_default();
    let latency = steer.latency_ms.unwrap_or(mock.config.latency_ms);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if let Some(status) = steer.status.and_then(|s| StatusCode::from_u16(s).ok()).filter(|s| !s.is_success()) {
        return error(status, steer.error_message.as_deref().unwrap_or("mock failure as requested"));
    }
    let model = body["model"].as_str().unwrap_or("gpt-4o-mini").to_string();
    let chunks = steer.chunks.unwrap_or(if mock.config.chunks == 0 { 3 } else { mock.config.chunks }).max(1);
    let mut content = steer.content.clone().unwrap_or_else(|| "Hello from the mock".into());
    if let Some(bytes) = steer.body_bytes {
        content = content.repeat(bytes / content.len().max(1) + 1);
    }
    let prompt_tokens = steer.prompt_tokens.unwrap_or_else(|| prompt_tokens_of(&body));
    let completion_tokens = steer.completion_tokens.unwrap_or(chunks as u64);
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens.saturating_add(completion_tokens),
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0}});

    if body["stream"].as_bool() != Some(true) {
        let mut answer = json!({
            "id": "chatcmpl-mock", "object": "chat.completion", "created": 1726012687, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": null},
                         "logprobs": null, "finish_reason": "stop"}],
            "usage": usage, "system_fingerprint": "fp_mock"
        });
        if steer.no_usage
            && let Some(answer) = answer.as_object_mut()
        {
            answer.remove("usage");
        }
        return Json(answer).into_response();
    }

    let include_usage = body["stream_options"]["include_usage"].as_bool() == Some(true);
    let delay = Duration::from_millis(steer.chunk_delay_ms.unwrap_or(mock.config.chunk_delay_ms));
    let pieces = split_content(&content, chunks);
    let mut events: Vec<String> = Vec::with_capacity(chunks + 4);
    let event = |value: Value| {
        if steer.pretty {
            let pretty = serde_json::to_string_pretty(&value).unwrap_or_default();
            pretty.lines().map(|line| format!("data: {line}\r\n")).collect::<String>() + "\r\n"
        } else {
            format!("data: {value}\n\n")
        }
    };
    let chunk = |delta: Value, finish: Value| {
        event(json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1726012687, "model": model,
                     "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}], "usage": null}))
    };
    events.push(chunk(json!({"role": "assistant", "content": ""}), Value::Null));
    for piece in pieces {
        events.push(chunk(json!({"content": piece}), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    let usage_at = events.len();
    if include_usage {
        events.push(event(
            json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1726012687, "model": model, "choices": [], "usage": usage}),
        ));
    }
    events.push(if steer.pretty { "data: [DONE]\r\n\r\n".into() } else { "data: [DONE]\n\n".into() });
    if let Some(cut) = steer.cut_after {
        events.truncate(cut);
    }
    let usage_delay = Duration::from_millis(steer.usage_delay_ms.unwrap_or(0));
    let stream =
        futures_util::stream::unfold((events.into_iter().enumerate(), true), move |(mut rest, first)| async move {
            let (index, next) = rest.next()?;
            if !first && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if index == usage_at && include_usage && !usage_delay.is_zero() {
                tokio::time::sleep(usage_delay).await;
            }
            Some((Ok::<_, std::io::Error>(Bytes::from(next)), (rest, false)))
        });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "stream"))
}

/// Splits `content` into `n` non-empty pieces on character boundaries (words when possible).
fn split_content(content: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = content.chars().collect();
    if chars.is_empty() {
        return vec![String::new(); n];
    }
    let n = n.min(chars.len());
    let size = chars.len().div_ceil(n);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}
