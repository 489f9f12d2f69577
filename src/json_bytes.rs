//! JSON read from bytes as `serde_json::from_slice` reads it, with the UTF-8 check done once.
//!
//! `from_slice` checks every string it decodes for UTF-8 on its own, a call of ~100
//! instructions even for a three-letter key: 2.8k of a chat request's instructions went there
//! (the request and the answer, 28 strings; `bench/instructions.sh`). Checked once for the whole
//! document, the bytes are read as a `str`, whose strings serde takes without checking them
//! again. A document that is no UTF-8 is read by `from_slice` itself, so the value and the error
//! are the same either way (`tests::reads_as_from_slice_reads`).

use serde::Deserialize;

/// `serde_json::from_slice(bytes)`, the same value or error.
pub fn from_bytes<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::TestRng;
    use serde_json::Value;

    /// Documents with every kind of string serde decodes or refuses (escapes, surrogate
    /// pairs, lone surrogates, multi-byte characters, bytes that are no UTF-8 inside and
    /// outside strings, control bytes), cut short or not: the same value or the same error.
    #[test]
    fn reads_as_from_slice_reads() {
        const PIECES: &[&[u8]] = &[
            br#"{"a":"#,
            br#""plain""#,
            "\"héllo 🚀 日本\"".as_bytes(),
            br#""\ud83d\ude80""#,
            br#""\ud800""#,
            br#""\udc00x""#,
            b"\"\xff\xfe\"",
            b"\"\xc3\"",
            b"\"a\x01b\"",
            br#""caf\u00e9 \n \" \\""#,
            b"\xe2\x82\xac",
            b"[1,-2.5e3,true,null]",
            b",",
            b"}",
            b"]",
            b"{",
            b"1e400",
        ];
        let mut rng = TestRng::new(0x2026_1208_0b17);
        let (mut same_value, mut same_error) = (0, 0);
        for _ in 0..20_000 {
            let mut doc = Vec::new();
            for _ in 0..1 + rng.below(8) {
                doc.extend_from_slice(PIECES[rng.below(PIECES.len())]);
            }
            let slice = serde_json::from_slice::<Value>(&doc).map_err(|e| e.to_string());
            assert_eq!(
                from_bytes::<Value>(&doc).map_err(|e| e.to_string()),
                slice,
                "{:?}",
                String::from_utf8_lossy(&doc)
            );
            if slice.is_ok() {
                same_value += 1;
            } else {
                same_error += 1;
            }
        }
        assert!(same_value > 500 && same_error > 5_000, "{same_value} read, {same_error} refused");
    }
}
