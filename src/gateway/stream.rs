//! Relays an upstream SSE stream chunk by chunk while reading the token usage out of it.
//! The gateway always asks upstream for `include_usage`; when the client did not ask, the
//! extra usage chunk is removed here so the client sees exactly what it asked for.
//! Nothing is buffered beyond one incomplete SSE event. [`ShieldedSse`] then passes the
//! relayed events through the output shield.

use super::guard::RemovalReport;
use super::meter::Meter;
use super::shield::SseShield;
use crate::events::TokenUsage;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use serde::Deserialize;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

#[derive(Deserialize)]
pub struct UsageEnvelope {
    #[serde(default)]
    pub usage: Option<WireUsage>,
    #[serde(default)]
    choices: Option<Vec<serde::de::IgnoredAny>>,
}

#[derive(Deserialize)]
pub struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl From<WireUsage> for TokenUsage {
    fn from(w: WireUsage) -> TokenUsage {
        TokenUsage {
            prompt_tokens: w.prompt_tokens,
            cached_tokens: w.prompt_tokens_details.and_then(|d| d.cached_tokens).unwrap_or(0),
            completion_tokens: w.completion_tokens,
        }
    }
}

/// Usage of a whole (non-streamed) completion body, if it reports one.
pub fn usage_of_body(body: &[u8]) -> Option<TokenUsage> {
    serde_json::from_slice::<UsageEnvelope>(body).ok()?.usage.map(Into::into)
}

type Upstream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

pub struct MeteredSse {
    upstream: Upstream,
    meter: Option<Meter>,
    pending: BytesMut,
    strip_usage: bool,
    usage: Option<TokenUsage>,
    /// Content-bearing events relayed: about one token each, the estimate when usage never comes.
    content_events: u64,
    prompt_estimate: u64,
    idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    saw_done_marker: bool,
    done: bool,
}

impl MeteredSse {
    pub fn new(
        upstream: Upstream,
        meter: Meter,
        client_asked_usage: bool,
        prompt_estimate: u64,
        idle: Duration,
    ) -> MeteredSse {
        MeteredSse {
            upstream,
            meter: Some(meter),
            pending: BytesMut::new(),
            strip_usage: !client_asked_usage,
            usage: None,
            content_events: 0,
            prompt_estimate,
            idle,
            idle_timer: Box::pin(tokio::time::sleep(idle)),
            saw_done_marker: false,
            done: false,
        }
    }

    /// Takes every complete event out of `pending`, returning the bytes to relay.
    fn drain_complete_events(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        while let Some(end) = find_event_end(&self.pending) {
            let event = self.pending.split_to(end);
            if self.inspect(&event) {
                out.extend_from_slice(&event);
            }
        }
        out.freeze()
    }

    /// Reads usage from one event; false when the event must not reach the client.
    fn inspect(&mut self, event: &[u8]) -> bool {
        let Some(data) = event_data(event) else {
            return true;
        };
        if data == b"[DONE]" {
            self.saw_done_marker = true;
            return true;
        }
        if memchr_find(data, b"\"content\":\"").is_some() && memchr_find(data, b"\"content\":\"\"").is_none() {
            self.content_events += 1;
        }
        if memchr_find(data, b"\"usage\":{").is_none() {
            return true;
        }
        let Ok(envelope) = serde_json::from_slice::<UsageEnvelope>(data) else {
            return true;
        };
        let usage_only = envelope.choices.as_ref().is_some_and(|c| c.is_empty());
        if let Some(usage) = envelope.usage {
            self.usage = Some(usage.into());
        }
        !(self.strip_usage && usage_only)
    }

    fn finish(&mut self, aborted: bool) {
        let Some(mut meter) = self.meter.take() else {
            return;
        };
        meter.upstream_finished();
        match self.usage {
            Some(usage) => meter.record_usage(usage, false),
            None => meter.record_usage(
                TokenUsage {
                    prompt_tokens: self.prompt_estimate,
                    cached_tokens: 0,
                    completion_tokens: self.content_events,
                },
                true,
            ),
        }
        if aborted {
            meter.mark_aborted();
        }
        meter.finish(200, None);
    }
}

