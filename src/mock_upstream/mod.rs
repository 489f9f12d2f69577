//! A mock upstream for tests, demos and benchmarks (`mock-upstream` binary), shaped after the
//! public API references: OpenAI's `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
//! `/v1/responses` and `/v1/models`, and Anthropic's `/v1/messages`.
//!
//! Each request may steer it with a `"mock"` object in its body; every field works on every
//! endpoint where it means something:
//! - `latency_ms`: pause before answering; `status` (+ `error_message`): fail with that status,
//!   in the endpoint's own error shape;
//! - `content`, `chunks`, `body_bytes` (pad the text to about that many bytes): the answer text;
//! - `prompt_tokens`, `completion_tokens`, `cache_read_tokens`, `cache_creation_tokens`,
//!   `reasoning_tokens`: the usage reported; `no_usage`: leave usage out of a non-streamed answer;
//! - `chunk_delay_ms`, `usage_delay_ms` (pause before the event carrying the final usage),
//!   `cut_after` (end the stream after that many events): stream timing;
//! - `pretty`: pretty-printed JSON (streamed events over several `data:` lines with CRLF line
//!   ends, as some Python servers write them);
//! - `tool_call` (Anthropic, with `tools` in the request): answer with a `tool_use` block;
//!   `true` calls the first tool with `{}`, `{"name", "input"}` says which and with what.
//!
//! Server-wide defaults come from [`MockConfig`]. Usage is deterministic: prompt tokens = prompt
//! characters / 4 (rounded up) plus one per token id, unless given; completion tokens = chunks.

mod anthropic;
mod chat;
mod completions;
mod embeddings;
mod responses;
mod sse;

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
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
    /// Keys answered with a fixed failure, whatever the request: a revoked or rate-limited
    /// key of a pool.
    pub failing_keys: Vec<FailingKey>,
}

/// A key the mock refuses: `status` (401, 403, 429...) with `Retry-After` when set.
#[derive(Clone, Debug)]
pub struct FailingKey {
    pub key: String,
    pub status: u16,
    pub retry_after_secs: Option<u64>,
}

/// What the mock saw of one request (for tests asserting what the gateway forwarded).
#[derive(Clone, Debug)]
pub struct Seen {
    /// The request path, e.g. `/v1/embeddings`.
    pub path: String,
    pub authorization: Option<String>,
    pub headers: HeaderMap,
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
    cache_read_tokens: Option<u64>,
    cache_creation_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
    content: Option<String>,
    usage_delay_ms: Option<u64>,
    pretty: bool,
    body_bytes: Option<usize>,
    no_usage: bool,
    tool_call: Option<Value>,
}

/// An endpoint's route: every call is first admitted (remembered, credentials checked, the
/// `mock` steering's latency and failure applied), then `answer` answers it.
fn answered(dialect: Dialect, answer: fn(Call) -> Response) -> MethodRouter<MockUpstream> {
    post(move |State(mock): State<MockUpstream>, uri: OriginalUri, headers: HeaderMap, body: Bytes| async move {
        match mock.admit(dialect, &uri, &headers, &body).await {
            Ok(call) => answer(call),
            Err(refused) => refused,
        }
    })
}

impl MockUpstream {
    pub fn new(config: MockConfig) -> MockUpstream {
        MockUpstream { config, seen: Arc::default() }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/chat/completions", answered(Dialect::OpenAi, chat::chat))
            .route("/v1/completions", answered(Dialect::OpenAi, completions::completions))
            .route("/v1/embeddings", answered(Dialect::OpenAi, embeddings::embeddings))
            .route("/v1/responses", answered(Dialect::OpenAi, responses::responses))
            .route("/v1/messages", answered(Dialect::Anthropic, anthropic::messages))
            .route("/v1/models", get(models))
            .with_state(self.clone())
    }

    /// Requests seen so far (the last 1,000).
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn remember(&self, path: &str, headers: &HeaderMap, body: &Value) {
        if let Ok(mut seen) = self.seen.lock() {
            if seen.len() >= 1000 {
                seen.remove(0);
            }
            let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
            seen.push(Seen { path: path.to_owned(), authorization, headers: headers.clone(), body: body.clone() });
        }
    }

