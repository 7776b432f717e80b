//! Loopback harness: the same unary gRPC call through every peer of the library, to the
//! same three echo servers on 127.0.0.1 (TCP_NODELAY on both sides), in one run:
//!
//! - `raw-h2`: a gRPC call by hand on bare hyper HTTP/2 connections built with the mesh's
//!   settings (keep-alive pings, adaptive window), one per server, taken in turn: the floor
//!   (no routing, no balancing, no buffer);
//! - `raw-h2-tonic`: the same with a default tonic `Endpoint`'s HTTP/2 settings (no
//!   keep-alive, fixed window): `raw-h2-tonic/raw-h2` is what the mesh's settings cost;
//! - `plain`: tonic `Endpoint::connect()` to server 0 (one connection, tonic's buffer task);
//! - `balance`: tonic `Channel::balance_list` over the three servers (tower p2c);
//! - `routed`: `mesh.channel("echo.bench:7070")`: a GRPCRoute of 10 rules, the call taken
//!   by the last (exact method + exact metadata), split 50/30/20 over three backend
//!   Services whose endpoints are the three servers (two each);
//! - `routed-even`: the same route, every backend with all three servers as endpoints: the
//!   same per-call work as `routed` with load spread as evenly as `balance` spreads it;
//! - `nginx-hop`, `haproxy-hop`: the `plain` client through ONE proxy (nginx `grpc_pass`,
//!   HAProxy `proto h2`; h2c listener on 127.0.0.1, HTTP/2 to the servers with idle
//!   connections reused, TCP_NODELAY, one worker), round robin over the three servers. A
//!   sidecar mesh puts two proxies on every call (client side and server side); this is
//!   one.
//!
//! The echo servers run in a child process (this binary again, see
//! `grpcroute_benches::echo_child`), so CPU time splits into the client process, the proxy
//! processes and the servers, each read from `/proc` around every timed phase.
//!
//! Each repetition runs every variant, in an order rotated by one per repetition:
//! sequential latency (warm-up, then N timed calls: 1 in flight), then, for each level of
//! concurrency (32 and 128 by default), C calls in flight for a few seconds. Ratios to
//! `raw-h2` and to `balance` are computed per repetition, then their median and range.
//!
//! Then the tail test: three more servers, one of which answers every call 20 ms late;
//! `routed` (P2C over peak-EWMA, all three as endpoints) and `balance` (tower p2c over the
//! same three) at 32 in flight: p99 and p99.9.
//!
//! `cargo bench -p grpcroute-benches --bench loopback` runs it all. Without `--bench` (as
//! under `cargo test --benches`), with `--test`, or with `LOOPBACK_QUICK=1` it runs a short
//! mode in seconds that fails if any call fails, a server was never reached, or (under
//! `CI=true`) a proxy could not be had. Knobs: see `benches/README.md`.

use std::{fmt::Write as _, net::SocketAddr, process::ExitCode, time::Duration};

use bytes::Bytes;
use grpcroute_benches::{
    cpu,
    echo_child::{self, EchoChild},
    fixtures::{self, ECHO_TARGET, NAMESPACE, TENANT, TENANT_HEADER, TenRules},
    harness::{env, quick},
    machine::{Load, Machine},
    proxies::{self, Proxy},
    rawh2::{H2Settings, RawH2},
    stats::{Latency, Spread, micros},
};
use grpcroute_client::Mesh;
use http::uri::PathAndQuery;
use prost::Message as _;
use tokio::time::Instant;
use tonic::{
    client::Grpc,
    metadata::MetadataValue,
    transport::{Channel as TonicChannel, Endpoint},
};
use tonic_prost::ProstCodec;

/// The request and response message: 16 bytes out (field 1, unknown to the echo server's
/// `EchoRequest`, so skipped), and whatever comes back decoded as field 1.
#[derive(Clone, PartialEq, prost::Message)]
struct Payload {
    #[prost(bytes = "bytes", tag = "1")]
    data: Bytes,
}

const PAYLOAD: &[u8; 16] = b"0123456789abcdef";
const CONFORMANCE_SERVICE: &str = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho";

/// A client stack under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    RawH2,
    RawH2Tonic,
    Plain,
    Balance,
    Routed,
    RoutedEven,
    NginxHop,
    HaproxyHop,
}

