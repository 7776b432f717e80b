//! Failure accrual measured (issue 9): one endpoint of three starts failing every call
//! (`UNAVAILABLE`, as a pod whose dependency went down answers), and the clients keep
//! calling. How many calls fail before the endpoint is out of rotation, and what share of
//! the calls it still gets after?
//!
//! Variants, each with a fresh client over the same three `grpcroute-echo` servers:
//! - `routed`: `mesh.channel` to a Service with the three endpoints (no route: the call
//!   goes to the Service's endpoints), default failure accrual (5 in a row, 1 s doubling);
//! - `routed-no-accrual`: the same with `failure_accrual(None)`: what P2C's failure
//!   penalty alone does;
//! - `balance`: tonic's `Channel::balance_list` over the three (tower p2c over pending
//!   requests; no notion of failed calls).
//!
//! Per repetition (order rotated): 500 warm-up calls with every server healthy, then
//! server 2 fails every call and the client makes calls for `ACCRUAL_SECS` (default 10 s)
//! at `ACCRUAL_CONCURRENCY` (default 8) in flight. Reported: failed calls in the first
//! second after the switch, failed calls per 1,000 after it, and the failing server's
//! share of the calls after the first second; median [min–max] over `ACCRUAL_REPS`
//! (default 5) repetitions.
//!
//! `cargo bench -p grpcroute-benches --bench accrual`; quick (1 rep, 1.5 s) without `--bench`.

use std::{
    net::SocketAddr,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use grpcroute_benches::{
    harness::{env, quick},
    machine::{Load, Machine},
    stats::Spread,
};
use grpcroute_client::{
    Mesh,
    build::{endpoints, service},
};
use grpcroute_echo::{
    EchoConfig, EchoServer,
    pb::{EchoRequest, grpc_echo_client::GrpcEchoClient},
};
use tokio::time::Instant;
use tonic::transport::{Channel as TonicChannel, Endpoint};

const NAMESPACE: &str = "bench";
const WARMUP_CALLS: usize = 500;
/// The window in which the clients are expected to learn; reported apart.
const LEARNING: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Variant {
    Routed,
    RoutedNoAccrual,
    Balance,
}

impl Variant {
    const ALL: [Self; 3] = [Self::Routed, Self::RoutedNoAccrual, Self::Balance];

    fn name(self) -> &'static str {
        match self {
            Self::Routed => "routed",
            Self::RoutedNoAccrual => "routed-no-accrual",
            Self::Balance => "balance",
        }
    }
}

#[derive(Clone)]
enum Client {
    // The channel keeps what it needs of the mesh alive.
    Routed(GrpcEchoClient<grpcroute_client::Channel>),
    Tonic(GrpcEchoClient<TonicChannel>),
}

impl Client {
    async fn call(&mut self) -> bool {
        let mut request = tonic::Request::new(EchoRequest {});
        request.set_timeout(Duration::from_secs(5));
        match self {
            Self::Routed(c) => c.echo(request).await.is_ok(),
            Self::Tonic(c) => c.echo(request).await.is_ok(),
        }
    }
}

