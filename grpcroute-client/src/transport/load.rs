//! Per-endpoint load: outstanding calls and a peak-sensitive moving average of latency
//! ("peak EWMA", as in Finagle, linkerd and tower), kept in atomics so the per-call path
//! takes no lock.
//!
//! One deliberate difference from those: the estimate is of latency *per call in flight*
//! (each sample divided by the calls the endpoint had in flight when it was sent). The cost
//! multiplies the estimate by (outstanding + 1); a raw latency measured under load already
//! contains that load, so multiplying it again made a busy endpoint's cost grow with the
//! square of its load, and an idle endpoint 20× slower looked cheaper than a fast one with
//! 16 calls in flight (issue 10's tail test: the slow endpoint kept 1–2 % of the calls,
//! above the 99th percentile). Divided, the cost is linear in load again: an idle slow
//! endpoint costs its full latency, a busy fast one about its own latency.

use std::{
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::Duration,
};

/// The balancer's view of one endpoint.
#[derive(Debug)]
pub(crate) struct Load {
    pending: AtomicU32,
    /// f64 nanoseconds; 0 until the first response.
    rtt: AtomicU64,
    /// When `rtt` was last updated (nanoseconds since the pool's epoch).
    updated: AtomicU64,
    decay_ns: f64,
}

impl Load {
    pub(crate) fn new(decay: Duration) -> Self {
        Self {
            pending: AtomicU32::new(0),
            rtt: AtomicU64::new(0f64.to_bits()),
            updated: AtomicU64::new(0),
            decay_ns: decay.as_nanos() as f64,
        }
    }

    pub(crate) fn pending(&self) -> u32 {
        self.pending.load(Ordering::Relaxed)
    }

