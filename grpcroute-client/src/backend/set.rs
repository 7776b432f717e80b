//! A backend's endpoints at one moment, and how a call picks one of them.
//!
//! Kubernetes Services have one flat group of endpoints. xDS clusters have priorities, each
//! with weighted localities (gRFC A27, A56): a call uses the most preferred priority that
//! has an endpoint it can use — so traffic moves to a lower priority only when every
//! endpoint of the higher one is down, not when some are — then a locality by weight among
//! those with a usable endpoint, then an endpoint by the backend's balancer.

use std::{
    net::SocketAddr,
    ops::Range,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use rand::{Rng, RngExt};

use super::balance::{self, Weigh};
use crate::transport::Endpoint;

/// How a backend picks among the endpoints of a locality.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Balancer {
    /// Power of two random choices over peak-EWMA latency × outstanding calls (the
    /// default; xDS `LEAST_REQUEST`).
    #[default]
    PeakEwma,
    /// Each usable endpoint in turn (xDS `ROUND_ROBIN`, gRPC's `round_robin`).
    #[cfg_attr(not(feature = "xds"), allow(dead_code))]
    RoundRobin,
}

/// The policy a backend applies to the calls it takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Policy {
    pub(crate) balancer: Balancer,
    /// Circuit breaking (xDS `max_requests`, gRFC A32): calls in flight at most; more fail
    /// `UNAVAILABLE` at once. `None`: no limit.
    pub(crate) max_requests: Option<u32>,
    /// Failure accrual: endpoints that keep failing are ejected. `None`: never.
    pub(crate) accrual: Option<super::accrual::Accrual>,
}

/// A backend's endpoints as configuration describes them.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct EndpointsSpec {
    /// Most preferred first.
    pub(crate) priorities: Vec<PrioritySpec>,
    pub(crate) policy: Policy,
}

/// The localities of one priority.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct PrioritySpec {
    pub(crate) localities: Vec<LocalitySpec>,
}

/// The endpoints of one locality, and its weight among the priority's localities.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LocalitySpec {
    pub(crate) name: Arc<str>,
    pub(crate) weight: u32,
    pub(crate) addrs: Vec<SocketAddr>,
}

impl EndpointsSpec {
    /// The same endpoints under `policy`.
    pub(crate) fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// One group of endpoints (a Kubernetes Service port), sorted, without duplicates.
    pub(crate) fn flat(mut addrs: Vec<SocketAddr>) -> Self {
        addrs.sort();
        addrs.dedup();
        Self {
            priorities: vec![PrioritySpec {
                localities: vec![LocalitySpec {
                    name: Arc::from(""),
                    weight: 1,
                    addrs,
                }],
            }],
            policy: Policy::default(),
        }
    }

    /// Every address, in priority and locality order, each once.
    pub(crate) fn addrs(&self) -> Vec<SocketAddr> {
        let mut seen = std::collections::HashSet::new();
        self.priorities
            .iter()
            .flat_map(|p| &p.localities)
            .flat_map(|l| &l.addrs)
            .copied()
            .filter(|a| seen.insert(*a))
            .collect()
    }
}

/// The endpoints of a backend at one moment: immutable, replaced whole.
#[derive(Debug, Default)]
pub(crate) struct EndpointSet {
    /// Every endpoint, in priority and locality order.
    endpoints: Box<[Arc<Endpoint>]>,
    priorities: Box<[PrioritySet]>,
    pub(crate) spec: EndpointsSpec,
}

#[derive(Debug)]
struct PrioritySet {
    localities: Box<[LocalitySet]>,
}

#[derive(Debug)]
struct LocalitySet {
    weight: u32,
    /// Its endpoints in [`EndpointSet::endpoints`].
    range: Range<usize>,
    /// The round-robin position.
    cursor: AtomicUsize,
}

