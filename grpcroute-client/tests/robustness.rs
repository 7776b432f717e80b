//! No input makes the library panic: thousands of random (mostly invalid) GRPCRoutes,
//! Services and EndpointSlices, and random calls against whatever the mesh made of them,
//! plus random bytes as manifests. Invalid objects must be rejected one by one, never
//! take the process down. Seeded, so a failure reproduces.

use grpcroute_client::{CallDescription, Mesh, Resources};
use http::{HeaderMap, HeaderName, HeaderValue};
use rand::{Rng, RngExt, SeedableRng, rngs::SmallRng};
use serde_json::{Value, json};

const NAMES: &[&str] = &["front", "a", "b", "", "A", "x.y", "ns", "-bad", "echo-v1"];
const STRINGS: &[&str] = &[
    "pkg.Svc",
    "Get",
    ".pkg.Svc",
    "pkg/Svc",
    "(",
    "a{5}{5}{5}{5}{5}{5}{5}",
    ".*",
    "",
    "é",
    "x-a",
    "X-A",
    ":authority",
    "x-token-bin",
    "grpc-timeout",
    "\u{0}",
    "a|b",
    "[",
    "Service",
    "Gateway",
];

fn pick<'a>(rng: &mut SmallRng, items: &'a [&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

/// `v`, or (when `keep` is false) a missing field.
fn maybe(keep: bool, v: Value) -> Value {
    if keep { v } else { Value::Null }
}

fn number(rng: &mut SmallRng) -> Value {
    match rng.random_range(0..6) {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(70_000),
        3 => json!(1_000_001),
        4 => json!(rng.random_range(1..=65_535)),
        _ => json!(50051),
    }
}

fn route(rng: &mut SmallRng) -> Value {
    let rules: Vec<Value> = (0..rng.random_range(0..4))
        .map(|_| {
            let matches: Vec<Value> = (0..rng.random_range(0..3))
                .map(|_| {
                    json!({
                        "method": maybe(rng.random_bool(0.8), json!({
                            "type": if rng.random_bool(0.5) { "Exact" } else { "RegularExpression" },
                            "service": maybe(rng.random_bool(0.8), json!(pick(rng, STRINGS))),
                            "method": maybe(rng.random_bool(0.8), json!(pick(rng, STRINGS))),
                        })),
                        "headers": (0..rng.random_range(0..3)).map(|_| json!({
                            "name": pick(rng, STRINGS),
                            "value": pick(rng, STRINGS),
                            "type": if rng.random_bool(0.5) { "Exact" } else { "RegularExpression" },
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let filter_types = ["RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "ExtensionRef"];
            let filters: Vec<Value> = (0..rng.random_range(0..3))
                .map(|_| {
                    let t = filter_types[rng.random_range(0..4)];
                    let headers = json!({"set": [{"name": pick(rng, STRINGS), "value": pick(rng, STRINGS)}],
                                         "add": [{"name": pick(rng, STRINGS), "value": "v"}],
                                         "remove": [pick(rng, STRINGS)]});
                    json!({
                        "type": t,
                        "requestHeaderModifier": if t == "RequestHeaderModifier" || rng.random_bool(0.1) { headers.clone() } else { Value::Null },
                        "responseHeaderModifier": if t == "ResponseHeaderModifier" { headers } else { Value::Null },
                        "requestMirror": if t == "RequestMirror" { json!({"backendRef": {"name": pick(rng, NAMES), "port": number(rng)}, "percent": maybe(rng.random_bool(0.8), number(rng))}) } else { Value::Null },
                        "extensionRef": if t == "ExtensionRef" { json!({"group": "x", "kind": "Y", "name": "z"}) } else { Value::Null },
                    })
                })
                .collect();
            let backends: Vec<Value> = (0..rng.random_range(0..4))
                .map(|_| {
                    json!({
                        "name": pick(rng, NAMES),
                        "namespace": maybe(rng.random_bool(0.8), json!(pick(rng, NAMES))),
                        "kind": maybe(rng.random_bool(0.8), json!(pick(rng, STRINGS))),
                        "group": maybe(rng.random_bool(0.8), json!(pick(rng, &["", "core", "x.io"]))),
                        "port": maybe(rng.random_bool(0.8), number(rng)),
                        "weight": maybe(rng.random_bool(0.8), number(rng)),
                    })
                })
                .collect();
            json!({"name": maybe(rng.random_bool(0.8), json!(pick(rng, NAMES))), "matches": matches, "filters": filters, "backendRefs": backends})
        })
        .collect();
    let parents: Vec<Value> = (0..rng.random_range(0..3))
        .map(|_| {
            json!({
                "group": maybe(rng.random_bool(0.8), json!(pick(rng, &["", "gateway.networking.k8s.io", "core"]))),
                "kind": maybe(rng.random_bool(0.8), json!(pick(rng, &["Service", "Gateway", "Other"]))),
                "name": pick(rng, NAMES),
                "namespace": maybe(rng.random_bool(0.8), json!(pick(rng, NAMES))),
                "port": maybe(rng.random_bool(0.8), number(rng)),
                "sectionName": maybe(rng.random_bool(0.8), json!(pick(rng, &["grpc", "other", ""]))),
            })
        })
        .collect();
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GRPCRoute",
        "metadata": {"name": pick(rng, NAMES), "namespace": maybe(rng.random_bool(0.8), json!(pick(rng, NAMES)))},
        "spec": {"parentRefs": parents, "hostnames": ["x.example.com"], "rules": rules},
    })
}

fn service(rng: &mut SmallRng) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": pick(rng, NAMES), "namespace": "ns"},
        "spec": {
            "type": maybe(rng.random_bool(0.8), json!(pick(rng, &["ClusterIP", "ExternalName", "NodePort", "Weird"]))),
            "clusterIP": maybe(rng.random_bool(0.8), json!(pick(rng, &["10.0.0.1", "None", "not-an-ip", ""]))),
            "ports": (0..rng.random_range(0..3)).map(|_| json!({"name": pick(rng, &["grpc", "", "x"]), "port": number(rng),
                "appProtocol": maybe(rng.random_bool(0.8), json!(pick(rng, &["grpc", "http", "kubernetes.io/h2c"])))})).collect::<Vec<_>>(),
        },
    })
}

fn slice(rng: &mut SmallRng) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("s{}", rng.random_range(0..5)), "namespace": "ns",
                     "labels": maybe(rng.random_bool(0.8), json!({"kubernetes.io/service-name": pick(rng, NAMES)}))},
        "addressType": pick(rng, &["IPv4", "IPv6", "FQDN"]),
        "ports": [{"name": pick(rng, &["grpc", "", "x"]), "port": number(rng)}],
        "endpoints": (0..rng.random_range(0..3)).map(|_| json!({
            "addresses": [pick(rng, &["127.0.0.1", "::1", "nope", "10.1.0.2"])],
            "conditions": {"ready": rng.random_bool(0.5), "serving": rng.random_bool(0.5), "terminating": rng.random_bool(0.5)},
        })).collect::<Vec<_>>(),
    })
}

