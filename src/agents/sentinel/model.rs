//! The learned half of the local detector: logistic regression over hashed word and character
//! n-grams of the normalized text (the rules' folding: case, compatibility forms, accents,
//! invisible characters, look-alikes; then leetspeak undone word by word).
//!
//! Features, the contract with the trainer (`scripts/sentinel/train_model.py`, which receives
//! them from the `sentinel_features` example and checks its own reimplementation against them):
//! - the normalized text is cut to its first [`MAX_CHARS`] characters;
//! - every word (`w` tag), every pair of adjacent words (`b`, joined by a space) and every
//!   window of 3, 4 and 5 characters of `" " + text + " "` (`c`) is hashed with 64-bit FNV-1a
//!   over the tag byte then the UTF-8 bytes; the feature index is the hash's top `bits` bits;
//! - each occurrence has value `1 / sqrt(n)` (n: all occurrences), duplicates add up.
//!
//! The score is `sigmoid(bias + scale * Σ q[i] / sqrt(n))` over the quantized weights `q`.
//! Weights file (little-endian): `OMISNTL\0`, u32 version, u32 bits, f32 scale, f32 bias, then
//! `2^bits` i8 weights.

use std::cell::RefCell;

use super::normalize;

/// The weights trained on the whole corpus by `scripts/sentinel/train_model.py`.
const SHIPPED: &[u8] = include_bytes!("model.bin");
const MAGIC: &[u8; 8] = b"OMISNTL\0";
/// Version of the feature definition and file layout above.
pub const FORMAT_VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 4 + 4 + 4;
/// Longer prompts are scored on their start (the rules still read all of it).
pub const MAX_CHARS: usize = 4096;
const CHAR_GRAMS: [usize; 3] = [3, 4, 5];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModelError {
    #[error("not a Sentinel model file (bad magic or too short)")]
    NotAModel,
    #[error("Sentinel model format {0}, this build reads {FORMAT_VERSION}")]
    Version(u32),
    #[error("Sentinel model has {found} weights, {bits} bits need {expected}")]
    Size { bits: u32, found: usize, expected: usize },
}

/// A loaded linear model over hashed n-grams.
pub struct Model {
    bits: u32,
    scale: f32,
    bias: f32,
    weights: Box<[i8]>,
}

thread_local! {
    /// Per-thread buffers: folded text and normalized text.
    static SCRATCH: RefCell<(String, String)> = const { RefCell::new((String::new(), String::new())) };
}

impl Model {
    /// The model compiled into the binary.
    pub fn shipped() -> Result<Model, ModelError> {
        Model::from_bytes(SHIPPED)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Model, ModelError> {
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err(ModelError::NotAModel);
        }
        let word = |at: usize| [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
        let version = u32::from_le_bytes(word(8));
        if version != FORMAT_VERSION {
            return Err(ModelError::Version(version));
        }
        let bits = u32::from_le_bytes(word(12));
        let expected = 1usize.checked_shl(bits).filter(|_| bits <= 24).unwrap_or(usize::MAX);
        let found = bytes.len() - HEADER;
        if found != expected {
            return Err(ModelError::Size { bits, found, expected });
        }
        Ok(Model {
            bits,
            scale: f32::from_le_bytes(word(16)),
            bias: f32::from_le_bytes(word(20)),
            weights: bytes[HEADER..].iter().map(|&b| b as i8).collect(),
        })
    }

    /// Probability that `text` is an injection, 0..1.
    pub fn score(&self, text: &str) -> f32 {
        let score = |normal: &str| {
            let (mut sum, mut n) = (0i32, 0u32);
            for_each_feature(normal, self.bits, |i| {
                sum += i32::from(self.weights[i as usize]);
                n += 1;
            });
            if n == 0 {
                return 0.0; // nothing to judge
            }
            sigmoid(self.bias + self.scale * sum as f32 / (n as f32).sqrt())
        };
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut buffers) => {
                let (folded, normal) = &mut *buffers;
                normalize_into(text, folded, normal);
                score(normal)
            }
            Err(_) => score(&normalized(text)),
        })
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The text the features are computed on: folded, leetspeak undone per word, cut to
/// [`MAX_CHARS`] characters.
pub fn normalized(text: &str) -> String {
    let (mut folded, mut out) = (String::new(), String::new());
    normalize_into(text, &mut folded, &mut out);
    out
}

