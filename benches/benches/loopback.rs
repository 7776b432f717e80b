//! Loopback end-to-end harness: the same unary call through three client stacks, to the
//! same three echo servers on 127.0.0.1 (TCP_NODELAY on both sides), in one process:
//!
//! - `plain`: one tonic `Channel` to one server (one HTTP/2 connection): the baseline;
//! - `balance`: tonic's `Channel::balance_list` over the three servers (tower p2c);
//! - `routed`: `mesh.channel("echo.bench:7070")`: a GRPCRoute of 10 rules, the call taken
//!   by the last (exact method + exact metadata), split 50/30/20 over three backend
//!   Services whose endpoints are the three servers (two each, so the endpoint pick has a
//!   choice; one pooled connection per server);
//! - `routed-even`: the same route, but every backend Service has all three servers as
//!   endpoints: the same per-call work as `routed` with load spread as evenly as
//!   `balance` spreads it, so `routed-even/balance` is the library's own cost under load
//!   and `routed/routed-even` what the uneven configuration costs.
//!
//! The call is the conformance echo's `GrpcEcho/Echo` (16-byte request, metadata
//! `x-tenant: gold-acme`). `LOOPBACK_METHOD=any` calls an unknown method instead, which
//! the echo server answers from its catch-all without reading the request: lighter, but
//! with h2 0.4.20 a single connection with 32 calls in flight then gets a GOAWAY
//! (`ENHANCE_YOUR_CALM`, "too_many_data_frames") every few thousand calls, failing the
//! calls in flight.
//!
//! Each repetition runs every variant, in an order rotated by one per repetition:
//! sequential latency (warm-up, then N timed calls), then throughput with C calls in flight
//! for a few seconds. Ratios to `plain` are computed per repetition, then their median:
//! on a shared, noisy machine only ratios measured side by side mean something.
//!
//! `cargo bench -p grpcroute-benches --bench loopback` runs the full harness. Without
//! `--bench` (as under `cargo test --benches`), with `--test`, or with `LOOPBACK_QUICK=1`
//! it runs a short mode in seconds and fails if any call fails or a server was never
//! reached. Knobs: `LOOPBACK_CALLS`, `LOOPBACK_WARMUP`, `LOOPBACK_CONCURRENCY` (0 skips
//! the in-flight phase), `LOOPBACK_SECS`, `LOOPBACK_REPS`, `LOOPBACK_VARIANTS` (e.g.
//! `plain,routed`), `LOOPBACK_METHOD` (`echo` or `any`).

use std::{fmt::Write as _, net::SocketAddr, process::ExitCode, str::FromStr, time::Duration};

use bytes::Bytes;
use grpcroute_benches::{
    fixtures::{self, ECHO_TARGET, NAMESPACE, TENANT, TENANT_HEADER, TenRules},
    machine::{Load, Machine},
    stats::{Latency, median, micros},
};
use grpcroute_client::Mesh;
use grpcroute_echo::{EchoConfig, EchoServer};
use http::uri::PathAndQuery;
use tokio::time::Instant;
use tonic::{
    client::Grpc,
    metadata::MetadataValue,
    transport::{Channel as TonicChannel, Endpoint},
};
use tonic_prost::ProstCodec;

/// The request and response message: 16 bytes out (field 1, unknown to the echo server's
/// `EchoRequest`, so skipped), and whatever comes back decoded as field 1 (the echo
/// server's `EchoResponse.assertions`, or nothing from its catch-all).
#[derive(Clone, PartialEq, prost::Message)]
struct Payload {
    #[prost(bytes = "bytes", tag = "1")]
    data: Bytes,
}

const PAYLOAD: &[u8; 16] = b"0123456789abcdef";

#[derive(Clone, Debug)]
struct Config {
    quick: bool,
    warmup: usize,
    calls: usize,
    concurrency: usize,
    duration: Duration,
    reps: usize,
    /// Which of [`VARIANTS`] run.
    selected: [bool; VARIANTS.len()],
    method: Method,
}

/// The echo server method called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    /// `bench.v1.EchoBench/Unary09`: unknown to the server, answered by its catch-all with
    /// an empty message, without reading the request.
    Any,
    /// The conformance `GrpcEcho/Echo`: the server decodes the request and answers with
    /// what it saw (method, metadata, authority): a heavier server.
    Echo,
}

const CONFORMANCE_SERVICE: &str = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho";

impl Config {
    fn from_env() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let quick = !args.iter().any(|a| a == "--bench")
            || args.iter().any(|a| a == "--test")
            || std::env::var("LOOPBACK_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        fn env<T: FromStr>(name: &str, default: T) -> T {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        }
        let (warmup, calls, secs, reps) = if quick {
            (50, 300, 0.3, 3)
        } else {
            (2_000, 20_000, 3.0, 5)
        };
        Self {
            quick,
            warmup: env("LOOPBACK_WARMUP", warmup),
            calls: env("LOOPBACK_CALLS", calls).max(1),
            concurrency: env("LOOPBACK_CONCURRENCY", 32),
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
        }
    }
}