impl EndpointSet {
    /// The set `spec` describes, over `endpoints` (one per address of `spec.addrs()`, in
    /// that order).
    pub(crate) fn new(spec: EndpointsSpec, endpoints: Vec<Arc<Endpoint>>) -> Self {
        let index: std::collections::HashMap<SocketAddr, usize> = endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| (e.addr(), i))
            .collect();
        // Lay the endpoints out locality by locality so each locality is one range; an
        // address listed in two localities (an aggregate of overlapping clusters) appears in
        // both, sharing its endpoint.
        let mut ordered: Vec<Arc<Endpoint>> = Vec::with_capacity(endpoints.len());
        let priorities = spec
            .priorities
            .iter()
            .map(|p| PrioritySet {
                localities: p
                    .localities
                    .iter()
                    .map(|l| {
                        let start = ordered.len();
                        let mut seen = std::collections::HashSet::new();
                        for a in &l.addrs {
                            if seen.insert(*a)
                                && let Some(&i) = index.get(a)
                            {
                                ordered.push(endpoints[i].clone());
                            }
                        }
                        LocalitySet {
                            weight: l.weight,
                            range: start..ordered.len(),
                            cursor: AtomicUsize::new(0),
                        }
                    })
                    .collect(),
            })
            .collect();
        Self {
            endpoints: ordered.into_boxed_slice(),
            priorities,
            spec,
        }
    }

    /// Every endpoint, in priority and locality order (an address may repeat across
    /// localities of an aggregate).
    pub(crate) fn all(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    pub(crate) fn policy(&self) -> Policy {
        self.spec.policy
    }

    /// The endpoint a call goes to: the most preferred priority with a usable endpoint,
    /// a locality of it by weight, an endpoint of that by the balancer. Skips endpoints that
    /// are unavailable (removed, backing off, ejected) and those `skip` rejects (already
    /// tried by this call). `None` when there is none.
    pub(crate) fn pick<R: Rng + ?Sized>(
        &self,
        now: u64,
        rng: &mut R,
        skip: impl Fn(&Endpoint) -> bool,
    ) -> Option<&Arc<Endpoint>> {
        let usable = |e: &Arc<Endpoint>| !skip(e) && e.available(now);
        // The common case (a Kubernetes Service): one locality.
        if let [only] = &*self.priorities
            && let [locality] = &*only.localities
        {
            return self.pick_in(locality, now, rng, &usable);
        }
        for priority in self.priorities.iter() {
            let weight_of = |l: &LocalitySet| {
                if self.endpoints[l.range.clone()].iter().any(usable) {
                    u64::from(l.weight)
                } else {
                    0
                }
            };
            let total: u64 = priority.localities.iter().map(weight_of).sum();
            if total == 0 {
                continue;
            }
            let mut r = rng.random_range(0..total);
            for l in priority.localities.iter() {
                let w = weight_of(l);
                if r < w {
                    return self.pick_in(l, now, rng, &usable);
                }
                r -= w;
            }
        }
        None
    }

    fn pick_in<R: Rng + ?Sized>(
        &self,
        locality: &LocalitySet,
        now: u64,
        rng: &mut R,
        usable: &impl Fn(&Arc<Endpoint>) -> bool,
    ) -> Option<&Arc<Endpoint>> {
        let endpoints = &self.endpoints[locality.range.clone()];
        let i = match self.spec.policy.balancer {
            Balancer::PeakEwma => balance::pick(endpoints, now, rng, |i| !usable(&endpoints[i]))?,
            Balancer::RoundRobin => round_robin(endpoints, &locality.cursor, usable)?,
        };
        endpoints.get(i)
    }
}

