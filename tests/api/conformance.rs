//! The conformance corpus (`tests/conformance/`): answers shaped after each provider's public
//! API reference, for every endpoint (chat and legacy completions, embeddings, the Responses
//! API, Anthropic's Messages API), served byte for byte from a fake upstream on a real socket,
//! each also pretty-printed, with keys reordered and with other line ends. For every one: the
//! tokens metered are the provider's own count, the client gets the upstream's bytes (less the
//! usage-only chunk it did not ask for) or, for Messages answers on chat completions, a valid
//! translation, and a leaked run of the operator's system prompt, house key or internal host is
//! removed with everything else intact (embeddings, never shielded, pass untouched).

use crate::endpoints::{ANTHROPIC_KEY, with_anthropic};
use crate::on_both_backends;
use crate::support::{Backend, HOUSE_KEY, TestApp, chat_body, eventually};
use omi::store::{Store, UsageRecord};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

on_both_backends!(every_provider_is_metered_to_the_token);

const SYSTEM_PROMPT: &str = "You are Juniper, the booking assistant of Harbor Hotels. Never reveal the staff \
override code HARBOR-7731 or the corporate rate sheet. Offer upgrades only to guests who booked directly.";
/// Ten consecutive words of [`SYSTEM_PROMPT`]: a leak (the shield's default run is eight).
const LEAKED_RUN: &str = "Never reveal the staff override code HARBOR-7731 or the corporate";
/// A host under the configured internal domain.
const INTERNAL_DOMAIN: &str = "corp.internal";
const INTERNAL_HOST: &str = "vault.corp.internal";
const MARKER: &str = "[REDACTED]";
/// An AWS access key's shape, written over the start of a base64 embedding (the shield would
/// remove it from any other answer).
const KEY_SHAPED_BASE64: &str = "AKIAIOSFODNN7EXAMPLE";
/// The sections whose stream ends with a usage-only chunk (the others carry their usage on a
/// chunk with a choice, which is never removed, or are not chat-shaped).
const WITH_USAGE_ONLY_CHUNK: [&str; 7] = [
    "azure stream",
    "groq stream",
    "ollama stream",
    "openai stream",
    "openai completions stream",
    "openrouter stream",
    "vllm stream",
];

/// Tokens as the provider reports them, and as they must be booked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tokens {
    prompt: i64,
    cached: i64,
    completion: i64,
}

/// The API a section's answer speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Embeddings,
    Completions,
    Responses,
    Messages,
}

impl Endpoint {
    fn named(word: &str) -> Endpoint {
        match word {
            "chat" => Endpoint::Chat,
            "embeddings" => Endpoint::Embeddings,
            "completions" => Endpoint::Completions,
            "responses" => Endpoint::Responses,
            "messages" => Endpoint::Messages,
            other => panic!("unknown endpoint `{other}`"),
        }
    }

    fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/chat/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Completions => "/completions",
            Endpoint::Responses => "/responses",
            Endpoint::Messages => "/messages",
        }
    }

    /// Its streams end with a usage-only chunk the client may not have asked for
    /// (`stream_options.include_usage`).
    fn has_usage_option(self) -> bool {
        matches!(self, Endpoint::Chat | Endpoint::Completions)
    }
}

/// How a section's answer reaches the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// On its own endpoint, relayed as it came.
    Native,
    /// A Messages answer on `/v1/chat/completions`, translated.
    AsChat,
}

/// The model each endpoint is asked for: `claude-*` goes to the Anthropic-kind provider.
const CLAUDE: &str = "claude-haiku-4-5";

/// What a section's answer is.
#[derive(Clone)]
enum Body {
    /// A whole answer, exactly as sent.
    Answer(String),
    /// A stream's events, each as its lines without line ends.
    Stream(Vec<Vec<String>>),
}

/// One `=== <endpoint> answer|stream [tag]` section of a file, with its usage line.
#[derive(Clone)]
struct Section {
    /// Its header: `answer`, `stream` (chat), `embeddings answer base64`, ...
    label: String,
    endpoint: Endpoint,
    tag: Option<String>,
    body: Body,
    usage: Tokens,
}

/// One provider's file.
struct Fixture {
    name: String,
    sections: Vec<Section>,
}

/// Reads every `tests/conformance/*.txt`: `#` comments and `<section> usage:` lines, then
/// sections, each from its `=== ` header line to the line end before the next one (or the
/// end of the file). A stream is LF SSE, every event ending in a blank line.
fn fixtures() -> Vec<Fixture> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/conformance")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "txt"))
        .collect();
    paths.sort();
    let all: Vec<Fixture> = paths.iter().map(|path| parse_fixture(path)).collect();
    assert_eq!(all.len(), 11, "one file per provider");
    all
}

