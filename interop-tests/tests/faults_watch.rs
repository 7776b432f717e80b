//! A stalled API-server watch: the watch stays open but delivers nothing — no event, no
//! bookmark — while the API server keeps serving everything else
//! (`ApiServerHandle::stall_open_watches`). Only the mesh's own stall detection
//! (`KubeSource::stall_timeout`) can notice: nothing fails, nothing closes.
//!
//! - Every watch stalls, then an EndpointSlice changes: the change reaches the calls no
//!   sooner than the stall could be detected and no later than the stall timeout after the
//!   last bookmark plus the first watch backoff (+ slack); the stall shows in
//!   `Mesh::source_health` (its last error names it); the watches resume from their last
//!   resource version (no relist); no call fails meanwhile.
//! - Bookmarks (every second from the test API server, about every minute from real ones)
//!   keep a quiet, healthy watch alive: no restart, no error over several stall timeouts.
//! - A server that sends no bookmarks gets its quiet watches restarted every stall timeout
//!   (plus the watch backoff, which grows while nothing arrives): a watch request each
//!   time, never a relist.
//!
//! The default stall timeout (90 s) is not exercised: it would add a minute and a half to
//! the suite for the same code path.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use grpcroute_client::{Mesh, Resources, source::KubeSource};
use grpcroute_interop_tests::{
    EchoService, EndpointState, GRPC_PORT,
    backends::add_all,
    calls::{ECHO, backend, call},
    delivery::object_value,
    eventually,
};
use grpcroute_test_apiserver::{ApiServer, Resource};
use tokio::time::Instant;

const NS: &str = "faults";
/// The stall timeout under test.
const STALL: Duration = Duration::from_secs(3);
/// The first retry of a failed watch: 250 ms ± 50 % (`KubeSource` defaults).
const FIRST_BACKOFF_MAX: Duration = Duration::from_millis(375);
/// Timers, scheduling and a loaded machine.
const SLACK: Duration = Duration::from_millis(1500);
const KINDS: [Resource; 4] = [
    Resource::Services,
    Resource::EndpointSlices,
    Resource::GrpcRoutes,
    Resource::ReferenceGrants,
];

/// Service `w` with server `i` of `servers` as its only endpoint.
fn config(servers: &EchoService, i: usize) -> anyhow::Result<Resources> {
    let mut resources = Resources::new();
    add_all(
        &mut resources,
        vec![
            servers.service().into(),
            servers
                .slice(i, EndpointState::Ready)
                .context("no such server")?
                .name("w")
                .into(),
        ],
    );
    Ok(resources)
}

async fn write(api: &ApiServer, resources: &Resources) -> anyhow::Result<()> {
    for service in &resources.services {
        api.apply(object_value(&service.clone().into())?)?;
    }
    for slice in &resources.endpoint_slices {
        api.apply(object_value(&slice.clone().into())?)?;
    }
    Ok(())
}

async fn mesh(api: &ApiServer) -> anyhow::Result<Mesh> {
    let source = KubeSource::with_client(api.client()?).stall_timeout(STALL);
    let mesh = Mesh::builder()
        .namespace(NS)
        .seed(3)
        .build_with_source(source);
    tokio::time::timeout(Duration::from_secs(10), mesh.ready())
        .await
        .context("the mesh never synced")?;
    Ok(mesh)
}

/// The backend that answers a call to `w`, or the failure.
async fn answer(mesh: &Mesh) -> anyhow::Result<String> {
    let channel = mesh.channel(&format!("w.{NS}:{GRPC_PORT}"))?;
    let response = tokio::time::timeout(Duration::from_secs(5), call(channel, ECHO, &[]))
        .await
        .context("a call hung")??;
    backend(response.metadata()).context("no backend named")
}

fn watches(api: &ApiServer) -> Vec<u64> {
    let stats = api.stats();
    KINDS.iter().map(|&k| stats.watches(k)).collect()
}

fn lists(api: &ApiServer) -> Vec<u64> {
    let stats = api.stats();
    KINDS.iter().map(|&k| stats.lists(k)).collect()
}

