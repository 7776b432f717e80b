//! `explain` predicts what a real call gets: for random configurations and random calls,
//! the outcome and status `explain` gives, and the backends it says a call can reach, agree
//! with a real call over loopback (its gRPC code and the backend it reached, from
//! `RoutedTo`). Weighted picks are random, so a forwarded call must land on one of the
//! backends `explain` gives a share, failing exactly when that backend's share fails.

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use bytes::Bytes;
use gateway_api::grpcroutes::{
    GrpcRouteRulesBackendRefsFilters, GrpcRouteRulesBackendRefsFiltersExtensionRef,
    GrpcRouteRulesBackendRefsFiltersType, GrpcRouteRulesFilters, GrpcRouteRulesFiltersExtensionRef,
    GrpcRouteRulesFiltersType,
};
use grpcroute_client::{
    CallDescription, Mesh, Resources, RoutedTo,
    build::{Backend, Match, Rule, endpoints, route, service},
};
use grpcroute_echo::{EchoConfig, EchoServer};
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use rand::{RngExt, SeedableRng, rngs::SmallRng};
use tonic::{Code, body::Body};
use tower::ServiceExt;

const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
const CONFIGS: u64 = 60;
const CALLS_PER_CONFIG: usize = 16;
const METHODS: [&str; 5] = [
    "/pkg.S/M0",
    "/pkg.S/M1",
    "/pkg.S/M2",
    "/pkg.Other/M0",
    "/other.S/M9",
];

/// Backend Services `b0`..`b3`, each with one echo server; `b4` has no endpoints; `gone`
/// does not exist.
const BACKENDS: [&str; 6] = ["b0", "b1", "b2", "b3", "b4", "gone"];

fn extension_ref() -> GrpcRouteRulesFilters {
    GrpcRouteRulesFilters {
        r#type: GrpcRouteRulesFiltersType::ExtensionRef,
        extension_ref: Some(GrpcRouteRulesFiltersExtensionRef {
            group: "example.com".into(),
            kind: "Plugin".into(),
            name: "p".into(),
        }),
        ..Default::default()
    }
}

fn backend_extension_ref() -> GrpcRouteRulesBackendRefsFilters {
    GrpcRouteRulesBackendRefsFilters {
        r#type: GrpcRouteRulesBackendRefsFiltersType::ExtensionRef,
        extension_ref: Some(GrpcRouteRulesBackendRefsFiltersExtensionRef {
            group: "example.com".into(),
            kind: "Plugin".into(),
            name: "p".into(),
        }),
        ..Default::default()
    }
}

/// A random route on `app/front` (or none at all, for pass-through).
fn config(rng: &mut SmallRng, servers: &[EchoServer]) -> Resources {
    let mut r = Resources::new().with(service("app", "front").port("grpc", 50051));
    r = r.with(
        endpoints("app", "front")
            .port("grpc", servers[4].addr().port())
            .ready(LOCALHOST),
    );
    for (i, name) in BACKENDS.iter().enumerate().take(5) {
        r = r.with(service("app", name).port("grpc", 50051));
        if i < 4 {
            r = r.with(
                endpoints("app", name)
                    .port("grpc", servers[i].addr().port())
                    .ready(LOCALHOST),
            );
        }
    }
    if rng.random_range(0..8) == 0 {
        return r;
    }
    let mut builder = route("app", "random").parent_service("front", Some(50051));
    let rules = rng.random_range(1..=4);
    for _ in 0..rules {
        let mut rule = Rule::new();
        for _ in 0..rng.random_range(0..=2) {
            let mut m = match rng.random_range(0..4) {
                0 => Match::service("pkg.S"),
                1 => Match::method("pkg.S", &format!("M{}", rng.random_range(0..3))),
                2 => Match::method_of_any_service("M0"),
                _ => Match::regex(Some("pkg\\..*"), None),
            };
            if rng.random_bool(0.4) {
                let v = format!("v{}", rng.random_range(0..2));
                m = if rng.random_bool(0.5) {
                    m.header("x-k", &v)
                } else {
                    m.header_regex("x-k", "v[0-9]")
                };
            }
            rule = rule.matches(m);
        }
        if rng.random_bool(0.3) {
            rule = rule.set_request_header("x-rule", "set");
        }
        for _ in 0..rng.random_range(0..=3) {
            let name = BACKENDS[rng.random_range(0..BACKENDS.len())];
            let mut b = Backend::service(name, 50051).weight(rng.random_range(0..3));
            if rng.random_bool(0.3) {
                b = b.add_request_header("x-backend", name);
            }
            rule = rule.backend(b);
        }
        builder = builder.rule(rule);
    }
    let mut built = builder.build();
    // Filters no client can apply: a rule's (its calls fail) and a backendRef's (its share
    // fails), neither ever skipped.
    for rule in built.spec.rules.iter_mut().flatten() {
        if rng.random_range(0..10) == 0 {
            rule.filters
                .get_or_insert_with(Vec::new)
                .push(extension_ref());
        }
        for b in rule.backend_refs.iter_mut().flatten() {
            if rng.random_range(0..4) == 0 {
                b.filters
                    .get_or_insert_with(Vec::new)
                    .push(backend_extension_ref());
            }
        }
    }
    r.with(built)
}

