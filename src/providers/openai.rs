//! The `openai` provider kind: every OpenAI-compatible API (chat and legacy completions,
//! embeddings, the Responses API) spoken natively — a bearer key, the request as the customer
//! sent it (the operator's system prompt placed in its slot), and the answer relayed as it
//! came while its usage is read.
//!
//! The usage reader: token usage and the length of the answer, read from an upstream's JSON
//! (a whole completion, or one streamed chunk's `data`) with serde, so any legal whitespace,
//! key order or string escape reads the same. Fields of an unexpected type count as absent
//! instead of losing the whole document, and nothing here can panic on any input. A streamed
//! chunk that shares the last chunk's layout is read through it (`chunk_layout.rs`, held to
//! serde by a differential test).

use super::chunk_layout::ChunkLayout;
use super::skim::{self, Member};
use super::sse::SseEvent;
use super::{Answer, Api, Outgoing, StreamReader, StreamTally, SystemPrompt, Unencodable, UnreadableAnswer, Wire};
use crate::events::TokenUsage;
use crate::json_bytes::from_bytes;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

/// The `openai` kind.
pub struct OpenAiWire;

impl Wire for OpenAiWire {
    fn serves(&self, api: Api) -> bool {
        api != Api::Messages
    }

    fn upstream_path(&self, api: Api) -> &'static str {
        api.path()
    }

    fn authorize(&self, headers: &mut HeaderMap, key: &SecretString) {
        // A key that is no header value (the house's are checked at start, a customer's as it
        // comes) cannot be sent: the upstream then answers 401 without it.
        if let Ok(mut bearer) = HeaderValue::try_from(format!("Bearer {}", key.expose_secret())) {
            bearer.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, bearer);
        }
    }

    fn encode(&self, outgoing: Outgoing<'_>) -> Result<Vec<u8>, Unencodable> {
        let Outgoing { api, mut request, streamed, request_len, system, .. } = outgoing;
        if streamed && matches!(api, Api::Chat | Api::Completions) {
            request_stream_usage(&mut request);
        }
        let encoded = match (api, system) {
            (Api::Chat, Some(system)) => encode_with_system_message(&request, request_len, system.chat_message),
            (Api::Responses, Some(system)) => {
                prepend_instructions(&mut request, system);
                serde_json::to_vec(&request)
            }
            // Embeddings and legacy completions have no place for a system prompt.
            _ => serde_json::to_vec(&request),
        };
        encoded.map_err(|_| Unencodable("The request could not be encoded.".into()))
    }

    fn answer(&self, api: Api, body: Bytes) -> Result<Answer, UnreadableAnswer> {
        let (usage, answer_chars) = match api {
            Api::Responses => {
                let facts = read_response(&body);
                (facts.usage, facts.answer_chars)
            }
            Api::Embeddings => (read_embeddings_usage(&body), 0),
            _ => {
                let facts = read(&body);
                (facts.usage, facts.answer_chars)
            }
        };
        Ok(Answer { body, usage, answer_chars })
    }

    fn stream(&self, api: Api, client_asked_usage: bool) -> Box<dyn StreamReader> {
        match api {
            Api::Responses => Box::new(ResponsesStream::default()),
            _ => Box::new(ChunkStream {
                strip_usage: !client_asked_usage,
                tally: StreamTally::default(),
                layout: ChunkLayout::default(),
            }),
        }
    }
}

/// The request with the operator's system message (encoded once, at start-up) spliced in
/// first among the messages: a long system prompt then costs a copy per request rather than
/// an encoding. `request_len` (the body as it came) sizes the buffer, so that a long system
/// prompt is not copied again by a reallocation.
pub(super) fn encode_with_system_message(
    request: &Map<String, Value>,
    request_len: usize,
    system_message: &[u8],
) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(request_len + 256 + system_message.len());
    out.push(b'{');
    for (index, (key, value)) in request.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, key)?;
        out.push(b':');
        match value {
            Value::Array(messages) if key == "messages" => {
                out.push(b'[');
                out.extend_from_slice(system_message);
                for message in messages {
                    out.push(b',');
                    serde_json::to_writer(&mut out, message)?;
                }
                out.push(b']');
            }
            _ => serde_json::to_writer(&mut out, value)?,
        }
    }
    out.push(b'}');
    Ok(out)
}

