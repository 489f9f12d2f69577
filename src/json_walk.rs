//! A minimal JSON walker: the byte span of every value with its path, read from the original
//! bytes (the shield edits answers by splicing string literals into them; the metering and the
//! shield read streamed events), and [`Layout`], a walked document kept to read the next ones
//! that differ from it only inside string values without walking them.
//!
//! Why a [`Layout`] read equals a walk: a document that is the kept one with some string values
//! replaced by other valid string literals parses the same way, value for value: the walk
//! depends only on the bytes outside those literals, which are equal, and each literal is read
//! to its end by the same `json_string_end`. So whatever a reader took from the kept document's
//! structure, keys and numbers holds for the new one; only what it read from the strings in
//! the slots must be read again, at their new spans. Each reader holds its own to its full
//! parse with a differential test.

use std::ops::Range;

/// Deeper documents are not JSON to the walker (the shield falls back to plain text) instead
/// of risking the stack.
const MAX_DEPTH: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seg<'a> {
    Key(&'a [u8]),
    Index(usize),
}

impl Seg<'_> {
    /// Whether this is the key `name` (as spelled: an escaped key is not its decoded name).
    pub fn is(&self, name: &str) -> bool {
        matches!(self, Seg::Key(k) if *k == name.as_bytes())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Str,
    Num,
    Lit,
    Obj,
    Arr,
}

/// Walks one complete JSON document, calling `visit` for every value after
/// it is parsed (so containers get their full span). `None` if `s` is not a
/// single valid JSON value. Generic over the visitor, so that each caller's
/// visitor is compiled into its walk: it runs for every value of every answer.
pub fn walk<'a, F>(s: &'a [u8], visit: &mut F) -> Option<()>
where
    F: FnMut(&[Seg<'a>], Range<usize>, Kind),
{
    let mut w = Walker { s, pos: 0, path: Vec::new(), visit };
    w.value(0)?;
    w.ws();
    (w.pos == s.len()).then_some(())
}

struct Walker<'a, 'f, F> {
    s: &'a [u8],
    pos: usize,
    path: Vec<Seg<'a>>,
    visit: &'f mut F,
}

impl<'a, F> Walker<'a, '_, F>
where
    F: FnMut(&[Seg<'a>], Range<usize>, Kind),
{
    fn ws(&mut self) {
        while matches!(self.s.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn bump(&mut self) -> Option<u8> {
        let b = *self.s.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        let start = self.pos;
        let kind = match *self.s.get(self.pos)? {
            b'{' => {
                self.pos += 1;
                self.ws();
                if self.s.get(self.pos) == Some(&b'}') {
                    self.pos += 1;
                } else {
                    loop {
                        self.ws();
                        let k = self.string()?;
                        self.ws();
                        if self.bump()? != b':' {
                            return None;
                        }
                        let s = self.s;
                        self.path.push(Seg::Key(&s[k.start + 1..k.end - 1]));
                        self.value(depth + 1)?;
                        self.path.pop();
                        self.ws();
                        match self.bump()? {
                            b',' => {}
                            b'}' => break,
                            _ => return None,
                        }
                    }
                }
                Kind::Obj
            }
            b'[' => {
                self.pos += 1;
                self.ws();
                if self.s.get(self.pos) == Some(&b']') {
                    self.pos += 1;
                } else {
                    let mut i = 0;
                    loop {
                        self.path.push(Seg::Index(i));
                        self.value(depth + 1)?;
                        self.path.pop();
                        i += 1;
                        self.ws();
                        match self.bump()? {
                            b',' => {}
                            b']' => break,
                            _ => return None,
                        }
                    }
                }
                Kind::Arr
            }
            b'"' => {
                self.string()?;
                Kind::Str
            }
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'n' => self.literal(b"null")?,
            b'-' | b'0'..=b'9' => {
                let n = self.s[self.pos..]
                    .iter()
                    .take_while(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                    .count();
                self.pos += n;
                Kind::Num
            }
            _ => return None,
        };
        (self.visit)(&self.path, start..self.pos, kind);
        Some(())
    }

    fn literal(&mut self, lit: &[u8]) -> Option<Kind> {
        if !self.s[self.pos..].starts_with(lit) {
            return None;
        }
        self.pos += lit.len();
        Some(Kind::Lit)
    }

    /// Span of a string literal including its quotes; validates escapes and
    /// rejects raw control characters.
    fn string(&mut self) -> Option<Range<usize>> {
        let start = self.pos;
        self.pos = crate::swar::json_string_end(self.s, start)?;
        Some(start..self.pos)
    }
}

/// Larger documents are not kept: a stream's text events are small, and a large one (a
/// Responses `response.completed` carrying the whole answer) comes once.
pub const MAX_KEPT_BYTES: usize = 16 << 10;

/// A walked document kept with the spans of its string values that may differ in the next
/// documents (the slots), in order.
#[derive(Default)]
pub struct Layout {
    data: Vec<u8>,
    slots: Vec<Range<usize>>,
    /// Where each slot is in the document read last.
    found: Vec<Range<usize>>,
}

impl Layout {
    /// Keeps `data` and its string values at `slots` (spans of string literals, in order),
    /// unless it is longer than [`MAX_KEPT_BYTES`]: then the kept one stays, and false.
    pub fn keep(&mut self, data: &[u8], slots: &[Range<usize>]) -> bool {
        if data.len() > MAX_KEPT_BYTES {
            return false;
        }
        self.data.clear();
        self.data.extend_from_slice(data);
        self.slots.clear();
        self.slots.extend_from_slice(slots);
        self.found.clear();
        true
    }

    /// Whether `data` is the kept document with a valid string literal in each slot (none
    /// kept: no). Then [`Layout::found`] and [`Layout::moved`] place the kept spans in `data`.
    pub fn read(&mut self, data: &[u8]) -> bool {
        self.found.clear();
        if self.data.is_empty() {
            return false;
        }
        let (mut kept, mut at) = (0, 0);
        for slot in &self.slots {
            let Some(fixed) = self.data.get(kept..slot.start) else {
                return false;
            };
            if data.get(at..at + fixed.len()) != Some(fixed) {
                return false;
            }
            let start = at + fixed.len();
            let Some(end) = crate::swar::json_string_end(data, start) else {
                return false;
            };
            self.found.push(start..end);
            (kept, at) = (slot.end, end);
        }
        data.get(at..) == self.data.get(kept..)
    }

    /// The span of each slot in the document read last, in order.
    pub fn found(&self) -> &[Range<usize>] {
        &self.found
    }

    /// The string literal of each slot in the kept document, in order.
    pub fn kept_slots(&self) -> impl Iterator<Item = &[u8]> {
        self.slots.iter().map(|slot| self.data.get(slot.clone()).unwrap_or_default())
    }

    /// Where an offset of the kept document is in the document read last: past the last slot
    /// that ends at or before it. For offsets outside the slots or on their edges.
    pub fn moved(&self, offset: usize) -> usize {
        let before = self.slots.partition_point(|slot| slot.end <= offset);
        match before.checked_sub(1).and_then(|last| Some((self.slots.get(last)?, self.found.get(last)?))) {
            Some((kept, found)) => found.end + (offset - kept.end),
            None => offset,
        }
    }

    /// [`Layout::moved`] for a span.
    pub fn moved_span(&self, span: &Range<usize>) -> Range<usize> {
        self.moved(span.start)..self.moved(span.end)
    }
}
