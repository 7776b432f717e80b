//! What mutual TLS costs a call, and what a TLS connection costs to open (issue 12): the
//! mesh channel in `TlsMode::Mutual` against tonic's own TLS `Channel` to the same server,
//! and both in plaintext.
//!
//! One tonic echo server process (this binary again, as a child: its CPU is apart from the
//! client's) serves `GrpcEcho/Echo` twice on 127.0.0.1 with TCP_NODELAY: once over TLS
//! requiring client certificates from the test CA (tonic `ServerTlsConfig` with
//! `client_ca_root`), once in plaintext. Certificates are made with `rcgen` by
//! `grpcroute-test-identity`: the client's SVID `spiffe://cluster.local/ns/web/sa/frontend`
//! is written in csi-driver-spiffe's layout (`tls.crt`, `tls.key`, `ca.crt`) and read by
//! `Identity::from_files`; the server's SVID `spiffe://cluster.local/ns/shop/sa/cart` also
//! names `cart.shop.svc` (tonic's client verifies a DNS name, the mesh the SPIFFE ID).
//!
//! Variants: `mesh-mtls` (`mesh.channel("cart.shop:50051")`, the Service's one endpoint
//! the TLS port), `tonic-mtls` (`Endpoint` with `ClientTlsConfig`: the same CA and client
//! certificate and key), `mesh-plain` and `tonic-plain` (the plaintext port).
//!
//! Per repetition, every variant in an order rotated by one: warm-up, sequential calls (p50,
//! client CPU per call), then 32 calls in flight for `TLS_SECS` (calls/s, client and server
//! CPU per call). Ratios mesh/tonic per repetition, median [min–max]. Then the handshake:
//! `TLS_HANDSHAKES` samples per variant, interleaved, of the time from the first call on a
//! client that has no connection yet to its answer (TCP connect, TLS handshake, HTTP/2
//! set-up, the call); p50/p90.
//!
//! `cargo bench -p grpcroute-benches --bench tls`; quick (1 rep, few calls) without
//! `--bench`, or with `TLS_QUICK=1`.

use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitCode, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use grpcroute_benches::{
    cpu,
    harness::{env, quick},
    machine::{Load, Machine},
    stats::{Latency, Spread, micros},
};
use grpcroute_client::{
    Mesh,
    build::{endpoints, service},
    identity::{CredentialFiles, Identity},
    tls::TlsMode,
};
use grpcroute_echo::pb::{
    EchoRequest, EchoResponse,
    grpc_echo_client::GrpcEchoClient,
    grpc_echo_server::{GrpcEcho, GrpcEchoServer},
};
use grpcroute_test_identity::{Ca, Layout, Leaf, Pem, files};
use tokio::time::Instant;
use tonic::transport::{
    Certificate, Channel as TonicChannel, ClientTlsConfig, Endpoint, Identity as TonicIdentity,
    Server, ServerTlsConfig, server::TcpIncoming,
};

/// Set in the child's environment to the directory with the server's credentials.
const ROLE_ENV: &str = "GRPCROUTE_BENCH_TLS_SERVER";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/web/sa/frontend";
const SERVER_ID: &str = "spiffe://cluster.local/ns/shop/sa/cart";
const SERVER_DNS: &str = "cart.shop.svc";
const TARGET: &str = "cart.shop:50051";
const CONCURRENCY: usize = 32;
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// The server child.

#[derive(Clone, Copy, Debug, Default)]
struct Echo;

