//! The one generator of test and benchmark data (splitmix64): small, fast, and good enough for
//! random weights and activations. Tests seed it from ROCMFORGE_TEST_SEED or the clock and print
//! the seed, so that a failure can be repeated; benchmarks seed it with a constant.

pub(crate) struct TestRng(u64);

impl TestRng {
    /// A generator of the given seed.
    pub(crate) fn seeded(seed: u64) -> TestRng {
        TestRng(seed)
    }

    /// A test's generator: ROCMFORGE_TEST_SEED if set, else the clock; prints `[test: seed N]`.
    #[cfg(test)]
    pub(crate) fn for_test(test: &str) -> TestRng {
        let seed = std::env::var("ROCMFORGE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        println!("[{test}: seed {seed}]");
        TestRng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub(crate) fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// `n` values uniform in [-1, 1).
    #[cfg(test)]
    pub(crate) fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform()).collect()
    }

    /// Uniform in 0..n.
    #[cfg(test)]
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Roughly normal (a sum of four uniforms) of standard deviation about `scale`.
    #[cfg(test)]
    pub(crate) fn normal(&mut self, scale: f32) -> f32 {
        let s: f32 = (0..4)
            .map(|_| (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
            .sum();
        (s - 2.0) * 1.7 * scale
    }

    /// `n` random bytes.
    #[cfg(test)]
    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}
