//! Pattern detectors: canary, internal hosts, credentials and internal IP
//! addresses. They read folded text (`fold.rs`); the caller maps what they find
//! back to the original.
//!
//! Literal triggers are found with Aho-Corasick and then verified at the hit
//! (token boundaries, body shape): credential prefixes with a case-sensitive
//! automaton (fast prefilter), the canary and host names with an ASCII
//! case-insensitive one. IP addresses have no literal prefix and are found
//! from their `.`/`:` separators with `memchr`, which keeps clean prose fast.
//!
//! Every detector can also run on an unfinished stream window (`eof ==
//! false`). A candidate whose extent or boundary is not decided yet is then
//! reported as *pending* (the caller holds it back). A credential that is
//! already confirmed but may still grow is reported as found plus *open*; the
//! caller releases the removal immediately and keeps removing the token's
//! remaining characters as they arrive (`cont`). Matches therefore never
//! depend on where the stream was cut.

use std::net::Ipv6Addr;

use aho_corasick::{AhoCorasick, MatchKind};

use super::RemovalKind;

/// Minimum bytes of one unbroken token run a stream holds back (longer runs
/// are held at most this long; a literal pattern raises it to fit).
const MIN_MAX_HOLD: usize = 512;
/// Longest textual IPv6 address with a little slack; longer runs of hex
/// digits and colons are not addresses.
const MAX_IPV6_TEXT: usize = 64;

/// Character classes a credential token continues with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Class(u8);

impl Class {
    /// `[A-Za-z0-9_-]`
    const KEY: Class = Class(1);
    /// key characters plus `/` (webhook paths)
    const SLACK: Class = Class(2);
    /// key characters plus `.` (JWT segments)
    const JWT: Class = Class(4);
    /// RFC 6750 b64token: key characters plus `._~+/=`
    const BEARER: Class = Class(8);

    fn union(self, o: Class) -> Class {
        Class(self.0 | o.0)
    }

    fn has(self, b: u8) -> bool {
        if is_key(b) {
            return self.0 != 0;
        }
        (self.0 & Class::SLACK.0 != 0 && b == b'/')
            || (self.0 & Class::JWT.0 != 0 && b == b'.')
            || (self.0 & Class::BEARER.0 != 0 && matches!(b, b'.' | b'~' | b'+' | b'/' | b'='))
    }
}

