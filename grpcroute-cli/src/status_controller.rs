//! `grpcroute status-controller`: writes, on every GRPCRoute attached to a Service, the
//! status a GAMMA implementation reports (`status.parents[]`: `Accepted` and
//! `ResolvedRefs`, the conditions `grpcroute check` prints), computed by the same mesh
//! that routes calls, fed by the library's Kubernetes source.
//!
//! - What is written comes from [`Mesh::statuses`]; what is there is read from a
//!   reflector of GRPCRoutes. A route is compared only when both views have seen the same
//!   `metadata.generation`; whichever lags triggers another pass when it catches up.
//! - A pass runs after every configuration update of the mesh, every GRPCRoute event
//!   and every gain of leadership, coalesced ([`DEBOUNCE`]); failed writes are retried
//!   with backoff.
//! - Writes are JSON merge patches of the status subresource carrying the
//!   `resourceVersion` that was read (optimistic concurrency): on 409 the route is read
//!   again and the plan made again, up to [`MAX_ATTEMPTS`] times. Only this controller's
//!   entries change (see [`crate::route_status`]); nothing is written when nothing changed.
//! - Only the leader writes (see [`crate::leader`]); `--once` takes no part in the
//!   election.
//! - Routes are read as raw JSON, as the library's source reads them: a route whose spec
//!   the API types cannot decode (a newer filter type or enum value) must not stop the
//!   controller from seeing the others, and it gets its own status — `Accepted=False`,
//!   `UnsupportedValue`, naming the field — from the mesh, which rejected it alone. Only
//!   `status` is decoded here; a route whose `status` cannot be read is not written
//!   (writing would drop the entries of other controllers it holds) and counts as a
//!   failed write.
//! - BackendTLSPolicies (when the cluster serves them) get the same treatment: their
//!   `status.ancestors` entries for the Services they target, with the `Accepted` and
//!   `ResolvedRefs` conditions of [`Mesh::backend_tls_policies`] (see
//!   [`crate::policy_status`]).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt;
use gateway_api::{
    backendtlspolicies::BackendTlsPolicyStatus as PolicyStatus, grpcroutes::GrpcRouteStatus,
};
use grpcroute_client::{
    BackendTlsPolicyStatus, Mesh, ObjectKey, RouteStatus,
    prometheus_client::{
        metrics::{counter::Counter, gauge::Gauge},
        registry::Registry,
    },
    serve_metrics,
    source::KubeSource,
};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{WatchStreamExt, reflector, watcher},
};
use serde_json::json;
use tokio::{
    sync::watch,
    task::JoinHandle,
    time::{Instant, sleep, sleep_until, timeout},
};

use crate::{
    InputError, Verdict,
    args::StatusControllerArgs,
    leader::{Clock, Election, ElectionConfig, KubeLease, Leadership},
    output, policy_status,
    route_status::{self, Plan},
};

/// How long a pass waits after the first trigger, so that a burst of events (one route
/// change reaches both the mesh and the route reflector) gives one pass.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// Writes of one route per pass, counting the retries after a 409 Conflict.
const MAX_ATTEMPTS: usize = 5;

pub(crate) async fn run(args: &StatusControllerArgs) -> Result<Verdict, InputError> {
    let client = client(args).await?;
    let source = KubeSource::with_client(client.clone());
    let mesh = Mesh::builder()
        .strict_reference_grants(args.strict_reference_grants)
        .build_with_source(source);
    let routes = Routes::start(client.clone(), !args.once, "GRPCRoutes", grpc_routes());
    let writer = Writer {
        client: client.clone(),
        controller: args.controller_name.clone(),
    };
    if args.once {
        let policies = Policies::start_if_served(&client, false).await;
        let watched = Watched {
            routes: &routes,
            policies: policies.as_ref(),
        };
        return once(&mesh, &watched, &writer, args.sync_timeout).await;
    }

    let lease_namespace = args
        .lease_namespace
        .clone()
        // The mesh's namespace: $POD_NAMESPACE, the service account's, or `default`.
        .unwrap_or_else(|| mesh.namespace().to_string());
    let metrics = ControllerMetrics::default();
    if let Some(addr) = args.metrics_addr {
        serve(addr, &mesh, &metrics).await?;
    }
    let policies = Policies::start_if_served(&client, true).await;
    let watched = Watched {
        routes: &routes,
        policies: policies.as_ref(),
    };
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    tracing::info!(
        controller = %writer.controller,
        %identity,
        lease = %format!("{lease_namespace}/{}", args.lease_name),
        "status controller starting"
    );
    let election = Election::start(
        KubeLease::new(client, &lease_namespace, &args.lease_name),
        ElectionConfig {
            identity,
            lease_duration: args.lease_duration,
        },
        Clock::System,
    );
    tokio::select! {
        () = control(&mesh, &watched, &writer, election.leadership(), &metrics) => {}
        () = crate::shutdown_signal() => tracing::info!("shutting down"),
    }
    election.stop().await;
    Ok(Verdict::Ok)
}