/// Every distinct `last_error` the mesh's source health shows, polled every 5 ms until
/// the returned flag is cleared.
fn record_errors(mesh: &Mesh) -> (Arc<Mutex<BTreeSet<String>>>, Arc<Mutex<bool>>) {
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let running = Arc::new(Mutex::new(true));
    let (mesh, s, r) = (mesh.clone(), seen.clone(), running.clone());
    tokio::spawn(async move {
        while *r.lock().unwrap() {
            if let Some(error) = mesh.source_health().last_error {
                s.lock().unwrap().insert(error);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    (seen, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_watch_is_detected_restarted_and_catches_up() -> anyhow::Result<()> {
    let api = ApiServer::builder().start().await?; // bookmarks every second
    let servers = EchoService::start(NS, "w", 2).await?;
    write(&api, &config(&servers, 0)?).await?;
    let mesh = mesh(&api).await?;
    anyhow::ensure!(answer(&mesh).await? == "w-0");
    let (errors, recording) = record_errors(&mesh);
    let (watches_before, lists_before) = (watches(&api), lists(&api));

    let stalled = Instant::now();
    api.stall_open_watches(None);
    // The change the stalled watches never deliver.
    write(&api, &config(&servers, 1)?).await?;
    let mut calls = 0;
    while answer(&mesh).await? == "w-0" {
        calls += 1;
        anyhow::ensure!(
            stalled.elapsed() <= STALL + FIRST_BACKOFF_MAX + SLACK,
            "the change did not arrive within {:?}: {:?}",
            STALL + FIRST_BACKOFF_MAX + SLACK,
            mesh.source_health()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let caught_up = stalled.elapsed();
    // Each watch stalls out on its own clock: wait for the last one to be restarted.
    let restarted = api
        .wait_for_stats(Duration::from_secs(5), |s| {
            KINDS
                .iter()
                .zip(&watches_before)
                .all(|(&kind, &before)| s.watches(kind) > before)
        })
        .await;
    let all_restarted = stalled.elapsed();
    *recording.lock().unwrap() = false;
    let errors = errors.lock().unwrap().clone();
    let (watches_after, lists_after) = (watches(&api), lists(&api));
    println!(
        "stalled watches (stall timeout {STALL:?}, bookmarks every 1 s): the change made \
         during the stall reached the calls {caught_up:.2?} after the stall began, every \
         watch was restarted by {all_restarted:.2?}; {calls} calls answered by the old \
         endpoint meanwhile, none failed; watches per kind {watches_before:?} -> \
         {watches_after:?}, lists {lists_before:?} -> {lists_after:?}; source health showed \
         {errors:?}"
    );
    anyhow::ensure!(
        restarted && all_restarted <= STALL + FIRST_BACKOFF_MAX + SLACK,
        "not every watch was restarted in time: {watches_before:?} -> {watches_after:?}"
    );
    // The last bookmark came at most a second before the stall began: the stall cannot have
    // been noticed sooner than STALL - 1 s after it.
    anyhow::ensure!(
        caught_up >= STALL - Duration::from_secs(1),
        "the change arrived after {caught_up:?}: did the watch stall at all?"
    );
    anyhow::ensure!(
        errors.iter().any(|e| e.contains("stalled")
            && e.contains(&format!("nothing from the API server for {STALL:?}"))
            && e.contains("no event, no bookmark")),
        "the stall never showed in the source's health: {errors:?}"
    );
    anyhow::ensure!(lists_after == lists_before, "a relist instead of a resume");
    let health = mesh.source_health();
    anyhow::ensure!(
        eventually(Duration::from_secs(5), || mesh.source_health().connected).await,
        "{health:?}"
    );
    servers.shutdown().await;
    api.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn bookmarks_keep_a_quiet_watch_alive() -> anyhow::Result<()> {
    let api = ApiServer::builder().start().await?; // bookmarks every second
    let servers = EchoService::start(NS, "w", 1).await?;
    write(&api, &config(&servers, 0)?).await?;
    let mesh = mesh(&api).await?;
    let (errors, recording) = record_errors(&mesh);
    let (watches_before, lists_before) = (watches(&api), lists(&api));
    tokio::time::sleep(STALL * 2 + Duration::from_secs(1)).await;
    *recording.lock().unwrap() = false;
    anyhow::ensure!(
        watches(&api) == watches_before && lists(&api) == lists_before,
        "a healthy watch was restarted: watches {watches_before:?} -> {:?}",
        watches(&api)
    );
    anyhow::ensure!(errors.lock().unwrap().is_empty(), "{errors:?}");
    anyhow::ensure!(answer(&mesh).await? == "w-0");
    servers.shutdown().await;
    api.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn without_bookmarks_quiet_watches_restart_without_relisting() -> anyhow::Result<()> {
    let api = ApiServer::builder()
        .bookmark_interval(Duration::from_secs(3600))
        .start()
        .await?;
    let servers = EchoService::start(NS, "w", 2).await?;
    write(&api, &config(&servers, 0)?).await?;
    let mesh = mesh(&api).await?;
    let (watches_before, lists_before) = (watches(&api), lists(&api));
    tokio::time::sleep(STALL * 2 + Duration::from_secs(1)).await;
    let (watches_after, lists_after) = (watches(&api), lists(&api));
    println!(
        "no bookmarks, stall timeout {STALL:?}, {:?} quiet: watches per kind \
         {watches_before:?} -> {watches_after:?}, lists {lists_before:?} -> {lists_after:?}",
        STALL * 2 + Duration::from_secs(1)
    );
    anyhow::ensure!(
        watches_after
            .iter()
            .zip(&watches_before)
            .all(|(after, before)| after > before),
        "quiet watches restart after a stall timeout"
    );
    anyhow::ensure!(lists_after == lists_before, "never a relist");
    // And they still follow changes.
    write(&api, &config(&servers, 1)?).await?;
    anyhow::ensure!(
        eventually(Duration::from_secs(5), || {
            mesh.explain(&grpcroute_client::CallDescription {
                target: format!("w.{NS}:{GRPC_PORT}"),
                path: ECHO.into(),
                ..Default::default()
            })
            .backends
            .first()
            .is_some_and(|b| {
                b.endpoints == [format!("127.0.0.1:{}", servers.servers[1].addr().port())]
            })
        })
        .await
    );
    servers.shutdown().await;
    api.shutdown().await;
    Ok(())
}
