//! Choosing an endpoint of a backend: power of two random choices over each endpoint's
//! peak-EWMA cost (Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing";
//! the load metric is Finagle's and linkerd's). Two random candidates, the cheaper wins:
//! load-aware like least-loaded, without herding every client onto the same endpoint.

use rand::{Rng, RngExt};

/// What the balancer needs to know about an endpoint.
pub(crate) trait Weigh {
    /// Whether a call may go there now (not removed, not backing off).
    fn available(&self, now: u64) -> bool;
    /// Latency estimate, if there is one.
    fn rtt(&self, now: u64) -> Option<f64>;
    /// latency × (outstanding + 1), borrowing `reference` when unmeasured.
    fn cost(&self, now: u64, reference: Option<f64>) -> f64;
}

impl Weigh for std::sync::Arc<crate::transport::Endpoint> {
    fn available(&self, now: u64) -> bool {
        self.is_available(now)
    }

    fn rtt(&self, now: u64) -> Option<f64> {
        self.load.rtt(now)
    }

    fn cost(&self, now: u64, reference: Option<f64>) -> f64 {
        self.load.cost(now, reference)
    }
}

/// Picks an endpoint index, skipping unavailable ones and those `skip` rejects (already
/// tried by this call). `None` when no endpoint is usable.
pub(crate) fn pick<E: Weigh, R: Rng + ?Sized>(
    endpoints: &[E],
    now: u64,
    rng: &mut R,
    skip: impl Fn(usize) -> bool,
) -> Option<usize> {
    let usable = |i: usize| !skip(i) && endpoints[i].available(now);
    match endpoints.len() {
        0 => return None,
        1 => return usable(0).then_some(0),
        _ => {}
    }
    // Fast path: two distinct random candidates, both usable (the common case).
    let n = endpoints.len();
    let a = rng.random_range(0..n);
    let b = (a + 1 + rng.random_range(0..n - 1)) % n;
    if usable(a) && usable(b) {
        return Some(cheaper(endpoints, a, b, now));
    }
    // Some endpoints are out: choose among the usable ones only, so each keeps its fair
    // chance of being compared.
    let candidates: Vec<usize> = (0..n).filter(|&i| usable(i)).collect();
    match candidates.len() {
        0 => None,
        1 => Some(candidates[0]),
        m => {
            let x = rng.random_range(0..m);
            let y = (x + 1 + rng.random_range(0..m - 1)) % m;
            Some(cheaper(endpoints, candidates[x], candidates[y], now))
        }
    }
}

fn cheaper<E: Weigh>(endpoints: &[E], a: usize, b: usize, now: u64) -> usize {
    let (ea, eb) = (&endpoints[a], &endpoints[b]);
    let (ra, rb) = (ea.rtt(now), eb.rtt(now));
    if ea.cost(now, rb) <= eb.cost(now, ra) {
        a
    } else {
        b
    }
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::SmallRng};

    use super::*;

    struct Fake {
        up: bool,
        rtt: Option<f64>,
        pending: u32,
    }

    impl Weigh for Fake {
        fn available(&self, _: u64) -> bool {
            self.up
        }
        fn rtt(&self, _: u64) -> Option<f64> {
            self.rtt
        }
        fn cost(&self, _: u64, reference: Option<f64>) -> f64 {
            self.rtt.or(reference).unwrap_or(1.0) * f64::from(self.pending + 1)
        }
    }

    fn fake(up: bool, rtt: Option<f64>, pending: u32) -> Fake {
        Fake { up, rtt, pending }
    }

    #[test]
    fn empty_and_single() {
        let mut rng = SmallRng::seed_from_u64(1);
        assert_eq!(pick::<Fake, _>(&[], 0, &mut rng, |_| false), None);
        assert_eq!(
            pick(&[fake(true, None, 0)], 0, &mut rng, |_| false),
            Some(0)
        );
        assert_eq!(pick(&[fake(false, None, 0)], 0, &mut rng, |_| false), None);
        assert_eq!(pick(&[fake(true, None, 0)], 0, &mut rng, |_| true), None);
    }

    #[test]
    fn prefers_the_cheaper_of_two() {
        let mut rng = SmallRng::seed_from_u64(7);
        let eps = [fake(true, Some(1.0), 0), fake(true, Some(10.0), 0)];
        for _ in 0..100 {
            assert_eq!(pick(&eps, 0, &mut rng, |_| false), Some(0));
        }
    }

    #[test]
    fn slow_endpoint_gets_little_traffic_among_many() {
        // One of ten endpoints is 50× slower: it wins only when drawn against itself,
        // which p2c never does, so it gets nothing while the others are idle.
        let mut rng = SmallRng::seed_from_u64(3);
        let mut eps: Vec<Fake> = (0..10).map(|_| fake(true, Some(1.0), 0)).collect();
        eps[4].rtt = Some(50.0);
        let mut hits = [0u32; 10];
        for _ in 0..10_000 {
            hits[pick(&eps, 0, &mut rng, |_| false).unwrap()] += 1;
        }
        assert_eq!(hits[4], 0);
        // The rest share evenly: each expects 1111 (sd ≈ 31); 4.5 sd bounds.
        for (i, h) in hits.iter().enumerate().filter(|(i, _)| *i != 4) {
            assert!((970..=1250).contains(h), "endpoint {i}: {h}");
        }
    }

    #[test]
    fn skips_unavailable_and_excluded() {
        let mut rng = SmallRng::seed_from_u64(11);
        let eps = [
            fake(false, Some(1.0), 0),
            fake(true, Some(100.0), 9),
            fake(true, Some(1.0), 0),
        ];
        for _ in 0..200 {
            let i = pick(&eps, 0, &mut rng, |i| i == 2).unwrap();
            assert_eq!(i, 1, "only endpoint 1 is neither down nor excluded");
        }
        assert_eq!(pick(&eps, 0, &mut rng, |i| i != 0), None);
    }

    #[test]
    fn unmeasured_endpoint_competes_on_outstanding_calls() {
        let mut rng = SmallRng::seed_from_u64(5);
        // New endpoint (no rtt, idle) vs a measured endpoint with 3 calls outstanding.
        let eps = [fake(true, None, 0), fake(true, Some(4.0), 3)];
        for _ in 0..50 {
            assert_eq!(pick(&eps, 0, &mut rng, |_| false), Some(0));
        }
    }
}