/// What the controller reports to Prometheus, beside the mesh's own metrics.
#[derive(Clone, Debug, Default)]
struct ControllerMetrics {
    leader: Gauge,
    passes: Counter,
    written: Counter,
    failed: Counter,
}

impl ControllerMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "grpcroute_status_controller_leader",
            "1 while this instance holds the Lease and writes statuses",
            self.leader.clone(),
        );
        registry.register(
            "grpcroute_status_controller_passes",
            "Reconciliation passes run while leading",
            self.passes.clone(),
        );
        registry.register(
            "grpcroute_status_controller_status_writes",
            "GRPCRoute statuses written (only changed ones are)",
            self.written.clone(),
        );
        registry.register(
            "grpcroute_status_controller_write_failures",
            "GRPCRoute status writes that failed after their retries; retried later",
            self.failed.clone(),
        );
    }

    fn record(&self, pass: &Pass) {
        self.passes.inc();
        self.written.inc_by(pass.written as u64);
        self.failed.inc_by(pass.failed as u64);
    }
}

/// Serves the controller's and the mesh's metrics on `addr` (`--metrics-addr`).
async fn serve(
    addr: SocketAddr,
    mesh: &Mesh,
    metrics: &ControllerMetrics,
) -> Result<(), InputError> {
    let mut registry = Registry::default();
    mesh.metrics().register(&mut registry);
    metrics.register(&mut registry);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| InputError(format!("--metrics-addr {addr}: cannot listen: {e}")))?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %bound, "serving metrics on /metrics");
    tokio::spawn(serve_metrics(listener, Arc::new(registry)));
    Ok(())
}

/// A client from `--kubeconfig`/`--context`/`--server`, else from the environment.
async fn client(args: &StatusControllerArgs) -> Result<Client, InputError> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let mut config = match (&args.kubeconfig, &args.server) {
        (Some(path), _) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| InputError(format!("--kubeconfig {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| InputError(format!("--kubeconfig {}: {e}", path.display())))?
        }
        (None, Some(server)) => kube::Config::new(server.clone()),
        (None, None) if args.context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| InputError(format!("--context: {e}")))?,
        (None, None) => kube::Config::infer().await.map_err(|e| {
            InputError(format!(
                "no Kubernetes configuration (in-cluster or kubeconfig): {e}"
            ))
        })?,
    };
    if let Some(server) = &args.server {
        config.cluster_url = server.clone();
    }
    Client::try_from(config)
        .map_err(|e| InputError(format!("cannot create a Kubernetes client: {e}")))
}

/// `$POD_NAME`, else the host name, with a random suffix: a restarted pod with the same
/// name must not believe it still holds its predecessor's Lease.
fn default_identity() -> String {
    use rand::Rng as _;
    let base = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "grpcroute".into());
    format!("{base}_{:08x}", rand::rng().next_u32())
}

/// GRPCRoutes, `gateway.networking.k8s.io/v1`, read as raw JSON.
fn grpc_routes() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "GRPCRoute"),
        "grpcroutes",
    )
}

/// BackendTLSPolicies, `gateway.networking.k8s.io/v1`, read as raw JSON like routes: one
/// policy of a newer release that the typed client cannot decode must not fail the list
/// of all of them (the watch would then see none).
fn backend_tls_policies() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "BackendTLSPolicy"),
        "backendtlspolicies",
    )
}

