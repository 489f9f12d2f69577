//! Relays an upstream SSE stream event by event while reading the token usage out of it.
//! Events are split by [`SseReader`] (the SSE rules) and read by the provider kind's
//! [`StreamReader`] (serde), so any line ends and any legal JSON layout are billed alike; the
//! reader relays each event as it came, removes one (the usage chunk the gateway asked for and
//! the client did not), or translates it (an Anthropic stream to chat chunks). Nothing is
//! buffered beyond one incomplete event, and that is bounded. A client that goes away does not end the reading:
//! the upstream is drained in the background, bounded, for the usage it reports last.
//! [`ShieldedSse`] then passes the relayed events through the output shield, and
//! [`Coalesced`] sends the events that arrived together in one write.

use super::meter::Meter;
use crate::events::TokenUsage;
use crate::providers::openai;
use crate::providers::sse::SseReader;
use crate::providers::{Api, StreamReader};
use crate::shield::SseShield;
use crate::shield::guard::RemovalReport;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde_json::json;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tokio_util::task::TaskTracker;

/// Why a stream ends before its end marker, as the client's last event says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Broken {
    /// An event overflowed [`StreamLimits::max_event_bytes`].
    Oversized,
    /// The upstream connection failed, or closed without the stream's end marker.
    Cut,
    /// The upstream sent nothing for [`StreamLimits::idle`].
    Idle,
}

impl Broken {
    fn message(self) -> &'static str {
        match self {
            Broken::Oversized => "The upstream sent an event larger than this gateway relays.",
            Broken::Cut => "The upstream provider ended the answer before it was complete.",
            Broken::Idle => "The upstream provider stopped sending the answer.",
        }
    }
}

/// The event that ends a broken stream, in the client's API's own error shape, so that its SDK
/// raises an error instead of taking the answer for complete: a `data:` error object (chat and
/// legacy completions), an `error` event (Responses API, Messages API).
fn error_event(api: Api, broken: Broken) -> Bytes {
    let message = broken.message();
    let event = match api {
        Api::Responses => format!(
            "event: error\ndata: {}\n\n",
            json!({"type": "error", "code": "upstream_error", "message": message, "param": null})
        ),
        Api::Messages => format!(
            "event: error\ndata: {}\n\n",
            json!({"type": "error", "error": {"type": "api_error", "message": message}})
        ),
        Api::Chat | Api::Completions | Api::Embeddings => format!(
            "data: {}\n\n",
            json!({"error": {"message": message, "type": "api_error", "code": "upstream_error", "param": null}})
        ),
    };
    Bytes::from(event)
}

/// The upstream answer's body, chunk by chunk (`http_body_util::BodyDataStream` of hyper's).
type Upstream = Pin<Box<dyn Stream<Item = Result<Bytes, hyper::Error>> + Send>>;

/// The bounds of one relayed stream.
#[derive(Clone, Copy, Debug)]
pub struct StreamLimits {
    /// The upstream may pause this long between chunks.
    pub idle: Duration,
    /// An event still without its blank line after this many bytes ends the stream.
    pub max_event_bytes: usize,
    /// After the client left: how long, and how many bytes, the upstream is read for its usage.
    pub drain_time: Duration,
    pub drain_bytes: usize,
}

impl StreamLimits {
    pub const DEFAULT_MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;
    pub const DEFAULT_DRAIN_TIME: Duration = Duration::from_secs(5);
    pub const DEFAULT_DRAIN_BYTES: usize = 4 * 1024 * 1024;

    pub fn with_idle(idle: Duration) -> StreamLimits {
        StreamLimits {
            idle,
            max_event_bytes: Self::DEFAULT_MAX_EVENT_BYTES,
            drain_time: Self::DEFAULT_DRAIN_TIME,
            drain_bytes: Self::DEFAULT_DRAIN_BYTES,
        }
    }
}

/// Everything needed to go on reading the upstream, with or without a client.
struct Relay {
    upstream: Upstream,
    reader: SseReader,
    answer: Box<dyn StreamReader>,
    /// Events a translating reader wrote for the client.
    translated: Vec<u8>,
    meter: Meter,
    /// The prompt's estimate (the upstream body, the operator's system prompt included).
    prompt_estimate: u64,
}