    pub(crate) fn start(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn finish(&self) {
        // Saturating: a finish can never outnumber its start, but a bug here must not wrap
        // the counter and starve the endpoint forever.
        let _ = self
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                Some(p.saturating_sub(1))
            });
    }

    /// The estimate of latency per call in flight at `now`, decayed towards zero while no
    /// sample arrives, so an endpoint that was slow once is tried again eventually. `None`
    /// before any sample.
    pub(crate) fn rtt(&self, now: u64) -> Option<f64> {
        let rtt = f64::from_bits(self.rtt.load(Ordering::Relaxed));
        if rtt == 0.0 {
            return None;
        }
        let elapsed = now.saturating_sub(self.updated.load(Ordering::Relaxed)) as f64;
        Some(rtt * (-elapsed / self.decay_ns).exp())
    }

    /// Records a latency sample of a call sent while the endpoint had `in_flight` calls
    /// outstanding, that call included (a penalty is recorded with 1: it must count whole).
    /// One slower per call than the current estimate replaces it at once (the peak); a
    /// faster one is blended in with the weight of the time since the last sample, so a
    /// burst of fast samples moves the estimate no faster than time does.
    pub(crate) fn observe(&self, sample: Duration, in_flight: u32, now: u64) {
        let sample = sample.as_nanos() as f64 / f64::from(in_flight.max(1));
        let next = match self.rtt(now) {
            Some(current) if sample <= current => {
                let stored = f64::from_bits(self.rtt.load(Ordering::Relaxed));
                let elapsed = now.saturating_sub(self.updated.load(Ordering::Relaxed)) as f64;
                let decay = (-elapsed / self.decay_ns).exp();
                stored * decay + sample * (1.0 - decay)
            }
            _ => sample,
        };
        // Two racing updates may lose one sample; the estimate stays a valid recent value.
        self.rtt.store(next.max(1.0).to_bits(), Ordering::Relaxed);
        self.updated.store(now, Ordering::Relaxed);
    }

    /// Forgets the latency estimate: the endpoint competes as a new one would, borrowing its
    /// rival's estimate (after a failure-accrual ejection, whose penalty must not outlive
    /// the endpoint's recovery).
    pub(crate) fn forget(&self) {
        self.rtt.store(0f64.to_bits(), Ordering::Relaxed);
    }

    /// The cost the balancer compares: latency × (outstanding + 1). An endpoint with no
    /// sample yet is assumed as fast as `reference` (its rival's estimate), so new
    /// endpoints get a fair share instead of being starved or flooded.
    pub(crate) fn cost(&self, now: u64, reference: Option<f64>) -> f64 {
        let rtt = self.rtt(now).or(reference).unwrap_or(1.0);
        rtt * f64::from(self.pending() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn peaks_replace_and_fast_samples_blend() {
        let load = Load::new(Duration::from_secs(10));
        assert_eq!(load.rtt(0), None);
        load.observe(Duration::from_millis(10), 1, 0);
        assert_eq!(load.rtt(0), Some(10.0 * MS as f64));
        load.observe(Duration::from_millis(100), 1, 1);
        assert!(
            (load.rtt(1).unwrap() - 100.0 * MS as f64).abs() < 1.0,
            "a peak replaces at once"
        );
        // One second later a 10 ms sample moves the estimate by 1 - e^-0.1 ≈ 9.5 % of the
        // way: 100 × 0.905 + 10 × 0.095 ≈ 91.4 ms.
        load.observe(Duration::from_millis(10), 1, 1000 * MS);
        let est = load.rtt(1000 * MS).unwrap() / MS as f64;
        assert!((est - 91.4).abs() < 0.2, "blended estimate {est}");
        // Fast samples in quick succession barely move it.
        load.observe(Duration::from_millis(10), 1, 1000 * MS + 1000);
        assert!(load.rtt(1000 * MS + 1000).unwrap() / MS as f64 > 91.0);
    }

    #[test]
    fn idle_estimates_decay() {
        let load = Load::new(Duration::from_secs(10));
        load.observe(Duration::from_millis(100), 1, 0);
        let later = load.rtt(10_000 * MS).unwrap() / MS as f64;
        assert!(
            (later - 36.8).abs() < 0.5,
            "e^-1 of 100 ms after one decay period: {later}"
        );
    }

    #[test]
    fn cost_counts_outstanding_calls() {
        let load = Load::new(Duration::from_secs(10));
        load.observe(Duration::from_millis(2), 1, 0);
        let idle = load.cost(0, None);
        load.start();
        load.start();
        assert!((load.cost(0, None) / idle - 3.0).abs() < 1e-9);
        load.finish();
        load.finish();
        load.finish();
        assert_eq!(load.pending(), 0, "finish never underflows");
    }

    #[test]
    fn unmeasured_endpoint_borrows_the_reference() {
        let load = Load::new(Duration::from_secs(10));
        assert_eq!(load.cost(0, Some(5.0)), 5.0);
        load.start();
        assert_eq!(load.cost(0, Some(5.0)), 10.0);
    }

    #[test]
    fn samples_count_per_call_in_flight() {
        let load = Load::new(Duration::from_secs(10));
        load.observe(Duration::from_millis(16), 16, 0);
        assert_eq!(load.rtt(0), Some(1.0 * MS as f64));
        // A penalty (in flight 1) counts whole and, being a peak, replaces the estimate.
        load.observe(Duration::from_millis(500), 1, 1);
        assert!((load.rtt(1).unwrap() / MS as f64 - 500.0).abs() < 1e-6);
    }

    #[test]
    fn a_busy_fast_endpoint_is_cheaper_than_an_idle_slow_one() {
        // Issue 10's tail: 32 calls in flight over two fast endpoints (1.5 ms under 16 in
        // flight) and one 20 ms slower (measured alone). Counting the load twice made the
        // fast ones cost 1.5 × 16 = 24 ms against the slow one's 20 ms, so the slow one kept
        // winning picks whenever it was idle.
        let fast = Load::new(Duration::from_secs(10));
        for _ in 0..16 {
            fast.start();
        }
        fast.observe(Duration::from_micros(1500), 16, 0);
        fast.finish();
        let slow = Load::new(Duration::from_secs(10));
        slow.observe(Duration::from_millis(21), 1, 0);
        let (fast_cost, slow_cost) = (fast.cost(0, None), slow.cost(0, None));
        assert!(
            fast_cost * 10.0 < slow_cost,
            "fast with 15 in flight {fast_cost} vs idle slow {slow_cost}"
        );
    }
}