fn client(variant: Variant, addrs: &[SocketAddr]) -> Result<Client, String> {
    match variant {
        Variant::Routed | Variant::RoutedNoAccrual => {
            let mut builder = Mesh::builder().namespace(NAMESPACE);
            if variant == Variant::RoutedNoAccrual {
                builder = builder.failure_accrual(None);
            }
            let mesh = builder.build();
            // One slice per server: each has its own port on 127.0.0.1.
            let mut resources = grpcroute_client::Resources::new()
                .with(service(NAMESPACE, "echo").port("grpc", 7070));
            for (i, a) in addrs.iter().enumerate() {
                resources = resources.with(
                    endpoints(NAMESPACE, "echo")
                        .name(&format!("echo-{i}"))
                        .port("grpc", a.port())
                        .ready(a.ip()),
                );
            }
            let report = mesh.update(&resources);
            if !report.rejected.is_empty() {
                return Err(format!("rejected: {:?}", report.rejected));
            }
            let channel = mesh.channel("echo.bench:7070").map_err(|e| e.to_string())?;
            Ok(Client::Routed(GrpcEchoClient::new(channel)))
        }
        Variant::Balance => {
            let eps = addrs
                .iter()
                .map(|a| Endpoint::from_shared(format!("http://{a}")).map(|e| e.tcp_nodelay(true)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            Ok(Client::Tonic(GrpcEchoClient::new(
                TonicChannel::balance_list(eps.into_iter()),
            )))
        }
    }
}

/// What one variant got in one repetition.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    calls: u64,
    failed_learning: u64,
    calls_after: u64,
    failed_after: u64,
    to_failing_after: u64,
}

impl Run {
    fn failed_per_1000_after(&self) -> f64 {
        1000.0 * self.failed_after as f64 / self.calls_after.max(1) as f64
    }
    fn share_after(&self) -> f64 {
        100.0 * self.to_failing_after as f64 / self.calls_after.max(1) as f64
    }
}

async fn measure(
    variant: Variant,
    servers: &[EchoServer],
    secs: f64,
    concurrency: usize,
) -> Result<Run, String> {
    let addrs: Vec<SocketAddr> = servers.iter().map(EchoServer::addr).collect();
    servers[2].set_failing(false);
    let mut c = client(variant, &addrs)?;
    for _ in 0..WARMUP_CALLS {
        if !c.call().await {
            return Err(format!("{}: a warm-up call failed", variant.name()));
        }
    }
    servers[2].set_failing(true);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let learning_end = start + LEARNING;
    let failed_learning = Arc::new(AtomicU64::new(0));
    let failed_after = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let calls_after = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut c = c.clone();
        let (fl, fa, n, na) = (
            failed_learning.clone(),
            failed_after.clone(),
            calls.clone(),
            calls_after.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let before = Instant::now();
                let ok = c.call().await;
                n.fetch_add(1, Ordering::Relaxed);
                let learning = before < learning_end;
                if !learning {
                    na.fetch_add(1, Ordering::Relaxed);
                }
                if !ok {
                    if learning { &fl } else { &fa }.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // The failing server's count when the learning window closes.
    tokio::time::sleep_until(learning_end).await;
    let failing_at_learning_end = servers[2].calls();
    for t in tasks {
        t.await.map_err(|e| e.to_string())?;
    }
    servers[2].set_failing(false);
    let to_failing_after = servers[2].calls() - failing_at_learning_end;
    drop(c);
    Ok(Run {
        calls: calls.load(Ordering::Relaxed),
        failed_learning: failed_learning.load(Ordering::Relaxed),
        calls_after: calls_after.load(Ordering::Relaxed),
        failed_after: failed_after.load(Ordering::Relaxed),
        to_failing_after,
    })
}

async fn run() -> Result<(), String> {
    let quick = quick("ACCRUAL_QUICK");
    let reps: usize = env("ACCRUAL_REPS", if quick { 1 } else { 5 });
    let secs: f64 = env("ACCRUAL_SECS", if quick { 1.5 } else { 10.0 });
    let concurrency: usize = env("ACCRUAL_CONCURRENCY", 8);
    let mut servers = Vec::new();
    for i in 0..3 {
        servers.push(
            EchoServer::start(EchoConfig::new(format!("s{i}")).namespace(NAMESPACE))
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    println!("## Failure accrual: one endpoint of three starts failing every call\n");
    println!(
        "- mode: {}; {reps} repetitions, order rotated; per variant: {WARMUP_CALLS} warm-up calls, then server s2 answers every call `UNAVAILABLE` and the client calls for {secs} s at {concurrency} in flight",
        if quick { "quick" } else { "full" }
    );
    println!(
        "- routed: default failure accrual (5 failures in a row, ejection 1 s doubling to 60 s, one probe call); routed-no-accrual: `failure_accrual(None)`; balance: tonic `balance_list`"
    );
    println!("- machine: {}", Machine::describe());
    println!("- before: {}\n", Load::now());
    let mut runs: Vec<(Variant, Run)> = Vec::new();
    for rep in 0..reps {
        for k in 0..Variant::ALL.len() {
            let v = Variant::ALL[(rep + k) % Variant::ALL.len()];
            let r = tokio::time::timeout(
                Duration::from_secs_f64(secs + 60.0),
                measure(v, &servers, secs, concurrency),
            )
            .await
            .map_err(|_| {
                format!(
                    "{}: the run did not finish within {secs} s + 60 s",
                    v.name()
                )
            })??;
            eprintln!(
                "rep {} {:>18}: {} calls; failed in the first second {}; after: {:.2} per 1000 failed, {:.2} % to the failing server",
                rep + 1,
                v.name(),
                r.calls,
                r.failed_learning,
                r.failed_per_1000_after(),
                r.share_after()
            );
            runs.push((v, r));
        }
    }
    println!(
        "| variant | calls/s | failed calls in the first second | failed per 1,000 calls after it | failing server's share after it |"
    );
    println!("|---|---|---|---|---|");
    for v in Variant::ALL {
        let of = |f: &dyn Fn(&Run) -> f64| Spread::of_variant(&runs, &v, f);
        println!(
            "| {} | {} | {} | {} | {} % |",
            v.name(),
            of(&|r| r.calls as f64 / secs).show(0),
            of(&|r| r.failed_learning as f64).show(0),
            of(&|r| r.failed_per_1000_after()).show(2),
            of(&|r| r.share_after()).show(2),
        );
    }
    println!("\n- after: {}", Load::now());
    // Sanity: with accrual the failing server must be (nearly) out of rotation; without
    // it, tonic's balance keeps sending it about a third.
    let routed_share = runs
        .iter()
        .filter(|(v, _)| *v == Variant::Routed)
        .map(|(_, r)| r.share_after())
        .fold(0.0, f64::max);
    if routed_share > 5.0 {
        return Err(format!(
            "routed: the failing server still got {routed_share:.2} % of the calls after the first second"
        ));
    }
    Ok(())
}

fn main() -> ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("accrual: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("accrual: {e}");
            ExitCode::FAILURE
        }
    }
}
