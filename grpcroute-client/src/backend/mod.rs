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

pub(crate) mod balance;
mod endpoints;
mod registry;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use arc_swap::ArcSwap;

pub(crate) use self::{endpoints::service_endpoints, registry::Registry};
pub(crate) use crate::route::BackendKey;
use crate::transport::{Endpoint, Pool, Security};

/// One backend's runtime state. Shared by every table and call that sends there.
#[derive(Debug)]
pub(crate) struct Backend {
    /// The backend's key, rendered once, for error messages on the per-call path.
    label: Arc<str>,
    pool: Arc<Pool>,
    endpoints: ArcSwap<EndpointSet>,
    /// How its endpoints are connected to. Only configuration updates read or change it
    /// (calls reach the endpoints, which carry their own).
    security: std::sync::Mutex<Security>,
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

/// One running mirrored call; dropping it frees its slot.
#[derive(Debug)]
pub(crate) struct MirrorSlot(Arc<MirrorStats>);

impl Drop for MirrorSlot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The endpoints of a backend at one moment: immutable, replaced whole.
#[derive(Debug, Default)]
pub(crate) struct EndpointSet {
    endpoints: Box<[Arc<Endpoint>]>,
}

impl EndpointSet {
    /// Every endpoint, sorted by address.
    pub(crate) fn all(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }
}

impl Backend {
    fn new(key: &BackendKey, pool: Arc<Pool>) -> Self {
        Self {
            label: key.to_string().into(),
            pool,
            endpoints: ArcSwap::default(),
            security: std::sync::Mutex::new(Security::Plaintext),
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
        let addrs: Vec<SocketAddr> = current.endpoints.iter().map(|e| e.addr()).collect();
        let joined = self.pool.join_all(&addrs, &security);
        *current_security = security;
        self.endpoints.store(Arc::new(EndpointSet {
            endpoints: joined.into_boxed_slice(),
        }));
        for e in current.endpoints.iter() {
            self.pool.leave(e);
        }
        EndpointsDelta {
            added: addrs.len(),
            removed: addrs.len(),
        }
    }

    /// Replaces the endpoint set with `addrs` (in any order, duplicates ignored). Endpoints
    /// the backend keeps keep their connections and load; those it drops are retired once
    /// no other backend lists them. Returns how many addresses were added and removed.
    pub(crate) fn set_endpoints(&self, addrs: &[SocketAddr]) -> EndpointsDelta {
        let mut sorted = addrs.to_vec();
        sorted.sort();
        sorted.dedup();
        let current = self.endpoints.load_full();
        if current
            .endpoints
            .iter()
            .map(|e| e.addr())
            .eq(sorted.iter().copied())
        {
            return EndpointsDelta::default();
        }
        // Join the new set before leaving the old one, so an address in both never has
        // zero members in between (which would retire it).
        let joined = self.pool.join_all(&sorted, &self.lock_security());
        let added = joined
            .iter()
            .filter(|e| {
                current
                    .endpoints
                    .binary_search_by_key(&e.addr(), |c| c.addr())
                    .is_err()
            })
            .count();
        let removed = current
            .endpoints
            .iter()
            .filter(|c| sorted.binary_search(&c.addr()).is_err())
            .count();
        self.endpoints.store(Arc::new(EndpointSet {
            endpoints: joined.into_boxed_slice(),
        }));
        for e in current.endpoints.iter() {
            self.pool.leave(e);
        }
        EndpointsDelta { added, removed }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        for e in self.endpoints.load().endpoints.iter() {
            self.pool.leave(e);
        }
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
