//! Entry points for the benchmarks in `benches/`, behind the non-default `bench` feature:
//! the routing decision without the transport, the per-call decision as a call makes it
//! (snapshot load and endpoint pick included), the Kubernetes source's endpoint-only
//! update, and probes of single costs on the call path. Not a stable API, not documented,
//! not compiled without the feature.

use std::{net::SocketAddr, sync::Arc};

use http::{HeaderMap, Request, uri::Authority};
use tonic::body::Body;

use crate::{
    CallError, Mesh, Resources, TargetError, UpdateReport,
    backend::balance,
    dispatch::{self, Core},
    model::{EndpointSlice, ObjectKey},
    rng::SharedRng,
    route::{decide as router, table::weighted_index},
    series::CallMeter,
    snapshot::Snapshot,
    source::{EndpointsChange, Update},
    target::Target,
    transport::Replay,
};

/// The routing decision over a mesh's current table.
#[derive(Debug)]
pub struct Decider {
    core: Arc<Core>,
    snapshot: Arc<Snapshot>,
    namespace: Arc<str>,
    cluster_domain: String,
}

/// A parsed target.
#[derive(Debug)]
pub struct DeciderTarget(Target);

impl Decider {
    /// The decision over `mesh`'s table; `None` before its first update.
    pub fn new(mesh: &Mesh) -> Option<Self> {
        let core = mesh.shared.core.clone();
        Some(Self {
            snapshot: core.snapshot.load_full()?,
            namespace: core.namespace.clone(),
            cluster_domain: core.cluster_domain.clone(),
            core,
        })
    }

    /// Parses a target once, as a channel does.
    ///
    /// # Errors
    ///
    /// When it is not a Service address.
    pub fn target(&self, target: &str) -> Result<DeciderTarget, TargetError> {
        Target::parse(target, &self.cluster_domain).map(DeciderTarget)
    }

    /// Routes a call: frontend lookup, route set, rule match, weighted pick, over the
    /// snapshot taken when the decider was made. Returns the name of the backend Service
    /// chosen.
    ///
    /// # Errors
    ///
    /// The call's routing failure.
    pub fn decide(
        &self,
        target: &DeciderTarget,
        path: &str,
        headers: &HeaderMap,
        random: u64,
    ) -> Result<&str, CallError> {
        Ok(self
            .decision(target, path, headers, random)?
            .target
            .service
            .name())
    }

    fn decision(
        &self,
        target: &DeciderTarget,
        path: &str,
        headers: &HeaderMap,
        random: u64,
    ) -> Result<router::Decision<'_>, CallError> {
        let frontend = router::frontend(&self.snapshot.table, &target.0, &self.namespace)?;
        Ok(router::decide(
            frontend,
            &self.namespace,
            path,
            headers,
            random,
        )?)
    }

    /// Everything the per-call path does before it touches a connection, in its order
    /// (`dispatch::dispatch` and `dispatch::send`): load the mesh's current snapshot (a
    /// reference-count increment, as a call takes it), find the frontend, decide with a
    /// draw from the mesh's shared random source, find the bound backend, load its
    /// endpoint set and pick an endpoint by power of two choices (two more draws). Returns
    /// the endpoint's address.
    ///
    /// # Errors
    ///
    /// The call's routing failure, or `NoEndpoints` when the backend has none usable.
    pub fn route(
        &self,
        target: &DeciderTarget,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<SocketAddr, CallError> {
        let no_endpoints = |backend: &str| CallError::NoEndpoints {
            backend: backend.to_string(),
            via: String::new(),
        };
        let Some(snapshot) = self.core.snapshot.load_full() else {
            return Err(no_endpoints("(no configuration)"));
        };
        let frontend = router::frontend(&snapshot.table, &target.0, &self.core.namespace)?;
        let decision = router::decide(
            frontend,
            &self.core.namespace,
            path,
            headers,
            self.core.rng.next(),
        )?;
        let Some(backend) = snapshot.backend(decision.target) else {
            return Err(no_endpoints("(unbound)"));
        };
        let set = backend.endpoints();
        let endpoints = set.all();
        let Some(first) = endpoints.first() else {
            return Err(no_endpoints(backend.label()));
        };
        let now = first.now();
        balance::pick(endpoints, now, &mut self.core.rng.handle(), |_| false)
            .map(|i| endpoints[i].addr())
            .ok_or_else(|| no_endpoints(backend.label()))
    }

    /// [`Decider::decide`], with the call's accounting as the per-call path does it: the
    /// meter started, placed in the decision's series, and finished `OK` (the metrics' cost
    /// per call is the difference).
    ///
    /// # Errors
    ///
    /// The call's routing failure.
    pub fn decide_and_count(
        &self,
        target: &DeciderTarget,
        path: &str,
        headers: &HeaderMap,
        random: u64,
    ) -> Result<&str, CallError> {
        let mut meter = CallMeter::start(self.core.series.unrouted());
        let decision = self.decision(target, path, headers, random)?;
        meter.place(decision.series.stats(&self.core.series));
        meter.finish(tonic::Code::Ok);
        Ok(decision.target.service.name())
    }
}

