//! The `anthropic` provider kind's wire format: OpenAI chat completions translated to Anthropic's
//! Messages API and back — request bodies, answers, streamed events, usage and errors.
//!
//! Pure functions over JSON, so every rule is tested without a socket; the pipeline decides when
//! to call them. What has no Messages equivalent is refused with a clear message rather than
//! dropped silently, except parameters that cannot change the answer's meaning (see
//! [`IGNORED_FIELDS`]).

use super::chunk_layout::DeltaLayout;
use super::message_facts::MessageFacts;
use super::sse::SseEvent;
use super::{Answer, Api, Outgoing, StreamReader, StreamTally, SystemPrompt, Unencodable, UnreadableAnswer, Wire};
use crate::events::TokenUsage;
use crate::json_bytes::from_bytes;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};

/// The `anthropic` kind: the Messages API natively (`/v1/messages`), and chat completions
/// translated to it and back.
pub struct AnthropicWire;

impl Wire for AnthropicWire {
    fn serves(&self, api: Api) -> bool {
        matches!(api, Api::Chat | Api::Messages)
    }

    fn upstream_path(&self, _: Api) -> &'static str {
        "/messages"
    }

    fn authorize(&self, headers: &mut HeaderMap, key: &SecretString) {
        // See `OpenAiWire::authorize` for a key that is no header value.
        if let Ok(mut key) = HeaderValue::try_from(key.expose_secret()) {
            key.set_sensitive(true);
            headers.insert("x-api-key", key);
        }
        headers.insert("anthropic-version", HeaderValue::from_static(API_VERSION));
    }

    fn encode(&self, outgoing: Outgoing<'_>) -> Result<Vec<u8>, Unencodable> {
        let Outgoing { api, mut request, upstream_model, system, .. } = outgoing;
        let messages = match api {
            Api::Chat => {
                if let (Some(system), Some(Value::Array(messages))) = (system, request.get_mut("messages")) {
                    messages.insert(0, json!({"role": "system", "content": system.text}));
                }
                chat_to_messages(&request, upstream_model)?
            }
            _ => {
                if let Some(system) = system {
                    prepend_system(&mut request, system);
                }
                request
            }
        };
        serde_json::to_vec(&messages).map_err(|_| Unencodable("The request could not be encoded.".into()))
    }

    fn answer(&self, api: Api, body: Bytes) -> Result<Answer, UnreadableAnswer> {
        const NOT_JSON: UnreadableAnswer = UnreadableAnswer("The upstream answer is not JSON.");
        if api == Api::Messages {
            let MessageFacts { usage, answer_chars } = MessageFacts::read(&body).map_err(|_| NOT_JSON)?;
            return Ok(Answer { body, usage, answer_chars });
        }
        let message: Value = from_bytes(&body).map_err(|_| NOT_JSON)?;
        let MessageFacts { usage, answer_chars } = MessageFacts::of_value(&message);
        let chat = message_to_chat(&message, chrono::Utc::now().timestamp())
            .ok_or(UnreadableAnswer("The upstream answer is not a message."))?;
        let body = serde_json::to_vec(&chat).map_err(|_| UnreadableAnswer("The answer could not be encoded."))?;
        Ok(Answer { body: Bytes::from(body), usage, answer_chars })
    }

    fn stream(&self, api: Api, client_asked_usage: bool) -> Box<dyn StreamReader> {
        match api {
            Api::Chat => Box::new(ChatFromMessages {
                translator: ChunkTranslator::new(chrono::Utc::now().timestamp(), client_asked_usage),
            }),
            _ => Box::new(MessagesStream::default()),
        }
    }
}

/// The Messages API's system slot: the operator's prompt as the first system block, before
/// the customer's own (a string or blocks, kept as they are — `cache_control` included).
fn prepend_system(request: &mut Map<String, Value>, system: SystemPrompt<'_>) {
    let operator = json!({"type": "text", "text": system.text});
    let blocks = match request.remove("system") {
        Some(Value::String(own)) if !own.is_empty() => vec![operator, json!({"type": "text", "text": own})],
        Some(Value::Array(mut own)) => {
            own.insert(0, operator);
            own
        }
        _ => vec![operator],
    };
    request.insert("system".into(), Value::Array(blocks));
}

/// Characters of answer in a `content_block_delta`'s delta (text, thinking or tool input).
pub(super) fn delta_chars(delta: &Value) -> u64 {
    let texts = ["text", "thinking", "partial_json"].iter().filter_map(|f| delta.get(*f).and_then(Value::as_str));
    texts.map(|t| t.chars().count() as u64).sum()
}

/// A native Messages stream: relayed as it came while its usage is read (`message_start`
/// carries the input counts, `message_delta` the final ones).
/// Its text deltas are read through the last delta's layout when they share it.
#[derive(Default)]
struct MessagesStream {
    usage: Usage,
    tally: StreamTally,
    deltas: DeltaLayout,
}

