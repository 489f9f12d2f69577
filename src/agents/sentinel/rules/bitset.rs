//! A set of up to 256 small indices: the concepts a keyword tags, or the patterns a concept can
//! start. Const fns, so the tables in `patterns.rs` are built at compile time.

/// Bit `i` of word `i / 128`. Concepts and patterns are numbered in declaration order, so the
/// first word holds the older, commoner ones: tests on it decide most scans.
#[derive(Clone, Copy)]
pub(super) struct BitSet([u128; 2]);

impl BitSet {
    pub(super) const BITS: usize = 256;
    pub(super) const EMPTY: BitSet = BitSet([0; 2]);

    pub(super) const fn bit(i: usize) -> BitSet {
        let mut words = [0; 2];
        words[i / 128] = 1 << (i % 128);
        BitSet(words)
    }

    pub(super) const fn or(self, other: BitSet) -> BitSet {
        BitSet([self.0[0] | other.0[0], self.0[1] | other.0[1]])
    }

    pub(super) const fn and_not(self, other: BitSet) -> BitSet {
        BitSet([self.0[0] & !other.0[0], self.0[1] & !other.0[1]])
    }

    /// True if the two sets share an index.
    pub(super) const fn meets(self, other: BitSet) -> bool {
        (self.0[0] & other.0[0]) | (self.0[1] & other.0[1]) != 0
    }

    pub(super) const fn is_empty(self) -> bool {
        self.0[0] | self.0[1] == 0
    }

    pub(super) const fn contains(self, i: usize) -> bool {
        self.0[i / 128] & 1 << (i % 128) != 0
    }

    pub(super) const fn words(self) -> [u128; 2] {
        self.0
    }

    /// The indices in the set, in increasing order.
    pub(super) fn iter(self) -> Ones {
        Ones(self.0)
    }
}

pub(super) struct Ones([u128; 2]);

impl Iterator for Ones {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let [low, high] = &mut self.0;
        if *low != 0 {
            let i = low.trailing_zeros() as usize;
            *low &= *low - 1;
            Some(i)
        } else if *high != 0 {
            let i = high.trailing_zeros() as usize;
            *high &= *high - 1;
            Some(128 + i)
        } else {
            None
        }
    }
}
