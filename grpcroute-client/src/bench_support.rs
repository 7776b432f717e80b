//! Entry points for the benchmarks in `benches/`: the pure routing decision without the
//! transport. Not a stable API.

use std::sync::Arc;

use http::HeaderMap;

use crate::{
    CallError, Mesh, TargetError,
    dispatch::Core,
    route::{decide as router, table::weighted_index},
    series::CallMeter,
    snapshot::Snapshot,
    target::Target,
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

    /// Routes a call: frontend lookup, route set, rule match, weighted pick. Returns the
    /// name of the backend Service chosen.
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
