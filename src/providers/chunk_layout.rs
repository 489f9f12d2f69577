//! The metering of streams, event by event, without deserializing every event: a stream's
//! events mostly differ from the one before only inside string values (the text, an id,
//! OpenAI's `obfuscation` padding). An event is read by its full reader and its layout kept
//! ([`Layout`]); the next events with that layout take what the kept one said, and their
//! answer characters are counted in the strings that the full reader counts, at their new
//! spans. Two readers: [`ChunkLayout`] for chat and completions chunks (the full reader:
//! [`openai::read`], serde), [`DeltaLayout`] for the Messages API's `content_block_delta`
//! events (the full reader: `anthropic`'s, over a `serde_json::Value`).
//!
//! Why that equals the full reader (beyond the walk, `crate::json_walk`):
//! - What the readers take from an event depends on its structure, keys and numbers, on the
//!   event `type` (Messages; kept as part of the layout, not a slot), and on other strings
//!   only through the characters of the answer's text and through their validity (serde
//!   refuses the whole event for a string it cannot decode). So every changed slot is decoded
//!   as serde decodes a string; an event with one that serde would refuse is read in full.
//! - Which strings are counted is decided from their paths, as the full readers find them:
//!   chat `choices[i].text`, `choices[i].{delta,message}.{content,refusal,reasoning,
//!   reasoning_content}` and `choices[i].{delta,message}.tool_calls[j].function.arguments`;
//!   Messages `delta.{text,thinking,partial_json}`. A layout is kept only where that cannot
//!   differ from the full reading: the event is an object; no key is escaped (serde reads
//!   `"con\u0074ent"` as `content`); chat: no array stands where serde reads a
//!   struct (serde reads a struct from an array by position); Messages: one `delta` and no
//!   counted key twice (a `Value` keeps the last); and the counted strings' characters add up
//!   to the full reader's count.
//!
//! Held to the full readers on generated events and their successors:
//! `tests::the_layout_reads_what_serde_reads_on_generated_chunks`,
//! `tests::the_delta_layout_reads_what_the_value_reader_reads`.

use super::openai::{self, Facts};
use crate::json_walk::{self, Kind, Layout, Seg};
use std::ops::Range;

/// Per slot of a layout: whether its string is counted answer text, and its characters in the
/// kept event (what an unchanged string, an id or the model, needs no decoding to say).
type Counted = (bool, u64);

/// A chat or completions stream's last kept chunk layout, and what serde read in that chunk.
#[derive(Default)]
pub(super) struct ChunkLayout {
    layout: Layout,
    facts: Facts,
    counted: Vec<Counted>,
}

impl ChunkLayout {
    /// What the chunk `data` says (nothing if it is no chunk serde reads).
    pub(super) fn facts(&mut self, data: &[u8]) -> Facts {
        if let Some(facts) = self.read(data) {
            return facts;
        }
        let Some(facts) = openai::try_read(data) else {
            return Facts::default();
        };
        self.keep(data, facts);
        facts
    }

    /// The facts of `data` if it is the kept chunk with other strings in the slots, each one
    /// serde decodes.
    fn read(&mut self, data: &[u8]) -> Option<Facts> {
        if !self.layout.read(data) {
            return None;
        }
        let answer_chars = recount(&self.layout, &self.counted, data)?;
        Some(Facts { answer_chars, ..self.facts })
    }

    /// Keeps `data`'s layout when the paths of its strings tell what serde counted in it.
    fn keep(&mut self, data: &[u8], facts: Facts) {
        let mut plain = true;
        let slots = walk_slots(data, |path, _, kind| {
            plain &= !(kind == Kind::Arr && serde_reads_a_struct_at(path));
            is_answer_text(path)
        });
        if let Some((slots, per_slot)) = slots.filter(|_| plain)
            && counted_chars(&per_slot) == facts.answer_chars
            && self.layout.keep(data, &slots)
        {
            self.counted = per_slot;
            self.facts = facts;
        }
    }
}

