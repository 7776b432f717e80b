//! The routing configurations the benchmarks run against, generated in code.
//!
//! Two shapes:
//!
//! - [`ten_rules`]: one frontend (`echo.bench:7070`) with one GRPCRoute of 10 rules, each
//!   matching an exact gRPC method and one metadata entry, each splitting 50/30/20 over
//!   three backend Services. The decision benchmark and the loopback harness both use it.
//! - [`large`]: many frontends with 10 routes each, 16 rules per route, every route for
//!   its own realistic gRPC service name (`acme.billing3.v1.InvoiceService`), to show how
//!   the decision cost depends (or not) on the total size of the configuration.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use grpcroute_client::{
    Resources,
    build::{Backend, Match, Rule, endpoints, route, service},
};
use http::{HeaderMap, HeaderName, HeaderValue};

/// The namespace of the [`ten_rules`] configuration, and the client's.
pub const NAMESPACE: &str = "bench";
/// The Service port of every frontend and backend.
pub const PORT: u16 = 7070;
/// The target of the [`ten_rules`] frontend, as an application dials it.
pub const ECHO_TARGET: &str = "echo.bench:7070";
/// The gRPC service every rule of [`ten_rules`] names.
pub const ECHO_SERVICE: &str = "bench.v1.EchoBench";
/// Number of rules of [`ten_rules`].
pub const RULES: usize = 10;
/// The metadata key the rules of [`ten_rules`] match.
pub const TENANT_HEADER: &str = "x-tenant";
/// The metadata value every benchmark call sends in [`TENANT_HEADER`].
pub const TENANT: &str = "gold-acme";
/// The backend Services of every rule of [`ten_rules`], with their weights.
pub const BACKENDS: [(&str, u32); 3] = [("echo-a", 50), ("echo-b", 30), ("echo-c", 20)];

/// `/bench.v1.EchoBench/UnaryNN`: the method rule `NN` of [`TenRules::DistinctMethods`]
/// matches.
pub fn echo_path(rule: usize) -> String {
    format!("/{ECHO_SERVICE}/Unary{rule:02}")
}

/// How the 10 rules of [`ten_rules`] tell calls apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenRules {
    /// Rule `i` matches method `UnaryNN` (`NN` = `i`) and `x-tenant: gold-acme` exactly. A
    /// call to `Unary09` is taken by the last rule; the nine before it fail on the method.
    DistinctMethods,
    /// Every rule matches method `Unary09`; rule `i` wants `x-tenant: gold-acNN`, except
    /// the last, which wants `gold-acme`. Every rule tried costs a metadata lookup.
    SameMethod,
    /// As [`TenRules::DistinctMethods`], with the metadata matched by the regular
    /// expression `gold-[a-z]+`.
    HeaderRegex,
}

/// The 10-rule frontend `echo.bench:7070`. `backends` lists the endpoints of the three
/// backend Services `echo-a`, `echo-b`, `echo-c` (one EndpointSlice per endpoint, so
/// each endpoint may have its own port).
pub fn ten_rules(kind: TenRules, backends: &[Vec<SocketAddr>; 3]) -> Resources {
    ten_rules_for(kind, ECHO_SERVICE, "Unary09", backends)
}

/// As [`ten_rules`], for gRPC service `service_name` instead of `bench.v1.EchoBench`, and
/// with method `last_method` in the last rule instead of `Unary09` (it must not be longer
/// than 7 characters to stay last in precedence order).
pub fn ten_rules_for(
    kind: TenRules,
    service_name: &str,
    last_method: &str,
    backends: &[Vec<SocketAddr>; 3],
) -> Resources {
    let mut resources = Resources::new().with(service(NAMESPACE, "echo").port("grpc", PORT));
    for ((name, _), addrs) in BACKENDS.iter().zip(backends) {
        resources.push(service(NAMESPACE, name).port("grpc", PORT));
        for (i, addr) in addrs.iter().enumerate() {
            resources.push(
                endpoints(NAMESPACE, name)
                    .name(&format!("{name}-{i}"))
                    .port("grpc", addr.port())
                    .ready(addr.ip()),
            );
        }
    }
    let mut r = route(NAMESPACE, "echo-routes").parent_service("echo", Some(PORT));
    for i in 0..RULES {
        let last = i == RULES - 1;
        let svc = service_name;
        let method = if last {
            last_method.to_string()
        } else {
            format!("Unary{i:02}")
        };
        let m = match kind {
            TenRules::DistinctMethods => Match::method(svc, &method).header(TENANT_HEADER, TENANT),
            TenRules::SameMethod => {
                let value = if last {
                    TENANT.to_string()
                } else {
                    format!("gold-ac{i:02}")
                };
                Match::method(service_name, last_method).header(TENANT_HEADER, &value)
            }
            TenRules::HeaderRegex => {
                Match::method(svc, &method).header_regex(TENANT_HEADER, "gold-[a-z]+")
            }
        };
        let mut rule = Rule::new().matches(m);
        for (name, weight) in BACKENDS {
            rule = rule.backend(Backend::service(name, PORT).weight(weight));
        }
        r = r.rule(rule);
    }
    resources.with(r)
}

