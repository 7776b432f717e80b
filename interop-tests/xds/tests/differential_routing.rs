//! The differential harness (issue 11), routing scenarios: path matching and header
//! matching, probe by probe. Every cluster has one endpoint whose backend is named like
//! the cluster, so the peer of a call names the cluster its route chose. Each probe's
//! outcome (the peer, or the status) is asserted for gRPC C-core (`grpcio`) against the
//! expectation written here, then compared exactly with the library's. grpc-js-xds runs
//! both as a second oracle; its known differences from C-core are listed per scenario
//! (`js_header_quirks`, `js_quirks`) and asserted as exactly these.

mod common;

use std::{collections::BTreeMap, time::Duration};

use anyhow::ensure;
use common::{Client, Clients, UNARY, bounded, warm_up, warm_up_on};
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, route::Action, route_match::PathSpecifier,
};
use grpcroute_xds_control_plane::{
    Backend, CallReport, CallSpec, ControlPlane, OracleKind, Resource, ResourceType,
    builders::{
        ApiListener, ClusterBuilder, RouteBuilder,
        header::{self, StringMatch},
        load_assignment, route_configuration, virtual_host,
    },
};

const LIMIT: Duration = Duration::from_secs(120);

/// What a probe must end with: the cluster (backend) that answers, or a status.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Cluster(String),
    Status(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Cluster(c) => write!(f, "→ {c}"),
            Outcome::Status(s) => write!(f, "{s}"),
        }
    }
}

fn to(cluster: &str) -> Outcome {
    Outcome::Cluster(cluster.to_string())
}

fn unavailable() -> Outcome {
    Outcome::Status("UNAVAILABLE".to_string())
}

/// One call: a method and metadata, and what C-core does with it.
#[derive(Clone, Debug)]
struct Probe {
    method: String,
    metadata: Vec<(String, String)>,
    expect: Outcome,
}

fn probe(method: &str, metadata: &[(&str, &str)], expect: Outcome) -> Probe {
    Probe {
        method: method.to_string(),
        metadata: metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        expect,
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.method, self.metadata)
    }
}

/// The outcome of a one-call report: the peer that answered, or the status.
fn outcome(r: &CallReport) -> Outcome {
    match r.by_peer.keys().next() {
        Some(peer) if r.ok() == 1 => Outcome::Cluster(peer.clone()),
        _ => Outcome::Status(
            r.by_status
                .keys()
                .next()
                .cloned()
                .unwrap_or_else(|| "NONE".to_string()),
        ),
    }
}

/// Runs every probe once on `client` (concurrently) and returns the outcomes in order.
async fn run_probes(
    client: Client<'_>,
    target: &str,
    probes: &[Probe],
) -> anyhow::Result<Vec<Outcome>> {
    let runs = probes.iter().map(|p| {
        let mut spec = CallSpec::new(target, &p.method).timeout(Duration::from_secs(5));
        for (k, v) in &p.metadata {
            spec = spec.metadata(k, v);
        }
        async move { anyhow::Ok(outcome(&client.call(&spec).await?)) }
    });
    futures_util::future::join_all(runs)
        .await
        .into_iter()
        .collect()
}

/// The clusters the routes name, each with a backend of the same name.
async fn cluster_backends(names: &[&str]) -> anyhow::Result<(Vec<Backend>, Vec<Resource>)> {
    let mut backends = Vec::new();
    let mut resources = Vec::new();
    for name in names {
        let b = Backend::start(name).await?;
        resources.push(ClusterBuilder::eds(name).build().into());
        resources.push(load_assignment(name, [b.addr()]).into());
        backends.push(b);
    }
    Ok((backends, resources))
}

