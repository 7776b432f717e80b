//! Under a steady load of calls (8 callers calling back to back through `Mesh::channel`,
//! every call checked):
//!
//! - a rolling replacement of every endpoint of a backend, ten times over: new endpoints
//!   are published ready, then the old ones terminating, then removed, and their servers
//!   stop gracefully (GOAWAY, in-flight calls finish) — no call fails, and every call is
//!   answered by a server that was ready in the configuration of its moment (directly and
//!   through the Kubernetes API);
//! - an API server outage of 30 s (connections refused, watches cut): no call fails, the
//!   last configuration keeps serving, the outage shows in `Mesh::source_health`, and the
//!   changes made meanwhile are picked up once the server is back;
//! - history compaction (410 Gone, relist), dropped watches and an API server restart
//!   change nothing visible: no call fails, the routes and statuses stay identical and the
//!   calls keep their weighted split.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use anyhow::Context as _;
use grpcroute_client::{
    CallDescription, Explanation, Mesh, Object, Resources, RouteStatus,
    build::{Backend, Rule, endpoints, route, service},
};
use grpcroute_echo::{EchoConfig, EchoServer};
use grpcroute_interop_tests::{
    Delivery, EchoService, EndpointState, Feed, GRPC_PORT, LOOPBACK, assert_share,
    backends::add_all, calls::ECHO, delivery::object_value, each_delivery, eventually, load::Load,
};
use grpcroute_test_apiserver::{ApiServer, Resource};
use tokio::time::Instant;

const NS: &str = "load";
const CALLERS: usize = 8;

/// One pod of the rolling backend: its server and the state its endpoint is published in.
struct RollingPod {
    name: String,
    server: EchoServer,
    state: EndpointState,
}

/// Service `front` routed to Service `roll`, whose endpoints are `pods`, one EndpointSlice
/// each (named after the pod).
fn rolling_config(pods: &[RollingPod]) -> Resources {
    let mut r = Resources::new()
        .with(service(NS, "front").port("grpc", GRPC_PORT))
        .with(service(NS, "roll").port("grpc", GRPC_PORT))
        .with(
            route(NS, "front")
                .parent_service("front", None)
                .rule(Rule::new().backend(Backend::service("roll", GRPC_PORT))),
        );
    for pod in pods {
        let slice = endpoints(NS, "roll")
            .name(&pod.name)
            .port("grpc", pod.server.addr().port());
        r.push(match pod.state {
            EndpointState::Ready => slice.ready(LOOPBACK),
            EndpointState::Terminating => slice.terminating(LOOPBACK),
            EndpointState::NotReady => slice.not_ready(LOOPBACK),
        });
    }
    r
}

async fn start_pod(name: String) -> anyhow::Result<RollingPod> {
    let server = EchoServer::start(
        EchoConfig::new(name.clone())
            .namespace(NS)
            .pod(name.clone()),
    )
    .await?;
    Ok(RollingPod {
        name,
        server,
        state: EndpointState::Ready,
    })
}

/// The load's view of a configuration change: epochs, each with the pods allowed to answer
/// a call made during it.
struct Epochs<'a> {
    load: &'a Load,
    allowed: Vec<BTreeSet<String>>,
}

impl Epochs<'_> {
    /// Marks a transition from the current epoch to one where `next` may answer (both
    /// may, until [`Epochs::settled`]); call it before the change is written.
    fn transition(&mut self, next: &BTreeSet<String>) {
        let current = self.allowed.last().cloned().unwrap_or_default();
        self.allowed.push(current.union(next).cloned().collect());
        self.load.set_epoch(self.allowed.len() - 1);
    }

    /// Marks the epoch where only `next` may answer; call it once the mesh has the change.
    fn settled(&mut self, next: BTreeSet<String>) {
        self.allowed.push(next);
        self.load.set_epoch(self.allowed.len() - 1);
    }
}

