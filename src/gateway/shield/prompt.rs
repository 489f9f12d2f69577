//! System-prompt leak detection.
//!
//! Text is cut into words: maximal runs of alphanumeric characters, lower-cased,
//! with apostrophes and invisible format characters (zero-width space, soft
//! hyphen, BOM) skipped inside a word so that "Don't" == "dont" and a model
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
//!
//! A 64-bit hash collision or a filter false positive could only make two
//! different words compare equal (a spurious removal) or cost a lookup; it can
//! never hide a real leak.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::RemovalKind;

/// Separator bytes allowed between two words of one run. Near-verbatim leaks
/// re-flow whitespace and markup, but a bound is needed so that a stream never
/// holds an unbounded gap back; past it, a run is broken.
const GAP_MAX: usize = 128;
/// Largest accepted `min_leak_words`; also the size of the word-offset ring.
pub(super) const MAX_RUN_WORDS: usize = 64;
/// Bits of the vocabulary filter (8 KiB, stays in cache).
const VOCAB_BITS: usize = 1 << 16;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

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
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(FNV_PRIME);
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
        '\u{2019}' | '\u{02BC}' | '\u{00AD}' | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' => {
            CharClass::Ignorable
        }
        '\u{3040}'..='\u{30FF}'
        | '\u{3400}'..='\u{4DBF}'
        | '\u{4E00}'..='\u{9FFF}'
        | '\u{F900}'..='\u{FAFF}'
        | '\u{20000}'..='\u{2FA1F}' => CharClass::Single,
        _ if c.is_alphanumeric() => CharClass::Word,
        _ => CharClass::Sep,
    }
}

/// ASCII letters and digits lower-cased, every other byte 0 (not part of an ASCII run).
static ASCII_WORD_FOLD: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() {
            table[b] = c.to_ascii_lowercase();
        }
        b += 1;
    }
    table
};

/// A word being read: its folded hash and where it lies.
#[derive(Clone, Copy)]
struct Word {
    hash: u64,
    start: usize,
    end: usize,
    chars: usize,
    /// Longer than any prompt word: can never match, so it breaks a run.
    overlong: bool,
}

impl Word {
    fn begin(start: usize) -> Word {
        Word { hash: FNV_OFFSET, start, end: start, chars: 0, overlong: false }
    }

    fn push(&mut self, c: char, end: usize) {
        if c.is_ascii() {
            self.fold(c.to_ascii_lowercase());
        } else {
            for lc in c.to_lowercase() {
                self.fold(lc);
            }
        }
        self.end = end;
    }

    fn fold(&mut self, c: char) {
        self.hash = (self.hash ^ u64::from(u32::from(c))).wrapping_mul(FNV_PRIME);
        self.chars += 1;
    }

    fn key(&self) -> u64 {
        mix64(self.hash)
    }
}

