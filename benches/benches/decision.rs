//! Criterion benchmarks of the per-call routing decision, without any I/O: frontend lookup,
//! route set, rule match by the spec's precedence, weighted backend pick. See
//! `benches/README.md` for how to run and read them.
//!
//! - `decision/10_rules/*`: one frontend, one GRPCRoute of 10 rules (exact method + one
//!   exact metadata entry), 3 weighted backends per rule;
//! - `decision/routes/*/N`: N GRPCRoutes of 16 rules, 10 per frontend, calling one route of
//!   one frontend: the cost must not grow with N;
//! - `per_call/*`: everything the per-call path does before it touches a connection
//!   (`Decider::route`): the snapshot load, the decision with a draw from the mesh's
//!   shared random source, the bound backend, its endpoint set and the P2C endpoint pick;
//! - `weighted_pick/*`: the weighted pick alone.
//!
//! Set `DECISION_ROUTES=10,1000` to choose the configuration sizes (default
//! `10,100,1000,10000`; `10,1000` in test mode).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion};
use grpcroute_benches::fixtures::{
    self, ECHO_TARGET, NAMESPACE, TENANT, TENANT_HEADER, TenRules, echo_path, fake_backends,
    request_headers,
};
use grpcroute_client::{
    Mesh, Resources,
    bench_support::{Decider, weighted_index_of},
};
use http::HeaderMap;

/// SplitMix64: the random input of each decision, so the weighted pick does not always
/// take the same branch. About 1 ns.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn configured(resources: &Resources) -> Mesh {
    let mesh = Mesh::builder().namespace(NAMESPACE).seed(1).build();
    let report = mesh.update(resources);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    mesh
}

/// Benchmarks one decision, after checking it has the expected outcome once.
fn bench_decision(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: BenchmarkId,
    label: &str,
    decider: &Decider,
    target: &str,
    call: (&str, &HeaderMap),
    routed: bool,
) {
    let target = decider.target(target).expect("a Service target");
    let (path, headers) = call;
    let outcome = decider.decide(&target, path, headers, 0);
    assert_eq!(outcome.is_ok(), routed, "{label}: {outcome:?}");
    group.bench_function(id, |b| {
        let mut rng = SplitMix(1);
        b.iter(|| {
            let decision = decider.decide(&target, black_box(path), black_box(headers), rng.next());
            black_box(decision.is_ok())
        });
    });
}

fn ten_rules(c: &mut Criterion) {
    let mut group = c.benchmark_group("decision/10_rules");
    let tenant = request_headers(&[(TENANT_HEADER, TENANT)]);
    let stranger = request_headers(&[(TENANT_HEADER, "bronze-xy")]);
    let (last, first) = (echo_path(9), echo_path(0));
    let cases: [(&str, TenRules, &str, &HeaderMap, bool); 6] = [
        // The matching rule is the 10th candidate; the 9 before fail on the method.
        (
            "match_last",
            TenRules::DistinctMethods,
            &last,
            &tenant,
            true,
        ),
        (
            "match_first",
            TenRules::DistinctMethods,
            &first,
            &tenant,
            true,
        ),
        // Every rule names the same method: 10 metadata lookups, the last one matches.
        (
            "match_last_same_method",
            TenRules::SameMethod,
            &last,
            &tenant,
            true,
        ),
        (
            "match_last_header_regex",
            TenRules::HeaderRegex,
            &last,
            &tenant,
            true,
        ),
        // No rule matches after 10 metadata lookups: UNIMPLEMENTED.
        ("no_match", TenRules::SameMethod, &last, &stranger, false),
        // Not a route decision: the Service `echo-a` has no routes, so only the frontend
        // lookup runs (GEP-1294 pass-through). The floor of every decision.
        (
            "passthrough",
            TenRules::DistinctMethods,
            &last,
            &tenant,
            true,
        ),
    ];
    for (name, kind, path, headers, routed) in cases {
        let mesh = configured(&fixtures::ten_rules(kind, &fake_backends()));
        let decider = Decider::new(&mesh).expect("configured");
        let target = if name == "passthrough" {
            "echo-a.bench:7070"
        } else {
            ECHO_TARGET
        };
        bench_decision(
            &mut group,
            BenchmarkId::from_parameter(name),
            name,
            &decider,
            target,
            (path, headers),
            routed,
        );
    }
    group.finish();
}