/// A Messages stream's last kept `content_block_delta` layout: the next deltas with that
/// layout are read without building a `Value`.
#[derive(Default)]
pub(super) struct DeltaLayout {
    layout: Layout,
    counted: Vec<Counted>,
}

impl DeltaLayout {
    /// The answer characters of `data` if it is the kept `content_block_delta` with other
    /// strings in the slots, each one serde decodes.
    pub(super) fn read(&mut self, data: &[u8]) -> Option<u64> {
        if !self.layout.read(data) {
            return None;
        }
        recount(&self.layout, &self.counted, data)
    }

    /// Keeps the layout of `data`, a `content_block_delta` whose delta holds `chars`
    /// characters of answer, when the paths of its strings tell which ones the `Value`
    /// reader counted.
    pub(super) fn keep(&mut self, data: &[u8], chars: u64) {
        let (mut deltas, mut counted_paths, mut kind) = (0, Vec::new(), None);
        let slots = walk_slots(data, |path, span, value| {
            if value == Kind::Str && matches!(path, [key] if key.is("type")) {
                kind = Some(span.clone());
            }
            deltas += usize::from(matches!(path, [delta] if delta.is("delta")));
            let counted = matches!(path, [delta, field] if delta.is("delta")
                && (field.is("text") || field.is("thinking") || field.is("partial_json")));
            if counted && value == Kind::Str {
                counted_paths.push(path.last().copied());
            }
            counted
        });
        let Some((mut slots, mut per_slot)) = slots else {
            return;
        };
        let repeated = counted_paths.iter().enumerate().any(|(i, path)| counted_paths[..i].contains(path));
        // The event's `type` (the last, as a `Value` keeps it) decided how it was read: part
        // of the layout, not a slot.
        if let Some(at) = slots.iter().position(|slot| Some(slot) == kind.as_ref()) {
            slots.remove(at);
            per_slot.remove(at);
        }
        if deltas == 1
            && !repeated
            && kind.is_some()
            && counted_chars(&per_slot) == chars
            && self.layout.keep(data, &slots)
        {
            self.counted = per_slot;
        }
    }
}