/// The Responses API's system slot: the operator's prompt first, the customer's
/// `instructions` (when a string) after it.
fn prepend_instructions(request: &mut Map<String, Value>, system: SystemPrompt<'_>) {
    let instructions = match request.get("instructions") {
        Some(Value::String(own)) if !own.is_empty() => format!("{}\n\n{own}", system.text),
        _ => system.text.to_owned(),
    };
    request.insert("instructions".into(), Value::String(instructions));
}

/// Sets `stream_options.include_usage` so the stream reports tokens.
fn request_stream_usage(request: &mut Map<String, Value>) {
    let options = request.entry("stream_options").or_insert_with(|| Value::Object(Map::new()));
    if !options.is_object() {
        *options = Value::Object(Map::new());
    }
    if let Value::Object(options) = options {
        options.insert("include_usage".into(), Value::Bool(true));
    }
}

/// Whether the client asked for the usage chunk of a chat or completions stream itself.
pub fn client_asked_stream_usage(request: &Map<String, Value>) -> bool {
    matches!(request.get("stream_options").and_then(|o| o.get("include_usage")), Some(Value::Bool(true)))
}

/// A chat or legacy completions stream: relayed as it came, but for the usage-only chunk
/// the gateway asked for when the client did not. Its chunks are read through the last
/// chunk's layout when they share it.
struct ChunkStream {
    strip_usage: bool,
    tally: StreamTally,
    layout: ChunkLayout,
}

impl StreamReader for ChunkStream {
    fn event(&mut self, event: SseEvent<'_>, _: &mut Vec<u8>) -> bool {
        if event.data == b"[DONE]" {
            self.tally.ended = true;
            return true;
        }
        let facts = self.layout.facts(event.data);
        self.tally.add_answer(facts.answer_chars);
        if facts.usage.is_some() {
            self.tally.usage = facts.usage;
        }
        !(self.strip_usage && facts.usage_only)
    }

    fn tally(&self) -> StreamTally {
        self.tally
    }
}

/// A Responses API stream: typed events, every one relayed; the usage comes with the final
/// response (`response.completed`, or `response.incomplete` / `response.failed`).
#[derive(Default)]
struct ResponsesStream {
    tally: StreamTally,
}

impl StreamReader for ResponsesStream {
    fn event(&mut self, event: SseEvent<'_>, _: &mut Vec<u8>) -> bool {
        let Ok(parsed) = from_bytes::<ResponsesEvent>(event.data) else {
            return true;
        };
        let kind = parsed.kind.unwrap_or_default();
        if kind.ends_with(".delta") {
            self.tally.add_answer(parsed.delta.0);
        }
        if matches!(&*kind, "response.completed" | "response.incomplete" | "response.failed") {
            self.tally.ended = true;
            if let Some(usage) = parsed.response.and_then(|r| r.usage).and_then(WireUsage::tokens) {
                self.tally.usage = Some(usage);
            }
        }
        true
    }

    fn tally(&self) -> StreamTally {
        self.tally
    }
}

#[derive(Deserialize)]
struct ResponsesEvent<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    delta: Chars,
    #[serde(default)]
    response: Option<ResponseBody>,
}

/// A Responses API response object: its usage, and the text of its output items.
#[derive(Deserialize)]
struct ResponseBody {
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    output: Option<Vec<OutputItem>>,
}

#[derive(Deserialize)]
struct OutputItem {
    #[serde(default)]
    content: Option<Vec<OutputPart>>,
    /// A function call's arguments.
    #[serde(default)]
    arguments: Chars,
}

#[derive(Deserialize)]
struct OutputPart {
    #[serde(default)]
    text: Chars,
    #[serde(default)]
    refusal: Chars,
}

/// Usage and answer length of a whole Responses API response.
pub fn read_response(json: &[u8]) -> Facts {
    let Ok(response) = from_bytes::<ResponseBody>(json) else {
        return Facts::default();
    };
    let items = response.output.iter().flatten();
    let answer_chars = items
        .map(|item| {
            let parts = item.content.iter().flatten();
            item.arguments.0 + parts.map(|p| p.text.0 + p.refusal.0).sum::<u64>()
        })
        .sum();
    Facts { usage: response.usage.and_then(WireUsage::tokens), usage_only: false, answer_chars }
}