fn is_key(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// A host-name label character (`_` included to be conservative).
fn is_label(b: u8) -> bool {
    is_key(b)
}

fn is_host(b: u8) -> bool {
    is_label(b) || b == b'.'
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Bytes that can belong to any token-shaped pattern; a stream holds the
/// trailing run of these because the next chunk may complete a match.
fn is_hold(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=' | b':' | b'%')
}

fn run_end(t: &[u8], from: usize, cls: Class) -> usize {
    let mut i = from;
    while t.get(i).is_some_and(|&b| cls.has(b)) {
        i += 1;
    }
    i
}

/// The byte before `i`, looking into the already released text at 0.
fn before(t: &[u8], i: usize, prev: u8) -> u8 {
    match i.checked_sub(1) {
        Some(j) => t.get(j).copied().unwrap_or(prev),
        None => prev,
    }
}

fn set_min(slot: &mut Option<usize>, v: usize) {
    *slot = Some(slot.map_or(v, |p| p.min(v)));
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Secret {
    OpenAi,
    Omi,
    Aws,
    GitHub,
    GitHubPat,
    Slack,
    Jwt,
    Bearer,
    /// A provider key spelled prefix + random letters and digits (Groq `gsk_`, xAI `xai-`,
    /// Hugging Face `hf_`, ...): confirmed by that many letters and digits after the prefix.
    Prefixed(usize),
    /// Google API keys: `AIza` + 35 key characters.
    Google,
    /// Slack bot, user and app tokens (`xoxb-123-456-abc`).
    SlackToken,
}

/// Credential prefixes, matched case-sensitively (the few spellings of
/// "Bearer" are listed): a case-sensitive automaton can use its fast
/// prefilter, which a case-insensitive one over 3-byte patterns cannot.
const SECRET_TRIGGERS: &[(&str, Secret)] = &[
    ("sk-", Secret::OpenAi),
    ("omi_", Secret::Omi),
    ("AKIA", Secret::Aws),
    ("ASIA", Secret::Aws),
    ("ghp_", Secret::GitHub),
    ("gho_", Secret::GitHub),
    ("ghu_", Secret::GitHub),
    ("ghs_", Secret::GitHub),
    ("ghr_", Secret::GitHub),
    ("github_pat_", Secret::GitHubPat),
    ("hooks.slack.com/services/", Secret::Slack),
    ("eyJ", Secret::Jwt),
    ("gsk_", Secret::Prefixed(30)),
    ("xai-", Secret::Prefixed(30)),
    ("pplx-", Secret::Prefixed(30)),
    ("hf_", Secret::Prefixed(30)),
    ("r8_", Secret::Prefixed(30)),
    ("fw_", Secret::Prefixed(20)),
    ("sk_live_", Secret::Prefixed(20)),
    ("sk_test_", Secret::Prefixed(20)),
    ("rk_live_", Secret::Prefixed(20)),
    ("rk_test_", Secret::Prefixed(20)),
    ("whsec_", Secret::Prefixed(20)),
    ("AIza", Secret::Google),
    ("xoxb-", Secret::SlackToken),
    ("xoxp-", Secret::SlackToken),
    ("xoxa-", Secret::SlackToken),
    ("xoxr-", Secret::SlackToken),
    ("xoxs-", Secret::SlackToken),
    ("xapp-", Secret::SlackToken),
    ("Bearer", Secret::Bearer),
    ("bearer", Secret::Bearer),
    ("BEARER", Secret::Bearer),
];

impl Secret {
    fn class(self) -> Class {
        match self {
            Secret::Slack => Class::SLACK,
            Secret::Jwt => Class::JWT,
            Secret::Bearer => Class::BEARER,
            _ => Class::KEY,
        }
    }

    /// Left token boundary: `mysk-…` or `xhooks.slack.com` are not matches.
    fn left_ok(self, b: u8) -> bool {
        match self {
            Secret::Slack => !is_host(b),
            Secret::Bearer => !is_word(b),
            _ => !is_key(b),
        }
    }

    /// Whether the token body seen so far is a credential. Monotonic: once
    /// true it stays true as the body grows, which is what lets a stream
    /// release a confirmed, still-growing token as removed.
    fn confirmed(self, body: &[u8]) -> bool {
        let leading = |f: fn(&u8) -> bool| body.iter().take_while(|b| f(b)).count();
        match self {
            // Random keys mix character kinds; requiring two kinds keeps
            // identifiers like `sk-learn-compatible-estimators` intact.
            Secret::OpenAi | Secret::Google => {
                let kinds = [
                    body.iter().any(u8::is_ascii_digit),
                    body.iter().any(u8::is_ascii_lowercase),
                    body.iter().any(u8::is_ascii_uppercase),
                ];
                body.len() >= 20 && kinds.iter().filter(|k| **k).count() >= 2
            }
            Secret::Prefixed(min) => leading(u8::is_ascii_alphanumeric) >= min,
            Secret::SlackToken => body.len() >= 20 && body.iter().any(u8::is_ascii_digit),
            Secret::Omi => leading(u8::is_ascii_alphanumeric) >= 30,
            Secret::Aws => leading(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) >= 16,
            Secret::GitHub => leading(u8::is_ascii_alphanumeric) >= 30,
            Secret::GitHubPat => body.len() >= 22,
            Secret::Slack => body.len() >= 8,
            Secret::Jwt => {
                let Some(d1) = memchr::memchr(b'.', body) else {
                    return false;
                };
                let rest = &body[d1 + 1..];
                let seg2 = memchr::memchr(b'.', rest).unwrap_or(rest.len());
                d1 >= 10 && rest.starts_with(b"eyJ") && seg2 >= 10
            }
            // "Bearer authentication" is prose; a token has digits, inner
            // capitals or symbols.
            Secret::Bearer => {
                body.len() >= 16
                    && (body.iter().any(u8::is_ascii_digit)
                        || body[1..].iter().any(u8::is_ascii_uppercase)
                        || body.iter().any(|b| b"._~+/-".contains(b)))
            }
        }
    }
}

/// A configured literal: found case-insensitively, overlaps included.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Literal {
    Canary,
    Host,
    /// A configured credential (house key, signing secret, ...), removed wherever it is.
    Secret,
}

/// Separator bytes allowed between two letters of a spaced-out canary (`o m i - c a n`).
const SPACED_GAP_MAX: usize = 16;
/// Letters and digits a canary needs for its spaced-out spelling to be looked for: fewer
/// could be spelled by chance; more are not needed to recognise it.
const SPACED_LETTERS: std::ops::RangeInclusive<usize> = 8..=64;

/// The canary's letters and digits, found whatever separates them: a canary spelled out
/// with spaces, dashes or line breaks between its letters is still the canary.
struct Spaced {
    /// Lower-case ASCII letters and digits of the canary.
    letters: Vec<u8>,
    /// Position in `letters` of the letter searched for first: the one least common in prose,
    /// so that most text is skipped at memchr speed.
    rare: usize,
}

/// Letters and digits from least to most common in English prose (a search starts at the
/// canary's rarest one).
const BY_RARITY: &[u8] = b"zqxjkv9876543210bpygfwmucldrhsnioate";

fn is_letter(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

impl Spaced {
    fn new(canary: &str) -> Option<Spaced> {
        let letters: Vec<u8> = canary.bytes().filter(|b| is_letter(*b)).map(|b| b.to_ascii_lowercase()).collect();
        if !SPACED_LETTERS.contains(&letters.len()) {
            return None;
        }
        let rank = |b: u8| BY_RARITY.iter().position(|&r| r == b).unwrap_or(0);
        let rare = (0..letters.len()).min_by_key(|&i| rank(letters[i]))?;
        Some(Spaced { letters, rare })
    }

    /// Most bytes a spaced canary spans.
    fn max_span(&self) -> usize {
        self.letters.len() * (SPACED_GAP_MAX + 1)
    }

    /// Removes every spaced spelling in `t`; at an unfinished window end, holds what may
    /// still become one.
    fn scan(&self, t: &[u8], eof: bool, pending: &mut Option<usize>, out: &mut impl FnMut(usize, usize, RemovalKind)) {
        let r = self.letters[self.rare];
        for hit in memchr::memchr2_iter(r, r.to_ascii_uppercase(), t) {
            let Some(start) = self.before(t, hit) else { continue };
            match self.after(t, hit + 1) {
                Some(Some(end)) => out(start, end, RemovalKind::Canary),
                Some(None) if !eof => set_min(pending, start),
                _ => {}
            }
        }
        if !eof && let Some(start) = self.partial(t) {
            set_min(pending, start);
        }
    }

    /// Start of the letters before the rare one, read backwards from `hit`.
    fn before(&self, t: &[u8], hit: usize) -> Option<usize> {
        let mut j = hit;
        for &want in self.letters[..self.rare].iter().rev() {
            let mut gap = 0;
            while j > 0 && !is_letter(t[j - 1]) {
                j -= 1;
                gap += 1;
            }
            if j == 0 || gap > SPACED_GAP_MAX || t[j - 1].to_ascii_lowercase() != want {
                return None;
            }
            j -= 1;
        }
        Some(j)
    }

    /// End of the letters after the rare one, read from `from`: `Some(None)` when the text
    /// ends before they do, `None` when they are not there.
    fn after(&self, t: &[u8], from: usize) -> Option<Option<usize>> {
        let mut j = from;
        for &want in &self.letters[self.rare + 1..] {
            let mut gap = 0;
            while j < t.len() && !is_letter(t[j]) {
                j += 1;
                gap += 1;
            }
            if gap > SPACED_GAP_MAX {
                return None;
            }
            if j == t.len() {
                return Some(None);
            }
            if t[j].to_ascii_lowercase() != want {
                return None;
            }
            j += 1;
        }
        Some(Some(j))
    }

    /// Start of the longest spaced beginning of the canary that ends the text.
    fn partial(&self, t: &[u8]) -> Option<usize> {
        // Positions of the text's last letters (at most one fewer than the canary's),
        // latest first, as long as no gap is too wide.
        let mut at = [0usize; *SPACED_LETTERS.end()];
        let mut n = 0;
        let mut j = t.len();
        while n + 1 < self.letters.len() {
            let mut gap = 0;
            while j > 0 && !is_letter(t[j - 1]) {
                j -= 1;
                gap += 1;
            }
            if j == 0 || gap > SPACED_GAP_MAX {
                break;
            }
            j -= 1;
            at[n] = j;
            n += 1;
        }
        (1..=n).rev().find_map(|k| {
            let starts = (0..k).all(|q| t[at[k - 1 - q]].to_ascii_lowercase() == self.letters[q]);
            starts.then_some(at[k - 1])
        })
    }
}

enum Verdict {
    No,
    Pending(usize),
    Found {
        start: usize,
        end: usize,
        kind: RemovalKind,
        /// Confirmed but touching the window end: (trigger start, body
        /// start, class). The trigger may precede `start` ("Bearer " is
        /// kept); from the body start on the credential is one run of
        /// `class`.
        open: Option<(usize, usize, Class)>,
    },
}

/// What a window scan leaves undecided.
#[derive(Debug, Default)]
pub(super) struct Tail {
    /// Earliest window offset that must be held back.
    pub(super) pending: Option<usize>,
    /// A confirmed credential reaching the window end.
    pub(super) open: Option<Open>,
    /// Length of the continued credential at the window start (see `cont`).
    pub(super) cont_run: usize,
}

/// Where an open credential lies in the window.
#[derive(Debug, Clone, Copy)]
pub(super) struct Open {
    /// Start of its trigger: holding from here lets a rescan find it again.
    pub(super) trigger: usize,
    /// Start of the removed range.
    pub(super) start: usize,
    /// From here to the window end the credential is one run of `class`,
    /// so a stream may commit anywhere past it and continue by class.
    pub(super) body: usize,
    pub(super) class: Class,
}

impl Tail {
    fn add_open(&mut self, trigger: usize, start: usize, body: usize, class: Class) {
        self.open = Some(match self.open {
            Some(o) => Open {
                trigger: o.trigger.min(trigger),
                start: o.start.min(start),
                // Both runs reach the window end: past the later body start
                // the text is in both classes.
                body: o.body.max(body),
                class: o.class.union(class),
            },
            None => Open { trigger, start, body, class },
        });
    }
}

/// Up to this many canary, host and secret literals, each is looked for on its own
/// ([`Detector::literals_may_occur`]); beyond, one automaton looks for all.
const FINDERS_UP_TO: usize = 8;

pub(super) struct Detector {
    /// Credential prefixes (case-sensitive; they cannot usefully overlap, so
    /// a non-overlapping search suffices).
    secrets: AhoCorasick,
    /// Canary and host names (ASCII case-insensitive, overlapping so that a
    /// canary containing e.g. a host name is still found). `None` if unset.
    literals: Option<AhoCorasick>,
    literal_kinds: Vec<Literal>,
    spaced: Option<Spaced>,
    /// Literals containing bytes outside `is_hold` (a canary with spaces):
    /// their partial matches at a window end are not covered by the
    /// trailing-run rule and are checked explicitly.
    partials: Vec<Vec<u8>>,
    /// The literals ASCII-lowercased, matched case-sensitively in a lowercased copy of a body
    /// ([`Detector::proves_clean`]): what `literals` finds, but with the SIMD prefilter that an
    /// ASCII case-insensitive automaton cannot use (measured: 20k instructions a chat answer
    /// through `literals`, 0.8k through this, copy included).
    lowered: Option<AhoCorasick>,
    /// The same, one `memmem` searcher each, when there are at most [`FINDERS_UP_TO`].
    lowered_finders: Vec<memchr::memmem::Finder<'static>>,
    /// Whether [`Detector::proves_clean`] may accept a body with `\n`, `\r`, `\t` escapes:
    /// not when a literal holds one of those bytes (the raw escape spells it differently) nor
    /// with a spaced canary (the raw escape's letter would break a spelling's gap).
    plain_escapes: bool,
    max_hold: usize,
    open_tail: usize,
}

impl Detector {
    /// `canary`, `hosts` and `secrets` as the detectors compare them: folded.
    pub(super) fn new(canary: Option<&str>, hosts: &[String], secrets: &[String]) -> Detector {
        let mut literals: Vec<&[u8]> = Vec::new();
        let mut literal_kinds = Vec::new();
        if let Some(c) = canary {
            literals.push(c.as_bytes());
            literal_kinds.push(Literal::Canary);
        }
        for h in hosts {
            literals.push(h.as_bytes());
            literal_kinds.push(Literal::Host);
        }
        for secret in secrets {
            literals.push(secret.as_bytes());
            literal_kinds.push(Literal::Secret);
        }
        let spaced = canary.and_then(Spaced::new);
        let spaced_span = spaced.as_ref().map_or(0, Spaced::max_span);
        let partials = literals.iter().filter(|p| !p.iter().all(|&b| is_hold(b))).map(|p| p.to_vec()).collect();
        let plain_escapes = spaced.is_none() && !literals.iter().any(|p| p.iter().any(u8::is_ascii_control));
        let longest = literals.iter().map(|p| p.len()).max().unwrap_or(0);
        // Building only fails when an automaton would exceed its state-id
        // space (gigabytes of patterns); failing loudly at start-up beats a
        // shield that silently lets everything through.
        // Leftmost-first finds what the standard semantics find here (no
        // trigger occurs inside another), and only leftmost automata get the
        // SIMD (Teddy) prefilter that skips clean prose at memchr speed.
        #[allow(clippy::expect_used, reason = "a static table")]
        let secrets = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .build(SECRET_TRIGGERS.iter().map(|t| t.0))
            .expect("built-in credential prefixes build");
        let lowered_finders = if literals.len() <= FINDERS_UP_TO {
            literals.iter().map(|p| memchr::memmem::Finder::new(&p.to_ascii_lowercase()).into_owned()).collect()
        } else {
            Vec::new()
        };
        #[allow(clippy::expect_used, reason = "fails only past gigabytes of patterns, at start-up (above)")]
        let lowered = (!literals.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .build(literals.iter().map(|p| p.to_ascii_lowercase()))
                .expect("canary and host names are small enough for Aho-Corasick")
        });
        #[allow(clippy::expect_used, reason = "fails only past gigabytes of patterns, at start-up (above)")]
        let literals = (!literals.is_empty()).then(|| {
            AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build(&literals)
                .expect("canary and host names are small enough for Aho-Corasick")
        });
        Detector {
            secrets,
            literals,
            literal_kinds,
            lowered,
            lowered_finders,
            spaced,
            partials,
            plain_escapes,
            max_hold: MIN_MAX_HOLD.max(longest.max(spaced_span) + 64),
            open_tail: MAX_IPV6_TEXT.max(longest + 8),
        }
    }

    pub(super) fn max_hold(&self) -> usize {
        self.max_hold
    }

    /// Bytes at the end of an open credential that a stream keeps in its
    /// window: another match can start inside a credential and run past its
    /// end (`…-bearer <token>`, `…/hooks.slack.com/…`, `sk-…-10.0.0.1`), and
    /// such a start always lies within the last trigger-length bytes (or
    /// within one IPv6 text) of the credential's run.
    pub(super) fn open_tail(&self) -> usize {
        self.open_tail
    }

    /// Whether a whole answer body, JSON or not, provably holds nothing [`Detector::scan`]
    /// would find (at `eof`) in any of its decoded strings nor in the body read as text. Checked
    /// on the raw bytes: when the body is ASCII (folding is then the identity) and its only
    /// escapes are `\n`, `\r`, `\t` (no pattern holds their bytes, see `plain_escapes`), a match
    /// in a decoded string lies in bytes the body holds as they are, so each detector's
    /// necessary condition below, which ignores boundaries and checks, sees it. Exactness:
    /// `tests::prefilter_equals_the_full_walk_on_generated_answers`.
    pub(super) fn proves_clean(&self, raw: &[u8]) -> bool {
        if !raw.is_ascii() {
            return false;
        }
        let mut at = 0;
        while let Some(off) = raw.get(at..).and_then(|rest| memchr::memchr(b'\\', rest)) {
            at += off;
            // `\u0041`, `\/`, `\"`, `\\`, `\b`, `\f` decode to bytes the raw body spells otherwise.
            if !self.plain_escapes || !matches!(raw.get(at + 1), Some(b'n' | b'r' | b't')) {
                return false;
            }
            at += 2;
        }
        // A dotted quad has a digit on both sides of its first dot.
        let digit = |i: usize| raw.get(i).is_some_and(u8::is_ascii_digit);
        if memchr::memchr_iter(b'.', raw).any(|dot| dot > 0 && digit(dot - 1) && digit(dot + 1)) {
            return false;
        }
        // An IPv6 address has two colons with only hex digits and dots between them (a JSON
        // key's colon is followed by a value that has no colon before a quote or comma).
        let v6 = memchr::memchr_iter(b':', raw).any(|colon| {
            let between = raw.get(colon + 1..).unwrap_or_default();
            between.iter().find(|&&b| !(b.is_ascii_hexdigit() || b == b'.')) == Some(&b':')
        });
        if v6 || self.secrets.is_match(raw) {
            return false;
        }
        if self.literals_may_occur(raw) {
            return false;
        }
        // Monotone: a spelling inside a string is one inside the body.
        let mut spelled = false;
        if let Some(spaced) = &self.spaced {
            spaced.scan(raw, true, &mut None, &mut |_, _, _| spelled = true);
        }
        !spelled
    }

    /// Whether some literal occurs in `t`, ASCII case-insensitively: false exactly when the
    /// overlapping, case-insensitive `literals` automaton would find nothing, which it costs
    /// about 15k instructions an answer to show (its rare-byte prefilter stops at every `k`
    /// or `-` of prose). A few literals are looked for one by one in a lowered copy with
    /// `memmem` (its prefilter tests two bytes of the needle at once); many, with `lowered`.
    /// Test: `tests::the_literals_prefilter_never_hides_a_match`.
    pub(super) fn literals_may_occur(&self, t: &[u8]) -> bool {
        let Some(ac) = &self.lowered else { return false };
        let lower = t.to_ascii_lowercase();
        if self.lowered_finders.is_empty() {
            ac.is_match(&lower)
        } else {
            self.lowered_finders.iter().any(|f| f.find(&lower).is_some())
        }
    }

    /// Scans `text`. `prev` is the byte just before it (0 at the start of an
    /// answer), `cont` the class of a credential continuing from before it,
    /// `eof` whether the text is complete. Decided removals go to `out`
    /// (offsets into `text`); the undecided remainder is returned.
    pub(super) fn scan(
        &self,
        text: &str,
        prev: u8,
        cont: Option<Class>,
        eof: bool,
        mut out: impl FnMut(usize, usize, RemovalKind),
    ) -> Tail {
        let t = text.as_bytes();
        let mut tail = Tail::default();
        if let Some(cls) = cont {
            let r = run_end(t, 0, cls);
            out(0, r, RemovalKind::Secret);
            tail.cont_run = r;
            if r == t.len() && !eof {
                tail.add_open(0, 0, 0, cls);
            }
        }
        let mut apply = |v: Verdict, tail: &mut Tail| match v {
            Verdict::No => {}
            Verdict::Pending(s) => set_min(&mut tail.pending, s),
            Verdict::Found { start, end, kind, open } => {
                out(start, end, kind);
                if let Some((trigger, body, cls)) = open {
                    tail.add_open(trigger, start, body, cls);
                }
            }
        };
        for m in self.secrets.find_iter(t) {
            if let Some(&(_, k)) = SECRET_TRIGGERS.get(m.pattern().as_usize()) {
                apply(secret(k, t, m.start(), m.end(), prev, eof), &mut tail);
            }
        }
        if let Some(ac) = &self.literals
            && self.literals_may_occur(t)
        {
            for m in ac.find_overlapping_iter(t) {
                let v = match self.literal_kinds.get(m.pattern().as_usize()) {
                    Some(Literal::Canary) => {
                        Verdict::Found { start: m.start(), end: m.end(), kind: RemovalKind::Canary, open: None }
                    }
                    Some(Literal::Host) => host(t, m.start(), m.end(), prev, eof),
                    Some(Literal::Secret) => {
                        Verdict::Found { start: m.start(), end: m.end(), kind: RemovalKind::Secret, open: None }
                    }
                    None => Verdict::No,
                };
                apply(v, &mut tail);
            }
        }
        if let Some(spaced) = &self.spaced {
            spaced.scan(t, eof, &mut tail.pending, &mut out);
        }
        scan_ipv4(t, prev, eof, &mut tail.pending, &mut out);
        scan_ipv6(t, prev, eof, &mut tail.pending, &mut out);
        if eof {
            return tail;
        }
        for lit in &self.partials {
            let longest = lit.len().saturating_sub(1).min(t.len());
            if let Some(k) = (1..=longest).rev().find(|&k| t[t.len() - k..].eq_ignore_ascii_case(&lit[..k])) {
                set_min(&mut tail.pending, t.len() - k);
            }
        }
        // The last token may still grow into (or be the left part of) a
        // match. An open credential already covers the end, so no hold then.
        if tail.open.is_none() {
            let mut a = t.len();
            while a > 0 && is_hold(t[a - 1]) && t.len() - a < self.max_hold {
                a -= 1;
            }
            if a < t.len() {
                set_min(&mut tail.pending, a);
            }
        }
        // Bound the hold: a candidate unconfirmed after `max_hold` bytes is
        // given up (documented limit) rather than buffering without end.
        let floor = t.len().saturating_sub(self.max_hold);
        if let Some(p) = &mut tail.pending
            && *p < floor
        {
            let mut f = floor;
            while !text.is_char_boundary(f) {
                f += 1;
            }
            *p = f;
        }
        tail
    }
}

/// A configured host name on label boundaries, extended left over any
/// sub-domain labels (`api.db.internal.example`).
fn host(t: &[u8], s: usize, e: usize, prev: u8, eof: bool) -> Verdict {
    let b = before(t, s, prev);
    if is_label(b) {
        return Verdict::No;
    }
    let mut a = s;
    if b == b'.' {
        while a > 0 && is_host(t[a - 1]) {
            a -= 1;
        }
    }
    match t.get(e) {
        None if !eof => return Verdict::Pending(a),
        Some(&n) if is_label(n) => return Verdict::No,
        _ => {}
    }
    Verdict::Found { start: a, end: e, kind: RemovalKind::InternalHost, open: None }
}

fn secret(k: Secret, t: &[u8], s: usize, e: usize, prev: u8, eof: bool) -> Verdict {
    if !k.left_ok(before(t, s, prev)) {
        return Verdict::No;
    }
    let body_start = match k {
        Secret::Jwt => s,
        Secret::Bearer => {
            let mut p = e;
            while matches!(t.get(p), Some(b' ' | b'\t')) {
                p += 1;
            }
            if p == e {
                // "Bearer" at the window end may still be followed by a token.
                return if e == t.len() && !eof { Verdict::Pending(s) } else { Verdict::No };
            }
            p
        }
        _ => e,
    };
    let cls = k.class();
    let end = run_end(t, body_start, cls);
    let touching = end == t.len() && !eof;
    if k.confirmed(&t[body_start..end]) {
        Verdict::Found {
            // "Bearer " itself is harmless and keeps the sentence readable.
            start: if k == Secret::Bearer { body_start } else { s },
            end,
            kind: RemovalKind::Secret,
            open: touching.then_some((s, body_start, cls)),
        }
    } else if touching {
        Verdict::Pending(s)
    } else {
        Verdict::No
    }
}

fn internal_v4([a, b, c, d]: [u8; 4]) -> bool {
    a == 10
        || (a == 172 && (16..=31).contains(&b))
        || (a == 192 && b == 168)
        || a == 127
        || (a == 169 && b == 254)
        || (a == 100 && (64..=127).contains(&b))
        || (a, b, c, d) == (0, 0, 0, 0)
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if ip.is_loopback() || s[0] & 0xffc0 == 0xfe80 || s[0] & 0xfe00 == 0xfc00 {
        return true;
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return internal_v4(v4.octets());
    }
    // Deprecated IPv4-compatible form `::a.b.c.d` (but not `::` or `::1`).
    if s[..6] == [0; 6] && (s[6] != 0 || s[7] > 1) {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        return internal_v4([a, b, c, d]);
    }
    false
}

enum Quad {
    No,
    Pending,
    Addr([u8; 4], usize),
}

/// Parses a dotted quad starting at `d`: exactly four 1-3 digit octets
/// <= 255, not followed by more digits, letters or `.digit` (which would make
/// it a longer version number).
fn parse_quad(t: &[u8], d: usize, eof: bool) -> Quad {
    let open_end = |i: usize| i == t.len() && !eof;
    let mut i = d;
    let mut oct = [0u8; 4];
    for (k, slot) in oct.iter_mut().enumerate() {
        let st = i;
        let mut v: u32 = 0;
        while i - st < 3 {
            match t.get(i) {
                Some(b) if b.is_ascii_digit() => {
                    v = v * 10 + u32::from(b - b'0');
                    i += 1;
                }
                _ => break,
            }
        }
        if i == st || t.get(i).is_some_and(u8::is_ascii_digit) || v > 255 {
            return if open_end(i) { Quad::Pending } else { Quad::No };
        }
        if open_end(i) {
            return Quad::Pending;
        }
        *slot = v as u8;
        if k < 3 {
            if t.get(i) != Some(&b'.') {
                return Quad::No;
            }
            i += 1;
        }
    }
    match t.get(i) {
        Some(&b) if is_word(b) => Quad::No,
        Some(b'.') => match t.get(i + 1) {
            Some(n) if n.is_ascii_digit() => Quad::No,
            None if !eof => Quad::Pending,
            _ => Quad::Addr(oct, i),
        },
        _ => Quad::Addr(oct, i),
    }
}

fn scan_ipv4(
    t: &[u8],
    prev: u8,
    eof: bool,
    pending: &mut Option<usize>,
    out: &mut impl FnMut(usize, usize, RemovalKind),
) {
    let mut from = 0;
    while let Some(off) = memchr::memchr(b'.', &t[from..]) {
        let dot = from + off;
        from = dot + 1;
        if dot == 0 || !t[dot - 1].is_ascii_digit() {
            continue;
        }
        let mut d = dot - 1;
        while d > 0 && t[d - 1].is_ascii_digit() {
            d -= 1;
        }
        // `v1.2.3.4`, `a_10.0.0.1` and the 2nd..4th part of a longer dotted
        // number are not address starts.
        let b = before(t, d, prev);
        if dot - d > 3 || is_word(b) || b == b'.' {
            continue;
        }
        match parse_quad(t, d, eof) {
            Quad::No => {}
            Quad::Pending => set_min(pending, d),
            Quad::Addr(oct, end) => {
                if internal_v4(oct) {
                    out(d, end, RemovalKind::InternalAddress);
                }
                from = end;
            }
        }
    }
}

/// Parses an IPv6 candidate, forgiving one trailing sentence `.` or `:`.
fn parse_v6(s: &[u8]) -> Option<(Ipv6Addr, usize)> {
    let s = std::str::from_utf8(s).ok()?;
    let trimmed = s.trim_end_matches('.');
    let colon = s.strip_suffix(':').filter(|c| !c.ends_with(':'));
    [Some(s), Some(trimmed), colon].into_iter().flatten().find_map(|c| c.parse::<Ipv6Addr>().ok().map(|a| (a, c.len())))
}

fn scan_ipv6(
    t: &[u8],
    prev: u8,
    eof: bool,
    pending: &mut Option<usize>,
    out: &mut impl FnMut(usize, usize, RemovalKind),
) {
    let is_v6 = |b: u8| b.is_ascii_hexdigit() || b == b':' || b == b'.';
    let mut from = 0;
    while let Some(off) = memchr::memchr(b':', &t[from..]) {
        let colon = from + off;
        let mut a = colon;
        while a > 0 && is_v6(t[a - 1]) && colon - a <= MAX_IPV6_TEXT {
            a -= 1;
        }
        let mut b = colon + 1;
        while b < t.len() && is_v6(t[b]) && b - a <= MAX_IPV6_TEXT {
            b += 1;
        }
        from = b;
        // Identifiers (`Vec::new`, `self::x`) fail the left boundary.
        if b - a > MAX_IPV6_TEXT || is_word(before(t, a, prev)) {
            continue;
        }
        if b == t.len() && !eof {
            set_min(pending, a);
            continue;
        }
        if t.get(b).is_some_and(|&n| is_word(n)) {
            continue;
        }
        let Some((ip, n)) = parse_v6(&t[a..b]) else {
            continue;
        };
        let mut end = a + n;
        // Zone id (`fe80::1%eth0`) goes with the address.
        if end == b && t.get(b) == Some(&b'%') {
            let z = run_end(t, b + 1, Class::KEY);
            if z == t.len() && !eof {
                set_min(pending, a);
                continue;
            }
            if z > b + 1 {
                end = z;
            }
        }
        if internal_v6(ip) {
            out(a, end, RemovalKind::InternalAddress);
        }
    }
}
