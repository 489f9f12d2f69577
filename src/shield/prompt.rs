//! System-prompt leak detection.
//!
//! Text is folded (`fold.rs`: invisible characters dropped, compatibility forms,
//! accents and look-alike letters undone) and cut into words: maximal runs of
//! alphanumeric characters, lower-cased, with apostrophes and characters that
//! fold to nothing skipped inside a word so that "Don't" == "dont" and a model
//! cannot dodge the check by sprinkling zero-width spaces. Everything else
//! (whitespace, punctuation, markdown) only separates words, which makes the
//! comparison case-, whitespace- and punctuation-insensitive. Han and kana
//! characters are one word each because those scripts do not use spaces.
//!
//! Each word becomes a 64-bit hash, and the prompt's word sequence is indexed
//! by a suffix automaton. Feeding the answer's words through the automaton
//! gives, after every word, the length of the longest run of answer words
//! ending there that occurs verbatim in the prompt (the "matching statistic").
//! Every run of at least `min_words` is removed: the removal set is the union
//! of all such runs, which does not depend on how the text was chunked, and
//! the text that must be held back in a stream is exactly the current run.
//! Unlike fixed-size shingles this finds the whole matched run in one pass
//! and needs no re-verification.
//!
//! Most answer words share no run with the prompt, so the automaton is only
//! consulted near one: every adjacent pair of words in a leaked run is also an
//! adjacent pair of the prompt, and two 8 KiB bit filters (prompt words and
//! prompt word pairs) bound the run ending at each word. Only once that bound
//! reaches `min_words` are its words fed through the automaton, which then
//! steps word by word until the bound drops again. Under load the automaton's
//! transition map (hundreds of KB) misses the cache; the filters do not.
//! Only prompt words are kept (in a ring of the last ones): any other word
//! ends every run.
//!
//! ASCII text is cut, folded and hashed eight bytes at a time: a word that
//! lies within one eight-byte load (most do) is hashed in registers, and the
//! hash is defined on eight-byte groups of the folded spelling so that the char
//! path and words cut by stream chunks hash the same.
//!
//! A 64-bit hash collision or a filter false positive could only make two
//! different words compare equal (a spurious removal) or cost a lookup; it can
//! never hide a real leak.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::RemovalKind;
use super::fold::fold_char;

/// Separator bytes allowed between two words of one run. Near-verbatim leaks
/// re-flow whitespace and markup, but a bound is needed so that a stream never
/// holds an unbounded gap back; past it, a run is broken.
const GAP_MAX: usize = 128;
/// Largest accepted `min_leak_words`; also the size of the word-offset ring.
pub(super) const MAX_RUN_WORDS: usize = 64;
/// Bits of the vocabulary filter (8 KiB, stays in cache).
const VOCAB_BITS: usize = 1 << 16;

/// Final avalanche so that word hashes are usable as hash-map keys directly.
fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Filter bit of a word hash: its top 16 bits (already avalanched by `mix64`).
fn vocab_bit(w: u64) -> usize {
    (w >> (64 - VOCAB_BITS.trailing_zeros())) as usize
}

/// Filter bit of an ordered pair of word hashes.
fn pair_bit(prev: u64, w: u64) -> usize {
    vocab_bit(mix64(prev.rotate_left(21) ^ w))
}

fn filter_has(filter: &[u64], bit: usize) -> bool {
    filter.get(bit / 64).is_some_and(|v| v & (1 << (bit % 64)) != 0)
}

/// Cheap hasher for keys that are already well-mixed word hashes; SipHash
/// would dominate the per-word cost of the hot path.
#[derive(Default, Clone, Copy)]
pub(super) struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        mix64(self.0)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = absorb(self.0, u64::from(b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.rotate_left(29) ^ n;
    }
}

type Mix = BuildHasherDefault<MixHasher>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum CharClass {
    Word,
    Ignorable,
    Single,
    Sep,
}

fn classify(c: char) -> CharClass {
    if c.is_ascii() {
        return if c.is_ascii_alphanumeric() {
            CharClass::Word
        } else if c == '\'' {
            CharClass::Ignorable
        } else {
            CharClass::Sep
        };
    }
    match c {
        // Invisible characters never get here: they fold to nothing.
        '\u{2019}' | '\u{02BC}' => CharClass::Ignorable,
        '\u{3040}'..='\u{30FF}'
        | '\u{3400}'..='\u{4DBF}'
        | '\u{4E00}'..='\u{9FFF}'
        | '\u{F900}'..='\u{FAFF}'
        | '\u{20000}'..='\u{2FA1F}' => CharClass::Single,
        _ if c.is_alphanumeric() => CharClass::Word,
        _ => CharClass::Sep,
    }
}

