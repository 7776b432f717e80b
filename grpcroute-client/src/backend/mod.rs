//! The runtime state of backends, apart from the routes that name them.
//!
//! A backend is where a routing decision sends a call: a Kubernetes Service port, or an
//! xDS cluster. Its [`Backend`] object holds what calls need at run time — the endpoint set,
//! the balancing policy over it — and lives in the [`Registry`] under its [`BackendKey`]
//! for as long as some routing table names it. Route tables are pure data compiled from
//! configuration and replaced whole; backends are not: a table that still names a backend
//! gets the same object, with its connections and load history, and an endpoint change
//! (an EndpointSlice, an EDS update) updates that one object in place without compiling
//! any route. This is linkerd2-proxy's split between policy and its balancer stack.

pub(crate) mod accrual;
pub(crate) mod balance;
mod endpoints;
mod registry;
mod set;

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
};

use arc_swap::ArcSwap;

#[cfg(feature = "xds")]
pub(crate) use self::set::{Balancer, LocalitySpec, PrioritySpec};
pub(crate) use self::{
    endpoints::service_endpoints,
    registry::Registry,
    set::{EndpointSet, EndpointsSpec, Policy},
};
pub(crate) use crate::route::BackendKey;
use crate::transport::{CountGuard, Endpoint, Outcome, OutcomeSink, Pool, Security};

/// One backend's runtime state. Shared by every table and call that sends there.
#[derive(Debug)]
pub(crate) struct Backend {
    /// The backend's key, rendered once, for error messages on the per-call path.
    label: Arc<str>,
    pool: Arc<Pool>,
    endpoints: ArcSwap<EndpointSet>,
    /// Calls in flight, for the circuit breaker.
    in_flight: Arc<AtomicU32>,
    /// Endpoints ejected by failure accrual, ever.
    ejections: AtomicU64,
    /// A task that keeps the endpoints up to date (e.g. DNS resolution), ended with the
    /// backend.
    task: std::sync::Mutex<Option<tokio::task::AbortHandle>>,
    /// How its endpoints are connected to. Only configuration updates read or change it
    /// (calls reach the endpoints, which carry their own).
    security: std::sync::Mutex<Security>,
    /// Why the backend cannot take calls, when its configuration says so (a
    /// BackendTLSPolicy that cannot be honoured). Read by every call, so lock-free.
    unusable: arc_swap::ArcSwapOption<String>,
    /// Mirrored calls to this backend (RequestMirror).
    pub(crate) mirrors: Arc<MirrorStats>,
}

/// The mirrored calls of one backend: how many run now, and how many were dropped because
/// too many already did or took too long.
#[derive(Debug, Default)]
pub(crate) struct MirrorStats {
    in_flight: AtomicUsize,
    dropped: AtomicU64,
    timed_out: AtomicU64,
}

