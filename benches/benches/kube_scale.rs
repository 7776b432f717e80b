//! Scale through the Kubernetes API: a mesh fed by `KubeSource` from the test API server
//! (`grpcroute-test-apiserver`) holding 10,000 Services with 100,000 endpoints, against a
//! 100-Service baseline in the same run.
//!
//! For each size, the API server runs in a child process (this binary again, with
//! [`ROLE_ENV`] set) and is filled before the mesh starts: N Services in namespaces of 100,
//! one EndpointSlice each with `endpoints / N` ready endpoints (addresses in 127.0.0.0/8,
//! never called), one GRPCRoute per 10 Services (from Service 10k to 10k+1 and 10k+2,
//! 90/10), and Service `probe.bench` whose one endpoint is an echo server (two echo servers
//! run in another child). The client process holds only the mesh, its kube client and the
//! harness, so its heap and RSS growth are the mesh's:
//!
//! - **time to `ready()`**: from `build_with_source(KubeSource)` to `mesh.ready()`
//!   (every watch listed, the first configuration compiled and live);
//! - **memory**: live heap bytes (a counting global allocator) and RSS growth over the
//!   same span;
//! - **API write → first call that follows**: a merge patch moves `probe`'s EndpointSlice
//!   from one echo server to the other (as `kubectl patch --type merge` would), then calls
//!   go out back to back until one is answered by the new server.
//!
//! `cargo bench -p grpcroute-benches --bench kube_scale`. Without `--bench` (as under
//! `cargo test --benches`), with `--test` or `KUBE_SCALE_QUICK=1`: 10 and 200 Services.
//! Knobs: `KUBE_SCALE_SERVICES` (`100,10000`), `KUBE_SCALE_ENDPOINTS_PER_SERVICE` (10),
//! `KUBE_SCALE_SAMPLES` (write → call samples per size, 20).

use std::{
    alloc::System,
    fmt::Write as _,
    io::{BufRead, BufReader, Write},
    net::{IpAddr, Ipv4Addr},
    process::{Child, ChildStdin, Command, ExitCode, Stdio},
    time::Duration,
};

use bytes::Bytes;
use grpcroute_benches::{
    cpu,
    echo_child::{self, EchoChild},
    harness::{env, quick},
    machine::{Load, Machine},
    stats::{Spread, percentile},
};
use grpcroute_client::{Mesh, source::KubeSource};
use grpcroute_test_apiserver::ApiServer;
use http::uri::PathAndQuery;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tokio::time::Instant;
use tonic::client::Grpc;
use tonic_prost::ProstCodec;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Set in the API server child's environment: `services,endpoints_per_service,probe_port`.
const ROLE_ENV: &str = "GRPCROUTE_BENCH_APISERVER";
const PROBE_NS: &str = "bench";
const PROBE_TARGET: &str = "probe.bench:7070";
const PORT: u16 = 7070;
/// A write that has not reached the calls after this long is a hang, not a slow sample.
const HANG: Duration = Duration::from_secs(10);

fn live_bytes() -> i64 {
    let s = GLOBAL.stats();
    s.bytes_allocated as i64 - s.bytes_deallocated as i64 + s.bytes_reallocated as i64
}

#[derive(Clone, PartialEq, prost::Message)]
struct Payload {
    #[prost(bytes = "bytes", tag = "1")]
    data: Bytes,
}

fn endpoint_ip(i: usize) -> IpAddr {
    let i = u32::try_from(i).unwrap_or(u32::MAX);
    IpAddr::V4(Ipv4Addr::from(0x7F01_0000u32.wrapping_add(i)))
}

/// The objects of a cluster of `services` Services, written into `server`.
fn fill(
    server: &ApiServer,
    services: usize,
    per_service: usize,
    probe_port: u16,
) -> Result<(), String> {
    let err = |e: grpcroute_test_apiserver::ApiError| e.to_string();
    for i in 0..services {
        let ns = format!("team-{:03}", i / 100);
        let name = format!("svc-{i}");
        server
            .apply(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"ports": [{"name": "grpc", "port": PORT}]},
            }))
            .map_err(err)?;
        let endpoints: Vec<_> = (0..per_service)
            .map(|j| {
                json!({"addresses": [endpoint_ip(i * per_service + j).to_string()],
                       "conditions": {"ready": true, "serving": true, "terminating": false}})
            })
            .collect();
        server
            .apply(json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("{name}-0"), "namespace": ns,
                             "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4",
                "ports": [{"name": "grpc", "port": 8080}],
                "endpoints": endpoints,
            }))
            .map_err(err)?;
        if i % 10 == 0 && i + 2 < services {
            server
                .apply(json!({
                    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
                    "metadata": {"name": format!("{name}-route"), "namespace": ns},
                    "spec": {
                        "parentRefs": [{"group": "", "kind": "Service", "name": name, "port": PORT}],
                        "rules": [{"backendRefs": [
                            {"name": format!("svc-{}", i + 1), "port": PORT, "weight": 90},
                            {"name": format!("svc-{}", i + 2), "port": PORT, "weight": 10},
                        ]}],
                    },
                }))
                .map_err(err)?;
        }
    }
    server
        .apply(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "probe", "namespace": PROBE_NS},
            "spec": {"ports": [{"name": "grpc", "port": PORT}]},
        }))
        .map_err(err)?;
    server
        .apply(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "probe-0", "namespace": PROBE_NS,
                         "labels": {"kubernetes.io/service-name": "probe"}},
            "addressType": "IPv4",
            "ports": [{"name": "grpc", "port": probe_port}],
            "endpoints": [{"addresses": ["127.0.0.1"],
                           "conditions": {"ready": true, "serving": true, "terminating": false}}],
        }))
        .map_err(err)?;
    Ok(())
}