/// The `status` of a policy read as raw JSON (`None` when it has no `status.ancestors`).
fn policy_status_of(policy: &DynamicObject) -> Result<Option<PolicyStatus>, String> {
    match policy.data.get("status") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(status)
            if status
                .get("ancestors")
                .is_none_or(serde_json::Value::is_null) =>
        {
            Ok(None)
        }
        Some(status) => serde_path_to_error::deserialize(status)
            .map(Some)
            .map_err(|e| format!("status.{}: {}", e.path(), e.inner())),
    }
}

/// The `status` of a route read as raw JSON (`None` when it has no `status.parents`: the
/// merge patch written then leaves any other status field alone).
fn status_of(route: &DynamicObject) -> Result<Option<GrpcRouteStatus>, String> {
    match route.data.get("status") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(status) if status.get("parents").is_none_or(serde_json::Value::is_null) => Ok(None),
        Some(status) => serde_path_to_error::deserialize(status)
            .map(Some)
            .map_err(|e| format!("status.{}: {}", e.path(), e.inner())),
    }
}

/// Objects of one kind as the API server has them (with their status), from a reflector.
struct Reflected<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store: reflector::Store<K>,
    /// Bumped on every watch event.
    events: watch::Receiver<u64>,
    last_error: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

/// The GRPCRoutes, read as raw JSON.
type Routes = Reflected<DynamicObject>;
/// The BackendTLSPolicies.
type Policies = Reflected<DynamicObject>;

impl<K> Reflected<K>
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    /// `warn`: log watch errors as warnings (else at debug: `--once` reports the last one
    /// in its error).
    fn start(client: Client, warn: bool, what: &'static str, resource: K::DynamicType) -> Self {
        let writer = reflector::store::Writer::new(resource.clone());
        let store = writer.as_reader();
        let (tx, events) = watch::channel(0);
        let last_error = Arc::new(Mutex::new(None));
        let errors = last_error.clone();
        let stream = reflector::reflector(
            writer,
            watcher::watcher(
                Api::<K>::all_with(client, &resource),
                watcher::Config::default(),
            )
            .default_backoff(),
        );
        let task = tokio::spawn(stream.for_each(move |event| {
            match event {
                Ok(_) => {
                    tx.send_modify(|n| *n += 1);
                }
                Err(error) => {
                    if warn {
                        tracing::warn!(%error, "watching {what} failed; retrying");
                    } else {
                        tracing::debug!(%error, "watching {what} failed; retrying");
                    }
                    *errors.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
                }
            }
            std::future::ready(())
        }));
        Self {
            store,
            events,
            last_error,
            task,
        }
    }
}

impl<K> Reflected<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl<K> Drop for Reflected<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Policies {
    /// The policy reflector, when the cluster serves BackendTLSPolicy `v1` (a watch of an
    /// unserved resource would never sync). `retry`: a long-running controller retries
    /// discovery for a while; `--once` asks once (if the API server is unreachable, the
    /// sync fails and says so). A cluster that never answers gets no policy status.
    async fn start_if_served(client: &Client, retry: bool) -> Option<Self> {
        let path = "gateway.networking.k8s.io/v1";
        let attempts = if retry { 10 } else { 1 };
        for attempt in 1..=attempts {
            match client.list_api_group_resources(path).await {
                Ok(list) => {
                    return list
                        .resources
                        .iter()
                        .any(|r| r.name == "backendtlspolicies")
                        .then(|| {
                            Self::start(
                                client.clone(),
                                retry,
                                "BackendTLSPolicies",
                                backend_tls_policies(),
                            )
                        });
                }
                Err(kube::Error::Api(e)) if e.code == 404 => return None,
                Err(error) if attempt < attempts => {
                    tracing::debug!(%error, attempt, "discovery of BackendTLSPolicy failed; retrying");
                    sleep(Duration::from_secs(1)).await;
                }
                Err(error) => {
                    if retry {
                        tracing::warn!(%error, "discovery of BackendTLSPolicy kept failing: BackendTLSPolicy status is not written");
                    } else {
                        tracing::debug!(%error, "discovery of BackendTLSPolicy failed");
                    }
                }
            }
        }
        None
    }
}

/// What the API server has, as the reflectors see it.
struct Watched<'a> {
    routes: &'a Routes,
    policies: Option<&'a Policies>,
}