impl StreamReader for MessagesStream {
    fn event(&mut self, event: SseEvent<'_>, _: &mut Vec<u8>) -> bool {
        if let Some(chars) = self.deltas.read(event.data) {
            self.tally.add_answer(chars);
            return true;
        }
        let Ok(parsed) = from_bytes::<Value>(event.data) else {
            return true;
        };
        match parsed.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                if let Some(usage) = parsed.get("message").and_then(|m| m.get("usage")) {
                    self.usage.update(usage);
                }
            }
            Some("content_block_delta") => {
                let chars = parsed.get("delta").map_or(0, delta_chars);
                self.tally.add_answer(chars);
                self.deltas.keep(event.data, chars);
            }
            Some("message_delta") => {
                if let Some(usage) = parsed.get("usage") {
                    self.usage.update(usage);
                    // The counts are final only now: a stream cut before is estimated.
                    self.tally.usage = Some(self.usage.token_usage());
                }
            }
            Some("message_stop") => self.tally.ended = true,
            _ => {}
        }
        true
    }

    fn tally(&self) -> StreamTally {
        self.tally
    }
}

/// A Messages stream translated into `chat.completion.chunk` events.
struct ChatFromMessages {
    translator: ChunkTranslator,
}

impl StreamReader for ChatFromMessages {
    fn event(&mut self, event: SseEvent<'_>, out: &mut Vec<u8>) -> bool {
        if let Err(error) = self.translator.event(event.data, out) {
            tracing::warn!(%error, "an upstream stream event could not be translated");
        }
        false
    }

    fn tally(&self) -> StreamTally {
        self.translator.tally
    }
}

/// The `anthropic-version` header every request carries.
pub const API_VERSION: &str = "2023-06-01";
/// `max_tokens` is required by the Messages API; OpenAI's default is "as many as fit".
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// OpenAI parameters accepted and not sent on: they only steer OpenAI's own storage, sampling
/// reproducibility or transport, never what a Claude model would answer.
const IGNORED_FIELDS: &[&str] = &["store", "service_tier", "metadata", "seed", "stream_options", "prediction"];

impl From<TranslateError> for Unencodable {
    fn from(error: TranslateError) -> Unencodable {
        Unencodable(error.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// A field or value the Messages API cannot express.
    #[error("{0} is not supported for Claude models.")]
    Unsupported(String),
    /// The request itself is malformed.
    #[error("{0}")]
    Invalid(String),
}

fn unsupported(what: impl Into<String>) -> TranslateError {
    TranslateError::Unsupported(what.into())
}

fn invalid(what: impl Into<String>) -> TranslateError {
    TranslateError::Invalid(what.into())
}

/// An OpenAI chat completions request as a Messages request for `upstream_model`.
pub fn chat_to_messages(chat: &Map<String, Value>, upstream_model: &str) -> Result<Map<String, Value>, TranslateError> {
    let mut out = Map::new();
    out.insert("model".into(), Value::String(upstream_model.to_owned()));
    let mut max_tokens = None;
    let mut thinking_budget = None;
    for (field, value) in chat {
        match field.as_str() {
            "model" | "messages" => {}
            "max_tokens" | "max_completion_tokens" => {
                let n = value
                    .as_u64()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| invalid(format!("{field} must be a positive integer.")))?;
                max_tokens = Some(n);
            }
            "temperature" => {
                let t = value.as_f64().ok_or_else(|| invalid("temperature must be a number."))?;
                if !(0.0..=1.0).contains(&t) {
                    return Err(unsupported("A temperature outside 0 to 1"));
                }
                out.insert("temperature".into(), value.clone());
            }
            "top_p" | "top_k" => {
                out.insert(field.clone(), value.clone());
            }
            "stream" => {
                out.insert("stream".into(), Value::Bool(value.as_bool().unwrap_or(false)));
            }
            "stop" => {
                let stops = match value {
                    Value::Null => continue,
                    Value::String(s) => vec![Value::String(s.clone())],
                    Value::Array(items) if items.iter().all(Value::is_string) => items.clone(),
                    _ => return Err(invalid("stop must be a string or an array of strings.")),
                };
                out.insert("stop_sequences".into(), Value::Array(stops));
            }
            "user" => {
                if let Some(user) = value.as_str() {
                    out.insert("metadata".into(), json!({"user_id": user}));
                }
            }
            "tools" => {
                out.insert("tools".into(), tools(value)?);
            }
            "tool_choice" => {
                out.insert("tool_choice".into(), tool_choice(value)?);
            }
            "parallel_tool_calls" => {}
            "reasoning_effort" => thinking_budget = reasoning_budget(value)?,
            "thinking" => {
                out.insert("thinking".into(), value.clone());
            }
            "n" if value.as_u64().is_none_or(|n| n == 1) => {}
            "logprobs" if !value.as_bool().unwrap_or(false) => {}
            "frequency_penalty" | "presence_penalty" if value.as_f64().is_none_or(|p| p == 0.0) => {}
            "response_format" if value.get("type").and_then(Value::as_str).is_none_or(|t| t == "text") => {}
            "logit_bias" if value.as_object().is_none_or(Map::is_empty) => {}
            ignored if IGNORED_FIELDS.contains(&ignored) => {}
            other => return Err(unsupported(format!("The field `{other}` (with this value)"))),
        }
    }
    if chat.get("parallel_tool_calls").and_then(Value::as_bool) == Some(false) {
        let choice = out.entry("tool_choice").or_insert_with(|| json!({"type": "auto"}));
        if let Some(choice) = choice.as_object_mut() {
            choice.insert("disable_parallel_tool_use".into(), Value::Bool(true));
        }
    }
    let messages = chat.get("messages").ok_or_else(|| invalid("messages is required."))?;
    let (system, messages) = split_messages(messages)?;
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(budget) = thinking_budget {
        out.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": budget}));
    }
    // Thinking tokens count against max_tokens: a budget without room for an answer is refused upstream.
    let budget = out.get("thinking").and_then(|t| t.get("budget_tokens")).and_then(Value::as_u64);
    let max_tokens = match (max_tokens, budget) {
        (Some(n), Some(b)) if n <= b => {
            return Err(invalid(format!("max_tokens ({n}) must be larger than the thinking budget ({b}).")));
        }
        (Some(n), _) => n,
        (None, Some(b)) => b.saturating_add(DEFAULT_MAX_TOKENS),
        (None, None) => DEFAULT_MAX_TOKENS,
    };
    out.insert("max_tokens".into(), Value::from(max_tokens));
    Ok(out)
}

/// OpenAI's `reasoning_effort` as a thinking budget in tokens (`None`: no extended thinking).
fn reasoning_budget(value: &Value) -> Result<Option<u64>, TranslateError> {
    match value.as_str() {
        Some("none" | "minimal") => Ok(None),
        Some("low") => Ok(Some(1024)),
        Some("medium") => Ok(Some(2048)),
        Some("high") => Ok(Some(4096)),
        _ => Err(invalid("reasoning_effort must be one of none, minimal, low, medium, high.")),
    }
}

/// The system and developer messages become the top-level `system` blocks (in order); the others
/// become messages, consecutive ones of the same Anthropic role merged (tool results are user
/// turns, and Anthropic wants all results of one assistant turn in the next user message).
fn split_messages(messages: &Value) -> Result<(Vec<Value>, Vec<Value>), TranslateError> {
    let messages = messages.as_array().ok_or_else(|| invalid("messages must be an array."))?;
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("messages[{i}].role is required.")))?;
        let (anthropic_role, blocks) = match role {
            "system" | "developer" => {
                system.extend(text_blocks(message.get("content"), i)?);
                continue;
            }
            "user" => ("user", user_blocks(message.get("content"), i)?),
            "assistant" => ("assistant", assistant_blocks(message, i)?),
            "tool" => ("user", vec![tool_result(message, i)?]),
            "function" => return Err(unsupported("The deprecated `function` role (use tools)")),
            other => return Err(invalid(format!("messages[{i}].role `{other}` is not a known role."))),
        };
        match turns.last_mut() {
            Some((last, existing)) if *last == anthropic_role => existing.extend(blocks),
            _ => turns.push((anthropic_role, blocks)),
        }
    }
    let turns = turns.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect();
    Ok((system, turns))
}

