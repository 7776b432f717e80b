//! xDS convergence (issue 11): from the control plane's change to the first call that
//! follows it.
//!
//! A test ADS control plane (`interop-tests/xds`, the one the differential tests use) on
//! 127.0.0.1 serves listener `conv` → route configuration → clusters over two
//! `grpcroute-echo` servers; one caller makes calls back to back through
//! `mesh.channel("xds:///conv")`. Each sample changes the configuration so that calls must
//! move to the other server, and times from just before the change is handed to the control
//! plane (which pushes it on the open ADS stream at once) to the first call answered by the
//! other server. Three kinds of change:
//!
//! - `EDS`: the cluster's ClusterLoadAssignment moves to the other server (one resource);
//! - `RDS`: the route points at the other of two warm clusters (one resource);
//! - `CDS+EDS`: the route points at a cluster the client has never seen, so the client
//!   must subscribe to it and to its endpoints before the route may take traffic (gRFC
//!   A74: only complete configurations go live): three round trips.
//!
//! `cargo bench -p grpcroute-benches --bench xds_convergence`; quick (3 samples) without
//! `--bench`. `XDS_CONV_SAMPLES` (default 30) samples per kind.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use grpcroute_benches::{
    harness::{env, quick},
    machine::{Load, Machine},
    stats::Latency,
};
use grpcroute_client::{Mesh, xds::Bootstrap};
use grpcroute_echo::{
    BACKEND_HEADER, EchoConfig, EchoServer,
    pb::{EchoRequest, grpc_echo_client::GrpcEchoClient},
};
use grpcroute_xds_control_plane::{
    ControlPlane, Resource,
    builders::{
        ApiListener, ClusterBuilder, RouteBuilder, load_assignment, route_configuration,
        virtual_host,
    },
};
use tokio::time::Instant;

const LISTENER: &str = "conv";
const ROUTES: &str = "conv-routes";
/// Bound of one sample: a change that never shows fails the run.
const SAMPLE_BOUND: Duration = Duration::from_secs(20);

fn route_to(cluster: &str) -> Resource {
    route_configuration(
        ROUTES,
        vec![virtual_host(
            "conv",
            &["*"],
            vec![RouteBuilder::prefix("/").cluster(cluster).build()],
        )],
    )
    .into()
}

type Client = GrpcEchoClient<grpcroute_client::Channel>;

