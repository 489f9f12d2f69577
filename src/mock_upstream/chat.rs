//! OpenAI's `POST /v1/chat/completions`, streamed (`chat.completion.chunk`s, usage last when
//! `stream_options.include_usage`, then `[DONE]`) and not.

use super::Call;
use axum::response::Response;
use serde_json::{Value, json};

pub(super) fn chat(call: Call) -> Response {
    let model = call.model("gpt-4o-mini");
    let usage = call.usage(&["messages"]).openai();

    if !call.streamed() {
        return call.json(json!({
            "id": "chatcmpl-mock", "object": "chat.completion", "created": 1726012687, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": call.text(), "refusal": null},
                         "logprobs": null, "finish_reason": "stop"}],
            "usage": usage, "system_fingerprint": "fp_mock"
        }));
    }

    let sse = call.sse();
    let chunk = |choices: Value, usage: &Value| {
        sse.data(&json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1726012687,
                         "model": model, "choices": choices, "usage": usage}))
    };
    let delta = |delta: Value, finish: Value| {
        chunk(json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]), &Value::Null)
    };
    let mut events = vec![delta(json!({"role": "assistant", "content": ""}), Value::Null)];
    events.extend(call.pieces().into_iter().map(|piece| delta(json!({"content": piece}), Value::Null)));
    events.push(delta(json!({}), json!("stop")));
    let usage_at = call.include_usage().then(|| {
        events.push(chunk(json!([]), &usage));
        events.len() - 1
    });
    events.push(sse.done());
    call.stream(events, usage_at)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{events, post, spawn};
    use serde_json::{Value, json};

    #[tokio::test]
    async fn chat_answers_with_usage_counted_from_the_messages() {
        let (_mock, base, http) = spawn().await;
        let body =
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "12345678"}], "mock": {"chunks": 2}});
        let answer: Value = post(&http, &format!("{base}/chat/completions"), &body).await.json().await.expect("json");
        assert_eq!(answer["object"], "chat.completion");
        assert_eq!(answer["choices"][0]["message"]["content"], "Hello from the mock");
        assert_eq!(answer["usage"]["prompt_tokens"], 2);
        assert_eq!(answer["usage"]["completion_tokens"], 2);
        assert_eq!(answer["usage"]["total_tokens"], 4);
    }

    #[tokio::test]
    async fn chat_streams_deltas_then_usage_then_done() {
        let (_mock, base, http) = spawn().await;
        let body = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true}, "messages": [],
                          "mock": {"content": "abcdef", "chunks": 3, "prompt_tokens": 7, "cache_read_tokens": 5}});
        let answer =
            http.post(format!("{base}/chat/completions")).bearer_auth("k").json(&body).send().await.expect("send");
        let text = answer.text().await.expect("text");
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        let events = events(&text);
        let deltas: String = events.iter().filter_map(|(_, e)| e["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(deltas, "abcdef");
        assert_eq!(events.len(), 1 + 3 + 1 + 1, "role, three pieces, finish, usage");
        let usage = &events[5].1["usage"];
        assert_eq!((usage["prompt_tokens"].as_u64(), usage["completion_tokens"].as_u64()), (Some(7), Some(3)));
        assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 5);
    }
}