/// Asserts C-core's outcomes against the expectations, the library's against C-core's,
/// and grpc-js-xds's against C-core's except for `js_quirks` (probe index → grpc-js's own
/// outcome), which must be exactly its differences.
fn compare(
    scenario: &str,
    probes: &[Probe],
    outcomes: &[(String, Option<OracleKind>, Vec<Outcome>)],
    js_quirks: &BTreeMap<usize, Outcome>,
) -> anyhow::Result<()> {
    let mut errors = Vec::new();
    let c_core = outcomes
        .iter()
        .find(|(_, k, _)| *k == Some(OracleKind::Python))
        .map(|(_, _, o)| o.clone());
    // Without C-core (its runtime missing outside CI), the library is held to the
    // expectations.
    let reference: Vec<Outcome> =
        c_core.unwrap_or_else(|| probes.iter().map(|p| p.expect.clone()).collect());
    for (who, kind, got) in outcomes {
        let mut js_differences = BTreeMap::new();
        for (i, (p, o)) in probes.iter().zip(got).enumerate() {
            match kind {
                Some(OracleKind::Python) if *o != p.expect => {
                    errors.push(format!("{who}: probe {i} {p}: {o}, expected {}", p.expect));
                }
                Some(OracleKind::Node) if *o != reference[i] => {
                    js_differences.insert(i, o.clone());
                }
                None if *o != reference[i] => {
                    errors.push(format!(
                        "{who}: probe {i} {p}: {o}, but C-core {}",
                        reference[i]
                    ));
                }
                _ => {}
            }
        }
        if *kind == Some(OracleKind::Node) {
            for (i, o) in &js_differences {
                println!(
                    "{scenario}: grpc-js-xds differs from C-core on probe {i} {}: {o} vs {}",
                    probes[*i], reference[*i]
                );
            }
            if &js_differences != js_quirks {
                errors.push(format!(
                    "{who}: differences from C-core {js_differences:?}, known quirks {js_quirks:?}"
                ));
            }
        }
    }
    println!("{scenario}: {} probes compared", probes.len());
    ensure!(errors.is_empty(), "{scenario}:\n{}", errors.join("\n"));
    Ok(())
}

/// A route to the cluster named by header `x-cluster` (`cluster_header`), which gRPC
/// does not support: A28 ignores such a route.
fn cluster_header_route(prefix: &str) -> envoy_types::pb::envoy::config::route::v3::Route {
    use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
    let mut route = RouteBuilder::prefix(prefix).cluster("p-svc").build();
    if let Some(Action::Route(a)) = &mut route.action {
        a.cluster_specifier = Some(ClusterSpecifier::ClusterHeader("x-cluster".to_string()));
    }
    route
}

