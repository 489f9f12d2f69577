//! The usage reader: token usage and the length of the answer, read from an upstream's JSON
//! (a whole completion, or one streamed chunk's `data`) with serde, so any legal whitespace,
//! key order or string escape reads the same. Fields of an unexpected type count as absent
//! instead of losing the whole document, and nothing here can panic on any input.

use crate::events::TokenUsage;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// What one document says that billing needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    pub usage: Option<TokenUsage>,
    /// Usage with no choices: the chunk `stream_options.include_usage` adds at a stream's end.
    pub usage_only: bool,
    /// Characters of answer text (content, refusal, reasoning, tool-call arguments).
    pub answer_chars: u64,
}

/// Reads a completion body or a streamed chunk; anything that is not a JSON object says nothing.
pub fn read(json: &[u8]) -> Facts {
    let Ok(envelope) = serde_json::from_slice::<Envelope>(json) else {
        return Facts::default();
    };
    let choices = envelope.choices.unwrap_or_default();
    Facts {
        usage: envelope.usage.and_then(WireUsage::tokens),
        usage_only: envelope.usage.is_some() && choices.count == 0,
        answer_chars: choices.answer_chars,
    }
}

/// Usage of a whole (non-streamed) completion body, if it reports one.
pub fn usage_of_body(body: &[u8]) -> Option<TokenUsage> {
    read(body).usage
}

/// About four characters a token: the estimate when an upstream never reports its usage.
pub fn estimated_tokens(chars: u64) -> u64 {
    chars.div_ceil(4)
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    choices: Option<Choices>,
}

#[derive(Deserialize, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Count,
    #[serde(default)]
    completion_tokens: Count,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    /// DeepSeek's name for the cached prompt tokens (it sends no `prompt_tokens_details`).
    #[serde(default)]
    prompt_cache_hit_tokens: Count,
}

#[derive(Deserialize, Clone, Copy)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Count,
}

impl WireUsage {
    /// The usage, when it counts both prompt and completion: a usage object without them
    /// (`{}`, nulls) is no report, and the request is estimated rather than booked as free.
    fn tokens(self) -> Option<TokenUsage> {
        Some(TokenUsage {
            prompt_tokens: self.prompt_tokens.0?,
            cached_tokens: self
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens.0)
                .or(self.prompt_cache_hit_tokens.0)
                .unwrap_or(0),
            cache_write_tokens: 0,
            completion_tokens: self.completion_tokens.0?,
        })
    }
}

/// The `choices` array, summed as it is read (no allocation per chunk).
#[derive(Default)]
struct Choices {
    count: usize,
    answer_chars: u64,
}

/// A choice: `delta` when streamed, `message` when whole.
#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Answer>,
    #[serde(default)]
    message: Option<Answer>,
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    content: Chars,
    #[serde(default)]
    refusal: Chars,
    #[serde(default)]
    reasoning: Chars,
    #[serde(default)]
    reasoning_content: Chars,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Deserialize)]
struct ToolCall {
    #[serde(default)]
    function: Option<Function>,
}

#[derive(Deserialize)]
struct Function {
    #[serde(default)]
    arguments: Chars,
}

impl Answer {
    fn chars(&self) -> u64 {
        let calls = self.tool_calls.iter().flatten();
        let arguments: u64 = calls.filter_map(|c| c.function.as_ref()).map(|f| f.arguments.0).sum();
        self.content.0 + self.refusal.0 + self.reasoning.0 + self.reasoning_content.0 + arguments
    }
}

impl<'de> Deserialize<'de> for Choices {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Choices, D::Error> {
        struct ChoicesVisitor;
        impl<'de> Visitor<'de> for ChoicesVisitor {
            type Value = Choices;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of choices")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Choices, A::Error> {
                let mut choices = Choices::default();
                while let Some(choice) = seq.next_element::<Choice>()? {
                    choices.count += 1;
                    let answers = choice.delta.iter().chain(choice.message.iter());
                    choices.answer_chars += answers.map(Answer::chars).sum::<u64>();
                }
                Ok(choices)
            }
        }
        deserializer.deserialize_seq(ChoicesVisitor)
    }
}

/// A token count; null or non-numeric is absent, negative is 0, a fraction is cut.
#[derive(Default, Clone, Copy)]
struct Count(Option<u64>);

/// A text's length in characters; null or a non-string counts as 0.
#[derive(Default, Clone, Copy)]
struct Chars(u64);

