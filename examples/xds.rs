//! Routing by an xDS control plane: `mesh.channel("xds:///order-service")`.
//!
//! ```text
//! cargo run --example xds
//! ```
//!
//! With `GRPC_XDS_BOOTSTRAP` (a file) or `GRPC_XDS_BOOTSTRAP_CONFIG` (JSON) set, the mesh
//! reads its bootstrap from there, exactly as gRPC's own xDS clients do, and the example
//! calls `xds:///$XDS_TARGET` (default `order-service`) on your control plane (istiod,
//! Traffic Director, go-control-plane) and prints which backend answered each call.
//!
//! Without them it starts a small ADS control plane of its own on 127.0.0.1 (the one the
//! differential tests use) serving, for listener `order-service`:
//! - route 1: metadata `x-group: canary` → cluster `order-canary`;
//! - route 2: every `order.v1.OrderService` method → 90 % `order-stable`, 10 % `order-canary`;
//!
//! and two echo "pods" per cluster. It makes 200 calls and prints the split, then the
//! control plane moves the split to 50/50 and the next 200 calls follow it, with no
//! restart and no failed call. Unlike GRPCRoute, xDS routes are tried in the order the
//! control plane lists them (first match wins), and a call no route matches fails
//! `UNAVAILABLE` (gRFC A28).

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context, ensure};
use grpcroute_client::{Mesh, xds::Bootstrap};
use grpcroute_echo::{BACKEND_HEADER, EchoConfig, EchoServer};
use grpcroute_examples::order::v1::{GetOrderRequest, order_service_client::OrderServiceClient};
use grpcroute_xds_control_plane::{
    ControlPlane,
    builders::{
        ApiListener, ClusterBuilder, RouteBuilder, header, load_assignment, route_configuration,
        virtual_host,
    },
};

const CALLS: usize = 200;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    grpcroute_examples::log_to_stderr();
    let external = std::env::var_os("GRPC_XDS_BOOTSTRAP").is_some()
        || std::env::var_os("GRPC_XDS_BOOTSTRAP_CONFIG").is_some();
    if external {
        let target = std::env::var("XDS_TARGET").unwrap_or_else(|_| "order-service".into());
        // No `xds_bootstrap(...)`: the first `xds:` channel reads the environment.
        let mesh = Mesh::builder().build();
        let mut client = OrderServiceClient::new(mesh.channel(&format!("xds:///{target}"))?);
        let split = calls(&mut client, 20, false).await?;
        println!("xds:///{target}: {split:?}");
        return Ok(());
    }

    // Two pods per cluster.
    let mut pods = Vec::new();
    for name in [
        "order-stable",
        "order-stable",
        "order-canary",
        "order-canary",
    ] {
        pods.push(EchoServer::start(EchoConfig::new(name).namespace("app")).await?);
    }
    let addrs = |name: &str| {
        pods.iter()
            .filter(|p| p.name() == name)
            .map(EchoServer::addr)
            .collect::<Vec<_>>()
    };
    let cp = ControlPlane::start().await?;
    let publish = |stable: u32, canary: u32| {
        cp.set([
            ApiListener::rds("order-service", "order-routes")
                .build()
                .into(),
            route_configuration(
                "order-routes",
                vec![virtual_host(
                    "order",
                    &["*"],
                    vec![
                        RouteBuilder::prefix("/")
                            .name("canary-testers")
                            .header(header::exact("x-group", "canary"))
                            .cluster("order-canary")
                            .build(),
                        RouteBuilder::prefix("/order.v1.OrderService/")
                            .name("split")
                            .weighted_clusters(&[
                                ("order-stable", stable),
                                ("order-canary", canary),
                            ])
                            .build(),
                    ],
                )],
            )
            .into(),
            ClusterBuilder::eds("order-stable").build().into(),
            ClusterBuilder::eds("order-canary").build().into(),
            load_assignment("order-stable", addrs("order-stable")).into(),
            load_assignment("order-canary", addrs("order-canary")).into(),
        ]);
    };
    publish(90, 10);
    let bootstrap = Bootstrap::from_json(&cp.bootstrap("xds-example").to_json().to_string())
        .context("the control plane's bootstrap")?;
    println!(
        "control plane: {} (ADS, state of the world)",
        cp.server_uri()
    );

    let mesh = Mesh::builder().xds_bootstrap(bootstrap).build();
    let mut client = OrderServiceClient::new(mesh.channel("xds:///order-service")?);

    let split = calls(&mut client, CALLS, false).await?;
    println!("90/10 split, {CALLS} calls:               {split:?}");
    check_share(&split, "order-canary", 0.10)?;
    let testers = calls(&mut client, 20, true).await?;
    println!("x-group: canary, 20 calls:             {testers:?}");
    ensure!(
        testers.keys().all(|k| k == "order-canary"),
        "the first route (x-group: canary) must take every tester's call"
    );

    // The control plane moves the split; the mesh follows without a restart.
    publish(50, 50);
    println!("the control plane moves the split to 50/50");
    // Wait until the new split shows, then measure a fresh batch.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let probe = calls(&mut client, 50, false).await?;
            if probe.get("order-canary").copied().unwrap_or(0) > 15 {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .context("the 50/50 split never arrived")??;
    let moved = calls(&mut client, CALLS, false).await?;
    println!("50/50 split, {CALLS} calls:               {moved:?}");
    check_share(&moved, "order-canary", 0.50)?;

    if let Some(dump) = mesh.xds_config() {
        println!("\nwhat the mesh holds (CSDS-style, `grpcroute xds-dump` prints the same):");
        for r in &dump.resources {
            println!(
                "  {:<22} {:<14} version {:<4} {}",
                r.resource_type, r.name, r.version, r.state
            );
        }
    }
    Ok(())
}

/// `n` calls; how many each backend answered.
async fn calls(
    client: &mut OrderServiceClient<grpcroute_client::Channel>,
    n: usize,
    canary_tester: bool,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut split = BTreeMap::new();
    for i in 0..n {
        let mut request = tonic::Request::new(GetOrderRequest {
            order_id: format!("o-{i}"),
        });
        request.set_timeout(Duration::from_secs(5));
        if canary_tester {
            request.metadata_mut().insert(
                "x-group",
                tonic::metadata::MetadataValue::from_static("canary"),
            );
        }
        let response = client.get_order(request).await?;
        let backend = response
            .metadata()
            .get(BACKEND_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_owned();
        *split.entry(backend).or_insert(0) += 1;
    }
    Ok(split)
}

/// The share of `backend` is within 5σ of `expected` (binomial over the calls made).
fn check_share(
    split: &BTreeMap<String, usize>,
    backend: &str,
    expected: f64,
) -> anyhow::Result<()> {
    let n = split.values().sum::<usize>() as f64;
    let got = split.get(backend).copied().unwrap_or(0) as f64 / n;
    let sigma = (expected * (1.0 - expected) / n).sqrt();
    ensure!(
        (got - expected).abs() <= 5.0 * sigma,
        "{backend} took {:.1} % of the calls, expected {:.0} % ± {:.1}",
        got * 100.0,
        expected * 100.0,
        5.0 * sigma * 100.0
    );
    Ok(())
}
