//! What the meter reads of a whole (non-streamed) Messages answer, its usage and the length of
//! its text, without building a `serde_json::Value` of it.
//!
//! A `Value` allocates every key, string and map of the answer only for the meter to read five
//! numbers and count a few strings: 16.9k of a `/v1/messages` request's 163k instructions
//! (`bench/instructions.sh`, the mock's 290-byte answer). This reader visits the same parse with
//! serde and keeps nothing but counts. It is held to the `Value` reading
//! ([`MessageFacts::of_value`], which the translated chat path still uses) on every input, the
//! refused ones included (`tests::the_reader_reads_what_the_value_reading_reads`), so:
//! - whatever it skips is still parsed as a `Value` would be ([`Strict`]: strings checked for
//!   UTF-8 and lone surrogates, numbers for their range, nesting counted against the same
//!   depth limit), not ignored, which serde's `IgnoredAny` would accept more than a `Value`;
//! - a key given twice counts as its last value, as in a `Value`'s map.

use super::anthropic::Usage;
use crate::events::TokenUsage;
use crate::json_bytes::from_bytes;
use serde::Deserialize;
use serde::de::{Deserializer, Error, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::fmt;

/// The meter's facts of a Messages answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct MessageFacts {
    /// Present when the answer has a `usage` member (counts it lacks are 0).
    pub usage: Option<TokenUsage>,
    /// Characters of its text, thinking and tool input: the estimate when usage is missing.
    pub answer_chars: u64,
}

impl MessageFacts {
    /// The facts of `body`, refused exactly where `serde_json::from_slice::<Value>` refuses.
    pub(super) fn read(body: &[u8]) -> serde_json::Result<MessageFacts> {
        from_bytes::<Answer>(body).map(|answer| answer.0)
    }

    /// The same facts of an answer already parsed.
    pub(super) fn of_value(message: &Value) -> MessageFacts {
        let usage = message.get("usage").map(|reported| {
            let mut usage = Usage::default();
            usage.update(reported);
            usage.token_usage()
        });
        let blocks = message.get("content").and_then(Value::as_array).into_iter().flatten();
        let answer_chars = blocks
            .map(|block| {
                let text = ["text", "thinking"].iter().filter_map(|f| block.get(*f).and_then(Value::as_str));
                let input = block.get("input").map_or(0, serialized_chars);
                text.map(|t| t.chars().count() as u64).sum::<u64>() + input
            })
            .sum();
        MessageFacts { usage, answer_chars }
    }
}

/// A tool's input counts as its compact JSON.
fn serialized_chars(value: &Value) -> u64 {
    value.to_string().chars().count() as u64
}

/// `Deserialize` for `$target` through `deserialize_any`: the visitor methods given, and for
/// each JSON kind listed after `else` a walk of the value as [`Strict`] (so refused where a
/// `Value` would be) read as `$default`.
macro_rules! from_any_value {
    ($target:ident { $($read:item)* } else $default:expr; $($kind:ident),*) => {
        impl<'de> Deserialize<'de> for $target {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<$target, D::Error> {
                struct AnyValue;
                impl<'de> Visitor<'de> for AnyValue {
                    type Value = $target;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str("any JSON value")
                    }
                    $($read)*
                    $(from_any_value!(@ $kind $target = $default);)*
                }
                deserializer.deserialize_any(AnyValue)
            }
        }
    };
    (@ bool $target:ty = $default:expr) => {
        fn visit_bool<E: Error>(self, _: bool) -> Result<$target, E> {
            Ok($default)
        }
    };
    (@ null $target:ty = $default:expr) => {
        fn visit_unit<E: Error>(self) -> Result<$target, E> {
            Ok($default)
        }
    };
    (@ numbers $target:ty = $default:expr) => {
        fn visit_u64<E: Error>(self, _: u64) -> Result<$target, E> {
            Ok($default)
        }
        fn visit_i64<E: Error>(self, _: i64) -> Result<$target, E> {
            Ok($default)
        }
        fn visit_f64<E: Error>(self, _: f64) -> Result<$target, E> {
            Ok($default)
        }
    };
    (@ str $target:ty = $default:expr) => {
        fn visit_str<E: Error>(self, _: &str) -> Result<$target, E> {
            Ok($default)
        }
    };
    (@ array $target:ty = $default:expr) => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<$target, A::Error> {
            while seq.next_element::<Strict>()?.is_some() {}
            Ok($default)
        }
    };
    (@ object $target:ty = $default:expr) => {
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$target, A::Error> {
            while map.next_entry::<Strict, Strict>()?.is_some() {}
            Ok($default)
        }
    };
}