#[tonic::async_trait]
impl GrpcEcho for Echo {
    async fn echo(
        &self,
        _request: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoResponse>, tonic::Status> {
        Ok(tonic::Response::new(EchoResponse::default()))
    }
    async fn echo_two(
        &self,
        request: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoResponse>, tonic::Status> {
        self.echo(request).await
    }
    async fn echo_three(
        &self,
        request: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoResponse>, tonic::Status> {
        self.echo(request).await
    }
}

/// Serves the TLS and the plaintext port, prints `tls <addr>`, `plain <addr>`, `ready`,
/// and exits when standard input closes (it never outlives the benchmark).
fn serve_child(dir: &Path) -> ExitCode {
    let run = async {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).map_err(|e| format!("{name}: {e}"))
        };
        let tls = ServerTlsConfig::new()
            .identity(TonicIdentity::from_pem(read("tls.crt")?, read("tls.key")?))
            // Client certificates are required (tonic's default with a client CA).
            .client_ca_root(Certificate::from_pem(read("ca.crt")?));
        let bind = || async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| e.to_string())?;
            let a = l.local_addr().map_err(|e| e.to_string())?;
            // tonic's `serve_with_incoming` ignores `Server::tcp_nodelay`.
            Ok::<_, String>((TcpIncoming::from(l).with_nodelay(Some(true)), a))
        };
        let (tls_incoming, tls_addr) = bind().await?;
        let (plain_incoming, plain_addr) = bind().await?;
        let tls_server = Server::builder()
            .tls_config(tls)
            .map_err(|e| e.to_string())?
            .add_service(GrpcEchoServer::new(Echo))
            .serve_with_incoming(tls_incoming);
        let plain_server = Server::builder()
            .add_service(GrpcEchoServer::new(Echo))
            .serve_with_incoming(plain_incoming);
        tokio::spawn(tls_server);
        tokio::spawn(plain_server);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "tls {tls_addr}\nplain {plain_addr}\nready");
        let _ = out.flush();
        Ok::<_, String>(())
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tls server child: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = runtime.block_on(run) {
        eprintln!("tls server child: {e}");
        return ExitCode::FAILURE;
    }
    // The runtime's workers serve; this thread waits for the parent to go away.
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    ExitCode::SUCCESS
}

/// The parent's handle on the server child; killed when dropped.
struct ServerChild {
    child: Child,
    _stdin: ChildStdin,
    tls: SocketAddr,
    plain: SocketAddr,
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerChild {
    fn start(dir: &Path) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut child = Command::new(exe)
            .env(ROLE_ENV, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the server child: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let (mut tls, mut plain) = (None, None);
        loop {
            let mut line = String::new();
            if stdout.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                let _ = child.kill();
                return Err("the server child exited before it was ready".into());
            }
            let parse = |s: &str| s.trim().parse::<SocketAddr>().map_err(|e| e.to_string());
            match line.trim().split_once(' ') {
                Some(("tls", a)) => tls = Some(parse(a)?),
                Some(("plain", a)) => plain = Some(parse(a)?),
                _ if line.trim() == "ready" => break,
                _ => {}
            }
        }
        Ok(Self {
            tls: tls.ok_or("no TLS address")?,
            plain: plain.ok_or("no plaintext address")?,
            child,
            _stdin: stdin,
        })
    }

    fn cpu(&self) -> Duration {
        cpu::process(self.child.id()).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------
// The clients.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Variant {
    MeshMtls,
    TonicMtls,
    MeshPlain,
    TonicPlain,
}

impl Variant {
    const ALL: [Self; 4] = [
        Self::MeshMtls,
        Self::TonicMtls,
        Self::MeshPlain,
        Self::TonicPlain,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::MeshMtls => "mesh-mtls",
            Self::TonicMtls => "tonic-mtls",
            Self::MeshPlain => "mesh-plain",
            Self::TonicPlain => "tonic-plain",
        }
    }
}

