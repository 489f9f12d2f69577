//! A stream's events mostly share one layout: the same keys, numbers and protocol strings,
//! with only some strings differing from event to event (the streamed text, and padding such
//! as OpenAI's `obfuscation`). [`EventShape`] keeps the layout of the last event that was
//! walked and reads the next events by comparing bytes, without walking them.
//!
//! Why that equals the walk: an event that is the kept one with some string values replaced
//! by other valid string literals parses the same way, value for value (the walker's path
//! through it depends only on the bytes outside those literals, which are equal, and each
//! literal is read to its end by the same `json_string_end`). [`json::delta`] depends on the
//! structure, the keys, the numbers and the one string it reads (`Delta::read_string`, which
//! is kept as part of the layout), never on another string's content; so the delta is the
//! kept one with its spans moved. Held to the walk on generated events:
//! `tests::event_shape_reads_what_the_walk_reads`.

use std::ops::Range;

use super::StreamFormat;
use super::json::{self, Delta, Text};

/// Larger events are walked and not kept: a stream's text events are small, and a large one
/// (a Responses `response.completed` carrying the whole answer) comes once.
const MAX_KEPT_BYTES: usize = 16 << 10;

/// The layout of one walked event, and its delta.
pub(super) struct EventShape {
    format: StreamFormat,
    data: Vec<u8>,
    /// The string values that may differ in an event of this shape: every string literal but
    /// the one the delta read, in order.
    slots: Vec<Range<usize>>,
    delta: Delta,
    /// (end in `data`, end in the event being read) of each slot: reused between events.
    ends: Vec<(usize, usize)>,
}

impl EventShape {
    pub(super) fn new(format: StreamFormat) -> EventShape {
        EventShape { format, data: Vec::new(), slots: Vec::new(), delta: Delta::default(), ends: Vec::new() }
    }

    /// The delta of the event `data` (`None` if it is no JSON): read from the kept layout when
    /// `data` has it, else walked, and then its layout is kept for the next events (up to
    /// [`MAX_KEPT_BYTES`]).
    pub(super) fn delta(&mut self, data: &[u8]) -> Option<Delta> {
        if let Some(delta) = self.read(data) {
            return Some(delta);
        }
        let mut strings = Vec::new();
        let delta = json::delta(data, self.format, &mut strings)?;
        if data.len() > MAX_KEPT_BYTES {
            return Some(delta);
        }
        strings.retain(|s| Some(s) != delta.read_string.as_ref());
        self.data.clear();
        self.data.extend_from_slice(data);
        self.slots = strings;
        self.delta = delta.clone();
        Some(delta)
    }

    /// The delta of `data` if it is the kept event with other string literals in the slots.
    pub(super) fn read(&mut self, data: &[u8]) -> Option<Delta> {
        if self.data.is_empty() {
            return None;
        }
        self.ends.clear();
        let (mut kept, mut at) = (0, 0);
        for slot in &self.slots {
            let fixed = self.data.get(kept..slot.start)?;
            if data.get(at..at + fixed.len())? != fixed {
                return None;
            }
            at = crate::swar::json_string_end(data, at + fixed.len())?;
            self.ends.push((slot.end, at));
            kept = slot.end;
        }
        if data.get(at..)? != self.data.get(kept..)? {
            return None;
        }
        let ends = &self.ends;
        // Where an offset of the kept event is in this one: past the last slot that ends at or
        // before it. Every span the delta holds starts and ends outside a slot or on its edges.
        let moved = |offset: usize| match ends.partition_point(|&(end, _)| end <= offset) {
            0 => offset,
            n => ends[n - 1].1 + (offset - ends[n - 1].0),
        };
        let span = |s: &Range<usize>| moved(s.start)..moved(s.end);
        let kept = &self.delta;
        Some(Delta {
            texts: kept
                .texts
                .iter()
                .map(|t| Text { group: t.group, field: t.field.clone(), span: span(&t.span) })
                .collect(),
            standalone: kept.standalone.iter().map(span).collect(),
            finished: kept.finished.clone(),
            logprobs: kept.logprobs.iter().map(|(group, s)| (*group, span(s))).collect(),
            read_string: kept.read_string.as_ref().map(span),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(content: &str) -> Vec<u8> {
        format!(r#"{{"id":"c","choices":[{{"index":0,"delta":{{"content":"{content}"}},"finish_reason":null}}]}}"#)
            .into_bytes()
    }

    #[test]
    fn a_large_event_is_walked_and_the_kept_layout_stays() {
        let mut shape = EventShape::new(StreamFormat::Chat);
        let walk = |data: &[u8]| json::delta(data, StreamFormat::Chat, &mut Vec::new());
        let small = chunk("Hello");
        assert_eq!(shape.delta(&small), walk(&small));
        let large = chunk(&"x".repeat(MAX_KEPT_BYTES));
        assert_eq!(shape.delta(&large), walk(&large), "read from the small one's layout");
        let larger = chunk(&"y".repeat(MAX_KEPT_BYTES + 1));
        assert!(shape.read(&larger).is_some(), "the small event's layout is still kept");
        let other = format!(r#"{{"id":"c","choices":[],"usage":{{"total_tokens":{}}}}}"#, "1".repeat(MAX_KEPT_BYTES));
        assert_eq!(shape.delta(other.as_bytes()), walk(other.as_bytes()));
        assert!(shape.read(&small).is_some(), "a large event's layout is not kept");
        assert!(shape.read(other.as_bytes()).is_none());
    }
}
