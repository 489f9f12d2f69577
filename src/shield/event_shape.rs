//! A stream's events mostly share one layout: the same keys, numbers and protocol strings,
//! with only some strings differing from event to event (the streamed text, and padding such
//! as OpenAI's `obfuscation`). [`EventShape`] keeps the layout of the last event that was
//! walked ([`Layout`]) and reads the next events by comparing bytes, without walking them.
//!
//! Not for Responses streams: their events carry a `sequence_number` that changes every time,
//! so no event has the last one's layout, and keeping each would only add work (measured:
//! +4% instructions a stream). They are walked.
//!
//! Why that equals the walk: see `crate::json_walk`. [`json::delta`] depends on the
//! structure, the keys, the numbers and the one string it reads (`Delta::read_string`, which
//! is kept as part of the layout, not a slot), never on another string's content; so the
//! delta is the kept one with its spans moved. Held to the walk on generated events:
//! `tests::event_shape_reads_what_the_walk_reads`.

use std::ops::Range;

use super::StreamFormat;
use super::json::{self, Delta, Text};
use crate::json_walk::Layout;

/// The layout of the last walked event, and its delta.
pub(super) struct EventShape {
    format: StreamFormat,
    layout: Layout,
    delta: Delta,
    /// The string spans of the event walked last (reused).
    strings: Vec<Range<usize>>,
}

impl EventShape {
    pub(super) fn new(format: StreamFormat) -> EventShape {
        EventShape { format, layout: Layout::default(), delta: Delta::default(), strings: Vec::new() }
    }

    /// The delta of the event `data` (`None` if it is no JSON): read from the kept layout when
    /// `data` has it, else walked, and then its layout is kept for the next events (up to
    /// `json_walk::MAX_KEPT_BYTES`).
    pub(super) fn delta(&mut self, data: &[u8]) -> Option<Delta> {
        if let Some(delta) = self.read(data) {
            return Some(delta);
        }
        self.strings.clear();
        let delta = json::delta(data, self.format, &mut self.strings)?;
        if self.format == StreamFormat::Responses {
            // No layout is kept for them (the header says why).
            return Some(delta);
        }
        // Every string value may differ but the one the delta read.
        self.strings.retain(|s| Some(s) != delta.read_string.as_ref());
        if self.layout.keep(data, &self.strings) {
            self.delta = delta.clone();
        }
        Some(delta)
    }

    /// The delta of `data` if it is the kept event with other string literals in the slots.
    pub(super) fn read(&mut self, data: &[u8]) -> Option<Delta> {
        if !self.layout.read(data) {
            return None;
        }
        let (kept, layout) = (&self.delta, &self.layout);
        Some(Delta {
            texts: kept
                .texts
                .iter()
                .map(|t| Text { group: t.group, field: t.field.clone(), span: layout.moved_span(&t.span) })
                .collect(),
            standalone: kept.standalone.iter().map(|s| layout.moved_span(s)).collect(),
            finished: kept.finished.clone(),
            logprobs: kept.logprobs.iter().map(|(group, s)| (*group, layout.moved_span(s))).collect(),
            read_string: kept.read_string.as_ref().map(|s| layout.moved_span(s)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json_walk::MAX_KEPT_BYTES;

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