/// S5 path matching: `path` and `prefix` with and without `case_sensitive`, `safe_regex`
/// (full match), first match in configured order, routes with `query_parameters`
/// skipped, a `cluster_header` route skipped, a non-forwarding action and no matching
/// route (UNAVAILABLE), runtime
/// fractions of 0 and 100 %. S3: the same routes inline in a listener route the same as
/// over RDS, for every client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_matching() -> anyhow::Result<()> {
    bounded("path_matching", LIMIT, async {
        let cp = ControlPlane::start().await?;
        let clusters = [
            "p-exact",
            "p-exact-ci",
            "p-prefix",
            "p-prefix-ci",
            "p-regex",
            "p-regex-ci",
            "p-first",
            "p-second",
            "p-query",
            "p-after-query",
            "p-frac0",
            "p-frac100",
            "p-svc",
            "p-pkg",
        ];
        let (_backends, mut resources) = cluster_backends(&clusters).await?;
        let routes = vec![
            RouteBuilder::path("/pkg.Svc/Exact")
                .cluster("p-exact")
                .build(),
            RouteBuilder::path("/pkg.Svc/ExactCi")
                .case_sensitive(false)
                .cluster("p-exact-ci")
                .build(),
            RouteBuilder::prefix("/pkg.Svc/Pre")
                .cluster("p-prefix")
                .build(),
            RouteBuilder::prefix("/pkg.Ci/")
                .case_sensitive(false)
                .cluster("p-prefix-ci")
                .build(),
            RouteBuilder::safe_regex(r"/pkg\.Re/[a-z]+Call")
                .cluster("p-regex")
                .build(),
            RouteBuilder::safe_regex(r"/pkg\.ReCi/[a-z]+")
                .case_sensitive(false)
                .cluster("p-regex-ci")
                .build(),
            RouteBuilder::prefix("/pkg.First/")
                .cluster("p-first")
                .build(),
            RouteBuilder::path("/pkg.First/Method")
                .cluster("p-second")
                .build(),
            RouteBuilder::prefix("/pkg.Query/")
                .query_parameter("q")
                .cluster("p-query")
                .build(),
            RouteBuilder::prefix("/pkg.Query/")
                .cluster("p-after-query")
                .build(),
            RouteBuilder::path("/pkg.Nf/M").non_forwarding().build(),
            cluster_header_route("/pkg.Ch/"),
            RouteBuilder::prefix("/pkg.Frac/")
                .runtime_fraction_per_million(0)
                .cluster("p-frac0")
                .build(),
            RouteBuilder::prefix("/pkg.Frac/")
                .runtime_fraction_per_million(1_000_000)
                .cluster("p-frac100")
                .build(),
            RouteBuilder::prefix("/pkg.Svc/").cluster("p-svc").build(),
            RouteBuilder::prefix("/pkg.").cluster("p-pkg").build(),
        ];
        // grpc-js-xds 1.14.1 crashes on a route with a non-forwarding action (its
        // dependency manager reads `route.route.cluster_specifier` of a route that has no
        // `route`; README quirks): it gets a copy of the routes without that one
        // (listener `paths-js`).
        let js_routes: Vec<_> = routes
            .iter()
            .filter(|r| !matches!(r.action, Some(Action::NonForwardingAction(_))))
            .cloned()
            .collect();
        resources.push(ApiListener::rds("paths", "paths-rc").build().into());
        resources.push(ApiListener::rds("paths-js", "paths-js-rc").build().into());
        // S3: the same routes inline in the listener (`{listener}-inline`) route the same.
        for (listener, rc, routes) in [
            ("paths", "paths-rc", &routes),
            ("paths-js", "paths-js-rc", &js_routes),
        ] {
            let config = route_configuration(rc, vec![virtual_host("vh", &["*"], routes.clone())]);
            resources.push(
                ApiListener::inline(&format!("{listener}-inline"), config.clone())
                    .build()
                    .into(),
            );
            resources.push(config.into());
        }
        cp.set(resources);
        let probes = vec![
            probe("/pkg.Svc/Exact", &[], to("p-exact")),
            probe("/pkg.Svc/exact", &[], to("p-svc")),
            probe("/pkg.Svc/ExactX", &[], to("p-svc")),
            probe("/pkg.Svc/Exac", &[], to("p-svc")),
            probe("/pkg.Svc/Exact/", &[], to("p-svc")),
            probe("/pkg.Svc/ExactCi", &[], to("p-exact-ci")),
            probe("/pkg.svc/exactci", &[], to("p-exact-ci")),
            probe("/PKG.SVC/EXACTCI", &[], to("p-exact-ci")),
            probe("/pkg.Svc/ExactCiX", &[], to("p-svc")),
            probe("/pkg.Svc/Pre", &[], to("p-prefix")),
            probe("/pkg.Svc/Prefix", &[], to("p-prefix")),
            probe("/pkg.Svc/Pr", &[], to("p-svc")),
            probe("/pkg.Svc/pre", &[], to("p-svc")),
            probe("/pkg.Ci/M", &[], to("p-prefix-ci")),
            probe("/PKG.cI/m", &[], to("p-prefix-ci")),
            probe("/pkg.Cix/M", &[], to("p-pkg")),
            probe("/pkg.Re/unaryCall", &[], to("p-regex")),
            probe("/pkg.Re/unaryCallX", &[], to("p-pkg")),
            probe("/pkg.Re/UnaryCall", &[], to("p-pkg")),
            probe("/pkg.Re/Call", &[], to("p-pkg")),
            probe("/pkg.ReCi/abc", &[], to("p-regex-ci")),
            probe("/pkg.ReCi/ABC", &[], to("p-pkg")),
            probe("/pkg.First/Method", &[], to("p-first")),
            probe("/pkg.First/Other", &[], to("p-first")),
            probe("/pkg.Query/M", &[], to("p-after-query")),
            probe("/pkg.Nf/M", &[], unavailable()),
            probe("/pkg.Nf/M2", &[], to("p-pkg")),
            probe("/pkg.Ch/M", &[("x-cluster", "p-svc")], to("p-pkg")),
            probe("/pkg.Frac/M", &[], to("p-frac100")),
            probe("/other.S/M", &[], unavailable()),
            probe("/pkg/M", &[], unavailable()),
        ];
        let clients = Clients::start(&cp, &[OracleKind::Python, OracleKind::Node], "path").await?;
        let mut outcomes = Vec::new();
        for client in clients.all() {
            let target = if client.kind() == Some(OracleKind::Node) {
                "xds:///paths-js"
            } else {
                "xds:///paths"
            };
            if let Err(e) = warm_up_on(client, target, "/pkg.Any/M", &["p-pkg"]).await {
                anyhow::bail!("{e:#}\n{}", cp.render_log(client.node_id()));
            }
            let via_rds = run_probes(client, target, &probes).await?;
            let inline = format!("{target}-inline");
            let via_inline = run_probes(client, &inline, &probes).await?;
            ensure!(
                via_inline == via_rds,
                "{}: {inline} (inline routes) routes differently from {target} (RDS):\n{:?}\n{:?}",
                client.name(),
                via_inline,
                via_rds
            );
            outcomes.push((client.name(), client.kind(), via_rds));
        }
        // grpc-js-xds's differences from C-core: without the non-forwarding route, its
        // `/pkg.Nf/M` falls through to `/pkg.`; it does not skip a route with
        // `query_parameters` (it ignores the matcher: A28 says skip the route).
        let js_quirks = [("/pkg.Nf/M", "p-pkg"), ("/pkg.Query/M", "p-query")]
            .iter()
            .filter_map(|(m, c)| Some((probes.iter().position(|p| p.method == *m)?, to(c))))
            .collect();
        compare("path_matching", &probes, &outcomes, &js_quirks)
    })
    .await
}