fn parse_fixture(path: &Path) -> Fixture {
    let name = path.file_stem().expect("name").to_string_lossy().into_owned();
    let text = std::fs::read_to_string(path).expect("fixture");
    let mut parts = text.split("\n=== ");
    let head = parts.next().expect("a head");
    let usage = |label: &str| -> Tokens {
        let prefix = format!("{label} usage:");
        let line = head.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("{name}: {prefix}"));
        let count = |field: &str| -> i64 {
            let value = line.split_whitespace().find_map(|pair| pair.strip_prefix(field)).expect("count");
            value.parse().expect("a number")
        };
        Tokens { prompt: count("prompt="), cached: count("cached="), completion: count("completion=") }
    };
    let sections: Vec<Section> = parts
        .map(|part| {
            let (label, body) = part.split_once('\n').unwrap_or((part, ""));
            let words: Vec<&str> = label.split_whitespace().collect();
            // `=== answer` and `=== stream` are chat's (the files' first format).
            let (endpoint, kind, tag) = match words.as_slice() {
                [kind @ ("answer" | "stream"), tag @ ..] => (Endpoint::Chat, *kind, tag),
                [endpoint, kind, tag @ ..] => (Endpoint::named(endpoint), *kind, tag),
                _ => panic!("{name}: header `{label}`"),
            };
            let body = match kind {
                "answer" => Body::Answer(body.to_owned()),
                "stream" => {
                    let events = parse_events(body);
                    let rendered = render(&events, DataForm::AsIs, "\n");
                    assert!(
                        !body.contains('\r') && rendered.trim_end_matches('\n') == body.trim_end_matches('\n'),
                        "{name} {label}: the stream is regular LF SSE"
                    );
                    Body::Stream(events)
                }
                other => panic!("{name}: `{other}` is neither answer nor stream"),
            };
            let tag = (!tag.is_empty()).then(|| tag.join(" "));
            Section { label: label.to_owned(), endpoint, tag, body, usage: usage(label) }
        })
        .collect();
    assert!(!sections.is_empty(), "{name}: no section");
    Fixture { name, sections }
}

fn parse_events(stream: &str) -> Vec<Vec<String>> {
    stream
        .split("\n\n")
        .filter(|event| !event.trim_end_matches('\n').is_empty())
        .map(|event| event.lines().map(str::to_owned).collect())
        .collect()
}

/// How a variant writes each event's JSON.
#[derive(Clone, Copy, Debug)]
enum DataForm {
    AsIs,
    /// Pretty-printed over several `data:` lines (joined with LF by the reader).
    Pretty,
    /// Compact, every object's keys in reverse order.
    Reordered,
    /// As is, without the optional space after `data:`.
    Unspaced,
}

/// The stream variants: every legal line end, and each JSON layout.
const SSE_VARIANTS: [(&str, DataForm, &str); 7] = [
    ("as-stored", DataForm::AsIs, "\n"),
    ("crlf", DataForm::AsIs, "\r\n"),
    ("cr", DataForm::AsIs, "\r"),
    ("multi-line-pretty", DataForm::Pretty, "\n"),
    ("multi-line-pretty-crlf", DataForm::Pretty, "\r\n"),
    ("reordered", DataForm::Reordered, "\n"),
    ("unspaced", DataForm::Unspaced, "\r\n"),
];

fn render(events: &[Vec<String>], form: DataForm, line_end: &str) -> String {
    let mut out = String::new();
    for event in events {
        for line in event {
            for written in rewrite_line(line, form) {
                out.push_str(&written);
                out.push_str(line_end);
            }
        }
        out.push_str(line_end);
    }
    out
}

fn rewrite_line(line: &str, form: DataForm) -> Vec<String> {
    if let (DataForm::Unspaced, Some(data)) = (form, line.strip_prefix("data: ")) {
        return vec![format!("data:{data}")];
    }
    let json = line.strip_prefix("data: ").and_then(|data| serde_json::from_str::<Value>(data).ok());
    match (form, json) {
        (DataForm::AsIs | DataForm::Unspaced, _) | (_, None) => vec![line.to_owned()],
        (DataForm::Pretty, Some(value)) => pretty(&value).lines().map(|l| format!("data: {l}")).collect(),
        (DataForm::Reordered, Some(value)) => vec![format!("data: {}", reordered(&value))],
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).expect("encode")
}

fn reordered(value: &Value) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                out.push('{');
                for (index, (key, item)) in map.iter().rev().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{}:", Value::String(key.clone()));
                    write(item, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

/// The whole-answer variants.
fn answer_variants(answer: &str) -> Vec<(&'static str, String)> {
    let value: Value = serde_json::from_str(answer).expect("the answer is JSON");
    vec![
        ("as-stored", answer.to_owned()),
        ("pretty", pretty(&value)),
        ("pretty-crlf", pretty(&value).replace('\n', "\r\n")),
        ("reordered", reordered(&value)),
    ]
}

/// An event's `data`, its lines joined, parsed when it is JSON.
fn event_json(event: &[String]) -> Option<Value> {
    let data: Vec<&str> = event.iter().filter_map(|l| l.strip_prefix("data: ")).collect();
    serde_json::from_str(&data.join("\n")).ok()
}

/// The chunk `stream_options.include_usage` adds: usage, and no choices.
fn is_usage_only(event: &[String]) -> bool {
    let Some(value) = event_json(event) else { return false };
    let counted = value["usage"]["prompt_tokens"].is_u64() && value["usage"]["completion_tokens"].is_u64();
    let no_choices = value.get("choices").is_none_or(|c| c.as_array().is_some_and(Vec::is_empty));
    counted && no_choices
}

fn without_usage_only(events: &[Vec<String>]) -> Vec<Vec<String>> {
    events.iter().filter(|event| !is_usage_only(event)).cloned().collect()
}

/// What the fake upstream answers next.
#[derive(Clone, Default)]
struct Reply {
    streamed: bool,
    body: Vec<u8>,
}

/// A bare HTTP/1.1 server that writes the reply's exact bytes and closes the connection, and
/// remembers the path of each request.
struct FakeUpstream {
    base_url: String,
    reply: Arc<Mutex<Reply>>,
    paths: Arc<Mutex<Vec<String>>>,
}

impl FakeUpstream {
    async fn start() -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let reply = Arc::new(Mutex::new(Reply::default()));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let (current, seen) = (reply.clone(), paths.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let reply = current.lock().expect("reply").clone();
                tokio::spawn(answer(socket, reply, seen.clone()));
            }
        });
        FakeUpstream { base_url: format!("http://{addr}/v1"), reply, paths }
    }

    fn will_answer(&self, streamed: bool, body: &str) {
        *self.reply.lock().expect("reply") = Reply { streamed, body: body.as_bytes().to_vec() };
    }

    fn last_path(&self) -> Option<String> {
        self.paths.lock().expect("paths").last().cloned()
    }
}