/// The next usable endpoint after the cursor, which every pick advances by one: with every
/// endpoint usable, each gets exactly one call in turn.
fn round_robin(
    endpoints: &[Arc<Endpoint>],
    cursor: &AtomicUsize,
    usable: &impl Fn(&Arc<Endpoint>) -> bool,
) -> Option<usize> {
    let n = endpoints.len();
    if n == 0 {
        return None;
    }
    let start = cursor.fetch_add(1, Ordering::Relaxed) % n;
    (0..n)
        .map(|k| (start + k) % n)
        .find(|&i| usable(&endpoints[i]))
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::SmallRng};

    use super::*;
    use crate::transport::{Pool, TransportConfig};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn set(pool: &Pool, spec: EndpointsSpec) -> EndpointSet {
        let endpoints = pool.join_all(&spec.addrs(), &crate::transport::Security::Plaintext);
        EndpointSet::new(spec, endpoints)
    }

    fn locality(name: &str, weight: u32, ports: &[u16]) -> LocalitySpec {
        LocalitySpec {
            name: Arc::from(name),
            weight,
            addrs: ports.iter().map(|&p| addr(p)).collect(),
        }
    }

    #[test]
    fn round_robin_is_exactly_even() {
        let pool = Pool::new(TransportConfig::default());
        let mut spec = EndpointsSpec::flat(vec![addr(1), addr(2), addr(3), addr(4)]);
        spec.policy.balancer = Balancer::RoundRobin;
        let set = set(&pool, spec);
        let mut rng = SmallRng::seed_from_u64(1);
        let mut hits = [0u32; 4];
        for _ in 0..400 {
            let e = set.pick(0, &mut rng, |_| false).unwrap();
            hits[usize::from(e.addr().port()) - 1] += 1;
        }
        assert_eq!(hits, [100; 4]);
        // Skipping one: the rest share its turns.
        let picked: Vec<u16> = (0..6)
            .map(|_| {
                set.pick(0, &mut rng, |e| e.addr() == addr(2))
                    .unwrap()
                    .addr()
                    .port()
            })
            .collect();
        assert!(!picked.contains(&2));
    }

    #[test]
    fn priorities_fail_over_only_when_every_endpoint_is_down() {
        let pool = Pool::new(TransportConfig::default());
        let spec = EndpointsSpec {
            priorities: vec![
                PrioritySpec {
                    localities: vec![locality("p0", 1, &[1, 2])],
                },
                PrioritySpec {
                    localities: vec![locality("p1", 1, &[3])],
                },
            ],
            policy: Policy::default(),
        };
        let set = set(&pool, spec);
        let mut rng = SmallRng::seed_from_u64(2);
        for _ in 0..50 {
            let p = set.pick(0, &mut rng, |_| false).unwrap().addr().port();
            assert!(p == 1 || p == 2);
            let p = set
                .pick(0, &mut rng, |e| e.addr() == addr(1))
                .unwrap()
                .addr()
                .port();
            assert_eq!(p, 2, "a partial failure stays in priority 0");
            let p = set
                .pick(0, &mut rng, |e| e.addr().port() < 3)
                .unwrap()
                .addr()
                .port();
            assert_eq!(p, 3, "priority 1 takes over when priority 0 has nothing");
        }
        assert!(set.pick(0, &mut rng, |_| true).is_none());
    }

    #[test]
    fn localities_share_by_weight_among_those_with_usable_endpoints() {
        let pool = Pool::new(TransportConfig::default());
        let spec = EndpointsSpec {
            priorities: vec![PrioritySpec {
                localities: vec![locality("a", 3, &[1]), locality("b", 1, &[2])],
            }],
            policy: Policy::default(),
        };
        let set = set(&pool, spec);
        let mut rng = SmallRng::seed_from_u64(3);
        let n = 40_000;
        let a = (0..n)
            .filter(|_| set.pick(0, &mut rng, |_| false).unwrap().addr() == addr(1))
            .count();
        // p = 0.75, sd = sqrt(n p (1-p)) ≈ 86.6; 5 sd.
        let expected = 0.75 * f64::from(n);
        assert!((a as f64 - expected).abs() < 5.0 * 86.6, "{a} of {n}");
        for _ in 0..100 {
            assert_eq!(
                set.pick(0, &mut rng, |e| e.addr() == addr(1))
                    .unwrap()
                    .addr(),
                addr(2),
                "a locality without a usable endpoint takes no share"
            );
        }
    }
}
