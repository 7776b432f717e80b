//! [`Mesh`]: the handle an application holds. It owns the current routing table, the
//! endpoint pool, and the source that feeds it; channels and layers made from it route
//! every call by that table.

mod health;
mod shared;
#[cfg(feature = "xds")]
mod xds;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

pub(crate) use self::shared::Shared;
use self::shared::UpdateState;
use crate::{
    Channel, MeshLayer, Resources,
    backend::{Registry, accrual::FailureAccrual},
    dispatch::Core,
    explain::{self, CallDescription, Explanation},
    metrics::{Metrics, MetricsView},
    model::InvalidObject,
    rng::SharedRng,
    route::table::{GrantPolicy, RouteStatus},
    series::SeriesRegistry,
    snapshot::Snapshot,
    source::{ConfigSink, Source, SourceHealth, Update, UpdateReport, Updater},
    target::{Target, TargetError},
    transport::{SecurityPolicy, TransportConfig},
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
    default_timeout: Option<Duration>,
    mirror_max_in_flight: usize,
    mirror_timeout: Duration,
    failure_accrual: Option<FailureAccrual>,
    #[cfg(feature = "xds")]
    xds_bootstrap: Option<crate::xds::Bootstrap>,
    seed: Option<u64>,
    report_routing: bool,
    transport: TransportConfig,
    security: SecurityPolicy,
}