/// Flags, among eight bytes, of the ASCII letters and of the ASCII letters and
/// digits (word bytes), and of the separators: every other ASCII byte but the
/// apostrophe, as [`classify`] says. Non-ASCII bytes and apostrophes are in
/// none of the three: they leave the eight-byte path.
fn classify8(group: u64) -> (u64, u64, u64) {
    use crate::swar::{HIGH, each, equal, within};
    let non_ascii = group & HIGH;
    let ascii = group & !HIGH;
    let alpha = within(ascii | each(0x20), b'a', b'z') & !non_ascii;
    let word = alpha | (within(ascii, b'0', b'9') & !non_ascii);
    let sep = HIGH & !(word | non_ascii | equal(ascii, b'\''));
    (alpha, word, sep)
}

/// One step of the word hash over eight folded bytes.
fn absorb(hash: u64, group: u64) -> u64 {
    (hash ^ group).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(31)
}

/// A word being read: the hash of its folded spelling and where it lies.
///
/// The folded spelling is the UTF-8 of the lower-cased characters. It is hashed
/// eight bytes at a time, whatever pieces it arrives in, so the eight-byte
/// ASCII path, the char path and a word cut by a stream chunk all agree.
#[derive(Clone, Copy)]
struct Word {
    /// Hash of the complete eight-byte groups.
    hash: u64,
    /// Folded bytes after the last complete group, the first in the lowest byte.
    pending: u64,
    /// Folded bytes so far.
    len: usize,
    start: usize,
    end: usize,
    /// Longer than any prompt word: can never match, so it breaks a run.
    overlong: bool,
}

impl Word {
    fn begin(start: usize) -> Word {
        Word { hash: 0, pending: 0, len: 0, start, end: start, overlong: false }
    }

    /// Folds `c` into the word (its end is the caller's to set).
    fn push(&mut self, c: char) {
        if c.is_ascii() {
            self.push_folded(u64::from(c.to_ascii_lowercase() as u8), 1);
        } else {
            for lc in c.to_lowercase() {
                let mut utf8 = [0u8; 8];
                let n = lc.encode_utf8(&mut utf8[..4]).len();
                self.push_folded(u64::from_le_bytes(utf8), n as u32);
            }
        }
    }

    /// Appends the low `n` bytes (1 to 8) of `group`; its other bytes are 0.
    fn push_folded(&mut self, group: u64, n: u32) {
        let filled = (self.len % 8) as u32;
        self.pending |= group << (8 * filled);
        if filled + n >= 8 {
            self.hash = absorb(self.hash, self.pending);
            self.pending = if filled == 0 { 0 } else { group >> (8 * (8 - filled)) };
        }
        self.len += n as usize;
    }

    fn key(&self) -> u64 {
        word_key(self.hash, self.pending, self.len)
    }
}

/// Key of a word of `len` folded bytes, from its [`Word`] hash and pending
/// bytes. One multiplication spreads every bit into the top ones the filters
/// use (`mix64` is for keys that were not multiplied yet).
fn word_key(hash: u64, pending: u64, len: usize) -> u64 {
    (absorb(hash, pending) ^ len as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9)
}

/// Suffix automaton over the system prompt's word hashes.
pub(super) struct PromptIndex {
    min_words: usize,
    /// Folded bytes of the longest prompt word.
    max_len: usize,
    /// Raw byte cap of one word (ignorables and case folding may make the
    /// answer's spelling longer than the prompt's).
    max_raw: usize,
    /// Bit filter over the prompt's word hashes: most answer words are not
    /// prompt words, and one bit test is much cheaper than a map lookup.
    /// A false hit only costs the automaton lookups that would follow anyway.
    vocab: Vec<u64>,
    /// Bit filter over the prompt's adjacent word pairs (see the module docs).
    pairs: Vec<u64>,
    links: Vec<u32>,
    lens: Vec<u32>,
    next: HashMap<(u32, u64), u32, Mix>,
}

