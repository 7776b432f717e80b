//! The randomness behind weighted and endpoint picks: SplitMix64 over an atomic counter.
//! Lock-free and shared by every call of a mesh; seeded for reproducible tests.

use std::{
    convert::Infallible,
    sync::atomic::{AtomicU64, Ordering},
};

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// A thread-safe random source.
#[derive(Debug)]
pub(crate) struct SharedRng {
    state: AtomicU64,
}

impl SharedRng {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    pub(crate) fn from_entropy() -> Self {
        use rand::Rng as _;
        Self::new(rand::rng().next_u64())
    }

    pub(crate) fn next(&self) -> u64 {
        // Each caller gets a distinct counter value, so concurrent calls never share a draw.
        let mut z = self
            .state
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A `rand` generator view, for the pure pickers.
    pub(crate) fn handle(&self) -> Handle<'_> {
        Handle(self)
    }
}

/// Borrowed [`SharedRng`] implementing [`rand::TryRng`].
#[derive(Debug)]
pub(crate) struct Handle<'a>(&'a SharedRng);

impl rand::TryRng for Handle<'_> {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.0.next() >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.0.next())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.0.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_streams_repeat_and_differ_by_seed() {
        let a: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(SharedRng::new(1), |r, _| Some(r.next()))
            .collect();
        let b: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(SharedRng::new(1), |r, _| Some(r.next()))
            .collect();
        let c: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(SharedRng::new(2), |r, _| Some(r.next()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn roughly_uniform_bits() {
        let rng = SharedRng::new(42);
        let n = 100_000;
        let ones: u32 = (0..n).map(|_| rng.next().count_ones()).sum();
        // 64 fair bits per draw: mean 32n, sd sqrt(16n) ≈ 1265; allow 5 sd.
        let mean = 32.0 * n as f64;
        assert!((f64::from(ones) - mean).abs() < 5.0 * (16.0 * n as f64).sqrt());
    }
}
