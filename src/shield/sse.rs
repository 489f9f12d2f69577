//! Streaming shield for server-sent events of the chat completions, Responses
//! and Messages APIs ([`StreamFormat`]).
//!
//! Raw bytes are cut into complete SSE events (chunk boundaries are
//! arbitrary). Every streamed string (chat: every string under a choice's
//! `delta` but protocol fields: `content`, `refusal`, reasoning, tool-call
//! arguments, `audio.transcript`, vendor fields; Responses: the `delta` of a
//! `*.delta` event; Messages: the `text`, `thinking` or `partial_json` of a
//! content block delta) is appended to its text's *channel*, which
//! runs the same detectors as [`Shield::sanitize`] over a small window of
//! not-yet-released text and commits everything that can no longer become
//! part of a match. Events are queued in arrival order and released once all
//! the text they carry is committed. An event untouched by any removal is
//! released as its original bytes; an affected one gets new string literals
//! spliced in: the marker goes into the event where the removal starts and
//! later events of the same removal carry the text that remains (often "").
//! Events without streamed text (role, finish, usage, `[DONE]`, comments,
//! errors, a Responses `*.done` event with the whole text, the final response
//! object) keep their place in the queue and are sanitized on their own, as
//! are the other strings of a text event.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::detect::Class;
use super::event_shape::EventShape;
use super::fold::FoldedView;
use super::json::{self, Finish};
use super::prompt::PromptState;
use super::{Redactions, RemovalKind, Shield, render};

/// An "event" this long without a blank line is not OpenAI SSE; it is
/// sanitized as plain text so memory stays bounded.
const MAX_EVENT_BYTES: usize = 4 << 20;
/// Queued bytes beyond which held text is force-committed. Only reachable
/// when upstream sends huge amounts of non-text events while a few words of
/// text are held.
const MAX_QUEUE_BYTES: usize = 1 << 20;

/// The wire format of a streamed answer: where its events carry text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// `chat.completion.chunk` events (and legacy completions' chunks).
    Chat,
    /// OpenAI Responses API events (`response.output_text.delta`, ...).
    Responses,
    /// Anthropic Messages API events (`content_block_delta`, ...).
    Messages,
}

/// Per-response streaming state. Not shared between responses.
pub struct SseShield {
    shield: Arc<Shield>,
    /// The stream's format, and the layout of its last walked event.
    shape: EventShape,
    input: BytesMut,
    /// Where the search for the next line end resumes inside `input`.
    line_start: usize,
    queue: VecDeque<Held>,
    queued: usize,
    channels: Vec<Channel>,
    out: BytesMut,
    kinds: Vec<RemovalKind>,
}

struct Held {
    raw: Bytes,
    body: HeldBody,
}

enum HeldBody {
    /// Already decided: the replacement (if sanitized) and its removals.
    Ready(Option<(Vec<u8>, Vec<RemovalKind>)>),
    Text(TextEvent),
}

struct TextEvent {
    /// The event's joined `data:` payload (JSON).
    data: Vec<u8>,
    parts: Vec<Part>,
    /// Its other strings, already sanitized: (literal span, new literal), and their removals.
    edits: Vec<(Range<usize>, Vec<u8>)>,
    kinds: Vec<RemovalKind>,
    logprobs: Vec<(u64, Range<usize>)>,
}

/// One string of streamed text inside an event.
struct Part {
    channel: usize,
    group: u64,
    /// Span of the string literal inside `data`.
    literal: Range<usize>,
    /// Offset of `text` inside its channel.
    start: usize,
    text: String,
}

struct Channel {
    group: u64,
    field: Vec<u8>,
    scan: TextScan,
    reds: Redactions,
}

/// The not-yet-committed tail of one channel's text and the detector state.
struct TextScan {
    /// Channel offset of `window[0]`: everything before is decided.
    committed: usize,
    total: usize,
    window: String,
    /// Last committed byte (left-boundary context for the detectors).
    prev: u8,
    /// A credential that reached the committed edge continues with this class.
    cont: Option<Class>,
    prompt: PromptState,
}

impl TextScan {
    fn new() -> TextScan {
        TextScan { committed: 0, total: 0, window: String::new(), prev: 0, cont: None, prompt: PromptState::new() }
    }

