//! OpenAI's `POST /v1/responses` (the Responses API): `input` (a string or a list of items) and
//! `instructions`; one assistant message answers. Streamed as typed events (`event:` lines and a
//! `sequence_number`), ending with `response.completed`, which carries the full response and usage.

use super::{Call, Dialect, Usage};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

const RESPONSE_ID: &str = "resp_mock";
const ITEM_ID: &str = "msg_mock";

pub(super) fn responses(call: Call) -> Response {
    if !matches!(call.body["input"], Value::String(_) | Value::Array(_)) {
        return Dialect::OpenAi.error(StatusCode::BAD_REQUEST, "input must be a string or a list of input items");
    }
    let usage = call.usage(&["instructions", "input"]);
    let text = call.text();
    if !call.streamed() {
        return call.json(response(&call, "completed", vec![message(&text, "completed")], Some(usage)));
    }

    let sse = call.sse();
    let mut events = Vec::new();
    let mut emit = |name: &str, mut event: Value| {
        event["type"] = json!(name);
        event["sequence_number"] = json!(events.len());
        events.push(sse.event(name, &event));
    };
    let part = |text: &str| json!({"type": "output_text", "text": text, "annotations": []});
    let at = json!({"item_id": ITEM_ID, "output_index": 0, "content_index": 0});
    let with = |mut fields: Value, extra: Value| {
        if let (Some(fields), Value::Object(extra)) = (fields.as_object_mut(), extra) {
            fields.extend(extra);
        }
        fields
    };
    emit("response.created", json!({"response": response(&call, "in_progress", vec![], None)}));
    emit("response.in_progress", json!({"response": response(&call, "in_progress", vec![], None)}));
    emit("response.output_item.added", json!({"output_index": 0, "item": message("", "in_progress")}));
    emit("response.content_part.added", with(at.clone(), json!({"part": part("")})));
    for piece in call.pieces() {
        emit("response.output_text.delta", with(at.clone(), json!({"delta": piece})));
    }
    emit("response.output_text.done", with(at.clone(), json!({"text": text})));
    emit("response.content_part.done", with(at, json!({"part": part(&text)})));
    emit("response.output_item.done", json!({"output_index": 0, "item": message(&text, "completed")}));
    emit(
        "response.completed",
        json!({"response": response(&call, "completed", vec![message(&text, "completed")], Some(usage))}),
    );
    let usage_at = events.len() - 1;
    call.stream(events, Some(usage_at))
}

/// The response object, as the non-streamed answer and inside the stream's lifecycle events.
fn response(call: &Call, status: &str, output: Vec<Value>, usage: Option<Usage>) -> Value {
    let usage = usage.map(|u| {
        let output_tokens = u.completion;
        json!({"input_tokens": u.prompt, "input_tokens_details": {"cached_tokens": u.cache_read},
               "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": u.reasoning},
               "total_tokens": u.prompt.saturating_add(output_tokens)})
    });
    json!({
        "id": RESPONSE_ID, "object": "response", "created_at": 1741476542, "status": status,
        "error": null, "incomplete_details": null, "instructions": call.body["instructions"],
        "max_output_tokens": call.body["max_output_tokens"], "model": call.model("gpt-4o-mini"),
        "output": output, "parallel_tool_calls": true, "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null}, "store": true, "temperature": 1.0,
        "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 1.0,
        "truncation": "disabled", "usage": usage, "user": null, "metadata": {}
    })
}

/// The assistant message output item.
fn message(text: &str, status: &str) -> Value {
    let content = if status == "completed" {
        json!([{"type": "output_text", "text": text, "annotations": []}])
    } else {
        json!([])
    };
    json!({"type": "message", "id": ITEM_ID, "status": status, "role": "assistant", "content": content})
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{events, post, spawn};
    use serde_json::{Value, json};

    #[tokio::test]
    async fn responses_answer_with_an_output_text_message_and_usage() {
        let (_mock, base, http) = spawn().await;
        let body = json!({"model": "gpt-4.1", "instructions": "abcd", "input": [{"role": "user", "content": [{"type": "input_text", "text": "efgh"}]}],
                          "mock": {"content": "fine", "completion_tokens": 10, "reasoning_tokens": 4, "cache_read_tokens": 1}});
        let answer: Value = post(&http, &format!("{base}/responses"), &body).await.json().await.expect("json");
        assert_eq!((answer["object"].as_str(), answer["status"].as_str()), (Some("response"), Some("completed")));
        assert!(answer["id"].as_str().is_some_and(|id| id.starts_with("resp_")));
        assert_eq!(answer["model"], "gpt-4.1");
        let message = &answer["output"][0];
        assert_eq!(
            (message["type"].as_str(), message["role"].as_str(), message["status"].as_str()),
            (Some("message"), Some("assistant"), Some("completed"))
        );
        assert_eq!(message["content"], json!([{"type": "output_text", "text": "fine", "annotations": []}]));
        assert_eq!(
            answer["usage"],
            json!({"input_tokens": 2, "input_tokens_details": {"cached_tokens": 1},
            "output_tokens": 10, "output_tokens_details": {"reasoning_tokens": 4}, "total_tokens": 12})
        );
    }

    #[tokio::test]
    async fn responses_stream_typed_events_in_order_ending_with_the_completed_response() {
        let (_mock, base, http) = spawn().await;
        let body = json!({"input": "abcdefgh", "stream": true, "mock": {"content": "abcdef", "chunks": 3}});
        let text = post(&http, &format!("{base}/responses"), &body).await.text().await.expect("text");
        assert!(!text.contains("[DONE]"));
        let events = events(&text);
        let names: Vec<&str> = events.iter().filter_map(|(name, _)| name.as_deref()).collect();
        assert_eq!(
            names,
            [
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
            ]
        );
        for (n, (name, event)) in events.iter().enumerate() {
            assert_eq!((event["type"].as_str(), event["sequence_number"].as_u64()), (name.as_deref(), Some(n as u64)));
        }
        assert_eq!(
            events[4].1,
            json!({"type": "response.output_text.delta", "item_id": "msg_mock", "output_index": 0,
            "content_index": 0, "delta": "ab", "sequence_number": 4})
        );
        assert_eq!(events[7].1["text"], "abcdef");
        assert!(events[0].1["response"]["usage"].is_null());
        let completed = &events[10].1["response"];
        assert_eq!(completed["status"], "completed");
        assert_eq!(completed["output"][0]["content"][0]["text"], "abcdef");
        assert_eq!(completed["usage"]["input_tokens"], 2);
        assert_eq!(completed["usage"]["output_tokens"], 3);
    }

    #[tokio::test]
    async fn responses_without_input_are_refused() {
        let (_mock, base, http) = spawn().await;
        let answer = http
            .post(format!("{base}/responses"))
            .bearer_auth("k")
            .json(&json!({"model": "m"}))
            .send()
            .await
            .expect("send");
        assert_eq!(answer.status(), 400);
    }
}
