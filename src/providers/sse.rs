//! An incremental Server-Sent Events reader, by the WHATWG `text/event-stream` rules: lines
//! end with LF, CRLF or CR; a blank line dispatches the event; `data:` lines are joined with
//! LF; `event:` names it; `id:`, `retry:`, unknown fields and `:` comments are skipped; one
//! space after the colon is dropped. Chunk boundaries never change what is read: a CR at the
//! end of a chunk waits for the next byte to tell CR from CRLF.
//!
//! The reader also keeps the raw bytes, so the relay passes events on byte for byte and can
//! remove whole events (the usage chunk the client did not ask for).

use bytes::{Bytes, BytesMut};

/// One dispatched event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event:` field; empty means the default type, `message`.
    pub event_type: &'a [u8],
    /// The `data:` lines, joined with LF.
    pub data: &'a [u8],
}

pub struct SseReader {
    /// The bytes of the event being read (complete events are split off by `push`).
    pending: BytesMut,
    /// Where the current line starts in `pending`.
    line_start: usize,
    /// How far `pending` has been searched for a line end.
    scanned: usize,
    /// The data buffer: each `data:` value followed by LF.
    data: Vec<u8>,
    event_type: Vec<u8>,
    max_event_bytes: usize,
}

impl SseReader {
    /// `max_event_bytes` bounds an event still waiting for its blank line (see [`Self::overflowed`]).
    pub fn new(max_event_bytes: usize) -> SseReader {
        SseReader {
            pending: BytesMut::new(),
            line_start: 0,
            scanned: 0,
            data: Vec::new(),
            event_type: Vec::new(),
            max_event_bytes,
        }
    }