impl PromptIndex {
    /// `None` when the prompt has fewer than 3 words: nothing meaningful to
    /// match. A prompt shorter than `min_words` is matched in full.
    pub(super) fn build(prompt: &str, min_words: usize) -> Option<PromptIndex> {
        let mut words: Vec<Word> = Vec::new();
        let mut cur: Option<Word> = None;
        for (i, c) in prompt.char_indices() {
            let end = i + c.len_utf8();
            fold_char(c, |c| match classify(c) {
                CharClass::Word => {
                    let w = cur.get_or_insert_with(|| Word::begin(i));
                    w.push(c);
                    w.end = end;
                }
                CharClass::Ignorable => {}
                CharClass::Single => {
                    words.extend(cur.take());
                    let mut w = Word::begin(i);
                    w.push(c);
                    w.end = end;
                    words.push(w);
                }
                CharClass::Sep => words.extend(cur.take()),
            });
        }
        words.extend(cur);
        if words.len() < 3 {
            return None;
        }
        let max_len = words.iter().map(|w| w.len).max().unwrap_or(0);
        let max_bytes = words.iter().map(|w| w.end - w.start).max().unwrap_or(0);
        let keys: Vec<u64> = words.iter().map(Word::key).collect();

        // Textbook online construction; per-state maps during the build
        // because cloning a state copies its transitions.
        let mut lens: Vec<u32> = vec![0];
        let mut links: Vec<Option<u32>> = vec![None];
        let mut trans: Vec<HashMap<u64, u32, Mix>> = vec![HashMap::default()];
        let mut last = 0u32;
        for &w in &keys {
            let cur = lens.len() as u32;
            lens.push(lens[last as usize] + 1);
            links.push(None);
            trans.push(HashMap::default());
            let mut p = Some(last);
            while let Some(pi) = p {
                if trans[pi as usize].contains_key(&w) {
                    break;
                }
                trans[pi as usize].insert(w, cur);
                p = links[pi as usize];
            }
            match p {
                None => links[cur as usize] = Some(0),
                Some(pi) => {
                    let q = trans[pi as usize][&w];
                    if lens[pi as usize] + 1 == lens[q as usize] {
                        links[cur as usize] = Some(q);
                    } else {
                        let clone = lens.len() as u32;
                        lens.push(lens[pi as usize] + 1);
                        links.push(links[q as usize]);
                        trans.push(trans[q as usize].clone());
                        let mut p = Some(pi);
                        while let Some(pj) = p {
                            if trans[pj as usize].get(&w) != Some(&q) {
                                break;
                            }
                            trans[pj as usize].insert(w, clone);
                            p = links[pj as usize];
                        }
                        links[q as usize] = Some(clone);
                        links[cur as usize] = Some(clone);
                    }
                }
            }
            last = cur;
        }
        let mut vocab = vec![0u64; VOCAB_BITS / 64];
        let mut pairs = vec![0u64; VOCAB_BITS / 64];
        let set = |filter: &mut [u64], bit: usize| filter[bit / 64] |= 1 << (bit % 64);
        for &k in &keys {
            set(&mut vocab, vocab_bit(k));
        }
        for pair in keys.windows(2) {
            set(&mut pairs, pair_bit(pair[0], pair[1]));
        }
        let mut next = HashMap::with_capacity_and_hasher(keys.len() * 2, Mix::default());
        for (s, map) in trans.into_iter().enumerate() {
            for (w, t) in map {
                next.insert((s as u32, w), t);
            }
        }
        Some(PromptIndex {
            min_words: min_words.min(words.len()),
            max_len,
            max_raw: 4 * max_bytes + 16,
            vocab,
            pairs,
            links: links.into_iter().map(|l| l.unwrap_or(0)).collect(),
            lens,
            next,
        })
    }

    /// Worst-case bytes a stream holds for this prompt: `min_words - 1` words
    /// and gaps of an unconfirmed run plus the word being read and the gap
    /// after a confirmed run.
    pub(super) fn max_hold(&self) -> usize {
        self.min_words * (self.max_raw + GAP_MAX)
    }

    /// An upper bound of the matching statistic after word `w`, from the bound
    /// `bound` after the word `prev` before it.
    fn run_bound(&self, bound: usize, prev: u64, w: u64) -> usize {
        if !filter_has(&self.vocab, vocab_bit(w)) {
            0
        } else if bound > 0 && filter_has(&self.pairs, pair_bit(prev, w)) {
            bound + 1
        } else {
            1
        }
    }

    /// The matching statistic (state, length) after feeding `words` from the
    /// root: exact whenever no run longer than `words` can end at the last one.
    fn match_over(&self, words: impl Iterator<Item = u64>) -> (u32, usize) {
        let (mut state, mut len) = (0, 0);
        for w in words {
            self.step(&mut state, &mut len, w);
        }
        (state, len)
    }