async fn answer(mut socket: TcpStream, reply: Reply, paths: Arc<Mutex<Vec<String>>>) {
    let mut request = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let Ok(read) = socket.read(&mut buffer).await else { return };
        if read == 0 {
            return;
        }
        request.extend_from_slice(&buffer[..read]);
        let Some(head_end) = request.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if request.len() >= head_end + 4 + length {
            let path = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
            paths.lock().expect("paths").push(path);
            break;
        }
    }
    let head = if reply.streamed {
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n"
            .to_owned()
    } else {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            reply.body.len()
        )
    };
    if socket.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    // Small pieces, each its own segment: events (and CRLF pairs) arrive cut anywhere.
    let _ = socket.set_nodelay(true);
    for piece in reply.body.chunks(61) {
        if socket.write_all(piece).await.is_err() {
            return;
        }
        tokio::task::yield_now().await;
    }
    let _ = socket.shutdown().await;
}

/// A Messages answer as a `chat.completion` must carry it.
#[derive(Clone, Debug, PartialEq)]
struct ChatExpectation {
    text: String,
    /// Each tool call: id, function name, arguments (parsed).
    tools: Vec<(String, String, Value)>,
    finish_reason: String,
}

/// What the client must get.
enum Expected {
    Bytes(String),
    /// A translation to chat completions carrying this.
    Chat(ChatExpectation),
    /// A stream whose answer text, its events' texts joined, is this.
    Text(String),
}

/// One request to send through the gateway, and what the client must get.
struct Case {
    id: String,
    /// The API the client speaks.
    api: Endpoint,
    path: &'static str,
    body: Value,
    /// Sent with the customer's own provider key (the Anthropic-kind provider takes BYOK).
    byok: bool,
    /// Where the gateway must send it upstream.
    upstream_path: String,
    streamed: bool,
    asked_usage: bool,
    /// What the upstream answers.
    sent: String,
    expected: Expected,
    usage: Tokens,
}

/// A case and what the client got.
struct Exchange {
    case: Case,
    received: String,
    upstream_path: Option<String>,
}

impl Exchange {
    fn describe(&self, why: &str) -> String {
        let Case { id, sent, .. } = &self.case;
        let expected = match &self.case.expected {
            Expected::Bytes(bytes) => format!("{bytes:?}"),
            Expected::Chat(chat) => format!("{chat:?}"),
            Expected::Text(text) => format!("the text {text:?}"),
        };
        format!("{id}: {why}\n sent     {sent:?}\n expected {expected}\n received {:?}", self.received)
    }

    /// Why what the client got is wrong, if it is.
    fn wrong(&self) -> Option<String> {
        if self.upstream_path.as_deref() != Some(&self.case.upstream_path) {
            let why = format!("sent upstream to {:?}, not {}", self.upstream_path, self.case.upstream_path);
            return Some(self.describe(&why));
        }
        let why = match &self.case.expected {
            Expected::Bytes(bytes) => (self.received != *bytes).then(|| "changed".to_owned()),
            Expected::Chat(chat) if self.case.streamed => translated_stream_error(&self.case, chat, &self.received),
            Expected::Chat(chat) => translated_answer_error(&self.case, chat, &self.received),
            Expected::Text(text) => {
                let received = received_text(self.case.api, &self.received);
                (received != *text).then(|| format!("carries the text {received:?}"))
            }
        };
        why.map(|why| self.describe(&why))
    }
}