/// An embeddings answer's usage: prompt tokens only (nothing is generated). The vectors are
/// skimmed, not deserialized (`skim.rs`); serde reads the `usage` member, or the whole answer
/// when the skim leaves it to serde.
pub fn read_embeddings_usage(json: &[u8]) -> Option<TokenUsage> {
    let usage = match skim::top_level_member(json, b"usage") {
        Member::Found(usage) => from_bytes::<Option<WireUsage>>(usage).ok()?,
        Member::Absent => None,
        Member::Unsure => return read_embeddings_usage_with_serde(json),
    };
    embeddings_tokens(usage?)
}

/// The reference the skim is held to (`skim::tests`), and its fallback.
pub(super) fn read_embeddings_usage_with_serde(json: &[u8]) -> Option<TokenUsage> {
    #[derive(Deserialize)]
    struct Embeddings {
        #[serde(default)]
        usage: Option<WireUsage>,
    }
    embeddings_tokens(from_bytes::<Embeddings>(json).ok()?.usage?)
}

fn embeddings_tokens(usage: WireUsage) -> Option<TokenUsage> {
    Some(TokenUsage { prompt_tokens: usage.prompt_tokens.0.or(usage.input_tokens.0)?, ..TokenUsage::default() })
}

/// What one document says that billing needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    pub usage: Option<TokenUsage>,
    /// Usage with no choices: the chunk `stream_options.include_usage` adds at a stream's end.
    pub usage_only: bool,
    /// Characters of answer text (content, refusal, reasoning, tool-call arguments).
    pub answer_chars: u64,
}

/// Reads a completion body or a streamed chunk; anything that is not a JSON object says nothing.
pub fn read(json: &[u8]) -> Facts {
    try_read(json).unwrap_or_default()
}

/// [`read`], `None` for what serde refuses to read as a completion or chunk.
pub(super) fn try_read(json: &[u8]) -> Option<Facts> {
    let envelope = from_bytes::<Envelope>(json).ok()?;
    let choices = envelope.choices.unwrap_or_default();
    Some(Facts {
        usage: envelope.usage.and_then(WireUsage::tokens),
        usage_only: envelope.usage.is_some() && choices.count == 0,
        answer_chars: choices.answer_chars,
    })
}

/// Usage of a whole (non-streamed) completion body, if it reports one.
pub fn usage_of_body(body: &[u8]) -> Option<TokenUsage> {
    read(body).usage
}

/// About four characters a token: the estimate when an upstream never reports its usage.
pub fn estimated_tokens(chars: u64) -> u64 {
    chars.div_ceil(4)
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    choices: Option<Choices>,
}

#[derive(Deserialize, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Count,
    #[serde(default)]
    completion_tokens: Count,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    /// DeepSeek's name for the cached prompt tokens (it sends no `prompt_tokens_details`).
    #[serde(default)]
    prompt_cache_hit_tokens: Count,
    /// The Responses API's names for the same counts.
    #[serde(default)]
    input_tokens: Count,
    #[serde(default)]
    output_tokens: Count,
    #[serde(default)]
    input_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize, Clone, Copy)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Count,
    /// OpenRouter's prompt tokens written to the provider's cache.
    #[serde(default)]
    cache_write_tokens: Count,
}

impl WireUsage {
    /// The usage, when it counts both prompt and completion: a usage object without them
    /// (`{}`, nulls) is no report, and the request is estimated rather than booked as free.
    fn tokens(self) -> Option<TokenUsage> {
        let details = self.prompt_tokens_details.or(self.input_tokens_details);
        Some(TokenUsage {
            prompt_tokens: self.prompt_tokens.0.or(self.input_tokens.0)?,
            cached_tokens: details.and_then(|d| d.cached_tokens.0).or(self.prompt_cache_hit_tokens.0).unwrap_or(0),
            cache_write_tokens: details.and_then(|d| d.cache_write_tokens.0).unwrap_or(0),
            completion_tokens: self.completion_tokens.0.or(self.output_tokens.0)?,
        })
    }
}

/// The `choices` array, summed as it is read (no allocation per chunk).
#[derive(Default)]
struct Choices {
    count: usize,
    answer_chars: u64,
}