    /// Extends the matching statistic by one word (amortised O(1)).
    fn step(&self, state: &mut u32, len: &mut usize, w: u64) {
        if !filter_has(&self.vocab, vocab_bit(w)) {
            *state = 0;
            *len = 0;
            return;
        }
        loop {
            if let Some(&n) = self.next.get(&(*state, w)) {
                *state = n;
                *len += 1;
                return;
            }
            if *state == 0 {
                *len = 0;
                return;
            }
            *state = self.links[*state as usize];
            *len = self.lens[*state as usize] as usize;
        }
    }
}

/// Per-text matching state; resumable, so a stream can feed it piece by
/// piece. Offsets are absolute positions in the whole answer text.
pub(super) struct PromptState {
    /// Upper bound of the matching statistic (see the module docs). `state`
    /// and `len` are the automaton's (exact) only while it is at least
    /// `min_words`; below, `len` is 0 and the exact length is computed on
    /// demand from the ring.
    bound: usize,
    state: u32,
    len: usize,
    /// The last word completed a run of `min_words` or more.
    in_run: bool,
    /// (start, key) of the last `MAX_RUN_WORDS` words; enough to locate
    /// the first word of a run the moment it reaches `min_words`, and to
    /// replay the words of a bound through the automaton.
    ring: [(usize, u64); MAX_RUN_WORDS],
    words: usize,
    cur: Option<Word>,
    gap: usize,
    last_end: usize,
}

impl PromptState {
    pub(super) fn new() -> PromptState {
        PromptState {
            bound: 0,
            state: 0,
            len: 0,
            in_run: false,
            ring: [(0, 0); MAX_RUN_WORDS],
            words: 0,
            cur: None,
            gap: 0,
            last_end: 0,
        }
    }

