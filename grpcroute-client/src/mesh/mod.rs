//! [`Mesh`]: the handle an application holds. It owns the current routing table, the
//! endpoint pool, and the source that feeds it; channels and layers made from it route
//! every call by that table.

mod health;
mod shared;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

pub(crate) use self::shared::Shared;
use self::shared::UpdateState;
pub use self::{
    health::SourceHealth,
    shared::{ChangeSummary, UpdateReport},
};
use crate::{
    Channel, MeshLayer, Resources,
    authority::{Target, TargetError},
    convert::InvalidObject,
    explain::{self, CallDescription, Explanation},
    metrics::{Metrics, SeriesRegistry},
    rng::SharedRng,
    source::{Source, Updater},
    table::{GrantPolicy, RouteStatus},
    transport::{Pool, TransportConfig},
};

/// A proxyless service mesh for tonic clients.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use grpcroute_client::{Mesh, source::ManifestDir};
///
/// let mesh = Mesh::builder().namespace("web").build_with_source(ManifestDir::new("manifests"));
/// mesh.ready().await;
/// let channel = mesh.channel("checkout.shop:50051")?;
/// // let mut client = CheckoutClient::new(channel);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Mesh {
    pub(crate) shared: Arc<Shared>,
}

/// Configures a [`Mesh`].
#[derive(Debug)]
pub struct MeshBuilder {
    namespace: Option<String>,
    cluster_domain: String,
    grant_policy: GrantPolicy,
    ready_timeout: Duration,
    seed: Option<u64>,
    report_routing: bool,
    transport: TransportConfig,
}

impl Default for MeshBuilder {
    fn default() -> Self {
        Self {
            namespace: None,
            cluster_domain: "cluster.local".into(),
            grant_policy: GrantPolicy::Permissive,
            ready_timeout: Duration::from_secs(10),
            seed: None,
            report_routing: false,
            transport: TransportConfig::default(),
        }
    }
}

impl MeshBuilder {
    /// The namespace this client runs in: where a bare `svc` name resolves and whose
    /// consumer routes apply. Defaults to `POD_NAMESPACE`, then the service account's
    /// namespace file, then `default`.
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The cluster's DNS domain (default `cluster.local`), for `svc.ns.svc.<domain>` names.
    #[must_use]
    pub fn cluster_domain(mut self, domain: impl Into<String>) -> Self {
        self.cluster_domain = domain.into();
        self
    }

    /// Requires a ReferenceGrant for every cross-namespace backendRef (GEP-1294 does not;
    /// this is stricter than the spec). Access is revoked at the first configuration update
    /// without the grant.
    #[must_use]
    pub fn strict_reference_grants(mut self, strict: bool) -> Self {
        self.grant_policy = if strict {
            GrantPolicy::Strict
        } else {
            GrantPolicy::Permissive
        };
        self
    }

    /// How long a call waits for the first configuration before failing `UNAVAILABLE`
    /// (default 10 s).
    #[must_use]
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Seeds the random choices (weighted picks, load balancing, mirroring), for
    /// reproducible tests. Unseeded meshes draw their seed from the OS.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// TCP connect timeout per endpoint (default 1 s). A call whose connect fails or times
    /// out is tried on another endpoint of the same backend.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.transport.connect_timeout = timeout;
        self
    }

    /// HTTP/2 keep-alive of the endpoint connections (defaults 30 s and 10 s): while calls
    /// are in flight on a connection, it is PINGed when nothing has arrived on it for
    /// `interval`, and closed if the PING is not answered within `timeout`. This is what
    /// detects an endpoint that stops answering without closing (a partition, a frozen
    /// host): its calls in flight end `UNAVAILABLE` at most `interval + timeout` after the
    /// last byte it sent, and the next calls connect anew. Idle connections are not
    /// PINGed. A zero `interval` turns keep-alive off.
    #[must_use]
    pub fn keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.transport.keepalive_interval = (!interval.is_zero()).then_some(interval);
        self.transport.keepalive_timeout = timeout;
        self
    }

    /// How long an endpoint whose connect failed is avoided at first; the pause doubles
    /// with each further failure, up to `max` (defaults 100 ms and 10 s).
    #[must_use]
    pub fn connect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.transport.backoff_initial = initial;
        self.transport.backoff_max = max.max(initial);
        self
    }

    /// Attaches a [`RoutedTo`](crate::RoutedTo) extension to every response the mesh
    /// routes (route, rule, backend and endpoint of the call), for tools that tally where
    /// calls go. Off by default: it costs an allocation per call.
    #[must_use]
    pub fn report_routing(mut self, report: bool) -> Self {
        self.report_routing = report;
        self
    }

    /// A mesh with no configuration yet: feed it with [`Mesh::update`]. Calls made before
    /// the first update wait for it (up to the ready timeout).
    pub fn build(self) -> Mesh {
        let namespace = self.namespace.unwrap_or_else(crate::namespace::detect);
        let (ready, _) = watch::channel(0);
        Mesh {
            shared: Arc::new(Shared {
                namespace: namespace.into(),
                cluster_domain: self.cluster_domain,
                grant_policy: self.grant_policy,
                ready_timeout: self.ready_timeout,
                report_routing: self.report_routing,
                snapshot: ArcSwapOption::empty(),
                ready,
                pool: Pool::new(self.transport),
                rng: self
                    .seed
                    .map_or_else(SharedRng::from_entropy, SharedRng::new),
                state: Mutex::new(UpdateState::default()),
                tasks: Mutex::new(Vec::new()),
                series: SeriesRegistry::default(),
            }),
        }
    }

    /// A mesh fed by `source`, which runs on the current tokio runtime until the mesh (every
    /// clone, channel and layer of it) is dropped.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn build_with_source(self, source: impl Source) -> Mesh {
        let mesh = self.build();
        let updater = Updater::new(&mesh.shared);
        let task = tokio::spawn(source.run(updater));
        mesh.shared
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task.abort_handle());
        mesh
    }
}

