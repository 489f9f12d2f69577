//! The generator of the property tests that compare a fast path with its reference on
//! generated inputs: xorshift64, seeded, so a failure replays.

pub struct TestRng(u64);

impl TestRng {
    /// Any nonzero seed (zero stays zero forever).
    pub fn new(seed: u64) -> TestRng {
        TestRng(seed)
    }

    /// A number below `n` (not quite uniform; good enough to pick pieces of a test input).
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}