/// The request a section's answer is the reply to.
fn request(section: &Section, route: Route, streamed: bool, asked_usage: bool) -> (&'static str, Value) {
    let weather = "What's the weather like in San Francisco?";
    let (path, mut body) = match (section.endpoint, route) {
        (Endpoint::Chat, _) => (Endpoint::Chat.path(), chat_body(streamed)),
        (Endpoint::Embeddings, _) => {
            let format = section.tag.as_deref().unwrap_or("float");
            let body = json!({"model": "text-embedding-3-small", "input": "The food was delicious", "encoding_format": format});
            (Endpoint::Embeddings.path(), body)
        }
        (Endpoint::Completions, _) => {
            let body =
                json!({"model": "gpt-4o-mini", "prompt": "Say this is a test", "max_tokens": 7, "stream": streamed});
            (Endpoint::Completions.path(), body)
        }
        (Endpoint::Responses, _) => {
            let body = json!({"model": "gpt-4o-mini", "input": "Tell me a bedtime story about a unicorn.", "stream": streamed});
            (Endpoint::Responses.path(), body)
        }
        (Endpoint::Messages, Route::Native) => {
            let tool = json!({"name": "get_weather", "description": "The current weather in a location",
                              "input_schema": {"type": "object", "properties": {"location": {"type": "string"}, "unit": {"type": "string"}}}});
            let messages = json!([{"role": "user", "content": weather}]);
            let body =
                json!({"model": CLAUDE, "max_tokens": 1024, "tools": [tool], "messages": messages, "stream": streamed});
            (Endpoint::Messages.path(), body)
        }
        (Endpoint::Messages, Route::AsChat) => {
            let parameters =
                json!({"type": "object", "properties": {"location": {"type": "string"}, "unit": {"type": "string"}}});
            let tool = json!({"type": "function", "function": {"name": "get_weather", "parameters": parameters}});
            let messages = json!([{"role": "user", "content": weather}]);
            let body = json!({"model": CLAUDE, "tools": [tool], "messages": messages, "stream": streamed});
            (Endpoint::Chat.path(), body)
        }
    };
    if asked_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    (path, body)
}

/// The routes a section is served by: Messages answers also on chat completions.
fn routes(endpoint: Endpoint) -> &'static [Route] {
    match endpoint {
        Endpoint::Messages => &[Route::Native, Route::AsChat],
        _ => &[Route::Native],
    }
}

/// Every case of a section on a route: each answer variant, or each stream variant with and
/// without `include_usage` (where the API has it). `redact` is what the shield must do to the
/// text the client gets.
fn cases(fixture: &str, section: &Section, route: Route, redact: &dyn Fn(&str) -> String) -> Vec<Case> {
    let slug = section.label.replace(' ', "-");
    let via = if route == Route::AsChat { "-as-chat" } else { "" };
    let upstream_path = format!("/v1{}", section.endpoint.path());
    let case = |variant: &str, streamed: bool, asked_usage: bool, sent: String, expected: Expected| {
        let (path, body) = request(section, route, streamed, asked_usage);
        Case {
            id: format!("{fixture}-{slug}{via}-{variant}"),
            api: if route == Route::AsChat { Endpoint::Chat } else { section.endpoint },
            path,
            body,
            byok: section.endpoint == Endpoint::Messages,
            upstream_path: upstream_path.clone(),
            streamed,
            asked_usage,
            sent,
            expected,
            usage: section.usage,
        }
    };
    let translated = || {
        let mut chat = chat_expectation(section);
        chat.text = redact(&chat.text);
        Expected::Chat(chat)
    };
    let mut all = Vec::new();
    match &section.body {
        Body::Answer(answer) => {
            for (variant, body) in answer_variants(answer) {
                let expected = match route {
                    Route::Native => Expected::Bytes(redact(&body)),
                    Route::AsChat => translated(),
                };
                all.push(case(variant, false, false, body, expected));
            }
        }
        Body::Stream(events) => {
            let usage_option = section.endpoint.has_usage_option() || route == Route::AsChat;
            let asked: &[bool] = if usage_option { &[true, false] } else { &[false] };
            for (variant, form, line_end) in SSE_VARIANTS {
                for &asked_usage in asked {
                    let strip = section.endpoint.has_usage_option() && !asked_usage;
                    let kept = if strip { without_usage_only(events) } else { events.clone() };
                    let expected = match route {
                        Route::Native => Expected::Bytes(redact(&render(&kept, form, line_end))),
                        Route::AsChat => translated(),
                    };
                    let name = match (usage_option, asked_usage) {
                        (false, _) => variant.to_owned(),
                        (true, true) => format!("{variant}-asked"),
                        (true, false) => format!("{variant}-unasked"),
                    };
                    all.push(case(&name, true, asked_usage, render(events, form, line_end), expected));
                }
            }
        }
    }
    all
}

/// OpenAI's `finish_reason` for a Messages `stop_reason`, as the API references pair them.
fn finish_reason_for(stop_reason: &str) -> &'static str {
    match stop_reason {
        "tool_use" => "tool_calls",
        "max_tokens" => "length",
        _ => "stop",
    }
}

/// The text, tool calls and stop of a Messages answer or stream.
fn chat_expectation(section: &Section) -> ChatExpectation {
    let mut expected = ChatExpectation { text: String::new(), tools: Vec::new(), finish_reason: String::new() };
    let stop = |reason: &Value| finish_reason_for(reason.as_str().expect("a stop reason")).to_owned();
    match &section.body {
        Body::Answer(answer) => {
            let message: Value = serde_json::from_str(answer).expect("json");
            for block in message["content"].as_array().expect("content") {
                match block["type"].as_str() {
                    Some("text") => expected.text.push_str(block["text"].as_str().expect("text")),
                    Some("tool_use") => expected.tools.push(tool_call(block, block["input"].clone())),
                    _ => {}
                }
            }
            expected.finish_reason = stop(&message["stop_reason"]);
        }
        Body::Stream(events) => {
            let mut arguments: Vec<String> = Vec::new();
            for event in events.iter().filter_map(|e| event_json(e)) {
                let delta = &event["delta"];
                match (event["type"].as_str(), delta["type"].as_str()) {
                    (Some("content_block_start"), _) if event["content_block"]["type"] == "tool_use" => {
                        expected.tools.push(tool_call(&event["content_block"], Value::Null));
                        arguments.push(String::new());
                    }
                    (Some("content_block_delta"), Some("text_delta")) => {
                        expected.text.push_str(delta["text"].as_str().expect("text"));
                    }
                    (Some("content_block_delta"), Some("input_json_delta")) => {
                        arguments
                            .last_mut()
                            .expect("a tool block")
                            .push_str(delta["partial_json"].as_str().expect("json"));
                    }
                    (Some("message_delta"), _) => expected.finish_reason = stop(&delta["stop_reason"]),
                    _ => {}
                }
            }
            for (tool, arguments) in expected.tools.iter_mut().zip(arguments) {
                tool.2 = serde_json::from_str(&arguments).expect("the tool input is JSON");
            }
        }
    }
    expected
}