impl MirrorStats {
    /// Takes a slot for one more mirrored call if fewer than `max` run; the guard frees it.
    pub(crate) fn start(self: &Arc<Self>, max: usize) -> Option<MirrorSlot> {
        let taken = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        match taken {
            Ok(_) => Some(MirrorSlot(self.clone())),
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    pub(crate) fn timed_out(&self) {
        self.timed_out.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Mirrored calls not made because the backend had its fill of them.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Mirrored calls abandoned at their timeout.
    pub(crate) fn timeouts(&self) -> u64 {
        self.timed_out.load(Ordering::Relaxed)
    }
}

/// What [`Backend::pick_endpoint`] found.
#[derive(Debug)]
pub(crate) enum Pick {
    /// The endpoint, and the endpoint clock's reading it was judged available at.
    Endpoint(Arc<Endpoint>, u64),
    /// The backend has no endpoints.
    NoEndpoints,
    /// Every endpoint is unavailable (backing off, ejected) or rejected by the caller.
    NoneUsable,
}

/// One running mirrored call; dropping it frees its slot.
#[derive(Debug)]
pub(crate) struct MirrorSlot(Arc<MirrorStats>);

impl Drop for MirrorSlot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Backend {
    fn new(key: &BackendKey, pool: Arc<Pool>) -> Self {
        Self {
            label: key.to_string().into(),
            pool,
            endpoints: ArcSwap::default(),
            in_flight: Arc::default(),
            ejections: AtomicU64::new(0),
            task: std::sync::Mutex::new(None),
            security: std::sync::Mutex::new(Security::Plaintext),
            unusable: arc_swap::ArcSwapOption::empty(),
            mirrors: Arc::default(),
        }
    }

    /// `namespace/name:port`, for messages.
    pub(crate) fn label(&self) -> &Arc<str> {
        &self.label
    }

    /// The current endpoint set. Cheap: no lock, no allocation.
    pub(crate) fn endpoints(&self) -> arc_swap::Guard<Arc<EndpointSet>> {
        self.endpoints.load()
    }

    /// Picks the endpoint for a call from the current set ([`EndpointSet::pick`]), with
    /// the clock reading it was judged at. `skip` rejects endpoints the call has tried.
    pub(crate) fn pick_endpoint<R: rand::Rng + ?Sized>(
        &self,
        rng: &mut R,
        skip: impl Fn(&Endpoint) -> bool,
    ) -> Pick {
        self.pick_endpoint_from(self.endpoints(), rng, skip)
    }

    /// [`Backend::pick_endpoint`] from `set`, a set read earlier. An update swaps in the
    /// new set and then retires the endpoints it dropped, so a call that read the set just
    /// before the swap can find every endpoint of it retired while the new set has usable
    /// ones: when nothing in the set read is usable and the set has been replaced since,
    /// the pick is made again from the current one. (Each new try needs another update to
    /// land during the previous pick; the bound only keeps the path finite.)
    fn pick_endpoint_from<R: rand::Rng + ?Sized>(
        &self,
        mut set: arc_swap::Guard<Arc<EndpointSet>>,
        rng: &mut R,
        skip: impl Fn(&Endpoint) -> bool,
    ) -> Pick {
        for _ in 0..8 {
            let Some(first) = set.all().first() else {
                return Pick::NoEndpoints;
            };
            let now = first.now();
            if let Some(endpoint) = set.pick(now, rng, &skip) {
                return Pick::Endpoint(endpoint.clone(), now);
            }
            let current = self.endpoints();
            if Arc::ptr_eq(&*set, &*current) {
                break;
            }
            set = current;
        }
        Pick::NoneUsable
    }

    /// How its endpoints are connected to now.
    pub(crate) fn security(&self) -> Security {
        self.lock_security().clone()
    }

    fn lock_security(&self) -> std::sync::MutexGuard<'_, Security> {
        // Every write leaves a whole value.
        self.security.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connects to the same addresses with `security` from now on: when it differs, the
    /// endpoints are joined anew under it (new calls use the new connections at once) and
    /// the old ones left (their calls in flight finish on the old connections). Returns how
    /// many endpoints were replaced.
    pub(crate) fn set_security(&self, security: Security) -> EndpointsDelta {
        let mut current_security = self.lock_security();
        if *current_security == security {
            return EndpointsDelta::default();
        }
        let current = self.endpoints.load_full();
        let spec = current.spec.clone();
        let addrs = spec.addrs();
        let joined = self.pool.join_all(&addrs, &security);
        *current_security = security;
        let previous = self
            .endpoints
            .swap(Arc::new(EndpointSet::new(spec, joined)));
        leave_all(&self.pool, &previous);
        EndpointsDelta {
            added: addrs.len(),
            removed: addrs.len(),
        }
    }

    /// Why the backend cannot take calls now, if it cannot. Read on every call: a guard,
    /// not a reference count.
    pub(crate) fn unusable(&self) -> arc_swap::Guard<Option<Arc<String>>> {
        self.unusable.load()
    }

    /// Applies a resolved security: the connections' settings, or the reason every call to
    /// the backend fails (its endpoints are then left alone, with their old settings, and
    /// take no calls).
    pub(crate) fn set_resolved_security(&self, resolved: crate::transport::ResolvedSecurity) {
        match resolved {
            crate::transport::ResolvedSecurity::Usable(security) => {
                self.set_security(security);
                self.unusable.store(None);
            }
            crate::transport::ResolvedSecurity::Unusable(reason) => {
                self.unusable.store(Some(Arc::new(reason)));
            }
        }
    }

    /// Replaces the endpoints with one flat group of `addrs` (a Kubernetes Service port).
    // Only xDS clusters that fail are emptied this way now (and the tests use it).
    #[cfg_attr(not(feature = "xds"), allow(dead_code))]
    pub(crate) fn set_endpoints(&self, addrs: &[SocketAddr]) -> EndpointsDelta {
        self.set_spec(EndpointsSpec::flat(addrs.to_vec()))
    }

    /// Replaces the endpoint set and policy. Endpoints the backend keeps keep their
    /// connections and load; those it drops are retired once no other backend lists them.
    /// Returns how many addresses were added and removed.
    pub(crate) fn set_spec(&self, spec: EndpointsSpec) -> EndpointsDelta {
        let current = self.endpoints.load_full();
        if current.spec == spec {
            return EndpointsDelta::default();
        }
        let addrs = spec.addrs();
        // Join the new set before leaving the old one, so an address in both never has
        // zero members in between (which would retire it).
        let joined = self.pool.join_all(&addrs, &self.lock_security());
        let old: HashSet<SocketAddr> = current.spec.addrs().into_iter().collect();
        let new: HashSet<SocketAddr> = addrs.iter().copied().collect();
        let delta = EndpointsDelta {
            added: new.difference(&old).count(),
            removed: old.difference(&new).count(),
        };
        let previous = self
            .endpoints
            .swap(Arc::new(EndpointSet::new(spec, joined)));
        leave_all(&self.pool, &previous);
        delta
    }

    /// Makes `task` the one that keeps this backend's endpoints up to date, ending the
    /// previous one.
    #[cfg_attr(not(feature = "xds"), allow(dead_code))]
    pub(crate) fn replace_task(&self, task: tokio::task::AbortHandle) {
        let previous = self
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(task);
        if let Some(previous) = previous {
            previous.abort();
        }
    }

    /// A place for one more call, unless the circuit breaker's limit of calls in flight is
    /// reached (then the limit). The guard holds the place until the call's response ends.
    pub(crate) fn admit(&self, policy: Policy) -> Result<Option<CountGuard>, u32> {
        let Some(max) = policy.max_requests else {
            return Ok(None);
        };
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| Some(CountGuard::counted(self.in_flight.clone())))
            .map_err(|_| max)
    }
}

impl Backend {
    /// Records how a call to `endpoint` ended, for failure accrual: ejects an endpoint that
    /// keeps failing (while the backend can spare it) and restores one whose probe succeeds.
    pub(crate) fn record(&self, endpoint: &Endpoint, outcome: Outcome) {
        let set = self.endpoints.load();
        let Some(accrual) = set.policy().accrual else {
            return;
        };
        let now = endpoint.now();
        let may_eject = || {
            let mut seen = HashSet::new();
            let (mut total, mut ejected) = (0, 0);
            for e in set.all() {
                if seen.insert(e.addr()) {
                    total += 1;
                    // Out, or due for its probe: either way not back yet.
                    ejected += usize::from(e.health.ejected_until() != 0);
                }
            }
            accrual::may_eject(&accrual, ejected, total)
        };
        let jitter = rand::random::<f64>();
        match accrual::record(&accrual, endpoint, outcome, now, jitter, may_eject) {
            accrual::Transition::Ejected(d) => {
                self.ejections.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    backend = %self.label,
                    endpoint = %endpoint.addr(),
                    ejected_for = ?d,
                    ?outcome,
                    "endpoint ejected: it keeps failing"
                );
            }
            accrual::Transition::Restored => {
                // Its failures made it look slow; it competes afresh.
                endpoint.load.forget();
                tracing::info!(
                    backend = %self.label,
                    endpoint = %endpoint.addr(),
                    "endpoint back in service: its probe call succeeded"
                );
            }
            accrual::Transition::None => {}
        }
    }

    /// Endpoints this backend ejected so far.
    pub(crate) fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// The endpoints ejected now, with how long they stay out.
    pub(crate) fn ejected(&self) -> Vec<(SocketAddr, std::time::Duration)> {
        let set = self.endpoints.load();
        let mut seen = HashSet::new();
        set.all()
            .iter()
            .filter(|e| seen.insert(e.addr()))
            .filter_map(|e| {
                let now = e.now();
                let until = e.health.ejected_at(now)?;
                Some((
                    e.addr(),
                    std::time::Duration::from_nanos(until.saturating_sub(now)),
                ))
            })
            .collect()
    }
}

impl OutcomeSink for Backend {
    fn call_ended(&self, endpoint: &Endpoint, outcome: Outcome) {
        self.record(endpoint, outcome);
    }
}

/// Leaves every distinct endpoint of `set` once (an address may repeat across localities).
fn leave_all(pool: &Pool, set: &EndpointSet) {
    let mut seen = HashSet::new();
    for e in set.all() {
        if seen.insert(e.addr()) {
            pool.leave(e);
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
        leave_all(&self.pool, &self.endpoints.load());
    }
}

/// How an endpoint update changed a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct EndpointsDelta {
    pub(crate) added: usize,
    pub(crate) removed: usize,
}

impl std::ops::AddAssign for EndpointsDelta {
    fn add_assign(&mut self, other: Self) {
        self.added += other.added;
        self.removed += other.removed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{model::ObjectKey, transport::TransportConfig};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn backend(pool: &Arc<Pool>, name: &str) -> Backend {
        Backend::new(
            &BackendKey::Service {
                service: ObjectKey::new("ns", name),
                port: 80,
            },
            pool.clone(),
        )
    }

    /// A call that read the set just before an update replaced it finds the old endpoint
    /// retired: it must pick from the new set rather than fail with no usable endpoint
    /// (seen under load in `configuration_changes_under_load_lose_nothing`).
    #[test]
    fn a_pick_from_a_set_replaced_meanwhile_uses_the_new_set() {
        use rand::SeedableRng as _;
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let pool = Arc::new(Pool::new(TransportConfig::default()));
        let b = backend(&pool, "a");
        b.set_endpoints(&[addr(1)]);
        let read_by_the_call = b.endpoints();
        b.set_endpoints(&[addr(2)]);
        assert!(read_by_the_call.all()[0].is_retired());
        match b.pick_endpoint_from(read_by_the_call, &mut rng, |_| false) {
            Pick::Endpoint(e, _) => assert_eq!(e.addr(), addr(2)),
            other => panic!("{other:?}"),
        }
        // Nothing usable in an unchanged set is the caller's answer, at once.
        assert!(matches!(
            b.pick_endpoint(&mut rng, |_| true),
            Pick::NoneUsable
        ));
        b.set_endpoints(&[]);
        assert!(matches!(
            b.pick_endpoint(&mut rng, |_| false),
            Pick::NoEndpoints
        ));
    }

    #[test]
    fn updates_keep_the_endpoints_they_keep_and_retire_the_rest() {
        let pool = Arc::new(Pool::new(TransportConfig::default()));
        let b = backend(&pool, "a");
        assert_eq!(
            b.set_endpoints(&[addr(2), addr(1), addr(1)]),
            EndpointsDelta {
                added: 2,
                removed: 0
            }
        );
        let first = b.endpoints().all().to_vec();
        assert_eq!(
            first.iter().map(|e| e.addr()).collect::<Vec<_>>(),
            [addr(1), addr(2)],
            "sorted, without duplicates"
        );
        assert_eq!(
            b.set_endpoints(&[addr(2), addr(3)]),
            EndpointsDelta {
                added: 1,
                removed: 1
            }
        );
        let second = b.endpoints().all().to_vec();
        assert!(
            Arc::ptr_eq(&first[1], &second[0]),
            "addr 2 is the same endpoint"
        );
        assert!(
            first[0].is_retired(),
            "addr 1 left the only backend listing it"
        );
        assert!(!second[0].is_retired());
        assert_eq!(
            b.set_endpoints(&[addr(3), addr(2)]),
            EndpointsDelta::default()
        );
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn an_endpoint_listed_by_two_backends_lives_until_both_drop_it() {
        let pool = Arc::new(Pool::new(TransportConfig::default()));
        let a = backend(&pool, "a");
        let b = backend(&pool, "b");
        a.set_endpoints(&[addr(1)]);
        b.set_endpoints(&[addr(1)]);
        let shared = a.endpoints().all()[0].clone();
        assert!(Arc::ptr_eq(&shared, &b.endpoints().all()[0]));
        a.set_endpoints(&[]);
        assert!(!shared.is_retired());
        drop(b);
        assert!(
            shared.is_retired(),
            "a dropped backend leaves its endpoints"
        );
        assert_eq!(pool.len(), 0);
    }
}