    /// What every endpoint does first: parse and record the body, check the credentials, then
    /// obey the steering's latency and forced failure. `Err` is the answer to send as is.
    async fn admit(
        &self,
        dialect: Dialect,
        uri: &OriginalUri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Call, Response> {
        let Ok(body) = serde_json::from_slice::<Value>(body) else {
            return Err(dialect.error(StatusCode::BAD_REQUEST, "body is not JSON"));
        };
        self.remember(uri.path(), headers, &body);
        if let Some((status, message)) = dialect.missing_credentials(headers) {
            return Err(dialect.error(status, message));
        }
        if let Some(failing) = self.config.failing_keys.iter().find(|f| sent_key(headers) == Some(f.key.as_str())) {
            let status = StatusCode::from_u16(failing.status).unwrap_or(StatusCode::UNAUTHORIZED);
            let mut refused = dialect.error(status, "mock failure for this key");
            if let Some(secs) = failing.retry_after_secs {
                refused.headers_mut().insert(header::RETRY_AFTER, secs.into());
            }
            return Err(refused);
        }
        let steer: Steering =
            body.get("mock").cloned().and_then(|m| serde_json::from_value(m).ok()).unwrap_or_default();
        let latency = steer.latency_ms.unwrap_or(self.config.latency_ms);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        if let Some(status) = steer.status.and_then(|s| StatusCode::from_u16(s).ok()).filter(|s| !s.is_success()) {
            return Err(dialect.error(status, steer.error_message.as_deref().unwrap_or("mock failure as requested")));
        }
        Ok(Call { body, steer, config: self.config.clone() })
    }
}

/// The key a request came with: a bearer token or `x-api-key`.
fn sent_key(headers: &HeaderMap) -> Option<&str> {
    let bearer =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
}

/// Which API's conventions (credentials, error shape) an endpoint follows.
#[derive(Clone, Copy)]
enum Dialect {
    OpenAi,
    Anthropic,
}

impl Dialect {
    /// The status and message to refuse a request without this API's credentials.
    fn missing_credentials(self, headers: &HeaderMap) -> Option<(StatusCode, &'static str)> {
        match self {
            Dialect::OpenAi if headers.get(header::AUTHORIZATION).is_none() => {
                Some((StatusCode::UNAUTHORIZED, "You didn't provide an API key."))
            }
            // Anthropic's SDKs send the key as `x-api-key` or (newer ones) as a bearer token.
            Dialect::Anthropic
                if headers.get("x-api-key").is_none() && headers.get(header::AUTHORIZATION).is_none() =>
            {
                Some((StatusCode::UNAUTHORIZED, "x-api-key header is required"))
            }
            Dialect::Anthropic if headers.get("anthropic-version").is_none() => {
                Some((StatusCode::BAD_REQUEST, "anthropic-version: header is required"))
            }
            _ => None,
        }
    }

    fn error(self, status: StatusCode, message: &str) -> Response {
        match self {
            Dialect::OpenAi => error(status, message),
            Dialect::Anthropic => anthropic::error(status, message),
        }
    }
}

/// One admitted request: its body, its steering, and the server defaults.
struct Call {
    body: Value,
    steer: Steering,
    config: MockConfig,
}

impl Call {
    fn model(&self, default: &str) -> String {
        self.body["model"].as_str().unwrap_or(default).to_owned()
    }

    fn streamed(&self) -> bool {
        self.body["stream"].as_bool() == Some(true)
    }

    /// OpenAI's `stream_options.include_usage`.
    fn include_usage(&self) -> bool {
        self.body["stream_options"]["include_usage"].as_bool() == Some(true)
    }

    fn chunks(&self) -> usize {
        self.steer.chunks.unwrap_or(if self.config.chunks == 0 { 3 } else { self.config.chunks }).max(1)
    }

    /// The answer text: `content` (or a greeting), padded to `body_bytes`.
    fn text(&self) -> String {
        let content = self.steer.content.clone().unwrap_or_else(|| "Hello from the mock".into());
        match self.steer.body_bytes {
            Some(bytes) => content.repeat(bytes / content.len().max(1) + 1),
            None => content,
        }
    }

    /// The answer text in `chunks` pieces.
    fn pieces(&self) -> Vec<String> {
        split_content(&self.text(), self.chunks())
    }

    /// Usage: steered numbers, else counted from the prompt parts of the body named by `prompt_fields`.
    fn usage(&self, prompt_fields: &[&str]) -> Usage {
        let counted = || prompt_tokens_of(prompt_fields.iter().map(|field| &self.body[*field]));
        Usage {
            prompt: self.steer.prompt_tokens.unwrap_or_else(counted),
            completion: self.steer.completion_tokens.unwrap_or(self.chunks() as u64),
            cache_read: self.steer.cache_read_tokens.unwrap_or(0),
            cache_creation: self.steer.cache_creation_tokens.unwrap_or(0),
            reasoning: self.steer.reasoning_tokens.unwrap_or(0),
        }
    }

