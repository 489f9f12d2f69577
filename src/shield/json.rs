//! Answers edited by splicing new string literals into the original bytes, found by the JSON
//! walker (`crate::json_walk`): everything not edited (key order, number formatting,
//! whitespace, unknown fields) reaches the client exactly as upstream sent it, and no full
//! `serde_json::Value` round trip is needed.

use std::borrow::Cow;
use std::ops::Range;

pub(super) use crate::json_walk::{Kind, Seg, walk};

use super::{RemovalKind, Shield, StreamFormat};

/// Decodes a string literal (with quotes) that [`walk`] accepted. Lenient on
/// purpose: a lone UTF-16 surrogate escape (which a model's tokenizer can
/// produce) or stray invalid UTF-8 becomes U+FFFD instead of making the text
/// undecodable, so such a string is still scanned. Borrowed when there is
/// nothing to unescape.
pub(super) fn decode_str(lit: &[u8]) -> Cow<'_, str> {
    let inner = lit.get(1..lit.len().saturating_sub(1)).unwrap_or_default();
    if memchr::memchr(b'\\', inner).is_none() {
        // `from_utf8` checks ASCII a word at a time; the lossy decoder's
        // chunk iterator goes byte by byte even when there is nothing to fix.
        return match std::str::from_utf8(inner) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(inner),
        };
    }
    let hex4 = |at: usize| {
        let h = std::str::from_utf8(inner.get(at..at + 4)?).ok()?;
        u32::from_str_radix(h, 16).ok()
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while let Some(&b) = inner.get(i) {
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let Some(&e) = inner.get(i + 1) else { break };
        i += 2;
        let simple = match e {
            b'"' | b'\\' | b'/' => e,
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            _ => 0,
        };
        if simple != 0 {
            out.push(simple);
            continue;
        }
        let Some(hi) = hex4(i) else { break };
        i += 4;
        let c = if (0xD800..0xDC00).contains(&hi) {
            match (inner.get(i..i + 2), hex4(i + 2)) {
                (Some(b"\\u"), Some(lo)) if (0xDC00..0xE000).contains(&lo) => {
                    i += 6;
                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                }
                _ => None,
            }
        } else {
            char::from_u32(hi)
        };
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.unwrap_or('\u{FFFD}').encode_utf8(&mut buf).as_bytes());
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

/// Encodes `s` as a JSON string literal.
pub(super) fn encode_str(s: &str) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(s.len() + 2);
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]])
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
    out
}