impl Watched<'_> {
    fn last_error(&self) -> Option<String> {
        self.routes
            .last_error()
            .or_else(|| self.policies.and_then(Policies::last_error))
    }
}

/// Waits until the mesh and the reflectors have all finished their initial lists.
async fn synced(mesh: &Mesh, watched: &Watched<'_>) {
    mesh.ready().await;
    let policies_ready = match watched.policies {
        Some(p) => p.store.wait_until_ready().await.is_ok(),
        None => true,
    };
    if watched.routes.store.wait_until_ready().await.is_err() || !policies_ready {
        // The reflector task ended (only when the runtime shuts down).
        std::future::pending::<()>().await;
    }
}

/// The long-running controller: a pass after every trigger, while leading.
async fn control(
    mesh: &Mesh,
    watched: &Watched<'_>,
    writer: &Writer,
    mut leadership: Leadership,
    metrics: &ControllerMetrics,
) {
    let mut updates = mesh.updates();
    let mut events = watched.routes.events.clone();
    let mut policy_events = watched.policies.map(|p| p.events.clone());
    synced(mesh, watched).await;
    tracing::info!(
        routes = watched.routes.store.state().len(),
        policies = watched.policies.map(|p| p.store.state().len()),
        "synced with the Kubernetes API"
    );
    // A trigger schedules a pass; one that arrives while not leading waits for leadership.
    let mut pending = Some(Instant::now());
    let mut dirty = false;
    let mut leading = false;
    metrics.leader.set(i64::from(leadership.is_leader()));
    let mut events_open = true;
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        tokio::select! {
            () = sleep_until(pending.unwrap_or_else(Instant::now)), if pending.is_some() => {
                pending = None;
                if !leadership.is_leader() {
                    dirty = true;
                    continue;
                }
                dirty = false;
                let pass = writer.pass(mesh, watched, &leadership).await;
                pass.log();
                metrics.record(&pass);
                if pass.failed > 0 || pass.interrupted {
                    dirty = true;
                    if pass.failed > 0 {
                        pending = Some(Instant::now() + backoff.next());
                    }
                } else {
                    backoff.reset();
                }
            }
            changed = updates.changed() => {
                if changed.is_err() {
                    return;
                }
                schedule(&mut pending);
            }
            changed = events.changed(), if events_open => {
                // Closed only when the reflector task ends, which it does not.
                events_open = changed.is_ok();
                schedule(&mut pending);
            }
            changed = async {
                match policy_events.as_mut() {
                    Some(rx) => rx.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                if changed.is_err() {
                    policy_events = None;
                }
                schedule(&mut pending);
            }
            () = leadership.changed() => {
                let now = leadership.is_leader();
                metrics.leader.set(i64::from(now));
                if now && (!leading || dirty) {
                    schedule(&mut pending);
                }
                leading = now;
            }
        }
    }
}

/// A pass [`DEBOUNCE`] after the first trigger of a burst; a trigger during the backoff
/// after failed writes brings the retry forward (a write one route keeps failing must
/// not hold up the others).
fn schedule(pending: &mut Option<Instant>) {
    let at = Instant::now() + DEBOUNCE;
    *pending = Some(pending.map_or(at, |p| p.min(at)));
}