/// The weighted pick alone: the index chosen over running weight sums.
pub fn weighted_index_of(cumulative: &[u64], random: u64) -> Option<usize> {
    weighted_index(cumulative, random)
}

/// An endpoint-only change, as the Kubernetes source publishes it after EndpointSlice
/// events: for every Service touched, all of its valid EndpointSlices, already validated.
#[derive(Debug)]
pub struct EndpointsUpdate(Vec<EndpointsChange>);

impl EndpointsUpdate {
    /// Validates the EndpointSlices of `resources` (as the source converts each slice of an
    /// event) and groups them by Service. Every Service named must be given all of its
    /// slices: the mesh replaces a touched Service's slices with these.
    pub fn new(resources: &Resources) -> Self {
        let model = resources.to_model();
        let mut by_service: std::collections::BTreeMap<ObjectKey, Vec<Arc<EndpointSlice>>> =
            std::collections::BTreeMap::new();
        for slice in model.endpoint_slices {
            by_service
                .entry(slice.service_key())
                .or_default()
                .push(slice);
        }
        Self(
            by_service
                .into_iter()
                .map(|(service, slices)| EndpointsChange { service, slices })
                .collect(),
        )
    }

    /// Every slice of Service `namespace/name` is gone (the Service keeps no endpoints).
    pub fn removed(namespace: &str, name: &str) -> Self {
        Self(vec![EndpointsChange {
            service: ObjectKey::new(namespace, name),
            slices: Vec::new(),
        }])
    }

    /// Number of Services touched.
    pub fn services(&self) -> usize {
        self.0.len()
    }
}

/// Applies an endpoint-only change the way the Kubernetes source does (`Update::Endpoints`
/// through the mesh's configuration sink): the touched Services' backends get their new
/// endpoint sets in place; no route is compiled.
pub fn apply_endpoints(mesh: &Mesh, update: EndpointsUpdate) -> UpdateReport {
    mesh.shared.apply(Update::Endpoints(update.0))
}

/// Whether the mesh's table is the one it was when `previous` was taken: an update that
/// compiled routes replaced it.
pub fn same_table(mesh: &Mesh, previous: &TableId) -> bool {
    table_id(mesh).0 == previous.0
}

/// Identifies the routing table in force (see [`same_table`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableId(usize);

/// The identity of the mesh's current table.
pub fn table_id(mesh: &Mesh) -> TableId {
    TableId(
        mesh.shared
            .core
            .snapshot
            .load_full()
            .map_or(0, |s| Arc::as_ptr(&s.table) as usize),
    )
}

/// Endpoints the mesh's connection pool holds (shared by address across backends).
pub fn pooled_endpoints(mesh: &Mesh) -> usize {
    mesh.shared.registry.endpoint_count()
}

/// What the call path keeps of a unary request in case a server refuses its stream
/// (`Replay::capture`, on every call): `true` when a copy was kept.
pub fn replay_capture(req: &mut Request<Body>) -> bool {
    Replay::capture(req).is_some()
}

/// Size in bytes of the future `dispatch::route` returns for one call: the state a
/// channel's call keeps across its awaits (the channel boxes it, inside the tracing
/// instrumentation and its own `async` block, so the allocation is at least this).
///
/// # Errors
///
/// When `target` is not a Service address.
pub fn call_future_bytes(mesh: &Mesh, target: &str) -> Result<usize, TargetError> {
    let core = mesh.shared.core.clone();
    let parsed = Target::parse(target, &core.cluster_domain)?;
    let authority = Authority::try_from(parsed.to_string().as_str())
        .unwrap_or_else(|_| Authority::from_static("localhost"));
    let future = dispatch::route(&core, &parsed, &authority, Request::new(Body::empty()));
    Ok(std::mem::size_of_val(&future))
}

/// The mesh's random source, as every call draws from it (one atomic counter shared by
/// all calls of a mesh).
#[derive(Debug)]
pub struct Rng(SharedRng);

impl Rng {
    /// A source seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(SharedRng::new(seed))
    }

    /// One draw.
    pub fn next(&self) -> u64 {
        self.0.next()
    }
}