impl Relay {
    fn push(&mut self, chunk: &[u8]) -> Bytes {
        let (answer, translated) = (&mut self.answer, &mut self.translated);
        let relayed = self.reader.push(chunk, |event| answer.event(event, translated));
        self.with_translated(relayed)
    }

    fn finish_reading(&mut self) -> Bytes {
        let (answer, translated) = (&mut self.answer, &mut self.translated);
        let relayed = self.reader.finish(|event| answer.event(event, translated));
        self.with_translated(relayed)
    }

    /// The events relayed as they came, then those a translating reader wrote (a reader does
    /// one or the other, so the order is the upstream's).
    fn with_translated(&mut self, relayed: Bytes) -> Bytes {
        if self.translated.is_empty() {
            return relayed;
        }
        let mut out = BytesMut::with_capacity(relayed.len() + self.translated.len());
        out.extend_from_slice(&relayed);
        out.extend_from_slice(&self.translated);
        self.translated.clear();
        out.freeze()
    }

    /// Books the request: the upstream's usage, or an estimate when it never came.
    fn book(mut self, aborted: bool) {
        self.meter.upstream_finished();
        let tally = self.answer.tally();
        match tally.usage {
            Some(usage) => self.meter.record_usage(usage, false),
            None => {
                let completion = openai::estimated_tokens(tally.answer_chars).max(tally.answer_events);
                let estimate = TokenUsage {
                    prompt_tokens: self.prompt_estimate,
                    completion_tokens: completion,
                    ..TokenUsage::default()
                };
                self.meter.record_usage(estimate, true);
            }
        }
        if aborted {
            self.meter.mark_aborted();
        }
        self.meter.finish(200, None);
    }

    /// The client is gone: reads on, within `limits`, until the usage arrives, then books.
    async fn drain(mut self, limits: StreamLimits) {
        let deadline = Instant::now() + limits.drain_time;
        let mut read = 0;
        while self.answer.tally().usage.is_none() && read < limits.drain_bytes && !self.reader.overflowed() {
            match tokio::time::timeout_at(deadline, self.upstream.next()).await {
                Ok(Some(Ok(chunk))) => {
                    read += chunk.len();
                    self.push(&chunk);
                }
                Ok(None) => {
                    self.finish_reading();
                    break;
                }
                Ok(Some(Err(e))) => {
                    tracing::debug!(error = %e, "upstream failed while drained");
                    break;
                }
                Err(_) => break,
            }
        }
        if self.answer.tally().usage.is_none() {
            tracing::info!(read, "a left stream's usage never came; booked an estimate");
        }
        // Dropping the upstream here cancels whatever it still had to send.
        self.book(true);
    }
}

pub struct MeteredSse {
    /// `None` once the stream is over and booked.
    relay: Option<Relay>,
    /// The client's API: the shape of the error event that ends a broken stream.
    api: Api,
    limits: StreamLimits,
    idle_timer: Pin<Box<Sleep>>,
    /// Where a left stream's drain runs, so that shutdown waits for it.
    drains: TaskTracker,
}

impl MeteredSse {
    pub fn new(
        api: Api,
        upstream: Upstream,
        meter: Meter,
        answer: Box<dyn StreamReader>,
        prompt_estimate: u64,
        limits: StreamLimits,
        drains: TaskTracker,
    ) -> MeteredSse {
        let reader = SseReader::new(limits.max_event_bytes);
        MeteredSse {
            relay: Some(Relay { upstream, reader, answer, translated: Vec::new(), meter, prompt_estimate }),
            api,
            idle_timer: Box::pin(tokio::time::sleep(limits.idle)),
            limits,
            drains,
        }
    }
}

impl MeteredSse {
    /// Ends a stream that broke before its end marker: what was read, then the error event;
    /// booked as aborted, for what was relayed.
    fn end_broken(&mut self, rest: Bytes, broken: Broken) -> Bytes {
        let mut out = BytesMut::from(rest);
        out.extend_from_slice(&error_event(self.api, broken));
        if let Some(mut relay) = self.relay.take() {
            relay.meter.add_response_bytes(out.len());
            relay.book(true);
        }
        out.freeze()
    }
}