/// Walks `data`, an object, for its string slots; `counts` says, for every value (its path,
/// span and kind), whether it is counted answer text. Per slot: whether it is counted, and its
/// characters. `None` when `data` is no object, a key is escaped (the full readers read it
/// decoded: `"d\u0065lta"` is `delta`), or a string is one serde refuses.
fn walk_slots<'a>(
    data: &'a [u8],
    mut counts: impl FnMut(&[Seg<'a>], &Range<usize>, Kind) -> bool,
) -> Option<(Vec<Range<usize>>, Vec<Counted>)> {
    if data.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let (mut slots, mut counted, mut plain) = (Vec::new(), Vec::new(), true);
    json_walk::walk(data, &mut |path, span, kind| {
        let is_counted = counts(path, &span, kind);
        plain &= !path.iter().any(|seg| matches!(seg, Seg::Key(key) if key.contains(&b'\\')));
        if kind == Kind::Str {
            counted.push(is_counted);
            slots.push(span);
        }
    })?;
    if !plain {
        return None;
    }
    let mut per_slot = Vec::with_capacity(slots.len());
    for (span, is_counted) in slots.iter().zip(counted) {
        per_slot.push((is_counted, data.get(span.clone()).and_then(serde_chars)?));
    }
    Some((slots, per_slot))
}

/// The characters of the counted slots. Checked against the full reader's count when a
/// layout is kept: a path rule that missed a field it counts shows there, unless its text is
/// empty.
fn counted_chars(per_slot: &[Counted]) -> u64 {
    per_slot.iter().filter(|(counted, _)| *counted).map(|(_, chars)| chars).sum()
}

/// The counted characters of `data`, just read through `layout` (its slots, per slot whether
/// counted and the kept characters); `None` if a changed string is one serde refuses.
fn recount(layout: &Layout, counted: &[Counted], data: &[u8]) -> Option<u64> {
    let mut chars = 0;
    let slots = layout.found().iter().zip(layout.kept_slots());
    for ((span, kept), &(is_counted, kept_chars)) in slots.zip(counted) {
        let literal = data.get(span.clone())?;
        let n = if literal == kept { kept_chars } else { serde_chars(literal)? };
        if is_counted {
            chars += n;
        }
    }
    Some(chars)
}

/// Whether `seg` is a choice's answer: `delta` streamed, `message` whole.
fn is_reply(seg: &Seg) -> bool {
    seg.is("delta") || seg.is("message")
}

/// The fields of a choice's `delta` or `message` whose text is counted.
const TEXT_FIELDS: [&str; 4] = ["content", "refusal", "reasoning", "reasoning_content"];

/// Whether the string at `path` is answer text that `openai::read` counts.
fn is_answer_text(path: &[Seg]) -> bool {
    match path {
        [choices, Seg::Index(_), text] => choices.is("choices") && text.is("text"),
        [choices, Seg::Index(_), r, field] => {
            choices.is("choices") && is_reply(r) && TEXT_FIELDS.iter().any(|name| field.is(name))
        }
        [choices, Seg::Index(_), r, calls, Seg::Index(_), function, arguments] => {
            choices.is("choices")
                && is_reply(r)
                && calls.is("tool_calls")
                && function.is("function")
                && arguments.is("arguments")
        }
        _ => false,
    }
}

/// Whether serde reads a struct at `path` (where an array would be read field by field).
fn serde_reads_a_struct_at(path: &[Seg]) -> bool {
    match path {
        [] => true,
        [usage] => usage.is("usage"),
        [usage, details] => {
            usage.is("usage") && (details.is("prompt_tokens_details") || details.is("input_tokens_details"))
        }
        [choices, Seg::Index(_), rest @ ..] if choices.is("choices") => match rest {
            [] => true,
            [r] => is_reply(r),
            [r, calls, Seg::Index(_)] => is_reply(r) && calls.is("tool_calls"),
            [r, calls, Seg::Index(_), function] => is_reply(r) && calls.is("tool_calls") && function.is("function"),
            _ => false,
        },
        _ => false,
    }
}

/// The characters of the string literal `literal` as serde decodes it; `None` where serde
/// refuses it (invalid UTF-8, a lone surrogate).
fn serde_chars(literal: &[u8]) -> Option<u64> {
    let inner = literal.get(1..literal.len().saturating_sub(1))?;
    let chars = if memchr::memchr(b'\\', inner).is_none() {
        std::str::from_utf8(inner).ok()?.chars().count()
    } else {
        serde_json::from_slice::<String>(literal).ok()?.chars().count()
    };
    Some(chars as u64)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::test_rng::TestRng;

    /// String literals as upstreams write them.
    const STRINGS: &[&[u8]] = &[
        br#""""#,
        br#""Hello""#,
        br#"" world, and more""#,
        "\"héllo 🚀 日本\"".as_bytes(),
        br#""line\nbreak\t""#,
        br#""caf\u00e9""#,
        br#""\ud83d\ude80""#,
        br#""say \"hi\" \\ \/""#,
        br#""{\"city\":\"Paris\"}""#,
    ];

    /// String literals serde refuses: a lone surrogate, invalid UTF-8.
    const REFUSED: &[&[u8]] = &[br#""\ud800""#, b"\"\xff\xfe\""];

    pub(crate) fn pick<'a>(rng: &mut TestRng, items: &[&'a [u8]]) -> &'a [u8] {
        items[rng.below(items.len())]
    }

    pub(crate) fn space(rng: &mut TestRng) -> &'static [u8] {
        [&b""[..], b"", b" ", b"\n  ", b"\r\n", b"\t"][rng.below(6)]
    }

    /// An object of `members` in a random order and spacing; sometimes a key escaped
    /// (`\u0063` for its first letter) or a member twice (serde refuses known duplicates).
    pub(crate) fn object(rng: &mut TestRng, mut members: Vec<(&str, Vec<u8>)>) -> Vec<u8> {
        for i in (1..members.len()).rev() {
            members.swap(i, rng.below(i + 1));
        }
        if !members.is_empty() && rng.below(25) == 0 {
            let twice = members[rng.below(members.len())].clone();
            members.push(twice);
        }
        let mut out = b"{".to_vec();
        for (i, (key, value)) in members.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(space(rng));
            let key = match (rng.below(30), key.chars().next()) {
                (0, Some(first)) => format!("\\u{:04x}{}", u32::from(first), &key[first.len_utf8()..]),
                _ => key.to_owned(),
            };
            out.extend_from_slice(format!("\"{key}\"").as_bytes());
            out.extend_from_slice(space(rng));
            out.push(b':');
            out.extend_from_slice(space(rng));
            out.extend_from_slice(&value);
        }
        out.extend_from_slice(space(rng));
        out.push(b'}');
        out
    }

    pub(crate) fn array(rng: &mut TestRng, items: Vec<Vec<u8>>) -> Vec<u8> {
        let mut out = b"[".to_vec();
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
                out.extend_from_slice(space(rng));
            }
            out.extend_from_slice(&item);
        }
        out.push(b']');
        out
    }

    pub(crate) fn string(rng: &mut TestRng) -> Vec<u8> {
        let pool = if rng.below(30) == 0 { REFUSED } else { STRINGS };
        pick(rng, pool).to_vec()
    }

    /// Mostly a string; sometimes null, a number or an array (which serde counts as nothing).
    pub(crate) fn text(rng: &mut TestRng) -> Vec<u8> {
        match rng.below(12) {
            0 => b"null".to_vec(),
            1 => b"7".to_vec(),
            2 => {
                let item = string(rng);
                array(rng, vec![item])
            }
            _ => string(rng),
        }
    }

    /// A struct of `members`; sometimes its values in an array instead (serde reads a struct
    /// from an array by position).
    fn record(rng: &mut TestRng, members: Vec<(&str, Vec<u8>)>) -> Vec<u8> {
        if rng.below(20) == 0 {
            let values = members.into_iter().map(|(_, value)| value).collect();
            return array(rng, values);
        }
        object(rng, members)
    }

    fn reply(rng: &mut TestRng) -> Vec<u8> {
        let mut members = vec![("content", text(rng))];
        if rng.below(3) == 0 {
            members.push(("role", b"\"assistant\"".to_vec()));
        }
        if rng.below(4) == 0 {
            members.push((["refusal", "reasoning", "reasoning_content", "audio"][rng.below(4)], text(rng)));
        }
        if rng.below(4) == 0 {
            let arguments = text(rng);
            let function = record(rng, vec![("name", b"\"lookup\"".to_vec()), ("arguments", arguments)]);
            let id = string(rng);
            let call = record(
                rng,
                vec![("index", b"0".to_vec()), ("id", id), ("type", b"\"function\"".to_vec()), ("function", function)],
            );
            members.push(("tool_calls", array(rng, vec![call])));
        }
        record(rng, members)
    }

    fn choice(rng: &mut TestRng) -> Vec<u8> {
        let answer = match rng.below(6) {
            0 => ("text", text(rng)),
            1 => ("message", reply(rng)),
            _ => ("delta", reply(rng)),
        };
        let logprobs = if rng.below(4) == 0 {
            let token = string(rng);
            let token = object(rng, vec![("token", token), ("logprob", b"-0.25".to_vec())]);
            let tokens = array(rng, vec![token]);
            object(rng, vec![("content", tokens)])
        } else {
            b"null".to_vec()
        };
        let finish = if rng.below(5) == 0 { b"\"stop\"".to_vec() } else { b"null".to_vec() };
        record(rng, vec![("index", b"0".to_vec()), answer, ("logprobs", logprobs), ("finish_reason", finish)])
    }

    /// A chunk as OpenAI-compatible servers stream them: text, role, tool calls, legacy text,
    /// logprobs, a finish, the usage chunk, `obfuscation` padding; keys in any order, any
    /// spacing; sometimes an escaped key, a duplicate, an array for a struct, or no object.
    fn chunk(rng: &mut TestRng) -> Vec<u8> {
        let choices = (0..[1, 1, 1, 0, 2][rng.below(5)]).map(|_| choice(rng)).collect();
        let mut members = vec![
            ("id", string(rng)),
            ("object", b"\"chat.completion.chunk\"".to_vec()),
            ("created", b"1726012687".to_vec()),
            ("model", b"\"gpt-4o-mini\"".to_vec()),
            ("choices", array(rng, choices)),
        ];
        if rng.below(2) == 0 {
            members.push(("obfuscation", string(rng)));
        }
        if rng.below(4) == 0 {
            let cached = if rng.below(2) == 0 { string(rng) } else { b"3".to_vec() };
            let details = record(rng, vec![("cached_tokens", cached)]);
            let usage = record(
                rng,
                vec![
                    ("prompt_tokens", b"9".to_vec()),
                    ("completion_tokens", b"12".to_vec()),
                    ("prompt_tokens_details", details),
                ],
            );
            members.push(("usage", usage));
        }
        if rng.below(40) == 0 {
            return array(rng, members.into_iter().map(|(_, value)| value).collect());
        }
        object(rng, members)
    }

    /// The next chunk of a stream after `chunk`: some strings replaced (most often), a number
    /// or literal changed, a byte added or dropped, or another chunk.
    fn next_chunk(rng: &mut TestRng, chunk: &[u8]) -> Vec<u8> {
        let (mut strings, mut others) = (Vec::new(), Vec::new());
        let walked = json_walk::walk(chunk, &mut |_, span, kind| match kind {
            Kind::Str => strings.push(span),
            Kind::Num | Kind::Lit => others.push(span),
            Kind::Obj | Kind::Arr => {}
        });
        let mut edits: Vec<(std::ops::Range<usize>, Vec<u8>)> = match rng.below(8) {
            _ if walked.is_none() => return self::chunk(rng),
            0..=4 => strings.into_iter().filter_map(|span| (rng.below(2) == 0).then(|| (span, string(rng)))).collect(),
            5 if !others.is_empty() => {
                vec![(others[rng.below(others.len())].clone(), pick(rng, &[b"8", b"null", b"\"x\""]).to_vec())]
            }
            6 => {
                let at = rng.below(chunk.len() + 1);
                let dropped = if rng.below(2) == 0 { at..(at + 1).min(chunk.len()) } else { at..at };
                vec![(dropped, if rng.below(2) == 0 { b" ".to_vec() } else { Vec::new() })]
            }
            _ => return self::chunk(rng),
        };
        edits.sort_by_key(|(span, _)| std::cmp::Reverse(span.start));
        let mut next = chunk.to_vec();
        for (span, literal) in edits {
            next.splice(span, literal);
        }
        next
    }

    /// Reading a chunk through the last chunk's layout gives what serde reads: on generated
    /// chunks and their successors, both sides exercised (layouts kept and refused, chunks
    /// read through a layout and read by serde), and serde refusing some of them.
    #[test]
    fn the_layout_reads_what_serde_reads_on_generated_chunks() {
        let mut rng = TestRng::new(0x2026_1207_c4a7);
        let (mut kept, mut not_kept, mut read, mut changed, mut unread) = (0, 0, 0, 0, 0);
        let n = 20_000;
        for _ in 0..n {
            let first = chunk(&mut rng);
            let mut layout = ChunkLayout::default();
            assert_eq!(layout.facts(&first), openai::read(&first), "{}", String::from_utf8_lossy(&first));
            if layout.read(&first).is_some() {
                kept += 1;
            } else {
                not_kept += 1;
            }
            let next = next_chunk(&mut rng, &first);
            let serde = openai::read(&next);
            match layout.read(&next) {
                Some(facts) => {
                    let show = (String::from_utf8_lossy(&first), String::from_utf8_lossy(&next));
                    assert_eq!(facts, serde, "kept:\n{}\nread:\n{}", show.0, show.1);
                    read += 1;
                    changed += usize::from(next != first);
                }
                None => unread += 1,
            }
            assert_eq!(layout.facts(&next), serde, "{}", String::from_utf8_lossy(&next));
        }
        assert!(
            kept > n / 3 && not_kept > n / 10 && changed > n / 5 && unread > n / 10,
            "{kept} kept, {not_kept} not, {read} read ({changed} changed), {unread} not read"
        );
    }

    /// A Messages stream event: mostly a `content_block_delta` (text, thinking, tool JSON or
    /// signature), sometimes another event; keys in any order, any spacing; sometimes an
    /// escaped key, a repeated member, the delta as a string.
    fn messages_event(rng: &mut TestRng) -> Vec<u8> {
        let kind = ["content_block_delta", "content_block_delta", "content_block_delta", "ping", "message_delta"]
            [rng.below(5)];
        let (delta_type, field) = [
            ("text_delta", "text"),
            ("thinking_delta", "thinking"),
            ("input_json_delta", "partial_json"),
            ("signature_delta", "signature"),
        ][rng.below(4)];
        let text = text(rng);
        let mut delta = vec![("type", format!("\"{delta_type}\"").into_bytes()), (field, text)];
        if rng.below(10) == 0 {
            delta.push((["text", "thinking", "partial_json"][rng.below(3)], string(rng)));
        }
        let delta = if rng.below(20) == 0 { string(rng) } else { object(rng, delta) };
        let mut members =
            vec![("type", format!("\"{kind}\"").into_bytes()), ("index", b"0".to_vec()), ("delta", delta)];
        if rng.below(15) == 0 {
            let text = string(rng);
            let other = object(rng, vec![("text", text)]);
            members.push(("delta", other));
        }
        object(rng, members)
    }

    /// A `content_block_delta` read through the last delta's layout counts what the `Value`
    /// reader counts, on generated events and their successors (the event type among the
    /// strings replaced); both sides exercised.
    #[test]
    fn the_delta_layout_reads_what_the_value_reader_reads() {
        let value_reader = |data: &[u8]| {
            let event = serde_json::from_slice::<serde_json::Value>(data).ok()?;
            (event.get("type")?.as_str()? == "content_block_delta")
                .then(|| event.get("delta").map_or(0, super::super::anthropic::delta_chars))
        };
        let mut rng = TestRng::new(0x2026_1207_de17);
        let (mut kept, mut read, mut changed, mut unread) = (0, 0, 0, 0);
        let n = 20_000;
        for _ in 0..n {
            let first = messages_event(&mut rng);
            let mut layout = DeltaLayout::default();
            if let Some(chars) = value_reader(&first) {
                layout.keep(&first, chars);
            }
            if let Some(chars) = layout.read(&first) {
                assert_eq!(Some(chars), value_reader(&first), "{}", String::from_utf8_lossy(&first));
                kept += 1;
            }
            let next = next_chunk(&mut rng, &first);
            match layout.read(&next) {
                Some(chars) => {
                    let show = (String::from_utf8_lossy(&first), String::from_utf8_lossy(&next));
                    assert_eq!(Some(chars), value_reader(&next), "kept:\n{}\nread:\n{}", show.0, show.1);
                    read += 1;
                    changed += usize::from(next != first);
                }
                None => unread += 1,
            }
        }
        assert!(
            kept > n / 3 && changed > n / 20 && unread > n / 10,
            "{kept} kept, {read} read ({changed} changed), {unread} not read"
        );
    }
}
