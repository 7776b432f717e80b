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
    build::{Backend, Match, RouteBuilder, Rule, endpoints, route, service},
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
    large_with(routes, |f, b, backend, ns| {
        let ip = |host: u8| {
            let f = u16::try_from(f).unwrap_or(u16::MAX);
            let [hi, lo] = f.to_be_bytes();
            IpAddr::V4(Ipv4Addr::new(10, hi, lo, host))
        };
        vec![
            endpoints(ns, backend)
                .port("grpc", 8080)
                .ready(ip(b as u8 * 2 + 1))
                .ready(ip(b as u8 * 2 + 2))
                .into(),
        ]
    })
}

/// The shape of [`large`], with the EndpointSlices of backend `b` (0 stable, 1 canary) of
/// frontend `f`, Service `backend` in namespace `ns`, from `slices(f, b, backend, ns)`.
fn large_with(
    routes: usize,
    mut slices: impl FnMut(usize, usize, &str, &str) -> Vec<grpcroute_client::Object>,
) -> Large {
    assert!(
        routes > 0 && routes.is_multiple_of(ROUTES_PER_FRONTEND),
        "routes must be a positive multiple of {ROUTES_PER_FRONTEND}"
    );
    let frontends = routes / ROUTES_PER_FRONTEND;
    let mut resources = Resources::new();
    let grpc_service = |f: usize, r: usize| {
        format!(
            "acme.{}{}.v1.{}Service",
            DOMAINS[f % DOMAINS.len()],
            f / DOMAINS.len(),
            NOUNS[r]
        )
    };
    for f in 0..frontends {
        let (ns, name) = frontend_name(f);
        resources.push(service(&ns, &name).port("grpc", PORT));
        let stable = format!("{name}-stable");
        let canary = format!("{name}-canary");
        for (b, backend) in [&stable, &canary].into_iter().enumerate() {
            resources.push(service(&ns, backend).port("grpc", PORT));
            for slice in slices(f, b, backend, &ns) {
                resources.push(slice);
            }
        }
        for (r, noun) in NOUNS.iter().enumerate() {
            resources.push(route_of(f, &grpc_service(f, r), noun));
        }
    }

    let hit = frontends / 2;
    let (ns, name) = frontend_name(hit);
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

/// Namespace and name of frontend `f` of [`large`].
fn frontend_name(f: usize) -> (String, String) {
    (
        format!("team-{:03}", f / 10),
        format!("{}-{}", DOMAINS[f % DOMAINS.len()], f / DOMAINS.len()),
    )
}

/// Route `r` of frontend `f` of [`large`]: 16 rules over the frontend's stable and canary
/// backends, `canary_bump` added to every canary weight (0 in the configuration; another
/// value makes a changed route).
fn route_of_with(f: usize, svc: &str, noun: &str, canary_bump: u32) -> RouteBuilder {
    let (ns, name) = frontend_name(f);
    let stable = format!("{name}-stable");
    let canary = format!("{name}-canary");
    let mut rt = route(&ns, &format!("{name}-{}", noun.to_ascii_lowercase()))
        .parent_service(&name, Some(PORT));
    for method in methods(noun) {
        for (tier, canary_weight) in [("gold", 10), ("standard", 5)] {
            let canary_weight = canary_weight + canary_bump;
            rt = rt.rule(
                Rule::new()
                    .matches(Match::method(svc, &method).header(TIER_HEADER, tier))
                    .backend(Backend::service(&stable, PORT).weight(100 - canary_weight))
                    .backend(Backend::service(&canary, PORT).weight(canary_weight)),
            );
        }
    }
    rt
}

fn route_of(f: usize, svc: &str, noun: &str) -> RouteBuilder {
    route_of_with(f, svc, noun, 0)
}

/// Endpoints per EndpointSlice in [`Cluster`], Kubernetes' default maximum.
pub const SLICE_SIZE: usize = 100;

/// A configuration of [`large`]'s shape with a chosen number of endpoints: `endpoints`
/// spread evenly over the `routes / 5` backend Services, in EndpointSlices of at most
/// [`SLICE_SIZE`]. Every endpoint has its own address in 127.0.0.0/8 (never connected to:
/// nothing here makes a call), so the mesh's pool holds one endpoint per address.
#[derive(Debug)]
pub struct Cluster {
    /// The configuration.
    pub large: Large,
    /// Endpoints per backend Service.
    pub per_backend: usize,
    /// Backend Services.
    pub backends: usize,
}

/// The address of endpoint `i` of a [`Cluster`]: 127.1.0.0 onwards.
fn cluster_ip(i: usize) -> IpAddr {
    let i = u32::try_from(i).unwrap_or(u32::MAX);
    IpAddr::V4(Ipv4Addr::from(0x7F01_0000u32.wrapping_add(i)))
}

/// The spare address backend `b` swaps in for its first endpoint in odd generations.
fn spare_ip(b: usize) -> IpAddr {
    let b = u32::try_from(b).unwrap_or(u32::MAX);
    IpAddr::V4(Ipv4Addr::from(0x7FF0_0000u32.wrapping_add(b)))
}

/// Namespace and name of backend Service `b` (`2f` stable, `2f+1` canary of frontend f).
fn backend_name(b: usize) -> (String, String) {
    let (ns, name) = frontend_name(b / 2);
    let kind = if b.is_multiple_of(2) {
        "stable"
    } else {
        "canary"
    };
    (ns, format!("{name}-{kind}"))
}

/// The EndpointSlices of backend `b` of a cluster with `per_backend` endpoints per backend,
/// in generation `generation`: odd generations replace the first endpoint's address with
/// a spare one, so going from one generation to the next changes exactly one endpoint of
/// one slice.
fn backend_slices(b: usize, per_backend: usize, generation: u64) -> Vec<grpcroute_client::Object> {
    let (ns, name) = backend_name(b);
    let mut out = Vec::new();
    let mut i = 0;
    let mut slice = 0;
    while i < per_backend {
        let n = SLICE_SIZE.min(per_backend - i);
        let mut e = endpoints(&ns, &name)
            .name(&format!("{name}-{slice}"))
            .port("grpc", 8080);
        for j in i..i + n {
            let ip = if j == 0 && generation % 2 == 1 {
                spare_ip(b)
            } else {
                cluster_ip(b * per_backend + j)
            };
            e = e.ready(ip);
        }
        out.push(e.into());
        i += n;
        slice += 1;
    }
    out
}

/// A [`Cluster`] of `routes` GRPCRoutes (a positive multiple of 10) and about `endpoints`
/// endpoints (rounded to a multiple of the `routes / 5` backend Services, at least one
/// each).
///
/// # Panics
///
/// If `routes` is not a positive multiple of 10.
pub fn cluster(routes: usize, endpoints: usize) -> Cluster {
    let backends = routes / ROUTES_PER_FRONTEND * 2;
    let per_backend = (endpoints / backends.max(1)).max(1);
    let large = large_with(routes, |f, b, _, _| {
        backend_slices(f * 2 + b, per_backend, 0)
    });
    Cluster {
        large,
        per_backend,
        backends,
    }
}

impl Cluster {
    /// Endpoints in total.
    pub fn endpoints(&self) -> usize {
        self.per_backend * self.backends
    }

    /// EndpointSlices in total.
    pub fn slices(&self) -> usize {
        self.backends * self.per_backend.div_ceil(SLICE_SIZE)
    }

    /// Every EndpointSlice of backend Service `b` in `generation` (see
    /// [`Cluster::backend_slices`]): what the Kubernetes source hands the mesh after an
    /// event on one of them.
    pub fn backend_slices(&self, b: usize, generation: u64) -> Resources {
        let mut r = Resources::new();
        for o in backend_slices(b % self.backends, self.per_backend, generation) {
            r.push(o);
        }
        r
    }

    /// Replaces backend `b`'s EndpointSlices in the whole configuration with those of
    /// `generation`.
    pub fn set_backend_slices(&mut self, b: usize, generation: u64) {
        let (ns, name) = backend_name(b % self.backends);
        let fresh = self.backend_slices(b, generation).endpoint_slices;
        let slices = &mut self.large.resources.endpoint_slices;
        let mut fresh = fresh.into_iter();
        for s in slices.iter_mut() {
            let owner = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"));
            if s.metadata.namespace.as_deref() == Some(ns.as_str())
                && owner.map(String::as_str) == Some(name.as_str())
                && let Some(f) = fresh.next()
            {
                *s = f;
            }
        }
    }

    /// Changes route `r` (0 to 9) of frontend `f` in the whole configuration: every canary
    /// weight of its 16 rules moves by `bump`.
    pub fn change_route(&mut self, f: usize, r: usize, bump: u32) {
        let f = f % self.large.frontends;
        let r = r % NOUNS.len();
        let svc = format!(
            "acme.{}{}.v1.{}Service",
            DOMAINS[f % DOMAINS.len()],
            f / DOMAINS.len(),
            NOUNS[r]
        );
        let changed: grpcroute_client::Object = route_of_with(f, &svc, NOUNS[r], bump).into();
        let grpcroute_client::Object::GrpcRoute(changed) = changed else {
            return;
        };
        let routes = &mut self.large.resources.routes;
        if let Some(slot) = routes.iter_mut().find(|x| {
            x.metadata.name == changed.metadata.name
                && x.metadata.namespace == changed.metadata.namespace
        }) {
            *slot = changed;
        }
    }
}

#[cfg(test)]
mod tests {
    use grpcroute_client::{
        CallError, Mesh,
        bench_support::{Decider, EndpointsUpdate, apply_endpoints, same_table, table_id},
    };

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

    #[test]
    fn a_cluster_has_its_endpoints_and_changes_one_at_a_time() {
        let mut c = cluster(20, 1_000);
        assert_eq!((c.backends, c.per_backend), (4, 250));
        assert_eq!(c.endpoints(), 1_000);
        assert_eq!(c.slices(), 12);
        assert_eq!(c.large.resources.endpoint_slices.len(), 12);
        let mesh = mesh(&c.large.resources);
        assert_eq!(
            grpcroute_client::bench_support::pooled_endpoints(&mesh),
            1_000
        );
        let table = table_id(&mesh);

        // One endpoint of one slice, the way the Kubernetes source hands it over.
        let update = EndpointsUpdate::new(&c.backend_slices(1, 1));
        assert_eq!(update.services(), 1);
        let report = apply_endpoints(&mesh, update);
        assert_eq!((report.endpoints_added, report.endpoints_removed), (1, 1));
        assert!(same_table(&mesh, &table), "no route compiled");

        // The same change through the whole configuration: still no compile.
        c.set_backend_slices(1, 1);
        let report = mesh.update(&c.large.resources);
        assert_eq!((report.endpoints_added, report.endpoints_removed), (0, 0));
        c.set_backend_slices(1, 2);
        let report = mesh.update(&c.large.resources);
        assert_eq!((report.endpoints_added, report.endpoints_removed), (1, 1));
        assert!(same_table(&mesh, &table));

        // A route change compiles a new table.
        c.change_route(1, 3, 1);
        let report = mesh.update(&c.large.resources);
        assert_eq!(report.changes.changed, 1, "{report:?}");
        assert!(!same_table(&mesh, &table));
    }
}