    fn append(&mut self, sh: &Shield, text: &str, reds: &mut Redactions) {
        if text.is_empty() {
            return;
        }
        self.window.push_str(text);
        if let Some(idx) = &sh.prompt {
            self.prompt.feed(idx, text, self.total, &mut |s, e, k| reds.add(s, e, k));
        }
        self.total += text.len();
        self.settle(sh, false, reds);
    }

    /// The text is complete (finish_reason, a `*.done` or block stop event, `[DONE]`, end of stream).
    fn finish(&mut self, sh: &Shield, reds: &mut Redactions) {
        if let Some(idx) = &sh.prompt {
            self.prompt.finish(idx, &mut |s, e, k| reds.add(s, e, k));
        }
        self.settle(sh, true, reds);
    }

    /// Scans the window, records decided removals and commits the longest
    /// prefix that no future text can turn into (part of) a match.
    fn settle(&mut self, sh: &Shield, eof: bool, reds: &mut Redactions) {
        let base = self.committed;
        // The detectors read the window folded; what they find, and every hold point, is
        // mapped back to the original text (offsets `base + view.start(..)`).
        let view = FoldedView::new(&self.window);
        let at = |folded: usize| base + view.start(folded);
        let tail = sh.detector.scan(&view.text, self.prev, self.cont, eof, |s, e, k| {
            reds.add(base + view.start(s), base + view.end(e), k)
        });
        let open = tail.open.map(|o| (at(o.trigger), at(o.start), at(o.body), o.class));
        let mut c = self.total;
        if let Some((trigger, _, body, _)) = open {
            // Commit into an open credential only inside its body run and
            // short of its last `open_tail` bytes; a shorter one is held
            // whole, trigger included, so the next scan sees it again.
            let tail_start = at(view.text.len().saturating_sub(sh.detector.open_tail()));
            c = if tail_start > body { tail_start } else { trigger };
        }
        if !eof {
            // Holds inside an open credential are moot: that text is removed
            // whatever comes next.
            let hold = |p: usize| open.is_none_or(|(_, s, _, _)| p < s);
            let prompt = sh.prompt.as_ref().and_then(|idx| self.prompt.pending(idx));
            for p in [tail.pending.map(at), prompt].into_iter().flatten() {
                if hold(p) {
                    c = c.min(p);
                }
            }
        }
        let mut c = c.max(base);
        // Every hold point is a character boundary by construction; this
        // only guarantees that a slip could never make `drain` panic.
        while !self.window.is_char_boundary(c - base) {
            c -= 1;
        }
        let n = c - base;
        self.cont = match open {
            // Committing into an open credential: keep removing its class.
            Some((_, s, _, cls)) if s < c => Some(cls),
            _ if self.cont.is_some() && n < view.end(tail.cont_run) => self.cont,
            _ => None,
        };
        if eof {
            self.cont = None;
        }
        if n == 0 {
            return;
        }
        // Context for the next scan: the last folded byte committed (none new when only
        // invisible characters were).
        if let Some(&b) = view.folded_offset(n).checked_sub(1).and_then(|i| view.text.as_bytes().get(i)) {
            self.prev = b;
        }
        drop(view);
        self.window.drain(..n);
        self.committed = c;
    }
}

impl SseShield {
    pub(super) fn new(shield: Arc<Shield>, format: StreamFormat) -> SseShield {
        SseShield {
            shield,
            shape: EventShape::new(format),
            input: BytesMut::new(),
            line_start: 0,
            queue: VecDeque::new(),
            queued: 0,
            channels: Vec::new(),
            out: BytesMut::new(),
            kinds: Vec::new(),
        }
    }

    /// Feed raw bytes exactly as received from upstream. Returns the bytes
    /// to send to the client now, plus removals found in them.
    pub fn push(&mut self, chunk: &[u8]) -> (Bytes, Vec<RemovalKind>) {
        self.input.extend_from_slice(chunk);
        while let Some(end) = self.next_event_end() {
            let raw = self.input.split_to(end).freeze();
            self.process(raw);
        }
        if self.input.len() > MAX_EVENT_BYTES {
            self.line_start = 0;
            let raw = self.input.split().freeze();
            self.process(raw);
        }
        if self.queued > MAX_QUEUE_BYTES {
            self.finish_channels(&Finish::All);
        }
        self.release();
        self.take_output()
    }