/// What every client needs: the servers, the client's identity and the PEM tonic reads.
struct Setup {
    tls: SocketAddr,
    plain: SocketAddr,
    identity: Identity,
    ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

#[derive(Clone)]
enum Client {
    // The channel keeps what it needs of the mesh alive.
    Mesh(GrpcEchoClient<grpcroute_client::Channel>),
    Tonic(GrpcEchoClient<TonicChannel>),
}

impl Client {
    async fn call(&mut self) -> Result<(), tonic::Status> {
        let mut request = tonic::Request::new(EchoRequest {});
        request.set_timeout(CALL_TIMEOUT);
        match self {
            Self::Mesh(c) => c.echo(request).await.map(drop),
            Self::Tonic(c) => c.echo(request).await.map(drop),
        }
    }
}

/// A new client with no connection yet: the first call connects.
fn client(variant: Variant, setup: &Setup) -> Result<Client, String> {
    match variant {
        Variant::MeshMtls | Variant::MeshPlain => {
            let (mode, addr) = if variant == Variant::MeshMtls {
                (TlsMode::Mutual, setup.tls)
            } else {
                (TlsMode::Plaintext, setup.plain)
            };
            let mesh = Mesh::builder()
                .namespace("web")
                .tls(mode)
                .identity(setup.identity.clone())
                .build();
            let resources = grpcroute_client::Resources::new()
                .with(service("shop", "cart").port("grpc", 50051))
                .with(
                    endpoints("shop", "cart")
                        .name("cart-0")
                        .port("grpc", addr.port())
                        .ready(addr.ip()),
                );
            let report = mesh.update(&resources);
            if !report.rejected.is_empty() {
                return Err(format!("rejected: {:?}", report.rejected));
            }
            let channel = mesh.channel(TARGET).map_err(|e| e.to_string())?;
            Ok(Client::Mesh(GrpcEchoClient::new(channel)))
        }
        Variant::TonicMtls => {
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&setup.ca_pem))
                .identity(TonicIdentity::from_pem(
                    &setup.client_cert_pem,
                    &setup.client_key_pem,
                ))
                .domain_name(SERVER_DNS);
            let endpoint = Endpoint::from_shared(format!("https://{}", setup.tls))
                .map_err(|e| e.to_string())?
                .tcp_nodelay(true)
                .tls_config(tls)
                .map_err(|e| e.to_string())?;
            Ok(Client::Tonic(GrpcEchoClient::new(endpoint.connect_lazy())))
        }
        Variant::TonicPlain => {
            let endpoint = Endpoint::from_shared(format!("http://{}", setup.plain))
                .map_err(|e| e.to_string())?
                .tcp_nodelay(true);
            Ok(Client::Tonic(GrpcEchoClient::new(endpoint.connect_lazy())))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Measurements.

/// What one variant got in one repetition.
#[derive(Clone, Copy, Debug)]
struct Run {
    seq: Latency,
    seq_cpu_us: f64,
    rate: f64,
    conc_p50: Duration,
    conc_cpu_us: f64,
    server_cpu_us: f64,
}

struct Knobs {
    warmup: usize,
    calls: usize,
    secs: f64,
}

fn per_call_us(cpu: Duration, calls: u64) -> f64 {
    micros(cpu) / calls.max(1) as f64
}

async fn measure(
    variant: Variant,
    setup: &Setup,
    server: &ServerChild,
    k: &Knobs,
) -> Result<Run, String> {
    let name = variant.name();
    let mut c = client(variant, setup)?;
    for _ in 0..k.warmup {
        c.call()
            .await
            .map_err(|e| format!("{name}: warm-up: {e}"))?;
    }
    let cpu0 = cpu::this_process();
    let mut samples = Vec::with_capacity(k.calls);
    for _ in 0..k.calls {
        let t = Instant::now();
        c.call().await.map_err(|e| format!("{name}: {e}"))?;
        samples.push(t.elapsed());
    }
    let seq_cpu_us = per_call_us(cpu::this_process() - cpu0, k.calls as u64);
    let seq = Latency::of(&mut samples);

    // 32 in flight: a tenth of the time as warm-up, then the timed part.
    let warm_end = Instant::now() + Duration::from_secs_f64(k.secs / 10.0);
    let calls = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let timing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for _ in 0..CONCURRENCY {
        let (mut c, calls, stop, timing) = (c.clone(), calls.clone(), stop.clone(), timing.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                c.call().await.map_err(|e| e.to_string())?;
                if timing.load(Ordering::Relaxed) {
                    latencies.push(t.elapsed());
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<_, String>(latencies)
        }));
    }
    tokio::time::sleep_until(warm_end).await;
    let (cpu0, scpu0, t0) = (cpu::this_process(), server.cpu(), Instant::now());
    timing.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(k.secs)).await;
    timing.store(false, Ordering::Relaxed);
    let (cpu1, scpu1, elapsed) = (cpu::this_process(), server.cpu(), t0.elapsed());
    let n = calls.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(
            t.await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("{name}: {CONCURRENCY} in flight: {e}"))?,
        );
    }
    if n == 0 {
        return Err(format!("{name}: no call finished in {} s", k.secs));
    }
    Ok(Run {
        seq,
        seq_cpu_us,
        rate: n as f64 / elapsed.as_secs_f64(),
        conc_p50: Latency::of(&mut latencies).p50,
        conc_cpu_us: per_call_us(cpu1 - cpu0, n),
        server_cpu_us: per_call_us(scpu1 - scpu0, n),
    })
}

/// The time from the first call on a client with no connection to its answer.
async fn first_call(variant: Variant, setup: &Setup) -> Result<Duration, String> {
    // Built (certificates parsed, mesh configured) outside the timed part.
    let mut c = client(variant, setup)?;
    let t = Instant::now();
    c.call()
        .await
        .map_err(|e| format!("{}: first call: {e}", variant.name()))?;
    Ok(t.elapsed())
}

