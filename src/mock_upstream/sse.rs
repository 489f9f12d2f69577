//! Server-sent events as the mock writes them: compact (`data: {…}\n\n`) or pretty-printed
//! over several `data:` lines with CRLF line ends, optionally named (`event: …`), sent with
//! delays between events.

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::Value;
use std::time::Duration;

pub(super) struct Writer {
    pub pretty: bool,
}

impl Writer {
    /// `data: {value}` (OpenAI's chat and completions streams).
    pub fn data(&self, value: &Value) -> String {
        self.block(None, value)
    }

    /// `event: {name}` then `data: {value}` (Responses API and Anthropic streams).
    pub fn event(&self, name: &str, value: &Value) -> String {
        self.block(Some(name), value)
    }

    /// OpenAI's terminator, `data: [DONE]`.
    pub fn done(&self) -> String {
        if self.pretty { "data: [DONE]\r\n\r\n".into() } else { "data: [DONE]\n\n".into() }
    }

    fn block(&self, name: Option<&str>, value: &Value) -> String {
        let end = if self.pretty { "\r\n" } else { "\n" };
        let mut block = name.map(|name| format!("event: {name}{end}")).unwrap_or_default();
        if self.pretty {
            let pretty = serde_json::to_string_pretty(value).unwrap_or_default();
            pretty.lines().for_each(|line| block.push_str(&format!("data: {line}\r\n")));
        } else {
            block.push_str(&format!("data: {value}\n"));
        }
        block.push_str(end);
        block
    }
}

/// A stream's events and pacing: `delay` before every event but the first, and `usage_delay`
/// more before the one at `usage_at` (the event carrying the final usage).
pub(super) struct Timing {
    pub events: Vec<String>,
    pub delay: Duration,
    pub usage_at: Option<usize>,
    pub usage_delay: Duration,
}

pub(super) fn respond(timing: Timing) -> Response {
    let Timing { events, delay, usage_at, usage_delay } = timing;
    let stream = futures_util::stream::unfold(events.into_iter().enumerate(), move |mut rest| async move {
        let (index, next) = rest.next()?;
        if index > 0 && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if Some(index) == usage_at && !usage_delay.is_zero() {
            tokio::time::sleep(usage_delay).await;
        }
        Some((Ok::<_, std::io::Error>(Bytes::from(next)), rest))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| super::error(StatusCode::INTERNAL_SERVER_ERROR, "stream"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compact_and_pretty_blocks_carry_the_same_json() {
        let value = json!({"a": [1], "b": "x"});
        assert_eq!(Writer { pretty: false }.event("e", &value), "event: e\ndata: {\"a\":[1],\"b\":\"x\"}\n\n");
        let pretty = Writer { pretty: true }.event("e", &value);
        assert!(pretty.starts_with("event: e\r\ndata: {\r\ndata:   \"a\": [\r\n"), "{pretty}");
        assert!(pretty.ends_with("data: }\r\n\r\n"), "{pretty}");
        let data: String = pretty.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
        assert_eq!(serde_json::from_str::<Value>(&data).expect("json"), value);
    }
}