    /// Upstream finished (or was cut): flush everything still held. A
    /// trailing event without its blank line is processed as an event.
    pub fn finish(&mut self) -> (Bytes, Vec<RemovalKind>) {
        if !self.input.is_empty() {
            self.line_start = 0;
            let raw = self.input.split().freeze();
            self.process(raw);
        }
        self.finish_channels(&Finish::All);
        self.release();
        self.take_output()
    }

    fn take_output(&mut self) -> (Bytes, Vec<RemovalKind>) {
        (self.out.split().freeze(), std::mem::take(&mut self.kinds))
    }

    /// End offset (after the blank line) of the first complete event.
    fn next_event_end(&mut self) -> Option<usize> {
        let buf = &self.input[..];
        let mut i = self.line_start;
        loop {
            let Some(off) = memchr::memchr2(b'\n', b'\r', &buf[i..]) else {
                self.line_start = i;
                return None;
            };
            let p = i + off;
            let term = if buf[p] == b'\r' {
                match buf.get(p + 1) {
                    // A CR at the end may be the first half of a CRLF.
                    None => {
                        self.line_start = i;
                        return None;
                    }
                    Some(b'\n') => 2,
                    Some(_) => 1,
                }
            } else {
                1
            };
            let blank = p == i;
            i = p + term;
            if blank {
                self.line_start = 0;
                return Some(i);
            }
        }
    }

    fn process(&mut self, raw: Bytes) {
        let body = match sse_data(&raw) {
            None => HeldBody::Ready(self.shield.sanitize_lossy(&raw)),
            Some(d) if d.as_slice() == b"[DONE]" => {
                self.finish_channels(&Finish::All);
                HeldBody::Ready(None)
            }
            Some(d) => self.process_json(d, &raw),
        };
        self.queued += raw.len();
        self.queue.push_back(Held { raw, body });
    }

    fn process_json(&mut self, data: Vec<u8>, raw: &[u8]) -> HeldBody {
        let Some(delta) = self.shape.delta(&data) else {
            return HeldBody::Ready(self.shield.sanitize_lossy(raw));
        };
        if delta.texts.is_empty() {
            for f in &delta.finished {
                self.finish_channels(f);
            }
            // Finish, usage, error and `*.done` events: sanitize their own strings. The walk
            // above found each of them (`standalone`), so a clean event is not walked again;
            // one with a removal is, for the logprobs beside what was removed.
            let shield = &self.shield;
            if delta.standalone.iter().all(|l| shield.sanitize(&json::decode_str(&data[l.clone()])).is_none()) {
                return HeldBody::Ready(None);
            }
            let repl = json::sanitize_body(shield, &data).map(|(d, k)| (rebuild_event(raw, &d), k));
            return HeldBody::Ready(repl);
        }
        let (mut edits, mut kinds) = (Vec::new(), Vec::new());
        for literal in delta.standalone {
            if let Some((clean, k)) = self.shield.sanitize(&json::decode_str(&data[literal.clone()])) {
                edits.push((literal, json::encode_str(&clean)));
                kinds.extend(k);
            }
        }
        let mut parts = Vec::with_capacity(delta.texts.len());
        for json::Text { group, field, span: literal } in delta.texts {
            let text = json::decode_str(&data[literal.clone()]);
            let channel = self.channel(group, field);
            let ch = &mut self.channels[channel];
            let start = ch.scan.total;
            ch.scan.append(&self.shield, &text, &mut ch.reds);
            parts.push(Part { channel, group, literal, start, text: text.into_owned() });
        }
        for f in &delta.finished {
            self.finish_channels(f);
        }
        HeldBody::Text(TextEvent { data, parts, edits, kinds, logprobs: delta.logprobs })
    }

    fn channel(&mut self, group: u64, field: Vec<u8>) -> usize {
        if let Some(i) = self.channels.iter().position(|c| c.group == group && c.field == field) {
            return i;
        }
        self.channels.push(Channel { group, field, scan: TextScan::new(), reds: Redactions::default() });
        self.channels.len() - 1
    }

    /// Completes the channels `finish` covers: their text is final.
    fn finish_channels(&mut self, finish: &Finish) {
        for ch in &mut self.channels {
            if finish.covers(ch.group, &ch.field) {
                ch.scan.finish(&self.shield, &mut ch.reds);
            }
        }
    }