impl Stream for MeteredSse {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            let Some(relay) = this.relay.as_mut() else {
                return Poll::Ready(None);
            };
            match relay.upstream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    let deadline = Instant::now() + this.limits.idle;
                    this.idle_timer.as_mut().reset(deadline);
                    let out = relay.push(&chunk);
                    relay.meter.first_byte();
                    if relay.reader.overflowed() {
                        tracing::warn!(
                            limit = this.limits.max_event_bytes,
                            "upstream event too large; ending the stream"
                        );
                        let mut out = BytesMut::from(out);
                        out.extend_from_slice(&error_event(this.api, Broken::Oversized));
                        relay.meter.add_response_bytes(out.len());
                        if let Some(relay) = this.relay.take() {
                            relay.book(true);
                        }
                        return Poll::Ready(Some(Ok(out.freeze())));
                    }
                    relay.meter.add_response_bytes(out.len());
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(error = %e, "upstream stream failed mid-way");
                    let rest = relay.finish_reading();
                    return Poll::Ready(Some(Ok(this.end_broken(rest, Broken::Cut))));
                }
                Poll::Ready(None) => {
                    let rest = relay.finish_reading();
                    // A stream that closes without its end marker was cut short upstream.
                    if !relay.answer.tally().ended {
                        return Poll::Ready(Some(Ok(this.end_broken(rest, Broken::Cut))));
                    }
                    relay.meter.add_response_bytes(rest.len());
                    if let Some(relay) = this.relay.take() {
                        relay.book(false);
                    }
                    return Poll::Ready((!rest.is_empty()).then_some(Ok(rest)));
                }
                Poll::Pending => {
                    if this.idle_timer.as_mut().poll(cx).is_ready() {
                        tracing::warn!("upstream stream idle too long; closing it");
                        let rest = relay.finish_reading();
                        return Poll::Ready(Some(Ok(this.end_broken(rest, Broken::Idle))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Drop for MeteredSse {
    fn drop(&mut self) {
        let Some(relay) = self.relay.take() else {
            return;
        };
        // The client went away (or stopped reading) before the stream ended: the usage comes
        // last, so read on for it in the background rather than book an estimate.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                self.drains.spawn_on(relay.drain(self.limits), &runtime);
            }
            Err(_) => relay.book(true),
        }
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

/// At most this much is gathered into one frame; more goes out at once.
const MAX_GATHERED: usize = 64 * 1024;

/// How many polls in a row may find nothing new before what is gathered goes out. hyper
/// polls a body twice in one turn when it cannot write (once, then again after flushing), so
/// two polls in a row say little; the third comes after the upstream connection's task has
/// had a turn to decode what it had already read.
const IDLE_POLLS: u8 = 2;

/// Sends together what arrived together. The upstream connection hands a stream over one
/// event at a time, each woken across tasks, and hyper writes each to the socket as it comes:
/// a burst of events (a fast model, or an upstream that sends the rest at once) costs one
/// system call and one wake-up of the client per event. This gathers the events that are
/// already there into one frame: while new ones keep coming it asks for one more turn of the
/// runtime, and as soon as a turn brings nothing, what it holds goes out. The response head
/// waits the same way: hyper writes it alone as soon as the body is pending, so the handler
/// awaits [`Coalesced::prime`] before returning the response, and a first event already
/// read leaves in the head's write. Nothing waits for data that has not arrived; an event is
/// at most a turn or two of the runtime later.
pub struct Coalesced<S> {
    inner: S,
    gathered: BytesMut,
    /// Nothing has gone out yet: the first events are waited for as if something were held.
    first: bool,
    /// What `prime` found, returned by the first poll.
    primed: Option<Option<Result<Bytes, std::io::Error>>>,
    /// Polls in a row that found nothing new while something was held.
    idle_polls: u8,
    /// The inner stream ended (with an error to return after what is gathered, if it failed).
    end: Option<Option<std::io::Error>>,
}

impl<S> Coalesced<S> {
    pub fn new(inner: S) -> Coalesced<S> {
        Coalesced { inner, gathered: BytesMut::new(), first: true, primed: None, idle_polls: 0, end: None }
    }

    /// Waits for the first events already on their way, a turn or two of the runtime at most,
    /// and keeps them for the first poll.
    pub async fn prime(&mut self)
    where
        Self: Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
    {
        let first = std::future::poll_fn(|cx| match Pin::new(&mut *self).poll_next(cx) {
            Poll::Ready(item) => Poll::Ready(Some(item)),
            // Another turn asked for (`poll_next` woke the task itself)...
            Poll::Pending if self.first => Poll::Pending,
            // ...or nothing came: the head goes alone.
            Poll::Pending => Poll::Ready(None),
        })
        .await;
        self.primed = first;
    }

    fn release(&mut self) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        self.first = false;
        self.idle_polls = 0;
        Poll::Ready(Some(Ok(self.gathered.split().freeze())))
    }
}

impl<S> Stream for Coalesced<S>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(item) = this.primed.take() {
            return Poll::Ready(item);
        }
        // What was gathered went out with the end's discovery; the end itself comes next.
        if let Some(error) = &mut this.end {
            return Poll::Ready(error.take().map(Err));
        }
        loop {
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.idle_polls = 0;
                    if this.gathered.is_empty() {
                        // Taken over without a copy when the chunk is the only owner of its bytes.
                        this.gathered = BytesMut::from(chunk);
                    } else {
                        this.gathered.extend_from_slice(&chunk);
                    }
                    if this.gathered.len() >= MAX_GATHERED {
                        return this.release();
                    }
                }
                Poll::Ready(end) => {
                    this.end = Some(end.and_then(Result::err));
                    if this.gathered.is_empty() {
                        return Poll::Ready(this.end.as_mut().and_then(Option::take).map(Err));
                    }
                    return this.release();
                }
                Poll::Pending if this.gathered.is_empty() && !this.first => return Poll::Pending,
                Poll::Pending if this.idle_polls < IDLE_POLLS => {
                    this.idle_polls += 1;
                    // Polled again after the tasks already woken (the upstream connection's) ran.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Pending if this.gathered.is_empty() => {
                    // No first event yet: the head goes alone, and the stream waits as usual.
                    this.first = false;
                    this.idle_polls = 0;
                    return Poll::Pending;
                }
                Poll::Pending => return this.release(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderKind;
    use crate::events::{Event, EventBus, RequestEvent, Subscription};
    use crate::providers::Api;
    use futures_util::stream;

    const STREAM: &str = concat!(
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1,\"total_tokens\":10,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n",
        "data: [DONE]\n\n",
    );
    const USAGE_EVENT_START: &str = "data: {\"id\":\"c1\",\"choices\":[],";

    fn limits() -> StreamLimits {
        StreamLimits::with_idle(Duration::from_secs(5))
    }

    fn metered(
        upstream: Upstream,
        client_asked_usage: bool,
        limits: StreamLimits,
    ) -> (MeteredSse, Subscription, TaskTracker) {
        let bus = EventBus::default();
        let rx = bus.subscribe("test", 4);
        let meter = Meter::start(bus.clone(), &Default::default(), "r".into(), "chat", [127, 0, 0, 1].into());
        let drains = TaskTracker::new();
        let answer = ProviderKind::OpenAi.wire().stream(Api::Chat, client_asked_usage);
        (MeteredSse::new(Api::Chat, upstream, meter, answer, 3, limits, drains.clone()), rx, drains)
    }

    async fn booked(rx: &mut Subscription) -> RequestEvent {
        let Some(event) = rx.recv().await else { panic!("an event is published") };
        let Event::Request(event) = &*event else { panic!("a request event") };
        (**event).clone()
    }

    async fn relay(chunks: Vec<Bytes>, client_asked_usage: bool) -> (Vec<u8>, RequestEvent) {
        let upstream = stream::iter(chunks.into_iter().map(Ok));
        let (mut sse, mut rx, _) = metered(Box::pin(upstream), client_asked_usage, limits());
        let mut out = Vec::new();
        while let Some(chunk) = sse.next().await {
            out.extend_from_slice(&chunk.expect("chunk"));
        }
        drop(sse);
        (out, booked(&mut rx).await)
    }

    fn split_at(bytes: &[u8], split: usize) -> Vec<Bytes> {
        vec![Bytes::copy_from_slice(&bytes[..split]), Bytes::copy_from_slice(&bytes[split..])]
    }

    /// Relays `stream` cut at every byte, with and without the client asking for usage.
    async fn assert_billed_exactly_and_stripped(stream: &[u8], usage_event: std::ops::Range<usize>) {
        let expected_stripped = [&stream[..usage_event.start], &stream[usage_event.end..]].concat();
        for split in 1..stream.len() {
            let (out, event) = relay(split_at(stream, split), false).await;
            assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&expected_stripped), "split at {split}");
            let usage = event.usage.expect("usage");
            assert_eq!((usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens), (9, 4, 1), "split {split}");
            assert!(!event.usage_estimated && !event.aborted);
            let (out, _) = relay(split_at(stream, split), true).await;
            assert_eq!(out, stream, "client asked for usage: byte for byte (split {split})");
        }
    }

    /// Counts its wake-ups: a `Pending` with something held must have asked to be polled again.
    struct CountingWaker(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: std::sync::Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    type Sent = Result<Bytes, std::io::Error>;

    /// Polls `stream` once with `waker`; `Err(())`: pending (`wakes` tells what it asked for).
    fn poll_once<S: Stream<Item = Sent> + Unpin>(
        stream: &mut S,
        waker: &std::sync::Arc<CountingWaker>,
    ) -> Result<Option<Sent>, ()> {
        let waker = std::task::Waker::from(waker.clone());
        match Pin::new(stream).poll_next(&mut Context::from_waker(&waker)) {
            Poll::Ready(item) => Ok(item),
            Poll::Pending => Err(()),
        }
    }

    /// A stream of what is sent, pending while nothing is; it ends when `tx` is dropped.
    fn channel() -> (tokio::sync::mpsc::UnboundedSender<Sent>, impl Stream<Item = Sent> + Unpin) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        (tx, futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }

    fn wakes(waker: &std::sync::Arc<CountingWaker>) -> usize {
        waker.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn events_that_arrived_together_leave_in_one_frame_and_none_waits_for_more() {
        let (tx, rx) = channel();
        let mut coalesced = Coalesced::new(rx);
        let waker = std::sync::Arc::new(CountingWaker(Default::default()));
        // The response head waits IDLE_POLLS polls for a first event to go with it...
        for polled in 1..=usize::from(IDLE_POLLS) {
            assert!(poll_once(&mut coalesced, &waker).is_err(), "nothing yet");
            assert_eq!(wakes(&waker), polled, "the head waits a turn for the first event");
        }
        // ...then goes alone: nothing held, so no more wake-ups asked for.
        assert!(poll_once(&mut coalesced, &waker).is_err());
        assert!(poll_once(&mut coalesced, &waker).is_err());
        assert_eq!(wakes(&waker), usize::from(IDLE_POLLS), "no busy loop while nothing arrives");
        for event in ["data: 1\n\n", "data: 2\n\n", "data: 3\n\n"] {
            tx.send(Ok(Bytes::from(event))).expect("send");
        }
        // Held for IDLE_POLLS polls that bring nothing new, each asking to be polled again...
        for polled in 1..=usize::from(IDLE_POLLS) {
            let before = wakes(&waker);
            assert!(poll_once(&mut coalesced, &waker).is_err(), "held at poll {polled}");
            assert_eq!(wakes(&waker), before + 1, "a held frame always asks for the next poll");
        }
        // ...then out, the three in one frame.
        let frame = poll_once(&mut coalesced, &waker).expect("released").expect("a frame").expect("data");
        assert_eq!(frame, "data: 1\n\ndata: 2\n\ndata: 3\n\n");
        assert!(poll_once(&mut coalesced, &waker).is_err(), "nothing held, nothing sent");

        // An event arriving while others are held joins them and restarts the count.
        tx.send(Ok(Bytes::from("data: 4\n\n"))).expect("send");
        assert!(poll_once(&mut coalesced, &waker).is_err());
        tx.send(Ok(Bytes::from("data: 5\n\n"))).expect("send");
        for _ in 0..IDLE_POLLS {
            assert!(poll_once(&mut coalesced, &waker).is_err());
        }
        let frame = poll_once(&mut coalesced, &waker).expect("released").expect("a frame").expect("data");
        assert_eq!(frame, "data: 4\n\ndata: 5\n\n");

        // The end releases what is held at once, then ends.
        tx.send(Ok(Bytes::from("data: [DONE]\n\n"))).expect("send");
        drop(tx);
        let frame = poll_once(&mut coalesced, &waker).expect("at once").expect("a frame").expect("data");
        assert_eq!(frame, "data: [DONE]\n\n");
        assert!(matches!(poll_once(&mut coalesced, &waker), Ok(None)), "then the end");
    }

    #[tokio::test]
    async fn priming_takes_the_first_events_already_there_and_waits_for_nothing_else() {
        let (tx, rx) = channel();
        tx.send(Ok(Bytes::from("data: 1\n\n"))).expect("send");
        tx.send(Ok(Bytes::from("data: 2\n\n"))).expect("send");
        let mut primed = Coalesced::new(rx);
        primed.prime().await;
        let waker = std::sync::Arc::new(CountingWaker(Default::default()));
        let frame = poll_once(&mut primed, &waker).expect("kept").expect("a frame").expect("data");
        assert_eq!(frame, "data: 1\n\ndata: 2\n\n", "both, for the head's write");

        let (tx, rx) = channel();
        let mut primed = Coalesced::new(rx);
        let waited = tokio::time::timeout(Duration::from_secs(5), primed.prime()).await;
        waited.expect("nothing has arrived: the head is not held for it");
        tx.send(Ok(Bytes::from("data: 3\n\n"))).expect("send");
        drop(tx);
        let rest: Vec<Sent> = primed.collect().await;
        assert_eq!(rest.into_iter().map(|frame| frame.expect("data")).collect::<Vec<_>>(), ["data: 3\n\n"]);
    }

    #[test]
    fn a_failure_comes_after_what_was_gathered_and_a_large_frame_is_not_held() {
        let (tx, rx) = channel();
        let mut coalesced = Coalesced::new(rx);
        let waker = std::sync::Arc::new(CountingWaker(Default::default()));
        tx.send(Ok(Bytes::from("data: 1\n\n"))).expect("send");
        tx.send(Err(std::io::Error::other("cut"))).expect("send");
        let frame = poll_once(&mut coalesced, &waker).expect("at once").expect("a frame").expect("data");
        assert_eq!(frame, "data: 1\n\n");
        let failure = poll_once(&mut coalesced, &waker).expect("at once").expect("the failure");
        assert_eq!(failure.expect_err("an error").to_string(), "cut");
        assert!(matches!(poll_once(&mut coalesced, &waker), Ok(None)));

        let (tx, rx) = channel();
        let mut coalesced = Coalesced::new(rx);
        tx.send(Ok(Bytes::from(vec![b'x'; MAX_GATHERED]))).expect("send");
        tx.send(Ok(Bytes::from("data: 2\n\n"))).expect("send");
        let frame = poll_once(&mut coalesced, &waker).expect("at once").expect("a frame").expect("data");
        assert_eq!(frame.len(), MAX_GATHERED, "a full frame goes out without waiting");
    }

    #[tokio::test]
    async fn usage_chunk_is_read_and_stripped_at_every_split_point() {
        let start = STREAM.find(USAGE_EVENT_START).expect("usage event");
        let end = start + STREAM[start..].find("\n\n").expect("end") + 2;
        assert_billed_exactly_and_stripped(STREAM.as_bytes(), start..end).await;
    }

    /// `"usage": {` as Python servers write it, pretty-printed JSON over several `data:`
    /// lines, CRLF and CR line ends: billed exactly, and the usage chunk still removed.
    #[tokio::test]
    async fn spaced_pretty_multi_line_crlf_and_cr_usage_is_billed_exactly_and_stripped() {
        let (head, tail) = STREAM.split_at(STREAM.find(USAGE_EVENT_START).expect("usage event"));
        let done = "data: [DONE]\n\n";
        let spaced = "data: {\"id\": \"c1\", \"choices\": [], \"usage\": {\"prompt_tokens\": 9, \"completion_tokens\": 1, \"prompt_tokens_details\": {\"cached_tokens\": 4}}}\n\n";
        let pretty = "data: {\r\ndata:   \"usage\" : {\r\ndata:\t\"prompt_tokens_details\": {\"cached_tokens\": 4},\r\ndata: \"completion_tokens\": 1,\r\ndata: \"prompt_tokens\": 9 },\r\n: a comment\r\ndata: \"choices\": [ ]\r\ndata: }\r\n\r\n";
        let cr_only = "event: message\rdata: {\"choices\":[],\rdata: \"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\r\r";
        assert!(tail.ends_with(done));
        for usage_event in [spaced, pretty, cr_only] {
            let stream = format!("{head}{usage_event}{done}");
            let start = head.len();
            assert_billed_exactly_and_stripped(stream.as_bytes(), start..start + usage_event.len()).await;
            let crlf = stream.replace("\n\n", "\r\n\r\n");
            let end = crlf.len() - "data: [DONE]\r\n\r\n".len();
            assert_billed_exactly_and_stripped(
                crlf.as_bytes(),
                crlf.find(&usage_event.replace("\n\n", "\r\n\r\n")).expect("event")..end,
            )
            .await;
        }
    }

    #[tokio::test]
    async fn a_cut_stream_is_booked_with_an_estimate_of_what_was_read() {
        let cut = STREAM.find("data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},").expect("finish event");
        let (out, event) = relay(vec![Bytes::copy_from_slice(&STREAM.as_bytes()[..cut])], false).await;
        let ending = error_event(Api::Chat, Broken::Cut);
        assert_eq!(out, [&STREAM.as_bytes()[..cut], &ending[..]].concat(), "what was read, then the error event");
        assert_eq!(event.response_bytes, out.len() as u64, "each byte relayed counted once");
        let usage = event.usage.expect("estimated usage");
        assert!(event.usage_estimated && event.aborted);
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (3, 1), "the prompt's estimate, `Hi`");
    }

    #[test]
    fn a_broken_stream_ends_with_an_error_in_its_apis_own_shape() {
        let data = |api| {
            let event = String::from_utf8(error_event(api, Broken::Idle).to_vec()).expect("utf-8");
            assert!(event.ends_with("\n\n"), "{event}");
            let name = event.strip_prefix("event: ").and_then(|e| e.split_once('\n')).map(|(name, _)| name.to_owned());
            let json = event.lines().find_map(|l| l.strip_prefix("data: ")).expect("data line");
            (name, serde_json::from_str::<serde_json::Value>(json).expect("json"))
        };
        for api in [Api::Chat, Api::Completions] {
            let (name, body) = data(api);
            assert_eq!((name, &body["error"]["code"]), (None, &json!("upstream_error")), "{body}");
        }
        let (name, body) = data(Api::Responses);
        assert_eq!(
            (name.as_deref(), &body["type"], &body["code"]),
            (Some("error"), &json!("error"), &json!("upstream_error"))
        );
        let (name, body) = data(Api::Messages);
        assert_eq!(
            (name.as_deref(), &body["type"], &body["error"]["type"]),
            (Some("error"), &json!("error"), &json!("api_error"))
        );
        assert_eq!(body["error"]["message"], Broken::Idle.message());
    }

    /// The content, then a pause before the usage chunk (as a real upstream takes to count).
    fn slow_usage_upstream(pause: Duration) -> Upstream {
        let cut = STREAM.find("data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},").expect("finish event");
        let content = stream::iter([Ok(Bytes::from_static(&STREAM.as_bytes()[..cut]))]);
        let rest = stream::once(async move {
            tokio::time::sleep(pause).await;
            Ok(Bytes::from_static(&STREAM.as_bytes()[cut..]))
        });
        Box::pin(content.chain(rest))
    }

    #[tokio::test]
    async fn a_client_that_leaves_after_the_content_is_billed_the_upstreams_usage() {
        let (mut sse, mut rx, drains) = metered(slow_usage_upstream(Duration::from_millis(200)), false, limits());
        let first = sse.next().await.expect("content").expect("bytes");
        assert!(first.ends_with(b"\"Hi\"}}],\"usage\":null}\n\n"));
        drop(sse);
        drains.close();
        drains.wait().await;
        let event = booked(&mut rx).await;
        assert!(event.aborted, "the client left");
        assert!(!event.usage_estimated, "the drain read the upstream's own usage");
        assert_eq!(
            event.usage,
            Some(TokenUsage { prompt_tokens: 9, cached_tokens: 4, cache_write_tokens: 0, completion_tokens: 1 })
        );
    }

    #[tokio::test]
    async fn a_left_stream_whose_usage_never_comes_is_estimated_within_the_drain_bound() {
        let limits = StreamLimits { drain_time: Duration::from_millis(100), ..limits() };
        let (mut sse, mut rx, drains) = metered(slow_usage_upstream(Duration::from_secs(3600)), false, limits);
        sse.next().await.expect("content").expect("bytes");
        let left = std::time::Instant::now();
        drop(sse);
        drains.close();
        drains.wait().await;
        assert!(left.elapsed() < Duration::from_secs(2), "the drain is bounded in time");
        let event = booked(&mut rx).await;
        assert!(event.aborted && event.usage_estimated);
        assert_eq!(event.usage.map(|u| (u.prompt_tokens, u.completion_tokens)), Some((3, 1)));
    }

    /// The events of `STREAM`, one after each of `pauses`.
    fn paced_upstream(pauses: Vec<Duration>) -> Upstream {
        let events: Vec<&'static str> = STREAM.split_inclusive("\n\n").collect();
        let paced = stream::iter(events.into_iter().zip(pauses)).then(|(event, pause)| async move {
            tokio::time::sleep(pause).await;
            Ok(Bytes::from_static(event.as_bytes()))
        });
        Box::pin(paced)
    }

    /// The idle limit counts from the upstream's last event: events 0.9 limits apart keep a
    /// stream going for 4.5 limits, and one silence of 1.1 limits ends it, at the limit.
    #[tokio::test(start_paused = true)]
    async fn the_idle_limit_counts_from_the_last_event() {
        let idle = Duration::from_secs(10);
        let limits = || StreamLimits::with_idle(idle);
        let steady = vec![idle.mul_f32(0.9); 5];
        let (mut sse, mut rx, _) = metered(paced_upstream(steady), true, limits());
        let mut out = Vec::new();
        while let Some(chunk) = sse.next().await {
            out.extend_from_slice(&chunk.expect("chunk"));
        }
        assert_eq!(out, STREAM.as_bytes(), "relayed whole, no idle error");
        assert!(!booked(&mut rx).await.aborted);

        let pauses = vec![Duration::ZERO, idle.mul_f32(0.9), idle.mul_f32(1.1), Duration::ZERO, Duration::ZERO];
        let (mut sse, mut rx, _) = metered(paced_upstream(pauses), true, limits());
        let started = Instant::now();
        let mut out = Vec::new();
        while let Some(chunk) = sse.next().await {
            out.extend_from_slice(&chunk.expect("chunk"));
        }
        let two_events: usize = STREAM.split_inclusive("\n\n").take(2).map(str::len).sum();
        let ending = error_event(Api::Chat, Broken::Idle);
        assert_eq!(out, [&STREAM.as_bytes()[..two_events], &ending[..]].concat());
        assert_eq!(started.elapsed(), idle.mul_f32(0.9) + idle, "cut one limit after the last event");
        assert!(booked(&mut rx).await.aborted);
    }

    #[tokio::test]
    async fn an_event_without_a_blank_line_ends_the_stream_with_an_error_event() {
        let content =
            STREAM.find("data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},").expect("finish event");
        let endless = format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}", "x".repeat(300));
        let upstream = stream::iter([Ok(Bytes::from_static(&STREAM.as_bytes()[..content])), Ok(Bytes::from(endless))])
            .chain(stream::pending());
        let limits = StreamLimits { max_event_bytes: 256, ..limits() };
        let (mut sse, mut rx, _) = metered(Box::pin(upstream), false, limits);
        let mut out = Vec::new();
        while let Some(chunk) = sse.next().await {
            out.extend_from_slice(&chunk.expect("chunk"));
        }
        assert_eq!(out, [&STREAM.as_bytes()[..content], &error_event(Api::Chat, Broken::Oversized)[..]].concat());
        let event = booked(&mut rx).await;
        assert!(event.aborted && event.usage_estimated);
        assert_eq!(event.usage.map(|u| (u.prompt_tokens, u.completion_tokens)), Some((3, 1)), "what was relayed");
    }
}