/// Content that may only hold text (system, developer and tool messages).
fn text_blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![json!({"type": "text", "text": text})]),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") => text_part(part, i),
                _ => Err(unsupported(format!("Non-text content in messages[{i}]"))),
            })
            .collect(),
        Some(_) => Err(invalid(format!("messages[{i}].content must be a string or an array of parts."))),
    }
}

fn text_part(part: &Value, i: usize) -> Result<Value, TranslateError> {
    let text = part
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("messages[{i}]: a text part needs `text`.")))?;
    let mut block = json!({"type": "text", "text": text});
    // Anthropic's prompt caching marker, as LiteLLM and OpenRouter accept it on OpenAI-shaped parts.
    if let Some(cache) = part.get("cache_control") {
        block["cache_control"] = cache.clone();
    }
    Ok(block)
}

fn user_blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>, TranslateError> {
    let Some(Value::Array(parts)) = content else {
        return text_blocks(content, i);
    };
    parts
        .iter()
        .map(|part| match part.get("type").and_then(Value::as_str) {
            Some("text") => text_part(part, i),
            Some("image_url") => image_block(part, i),
            Some(other) => Err(unsupported(format!("The content part type `{other}`"))),
            None => Err(invalid(format!("messages[{i}]: every content part needs a `type`."))),
        })
        .collect()
}

/// `image_url` parts: a `data:` URL becomes a base64 source, anything else a URL source.
fn image_block(part: &Value, i: usize) -> Result<Value, TranslateError> {
    let url = part
        .get("image_url")
        .and_then(|image| image.get("url").or(Some(image)))
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("messages[{i}]: an image_url part needs a url.")))?;
    let source = match url.strip_prefix("data:") {
        Some(data) => {
            let (media_type, payload) = data
                .split_once(";base64,")
                .ok_or_else(|| invalid(format!("messages[{i}]: a data URL image must be base64.")))?;
            json!({"type": "base64", "media_type": media_type, "data": payload})
        }
        None => json!({"type": "url", "url": url}),
    };
    Ok(json!({"type": "image", "source": source}))
}

fn assistant_blocks(message: &Value, i: usize) -> Result<Vec<Value>, TranslateError> {
    let mut blocks: Vec<Value> = text_blocks(message.get("content"), i)?
        .into_iter()
        .filter(|block| block["text"].as_str().is_some_and(|t| !t.is_empty()))
        .collect();
    let calls = match message.get("tool_calls") {
        None | Some(Value::Null) => return Ok(blocks),
        Some(Value::Array(calls)) => calls,
        Some(_) => return Err(invalid(format!("messages[{i}].tool_calls must be an array."))),
    };
    for call in calls {
        let id = call.get("id").and_then(Value::as_str);
        let function = call.get("function");
        let name = function.and_then(|f| f.get("name")).and_then(Value::as_str);
        let (Some(id), Some(name)) = (id, name) else {
            return Err(invalid(format!("messages[{i}].tool_calls: each call needs an id and a function name.")));
        };
        let arguments = function.and_then(|f| f.get("arguments")).and_then(Value::as_str).unwrap_or("{}");
        let input: Value = if arguments.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(arguments)
                .map_err(|_| invalid(format!("messages[{i}].tool_calls: the arguments of `{name}` are not JSON.")))?
        };
        blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
    }
    Ok(blocks)
}