/// Applies non-overlapping edits (sorted here) to `data`.
pub(super) fn splice(data: &[u8], edits: &mut [(Range<usize>, Vec<u8>)]) -> Vec<u8> {
    edits.sort_by_key(|e| e.0.start);
    let mut out = Vec::with_capacity(data.len() + 64);
    let mut cur = 0;
    for (r, rep) in edits.iter() {
        if r.start < cur {
            continue;
        }
        out.extend_from_slice(&data[cur..r.start]);
        out.extend_from_slice(rep);
        cur = r.end;
    }
    out.extend_from_slice(&data[cur..]);
    out
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Whether values under this key are protocol fields (identifiers, enums,
/// padding, signatures), not model output: editing them could break clients
/// and they cannot carry a leak. Every other string value is text and is
/// shielded. A `match`, not a list: it is asked for every string of every answer.
fn is_structural_key(key: &[u8]) -> bool {
    matches!(
        key,
        b"id"
            | b"object"
            | b"model"
            | b"role"
            | b"finish_reason"
            | b"system_fingerprint"
            | b"type"
            | b"service_tier"
            | b"name"
            | b"code"
            | b"param"
            | b"index"
            | b"obfuscation"
            // Responses API
            | b"item_id"
            | b"call_id"
            | b"previous_response_id"
            | b"status"
            | b"encrypted_content"
            // Messages API
            | b"tool_use_id"
            | b"stop_reason"
            | b"stop_sequence"
            | b"signature"
    )
}

/// The key of an object the model writes itself (a Messages tool call's `input`): every
/// string under it is text, whatever its key is called.
const MODEL_WRITTEN: &str = "input";

/// Whether the value at `path` is a protocol field: its nearest key is a structural one
/// and it is not inside a model-written object.
fn is_structural(path: &[Seg]) -> bool {
    path.iter()
        .rev()
        .find_map(|s| match s {
            Seg::Key(k) => Some(*k),
            Seg::Index(_) => None,
        })
        .is_some_and(is_structural_key)
        && !path.iter().any(|s| s.is(MODEL_WRITTEN))
}

/// Whether a value is text to shield: a string that is neither a protocol field nor a
/// logprobs token (those are emptied with the text they spell, see [`emptied`]). Always
/// inlined: the walker asks for every value, and most are no strings.
#[inline(always)]
fn is_text(path: &[Seg], kind: Kind) -> bool {
    kind == Kind::Str && !path.iter().any(|s| s.is("logprobs")) && !is_structural(path)
}

/// What replaces a `logprobs` value whose text was edited: its tokens would spell the
/// removed text out. A list (Responses API) becomes empty, an object (chat) `null`.
pub(super) fn emptied(logprobs: &[u8]) -> &'static [u8] {
    if logprobs.first() == Some(&b'[') { b"[]" } else { b"null" }
}

/// Whether the encoded path `inner` lies inside the value at the encoded path `outer`.
fn is_inside(inner: &[u8], outer: &[u8]) -> bool {
    // Every segment starts with a 0 or 1 marker and key bytes are never control bytes,
    // so a byte prefix ends on a segment boundary exactly when a marker (or the end) follows.
    inner.starts_with(outer) && inner.get(outer.len()).is_none_or(|&b| b <= 1)
}

/// Whole-body sanitizer: every string value except protocol fields is
/// sanitized as one text (so chat `choices[].message.content`, tool-call
/// `arguments`, `refusal`, Responses `output[].content[].text`, Messages
/// `content[].text` and tool `input`, `error.message` and unknown vendor
/// fields are all covered). A `logprobs` value is emptied when anything in
/// the object holding it (a choice, an output text part) was removed, since
/// its tokens spell the answer out.
pub(super) fn sanitize_body(sh: &Shield, body: &[u8]) -> Option<(Vec<u8>, Vec<RemovalKind>)> {
    let mut edits: Vec<(Range<usize>, Vec<u8>)> = Vec::new();
    let mut kinds = Vec::new();
    // Encoded paths of the edited strings; (encoded path of its holder, span) of each logprobs.
    let mut edited: Vec<Vec<u8>> = Vec::new();
    let mut logprobs: Vec<(Vec<u8>, Range<usize>)> = Vec::new();
    let parsed = walk(body, &mut |path, span, kind| {
        if let [holder @ .., l] = path
            && l.is("logprobs")
            && matches!(kind, Kind::Obj | Kind::Arr)
        {
            logprobs.push((encode_path(holder), span));
            return;
        }
        if !is_text(path, kind) {
            return;
        }
        if let Some((clean, k)) = sh.sanitize(&decode_str(&body[span.clone()])) {
            edits.push((span, encode_str(&clean)));
            kinds.extend(k);
            edited.push(encode_path(path));
        }
    });
    if parsed.is_none() {
        // Not JSON (a plain-text error page, a truncated body): sanitize the
        // text itself rather than pass it through unchecked.
        return sh.sanitize_lossy(body);
    }
    if edits.is_empty() {
        return None;
    }
    for (holder, span) in logprobs {
        if edited.iter().any(|path| is_inside(path, &holder)) {
            let empty = emptied(&body[span.clone()]);
            edits.push((span, empty.to_vec()));
        }
    }
    Some((splice(body, &mut edits), kinds))
}

/// One streamed string of an event: a piece of one of the answer's texts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Text {
    /// The part of the answer it belongs to: a chat choice's `index`, a Responses output
    /// item's `output_index`, a Messages content block's `index`.
    pub(super) group: u64,
    /// Which text of the group it continues. Chat: its path inside the choice, an array
    /// element named by its own `index` member when it has one (tool calls), else by its
    /// position. Responses: the event type without `.delta`, and its content or summary
    /// index. Messages: its key in the `delta` (`text`, `thinking`, `partial_json`).
    pub(super) field: Vec<u8>,
    /// Span of the string literal.
    pub(super) span: Range<usize>,
}

/// Texts an event says are complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Finish {
    All,
    /// Every text of one group (a choice that has its `finish_reason`, a content block
    /// stopped, an output item done).
    Group(u64),
    /// One text of a group (a Responses `*.done` event).
    Channel(u64, Vec<u8>),
}