/// In the API server child: fill the server, print its address, serve until stdin closes.
fn serve_if_child() -> Option<ExitCode> {
    let spec = std::env::var(ROLE_ENV).ok()?;
    let parts: Vec<usize> = spec.split(',').filter_map(|s| s.parse().ok()).collect();
    let [services, per_service, probe_port] = parts[..] else {
        eprintln!("apiserver child: bad {ROLE_ENV}={spec}");
        return Some(ExitCode::FAILURE);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("apiserver child: {e}");
            return Some(ExitCode::FAILURE);
        }
    };
    let server = runtime.block_on(ApiServer::start());
    if let Err(e) = fill(
        &server,
        services,
        per_service,
        u16::try_from(probe_port).unwrap_or(0),
    ) {
        eprintln!("apiserver child: {e}");
        return Some(ExitCode::FAILURE);
    }
    println!("url {}", server.url());
    println!("ready");
    let _ = std::io::stdout().flush();
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
    }
    runtime.block_on(server.shutdown());
    Some(ExitCode::SUCCESS)
}

/// The parent's handle on the API server child.
struct ApiChild {
    child: Child,
    stdin: Option<ChildStdin>,
    url: String,
}

impl ApiChild {
    fn start(services: usize, per_service: usize, probe_port: u16) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .env(ROLE_ENV, format!("{services},{per_service},{probe_port}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the API server child: {e}"))?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut url = None;
        loop {
            let mut line = String::new();
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => return Err("the API server child exited".into()),
                Ok(_) => {}
            }
            let line = line.trim();
            if line == "ready" {
                break;
            }
            if let Some(u) = line.strip_prefix("url ") {
                url = Some(u.to_string());
            }
        }
        Ok(Self {
            child,
            stdin,
            url: url.ok_or("the API server child gave no url")?,
        })
    }
}