#[test]
fn random_objects_and_calls_never_panic() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    let mesh = Mesh::builder().namespace("ns").seed(7).build();
    let (mut applied, mut rejected) = (0usize, 0usize);
    for _ in 0..400 {
        let mut resources = Resources::new();
        for _ in 0..rng.random_range(1..6) {
            let (value, kind) = match rng.random_range(0..3) {
                0 => (route(&mut rng), 0),
                1 => (service(&mut rng), 1),
                _ => (slice(&mut rng), 2),
            };
            // What does not even fit the schema would be refused by the API server and by
            // the manifest loader; the rest reaches validation.
            let ok = match kind {
                0 => serde_json::from_value(value)
                    .map(|o| resources.push(grpcroute_client::Object::GrpcRoute(o)))
                    .is_ok(),
                1 => serde_json::from_value(value)
                    .map(|o| resources.push(grpcroute_client::Object::Service(o)))
                    .is_ok(),
                _ => serde_json::from_value(value)
                    .map(|o| resources.push(grpcroute_client::Object::EndpointSlice(o)))
                    .is_ok(),
            };
            applied += usize::from(ok);
        }
        let report = mesh.update(&resources);
        rejected += report.rejected.len();
        let _ = mesh.statuses();
        for _ in 0..5 {
            let mut metadata = HeaderMap::new();
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(pick(&mut rng, STRINGS).as_bytes()),
                HeaderValue::from_str(pick(&mut rng, STRINGS)),
            ) {
                metadata.append(n, v);
            }
            let call = CallDescription {
                target: format!(
                    "{}.{}:{}",
                    pick(&mut rng, NAMES),
                    pick(&mut rng, NAMES),
                    rng.random_range(0..70_000)
                ),
                path: format!("/{}/{}", pick(&mut rng, STRINGS), pick(&mut rng, STRINGS)),
                metadata,
                client_namespace: Some(pick(&mut rng, NAMES).to_string()),
            };
            let explanation = mesh.explain(&call);
            assert!(
                ["forward", "passthrough", "unimplemented", "unavailable"]
                    .contains(&explanation.outcome)
            );
        }
    }
    // The generator must exercise both paths, or this test proves little.
    assert!(
        applied > 500 && rejected > 100,
        "applied {applied}, rejected {rejected}"
    );
}

#[test]
fn random_bytes_as_manifests_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SmallRng::seed_from_u64(0xbad);
    let seeds = [
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 1}]}\n",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: r}\nspec:\n  rules: [{backendRefs: [{name: a, port: 1}]}]\n",
        "---\n- [\n{{{{",
    ];
    for i in 0..300 {
        let mut text = seeds[i % seeds.len()].as_bytes().to_vec();
        for _ in 0..rng.random_range(0..8) {
            let at = rng.random_range(0..text.len().max(1));
            match rng.random_range(0..3) {
                0 if !text.is_empty() => {
                    let i = at.min(text.len() - 1);
                    text[i] = rng.next_u32() as u8;
                }
                1 => text.insert(
                    at.min(text.len()),
                    b"-:[{&*!|>'\"%@`\n "[rng.random_range(0..16)],
                ),
                _ => text.truncate(at),
            }
        }
        std::fs::write(dir.path().join("m.yaml"), &text).unwrap();
        let loaded = grpcroute_client::manifest::load(&[dir.path().to_path_buf()]);
        for e in &loaded.errors {
            assert!(!e.message.is_empty());
        }
        let mesh = Mesh::builder().namespace("default").build();
        let _ = mesh.update(&loaded.resources);
    }
}
