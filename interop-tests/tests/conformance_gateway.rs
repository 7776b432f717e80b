//! The Gateway-profile GRPCRoute conformance scenarios (GRPCExactMethodMatching,
//! GRPCRouteHeaderMatching, GRPCRouteNamedRule, GRPCRouteWeight; reference digest section
//! 6.2), re-attached from the Gateway `same-namespace` to a Service parent of the same name,
//! over loopback gRPC through `Mesh::channel`. Each scenario runs twice: configured
//! directly (`::direct`) and through the Kubernetes API (`::kube`).

use anyhow::Context as _;
use grpcroute_client::{CallDescription, ConditionStatus, Mesh};
use grpcroute_interop_tests::{
    Cluster, Delivery, Manifests, assert_share, backend, call,
    calls::{ECHO, ECHO_THREE, ECHO_TWO},
    each_delivery, route_condition, tally,
};
use serde_json::Value;
use tonic::Code;

const INFRA: &str = "gateway-conformance-infra";
/// The Gateway's stand-in: Service `same-namespace`, port 80 (its `http` listener).
const FRONTEND: &str = "same-namespace:80";
const V1: &str = "grpc-infra-backend-v1-";
const V2: &str = "grpc-infra-backend-v2-";
const V3: &str = "grpc-infra-backend-v3-";

/// The base manifests and `test`, re-attached to a Service, with only the gRPC backends
/// running (2 replicas each).
async fn start(
    delivery: Delivery,
    test: &str,
    edit: impl FnOnce(&mut Manifests),
) -> anyhow::Result<Cluster> {
    let mut m = Manifests::conformance(&["v1.6.1/base/manifests.yaml", test])?;
    m.reattach_gateway_routes()?;
    edit(&mut m);
    Cluster::start_some(delivery, &m, |d| d.name.starts_with("grpc-infra-backend-")).await
}

/// The backend that answers `path` with `metadata`, or the status code and message.
async fn route(
    mesh: &Mesh,
    path: &str,
    metadata: &[(&str, &str)],
) -> Result<String, (Code, String)> {
    let channel = mesh
        .channel(FRONTEND)
        .map_err(|e| (Code::Internal, e.to_string()))?;
    match call(channel, path, metadata).await {
        Ok(r) => Ok(backend(r.metadata()).unwrap_or_default()),
        Err(s) => Err((s.code(), s.message().to_string())),
    }
}

/// Asserts that the call reaches a pod of `prefix`, every time (both replicas).
async fn expect_backend(
    mesh: &Mesh,
    path: &str,
    md: &[(&str, &str)],
    prefix: &str,
) -> anyhow::Result<()> {
    for _ in 0..4 {
        let got = route(mesh, path, md).await;
        match &got {
            Ok(name) if name.starts_with(prefix) => {}
            other => anyhow::bail!("{path} {md:?}: expected {prefix}*, got {other:?}"),
        }
    }
    Ok(())
}

/// Asserts that the mesh itself answers UNIMPLEMENTED (no rule matches): no server sees
/// the call, and the message names the route rather than the server's own wording.
async fn expect_unmatched(
    cluster: &Cluster,
    mesh: &Mesh,
    path: &str,
    md: &[(&str, &str)],
    route_name: &str,
) -> anyhow::Result<()> {
    let before = cluster.total_calls();
    match route(mesh, path, md).await {
        Err((Code::Unimplemented, message)) => {
            assert!(
                message.contains("no rule") && message.contains(route_name),
                "{path} {md:?}: {message}"
            );
            assert!(!message.contains("intentionally"), "{message}");
        }
        other => anyhow::bail!("{path} {md:?}: expected UNIMPLEMENTED, got {other:?}"),
    }
    assert_eq!(
        cluster.total_calls(),
        before,
        "no server may see {path} {md:?}"
    );
    Ok(())
}