/// One header route: calls to `/h.{kind}/M` must pass `matchers` to reach cluster
/// `h-{kind}`; others fall through to `h-default`.
fn header_route(
    kind: &str,
    matchers: Vec<HeaderMatcher>,
) -> envoy_types::pb::envoy::config::route::v3::Route {
    matchers
        .into_iter()
        .fold(
            RouteBuilder::prefix(&format!("/h.{kind}/")),
            RouteBuilder::header,
        )
        .cluster(&format!("h-{kind}"))
        .build()
}

/// The grpc-js-xds outcomes that differ from C-core's in `header_matching` (probe index →
/// grpc-js's outcome), as observed with grpc-js-xds 1.14.1:
/// - `contains_match` is NACKed (its copy of the routes has no such route: the probes
///   fall through to the default);
/// - a range value `+150` is not a number to grpc-js (C-core's `SimpleAtoi` takes it);
/// - `present_match: false` matches when the header IS present (C-core: when absent);
/// - `invert_match` on a missing header matches (C-core: a missing header never matches,
///   inverted or not, except `present_match`).
fn js_header_quirks(probes: &[Probe]) -> BTreeMap<usize, Outcome> {
    // (method, metadata, grpc-js's cluster)
    type Quirk<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let quirks: [Quirk<'_>; 7] = [
        ("/h.range/M", &[("x-h", "+150")], "h-default"),
        ("/h.absent/M", &[], "h-default"),
        ("/h.absent/M", &[("x-h", "v")], "h-absent"),
        ("/h.contains/M", &[("x-h", "amidb")], "h-default"),
        ("/h.contains/M", &[("x-h", "mid")], "h-default"),
        ("/h.invert/M", &[], "h-invert"),
        ("/h.invrange/M", &[], "h-invrange"),
    ];
    quirks
        .iter()
        .filter_map(|(method, md, cluster)| {
            let i = probes.iter().position(|p| {
                p.method == *method
                    && p.metadata.len() == md.len()
                    && p.metadata
                        .iter()
                        .zip(md.iter())
                        .all(|((k, v), (k2, v2))| k == k2 && v == v2)
            })?;
            Some((i, to(cluster)))
        })
        .collect()
}

