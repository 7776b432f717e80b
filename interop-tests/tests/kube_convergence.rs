//! Convergence through the Kubernetes API: after a GRPCRoute change and after an
//! EndpointSlice change written through the API server's HTTP API (a merge patch, as
//! `kubectl patch --type merge` sends it), calls follow the new configuration. Each test
//! takes 50 samples of the time from the write (just before the PATCH request is sent) to
//! the first call answered by the new backend, and prints p50/p90/max:
//!
//! ```sh
//! cargo test -p grpcroute-interop-tests --test kube_convergence -- --nocapture --test-threads=1
//! ```
//!
//! The only assertion on time is a generous hang detector (each change must converge
//! within 5 s); the figures are printed, not asserted.

use std::time::Duration;

use anyhow::Context as _;
use gateway_api::grpcroutes::GrpcRoute;
use grpcroute_client::{
    Mesh, Resources,
    build::{Backend, Rule, endpoints, route, service},
};
use grpcroute_interop_tests::{
    Delivery, EchoService, Feed, GRPC_PORT, LOOPBACK, backend, backends::add_all, call, calls::ECHO,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::time::Instant;

const NS: &str = "conv";
const SAMPLES: usize = 50;
/// A change that takes longer than this to reach the calls is a hang, not a slow sample.
const HANG: Duration = Duration::from_secs(5);
/// Calls after the first follower that must follow too: the change is in force, not
/// flickering.
const CONFIRM: usize = 5;

/// Sorted samples and the figures the README reports.
struct Figures(Vec<Duration>);

impl Figures {
    fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        Self(samples)
    }

    fn at(&self, q: f64) -> Duration {
        let i = ((self.0.len() as f64 * q).ceil() as usize).clamp(1, self.0.len()) - 1;
        self.0[i]
    }

    fn line(&self, what: &str) -> String {
        format!(
            "{what}: n={} p50={:.1?} p90={:.1?} max={:.1?} min={:.1?}",
            self.0.len(),
            self.at(0.5),
            self.at(0.9),
            self.0.last().copied().unwrap_or_default(),
            self.0.first().copied().unwrap_or_default(),
        )
    }
}

/// Calls `target` back to back until `expected` answers; the time from `written`. Then
/// checks that the next calls are answered by `expected` too.
async fn first_follower(
    mesh: &Mesh,
    target: &str,
    expected: &str,
    written: Instant,
) -> anyhow::Result<Duration> {
    let channel = mesh.channel(target)?;
    let took = loop {
        let r = call(channel.clone(), ECHO, &[]).await?;
        if backend(r.metadata()).as_deref() == Some(expected) {
            break written.elapsed();
        }
        anyhow::ensure!(
            written.elapsed() < HANG,
            "calls never followed the change to {expected}"
        );
    };
    for _ in 0..CONFIRM {
        let r = call(channel.clone(), ECHO, &[]).await?;
        anyhow::ensure!(
            backend(r.metadata()).as_deref() == Some(expected),
            "a call after the change went to {:?}, not {expected}",
            backend(r.metadata())
        );
    }
    Ok(took)
}

/// The library's own measure of the last change (event received → snapshot live).
fn source_latency(mesh: &Mesh) -> Duration {
    mesh.source_health().last_latency.unwrap_or_default()
}

/// GRPCRoute `front` sends every call to `a` or `b`; 50 times, a merge patch swaps the
/// backend and the calls follow.
#[tokio::test]
async fn route_changes_through_the_api_converge() -> anyhow::Result<()> {
    let a = EchoService::start(NS, "a", 1).await?;
    let b = EchoService::start(NS, "b", 1).await?;
    let route_to = |to: &str| {
        route(NS, "front")
            .parent_service("front", None)
            .rule(Rule::new().backend(Backend::service(to, GRPC_PORT)))
    };
    let mut resources = Resources::new()
        .with(service(NS, "front").port("grpc", GRPC_PORT))
        .with(route_to("a"));
    add_all(&mut resources, a.objects());
    add_all(&mut resources, b.objects());
    let feed = Feed::with(Delivery::Kube, resources).await?;
    let mesh = feed.mesh(Mesh::builder().namespace(NS).seed(61)).await?;
    let api = feed.api().context("no API server")?;
    let routes: Api<GrpcRoute> = Api::namespaced(api.client()?, NS);
    let patch = PatchParams::default();

    let mut samples = Vec::with_capacity(SAMPLES);
    let mut source = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let (to, pod) = if i % 2 == 0 {
            ("b", "b-0")
        } else {
            ("a", "a-0")
        };
        let body = json!({"spec": {"rules": [{"backendRefs": [{"name": to, "port": GRPC_PORT}]}]}});
        let written = Instant::now();
        routes.patch("front", &patch, &Patch::Merge(&body)).await?;
        samples.push(first_follower(&mesh, "front:7070", pod, written).await?);
        source.push(source_latency(&mesh));
        // Let the callers' connections and the watch settle between samples.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "{}",
        Figures::new(samples).line("GRPCRoute change, API write -> first call that follows")
    );
    println!(
        "{}",
        Figures::new(source).line("  of which the source's event -> snapshot live")
    );
    a.shutdown().await;
    b.shutdown().await;
    feed.shutdown().await;
    Ok(())
}

/// Service `svc` (no route) has one EndpointSlice with one ready endpoint; 50 times, a
/// merge patch moves its port from one server to the other and the calls follow.
#[tokio::test]
async fn endpoint_slice_changes_through_the_api_converge() -> anyhow::Result<()> {
    let pods = EchoService::start(NS, "svc", 2).await?;
    let port = |i: usize| pods.servers[i].addr().port();
    let resources = Resources::new()
        .with(service(NS, "svc").port("grpc", GRPC_PORT))
        .with(
            endpoints(NS, "svc")
                .name("svc-slice")
                .port("grpc", port(0))
                .ready(LOOPBACK),
        );
    let feed = Feed::with(Delivery::Kube, resources).await?;
    let mesh = feed.mesh(Mesh::builder().namespace(NS).seed(62)).await?;
    let api = feed.api().context("no API server")?;
    let slices: Api<EndpointSlice> = Api::namespaced(api.client()?, NS);
    let patch = PatchParams::default();

    let mut samples = Vec::with_capacity(SAMPLES);
    let mut source = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let to = (i + 1) % 2;
        let body = json!({"ports": [{"name": "grpc", "port": port(to)}]});
        let written = Instant::now();
        slices
            .patch("svc-slice", &patch, &Patch::Merge(&body))
            .await?;
        samples.push(first_follower(&mesh, "svc:7070", &format!("svc-{to}"), written).await?);
        source.push(source_latency(&mesh));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "{}",
        Figures::new(samples).line("EndpointSlice change, API write -> first call that follows")
    );
    println!(
        "{}",
        Figures::new(source).line("  of which the source's event -> snapshot live")
    );
    pods.shutdown().await;
    feed.shutdown().await;
    Ok(())
}
