//! What the detectors compare: text folded character by character, so that invisible and
//! look-alike characters hide nothing, with the way back to the original bytes so that a
//! removal cuts the original text and everything else reaches the client as it was.
//!
//! A character folds to: nothing when it is default-ignorable (zero-width characters,
//! joiners, bidi marks, variation selectors, fillers, tags); else its compatibility
//! decomposition (the K of NFKC: fullwidth and mathematical letters, ligatures, circled
//! letters) without combining marks (accents, overlays), with Cyrillic and Greek look-alike
//! letters as the Latin letter of the same case. ASCII folds to itself. Folding one character
//! never depends on its neighbours, so a text cut anywhere between characters folds to the
//! folds of its pieces: a stream and the whole text are compared alike.

use std::borrow::Cow;

use unicode_normalization::char::{decompose_compatible, is_combining_mark};

use crate::lookalike::{confusable, confusable_capital, is_invisible};

/// Calls `out` with each character `c` folds to, in order (none for an invisible one).
pub(super) fn fold_char(c: char, mut out: impl FnMut(char)) {
    if c.is_ascii() {
        out(c);
        return;
    }
    match LATIN.get((c as usize).wrapping_sub(LATIN_FIRST)) {
        Some(Latin::Itself) => out(c),
        Some(Latin::One(d)) => out(*d),
        _ => fold_slowly(c, out),
    }
}

/// [`fold_char`] by the Unicode tables.
fn fold_slowly(c: char, mut out: impl FnMut(char)) {
    if is_invisible(c) {
        return;
    }
    decompose_compatible(c, |d| {
        if !is_combining_mark(d) {
            out(confusable(d).or_else(|| confusable_capital(d)).unwrap_or(d));
        }
    });
}

/// The fold of one character of the Latin-1 and Latin Extended blocks, where most
/// non-ASCII letters of European text are: a table lookup instead of a decomposition.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Latin {
    Itself,
    One(char),
    Other,
}

const LATIN_FIRST: usize = 0x80;
const LATIN_END: usize = 0x250;

static LATIN: std::sync::LazyLock<Vec<Latin>> = std::sync::LazyLock::new(|| {
    (LATIN_FIRST..LATIN_END)
        .map(|u| {
            let c = char::from_u32(u as u32).unwrap_or('\u{FFFD}');
            let mut folded = Vec::new();
            fold_slowly(c, |d| folded.push(d));
            match folded[..] {
                [d] if d == c => Latin::Itself,
                [d] => Latin::One(d),
                _ => Latin::Other,
            }
        })
        .collect()
});

/// Whether `c` folds to itself alone.
fn folds_to_itself(c: char) -> bool {
    if let Some(latin) = LATIN.get((c as usize).wrapping_sub(LATIN_FIRST)) {
        return *latin == Latin::Itself;
    }
    let mut n = 0;
    let mut same = true;
    fold_char(c, |d| {
        n += 1;
        same &= d == c;
    });
    same && n == 1
}

/// End of the run of ASCII bytes from `at`, eight bytes at a time.
fn ascii_run_end(bytes: &[u8], mut at: usize) -> usize {
    use crate::swar::{HIGH, leading, load};
    while let Some(group) = load(bytes, at) {
        if group & HIGH != 0 {
            return at + leading(group & HIGH) as usize;
        }
        at += 8;
    }
    let rest = bytes.get(at..).unwrap_or_default();
    at + rest.iter().position(|b| !b.is_ascii()).unwrap_or(rest.len())
}

/// One character whose fold differs from it: its bytes in the folded and the original text.
#[derive(Debug, Clone, Copy)]
struct Change {
    folded: (usize, usize),
    original: (usize, usize),
}

/// A text folded for matching. Borrowed (and no map kept) when it folds to itself, as ASCII
/// and most prose do.
pub(super) struct FoldedView<'a> {
    pub(super) text: Cow<'a, str>,
    /// The characters that changed, in text order; between them bytes map one to one.
    changes: Vec<Change>,
}