impl Drop for ApiChild {
    fn drop(&mut self) {
        drop(self.stdin.take());
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The backend that answered a call to the probe Service.
async fn probe_call(grpc: &mut Grpc<grpcroute_client::Channel>) -> Result<String, String> {
    grpc.ready().await.map_err(|e| e.to_string())?;
    let path =
        PathAndQuery::from_static("/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/Echo");
    let response = grpc
        .unary(
            tonic::Request::new(Payload::default()),
            path,
            ProstCodec::<Payload, Payload>::default(),
        )
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
    Ok(response
        .metadata()
        .get(grpcroute_echo::BACKEND_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string())
}

struct Figures {
    services: usize,
    endpoints: usize,
    routes: usize,
    ready: Duration,
    bytes: i64,
    rss: i64,
    follow_ms: Vec<f64>,
}

async fn measure(
    services: usize,
    per_service: usize,
    samples: usize,
    echo: &EchoChild,
) -> Result<Figures, String> {
    let ports: Vec<u16> = echo.addrs().iter().map(|a| a.port()).collect();
    let t = Instant::now();
    let api = ApiChild::start(services, per_service, ports[0])?;
    eprintln!(
        "{services} Services: API server filled in {:.2?}",
        t.elapsed()
    );
    let uri: http::Uri = api.url.parse().map_err(|e| format!("{e}"))?;
    let mut config = kube::Config::new(uri);
    config.connect_timeout = Some(Duration::from_secs(5));

    let rss_before = cpu::resident_bytes().unwrap_or(0) as i64;
    let before = live_bytes();
    let started = Instant::now();
    let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
    let mesh = Mesh::builder()
        .namespace(PROBE_NS)
        .seed(1)
        .build_with_source(KubeSource::with_client(client.clone()));
    tokio::time::timeout(Duration::from_secs(300), mesh.ready())
        .await
        .map_err(|_| format!("{services} Services: not ready after 300 s"))?;
    let ready = started.elapsed();
    let bytes = live_bytes() - before;
    let rss = cpu::resident_bytes().unwrap_or(0) as i64 - rss_before;
    eprintln!(
        "  ready in {ready:.2?}: {:.1} MB live heap, RSS +{:.1} MB",
        bytes as f64 / 1e6,
        rss as f64 / 1e6
    );

    let mut grpc = Grpc::new(mesh.channel(PROBE_TARGET).map_err(|e| e.to_string())?);
    let first = probe_call(&mut grpc).await?;
    if first != "echo-0" {
        return Err(format!("the probe was answered by {first:?}, not echo-0"));
    }
    let slices: Api<EndpointSlice> = Api::namespaced(client, PROBE_NS);
    let mut follow_ms = Vec::with_capacity(samples);
    for i in 0..samples {
        let to = (i + 1) % 2;
        let expected = format!("echo-{to}");
        let body = json!({"ports": [{"name": "grpc", "port": ports[to]}]});
        let written = Instant::now();
        slices
            .patch("probe-0", &PatchParams::default(), &Patch::Merge(&body))
            .await
            .map_err(|e| format!("patch: {e}"))?;
        loop {
            if probe_call(&mut grpc).await? == expected {
                break;
            }
            if written.elapsed() > HANG {
                return Err(format!("calls never followed the write to {expected}"));
            }
        }
        follow_ms.push(written.elapsed().as_secs_f64() * 1e3);
        // Let the watch and the connections settle between samples.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(grpc);
    drop(mesh);
    drop(api);
    Ok(Figures {
        services,
        endpoints: services * per_service,
        routes: (0..services)
            .filter(|i| i % 10 == 0 && i + 2 < services)
            .count(),
        ready,
        bytes,
        rss,
        follow_ms,
    })
}

async fn run(quick: bool) -> Result<Vec<Figures>, String> {
    let sizes: Vec<usize> = std::env::var("KUBE_SCALE_SERVICES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| {
            if quick {
                vec![10, 200]
            } else {
                vec![100, 10_000]
            }
        });
    let per_service: usize = env("KUBE_SCALE_ENDPOINTS_PER_SERVICE", 10).max(1);
    let samples: usize = env("KUBE_SCALE_SAMPLES", if quick { 3 } else { 20 }).max(1);
    let echo = EchoChild::start(&[0, 0])?;
    let mut all = Vec::new();
    for s in sizes {
        all.push(measure(s, per_service, samples, &echo).await?);
    }
    Ok(all)
}

fn main() -> ExitCode {
    if let Some(code) = echo_child::serve_if_child() {
        return code;
    }
    if let Some(code) = serve_if_child() {
        return code;
    }
    let quick = quick("KUBE_SCALE_QUICK");
    let machine = Machine::describe();
    println!("## Scale through the Kubernetes API (test API server, KubeSource)");
    println!();
    println!(
        "- mode: {}",
        if quick {
            "quick (small sizes, figures not meaningful)"
        } else {
            "full"
        }
    );
    println!(
        "- per size: a fresh API server (child process) with the Services, one EndpointSlice each, one GRPCRoute per 10 Services; a fresh mesh; its heap and RSS growth from start to `ready()`; then merge patches of one EndpointSlice, each timed to the first call answered by the new endpoint"
    );
    println!("- machine: {machine}");
    println!("- before: {}", Load::now());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kube_scale: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(quick));
    runtime.shutdown_timeout(Duration::from_secs(1));
    let all = match result {
        Ok(all) => all,
        Err(e) => {
            eprintln!("kube_scale: {e}");
            if quick {
                println!("kube_scale: 0 passed, 1 failed");
            }
            return ExitCode::FAILURE;
        }
    };
    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| Services | endpoints | GRPCRoutes | start → ready() | live heap | RSS growth | heap per endpoint | write → first call that follows: p50 / p90 / max [n] |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for f in &mut all.into_iter().collect::<Vec<_>>() {
        f.follow_ms.sort_by(f64::total_cmp);
        let at = |q| percentile(&f.follow_ms, q).unwrap_or(f64::NAN);
        let s = Spread::of(&f.follow_ms);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2} s | {:.1} MB | {:.1} MB | {:.0} B | {:.1} / {:.1} / {:.1} ms [{}] |",
            f.services,
            f.endpoints,
            f.routes,
            f.ready.as_secs_f64(),
            f.bytes as f64 / 1e6,
            f.rss as f64 / 1e6,
            f.bytes as f64 / f.endpoints.max(1) as f64,
            at(0.5),
            at(0.9),
            s.max,
            f.follow_ms.len()
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "- after: {}", Load::now());
    print!("{out}");
    if quick {
        println!("kube_scale: 1 passed, 0 failed");
    }
    ExitCode::SUCCESS
}