fn find_event_end(buf: &[u8]) -> Option<usize> {
    let lf = memchr_find(buf, b"\n\n").map(|i| i + 2);
    let crlf = memchr_find(buf, b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The payload of an event's `data:` line (single-line data, as OpenAI sends).
fn event_data(event: &[u8]) -> Option<&[u8]> {
    let start = memchr_find(event, b"data:")? + 5;
    let rest = &event[start..];
    let rest = rest.strip_prefix(b" ").unwrap_or(rest);
    let end = rest.iter().position(|&b| b == b'\n' || b == b'\r').unwrap_or(rest.len());
    Some(&rest[..end])
}

fn memchr_find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

impl Stream for MeteredSse {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.upstream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    let deadline = Instant::now() + this.idle;
                    this.idle_timer.as_mut().reset(deadline);
                    this.pending.extend_from_slice(&chunk);
                    let out = this.drain_complete_events();
                    if let Some(meter) = this.meter.as_mut() {
                        meter.first_byte();
                        meter.add_response_bytes(out.len());
                    }
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(error = %e.without_url(), "upstream stream failed mid-way");
                    this.done = true;
                    this.finish(true);
                    return Poll::Ready(Some(Err(std::io::Error::other("upstream stream failed"))));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    let rest = this.pending.split().freeze();
                    // A stream that closes without `[DONE]` was cut short upstream.
                    let cut = !this.saw_done_marker;
                    this.finish(cut);
                    return Poll::Ready((!rest.is_empty()).then_some(Ok(rest)));
                }
                Poll::Pending => {
                    if this.idle_timer.as_mut().poll(cx).is_ready() {
                        tracing::warn!("upstream stream idle too long; closing it");
                        this.done = true;
                        this.finish(true);
                        return Poll::Ready(Some(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "upstream idle",
                        ))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Drop for MeteredSse {
    fn drop(&mut self) {
        // The client went away before the stream ended: book what was used so far.
        self.finish(true);
    }
}

/// The output shield chained after [`MeteredSse`]: clean events pass byte for byte, text that
/// could still turn into a leak is held for a few words, leaks leave as `[REDACTED]`. The
/// removals are published as findings when the stream is dropped.
pub struct ShieldedSse<S> {
    inner: S,
    shield: SseShield,
    report: RemovalReport,
    /// An upstream failure, returned after the held text is flushed.
    failed: Option<std::io::Error>,
    done: bool,
}

impl<S> ShieldedSse<S> {
    pub fn new(inner: S, shield: SseShield, report: RemovalReport) -> ShieldedSse<S> {
        ShieldedSse { inner, shield, report, failed: None, done: false }
    }

    /// Releases everything held: the stream is over, so nothing can still grow into a leak.
    fn flush(&mut self) -> Option<Bytes> {
        let (out, removed) = self.shield.finish();
        self.report.add(&removed);
        (!out.is_empty()).then_some(out)
    }
}

impl<S> Stream for ShieldedSse<S>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(error) = this.failed.take() {
                return Poll::Ready(Some(Err(error)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    let (out, removed) = this.shield.push(&chunk);
                    this.report.add(&removed);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    this.done = true;
                    this.failed = Some(error);
                    if let Some(out) = this.flush() {
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(this.flush().map(Ok));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, EventBus};
    use futures_util::StreamExt;

    const STREAM: &str = concat!(
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1,\"total_tokens\":10,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n",
        "data: [DONE]\n\n",
    );

    async fn relay(chunks: Vec<Bytes>, client_asked_usage: bool) -> (Vec<u8>, crate::events::RequestEvent) {
        let bus = EventBus::default();
        let mut rx = bus.subscribe("test", 4);
        let meter = Meter::start(bus.clone(), &Default::default(), "r".into(), "chat", [127, 0, 0, 1].into());
        let upstream = futures_util::stream::iter(chunks.into_iter().map(Ok));
        let mut sse = MeteredSse::new(Box::pin(upstream), meter, client_asked_usage, 3, Duration::from_secs(5));
        let mut out = Vec::new();
        while let Some(chunk) = sse.next().await {
            out.extend_from_slice(&chunk.expect("chunk"));
        }
        drop(sse);
        let Some(event) = rx.recv().await else { panic!("an event is published") };
        let Event::Request(event) = &*event else { panic!("a request event") };
        (out, (**event).clone())
    }

    #[tokio::test]
    async fn usage_chunk_is_read_and_stripped_at_every_split_point() {
        let bytes = STREAM.as_bytes();
        let usage_event_start = STREAM.find("data: {\"id\":\"c1\",\"choices\":[],").expect("usage event");
        let usage_event_end = usage_event_start + STREAM[usage_event_start..].find("\n\n").expect("end") + 2;
        let expected_stripped = [&bytes[..usage_event_start], &bytes[usage_event_end..]].concat();
        for split in 1..bytes.len() {
            let chunks = vec![Bytes::copy_from_slice(&bytes[..split]), Bytes::copy_from_slice(&bytes[split..])];
            let (out, event) = relay(chunks.clone(), false).await;
            assert_eq!(out, expected_stripped, "split at {split}");
            let usage = event.usage.expect("usage");
            assert_eq!((usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens), (9, 4, 1));
            assert!(!event.usage_estimated && !event.aborted);
            let (out, _) = relay(chunks, true).await;
            assert_eq!(out, bytes, "client asked for usage: byte for byte (split {split})");
        }
    }

    #[tokio::test]
    async fn a_cut_stream_is_booked_with_an_estimate() {
        let cut = STREAM.find("data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},").expect("finish event");
        let (out, event) = relay(vec![Bytes::copy_from_slice(&STREAM.as_bytes()[..cut])], false).await;
        assert_eq!(out, &STREAM.as_bytes()[..cut]);
        let usage = event.usage.expect("estimated usage");
        assert!(event.usage_estimated);
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (3, 1));
    }

    #[test]
    fn body_usage_is_parsed() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":13,"completion_tokens":5,"total_tokens":18}}"#;
        assert_eq!(usage_of_body(body), Some(TokenUsage { prompt_tokens: 13, cached_tokens: 0, completion_tokens: 5 }));
        assert_eq!(usage_of_body(b"{}"), None);
    }
}
