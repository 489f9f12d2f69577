//! The conformance corpus (`tests/conformance/`): answers shaped after each OpenAI-compatible
//! provider's public API reference, served byte for byte from a fake upstream on a real socket,
//! each also pretty-printed, with keys reordered and with other line ends. For every one: the
//! tokens metered are the provider's own count, the client gets the upstream's bytes (less the
//! usage-only chunk it did not ask for), and a leaked run of the operator's system prompt is
//! removed with everything else intact.

use crate::on_both_backends;
use crate::support::{Backend, TestApp, chat_body, eventually};
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
const MARKER: &str = "[REDACTED]";
/// The fixtures whose stream ends with a usage-only chunk (the others carry their usage on a
/// chunk with a choice, which is never removed).
const WITH_USAGE_ONLY_CHUNK: [&str; 6] = ["azure", "groq", "ollama", "openai", "openrouter", "vllm"];

/// Tokens as the provider reports them, and as they must be booked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tokens {
    prompt: i64,
    cached: i64,
    completion: i64,
}

/// One provider's file: a whole answer and a stream, each with the usage it reports.
struct Fixture {
    name: String,
    answer: String,
    answer_usage: Tokens,
    /// The stream's events, each as its lines without line ends.
    events: Vec<Vec<String>>,
    stream_usage: Tokens,
}

/// Reads every `tests/conformance/*.txt`: `#` comments, `answer usage:` and `stream usage:`
/// lines, then `=== answer` (the body, up to its last line end) and `=== stream` (the SSE
/// text to the end of the file, LF line ends).
fn fixtures() -> Vec<Fixture> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/conformance")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "txt"))
        .collect();
    paths.sort();
    let all: Vec<Fixture> = paths.iter().map(|path| parse_fixture(path)).collect();
    assert_eq!(all.len(), 10, "one file per provider");
    all
}

fn parse_fixture(path: &Path) -> Fixture {
    let name = path.file_stem().expect("name").to_string_lossy().into_owned();
    let text = std::fs::read_to_string(path).expect("fixture");
    let (head, rest) = text.split_once("=== answer\n").expect("=== answer");
    let (answer, stream) = rest.split_once("\n=== stream\n").expect("=== stream");
    let usage = |label: &str| -> Tokens {
        let line = head.lines().find_map(|l| l.strip_prefix(label)).unwrap_or_else(|| panic!("{name}: {label}"));
        let count = |field: &str| -> i64 {
            let value = line.split_whitespace().find_map(|pair| pair.strip_prefix(field)).expect("count");
            value.parse().expect("a number")
        };
        Tokens { prompt: count("prompt="), cached: count("cached="), completion: count("completion=") }
    };
    let events = parse_events(stream);
    assert_eq!(render(&events, DataForm::AsIs, "\n"), stream, "{name}: the stream is regular LF SSE");
    let (answer_usage, stream_usage) = (usage("answer usage:"), usage("stream usage:"));
    Fixture { name, answer: answer.to_owned(), answer_usage, events, stream_usage }
}

fn parse_events(stream: &str) -> Vec<Vec<String>> {
    stream
        .split("\n\n")
        .filter(|event| !event.is_empty())
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

/// The chunk `stream_options.include_usage` adds: usage, and no choices.
fn is_usage_only(event: &[String]) -> bool {
    let data: Vec<&str> = event.iter().filter_map(|l| l.strip_prefix("data: ")).collect();
    let Ok(value) = serde_json::from_str::<Value>(&data.join("\n")) else { return false };
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

/// A bare HTTP/1.1 server that writes the reply's exact bytes and closes the connection.
struct FakeUpstream {
    base_url: String,
    reply: Arc<Mutex<Reply>>,
}

impl FakeUpstream {
    async fn start() -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let reply = Arc::new(Mutex::new(Reply::default()));
        let current = reply.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let reply = current.lock().expect("reply").clone();
                tokio::spawn(answer(socket, reply));
            }
        });
        FakeUpstream { base_url: format!("http://{addr}/v1"), reply }
    }

    fn will_answer(&self, streamed: bool, body: &str) {
        *self.reply.lock().expect("reply") = Reply { streamed, body: body.as_bytes().to_vec() };
    }
}