/// S6 header matching: every matcher kind with hits and near-misses: exact (case),
/// safe_regex (full match), range (half-open edges, signs, non-numbers), present (an
/// empty value is present), absent, prefix/suffix/contains boundaries, string_match with
/// and without `ignore_case` (not for regex), `invert_match` (a missing header fails
/// anyway, except `present`), `-bin` headers never seen, `content-type` seen as
/// `application/grpc`, several values joined with `,`, several matchers ANDed. Both
/// oracles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_matching() -> anyhow::Result<()> {
    bounded("header_matching", LIMIT, async {
        let cp = ControlPlane::start().await?;
        let h = "x-h";
        // grpc-js-xds 1.14 NACKs the deprecated `contains_match` (C-core supports it): it
        // gets a copy of the routes without that one (listener `headers-js`).
        let routes_for = |with_contains: bool| {
            let mut routes = vec![
                header_route("exact", vec![header::exact(h, "Value")]),
                header_route("regex", vec![header::safe_regex(h, "[a-c]+-[0-9]{2}")]),
                header_route("range", vec![header::range(h, 100, 200)]),
                header_route("rangeneg", vec![header::range(h, -10, 0)]),
                header_route("present", vec![header::present(h, true)]),
                header_route("absent", vec![header::present(h, false)]),
                header_route("prefix", vec![header::prefix(h, "un")]),
                header_route("suffix", vec![header::suffix(h, "me")]),
                header_route("contains", vec![header::contains(h, "mid")]),
                header_route(
                    "sexact",
                    vec![header::string(h, StringMatch::Exact("MiXeD"), true)],
                ),
                header_route(
                    "sexactcs",
                    vec![header::string(h, StringMatch::Exact("MiXeD"), false)],
                ),
                header_route(
                    "sprefix",
                    vec![header::string(h, StringMatch::Prefix("AbC"), true)],
                ),
                header_route(
                    "ssuffix",
                    vec![header::string(h, StringMatch::Suffix("XyZ"), true)],
                ),
                header_route(
                    "scontains",
                    vec![header::string(h, StringMatch::Contains("MiD"), true)],
                ),
                header_route(
                    "sregex",
                    vec![header::string(h, StringMatch::SafeRegex("[a-z]+"), false)],
                ),
                header_route(
                    "invert",
                    vec![header::invert(header::exact(h, "unary_yranu"))],
                ),
                header_route("invpresent", vec![header::invert(header::present(h, true))]),
                header_route("invrange", vec![header::invert(header::range(h, 100, 200))]),
                header_route("bin", vec![header::exact("x-data-bin", "abc")]),
                header_route("binpresent", vec![header::present("x-data-bin", true)]),
                header_route(
                    "bininv",
                    vec![header::invert(header::present("x-data-bin", true))],
                ),
                header_route(
                    "ctype",
                    vec![header::exact("content-type", "application/grpc")],
                ),
                header_route(
                    "ctypeplus",
                    vec![header::prefix("content-type", "application/grpc+")],
                ),
                header_route("multi", vec![header::exact(h, "a,b")]),
                header_route(
                    "and",
                    vec![header::exact("x-a", "1"), header::exact("x-b", "2")],
                ),
                RouteBuilder::prefix("/").cluster("h-default").build(),
            ];
            if !with_contains {
                routes.retain(|r| {
                    !matches!(
                        r.r#match.as_ref().and_then(|m| m.path_specifier.as_ref()),
                        Some(PathSpecifier::Prefix(p)) if p == "/h.contains/"
                    )
                });
            }
            routes
        };
        let mut clusters: Vec<String> = [
            "exact",
            "regex",
            "range",
            "rangeneg",
            "present",
            "absent",
            "prefix",
            "suffix",
            "contains",
            "sexact",
            "sexactcs",
            "sprefix",
            "ssuffix",
            "scontains",
            "sregex",
            "invert",
            "invpresent",
            "invrange",
            "bin",
            "binpresent",
            "bininv",
            "ctype",
            "ctypeplus",
            "multi",
            "and",
            "default",
        ]
        .iter()
        .map(|k| format!("h-{k}"))
        .collect();
        clusters.sort();
        let cluster_refs: Vec<&str> = clusters.iter().map(String::as_str).collect();
        let (_backends, mut resources) = cluster_backends(&cluster_refs).await?;
        resources.push(ApiListener::rds("headers", "headers-rc").build().into());
        resources.push(
            ApiListener::rds("headers-js", "headers-js-rc")
                .build()
                .into(),
        );
        resources.push(
            route_configuration(
                "headers-js-rc",
                vec![virtual_host("vh", &["*"], routes_for(false))],
            )
            .into(),
        );
        resources.push(
            route_configuration(
                "headers-rc",
                vec![virtual_host("vh", &["*"], routes_for(true))],
            )
            .into(),
        );
        cp.set(resources);
        let d = || to("h-default");
        let m = |kind: &str| format!("/h.{kind}/M");
        let hit = |kind: &str, values: &[&str]| {
            let md: Vec<(&str, &str)> = values.iter().map(|v| (h, *v)).collect();
            probe(&m(kind), &md, to(&format!("h-{kind}")))
        };
        let miss = |kind: &str, values: &[&str]| {
            let md: Vec<(&str, &str)> = values.iter().map(|v| (h, *v)).collect();
            probe(&m(kind), &md, d())
        };
        let probes = vec![
            hit("exact", &["Value"]),
            miss("exact", &["value"]),
            miss("exact", &["Valu"]),
            miss("exact", &["Value2"]),
            miss("exact", &[]),
            hit("regex", &["abc-12"]),
            miss("regex", &["abc-123"]),
            miss("regex", &["xabc-12"]),
            miss("regex", &["ABC-12"]),
            hit("range", &["100"]),
            hit("range", &["199"]),
            miss("range", &["200"]),
            miss("range", &["99"]),
            miss("range", &["-150"]),
            miss("range", &["abc"]),
            miss("range", &["150.5"]),
            miss("range", &[]),
            hit("range", &["+150"]),
            hit("range", &["0150"]),
            hit("rangeneg", &["-10"]),
            hit("rangeneg", &["-1"]),
            miss("rangeneg", &["0"]),
            miss("rangeneg", &["-11"]),
            hit("present", &["anything"]),
            hit("present", &[""]),
            miss("present", &[]),
            hit("absent", &[]),
            miss("absent", &["v"]),
            hit("prefix", &["unary"]),
            hit("prefix", &["un"]),
            miss("prefix", &["u"]),
            miss("prefix", &["Unary"]),
            hit("suffix", &["empty_me"]),
            hit("suffix", &["me"]),
            miss("suffix", &["e"]),
            miss("suffix", &["ME"]),
            hit("contains", &["amidb"]),
            hit("contains", &["mid"]),
            miss("contains", &["mi"]),
            miss("contains", &["MID"]),
            hit("sexact", &["mixed"]),
            hit("sexact", &["MIXED"]),
            miss("sexact", &["mixe"]),
            hit("sexactcs", &["MiXeD"]),
            miss("sexactcs", &["mixed"]),
            hit("sprefix", &["abcdef"]),
            hit("sprefix", &["ABC"]),
            miss("sprefix", &["ab"]),
            hit("ssuffix", &["fooxyz"]),
            hit("ssuffix", &["XYZ"]),
            miss("ssuffix", &["yz"]),
            hit("scontains", &["xxMIDyy"]),
            miss("scontains", &["mi"]),
            hit("sregex", &["abc"]),
            miss("sregex", &["ABC"]),
            miss("sregex", &["abc1"]),
            hit("invert", &["other"]),
            miss("invert", &["unary_yranu"]),
            miss("invert", &[]),
            hit("invpresent", &[]),
            miss("invpresent", &["v"]),
            hit("invrange", &["250"]),
            hit("invrange", &["abc"]),
            miss("invrange", &["150"]),
            miss("invrange", &[]),
            probe(&m("bin"), &[("x-data-bin", "abc")], d()),
            probe(&m("binpresent"), &[("x-data-bin", "abc")], d()),
            probe(&m("bininv"), &[("x-data-bin", "abc")], to("h-bininv")),
            probe(&m("bininv"), &[], to("h-bininv")),
            probe(&m("ctype"), &[], to("h-ctype")),
            probe(&m("ctypeplus"), &[], d()),
            hit("multi", &["a", "b"]),
            hit("multi", &["a,b"]),
            miss("multi", &["a"]),
            miss("multi", &["b", "a"]),
            probe(&m("and"), &[("x-a", "1"), ("x-b", "2")], to("h-and")),
            probe(&m("and"), &[("x-a", "1")], d()),
            probe(&m("and"), &[("x-a", "1"), ("x-b", "3")], d()),
        ];
        let clients = Clients::start(&cp, &[OracleKind::Python, OracleKind::Node], "hdr").await?;
        let mut outcomes = Vec::new();
        for client in clients.all() {
            let target = if client.kind() == Some(OracleKind::Node) {
                // Its NACK of the full routes, for the record; then its own copy.
                let mark = cp.mark();
                let r = client
                    .call(&CallSpec::new("xds:///headers", UNARY).timeout(Duration::from_secs(1)))
                    .await?;
                ensure!(r.ok() == 0, "grpc-js-xds with contains_match: {r:?}");
                let nack = cp
                    .wait_for_nack(
                        client.node_id(),
                        ResourceType::RouteConfiguration,
                        mark,
                        Duration::from_secs(10),
                    )
                    .await?;
                let message = nack.error.map(|e| e.message).unwrap_or_default();
                ensure!(
                    message.contains("contains_match"),
                    "grpc-js-xds NACK: {message}"
                );
                println!("header_matching grpc-js-xds NACKs contains_match: {message}");
                client.close_channel("xds:///headers").await?;
                "xds:///headers-js"
            } else {
                "xds:///headers"
            };
            if let Err(e) = warm_up(client, target, &["h-default"]).await {
                anyhow::bail!("{e:#}\n{}", cp.render_log(client.node_id()));
            }
            outcomes.push((
                client.name(),
                client.kind(),
                run_probes(client, target, &probes).await?,
            ));
        }
        compare(
            "header_matching",
            &probes,
            &outcomes,
            &js_header_quirks(&probes),
        )?;

        // `ignore_case` on a regex string matcher: C-core NACKs the RouteConfiguration
        // (it does not ignore the flag), and so does the library.
        let mark = cp.mark();
        let bad = |with_contains| {
            let mut routes = routes_for(with_contains);
            routes.insert(
                0,
                header_route(
                    "sregexic",
                    vec![header::string(h, StringMatch::SafeRegex("[a-z]+"), true)],
                ),
            );
            vec![virtual_host("vh", &["*"], routes)]
        };
        cp.set([
            route_configuration("headers-rc", bad(true)).into(),
            route_configuration("headers-js-rc", bad(false)).into(),
        ]);
        let version = cp.version_info(ResourceType::RouteConfiguration);
        for client in clients.all() {
            let who = client.name();
            let answer = cp
                .wait_for_request(
                    client.node_id(),
                    mark,
                    Duration::from_secs(10),
                    "an answer to the regex with ignore_case",
                    |r| {
                        r.kind() == Some(ResourceType::RouteConfiguration)
                            && !r.response_nonce.is_empty()
                    },
                )
                .await?;
            println!(
                "header_matching {who}: regex with ignore_case -> {}",
                answer.error.as_ref().map_or_else(
                    || format!("ACK {version}"),
                    |e| format!("NACK {}", e.message)
                )
            );
            let nacked = answer.is_nack();
            match client.kind() {
                Some(OracleKind::Node) => ensure!(!nacked, "{who}: {answer:?}"),
                _ => ensure!(
                    nacked && answer.version_info != version,
                    "{who}: {answer:?}"
                ),
            }
        }
        Ok(())
    })
    .await
}

