//! Compilation and routing decisions over hand-built configurations: one test per rule of
//! the spec (attachment, route sets, precedence, outcomes, backends, grants).

use std::net::IpAddr;

use gateway_api::grpcroutes::GrpcRoute;
use http::{HeaderMap, HeaderName, HeaderValue};
use tonic::Code;

use super::*;
use crate::{
    Resources,
    build::{Backend, Match, Rule, endpoints, grant, route, service},
    route::decide as router,
    target::Target,
};

fn compile_with(resources: &Resources, policy: GrantPolicy) -> Table {
    compile(&resources.to_model(), policy, None)
}

fn snapshot(resources: &Resources) -> Table {
    compile_with(resources, GrantPolicy::Permissive)
}

/// The addresses calls to `target` without routes go to, as a mesh configured with
/// `resources` binds them.
fn passthrough_endpoints(resources: &Resources, target: &str, client_ns: &str) -> Vec<String> {
    let mesh = crate::Mesh::builder().namespace(client_ns).build();
    mesh.update(resources);
    let snapshot = mesh.shared.core.snapshot.load_full().unwrap();
    let t = Target::parse(target, "cluster.local").unwrap();
    let frontend = router::frontend(&snapshot.table, &t, client_ns).unwrap();
    snapshot
        .backend(&frontend.passthrough)
        .unwrap()
        .endpoints()
        .all()
        .iter()
        .map(|e| e.addr().to_string())
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

/// Routes a call and names the backend Service it goes to (`ns/name:port`), or the error.
fn route_call(
    s: &Table,
    client_ns: &str,
    target: &str,
    path: &str,
    meta: &[(&str, &str)],
) -> Result<String, CallError> {
    route_with(s, client_ns, target, path, meta, 0)
}

fn route_with(
    s: &Table,
    client_ns: &str,
    target: &str,
    path: &str,
    meta: &[(&str, &str)],
    random: u64,
) -> Result<String, CallError> {
    let target = Target::parse(target, "cluster.local").unwrap();
    let frontend = router::frontend(s, &target, client_ns)?;
    let decision = router::decide(frontend, client_ns, path, &headers(meta), random)?;
    Ok(decision.target.describe())
}

use crate::error::CallError;

/// Services `front`, `a`, `b`, `c` in `ns`, port `grpc` 50051 (→ 9000), one endpoint each.
fn base(ns: &str) -> Resources {
    let mut r = Resources::new();
    for (i, name) in ["front", "a", "b", "c"].iter().enumerate() {
        r.push(
            service(ns, name)
                .cluster_ip(&format!("10.96.0.{}", i + 1))
                .port("grpc", 50051),
        );
        r.push(
            endpoints(ns, name)
                .port("grpc", 9000)
                .ready(ip(&format!("10.1.0.{}", i + 1))),
        );
    }
    r
}

fn to(ns: &str, svc: &str) -> String {
    format!("{ns}/{svc}:50051")
}

// --- 1. frontend identification -------------------------------------------------------

#[test]
fn every_name_form_and_the_cluster_ip_reach_the_same_frontend() {
    let r = base("shop").with(
        route("shop", "r")
            .parent_service("front", None)
            .rule(Rule::new().backend(Backend::service("a", 50051))),
    );
    let s = snapshot(&r);
    for target in [
        "front:50051",
        "front.shop:50051",
        "front.shop.svc:50051",
        "front.shop.svc.cluster.local:50051",
        "10.96.0.1:50051",
        "front",
    ] {
        assert_eq!(
            route_call(&s, "shop", target, "/p.S/M", &[]).unwrap(),
            to("shop", "a"),
            "{target}"
        );
    }
    // A bare name resolves in the client's namespace.
    assert!(matches!(
        route_call(&s, "web", "front:50051", "/p.S/M", &[]),
        Err(CallError::UnknownService { .. })
    ));
    assert_eq!(
        route_call(&s, "web", "front.shop:50051", "/p.S/M", &[]).unwrap(),
        to("shop", "a")
    );
    assert!(matches!(
        route_call(&s, "shop", "front:1234", "/p.S/M", &[]),
        Err(CallError::UnknownPort { .. })
    ));
}

// --- 2. attachment --------------------------------------------------------------------

fn with_parent(mut r: GrpcRoute, group: Option<&str>, kind: Option<&str>) -> GrpcRoute {
    let p = &mut r.spec.parent_refs.as_mut().unwrap()[0];
    p.group = group.map(Into::into);
    p.kind = kind.map(Into::into);
    r
}

#[test]
fn only_core_group_service_parent_refs_attach() {
    let attached = |group, kind| {
        let r = route("shop", "r")
            .parent_service("front", None)
            .rule(Rule::new().backend(Backend::service("a", 50051)));
        let s = snapshot(&base("shop").with(with_parent(r.build(), group, kind)));
        route_call(&s, "shop", "front:50051", "/p.S/M", &[]).unwrap() == to("shop", "a")
    };
    assert!(attached(Some(""), Some("Service")));
    // Defaults are gateway.networking.k8s.io / Gateway: not a Service.
    assert!(
        !attached(None, Some("Service")),
        "group omitted means the Gateway API group"
    );
    assert!(!attached(Some(""), None), "kind omitted means Gateway");
    assert!(!attached(Some("core"), Some("Service")));
}

#[test]
fn parent_port_and_section_name_scope_the_route() {
    let mut r = Resources::new()
        .with(
            service("shop", "front")
                .port("grpc", 50051)
                .port("admin", 8080),
        )
        .with(service("shop", "a").port("grpc", 50051))
        .with(
            endpoints("shop", "front")
                .port("grpc", 9000)
                .port("admin", 9001)
                .ready(ip("10.1.0.1")),
        )
        .with(
            endpoints("shop", "a")
                .port("grpc", 9000)
                .ready(ip("10.1.0.2")),
        );
    let rule = || Rule::new().backend(Backend::service("a", 50051));
    r.push(
        route("shop", "by-port")
            .parent_service("front", Some(50051))
            .rule(rule()),
    );
    let s = snapshot(&r);
    assert_eq!(
        route_call(&s, "shop", "front:50051", "/p.S/M", &[]).unwrap(),
        to("shop", "a")
    );
    assert_eq!(
        route_call(&s, "shop", "front:8080", "/p.S/M", &[]).unwrap(),
        "shop/front:8080",
        "other port passes through"
    );

    let mut by_name = route("shop", "by-name")
        .parent_service("front", None)
        .rule(rule())
        .build();
    by_name.spec.parent_refs.as_mut().unwrap()[0].section_name = Some("admin".into());
    let s = snapshot(&r.clone().with(by_name));
    assert_eq!(
        route_call(&s, "shop", "front:8080", "/p.S/M", &[]).unwrap(),
        to("shop", "a")
    );

    let r2 = Resources {
        routes: vec![],
        ..r.clone()
    }
    .with(
        route("shop", "all")
            .parent_service("front", None)
            .rule(rule()),
    );
    let s = snapshot(&r2);
    assert_eq!(
        route_call(&s, "shop", "front:8080", "/p.S/M", &[]).unwrap(),
        to("shop", "a"),
        "no port: all ports"
    );
    assert_eq!(
        route_call(&s, "shop", "front:50051", "/p.S/M", &[]).unwrap(),
        to("shop", "a")
    );
}

#[test]
fn unknown_parent_port_reports_no_matching_parent() {
    let r = base("shop").with(
        route("shop", "r")
            .parent_service("front", Some(1234))
            .rule(Rule::new().backend(Backend::service("a", 50051))),
    );
    let s = snapshot(&r);
    let accepted = &s.statuses[0].parents[0].conditions[0];
    assert_eq!(
        (accepted.type_, accepted.status, accepted.reason.as_str()),
        ("Accepted", ConditionStatus::False, "NoMatchingParent")
    );
    assert_eq!(
        route_call(&s, "shop", "front:50051", "/p.S/M", &[]).unwrap(),
        to("shop", "front")
    );
}

// --- 3. route sets ----------------------------------------------------------------------

#[test]
fn consumer_routes_win_for_their_namespace_and_are_never_merged() {
    let r = base("shop")
        .with(service("web", "w").port("grpc", 50051))
        .with(
            route("shop", "producer")
                .parent_service("front", None)
                .rule(
                    Rule::new()
                        .matches(Match::method("p.S", "Producer"))
                        .backend(Backend::service("a", 50051)),
                ),
        )
        .with(
            route("web", "consumer")
                .parent_service_in("shop", "front", None)
                .rule(
                    Rule::new()
                        .matches(Match::method("p.S", "Consumer"))
                        .backend(Backend::service("b", 50051).namespace("shop")),
                ),
        );
    let s = snapshot(&r);
    // Clients in `web` use the consumer route only: the producer rule does not apply.
    assert_eq!(
        route_call(&s, "web", "front.shop:50051", "/p.S/Consumer", &[]).unwrap(),
        to("shop", "b")
    );
    let unmerged = route_call(&s, "web", "front.shop:50051", "/p.S/Producer", &[]).unwrap_err();
    assert_eq!(unmerged.code(), Code::Unimplemented);
    assert!(unmerged.to_string().contains("consumer"), "{unmerged}");
    // Everyone else uses the producer routes.
    assert_eq!(
        route_call(&s, "shop", "front:50051", "/p.S/Producer", &[]).unwrap(),
        to("shop", "a")
    );
    assert_eq!(
        route_call(&s, "other", "front.shop:50051", "/p.S/Producer", &[]).unwrap(),
        to("shop", "a")
    );
    assert_eq!(
        route_call(&s, "other", "front.shop:50051", "/p.S/Consumer", &[])
            .unwrap_err()
            .code(),
        Code::Unimplemented
    );
}

#[test]
fn no_routes_means_pass_through_to_the_service_itself() {
    let s = snapshot(&base("shop"));
    assert_eq!(
        route_call(&s, "shop", "front:50051", "/p.S/M", &[]).unwrap(),
        to("shop", "front")
    );
}

#[test]
fn hostnames_are_ignored_for_service_parents() {
    let mut r = route("shop", "r")
        .parent_service("front", None)
        .rule(Rule::new().backend(Backend::service("a", 50051)))
        .build();
    r.spec.hostnames = Some(vec!["elsewhere.example.com".into()]);
    let s = snapshot(&base("shop").with(r));
    assert_eq!(
        route_call(&s, "shop", "front:50051", "/p.S/M", &[]).unwrap(),
        to("shop", "a")
    );
}

// --- 4/5. matching and precedence ----------------------------------------------------------

fn rule_to(m: Match, backend: &str) -> Rule {
    Rule::new()
        .matches(m)
        .backend(Backend::service(backend, 50051))
}

#[test]
fn empty_matches_match_everything() {
    let r = base("shop").with(
        route("shop", "r")
            .parent_service("front", None)
            .rule(Rule::new().backend(Backend::service("a", 50051))),
    );
    let s = snapshot(&r);
    assert_eq!(
        route_call(&s, "shop", "front:50051", "/any.Service/Any", &[("x", "y")]).unwrap(),
        to("shop", "a")
    );
}

#[test]
fn precedence_service_characters_then_method_characters_then_headers() {
    let r = base("shop").with(
        route("shop", "r")
            .parent_service("front", None)
            // Declared from least to most specific: first-match would pick the first.
            .rule(rule_to(
                Match::method_of_any_service("Get")
                    .header("x-a", "1")
                    .header("x-b", "2"),
                "a",
            ))
            .rule(rule_to(Match::service("pkg.Svc"), "b"))
            .rule(rule_to(Match::method("pkg.Svc", "Get"), "c")),
    );
    let s = snapshot(&r);
    let both = [("x-a", "1"), ("x-b", "2")];
    // Service characters beat method characters and header count.
    assert_eq!(
        route_call(&s, "shop", "front:50051", "/pkg.Svc/Get", &both).unwrap(),
        to("shop", "c")
    );
    assert_eq!(
        route_call(&s, "shop", "front:50051", "/pkg.Svc/Put", &both).unwrap(),
        to("shop", "b")
    );
    // Without a service match, the method-only rule applies.
    assert_eq!(
        route_call(&s, "shop", "front:50051", "/other.Svc/Get", &both).unwrap(),
        to("shop", "a")
    );
    assert_eq!(
        route_call(&s, "shop", "front:50051", "/other.Svc/Get", &[])
            .unwrap_err()
            .code(),
        Code::Unimplemented
    );
}

#[test]
fn precedence_header_count_then_first_rule() {
    // GRPCRouteHeaderMatching: `version: two, color: orange` → v1 (two headers beat one);
    // `version: two, color: blue` → v2 (tie at one header: the first rule wins).
    let h = |k: &str, v: &str| Match::any().header(k, v);
    let r = base("shop").with(
        route("shop", "r")
            .parent_service("front", None)
            .rule(rule_to(h("version", "one"), "a"))
            .rule(rule_to(h("version", "two"), "b"))
            .rule(rule_to(h("version", "two").header("color", "orange"), "a"))
            .rule(
                Rule::new()
                    .matches(h("color", "blue"))
                    .matches(h("color", "green"))
                    .backend(Backend::service("a", 50051)),
            )
            .rule(
                Rule::new()
                    .matches(h("color", "red"))
                    .matches(h("color", "yellow"))
                    .backend(Backend::service("b", 50051)),
            ),
    );
    let s = snapshot(&r);
    let call = |meta: &[(&str, &str)]| route_call(&s, "shop", "front:50051", "/p.S/Echo", meta);
    assert_eq!(call(&[("version", "one")]).unwrap(), to("shop", "a"));
    assert_eq!(call(&[("version", "two")]).unwrap(), to("shop", "b"));
    assert_eq!(
        call(&[("version", "two"), ("color", "orange")]).unwrap(),
        to("shop", "a")
    );
    assert_eq!(
        call(&[("version", "two"), ("color", "blue")]).unwrap(),
        to("shop", "b")
    );
    assert_eq!(call(&[("color", "blue")]).unwrap(), to("shop", "a"));
    assert_eq!(call(&[("color", "green")]).unwrap(), to("shop", "a"));
    assert_eq!(call(&[("color", "red")]).unwrap(), to("shop", "b"));
    assert_eq!(call(&[("color", "yellow")]).unwrap(), to("shop", "b"));
    for miss in [
        &[("color", "orange")][..],
        &[("some-other-header", "one")],
        &[("color", "purple")],
    ] {
        assert_eq!(
            call(miss).unwrap_err().code(),
            Code::Unimplemented,
            "{miss:?}"
        );
    }
}

fn created(mut r: GrpcRoute, seconds: i64) -> GrpcRoute {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    r.metadata.creation_timestamp = Some(Time(
        k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap(),
    ));
    r
}

#[test]
fn precedence_across_routes_oldest_then_name() {
    let same = |name: &str, backend: &str| {
        route("shop", name)
            .parent_service("front", None)
            .rule(rule_to(Match::method("p.S", "M"), backend))
            .build()
    };
    // Oldest wins, whatever the names.
    let r = base("shop")
        .with(created(same("aaa", "a"), 2_000))
        .with(created(same("zzz", "b"), 1_000));
    assert_eq!(
        route_call(&snapshot(&r), "shop", "front:50051", "/p.S/M", &[]).unwrap(),
        to("shop", "b")
    );
    // Same age: alphabetical `{namespace}/{name}`.
    let r = base("shop")
        .with(created(same("zzz", "b"), 1_000))
        .with(created(same("aaa", "a"), 1_000));
    assert_eq!(
        route_call(&snapshot(&r), "shop", "front:50051", "/p.S/M", &[]).unwrap(),
        to("shop", "a")
    );
    // No timestamps (manifests): names decide.
    let r = base("shop").with(same("m2", "b")).with(same("m1", "c"));
    assert_eq!(
        route_call(&snapshot(&r), "shop", "front:50051", "/p.S/M", &[]).unwrap(),
        to("shop", "c")
    );
}

#[test]
fn regex_matches_count_their_pattern_characters() {
    let r = base("shop").with(
        route("shop", "r")
            .parent_service("front", None)
            .rule(rule_to(Match::regex(Some("p\\..*"), None), "a"))
            .rule(rule_to(Match::regex(Some("p\\.Svc[0-9]*"), None), "b")),
    );
    let s = snapshot(&r);
    assert_eq!(
        route_call(&s, "shop", "front:50051", "/p.Svc1/M", &[]).unwrap(),
        to("shop", "b")
    );
    assert_eq!(
        route_call(&s, "shop", "front:50051", "/p.Other/M", &[]).unwrap(),
        to("shop", "a")
    );
}

#[test]
fn a_route_indexed_by_service_still_sees_generic_rules() {
    // A call for service X must consider method-only and regex rules too, in order.
    let r = base("shop").with(
        route("shop", "r")
            .parent_service("front", None)
            .rule(rule_to(Match::method("p.X", "Other"), "a"))
            .rule(rule_to(Match::method_of_any_service("M"), "b")),
    );
    let s = snapshot(&r);
    assert_eq!(
        route_call(&s, "shop", "front:50051", "/p.X/M", &[]).unwrap(),
        to("shop", "b")
    );
    assert_eq!(
        route_call(&s, "shop", "front:50051", "/p.X/Other", &[]).unwrap(),
        to("shop", "a")
    );
}

// --- 6. outcomes --------------------------------------------------------------------------

#[test]
fn rule_without_backend_refs_is_unimplemented() {
    let r = base("shop").with(
        route("shop", "r")
            .parent_service("front", None)
            .rule(Rule::new().matches(Match::method("p.S", "M"))),
    );
    let e = route_call(&snapshot(&r), "shop", "front:50051", "/p.S/M", &[]).unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    assert!(e.to_string().contains("shop/r rule 0"), "{e}");
}

#[test]
fn invalid_backends_take_their_share_and_fail_unavailable() {
    let r = base("shop").with(
        route("shop", "r").parent_service("front", None).rule(
            Rule::new()
                .backend(Backend::service("a", 50051))
                .backend(Backend::service("missing", 50051))
                .backend(Backend::service("b", 50051).weight(0)),
        ),
    );
    let s = snapshot(&r);
    // random picks the position in the weight sum: lower half → a, upper half → missing.
    assert_eq!(
        route_with(&s, "shop", "front:50051", "/p.S/M", &[], 0).unwrap(),
        to("shop", "a")
    );
    let e = route_with(&s, "shop", "front:50051", "/p.S/M", &[], u64::MAX).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    let msg = e.to_string();
    assert!(
        msg.contains("GRPCRoute shop/r rule 0")
            && msg.contains("shop/missing:50051")
            && msg.contains("BackendNotFound"),
        "{msg}"
    );
    let resolved = &s.statuses[0].parents[0].conditions[1];
    assert_eq!(
        (resolved.status, resolved.reason.as_str()),
        (ConditionStatus::False, "BackendNotFound")
    );
}

#[test]
fn weight_zero_takes_no_share_even_when_invalid() {
    let r = base("shop").with(
        route("shop", "r").parent_service("front", None).rule(
            Rule::new()
                .backend(Backend::service("a", 50051).weight(70))
                .backend(Backend::service("b", 50051).weight(30))
                .backend(Backend::service("nonexistent", 50051).weight(0)),
        ),
    );
    let s = snapshot(&r);
    for i in 0..1000u64 {
        let random = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let backend = route_with(&s, "shop", "front:50051", "/p.S/M", &[], random).unwrap();
        assert_ne!(backend, to("shop", "nonexistent"));
    }
}

#[test]
fn all_weights_zero_is_unavailable() {
    let r = base("shop").with(
        route("shop", "r").parent_service("front", None).rule(
            Rule::new()
                .backend(Backend::service("a", 50051).weight(0))
                .backend(Backend::service("b", 50051).weight(0)),
        ),
    );
    let e = route_call(&snapshot(&r), "shop", "front:50051", "/p.S/M", &[]).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(matches!(e, CallError::AllWeightsZero { .. }));
}

#[test]
fn invalid_kind_and_missing_port_are_invalid_backends() {
    let mut r = route("shop", "r")
        .parent_service("front", None)
        .rule(Rule::new().backend(Backend::service("a", 50051)))
        .rule(
            Rule::new()
                .matches(Match::method("p.S", "Port"))
                .backend(Backend::service("a", 1)),
        )
        .build();
    let rules = r.spec.rules.as_mut().unwrap();
    rules[0].backend_refs.as_mut().unwrap()[0].kind = Some("ServiceImport".into());
    rules[0].backend_refs.as_mut().unwrap()[0].group = Some("multicluster.x-k8s.io".into());
    let s = snapshot(&base("shop").with(r));
    let e = route_call(&s, "shop", "front:50051", "/p.S/M", &[]).unwrap_err();
    assert!(
        matches!(
            e,
            CallError::InvalidBackend {
                reason: "InvalidKind",
                ..
            }
        ),
        "{e}"
    );
    let e = route_call(&s, "shop", "front:50051", "/p.S/Port", &[]).unwrap_err();
    assert!(
        matches!(
            e,
            CallError::InvalidBackend {
                reason: "BackendNotFound",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("has no port 1"), "{e}");
}

#[test]
fn backend_without_ready_endpoints_has_none_to_offer() {
    let r = Resources::new()
        .with(service("shop", "front").port("grpc", 50051))
        .with(
            endpoints("shop", "front")
                .port("grpc", 9000)
                .not_ready(ip("10.1.0.1")),
        );
    assert!(passthrough_endpoints(&r, "front:50051", "shop").is_empty());
}

#[test]
fn weighted_split_is_statistically_exact() {
    use rand::{Rng, SeedableRng};
    let r = base("shop").with(
        route("shop", "r").parent_service("front", None).rule(
            Rule::new()
                .backend(Backend::service("a", 50051).weight(90))
                .backend(Backend::service("b", 50051).weight(10)),
        ),
    );
    let s = snapshot(&r);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(42);
    let n = 100_000u32;
    let mut a = 0u32;
    for _ in 0..n {
        if route_with(&s, "shop", "front:50051", "/p.S/M", &[], rng.next_u64()).unwrap()
            == to("shop", "a")
        {
            a += 1;
        }
    }
    let (p, n) = (0.9, f64::from(n));
    let sd = (n * p * (1.0 - p)).sqrt();
    assert!((f64::from(a) - n * p).abs() < 5.0 * sd, "{a} of {n}");
}

// --- 7. backends ---------------------------------------------------------------------------

#[test]
fn endpoints_come_from_slices_by_port_name_ready_first_then_terminating() {
    let r = Resources::new()
        .with(
            service("shop", "s")
                .port("grpc", 50051)
                .port("metrics", 9090),
        )
        .with(
            endpoints("shop", "s")
                .name("s-1")
                .port("grpc", 8443)
                .port("metrics", 9100)
                .ready(ip("10.1.0.1")),
        )
        .with(
            endpoints("shop", "s")
                .name("s-2")
                .port("grpc", 8443)
                .terminating(ip("10.1.0.2"))
                .not_ready(ip("10.1.0.3")),
        );
    let target = |port| passthrough_endpoints(&r, &format!("s.shop:{port}"), "x");
    assert_eq!(
        target(50051),
        ["10.1.0.1:8443"],
        "ready only; target port by port name"
    );
    assert_eq!(target(9090), ["10.1.0.1:9100"]);

    // No ready endpoint left: the terminating-but-serving one takes calls (as kube-proxy does).
    let r = Resources::new()
        .with(service("shop", "s").port("grpc", 50051))
        .with(
            endpoints("shop", "s")
                .port("grpc", 8443)
                .terminating(ip("10.1.0.2"))
                .not_ready(ip("10.1.0.3")),
        );
    assert_eq!(
        passthrough_endpoints(&r, "s.shop:50051", "x"),
        ["10.1.0.2:8443"]
    );
}

#[test]
fn a_backend_ref_to_the_parent_service_uses_its_endpoints_without_looping() {
    let r = base("shop").with(
        route("shop", "r").parent_service("front", None).rule(
            Rule::new()
                .matches(Match::method("p.S", "M"))
                .backend(Backend::service("front", 50051)),
        ),
    );
    let s = snapshot(&r);
    assert_eq!(
        route_call(&s, "shop", "front:50051", "/p.S/M", &[]).unwrap(),
        to("shop", "front")
    );
    // The route still applies to the frontend: other methods are rejected, not forwarded.
    assert_eq!(
        route_call(&s, "shop", "front:50051", "/p.S/Other", &[])
            .unwrap_err()
            .code(),
        Code::Unimplemented
    );
}

// --- 8. filters ------------------------------------------------------------------------------

#[test]
fn extension_ref_filters_fail_the_rule_and_are_reported() {
    use gateway_api::grpcroutes::{
        GrpcRouteRulesFilters, GrpcRouteRulesFiltersExtensionRef, GrpcRouteRulesFiltersType,
    };
    let mut r = route("shop", "r")
        .parent_service("front", None)
        .rule(
            Rule::new()
                .matches(Match::method("p.S", "Ext"))
                .backend(Backend::service("a", 50051)),
        )
        .rule(Rule::new().backend(Backend::service("b", 50051)))
        .build();
    r.spec.rules.as_mut().unwrap()[0].filters = Some(vec![GrpcRouteRulesFilters {
        r#type: GrpcRouteRulesFiltersType::ExtensionRef,
        extension_ref: Some(GrpcRouteRulesFiltersExtensionRef {
            group: "example.com".into(),
            kind: "Auth".into(),
            name: "strict".into(),
        }),
        ..Default::default()
    }]);
    let s = snapshot(&base("shop").with(r));
    let e = route_call(&s, "shop", "front:50051", "/p.S/Ext", &[]).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.to_string().contains("not supported"), "{e}");
    assert_eq!(
        route_call(&s, "shop", "front:50051", "/p.S/Other", &[]).unwrap(),
        to("shop", "b")
    );
    let accepted = &s.statuses[0].parents[0].conditions[0];
    assert_eq!(
        accepted.status,
        ConditionStatus::True,
        "one rule still works"
    );
    assert!(
        accepted.message.contains("UNAVAILABLE"),
        "{}",
        accepted.message
    );
}

// --- 9. reference grants --------------------------------------------------------------------------

#[test]
fn cross_namespace_backends_need_a_grant_only_in_strict_mode() {
    let r = base("shop")
        .with(service("web", "w").port("grpc", 50051))
        .with(
            route("web", "r")
                .parent_service("w", None)
                .rule(Rule::new().backend(Backend::service("a", 50051).namespace("shop"))),
        );
    assert_eq!(
        route_call(&snapshot(&r), "web", "w:50051", "/p.S/M", &[]).unwrap(),
        to("shop", "a"),
        "GEP-1294: no grant needed"
    );

    let strict = compile_with(&r, GrantPolicy::Strict);
    let e = route_call(&strict, "web", "w:50051", "/p.S/M", &[]).unwrap_err();
    assert!(
        matches!(
            e,
            CallError::InvalidBackend {
                reason: "RefNotPermitted",
                ..
            }
        ),
        "{e}"
    );

    let granted = r.clone().with(grant("shop", "allow-web", "web", Some("a")));
    assert_eq!(
        route_call(
            &compile_with(&granted, GrantPolicy::Strict),
            "web",
            "w:50051",
            "/p.S/M",
            &[]
        )
        .unwrap(),
        to("shop", "a")
    );
    // A grant for another Service, or from another namespace, does not count.
    let wrong = r
        .clone()
        .with(grant("shop", "allow-b", "web", Some("b")))
        .with(grant("shop", "allow-x", "x", None));
    assert!(
        route_call(
            &compile_with(&wrong, GrantPolicy::Strict),
            "web",
            "w:50051",
            "/p.S/M",
            &[]
        )
        .is_err()
    );
    let all = r.with(grant("shop", "allow-all", "web", None));
    assert!(
        route_call(
            &compile_with(&all, GrantPolicy::Strict),
            "web",
            "w:50051",
            "/p.S/M",
            &[]
        )
        .is_ok()
    );
}

// --- 10. invalid objects --------------------------------------------------------------------------

#[test]
fn an_invalid_route_is_rejected_alone_and_reported() {
    let bad = route("shop", "bad")
        .parent_service("front", None)
        .rule(rule_to(Match::regex(Some("("), None), "b"));
    let good = route("shop", "good")
        .parent_service("front", None)
        .rule(rule_to(Match::method("p.S", "M"), "a"));
    let s = snapshot(&base("shop").with(bad).with(good));
    assert_eq!(
        route_call(&s, "shop", "front:50051", "/p.S/M", &[]).unwrap(),
        to("shop", "a")
    );
    assert_eq!(s.rejected.len(), 1);
    assert_eq!(
        s.rejected[0].field(),
        "spec.rules[0].matches[0].method.service"
    );
    let bad_status = s
        .statuses
        .iter()
        .find(|st| st.route.name() == "bad")
        .unwrap();
    let accepted = &bad_status.parents[0].conditions[0];
    assert_eq!(
        (accepted.status, accepted.reason.as_str()),
        (ConditionStatus::False, "UnsupportedValue")
    );
    assert!(
        accepted
            .message
            .contains("spec.rules[0].matches[0].method.service")
    );
}

#[test]
fn status_reports_accepted_and_resolved_refs() {
    let r = base("shop").with(
        route("shop", "r")
            .parent_service("front", Some(50051))
            .rule(Rule::new().backend(Backend::service("a", 50051))),
    );
    let s = snapshot(&r);
    assert_eq!(s.statuses.len(), 1);
    let parent = &s.statuses[0].parents[0];
    assert_eq!(parent.parent_ref.kind, "Service");
    assert_eq!(parent.parent_ref.port, Some(50051));
    let c: Vec<_> = parent
        .conditions
        .iter()
        .map(|c| (c.type_, c.status, c.reason.as_str()))
        .collect();
    assert_eq!(
        c,
        [
            ("Accepted", ConditionStatus::True, "Accepted"),
            ("ResolvedRefs", ConditionStatus::True, "ResolvedRefs")
        ]
    );
}

#[test]
fn a_table_reaches_the_call_series_of_its_frontends_rules_and_backends() {
    use crate::{BackendService, series::ServiceSeries as SeriesKey};
    let r = base("shop").with(
        route("shop", "r")
            .parent_service("front", Some(50051))
            .rule(Rule::new().backend(Backend::service("a", 50051))),
    );
    let s = snapshot(&r);
    let front = Some((ObjectKey::new("shop", "front"), 50051));
    let key =
        |frontend: Option<(ObjectKey, u16)>, rule: Option<(&str, usize)>, backend: Option<&str>| {
            SeriesKey {
                frontend,
                rule: rule.map(|(name, i)| (ObjectKey::new("shop", name), i)),
                backend: backend.map(|name| BackendService {
                    service: ObjectKey::new("shop", name),
                    port: Some(50051),
                }),
            }
        };
    assert!(s.reaches(&key(front.clone(), Some(("r", 0)), Some("a"))));
    assert!(
        s.reaches(&key(front.clone(), Some(("r", 0)), None)),
        "the rule's own refusals"
    );
    assert!(
        s.reaches(&key(front.clone(), None, None)),
        "unmatched calls"
    );
    assert!(
        !s.reaches(&key(front.clone(), Some(("r", 0)), Some("b"))),
        "not a backend of the rule"
    );
    assert!(
        !s.reaches(&key(front.clone(), Some(("r", 1)), None)),
        "no such rule"
    );
    assert!(
        !s.reaches(&key(front.clone(), Some(("other", 0)), None)),
        "no such route"
    );
    assert!(
        !s.reaches(&key(Some((ObjectKey::new("shop", "front"), 1)), None, None)),
        "no such port"
    );
    assert!(!s.reaches(&key(
        Some((ObjectKey::new("shop", "gone"), 50051)),
        None,
        None
    )));
    assert!(s.reaches(&key(None, None, None)), "unrouted calls");
}

// --- 11. incremental compilation -----------------------------------------------------------

/// Everything calls and statuses can observe of a table, in a canonical order: every
/// frontend with its route sets (candidates in order, their matches, rules, backends with
/// their slots and weights, filters), pass-through slots, Cluster IPs, the backend of
/// every slot, statuses and rejected objects.
fn observe(t: &Table) -> String {
    use std::fmt::Write as _;
    fn set(out: &mut String, name: &str, s: &RouteSet) {
        let _ = writeln!(out, "  {name} {:?} [{}]", s.kind, s.routes_label);
        let mut by_service: Vec<_> = s.by_service.iter().collect();
        by_service.sort_by(|a, b| a.0.cmp(b.0));
        let lists = std::iter::once(("*", &s.generic))
            .chain(by_service.into_iter().map(|(k, v)| (&**k, v)));
        for (service, candidates) in lists {
            let _ = writeln!(out, "   {service}:");
            for c in candidates.iter() {
                let _ = writeln!(
                    out,
                    "    {:?} indexed={} slots={} {:?} cumulative={:?}",
                    c.matcher,
                    c.service_indexed,
                    c.series.backends.len(),
                    c.rule,
                    c.rule.cumulative
                );
            }
        }
    }
    let mut out = String::new();
    let mut services: Vec<_> = t.services.values().flat_map(|m| m.values()).collect();
    services.sort_by(|a, b| a.key.cmp(&b.key));
    for s in services {
        for (port, f) in &s.ports {
            let _ = writeln!(
                out,
                "{}:{port} ({}:{}) passthrough {:?}",
                s.key, f.service, f.port, f.passthrough
            );
            if let Some(p) = &f.producer {
                set(&mut out, "producer", p);
            }
            let mut consumers: Vec<_> = f.consumers.iter().collect();
            consumers.sort_by(|a, b| a.0.cmp(b.0));
            for (ns, c) in consumers {
                set(&mut out, &format!("consumer {ns}"), c);
            }
        }
    }
    let mut ips: Vec<_> = t.cluster_ips.iter().collect();
    ips.sort();
    let _ = writeln!(out, "cluster IPs {ips:?}");
    let _ = writeln!(out, "backends {:?}", t.backends);
    let _ = writeln!(out, "statuses {:#?}", t.statuses);
    let _ = writeln!(out, "rejected {:?}", t.rejected);
    out
}

/// A small deterministic generator, so a failure names the step that caused it.
struct Steps(u64);

impl Steps {
    fn next(&mut self, n: u64) -> u64 {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A route whose parent, matches, backends and filters all follow from `seed`: producer
/// and consumer routes, unknown ports and Services, cross-namespace backends, mirrors.
fn varied_route(ns: &str, name: &str, seed: u64) -> GrpcRoute {
    let pick = |shift: u32, n: u64| (seed >> shift) % n;
    let parent_port = [None, Some(50051), Some(50052), Some(50053)][pick(0, 4) as usize];
    let mut r = if pick(2, 3) == 0 && ns == "web" {
        route(ns, name).parent_service_in("shop", "front", parent_port)
    } else {
        route(ns, name).parent_service(["front", "front2"][pick(4, 2) as usize], parent_port)
    };
    let matches = [
        Match::method("p.S", "A"),
        Match::method("p.S", "B"),
        Match::service("p.S"),
        Match::any(),
        Match::method("p.T", "A").header("x-tier", "gold"),
        Match::regex(Some("p\\..*"), None),
    ];
    let backend = |shift: u32| {
        Backend::service(
            ["a", "b", "c", "gone"][pick(shift, 4) as usize],
            [50051, 50051, 50052, 9999][pick(shift + 2, 4) as usize],
        )
        .namespace(["shop", "web"][pick(shift + 4, 2) as usize])
        .weight(pick(shift + 5, 3) as u32)
    };
    let mut first = Rule::new()
        .matches(matches[pick(8, 6) as usize].clone())
        .backend(backend(11));
    if pick(17, 2) == 0 {
        first = first.backend(backend(18));
    }
    r = r.rule(first);
    if pick(24, 2) == 0 {
        let mut second = Rule::new()
            .name("second")
            .matches(matches[pick(25, 6) as usize].clone())
            .backend(backend(28));
        if pick(35, 2) == 0 {
            second = second.mirror(["b", "c", "gone"][pick(36, 3) as usize], 50051, 50);
        }
        if pick(38, 2) == 0 {
            second = second.set_request_header("x-from", name);
        }
        r = r.rule(second);
    }
    r.build()
}

/// The configuration a step of the incremental test compiles.
#[derive(Clone)]
struct World {
    routes: Vec<(&'static str, String, u64)>,
    extra_port: bool,
    b_protocol: Option<&'static str>,
    with_c: bool,
    grants: Vec<(&'static str, String, &'static str, Option<&'static str>)>,
    policy: GrantPolicy,
}

impl World {
    fn resources(&self) -> Resources {
        let mut r = Resources::new();
        for (ns, names) in [
            ("shop", &["front", "front2", "a", "b", "c"][..]),
            ("web", &["w", "a", "b"][..]),
        ] {
            for (i, name) in names.iter().enumerate() {
                if *name == "c" && !self.with_c {
                    continue;
                }
                let mut s = service(ns, name)
                    .cluster_ip(&format!("10.96.{}.{}", ns.len(), i + 1))
                    .port("grpc", 50051);
                if self.extra_port && *name == "a" {
                    s = s.port("extra", 50052);
                }
                let mut s = s.build();
                if *name == "b"
                    && let Some(p) = self.b_protocol
                {
                    s.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].app_protocol =
                        Some(p.into());
                }
                r.push(s);
            }
        }
        for (ns, name, seed) in &self.routes {
            r.push(varied_route(ns, name, *seed));
        }
        for (ns, name, from, to) in &self.grants {
            r.push(grant(ns, name, from, *to));
        }
        r
    }
}

#[test]
fn an_incremental_compile_gives_the_table_a_fresh_compile_gives() {
    for seed in [1u64, 7, 42, 1234] {
        let mut steps = Steps(0x9e37_79b9_7f4a_7c15 ^ seed);
        let mut world = World {
            routes: (0..8)
                .map(|i| {
                    (
                        ["shop", "web"][i % 2],
                        format!("r{i}"),
                        steps.next(u64::MAX),
                    )
                })
                .collect(),
            extra_port: false,
            b_protocol: None,
            with_c: true,
            grants: Vec::new(),
            policy: GrantPolicy::Permissive,
        };
        let mut previous = compile(&world.resources().to_model(), world.policy, None);
        let mut names = world.routes.len();
        for step in 0..150 {
            let what = match steps.next(10) {
                0..=2 if !world.routes.is_empty() => {
                    let i = steps.next(world.routes.len() as u64) as usize;
                    world.routes[i].2 = steps.next(u64::MAX);
                    "route edited"
                }
                3 => {
                    names += 1;
                    let ns = ["shop", "web"][steps.next(2) as usize];
                    world
                        .routes
                        .push((ns, format!("r{names}"), steps.next(u64::MAX)));
                    "route added"
                }
                4 if !world.routes.is_empty() => {
                    let i = steps.next(world.routes.len() as u64) as usize;
                    world.routes.remove(i);
                    "route removed"
                }
                5 => {
                    world.extra_port = !world.extra_port;
                    "Service port added or removed"
                }
                6 => {
                    world.b_protocol = match world.b_protocol {
                        None => Some("http"),
                        Some(_) => None,
                    };
                    "appProtocol changed"
                }
                7 => {
                    if world.grants.is_empty() || steps.next(2) == 0 {
                        let to = [None, Some("a"), Some("b")][steps.next(3) as usize];
                        let ns = ["shop", "web"][steps.next(2) as usize];
                        let from = if ns == "shop" { "web" } else { "shop" };
                        world.grants.push((ns, format!("g{step}"), from, to));
                        "grant added"
                    } else {
                        world.grants.remove(0);
                        "grant removed"
                    }
                }
                8 => {
                    if steps.next(2) == 0 {
                        world.with_c = !world.with_c;
                        "Service removed or added"
                    } else {
                        world.policy = match world.policy {
                            GrantPolicy::Permissive => GrantPolicy::Strict,
                            GrantPolicy::Strict => GrantPolicy::Permissive,
                        };
                        "policy changed"
                    }
                }
                _ => "nothing changed",
            };
            let model = world.resources().to_model();
            let fresh = compile(&model, world.policy, None);
            let incremental = compile(&model, world.policy, Some(&previous));
            assert_eq!(
                observe(&incremental),
                observe(&fresh),
                "seed {seed}, step {step}: {what}"
            );
            previous = incremental;
        }
    }
}

/// The rules of the route `name` in `t`, by their place in memory.
fn rules_of(t: &Table, name: &str) -> Vec<*const CompiledRule> {
    t.memo
        .routes
        .values()
        .find(|m| m.route.key.name() == name)
        .map(|m| m.rules.iter().map(Arc::as_ptr).collect())
        .unwrap_or_default()
}

fn frontend_of(t: &Table, service: &str) -> Arc<Frontend> {
    t.service("shop", service)
        .and_then(|s| s.frontend(50051))
        .cloned()
        .unwrap()
}

#[test]
fn a_route_change_compiles_that_route_and_its_frontend_only() {
    let world = |b_weight: u32| {
        base("shop")
            .with(service("shop", "front2").port("grpc", 50051))
            .with(
                route("shop", "one")
                    .parent_service("front", None)
                    .rule(Rule::new().backend(Backend::service("a", 50051).weight(b_weight))),
            )
            .with(
                route("shop", "two")
                    .parent_service("front2", None)
                    .rule(Rule::new().backend(Backend::service("b", 50051))),
            )
    };
    let first = compile(&world(1).to_model(), GrantPolicy::Permissive, None);
    let second = compile(&world(2).to_model(), GrantPolicy::Permissive, Some(&first));
    assert_eq!(
        rules_of(&first, "two"),
        rules_of(&second, "two"),
        "the unchanged route's rules are reused"
    );
    assert!(Arc::ptr_eq(
        &frontend_of(&first, "front2"),
        &frontend_of(&second, "front2")
    ));
    assert_ne!(rules_of(&first, "one"), rules_of(&second, "one"));
    assert!(!Arc::ptr_eq(
        &frontend_of(&first, "front"),
        &frontend_of(&second, "front")
    ));
    assert_eq!(
        second
            .statuses
            .iter()
            .map(|s| s.route.name())
            .collect::<Vec<_>>(),
        ["one", "two"]
    );

    // A change to what rules resolve against (here the policy) reuses nothing.
    let strict = compile(&world(2).to_model(), GrantPolicy::Strict, Some(&second));
    assert_ne!(rules_of(&second, "two"), rules_of(&strict, "two"));
    assert!(!Arc::ptr_eq(
        &frontend_of(&second, "front2"),
        &frontend_of(&strict, "front2")
    ));
}