fn tool_result(message: &Value, i: usize) -> Result<Value, TranslateError> {
    let id = message
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("messages[{i}]: a tool message needs tool_call_id.")))?;
    Ok(json!({"type": "tool_result", "tool_use_id": id, "content": text_blocks(message.get("content"), i)?}))
}

fn tools(value: &Value) -> Result<Value, TranslateError> {
    let tools = value.as_array().ok_or_else(|| invalid("tools must be an array."))?;
    tools
        .iter()
        .map(|tool| {
            if tool.get("type").and_then(Value::as_str) != Some("function") {
                return Err(unsupported("A tool whose type is not `function`"));
            }
            let function = tool.get("function").ok_or_else(|| invalid("a function tool needs `function`."))?;
            let name = function.get("name").and_then(Value::as_str).ok_or_else(|| invalid("a function tool needs a name."))?;
            let mut out = json!({
                "name": name,
                "input_schema": function.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            });
            if let Some(description) = function.get("description") {
                out["description"] = description.clone();
            }
            Ok(out)
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

fn tool_choice(value: &Value) -> Result<Value, TranslateError> {
    match value {
        Value::String(mode) => match mode.as_str() {
            "auto" => Ok(json!({"type": "auto"})),
            "none" => Ok(json!({"type": "none"})),
            "required" => Ok(json!({"type": "any"})),
            _ => Err(invalid("tool_choice must be auto, none, required or a function.")),
        },
        Value::Object(choice) => {
            let name = choice.get("function").and_then(|f| f.get("name")).and_then(Value::as_str);
            name.map(|name| json!({"type": "tool", "name": name}))
                .ok_or_else(|| invalid("tool_choice names a function by function.name."))
        }
        _ => Err(invalid("tool_choice must be auto, none, required or a function.")),
    }
}

/// A Messages `stop_reason` as OpenAI's `finish_reason`.
fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// Token usage as the Messages API reports it. Input tokens exclude cached ones: what was read
/// from the cache and what was written to it are counted apart, each with its own price.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
}

impl Usage {
    /// Takes every count present in a `usage` object (a later event's counts replace earlier ones:
    /// `message_delta` carries the final, cumulative numbers).
    pub fn update(&mut self, usage: &Value) {
        let fields = [
            ("input_tokens", &mut self.input_tokens),
            ("output_tokens", &mut self.output_tokens),
            ("cache_creation_input_tokens", &mut self.cache_creation_input_tokens),
            ("cache_read_input_tokens", &mut self.cache_read_input_tokens),
        ];
        for (name, slot) in fields {
            if let Some(n) = usage.get(name).and_then(Value::as_u64) {
                *slot = n;
            }
        }
    }

    /// Every prompt token, however it was billed: what OpenAI calls `prompt_tokens`.
    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.cache_read_input_tokens).saturating_add(self.cache_creation_input_tokens)
    }

    pub fn token_usage(&self) -> TokenUsage {
        TokenUsage {
            prompt_tokens: self.prompt_tokens(),
            cached_tokens: self.cache_read_input_tokens,
            cache_write_tokens: self.cache_creation_input_tokens,
            completion_tokens: self.output_tokens,
        }
    }

    /// OpenAI's `usage` object (with OpenRouter's `cache_write_tokens` for what was written).
    pub fn to_openai(&self) -> Value {
        let prompt = self.prompt_tokens();
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": self.output_tokens,
            "total_tokens": prompt.saturating_add(self.output_tokens),
            "prompt_tokens_details": {
                "cached_tokens": self.cache_read_input_tokens,
                "cache_write_tokens": self.cache_creation_input_tokens,
            },
        })
    }
}

/// A whole Messages answer as a `chat.completion`; `None` when it is not a message.
pub fn message_to_chat(message: &Value, created: i64) -> Option<Value> {
    if message.get("type").and_then(Value::as_str) != Some("message") {
        return None;
    }
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for block in message.get("content").and_then(Value::as_array).into_iter().flatten() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("thinking") => reasoning.push_str(block.get("thinking").and_then(Value::as_str).unwrap_or_default()),
            Some("tool_use") => calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": block.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                },
            })),
            _ => {}
        }
    }
    let mut reply = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) }});
    if !calls.is_empty() {
        reply["tool_calls"] = Value::Array(calls);
    }
    if !reasoning.is_empty() {
        reply["reasoning_content"] = Value::String(reasoning);
    }
    let mut usage = Usage::default();
    if let Some(reported) = message.get("usage") {
        usage.update(reported);
    }
    let finish = message.get("stop_reason").and_then(Value::as_str).map(finish_reason);
    Some(json!({
        "id": message.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion",
        "created": created,
        "model": message.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{"index": 0, "message": reply, "finish_reason": finish, "logprobs": null}],
        "usage": usage.to_openai(),
    }))
}