/// Six made-up endpoints (two per backend), for benchmarks that never connect.
pub fn fake_backends() -> [Vec<SocketAddr>; 3] {
    let ep = |i: u8| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)), 9000);
    [vec![ep(1), ep(2)], vec![ep(3), ep(4)], vec![ep(5), ep(6)]]
}

/// Request metadata as a tonic client sends it, plus `extra`.
pub fn request_headers(extra: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("te", "trailers"),
        ("content-type", "application/grpc"),
        ("user-agent", "tonic/0.14.9"),
        ("grpc-accept-encoding", "identity"),
        ("x-request-id", "5f0c6a1e-9d3b-4c2a-8b7e-2f4d1a9c0e11"),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).expect("valid header name"),
            HeaderValue::from_str(value).expect("valid header value"),
        );
    }
    headers
}

/// Routes per frontend in [`large`].
pub const ROUTES_PER_FRONTEND: usize = 10;
/// Rules per route in [`large`].
pub const RULES_PER_ROUTE: usize = 16;
/// The metadata key the rules of [`large`] match.
pub const TIER_HEADER: &str = "x-tier";

const DOMAINS: [&str; 20] = [
    "billing",
    "catalog",
    "checkout",
    "identity",
    "inventory",
    "ledger",
    "media",
    "notify",
    "orders",
    "payments",
    "pricing",
    "profile",
    "search",
    "shipping",
    "social",
    "tax",
    "users",
    "wallet",
    "reports",
    "audit",
];

const NOUNS: [&str; ROUTES_PER_FRONTEND] = [
    "Account",
    "Invoice",
    "Order",
    "Payment",
    "Shipment",
    "Product",
    "Review",
    "Customer",
    "Coupon",
    "Subscription",
];

/// The methods of a gRPC service about `noun`: 8 of them, two rules each.
fn methods(noun: &str) -> [String; RULES_PER_ROUTE / 2] {
    [
        format!("BatchGet{noun}s"),
        format!("Search{noun}s"),
        format!("List{noun}s"),
        format!("Watch{noun}s"),
        format!("Create{noun}"),
        format!("Update{noun}"),
        format!("Delete{noun}"),
        format!("Get{noun}"),
    ]
}

/// The configuration sizes (numbers of routes) named in the environment variable `var`,
/// comma-separated; sizes that [`large`] cannot build are ignored. `None` when it names
/// none, so the benchmark uses its defaults.
pub fn route_counts_from_env(var: &str) -> Option<Vec<usize>> {
    let sizes: Vec<usize> = std::env::var(var)
        .ok()?
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .filter(|n: &usize| *n > 0 && n.is_multiple_of(ROUTES_PER_FRONTEND))
        .collect();
    (!sizes.is_empty()).then_some(sizes)
}

/// A generated configuration of many routes, and the calls the benchmark makes to it.
#[derive(Debug)]
pub struct Large {
    /// The objects.
    pub resources: Resources,
    /// Number of GRPCRoutes.
    pub routes: usize,
    /// Number of frontends (Services the routes attach to).
    pub frontends: usize,
    /// The frontend the benchmark calls, `svc.ns:port`.
    pub target: String,
    /// A path and metadata taken by the last candidate rule of the route (in precedence
    /// order: the shortest method name, the later rule).
    pub last: (String, HeaderMap),
    /// A path and metadata taken by the first candidate rule.
    pub first: (String, HeaderMap),
    /// A call to the route's gRPC service that no rule takes (`UNIMPLEMENTED`).
    pub miss: (String, HeaderMap),
    /// The backend Service the `last` and `first` calls may go to (the stable one).
    pub stable_backend: String,
}