/// A choice: `delta` when streamed, `message` when whole, `text` for legacy completions.
/// The text fields counted here and in [`Reply`] are the ones `chunk_layout::is_answer_text`
/// names by path: a field added here goes there too, and into its differential test's
/// generator (`chunk_layout::tests::reply`).
#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Reply>,
    #[serde(default)]
    message: Option<Reply>,
    #[serde(default)]
    text: Chars,
}

#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    content: Chars,
    #[serde(default)]
    refusal: Chars,
    #[serde(default)]
    reasoning: Chars,
    #[serde(default)]
    reasoning_content: Chars,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Deserialize)]
struct ToolCall {
    #[serde(default)]
    function: Option<Function>,
}

#[derive(Deserialize)]
struct Function {
    #[serde(default)]
    arguments: Chars,
}

impl Reply {
    fn chars(&self) -> u64 {
        let calls = self.tool_calls.iter().flatten();
        let arguments: u64 = calls.filter_map(|c| c.function.as_ref()).map(|f| f.arguments.0).sum();
        self.content.0 + self.refusal.0 + self.reasoning.0 + self.reasoning_content.0 + arguments
    }
}

impl<'de> Deserialize<'de> for Choices {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Choices, D::Error> {
        struct ChoicesVisitor;
        impl<'de> Visitor<'de> for ChoicesVisitor {
            type Value = Choices;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of choices")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Choices, A::Error> {
                let mut choices = Choices::default();
                while let Some(choice) = seq.next_element::<Choice>()? {
                    choices.count += 1;
                    let answers = choice.delta.iter().chain(choice.message.iter());
                    choices.answer_chars += choice.text.0 + answers.map(Reply::chars).sum::<u64>();
                }
                Ok(choices)
            }
        }
        deserializer.deserialize_seq(ChoicesVisitor)
    }
}

/// A token count; null or non-numeric is absent, negative is 0, a fraction is cut.
#[derive(Default, Clone, Copy)]
struct Count(Option<u64>);

/// A text's length in characters; null or a non-string counts as 0.
#[derive(Default, Clone, Copy)]
struct Chars(u64);

/// Visits any JSON value, skipping what `Visitor::visit_*` of the wrapped type does not take.
macro_rules! lenient_visitor {
    ($name:ident, $target:ident, $($method:ident($ty:ty) => $body:expr),* $(,)?) => {
        struct $name;
        impl<'de> Visitor<'de> for $name {
            type Value = $target;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            $(fn $method<E: de::Error>(self, v: $ty) -> Result<$target, E> {
                #[allow(clippy::redundant_closure_call)]
                Ok($target(($body)(v)))
            })*
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<$target, E> { Ok($target::default()) }
            fn visit_unit<E: de::Error>(self) -> Result<$target, E> { Ok($target::default()) }
            fn visit_none<E: de::Error>(self) -> Result<$target, E> { Ok($target::default()) }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<$target, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok($target::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$target, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok($target::default())
            }
        }
    };
}

lenient_visitor!(CountVisitor, Count,
    visit_u64(u64) => Some,
    visit_i64(i64) => |v: i64| Some(u64::try_from(v).unwrap_or(0)),
    // `as` saturates: 1e30 is u64::MAX; NaN is not a count.
    visit_f64(f64) => |v: f64| (!v.is_nan()).then_some(if v > 0.0 { v as u64 } else { 0 }),
    visit_str(&str) => |_| None,
);

lenient_visitor!(CharsVisitor, Chars,
    visit_u64(u64) => |_| 0,
    visit_i64(i64) => |_| 0,
    visit_f64(f64) => |_| 0,
    visit_str(&str) => |v: &str| v.chars().count() as u64,
);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Count, D::Error> {
        deserializer.deserialize_any(CountVisitor)
    }
}