each_delivery! { #[tokio::test] grpc_exact_method_matching }
/// GRPCExactMethodMatching: Echo → v1, EchoTwo → v2, EchoThree → UNIMPLEMENTED from the
/// mesh (told apart from the server's own UNIMPLEMENTED for EchoThree by its message).
async fn grpc_exact_method_matching(delivery: Delivery) -> anyhow::Result<()> {
    let cluster = start(
        delivery,
        "v1.6.1/tests/grpcroute-exact-method-matching.yaml",
        |_| {},
    )
    .await?;
    let mesh = cluster.mesh(INFRA, 1).await?;
    expect_backend(&mesh, ECHO, &[], V1).await?;
    expect_backend(&mesh, ECHO_TWO, &[], V2).await?;
    expect_unmatched(&cluster, &mesh, ECHO_THREE, &[], "exact-matching").await?;
    // Other services and methods match nothing either.
    expect_unmatched(
        &cluster,
        &mesh,
        "/other.Service/Echo",
        &[],
        "exact-matching",
    )
    .await?;
    expect_unmatched(&cluster, &mesh, &ECHO.to_lowercase(), &[], "exact-matching").await?;

    // The server's own UNIMPLEMENTED, through a route-less pass-through, reads differently.
    let before = cluster.total_calls();
    let status = call(mesh.channel("grpc-infra-backend-v1:8080")?, ECHO_THREE, &[])
        .await
        .err()
        .context("EchoThree must fail")?;
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(status.message().contains("intentionally unimplemented"));
    assert_eq!(cluster.total_calls(), before + 1);
    cluster.shutdown().await;
    Ok(())
}

/// The header cases of GRPCRouteHeaderMatching, with the capitalised keys the upstream
/// test sends.
async fn header_cases(cluster: &Cluster, mesh: &Mesh) -> anyhow::Result<()> {
    let to = |prefix: &'static str| Some(prefix);
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
    let cases: [Case<'_>; 11] = [
        (&[("Version", "one")], to(V1)),
        (&[("Version", "two")], to(V2)),
        // Two header matches beat one.
        (&[("Version", "two"), ("Color", "orange")], to(V1)),
        // A tie at one header match goes to the first rule.
        (&[("Version", "two"), ("Color", "blue")], to(V2)),
        (&[("Color", "orange")], None),
        (&[("Some-Other-Header", "one")], None),
        (&[("Color", "blue")], to(V1)),
        (&[("Color", "green")], to(V1)),
        (&[("Color", "red")], to(V2)),
        (&[("Color", "yellow")], to(V2)),
        (&[("Color", "purple")], None),
    ];
    for (md, expected) in cases {
        match expected {
            Some(prefix) => expect_backend(mesh, ECHO, md, prefix).await?,
            None => expect_unmatched(cluster, mesh, ECHO, md, "grpc-header-matching").await?,
        }
    }
    Ok(())
}

each_delivery! { #[tokio::test] grpc_route_header_matching }
/// GRPCRouteHeaderMatching: every expectation of the upstream test (precedence by header
/// count, first-rule tie-break, case-insensitive names), and again with the route's
/// header names capitalised.
async fn grpc_route_header_matching(delivery: Delivery) -> anyhow::Result<()> {
    let cluster = start(
        delivery,
        "v1.6.1/tests/grpcroute-header-matching.yaml",
        |_| {},
    )
    .await?;
    header_cases(&cluster, &cluster.mesh(INFRA, 2).await?).await?;
    cluster.shutdown().await;

    let capitalise = |m: &mut Manifests| {
        for route in m.of_kind_mut("GRPCRoute") {
            for rule in route["spec"]["rules"].as_array_mut().into_iter().flatten() {
                for m in rule["matches"].as_array_mut().into_iter().flatten() {
                    for h in m["headers"].as_array_mut().into_iter().flatten() {
                        let name = h["name"].as_str().unwrap_or_default();
                        let mut chars = name.chars();
                        let capitalised: String = chars
                            .next()
                            .map(|c| c.to_ascii_uppercase())
                            .into_iter()
                            .chain(chars)
                            .collect();
                        h["name"] = Value::String(capitalised);
                    }
                }
            }
        }
    };
    let cluster = start(
        delivery,
        "v1.6.1/tests/grpcroute-header-matching.yaml",
        capitalise,
    )
    .await?;
    assert!(
        serde_json::to_string(&cluster.resources().routes)?.contains("\"Version\""),
        "the route's names were capitalised"
    );
    header_cases(&cluster, &cluster.mesh(INFRA, 2).await?).await?;
    cluster.shutdown().await;
    Ok(())
}

each_delivery! { #[tokio::test] grpc_route_named_rule }
/// GRPCRouteNamedRule: the named rule is accepted and routing is as without the name.
async fn grpc_route_named_rule(delivery: Delivery) -> anyhow::Result<()> {
    let cluster = start(delivery, "v1.6.1/tests/grpcroute-named-rule.yaml", |_| {}).await?;
    // `Cluster::mesh` fails on any rejected object.
    let mesh = cluster.mesh(INFRA, 3).await?;
    let accepted = route_condition(&mesh, INFRA, "grpc-named-rules", "Accepted")
        .context("no Accepted condition")?;
    assert_eq!(accepted.status, ConditionStatus::True, "{accepted:?}");
    expect_backend(&mesh, ECHO, &[], V1).await?;
    expect_backend(&mesh, ECHO_TWO, &[], V2).await?;
    let explain = |path: &str| {
        mesh.explain(&CallDescription {
            target: FRONTEND.into(),
            path: path.into(),
            ..Default::default()
        })
    };
    let named = explain(ECHO).rule.context("Echo matched no rule")?;
    assert_eq!(named.name.as_deref(), Some("named-rule"));
    let unnamed = explain(ECHO_TWO).rule.context("EchoTwo matched no rule")?;
    assert_eq!((unnamed.index, unnamed.name), (1, None));
    cluster.shutdown().await;
    Ok(())
}

each_delivery! { #[tokio::test] grpc_route_weight }
/// GRPCRouteWeight: 70/30 between v1 and v2 within 4σ, every call OK, and the weight-0 v3
/// (which exists here) receives nothing.
async fn grpc_route_weight(delivery: Delivery) -> anyhow::Result<()> {
    let cluster = start(delivery, "v1.6.1/tests/grpcroute-weight.yaml", |_| {}).await?;
    let mesh = cluster.mesh(INFRA, 4).await?;
    let channel = mesh.channel(FRONTEND)?;
    let n = 1000;
    let t = tally(n, |i| {
        let channel = channel.clone();
        // Entropy per call, as upstream does, so nothing can cache a decision.
        let jitter = i.to_string();
        async move { call(channel, ECHO, &[("x-jitter", &jitter)]).await }
    })
    .await;
    t.assert_no_errors();
    assert_share("v1", t.by_prefix(V1), n, 0.7);
    assert_share("v2", t.by_prefix(V2), n, 0.3);
    assert_share("v3", t.by_prefix(V3), n, 0.0);
    assert_eq!(cluster.calls(INFRA, V3), 0, "v3 servers saw calls");
    cluster.shutdown().await;
    Ok(())
}