each_delivery! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    rolling_replacement_under_load_loses_nothing
}
/// Ten rounds; in each, the three pods of `roll` are replaced one at a time (surge 1):
/// the new pod's endpoint is published ready; then the old one terminating (ready=false,
/// serving=true, terminating=true); then its slice is deleted; then its server shuts down
/// gracefully. Each step waits until the mesh has it (`Feed::set` returns then) and for
/// some calls, so every configuration is under load. A call may only be answered by a pod
/// that was ready in a configuration in force during the call: never by a terminating
/// one while ready ones exist, never by one already removed.
async fn rolling_replacement_under_load_loses_nothing(delivery: Delivery) -> anyhow::Result<()> {
    const REPLICAS: usize = 3;
    const ROUNDS: usize = 10;
    let ready = |pods: &[RollingPod]| -> BTreeSet<String> {
        pods.iter()
            .filter(|p| p.state == EndpointState::Ready)
            .map(|p| p.name.clone())
            .collect()
    };
    let mut pods = Vec::new();
    for i in 0..REPLICAS {
        pods.push(start_pod(format!("roll-r0-{i}")).await?);
    }
    let feed = Feed::with(delivery, rolling_config(&pods)).await?;
    let mesh = feed.mesh(Mesh::builder().namespace(NS).seed(71)).await?;
    let load = Load::start(&mesh, "front:7070", CALLERS)?;
    let mut epochs = Epochs {
        load: &load,
        allowed: vec![ready(&pods)],
    };
    let started = Instant::now();
    anyhow::ensure!(
        load.more_calls(100, Duration::from_secs(10)).await,
        "no calls"
    );

    for round in 1..=ROUNDS {
        for slot in 0..REPLICAS {
            // The new pod becomes ready.
            pods.push(start_pod(format!("roll-r{round}-{slot}")).await?);
            epochs.transition(&ready(&pods));
            feed.set(rolling_config(&pods)).await?;
            epochs.settled(ready(&pods));
            anyhow::ensure!(load.more_calls(16, Duration::from_secs(10)).await);
            // The old one terminates...
            pods[slot].state = EndpointState::Terminating;
            epochs.transition(&ready(&pods));
            feed.set(rolling_config(&pods)).await?;
            epochs.settled(ready(&pods));
            anyhow::ensure!(load.more_calls(16, Duration::from_secs(10)).await);
            // ...and disappears; its server drains and stops. The new pod takes its slot.
            let old = pods.swap_remove(slot);
            feed.set(rolling_config(&pods)).await?;
            old.server.shutdown().await;
            anyhow::ensure!(load.more_calls(16, Duration::from_secs(10)).await);
        }
    }
    let elapsed = started.elapsed();
    let allowed = epochs.allowed;
    let records = load.stop().await;
    println!(
        "rolling replacement ({delivery:?}): {ROUNDS} rounds x {REPLICAS} pods, {} calls in \
         {elapsed:.1?}, {} failed",
        records.total(),
        records.failures().len()
    );
    records.assert_no_failures();
    records.assert_answers(|e, name| allowed[e].contains(name));
    // Every pod that ever existed took calls.
    let answered = records.by_backend().len();
    assert_eq!(
        answered,
        REPLICAS * (ROUNDS + 1),
        "{:?}",
        records.by_backend()
    );
    for pod in pods {
        pod.server.shutdown().await;
    }
    feed.shutdown().await;
    Ok(())
}

/// What the mesh would do with the calls of these tests, and the status of its routes.
#[derive(Debug, PartialEq)]
struct Visible {
    explained: Vec<Explanation>,
    statuses: BTreeMap<String, RouteStatus>,
}

fn visible(mesh: &Mesh, targets: &[&str]) -> Visible {
    let explained = targets
        .iter()
        .map(|t| {
            mesh.explain(&CallDescription {
                target: (*t).into(),
                path: ECHO.into(),
                ..Default::default()
            })
        })
        .collect();
    let statuses = mesh
        .statuses()
        .into_iter()
        .map(|s| (s.route.to_string(), s))
        .collect();
    Visible {
        explained,
        statuses,
    }
}

fn route_split(v1: u32, v2: u32) -> Object {
    route(NS, "front")
        .parent_service("front", None)
        .rule(
            Rule::new()
                .backend(Backend::service("v1", GRPC_PORT).weight(v1))
                .backend(Backend::service("v2", GRPC_PORT).weight(v2)),
        )
        .into()
}

/// Services `front` (routed 3:1 to `v1` and `v2`), `v1` (2 pods) and `v2` (2 pods, only
/// `v2-0` published).
fn split_config(v1: &EchoService, v2: &EchoService) -> Resources {
    let mut r = Resources::new()
        .with(service(NS, "front").port("grpc", GRPC_PORT))
        .with(route_split(3, 1));
    add_all(&mut r, v1.objects());
    r.push(v2.service());
    if let Some(slice) = v2.slice(0, EndpointState::Ready) {
        r.push(slice);
    }
    r
}

fn api(feed: &Feed) -> anyhow::Result<&ApiServer> {
    feed.api().context("no API server")
}