// ---------------------------------------------------------------------------------------

struct Pki {
    _dir: tempfile::TempDir,
    server_dir: PathBuf,
    client_dir: PathBuf,
    client: Pem,
}

fn pki() -> Result<Pki, String> {
    let ca = Ca::new("bench mesh CA").map_err(|e| e.to_string())?;
    let client = ca
        .issue(&Leaf::spiffe(CLIENT_ID))
        .map_err(|e| e.to_string())?;
    let server = ca
        .issue(&Leaf::spiffe(SERVER_ID).with_dns(SERVER_DNS))
        .map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (server_dir, client_dir) = (dir.path().join("server"), dir.path().join("client"));
    let pem = |i: &grpcroute_test_identity::Issued| Pem {
        chain: i.cert_pem.clone(),
        key: i.key_pem.clone(),
        bundle: ca.cert_pem().to_string(),
    };
    for (d, p) in [(&server_dir, pem(&server)), (&client_dir, pem(&client))] {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
        files::write_each(d, Layout::CsiDriverSpiffe, &p).map_err(|e| e.to_string())?;
    }
    Ok(Pki {
        _dir: dir,
        server_dir,
        client_dir,
        client: pem(&client),
    })
}

fn ratio(runs: &[(Variant, Run)], a: Variant, b: Variant, f: impl Fn(&Run) -> f64) -> Spread {
    let f = &f;
    let of = |v: Variant| {
        runs.iter()
            .filter(move |(w, _)| *w == v)
            .map(move |(_, r)| f(r))
    };
    let values: Vec<f64> = of(a).zip(of(b)).map(|(x, y)| x / y).collect();
    Spread::of(&values)
}