/// `--once`: passes until every route is up to date (or the sync timeout), a summary on
/// stdout.
async fn once(
    mesh: &Mesh,
    watched: &Watched<'_>,
    writer: &Writer,
    sync_timeout: Duration,
) -> Result<Verdict, InputError> {
    let deadline = Instant::now() + sync_timeout;
    if timeout(sync_timeout, synced(mesh, watched)).await.is_err() {
        let why = watched
            .last_error()
            .or_else(|| mesh.source_error())
            .unwrap_or_else(|| "no answer".into());
        return Err(InputError(format!(
            "the Kubernetes API did not sync within {} s: {why}",
            sync_timeout.as_secs_f64()
        )));
    }
    let leadership = Leadership::always();
    let mut total = Pass::default();
    loop {
        let pass = writer.pass(mesh, watched, &leadership).await;
        total.written += pass.written;
        let settled = pass.failed == 0 && pass.waiting == 0;
        if settled || Instant::now() >= deadline {
            total.routes = pass.routes;
            total.policies = pass.policies;
            total.unchanged = pass.unchanged;
            total.waiting = pass.waiting;
            total.failed = pass.failed;
            break;
        }
        sleep(Duration::from_millis(200)).await;
    }
    let mut summary = format!(
        "{} GRPCRoute{}: {} status written, {} up to date",
        total.routes,
        if total.routes == 1 { "" } else { "s" },
        total.written,
        total.unchanged
    );
    if total.policies > 0 {
        summary.push_str(&format!(
            " ({} BackendTLSPolic{} included)",
            total.policies,
            if total.policies == 1 { "y" } else { "ies" }
        ));
    }
    if total.waiting > 0 {
        summary.push_str(&format!(
            ", {} not yet seen alike by both watches",
            total.waiting
        ));
    }
    if total.failed > 0 {
        summary.push_str(&format!(", {} failed", total.failed));
    }
    output::print(&format!("{summary}\n"));
    Ok(if total.failed == 0 && total.waiting == 0 {
        Verdict::Ok
    } else {
        Verdict::NotOk
    })
}

/// What one pass did, route by route.
#[derive(Debug, Default)]
struct Pass {
    /// Routes in the mesh's view.
    routes: usize,
    /// BackendTLSPolicies in the mesh's view (their writes count with the routes').
    policies: usize,
    written: usize,
    unchanged: usize,
    /// Routes the mesh and the reflector have not yet seen at the same generation.
    waiting: usize,
    failed: usize,
    /// Leadership was lost during the pass.
    interrupted: bool,
}

impl Pass {
    fn log(&self) {
        if self.written > 0 || self.failed > 0 {
            tracing::info!(
                routes = self.routes,
                written = self.written,
                unchanged = self.unchanged,
                waiting = self.waiting,
                failed = self.failed,
                "reconciled"
            );
        } else {
            tracing::debug!(
                routes = self.routes,
                waiting = self.waiting,
                "reconciled: nothing to write"
            );
        }
    }
}

/// How one route's write ended.
#[derive(Debug, PartialEq, Eq)]
enum Written {
    Yes,
    /// Re-read after a conflict, it already said what we would write.
    AlreadyUpToDate,
    /// Re-read after a conflict, its generation moved: the next pass handles it.
    Stale,
    /// Deleted meanwhile.
    Gone,
    /// Leadership was lost before the write.
    NotLeader,
}

/// Writes this controller's entries.
struct Writer {
    client: Client,
    controller: String,
}

impl Writer {
    async fn pass(&self, mesh: &Mesh, watched: &Watched<'_>, leadership: &Leadership) -> Pass {
        let routes = watched.routes;
        let statuses = mesh.statuses();
        let desired: HashMap<&ObjectKey, &RouteStatus> =
            statuses.iter().map(|s| (&s.route, s)).collect();
        let mut current = routes.store.state();
        current.sort_by_key(|r| (r.namespace(), r.name_any()));
        let now = Time(Timestamp::now());
        let mut pass = Pass {
            routes: statuses.len(),
            ..Pass::default()
        };
        let mut seen = 0;
        for route in current {
            let key = ObjectKey::new(route.namespace().unwrap_or_default(), route.name_any());
            let Some(want) = desired.get(&key) else {
                // Not in the mesh's view yet (created a moment ago): it triggers a pass.
                continue;
            };
            seen += 1;
            if want.generation != route.metadata.generation {
                pass.waiting += 1;
                continue;
            }
            let status = match status_of(&route) {
                Ok(status) => status,
                Err(error) => {
                    pass.failed += 1;
                    tracing::warn!(route = %key, %error, "cannot read the status; not writing it, to keep the other controllers' entries");
                    continue;
                }
            };
            let Some(plan) = route_status::plan(status.as_ref(), want, &self.controller, &now)
            else {
                pass.unchanged += 1;
                continue;
            };
            match self.write(&route, want, plan, &now, leadership).await {
                Ok(Written::Yes) => pass.written += 1,
                Ok(Written::AlreadyUpToDate | Written::Gone) => pass.unchanged += 1,
                Ok(Written::Stale) => pass.waiting += 1,
                Ok(Written::NotLeader) => {
                    pass.interrupted = true;
                    tracing::info!("no longer the leader: stopped writing");
                    return pass;
                }
                Err(error) => {
                    pass.failed += 1;
                    tracing::warn!(route = %key, %error, "could not write the status; will retry");
                }
            }
        }
        // Routes the mesh knows but the reflector does not yet.
        pass.waiting += statuses.len().saturating_sub(seen);
        if let Some(policies) = watched.policies {
            self.policies_pass(mesh, policies, leadership, &now, &mut pass)
                .await;
        }
        pass
    }