impl Finish {
    pub(super) fn covers(&self, group: u64, field: &[u8]) -> bool {
        match self {
            Finish::All => true,
            Finish::Group(g) => *g == group,
            Finish::Channel(g, f) => *g == group && f == field,
        }
    }
}

/// The strings of one stream event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Delta {
    /// Streamed text, each continuing the same text of earlier events.
    pub(super) texts: Vec<Text>,
    /// Every other string but protocol fields (an error, a vendor's citations): complete in
    /// this event, so sanitized on its own. Spans of string literals. With no `texts`, these
    /// are exactly the strings [`sanitize_body`] sanitizes, so a clean event needs no second
    /// walk (`tests::without_texts_the_standalone_strings_are_what_a_whole_body_sanitizes`).
    pub(super) standalone: Vec<Range<usize>>,
    pub(super) finished: Vec<Finish>,
    /// (group, span of a `logprobs` value spelling out its texts in this event)
    pub(super) logprobs: Vec<(u64, Range<usize>)>,
    /// The string whose content was read to find the rest (the Responses and Messages event
    /// `type`). Every other string's content is irrelevant to the delta: only the document's
    /// structure, keys and numbers are (what [`super::event_shape::EventShape`] relies on).
    pub(super) read_string: Option<Range<usize>>,
}

/// A path as bytes, for comparing: per segment `0` and the key (whose raw bytes are never
/// control characters), or `1` and the array position's eight bytes.
fn encode_path(path: &[Seg]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    for seg in path {
        match seg {
            Seg::Key(k) => {
                out.push(0);
                out.extend_from_slice(k);
            }
            Seg::Index(i) => {
                out.push(1);
                out.extend_from_slice(&(*i as u64).to_le_bytes());
            }
        }
    }
    out
}

/// Replaces, in the encoded `path`, each array position whose element has an `index` member
/// (`named`: encoded element path, value) by that value.
fn name_elements(path: &[u8], named: &[(&[u8], u64)]) -> Vec<u8> {
    let mut out = path.to_vec();
    let mut i = 0;
    while let Some(&marker) = path.get(i) {
        i += 1;
        if marker == 1 {
            i += 8;
            if let Some((_, n)) = named.iter().find(|(p, _)| *p == path.get(..i).unwrap_or_default())
                && let Some(slot) = out.get_mut(i - 8..i)
            {
                slot.copy_from_slice(&n.to_le_bytes());
            }
        } else {
            while path.get(i).is_some_and(|&b| b > 1) {
                i += 1;
            }
        }
    }
    out
}

/// Extracts the strings of one event of a stream in `format`; `None` if not JSON. Every
/// string value's span is added to `strings`, in order (the event's shape).
pub(super) fn delta(data: &[u8], format: StreamFormat, strings: &mut Vec<Range<usize>>) -> Option<Delta> {
    match format {
        StreamFormat::Chat => chat_delta(data, strings),
        StreamFormat::Responses => responses_delta(data, strings),
        StreamFormat::Messages => messages_delta(data, strings),
    }
}