/// The API server is unreachable for 30 s (connections refused, every watch cut) while 8
/// callers keep calling: no call fails and the last configuration keeps serving. Changes
/// written meanwhile (the route now sends everything to `v2`, `v2-1` is published, `v1-1`'s
/// slice is deleted) are picked up once the server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_outage_under_load_loses_nothing() -> anyhow::Result<()> {
    const OUTAGE: Duration = Duration::from_secs(30);
    let v1 = EchoService::start(NS, "v1", 2).await?;
    let v2 = EchoService::start(NS, "v2", 2).await?;
    let feed = Feed::with(Delivery::Kube, split_config(&v1, &v2)).await?;
    let mesh = feed.mesh(Mesh::builder().namespace(NS).seed(72)).await?;
    let api = api(&feed)?;
    let targets = ["front:7070", "v1:7070", "v2:7070"];
    let before = visible(&mesh, &targets);
    let health = mesh.source_health();
    assert!(
        health.connected && health.disconnected_since.is_none(),
        "{health:?}"
    );

    let load = Load::start(&mesh, "front:7070", CALLERS)?;
    anyhow::ensure!(
        load.more_calls(200, Duration::from_secs(10)).await,
        "no calls"
    );

    let down = Instant::now();
    api.refuse_connections(None).await;
    api.drop_watches();
    anyhow::ensure!(
        eventually(Duration::from_secs(10), || !mesh.source_health().connected).await,
        "the outage was never noticed: {:?}",
        mesh.source_health()
    );
    let noticed = down.elapsed();
    let health = mesh.source_health();
    assert!(health.disconnected_since.is_some(), "{health:?}");
    println!("outage noticed after {noticed:.1?}: {health:?}");

    // Changed while the API server is unreachable.
    api.apply(object_value(&route_split(0, 1))?)?;
    if let Some(slice) = v2.slice(1, EndpointState::Ready) {
        api.apply(object_value(&slice.into())?)?;
    }
    api.delete(Resource::EndpointSlices, NS, "v1-1")?;

    // The last good configuration keeps serving, unchanged, for the whole outage.
    while down.elapsed() < OUTAGE {
        assert_eq!(
            visible(&mesh, &targets),
            before,
            "the configuration changed"
        );
        assert!(!mesh.source_health().connected);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let during = (load.calls(), load.failed());

    // From here the changes may arrive: old and new answers are both fine until the mesh
    // has all of them.
    load.set_epoch(1);
    api.accept_connections().await;
    let back = Instant::now();
    let picked_up = eventually(Duration::from_secs(30), || {
        let e = mesh.explain(&CallDescription {
            target: "front:7070".into(),
            path: ECHO.into(),
            ..Default::default()
        });
        let v1 = mesh.explain(&CallDescription {
            target: "v1:7070".into(),
            path: ECHO.into(),
            ..Default::default()
        });
        e.backends.len() == 2
            && e.backends[0].weight == 0
            && e.backends[1].endpoints.len() == 2
            && v1.backends.first().is_some_and(|b| b.endpoints.len() == 1)
    })
    .await;
    anyhow::ensure!(
        picked_up,
        "the changes made during the outage were never picked up: {:?}",
        mesh.source_health()
    );
    let pickup = back.elapsed();
    load.set_epoch(2);
    anyhow::ensure!(
        eventually(Duration::from_secs(10), || {
            let h = mesh.source_health();
            h.connected && h.disconnected_since.is_none()
        })
        .await,
        "the recovery never shows: {:?}",
        mesh.source_health()
    );
    println!(
        "outage of {:.1?}: {} calls ({} failed) during it; changes picked up {pickup:.1?} \
         after the server came back; health now {:?}",
        back - down,
        during.0,
        during.1,
        mesh.source_health()
    );
    anyhow::ensure!(load.more_calls(500, Duration::from_secs(10)).await);
    let records = load.stop().await;
    println!(
        "API server outage: {} calls, {} failed, by backend {:?}",
        records.total(),
        records.failures().len(),
        records.by_backend()
    );
    records.assert_no_failures();
    // Until the server came back, including the whole outage: the old split (v1-0, v1-1,
    // v2-0). Once the changes are in: v2 only, both pods.
    let old = ["v1-0", "v1-1", "v2-0"];
    let new = ["v2-0", "v2-1"];
    records.assert_answers(|epoch, name| match epoch {
        0 => old.contains(&name),
        1 => old.contains(&name) || new.contains(&name),
        _ => new.contains(&name),
    });
    let by_backend = records.by_backend();
    assert!(by_backend.contains_key("v2-1"), "{by_backend:?}");
    v1.shutdown().await;
    v2.shutdown().await;
    feed.shutdown().await;
    Ok(())
}

/// Waits until the source has re-listed every kind since `lists` (per-kind LIST counts)
/// and has its watches open again.
async fn relisted(api: &ApiServer, lists: &BTreeMap<Resource, u64>) -> bool {
    api.wait_for_stats(Duration::from_secs(20), |s| {
        lists.iter().all(|(r, n)| s.lists(*r) > *n) && s.open_watches() == WATCHED.len()
    })
    .await
}

