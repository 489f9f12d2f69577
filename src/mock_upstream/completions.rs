//! OpenAI's legacy `POST /v1/completions`: `prompt` (a string, strings or token arrays), streamed
//! (`text_completion` chunks, usage last when `stream_options.include_usage`, then `[DONE]`) and not.

use super::{Call, Dialect};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

pub(super) fn completions(call: Call) -> Response {
    if call.body.get("prompt").is_none() {
        return Dialect::OpenAi.error(StatusCode::BAD_REQUEST, "you must provide a prompt parameter");
    }
    let model = call.model("gpt-3.5-turbo-instruct");
    let usage = call.usage(&["prompt"]).openai();
    let completion = |choices: Value| {
        json!({"id": "cmpl-mock", "object": "text_completion", "created": 1726012687, "model": model,
               "system_fingerprint": "fp_mock", "choices": choices})
    };
    let choice =
        |text: &str, finish: Value| json!([{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]);

    if !call.streamed() {
        let mut answer = completion(choice(&call.text(), json!("stop")));
        answer["usage"] = usage;
        return call.json(answer);
    }

    let sse = call.sse();
    let mut events: Vec<String> =
        call.pieces().iter().map(|piece| sse.data(&completion(choice(piece, Value::Null)))).collect();
    events.push(sse.data(&completion(choice("", json!("stop")))));
    let usage_at = call.include_usage().then(|| {
        let mut last = completion(json!([]));
        last["usage"] = usage;
        events.push(sse.data(&last));
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
    async fn completions_answer_a_prompt_with_usage() {
        let (_mock, base, http) = spawn().await;
        let body = json!({"model": "gpt-3.5-turbo-instruct", "prompt": ["abcd", [1, 2]], "mock": {"content": "done", "completion_tokens": 9}});
        let answer: Value = post(&http, &format!("{base}/completions"), &body).await.json().await.expect("json");
        assert_eq!(answer["object"], "text_completion");
        assert_eq!(answer["choices"], json!([{"text": "done", "index": 0, "logprobs": null, "finish_reason": "stop"}]));
        assert_eq!(answer["usage"]["prompt_tokens"], 1 + 2, "four characters and two token ids");
        assert_eq!(answer["usage"]["completion_tokens"], 9);
        assert_eq!(answer["usage"]["total_tokens"], 12);
    }

    #[tokio::test]
    async fn completions_stream_text_then_usage_then_done() {
        let (_mock, base, http) = spawn().await;
        let body = json!({"prompt": "hi", "stream": true, "stream_options": {"include_usage": true}, "mock": {"content": "abcd", "chunks": 2}});
        let text = post(&http, &format!("{base}/completions"), &body).await.text().await.expect("text");
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        let events = events(&text);
        assert!(events.iter().all(|(_, e)| e["object"] == "text_completion"));
        let texts: Vec<&str> = events.iter().filter_map(|(_, e)| e["choices"][0]["text"].as_str()).collect();
        assert_eq!(texts, ["ab", "cd", ""]);
        assert_eq!(events[2].1["choices"][0]["finish_reason"], "stop");
        assert_eq!(events[3].1["choices"], json!([]));
        assert_eq!(events[3].1["usage"]["completion_tokens"], 2);

        let without_usage = json!({"prompt": "hi", "stream": true});
        let text = post(&http, &format!("{base}/completions"), &without_usage).await.text().await.expect("text");
        assert!(super::super::test_support::events(&text).iter().all(|(_, e)| e.get("usage").is_none()));
    }

    #[tokio::test]
    async fn completions_without_a_prompt_are_refused() {
        let (_mock, base, http) = spawn().await;
        let answer = http
            .post(format!("{base}/completions"))
            .bearer_auth("k")
            .json(&json!({"model": "m"}))
            .send()
            .await
            .expect("send");
        assert_eq!(answer.status(), 400);
        let unauthenticated =
            http.post(format!("{base}/completions")).json(&json!({"prompt": "x"})).send().await.expect("send");
        assert_eq!(unauthenticated.status(), 401);
    }
}