/// [`walk`], also noting every string value's span in `strings`.
fn walk_noting_strings<'a>(
    data: &'a [u8],
    strings: &mut Vec<Range<usize>>,
    mut visit: impl FnMut(&[Seg<'a>], Range<usize>, Kind),
) -> Option<()> {
    walk(data, &mut |path, span, kind| {
        if kind == Kind::Str {
            strings.push(span.clone());
        }
        visit(path, span, kind)
    })
}

/// A `chat.completion.chunk` (or a legacy completion's): every string under a choice's
/// `delta`, or its `text`, is streamed text; a `finish_reason` finishes the choice.
fn chat_delta(data: &[u8], strings: &mut Vec<Range<usize>>) -> Option<Delta> {
    // Collected by array position first: `index` may come after the text.
    let mut texts: Vec<(usize, Vec<u8>, Range<usize>)> = Vec::new();
    let mut standalone = Vec::new();
    let mut choice_index: Vec<(usize, u64)> = Vec::new();
    // (choice position, encoded path of an array element inside the choice, its `index`)
    let mut element_index: Vec<(usize, Vec<u8>, u64)> = Vec::new();
    let mut finished: Vec<usize> = Vec::new();
    let mut logprobs: Vec<(usize, Range<usize>)> = Vec::new();
    walk_noting_strings(data, strings, |path, span, kind| {
        let in_choice = match path {
            [c, Seg::Index(k), rest @ ..] if c.is("choices") => Some((*k, rest)),
            _ => None,
        };
        if let Some((k, rest)) = in_choice {
            match (rest, kind) {
                ([i], Kind::Num) if i.is("index") => {
                    if let Some(n) = parse_u64(&data[span]) {
                        choice_index.push((k, n));
                    }
                    return;
                }
                ([f], Kind::Str) if f.is("finish_reason") => {
                    finished.push(k);
                    return;
                }
                ([l], Kind::Obj | Kind::Arr) if l.is("logprobs") => {
                    logprobs.push((k, span));
                    return;
                }
                ([d, .., Seg::Index(_), i], Kind::Num) if d.is("delta") && i.is("index") => {
                    if let Some(n) = parse_u64(&data[span]) {
                        element_index.push((k, encode_path(&rest[..rest.len() - 1]), n));
                    }
                    return;
                }
                _ => {}
            }
        }
        if !is_text(path, kind) {
            return;
        }
        match in_choice {
            Some((k, rest)) if rest.first().is_some_and(|d| d.is("delta")) || matches!(rest, [t] if t.is("text")) => {
                texts.push((k, encode_path(rest), span));
            }
            _ => standalone.push(span),
        }
    })?;
    let choice = |k: usize| choice_index.iter().find(|(p, _)| *p == k).map_or(k as u64, |(_, n)| *n);
    let field = |k: usize, path: Vec<u8>| {
        let named: Vec<(&[u8], u64)> =
            element_index.iter().filter(|(c, ..)| *c == k).map(|(_, p, n)| (p.as_slice(), *n)).collect();
        if named.is_empty() { path } else { name_elements(&path, &named) }
    };
    Some(Delta {
        texts: texts
            .into_iter()
            .map(|(k, path, span)| Text { group: choice(k), field: field(k, path), span })
            .collect(),
        standalone,
        finished: finished.into_iter().map(|k| Finish::Group(choice(k))).collect(),
        logprobs: logprobs.into_iter().map(|(k, s)| (choice(k), s)).collect(),
        read_string: None,
    })
}

/// The raw bytes inside a string literal's quotes (an escaped spelling matches nothing).
fn literal_inner(data: &[u8], literal: Option<Range<usize>>) -> &[u8] {
    literal.and_then(|s| data.get(s.start + 1..s.end.saturating_sub(1))).unwrap_or_default()
}

/// A Responses API event: the top-level `delta` string of a `*.delta` event is streamed
/// text, of the channel named by the event type and its `content_index`/`summary_index`, in
/// the group of its `output_index`. The `*.done` event with the same type and indexes
/// finishes that channel, `response.output_item.done` the output item's, and
/// `response.completed`/`failed`/`incomplete` all of them.
fn responses_delta(data: &[u8], strings: &mut Vec<Range<usize>>) -> Option<Delta> {
    const INDEXES: [&str; 3] = ["output_index", "content_index", "summary_index"];
    let mut event_type = None;
    let mut delta = None;
    let mut indexes: [Option<u64>; 3] = [None; 3];
    let mut logprobs = None;
    let mut standalone = Vec::new();
    walk_noting_strings(data, strings, |path, span, kind| match (path, kind) {
        ([k], Kind::Str) if k.is("type") => event_type = Some(span),
        ([k], Kind::Str) if k.is("delta") => delta = Some(span),
        ([k], Kind::Num) => {
            if let Some(slot) = INDEXES.iter().position(|name| k.is(name)).and_then(|i| indexes.get_mut(i)) {
                *slot = parse_u64(&data[span]);
            }
        }
        ([k], Kind::Obj | Kind::Arr) if k.is("logprobs") => logprobs = Some(span),
        _ if is_text(path, kind) => standalone.push(span),
        _ => {}
    })?;
    let name = literal_inner(data, event_type.clone());
    let [output, sub @ ..] = indexes;
    let group = output.unwrap_or(0);
    let channel = |stem: &[u8]| {
        let mut field = stem.to_vec();
        for (marker, n) in (0u8..).zip(sub) {
            if let Some(n) = n {
                field.push(marker);
                field.extend_from_slice(&n.to_le_bytes());
            }
        }
        field
    };
    let mut texts = Vec::new();
    if let Some(span) = delta {
        match name.strip_suffix(b".delta") {
            Some(stem) => texts.push(Text { group, field: channel(stem), span }),
            None => standalone.push(span),
        }
    }
    let finished = match name {
        b"response.completed" | b"response.failed" | b"response.incomplete" => Some(Finish::All),
        b"response.output_item.done" => Some(Finish::Group(group)),
        _ => name.strip_suffix(b".done").map(|stem| Finish::Channel(group, channel(stem))),
    };
    Some(Delta {
        texts,
        standalone,
        finished: finished.into_iter().collect(),
        logprobs: logprobs.map(|span| (group, span)).into_iter().collect(),
        read_string: event_type,
    })
}

/// A Messages API event: a string right under a `content_block_delta`'s `delta` (or a
/// `content_block_start`'s `content_block`) is streamed text, of the channel named by its
/// key (`text`, `thinking`, `partial_json`) in the group of the block's `index`.
/// `content_block_stop` finishes the block's channels, `message_stop` all of them.
fn messages_delta(data: &[u8], strings: &mut Vec<Range<usize>>) -> Option<Delta> {
    let mut event_type = None;
    let mut index = None;
    // (under `delta` rather than `content_block`, encoded key, span)
    let mut candidates: Vec<(bool, Vec<u8>, Range<usize>)> = Vec::new();
    let mut standalone = Vec::new();
    walk_noting_strings(data, strings, |path, span, kind| match (path, kind) {
        ([k], Kind::Str) if k.is("type") => event_type = Some(span),
        ([k], Kind::Num) if k.is("index") => index = parse_u64(&data[span]),
        ([block, key], Kind::Str) if (block.is("delta") || block.is("content_block")) && is_text(path, kind) => {
            candidates.push((block.is("delta"), encode_path(std::slice::from_ref(key)), span));
        }
        _ if is_text(path, kind) => standalone.push(span),
        _ => {}
    })?;
    let name = literal_inner(data, event_type.clone());
    let group = index.unwrap_or(0);
    let streamed_under_delta = match name {
        b"content_block_delta" => Some(true),
        b"content_block_start" => Some(false),
        _ => None,
    };
    let mut texts = Vec::new();
    for (under_delta, field, span) in candidates {
        if streamed_under_delta == Some(under_delta) {
            texts.push(Text { group, field, span });
        } else {
            standalone.push(span);
        }
    }
    let finished = match name {
        b"content_block_stop" => Some(Finish::Group(group)),
        b"message_stop" => Some(Finish::All),
        _ => None,
    };
    Some(Delta {
        texts,
        standalone,
        finished: finished.into_iter().collect(),
        logprobs: Vec::new(),
        read_string: event_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_texts_the_standalone_strings_are_what_a_whole_body_sanitizes() {
        let events: [(StreamFormat, &str); 9] = [
            (
                StreamFormat::Chat,
                r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop","logprobs":null}]}"#,
            ),
            (StreamFormat::Chat, r#"{"choices":[],"usage":{"prompt_tokens":9},"citations":["a","b"],"model":"m"}"#),
            (StreamFormat::Chat, r#"{"error":{"message":"backend down","type":"server_error","code":"x"}}"#),
            (
                StreamFormat::Responses,
                r#"{"type":"response.output_text.done","output_index":0,"text":"all","logprobs":[{"token":"a"}]}"#,
            ),
            (
                StreamFormat::Responses,
                r#"{"type":"response.completed","response":{"id":"r","output":[{"type":"message","content":[{"type":"output_text","text":"hi","logprobs":[]}]}]}}"#,
            ),
            (StreamFormat::Responses, r#"{"type":"response.refusal.done","refusal":"no","item_id":"i"}"#),
            (
                StreamFormat::Messages,
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":3}}"#,
            ),
            (
                StreamFormat::Messages,
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t","name":"f","input":{"q":"x"}}}"#,
            ),
            (StreamFormat::Messages, r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#),
        ];
        for (format, event) in events {
            let data = event.as_bytes();
            let found = delta(data, format, &mut Vec::new()).expect("JSON");
            assert!(found.texts.is_empty(), "{event}");
            let mut texts = Vec::new();
            walk(data, &mut |path, span, kind| {
                if is_text(path, kind) {
                    texts.push(span);
                }
            })
            .expect("JSON");
            let mut standalone = found.standalone;
            standalone.sort_by_key(|span| span.start);
            assert_eq!(standalone, texts, "{event}");
        }
    }
}