async fn run() -> Result<(), String> {
    let quick = quick("TLS_QUICK");
    let reps: usize = env("TLS_REPS", if quick { 1 } else { 5 });
    let k = Knobs {
        warmup: env("TLS_WARMUP", if quick { 50 } else { 2_000 }),
        calls: env("TLS_CALLS", if quick { 300 } else { 20_000 }),
        secs: env("TLS_SECS", if quick { 0.3 } else { 3.0 }),
    };
    let handshakes: usize = env("TLS_HANDSHAKES", if quick { 10 } else { 300 });

    let pki = pki()?;
    let server = ServerChild::start(&pki.server_dir)?;
    let identity = Identity::from_files(CredentialFiles::csi_driver_spiffe(&pki.client_dir))
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(10), identity.ready())
        .await
        .map_err(|_| format!("the identity was not read: {:?}", identity.last_error()))?;
    let setup = Setup {
        tls: server.tls,
        plain: server.plain,
        identity,
        ca_pem: pki.client.bundle.clone(),
        client_cert_pem: pki.client.chain.clone(),
        client_key_pem: pki.client.key.clone(),
    };

    println!("## TLS: mesh mutual TLS vs tonic TLS, and the handshake\n");
    println!(
        "- mode: {}; {reps} repetitions, order rotated; per variant: {} warm-up and {} timed sequential calls, then {CONCURRENCY} in flight for {} s (after {} s warm-up); {handshakes} first calls per variant, interleaved",
        if quick { "quick" } else { "full" },
        k.warmup,
        k.calls,
        k.secs,
        k.secs / 10.0
    );
    println!(
        "- server: one tonic `GrpcEcho` process (child, tokio multi-thread), TCP_NODELAY; TLS port requires client certificates (`ServerTlsConfig::client_ca_root`); rustls/ring on both sides, TLS 1.3, ECDSA P-256 certificates (rcgen)"
    );
    println!(
        "- client identity from files (csi-driver-spiffe layout, `Identity::from_files`); tonic: `ClientTlsConfig` with the same CA, certificate and key"
    );
    println!("- machine: {}", Machine::describe());
    println!("- before: {}\n", Load::now());

    let mut runs: Vec<(Variant, Run)> = Vec::new();
    for rep in 0..reps {
        for i in 0..Variant::ALL.len() {
            let v = Variant::ALL[(rep + i) % Variant::ALL.len()];
            let bound = Duration::from_secs_f64(k.secs * 1.1 + 120.0);
            let r = tokio::time::timeout(bound, measure(v, &setup, &server, &k))
                .await
                .map_err(|_| format!("{}: not finished within {bound:?}", v.name()))??;
            eprintln!(
                "rep {} {:>11}: seq p50 {:.1} µs, {:.1} µs CPU/call; {CONCURRENCY} in flight {:.0} calls/s, {:.1} µs CPU/call client, {:.1} server",
                rep + 1,
                v.name(),
                micros(r.seq.p50),
                r.seq_cpu_us,
                r.rate,
                r.conc_cpu_us,
                r.server_cpu_us
            );
            runs.push((v, r));
        }
    }

    println!("### Per call (median [min–max] over repetitions)\n");
    println!(
        "| variant | sequential p50 µs | p99 µs | client CPU/call µs (sequential) | calls/s at {CONCURRENCY} | p50 µs at {CONCURRENCY} | client CPU/call µs at {CONCURRENCY} | server CPU/call µs at {CONCURRENCY} |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for v in Variant::ALL {
        let of = |f: &dyn Fn(&Run) -> f64| Spread::of_variant(&runs, &v, f);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            v.name(),
            of(&|r| micros(r.seq.p50)).show(1),
            of(&|r| micros(r.seq.p99)).show(1),
            of(&|r| r.seq_cpu_us).show(1),
            of(&|r| r.rate).show(0),
            of(&|r| micros(r.conc_p50)).show(1),
            of(&|r| r.conc_cpu_us).show(1),
            of(&|r| r.server_cpu_us).show(1),
        );
    }
    println!("\n### Ratios, per repetition (median [min–max])\n");
    println!(
        "| ratio | sequential p50 | client CPU/call (sequential) | calls/s at {CONCURRENCY} | client CPU/call at {CONCURRENCY} |"
    );
    println!("|---|---|---|---|---|");
    use Variant::*;
    for (a, b) in [
        (MeshMtls, TonicMtls),
        (MeshPlain, TonicPlain),
        (MeshMtls, MeshPlain),
        (TonicMtls, TonicPlain),
    ] {
        println!(
            "| {} / {} | {} | {} | {} | {} |",
            a.name(),
            b.name(),
            ratio(&runs, a, b, |r| r.seq.p50.as_secs_f64()).show(3),
            ratio(&runs, a, b, |r| r.seq_cpu_us).show(3),
            ratio(&runs, a, b, |r| r.rate).show(3),
            ratio(&runs, a, b, |r| r.conc_cpu_us).show(3),
        );
    }

    // Handshakes: each sample a new client (a new mesh, or a new tonic `Endpoint` with its
    // own rustls config: no session to resume), variants interleaved.
    let mut firsts: Vec<Vec<Duration>> = vec![Vec::new(); Variant::ALL.len()];
    for s in 0..handshakes {
        for i in 0..Variant::ALL.len() {
            let idx = (s + i) % Variant::ALL.len();
            let v = Variant::ALL[idx];
            let d = tokio::time::timeout(Duration::from_secs(10), first_call(v, &setup))
                .await
                .map_err(|_| format!("{}: first call not within 10 s", v.name()))??;
            firsts[idx].push(d);
        }
    }
    println!(
        "\n### Time to the first call on a new connection ({handshakes} samples per variant)\n"
    );
    println!("| variant | p50 µs | p90 µs | p99 µs |");
    println!("|---|---|---|---|");
    let mut p50 = Vec::new();
    for (i, v) in Variant::ALL.iter().enumerate() {
        let l = Latency::of(&mut firsts[i]);
        p50.push(l.p50);
        println!(
            "| {} | {:.0} | {:.0} | {:.0} |",
            v.name(),
            micros(l.p50),
            micros(l.p90),
            micros(l.p99)
        );
    }
    println!(
        "\n- p50 mesh-mtls / tonic-mtls: {:.3}; TLS handshake's share (mtls − plain p50): mesh {:.0} µs, tonic {:.0} µs",
        p50[0].as_secs_f64() / p50[1].as_secs_f64(),
        micros(p50[0].saturating_sub(p50[2])),
        micros(p50[1].saturating_sub(p50[3])),
    );
    println!("- after: {}", Load::now());
    Ok(())
}

fn main() -> ExitCode {
    if let Some(dir) = std::env::var_os(ROLE_ENV) {
        return serve_child(Path::new(&dir));
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tls: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tls: {e}");
            ExitCode::FAILURE
        }
    }
}
