//! The Gateway API mesh (GAMMA) conformance scenarios in their gRPC form, over loopback gRPC
//! through `Mesh::channel`: MeshGRPCRouteWeight, MeshGRPCRouteRequestHeaderModifier, and the
//! gRPC versions of MeshBasic, MeshPorts, MeshConsumerRoute, MeshFrontend and
//! MeshFrontendHostname (reference digest, sections 6.3 and 6.4). Each scenario runs twice:
//! configured directly (`::direct`) and through the Kubernetes API (`::kube`).

use std::collections::BTreeSet;

use anyhow::Context as _;
use grpcroute_client::{CallDescription, ConditionStatus, Mesh};
use grpcroute_echo::pb::{EchoRequest, grpc_echo_client::GrpcEchoClient};
use grpcroute_interop_tests::{
    Cluster, Delivery, Manifests, assert_share, backend, each_delivery, echoed, metadata,
    route_condition, tally,
};
use serde_json::json;
use tonic::Request;

const MESH: &str = "gateway-conformance-mesh";
const CONSUMER: &str = "gateway-conformance-mesh-consumer";

/// The mesh base manifests plus test manifests, in their gRPC form, running.
async fn start(delivery: Delivery, base: &str, tests: &[&str]) -> anyhow::Result<Cluster> {
    let mut m = Manifests::conformance(&[base])?;
    m.extend(Manifests::conformance(tests)?);
    m.http_routes_to_grpc()?;
    m.h2c_app_protocols();
    Cluster::start(delivery, &m).await
}

/// An Echo call with `metadata`; the response metadata, or the status.
async fn echo(
    mesh: &Mesh,
    target: &str,
    md: &[(&str, &str)],
) -> anyhow::Result<tonic::metadata::MetadataMap> {
    let mut client = GrpcEchoClient::new(mesh.channel(target)?);
    let mut request = Request::new(EchoRequest {});
    for (k, v) in md {
        request.metadata_mut().append(
            tonic::metadata::MetadataKey::from_bytes(k.as_bytes())?,
            v.parse()?,
        );
    }
    let response = client.echo(request).await?;
    let context = response
        .get_ref()
        .assertions
        .as_ref()
        .and_then(|a| a.context.clone())
        .context("no context in EchoResponse")?;
    // Every backend of these scenarios lives in the mesh namespace.
    assert_eq!(context.namespace, MESH, "answered from the wrong namespace");
    Ok(response.metadata().clone())
}

fn backend_of(md: &tonic::metadata::MetadataMap) -> anyhow::Result<String> {
    backend(md).context("response names no backend")
}