impl<'de> Deserialize<'de> for Chars {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Chars, D::Error> {
        deserializer.deserialize_any(CharsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    const USAGE: TokenUsage =
        TokenUsage { prompt_tokens: 1_000_000, cached_tokens: 4, cache_write_tokens: 0, completion_tokens: 7 };

    fn usage_json() -> Value {
        json!({"prompt_tokens": 1_000_000, "completion_tokens": 7, "total_tokens": 1_000_007,
               "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0}})
    }

    #[test]
    fn stream_usage_is_requested_and_the_client_choice_remembered() {
        let mut plain: Map<String, Value> = serde_json::from_str(r#"{"stream":true}"#).expect("json");
        assert!(!client_asked_stream_usage(&plain));
        request_stream_usage(&mut plain);
        assert_eq!(plain["stream_options"]["include_usage"], Value::Bool(true));
        let mut asked: Map<String, Value> =
            serde_json::from_str(r#"{"stream_options":{"include_usage":true,"include_obfuscation":false}}"#)
                .expect("json");
        assert!(client_asked_stream_usage(&asked));
        request_stream_usage(&mut asked);
        assert_eq!(asked["stream_options"]["include_usage"], Value::Bool(true));
        assert_eq!(asked["stream_options"]["include_obfuscation"], Value::Bool(false));
    }

    #[test]
    fn the_system_message_is_spliced_first_exactly_as_an_encoder_would_write_it() {
        let request: Map<String, Value> = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":"hi \"there\""}],"stream":false,"x":{"messages":[1]}}"#,
        )
        .expect("json");
        let system = json!({"role": "system", "content": "Be brief.\nomi-canary-1"});
        let spliced =
            encode_with_system_message(&request, 0, &serde_json::to_vec(&system).expect("encode")).expect("encode");
        let mut expected = request.clone();
        if let Some(Value::Array(messages)) = expected.get_mut("messages") {
            messages.insert(0, system);
        }
        assert_eq!(String::from_utf8(spliced).expect("utf-8"), serde_json::to_string(&expected).expect("encode"));
    }

    #[test]
    fn whitespace_key_order_and_escapes_read_the_same() {
        let variants: [&[u8]; 4] = [
            br#"{"id":"c","choices":[],"usage":{"prompt_tokens":1000000,"completion_tokens":7,"prompt_tokens_details":{"cached_tokens":4}}}"#,
            b"{ \"usage\" : {\n  \"completion_tokens\": 7,\n  \"prompt_tokens_details\": { \"cached_tokens\": 4 },\n  \"prompt_tokens\": 1000000\n },\n \"choices\": [ ]\n}",
            br#"{"choices":[],"\u0075sage":{"prompt_tokens":1e6,"completion_tokens":7.0,"prompt_tokens_details":{"cached_tokens":4}}}"#,
            b"\t{\"usage\":{\"prompt_tokens\":1000000,\"completion_tokens\":7,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\r\n",
        ];
        for variant in variants {
            let facts = read(variant);
            assert_eq!(facts.usage, Some(USAGE), "{}", String::from_utf8_lossy(variant));
            assert!(facts.usage_only);
        }
    }

    #[test]
    fn deepseeks_cache_hits_are_the_cached_tokens() {
        let deepseek = br#"{"choices":[],"usage":{"prompt_tokens":80,"completion_tokens":18,"total_tokens":98,
            "prompt_cache_hit_tokens":64,"prompt_cache_miss_tokens":16}}"#;
        assert_eq!(
            read(deepseek).usage,
            Some(TokenUsage { prompt_tokens: 80, cached_tokens: 64, cache_write_tokens: 0, completion_tokens: 18 })
        );
        let both = br#"{"usage":{"prompt_tokens":80,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":32},"prompt_cache_hit_tokens":64}}"#;
        assert_eq!(read(both).usage.map(|u| u.cached_tokens), Some(32), "OpenAI's own field wins");
    }

    #[test]
    fn odd_fields_count_as_absent_and_a_usage_without_counts_is_no_report() {
        let body = br#"{"choices":[{"message":{"content":["part"],"refusal":null,"tool_calls":[{"function":{"arguments":"{\"a\":1}"}}]}}],
            "usage":{"prompt_tokens":null,"completion_tokens":"many","prompt_tokens_details":null,"extra":{"x":[1]}}}"#;
        let facts = read(body);
        assert_eq!(facts.usage, None, "no counts: no report, so the request is estimated, never free");
        assert!(!facts.usage_only);
        assert_eq!(facts.answer_chars, 7, "the tool call's arguments");
        let partial = br#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":-3,"prompt_tokens_details":{"cached_tokens":"x"}}}"#;
        assert_eq!(
            read(partial).usage,
            Some(TokenUsage { prompt_tokens: 12, completion_tokens: 0, ..TokenUsage::default() })
        );
        let empty = read(br#"{"choices":[],"usage":{}}"#);
        assert!(empty.usage.is_none() && empty.usage_only, "still the usage chunk: removed, but not booked as zero");
        assert_eq!(read(b"[1,2]"), Facts::default());
        assert_eq!(read(b"{\"usage\":null,\"choices\":[]}"), Facts::default());
    }

