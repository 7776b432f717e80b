//! Configuration scale: what an endpoint change, a route change and a live configuration
//! cost, at 1,000 and 10,000 GRPCRoutes and 10,000 and 100,000 endpoints.
//!
//! For each of the four configurations (`fixtures::cluster`: routes of 16 rules, 10 per
//! frontend Service, two backend Services per frontend, the endpoints spread evenly over
//! the backends in EndpointSlices of at most 100):
//!
//! - **memory**: live heap bytes of the mesh (a counting global allocator: bytes allocated
//!   minus freed, across `Mesh::update` of the whole configuration), and the RSS growth;
//!   bytes per route and per endpoint come from the differences between configurations;
//! - **endpoint churn**: one endpoint of one EndpointSlice changes (its address is swapped),
//!   applied the way the Kubernetes source applies it (`bench_support::apply_endpoints`:
//!   `Update::Endpoints` with every slice of the touched Service, validated from the API
//!   objects as the source validates each event's slice): wall time per change, CPU time
//!   of the calling thread per change (mean over chunks of 100: the kernel's counter moves
//!   in scheduler ticks), and a check that no route was compiled;
//! - **the same change through `Mesh::update`** with the whole configuration (what
//!   `Resources` and `ManifestDir` sources do: validate and compare everything, then update
//!   only the touched backends);
//! - **a route change**: one GRPCRoute's weights change; `Mesh::update` compiles a new
//!   table, which reuses the unchanged routes and frontends of the one in force.
//!
//! `cargo bench -p grpcroute-benches --bench churn`. Without `--bench` (as under
//! `cargo test --benches`), with `--test` or `CHURN_QUICK=1` it runs small configurations
//! in seconds. Knobs: `CHURN_ROUTES` (`1000,10000`), `CHURN_ENDPOINTS` (`10000,100000`),
//! `CHURN_CHANGES` (endpoint changes per configuration, 2,000), `CHURN_FULL_UPDATES`
//! (whole-configuration updates per configuration, 5).

use std::{alloc::System, fmt::Write as _, process::ExitCode, time::Duration};