const VARIANTS: [Variant; 8] = [
    Variant::RawH2,
    Variant::RawH2Tonic,
    Variant::Plain,
    Variant::Balance,
    Variant::Routed,
    Variant::RoutedEven,
    Variant::NginxHop,
    Variant::HaproxyHop,
];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Self::RawH2 => "raw-h2",
            Self::RawH2Tonic => "raw-h2-tonic",
            Self::Plain => "plain",
            Self::Balance => "balance",
            Self::Routed => "routed",
            Self::RoutedEven => "routed-even",
            Self::NginxHop => "nginx-hop",
            Self::HaproxyHop => "haproxy-hop",
        }
    }

    fn proxy(self) -> Option<proxies::Kind> {
        match self {
            Self::NginxHop => Some(proxies::Kind::Nginx),
            Self::HaproxyHop => Some(proxies::Kind::Haproxy),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
struct Config {
    quick: bool,
    warmup: usize,
    calls: usize,
    /// Calls in flight of the throughput phases (0 entries skip them).
    levels: Vec<usize>,
    duration: Duration,
    reps: usize,
    selected: [bool; VARIANTS.len()],
    method: Method,
    tail: bool,
    tail_secs: Duration,
    tail_reps: usize,
    tail_delay_ms: u64,
    tail_concurrency: usize,
    /// `CI=true`: a proxy that cannot be had fails the run instead of being skipped.
    ci: bool,
    tracing: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Any,
    Echo,
}

impl Config {
    fn from_env() -> Self {
        let quick = quick("LOOPBACK_QUICK");
        let (warmup, calls, secs, reps, tail_secs, tail_reps) = if quick {
            (50, 300, 0.3, 2, 0.3, 1)
        } else {
            (2_000, 20_000, 3.0, 5, 5.0, 3)
        };
        let levels = std::env::var("LOOPBACK_CONCURRENCY")
            .ok()
            .map(|s| {
                s.split(',')
                    .filter_map(|n| n.trim().parse().ok())
                    .filter(|n: &usize| *n > 0)
                    .collect()
            })
            .unwrap_or_else(|| vec![32, 128]);
        Self {
            quick,
            warmup: env("LOOPBACK_WARMUP", warmup),
            calls: env("LOOPBACK_CALLS", calls).max(1),
            levels,
            duration: Duration::from_secs_f64(env::<f64>("LOOPBACK_SECS", secs).max(0.01)),
            reps: env("LOOPBACK_REPS", reps).max(1),
            selected: match std::env::var("LOOPBACK_VARIANTS") {
                Ok(list) => VARIANTS.map(|v| list.split(',').any(|n| n.trim() == v.name())),
                Err(_) => [true; VARIANTS.len()],
            },
            method: match std::env::var("LOOPBACK_METHOD").as_deref() {
                Ok("any") => Method::Any,
                _ => Method::Echo,
            },
            tail: env("LOOPBACK_TAIL", 1u8) != 0,
            tail_secs: Duration::from_secs_f64(
                env::<f64>("LOOPBACK_TAIL_SECS", tail_secs).max(0.01),
            ),
            tail_reps: env("LOOPBACK_TAIL_REPS", tail_reps).max(1),
            tail_delay_ms: env("LOOPBACK_TAIL_DELAY_MS", 20),
            tail_concurrency: env("LOOPBACK_TAIL_CONCURRENCY", 32usize).max(1),
            ci: std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
            tracing: std::env::var("LOOPBACK_TRACING")
                .ok()
                .filter(|s| !s.is_empty()),
        }
    }

    fn on(&self, v: Variant) -> bool {
        self.selected[v as usize]
    }
}

/// A client stack, ready to call.
#[derive(Clone)]
enum Client {
    Raw(RawH2),
    Tonic(Grpc<TonicChannel>),
    Routed(Grpc<grpcroute_client::Channel>),
}

impl Client {
    async fn call(&mut self, path: &PathAndQuery) -> Result<(), String> {
        let payload = Payload {
            data: Bytes::from_static(PAYLOAD),
        };
        let status = |s: tonic::Status| {
            format!(
                "{:?}: {} ({:?})",
                s.code(),
                s.message(),
                std::error::Error::source(&s)
            )
        };
        let mut request = tonic::Request::new(payload.clone());
        request
            .metadata_mut()
            .insert(TENANT_HEADER, MetadataValue::from_static(TENANT));
        let codec = ProstCodec::<Payload, Payload>::default();
        match self {
            Self::Raw(raw) => {
                let answer = raw
                    .unary(path, &payload.encode_to_vec(), &[(TENANT_HEADER, TENANT)])
                    .await?;
                Payload::decode(answer).map_err(|e| format!("decode: {e}"))?;
            }
            Self::Tonic(grpc) => {
                grpc.ready().await.map_err(|e| format!("not ready: {e}"))?;
                grpc.unary(request, path.clone(), codec)
                    .await
                    .map_err(status)?;
            }
            Self::Routed(grpc) => {
                grpc.ready().await.map_err(|e| format!("not ready: {e}"))?;
                grpc.unary(request, path.clone(), codec)
                    .await
                    .map_err(status)?;
            }
        }
        Ok(())
    }
}

/// Failed calls: how many, and the first one's error.
#[derive(Clone, Debug, Default)]
struct Errors {
    count: u64,
    first: Option<String>,
}

impl Errors {
    fn note(&mut self, error: String) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(error);
        }
    }

    fn add(&mut self, other: Errors) {
        self.count += other.count;
        if self.first.is_none() {
            self.first = other.first;
        }
    }
}

/// CPU time so far of the client (this process), the proxies and the servers.
#[derive(Clone, Copy, Debug, Default)]
struct CpuSample {
    client: Duration,
    proxies: Duration,
    servers: Duration,
}

struct CpuProbe {
    proxy_pids: Vec<u32>,
    servers_pid: u32,
}

impl CpuProbe {
    fn read(&self) -> CpuSample {
        CpuSample {
            client: cpu::this_process(),
            proxies: cpu::processes(&self.proxy_pids),
            servers: cpu::process(self.servers_pid).unwrap_or_default(),
        }
    }
}