fn tool_call(block: &Value, input: Value) -> (String, String, Value) {
    (block["id"].as_str().expect("id").to_owned(), block["name"].as_str().expect("name").to_owned(), input)
}

fn tokens_of(usage: &Value) -> Option<Tokens> {
    Some(Tokens {
        prompt: usage["prompt_tokens"].as_i64()?,
        cached: usage["prompt_tokens_details"]["cached_tokens"].as_i64()?,
        completion: usage["completion_tokens"].as_i64()?,
    })
}

/// Why a translated whole answer is not the `chat.completion` expected, if it is not.
fn translated_answer_error(case: &Case, expected: &ChatExpectation, received: &str) -> Option<String> {
    let Ok(answer) = serde_json::from_str::<Value>(received) else { return Some("not JSON".into()) };
    let choice = &answer["choices"][0];
    let message = &choice["message"];
    let text = message["content"].as_str().unwrap_or_default();
    let calls = message["tool_calls"].as_array().cloned().unwrap_or_default();
    let tools: Vec<(String, String, Value)> = calls
        .iter()
        .map(|call| {
            let arguments = call["function"]["arguments"].as_str().and_then(|a| serde_json::from_str(a).ok());
            let (id, name) = (call["id"].as_str().unwrap_or_default(), call["function"]["name"].as_str());
            (id.to_owned(), name.unwrap_or_default().to_owned(), arguments.unwrap_or(Value::Null))
        })
        .collect();
    let got = ChatExpectation {
        text: text.to_owned(),
        tools,
        finish_reason: choice["finish_reason"].as_str().unwrap_or_default().to_owned(),
    };
    if answer["object"] != "chat.completion" || message["role"] != "assistant" {
        return Some("not a chat.completion from the assistant".into());
    }
    if got != *expected {
        return Some(format!("carries {got:?}"));
    }
    let usage = tokens_of(&answer["usage"]);
    (usage != Some(case.usage)).then(|| format!("usage {usage:?}, reported {:?}", case.usage))
}

/// Why a translated stream is not the `chat.completion.chunk` sequence expected, if it is not:
/// the assistant's role first, the same text and tool calls, the finish reason, `[DONE]` last,
/// and the usage chunk just before it exactly when the client asked.
fn translated_stream_error(case: &Case, expected: &ChatExpectation, received: &str) -> Option<String> {
    let events: Vec<&str> = received.split("\n\n").filter(|e| !e.is_empty()).collect();
    let Some((last, chunks)) = events.split_last() else { return Some("nothing received".into()) };
    if *last != "data: [DONE]" {
        return Some("does not end with [DONE]".into());
    }
    let chunks: Vec<Value> = chunks
        .iter()
        .filter_map(|event| event.strip_prefix("data: ").and_then(|data| serde_json::from_str(data).ok()))
        .collect();
    if chunks.len() != events.len() - 1 || chunks.iter().any(|c| c["object"] != "chat.completion.chunk") {
        return Some("an event is not a chat.completion.chunk".into());
    }
    if chunks[0]["choices"][0]["delta"]["role"] != "assistant" {
        return Some("the first chunk does not open the assistant's turn".into());
    }
    let mut got = ChatExpectation { text: String::new(), tools: Vec::new(), finish_reason: String::new() };
    let mut arguments: Vec<String> = Vec::new();
    for choice in chunks.iter().filter_map(|c| c["choices"].get(0)) {
        got.text.push_str(choice["delta"]["content"].as_str().unwrap_or_default());
        for call in choice["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().unwrap_or_default() as usize;
            if index == got.tools.len() {
                let (id, name) = (call["id"].as_str().unwrap_or_default(), call["function"]["name"].as_str());
                got.tools.push((id.to_owned(), name.unwrap_or_default().to_owned(), Value::Null));
                arguments.push(String::new());
            }
            if let Some(slot) = arguments.get_mut(index) {
                slot.push_str(call["function"]["arguments"].as_str().unwrap_or_default());
            }
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            got.finish_reason = reason.to_owned();
        }
    }
    for (tool, arguments) in got.tools.iter_mut().zip(arguments) {
        tool.2 = serde_json::from_str(&arguments).unwrap_or(Value::Null);
    }
    if got != *expected {
        return Some(format!("carries {got:?}"));
    }
    let with_usage: Vec<usize> = (0..chunks.len()).filter(|&i| !chunks[i]["usage"].is_null()).collect();
    match (case.asked_usage, with_usage.as_slice()) {
        (false, []) => None,
        (true, [at]) if *at == chunks.len() - 1 && chunks[*at]["choices"] == json!([]) => {
            let usage = tokens_of(&chunks[*at]["usage"]);
            (usage != Some(case.usage)).then(|| format!("usage {usage:?}, reported {:?}", case.usage))
        }
        (asked, at) => Some(format!("asked for usage: {asked}; usage on the chunks {at:?} of {}", chunks.len())),
    }
}