/// Visits any JSON value, skipping what `Visitor::visit_*` of the wrapped type does not take.
macro_rules! lenient_visitor {
    ($name:ident, $target:ident, $($method:ident($ty:ty) => $body:expr),* $(,)?) => {
        struct $name;
        impl<'de> Visitor<'de> for $name {
            type Value = $target;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            $(fn $method<E: de::Error>(self, v: $ty) -> Result<$target, E> {
                #[allow(clippy::redundant_closure_call)]
                Ok($target(($body)(v)))
            })*
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<$target, E> { Ok($target::default()) }
            fn visit_unit<E: de::Error>(self) -> Result<$target, E> { Ok($target::default()) }
            fn visit_none<E: de::Error>(self) -> Result<$target, E> { Ok($target::default()) }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<$target, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok($target::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$target, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok($target::default())
            }
        }
    };
}

lenient_visitor!(CountVisitor, Count,
    visit_u64(u64) => Some,
    visit_i64(i64) => |v: i64| Some(u64::try_from(v).unwrap_or(0)),
    // `as` saturates: 1e30 is u64::MAX; NaN is not a count.
    visit_f64(f64) => |v: f64| (!v.is_nan()).then_some(if v > 0.0 { v as u64 } else { 0 }),
    visit_str(&str) => |_| None,
);

lenient_visitor!(CharsVisitor, Chars,
    visit_u64(u64) => |_| 0,
    visit_i64(i64) => |_| 0,
    visit_f64(f64) => |_| 0,
    visit_str(&str) => |v: &str| v.chars().count() as u64,
);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Count, D::Error> {
        deserializer.deserialize_any(CountVisitor)
    }
}

impl<'de> Deserialize<'de> for Chars {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Chars, D::Error> {
        deserializer.deserialize_any(CharsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    const USAGE: TokenUsage =
        TokenUsage { prompt_tokens: 1_000_000, cached_tokens: 4, cache_write_tokens: 0, completion_tokens: 7 };

    fn usage_json() -> Value {
        json!({"prompt_tokens": 1_000_000, "completion_tokens": 7, "total_tokens": 1_000_007,
               "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0}})
    }

    #[test]
    fn whitespace_key_order_and_escapes_read_the_same() {
        let variants: [&[u8]; 4] = [
            br#"{"id":"c","choices":[],"usage":{"prompt_tokens":1000000,"completion_tokens":7,"prompt_tokens_details":{"cached_tokens":4}}}"#,
            b"{ \"usage\" : {\n  \"completion_tokens\": 7,\n  \"prompt_tokens_details\": { \"cached_tokens\": 4 },\n  \"prompt_tokens\": 1000000\n },\n \"choices\": [ ]\n}",
            br#"{"choices":[],"\u0075sage":{"prompt_tokens":1e6,"completion_tokens":7.0,"prompt_tokens_details":{"cached_tokens":4}}}"#,
            b"\t{\"usage\":{\"prompt_tokens\":1000000,\"completion_tokens\":7,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\r\n",
        ];
        for variant in variants {
            let facts = read(variant);
            assert_eq!(facts.usage, Some(USAGE), "{}", String::from_utf8_lossy(variant));
            assert!(facts.usage_only);
        }
    }

    #[test]
    fn deepseeks_cache_hits_are_the_cached_tokens() {
        let deepseek = br#"{"choices":[],"usage":{"prompt_tokens":80,"completion_tokens":18,"total_tokens":98,
            "prompt_cache_hit_tokens":64,"prompt_cache_miss_tokens":16}}"#;
        assert_eq!(
            read(deepseek).usage,
            Some(TokenUsage { prompt_tokens: 80, cached_tokens: 64, cache_write_tokens: 0, completion_tokens: 18 })
        );
        let both = br#"{"usage":{"prompt_tokens":80,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":32},"prompt_cache_hit_tokens":64}}"#;
        assert_eq!(read(both).usage.map(|u| u.cached_tokens), Some(32), "OpenAI's own field wins");
    }

    #[test]
    fn odd_fields_count_as_absent_and_a_usage_without_counts_is_no_report() {
        let body = br#"{"choices":[{"message":{"content":["part"],"refusal":null,"tool_calls":[{"function":{"arguments":"{\"a\":1}"}}]}}],
            "usage":{"prompt_tokens":null,"completion_tokens":"many","prompt_tokens_details":null,"extra":{"x":[1]}}}"#;
        let facts = read(body);
        assert_eq!(facts.usage, None, "no counts: no report, so the request is estimated, never free");
        assert!(!facts.usage_only);
        assert_eq!(facts.answer_chars, 7, "the tool call's arguments");
        let partial = br#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":-3,"prompt_tokens_details":{"cached_tokens":"x"}}}"#;
        assert_eq!(
            read(partial).usage,
            Some(TokenUsage { prompt_tokens: 12, completion_tokens: 0, ..TokenUsage::default() })
        );
        let empty = read(br#"{"choices":[],"usage":{}}"#);
        assert!(empty.usage.is_none() && empty.usage_only, "still the usage chunk: removed, but not booked as zero");
        assert_eq!(read(b"[1,2]"), Facts::default());
        assert_eq!(read(b"{\"usage\":null,\"choices\":[]}"), Facts::default());
    }

    #[test]
    fn answer_text_is_counted_in_characters_after_unescaping() {
        let chunk = br#"{"choices":[{"delta":{"content":"h\u00e9\n\"","reasoning_content":"ab"}},{"delta":{"refusal":"no"}}],"usage":null}"#;
        assert_eq!(read(chunk), Facts { usage: None, usage_only: false, answer_chars: 8 });
        assert_eq!(estimated_tokens(8), 2);
        assert_eq!(estimated_tokens(9), 3);
    }

    #[test]
    fn body_usage_is_parsed() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":13,"completion_tokens":5,"total_tokens":18}}"#;
        assert_eq!(
            usage_of_body(body),
            Some(TokenUsage { prompt_tokens: 13, completion_tokens: 5, ..TokenUsage::default() })
        );
        assert_eq!(usage_of_body(b"{}"), None);
    }