/// One timed phase of one variant.
#[derive(Clone, Debug, Default)]
struct Phase {
    latency: Latency,
    rate: f64,
    client_us: f64,
    proxy_us: f64,
    servers_us: f64,
}

impl Phase {
    fn new(latency: Latency, rate: f64, calls: u64, before: CpuSample, after: CpuSample) -> Self {
        let per_call = |a: Duration, b: Duration| {
            if calls == 0 {
                f64::NAN
            } else {
                micros(a.saturating_sub(b)) / calls as f64
            }
        };
        Self {
            latency,
            rate,
            client_us: per_call(after.client, before.client),
            proxy_us: per_call(after.proxies, before.proxies),
            servers_us: per_call(after.servers, before.servers),
        }
    }

    /// CPU per call of the client and the proxy (the calling side of the process tree).
    fn tree_us(&self) -> f64 {
        self.client_us + self.proxy_us
    }
}

/// One variant's figures in one repetition.
#[derive(Clone, Debug, Default)]
struct Run {
    ran: bool,
    seq: Phase,
    /// One per concurrency level.
    conc: Vec<Phase>,
    errors: Errors,
    served: [u64; 3],
}

async fn sequential(
    client: &mut Client,
    path: &PathAndQuery,
    cfg: &Config,
    probe: &CpuProbe,
    errors: &mut Errors,
) -> Phase {
    for _ in 0..cfg.warmup {
        if let Err(e) = client.call(path).await {
            errors.note(e);
        }
    }
    let mut samples = Vec::with_capacity(cfg.calls);
    let before = probe.read();
    let start = Instant::now();
    for _ in 0..cfg.calls {
        let t = Instant::now();
        let result = client.call(path).await;
        samples.push(t.elapsed());
        if let Err(e) = result {
            errors.note(e);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = probe.read();
    let rate = cfg.calls as f64 / elapsed;
    Phase::new(
        Latency::of(&mut samples),
        rate,
        cfg.calls as u64,
        before,
        after,
    )
}

async fn concurrent(
    client: &Client,
    path: &PathAndQuery,
    concurrency: usize,
    duration: Duration,
    warmup: Duration,
    probe: &CpuProbe,
    errors: &mut Errors,
) -> Phase {
    let (_, warmup_errors) = flood(client, path, concurrency, warmup).await;
    errors.add(warmup_errors);
    let before = probe.read();
    let start = Instant::now();
    let (mut samples, failed) = flood(client, path, concurrency, duration).await;
    let elapsed = start.elapsed().as_secs_f64();
    let after = probe.read();
    let calls = samples.len() as u64 + failed.count;
    errors.add(failed);
    let rate = samples.len() as f64 / elapsed;
    Phase::new(Latency::of(&mut samples), rate, calls, before, after)
}

/// `concurrency` tasks calling back to back for `duration`: every successful call's
/// latency, and the failed calls.
async fn flood(
    client: &Client,
    path: &PathAndQuery,
    concurrency: usize,
    duration: Duration,
) -> (Vec<Duration>, Errors) {
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let mut client = client.clone();
            let path = path.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut errors = Errors::default();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match client.call(&path).await {
                        Ok(()) => samples.push(t.elapsed()),
                        Err(e) => errors.note(e),
                    }
                }
                (samples, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = Errors::default();
    for task in tasks {
        match task.await {
            Ok((samples, e)) => {
                all.extend(samples);
                errors.add(e);
            }
            Err(e) => errors.note(format!("task failed: {e}")),
        }
    }
    (all, errors)
}

fn warmup_of(duration: Duration) -> Duration {
    (duration / 10).max(Duration::from_millis(50))
}

/// Calls answered per server so far (the child's counters).
fn served(child: &mut EchoChild) -> Result<Vec<u64>, String> {
    tokio::task::block_in_place(|| child.calls())
}

fn tonic_endpoint(addr: SocketAddr) -> Result<Endpoint, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{addr}")).map(|e| e.tcp_nodelay(true))
}

fn routed_mesh(
    service_name: &str,
    method: &str,
    backends: &[Vec<SocketAddr>; 3],
) -> Result<Mesh, String> {
    let mesh = Mesh::builder().namespace(NAMESPACE).seed(1).build();
    let report = mesh.update(&fixtures::ten_rules_for(
        TenRules::DistinctMethods,
        service_name,
        method,
        backends,
    ));
    if report.rejected.is_empty() {
        Ok(mesh)
    } else {
        Err(format!("configuration rejected: {:?}", report.rejected))
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a run ends with: whether it passed, and the markdown it printed.
async fn run(cfg: &Config) -> Result<bool, BoxError> {
    let machine = Machine::describe();
    let load_before = Load::now();
    let mut ok = true;

    // Servers 0-2 for the peers; 3-5 for the tail test, the last one slow.
    let mut delays = vec![0, 0, 0];
    if cfg.tail {
        delays.extend([0, 0, cfg.tail_delay_ms]);
    }
    let mut child = EchoChild::start(&delays)?;
    let addrs: Vec<SocketAddr> = child.addrs()[..3].to_vec();

    // The proxies, when the variants that need them are selected.
    let mut hops: Vec<(Variant, Proxy, String)> = Vec::new();
    let mut skipped: Vec<(Variant, String)> = Vec::new();
    for v in [Variant::NginxHop, Variant::HaproxyHop] {
        let Some(kind) = v.proxy().filter(|_| cfg.on(v)) else {
            continue;
        };
        match proxies::find(kind).and_then(|p| Proxy::start(kind, &p, &addrs).map(|x| (x, p))) {
            Ok((proxy, program)) => hops.push((v, proxy, program.version)),
            Err(reason) => skipped.push((v, reason)),
        }
    }
    let probe = CpuProbe {
        proxy_pids: hops.iter().flat_map(|(_, p, _)| p.pids()).collect(),
        servers_pid: child.pid(),
    };

    let (service_name, method) = match cfg.method {
        Method::Any => (fixtures::ECHO_SERVICE, "Unary09"),
        Method::Echo => (CONFORMANCE_SERVICE, "Echo"),
    };
    let path = PathAndQuery::try_from(format!("/{service_name}/{method}"))?;

    // Every stack, built once and kept warm across repetitions.
    let mut clients: Vec<Option<Client>> = vec![None; VARIANTS.len()];
    for v in VARIANTS.into_iter().filter(|v| cfg.on(*v)) {
        let client = match v {
            Variant::RawH2 => {
                Client::Raw(RawH2::connect(&addrs, H2Settings::Mesh, ECHO_TARGET).await?)
            }
            Variant::RawH2Tonic => {
                Client::Raw(RawH2::connect(&addrs, H2Settings::Tonic, ECHO_TARGET).await?)
            }
            Variant::Plain => Client::Tonic(Grpc::new(tonic_endpoint(addrs[0])?.connect().await?)),
            Variant::Balance => Client::Tonic(Grpc::new(TonicChannel::balance_list(
                addrs
                    .iter()
                    .map(|a| tonic_endpoint(*a))
                    .collect::<Result<Vec<_>, _>>()?
                    .into_iter(),
            ))),
            Variant::Routed => {
                let backends = [
                    vec![addrs[0], addrs[1]],
                    vec![addrs[1], addrs[2]],
                    vec![addrs[2], addrs[0]],
                ];
                let mesh = routed_mesh(service_name, method, &backends)?;
                Client::Routed(Grpc::new(mesh.channel(ECHO_TARGET)?))
            }
            Variant::RoutedEven => {
                let all = [addrs.clone(), addrs.clone(), addrs.clone()];
                let mesh = routed_mesh(service_name, method, &all)?;
                Client::Routed(Grpc::new(mesh.channel(ECHO_TARGET)?))
            }
            Variant::NginxHop | Variant::HaproxyHop => {
                let Some((_, proxy, _)) = hops.iter().find(|(h, _, _)| *h == v) else {
                    continue;
                };
                Client::Tonic(Grpc::new(tonic_endpoint(proxy.addr())?.connect().await?))
            }
        };
        clients[v as usize] = Some(client);
    }

    let mut out = String::new();
    writeln!(out, "## Loopback harness: the library against its peers")?;
    writeln!(out)?;
    writeln!(
        out,
        "- mode: {}",
        if cfg.quick {
            "quick (smoke test, figures not meaningful)"
        } else {
            "full"
        }
    )?;
    writeln!(
        out,
        "- sequential (1 in flight): {} warm-up + {} timed calls; then {} calls in flight for {:.1} s each (after {:.2} s warm-up); {} repetitions, order rotated",
        cfg.warmup,
        cfg.calls,
        cfg.levels
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(" and "),
        cfg.duration.as_secs_f64(),
        warmup_of(cfg.duration).as_secs_f64(),
        cfg.reps
    )?;
    writeln!(
        out,
        "- call: unary `{path}`, 16-byte request, metadata `{TENANT_HEADER}: {TENANT}`; client: this process, tokio multi-thread runtime ({} workers); 3 echo servers: a child process (tokio, {} workers); 127.0.0.1, TCP_NODELAY",
        machine.cpus, machine.cpus
    )?;
    writeln!(
        out,
        "- routed: GRPCRoute of 10 rules, taken by the last; backends 50/30/20 with endpoints (s0,s1), (s1,s2), (s2,s0); routed-even: every backend (s0,s1,s2)"
    )?;
    for (v, proxy, version) in &hops {
        writeln!(
            out,
            "- {}: `plain` through ONE {} hop ({version}) on {}, round robin over s0-s2, HTTP/2 both sides, upstream connections kept alive, TCP_NODELAY, 1 worker",
            v.name(),
            proxy.kind().name(),
            proxy.addr()
        )?;
    }
    for (v, reason) in &skipped {
        writeln!(out, "- **{} skipped**: {reason}", v.name())?;
    }
    writeln!(
        out,
        "- CPU per call: `/proc/<pid>/stat` utime+stime deltas over each timed phase; `client+proxy` = this process + the proxy processes; servers apart"
    )?;
    if let Some(t) = &cfg.tracing {
        writeln!(
            out,
            "- tracing: a subscriber at `{t}` writing to a sink is installed (the routed variants' per-call span is live)"
        )?;
    }
    writeln!(out, "- machine: {machine}")?;
    writeln!(out, "- before: {load_before}")?;
    print!("{out}");
    out.clear();

    let order: Vec<Variant> = VARIANTS
        .into_iter()
        .filter(|v| clients[*v as usize].is_some())
        .collect();
    let mut runs: Vec<Vec<Run>> = Vec::with_capacity(cfg.reps);
    for rep in 0..cfg.reps {
        let mut results: Vec<Run> = vec![Run::default(); VARIANTS.len()];
        for k in 0..order.len() {
            let v = order[(rep + k) % order.len()];
            let Some(mut client) = clients[v as usize].clone() else {
                continue;
            };
            let before = served(&mut child)?;
            let mut errors = Errors::default();
            let seq = sequential(&mut client, &path, cfg, &probe, &mut errors).await;
            let mut conc = Vec::new();
            for &c in &cfg.levels {
                conc.push(
                    concurrent(
                        &client,
                        &path,
                        c,
                        cfg.duration,
                        warmup_of(cfg.duration),
                        &probe,
                        &mut errors,
                    )
                    .await,
                );
            }
            let after = served(&mut child)?;
            let r = Run {
                ran: true,
                seq,
                conc,
                errors,
                served: [0, 1, 2].map(|s| after[s] - before[s]),
            };
            eprintln!(
                "rep {} {:>12}: seq p50 {:.1} µs; {}; CPU/call {:.1} µs; {} failed{}; {}",
                rep + 1,
                v.name(),
                micros(r.seq.latency.p50),
                r.conc
                    .iter()
                    .zip(&cfg.levels)
                    .map(|(p, c)| format!("{c} in flight {:.0}/s", p.rate))
                    .collect::<Vec<_>>()
                    .join(", "),
                r.conc.first().map_or(f64::NAN, Phase::tree_us),
                r.errors.count,
                r.errors
                    .first
                    .as_ref()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default(),
                Load::now()
            );
            results[v as usize] = r;
        }
        runs.push(results);
    }
    let load_after = Load::now();

    report(&mut out, cfg, &order, &runs)?;
    let errors: u64 = runs.iter().flatten().map(|r| r.errors.count).sum();
    let mut unreached = Vec::new();
    for &v in &order {
        let total: [u64; 3] = [0, 1, 2].map(|s| runs.iter().map(|r| r[v as usize].served[s]).sum());
        let reached = if v == Variant::Plain {
            total[0] > 0
        } else {
            !total.contains(&0)
        };
        if !reached {
            unreached.push(v.name());
        }
    }
    writeln!(out, "- failed calls: {errors}")?;
    if !unreached.is_empty() {
        writeln!(
            out,
            "- **servers never reached** by: {}",
            unreached.join(", ")
        )?;
    }
    writeln!(out, "- after: {load_after}")?;
    print!("{out}");
    out.clear();
    ok &= errors == 0 && unreached.is_empty();
    for (v, reason) in &skipped {
        if cfg.ci {
            eprintln!(
                "loopback: {} could not run under CI=true: {reason}",
                v.name()
            );
            ok = false;
        } else {
            eprintln!("loopback: {} skipped: {reason}", v.name());
        }
    }

    if cfg.tail {
        let tail_addrs = child.addrs()[3..6].to_vec();
        ok &= tail(cfg, &mut child, &tail_addrs, service_name, method, &path).await?;
    }
    drop(hops);
    Ok(ok)
}

/// A metric of a run, for the tables.
struct Metric {
    name: String,
    get: Box<dyn Fn(&Run) -> f64>,
    decimals: usize,
}

fn metric(name: impl Into<String>, decimals: usize, get: impl Fn(&Run) -> f64 + 'static) -> Metric {
    Metric {
        name: name.into(),
        get: Box::new(get),
        decimals,
    }
}

fn conc_metric(
    levels: &[usize],
    what: &str,
    decimals: usize,
    get: fn(&Phase) -> f64,
) -> Vec<Metric> {
    levels
        .iter()
        .enumerate()
        .map(|(i, c)| {
            metric(format!("{what} @{c}"), decimals, move |r: &Run| {
                r.conc.get(i).map_or(f64::NAN, get)
            })
        })
        .collect()
}

fn table(
    out: &mut String,
    order: &[Variant],
    runs: &[Vec<Run>],
    metrics: &[Metric],
) -> std::fmt::Result {
    write!(out, "| variant |")?;
    for m in metrics {
        write!(out, " {} |", m.name)?;
    }
    writeln!(out)?;
    writeln!(out, "|---|{}", "---|".repeat(metrics.len()))?;
    for &v in order {
        write!(out, "| {} |", v.name())?;
        for m in metrics {
            let values: Vec<f64> = runs
                .iter()
                .map(|r| &r[v as usize])
                .filter(|r| r.ran)
                .map(|r| (m.get)(r))
                .collect();
            write!(out, " {} |", Spread::of(&values).show(m.decimals))?;
        }
        writeln!(out)?;
    }
    Ok(())
}

fn ratios(
    out: &mut String,
    order: &[Variant],
    runs: &[Vec<Run>],
    baseline: Variant,
    metrics: &[Metric],
) -> std::fmt::Result {
    if !order.contains(&baseline) {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(
        out,
        "### Ratios to `{}`: median of per-repetition ratios [min–max] (latency and CPU: below 1 is better; calls/s: above 1 is better)",
        baseline.name()
    )?;
    writeln!(out)?;
    write!(out, "| variant |")?;
    for m in metrics {
        write!(out, " {} |", m.name)?;
    }
    writeln!(out)?;
    writeln!(out, "|---|{}", "---|".repeat(metrics.len()))?;
    for &v in order.iter().filter(|v| **v != baseline) {
        write!(out, "| {}/{} |", v.name(), baseline.name())?;
        for m in metrics {
            write!(out, " {} |", ratio_spread(runs, v, baseline, m).show(3))?;
        }
        writeln!(out)?;
    }
    Ok(())
}

fn ratio_spread(runs: &[Vec<Run>], v: Variant, baseline: Variant, m: &Metric) -> Spread {
    let values: Vec<f64> = runs
        .iter()
        .filter(|r| r[v as usize].ran && r[baseline as usize].ran)
        .map(|r| (m.get)(&r[v as usize]) / (m.get)(&r[baseline as usize]))
        .collect();
    Spread::of(&values)
}

fn report(
    out: &mut String,
    cfg: &Config,
    order: &[Variant],
    runs: &[Vec<Run>],
) -> Result<(), BoxError> {
    let seq_p50 = || metric("seq p50 µs", 1, |r: &Run| micros(r.seq.latency.p50));
    let seq_p99 = || metric("seq p99 µs", 1, |r: &Run| micros(r.seq.latency.p99));
    let seq_cpu = || metric("CPU µs/call @1", 1, |r: &Run| r.seq.tree_us());

    writeln!(out)?;
    writeln!(
        out,
        "### Latency, 1 call in flight (median over repetitions [min–max])"
    )?;
    writeln!(out)?;
    let mut m = vec![
        seq_p50(),
        metric("seq p90 µs", 1, |r: &Run| micros(r.seq.latency.p90)),
        seq_p99(),
        metric("calls/s @1", 0, |r: &Run| r.seq.rate),
    ];
    table(out, order, runs, &m)?;

    writeln!(out)?;
    writeln!(
        out,
        "### Throughput and tail under load (median over repetitions [min–max])"
    )?;
    writeln!(out)?;
    m = Vec::new();
    for (i, c) in cfg.levels.iter().enumerate() {
        m.push(metric(format!("calls/s @{c}"), 0, move |r: &Run| {
            r.conc.get(i).map_or(f64::NAN, |p| p.rate)
        }));
        m.push(metric(format!("p50 µs @{c}"), 0, move |r: &Run| {
            r.conc.get(i).map_or(f64::NAN, |p| micros(p.latency.p50))
        }));
        m.push(metric(format!("p99 µs @{c}"), 0, move |r: &Run| {
            r.conc.get(i).map_or(f64::NAN, |p| micros(p.latency.p99))
        }));
    }
    table(out, order, runs, &m)?;

    writeln!(out)?;
    writeln!(
        out,
        "### CPU time per call, µs (median over repetitions [min–max]): client + proxy processes; the proxy's share and the servers' apart"
    )?;
    writeln!(out)?;
    m = vec![seq_cpu()];
    m.extend(conc_metric(&cfg.levels, "client+proxy", 1, Phase::tree_us));
    m.extend(conc_metric(&cfg.levels, "of which proxy", 1, |p| {
        p.proxy_us
    }));
    m.extend(conc_metric(&cfg.levels, "servers", 1, |p| p.servers_us));
    table(out, order, runs, &m)?;

    let ratio_metrics = || {
        let mut m = vec![seq_p50(), seq_p99()];
        for (i, c) in cfg.levels.iter().enumerate() {
            m.push(metric(format!("calls/s @{c}"), 3, move |r: &Run| {
                r.conc.get(i).map_or(f64::NAN, |p| p.rate)
            }));
            m.push(metric(format!("p99 @{c}"), 3, move |r: &Run| {
                r.conc.get(i).map_or(f64::NAN, |p| micros(p.latency.p99))
            }));
        }
        m.push(seq_cpu());
        m.extend(conc_metric(&cfg.levels, "CPU/call", 3, Phase::tree_us));
        m
    };
    ratios(out, order, runs, Variant::RawH2, &ratio_metrics())?;
    ratios(out, order, runs, Variant::Balance, &ratio_metrics())?;

    writeln!(out)?;
    writeln!(out, "### Per repetition")?;
    writeln!(out)?;
    write!(out, "| rep | variant | seq p50 µs | seq p99 µs |")?;
    for c in &cfg.levels {
        write!(out, " calls/s @{c} | p99 µs @{c} | CPU µs/call @{c} |")?;
    }
    writeln!(out, " errors |")?;
    writeln!(
        out,
        "|---|---|---|---|{}---|",
        "---|---|---|".repeat(cfg.levels.len())
    )?;
    for (rep, results) in runs.iter().enumerate() {
        for &v in order {
            let r = &results[v as usize];
            if !r.ran {
                continue;
            }
            write!(
                out,
                "| {} | {} | {:.1} | {:.1} |",
                rep + 1,
                v.name(),
                micros(r.seq.latency.p50),
                micros(r.seq.latency.p99)
            )?;
            for p in &r.conc {
                write!(
                    out,
                    " {:.0} | {:.0} | {:.1} |",
                    p.rate,
                    micros(p.latency.p99),
                    p.tree_us()
                )?;
            }
            writeln!(out, " {} |", r.errors.count)?;
        }
    }

    writeln!(out)?;
    writeln!(out, "### Share of calls per server (all repetitions)")?;
    writeln!(out)?;
    writeln!(out, "| variant | s0 | s1 | s2 |")?;
    writeln!(out, "|---|---|---|---|")?;
    for &v in order {
        let total: [u64; 3] = [0, 1, 2].map(|s| runs.iter().map(|r| r[v as usize].served[s]).sum());
        let sum = total.iter().sum::<u64>().max(1) as f64;
        writeln!(
            out,
            "| {} | {:.1} % | {:.1} % | {:.1} % |",
            v.name(),
            100.0 * total[0] as f64 / sum,
            100.0 * total[1] as f64 / sum,
            100.0 * total[2] as f64 / sum
        )?;
    }

    targets(out, cfg, order, runs)?;
    Ok(())
}

/// The targets, read off this run.
fn targets(
    out: &mut String,
    cfg: &Config,
    order: &[Variant],
    runs: &[Vec<Run>],
) -> std::fmt::Result {
    let has = |v: Variant| order.contains(&v);
    let verdict = |met: bool| if met { "met" } else { "**missed**" };
    writeln!(out)?;
    writeln!(out, "### Against the targets (this run)")?;
    writeln!(out)?;
    if has(Variant::Routed) && has(Variant::Balance) {
        for (i, c) in cfg.levels.iter().enumerate() {
            let m = metric("", 3, move |r: &Run| {
                r.conc.get(i).map_or(f64::NAN, |p| p.rate)
            });
            for v in [Variant::Routed, Variant::RoutedEven] {
                if has(v) {
                    let s = ratio_spread(runs, v, Variant::Balance, &m);
                    writeln!(
                        out,
                        "- {}/balance calls/s @{c} ≥ 1.00: {} → {}",
                        v.name(),
                        s.show(3),
                        verdict(s.median >= 1.0)
                    )?;
                }
            }
            let cpu = metric("", 3, move |r: &Run| {
                r.conc.get(i).map_or(f64::NAN, Phase::tree_us)
            });
            let s = ratio_spread(runs, Variant::Routed, Variant::Balance, &cpu);
            writeln!(
                out,
                "- routed/balance CPU per call @{c} ≤ 1.05: {} → {}",
                s.show(3),
                verdict(s.median <= 1.05)
            )?;
        }
    }
    if has(Variant::Routed) && has(Variant::RawH2) {
        let p50 = metric("", 3, |r: &Run| micros(r.seq.latency.p50));
        let s = ratio_spread(runs, Variant::Routed, Variant::RawH2, &p50);
        writeln!(
            out,
            "- routed/raw-h2 sequential p50 ≤ 1.03: {} → {}",
            s.show(3),
            verdict(s.median <= 1.03)
        )?;
        for hop in [Variant::NginxHop, Variant::HaproxyHop] {
            if !has(hop) {
                continue;
            }
            // Added latency over the floor, per repetition: routed's vs one hop's.
            let shares: Vec<f64> = runs
                .iter()
                .filter(|r| {
                    r[Variant::Routed as usize].ran
                        && r[Variant::RawH2 as usize].ran
                        && r[hop as usize].ran
                })
                .map(|r| {
                    let floor = micros(r[Variant::RawH2 as usize].seq.latency.p50);
                    (micros(r[Variant::Routed as usize].seq.latency.p50) - floor)
                        / (micros(r[hop as usize].seq.latency.p50) - floor)
                })
                .collect();
            let s = Spread::of(&shares);
            writeln!(
                out,
                "- (routed − raw-h2) / ({} − raw-h2), sequential p50, ≤ 0.20: {} → {}",
                hop.name(),
                s.show(3),
                verdict(s.median <= 0.2)
            )?;
        }
    }
    if has(Variant::Routed) {
        for hop in [Variant::NginxHop, Variant::HaproxyHop] {
            if !has(hop) {
                continue;
            }
            for (i, c) in cfg.levels.iter().enumerate() {
                let cpu = metric("", 3, move |r: &Run| {
                    r.conc.get(i).map_or(f64::NAN, Phase::tree_us)
                });
                let s = ratio_spread(runs, hop, Variant::Routed, &cpu);
                writeln!(
                    out,
                    "- CPU per call @{c}: {} (plain + one hop) / routed = {}×",
                    hop.name(),
                    s.show(2)
                )?;
            }
        }
    }
    Ok(())
}

/// The tail test: `routed` vs `balance` over three servers, one of them slow.
async fn tail(
    cfg: &Config,
    child: &mut EchoChild,
    addrs: &[SocketAddr],
    service_name: &str,
    method: &str,
    path: &PathAndQuery,
) -> Result<bool, BoxError> {
    let all = [addrs.to_vec(), addrs.to_vec(), addrs.to_vec()];
    let mesh = routed_mesh(service_name, method, &all)?;
    let variants: [(&str, Client); 2] = [
        (
            "routed",
            Client::Routed(Grpc::new(mesh.channel(ECHO_TARGET)?)),
        ),
        (
            "balance",
            Client::Tonic(Grpc::new(TonicChannel::balance_list(
                addrs
                    .iter()
                    .map(|a| tonic_endpoint(*a))
                    .collect::<Result<Vec<_>, _>>()?
                    .into_iter(),
            ))),
        ),
    ];
    let probe = CpuProbe {
        proxy_pids: Vec::new(),
        servers_pid: child.pid(),
    };
    let warmup = Duration::from_millis(if cfg.quick { 50 } else { 500 });
    // Per variant, per repetition: latency, calls/s, share of calls to the slow server.
    let mut results: Vec<Vec<(Latency, f64, f64)>> = vec![Vec::new(); variants.len()];
    let mut errors = Errors::default();
    for rep in 0..cfg.tail_reps {
        for k in 0..variants.len() {
            let i = (rep + k) % variants.len();
            let before = served(child)?;
            let phase = concurrent(
                &variants[i].1,
                path,
                cfg.tail_concurrency,
                cfg.tail_secs,
                warmup,
                &probe,
                &mut errors,
            )
            .await;
            let after = served(child)?;
            let d: Vec<u64> = (3..6).map(|s| after[s] - before[s]).collect();
            let slow_share = d[2] as f64 / d.iter().sum::<u64>().max(1) as f64;
            eprintln!(
                "tail rep {} {:>8}: p99 {:.0} µs, p99.9 {:.0} µs, {:.0} calls/s, {:.2} % to the slow server",
                rep + 1,
                variants[i].0,
                micros(phase.latency.p99),
                micros(phase.latency.p999),
                phase.rate,
                100.0 * slow_share
            );
            results[i].push((phase.latency, phase.rate, slow_share));
        }
    }
    let mut out = String::new();
    writeln!(out)?;
    writeln!(
        out,
        "### Tail with a slow endpoint: 3 servers, one answers every call {} ms late; {} in flight for {:.1} s (after {:.1} s warm-up), {} repetitions, order rotated (median [min–max])",
        cfg.tail_delay_ms,
        cfg.tail_concurrency,
        cfg.tail_secs.as_secs_f64(),
        warmup.as_secs_f64(),
        cfg.tail_reps
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| variant | p50 µs | p99 µs | p99.9 µs | calls/s | calls to the slow server |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    for (i, (name, _)) in variants.iter().enumerate() {
        let col = |f: &dyn Fn(&(Latency, f64, f64)) -> f64| {
            Spread::of(&results[i].iter().map(f).collect::<Vec<_>>())
        };
        writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} % |",
            col(&|r| micros(r.0.p50)).show(0),
            col(&|r| micros(r.0.p99)).show(0),
            col(&|r| micros(r.0.p999)).show(0),
            col(&|r| r.1).show(0),
            col(&|r| 100.0 * r.2).show(2),
        )?;
    }
    let p99_ratio: Vec<f64> = results[0]
        .iter()
        .zip(&results[1])
        .map(|(r, b)| micros(r.0.p99) / micros(b.0.p99))
        .collect();
    let p999_ratio: Vec<f64> = results[0]
        .iter()
        .zip(&results[1])
        .map(|(r, b)| micros(r.0.p999) / micros(b.0.p999))
        .collect();
    let s = Spread::of(&p99_ratio);
    writeln!(out)?;
    writeln!(
        out,
        "- routed/balance p99 ≤ 0.333: {} → {}; p99.9: {}",
        s.show(3),
        if s.median <= 1.0 / 3.0 {
            "met"
        } else {
            "**missed**"
        },
        Spread::of(&p999_ratio).show(3)
    )?;
    writeln!(out, "- failed calls: {}", errors.count)?;
    if let Some(e) = &errors.first {
        writeln!(out, "- first failure: {e}")?;
    }
    print!("{out}");
    Ok(errors.count == 0)
}

fn main() -> ExitCode {
    if let Some(code) = echo_child::serve_if_child() {
        return code;
    }
    let cfg = Config::from_env();
    if let Some(filter) = &cfg.tracing {
        // An application that logs at `info` has every `info_span!` live: the experiment
        // shows what the per-call span costs then.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::sink)
            .try_init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(&cfg));
    // Stop the background tasks (connections) before the child goes away.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(true) => {
            if cfg.quick {
                println!("loopback: 1 passed, 0 failed");
            }
            ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!(
                "loopback: some calls failed, a server was never reached, or a peer could not run"
            );
            if cfg.quick {
                println!("loopback: 0 passed, 1 failed");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("loopback: {e}");
            if cfg.quick {
                println!("loopback: 0 passed, 1 failed");
            }
            ExitCode::FAILURE
        }
    }
}
