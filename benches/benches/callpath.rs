//! Probes of single costs on the routed call path, the suspects of issue 10 measured one by
//! one without changing the library (through `grpcroute_client::bench_support`):
//!
//! - `Replay::capture`: the copy of every unary request's head and body kept in case a
//!   server refuses the stream;
//! - the size of the per-call future (`dispatch::route`) and what allocating, moving and
//!   freeing a box of that size costs, against a small box;
//! - the mesh's shared random source (one atomic counter for all calls): a draw on one
//!   thread, and on every CPU at once from the same source vs from one source each;
//! - the per-call `info_span!`: created, entered and left, with no subscriber and with a
//!   subscriber at `info` (an application that logs);
//! - the decision alone (`Decider::decide`) vs everything before the connection
//!   (`Decider::route`: snapshot load, decision, endpoint pick).
//!
//! Each probe is timed in batches, rounds interleaved, and reported as the median ns per
//! operation with its range over rounds. A loopback call costs the whole process tree
//! ≈ 60–80 µs of CPU on the reference machine (see `loopback`), so anything under ~0.5 µs
//! is under 1 % of a call.
//!
//! `cargo bench -p grpcroute-benches --bench callpath`; quick without `--bench`.

use std::{
    hint::black_box,
    process::ExitCode,
    sync::{Arc, Barrier},
};

use bytes::Bytes;
use grpcroute_benches::{
    fixtures::{self, ECHO_TARGET, NAMESPACE, TENANT, TENANT_HEADER, TenRules, echo_path},
    harness::{env, quick},
    machine::{Load, Machine},
    stats::Spread,
};
use grpcroute_client::{
    Mesh,
    bench_support::{Decider, Rng, call_future_bytes, replay_capture},
};
use http::Request;
use tokio::time::Instant;

/// A unary request as tonic hands it to a channel: encoded message in one frame, the
/// metadata a tonic client sends.
fn unary_request() -> Request<tonic::body::Body> {
    let mut frame = vec![0u8, 0, 0, 0, 18, 10, 16];
    frame.extend_from_slice(b"0123456789abcdef");
    let mut req = Request::new(tonic::body::Body::new(http_body_util::Full::new(
        Bytes::from(frame),
    )));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = http::Uri::from_static(
        "http://echo.bench:7070/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/Echo",
    );
    for (k, v) in [
        ("te", "trailers"),
        ("content-type", "application/grpc"),
        ("user-agent", "tonic/0.14.9"),
        ("grpc-accept-encoding", "identity"),
        (TENANT_HEADER, TENANT),
    ] {
        req.headers_mut().insert(
            http::HeaderName::from_static(k),
            http::HeaderValue::from_static(v),
        );
    }
    req
}

/// Nanoseconds per operation of `batch` runs of `op`.
fn time(batch: usize, mut op: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..batch {
        op();
    }
    start.elapsed().as_secs_f64() * 1e9 / batch as f64
}

/// ns per draw when `threads` threads draw at once, from one shared source or one each.
fn rng_threads(threads: usize, shared: bool, batch: usize) -> f64 {
    let one = Arc::new(Rng::new(1));
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let rng = if shared {
                one.clone()
            } else {
                Arc::new(Rng::new(t as u64 + 2))
            };
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                time(batch, || {
                    black_box(rng.next());
                })
            })
        })
        .collect();
    let per: Vec<f64> = handles.into_iter().filter_map(|h| h.join().ok()).collect();
    per.iter().sum::<f64>() / per.len().max(1) as f64
}

