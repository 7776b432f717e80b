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

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt;
use gateway_api::grpcroutes::GrpcRouteStatus;
use grpcroute_client::{
    Mesh, ObjectKey, RouteStatus,
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
    output,
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
    let routes = Routes::start(client.clone(), !args.once);
    let writer = Writer {
        client: client.clone(),
        controller: args.controller_name.clone(),
    };
    if args.once {
        return once(&mesh, &routes, &writer, args.sync_timeout).await;
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
        () = control(&mesh, &routes, &writer, election.leadership(), &metrics) => {}
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

/// The GRPCRoutes as the API server has them (with their status), from a reflector.
struct Routes {
    store: reflector::Store<DynamicObject>,
    /// Bumped on every watch event.
    events: watch::Receiver<u64>,
    last_error: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

impl Routes {
    /// `warn`: log watch errors as warnings (else at debug: `--once` reports the last one
    /// in its error).
    fn start(client: Client, warn: bool) -> Self {
        let resource = grpc_routes();
        let writer = reflector::store::Writer::new(resource.clone());
        let store = writer.as_reader();
        let (tx, events) = watch::channel(0);
        let last_error = Arc::new(Mutex::new(None));
        let errors = last_error.clone();
        let stream = reflector::reflector(
            writer,
            watcher::watcher(
                Api::<DynamicObject>::all_with(client, &resource),
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
                        tracing::warn!(%error, "watching GRPCRoutes failed; retrying");
                    } else {
                        tracing::debug!(%error, "watching GRPCRoutes failed; retrying");
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

    fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Routes {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until the mesh and the route reflector have both finished their initial lists.
async fn synced(mesh: &Mesh, routes: &Routes) {
    mesh.ready().await;
    if routes.store.wait_until_ready().await.is_err() {
        // The reflector task ended (only when the runtime shuts down).
        std::future::pending::<()>().await;
    }
}

/// The long-running controller: a pass after every trigger, while leading.
async fn control(
    mesh: &Mesh,
    routes: &Routes,
    writer: &Writer,
    mut leadership: Leadership,
    metrics: &ControllerMetrics,
) {
    let mut updates = mesh.updates();
    let mut events = routes.events.clone();
    synced(mesh, routes).await;
    tracing::info!(
        routes = routes.store.state().len(),
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
                let pass = writer.pass(mesh, routes, &leadership).await;
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
    routes: &Routes,
    writer: &Writer,
    sync_timeout: Duration,
) -> Result<Verdict, InputError> {
    let deadline = Instant::now() + sync_timeout;
    if timeout(sync_timeout, synced(mesh, routes)).await.is_err() {
        let why = routes
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
        let pass = writer.pass(mesh, routes, &leadership).await;
        total.written += pass.written;
        let settled = pass.failed == 0 && pass.waiting == 0;
        if settled || Instant::now() >= deadline {
            total.routes = pass.routes;
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
    async fn pass(&self, mesh: &Mesh, routes: &Routes, leadership: &Leadership) -> Pass {
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
        pass
    }

    async fn write(
        &self,
        route: &DynamicObject,
        want: &RouteStatus,
        mut plan: Plan,
        now: &Time,
        leadership: &Leadership,
    ) -> Result<Written, kube::Error> {
        let name = route.name_any();
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), want.route.namespace(), &grpc_routes());
        let mut version = route.resource_version();
        let mut attempt = 0;
        loop {
            attempt += 1;
            if !leadership.is_leader() {
                return Ok(Written::NotLeader);
            }
            let patch = json!({
                "metadata": {"resourceVersion": version},
                "status": {"parents": plan.parents},
            });
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(
                        route = %want.route,
                        generation = want.generation,
                        changes = %plan.changes.join("; "),
                        "status written"
                    );
                    return Ok(Written::Yes);
                }
                Err(kube::Error::Api(status)) if status.code == 404 => return Ok(Written::Gone),
                Err(kube::Error::Api(status)) if status.code == 409 && attempt < MAX_ATTEMPTS => {
                    tracing::debug!(
                        route = %want.route,
                        attempt,
                        "conflict writing the status; reading the route again"
                    );
                    let fresh = match api.get_status(&name).await {
                        Ok(fresh) => fresh,
                        Err(kube::Error::Api(status)) if status.code == 404 => {
                            return Ok(Written::Gone);
                        }
                        Err(e) => return Err(e),
                    };
                    if fresh.metadata.generation != want.generation {
                        return Ok(Written::Stale);
                    }
                    version = fresh.resource_version();
                    let status = status_of(&fresh).map_err(|e| {
                        kube::Error::Service(format!("cannot read the status: {e}").into())
                    })?;
                    match route_status::plan(status.as_ref(), want, &self.controller, now) {
                        Some(again) => plan = again,
                        None => return Ok(Written::AlreadyUpToDate),
                    }
                }
                Err(e) => return Err(e),
            }
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