    /// Writes `value` with the given whitespace and `\u` escapes for some key letters.
    fn write_variant(value: &Value, pretty: bool, escape_keys: bool) -> Vec<u8> {
        fn write(value: &Value, pretty: bool, escape_keys: bool, depth: usize, out: &mut String) {
            let (newline, indent, colon) =
                if pretty { ("\n", "  ".repeat(depth + 1), " : ") } else { ("", String::new(), ":") };
            match value {
                Value::Object(map) => {
                    out.push('{');
                    for (index, (key, value)) in map.iter().enumerate() {
                        out.push_str(if index > 0 { "," } else { "" });
                        out.push_str(newline);
                        out.push_str(&indent);
                        let key = if escape_keys {
                            key.chars().map(|c| format!("\\u{:04x}", u32::from(c))).collect()
                        } else {
                            key.clone()
                        };
                        out.push_str(&format!("\"{key}\"{colon}"));
                        write(value, pretty, escape_keys, depth + 1, out);
                    }
                    out.push_str(newline);
                    out.push('}');
                }
                Value::Array(items) => {
                    out.push('[');
                    for (index, item) in items.iter().enumerate() {
                        out.push_str(if index > 0 { ", " } else { "" });
                        write(item, pretty, escape_keys, depth + 1, out);
                    }
                    out.push(']');
                }
                other => out.push_str(&other.to_string()),
            }
        }
        let mut out = String::new();
        write(value, pretty, escape_keys, 0, &mut out);
        out.into_bytes()
    }

    /// A chunk as OpenAI-compatible servers write them, keys in a generated order.
    fn chunk(content: &str, with_usage: bool, order: &[usize]) -> Value {
        let mut fields = vec![
            ("id", json!("chatcmpl-1")),
            ("object", json!("chat.completion.chunk")),
            ("choices", if with_usage { json!([]) } else { json!([{"index": 0, "delta": {"content": content}}]) }),
            ("usage", if with_usage { usage_json() } else { Value::Null }),
            ("model", json!("gpt-4o-mini")),
        ];
        let mut ordered = serde_json::Map::new();
        for &index in order {
            let index = index % fields.len();
            let (key, value) = fields.remove(index);
            ordered.insert(key.into(), value);
        }
        for (key, value) in fields {
            ordered.insert(key.into(), value);
        }
        Value::Object(ordered)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        /// The fuzz target of the usage reader on arbitrary bytes: it never panics, and says
        /// nothing about what is not JSON.
        #[test]
        fn fuzz_usage_reader_never_panics_on_arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..200)) {
            let facts = read(&input);
            if serde_json::from_slice::<Value>(&input).is_err() {
                prop_assert_eq!(facts, Facts::default());
            }
        }

        /// Generated JSON variants (compact, pretty-printed, keys reordered, keys escaped)
        /// of one chunk read the same as its compact form.
        #[test]
        fn fuzz_usage_reader_reads_every_json_variant_alike(
            content in "\\PC{0,12}",
            with_usage in any::<bool>(),
            order in proptest::collection::vec(0usize..5, 0..5),
            pretty in any::<bool>(),
            escape_keys in any::<bool>(),
        ) {
            let value = chunk(&content, with_usage, &order);
            let facts = read(&write_variant(&value, pretty, escape_keys));
            prop_assert_eq!(facts, read(&serde_json::to_vec(&value).expect("encode")));
            prop_assert_eq!(facts.usage, with_usage.then_some(USAGE));
            prop_assert_eq!(facts.usage_only, with_usage);
            let chars = if with_usage { 0 } else { content.chars().count() as u64 };
            prop_assert_eq!(facts.answer_chars, chars);
        }
    }
}