/// Any JSON value, walked as a `Value` is parsed and kept as nothing.
struct Strict;

from_any_value!(Strict {} else Strict; bool, null, numbers, str, array, object);

/// The keys the reader looks for, at whatever level; any other is `Other`.
enum Key {
    Usage,
    Content,
    Text,
    Thinking,
    Input,
    InputTokens,
    OutputTokens,
    CacheCreationInputTokens,
    CacheReadInputTokens,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: Error>(self, key: &str) -> Result<Key, E> {
                Ok(match key {
                    "usage" => Key::Usage,
                    "content" => Key::Content,
                    "text" => Key::Text,
                    "thinking" => Key::Thinking,
                    "input" => Key::Input,
                    "input_tokens" => Key::InputTokens,
                    "output_tokens" => Key::OutputTokens,
                    "cache_creation_input_tokens" => Key::CacheCreationInputTokens,
                    "cache_read_input_tokens" => Key::CacheReadInputTokens,
                    _ => Key::Other,
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// The answer: a `usage` member and a `content` array; anything but an object has neither.
struct Answer(MessageFacts);

from_any_value!(Answer {
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Answer, A::Error> {
        let mut facts = MessageFacts::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Usage => facts.usage = Some(map.next_value::<UsageCounts>()?.0.token_usage()),
                Key::Content => facts.answer_chars = map.next_value::<ContentChars>()?.0,
                _ => {
                    map.next_value::<Strict>()?;
                }
            }
        }
        Ok(Answer(facts))
    }
} else Answer(MessageFacts::default()); bool, null, numbers, str, array);

/// The `usage` member: each count that is an unsigned integer (`Value::as_u64`), else 0.
struct UsageCounts(Usage);

from_any_value!(UsageCounts {
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UsageCounts, A::Error> {
        let mut usage = Usage::default();
        while let Some(key) = map.next_key::<Key>()? {
            let slot = match key {
                Key::InputTokens => &mut usage.input_tokens,
                Key::OutputTokens => &mut usage.output_tokens,
                Key::CacheCreationInputTokens => &mut usage.cache_creation_input_tokens,
                Key::CacheReadInputTokens => &mut usage.cache_read_input_tokens,
                _ => {
                    map.next_value::<Strict>()?;
                    continue;
                }
            };
            *slot = map.next_value::<Count>()?.0.unwrap_or(0);
        }
        Ok(UsageCounts(usage))
    }
} else UsageCounts(Usage::default()); bool, null, numbers, str, array);

/// A token count as `Value::as_u64` reads one: a non-negative integer, else none.
struct Count(Option<u64>);

from_any_value!(Count {
    fn visit_u64<E: Error>(self, n: u64) -> Result<Count, E> {
        Ok(Count(Some(n)))
    }
    fn visit_i64<E: Error>(self, n: i64) -> Result<Count, E> {
        Ok(Count(u64::try_from(n).ok()))
    }
    fn visit_f64<E: Error>(self, _: f64) -> Result<Count, E> {
        Ok(Count(None))
    }
} else Count(None); bool, null, str, array, object);

/// The `content` member: the answer characters of its blocks when it is an array.
struct ContentChars(u64);

from_any_value!(ContentChars {
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ContentChars, A::Error> {
        let mut chars = 0u64;
        while let Some(block) = seq.next_element::<BlockChars>()? {
            chars += block.0;
        }
        Ok(ContentChars(chars))
    }
} else ContentChars(0); bool, null, numbers, str, object);

/// A content block's `text` and `thinking` characters and its `input` as compact JSON.
struct BlockChars(u64);

from_any_value!(BlockChars {
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BlockChars, A::Error> {
        let (mut text, mut thinking, mut input) = (0, 0, 0);
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Text => text = map.next_value::<StrChars>()?.0,
                Key::Thinking => thinking = map.next_value::<StrChars>()?.0,
                // Tool input is rare and any JSON: counted as the `Value` reading counts it.
                Key::Input => input = serialized_chars(&map.next_value::<Value>()?),
                _ => {
                    map.next_value::<Strict>()?;
                }
            }
        }
        Ok(BlockChars(text + thinking + input))
    }
} else BlockChars(0); bool, null, numbers, str, array);