impl Mesh {
    /// Starts configuring a mesh.
    pub fn builder() -> MeshBuilder {
        MeshBuilder::default()
    }

    /// A channel to the Service `target` names (`svc:port`, `svc.ns:port`,
    /// `svc.ns.svc[.<cluster domain>]:port`, or `ClusterIP:port`), for tonic clients:
    /// `FooClient::new(mesh.channel("foo.ns:50051")?)`. Every call through it is routed by
    /// the routes attached to that Service. Cheap to clone.
    ///
    /// # Errors
    ///
    /// When `target` is not a Kubernetes Service address.
    pub fn channel(&self, target: &str) -> Result<Channel, TargetError> {
        let parsed = Target::parse(target, &self.shared.cluster_domain)?;
        Ok(Channel::new(self.shared.clone(), parsed))
    }

    /// A tower layer that routes calls addressed (by their URI authority) to a Service of
    /// the mesh, and passes every other call to the service it wraps.
    pub fn layer(&self) -> MeshLayer {
        MeshLayer::new(self.shared.clone())
    }

    /// Replaces the whole configuration. Invalid objects are left out (each with its
    /// reason, in the report); everything else takes effect for the next call. In-flight
    /// calls are not disturbed: endpoints that disappear finish their calls first.
    pub fn update(&self, resources: &Resources) -> UpdateReport {
        self.shared.apply(resources.to_model())
    }

    /// A handle that sources use to publish configuration.
    pub fn updater(&self) -> Updater {
        Updater::new(&self.shared)
    }

    /// Waits until the mesh has a configuration.
    pub async fn ready(&self) {
        let mut rx = self.shared.ready.subscribe();
        // The sender lives in `shared`, which `self` keeps alive: this cannot fail.
        let _ = rx.wait_for(|version| *version > 0).await;
    }

    /// Notifies every configuration update: the receiver's value is the version of the
    /// configuration in force (0 before the first). For tools that act on changes, like a
    /// status writer.
    pub fn updates(&self) -> watch::Receiver<u64> {
        self.shared.ready.subscribe()
    }

    /// Whether the mesh has a configuration.
    pub fn is_ready(&self) -> bool {
        self.shared.snapshot.load().is_some()
    }

    /// The namespace the mesh routes for.
    pub fn namespace(&self) -> &str {
        &self.shared.namespace
    }

    /// What would happen to a call, without making it.
    pub fn explain(&self, call: &CallDescription) -> Explanation {
        let snapshot = self.shared.snapshot.load_full().unwrap_or_default();
        explain::explain(
            &snapshot,
            call,
            &self.shared.namespace,
            &self.shared.cluster_domain,
        )
    }

    /// The status of every GRPCRoute attached to a Service, as a GAMMA implementation
    /// reports it.
    pub fn statuses(&self) -> Vec<RouteStatus> {
        self.shared
            .snapshot
            .load()
            .as_ref()
            .map(|s| s.statuses.clone())
            .unwrap_or_default()
    }

    /// The objects of the current configuration that failed validation.
    pub fn rejected(&self) -> Vec<InvalidObject> {
        self.shared
            .snapshot
            .load()
            .as_ref()
            .map(|s| s.rejected.clone())
            .unwrap_or_default()
    }

    /// The last error a source reported, if it has not published a configuration since.
    pub fn source_error(&self) -> Option<String> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_error
            .clone()
    }

    /// Whether the source is connected, when it last updated the configuration, and its
    /// last error.
    pub fn source_health(&self) -> SourceHealth {
        self.shared.source_health()
    }

    /// The mesh's Prometheus metrics: calls by frontend, route, rule, backend and gRPC
    /// status with their latency, and the state of the configuration. See [`Metrics`].
    ///
    /// ```no_run
    /// # fn example(mesh: grpcroute_client::Mesh) {
    /// let mut registry = prometheus_client::registry::Registry::default();
    /// mesh.metrics().register(&mut registry);
    /// // Serve `prometheus_client::encoding::text::encode(&mut body, &registry)` on /metrics.
    /// # }
    /// ```
    pub fn metrics(&self) -> Metrics {
        Metrics::new(&self.shared)
    }
}