/// An Anthropic error body's type and message (`{"type": "error", "error": {"type", "message"}}`).
pub fn error_of_body(body: &[u8]) -> Option<(String, String)> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error")?;
    let kind = error.get("type").and_then(Value::as_str)?.to_owned();
    let message = error.get("message").and_then(Value::as_str).unwrap_or_default().to_owned();
    Some((kind, message))
}

/// Anthropic's error type as OpenAI's `error.type`.
pub fn openai_error_type(anthropic_type: &str) -> &'static str {
    match anthropic_type {
        "invalid_request_error" | "request_too_large" => "invalid_request_error",
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "not_found_error" => "not_found_error",
        "rate_limit_error" => "rate_limit_error",
        _ => "server_error",
    }
}

/// Turns a Messages event stream into `chat.completion.chunk` events, one upstream event at a
/// time (the `data` of each SSE event, already split by the SSE reader).
#[derive(Debug)]
pub struct ChunkTranslator {
    id: String,
    model: String,
    created: i64,
    include_usage: bool,
    usage: Usage,
    /// What billing needs: the usage once `message_delta` brought the final counts, the
    /// answer's length, and whether `message_stop` came.
    tally: StreamTally,
    /// The OpenAI `tool_calls[].index` of each tool-use content block, by block index.
    tool_blocks: Vec<(u64, usize)>,
}

impl ChunkTranslator {
    /// `include_usage`: the client asked for `stream_options.include_usage` (the usage chunk
    /// comes last, before `[DONE]`, as OpenAI sends it).
    pub fn new(created: i64, include_usage: bool) -> ChunkTranslator {
        ChunkTranslator {
            id: String::new(),
            model: String::new(),
            created,
            include_usage,
            usage: Usage::default(),
            tally: StreamTally::default(),
            tool_blocks: Vec::new(),
        }
    }

    /// The usage reported so far (final once `message_delta` was seen).
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Whether the stream reached `message_stop`.
    pub fn finished(&self) -> bool {
        self.tally.ended
    }

    /// Translates one event's `data`, appending the SSE events for the client to `out`.
    pub fn event(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), TranslateError> {
        let event: Value = from_bytes(data).map_err(|_| invalid("The upstream sent an event that is not JSON."))?;
        match event.get("type").and_then(Value::as_str).unwrap_or_default() {
            "message_start" => {
                let message = event.get("message").unwrap_or(&Value::Null);
                self.id = message.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
                self.model = message.get("model").and_then(Value::as_str).unwrap_or_default().to_owned();
                if let Some(usage) = message.get("usage") {
                    self.usage.update(usage);
                }
                self.chunk(json!({"role": "assistant", "content": ""}), None, out);
            }
            "content_block_start" => {
                let block = event.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(text) = block.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                            self.chunk(json!({"content": text}), None, out);
                        }
                    }
                    Some("tool_use") => {
                        let call_index = self.tool_blocks.len();
                        let block_index = event.get("index").and_then(Value::as_u64).unwrap_or_default();
                        self.tool_blocks.push((block_index, call_index));
                        let call = json!({
                            "index": call_index,
                            "id": block.get("id").cloned().unwrap_or(Value::Null),
                            "type": "function",
                            "function": {"name": block.get("name").cloned().unwrap_or(Value::Null), "arguments": ""},
                        });
                        self.chunk(json!({"tool_calls": [call]}), None, out);
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = event.get("delta").unwrap_or(&Value::Null);
                let text = |field: &str| delta.get(field).and_then(Value::as_str).unwrap_or_default().to_owned();
                self.tally.add_answer(delta_chars(delta));
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => self.chunk(json!({"content": text("text")}), None, out),
                    Some("thinking_delta") => self.chunk(json!({"reasoning_content": text("thinking")}), None, out),
                    Some("input_json_delta") => {
                        let block_index = event.get("index").and_then(Value::as_u64).unwrap_or_default();
                        let call_index = self
                            .tool_blocks
                            .iter()
                            .find(|(block, _)| *block == block_index)
                            .map(|(_, call)| *call)
                            .ok_or_else(|| invalid("The upstream sent tool input for a block it never started."))?;
                        let call = json!({"index": call_index, "function": {"arguments": text("partial_json")}});
                        self.chunk(json!({"tool_calls": [call]}), None, out);
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(usage) = event.get("usage") {
                    self.usage.update(usage);
                    self.tally.usage = Some(self.usage.token_usage());
                }
                let stop = event.get("delta").and_then(|d| d.get("stop_reason")).and_then(Value::as_str);
                if let Some(stop) = stop {
                    self.chunk(json!({}), Some(finish_reason(stop)), out);
                }
            }
            "message_stop" => {
                self.tally.ended = true;
                if self.include_usage {
                    let chunk = json!({
                        "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "choices": [], "usage": self.usage.to_openai(),
                    });
                    write_event(&chunk, out);
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
            "error" => {
                let error = event.get("error").unwrap_or(&Value::Null);
                let kind = error.get("type").and_then(Value::as_str).unwrap_or("api_error");
                let message = error.get("message").and_then(Value::as_str).unwrap_or("The upstream provider failed.");
                let body =
                    json!({"error": {"message": message, "type": openai_error_type(kind), "code": "upstream_error"}});
                write_event(&body, out);
            }
            // ping, content_block_stop, and event types added after this was written.
            _ => {}
        }
        Ok(())
    }

    fn chunk(&self, delta: Value, finish: Option<&str>, out: &mut Vec<u8>) {
        let chunk = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        write_event(&chunk, out);
    }
}

fn write_event(value: &Value, out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: ");
    // Writing a Value into a Vec cannot fail: no I/O, and every map key is a string.
    let _ = serde_json::to_writer(&mut *out, value);
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(chat: Value) -> Result<Value, TranslateError> {
        let Value::Object(chat) = chat else { panic!("an object") };
        chat_to_messages(&chat, "claude-haiku-4-5").map(Value::Object)
    }

    #[test]
    fn system_messages_go_to_system_and_roles_merge() {
        let out = translate(json!({
            "model": "anthropic/claude-haiku-4-5",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
                {"role": "user", "content": "Hi", "name": "ada"},
                {"role": "user", "content": [{"type": "text", "text": "again", "cache_control": {"type": "ephemeral"}}]},
                {"role": "assistant", "content": "Bonjour"},
            ],
        }))
        .expect("translates");
        assert_eq!(out["model"], "claude-haiku-4-5");
        assert_eq!(out["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(
            out["system"],
            json!([{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use French."}])
        );
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": [
                    {"type": "text", "text": "Hi"},
                    {"type": "text", "text": "again", "cache_control": {"type": "ephemeral"}},
                ]},
                {"role": "assistant", "content": [{"type": "text", "text": "Bonjour"}]},
            ])
        );
    }

