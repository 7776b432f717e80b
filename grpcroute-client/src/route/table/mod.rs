//! The compiled GRPCRoute table: immutable, built from a [`Model`], indexed for the
//! per-call path, and replaced whole when routes, Services or grants change. When only
//! routes changed, the new table shares with the one it replaces every route and frontend
//! the change did not touch (see `memo`), so a route change costs about what it touches.
//!
//! Building it resolves every reference once (parentRefs to frontends, backendRefs to the
//! backends they name, grants), precomputes the spec's precedence order, and records the
//! status each route would get. Calls then only read. Endpoints are not part of it: a
//! backend is named by a [`BackendSlot`], which the dispatcher binds to the backend's
//! runtime state, so an endpoint change never recompiles a table.

mod compile;
mod memo;
mod status;

use std::{collections::HashMap, net::IpAddr, sync::Arc};

/// The per-call maps hash with foldhash: their keys come from configuration, so a faster,
/// non-cryptographic hash cannot be turned against them (a request only looks keys up).
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

use http::HeaderMap;

pub(crate) use self::compile::{GrantPolicy, compile};
pub use self::status::{Condition, ConditionStatus, ParentReference, ParentStatus, RouteStatus};
use super::BackendKey;
use crate::{
    model::InvalidObject,
    model::{HeaderModifier, ObjectKey, RouteMatch},
    series::{CallStats, SeriesKey, SeriesRegistry, SeriesSlot, ServiceSeries},
};

/// Everything the router needs, for one version of the configuration.
#[derive(Debug, Default)]
pub(crate) struct Table {
    /// Services by namespace, then name.
    services: FastMap<Box<str>, FastMap<Box<str>, ServiceEntry>>,
    cluster_ips: FastMap<IpAddr, ObjectKey>,
    pub(crate) statuses: Vec<RouteStatus>,
    pub(crate) rejected: Vec<InvalidObject>,
    /// The backend of every [`BackendSlot`] of the table, by slot id.
    pub(crate) backends: Vec<BackendKey>,
    /// The BackendTLSPolicy each Service port connects under, and each policy's outcome.
    pub(crate) backend_tls: super::backend_tls::BackendTlsTable,
    /// What the next compile may reuse.
    memo: memo::Memo,
}

#[derive(Debug)]
pub(crate) struct ServiceEntry {
    pub(crate) key: ObjectKey,
    /// One frontend per Service port.
    pub(crate) ports: Vec<(u16, Arc<Frontend>)>,
}

impl Table {
    pub(crate) fn service(&self, namespace: &str, name: &str) -> Option<&ServiceEntry> {
        self.services.get(namespace)?.get(name)
    }

    pub(crate) fn service_by_ip(&self, ip: IpAddr) -> Option<&ServiceEntry> {
        let key = self.cluster_ips.get(&ip)?;
        self.service(key.namespace(), key.name())
    }
}

impl ServiceEntry {
    pub(crate) fn frontend(&self, port: u16) -> Option<&Arc<Frontend>> {
        self.ports.iter().find(|(p, _)| *p == port).map(|(_, f)| f)
    }
}

/// A Service port as a destination: the routes attached to it, and its own endpoints for
/// when none are.
#[derive(Debug)]
pub(crate) struct Frontend {
    pub(crate) service: ObjectKey,
    pub(crate) port: u16,
    pub(crate) producer: Option<Arc<RouteSet>>,
    /// Consumer routes, by the namespace of the clients they apply to.
    pub(crate) consumers: FastMap<Box<str>, Arc<RouteSet>>,
    pub(crate) passthrough: Arc<BackendSlot>,
    /// The series of pass-through calls.
    pub(crate) passthrough_series: SeriesSlot,
    /// The series of calls that matched no rule.
    pub(crate) unmatched_series: SeriesSlot,
}

impl Frontend {
    /// The routes that apply to a client in `client_namespace` (GEP-1294): its own
    /// namespace's consumer routes if there are any, else the producer routes. The two are
    /// never merged.
    pub(crate) fn route_set(&self, client_namespace: &str) -> Option<&Arc<RouteSet>> {
        self.consumers
            .get(client_namespace)
            .or(self.producer.as_ref())
    }

    fn route_sets(&self) -> impl Iterator<Item = &RouteSet> {
        self.producer
            .iter()
            .chain(self.consumers.values())
            .map(|s| &**s)
    }
}

/// Whether a set of routes came from the Service's namespace or the client's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteSetKind {
    /// Routes in the client's namespace, attached to a Service in another namespace.
    Consumer,
    /// Routes in the Service's own namespace.
    Producer,
}