/// Which server answered one call.
async fn served_by(client: &mut Client) -> Result<String, String> {
    let mut request = tonic::Request::new(EchoRequest {});
    request.set_timeout(Duration::from_secs(5));
    let response = client
        .echo(request)
        .await
        .map_err(|s| format!("call failed: {:?} {}", s.code(), s.message()))?;
    Ok(response
        .metadata()
        .get(BACKEND_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_owned())
}

/// Applies `change` and times until a call is answered by `target`.
async fn sample(
    client: &mut Client,
    change: impl FnOnce(),
    target: &str,
) -> Result<Duration, String> {
    let start = Instant::now();
    change();
    tokio::time::timeout(SAMPLE_BOUND, async {
        loop {
            let by = served_by(client).await?;
            tracing::debug!(%by, "sample call");
            if by == target {
                return Ok(start.elapsed());
            }
        }
    })
    .await
    .map_err(|_| format!("no call reached {target} within {SAMPLE_BOUND:?}"))?
}

async fn run() -> Result<(), String> {
    let quick = quick("XDS_CONV_QUICK");
    let samples: usize = env("XDS_CONV_SAMPLES", if quick { 3 } else { 30 });
    let a = EchoServer::start(EchoConfig::new("a"))
        .await
        .map_err(|e| e.to_string())?;
    let b = EchoServer::start(EchoConfig::new("b"))
        .await
        .map_err(|e| e.to_string())?;
    let addr = |name: &str| -> SocketAddr { if name == "a" { a.addr() } else { b.addr() } };
    let cp = ControlPlane::start().await.map_err(|e| e.to_string())?;
    cp.set([
        ApiListener::rds(LISTENER, ROUTES).build().into(),
        route_to("c-a"),
        ClusterBuilder::eds("c-a").build().into(),
        ClusterBuilder::eds("c-b").build().into(),
        load_assignment("c-a", [a.addr()]).into(),
        load_assignment("c-b", [b.addr()]).into(),
    ]);
    let bootstrap = Bootstrap::from_json(&cp.bootstrap("conv").to_json().to_string())
        .map_err(|e| e.to_string())?;
    let mesh = Mesh::builder().xds_bootstrap(bootstrap).build();
    let mut client = Client::new(
        mesh.channel(&format!("xds:///{LISTENER}"))
            .map_err(|e| e.to_string())?,
    );
    // Warm: the first call waits for the whole configuration.
    let first = sample(&mut client, || {}, "a").await?;

    println!("## xDS convergence: a control-plane change to the first call that follows it\n");
    println!(
        "- mode: {}; {samples} samples per kind; one caller, calls back to back through `mesh.channel(\"xds:///{LISTENER}\")`; test ADS control plane and two echo servers on 127.0.0.1",
        if quick { "quick" } else { "full" }
    );
    println!(
        "- each sample: from just before the change is handed to the control plane (pushed on the open ADS stream at once) to the first call answered by the other server"
    );
    println!("- machine: {}", Machine::describe());
    println!("- before: {}", Load::now());
    println!(
        "- first call after start (ADS stream, LDS → RDS → CDS → EDS, connect): {:.1} ms\n",
        first.as_secs_f64() * 1e3
    );

    let mut eds = Vec::new();
    let mut rds = Vec::new();
    let mut cds = Vec::new();
    // EDS: c-a's endpoint alternates between the servers.
    let mut at = "a";
    for _ in 0..samples {
        let next = if at == "a" { "b" } else { "a" };
        eds.push(
            sample(
                &mut client,
                || cp.set_one(load_assignment("c-a", [addr(next)])),
                next,
            )
            .await?,
        );
        at = next;
    }
    cp.set_one(load_assignment("c-a", [a.addr()]));
    sample(&mut client, || {}, "a").await?;
    // RDS: the route alternates between two warm clusters.
    let mut cluster = "c-a";
    for _ in 0..samples {
        let (next, server) = if cluster == "c-a" {
            ("c-b", "b")
        } else {
            ("c-a", "a")
        };
        rds.push(sample(&mut client, || cp.set_one(route_to(next)), server).await?);
        cluster = next;
    }
    cp.set_one(route_to("c-a"));
    sample(&mut client, || {}, "a").await?;
    // CDS+EDS: each sample routes to a cluster the client has never seen.
    for i in 0..samples {
        let name = format!("new-{i}");
        let server = if i % 2 == 0 { "b" } else { "a" };
        cds.push(
            sample(
                &mut client,
                || {
                    cp.set([
                        ClusterBuilder::eds(&name).build().into(),
                        load_assignment(&name, [addr(server)]).into(),
                    ]);
                    cp.set_one(route_to(&name));
                },
                server,
            )
            .await?,
        );
    }

    println!("| change | resources the client must fetch | p50 ms | p90 ms | max ms | samples |");
    println!("|---|---|---|---|---|---|");
    for (kind, fetch, v) in [
        ("EDS: endpoints move", "1 (ClusterLoadAssignment)", &mut eds),
        (
            "RDS: route to another warm cluster",
            "1 (RouteConfiguration)",
            &mut rds,
        ),
        (
            "CDS+EDS: route to a new cluster",
            "3 (RouteConfiguration, then Cluster, then ClusterLoadAssignment)",
            &mut cds,
        ),
    ] {
        let l = Latency::of(v);
        let max = v.iter().max().copied().unwrap_or_default();
        println!(
            "| {kind} | {fetch} | {:.2} | {:.2} | {:.2} | {} |",
            l.p50.as_secs_f64() * 1e3,
            l.p90.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
            v.len()
        );
    }
    println!("\n- after: {}", Load::now());
    Ok(())
}

fn main() -> ExitCode {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xds_convergence: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xds_convergence: {e}");
            ExitCode::FAILURE
        }
    }
}
