//! The state behind a [`Mesh`](super::Mesh): the table calls read, the endpoint pool,
//! and how configuration updates replace the table.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

use super::health::HealthState;
use crate::{
    convert::InvalidObject,
    error::CallError,
    model::{Model, ObjectKey},
    rng::SharedRng,
    route::table::{self, GrantPolicy, Snapshot},
    series::SeriesRegistry,
    transport::Pool,
};

/// What an update changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UpdateReport {
    /// Counts the updates applied, from 1.
    pub version: u64,
    /// Routes, Services, EndpointSlices and ReferenceGrants added, changed and removed.
    pub changes: ChangeSummary,
    /// Endpoint addresses that started and stopped taking calls.
    pub endpoints_added: usize,
    /// See `endpoints_added`.
    pub endpoints_removed: usize,
    /// Objects left out because they are invalid.
    pub rejected: Vec<InvalidObject>,
}

/// Object counts by change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeSummary {
    /// Objects that are new.
    pub added: usize,
    /// Objects whose content changed.
    pub changed: usize,
    /// Objects that are gone.
    pub removed: usize,
}

pub(crate) struct Shared {
    pub(crate) namespace: Arc<str>,
    pub(crate) cluster_domain: String,
    pub(super) grant_policy: GrantPolicy,
    pub(crate) ready_timeout: Duration,
    pub(crate) report_routing: bool,
    /// The table every call reads; `None` until the first update.
    pub(crate) snapshot: ArcSwapOption<Snapshot>,
    /// The version of the current snapshot; 0 until the first update.
    pub(super) ready: watch::Sender<u64>,
    pub(crate) pool: Pool,
    pub(crate) rng: SharedRng,
    /// Only updates take this lock; calls never do.
    pub(super) state: Mutex<UpdateState>,
    pub(super) tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Call statistics, which the tables hold and calls record into.
    pub(crate) series: SeriesRegistry,
}

#[derive(Default)]
pub(super) struct UpdateState {
    pub(super) health: HealthState,
    pub(super) version: u64,
    /// Object contents of the last update, to describe what the next one changes.
    objects: HashMap<(&'static str, ObjectKey), ObjectDigest>,
    pub(super) last_error: Option<String>,
}

/// An object of the last update, kept to tell whether the next one changes it.
#[derive(PartialEq)]
enum ObjectDigest {
    Service(Arc<crate::model::Service>),
    EndpointSlice(Arc<crate::model::EndpointSlice>),
    Route(Arc<crate::model::GrpcRoute>),
    Grant(Arc<crate::model::ReferenceGrant>),
    Rejected(InvalidObject),
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("namespace", &self.namespace)
            .field("ready", &self.snapshot.load().is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

impl Shared {
    pub(crate) fn apply(&self, model: Model) -> UpdateReport {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let snapshot = Arc::new(table::compile(&model, self.grant_policy, &self.pool));
        let previous = self.snapshot.swap(Some(snapshot.clone()));

        // Endpoints that left the configuration take no new calls; their connections close
        // once the calls in flight on them finish.
        let kept: HashSet<*const crate::transport::Endpoint> =
            snapshot.endpoints.iter().map(Arc::as_ptr).collect();
        let mut endpoints_removed = 0;
        let mut before = HashSet::new();
        if let Some(previous) = &previous {
            for e in &previous.endpoints {
                before.insert(Arc::as_ptr(e));
                if !kept.contains(&Arc::as_ptr(e)) {
                    e.retire();
                    endpoints_removed += 1;
                }
            }
        }
        // Series of routes, rules and backends that are gone leave with them.
        self.series.retain_reachable(|key| snapshot.reaches(key));
        let endpoints_added = snapshot
            .endpoints
            .iter()
            .filter(|e| !before.contains(&Arc::as_ptr(e)))
            .count();

        let objects = digest(&model);
        let mut changes = ChangeSummary::default();
        for (key, digest) in &objects {
            match state.objects.get(key) {
                None => changes.added += 1,
                Some(old) if old != digest => changes.changed += 1,
                Some(_) => {}
            }
        }
        changes.removed = state
            .objects
            .keys()
            .filter(|k| !objects.contains_key(k))
            .count();
        state.objects = objects;
        state.version += 1;
        state.last_error = None;
        state.health.last_update = Some(SystemTime::now());
        if state.health.disconnected_since.is_none() {
            state.health.connected = true;
        }
        self.ready.send_replace(state.version);

        tracing::info!(
            version = state.version,
            added = changes.added,
            changed = changes.changed,
            removed = changes.removed,
            endpoints_added,
            endpoints_removed,
            routes = model.routes.len(),
            services = model.services.len(),
            rejected = snapshot.rejected.len(),
            "routing configuration updated"
        );
        for invalid in &snapshot.rejected {
            tracing::warn!(%invalid, "object rejected");
        }
        UpdateReport {
            version: state.version,
            changes,
            endpoints_added,
            endpoints_removed,
            rejected: snapshot.rejected.clone(),
        }
    }

    pub(crate) fn report_error(&self, error: String) {
        tracing::warn!(%error, "configuration source error; keeping the last good configuration");
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_error = Some(error);
    }

    /// The current table, waiting (bounded) for the first one.
    pub(crate) async fn snapshot(&self) -> Result<Arc<Snapshot>, CallError> {
        if let Some(s) = self.snapshot.load_full() {
            return Ok(s);
        }
        let mut rx = self.ready.subscribe();
        let waited = tokio::time::timeout(self.ready_timeout, rx.wait_for(|v| *v > 0)).await;
        match (waited, self.snapshot.load_full()) {
            (Ok(_), Some(s)) => Ok(s),
            _ => Err(CallError::NotSynced {
                waited: self.ready_timeout,
                last_error: self
                    .state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .last_error
                    .clone(),
            }),
        }
    }
}

fn digest(model: &Model) -> HashMap<(&'static str, ObjectKey), ObjectDigest> {
    let mut out = HashMap::new();
    for s in &model.services {
        out.insert(("Service", s.key.clone()), ObjectDigest::Service(s.clone()));
    }
    for s in &model.endpoint_slices {
        out.insert(
            ("EndpointSlice", s.key.clone()),
            ObjectDigest::EndpointSlice(s.clone()),
        );
    }
    for r in &model.routes {
        out.insert(("GRPCRoute", r.key.clone()), ObjectDigest::Route(r.clone()));
    }
    for g in &model.grants {
        out.insert(
            ("ReferenceGrant", g.key.clone()),
            ObjectDigest::Grant(g.clone()),
        );
    }
    for r in &model.rejected {
        out.insert(
            ("Rejected", r.key().clone()),
            ObjectDigest::Rejected(r.clone()),
        );
    }
    out
}
