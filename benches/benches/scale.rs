//! Does the routing decision cost grow with the size of the configuration? The same call
//! (taken by the last candidate rule of one route of one frontend, as in the criterion
//! benchmark `decision/routes/hit_last/N`) against configurations of 10 to 10,000
//! GRPCRoutes, measured in interleaved batches: each round times one batch per size, in an
//! order rotated every round, and divides by the 10-route batch of the same round. On a
//! shared machine, where load comes and goes within seconds, only such side-by-side ratios
//! can show a difference of a few per cent; criterion's separate runs cannot.
//!
//! `cargo bench -p grpcroute-benches --bench scale`. Without `--bench` (as under
//! `cargo test --benches`), with `--test` or with `SCALE_QUICK=1` it runs a few small
//! batches only. Knobs: `SCALE_ROUTES` (default `10,100,1000,10000`), `SCALE_ROUNDS` (21),
//! `SCALE_BATCH` (200,000 decisions).

use std::{hint::black_box, process::ExitCode};

use grpcroute_benches::{
    fixtures::{self, NAMESPACE},
    harness::{env, quick},
    machine::{Load, Machine},
    stats::median,
};
use grpcroute_client::{Mesh, bench_support::Decider};
use tokio::time::Instant;

struct Setup {
    routes: usize,
    /// Keeps the table alive.
    _mesh: Mesh,
    decider: Decider,
    large: fixtures::Large,
}

/// Times `batch` decisions; nanoseconds per decision.
fn time_batch(setup: &Setup, batch: usize, seed: &mut u64) -> f64 {
    let target = setup
        .decider
        .target(&setup.large.target)
        .expect("a Service target");
    let (path, headers) = &setup.large.last;
    let start = Instant::now();
    for _ in 0..batch {
        *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let decision = setup
            .decider
            .decide(&target, black_box(path), black_box(headers), *seed);
        black_box(decision.is_ok());
    }
    start.elapsed().as_secs_f64() * 1e9 / batch as f64
}

fn main() -> ExitCode {
    let quick = quick("SCALE_QUICK");
    let sizes = fixtures::route_counts_from_env("SCALE_ROUTES").unwrap_or_else(|| {
        if quick {
            vec![10, 1000]
        } else {
            vec![10, 100, 1000, 10_000]
        }
    });
    let rounds: usize = env("SCALE_ROUNDS", if quick { 3 } else { 21 }).max(1);
    let batch: usize = env("SCALE_BATCH", if quick { 2_000 } else { 200_000 }).max(1);

    let machine = Machine::describe();
    println!("## Decision cost vs configuration size (interleaved batches)");
    println!();
    println!(
        "- call: taken by the last candidate of its route (16 rules per route, 10 routes per frontend); {rounds} rounds × {batch} decisions per size, order rotated"
    );
    println!("- machine: {machine}");
    println!("- before: {}", Load::now());

    let mut setups = Vec::new();
    for &routes in &sizes {
        let start = Instant::now();
        let large = fixtures::large(routes);
        let mesh = Mesh::builder().namespace(NAMESPACE).seed(1).build();
        let report = mesh.update(&large.resources);
        if !report.rejected.is_empty() {
            eprintln!("scale: configuration rejected: {:?}", report.rejected);
            return ExitCode::FAILURE;
        }
        let Some(decider) = Decider::new(&mesh) else {
            eprintln!("scale: mesh not configured");
            return ExitCode::FAILURE;
        };
        let Ok(target) = decider.target(&large.target) else {
            eprintln!("scale: bad target {}", large.target);
            return ExitCode::FAILURE;
        };
        let (path, headers) = &large.last;
        if decider.decide(&target, path, headers, 0) != Ok(large.stable_backend.as_str()) {
            eprintln!("scale: {routes} routes: the call is not routed as expected");
            return ExitCode::FAILURE;
        }
        eprintln!(
            "{routes} routes ({} rules, {} frontends) built and compiled in {:.2?}",
            routes * fixtures::RULES_PER_ROUTE,
            large.frontends,
            start.elapsed()
        );
        setups.push(Setup {
            routes,
            _mesh: mesh,
            decider,
            large,
        });
    }

    let mut seed = 1u64;
    // Warm-up: one batch of each.
    for s in &setups {
        time_batch(s, batch, &mut seed);
    }
    let mut ns: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); setups.len()];
    for round in 0..rounds {
        for k in 0..setups.len() {
            let i = (round + k) % setups.len();
            ns[i].push(time_batch(&setups[i], batch, &mut seed));
        }
    }

    println!();
    println!(
        "| routes | rules | frontends | ns/decision median [min–max] | ratio to {} routes, per-round median [min–max] |",
        setups[0].routes
    );
    println!("|---|---|---|---|---|");
    let min_max = |v: &[f64]| {
        v.iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
                (lo.min(*x), hi.max(*x))
            })
    };
    for (i, s) in setups.iter().enumerate() {
        let (lo, hi) = min_max(&ns[i]);
        let ratios: Vec<f64> = ns[i].iter().zip(&ns[0]).map(|(a, b)| a / b).collect();
        let (rlo, rhi) = min_max(&ratios);
        println!(
            "| {} | {} | {} | {:.1} [{lo:.1}–{hi:.1}] | {:.3} [{rlo:.3}–{rhi:.3}] |",
            s.routes,
            s.routes * fixtures::RULES_PER_ROUTE,
            s.large.frontends,
            median(&ns[i]),
            median(&ratios)
        );
    }
    println!();
    println!("- after: {}", Load::now());
    if quick {
        println!("scale: 1 passed, 0 failed");
    }
    ExitCode::SUCCESS
}