fn sizes() -> Vec<usize> {
    fixtures::route_counts_from_env("DECISION_ROUTES").unwrap_or_else(|| {
        // Criterion's test mode (no `--bench`, as under `cargo test --benches`) runs
        // each benchmark once, often unoptimised: skip the largest configurations.
        if std::env::args().any(|a| a == "--bench") {
            vec![10, 100, 1000, 10_000]
        } else {
            vec![10, 1000]
        }
    })
}

fn routes(c: &mut Criterion) {
    let mut group = c.benchmark_group("decision/routes");
    for n in sizes() {
        let large = fixtures::large(n);
        let mesh = configured(&large.resources);
        let decider = Decider::new(&mesh).expect("configured");
        let calls = [
            ("hit_last", &large.last, true),
            ("hit_first", &large.first, true),
            ("miss", &large.miss, false),
        ];
        for (name, (path, headers), routed) in calls {
            bench_decision(
                &mut group,
                BenchmarkId::new(name, n),
                &format!("{name}/{n}"),
                &decider,
                &large.target,
                (path, headers),
                routed,
            );
        }
    }
    group.finish();
}

/// The decision as a call makes it: snapshot load, decision, endpoint pick.
fn per_call(c: &mut Criterion) {
    let mut group = c.benchmark_group("per_call");
    let tenant = request_headers(&[(TENANT_HEADER, TENANT)]);
    let mesh = configured(&fixtures::ten_rules(
        TenRules::DistinctMethods,
        &fake_backends(),
    ));
    let decider = Decider::new(&mesh).expect("configured");
    let target = decider.target(ECHO_TARGET).expect("a Service target");
    let path = echo_path(9);
    decider
        .route(&target, &path, &tenant)
        .expect("routed to an endpoint");
    group.bench_function("10_rules/match_last", |b| {
        b.iter(|| {
            decider
                .route(&target, black_box(&path), black_box(&tenant))
                .is_ok()
        });
    });
    for n in sizes() {
        let large = fixtures::large(n);
        let mesh = configured(&large.resources);
        let decider = Decider::new(&mesh).expect("configured");
        let target = decider.target(&large.target).expect("a Service target");
        let (path, headers) = &large.last;
        decider
            .route(&target, path, headers)
            .expect("routed to an endpoint");
        group.bench_function(BenchmarkId::new("routes/hit_last", n), |b| {
            b.iter(|| {
                decider
                    .route(&target, black_box(path), black_box(headers))
                    .is_ok()
            });
        });
    }
    group.finish();
}

fn weighted_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("weighted_pick");
    let running = |weights: &[u64]| -> Vec<u64> {
        weights
            .iter()
            .scan(0, |sum, w| {
                *sum += w;
                Some(*sum)
            })
            .collect()
    };
    let three = running(&[50, 30, 20]);
    let sixteen = running(&(1..=16).map(|i| i * 1000).collect::<Vec<_>>());
    for (name, cumulative) in [("3_backends", three), ("16_backends", sixteen)] {
        group.bench_function(name, |b| {
            let mut rng = SplitMix(1);
            b.iter(|| weighted_index_of(black_box(&cumulative), rng.next()));
        });
    }
    group.finish();
}

/// The per-call cost of the metrics: the same decision with and without the call's
/// accounting (meter started, placed in its series, finished).
fn accounting(c: &mut Criterion) {
    let mut group = c.benchmark_group("accounting");
    let mesh = configured(&fixtures::ten_rules(
        TenRules::DistinctMethods,
        &fake_backends(),
    ));
    let decider = Decider::new(&mesh).expect("configured");
    let target = decider.target(ECHO_TARGET).expect("a Service target");
    let path = echo_path(9);
    let headers = request_headers(&[(TENANT_HEADER, TENANT)]);
    assert!(
        decider
            .decide_and_count(&target, &path, &headers, 0)
            .is_ok()
    );
    group.bench_function("decide", |b| {
        let mut rng = SplitMix(1);
        b.iter(|| {
            decider
                .decide(&target, black_box(&path), &headers, rng.next())
                .is_ok()
        });
    });
    group.bench_function("decide_and_count", |b| {
        let mut rng = SplitMix(1);
        b.iter(|| {
            decider
                .decide_and_count(&target, black_box(&path), &headers, rng.next())
                .is_ok()
        });
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    ten_rules(&mut c);
    routes(&mut c);
    per_call(&mut c);
    weighted_pick(&mut c);
    accounting(&mut c);
    c.final_summary();
}