impl<'a> FoldedView<'a> {
    pub(super) fn new(original: &'a str) -> FoldedView<'a> {
        let mut view = FoldedView { text: Cow::Borrowed(original), changes: Vec::new() };
        if original.is_ascii() {
            return view;
        }
        let mut folded: Option<String> = None;
        let mut i = 0;
        while i < original.len() {
            let ascii_end = ascii_run_end(original.as_bytes(), i);
            if let Some(f) = &mut folded {
                f.push_str(&original[i..ascii_end]);
            }
            i = ascii_end;
            let Some(c) = original.get(i..).and_then(|rest| rest.chars().next()) else { break };
            let end = i + c.len_utf8();
            if folds_to_itself(c) {
                if let Some(f) = &mut folded {
                    f.push(c);
                }
            } else {
                let f = folded.get_or_insert_with(|| {
                    let mut f = String::with_capacity(original.len());
                    f.push_str(&original[..i]);
                    f
                });
                let start = f.len();
                fold_char(c, |d| f.push(d));
                view.changes.push(Change { folded: (start, f.len()), original: (i, end) });
            }
            i = end;
        }
        if let Some(f) = folded {
            view.text = Cow::Owned(f);
        }
        view
    }

    /// Original offset where a removal starting at folded offset `at` starts: the start of
    /// the character the folded byte comes from; invisible characters before it are kept.
    pub(super) fn start(&self, at: usize) -> usize {
        let i = self.changes.partition_point(|c| c.folded.1 <= at);
        match self.changes.get(i) {
            Some(c) if c.folded.0 <= at => c.original.0,
            _ => self.one_to_one(i, at),
        }
    }

    /// Original offset where a removal ending at folded offset `at` ends: the end of the
    /// character its last folded byte comes from; invisible characters after it are kept.
    pub(super) fn end(&self, at: usize) -> usize {
        let i = self.changes.partition_point(|c| c.folded.1 < at);
        match self.changes.get(i) {
            Some(c) if c.folded.0 < at => c.original.1,
            _ => self.one_to_one(i, at),
        }
    }

    /// Folded offset of the original character boundary `at`.
    pub(super) fn folded_offset(&self, at: usize) -> usize {
        let i = self.changes.partition_point(|c| c.original.1 <= at);
        match self.changes.get(i) {
            Some(c) if c.original.0 < at => c.folded.1,
            _ => match i.checked_sub(1).and_then(|j| self.changes.get(j)) {
                Some(c) => c.folded.1 + (at - c.original.1),
                None => at,
            },
        }
    }

    /// `at` in the unchanged stretch after the first `i` changes.
    fn one_to_one(&self, i: usize, at: usize) -> usize {
        match i.checked_sub(1).and_then(|j| self.changes.get(j)) {
            Some(c) => c.original.1 + (at - c.folded.1),
            None => at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(s: &str) -> String {
        FoldedView::new(s).text.into_owned()
    }

    #[test]
    fn invisible_and_look_alike_characters_fold_away() {
        assert_eq!(fold("se\u{200B}cr\u{200E}et\u{2063}\u{FE0F}\u{034F}\u{3164}"), "secret");
        assert_eq!(fold("ｓｋ－ｐｒｏｊ"), "sk-proj");
        assert_eq!(fold("АКІА аnd 𝐁𝐞𝐚𝐫𝐞𝐫"), "AKIA and Bearer");
        assert_eq!(fold("café N\u{0336}e\u{0336}v\u{0336}"), "cafe Nev");
        let clean = "plain ASCII, 東京 and emoji 🚀";
        assert!(matches!(FoldedView::new(clean).text, Cow::Borrowed(_)));
    }

    #[test]
    fn the_latin_table_is_the_unicode_fold() {
        for u in LATIN_FIRST..LATIN_END {
            let c = char::from_u32(u as u32).expect("no surrogates here");
            let (mut fast, mut slow) = (String::new(), String::new());
            fold_char(c, |d| fast.push(d));
            fold_slowly(c, |d| slow.push(d));
            assert_eq!(fast, slow, "{c:?}");
        }
    }

    #[test]
    fn the_view_is_the_char_by_char_fold() {
        // The eight-byte skip over ASCII and the borrowed view against folding every character.
        let atoms = ["a", "Bc", " ", "12345678", "é", "ｘ", "\u{200B}", "東", "🚀", "А", "\u{FB01}", "ǅ", "\u{0301}"];
        let mut rng = crate::test_rng::TestRng::new(0x9e37_79b9_7f4a_7c15);
        for len in 0..200 {
            let text: String = (0..len % 40).map(|_| atoms[rng.below(atoms.len())]).collect();
            let mut want = String::new();
            text.chars().for_each(|c| fold_char(c, |d| want.push(d)));
            let view = FoldedView::new(&text);
            assert_eq!(view.text, want, "{text:?}");
            // The whole folded text maps to the whole original but invisible characters at its ends.
            let folds_away = |s: &str| s.chars().all(|c| FoldedView::new(&c.to_string()).text.is_empty());
            if !view.text.is_empty() {
                let (a, b) = (view.start(0), view.end(view.text.len()));
                assert!(folds_away(&text[..a]) && folds_away(&text[b..]), "{text:?}");
            }
        }
    }

    #[test]
    fn removals_map_back_to_whole_original_characters() {
        let original = "a\u{200B}ｂc\u{FB01}x d";
        let view = FoldedView::new(original);
        assert_eq!(view.text, "abcfix d");
        // Every folded range maps to original character boundaries, and back.
        for s in 0..=view.text.len() {
            for e in s + 1..=view.text.len() {
                let (a, b) = (view.start(s), view.end(e));
                assert!(original.is_char_boundary(a) && original.is_char_boundary(b) && a < b, "{s}..{e}");
            }
        }
        // "b" is the fullwidth letter; the zero-width space before it is not part of it.
        assert_eq!(&original[view.start(1)..view.end(2)], "ｂ");
        // Half a ligature removes all of it.
        assert_eq!(&original[view.start(4)..view.end(5)], "\u{FB01}");
        assert_eq!(&original[view.start(0)..view.end(8)], original);
        // Original character boundaries: after the zero-width space, after the fullwidth b.
        assert_eq!((view.folded_offset(1), view.folded_offset(4), view.folded_offset(7)), (1, 1, 2));
        assert_eq!(view.folded_offset(original.len()), view.text.len());
    }
}