/// A string's characters; anything else counts 0.
struct StrChars(u64);

from_any_value!(StrChars {
    fn visit_str<E: Error>(self, text: &str) -> Result<StrChars, E> {
        Ok(StrChars(text.chars().count() as u64))
    }
} else StrChars(0); bool, null, numbers, array, object);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::chunk_layout::tests::{array, object, pick, space, string, text};
    use crate::test_rng::TestRng;

    const REFUSED_OR_NOT: &[&[u8]] = &[br#""\ud800""#, b"\"\xff\xfe\"", br#""\udc00x""#, br#""\ud83d\ude80""#];
    const NUMBERS: &[&[u8]] = &[
        b"1e400",
        b"-1e400",
        b"-0",
        b"-5",
        b"3.5",
        b"7.0",
        b"18446744073709551616",
        b"18446744073709551615",
        b"1e3",
        b"true",
        b"null",
        b"{}",
    ];

    /// Values for the members the reader skips or counts: numbers a `Value` refuses (out of
    /// range) or reads as no count (negative, fractions, `-0`, past `u64`), nesting past
    /// serde_json's depth limit of 128, strings a `Value` refuses.
    fn odd_value(rng: &mut TestRng) -> Vec<u8> {
        let nesting = |depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
        match rng.below(6) {
            0 => nesting([3, 127, 128, 129, 200][rng.below(5)]),
            1 => format!("{{\"a\":{}}}", String::from_utf8_lossy(&nesting(127))).into_bytes(),
            2 => pick(rng, REFUSED_OR_NOT).to_vec(),
            _ => pick(rng, NUMBERS).to_vec(),
        }
    }

    fn count(rng: &mut TestRng) -> Vec<u8> {
        if rng.below(8) == 0 { odd_value(rng) } else { format!("{}", rng.below(5000)).into_bytes() }
    }

    fn usage(rng: &mut TestRng) -> Vec<u8> {
        let names = ["input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"];
        let mut members: Vec<(&str, Vec<u8>)> = Vec::new();
        for name in names {
            if rng.below(5) != 0 {
                members.push((name, count(rng)));
            }
        }
        if rng.below(4) == 0 {
            members.push(("service_tier", b"\"standard\"".to_vec()));
        }
        if rng.below(5) == 0 {
            members.push((names[rng.below(names.len())], count(rng)));
        }
        match rng.below(15) {
            0 => b"null".to_vec(),
            1 => {
                let values = members.into_iter().map(|(_, value)| value).collect();
                array(rng, values)
            }
            _ => object(rng, members),
        }
    }

    /// A content block: text, thinking (with its signature), tool use with any JSON input,
    /// or something else; sometimes a field of the wrong type or twice.
    fn block(rng: &mut TestRng) -> Vec<u8> {
        let mut members: Vec<(&str, Vec<u8>)> = match rng.below(5) {
            0 => vec![("type", b"\"thinking\"".to_vec()), ("thinking", text(rng)), ("signature", string(rng))],
            1 => {
                let city = string(rng);
                let input = match rng.below(4) {
                    0 => odd_value(rng),
                    1 => b"null".to_vec(),
                    _ => object(rng, vec![("city", city), ("units", b"\"metric\"".to_vec())]),
                };
                vec![
                    ("type", b"\"tool_use\"".to_vec()),
                    ("id", string(rng)),
                    ("name", b"\"weather\"".to_vec()),
                    ("input", input),
                ]
            }
            2 if rng.below(3) == 0 => return string(rng),
            _ => vec![("type", b"\"text\"".to_vec()), ("text", text(rng))],
        };
        if rng.below(10) == 0 {
            members.push((["text", "thinking", "input", "citations"][rng.below(4)], text(rng)));
        }
        object(rng, members)
    }

    /// A Messages answer as upstreams write them; keys in any order, any spacing; sometimes an
    /// escaped key, a member twice, odd values, no object, or a byte dropped or added.
    fn answer(rng: &mut TestRng) -> Vec<u8> {
        let blocks = (0..rng.below(4)).map(|_| block(rng)).collect();
        let content = if rng.below(15) == 0 { text(rng) } else { array(rng, blocks) };
        let mut members = vec![
            ("id", string(rng)),
            ("type", b"\"message\"".to_vec()),
            ("role", b"\"assistant\"".to_vec()),
            ("model", b"\"claude-haiku-4-5\"".to_vec()),
            ("content", content),
            ("stop_reason", b"\"end_turn\"".to_vec()),
            ("stop_sequence", b"null".to_vec()),
        ];
        if rng.below(8) != 0 {
            members.push(("usage", usage(rng)));
        }
        if rng.below(6) == 0 {
            members.push((["container", "usage", "content", "extra"][rng.below(4)], odd_value(rng)));
        }
        let mut out = if rng.below(30) == 0 {
            array(rng, members.into_iter().map(|(_, value)| value).collect())
        } else {
            object(rng, members)
        };
        match rng.below(20) {
            0 => {
                let at = rng.below(out.len());
                out.remove(at);
            }
            1 => {
                let at = rng.below(out.len() + 1);
                out.insert(at, b"},\"\\x"[rng.below(5)]);
            }
            2 => out.extend_from_slice(space(rng)),
            _ => {}
        }
        out
    }

    /// The reader gives what the `Value` reading gives, and refuses what a `Value` refuses,
    /// on generated answers with odd values, duplicates, depth and damage; both sides
    /// exercised.
    #[test]
    fn the_reader_reads_what_the_value_reading_reads() {
        let mut rng = TestRng::new(0x2026_1207_3e55);
        let (mut read, mut with_usage, mut refused) = (0, 0, 0);
        let n = 30_000;
        for _ in 0..n {
            let body = answer(&mut rng);
            let by_value = serde_json::from_slice::<Value>(&body).ok().map(|message| MessageFacts::of_value(&message));
            assert_eq!(MessageFacts::read(&body).ok(), by_value, "{}", String::from_utf8_lossy(&body));
            match by_value {
                Some(facts) => {
                    read += 1;
                    with_usage += usize::from(facts.usage.is_some_and(|u| u.prompt_tokens > 0));
                }
                None => refused += 1,
            }
        }
        assert!(
            read > n / 2 && with_usage > n / 4 && refused > n / 20,
            "{read} read ({with_usage} with usage), {refused} refused"
        );
    }

    #[test]
    fn an_answer_is_read_to_its_usage_and_text() {
        let body = r#"{"content":[{"type":"thinking","thinking":"hmm","signature":"x"},{"type":"text","text":"Héllo"},
            {"type":"tool_use","id":"t","name":"w","input":{"city":"Paris"}}],
            "usage":{"input_tokens":10,"cache_read_input_tokens":5,"cache_creation_input_tokens":2,"output_tokens":7}}"#;
        let facts = MessageFacts::read(body.as_bytes()).expect("valid");
        let usage = TokenUsage { prompt_tokens: 17, cached_tokens: 5, cache_write_tokens: 2, completion_tokens: 7 };
        assert_eq!(
            facts,
            MessageFacts { usage: Some(usage), answer_chars: 3 + 5 + r#"{"city":"Paris"}"#.len() as u64 }
        );
        assert_eq!(MessageFacts::read(br#"{"content":[]}"#).map(|f| f.usage).ok(), Some(None), "no usage member");
        assert!(MessageFacts::read(br#"{"content":[],"x":1e400}"#).is_err(), "refused as a Value refuses it");
    }
}
