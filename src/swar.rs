//! Byte tests on eight bytes at once ("SIMD within a register"), for the text
//! scans that see every byte of every prompt and answer (the Sentinel's folding
//! and word split, the shield's JSON walk and word hashing). A `u64` holds eight bytes, the
//! first in its lowest byte; a flag set is 0x80 in each flagged byte.
//!
//! The range and equality tests need every byte below 0x80: then no addition
//! carries into the next byte, and each byte's answer is exact.

/// Every byte `b`.
pub const fn each(b: u8) -> u64 {
    u64::from_le_bytes([b; 8])
}

/// 0x80 in every byte.
pub const HIGH: u64 = each(0x80);

/// The eight bytes at `bytes[at..at + 8]`, or `None` past the end.
pub fn load(bytes: &[u8], at: usize) -> Option<u64> {
    let group: [u8; 8] = bytes.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(group))
}

/// The up to eight bytes from `bytes[at..]`, zero bytes after them, and how
/// many there are.
pub fn load_prefix(bytes: &[u8], at: usize) -> (u64, u32) {
    if let Some(group) = load(bytes, at) {
        return (group, 8);
    }
    let rest = bytes.get(at..).unwrap_or_default();
    let mut group = [0u8; 8];
    group[..rest.len()].copy_from_slice(rest);
    (u64::from_le_bytes(group), rest.len() as u32)
}

/// Flags the bytes of `v` (each below 0x80) within `lo..=hi` (`hi` below 0x7f).
pub const fn within(v: u64, lo: u8, hi: u8) -> u64 {
    v.wrapping_add(each(0x80 - lo)) & !v.wrapping_add(each(0x7f - hi)) & HIGH
}

/// Flags the bytes of `v` (each below 0x80) equal to `c` (below 0x80).
pub const fn equal(v: u64, c: u8) -> u64 {
    let y = v ^ each(c);
    !(y.wrapping_add(each(0x7f)) | y) & HIGH
}

/// Flags the bytes of any `v` below `n` (`n` up to 0x80); exact only up to the
/// first flagged byte (a borrow may flag bytes above it), which is all
/// [`leading`] reads, and exact in whether any byte is flagged.
pub const fn below_up_to_first(v: u64, n: u8) -> u64 {
    v.wrapping_sub(each(n)) & !v & HIGH
}

/// Flags the zero bytes of any `v`, as [`below_up_to_first`] does.
pub const fn zero_up_to_first(v: u64) -> u64 {
    below_up_to_first(v, 1)
}

/// How many bytes come before the first flagged one (8: none is flagged).
pub const fn leading(flags: u64) -> u32 {
    flags.trailing_zeros() / 8
}

/// Each flagged byte as 0xff, the others 0.
pub const fn widen(flags: u64) -> u64 {
    (flags >> 7).wrapping_mul(0xff)
}

/// The low `n` bytes (`n` up to 8).
pub const fn low_bytes(n: u32) -> u64 {
    if n >= 8 { u64::MAX } else { (1u64 << (8 * n)) - 1 }
}

/// Where the JSON string literal whose opening quote is `s[at]` ends: just past its closing
/// quote, every escape checked as serde_json checks it (a `\u` takes four hex digits), no raw
/// control byte; `None` if there is no such literal. The shield's walk and the providers' skim
/// read every string of every answer with it.
pub fn json_string_end(s: &[u8], mut at: usize) -> Option<usize> {
    if s.get(at) != Some(&b'"') {
        return None;
    }
    at += 1;
    loop {
        let rest = s.get(at..)?;
        let stop = json_string_stop(rest)?;
        at += stop + 1;
        match rest[stop] {
            b'"' => return Some(at),
            b'\\' => {}
            _ => return None,
        }
        match *s.get(at)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at += 1,
            b'u' if s.get(at + 1..at + 5)?.iter().all(u8::is_ascii_hexdigit) => at += 5,
            _ => return None,
        }
    }
}

/// Where the first byte that ends a JSON string's plain run lies in `s`: a quote, a backslash
/// or a raw control byte (which JSON forbids in a string), tested eight bytes at a time. Each
/// test is exact up to its own first flagged byte, so the first flag of the three together is
/// exact.
fn json_string_stop(s: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(group) = load(s, at) {
        let flags = below_up_to_first(group, 0x20)
            | zero_up_to_first(group ^ each(b'"'))
            | zero_up_to_first(group ^ each(b'\\'));
        if flags != 0 {
            return Some(at + leading(flags) as usize);
        }
        at += 8;
    }
    let tail = s.get(at..)?;
    tail.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20).map(|i| at + i)
}

/// Groups for testing a byte test against its one-byte version: every ASCII
/// byte at every position, between random ASCII neighbours.
#[cfg(test)]
pub fn probe_groups() -> Vec<[u8; 8]> {
    let mut rng = crate::test_rng::TestRng::new(0x2545_f491_4f6c_dd1d);
    let mut groups = Vec::new();
    for b in 0..128u8 {
        for at in 0..8 {
            let mut group = [0u8; 8];
            for x in &mut group {
                *x = rng.below(128) as u8;
            }
            group[at] = b;
            groups.push(group);
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_tests_are_exact_at_every_position() {
        for group in probe_groups() {
            let v = u64::from_le_bytes(group);
            let flags = |f: fn(u8) -> bool| u64::from_le_bytes(group.map(|x| if f(x) { 0x80 } else { 0 }));
            assert_eq!(within(v, b'a', b'z'), flags(|x| x.is_ascii_lowercase()), "{group:?}");
            assert_eq!(within(v, b'0', b'9'), flags(|x| x.is_ascii_digit()), "{group:?}");
            assert_eq!(equal(v, b'@'), flags(|x| x == b'@'), "{group:?}");
            let first_zero = group.iter().position(|&x| x == 0).unwrap_or(8) as u32;
            assert_eq!(leading(zero_up_to_first(v)), first_zero, "{group:?}");
            let first_control = group.iter().position(|&x| x < 0x20).unwrap_or(8) as u32;
            assert_eq!(leading(below_up_to_first(v, 0x20)), first_control, "{group:?}");
        }
        // Bytes from 0x80 up are never below 0x20.
        let high = u64::from_le_bytes([0xff, 0x9f, 0x80, 0xa0, 0x20, 0x1f, 0xc3, 0x00]);
        assert_eq!(leading(below_up_to_first(high, 0x20)), 5);
        assert_eq!(below_up_to_first(each(0xbe), 0x20), 0);
        assert_eq!(widen(0x80_00_80), 0xff_00_ff);
        assert_eq!(low_bytes(0), 0);
        assert_eq!(low_bytes(3), 0xff_ffff);
        assert_eq!(low_bytes(8), u64::MAX);
        assert_eq!(load(b"abcdefgh!", 1), Some(u64::from_le_bytes(*b"bcdefgh!")));
        assert_eq!(load(b"abcdefgh", 1), None);
        assert_eq!(load_prefix(b"abcdefgh!", 1), (u64::from_le_bytes(*b"bcdefgh!"), 8));
        assert_eq!(load_prefix(b"abcdefgh", 5), (u64::from_le_bytes(*b"fgh\0\0\0\0\0"), 3));
        assert_eq!(load_prefix(b"abc", 3), (0, 0));
    }
}
