//! Output shield: removes from model answers anything that would leak the
//! business's secrets before the answer reaches the client.
//!
//! Every detector compares text folded ([`fold`]): invisible code points
//! dropped, compatibility forms (fullwidth, mathematical letters), accents and
//! Cyrillic/Greek look-alike letters undone. What it finds is mapped back to the
//! original bytes, so a removal cuts the original text and a clean answer is
//! passed on byte for byte.
//!
//! What is removed (each removal is replaced by a marker, `[REDACTED]` by default):
//! * runs of at least `min_leak_words` consecutive words of the system prompt,
//!   compared case-, whitespace- and punctuation-insensitively ([`prompt`]);
//! * the configured canary token, anywhere, ASCII case-insensitively, also
//!   spelled out with up to 16 separator bytes between its letters and digits;
//! * the configured secrets (house keys, signing secrets), literally, anywhere;
//! * internal IPv4/IPv6 addresses (private, loopback, link-local, CGNAT,
//!   unique-local, IPv4-mapped forms). A `:port` after an address is kept:
//!   ports alone reveal nothing and keeping them keeps sentences readable;
//! * configured internal host names and their sub-domains;
//! * credentials by shape: `sk-` provider keys, Groq `gsk_`, xAI, Perplexity,
//!   Hugging Face, Replicate, Fireworks, Google `AIza`, Stripe and Slack tokens,
//!   `omi_` keys, `Bearer` tokens, AWS access key ids, GitHub tokens, Slack
//!   webhook URLs and JWTs.
//!
//! Design: every detector reports byte ranges into one [`Redactions`] set, so
//! the whole-text path ([`Shield::sanitize`]) and the streaming path
//! ([`SseShield`]) share exactly the same detection code and give the same
//! result; the streaming path only adds the bookkeeping that decides how
//! much trailing text must still be held back (see `sse.rs`).
//!
//! Known limits:
//! * only verbatim-word leaks are found: paraphrases, translations, typos,
//!   spelled-out or encoded (base64, reversed) copies are not;
//! * a run is broken by more than 128 bytes of separators between two words;
//! * in a stream, a token-shaped candidate that is still unconfirmed after
//!   512 bytes of one unbroken token (a JWT header that long, a host name
//!   with more than ~500 bytes of sub-domain labels) is given up;
//! * IPv4 addresses are dotted quads only (no `10.1`, hex or integer forms);
//! * an SSE event that is not JSON is sanitized as plain text on its own, so a
//!   leak split across several such events is not seen;
//! * in a stream, only the streamed text of its format continues across events
//!   (chat `choices[].delta`, a Responses `*.delta` event's `delta`, a Messages
//!   content block's `text`/`thinking`/`partial_json`); every other string of an
//!   event (a vendor field, a Responses `.done` event's whole text) is sanitized
//!   on its own;
//! * look-alikes are the Cyrillic and Greek letters of `crate::lookalike`, not
//!   the whole Unicode confusables list; a spaced-out spelling is looked for for
//!   the canary only (8 to 64 letters and digits), not for secrets.

mod detect;
mod event_shape;
mod fold;
pub mod guard;
mod json;
mod prompt;
mod sse;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use fold::FoldedView;
use secrecy::{ExposeSecret, SecretString};

pub use sse::{SseShield, StreamFormat};

/// Marker used when the configuration does not name one.
const DEFAULT_MARKER: &str = "[REDACTED]";
/// `min_leak_words` used when the configuration leaves it at 0.
const DEFAULT_MIN_LEAK_WORDS: usize = 8;
/// Fewer words than this would flag ordinary phrases ("of the") as leaks.
const MIN_LEAK_WORDS_FLOOR: usize = 3;
/// A configured secret shorter than this could be an ordinary word; it is not looked for.
const MIN_SECRET_CHARS: usize = 8;

/// `s` as the detectors compare it.
fn fold(s: &str) -> String {
    FoldedView::new(s).text.into_owned()
}