/// Waits until the source has opened new watches for every kind since `watches` and has
/// its watches open.
async fn rewatched(api: &ApiServer, watches: &BTreeMap<Resource, u64>) -> bool {
    api.wait_for_stats(Duration::from_secs(20), |s| {
        watches.iter().all(|(r, n)| s.watches(*r) > *n) && s.open_watches() == WATCHED.len()
    })
    .await
}

/// Every kind the source watches (BackendTLSPolicies and their ConfigMaps too, since the
/// test API server serves BackendTLSPolicy `v1`).
const WATCHED: [Resource; 6] = [
    Resource::Services,
    Resource::EndpointSlices,
    Resource::GrpcRoutes,
    Resource::ReferenceGrants,
    Resource::BackendTlsPolicies,
    Resource::ConfigMaps,
];

/// Under load, three times over: history compaction (every watch ends, the next one gets
/// 410 Gone and the source re-lists), dropped watches (re-watched from the last version),
/// and an API server restart (every connection cut). After each, once the source is back
/// (re-listed or re-watched, as the fault demands), the routes and statuses are exactly
/// those before; no call fails; the calls keep the 3:1 split (4σ).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_and_dropped_watches_change_nothing_visible() -> anyhow::Result<()> {
    let v1 = EchoService::start(NS, "v1", 2).await?;
    let v2 = EchoService::start(NS, "v2", 2).await?;
    let feed = Feed::with(Delivery::Kube, split_config(&v1, &v2)).await?;
    let mesh = feed.mesh(Mesh::builder().namespace(NS).seed(73)).await?;
    let api = api(&feed)?;
    let targets = ["front:7070", "v1:7070", "v2:7070"];
    let before = visible(&mesh, &targets);
    let version_before = mesh.source_health().version;
    let counts = |f: fn(&grpcroute_test_apiserver::Stats, Resource) -> u64| {
        let stats = api.stats();
        WATCHED
            .iter()
            .map(|r| (*r, f(&stats, *r)))
            .collect::<BTreeMap<_, _>>()
    };
    anyhow::ensure!(
        api.wait_for_stats(Duration::from_secs(10), |s| s.open_watches()
            == WATCHED.len())
            .await,
        "the source never opened its watches: {:?}",
        api.stats()
    );

    let load = Load::start(&mesh, "front:7070", CALLERS)?;
    anyhow::ensure!(
        load.more_calls(200, Duration::from_secs(10)).await,
        "no calls"
    );
    for round in 0..3 {
        let lists = counts(grpcroute_test_apiserver::Stats::lists);
        api.compact();
        anyhow::ensure!(
            relisted(api, &lists).await,
            "round {round}: no relist after compaction: {:?}",
            api.stats()
        );
        anyhow::ensure!(load.more_calls(100, Duration::from_secs(10)).await);
        assert_eq!(visible(&mesh, &targets), before, "round {round}: after 410");

        let watches = counts(grpcroute_test_apiserver::Stats::watches);
        api.drop_watches();
        anyhow::ensure!(
            rewatched(api, &watches).await,
            "round {round}: no re-watch after dropped watches: {:?}",
            api.stats()
        );
        anyhow::ensure!(load.more_calls(100, Duration::from_secs(10)).await);
        assert_eq!(
            visible(&mesh, &targets),
            before,
            "round {round}: after drops"
        );

        let watches = counts(grpcroute_test_apiserver::Stats::watches);
        api.restart();
        anyhow::ensure!(
            rewatched(api, &watches).await,
            "round {round}: no re-watch after a restart: {:?}",
            api.stats()
        );
        anyhow::ensure!(
            eventually(Duration::from_secs(10), || mesh.source_health().connected).await,
            "round {round}: never reconnected: {:?}",
            mesh.source_health()
        );
        anyhow::ensure!(load.more_calls(100, Duration::from_secs(10)).await);
        assert_eq!(
            visible(&mesh, &targets),
            before,
            "round {round}: after restart"
        );
    }
    let records = load.stop().await;
    let version_after = mesh.source_health().version;
    let stats = api.stats();
    println!(
        "410/dropped watches/restarts: {} calls, {} failed, by backend {:?}; configuration \
         version {version_before} -> {version_after}; lists {:?}",
        records.total(),
        records.failures().len(),
        records.by_backend(),
        WATCHED.map(|r| stats.lists(r))
    );
    records.assert_no_failures();
    records.assert_answers(|_, name| ["v1-0", "v1-1", "v2-0"].contains(&name));
    let n = records.total();
    let by_backend = records.by_backend();
    let v1_calls = by_backend.get("v1-0").copied().unwrap_or_default()
        + by_backend.get("v1-1").copied().unwrap_or_default();
    assert_share("v1", v1_calls, n, 0.75);
    v1.shutdown().await;
    v2.shutdown().await;
    feed.shutdown().await;
    Ok(())
}