/// A client stack under test.
#[derive(Clone)]
enum Client {
    Tonic(Grpc<TonicChannel>),
    Routed(Grpc<grpcroute_client::Channel>),
}

impl Client {
    async fn call(&mut self, path: &PathAndQuery) -> Result<(), tonic::Status> {
        let mut request = tonic::Request::new(Payload {
            data: Bytes::from_static(PAYLOAD),
        });
        request
            .metadata_mut()
            .insert(TENANT_HEADER, MetadataValue::from_static(TENANT));
        let codec = ProstCodec::<Payload, Payload>::default();
        let ready = |e: Box<dyn std::error::Error + Send + Sync>| {
            tonic::Status::unavailable(format!("not ready: {e}"))
        };
        match self {
            Self::Tonic(grpc) => {
                grpc.ready().await.map_err(|e| ready(e.into()))?;
                grpc.unary(request, path.clone(), codec).await?;
            }
            Self::Routed(grpc) => {
                grpc.ready().await.map_err(|e| ready(e.into()))?;
                grpc.unary(request, path.clone(), codec).await?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Plain,
    Balance,
    Routed,
    RoutedEven,
}

const VARIANTS: [Variant; 4] = [
    Variant::Plain,
    Variant::Balance,
    Variant::Routed,
    Variant::RoutedEven,
];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Balance => "balance",
            Self::Routed => "routed",
            Self::RoutedEven => "routed-even",
        }
    }
}

/// One variant's figures in one repetition.
#[derive(Clone, Debug, Default)]
struct Run {
    seq: Latency,
    seq_rate: f64,
    conc: Latency,
    conc_rate: f64,
    errors: Errors,
    /// Calls each server answered during this run.
    served: [u64; 3],
}

/// Failed calls: how many, and the first one's status.
#[derive(Clone, Debug, Default)]
struct Errors {
    count: u64,
    first: Option<String>,
}

impl Errors {
    fn note(&mut self, status: &tonic::Status) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(format!(
                "{:?}: {} ({:?})",
                status.code(),
                status.message(),
                std::error::Error::source(status)
            ));
        }
    }

    fn add(&mut self, other: Errors) {
        self.count += other.count;
        if self.first.is_none() {
            self.first = other.first;
        }
    }
}

async fn sequential(
    client: &mut Client,
    path: &PathAndQuery,
    cfg: &Config,
    errors: &mut Errors,
) -> (Latency, f64) {
    for _ in 0..cfg.warmup {
        if let Err(status) = client.call(path).await {
            errors.note(&status);
        }
    }
    let mut samples = Vec::with_capacity(cfg.calls);
    let start = Instant::now();
    for _ in 0..cfg.calls {
        let t = Instant::now();
        let result = client.call(path).await;
        samples.push(t.elapsed());
        if let Err(status) = result {
            errors.note(&status);
        }
    }
    let rate = cfg.calls as f64 / start.elapsed().as_secs_f64();
    (Latency::of(&mut samples), rate)
}

async fn concurrent(
    client: &Client,
    path: &PathAndQuery,
    cfg: &Config,
    errors: &mut Errors,
) -> (Latency, f64) {
    // A short untimed warm-up at full concurrency, then the timed window.
    let warmup = (cfg.duration / 10).max(Duration::from_millis(50));
    let (_, warmup_errors) = flood(client, path, cfg.concurrency, warmup).await;
    errors.add(warmup_errors);
    let start = Instant::now();
    let (mut samples, failed) = flood(client, path, cfg.concurrency, cfg.duration).await;
    let elapsed = start.elapsed().as_secs_f64();
    errors.add(failed);
    let rate = samples.len() as f64 / elapsed;
    (Latency::of(&mut samples), rate)
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
                        Err(status) => errors.note(&status),
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
            Err(e) => errors.note(&tonic::Status::internal(format!("task failed: {e}"))),
        }
    }
    (all, errors)
}

fn served(servers: &[EchoServer; 3]) -> [u64; 3] {
    [servers[0].calls(), servers[1].calls(), servers[2].calls()]
}