    #[test]
    fn answer_text_is_counted_in_characters_after_unescaping() {
        let chunk = br#"{"choices":[{"delta":{"content":"h\u00e9\n\"","reasoning_content":"ab"}},{"delta":{"refusal":"no"}}],"usage":null}"#;
        assert_eq!(read(chunk), Facts { usage: None, usage_only: false, answer_chars: 8 });
        assert_eq!(estimated_tokens(8), 2);
        assert_eq!(estimated_tokens(9), 3);
    }

    #[test]
    fn body_usage_is_parsed() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":13,"completion_tokens":5,"total_tokens":18}}"#;
        assert_eq!(
            usage_of_body(body),
            Some(TokenUsage { prompt_tokens: 13, completion_tokens: 5, ..TokenUsage::default() })
        );
        assert_eq!(usage_of_body(b"{}"), None);
    }

    /// Writes `value` with the given whitespace and `\u` escapes for some key letters.
    fn write_variant(value: &Value, pretty: bool, escape_keys: bool) -> Vec<u8> {
        fn write(value: &Value, pretty: bool, escape_keys: bool, depth: usize, out: &mut String) {
            let (newline, indent, colon) =
                if pretty { ("\n", "  ".repeat(depth + 1), " : ") } else { ("", String::new(), ":") };
            match value {
                Value::Object(map) => {
                    out.push('{');
                    for (index, (key, value)) in map.iter().enumerate() {
                        out.push_str(if index > 0 { "," } else { "" });
                        out.push_str(newline);
                        out.push_str(&indent);
                        let key = if escape_keys {
                            key.chars().map(|c| format!("\\u{:04x}", u32::from(c))).collect()
                        } else {
                            key.clone()
                        };
                        out.push_str(&format!("\"{key}\"{colon}"));
                        write(value, pretty, escape_keys, depth + 1, out);
                    }
                    out.push_str(newline);
                    out.push('}');
                }
                Value::Array(items) => {
                    out.push('[');
                    for (index, item) in items.iter().enumerate() {
                        out.push_str(if index > 0 { ", " } else { "" });
                        write(item, pretty, escape_keys, depth + 1, out);
                    }
                    out.push(']');
                }
                other => out.push_str(&other.to_string()),
            }
        }
        let mut out = String::new();
        write(value, pretty, escape_keys, 0, &mut out);
        out.into_bytes()
    }

    /// A chunk as OpenAI-compatible servers write them, keys in a generated order.
    fn chunk(content: &str, with_usage: bool, order: &[usize]) -> Value {
        let mut fields = vec![
            ("id", json!("chatcmpl-1")),
            ("object", json!("chat.completion.chunk")),
            ("choices", if with_usage { json!([]) } else { json!([{"index": 0, "delta": {"content": content}}]) }),
            ("usage", if with_usage { usage_json() } else { Value::Null }),
            ("model", json!("gpt-4o-mini")),
        ];
        let mut ordered = serde_json::Map::new();
        for &index in order {
            let index = index % fields.len();
            let (key, value) = fields.remove(index);
            ordered.insert(key.into(), value);
        }
        for (key, value) in fields {
            ordered.insert(key.into(), value);
        }
        Value::Object(ordered)
    }

    fn event(data: &str) -> SseEvent<'_> {
        SseEvent { event_type: b"", data: data.as_bytes() }
    }

    #[test]
    fn a_responses_stream_is_billed_from_its_final_response_and_relayed_whole() {
        for end in ["response.completed", "response.incomplete", "response.failed"] {
            let mut stream = OpenAiWire.stream(Api::Responses, false);
            let mut out = Vec::new();
            assert!(stream.event(event(r#"{"type":"response.created","response":{"usage":null}}"#), &mut out));
            assert!(
                stream.event(event(r#"{"type":"response.output_text.delta","output_index":0,"delta":"Hé"}"#), &mut out)
            );
            assert!(stream.event(event(r#"{"type":"response.function_call_arguments.delta","delta":"{}"}"#), &mut out));
            assert_eq!((stream.tally().usage, stream.tally().ended), (None, false));
            let last = format!(
                r#"{{"type":"{end}","response":{{"usage":{{"input_tokens":50,"input_tokens_details":{{"cached_tokens":20}},"output_tokens":9,"output_tokens_details":{{"reasoning_tokens":4}}}}}}}}"#
            );
            assert!(stream.event(event(&last), &mut out));
            assert!(out.is_empty());
            let tally = stream.tally();
            let usage = tally.usage.expect("usage");
            assert_eq!((usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens), (50, 20, 9), "{end}");
            assert_eq!((tally.answer_chars, tally.answer_events, tally.ended), (4, 2, true));
        }
    }

    #[test]
    fn whole_answers_of_each_api_are_read() {
        let response = br#"{"object":"response","output":[{"type":"message","content":[{"type":"output_text","text":"abc"}]},{"type":"function_call","arguments":"{}"}],
            "usage":{"input_tokens":11,"input_tokens_details":{"cached_tokens":3},"output_tokens":5}}"#;
        let answer = OpenAiWire.answer(Api::Responses, Bytes::from_static(response)).expect("reads");
        assert_eq!(answer.usage.map(|u| (u.prompt_tokens, u.cached_tokens, u.completion_tokens)), Some((11, 3, 5)));
        assert_eq!(answer.answer_chars, 5);
        let embeddings =
            br#"{"object":"list","data":[{"embedding":"AAAA"}],"usage":{"prompt_tokens":8,"total_tokens":8}}"#;
        let answer = OpenAiWire.answer(Api::Embeddings, Bytes::from_static(embeddings)).expect("reads");
        assert_eq!(answer.usage.map(|u| (u.prompt_tokens, u.completion_tokens)), Some((8, 0)), "nothing generated");
        assert_eq!(read_embeddings_usage(b"{\"usage\":{}}"), None, "no count: estimated, never free");
        let completion =
            br#"{"choices":[{"text":"four","index":0}],"usage":{"prompt_tokens":2,"completion_tokens":1}}"#;
        let answer = OpenAiWire.answer(Api::Completions, Bytes::from_static(completion)).expect("reads");
        assert_eq!((answer.answer_chars, answer.usage.map(|u| u.completion_tokens)), (4, Some(1)));
    }

    #[test]
    fn the_operators_prompt_leads_the_responses_instructions() {
        let system = SystemPrompt { text: "House rules.", chat_message: b"{}" };
        let mut own: Map<String, Value> = serde_json::from_str(r#"{"instructions":"Mine."}"#).expect("json");
        prepend_instructions(&mut own, system);
        assert_eq!(own["instructions"], "House rules.\n\nMine.");
        let mut none = Map::new();
        prepend_instructions(&mut none, system);
        assert_eq!(none["instructions"], "House rules.");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        /// The fuzz target of the usage reader on arbitrary bytes: it never panics, and says
        /// nothing about what is not JSON.
        #[test]
        fn fuzz_usage_reader_never_panics_on_arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..200)) {
            let facts = read(&input);
            if serde_json::from_slice::<Value>(&input).is_err() {
                prop_assert_eq!(facts, Facts::default());
            }
        }

        /// Generated JSON variants (compact, pretty-printed, keys reordered, keys escaped)
        /// of one chunk read the same as its compact form.
        #[test]
        fn fuzz_usage_reader_reads_every_json_variant_alike(
            content in "\\PC{0,12}",
            with_usage in any::<bool>(),
            order in proptest::collection::vec(0usize..5, 0..5),
            pretty in any::<bool>(),
            escape_keys in any::<bool>(),
        ) {
            let value = chunk(&content, with_usage, &order);
            let facts = read(&write_variant(&value, pretty, escape_keys));
            prop_assert_eq!(facts, read(&serde_json::to_vec(&value).expect("encode")));
            prop_assert_eq!(facts.usage, with_usage.then_some(USAGE));
            prop_assert_eq!(facts.usage_only, with_usage);
            let chars = if with_usage { 0 } else { content.chars().count() as u64 };
            prop_assert_eq!(facts.answer_chars, chars);
        }
    }
}