    #[test]
    fn images_by_url_and_base64() {
        let out = translate(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ]}]}))
        .expect("translates");
        assert_eq!(
            out["messages"][0]["content"],
            json!([
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            ])
        );
        let err = translate(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}]}]}));
        assert!(matches!(err, Err(TranslateError::Invalid(_))), "{err:?}");
    }

    #[test]
    fn tools_calls_and_results_round_trip_into_blocks() {
        let out = translate(json!({
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}},
                    {"id": "toolu_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "21C"}]},
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather now",
                       "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
            "parallel_tool_calls": false,
        }))
        .expect("translates");
        assert_eq!(
            out["tools"],
            json!([{"name": "weather", "description": "Weather now",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}])
        );
        assert_eq!(out["tool_choice"], json!({"type": "tool", "name": "weather", "disable_parallel_tool_use": true}));
        assert_eq!(
            out["messages"][1]["content"],
            json!([
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Rome"}},
            ])
        );
        assert_eq!(
            out["messages"][2],
            json!({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "21C"}]},
            ]})
        );
        for (choice, expected) in [("auto", "auto"), ("none", "none"), ("required", "any")] {
            let out = translate(json!({"messages": [], "tool_choice": choice})).expect("translates");
            assert_eq!(out["tool_choice"]["type"], expected);
        }
    }

    #[test]
    fn sampling_stops_and_limits_translate() {
        let out = translate(json!({
            "messages": [{"role": "user", "content": "x"}],
            "max_completion_tokens": 100, "temperature": 0.3, "top_p": 0.9, "stop": "END", "stream": true,
            "user": "customer-7", "n": 1, "seed": 4, "store": false, "frequency_penalty": 0,
            "stream_options": {"include_usage": true},
        }))
        .expect("translates");
        assert_eq!(out["max_tokens"], 100);
        assert_eq!(out["temperature"], 0.3);
        assert_eq!(out["top_p"], 0.9);
        assert_eq!(out["stop_sequences"], json!(["END"]));
        assert_eq!(out["stream"], true);
        assert_eq!(out["metadata"], json!({"user_id": "customer-7"}));
        assert!(out.get("seed").is_none() && out.get("stream_options").is_none() && out.get("n").is_none());
        let out = translate(json!({"messages": [], "stop": ["a", "b"]})).expect("translates");
        assert_eq!(out["stop_sequences"], json!(["a", "b"]));
    }

    #[test]
    fn reasoning_effort_becomes_a_thinking_budget_with_room_for_the_answer() {
        let out = translate(json!({"messages": [], "reasoning_effort": "high"})).expect("translates");
        assert_eq!(out["thinking"], json!({"type": "enabled", "budget_tokens": 4096}));
        assert_eq!(out["max_tokens"], 4096 + DEFAULT_MAX_TOKENS);
        let tight = translate(json!({"messages": [], "reasoning_effort": "medium", "max_tokens": 2048}));
        assert!(matches!(tight, Err(TranslateError::Invalid(ref m)) if m.contains("thinking budget")), "{tight:?}");
        let none = translate(json!({"messages": [], "reasoning_effort": "minimal"})).expect("translates");
        assert!(none.get("thinking").is_none());
    }

    #[test]
    fn what_claude_cannot_do_is_a_clear_refusal() {
        let cases = [
            json!({"messages": [], "n": 2}),
            json!({"messages": [], "logprobs": true}),
            json!({"messages": [], "presence_penalty": 0.5}),
            json!({"messages": [], "temperature": 1.5}),
            json!({"messages": [], "response_format": {"type": "json_object"}}),
            json!({"messages": [], "audio": {"voice": "alloy"}}),
            json!({"messages": [{"role": "function", "name": "f", "content": "x"}]}),
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
            json!({"messages": [], "tools": [{"type": "web_search"}]}),
        ];
        for case in cases {
            let result = translate(case.clone());
            let Err(TranslateError::Unsupported(what)) = &result else { panic!("{case}: {result:?}") };
            let message = TranslateError::Unsupported(what.clone()).to_string();
            assert!(message.ends_with("is not supported for Claude models."), "{message}");
        }
        for case in [
            json!({}),
            json!({"messages": "hi"}),
            json!({"messages": [{"content": "no role"}]}),
            json!({"messages": [{"role": "wizard", "content": "x"}]}),
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": "{not json"}}]}]}),
            json!({"messages": [], "max_tokens": 0}),
        ] {
            assert!(matches!(translate(case.clone()), Err(TranslateError::Invalid(_))), "{case}");
        }
    }

    #[test]
    fn an_answer_becomes_a_chat_completion_with_every_token_counted() {
        let message = json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
            "content": [
                {"type": "thinking", "thinking": "Paris is the capital.", "signature": "sig"},
                {"type": "text", "text": "Let me check. "},
                {"type": "tool_use", "id": "toolu_9", "name": "weather", "input": {"city": "Paris"}},
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 20, "cache_creation_input_tokens": 300, "cache_read_input_tokens": 4000},
        });
        let chat = message_to_chat(&message, 1_700_000_000).expect("a message");
        assert_eq!(chat["object"], "chat.completion");
        assert_eq!(chat["created"], 1_700_000_000);
        let choice = &chat["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "Let me check. ");
        assert_eq!(choice["message"]["reasoning_content"], "Paris is the capital.");
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "weather");
        let arguments: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().expect("string")).expect("json");
        assert_eq!(arguments, json!({"city": "Paris"}));
        assert_eq!(chat["usage"]["prompt_tokens"], 4310);
        assert_eq!(chat["usage"]["completion_tokens"], 20);
        assert_eq!(chat["usage"]["total_tokens"], 4330);
        assert_eq!(chat["usage"]["prompt_tokens_details"], json!({"cached_tokens": 4000, "cache_write_tokens": 300}));
        assert!(message_to_chat(&json!({"type": "error"}), 0).is_none());
    }

    #[test]
    fn usage_saturates_instead_of_wrapping() {
        let mut usage = Usage::default();
        usage.update(&json!({"input_tokens": u64::MAX, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 7,
                             "output_tokens": u64::MAX}));
        assert_eq!(usage.prompt_tokens(), u64::MAX);
        assert_eq!(usage.to_openai()["total_tokens"], u64::MAX);
        assert_eq!(
            usage.token_usage(),
            TokenUsage {
                prompt_tokens: u64::MAX,
                cached_tokens: 5,
                cache_write_tokens: 7,
                completion_tokens: u64::MAX
            }
        );
    }

    /// The events of a streamed answer with text, a tool call and its usage, as the Messages API
    /// documents them (event names omitted: the data carries the type).
    const STREAM: &[&str] = &[
        r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-haiku-4-5","stop_reason":null,"usage":{"input_tokens":25,"cache_read_input_tokens":100,"cache_creation_input_tokens":0,"output_tokens":1}}}"#,
        r#"{"type":"ping"}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Checking"}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"weather","input":{}}}"#,
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\": "}}"#,
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}}"#,
        r#"{"type":"content_block_stop","index":1}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":42}}"#,
        r#"{"type":"message_stop"}"#,
    ];

    fn chunks(include_usage: bool) -> (Vec<Value>, ChunkTranslator) {
        let mut translator = ChunkTranslator::new(7, include_usage);
        let mut out = Vec::new();
        for event in STREAM {
            translator.event(event.as_bytes(), &mut out).expect("translates");
        }
        let text = String::from_utf8(out).expect("utf-8");
        let events = text.split("\n\n").filter(|e| !e.is_empty()).map(|e| {
            let data = e.strip_prefix("data: ").expect("a data line");
            if data == "[DONE]" { Value::String("[DONE]".into()) } else { serde_json::from_str(data).expect("json") }
        });
        (events.collect(), translator)
    }

    #[test]
    fn a_stream_becomes_chunks_with_tool_calls_and_usage_last() {
        let (events, translator) = chunks(true);
        assert!(translator.finished());
        assert_eq!(
            translator.usage().token_usage(),
            TokenUsage { prompt_tokens: 125, cached_tokens: 100, cache_write_tokens: 0, completion_tokens: 42 }
        );
        let deltas: Vec<&Value> = events.iter().filter_map(|e| e.get("choices")?.get(0)?.get("delta")).collect();
        assert_eq!(deltas[0], &json!({"role": "assistant", "content": ""}));
        assert_eq!(deltas[1], &json!({"content": "Checking"}));
        assert_eq!(
            deltas[2]["tool_calls"][0],
            json!({"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": ""}})
        );
        let arguments: String = deltas[3..5]
            .iter()
            .map(|d| d["tool_calls"][0]["function"]["arguments"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(arguments, "{\"city\": \"Paris\"}");
        let finish = &events[events.len() - 3];
        assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
        let usage = &events[events.len() - 2];
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["prompt_tokens"], 125);
        assert_eq!(usage["usage"]["completion_tokens"], 42);
        assert_eq!(events.last(), Some(&Value::String("[DONE]".into())));
        assert!(events.iter().filter_map(|e| e.get("id")).all(|id| id == "msg_1"));
        assert!(events.iter().filter_map(|e| e.get("model")).all(|m| m == "claude-haiku-4-5"));
    }

    #[test]
    fn without_include_usage_no_usage_chunk_reaches_the_client() {
        let (events, translator) = chunks(false);
        assert!(events.iter().all(|e| e.get("usage").is_none()));
        assert_eq!(translator.usage().output_tokens, 42, "metered all the same");
    }

    #[test]
    fn stream_errors_and_garbage() {
        let mut translator = ChunkTranslator::new(0, false);
        let mut out = Vec::new();
        translator
            .event(br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#, &mut out)
            .expect("translates");
        let text = String::from_utf8(out).expect("utf-8");
        let error: Value = serde_json::from_str(text.trim().strip_prefix("data: ").expect("data")).expect("json");
        assert_eq!(error["error"]["type"], "server_error");
        assert_eq!(error["error"]["message"], "Overloaded");
        assert!(!translator.finished());
        assert!(translator.event(b"not json", &mut Vec::new()).is_err());
        let orphan =
            br#"{"type":"content_block_delta","index":5,"delta":{"type":"input_json_delta","partial_json":"{}"}}"#;
        assert!(translator.event(orphan, &mut Vec::new()).is_err());
        let mut out = Vec::new();
        translator.event(br#"{"type":"some_future_event","x":1}"#, &mut out).expect("ignored");
        assert!(out.is_empty());
    }

    #[test]
    fn error_bodies_map_to_openai_types() {
        let body = br#"{"type":"error","error":{"type":"rate_limit_error","message":"Slow down"}}"#;
        let (kind, message) = error_of_body(body).expect("an error");
        assert_eq!((openai_error_type(&kind), message.as_str()), ("rate_limit_error", "Slow down"));
        assert_eq!(openai_error_type("overloaded_error"), "server_error");
        assert_eq!(openai_error_type("invalid_request_error"), "invalid_request_error");
        assert!(error_of_body(b"<html>").is_none());
    }

    fn event(data: &str) -> SseEvent<'_> {
        SseEvent { event_type: b"", data: data.as_bytes() }
    }

    #[test]
    fn a_native_stream_is_relayed_and_its_usage_final_only_with_message_delta() {
        let mut stream = AnthropicWire.stream(Api::Messages, false);
        let mut out = Vec::new();
        let start = r#"{"type":"message_start","message":{"usage":{"input_tokens":10,"cache_read_input_tokens":200,"cache_creation_input_tokens":50,"output_tokens":1}}}"#;
        assert!(stream.event(event(start), &mut out));
        assert_eq!(stream.tally().usage, None, "cut here, the request is estimated: output is not known");
        let delta = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"héllo"}}"#;
        assert!(stream.event(event(delta), &mut out));
        assert!(stream.event(
            event(r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5}}"#),
            &mut out
        ));
        assert!(!stream.tally().ended);
        assert!(stream.event(event(r#"{"type":"message_stop"}"#), &mut out));
        assert!(out.is_empty(), "relayed as it came: nothing written");
        let tally = stream.tally();
        let usage = tally.usage.expect("final");
        assert_eq!((usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens), (260, 200, 5));
        assert_eq!((tally.answer_chars, tally.answer_events, tally.ended), (5, 1, true));
    }

    #[test]
    fn the_operators_prompt_is_the_first_system_block_whatever_the_customer_sent() {
        let system = SystemPrompt { text: "House rules.", chat_message: b"{}" };
        let encode = |request: Value| {
            let Value::Object(request) = request else { panic!("an object") };
            let outgoing = Outgoing {
                api: Api::Messages,
                request,
                upstream_model: "claude-haiku-4-5",
                streamed: false,
                request_len: 0,
                system: Some(system),
            };
            serde_json::from_slice::<Value>(&AnthropicWire.encode(outgoing).expect("encodes")).expect("json")
        };
        let house = json!({"type": "text", "text": "House rules."});
        assert_eq!(encode(json!({"messages": []}))["system"], json!([house]));
        assert_eq!(encode(json!({"system": "Mine."}))["system"], json!([house, {"type": "text", "text": "Mine."}]));
        let cached = json!({"type": "text", "text": "Mine.", "cache_control": {"type": "ephemeral"}});
        assert_eq!(encode(json!({"system": [cached.clone()]}))["system"], json!([house, cached]));
    }

    #[test]
    fn a_whole_message_is_read_natively_or_translated_to_a_chat_completion() {
        let body = Bytes::from_static(br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{"type":"text","text":"Hi!"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":2,"cache_read_input_tokens":4}}"#);
        let native = AnthropicWire.answer(Api::Messages, body.clone()).expect("reads");
        assert_eq!(native.body, body, "relayed byte for byte");
        assert_eq!(native.usage.map(|u| (u.prompt_tokens, u.cached_tokens, u.completion_tokens)), Some((7, 4, 2)));
        let chat = AnthropicWire.answer(Api::Chat, body).expect("translates");
        let chat: Value = serde_json::from_slice(&chat.body).expect("json");
        assert_eq!(chat["choices"][0]["message"]["content"], "Hi!");
        assert_eq!(chat["usage"]["prompt_tokens"], 7);
        let no_usage = AnthropicWire.answer(
            Api::Messages,
            Bytes::from_static(br#"{"type":"message","content":[{"type":"text","text":"abcd"}]}"#),
        );
        let no_usage = no_usage.expect("reads");
        assert_eq!((no_usage.usage, no_usage.answer_chars), (None, 4), "estimated from the text");
        assert!(AnthropicWire.answer(Api::Chat, Bytes::from_static(b"not json")).is_err());
    }
}