    /// The BackendTLSPolicies' part of a pass: the same rules as for routes.
    async fn policies_pass(
        &self,
        mesh: &Mesh,
        policies: &Policies,
        leadership: &Leadership,
        now: &Time,
        pass: &mut Pass,
    ) {
        if pass.interrupted {
            return;
        }
        let statuses = mesh.backend_tls_policies();
        pass.policies = statuses.len();
        let desired: HashMap<&ObjectKey, &BackendTlsPolicyStatus> =
            statuses.iter().map(|s| (&s.policy, s)).collect();
        let mut current = policies.store.state();
        current.sort_by_key(|p| (p.namespace(), p.name_any()));
        let mut seen = 0;
        for policy in current {
            let key = ObjectKey::new(policy.namespace().unwrap_or_default(), policy.name_any());
            let Some(want) = desired.get(&key) else {
                continue;
            };
            seen += 1;
            if want.generation != policy.metadata.generation {
                pass.waiting += 1;
                continue;
            }
            let status = match policy_status_of(&policy) {
                Ok(status) => status,
                Err(error) => {
                    pass.failed += 1;
                    tracing::warn!(policy = %key, %error, "cannot read the status; not writing it, to keep the other controllers' entries");
                    continue;
                }
            };
            let Some(ancestors) = policy_status::plan(status.as_ref(), want, &self.controller, now)
            else {
                pass.unchanged += 1;
                continue;
            };
            match self
                .write_policy(&policy, want, ancestors, now, leadership)
                .await
            {
                Ok(Written::Yes) => pass.written += 1,
                Ok(Written::AlreadyUpToDate | Written::Gone) => pass.unchanged += 1,
                Ok(Written::Stale) => pass.waiting += 1,
                Ok(Written::NotLeader) => {
                    pass.interrupted = true;
                    tracing::info!("no longer the leader: stopped writing");
                    return;
                }
                Err(error) => {
                    pass.failed += 1;
                    tracing::warn!(policy = %key, %error, "could not write the status; will retry");
                }
            }
        }
        pass.waiting += statuses.len().saturating_sub(seen);
    }

    /// Writes a policy's `status.ancestors` (a merge patch replaces the list whole, so it
    /// carries the other controllers' entries too).
    async fn write_policy(
        &self,
        policy: &DynamicObject,
        want: &BackendTlsPolicyStatus,
        ancestors: Vec<gateway_api::backendtlspolicies::BackendTlsPolicyStatusAncestors>,
        now: &Time,
        leadership: &Leadership,
    ) -> Result<Written, kube::Error> {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            want.policy.namespace(),
            &backend_tls_policies(),
        );
        let (written, _) = patch_status(
            &api,
            &policy.name_any(),
            policy.resource_version(),
            want.generation,
            ancestors,
            |ancestors| json!({"ancestors": ancestors}),
            |fresh: &DynamicObject| {
                Ok(policy_status::plan(
                    policy_status_of(fresh)?.as_ref(),
                    want,
                    &self.controller,
                    now,
                ))
            },
            leadership,
        )
        .await?;
        if written == Written::Yes {
            tracing::info!(policy = %want.policy, generation = want.generation, "status written");
        }
        Ok(written)
    }

    /// Writes a route's `status.parents` (the whole list, the other controllers' entries
    /// included).
    async fn write(
        &self,
        route: &DynamicObject,
        want: &RouteStatus,
        plan: Plan,
        now: &Time,
        leadership: &Leadership,
    ) -> Result<Written, kube::Error> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), want.route.namespace(), &grpc_routes());
        let (written, plan) = patch_status(
            &api,
            &route.name_any(),
            route.resource_version(),
            want.generation,
            plan,
            |plan| json!({"parents": plan.parents}),
            |fresh: &DynamicObject| {
                Ok(route_status::plan(
                    status_of(fresh)?.as_ref(),
                    want,
                    &self.controller,
                    now,
                ))
            },
            leadership,
        )
        .await?;
        if written == Written::Yes {
            tracing::info!(
                route = %want.route,
                generation = want.generation,
                changes = %plan.changes.join("; "),
                "status written"
            );
        }
        Ok(written)
    }
}