/// S4 virtual host selection (A28, C-core's rules): the target's name against each virtual
/// host's domains, exact > `*suffix` > `prefix*` > `*`, the longest pattern first within
/// a kind, case-insensitive, a wildcard matching at least one character; no matching
/// virtual host → UNAVAILABLE. Each target is a listener of its own naming the same
/// routes (`vh-rc`, no `*` domain) or `star-rc` (with one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_host_selection() -> anyhow::Result<()> {
    bounded("virtual_host_selection", LIMIT, async {
        let cp = ControlPlane::start().await?;
        let clusters = [
            "v-exact",
            "v-suffix",
            "v-longsuffix",
            "v-prefix",
            "v-longprefix",
            "v-star",
        ];
        let (_backends, mut resources) = cluster_backends(&clusters).await?;
        let vh = |name: &str, domains: &[&str]| {
            virtual_host(
                name,
                domains,
                vec![RouteBuilder::prefix("/").cluster(name).build()],
            )
        };
        let hosts = vec![
            vh("v-suffix", &["*.example.com"]),
            vh("v-longsuffix", &["*.b.example.com"]),
            vh("v-prefix", &["www.*"]),
            vh("v-longprefix", &["www.example.*"]),
            vh("v-exact", &["www.example.com", "Other.Example.COM"]),
        ];
        let mut with_star = hosts.clone();
        with_star.push(vh("v-star", &["*"]));
        resources.push(route_configuration("vh-rc", hosts).into());
        resources.push(route_configuration("star-rc", with_star).into());
        // (target, its routes, what C-core does). A listener's name is its target's
        // authority, so each name appears once.
        let cases: &[(&str, &str, Outcome)] = &[
            ("www.example.com", "vh-rc", to("v-exact")),
            ("WWW.Example.Com", "vh-rc", to("v-exact")),
            ("other.example.com", "vh-rc", to("v-exact")),
            ("api.example.com", "vh-rc", to("v-suffix")),
            ("a.b.example.com", "vh-rc", to("v-longsuffix")),
            ("b.example.com", "vh-rc", to("v-suffix")),
            ("example.com", "vh-rc", unavailable()),
            ("www.example.org", "vh-rc", to("v-longprefix")),
            ("www.other.org", "vh-rc", to("v-prefix")),
            ("www.", "vh-rc", unavailable()),
            ("nomatch.org", "vh-rc", unavailable()),
            ("nomatch.net", "star-rc", to("v-star")),
            ("Other.Example.COM", "star-rc", to("v-exact")),
            ("www.example.net", "star-rc", to("v-longprefix")),
        ];
        for (target, rc, _) in cases {
            resources.push(ApiListener::rds(target, rc).build().into());
        }
        // C-core's rule that differs from grpc-go and grpc-js: domains compare
        // case-insensitively, and a wildcard matches at least one character.
        cp.set(resources);
        // The probes, for `compare`'s messages: the target stands in the method's place.
        let probes: Vec<Probe> = cases
            .iter()
            .map(|(target, _, expect)| probe(&format!("xds:///{target}"), &[], expect.clone()))
            .collect();
        let clients = Clients::start(&cp, &[OracleKind::Python, OracleKind::Node], "vhs").await?;
        let mut outcomes = Vec::new();
        for client in clients.all() {
            let runs = probes.iter().map(|p| {
                let spec = CallSpec::new(&p.method, UNARY).timeout(Duration::from_secs(3));
                async move { anyhow::Ok(outcome(&client.call(&spec).await?)) }
            });
            let got = futures_util::future::join_all(runs)
                .await
                .into_iter()
                .collect::<anyhow::Result<Vec<_>>>()?;
            outcomes.push((client.name(), client.kind(), got));
        }
        // grpc-js-xds 1.14.1 matches domains case-sensitively, lets a wildcard match the
        // empty string (as grpc-go does; reference §6.5), and keeps a call without a
        // virtual host (or without a listener) waiting for name resolution until its
        // deadline.
        let deadline = || Outcome::Status("DEADLINE_EXCEEDED".to_string());
        let js_quirks = [
            ("WWW.Example.Com", deadline()),
            ("other.example.com", to("v-suffix")),
            ("example.com", deadline()),
            ("www.", to("v-prefix")),
            ("nomatch.org", deadline()),
        ]
        .into_iter()
        .filter_map(|(t, o)| Some((cases.iter().position(|c| c.0 == t)?, o)))
        .collect();
        compare("virtual_host_selection", &probes, &outcomes, &js_quirks)
    })
    .await
}
