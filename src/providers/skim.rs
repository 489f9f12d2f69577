//! One top-level member of a large JSON answer, found without deserializing the rest.
//!
//! An embeddings answer is nearly all numbers (1,536 of them a vector for
//! text-embedding-3-small, 3,072 for -large), and the meter needs only its `usage`. serde's
//! skip of the numbers costs about 11 instructions a byte (callgrind: 362k of the 515k
//! instructions of a one-vector request, `bench/README.md`); this scan reads digit runs eight
//! bytes at a time, half the instructions of serde's skip.
//!
//! The scan is a second reader, so it only answers where it reads exactly as serde_json does:
//! it checks the whole document with serde_json's grammar (strings, escapes, control bytes,
//! numbers, literals, nesting, nothing after the value) and gives up ([`Member::Unsure`]) on
//! whatever it does not settle itself: a byte above ASCII, an escaped top-level key, the key
//! twice (serde refuses a duplicate field), a top-level value that is not an object, deep
//! nesting, and every invalid document. The caller then asks serde. It may be stricter than
//! serde, never more lenient: `tests::the_scan_reads_what_serde_reads_on_generated_answers`
//! holds it to serde's answer on generated and mangled answers.

use crate::swar;

/// Deeper documents are left to serde (its limit is 128).
const MAX_DEPTH: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member<'a> {
    /// A valid object whose one member of that name has this value (its bytes, no whitespace
    /// around them).
    Found(&'a [u8]),
    /// A valid object without that member.
    Absent,
    /// Not settled here: ask serde.
    Unsure,
}

/// The value of the top-level member `key` (plain ASCII, no escapes) of the JSON object `json`.
pub fn top_level_member<'a>(json: &'a [u8], key: &[u8]) -> Member<'a> {
    let mut scan = Scan { s: json, pos: 0 };
    scan.object_member(key).unwrap_or(Member::Unsure)
}

struct Scan<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Scan<'a> {
    /// `None`: invalid, or not settled here.
    fn object_member(&mut self, key: &[u8]) -> Option<Member<'a>> {
        let mut found = None;
        self.ws();
        self.object(1, &mut |name, value| {
            // An escaped name may still be `key` to serde; a repeated one is a duplicate field.
            if name.contains(&b'\\') || (name == key && found.replace(value).is_some()) {
                return None;
            }
            Some(())
        })?;
        self.ws();
        (self.pos == self.s.len()).then_some(found.map_or(Member::Absent, Member::Found))
    }

    /// An object, its members' values read at `depth`; `member` sees each name (as written
    /// between its quotes) with its value's bytes, and `None` from it stops the scan.
    fn object(&mut self, depth: usize, member: &mut impl FnMut(&'a [u8], &'a [u8]) -> Option<()>) -> Option<()> {
        let s = self.s;
        self.expect(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Some(());
        }
        loop {
            self.ws();
            let name = self.string()?;
            self.ws();
            self.expect(b':')?;
            self.ws();
            let start = self.pos;
            self.value(depth)?;
            member(&s[name.start + 1..name.end - 1], &s[start..self.pos])?;
            if self.closes(b'}')? {
                return Some(());
            }
        }
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'{' => self.object(depth + 1, &mut |_, _| Some(())),
            b'[' => {
                self.pos += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.pos += 1;
                    return Some(());
                }
                loop {
                    self.ws();
                    if matches!(self.peek(), Some(b'-' | b'0'..=b'9')) {
                        // A vector: its numbers and bare commas in a loop of their own, on a
                        // local position (no call, no store per element).
                        let mut at = number_end(self.s, self.pos)?;
                        while self.s.get(at) == Some(&b',') && matches!(self.s.get(at + 1), Some(b'-' | b'0'..=b'9')) {
                            at = number_end(self.s, at + 1)?;
                        }
                        self.pos = at;
                    } else {
                        self.value(depth + 1)?;
                    }
                    if self.closes(b']')? {
                        return Some(());
                    }
                }
            }
            b'"' => self.string().map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => {
                self.pos = number_end(self.s, self.pos)?;
                Some(())
            }
            _ => None,
        }
    }

    /// A string literal's span, quotes included, when it is only ASCII (serde checks the UTF-8
    /// of what it reads: left to it otherwise).
    fn string(&mut self) -> Option<std::ops::Range<usize>> {
        let start = self.pos;
        self.pos = swar::json_string_end(self.s, start)?;
        self.s[start..self.pos].is_ascii().then_some(start..self.pos)
    }

    /// After a container's element: `true` at the container's `close`, `false` at a comma.
    fn closes(&mut self, close: u8) -> Option<bool> {
        self.ws();
        match self.bump()? {
            b',' => Some(false),
            b if b == close => Some(true),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let rest = self.s.get(self.pos..)?;
        rest.starts_with(word).then(|| self.pos += word.len())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        (self.bump()? == b).then_some(())
    }
}