impl Default for MeshBuilder {
    fn default() -> Self {
        Self {
            namespace: None,
            cluster_domain: "cluster.local".into(),
            grant_policy: GrantPolicy::Permissive,
            ready_timeout: Duration::from_secs(10),
            default_timeout: None,
            mirror_max_in_flight: 64,
            mirror_timeout: Duration::from_secs(10),
            failure_accrual: Some(FailureAccrual::default()),
            #[cfg(feature = "xds")]
            xds_bootstrap: None,
            seed: None,
            report_routing: false,
            transport: TransportConfig::default(),
            security: SecurityPolicy::default(),
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
    /// (default 10 s). A call's own deadline, when shorter, ends the wait first
    /// (`DEADLINE_EXCEEDED`).
    #[must_use]
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// A timeout for calls that carry none (no `grpc-timeout`, i.e. no
    /// `Request::set_timeout`). Off by default, as in tonic's own channel: a call without a
    /// deadline waits as long as its server takes. A call's own timeout always wins. The
    /// server is told the time left in the call's `grpc-timeout`.
    #[must_use]
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = Some(timeout);
        self
    }

    /// Bounds on mirrored calls (RequestMirror): at most `max_in_flight` per mirror backend
    /// at a time (more are dropped, and counted in `grpcroute_client_mirrors_dropped_total`),
    /// each abandoned after `timeout` (defaults 64 and 10 s). The primary call never waits
    /// for its mirrors either way.
    #[must_use]
    pub fn mirror_limits(mut self, max_in_flight: usize, timeout: Duration) -> Self {
        self.mirror_max_in_flight = max_in_flight;
        self.mirror_timeout = timeout;
        self
    }

    /// The xDS bootstrap for `xds:///NAME` channels (gRFC A27). Without one, the first
    /// such channel reads it from `GRPC_XDS_BOOTSTRAP` (a file) or
    /// `GRPC_XDS_BOOTSTRAP_CONFIG` (JSON), as gRPC does. The client starts with the first
    /// `xds:` channel and serves every listener of the mesh over one ADS stream.
    #[cfg(feature = "xds")]
    #[must_use]
    pub fn xds_bootstrap(mut self, bootstrap: crate::xds::Bootstrap) -> Self {
        self.xds_bootstrap = Some(bootstrap);
        self
    }

    /// Failure accrual (outlier ejection) for the endpoints of Services: an endpoint whose
    /// calls fail in a row (broken connections, `UNAVAILABLE`) is taken out of rotation for
    /// a back-off, then tried again with one probe call. On by default, as in Linkerd: 5
    /// failures in a row, 1 s doubling to 60 s, at most 50 % of a backend's endpoints out;
    /// `None` turns it off. xDS clusters apply it only when they configure outlier
    /// detection (with their own ejection times and share), as gRPC does.
    #[must_use]
    pub fn failure_accrual(mut self, accrual: Option<FailureAccrual>) -> Self {
        self.failure_accrual = accrual;
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

    /// How connections to endpoints are secured (default [`TlsMode::Plaintext`]). See
    /// [the `tls` module](crate::tls) for the modes and how servers are verified.
    ///
    /// [`TlsMode::Plaintext`]: crate::tls::TlsMode::Plaintext
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls(mut self, mode: crate::tls::TlsMode) -> Self {
        self.security.tls.mode = mode;
        self
    }

    /// The client's workload identity: the certificate it presents in mutual TLS, and the
    /// trust bundle servers are verified against (see [`crate::identity`]).
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn identity(mut self, identity: crate::identity::Identity) -> Self {
        self.security.tls.identity = Some(identity);
        self
    }

    /// The identity a backend's servers must present when no policy names one, in
    /// [`TlsMode::Mutual`]. Default: the template
    /// `spiffe://{trust_domain}/ns/{namespace}/sa/*` (any service account of the backend
    /// Service's namespace, in the client's own trust domain).
    ///
    /// [`TlsMode::Mutual`]: crate::tls::TlsMode::Mutual
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn expected_server_identity(mut self, rule: crate::tls::ExpectedServerIdentity) -> Self {
        self.security.tls.expected = rule;
        self
    }

    /// TLS settings for the backends `policy` names (it returns `None` for the others):
    /// in [`TlsMode::Policy`] those backends use TLS and the others plaintext; in
    /// [`TlsMode::Mutual`] they refine the mesh defaults (an exact SPIFFE ID, a DNS name,
    /// other roots). Asked once per backend and configuration update, never per call.
    ///
    /// [`TlsMode::Policy`]: crate::tls::TlsMode::Policy
    /// [`TlsMode::Mutual`]: crate::tls::TlsMode::Mutual
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn backend_tls(
        mut self,
        policy: impl Fn(&crate::BackendService) -> Option<crate::tls::BackendTls>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.security.tls.backend_tls = Some(Arc::new(policy));
        self
    }

    /// A mesh with no configuration yet: feed it with [`Mesh::update`]. Calls made before
    /// the first update wait for it (up to the ready timeout).
    pub fn build(self) -> Mesh {
        #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
        let mut security = self.security;
        #[cfg(feature = "tls")]
        {
            security.tls.cluster_domain = self.cluster_domain.clone();
        }
        let namespace = self.namespace.unwrap_or_else(crate::namespace::detect);
        let (ready, _) = watch::channel(0);
        let core = Arc::new(Core {
            namespace: namespace.into(),
            cluster_domain: self.cluster_domain,
            ready_timeout: self.ready_timeout,
            default_timeout: self.default_timeout,
            mirror_max_in_flight: self.mirror_max_in_flight,
            mirror_timeout: self.mirror_timeout,
            report_routing: self.report_routing,
            snapshot: ArcSwapOption::empty(),
            ready,
            rng: self
                .seed
                .map_or_else(SharedRng::from_entropy, SharedRng::new),
            series: SeriesRegistry::default(),
            last_error: Mutex::new(None),
        });
        Mesh {
            shared: Arc::new(Shared {
                core,
                grant_policy: self.grant_policy,
                registry: Registry::new(self.transport),
                accrual: self.failure_accrual,
                security,
                state: Mutex::new(UpdateState::default()),
                tasks: Mutex::new(Vec::new()),
                #[cfg(feature = "xds")]
                xds: Mutex::new(xds::XdsSlot::new(self.xds_bootstrap)),
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
        let updater = mesh.updater();
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
        let parsed = Target::parse(target, &self.shared.core.cluster_domain)?;
        #[cfg(feature = "xds")]
        if let crate::target::Host::Listener(name) = &parsed.host {
            let xds = self
                .shared
                .xds_part()
                .map_err(|e| TargetError::new(target, format!("the xDS client: {e}")))?;
            let interest: Arc<dyn Send + Sync> = xds.interest(name);
            return Ok(Channel::new(
                self.shared.core.clone(),
                self.shared.clone(),
                parsed,
                Some(interest),
            ));
        }
        Ok(Channel::new(
            self.shared.core.clone(),
            self.shared.clone(),
            parsed,
            None,
        ))
    }

    /// A tower layer that routes calls addressed (by their URI authority) to a Service of
    /// the mesh, and passes every other call to the service it wraps.
    pub fn layer(&self) -> MeshLayer {
        MeshLayer::new(self.shared.core.clone(), self.shared.clone())
    }

    /// Replaces the whole configuration. Invalid objects are left out (each with its
    /// reason, in the report); everything else takes effect for the next call. In-flight
    /// calls are not disturbed: endpoints that disappear finish their calls first.
    pub fn update(&self, resources: &Resources) -> UpdateReport {
        self.shared.apply(Update::Model(resources.to_model()))
    }

    /// A handle that sources use to publish configuration.
    pub fn updater(&self) -> Updater {
        let sink: Arc<dyn ConfigSink> = self.shared.clone();
        Updater::new(Arc::downgrade(&sink))
    }

    /// Waits until the mesh has a configuration.
    pub async fn ready(&self) {
        let mut rx = self.shared.core.ready.subscribe();
        // The sender lives in `shared`, which `self` keeps alive: this cannot fail.
        let _ = rx.wait_for(|version| *version > 0).await;
    }

    /// Notifies every configuration update: the receiver's value is the version of the
    /// configuration in force (0 before the first). For tools that act on changes, like a
    /// status writer.
    pub fn updates(&self) -> watch::Receiver<u64> {
        self.shared.core.ready.subscribe()
    }

    /// Whether the mesh has a configuration.
    pub fn is_ready(&self) -> bool {
        self.shared.core.snapshot.load().is_some()
    }

    /// The namespace the mesh routes for.
    pub fn namespace(&self) -> &str {
        &self.shared.core.namespace
    }

    /// What would happen to a call, without making it.
    pub fn explain(&self, call: &CallDescription) -> Explanation {
        let core = &self.shared.core;
        let snapshot = core.snapshot.load_full().unwrap_or_default();
        explain::explain(&snapshot, call, &core.namespace, &core.cluster_domain)
    }

    /// The status of every GRPCRoute attached to a Service, as a GAMMA implementation
    /// reports it.
    pub fn statuses(&self) -> Vec<RouteStatus> {
        self.shared
            .core
            .snapshot
            .load()
            .as_ref()
            .map(|s| s.table.statuses.clone())
            .unwrap_or_default()
    }

    /// The objects of the current configuration that failed validation.
    pub fn rejected(&self) -> Vec<InvalidObject> {
        self.shared
            .core
            .snapshot
            .load()
            .as_ref()
            .map(|s| s.table.rejected.clone())
            .unwrap_or_default()
    }

    /// The last error a source reported, if it has not published a configuration since.
    pub fn source_error(&self) -> Option<String> {
        self.shared.core.last_error()
    }

    /// Whether the source is connected, when it last updated the configuration, and its
    /// last error.
    pub fn source_health(&self) -> SourceHealth {
        self.shared.source_health()
    }

    /// The xDS client's resources and their state (what gRPC's CSDS shows, gRFC A40);
    /// `None` until an `xds:` channel started the client.
    #[cfg(feature = "xds")]
    pub fn xds_config(&self) -> Option<crate::xds::ConfigDump> {
        let client = self.shared.xds_client()?;
        Some(crate::xds::ConfigDump {
            connected: client.connected(),
            resources: client.dump().iter().map(Into::into).collect(),
        })
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
        let view: Arc<dyn MetricsView> = self.shared.clone();
        Metrics::new(Arc::downgrade(&view))
    }
}

impl ConfigSink for Shared {
    fn apply(&self, update: Update) -> UpdateReport {
        Shared::apply(self, update)
    }

    fn report_error(&self, error: String) {
        Shared::report_error(self, error);
    }

    fn report_connection(&self, connected: bool) {
        Shared::report_connection(self, connected);
    }

    fn report_latency(&self, latency: Duration) {
        Shared::report_latency(self, latency);
    }
}

impl MetricsView for Shared {
    fn series(&self) -> &SeriesRegistry {
        &self.core.series
    }

    fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.core.snapshot.load_full()
    }

    fn health(&self) -> SourceHealth {
        self.source_health()
    }

    fn endpoint_count(&self) -> usize {
        self.registry.endpoint_count()
    }

    #[cfg(feature = "xds")]
    fn xds(&self) -> Option<crate::source::xds::XdsClient> {
        self.xds_client()
    }
}