/// `routes` GRPCRoutes (a multiple of 10) of 16 rules each, 10 per frontend, frontends
/// spread over namespaces of 10 Services each. Every route is for its own gRPC service
/// (`acme.<domain><n>.v1.<Noun>Service`); each rule matches one exact method and one exact
/// `x-tier` value (`gold` or `standard`) and splits over the frontend's `-stable` and
/// `-canary` backends (90/10 and 95/5), each with two endpoints.
///
/// # Panics
///
/// If `routes` is not a positive multiple of 10.
pub fn large(routes: usize) -> Large {
    assert!(
        routes > 0 && routes.is_multiple_of(ROUTES_PER_FRONTEND),
        "routes must be a positive multiple of {ROUTES_PER_FRONTEND}"
    );
    let frontends = routes / ROUTES_PER_FRONTEND;
    let mut resources = Resources::new();
    let name_of = |f: usize| {
        (
            format!("team-{:03}", f / 10),
            format!("{}-{}", DOMAINS[f % DOMAINS.len()], f / DOMAINS.len()),
        )
    };
    let grpc_service = |f: usize, r: usize| {
        format!(
            "acme.{}{}.v1.{}Service",
            DOMAINS[f % DOMAINS.len()],
            f / DOMAINS.len(),
            NOUNS[r]
        )
    };
    for f in 0..frontends {
        let (ns, name) = name_of(f);
        resources.push(service(&ns, &name).port("grpc", PORT));
        let stable = format!("{name}-stable");
        let canary = format!("{name}-canary");
        for (b, backend) in [&stable, &canary].into_iter().enumerate() {
            resources.push(service(&ns, backend).port("grpc", PORT));
            let ip = |host: u8| {
                let f = u16::try_from(f).unwrap_or(u16::MAX);
                let [hi, lo] = f.to_be_bytes();
                IpAddr::V4(Ipv4Addr::new(10, hi, lo, host))
            };
            resources.push(
                endpoints(&ns, backend)
                    .port("grpc", 8080)
                    .ready(ip(b as u8 * 2 + 1))
                    .ready(ip(b as u8 * 2 + 2)),
            );
        }
        for (r, noun) in NOUNS.iter().enumerate() {
            let svc = grpc_service(f, r);
            let mut rt = route(&ns, &format!("{name}-{}", noun.to_ascii_lowercase()))
                .parent_service(&name, Some(PORT));
            for method in methods(noun) {
                for (tier, canary_weight) in [("gold", 10), ("standard", 5)] {
                    rt = rt.rule(
                        Rule::new()
                            .matches(Match::method(&svc, &method).header(TIER_HEADER, tier))
                            .backend(Backend::service(&stable, PORT).weight(100 - canary_weight))
                            .backend(Backend::service(&canary, PORT).weight(canary_weight)),
                    );
                }
            }
            resources.push(rt);
        }
    }

    let hit = frontends / 2;
    let (ns, name) = name_of(hit);
    let route_index = 5;
    let svc = grpc_service(hit, route_index);
    let noun = NOUNS[route_index];
    let call = |method: String, tier: &str| {
        (
            format!("/{svc}/{method}"),
            request_headers(&[(TIER_HEADER, tier)]),
        )
    };
    Large {
        resources,
        routes,
        frontends,
        target: format!("{name}.{ns}:{PORT}"),
        last: call(format!("Get{noun}"), "standard"),
        first: call(format!("BatchGet{noun}s"), "gold"),
        miss: call(format!("Get{noun}"), "bronze"),
        stable_backend: format!("{name}-stable"),
    }
}

#[cfg(test)]
mod tests {
    use grpcroute_client::{CallError, Mesh, bench_support::Decider};

    use super::*;

    fn mesh(resources: &Resources) -> Mesh {
        let mesh = Mesh::builder().namespace(NAMESPACE).seed(1).build();
        let report = mesh.update(resources);
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
        mesh
    }

    #[test]
    fn ten_rules_route_as_described() {
        let headers = request_headers(&[(TENANT_HEADER, TENANT)]);
        for kind in [
            TenRules::DistinctMethods,
            TenRules::SameMethod,
            TenRules::HeaderRegex,
        ] {
            let mesh = mesh(&ten_rules(kind, &fake_backends()));
            let decider = Decider::new(&mesh).expect("configured");
            let target = decider.target(ECHO_TARGET).expect("target");
            let mut seen = std::collections::BTreeMap::new();
            for i in 0..1000u64 {
                let random = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let backend = decider
                    .decide(&target, &echo_path(9), &headers, random)
                    .expect("routed");
                *seen.entry(backend.to_string()).or_insert(0) += 1;
            }
            assert_eq!(seen.len(), 3, "{kind:?}: {seen:?}");
            let other = request_headers(&[(TENANT_HEADER, "bronze-xy")]);
            let miss = decider.decide(&target, &echo_path(9), &other, 0);
            assert!(
                matches!(miss, Err(CallError::NoMatch { .. })),
                "{kind:?}: {miss:?}"
            );
        }
    }

    #[test]
    fn large_routes_as_described() {
        let large = large(100);
        assert_eq!(large.frontends, 10);
        assert_eq!(large.resources.routes.len(), 100);
        let mesh = mesh(&large.resources);
        let decider = Decider::new(&mesh).expect("configured");
        let target = decider.target(&large.target).expect("target");
        for (path, headers) in [&large.last, &large.first] {
            let backend = decider.decide(&target, path, headers, 0).expect("routed");
            assert_eq!(backend, large.stable_backend);
        }
        let (path, headers) = &large.miss;
        assert!(matches!(
            decider.decide(&target, path, headers, 0),
            Err(CallError::NoMatch { .. })
        ));
    }
}