    /// Feeds `text`, which starts at absolute offset `base`.
    pub(super) fn feed(
        &mut self,
        idx: &PromptIndex,
        text: &str,
        base: usize,
        out: &mut impl FnMut(usize, usize, RemovalKind),
    ) {
        let bytes = text.as_bytes();
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            // Fast path: ASCII words and separators (most of any English answer).
            if b.is_ascii() && b != b'\'' {
                i = self.ascii_span(idx, bytes, i, base, out);
                continue;
            }
            let c = if b.is_ascii() {
                char::from(b)
            } else {
                match text.get(i..).and_then(|s| s.chars().next()) {
                    Some(c) => c,
                    None => break,
                }
            };
            let l = c.len_utf8();
            let o = base + i;
            if c.is_ascii() {
                self.step(idx, classify(c), c, o, l, out);
            } else {
                // Matching sees the folded characters, each at the original's place;
                // one that folds to nothing (invisible, a lone accent) is skipped in a word.
                let mut visible = false;
                fold_char(c, |f| {
                    visible = true;
                    self.step(idx, classify(f), f, o, l, out);
                });
                if !visible {
                    self.step(idx, CharClass::Ignorable, c, o, l, out);
                }
            }
            i += l;
        }
    }

    /// Reads the (folded) character `c` of class `class`, which stands at `o..o + l` of the answer.
    fn step(
        &mut self,
        idx: &PromptIndex,
        class: CharClass,
        c: char,
        o: usize,
        l: usize,
        out: &mut impl FnMut(usize, usize, RemovalKind),
    ) {
        match class {
            CharClass::Word => self.extend_word(idx, o, o + l, |w| w.push(c)),
            CharClass::Ignorable => {
                let Some(w) = &mut self.cur else {
                    self.add_gap(l);
                    return;
                };
                // Only the raw length grows: a word padded with
                // thousands of zero-width spaces must not be held forever.
                if o + l - w.start > idx.max_raw && !w.overlong {
                    w.overlong = true;
                    self.break_run();
                }
            }
            CharClass::Single => {
                self.end_word(idx, out);
                self.extend_word(idx, o, o + l, |w| w.push(c));
                self.end_word(idx, out);
            }
            CharClass::Sep => {
                self.end_word(idx, out);
                self.add_gap(l);
            }
        }
    }

    /// End of text: the word being read is complete.
    pub(super) fn finish(&mut self, idx: &PromptIndex, out: &mut impl FnMut(usize, usize, RemovalKind)) {
        self.end_word(idx, out);
        self.break_run();
        self.gap = 0;
    }

    /// Earliest absolute offset that may still become part of a removal and
    /// so must not be released yet; `None` when nothing needs holding.
    pub(super) fn pending(&self, idx: &PromptIndex) -> Option<usize> {
        if self.in_run {
            // A confirmed run is already removed up to `last_end`; the gap
            // after it is held so that a continuing run removes it too.
            return Some(self.last_end);
        }
        // Only the exact run is held, so that the stream waits no longer than
        // the automaton says it must.
        let len = if self.bound >= idx.min_words { self.len } else { idx.match_over(self.last_keys(self.bound)).1 };
        if len > 0 {
            return Some(self.ring[(self.words - len) % MAX_RUN_WORDS].0);
        }
        match &self.cur {
            Some(w) if !w.overlong => Some(w.start),
            _ => None,
        }
    }

    /// Feeds the ASCII words and separators from `bytes[i]` on, as the general
    /// path would char by char, eight bytes at a time; stops before the first
    /// non-ASCII byte or apostrophe (or the end), and returns where.
    fn ascii_span(
        &mut self,
        idx: &PromptIndex,
        bytes: &[u8],
        mut i: usize,
        base: usize,
        out: &mut impl FnMut(usize, usize, RemovalKind),
    ) -> usize {
        use crate::swar::{HIGH, leading, load_prefix};
        loop {
            let (group, avail) = load_prefix(bytes, i);
            let (alpha, word, sep) = classify8(group);
            // The word bytes before the first other one (padding bytes are not
            // word bytes), then the separators after them.
            let stop = !word & HIGH;
            let in_word = ((stop & stop.wrapping_neg()) >> 7).wrapping_sub(1);
            let letters = leading(stop);
            let gap = leading(!sep & HIGH & !in_word).min(avail) - letters;
            if letters > 0 {
                // Letters get 0x20 (lower case); digits keep theirs.
                let folded = (group | (alpha >> 2)) & in_word;
                let (start, end) = (base + i, base + i + letters as usize);
                i += letters as usize;
                if self.cur.is_none() && gap > 0 {
                    // The whole word is in this group (most words are).
                    self.gap = 0;
                    self.last_end = end;
                    if letters as usize > idx.max_len {
                        self.break_run();
                    } else {
                        self.complete(idx, start, end, word_key(0, folded, letters as usize), out);
                    }
                } else {
                    self.extend_word(idx, start, end, |w| w.push_folded(folded, letters));
                    if gap == 0 {
                        if letters == 8 {
                            continue;
                        }
                        return i;
                    }
                    self.end_word(idx, out);
                }
            } else if gap == 0 {
                return i;
            } else {
                self.end_word(idx, out);
            }
            self.add_gap(gap as usize);
            i += gap as usize;
        }
    }

    /// Adds to the current word (or a new one starting at `start`) what `add`
    /// folds into it, read up to `end`; a word grown past any prompt word's
    /// length can never match, so it breaks the run.
    fn extend_word(&mut self, idx: &PromptIndex, start: usize, end: usize, add: impl FnOnce(&mut Word)) {
        if self.cur.is_none() {
            self.cur = Some(Word::begin(start));
            self.gap = 0;
        }
        let Some(w) = &mut self.cur else { return };
        if w.overlong {
            return;
        }
        add(w);
        w.end = end;
        if w.len > idx.max_len || w.end - w.start > idx.max_raw {
            w.overlong = true;
            self.break_run();
        }
    }

    fn end_word(&mut self, idx: &PromptIndex, out: &mut impl FnMut(usize, usize, RemovalKind)) {
        let Some(w) = self.cur.take() else { return };
        self.last_end = w.end;
        if !w.overlong {
            self.complete(idx, w.start, w.end, w.key(), out);
        }
    }

    /// Records the word `start..end` with `key`: the common case (it ends no
    /// run of `min_words`) inline, the rest in [`Self::settle`].
    #[inline(always)]
    fn complete(
        &mut self,
        idx: &PromptIndex,
        start: usize,
        end: usize,
        key: u64,
        out: &mut impl FnMut(usize, usize, RemovalKind),
    ) {
        let prev = self.ring[self.words.wrapping_sub(1) % MAX_RUN_WORDS].1;
        let was_exact = self.bound >= idx.min_words;
        self.bound = idx.run_bound(self.bound, prev, key);
        if self.bound == 0 {
            // Not a prompt word: no run goes through it, so the ring need not keep it.
            self.len = 0;
            self.in_run = false;
            return;
        }
        self.ring[self.words % MAX_RUN_WORDS] = (start, key);
        self.words += 1;
        if self.bound < idx.min_words {
            self.len = 0;
            self.in_run = false;
        } else {
            self.settle(idx, was_exact, key, end, out);
        }
    }

    /// The bound of the run ending at the word just recorded reaches
    /// `min_words`: the automaton says how long the run really is.
    #[inline(never)]
    fn settle(
        &mut self,
        idx: &PromptIndex,
        was_exact: bool,
        key: u64,
        end: usize,
        out: &mut impl FnMut(usize, usize, RemovalKind),
    ) {
        if was_exact {
            idx.step(&mut self.state, &mut self.len, key);
        } else {
            // The bound grows one word at a time, so it is `min_words` (at most
            // `MAX_RUN_WORDS`) here: the ring still holds all its words.
            (self.state, self.len) = idx.match_over(self.last_keys(self.bound));
        }
        self.in_run = self.len >= idx.min_words;
        if self.in_run {
            // Runs overlap or continue each other, so marking the last
            // `min_words` words is enough: the union covers the whole run.
            let first = self.ring[(self.words - idx.min_words) % MAX_RUN_WORDS].0;
            out(first, end, RemovalKind::SystemPrompt);
        }
    }

    fn add_gap(&mut self, l: usize) {
        self.gap += l;
        if self.gap > GAP_MAX {
            self.break_run();
        }
    }

    fn break_run(&mut self) {
        self.bound = 0;
        self.state = 0;
        self.len = 0;
        self.in_run = false;
    }

    /// Keys of the last `n` words (at most `MAX_RUN_WORDS`), oldest first.
    fn last_keys(&self, n: usize) -> impl Iterator<Item = u64> + '_ {
        let n = n.min(MAX_RUN_WORDS).min(self.words);
        (self.words - n..self.words).map(|i| self.ring[i % MAX_RUN_WORDS].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_byte_classes_are_the_char_classes() {
        use crate::swar::HIGH;
        for group in crate::swar::probe_groups() {
            let (alpha, word, sep) = classify8(u64::from_le_bytes(group));
            let flags = |f: &dyn Fn(u8) -> bool| u64::from_le_bytes(group.map(|b| if f(b) { 0x80 } else { 0 }));
            let class = |b: u8| classify(char::from(b));
            assert_eq!(alpha, flags(&|b| b.is_ascii_alphabetic()), "{group:?}");
            assert_eq!(word, flags(&|b| class(b) == CharClass::Word), "{group:?}");
            assert_eq!(sep, flags(&|b| class(b) == CharClass::Sep), "{group:?}");
        }
        // Non-ASCII bytes belong to no class: they leave the eight-byte path.
        let (alpha, word, sep) = classify8(u64::from_le_bytes(*b"a\xc3\xa9b'c d"));
        let at = |positions: &[u32]| positions.iter().fold(0u64, |f, p| f | (0x80 << (8 * p)));
        assert_eq!((alpha, word, sep), (at(&[0, 3, 5, 7]), at(&[0, 3, 5, 7]), at(&[6])));
        assert_eq!(alpha & !HIGH, 0);
    }

    #[test]
    fn a_word_hashes_the_same_however_it_is_cut() {
        for word in ["a", "Policy", "ABCDEFG", "Refunds8", "internationalization", "Überprüfung", "ΣΟΦΊΑ", "naïve2024x"]
        {
            let mut by_char = Word::begin(0);
            for c in word.chars() {
                by_char.push(c);
            }
            let folded: Vec<u8> = word.to_lowercase().into_bytes();
            for cut in 1..=8 {
                let mut by_group = Word::begin(0);
                for piece in folded.chunks(cut) {
                    let mut group = [0u8; 8];
                    group[..piece.len()].copy_from_slice(piece);
                    by_group.push_folded(u64::from_le_bytes(group), piece.len() as u32);
                }
                assert_eq!(by_group.key(), by_char.key(), "{word} cut every {cut} bytes");
                assert_eq!(by_group.len, folded.len(), "{word}");
            }
        }
        let key = |w: &str| {
            let mut word = Word::begin(0);
            w.chars().for_each(|c| word.push(c));
            word.key()
        };
        assert_ne!(key("policy"), key("policies"));
        assert_ne!(key("abcdefgh"), key("abcdefg"));
        assert_ne!(key("ab"), key("ba"));
    }
}
