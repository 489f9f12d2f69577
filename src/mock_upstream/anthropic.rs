//! Anthropic's `POST /v1/messages`: a key (`x-api-key` or a bearer), `anthropic-version` and
//! `max_tokens` required; a text block answers, or with `tools` and `mock.tool_call` (or a
//! `tool_choice` of `any` or a named tool) a `tool_use` block.
//! Streamed as `message_start`, content blocks (`text_delta` / `input_json_delta` parts),
//! `message_delta` (stop reason and output tokens) and `message_stop`.

use super::{Call, Usage};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub(super) fn messages(call: Call) -> Response {
    let refuse = |message: &str| error(StatusCode::BAD_REQUEST, message);
    if !call.body["max_tokens"].is_u64() {
        return refuse("max_tokens: Field required");
    }
    if !call.body["messages"].is_array() {
        return refuse("messages: Field required");
    }
    let blocks = match blocks_of(&call) {
        Ok(blocks) => blocks,
        Err(message) => return refuse(&message),
    };
    let usage = call.usage(&["system", "messages"]);
    let stop_reason = if blocks.iter().any(|b| matches!(b, Block::ToolUse { .. })) { "tool_use" } else { "end_turn" };
    let message = |content: Vec<Value>, stop_reason: Value, usage: Value| {
        json!({"id": "msg_mock", "type": "message", "role": "assistant", "model": call.model("claude-sonnet-4-5"),
               "content": content, "stop_reason": stop_reason, "stop_sequence": null, "usage": usage})
    };
    if !call.streamed() {
        let content = blocks.iter().map(Block::whole).collect();
        return call.json(message(content, json!(stop_reason), usage_of(&usage, usage.completion)));
    }

    let sse = call.sse();
    let mut events = vec![sse.event(
        "message_start",
        &json!({"type": "message_start",
        "message": message(vec![], Value::Null, usage_of(&usage, 1))}),
    )];
    for (index, block) in blocks.iter().enumerate() {
        events.push(sse.event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block.opening()}),
        ));
        if index == 0 {
            events.push(sse.event("ping", &json!({"type": "ping"})));
        }
        for delta in block.deltas(&call) {
            events.push(
                sse.event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": delta}),
                ),
            );
        }
        events.push(sse.event("content_block_stop", &json!({"type": "content_block_stop", "index": index})));
    }
    events.push(sse.event(
        "message_delta",
        &json!({"type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": usage.completion}}),
    ));
    let usage_at = events.len() - 1;
    events.push(sse.event("message_stop", &json!({"type": "message_stop"})));
    call.stream(events, Some(usage_at))
}

/// One content block of the answer.
enum Block {
    Text(String),
    ToolUse { name: String, input: Value },
}

impl Block {
    /// The block in a non-streamed answer.
    fn whole(&self) -> Value {
        match self {
            Block::Text(text) => json!({"type": "text", "text": text}),
            Block::ToolUse { name, input } => {
                json!({"type": "tool_use", "id": "toolu_mock", "name": name, "input": input})
            }
        }
    }

    /// The block as `content_block_start` announces it, before its deltas.
    fn opening(&self) -> Value {
        match self {
            Block::Text(_) => json!({"type": "text", "text": ""}),
            Block::ToolUse { name, .. } => json!({"type": "tool_use", "id": "toolu_mock", "name": name, "input": {}}),
        }
    }

    /// The block's deltas: its text, or its input's JSON, in `chunks` pieces (Anthropic opens a
    /// tool's input with an empty `partial_json`).
    fn deltas(&self, call: &Call) -> Vec<Value> {
        match self {
            Block::Text(text) => super::split_content(text, call.chunks())
                .into_iter()
                .map(|piece| json!({"type": "text_delta", "text": piece}))
                .collect(),
            Block::ToolUse { input, .. } => std::iter::once(String::new())
                .chain(super::split_content(&input.to_string(), call.chunks()))
                .map(|piece| json!({"type": "input_json_delta", "partial_json": piece}))
                .collect(),
        }
    }
}

/// The answer's blocks: text, or with `mock.tool_call` a call of one of the request's `tools`
/// (after the text when `mock.content` is given, as Claude often explains first).
fn blocks_of(call: &Call) -> Result<Vec<Block>, String> {
    let steered = call.steer.tool_call.as_ref().filter(|t| **t != Value::Bool(false));
    // As Claude must: a `tool_choice` of `any` or a named tool is a tool call (with `{}`).
    let forced = match call.body["tool_choice"]["type"].as_str() {
        Some("tool") => Some(json!({"name": call.body["tool_choice"]["name"]})),
        Some("any") => Some(json!({})),
        _ => None,
    };
    let Some(steer) = steered.or(forced.as_ref()) else {
        return Ok(vec![Block::Text(call.text())]);
    };
    let tools = call.body["tools"].as_array().filter(|tools| !tools.is_empty());
    let Some(tools) = tools else {
        return Err("mock.tool_call needs tools in the request".into());
    };
    let name = steer["name"].as_str().or_else(|| tools[0]["name"].as_str()).unwrap_or("tool");
    if !tools.iter().any(|tool| tool["name"] == name) {
        return Err(format!("tool_call names `{name}`, which is not among the tools"));
    }
    let input = if steer["input"].is_object() { steer["input"].clone() } else { json!({}) };
    let tool_use = Block::ToolUse { name: name.to_owned(), input };
    Ok(match call.steer.content {
        Some(_) => vec![Block::Text(call.text()), tool_use],
        None => vec![tool_use],
    })
}