use grpcroute_benches::{
    cpu,
    fixtures::{self, Cluster, NAMESPACE},
    harness::{env, quick},
    machine::{Load, Machine},
    stats::{Spread, percentile},
};
use grpcroute_client::{
    Mesh,
    bench_support::{EndpointsUpdate, apply_endpoints, pooled_endpoints, same_table, table_id},
};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tokio::time::Instant;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Heap bytes allocated and not yet freed by the whole process.
fn live_bytes() -> i64 {
    let s = GLOBAL.stats();
    s.bytes_allocated as i64 - s.bytes_deallocated as i64 + s.bytes_reallocated as i64
}

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|s| {
            s.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .filter(|n: &usize| *n > 0)
                .collect::<Vec<_>>()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

/// CPU time of the calling thread, or wall time where the kernel does not say.
fn thread_time() -> Duration {
    cpu::this_thread().unwrap_or_else(|| {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        START.get_or_init(Instant::now).elapsed()
    })
}

/// Microsecond figures of many samples: median, p90, p99, max.
fn summary(samples: &mut [f64]) -> String {
    samples.sort_by(f64::total_cmp);
    let at = |q| percentile(samples, q).unwrap_or(f64::NAN);
    format!(
        "{:.1} / {:.1} / {:.1} / {:.1}",
        at(0.5),
        at(0.9),
        at(0.99),
        samples.last().copied().unwrap_or(f64::NAN)
    )
}

/// What one configuration measured.
struct Figures {
    routes: usize,
    endpoints: usize,
    slices: usize,
    build: Duration,
    bytes: i64,
    rss: i64,
    /// Mean CPU µs per endpoint change through `apply_endpoints` (validation + apply).
    churn_cpu: f64,
    /// Wall µs per change, of which validating the slices.
    churn_convert: Vec<f64>,
    churn_wall: Vec<f64>,
    /// Wall ms per whole-configuration update with one slice changed.
    full_endpoint_ms: Vec<f64>,
    /// Wall ms per whole-configuration update with one route changed.
    full_route_ms: Vec<f64>,
}

fn measure(
    routes: usize,
    endpoints: usize,
    changes: usize,
    full_updates: usize,
) -> Result<Figures, String> {
    let started = Instant::now();
    let mut cluster: Cluster = fixtures::cluster(routes, endpoints);
    eprintln!(
        "{routes} routes, {} endpoints in {} slices: generated in {:.2?}",
        cluster.endpoints(),
        cluster.slices(),
        started.elapsed()
    );

    // Memory: the whole configuration in, the mesh's heap growth; the input stays alive on
    // both sides of the measurement, so it does not count.
    let rss_before = cpu::resident_bytes().unwrap_or(0) as i64;
    let before = live_bytes();
    let t = Instant::now();
    let mesh = Mesh::builder().namespace(NAMESPACE).seed(1).build();
    let report = mesh.update(&cluster.large.resources);
    let build = t.elapsed();
    let bytes = live_bytes() - before;
    let rss = cpu::resident_bytes().unwrap_or(0) as i64 - rss_before;
    if !report.rejected.is_empty() {
        return Err(format!("rejected: {:?}", &report.rejected[..1]));
    }
    if pooled_endpoints(&mesh) != cluster.endpoints() {
        return Err(format!(
            "the pool holds {} endpoints, not {}",
            pooled_endpoints(&mesh),
            cluster.endpoints()
        ));
    }
    eprintln!(
        "  mesh built in {build:.2?}: {:.1} MB live heap, RSS +{:.1} MB",
        bytes as f64 / 1e6,
        rss as f64 / 1e6
    );

    // Endpoint churn through the source's path. Backends are visited in a scattered
    // order; each change flips the generation of one backend (one endpoint swapped). The
    // API objects of each event (what the watch delivers) are made beforehand, in chunks,
    // outside the timing. Wall time is taken per change; CPU time (whose counter moves in
    // scheduler ticks) over each chunk, and reported as the mean per change.
    let table = table_id(&mesh);
    let mut generation = vec![0u64; cluster.backends];
    let mut churn_cpu_total = Duration::ZERO;
    let mut churn_convert = Vec::with_capacity(changes);
    let mut churn_wall = Vec::with_capacity(changes);
    const CHUNK: usize = 100;
    let mut done = 0;
    while done < changes {
        let n = CHUNK.min(changes - done);
        let events: Vec<_> = (done..done + n)
            .map(|i| {
                let b = (i.wrapping_mul(7919)) % cluster.backends;
                generation[b] += 1;
                cluster.backend_slices(b, generation[b])
            })
            .collect();
        let cpu0 = thread_time();
        for (k, objects) in events.iter().enumerate() {
            let wall = Instant::now();
            let update = EndpointsUpdate::new(objects);
            let converted = wall.elapsed();
            let report = apply_endpoints(&mesh, update);
            churn_wall.push(wall.elapsed().as_secs_f64() * 1e6);
            churn_convert.push(converted.as_secs_f64() * 1e6);
            if (report.endpoints_added, report.endpoints_removed) != (1, 1) {
                return Err(format!(
                    "change {}: {} added, {} removed, not 1 and 1",
                    done + k,
                    report.endpoints_added,
                    report.endpoints_removed
                ));
            }
        }
        churn_cpu_total += thread_time().saturating_sub(cpu0);
        done += n;
    }
    let churn_cpu = churn_cpu_total.as_secs_f64() * 1e6 / changes as f64;
    if !same_table(&mesh, &table) {
        return Err("an endpoint change compiled routes".into());
    }
    // Back to where the whole configuration says, so that the next updates change one
    // slice each.
    for (b, g) in generation.iter_mut().enumerate() {
        if *g % 2 == 1 {
            *g += 1;
            apply_endpoints(&mesh, EndpointsUpdate::new(&cluster.backend_slices(b, *g)));
        }
    }

    // The same kind of change, through the whole configuration.
    let mut full_endpoint_ms = Vec::new();
    for i in 0..full_updates {
        let b = (i * 31 + 3) % cluster.backends;
        generation[b] += 1;
        cluster.set_backend_slices(b, generation[b]);
        let t0 = Instant::now();
        let report = mesh.update(&cluster.large.resources);
        full_endpoint_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        if (report.endpoints_added, report.endpoints_removed) != (1, 1) {
            return Err(format!(
                "whole update {i}: {} added, {} removed",
                report.endpoints_added, report.endpoints_removed
            ));
        }
    }
    if !same_table(&mesh, &table) {
        return Err("a whole-configuration endpoint change compiled routes".into());
    }

    // A route change: a new table, compiled from the one in force.
    let mut full_route_ms = Vec::new();
    for i in 0..full_updates {
        cluster.change_route(i * 17 + 1, i, u32::try_from(i % 3 + 1).unwrap_or(1));
        let before = table_id(&mesh);
        let t0 = Instant::now();
        let report = mesh.update(&cluster.large.resources);
        full_route_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        if report.changes.changed != 1 || same_table(&mesh, &before) {
            return Err(format!("route change {i} was not applied: {report:?}"));
        }
    }
    drop(mesh);
    Ok(Figures {
        routes,
        endpoints: cluster.endpoints(),
        slices: cluster.slices(),
        build,
        bytes,
        rss,
        churn_cpu,
        churn_convert,
        churn_wall,
        full_endpoint_ms,
        full_route_ms,
    })
}

fn main() -> ExitCode {
    let quick = quick("CHURN_QUICK");
    let routes = env_list(
        "CHURN_ROUTES",
        if quick { &[100, 200] } else { &[1_000, 10_000] },
    );
    let endpoints = env_list(
        "CHURN_ENDPOINTS",
        if quick {
            &[1_000, 2_000]
        } else {
            &[10_000, 100_000]
        },
    );
    let changes: usize = env("CHURN_CHANGES", if quick { 50 } else { 2_000 }).max(1);
    let full_updates: usize = env("CHURN_FULL_UPDATES", if quick { 2 } else { 5 }).max(1);
    if routes
        .iter()
        .any(|r| !r.is_multiple_of(fixtures::ROUTES_PER_FRONTEND))
    {
        eprintln!("churn: CHURN_ROUTES must be multiples of 10");
        return ExitCode::FAILURE;
    }

    let machine = Machine::describe();
    println!("## Configuration scale: endpoint churn, route changes, memory");
    println!();
    println!(
        "- mode: {}",
        if quick {
            "quick (small configurations, figures not meaningful)"
        } else {
            "full"
        }
    );
    println!(
        "- configurations: {routes:?} routes (16 rules each, 10 per frontend, 2 backend Services per frontend) × {endpoints:?} endpoints (EndpointSlices of ≤ {})",
        fixtures::SLICE_SIZE
    );
    println!(
        "- endpoint churn: {changes} changes per configuration, each one endpoint of one slice swapped, applied as the Kubernetes source applies it; wall time per change, and CPU of the calling thread (`/proc/thread-self/schedstat`) as a mean over chunks of 100 changes"
    );
    println!(
        "- whole-configuration updates (`Mesh::update`): {full_updates} with one slice changed, {full_updates} with one route changed"
    );
    println!(
        "- memory: live heap bytes (counting global allocator) across the first `Mesh::update`, and RSS growth"
    );
    println!("- machine: {machine}");
    println!("- before: {}", Load::now());

    let mut all: Vec<Figures> = Vec::new();
    for &r in &routes {
        for &e in &endpoints {
            match measure(r, e, changes, full_updates) {
                Ok(f) => all.push(f),
                Err(e) => {
                    eprintln!("churn: {r} routes: {e}");
                    if quick {
                        println!("churn: 0 passed, 1 failed");
                    }
                    return ExitCode::FAILURE;
                }
            }
        }
    }

    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "### Endpoint change (one endpoint of one EndpointSlice), as the Kubernetes source applies it: wall µs median / p90 / p99 / max, and mean CPU µs"
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| routes | endpoints | slices | wall per change | of which validating the slices | CPU per change (mean) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for f in &mut all {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.1} |",
            f.routes,
            f.endpoints,
            f.slices,
            summary(&mut f.churn_wall),
            summary(&mut f.churn_convert),
            f.churn_cpu
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "### Whole-configuration updates (`Mesh::update`), wall ms per update, median [min–max]"
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| routes | endpoints | first build (wall) | one slice changed | one route changed (new table, unchanged routes reused) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for f in &all {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} ms | {} | {} |",
            f.routes,
            f.endpoints,
            f.build.as_secs_f64() * 1e3,
            Spread::of(&f.full_endpoint_ms).show(1),
            Spread::of(&f.full_route_ms).show(1)
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "### Memory of the live mesh");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| routes | endpoints | live heap | RSS growth | heap per endpoint (all of it) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for f in &all {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} MB | {:.1} MB | {:.0} B |",
            f.routes,
            f.endpoints,
            f.bytes as f64 / 1e6,
            f.rss as f64 / 1e6,
            f.bytes as f64 / f.endpoints as f64
        );
    }
    // Marginal costs from pairs of configurations that differ in one dimension.
    let _ = writeln!(out);
    for a in &all {
        for b in &all {
            if a.routes == b.routes && b.endpoints > a.endpoints {
                let _ = writeln!(
                    out,
                    "- per endpoint at {} routes ({} → {} endpoints): **{:.0} B** heap (target ≤ 500 B), {:.0} B RSS",
                    a.routes,
                    a.endpoints,
                    b.endpoints,
                    (b.bytes - a.bytes) as f64 / (b.endpoints - a.endpoints) as f64,
                    (b.rss - a.rss) as f64 / (b.endpoints - a.endpoints) as f64
                );
            }
            if a.endpoints == b.endpoints && b.routes > a.routes {
                let _ = writeln!(
                    out,
                    "- per route at {} endpoints ({} → {} routes; a route is 16 rules, with 1/10 of a frontend Service and 2/10 of backend Services): **{:.0} B** heap, {:.0} B RSS",
                    a.endpoints,
                    a.routes,
                    b.routes,
                    (b.bytes - a.bytes) as f64 / (b.routes - a.routes) as f64,
                    (b.rss - a.rss) as f64 / (b.routes - a.routes) as f64
                );
            }
        }
    }
    let worst = all.iter().map(|f| f.churn_cpu).fold(0.0, f64::max);
    let worst_p99 = all
        .iter()
        .map(|f| percentile(&f.churn_wall, 0.99).unwrap_or(f64::NAN))
        .fold(0.0, f64::max);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "- target ≤ 1 ms CPU per changed slice: largest mean {worst:.1} µs CPU (largest p99 wall {worst_p99:.1} µs) → {}",
        if worst <= 1000.0 { "met" } else { "**missed**" }
    );
    let _ = writeln!(out, "- after: {}", Load::now());
    print!("{out}");
    if quick {
        println!("churn: 1 passed, 0 failed");
    }
    ExitCode::SUCCESS
}
