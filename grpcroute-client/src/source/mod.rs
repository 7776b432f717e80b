//! Where configuration comes from. A [`Source`] runs in the background and publishes whole
//! configurations through an [`Updater`]; the mesh compiles and swaps them in.
//!
//! Built in: [`Resources`] (a fixed configuration, e.g. built in code), [`ManifestDir`]
//! (a folder of manifests, reloaded on change) and, with the `kube` feature (on by
//! default), [`KubeSource`] (the Kubernetes API, watched).

mod health;
#[cfg(feature = "kube")]
mod kube;
mod manifest_dir;
#[cfg(feature = "xds")]
pub(crate) mod xds;

use std::{
    future::Future,
    sync::{Arc, Weak},
    time::Duration,
};

#[cfg(feature = "kube")]
pub use self::kube::KubeSource;
pub use self::{
    health::{ChangeSummary, SourceHealth, UpdateReport},
    manifest_dir::ManifestDir,
};
use crate::{
    Resources,
    model::{EndpointSlice, Model, ObjectKey},
};

/// A producer of routing configuration.
pub trait Source: Send + 'static {
    /// Runs until done or until [`Updater::update`] reports the mesh is gone. Publishes
    /// each complete configuration with [`Updater::update`]; on trouble, reports it with
    /// [`Updater::report_error`] and keeps the last good configuration in place.
    fn run(self, updater: Updater) -> impl Future<Output = ()> + Send + 'static;
}

/// What a source hands the mesh.
#[derive(Debug)]
pub(crate) enum Update {
    /// The whole validated configuration.
    Model(Model),
    /// The complete EndpointSlices of these Services, now; nothing else changed. The mesh
    /// updates the Services' backends in place, without compiling any route.
    // Only the Kubernetes source (and the benchmarks' hooks) send endpoint-only changes.
    #[cfg_attr(not(any(feature = "kube", feature = "bench")), allow(dead_code))]
    Endpoints(Vec<EndpointsChange>),
}

/// Every EndpointSlice of one Service.
#[derive(Debug)]
pub(crate) struct EndpointsChange {
    pub(crate) service: ObjectKey,
    pub(crate) slices: Vec<Arc<EndpointSlice>>,
}

/// Where an [`Updater`] delivers: the mesh, seen from the sources (which know nothing else
/// of it).
pub(crate) trait ConfigSink: Send + Sync {
    fn apply(&self, update: Update) -> UpdateReport;
    fn report_error(&self, error: String);
    fn report_connection(&self, connected: bool);
    fn report_latency(&self, latency: Duration);
}

/// Publishes configuration to a mesh. Holds the mesh weakly: a source never keeps a mesh
/// alive.
#[derive(Clone)]
pub struct Updater {
    sink: Weak<dyn ConfigSink>,
}

impl std::fmt::Debug for Updater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Updater")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl Updater {
    pub(crate) fn new(sink: Weak<dyn ConfigSink>) -> Self {
        Self { sink }
    }

    /// Replaces the mesh's configuration. `None` once the mesh has been dropped.
    pub fn update(&self, resources: &Resources) -> Option<UpdateReport> {
        self.apply(Update::Model(resources.to_model()))
    }

    /// Records a source problem; calls keep using the last good configuration, and calls
    /// that wait for a first one report this error. `false` once the mesh has been
    /// dropped.
    pub fn report_error(&self, error: impl std::fmt::Display) -> bool {
        match self.sink.upgrade() {
            Some(sink) => {
                sink.report_error(error.to_string());
                true
            }
            None => false,
        }
    }

    /// Whether the mesh has been dropped.
    pub fn is_closed(&self) -> bool {
        self.sink.strong_count() == 0
    }

    /// Records whether the source is in contact with where its configuration comes from
    /// (e.g. the Kubernetes API server). Outages are logged with their duration and shown
    /// by [`Mesh::source_health`](crate::Mesh::source_health); the last good configuration
    /// keeps serving meanwhile.
    pub fn report_connection(&self, connected: bool) {
        if let Some(sink) = self.sink.upgrade() {
            sink.report_connection(connected);
        }
    }

    /// Records how long the last change took from arriving at the source to being live.
    pub fn report_latency(&self, latency: std::time::Duration) {
        if let Some(sink) = self.sink.upgrade() {
            sink.report_latency(latency);
        }
    }

    /// Publishes an already validated update (sources inside this crate convert objects
    /// incrementally and keep the results).
    pub(crate) fn apply(&self, update: Update) -> Option<UpdateReport> {
        Some(self.sink.upgrade()?.apply(update))
    }
}

/// A fixed configuration is a source that publishes once.
impl Source for Resources {
    async fn run(self, updater: Updater) {
        updater.update(&self);
    }
}