/// Anthropic's `usage`: input tokens exclude the cached ones, which have their own fields.
fn usage_of(usage: &Usage, output_tokens: u64) -> Value {
    json!({"input_tokens": usage.prompt, "cache_creation_input_tokens": usage.cache_creation,
           "cache_read_input_tokens": usage.cache_read, "output_tokens": output_tokens})
}

/// Anthropic's error shape, its `type` named after the status as Anthropic's API reference lists them.
pub(super) fn error(status: StatusCode, message: &str) -> Response {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    };
    (status, Json(json!({"type": "error", "error": {"type": kind, "message": message}}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{events, spawn};
    use serde_json::{Value, json};

    async fn post(body: Value, headers: &[(&str, &str)]) -> reqwest::Response {
        let (_mock, base, http) = spawn().await;
        let mut request = http.post(format!("{base}/messages")).json(&body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("send")
    }

    /// Header names and values.
    type Headers = &'static [(&'static str, &'static str)];

    const AUTHENTICATED: Headers = &[("x-api-key", "sk-ant-x"), ("anthropic-version", "2023-06-01")];

    fn request(mock: Value) -> Value {
        json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "system": "abcd",
               "messages": [{"role": "user", "content": [{"type": "text", "text": "efgh"}]}],
               "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}], "mock": mock})
    }

    #[tokio::test]
    async fn messages_answer_with_a_text_block_and_cache_usage() {
        let answer = post(
            request(
                json!({"content": "hi", "cache_read_tokens": 30, "cache_creation_tokens": 20, "completion_tokens": 5}),
            ),
            AUTHENTICATED,
        )
        .await;
        assert_eq!(answer.status(), 200);
        let answer: Value = answer.json().await.expect("json");
        assert_eq!(
            answer,
            json!({"id": "msg_mock", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 2, "output_tokens": 5, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 30}})
        );
    }

    #[tokio::test]
    async fn messages_stream_events_in_anthropics_order() {
        let body = json!({"max_tokens": 10, "stream": true, "messages": [{"role": "user", "content": "abcd"}],
                          "mock": {"content": "abcdef", "chunks": 2, "cache_read_tokens": 7}});
        let text = post(body, AUTHENTICATED).await.text().await.expect("text");
        let events = events(&text);
        let names: Vec<&str> = events.iter().filter_map(|(name, _)| name.as_deref()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(events.iter().all(|(name, event)| name.as_deref() == event["type"].as_str()));
        let start = &events[0].1["message"];
        assert_eq!(
            start["usage"],
            json!({"input_tokens": 1, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 7})
        );
        assert_eq!(start["content"], json!([]));
        assert_eq!(events[3].1["delta"], json!({"type": "text_delta", "text": "abc"}));
        assert_eq!(events[6].1["delta"], json!({"stop_reason": "end_turn", "stop_sequence": null}));
        assert_eq!(events[6].1["usage"], json!({"output_tokens": 2}));
    }

    #[tokio::test]
    async fn messages_call_a_tool_when_steered_streamed_as_input_json_parts() {
        let steer = json!({"tool_call": {"name": "get_weather", "input": {"city": "Paris"}}, "chunks": 3});
        let answer: Value = post(request(steer.clone()), AUTHENTICATED).await.json().await.expect("json");
        assert_eq!(answer["stop_reason"], "tool_use");
        assert_eq!(
            answer["content"],
            json!([{"type": "tool_use", "id": "toolu_mock", "name": "get_weather", "input": {"city": "Paris"}}])
        );

        let mut streamed = request(steer);
        streamed["stream"] = json!(true);
        let events = events(&post(streamed, AUTHENTICATED).await.text().await.expect("text"));
        assert_eq!(
            events[1].1["content_block"],
            json!({"type": "tool_use", "id": "toolu_mock", "name": "get_weather", "input": {}})
        );
        let json: String = events.iter().filter_map(|(_, e)| e["delta"]["partial_json"].as_str()).collect();
        assert_eq!(serde_json::from_str::<Value>(&json).expect("whole input"), json!({"city": "Paris"}));
        assert_eq!(events.iter().filter(|(_, e)| e["delta"]["type"] == "input_json_delta").count(), 1 + 3);
        assert_eq!(events[events.len() - 2].1["delta"]["stop_reason"], "tool_use");

        let with_text: Value = post(request(json!({"tool_call": true, "content": "Let me check."})), AUTHENTICATED)
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(with_text["content"][0], json!({"type": "text", "text": "Let me check."}));
        assert_eq!(with_text["content"][1]["name"], "get_weather");
    }

    #[tokio::test]
    async fn messages_refuse_missing_headers_max_tokens_and_unknown_tools() {
        let cases: [(Value, Headers, u16, &str); 5] = [
            (request(json!({})), &[("anthropic-version", "2023-06-01")], 401, "authentication_error"),
            (request(json!({})), &[("x-api-key", "k")], 400, "invalid_request_error"),
            (json!({"messages": []}), AUTHENTICATED, 400, "invalid_request_error"),
            (request(json!({"tool_call": {"name": "nope"}})), AUTHENTICATED, 400, "invalid_request_error"),
            (request(json!({"status": 529})), AUTHENTICATED, 529, "overloaded_error"),
        ];
        let bearer = [("authorization", "Bearer sk-ant-x"), ("anthropic-version", "2023-06-01")];
        assert_eq!(post(request(json!({})), &bearer).await.status(), 200, "newer SDKs send the key as a bearer");
        for (body, headers, status, kind) in cases {
            let answer = post(body.clone(), headers).await;
            assert_eq!(answer.status().as_u16(), status, "{body}");
            let error: Value = answer.json().await.expect("json");
            assert_eq!(
                (error["type"].as_str(), error["error"]["type"].as_str()),
                (Some("error"), Some(kind)),
                "{body}"
            );
        }
    }
}