fn main() -> ExitCode {
    let quick = quick("CALLPATH_QUICK");
    let rounds: usize = env("CALLPATH_ROUNDS", if quick { 3 } else { 21 }).max(1);
    let batch: usize = env("CALLPATH_BATCH", if quick { 2_000 } else { 200_000 }).max(1);
    let machine = Machine::describe();
    let cpus = machine.cpus.max(2);

    let mesh = Mesh::builder().namespace(NAMESPACE).seed(1).build();
    let report = mesh.update(&fixtures::ten_rules(
        TenRules::DistinctMethods,
        &fixtures::fake_backends(),
    ));
    if !report.rejected.is_empty() {
        eprintln!("callpath: rejected {:?}", report.rejected);
        return ExitCode::FAILURE;
    }
    let Some(decider) = Decider::new(&mesh) else {
        eprintln!("callpath: no configuration");
        return ExitCode::FAILURE;
    };
    let Ok(target) = decider.target(ECHO_TARGET) else {
        return ExitCode::FAILURE;
    };
    let path = echo_path(9);
    let headers = fixtures::request_headers(&[(TENANT_HEADER, TENANT)]);
    if decider.route(&target, &path, &headers).is_err() {
        eprintln!("callpath: the call is not routed");
        return ExitCode::FAILURE;
    }
    let future_bytes = match call_future_bytes(&mesh, ECHO_TARGET) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("callpath: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut req = unary_request();
    if !replay_capture(&mut req) {
        eprintln!("callpath: a unary request was not kept for replay");
        return ExitCode::FAILURE;
    }
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::sink)
        .finish();
    let dispatch = tracing::Dispatch::new(subscriber);

    type Probe<'a> = (&'static str, Box<dyn FnMut() -> f64 + 'a>);
    let mut probes: Vec<Probe<'_>> = vec![
        (
            "Replay::capture of a unary request (head + 16-byte body)",
            Box::new(|| {
                // The request is rebuilt outside the timing; capture alone is timed.
                let mut reqs: Vec<_> = (0..batch.min(10_000)).map(|_| unary_request()).collect();
                let n = reqs.len();
                let start = Instant::now();
                for r in &mut reqs {
                    black_box(replay_capture(r));
                }
                let ns = start.elapsed().as_secs_f64() * 1e9 / n as f64;
                drop(reqs);
                ns
            }),
        ),
        (
            "building that request (for scale: tonic does this per call)",
            Box::new(|| time(batch.min(10_000), || drop(black_box(unary_request())))),
        ),
        (
            "Box of the call future's size: allocate, fill, free",
            Box::new(|| {
                time(batch, || {
                    let b = vec![0u8; future_bytes].into_boxed_slice();
                    black_box(&b);
                })
            }),
        ),
        (
            "Box of 256 bytes: allocate, fill, free",
            Box::new(|| {
                time(batch, || {
                    let b = vec![0u8; 256].into_boxed_slice();
                    black_box(&b);
                })
            }),
        ),
        (
            "random draw, one thread",
            Box::new(|| {
                let rng = Rng::new(1);
                time(batch, || {
                    black_box(rng.next());
                })
            }),
        ),
        (
            "random draw, every CPU at once, one shared source (as the mesh)",
            Box::new(|| rng_threads(cpus, true, batch)),
        ),
        (
            "random draw, every CPU at once, one source each",
            Box::new(|| rng_threads(cpus, false, batch)),
        ),
        (
            "info_span! created, entered, left: no subscriber",
            Box::new(|| {
                time(batch, || {
                    let span = tracing::info_span!(
                        "grpc_call",
                        frontend = "echo.bench:7070",
                        route = tracing::field::Empty,
                        rule = tracing::field::Empty,
                        backend = tracing::field::Empty,
                        endpoint = tracing::field::Empty,
                    );
                    let _e = span.enter();
                })
            }),
        ),
        (
            "info_span! created, entered, left, 4 fields recorded: subscriber at info",
            Box::new(|| {
                tracing::dispatcher::with_default(&dispatch, || {
                    time(batch.min(50_000), || {
                        let span = tracing::info_span!(
                            "grpc_call",
                            frontend = "echo.bench:7070",
                            route = tracing::field::Empty,
                            rule = tracing::field::Empty,
                            backend = tracing::field::Empty,
                            endpoint = tracing::field::Empty,
                        );
                        let _e = span.enter();
                        span.record("route", tracing::field::display("bench/echo-routes"));
                        span.record("rule", 9);
                        span.record("backend", tracing::field::display("bench/echo-a:7070"));
                        span.record("endpoint", tracing::field::display("10.0.0.1:9000"));
                    })
                })
            }),
        ),
        (
            "decision alone (Decider::decide, 10 rules, last taken)",
            Box::new(|| {
                let mut seed = 1u64;
                time(batch, || {
                    seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    black_box(decider.decide(&target, &path, &headers, seed).is_ok());
                })
            }),
        ),
        (
            "per-call decision (Decider::route: snapshot load + decision + endpoint pick)",
            Box::new(|| {
                time(batch, || {
                    black_box(decider.route(&target, &path, &headers).is_ok());
                })
            }),
        ),
    ];

    println!("## Call-path probes (issue 10's suspects, one at a time)");
    println!();
    println!(
        "- {rounds} rounds × {batch} operations per probe (fewer for the allocating ones), rounds interleaved; ns per operation, median [min–max] over rounds"
    );
    println!("- per-call future (`dispatch::route`): **{future_bytes} bytes**");
    println!("- machine: {machine}");
    println!("- before: {}", Load::now());
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); probes.len()];
    for round in 0..rounds {
        for k in 0..probes.len() {
            let i = (round + k) % probes.len();
            ns[i].push((probes[i].1)());
        }
    }
    println!();
    println!("| probe | ns per operation |");
    println!("|---|---|");
    for (i, (name, _)) in probes.iter().enumerate() {
        println!("| {name} | {} |", Spread::of(&ns[i]).show(1));
    }
    println!();
    println!("- after: {}", Load::now());
    if quick {
        println!("callpath: 1 passed, 0 failed");
    }
    ExitCode::SUCCESS
}