/// The merged rules of every route of one set, in precedence order.
#[derive(Debug)]
pub(crate) struct RouteSet {
    pub(crate) kind: RouteSetKind,
    /// `ns/a, ns/b`: the routes of the set, for error messages (built once, not per
    /// failed call).
    pub(crate) routes_label: Arc<str>,
    /// Candidates for calls to each service that some match names exactly, merged with the
    /// generic ones; sorted so the first that matches is the best.
    by_service: FastMap<Box<str>, Box<[Candidate]>>,
    /// Candidates that do not name one exact service (method-only, regex, no method).
    generic: Box<[Candidate]>,
}

#[derive(Clone, Debug)]
pub(crate) struct Candidate {
    pub(crate) matcher: Arc<RouteMatch>,
    pub(crate) rule: Arc<CompiledRule>,
    /// The index this candidate sits in already guarantees its exact service matches.
    pub(crate) service_indexed: bool,
    /// The series of the rule's calls from this frontend.
    pub(crate) series: Arc<RuleSeries>,
}

/// The call series of one rule as seen from one frontend.
#[derive(Debug)]
pub(crate) struct RuleSeries {
    /// Calls the rule refused before picking a backend.
    pub(crate) rule: SeriesSlot,
    /// Calls sent to each backendRef, in the rule's order.
    pub(crate) backends: Box<[SeriesSlot]>,
}

impl RuleSeries {
    pub(crate) fn new(rule: &CompiledRule) -> Self {
        Self {
            rule: SeriesSlot::default(),
            backends: rule
                .backends
                .iter()
                .map(|_| SeriesSlot::default())
                .collect(),
        }
    }
}

/// The series a call counts in: a slot of the table, and what names it.
#[derive(Debug)]
pub(crate) struct SeriesRef<'s> {
    pub(crate) slot: &'s SeriesSlot,
    pub(crate) frontend: &'s Frontend,
    pub(crate) of: SeriesOf<'s>,
}

/// What kind of calls a series counts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum SeriesOf<'s> {
    /// Calls to a frontend without routes.
    Passthrough,
    /// Calls that matched no rule.
    Unmatched,
    /// Calls a rule refused before picking a backend.
    Rule(&'s CompiledRule),
    /// Calls sent (or failed) to a backend of a rule.
    Backend(&'s CompiledRule, &'s CompiledBackend),
}

impl<'s> SeriesOf<'s> {
    /// The rule that took the call, if one did.
    pub(crate) fn rule(self) -> Option<&'s CompiledRule> {
        match self {
            Self::Rule(r) | Self::Backend(r, _) => Some(r),
            Self::Passthrough | Self::Unmatched => None,
        }
    }

    /// The backendRef picked, if one was.
    pub(crate) fn backend(self) -> Option<&'s CompiledBackend> {
        match self {
            Self::Backend(_, b) => Some(b),
            _ => None,
        }
    }
}

impl<'s> SeriesRef<'s> {
    /// The series, registered by the first call that needs it.
    pub(crate) fn stats(&self, registry: &SeriesRegistry) -> &'s Arc<CallStats> {
        self.slot.get(registry, || self.key())
    }

    /// The Service port the call was sent (or failed) to: the backend picked, or for a
    /// pass-through call the frontend itself.
    pub(crate) fn backend_service(&self) -> Option<crate::BackendService> {
        match self.of {
            SeriesOf::Passthrough => Some(crate::BackendService {
                service: self.frontend.service.clone(),
                port: Some(self.frontend.port),
            }),
            SeriesOf::Backend(_, b) => Some(b.backend_service()),
            SeriesOf::Unmatched | SeriesOf::Rule(_) => None,
        }
    }

    fn key(&self) -> SeriesKey {
        SeriesKey::Service(ServiceSeries {
            frontend: Some((self.frontend.service.clone(), self.frontend.port)),
            rule: self.of.rule().map(|r| (r.route.clone(), r.index)),
            backend: self.backend_service(),
        })
    }
}

impl Table {
    /// Whether this table can still route calls into the series `key`: its Service port
    /// exists, and so do its route rule and backendRef.
    pub(crate) fn reaches(&self, key: &ServiceSeries) -> bool {
        let Some((service, port)) = &key.frontend else {
            return true;
        };
        let Some(frontend) = self
            .service(service.namespace(), service.name())
            .and_then(|s| s.frontend(*port))
        else {
            return false;
        };
        let Some((route, index)) = &key.rule else {
            // Pass-through calls, and calls that matched no rule.
            return true;
        };
        frontend.route_sets().any(|set| {
            set.generic
                .iter()
                .chain(set.by_service.values().flat_map(|c| c.iter()))
                .any(|c| {
                    c.rule.route == *route
                        && c.rule.index == *index
                        && key.backend.as_ref().is_none_or(|b| {
                            c.rule.backends.iter().any(|x| x.backend_service() == *b)
                        })
                })
        })
    }
}