/// Patches one object's status: a merge patch carrying the `resourceVersion` that was read,
/// so another writer's update in between is never overwritten. On 409 the object is read
/// again and `replan` plans from the fresh copy (`None`: it already says what we would
/// write; an error: its status cannot be read), up to [`MAX_ATTEMPTS`] times. `status` renders a plan as the patch's `status`.
/// Returns how the write ended and the plan last tried.
#[allow(clippy::too_many_arguments)]
async fn patch_status<K, T>(
    api: &Api<K>,
    name: &str,
    mut version: Option<String>,
    generation: Option<i64>,
    mut plan: T,
    status: impl Fn(&T) -> serde_json::Value,
    replan: impl Fn(&K) -> Result<Option<T>, String>,
    leadership: &Leadership,
) -> Result<(Written, T), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        if !leadership.is_leader() {
            return Ok((Written::NotLeader, plan));
        }
        let patch = json!({
            "metadata": {"resourceVersion": version},
            "status": status(&plan),
        });
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok((Written::Yes, plan)),
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok((Written::Gone, plan)),
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < MAX_ATTEMPTS => {
                tracing::debug!(
                    object = name,
                    attempt,
                    "conflict writing the status; reading the object again"
                );
                let fresh = match api.get_status(name).await {
                    Ok(fresh) => fresh,
                    Err(kube::Error::Api(e)) if e.code == 404 => return Ok((Written::Gone, plan)),
                    Err(e) => return Err(e),
                };
                if fresh.meta().generation != generation {
                    return Ok((Written::Stale, plan));
                }
                version = fresh.meta().resource_version.clone();
                let replanned = replan(&fresh).map_err(|e| {
                    kube::Error::Service(format!("cannot read the status: {e}").into())
                })?;
                match replanned {
                    Some(again) => plan = again,
                    None => return Ok((Written::AlreadyUpToDate, plan)),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Exponential backoff with jitter for retrying failed writes.
#[derive(Debug)]
struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    fn next(&mut self) -> Duration {
        use rand::RngExt as _;
        let delay = self.next.mul_f64(rand::rng().random_range(0.8..1.2));
        self.next = (self.next * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use grpcroute_test_apiserver::{ApiServer, Resource};

    use super::*;

    const ME: &str = "grpcroute.dev/status-controller";

    fn route_json() -> serde_json::Value {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
            "metadata": {"name": "r", "namespace": "shop"},
            "spec": {
                "parentRefs": [{"group": "", "kind": "Service", "name": "checkout", "port": 50051}],
                "rules": [{"backendRefs": [{"name": "gone", "port": 50051}]}],
            },
        })
    }

    fn desired(generation: i64) -> RouteStatus {
        RouteStatus {
            route: ObjectKey::new("shop", "r"),
            generation: Some(generation),
            parents: vec![grpcroute_client::ParentStatus {
                parent_ref: grpcroute_client::ParentReference {
                    group: String::new(),
                    kind: "Service".into(),
                    namespace: None,
                    name: "checkout".into(),
                    port: Some(50051),
                    section_name: None,
                },
                conditions: vec![grpcroute_client::Condition {
                    type_: "Accepted",
                    status: grpcroute_client::ConditionStatus::True,
                    reason: "Accepted".into(),
                    message: "attached".into(),
                }],
            }],
        }
    }

    fn theirs() -> serde_json::Value {
        json!({"controllerName": "example.net/other", "parentRef": {"name": "gw"},
               "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                               "message": "theirs", "lastTransitionTime": "2024-01-01T00:00:00Z"}]})
    }

    /// A write from a stale read gets 409, reads again, keeps what another controller
    /// wrote meanwhile, and succeeds.
    #[tokio::test]
    async fn a_conflict_is_read_again_and_retried_without_losing_other_entries() {
        let server = ApiServer::start().await;
        let client = server.client().unwrap();
        server.apply(route_json()).unwrap();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "shop", &grpc_routes());
        let read = api.get("r").await.unwrap();
        // Another controller writes its entry after our read.
        let mut with_theirs = route_json();
        with_theirs["status"] = json!({"parents": [theirs()]});
        server.apply_status(with_theirs).unwrap();

        let writer = Writer {
            client,
            controller: ME.into(),
        };
        let want = desired(1);
        let now = Time(Timestamp::now());
        let plan = route_status::plan(status_of(&read).unwrap().as_ref(), &want, ME, &now).unwrap();
        let before = server.stats().resource(Resource::GrpcRoutes).writes;
        let written = writer
            .write(&read, &want, plan, &now, &Leadership::always())
            .await
            .unwrap();
        assert_eq!(written, Written::Yes);
        // The first patch was refused (409): only the second counts as a write.
        assert_eq!(
            server.stats().resource(Resource::GrpcRoutes).writes,
            before + 1
        );
        let stored = server.get(Resource::GrpcRoutes, "shop", "r").unwrap();
        let parents = stored["status"]["parents"].as_array().unwrap();
        assert_eq!(parents.len(), 2, "{parents:#?}");
        assert_eq!(parents[0], theirs());
        assert_eq!(parents[1]["controllerName"], ME);
        assert_eq!(parents[1]["conditions"][0]["observedGeneration"], 1);
        server.shutdown().await;
    }

    /// After a conflict, a route whose spec moved on is left for the next pass; a
    /// deleted route is no error.
    #[tokio::test]
    async fn a_conflict_on_a_newer_generation_or_a_deleted_route_writes_nothing() {
        let server = ApiServer::start().await;
        let client = server.client().unwrap();
        server.apply(route_json()).unwrap();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "shop", &grpc_routes());
        let read = api.get("r").await.unwrap();
        let mut edited = route_json();
        edited["spec"]["rules"][0]["backendRefs"][0]["name"] = json!("other");
        server.apply(edited).unwrap();

        let writer = Writer {
            client,
            controller: ME.into(),
        };
        let want = desired(1);
        let now = Time(Timestamp::now());
        let plan =
            || route_status::plan(status_of(&read).unwrap().as_ref(), &want, ME, &now).unwrap();
        let always = Leadership::always();
        assert_eq!(
            writer
                .write(&read, &want, plan(), &now, &always)
                .await
                .unwrap(),
            Written::Stale
        );
        server.delete(Resource::GrpcRoutes, "shop", "r").unwrap();
        assert_eq!(
            writer
                .write(&read, &want, plan(), &now, &always)
                .await
                .unwrap(),
            Written::Gone
        );
        server.shutdown().await;
    }

    /// Only `status` is decoded: a spec the types cannot read does not matter here, and a
    /// status they cannot read is an error naming its field.
    #[test]
    fn status_is_read_alone_and_an_unreadable_one_names_its_field() {
        let object = |status: serde_json::Value| -> DynamicObject {
            let mut route = route_json();
            route["spec"]["rules"][0]["filters"] = json!([{"type": "FutureFilter"}]);
            route["status"] = status;
            serde_json::from_value(route).unwrap()
        };
        assert_eq!(status_of(&object(serde_json::Value::Null)), Ok(None));
        assert_eq!(status_of(&object(json!({}))), Ok(None));
        let read = status_of(&object(json!({"parents": [theirs()]})))
            .unwrap()
            .unwrap();
        assert_eq!(read.parents[0].controller_name, "example.net/other");
        let error = status_of(&object(json!({"parents": [{"conditions": "none"}]}))).unwrap_err();
        assert!(
            error.starts_with("status.parents[0].conditions: invalid type"),
            "{error}"
        );
    }

    #[test]
    fn identity_has_a_random_suffix() {
        let (a, b) = (default_identity(), default_identity());
        assert_ne!(a, b);
        assert!(
            a.rsplit_once('_')
                .is_some_and(|(base, suffix)| !base.is_empty() && suffix.len() == 8)
        );
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert!(b.next() <= Duration::from_millis(120));
        for _ in 0..10 {
            assert!(b.next() <= Duration::from_millis(1200));
        }
        b.reset();
        assert!(b.next() <= Duration::from_millis(120));
    }
}