fn request(path: &str, headers: &HeaderMap) -> Request<Body> {
    let mut req = Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Body::new(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0]))))
        .unwrap();
    req.headers_mut().extend(headers.clone());
    req
}

/// A real call: its code and where the mesh says it went.
async fn real_call(mesh: &Mesh, path: &str, headers: &HeaderMap) -> (Code, RoutedTo) {
    let channel = mesh.channel("front.app:50051").unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        let response = channel.oneshot(request(path, headers)).await.unwrap();
        let routed = response.extensions().get::<RoutedTo>().cloned().unwrap();
        if let Some(s) = tonic::Status::from_header_map(response.headers()) {
            return (s.code(), routed);
        }
        let body = response.into_body().collect().await;
        let code = match body {
            Ok(b) => b
                .trailers()
                .and_then(tonic::Status::from_header_map)
                .map_or(Code::Unknown, |s| s.code()),
            Err(s) => s.code(),
        };
        (code, routed)
    })
    .await
    .expect("the call ends")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_agrees_with_real_calls() {
    let mut servers = Vec::new();
    for i in 0..5 {
        servers.push(
            EchoServer::start(EchoConfig::new(format!("s{i}")))
                .await
                .unwrap(),
        );
    }
    let mut checked = 0;
    for seed in 0..CONFIGS {
        let mut rng = SmallRng::seed_from_u64(seed);
        let resources = config(&mut rng, &servers);
        let mesh = Mesh::builder()
            .namespace("app")
            .report_routing(true)
            .seed(seed)
            .build();
        mesh.update(&resources);
        for _ in 0..CALLS_PER_CONFIG {
            let path = METHODS[rng.random_range(0..METHODS.len())];
            let mut headers = HeaderMap::new();
            match rng.random_range(0..3) {
                0 => {}
                n => {
                    headers.insert(
                        "x-k",
                        HeaderValue::from_str(&format!("v{}", n - 1)).unwrap(),
                    );
                }
            }
            let e = mesh.explain(&CallDescription {
                target: "front.app:50051".into(),
                path: path.into(),
                metadata: headers.clone(),
                client_namespace: None,
            });
            let (code, routed) = real_call(&mesh, path, &headers).await;
            let context = format!(
                "seed {seed}, {path} {headers:?}: explain {e:#?}, real {code:?} {routed:?}"
            );
            let reached = routed
                .backend
                .as_ref()
                .map(|b| b.service.name().to_string());
            let usable: BTreeSet<String> = e
                .backends
                .iter()
                .filter(|b| b.weight > 0 && b.valid && b.reason.is_none())
                .filter_map(|b| b.service.clone())
                .collect();
            let failing: BTreeSet<String> = e
                .backends
                .iter()
                .filter(|b| b.weight > 0 && (!b.valid || b.reason.is_some()))
                .filter_map(|b| b.service.clone())
                .collect();
            match e.outcome {
                "unimplemented" => assert_eq!(code, Code::Unimplemented, "{context}"),
                "unavailable" => assert_eq!(code, Code::Unavailable, "{context}"),
                "passthrough" => {
                    assert_eq!(code, Code::Ok, "{context}");
                    assert_eq!(reached.as_deref(), Some("front"), "{context}");
                }
                "forward" => {
                    assert!(
                        !usable.is_empty(),
                        "explain says forward, but none of its backends can take calls: {context}"
                    );
                    let b = reached.clone().expect("a forwarded call names its backend");
                    if code == Code::Ok {
                        assert!(
                            usable.contains(&b),
                            "reached a backend explain gives no usable share: {context}"
                        );
                    } else {
                        assert_eq!(code, Code::Unavailable, "{context}");
                        assert!(
                            failing.contains(&b),
                            "failed on a backend explain says can take calls: {context}"
                        );
                    }
                }
                other => panic!("outcome {other}: {context}"),
            }
            // What a backend that took the call received is what explain lists for it (a
            // rule may name a Service twice, with different filters: one of them).
            if code == Code::Ok
                && e.outcome == "forward"
                && let Some(server) = BACKENDS
                    .iter()
                    .position(|n| Some(*n) == reached.as_deref())
                    .and_then(|i| servers.get(i))
            {
                let got = server.received().last().cloned().unwrap();
                let metadata = |headers: &std::collections::BTreeMap<String, Vec<String>>| {
                    headers
                        .iter()
                        .filter(|(n, _)| n.starts_with("x-"))
                        .map(|(n, v)| (n.clone(), v.clone()))
                        .collect::<Vec<_>>()
                };
                let mut seen: std::collections::BTreeMap<String, Vec<String>> = Default::default();
                for (name, value) in &got.headers {
                    seen.entry(name.as_str().to_string())
                        .or_default()
                        .push(value.to_str().unwrap().to_string());
                }
                let seen = metadata(&seen);
                assert!(
                    e.backends
                        .iter()
                        .filter(|b| b.service == reached)
                        .any(|b| metadata(&b.request_headers) == seen),
                    "the backend received {seen:?}: {context}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, CONFIGS as usize * CALLS_PER_CONFIG);
}