impl RouteSet {
    /// The rule that takes this call, by the spec's precedence: the first candidate in the
    /// precomputed order that matches.
    pub(crate) fn find(
        &self,
        service: &str,
        method: &str,
        headers: &HeaderMap,
    ) -> Option<&Candidate> {
        let candidates = self.by_service.get(service).unwrap_or(&self.generic);
        candidates.iter().find(|c| {
            if c.service_indexed {
                c.matcher.matches_indexed(method, headers)
            } else {
                c.matcher.matches(service, method, headers)
            }
        })
    }
}

/// One rule of one route, ready to serve.
#[derive(Debug)]
pub(crate) struct CompiledRule {
    pub(crate) route: ObjectKey,
    pub(crate) index: usize,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) filters: Filters,
    pub(crate) backends: Box<[CompiledBackend]>,
    /// Running sums of the weights, for a binary-search pick; empty when every weight is 0.
    cumulative: Box<[u64]>,
}

impl CompiledRule {
    /// Picks a backend by weight with `random` uniform in `0..u64::MAX`: its index in
    /// `backends`. `None` when the rule has no backends with weight above 0.
    pub(crate) fn pick_index(&self, random: u64) -> Option<usize> {
        weighted_index(&self.cumulative, random).filter(|&i| i < self.backends.len())
    }

    pub(crate) fn total_weight(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// `"shop/checkout-split rule 0"` or `"shop/checkout-split rule 1 (\"canary\")"`.
    pub(crate) fn describe(&self) -> String {
        match &self.name {
            Some(name) => format!("GRPCRoute {} rule {} ({name:?})", self.route, self.index),
            None => format!("GRPCRoute {} rule {}", self.route, self.index),
        }
    }
}

/// The index chosen by a uniform `random` over running weight sums `cumulative`.
pub(crate) fn weighted_index(cumulative: &[u64], random: u64) -> Option<usize> {
    let total = *cumulative.last()?;
    // Lemire's multiply-shift maps a 64-bit random value to 0..total with a bias below
    // 2^-32 for any total the API allows (16 × 1,000,000), and without a division.
    let r = ((u128::from(random) * u128::from(total)) >> 64) as u64;
    Some(cumulative.partition_point(|&c| c <= r))
}

/// The filters of a rule or of a backendRef.
#[derive(Debug, Default)]
pub(crate) struct Filters {
    pub(crate) request_headers: Option<HeaderModifier>,
    pub(crate) response_headers: Option<HeaderModifier>,
    pub(crate) mirrors: Vec<CompiledMirror>,
    /// Set when a filter cannot be applied: calls through it fail with this reason.
    pub(crate) unsupported: Option<String>,
}

#[derive(Debug)]
pub(crate) struct CompiledMirror {
    pub(crate) numerator: u32,
    pub(crate) denominator: u32,
    /// An error when the mirror's backendRef does not resolve; the mirror is then skipped
    /// (the primary call is never affected) and the route reports ResolvedRefs=False.
    pub(crate) target: Result<Arc<BackendSlot>, InvalidBackend>,
}

/// One backendRef of a rule.
#[derive(Debug)]
pub(crate) struct CompiledBackend {
    pub(crate) namespace: Arc<str>,
    pub(crate) name: Arc<str>,
    pub(crate) port: Option<u16>,
    pub(crate) weight: u32,
    pub(crate) target: Result<Arc<BackendSlot>, InvalidBackend>,
    pub(crate) filters: Filters,
}

impl CompiledBackend {
    /// The backend Service and port, for [`crate::RoutedTo`].
    pub(crate) fn backend_service(&self) -> crate::BackendService {
        crate::BackendService {
            service: ObjectKey::new(self.namespace.clone(), self.name.clone()),
            port: self.port,
        }
    }

    /// `"shop/checkout-v2:50051"`.
    pub(crate) fn describe(&self) -> String {
        match self.port {
            Some(port) => format!("{}/{}:{port}", self.namespace, self.name),
            None => format!("{}/{}", self.namespace, self.name),
        }
    }
}

/// Why a backendRef cannot take traffic; the reasons are the `ResolvedRefs` ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InvalidBackend {
    pub(crate) reason: &'static str,
    pub(crate) message: String,
}

/// A Service port as a destination: where a backendRef (or a pass-through call) is sent.
/// `id` is its index in [`Table::backends`], by which the dispatcher finds the backend's
/// endpoints.
#[derive(Debug)]
pub(crate) struct BackendSlot {
    pub(crate) id: usize,
    pub(crate) service: ObjectKey,
    pub(crate) port: u16,
}

impl BackendSlot {
    pub(crate) fn describe(&self) -> String {
        format!("{}:{}", self.service, self.port)
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