async fn answer(mut socket: TcpStream, reply: Reply) {
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

/// One request to send through the gateway, and what the client must get.
struct Case {
    id: String,
    streamed: bool,
    asked_usage: bool,
    /// What the upstream answers.
    sent: String,
    expected: String,
    usage: Tokens,
}

/// A case and what the client got.
struct Exchange {
    case: Case,
    received: String,
}

impl Exchange {
    fn describe(&self) -> String {
        let Case { id, sent, expected, .. } = &self.case;
        format!("{id}:\n sent     {sent:?}\n expected {expected:?}\n received {:?}", self.received)
    }
}

async fn gateway_with(upstream: &FakeUpstream, backend: Backend, system_prompt: Option<&str>) -> Option<TestApp> {
    let base_url = upstream.base_url.clone();
    let prompt = system_prompt.map(SecretString::from);
    TestApp::spawn_with(backend, move |c| {
        c.openai_base_url = base_url;
        c.system_prompt = prompt;
        // Hundreds of requests from one address in a second.
        c.rate_limit_per_minute = 0;
    })
    .await
}

async fn exchange(app: &TestApp, key: &str, upstream: &FakeUpstream, case: Case) -> Exchange {
    upstream.will_answer(case.streamed, &case.sent);
    let mut body = chat_body(case.streamed);
    if case.asked_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    let response = app.chat(key, body).header("x-request-id", &case.id).send().await.expect("send");
    assert_eq!(response.status(), 200, "{}", case.id);
    let bytes = response.bytes().await.expect("body");
    Exchange { case, received: String::from_utf8_lossy(&bytes).into_owned() }
}

/// Every fixture through the gateway: each answer variant, and each stream variant with and
/// without `include_usage`. Nothing is removed but the usage-only chunk nobody asked for.
async fn whole_corpus(app: &TestApp, upstream: &FakeUpstream) -> Vec<Exchange> {
    let key = app.create_key("ada@example.com").await;
    let mut exchanges = Vec::new();
    for fixture in fixtures() {
        for (variant, body) in answer_variants(&fixture.answer) {
            let case = Case {
                id: format!("{}-answer-{variant}", fixture.name),
                streamed: false,
                asked_usage: false,
                expected: body.clone(),
                sent: body,
                usage: fixture.answer_usage,
            };
            exchanges.push(exchange(app, &key, upstream, case).await);
        }
        for (variant, form, line_end) in SSE_VARIANTS {
            for asked_usage in [true, false] {
                let kept = if asked_usage { fixture.events.clone() } else { without_usage_only(&fixture.events) };
                let case = Case {
                    id: format!("{}-stream-{variant}-{}", fixture.name, if asked_usage { "asked" } else { "unasked" }),
                    streamed: true,
                    asked_usage,
                    sent: render(&fixture.events, form, line_end),
                    expected: render(&kept, form, line_end),
                    usage: fixture.stream_usage,
                };
                exchanges.push(exchange(app, &key, upstream, case).await);
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
    let Some(app) = gateway_with(&upstream, backend, None).await else { return };
    let exchanges = whole_corpus(&app, &upstream).await;
    let booked = records(&app.state().store, exchanges.len()).await;
    assert_eq!(booked.len(), exchanges.len(), "one record a request");
    let mut wrong = Vec::new();
    for exchange in &exchanges {
        let Case { id, usage, .. } = &exchange.case;
        let record = booked.iter().find(|r| r.request_id == *id).expect("a record");
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
    let stripped: Vec<String> =
        fixtures().into_iter().filter(|f| f.events.iter().any(|e| is_usage_only(e))).map(|f| f.name).collect();
    assert_eq!(stripped, WITH_USAGE_ONLY_CHUNK, "the usage-only chunks are told apart");
    let upstream = FakeUpstream::start().await;
    let Some(app) = gateway_with(&upstream, Backend::Sqlite, None).await else { return };
    let exchanges = whole_corpus(&app, &upstream).await;
    let changed: Vec<String> =
        exchanges.iter().filter(|e| e.received != e.case.expected).map(Exchange::describe).collect();
    assert!(changed.is_empty(), "{} of {} changed:\n{}", changed.len(), exchanges.len(), changed.join("\n"));
}

/// The fixture's text with its first answer string swapped for one that leaks the prompt.
fn leaking(text: &str, answer: &str) -> String {
    let quoted = Value::String(answer.to_owned()).to_string();
    let leak = Value::String(format!("Sure. {LEAKED_RUN}. Anything else?")).to_string();
    assert!(text.contains(&quoted), "{answer:?} is in the text as written");
    text.replace(&quoted, &leak)
}

/// The first non-empty `content` an event streams.
fn first_streamed_content(events: &[Vec<String>]) -> (usize, String) {
    events
        .iter()
        .enumerate()
        .find_map(|(index, event)| {
            let data = event.iter().find_map(|l| l.strip_prefix("data: "))?;
            let value: Value = serde_json::from_str(data).ok()?;
            let content = value.pointer("/choices/0/delta/content")?.as_str()?;
            (!content.is_empty()).then(|| (index, content.to_owned()))
        })
        .expect("a streamed answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_system_prompt_is_removed_from_every_provider_and_nothing_else() {
    let upstream = FakeUpstream::start().await;
    let Some(app) = gateway_with(&upstream, Backend::Sqlite, Some(SYSTEM_PROMPT)).await else { return };
    let key = app.create_key("ada@example.com").await;
    let mut exchanges = Vec::new();
    for fixture in fixtures() {
        let value: Value = serde_json::from_str(&fixture.answer).expect("json");
        let content = value.pointer("/choices/0/message/content").and_then(Value::as_str).expect("content");
        for (variant, body) in answer_variants(&leaking(&fixture.answer, content)) {
            let case = Case {
                id: format!("{}-leak-answer-{variant}", fixture.name),
                streamed: false,
                asked_usage: false,
                expected: body.replace(LEAKED_RUN, MARKER),
                sent: body,
                usage: fixture.answer_usage,
            };
            exchanges.push(exchange(&app, &key, &upstream, case).await);
        }
        let (at, content) = first_streamed_content(&fixture.events);
        let mut events = fixture.events.clone();
        events[at] = events[at].iter().map(|line| leaking(line, &content)).collect();
        for (variant, form, line_end) in SSE_VARIANTS {
            let case = Case {
                id: format!("{}-leak-stream-{variant}", fixture.name),
                streamed: true,
                asked_usage: false,
                sent: render(&events, form, line_end),
                expected: render(&without_usage_only(&events), form, line_end).replace(LEAKED_RUN, MARKER),
                usage: fixture.stream_usage,
            };
            exchanges.push(exchange(&app, &key, &upstream, case).await);
        }
    }
    assert!(exchanges.iter().all(|e| e.case.sent.contains(LEAKED_RUN) && !e.case.expected.contains("HARBOR")));
    let as_expected = |e: &&Exchange| e.received == e.case.expected;
    let wrong: Vec<String> = exchanges.iter().filter(|e| !as_expected(e)).map(Exchange::describe).collect();
    assert!(wrong.is_empty(), "{} of {} wrong:\n{}", wrong.len(), exchanges.len(), wrong.join("\n"));
}