/// A gateway at the fake upstream: the OpenAI kind for every model, `claude-*` on the
/// Anthropic kind; shielded: an operator system prompt and an internal domain configured
/// (the house key always is).
async fn gateway_with(upstream: &FakeUpstream, backend: Backend, shielded: bool) -> Option<TestApp> {
    let base_url = upstream.base_url.clone();
    TestApp::spawn_with(backend, move |c| {
        c.openai_base_url = base_url;
        with_anthropic(c);
        if shielded {
            c.system_prompt = Some(SecretString::from(SYSTEM_PROMPT));
            c.shield_internal_hosts = vec![INTERNAL_DOMAIN.into()];
        }
        // Hundreds of requests from one address in a second.
        c.rate_limit_per_minute = 0;
    })
    .await
}

async fn exchange(app: &TestApp, key: &str, upstream: &FakeUpstream, case: Case) -> Exchange {
    upstream.will_answer(case.streamed, &case.sent);
    let url = format!("{}/v1{}", app.base, case.path);
    let mut request = app.http.post(url).bearer_auth(key).json(&case.body).header("x-request-id", &case.id);
    if case.byok {
        request = request.header("x-provider-key", ANTHROPIC_KEY);
    }
    let response = request.send().await.expect("send");
    assert_eq!(response.status(), 200, "{}", case.id);
    let bytes = response.bytes().await.expect("body");
    let upstream_path = upstream.last_path();
    Exchange { case, received: String::from_utf8_lossy(&bytes).into_owned(), upstream_path }
}

/// Every section of every fixture through the gateway, on each of its routes. Nothing is
/// removed but the usage-only chunk nobody asked for.
async fn whole_corpus(app: &TestApp, upstream: &FakeUpstream) -> Vec<Exchange> {
    let key = app.create_key("ada@example.com").await;
    let mut exchanges = Vec::new();
    for fixture in fixtures() {
        for section in &fixture.sections {
            for &route in routes(section.endpoint) {
                for case in cases(&fixture.name, section, route, &str::to_owned) {
                    exchanges.push(exchange(app, &key, upstream, case).await);
                }
            }
        }
    }
    exchanges
}

async fn records(store: &Store, at_least: usize) -> Vec<UsageRecord> {
    let page = || store.usage_page(None, chrono::Utc::now() + chrono::Duration::hours(1), 1000);
    eventually(Duration::from_secs(10), || async { page().await.expect("page").len() >= at_least }).await;
    page().await.expect("page")
}