/// Suffix automaton over the system prompt's word hashes.
pub(super) struct PromptIndex {
    min_words: usize,
    max_chars: usize,
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
            match classify(c) {
                CharClass::Word => cur.get_or_insert_with(|| Word::begin(i)).push(c, i + c.len_utf8()),
                CharClass::Ignorable => {}
                CharClass::Single => {
                    words.extend(cur.take());
                    let mut w = Word::begin(i);
                    w.push(c, i + c.len_utf8());
                    words.push(w);
                }
                CharClass::Sep => words.extend(cur.take()),
            }
        }
        words.extend(cur);
        if words.len() < 3 {
            return None;
        }
        let max_chars = words.iter().map(|w| w.chars).max().unwrap_or(0);
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
            max_chars,
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
    /// (start, end, key) of the last `MAX_RUN_WORDS` words; enough to locate
    /// the first word of a run the moment it reaches `min_words`, and to
    /// replay the words of a bound through the automaton.
    ring: [(usize, usize, u64); MAX_RUN_WORDS],
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
            ring: [(0, 0, 0); MAX_RUN_WORDS],
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
            match classify(c) {
                CharClass::Word => self.word_char(idx, c, o, o + l),
                CharClass::Ignorable => {
                    let Some(w) = &mut self.cur else {
                        self.add_gap(l);
                        i += l;
                        continue;
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
                    self.word_char(idx, c, o, o + l);
                    self.end_word(idx, out);
                }
                CharClass::Sep => {
                    self.end_word(idx, out);
                    self.add_gap(l);
                }
            }
            i += l;
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
    /// path would char by char, in two tight loops per word; stops before the
    /// first non-ASCII byte or apostrophe (or the end), and returns where.
    fn ascii_span(
        &mut self,
        idx: &PromptIndex,
        bytes: &[u8],
        mut i: usize,
        base: usize,
        out: &mut impl FnMut(usize, usize, RemovalKind),
    ) -> usize {
        loop {
            // Letters and digits, folded into the current word (same folding as
            // `Word::fold`: an ASCII byte is its char code) through a table.
            let word_start = i;
            let mut h = self.cur.as_ref().map_or(FNV_OFFSET, |w| w.hash);
            while let Some(&folded) = bytes.get(i).map(|&b| &ASCII_WORD_FOLD[usize::from(b)]) {
                if folded == 0 {
                    break;
                }
                h = (h ^ u64::from(folded)).wrapping_mul(FNV_PRIME);
                i += 1;
            }
            if i > word_start {
                self.extend_word(idx, h, i - word_start, base + word_start, base + i);
            }
            // Spaces and punctuation: what `classify` says of every other ASCII
            // byte but the apostrophe.
            let gap_start = i;
            while bytes.get(i).is_some_and(|&b| ASCII_WORD_FOLD[usize::from(b)] == 0 && b.is_ascii() && b != b'\'') {
                i += 1;
            }
            if i == gap_start {
                return i;
            }
            self.end_word(idx, out);
            self.add_gap(i - gap_start);
        }
    }

    /// Adds `chars` ASCII chars, which fold the word's hash to `hash`, to the
    /// current word (or a new one starting at `start`); they end at `end`.
    fn extend_word(&mut self, idx: &PromptIndex, hash: u64, chars: usize, start: usize, end: usize) {
        if self.cur.is_none() {
            self.cur = Some(Word::begin(start));
            self.gap = 0;
        }
        let Some(w) = &mut self.cur else { return };
        if w.overlong {
            return;
        }
        w.hash = hash;
        w.chars += chars;
        w.end = end;
        if w.chars > idx.max_chars || w.end - w.start > idx.max_raw {
            w.overlong = true;
            self.break_run();
        }
    }

    fn word_char(&mut self, idx: &PromptIndex, c: char, start: usize, end: usize) {
        if self.cur.is_none() {
            self.cur = Some(Word::begin(start));
            self.gap = 0;
        }
        let Some(w) = &mut self.cur else { return };
        if w.overlong {
            return;
        }
        w.push(c, end);
        if w.chars > idx.max_chars || end - w.start > idx.max_raw {
            w.overlong = true;
            self.break_run();
        }
    }

    fn end_word(&mut self, idx: &PromptIndex, out: &mut impl FnMut(usize, usize, RemovalKind)) {
        let Some(w) = self.cur.take() else { return };
        self.last_end = w.end;
        if w.overlong {
            return;
        }
        let key = w.key();
        let prev = self.ring[self.words.wrapping_sub(1) % MAX_RUN_WORDS].2;
        let was_exact = self.bound >= idx.min_words;
        self.bound = idx.run_bound(self.bound, prev, key);
        self.ring[self.words % MAX_RUN_WORDS] = (w.start, w.end, key);
        self.words += 1;
        if self.bound < idx.min_words {
            self.len = 0;
        } else if was_exact {
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
            out(first, w.end, RemovalKind::SystemPrompt);
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
        (self.words - n..self.words).map(|i| self.ring[i % MAX_RUN_WORDS].2)
    }
}