each_delivery! { #[tokio::test] mesh_grpcroute_weight }
/// MeshGRPCRouteWeight: first call OK, then a 70/30 split between the echo-v1 and echo-v2
/// pods with no errors; the nonexistent weight-0 echo-v3 takes no share and causes no
/// failure (but is reported as an unresolved reference).
async fn mesh_grpcroute_weight(delivery: Delivery) -> anyhow::Result<()> {
    let cluster = start(
        delivery,
        "v1.6.1/mesh/manifests.yaml",
        &["v1.6.1/tests/mesh/grpcroute-weight.yaml"],
    )
    .await?;
    let mesh = cluster.mesh(MESH, 0x5eed).await?;
    let client = GrpcEchoClient::new(mesh.channel("echo:7070")?);

    let first = client.clone().echo(EchoRequest {}).await?;
    let first_backend = backend_of(first.metadata())?;
    assert!(first_backend.starts_with("echo-v1-") || first_backend.starts_with("echo-v2-"));

    let n = 1000;
    let t = tally(n, |_| {
        let mut c = client.clone();
        async move { c.echo(EchoRequest {}).await }
    })
    .await;
    t.assert_no_errors();
    assert_share("echo-v1", t.by_prefix("echo-v1-"), n, 0.7);
    assert_share("echo-v2", t.by_prefix("echo-v2-"), n, 0.3);
    assert_eq!(t.by_prefix("echo-v1-") + t.by_prefix("echo-v2-"), n);
    // The consumer namespace's echo-v1 pods are not the mesh namespace's echo-v1.
    assert_eq!(cluster.calls(CONSUMER, "echo-v1"), 0);

    let resolved = route_condition(&mesh, MESH, "mesh-grpc-weighted-backends", "ResolvedRefs")
        .context("no ResolvedRefs condition")?;
    assert_eq!(resolved.status, ConditionStatus::False);
    assert_eq!(resolved.reason, "BackendNotFound");
    assert!(resolved.message.contains("echo-v3"), "{}", resolved.message);
    let accepted = route_condition(&mesh, MESH, "mesh-grpc-weighted-backends", "Accepted")
        .context("no Accepted condition")?;
    assert_eq!(accepted.status, ConditionStatus::True);
    cluster.shutdown().await;
    Ok(())
}

each_delivery! { #[tokio::test] mesh_grpcroute_request_header_modifier }
/// MeshGRPCRouteRequestHeaderModifier (main): the four `x-test-case` cases exactly as the
/// upstream test sends and expects them, checked on the metadata the server received.
async fn mesh_grpcroute_request_header_modifier(delivery: Delivery) -> anyhow::Result<()> {
    let cluster = start(
        delivery,
        "main/mesh/manifests.yaml",
        &["main/tests/mesh/grpcroute-request-header-modifier.yaml"],
    )
    .await?;
    let mesh = cluster.mesh(MESH, 1).await?;

    struct Case {
        test_case: &'static str,
        headers: &'static [(&'static str, &'static str)],
        backend: &'static str,
        expected: &'static [(&'static str, &'static str)],
        absent: &'static [&'static str],
    }
    let cases = [
        Case {
            test_case: "set",
            headers: &[
                ("some-other-header", "this-header-should-be-set"),
                ("x-header-set", "this-value-should-be-overwritten"),
            ],
            backend: "echo-v1-",
            expected: &[
                ("x-test-case", "set"),
                ("some-other-header", "this-header-should-be-set"),
                ("x-header-set", "set-overwrites-values"),
            ],
            absent: &[],
        },
        Case {
            test_case: "add",
            headers: &[("x-header-add", "this-value-should-be-appended")],
            backend: "echo-v1-",
            expected: &[
                ("x-test-case", "add"),
                (
                    "x-header-add",
                    "this-value-should-be-appended,add-appends-values",
                ),
            ],
            absent: &[],
        },
        Case {
            test_case: "remove",
            headers: &[("x-header-remove", "this-should-be-removed")],
            backend: "echo-v1-",
            expected: &[("x-test-case", "remove")],
            absent: &["x-header-remove"],
        },
        Case {
            test_case: "multi",
            headers: &[
                ("x-header-set-2", "set-header-2"),
                ("x-header-add-2", "add-header-2"),
                ("x-header-remove-2", "should-be-removed-2"),
            ],
            backend: "echo-v2-",
            expected: &[
                ("x-test-case", "multi"),
                ("x-header-set-1", "header-set-1"),
                ("x-header-set-2", "header-set-2"),
                ("x-header-add-1", "header-add-1"),
                ("x-header-add-2", "add-header-2,header-add-2"),
            ],
            absent: &["x-header-remove-1", "x-header-remove-2"],
        },
    ];
    for case in cases {
        let mut md = vec![("x-test-case", case.test_case)];
        md.extend_from_slice(case.headers);
        // Several calls: each of the backend's pods must see the same thing.
        for _ in 0..4 {
            let got = echo(&mesh, "echo:7070", &md).await?;
            let name = backend_of(&got)?;
            assert!(name.starts_with(case.backend), "{}: {name}", case.test_case);
            for (key, value) in case.expected {
                assert_eq!(
                    echoed(&got, key).as_deref(),
                    Some(*value),
                    "{}: {key}",
                    case.test_case
                );
            }
            for key in case.absent {
                assert_eq!(echoed(&got, key), None, "{}: {key}", case.test_case);
            }
        }
    }
    // Without a matching x-test-case the attached route rejects the call.
    let err = echo(&mesh, "echo:7070", &[("x-test-case", "other")])
        .await
        .err()
        .context("an unmatched call must fail")?;
    let status = err
        .downcast_ref::<tonic::Status>()
        .context("not a status")?;
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    cluster.shutdown().await;
    Ok(())
}

each_delivery! { #[tokio::test] mesh_basic_passes_through_without_routes }
/// MeshBasic: with no routes, calls to a Service go to its own endpoints (pass-through).
async fn mesh_basic_passes_through_without_routes(delivery: Delivery) -> anyhow::Result<()> {
    let cluster = start(delivery, "v1.6.1/mesh/manifests.yaml", &[]).await?;
    let mesh = cluster.mesh(MESH, 2).await?;
    let explanation = mesh.explain(&CallDescription {
        target: "echo:7070".into(),
        path: grpcroute_interop_tests::calls::ECHO.into(),
        ..Default::default()
    });
    assert_eq!(explanation.outcome, "passthrough", "{explanation:?}");

    let mut seen = BTreeSet::new();
    for _ in 0..100 {
        seen.insert(backend_of(&echo(&mesh, "echo:7070", &[]).await?)?);
    }
    let pods: BTreeSet<String> = ["echo-v1-0", "echo-v1-1", "echo-v2-0", "echo-v2-1"]
        .map(String::from)
        .into();
    assert!(seen.is_subset(&pods), "{seen:?}");
    assert!(seen.len() >= 2, "calls were not balanced: {seen:?}");
    // A Service selecting only echo-v2 gets only echo-v2 pods.
    for _ in 0..20 {
        let name = backend_of(&echo(&mesh, "echo-v2:7070", &[]).await?)?;
        assert!(name.starts_with("echo-v2-"), "{name}");
    }
    cluster.shutdown().await;
    Ok(())
}

each_delivery! { #[tokio::test] mesh_ports }
/// MeshPorts: the echo-v1 route names port 80 and applies there only; the echo-v2 route
/// names no port and applies to every port. Observed through the routes'
/// ResponseHeaderModifier (`X-Header-Set`).
async fn mesh_ports(delivery: Delivery) -> anyhow::Result<()> {
    let cluster = start(
        delivery,
        "v1.6.1/mesh/manifests.yaml",
        &["v1.6.1/tests/mesh/mesh-ports.yaml"],
    )
    .await?;
    let mesh = cluster.mesh(MESH, 3).await?;
    for (target, header, pods) in [
        ("echo-v1:80", Some("v1"), "echo-v1-"),
        ("echo-v1:8080", None, "echo-v1-"),
        ("echo-v2:80", Some("v2"), "echo-v2-"),
        ("echo-v2:8080", Some("v2"), "echo-v2-"),
    ] {
        for _ in 0..5 {
            let md = echo(&mesh, target, &[]).await?;
            assert_eq!(metadata(&md, "x-header-set").as_deref(), header, "{target}");
            assert!(backend_of(&md)?.starts_with(pods), "{target}");
        }
    }
    cluster.shutdown().await;
    Ok(())
}

each_delivery! { #[tokio::test] mesh_consumer_route }
/// MeshConsumerRoute: a route in the consumer namespace on the producer's echo-v1 applies
/// to clients in the consumer namespace only, and its cross-namespace backendRef needs no
/// ReferenceGrant.
async fn mesh_consumer_route(delivery: Delivery) -> anyhow::Result<()> {
    let cluster = start(
        delivery,
        "v1.6.1/mesh/manifests.yaml",
        &["v1.6.1/tests/mesh/mesh-consumer-route.yaml"],
    )
    .await?;
    assert!(cluster.resources().reference_grants.is_empty());
    let consumer = cluster.mesh(CONSUMER, 4).await?;
    let producer = cluster.mesh(MESH, 4).await?;
    let elsewhere = cluster.mesh("default", 4).await?;
    let target = "echo-v1.gateway-conformance-mesh:80";
    for _ in 0..5 {
        let md = echo(&consumer, target, &[]).await?;
        assert_eq!(metadata(&md, "x-header-set").as_deref(), Some("set"));
        assert!(backend_of(&md)?.starts_with("echo-v1-"));
        for other in [&producer, &elsewhere] {
            let md = echo(other, target, &[]).await?;
            assert_eq!(metadata(&md, "x-header-set"), None);
            assert!(backend_of(&md)?.starts_with("echo-v1-"));
        }
    }
    // The consumer's backendRef is the producer's echo-v1, not the consumer's own pods.
    assert_eq!(cluster.calls(CONSUMER, "echo-v1"), 0);
    cluster.shutdown().await;
    Ok(())
}

each_delivery! { #[tokio::test] mesh_frontend }
/// MeshFrontend: a route on echo-v2 whose backendRef is echo-v2 itself applies to calls to
/// the Service (once: no routing loop) and not to calls made straight to a pod.
async fn mesh_frontend(delivery: Delivery) -> anyhow::Result<()> {
    let cluster = start(
        delivery,
        "v1.6.1/mesh/manifests.yaml",
        &["v1.6.1/tests/mesh/mesh-frontend.yaml"],
    )
    .await?;
    let mesh = cluster.mesh(MESH, 5).await?;
    for target in ["echo-v2:80", "echo-v2:8080", "echo-v2:7070"] {
        let before = cluster.total_calls();
        let md = echo(&mesh, target, &[]).await?;
        assert_eq!(metadata(&md, "x-header-set").as_deref(), Some("set"));
        assert!(backend_of(&md)?.starts_with("echo-v2-"));
        assert_eq!(cluster.total_calls(), before + 1, "one call, one delivery");
    }
    // Straight to a pod: a plain tonic channel, no mesh, no route.
    let pod = cluster.pod(MESH, "echo-v2-0").context("no pod echo-v2-0")?;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", pod.server.addr()))?
        .connect()
        .await?;
    let response = GrpcEchoClient::new(channel).echo(EchoRequest {}).await?;
    assert_eq!(metadata(response.metadata(), "x-header-set"), None);
    assert_eq!(backend(response.metadata()).as_deref(), Some("echo-v2-0"));
    cluster.shutdown().await;
    Ok(())
}

each_delivery! { #[tokio::test] mesh_frontend_hostname }
/// MeshFrontendHostname: the route is chosen by the Service dialled, never by the
/// request's `:authority` or the route's `hostnames`.
async fn mesh_frontend_hostname(delivery: Delivery) -> anyhow::Result<()> {
    let mut m = Manifests::conformance(&[
        "v1.6.1/mesh/manifests.yaml",
        "v1.6.1/tests/mesh/mesh-frontend.yaml",
    ])?;
    m.http_routes_to_grpc()?;
    m.h2c_app_protocols();
    // hostnames naming another Service must not matter either (GEP-1294).
    for route in m.of_kind_mut("GRPCRoute") {
        route["spec"]["hostnames"] = json!(["echo-v1"]);
    }
    let cluster = Cluster::start(delivery, &m).await?;
    let mesh = cluster.mesh(MESH, 6).await?;
    for _ in 0..5 {
        // Dial echo-v2, claim to be calling echo-v1: echo-v2's route applies.
        let mut client =
            GrpcEchoClient::with_origin(mesh.channel("echo-v2:80")?, "http://echo-v1:80".parse()?);
        let r = client.echo(EchoRequest {}).await?;
        assert_eq!(
            metadata(r.metadata(), "x-header-set").as_deref(),
            Some("set")
        );
        assert!(backend_of(r.metadata())?.starts_with("echo-v2-"));
        // Dial echo-v1, claim to be calling echo-v2: no route applies.
        let mut client =
            GrpcEchoClient::with_origin(mesh.channel("echo-v1:80")?, "http://echo-v2:80".parse()?);
        let r = client.echo(EchoRequest {}).await?;
        assert_eq!(metadata(r.metadata(), "x-header-set"), None);
        assert!(backend_of(r.metadata())?.starts_with("echo-v1-"));
    }
    cluster.shutdown().await;
    Ok(())
}

/// Rewrites `path: {type: PathPrefix, value: /x}` matches into a header match
/// `x-path: x`: the only HTTP-only part of the HTTPRoute header-modifier tests.
fn path_prefixes_to_header(m: &mut Manifests) {
    for route in m.of_kind_mut("HTTPRoute") {
        for rule in route["spec"]["rules"].as_array_mut().into_iter().flatten() {
            for matcher in rule["matches"].as_array_mut().into_iter().flatten() {
                if let Some(path) = matcher["path"]["value"].as_str() {
                    let value = path.trim_start_matches('/').to_string();
                    *matcher = json!({"headers": [{"name": "x-path", "value": value}]});
                }
            }
        }
    }
}

each_delivery! { #[tokio::test] mesh_request_header_modifier_upstream_http_cases }
/// The gRPC form of MeshHTTPRouteRequestHeaderModifier and
/// MeshHTTPRouteBackendRequestHeaderModifier (filters on the rule, then on the backendRef):
/// every upstream case, including canonical filter names acting on lowercase request
/// names, with the path prefix each case was selected by turned into a header match.
async fn mesh_request_header_modifier_upstream_http_cases(
    delivery: Delivery,
) -> anyhow::Result<()> {
    type Headers = &'static [(&'static str, &'static str)];
    let cases: [(&str, Headers, Headers, &[&str]); 7] = [
        (
            "set",
            &[("Some-Other-Header", "val")],
            &[
                ("some-other-header", "val"),
                ("x-header-set", "set-overwrites-values"),
            ],
            &[],
        ),
        (
            "set",
            &[
                ("Some-Other-Header", "val"),
                ("X-Header-Set", "some-other-value"),
            ],
            &[
                ("some-other-header", "val"),
                ("x-header-set", "set-overwrites-values"),
            ],
            &[],
        ),
        (
            "add",
            &[("Some-Other-Header", "val")],
            &[
                ("some-other-header", "val"),
                ("x-header-add", "add-appends-values"),
            ],
            &[],
        ),
        (
            "add",
            &[
                ("Some-Other-Header", "val"),
                ("X-Header-Add", "some-other-value"),
            ],
            &[
                ("some-other-header", "val"),
                ("x-header-add", "some-other-value,add-appends-values"),
            ],
            &[],
        ),
        (
            "remove",
            &[("X-Header-Remove", "val")],
            &[],
            &["x-header-remove"],
        ),
        (
            "multiple",
            &[
                ("X-Header-Set-2", "set-val-2"),
                ("X-Header-Add-2", "add-val-2"),
                ("X-Header-Remove-2", "remove-val-2"),
                ("Another-Header", "another-header-val"),
            ],
            &[
                ("x-header-set-1", "header-set-1"),
                ("x-header-set-2", "header-set-2"),
                ("x-header-add-1", "header-add-1"),
                ("x-header-add-2", "add-val-2,header-add-2"),
                ("x-header-add-3", "header-add-3"),
                ("another-header", "another-header-val"),
            ],
            &["x-header-remove-1", "x-header-remove-2"],
        ),
        (
            "case-insensitivity",
            &[
                ("x-header-set", "original-val-set"),
                ("x-header-add", "original-val-add"),
                ("x-header-remove", "original-val-remove"),
                ("Another-Header", "another-header-val"),
            ],
            &[
                ("x-header-set", "header-set"),
                ("x-header-add", "original-val-add,header-add"),
                ("another-header", "another-header-val"),
            ],
            &["x-header-remove"],
        ),
    ];
    for file in [
        "v1.6.1/tests/mesh/httproute-request-header-modifier.yaml",
        "v1.6.1/tests/mesh/httproute-request-header-modifier-backend.yaml",
    ] {
        let mut m = Manifests::conformance(&["v1.6.1/mesh/manifests.yaml", file])?;
        path_prefixes_to_header(&mut m);
        m.http_routes_to_grpc()?;
        m.h2c_app_protocols();
        let cluster = Cluster::start(delivery, &m).await?;
        let mesh = cluster.mesh(MESH, 7).await?;
        for (path, sent, expected, absent) in &cases {
            let mut md = vec![("x-path", *path)];
            md.extend_from_slice(sent);
            let got = echo(&mesh, "echo:80", &md).await?;
            assert!(backend_of(&got)?.starts_with("echo-v1-"), "{file} {path}");
            for (key, value) in *expected {
                assert_eq!(
                    echoed(&got, key).as_deref(),
                    Some(*value),
                    "{file} {path} {sent:?}: {key}"
                );
            }
            for key in *absent {
                assert_eq!(echoed(&got, key), None, "{file} {path}: {key}");
            }
        }
        cluster.shutdown().await;
    }
    Ok(())
}