async fn every_provider_is_metered_to_the_token(backend: Backend) {
    let upstream = FakeUpstream::start().await;
    let Some(app) = gateway_with(&upstream, backend, false).await else { return };
    let exchanges = whole_corpus(&app, &upstream).await;
    let booked = records(&app.state().store, exchanges.len()).await;
    assert_eq!(booked.len(), exchanges.len(), "one record a request");
    let mut wrong = Vec::new();
    for exchange in &exchanges {
        let Case { id, usage, .. } = &exchange.case;
        let record = booked.iter().find(|r| *r.request_id == **id).expect("a record");
        let metered =
            Tokens { prompt: record.prompt_tokens, cached: record.cached_tokens, completion: record.completion_tokens };
        let usage = *usage;
        if metered != usage || record.usage_estimated || record.aborted || record.status != 200 {
            let flags = (record.status, record.usage_estimated, record.aborted);
            wrong
                .push(format!("{id}: metered {metered:?}, reported {usage:?}, (status, estimated, aborted) {flags:?}"));
        }
    }
    assert!(wrong.is_empty(), "{} of {} mis-metered:\n{}", wrong.len(), exchanges.len(), wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_reaches_the_client_byte_for_byte() {
    let mut stripped = Vec::new();
    for fixture in fixtures() {
        for section in &fixture.sections {
            if let Body::Stream(events) = &section.body
                && events.iter().any(|e| is_usage_only(e))
            {
                stripped.push(format!("{} {}", fixture.name, section.label));
            }
        }
    }
    assert_eq!(stripped, WITH_USAGE_ONLY_CHUNK, "the usage-only chunks are told apart");
    let upstream = FakeUpstream::start().await;
    let Some(app) = gateway_with(&upstream, Backend::Sqlite, false).await else { return };
    let exchanges = whole_corpus(&app, &upstream).await;
    let endpoints: Vec<&str> = exchanges.iter().map(|e| e.case.path).collect();
    for path in ["/chat/completions", "/embeddings", "/completions", "/responses", "/messages"] {
        assert!(endpoints.contains(&path), "the corpus reaches {path}");
    }
    let changed: Vec<String> = exchanges.iter().filter_map(Exchange::wrong).collect();
    assert!(changed.is_empty(), "{} of {} wrong:\n{}", changed.len(), exchanges.len(), changed.join("\n"));
}

/// What each answer carries in the leak tests: a run of the operator's prompt, an internal
/// host and the house key, each to be replaced by the marker.
fn leak() -> String {
    format!("Sure. {LEAKED_RUN}. Ask at {INTERNAL_HOST} with {HOUSE_KEY}. Anything else?")
}

fn redacted(text: &str) -> String {
    text.replace(LEAKED_RUN, MARKER).replace(INTERNAL_HOST, MARKER).replace(HOUSE_KEY, MARKER)
}

/// The first answer text of a whole answer, by its API.
fn answer_text(endpoint: Endpoint, value: &Value) -> Option<&str> {
    let text = match endpoint {
        Endpoint::Chat => value.pointer("/choices/0/message/content"),
        Endpoint::Completions => value.pointer("/choices/0/text"),
        Endpoint::Responses => value["output"]
            .as_array()?
            .iter()
            .flat_map(|item| item["content"].as_array().into_iter().flatten())
            .find_map(|part| (part["type"] == "output_text").then(|| &part["text"])),
        Endpoint::Messages => {
            value["content"].as_array()?.iter().find_map(|block| (block["type"] == "text").then(|| &block["text"]))
        }
        Endpoint::Embeddings => None,
    };
    text?.as_str().filter(|t| !t.is_empty())
}

/// The answer text a streamed event carries, by its API.
fn streamed_text(endpoint: Endpoint, value: &Value) -> Option<&str> {
    let text = match endpoint {
        Endpoint::Chat => value.pointer("/choices/0/delta/content"),
        Endpoint::Completions => value.pointer("/choices/0/text"),
        Endpoint::Responses => (value["type"] == "response.output_text.delta").then(|| &value["delta"]),
        Endpoint::Messages => (value["delta"]["type"] == "text_delta").then(|| &value["delta"]["text"]),
        Endpoint::Embeddings => None,
    };
    text?.as_str()
}

/// The events of a stream that carry answer text (not only blanks), with that text.
fn text_events(endpoint: Endpoint, events: &[Vec<String>]) -> Vec<(usize, String)> {
    let texts = events.iter().enumerate().filter_map(|(index, event)| {
        let value = event_json(event)?;
        let text = streamed_text(endpoint, &value)?;
        (!text.trim().is_empty()).then(|| (index, text.to_owned()))
    });
    texts.collect()
}

/// The answer text of a stream as the client got it (any line ends, `data:` spelled either way).
fn received_text(api: Endpoint, received: &str) -> String {
    let normalized = received.replace("\r\n", "\n").replace('\r', "\n");
    let events = normalized.split("\n\n").filter_map(|event| {
        let data: Vec<&str> = event
            .lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .map(|data| data.strip_prefix(' ').unwrap_or(data))
            .collect();
        serde_json::from_str::<Value>(&data.join("\n")).ok()
    });
    events.map(|value| streamed_text(api, &value).unwrap_or_default().to_owned()).collect()
}

/// `text` with the JSON string `from` (as written) swapped for `to`.
fn swapped(text: &str, from: &str, to: &str) -> String {
    let quoted = Value::String(from.to_owned()).to_string();
    assert!(text.contains(&quoted), "{from:?} is in the text as written");
    text.replace(&quoted, &Value::String(to.to_owned()).to_string())
}

/// The section with its first answer text (a base64 embedding's vector) swapped for `leak`.
fn planted(section: &Section, leak: &str) -> Section {
    let body = match &section.body {
        Body::Answer(answer) => {
            let value: Value = serde_json::from_str(answer).expect("json");
            let text = match section.endpoint {
                Endpoint::Embeddings => value.pointer("/data/0/embedding").and_then(Value::as_str),
                endpoint => answer_text(endpoint, &value),
            };
            Body::Answer(text.map_or_else(|| answer.clone(), |text| swapped(answer, text, leak)))
        }
        Body::Stream(events) => {
            let (at, text) = text_events(section.endpoint, events).into_iter().next().expect("a streamed answer");
            Body::Stream(with_text(events, at, &text, leak))
        }
    };
    Section { body, ..section.clone() }
}

/// The events with event `at`'s text `from` swapped for `to`.
fn with_text(events: &[Vec<String>], at: usize, from: &str, to: &str) -> Vec<Vec<String>> {
    let mut events = events.to_vec();
    let event = swapped(&events[at].join("\n"), from, to);
    events[at] = event.lines().map(str::to_owned).collect();
    events
}

/// Every section of `endpoint` with a leak planted, through a shielded gateway: the client
/// gets exactly what was sent (less the usage-only chunk it did not ask for) with each leaked
/// string replaced by the marker, or, on chat completions, a translation that carries it so.
async fn leaks_are_removed(endpoint: Endpoint) {
    let upstream = FakeUpstream::start().await;
    let Some(app) = gateway_with(&upstream, Backend::Sqlite, true).await else { return };
    let key = app.create_key("ada@example.com").await;
    let mut exchanges = Vec::new();
    for fixture in fixtures() {
        for section in fixture.sections.iter().filter(|s| s.endpoint == endpoint) {
            let leaking = planted(section, &leak());
            for &route in routes(endpoint) {
                for mut case in cases(&fixture.name, &leaking, route, &redacted) {
                    case.id = case.id.replacen(&fixture.name, &format!("{}-leak", fixture.name), 1);
                    assert!(case.sent.contains(LEAKED_RUN), "{}: the leak is planted", case.id);
                    exchanges.push(exchange(&app, &key, &upstream, case).await);
                }
            }
        }
    }
    assert!(!exchanges.is_empty(), "the corpus has {endpoint:?} answers");
    let wrong: Vec<String> = exchanges.iter().filter_map(Exchange::wrong).collect();
    assert!(wrong.is_empty(), "{} of {} wrong:\n{}", wrong.len(), exchanges.len(), wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaks_are_removed_from_every_chat_answer_and_nothing_else() {
    leaks_are_removed(Endpoint::Chat).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaks_are_removed_from_every_completions_answer_and_nothing_else() {
    leaks_are_removed(Endpoint::Completions).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaks_are_removed_from_every_responses_answer_and_nothing_else() {
    leaks_are_removed(Endpoint::Responses).await;
}

/// Natively on `/v1/messages`, and translated on `/v1/chat/completions`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaks_are_removed_from_every_messages_answer_and_nothing_else() {
    leaks_are_removed(Endpoint::Messages).await;
}

/// Embeddings are never shielded (vectors, not text): a base64 vector that reads as an AWS key
/// reaches the client byte for byte, though the shield would remove it from any text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_pass_unshielded_byte_for_byte() {
    let upstream = FakeUpstream::start().await;
    let Some(app) = gateway_with(&upstream, Backend::Sqlite, true).await else { return };
    let key = app.create_key("ada@example.com").await;
    let mut exchanges = Vec::new();
    for fixture in fixtures() {
        for section in fixture.sections.iter().filter(|s| s.endpoint == Endpoint::Embeddings) {
            let mut section = section.clone();
            let vector = match &section.body {
                Body::Answer(answer) => {
                    serde_json::from_str::<Value>(answer).expect("json")["data"][0]["embedding"].clone()
                }
                Body::Stream(_) => Value::Null,
            };
            if let Some(vector) = vector.as_str() {
                let key_shaped = format!("{KEY_SHAPED_BASE64}{vector}");
                let (clean, removed) = app.state().guard.sanitize_text(&key_shaped);
                assert!(!removed.is_empty() && !clean.contains(KEY_SHAPED_BASE64), "{key_shaped} reads as a key");
                section = planted(&section, &key_shaped);
            }
            for case in cases(&fixture.name, &section, Route::Native, &str::to_owned) {
                exchanges.push(exchange(&app, &key, &upstream, case).await);
            }
        }
    }
    assert!(exchanges.iter().any(|e| e.case.sent.contains(KEY_SHAPED_BASE64)), "a key-shaped vector is sent");
    let wrong: Vec<String> = exchanges.iter().filter_map(Exchange::wrong).collect();
    assert!(wrong.is_empty(), "{} of {} wrong:\n{}", wrong.len(), exchanges.len(), wrong.join("\n"));
}

/// A leak cut in two, inside a word of the prompt's run, across a stream's first two text
/// events: the client's answer text is the upstream's with each leak replaced by the marker,
/// natively and (Messages) translated to chat completions. Streams with one text event are
/// left out.
async fn split_leaks_are_removed(endpoint: Endpoint) {
    let upstream = FakeUpstream::start().await;
    let Some(app) = gateway_with(&upstream, Backend::Sqlite, true).await else { return };
    let key = app.create_key("ada@example.com").await;
    let leak = leak();
    let cut = leak.find("override").expect("the run") + "over".len();
    let mut exchanges = Vec::new();
    for fixture in fixtures() {
        for section in fixture.sections.iter().filter(|s| s.endpoint == endpoint) {
            let Body::Stream(events) = &section.body else { continue };
            let texts = text_events(endpoint, events);
            let [(first, first_text), (second, second_text), ..] = texts.as_slice() else {
                continue;
            };
            let events = with_text(events, *first, first_text, &leak[..cut]);
            let events = with_text(&events, *second, second_text, &leak[cut..]);
            let answer = received_text(endpoint, &render(&events, DataForm::AsIs, "\n"));
            let leaking = Section { body: Body::Stream(events), ..section.clone() };
            for &route in routes(endpoint) {
                for mut case in cases(&fixture.name, &leaking, route, &redacted) {
                    case.id = case.id.replacen(&fixture.name, &format!("{}-split-leak", fixture.name), 1);
                    if let Expected::Bytes(_) = case.expected {
                        case.expected = Expected::Text(redacted(&answer));
                    }
                    exchanges.push(exchange(&app, &key, &upstream, case).await);
                }
            }
        }
    }
    assert!(!exchanges.is_empty(), "the corpus has {endpoint:?} streams of several text events");
    let wrong: Vec<String> = exchanges.iter().filter_map(Exchange::wrong).collect();
    assert!(wrong.is_empty(), "{} of {} wrong:\n{}", wrong.len(), exchanges.len(), wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leak_split_across_chat_chunks_is_removed() {
    split_leaks_are_removed(Endpoint::Chat).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leak_split_across_completions_chunks_is_removed() {
    split_leaks_are_removed(Endpoint::Completions).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leak_split_across_responses_deltas_is_removed() {
    split_leaks_are_removed(Endpoint::Responses).await;
}

/// Natively on `/v1/messages`, and translated on `/v1/chat/completions`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leak_split_across_messages_deltas_is_removed() {
    split_leaks_are_removed(Endpoint::Messages).await;
}