    /// Reads `chunk`, calls `keep` on every event it completes, and returns the raw bytes of
    /// the completed events in order, without those `keep` refused. Bytes between events
    /// (comments, blank lines) travel with the event that follows them.
    pub fn push(&mut self, chunk: &[u8], keep: impl FnMut(SseEvent<'_>) -> bool) -> Bytes {
        self.pending.extend_from_slice(chunk);
        self.take_complete(false, keep)
    }

    /// The stream ended: a trailing CR ends its line, the last complete events are returned
    /// as by [`Self::push`], followed by an incomplete event's bytes as they are (relayed,
    /// never dispatched, as the spec says).
    pub fn finish(&mut self, keep: impl FnMut(SseEvent<'_>) -> bool) -> Bytes {
        let complete = self.take_complete(true, keep);
        if self.pending.is_empty() {
            return complete;
        }
        let mut out = BytesMut::from(complete);
        out.extend_from_slice(&self.pending.split());
        self.line_start = 0;
        self.scanned = 0;
        out.freeze()
    }

    /// An event has gone on longer than `max_event_bytes` without its blank line.
    pub fn overflowed(&self) -> bool {
        self.pending.len() > self.max_event_bytes
    }

    fn take_complete(&mut self, at_eof: bool, mut keep: impl FnMut(SseEvent<'_>) -> bool) -> Bytes {
        // End of the last complete event, and the refused events' byte ranges.
        let mut complete_end = 0;
        let mut refused: Vec<(usize, usize)> = Vec::new();
        loop {
            let Some(found) = memchr::memchr2(b'\n', b'\r', &self.pending[self.scanned..]) else {
                self.scanned = self.pending.len();
                break;
            };
            let at = self.scanned + found;
            let terminator = match (self.pending[at], self.pending.get(at + 1)) {
                (b'\r', Some(b'\n')) => 2,
                // CR or CRLF? Only the next byte (or the stream's end) tells.
                (b'\r', None) if !at_eof => {
                    self.scanned = at;
                    break;
                }
                _ => 1,
            };
            let line_end = at;
            let next_line = at + terminator;
            if line_end == self.line_start {
                if !self.data.is_empty() {
                    self.data.pop();
                    let event = SseEvent { event_type: &self.event_type, data: &self.data };
                    if !keep(event) {
                        refused.push((complete_end, next_line));
                    }
                    self.data.clear();
                }
                self.event_type.clear();
                complete_end = next_line;
            } else {
                field(&self.pending[self.line_start..line_end], &mut self.data, &mut self.event_type);
            }
            self.line_start = next_line;
            self.scanned = next_line;
        }
        let complete = self.pending.split_to(complete_end);
        self.line_start -= complete_end;
        self.scanned -= complete_end;
        if refused.is_empty() {
            return complete.freeze();
        }
        let mut kept = BytesMut::with_capacity(complete.len());
        let mut from = 0;
        for (start, end) in refused {
            kept.extend_from_slice(&complete[from..start]);
            from = end;
        }
        kept.extend_from_slice(&complete[from..]);
        kept.freeze()
    }
}

/// Applies one non-blank line to the event being read.
fn field(line: &[u8], data: &mut Vec<u8>, event_type: &mut Vec<u8>) {
    if line[0] == b':' {
        return;
    }
    let (name, value) = match memchr::memchr(b':', line) {
        Some(colon) => {
            let value = &line[colon + 1..];
            (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
        }
        None => (line, &[][..]),
    };
    match name {
        b"data" => {
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        b"event" => {
            event_type.clear();
            event_type.extend_from_slice(value);
        }
        // `id` and `retry` steer a browser's reconnection; the relay has no use for them.
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A dispatched event as the tests compare it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Read {
        event_type: Vec<u8>,
        data: Vec<u8>,
    }

    /// The spec's algorithm on the whole stream at once, written for clarity: split into
    /// lines first, then interpret them. Returns each dispatched event with the byte range of
    /// its segment (from the previous segment's end to its blank line's end).
    fn reference_read(input: &[u8]) -> Vec<(Read, std::ops::Range<usize>)> {
        let mut lines = Vec::new();
        let (mut start, mut i) = (0, 0);
        while i < input.len() {
            match input[i] {
                b'\r' if input.get(i + 1) == Some(&b'\n') => {
                    lines.push((start, i, i + 2));
                    i += 2;
                    start = i;
                }
                b'\r' | b'\n' => {
                    lines.push((start, i, i + 1));
                    i += 1;
                    start = i;
                }
                _ => i += 1,
            }
        }
        let (mut events, mut segment_start) = (Vec::new(), 0);
        let (mut data, mut event_type): (Option<Vec<u8>>, Vec<u8>) = (None, Vec::new());
        for (start, end, next) in lines {
            let line = &input[start..end];
            if line.is_empty() {
                if let Some(mut joined) = data.take() {
                    joined.pop();
                    events.push((Read { event_type: event_type.clone(), data: joined }, segment_start..next));
                }
                event_type.clear();
                segment_start = next;
                continue;
            }
            if line.starts_with(b":") {
                continue;
            }
            let (name, value) = match line.iter().position(|&b| b == b':') {
                Some(colon) => (&line[..colon], line[colon + 1..].strip_prefix(b" ").unwrap_or(&line[colon + 1..])),
                None => (line, &b""[..]),
            };
            match name {
                b"data" => {
                    let joined = data.get_or_insert_with(Vec::new);
                    joined.extend_from_slice(value);
                    joined.push(b'\n');
                }
                b"event" => event_type = value.to_vec(),
                _ => {}
            }
        }
        events
    }

    /// Runs `input` through the reader in the given chunks, refusing the events `refuse` picks.
    fn incremental_read(chunks: &[&[u8]], refuse: impl Fn(&Read) -> bool) -> (Vec<Read>, Vec<u8>) {
        let mut reader = SseReader::new(usize::MAX);
        let (mut events, mut out) = (Vec::new(), Vec::new());
        let mut on_event = |event: SseEvent<'_>| {
            let read = Read { event_type: event.event_type.to_vec(), data: event.data.to_vec() };
            let kept = !refuse(&read);
            events.push(read);
            kept
        };
        for chunk in chunks {
            out.extend_from_slice(&reader.push(chunk, &mut on_event));
        }
        out.extend_from_slice(&reader.finish(&mut on_event));
        (events, out)
    }

    /// What a relay that refuses every event the reference dispatched would pass on.
    fn without_segments(input: &[u8], segments: &[std::ops::Range<usize>]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut from = 0;
        for range in segments {
            out.extend_from_slice(&input[from..range.start]);
            from = range.end;
        }
        out.extend_from_slice(&input[from..]);
        out
    }

    #[test]
    fn every_line_end_multi_line_data_comments_and_fields() {
        let input = b": keep-alive\r\nevent: usage\rdata:{\"a\":\r\ndata:  1}\nid: 7\nretry: 100\nbogus\n\r\ndata\n\ndata: [DONE]\r\n\r\n";
        let (events, out) = incremental_read(&[input], |_| false);
        let expected = vec![
            Read { event_type: b"usage".to_vec(), data: b"{\"a\":\n 1}".to_vec() },
            Read { event_type: Vec::new(), data: Vec::new() },
            Read { event_type: Vec::new(), data: b"[DONE]".to_vec() },
        ];
        assert_eq!(events, expected);
        assert_eq!(out, input, "everything is relayed byte for byte");
        let reference: Vec<Read> = reference_read(input).into_iter().map(|(read, _)| read).collect();
        assert_eq!(reference, expected);
    }

    #[test]
    fn a_cr_at_a_chunk_end_waits_for_the_next_byte() {
        // Split inside CRLF CRLF: the LF after the chunk's last CR belongs to the same line end.
        let (events, out) = incremental_read(&[b"data: x\r\n\r", b"\ndata: y\r\n\r\n"], |read| read.data == b"x");
        assert_eq!(events.iter().map(|e| e.data.as_slice()).collect::<Vec<_>>(), [&b"x"[..], b"y"]);
        assert_eq!(out, b"data: y\r\n\r\n", "the refused event leaves whole, its CRLF included");
        // A CR-only stream's last event is dispatched at the end of the stream.
        let (events, out) = incremental_read(&[b"data: z\r\r"], |_| false);
        assert_eq!(events.len(), 1);
        assert_eq!(out, b"data: z\r\r");
    }

    #[test]
    fn an_incomplete_event_is_relayed_at_the_end_but_never_dispatched() {
        let (events, out) = incremental_read(&[b"data: a\n\ndata: {\"usage\":", b"{}}\n"], |_| false);
        assert_eq!(events.len(), 1);
        assert_eq!(out, b"data: a\n\ndata: {\"usage\":{}}\n");
    }

    #[test]
    fn an_event_without_a_blank_line_overflows_its_bound() {
        let mut reader = SseReader::new(16);
        assert_eq!(&reader.push(b"data: short\n\n", |_| true)[..], b"data: short\n\n");
        assert!(!reader.overflowed());
        assert!(reader.push(b"data: 0123456789abcdef", |_| true).is_empty());
        assert!(reader.overflowed());
    }

    /// One generated line: a field or a comment, with any of the three line ends.
    fn line() -> impl Strategy<Value = Vec<u8>> {
        let value = proptest::collection::vec(
            prop_oneof![Just(b'a'), Just(b' '), Just(b':'), Just(b'{'), Just(b'"'), Just(0xC3), Just(0xA9)],
            0..6,
        );
        let name = prop_oneof![
            Just(&b"data"[..]),
            Just(&b"data"[..]),
            Just(&b"event"[..]),
            Just(&b"id"[..]),
            Just(&b"retry"[..]),
            Just(&b"dat"[..]),
            Just(&b""[..]),
        ];
        let separator = prop_oneof![Just(&b":"[..]), Just(&b": "[..]), Just(&b""[..])];
        let end = prop_oneof![Just(&b"\n"[..]), Just(&b"\r\n"[..]), Just(&b"\r"[..])];
        (name, separator, value, end).prop_map(|(name, separator, value, end)| [name, separator, &value, end].concat())
    }

    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let blank = prop_oneof![Just(b"\n".to_vec()), Just(b"\r\n".to_vec()), Just(b"\r".to_vec())];
        let event = (proptest::collection::vec(line(), 0..4), blank)
            .prop_map(|(lines, blank)| [lines.concat(), blank].concat());
        (proptest::collection::vec(event, 0..8), proptest::collection::vec(any::<u8>(), 0..4))
            .prop_map(|(events, tail)| [events.concat(), tail].concat())
    }

    /// `input` cut at `points` (taken modulo its length).
    fn cuts(input: &[u8], mut points: Vec<usize>) -> Vec<&[u8]> {
        points.iter_mut().for_each(|p| *p %= input.len() + 1);
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut from = 0;
        for point in points {
            chunks.push(&input[from..point]);
            from = point;
        }
        chunks.push(&input[from..]);
        chunks
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        /// The fuzz target of the SSE reader: generated streams, cut anywhere, read as the
        /// reference reads them whole; relayed byte for byte, or without exactly the refused events.
        #[test]
        fn fuzz_sse_reader_matches_the_reference_at_any_chunking(
            input in stream(),
            points in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let chunks = cuts(&input, points);
            let reference = reference_read(&input);
            let expected: Vec<Read> = reference.iter().map(|(read, _)| read.clone()).collect();
            let (events, out) = incremental_read(&chunks, |_| false);
            prop_assert_eq!(&events, &expected);
            prop_assert_eq!(&out, &input);
            let (_, out) = incremental_read(&chunks, |_| true);
            let segments: Vec<_> = reference.into_iter().map(|(_, range)| range).collect();
            prop_assert_eq!(out, without_segments(&input, &segments));
        }

        #[test]
        fn fuzz_sse_reader_never_panics_on_arbitrary_bytes(
            input in proptest::collection::vec(any::<u8>(), 0..256),
            points in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let chunks = cuts(&input, points);
            let (events, out) = incremental_read(&chunks, |_| false);
            prop_assert_eq!(&out, &input);
            let expected: Vec<Read> = reference_read(&input).into_iter().map(|(read, _)| read).collect();
            prop_assert_eq!(events, expected);
        }
    }
}