async fn run(cfg: &Config) -> Result<bool, Box<dyn std::error::Error>> {
    let mut out = String::new();
    let machine = Machine::describe();
    let load_before = Load::now();

    let servers = [
        EchoServer::start(EchoConfig::new("echo-0")).await?,
        EchoServer::start(EchoConfig::new("echo-1")).await?,
        EchoServer::start(EchoConfig::new("echo-2")).await?,
    ];
    let addrs: Vec<SocketAddr> = servers.iter().map(EchoServer::addr).collect();
    let endpoint = |addr: &SocketAddr| {
        Endpoint::from_shared(format!("http://{addr}")).map(|e| e.tcp_nodelay(true))
    };

    // The three stacks, built once and kept warm across repetitions.
    let plain = Client::Tonic(Grpc::new(endpoint(&addrs[0])?.connect().await?));
    let balance = Client::Tonic(Grpc::new(TonicChannel::balance_list(
        addrs
            .iter()
            .map(endpoint)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter(),
    )));
    let backends = [
        vec![addrs[0], addrs[1]],
        vec![addrs[1], addrs[2]],
        vec![addrs[2], addrs[0]],
    ];
    let (service_name, method) = match cfg.method {
        Method::Any => (fixtures::ECHO_SERVICE, "Unary09"),
        Method::Echo => (CONFORMANCE_SERVICE, "Echo"),
    };
    let routed_to =
        |backends: &[Vec<SocketAddr>; 3]| -> Result<Client, Box<dyn std::error::Error>> {
            let mesh = Mesh::builder().namespace(NAMESPACE).seed(1).build();
            let report = mesh.update(&fixtures::ten_rules_for(
                TenRules::DistinctMethods,
                service_name,
                method,
                backends,
            ));
            if !report.rejected.is_empty() {
                return Err(format!("configuration rejected: {:?}", report.rejected).into());
            }
            Ok(Client::Routed(Grpc::new(mesh.channel(ECHO_TARGET)?)))
        };
    let routed = routed_to(&backends)?;
    let routed_even = routed_to(&[addrs.clone(), addrs.clone(), addrs.clone()])?;
    let path = PathAndQuery::from_str(&format!("/{service_name}/{method}"))?;

    writeln!(
        out,
        "## Loopback harness: plain tonic vs tonic balance_list vs routed"
    )?;
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
        "- sequential: {} warm-up + {} timed calls; concurrent: {} in flight for {:.1} s (after {:.2} s warm-up); {} repetitions, order rotated",
        cfg.warmup,
        cfg.calls,
        cfg.concurrency,
        cfg.duration.as_secs_f64(),
        (cfg.duration / 10)
            .max(Duration::from_millis(50))
            .as_secs_f64(),
        cfg.reps
    )?;
    writeln!(
        out,
        "- call: unary `{path}`, 16-byte request, metadata `{TENANT_HEADER}: {TENANT}`; 3 echo servers + client in one process, tokio multi-thread runtime ({} workers), 127.0.0.1, TCP_NODELAY",
        machine.cpus
    )?;
    writeln!(
        out,
        "- routed: GRPCRoute of 10 rules, taken by the last; backends 50/30/20 with endpoints (s0,s1), (s1,s2), (s2,s0)"
    )?;
    writeln!(
        out,
        "- routed-even: the same route; every backend has endpoints (s0,s1,s2)"
    )?;
    writeln!(out, "- machine: {machine}")?;
    writeln!(out, "- before: {load_before}")?;
    print!("{out}");
    out.clear();

    let mut runs: Vec<[Run; VARIANTS.len()]> = Vec::with_capacity(cfg.reps);
    for rep in 0..cfg.reps {
        let mut results: [Run; VARIANTS.len()] = Default::default();
        for k in 0..VARIANTS.len() {
            let i = (rep + k) % VARIANTS.len();
            if !cfg.selected[i] {
                continue;
            }
            let mut client = match VARIANTS[i] {
                Variant::Plain => plain.clone(),
                Variant::Balance => balance.clone(),
                Variant::Routed => routed.clone(),
                Variant::RoutedEven => routed_even.clone(),
            };
            let before = served(&servers);
            let mut errors = Errors::default();
            let (seq, seq_rate) = sequential(&mut client, &path, cfg, &mut errors).await;
            let (conc, conc_rate) = if cfg.concurrency > 0 {
                concurrent(&client, &path, cfg, &mut errors).await
            } else {
                (Latency::default(), f64::NAN)
            };
            let after = served(&servers);
            results[i] = Run {
                seq,
                seq_rate,
                conc,
                conc_rate,
                errors,
                served: [0, 1, 2].map(|s| after[s] - before[s]),
            };
            let r = &results[i];
            eprintln!(
                "rep {} {:>7}: seq p50 {:.1} µs, {:.0} calls/s; {} in flight {:.0} calls/s; {} failed{}; {}",
                rep + 1,
                VARIANTS[i].name(),
                micros(r.seq.p50),
                r.seq_rate,
                cfg.concurrency,
                r.conc_rate,
                r.errors.count,
                r.errors
                    .first
                    .as_ref()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default(),
                Load::now()
            );
        }
        runs.push(results);
    }
    let load_after = Load::now();

    writeln!(out)?;
    writeln!(out, "### Per repetition")?;
    writeln!(out)?;
    writeln!(
        out,
        "| rep | variant | seq p50 (µs) | seq p90 (µs) | seq p99 (µs) | seq calls/s | {c} in flight calls/s | {c} in flight p50 (µs) | {c} in flight p99 (µs) | errors |",
        c = cfg.concurrency
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|")?;
    for (rep, results) in runs.iter().enumerate() {
        for ((v, r), _) in VARIANTS
            .iter()
            .zip(results)
            .zip(cfg.selected)
            .filter(|(_, on)| *on)
        {
            writeln!(
                out,
                "| {} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
                rep + 1,
                v.name(),
                micros(r.seq.p50),
                micros(r.seq.p90),
                micros(r.seq.p99),
                r.seq_rate,
                r.conc_rate,
                micros(r.conc.p50),
                micros(r.conc.p99),
                r.errors.count
            )?;
        }
    }

    type Metric = (&'static str, fn(&Run) -> f64);
    let metrics: [Metric; 6] = [
        ("seq p50", |r| micros(r.seq.p50)),
        ("seq p90", |r| micros(r.seq.p90)),
        ("seq p99", |r| micros(r.seq.p99)),
        ("seq calls/s", |r| r.seq_rate),
        ("in-flight calls/s", |r| r.conc_rate),
        ("in-flight p99", |r| micros(r.conc.p99)),
    ];
    let mut routed_p50_median = f64::NAN;
    for (baseline, pairs) in [
        (
            Variant::Plain,
            &[Variant::Balance, Variant::Routed, Variant::RoutedEven][..],
        ),
        (
            Variant::Balance,
            &[Variant::Routed, Variant::RoutedEven][..],
        ),
        (Variant::RoutedEven, &[Variant::Routed][..]),
    ] {
        let shown: Vec<Variant> = pairs
            .iter()
            .copied()
            .filter(|v| cfg.selected[*v as usize])
            .collect();
        if !cfg.selected[baseline as usize] || shown.is_empty() {
            continue;
        }
        writeln!(out)?;
        writeln!(
            out,
            "### Ratios to `{}` (per repetition, then median; below 1 is faster for latency, above 1 is more for calls/s)",
            baseline.name()
        )?;
        writeln!(out)?;
        writeln!(out, "| variant | metric | per repetition | median |")?;
        writeln!(out, "|---|---|---|---|")?;
        for v in shown {
            for (metric, f) in &metrics {
                let ratios: Vec<f64> = runs
                    .iter()
                    .map(|r| f(&r[v as usize]) / f(&r[baseline as usize]))
                    .collect();
                let m = median(&ratios);
                if baseline == Variant::Plain && v == Variant::Routed && *metric == "seq p50" {
                    routed_p50_median = m;
                }
                let each: Vec<String> = ratios.iter().map(|x| format!("{x:.3}")).collect();
                writeln!(
                    out,
                    "| {}/{} | {metric} | {} | **{m:.3}** |",
                    v.name(),
                    baseline.name(),
                    each.join(" / ")
                )?;
            }
        }
    }

    writeln!(out)?;
    writeln!(out, "### Share of calls per server (all repetitions)")?;
    writeln!(out)?;
    writeln!(out, "| variant | s0 | s1 | s2 |")?;
    writeln!(out, "|---|---|---|---|")?;
    let mut unreached = false;
    for v in VARIANTS.into_iter().filter(|v| cfg.selected[*v as usize]) {
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
        if v != Variant::Plain && total.contains(&0) {
            unreached = true;
        }
    }
    let errors: u64 = runs.iter().flatten().map(|r| r.errors.count).sum();
    writeln!(out)?;
    if !routed_p50_median.is_nan() {
        writeln!(
            out,
            "- spec target routed/plain sequential p50 ≤ 1.05: median ratio {routed_p50_median:.3} → {}",
            if routed_p50_median <= 1.05 {
                "met"
            } else {
                "MISSED"
            }
        )?;
    }
    writeln!(out, "- failed calls: {errors}")?;
    writeln!(out, "- after: {load_after}")?;
    print!("{out}");

    let ok = errors == 0 && !unreached;
    if cfg.quick {
        println!(
            "loopback: {} passed, {} failed",
            usize::from(ok),
            usize::from(!ok)
        );
    }
    Ok(ok)
}

fn main() -> ExitCode {
    let cfg = Config::from_env();
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
    match runtime.block_on(run(&cfg)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("loopback: some calls failed or a server was never reached");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("loopback: {e}");
            ExitCode::FAILURE
        }
    }
}