    /// A non-streamed JSON answer; `no_usage` removes its `usage`, `pretty` pretty-prints it.
    fn json(&self, mut answer: Value) -> Response {
        if self.steer.no_usage
            && let Some(answer) = answer.as_object_mut()
        {
            answer.remove("usage");
        }
        if !self.steer.pretty {
            return Json(answer).into_response();
        }
        let body = serde_json::to_string_pretty(&answer).unwrap_or_default().replace('\n', "\r\n");
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    }

    /// A streamed answer of `events`, the one at `usage_at` delayed by `usage_delay_ms`.
    fn stream(&self, mut events: Vec<String>, usage_at: Option<usize>) -> Response {
        if let Some(cut) = self.steer.cut_after {
            events.truncate(cut);
        }
        sse::respond(sse::Timing {
            events,
            delay: Duration::from_millis(self.steer.chunk_delay_ms.unwrap_or(self.config.chunk_delay_ms)),
            usage_at,
            usage_delay: Duration::from_millis(self.steer.usage_delay_ms.unwrap_or(0)),
        })
    }

    fn sse(&self) -> sse::Writer {
        sse::Writer { pretty: self.steer.pretty }
    }
}

/// Token counts of one answer, before each API names them its way.
#[derive(Clone, Copy)]
struct Usage {
    prompt: u64,
    completion: u64,
    cache_read: u64,
    cache_creation: u64,
    reasoning: u64,
}

impl Usage {
    /// OpenAI's chat and completions `usage`.
    fn openai(&self) -> Value {
        json!({"prompt_tokens": self.prompt, "completion_tokens": self.completion,
            "total_tokens": self.prompt.saturating_add(self.completion),
            "prompt_tokens_details": {"cached_tokens": self.cache_read, "audio_tokens": 0}})
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

/// OpenAI's error shape.
fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}})))
        .into_response()
}

