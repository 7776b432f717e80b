//! Exponential backoff with jitter for ADS reconnects (gRPC connection-backoff.md; A57:
//! reset once a stream has received a response).
//!
//! Written here rather than taken from the `backoff` crate, which is unmaintained
//! (RUSTSEC-2025-0012) and pulls `instant` (RUSTSEC-2024-0384).

use std::time::Duration;

/// Backoff parameters; the defaults are gRPC's (1 s initial, ×1.6, ±20 %, 120 s cap).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BackoffConfig {
    /// First delay.
    pub(crate) initial: Duration,
    /// Growth per attempt.
    pub(crate) multiplier: f64,
    /// Relative jitter: each delay is drawn uniformly in `[d × (1 − j), d × (1 + j)]`.
    pub(crate) jitter: f64,
    /// Cap on the un-jittered delay.
    pub(crate) max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            multiplier: 1.6,
            jitter: 0.2,
            max: Duration::from_secs(120),
        }
    }
}

/// Backoff state with its own small random generator (SplitMix64), seeded by the caller.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    config: BackoffConfig,
    current: Duration,
    rng: u64,
}

impl Backoff {
    pub(crate) fn new(config: BackoffConfig, seed: u64) -> Self {
        Self {
            config,
            current: config.initial,
            rng: seed,
        }
    }

    /// The next delay; the base grows by the multiplier up to the cap.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.current.as_secs_f64();
        let u = self.next_unit();
        let factor = 1.0 + self.config.jitter * (2.0 * u - 1.0);
        let delay = Duration::from_secs_f64((base * factor).max(0.0));
        let grown = (base * self.config.multiplier).min(self.config.max.as_secs_f64());
        self.current = Duration::from_secs_f64(grown);
        delay
    }

    /// Back to the initial delay.
    pub(crate) fn reset(&mut self) {
        self.current = self.config.initial;
    }

    /// Uniform in [0, 1).
    fn next_unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_with_jitter_within_bounds_and_cap() {
        let config = BackoffConfig::default();
        for seed in 0..200 {
            let mut b = Backoff::new(config, seed);
            let mut base = 1.0_f64;
            for _ in 0..20 {
                let d = b.next_delay().as_secs_f64();
                assert!(
                    d >= base * 0.8 - 1e-9 && d <= base * 1.2 + 1e-9,
                    "seed {seed}: {d} vs base {base}"
                );
                base = (base * 1.6).min(120.0);
            }
        }
    }

    #[test]
    fn jitter_actually_varies_and_reset_restarts() {
        let config = BackoffConfig::default();
        let firsts: Vec<_> = (0..50)
            .map(|s| Backoff::new(config, s).next_delay())
            .collect();
        let min = firsts.iter().min().unwrap().as_secs_f64();
        let max = firsts.iter().max().unwrap().as_secs_f64();
        // 50 uniform draws over [0.8, 1.2]: the spread is well over 0.2 (P(fail) < 1e-9).
        assert!(max - min > 0.2, "{min}..{max}");
        let mut b = Backoff::new(config, 7);
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        let d = b.next_delay().as_secs_f64();
        assert!((0.8..=1.2).contains(&d), "{d}");
    }
}