fn normalize_into(text: &str, folded: &mut String, out: &mut String) {
    normalize::fold_into(text, folded);
    out.clear();
    let mut unleet = String::new();
    for word in folded.split(' ').filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        if normalize::unleet_into(word.as_bytes(), &mut unleet) {
            out.push_str(&unleet);
        } else {
            out.push_str(word);
        }
    }
    if let Some((cut, _)) = out.char_indices().nth(MAX_CHARS) {
        out.truncate(cut);
    }
}

/// Calls `f` with the index (`< 2^bits`) of every feature occurrence of a normalized text.
pub fn for_each_feature(normal: &str, bits: u32, mut f: impl FnMut(u32)) {
    let index = |tag: u8, parts: &[&[u8]]| {
        let mut h = fnv(FNV_OFFSET, &[tag]);
        for p in parts {
            h = fnv(h, p);
        }
        (h >> (64 - bits)) as u32
    };
    let mut previous: Option<&str> = None;
    for word in normal.split(' ').filter(|w| !w.is_empty()) {
        f(index(b'w', &[word.as_bytes()]));
        if let Some(prev) = previous {
            f(index(b'b', &[prev.as_bytes(), b" ", word.as_bytes()]));
        }
        previous = Some(word);
    }
    // Character windows of " text ": byte offsets of each character's start, and the end.
    let padded = format!(" {normal} ");
    let starts: Vec<usize> = padded.char_indices().map(|(i, _)| i).chain([padded.len()]).collect();
    for n in CHAR_GRAMS {
        for w in starts.windows(n + 1) {
            f(index(b'c', &[&padded.as_bytes()[w[0]..w[n]]]));
        }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden vectors written by `scripts/sentinel/train_model.py` from its own hashing.
    #[test]
    fn features_match_the_trainers_golden_vectors() {
        let golden: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/data/sentinel/feature_golden.json")).unwrap();
        let bits = golden["bits"].as_u64().unwrap() as u32;
        let cases = golden["cases"].as_array().unwrap();
        assert!(cases.len() >= 5);
        for case in cases {
            let text = case["text"].as_str().unwrap();
            let normal = normalized(text);
            assert_eq!(normal, case["normalized"].as_str().unwrap(), "{text:?}");
            let mut features = Vec::new();
            for_each_feature(&normal, bits, |i| features.push(u64::from(i)));
            let expected: Vec<u64> = case["features"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
            assert_eq!(features, expected, "{text:?}");
        }
    }

    /// The shipped model is calibrated to flag at most 1% of benign rows from sources it has
    /// not seen, which leaves it confident only on long persona jailbreaks (README: "Quality");
    /// the known attack is such a one, the Giskard corpus row `47ab2b9472a0` (a DAN prompt).
    #[test]
    fn the_shipped_model_loads_and_separates_a_known_attack_from_a_known_benign_prompt() {
        let model = Model::shipped().unwrap();
        let corpus =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sentinel/corpus.jsonl")).unwrap();
        let dan = corpus
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .find(|row| row["id"] == "47ab2b9472a0")
            .unwrap();
        let attack = model.score(dan["text"].as_str().unwrap());
        let benign = model.score("What is a good recipe for a quick vegetable soup for two people?");
        assert!(attack >= super::super::INJECTION_THRESHOLD, "attack {attack}");
        assert!(benign < super::super::INJECTION_THRESHOLD, "benign {benign}");
    }

    #[test]
    fn a_broken_weights_file_is_refused() {
        assert_eq!(Model::from_bytes(b"nope").err(), Some(ModelError::NotAModel));
        let mut bytes = SHIPPED.to_vec();
        bytes[8] = 9;
        assert_eq!(Model::from_bytes(&bytes).err(), Some(ModelError::Version(9)));
        let mut bytes = SHIPPED.to_vec();
        bytes.pop();
        assert!(matches!(Model::from_bytes(&bytes), Err(ModelError::Size { .. })));
    }
}