#[derive(Debug, Clone, Default)]
pub struct ShieldConfig {
    /// The proprietary system prompt placed first in every upstream request.
    pub system_prompt: Option<String>,
    /// A canary token embedded in the system prompt.
    pub canary: Option<String>,
    /// Internal host names (`db.internal.example`) or suffixes (`*.corp.local`);
    /// sub-domains of a listed name are removed too.
    pub internal_hosts: Vec<String>,
    /// Shortest run of system-prompt words that counts as a leak; 0 means 8.
    /// Clamped to 3..=64. A prompt with fewer words than this is matched in
    /// full; one with fewer than 3 words is not matched at all.
    pub min_leak_words: usize,
    /// Replacement text; `[REDACTED]` when unset.
    pub marker: Option<String>,
    /// Credentials removed literally wherever they appear (house keys, signing secrets);
    /// values shorter than 8 characters are ignored.
    pub secrets: Vec<SecretString>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovalKind {
    SystemPrompt,
    Canary,
    InternalAddress,
    InternalHost,
    Secret,
}

impl RemovalKind {
    const ALL: [RemovalKind; 5] = [
        RemovalKind::SystemPrompt,
        RemovalKind::Canary,
        RemovalKind::InternalAddress,
        RemovalKind::InternalHost,
        RemovalKind::Secret,
    ];

    /// One bit per kind, so a merged removal can remember every reason it has.
    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// Immutable detection tables, built once and shared (via `Arc`) by every
/// request; all per-request state lives in the caller or in [`SseShield`].
pub struct Shield {
    marker: String,
    prompt: Option<prompt::PromptIndex>,
    detector: detect::Detector,
}

impl Shield {
    pub fn new(cfg: ShieldConfig) -> Shield {
        let min_words = match cfg.min_leak_words {
            0 => DEFAULT_MIN_LEAK_WORDS,
            n => n.clamp(MIN_LEAK_WORDS_FLOOR, prompt::MAX_RUN_WORDS),
        };
        let prompt = cfg.system_prompt.as_deref().and_then(|p| prompt::PromptIndex::build(p, min_words));
        let canary = cfg.canary.as_deref().map(str::trim).filter(|c| !c.is_empty()).map(fold);
        let hosts: Vec<String> = cfg
            .internal_hosts
            .iter()
            .filter_map(|h| {
                // "*.corp.local" and ".corp.local" mean the same as "corp.local":
                // sub-domains of every listed name are matched anyway.
                let h = h.trim().trim_start_matches("*.").trim_start_matches('.');
                (!h.is_empty()).then(|| fold(h).to_ascii_lowercase())
            })
            .collect();
        let mut secrets: Vec<String> = cfg
            .secrets
            .iter()
            .map(|s| s.expose_secret().trim())
            .filter(|s| s.chars().count() >= MIN_SECRET_CHARS)
            .map(fold)
            .collect();
        secrets.sort_unstable();
        secrets.dedup();
        Shield {
            marker: cfg.marker.unwrap_or_else(|| DEFAULT_MARKER.to_owned()),
            prompt,
            detector: detect::Detector::new(canary.as_deref(), &hosts, &secrets),
        }
    }

    /// Returns the text with every removal replaced by the marker, plus one
    /// kind per (removal, reason); `None` when there is nothing to remove.
    /// Clean text that folds to itself (ASCII, most prose) costs no heap allocation.
    pub fn sanitize(&self, text: &str) -> Option<(String, Vec<RemovalKind>)> {
        // Each detector reports in text order but they run one after the
        // other, so collect first and sort once (merging inserts would be
        // quadratic on, say, a log dump full of addresses).
        let mut found: Vec<Redaction> = Vec::new();
        let mut sink = |start, end, k: RemovalKind| found.push(Redaction { start, end, kinds: k.bit() });
        if let Some(idx) = &self.prompt {
            let mut st = prompt::PromptState::new();
            st.feed(idx, text, 0, &mut sink);
            st.finish(idx, &mut sink);
        }
        let view = FoldedView::new(text);
        self.detector.scan(&view.text, 0, None, true, |s, e, k| sink(view.start(s), view.end(e), k));
        if found.is_empty() {
            return None;
        }
        let reds = Redactions::from_unsorted(found);
        let mut kinds = Vec::new();
        let out = render(text, 0, &reds, &self.marker, &mut kinds);
        Some((out, kinds))
    }