/// Prompt tokens of the given prompt parts: characters / 4 (rounded up) of every text in them
/// (plain strings, and `content`/`text` of messages, items and blocks, nested), plus one per
/// token id (prompts given as token arrays); at least 1.
fn prompt_tokens_of<'a>(parts: impl Iterator<Item = &'a Value>) -> u64 {
    fn walk(value: &Value, chars: &mut u64, tokens: &mut u64) {
        match value {
            Value::String(text) => *chars += text.chars().count() as u64,
            Value::Number(_) => *tokens += 1,
            Value::Array(items) => items.iter().for_each(|item| walk(item, chars, tokens)),
            Value::Object(fields) => {
                ["content", "text"].iter().filter_map(|key| fields.get(*key)).for_each(|v| walk(v, chars, tokens))
            }
            Value::Null | Value::Bool(_) => {}
        }
    }
    let (mut chars, mut tokens) = (0, 0);
    parts.for_each(|part| walk(part, &mut chars, &mut tokens));
    (chars.div_ceil(4) + tokens).max(1)
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

#[cfg(test)]
pub(crate) mod test_support {
    use super::{MockConfig, MockUpstream};

    /// A mock on 127.0.0.1:0; returns it, its `/v1` base URL and a client.
    pub async fn spawn() -> (MockUpstream, String, reqwest::Client) {
        crate::install_crypto_provider();
        let mock = MockUpstream::new(MockConfig::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = mock.router();
        #[allow(clippy::disallowed_methods, reason = "a test's task ends with the test")]
        tokio::spawn(async move { axum::serve(listener, router).await });
        (mock, format!("http://{addr}/v1"), reqwest::Client::new())
    }

    /// POSTs `body` as JSON with a key, as every OpenAI-shaped client does.
    pub async fn post(http: &reqwest::Client, url: &str, body: &serde_json::Value) -> reqwest::Response {
        http.post(url).bearer_auth("k").json(body).send().await.expect("send")
    }

    /// The `data:` payloads of an SSE body, as JSON (`[DONE]` left out), with their `event:` names.
    pub fn events(body: &str) -> Vec<(Option<String>, serde_json::Value)> {
        body.split("\n\n")
            .filter(|block| !block.trim().is_empty())
            .filter_map(|block| {
                let name = block.lines().find_map(|l| l.strip_prefix("event: ")).map(str::to_owned);
                let data: String = block.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                serde_json::from_str(&data).ok().map(|value| (name, value))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_tokens_count_text_in_strings_messages_blocks_and_token_ids() {
        let parts =
            [json!("abcd"), json!([{"role": "user", "content": [{"type": "text", "text": "efgh"}]}]), json!([1, 2, 3])];
        assert_eq!(prompt_tokens_of(parts.iter()), 2 + 3);
        assert_eq!(prompt_tokens_of([json!(null)].iter()), 1, "at least one");
    }

    #[tokio::test]
    async fn every_endpoint_records_its_path_and_headers() {
        let (mock, base, http) = test_support::spawn().await;
        for path in ["/chat/completions", "/completions", "/embeddings", "/responses"] {
            let answer = http
                .post(format!("{base}{path}"))
                .bearer_auth("sk-x")
                .json(&json!({"input": "x", "prompt": "x"}))
                .send()
                .await;
            assert_eq!(answer.expect("send").status(), 200, "{path}");
        }
        let paths: Vec<String> = mock.seen().into_iter().map(|s| s.path).collect();
        assert_eq!(paths, ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"]);
        assert_eq!(mock.seen()[0].authorization.as_deref(), Some("Bearer sk-x"));
    }

    #[tokio::test]
    async fn steering_fails_each_endpoint_in_its_own_error_shape() {
        let (_mock, base, http) = test_support::spawn().await;
        let body = json!({"model": "m", "max_tokens": 5, "messages": [], "mock": {"status": 429, "error_message": "slow down"}});
        let openai = http.post(format!("{base}/embeddings")).bearer_auth("k").json(&body).send().await.expect("send");
        assert_eq!(openai.status(), 429);
        assert_eq!(openai.json::<Value>().await.expect("json")["error"]["message"], "slow down");
        let anthropic = http
            .post(format!("{base}/messages"))
            .header("x-api-key", "k")
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(anthropic.status(), 429);
        let error = anthropic.json::<Value>().await.expect("json");
        assert_eq!(error, json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}));
    }

    /// `cut_after` and `usage_delay_ms` act on every stream; the delay falls on the event that
    /// carries the final usage.
    #[tokio::test]
    async fn stream_steering_applies_to_every_stream() {
        let (_mock, base, http) = test_support::spawn().await;
        let anthropic = [("x-api-key", "k"), ("anthropic-version", "2023-06-01")];
        let cases = [
            ("/completions", json!({"prompt": "x", "stream_options": {"include_usage": true}}), "usage"),
            ("/responses", json!({"input": "x"}), "response.completed"),
            ("/messages", json!({"max_tokens": 5, "messages": []}), "message_delta"),
        ];
        for (path, mut body, usage_event) in cases {
            body["stream"] = json!(true);
            let send = |body: Value| {
                let mut request = http.post(format!("{base}{path}")).bearer_auth("k").json(&body);
                for (name, value) in anthropic {
                    request = request.header(name, value);
                }
                request.send()
            };
            body["mock"] = json!({"cut_after": 2});
            let cut = send(body.clone()).await.expect("send").text().await.expect("text");
            assert_eq!(test_support::events(&cut).len(), 2, "{path}: {cut}");

            body["mock"] = json!({"usage_delay_ms": 300});
            let mut answer = send(body).await.expect("send");
            let started = std::time::Instant::now();
            let mut received = String::new();
            while let Some(bytes) = answer.chunk().await.expect("chunk") {
                received.push_str(&String::from_utf8_lossy(&bytes));
                if received.contains(usage_event) {
                    break;
                }
            }
            assert!(started.elapsed() >= Duration::from_millis(250), "{path}: the usage event waited");
        }
    }

    #[tokio::test]
    async fn pretty_pretty_prints_a_non_streamed_answer_with_crlf() {
        let (_mock, base, http) = test_support::spawn().await;
        let body = json!({"model": "m", "prompt": "hi", "mock": {"pretty": true}});
        let text = http.post(format!("{base}/completions")).bearer_auth("k").json(&body).send().await.expect("send");
        let text = text.text().await.expect("text");
        assert!(text.contains("{\r\n  \"choices\": ["), "{text}");
        assert_eq!(serde_json::from_str::<Value>(&text).expect("json")["object"], "text_completion");
    }
}