    fn release(&mut self) {
        while let Some(h) = self.queue.front() {
            let ready = match &h.body {
                HeldBody::Ready(_) => true,
                HeldBody::Text(ev) => {
                    ev.parts.iter().all(|p| self.channels[p.channel].scan.committed >= p.start + p.text.len())
                }
            };
            if !ready {
                break;
            }
            let Some(h) = self.queue.pop_front() else {
                break;
            };
            self.queued -= h.raw.len();
            self.emit(h);
        }
    }

    fn emit(&mut self, h: Held) {
        match h.body {
            HeldBody::Ready(None) => self.out.extend_from_slice(&h.raw),
            HeldBody::Ready(Some((bytes, kinds))) => {
                self.out.extend_from_slice(&bytes);
                self.kinds.extend(kinds);
            }
            HeldBody::Text(ev) => {
                let mut edits = ev.edits;
                self.kinds.extend(ev.kinds);
                let mut affected: Vec<u64> = Vec::new();
                for p in &ev.parts {
                    let ch = &mut self.channels[p.channel];
                    let end = p.start + p.text.len();
                    if ch.reds.overlaps(p.start, end) {
                        let text = render(&p.text, p.start, &ch.reds, &self.shield.marker, &mut self.kinds);
                        edits.push((p.literal.clone(), json::encode_str(&text)));
                        affected.push(p.group);
                    }
                    ch.reds.prune(end);
                }
                if edits.is_empty() {
                    self.out.extend_from_slice(&h.raw);
                    return;
                }
                for (group, span) in ev.logprobs {
                    if affected.contains(&group) {
                        let empty = json::emptied(&ev.data[span.clone()]);
                        edits.push((span, empty.to_vec()));
                    }
                }
                let data = json::splice(&ev.data, &mut edits);
                self.out.extend_from_slice(&rebuild_event(&h.raw, &data));
            }
        }
    }
}

/// Splits raw event bytes into (line, terminator) pairs.
fn lines(raw: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut rest = raw;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (line, term_len) = match memchr::memchr2(b'\n', b'\r', rest) {
            None => (rest, 0),
            Some(p) if rest[p] == b'\r' && rest.get(p + 1) == Some(&b'\n') => (&rest[..p], 2),
            Some(p) => (&rest[..p], 1),
        };
        let term = &rest[line.len()..line.len() + term_len];
        rest = &rest[line.len() + term_len..];
        Some((line, term))
    })
}

/// The value of a `data` field line (`data:x`, `data: x` or bare `data`).
fn data_value(line: &[u8]) -> Option<&[u8]> {
    let v = line.strip_prefix(b"data")?;
    if v.is_empty() {
        return Some(v);
    }
    let v = v.strip_prefix(b":")?;
    Some(v.strip_prefix(b" ").unwrap_or(v))
}

/// The event's data lines joined with `\n` (per the SSE spec).
fn sse_data(raw: &[u8]) -> Option<Vec<u8>> {
    let mut data: Option<Vec<u8>> = None;
    for (line, _) in lines(raw) {
        if let Some(v) = data_value(line) {
            match &mut data {
                Some(d) => {
                    d.push(b'\n');
                    d.extend_from_slice(v);
                }
                None => data = Some(v.to_vec()),
            }
        }
    }
    data
}

/// Re-emits an event with new data: other fields and the terminating blank
/// line are kept as they were, the data goes where the first data line was,
/// spelled as the upstream spelled it (`data:` or `data: `, LF or CRLF).
fn rebuild_event(raw: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + data.len());
    let mut wrote = false;
    for (line, term) in lines(raw) {
        let Some(value) = data_value(line) else {
            out.extend_from_slice(line);
            out.extend_from_slice(term);
            continue;
        };
        if !wrote {
            let term: &[u8] = if term.is_empty() { b"\n" } else { term };
            // A bare `data` line has no colon to keep: write the common spelling.
            let field = &line[..line.len() - value.len()];
            let field: &[u8] = if field.ends_with(b":") || field.ends_with(b": ") { field } else { b"data: " };
            for piece in data.split(|&b| b == b'\n') {
                out.extend_from_slice(field);
                out.extend_from_slice(piece);
                out.extend_from_slice(term);
            }
            wrote = true;
        }
    }
    out
}