/// Where the number at `s[at..]` ends, if one starts there by JSON's grammar:
/// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
#[inline(always)]
fn number_end(s: &[u8], mut at: usize) -> Option<usize> {
    if s.get(at) == Some(&b'-') {
        at += 1;
    }
    match s.get(at)? {
        b'0' => at += 1,
        b'1'..=b'9' => at = digits_end(s, at + 1),
        _ => return None,
    }
    if s.get(at) == Some(&b'.') {
        let end = digits_end(s, at + 1);
        if end == at + 1 {
            return None;
        }
        at = end;
    }
    if matches!(s.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(s.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        let end = digits_end(s, at);
        if end == at {
            return None;
        }
        at = end;
    }
    Some(at)
}

/// Where the run of ASCII digits at `s[at..]` ends, read eight bytes at a time.
#[inline(always)]
fn digits_end(s: &[u8], mut at: usize) -> usize {
    while let Some(group) = swar::load(s, at) {
        // A byte above ASCII is no digit; `within` reads the others exactly.
        let non_digit = (!swar::within(group & !swar::HIGH, b'0', b'9') & swar::HIGH) | (group & swar::HIGH);
        let run = swar::leading(non_digit) as usize;
        at += run;
        if run < 8 {
            return at;
        }
    }
    while matches!(s.get(at), Some(b'0'..=b'9')) {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::{Member, top_level_member};
    use crate::test_rng::TestRng;

    #[test]
    fn the_member_is_found_absent_or_left_to_serde() {
        fn found(json: &str) -> Member<'_> {
            top_level_member(json.as_bytes(), b"usage")
        }
        assert_eq!(found(r#"{"data":[1,2.5e-3],"usage":{"a":1}}"#), Member::Found(br#"{"a":1}"#));
        assert_eq!(found(" {\"usage\" :\r\n null } \n"), Member::Found(b"null"));
        assert_eq!(found(r#"{"data":[-0.0,1E+2,"x\"\u00e9"]}"#), Member::Absent);
        assert_eq!(found("{}"), Member::Absent);
        for unsure in [
            r#"{"usage":1,"usage":2}"#,   // serde refuses the duplicate field
            r#"{"us\u0061ge":1}"#,        // an escaped key is serde's to read
            r#"{"model":"é","usage":1}"#, // above ASCII
            r#"[{"usage":1}]"#,           // serde reads a struct from an array too
            r#"{"data":[01],"usage":1}"#,
            r#"{"data":[1.],"usage":1}"#,
            r#"{"data":[1e],"usage":1}"#,
            r#"{"data":[-],"usage":1}"#,
            r#"{"data":[1,],"usage":1}"#,
            r#"{"usage":1,}"#,
            r#"{"usage":1} x"#,
            "{\"usage\":\"a\tb\"}",
            r#"{"usage":"\x"}"#,
            r#"{"usage":"\u12g4"}"#,
            r#"{"usage":tru}"#,
            r#"{"usage":1"#,
            "",
        ] {
            assert_eq!(found(unsure), Member::Unsure, "{unsure}");
        }
        let deep = format!(r#"{{"usage":1,"data":{}{}}}"#, "[".repeat(200), "]".repeat(200));
        assert_eq!(found(&deep), Member::Unsure);
    }

    /// An embeddings answer as an upstream might write it: keys in any order, any spacing,
    /// numbers in every form JSON allows.
    fn generated_answer(rng: &mut TestRng) -> String {
        const NUMBERS: &[&str] = &[
            "0",
            "-0",
            "0.0023064255",
            "-0.015",
            "1",
            "-12",
            "3e5",
            "1E-7",
            "-2.5e+3",
            "0.5E0",
            "123456789012345678901234567890",
        ];
        const USAGES: &[&str] = &[
            r#""usage":{"prompt_tokens":5,"total_tokens":5}"#,
            r#""usage":{"total_tokens":7,"prompt_tokens":7}"#,
            r#""usage":{"input_tokens":3}"#,
            r#""usage":{}"#,
            r#""usage":null"#,
            r#""usage":{"prompt_tokens":"5"}"#,
            r#""usage":{"prompt_tokens":2.0,"prompt_tokens_details":{"cached_tokens":1}}"#,
            r#""usage":7"#,
        ];
        const SPACES: &[&str] = &["", " ", "\n  ", "\r\n", "\t"];
        let space = |rng: &mut TestRng| SPACES[rng.below(SPACES.len())].to_string();
        let vectors = rng.below(3);
        let mut data = Vec::new();
        for index in 0..vectors {
            let numbers: Vec<String> = (0..rng.below(40))
                .map(|_| format!("{}{}{}", space(rng), NUMBERS[rng.below(NUMBERS.len())], space(rng)))
                .collect();
            data.push(format!(
                r#"{{"object":"embedding",{s}"index":{index},"embedding":[{}]{s}}}"#,
                numbers.join(","),
                s = space(rng)
            ));
        }
        let mut members = vec![
            r#""object":"list""#.to_string(),
            format!(r#""data":[{}]"#, data.join(&format!(",{}", space(rng)))),
            r#""model":"text-embedding-3-small""#.to_string(),
        ];
        // Mostly one usage; sometimes none, two (a duplicate field to serde), or one whose key
        // is escaped (still `usage` to serde).
        for _ in 0..[0, 1, 1, 1, 1, 1, 2][rng.below(7)] {
            let usage = USAGES[rng.below(USAGES.len())].replace(':', &format!("{}:{}", space(rng), space(rng)));
            members.push(if rng.below(8) == 0 { usage.replacen("\"u", "\"\\u0075", 1) } else { usage });
        }
        for i in (1..members.len()).rev() {
            members.swap(i, rng.below(i + 1));
        }
        let joined = members.join(&format!(",{}", space(rng)));
        format!("{}{{{}{joined}{}}}{}", space(rng), space(rng), space(rng), space(rng))
    }

    /// Each byte a mangled answer may gain: the ones that end or start a token.
    const INSERTED: &[u8] = b"0.-e+,]}[{\"\\: x\t\x1f\xc3";

    #[test]
    fn the_scan_reads_what_serde_reads_on_generated_answers() {
        let mut rng = TestRng::new(0x5ce7_ab1e);
        let (mut settled, mut answers) = (0, 0);
        for _ in 0..3000 {
            let answer = generated_answer(&mut rng).into_bytes();
            let mut variants = vec![answer.clone()];
            let at = rng.below(answer.len() + 1);
            variants.push(answer[..at].to_vec());
            let mut inserted = answer.clone();
            inserted.insert(at.min(answer.len()), INSERTED[rng.below(INSERTED.len())]);
            variants.push(inserted);
            let mut removed = answer.clone();
            if at < answer.len() {
                removed.remove(at);
            }
            variants.push(removed);
            for variant in variants {
                answers += 1;
                let fast = super::super::openai::read_embeddings_usage(&variant);
                let reference = super::super::openai::read_embeddings_usage_with_serde(&variant);
                assert_eq!(fast, reference, "{}", String::from_utf8_lossy(&variant));
                settled += usize::from(top_level_member(&variant, b"usage") != Member::Unsure);
            }
        }
        // Most unmangled answers (a quarter of all) are valid, ASCII and without a duplicate or
        // escaped `usage`: the scan settles them itself.
        assert!(settled * 5 >= answers, "the scan settled {settled} of {answers}");
    }
}