    /// Sanitizes a whole (non-streamed) JSON response body; see `json.rs`.
    pub fn sanitize_json_body(&self, body: &[u8]) -> Option<(Vec<u8>, Vec<RemovalKind>)> {
        // Most answers hold nothing to remove: proving it from the raw bytes skips the walk.
        // Prompt runs have no such proof (any prompt word could start one).
        if self.prompt.is_none() && self.detector.proves_clean(body) {
            return None;
        }
        json::sanitize_body(self, body)
    }

    /// Per-response streaming state for an SSE stream in `format`.
    pub fn sse_stream(self: &Arc<Self>, format: StreamFormat) -> SseShield {
        SseShield::new(Arc::clone(self), format)
    }

    /// Worst-case number of bytes of trailing answer text the stream holds
    /// back. The real hold-back is data-dependent and usually a few words:
    /// only text that could still start a leak is held.
    pub fn holdback(&self) -> usize {
        let prompt = self.prompt.as_ref().map_or(0, |p| p.max_hold());
        prompt.max(self.detector.max_hold())
    }

    /// Plain-text fallback for stream events and bodies that are not JSON.
    fn sanitize_lossy(&self, raw: &[u8]) -> Option<(Vec<u8>, Vec<RemovalKind>)> {
        let text = String::from_utf8_lossy(raw);
        self.sanitize(&text).map(|(s, k)| (s.into_bytes(), k))
    }
}

/// One removal: a byte range of a text, with the reasons it was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Redaction {
    start: usize,
    end: usize,
    kinds: u8,
}

/// Sorted, disjoint, non-touching removals. Touching or overlapping ranges
/// are merged so that one contiguous removal gets a single marker, whichever
/// detectors found its pieces.
#[derive(Debug, Default)]
struct Redactions {
    items: Vec<Redaction>,
}

impl Redactions {
    fn from_unsorted(mut found: Vec<Redaction>) -> Redactions {
        found.sort_unstable_by_key(|r| r.start);
        let mut items: Vec<Redaction> = Vec::with_capacity(found.len());
        for r in found {
            match items.last_mut() {
                Some(last) if r.start <= last.end => {
                    last.end = last.end.max(r.end);
                    last.kinds |= r.kinds;
                }
                _ => items.push(r),
            }
        }
        Redactions { items }
    }

    fn add(&mut self, start: usize, end: usize, kind: RemovalKind) {
        if start >= end {
            return;
        }
        let i = self.items.partition_point(|r| r.end < start);
        let mut merged = Redaction { start, end, kinds: kind.bit() };
        let mut j = i;
        while let Some(r) = self.items.get(j) {
            if r.start > merged.end {
                break;
            }
            merged.start = merged.start.min(r.start);
            merged.end = merged.end.max(r.end);
            merged.kinds |= r.kinds;
            j += 1;
        }
        self.items.splice(i..j, std::iter::once(merged));
    }

    /// Forgets removals that end before `offset`. A removal ending exactly at
    /// `offset` is kept: a continuing leak may still extend it, and it must
    /// then not get a second marker.
    fn prune(&mut self, offset: usize) {
        let n = self.items.partition_point(|r| r.end < offset);
        self.items.drain(..n);
    }

    fn overlaps(&self, start: usize, end: usize) -> bool {
        let i = self.items.partition_point(|r| r.end <= start);
        self.items.get(i).is_some_and(|r| r.start < end)
    }
}

/// Renders `text`, which sits at offset `base` of the whole answer: removed
/// bytes are dropped and the marker is written where a removal *starts*, so a
/// removal spanning several stream events yields one marker in the first.
fn render(text: &str, base: usize, reds: &Redactions, marker: &str, kinds: &mut Vec<RemovalKind>) -> String {
    let end = base + text.len();
    let mut out = String::with_capacity(text.len());
    let mut cur = base;
    let first = reds.items.partition_point(|r| r.end <= base);
    for r in &reds.items[first..] {
        if r.start >= end {
            break;
        }
        let a = r.start.max(base);
        out.push_str(text.get(cur - base..a - base).unwrap_or_default());
        if r.start >= base {
            out.push_str(marker);
            kinds.extend(RemovalKind::ALL.into_iter().filter(|k| r.kinds & k.bit() != 0));
        }
        cur = r.end.min(end);
    }
    out.push_str(text.get(cur - base..).unwrap_or_default());
    out
}
