//! Filters end to end: RequestMirror (all calls, and a fraction; a dead or blackholed
//! mirror never fails or holds up the primary call), backend-level RequestHeaderModifier
//! (applied only when that backend is picked), and ExtensionRef (never skipped: the calls it
//! would handle fail UNAVAILABLE). Each scenario runs twice: configured directly
//! (`::direct`) and through the Kubernetes API (`::kube`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use grpcroute_client::{
    ConditionStatus, Mesh, Resources,
    build::{Backend, Rule, endpoints, route, service},
};
use grpcroute_interop_tests::{
    Delivery, EchoService, Feed, GRPC_PORT, LOOPBACK, Manifests, assert_share, backend,
    backends::add_all,
    call,
    calls::{ECHO, ECHO_TWO},
    each_delivery, echoed, eventually, refused_port, route_condition, settled, tally,
};
use tonic::Code;

const NS: &str = "m";

fn resources(services: &[&EchoService]) -> Resources {
    let mut r = Resources::new().with(service(NS, "front").port("grpc", GRPC_PORT));
    for s in services {
        add_all(&mut r, s.objects());
    }
    r
}

/// A mesh in `m` from `builder`, configured with `resources`, and the feed that
/// configures it.
async fn mesh(
    delivery: Delivery,
    builder: grpcroute_client::MeshBuilder,
    resources: Resources,
) -> anyhow::Result<(Feed, Mesh)> {
    let feed = Feed::with(delivery, resources).await?;
    let mesh = feed.mesh(builder.namespace(NS).seed(31)).await?;
    Ok((feed, mesh))
}

each_delivery! { #[tokio::test] mirror_copies_every_call }
/// A 100% mirror: every call's copy reaches the mirror Service; the caller only ever sees
/// the primary's answers.
async fn mirror_copies_every_call(delivery: Delivery) -> anyhow::Result<()> {
    let primary = EchoService::start(NS, "primary", 2).await?;
    let shadow = EchoService::start(NS, "shadow", 1).await?;
    let r = resources(&[&primary, &shadow]).with(
        route(NS, "mirrored").parent_service("front", None).rule(
            Rule::new()
                .mirror("shadow", GRPC_PORT, 100)
                .backend(Backend::service("primary", GRPC_PORT)),
        ),
    );
    let (feed, mesh) = mesh(delivery, Mesh::builder(), r).await?;
    let channel = mesh.channel("front:7070")?;
    let n = 50;
    let t = tally(n, |i| {
        let channel = channel.clone();
        let tag = i.to_string();
        async move { call(channel, ECHO, &[("x-call", &tag)]).await }
    })
    .await;
    t.assert_no_errors();
    assert_eq!(t.by_prefix("primary-"), n);
    assert_eq!(primary.calls(), n as u64);
    assert_eq!(settled(|| shadow.calls()).await, n as u64);
    // Each copy is the primary's call: method, path and the caller's metadata.
    let mut tags: Vec<usize> = shadow
        .received()
        .iter()
        .map(|r| {
            assert_eq!(r.method, http::Method::POST);
            assert_eq!(r.path, ECHO);
            assert_eq!(r.headers["content-type"], "application/grpc");
            r.headers["x-call"].to_str().unwrap().parse().unwrap()
        })
        .collect();
    tags.sort_unstable();
    assert_eq!(tags, (0..n).collect::<Vec<_>>(), "one copy of each call");
    primary.shutdown().await;
    feed.shutdown().await;
    shadow.shutdown().await;
    Ok(())
}

each_delivery! { #[tokio::test] mirror_a_fraction }
/// `fraction: 1/4` mirrors a quarter of the calls (within 4σ); the primary gets all.
async fn mirror_a_fraction(delivery: Delivery) -> anyhow::Result<()> {
    let primary = EchoService::start(NS, "primary", 1).await?;
    let shadow = EchoService::start(NS, "shadow", 1).await?;
    let route_yaml = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: quarter, namespace: m}
spec:
  parentRefs: [{group: "", kind: Service, name: front}]
  rules:
  - filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {name: shadow, port: 7070}
        fraction: {numerator: 1, denominator: 4}
    backendRefs: [{name: primary, port: 7070}]
"#;
    let mut r = resources(&[&primary, &shadow]);
    r.extend(Manifests::from_yaml(route_yaml)?.resources()?);
    let (feed, mesh) = mesh(delivery, Mesh::builder(), r).await?;
    let channel = mesh.channel("front:7070")?;
    let n = 400;
    let t = tally(n, |_| call(channel.clone(), ECHO, &[])).await;
    t.assert_no_errors();
    assert_eq!(t.by_prefix("primary-"), n);
    let mirrored = settled(|| shadow.calls()).await;
    assert_share("mirrored", mirrored as usize, n, 0.25);
    primary.shutdown().await;
    feed.shutdown().await;
    shadow.shutdown().await;
    Ok(())
}

each_delivery! { #[tokio::test] dead_or_blackholed_mirrors_never_affect_the_primary }
/// A mirror whose only endpoint refuses connections, and one that accepts connections but
/// never answers (blackholed, with a connect timeout far longer than the test): the
/// primary calls all succeed, and promptly (a generous 20 s bound that only a primary
/// waiting for the blackholed mirror would hit).
async fn dead_or_blackholed_mirrors_never_affect_the_primary(
    delivery: Delivery,
) -> anyhow::Result<()> {
    let primary = EchoService::start(NS, "primary", 1).await?;
    let blackhole = tokio::net::TcpListener::bind((LOOPBACK, 0)).await?;
    let blackhole_port = blackhole.local_addr()?.port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let accepted_in_task = accepted.clone();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = blackhole.accept().await {
            accepted_in_task.fetch_add(1, Ordering::Relaxed);
            // Keep the connection open, never read or write.
            held.push(socket);
        }
    });
    let mirror_to = |name: &str, port: u16| {
        vec![
            grpcroute_client::Object::from(service(NS, name).port("grpc", GRPC_PORT)),
            endpoints(NS, name)
                .port("grpc", port)
                .ready(LOOPBACK)
                .into(),
        ]
    };
    let mut r = resources(&[&primary]);
    add_all(&mut r, mirror_to("dead", refused_port()?));
    add_all(&mut r, mirror_to("hole", blackhole_port));
    r.push(
        route(NS, "mirrored").parent_service("front", None).rule(
            Rule::new()
                .mirror("dead", GRPC_PORT, 100)
                .mirror("hole", GRPC_PORT, 100)
                .backend(Backend::service("primary", GRPC_PORT)),
        ),
    );
    let (feed, mesh) = mesh(
        delivery,
        Mesh::builder().connect_timeout(Duration::from_secs(60)),
        r,
    )
    .await?;
    let channel = mesh.channel("front:7070")?;
    let n = 30;
    let t = tokio::time::timeout(
        Duration::from_secs(20),
        tally(n, |_| call(channel.clone(), ECHO, &[])),
    )
    .await?;
    t.assert_no_errors();
    assert_eq!(t.by_prefix("primary-"), n);
    assert!(
        eventually(Duration::from_secs(5), || accepted.load(Ordering::Relaxed)
            >= 1)
        .await,
        "the blackholed mirror was never dialled"
    );
    holder.abort();
    feed.shutdown().await;
    primary.shutdown().await;
    Ok(())
}

each_delivery! { #[tokio::test] backend_filters_apply_only_to_their_backend }
/// A backend-level RequestHeaderModifier applies only to calls sent to that backend; the
/// rule-level one to all of them.
async fn backend_filters_apply_only_to_their_backend(delivery: Delivery) -> anyhow::Result<()> {
    let v1 = EchoService::start(NS, "v1", 1).await?;
    let v2 = EchoService::start(NS, "v2", 1).await?;
    let r = resources(&[&v1, &v2]).with(
        route(NS, "split").parent_service("front", None).rule(
            Rule::new()
                .set_request_header("x-rule", "yes")
                .backend(
                    Backend::service("v1", GRPC_PORT)
                        .set_request_header("x-backend", "v1")
                        .add_request_header("x-added", "by-v1"),
                )
                .backend(Backend::service("v2", GRPC_PORT)),
        ),
    );
    let (feed, mesh) = mesh(delivery, Mesh::builder(), r).await?;
    let channel = mesh.channel("front:7070")?;
    let n = 200;
    let mut to_v1 = 0;
    for _ in 0..n {
        let response = call(channel.clone(), ECHO, &[("x-added", "client")]).await?;
        let md = response.metadata();
        assert_eq!(echoed(md, "x-rule").as_deref(), Some("yes"));
        match backend(md).as_deref() {
            Some("v1-0") => {
                to_v1 += 1;
                assert_eq!(echoed(md, "x-backend").as_deref(), Some("v1"));
                assert_eq!(echoed(md, "x-added").as_deref(), Some("client,by-v1"));
            }
            Some("v2-0") => {
                assert_eq!(echoed(md, "x-backend"), None);
                assert_eq!(echoed(md, "x-added").as_deref(), Some("client"));
            }
            other => anyhow::bail!("unexpected backend {other:?}"),
        }
    }
    assert_share("v1", to_v1, n, 0.5);
    v1.shutdown().await;
    feed.shutdown().await;
    v2.shutdown().await;
    Ok(())
}

each_delivery! { #[tokio::test] extension_ref_filters_fail_unavailable }
/// ExtensionRef filters cannot be applied by this client, so the calls they would handle
/// fail UNAVAILABLE instead of skipping them: on a rule, every call matching it; on a
/// backendRef, the calls picked for that backend. Other rules keep working.
async fn extension_ref_filters_fail_unavailable(delivery: Delivery) -> anyhow::Result<()> {
    let v1 = EchoService::start(NS, "v1", 1).await?;
    let route_yaml = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: ext, namespace: m}
spec:
  parentRefs: [{group: "", kind: Service, name: front}]
  rules:
  - matches: [{method: {service: gateway_api_conformance.echo_basic.grpcecho.GrpcEcho, method: EchoTwo}}]
    filters:
    - type: ExtensionRef
      extensionRef: {group: example.com, kind: RateLimit, name: strict}
    backendRefs: [{name: v1, port: 7070}]
  - matches: [{headers: [{name: x-ext, value: backend}]}]
    backendRefs:
    - name: v1
      port: 7070
      filters:
      - type: ExtensionRef
        extensionRef: {group: example.com, kind: RateLimit, name: strict}
    - name: v1
      port: 7070
      weight: 0
  - backendRefs: [{name: v1, port: 7070}]
"#;
    let mut r = resources(&[&v1]);
    r.extend(Manifests::from_yaml(route_yaml)?.resources()?);
    let (feed, mesh) = mesh(delivery, Mesh::builder(), r).await?;
    let channel = mesh.channel("front:7070")?;
    for (path, md) in [(ECHO_TWO, &[][..]), (ECHO, &[("x-ext", "backend")][..])] {
        let status = call(channel.clone(), path, md)
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("{path} {md:?} must fail"))?;
        assert_eq!(status.code(), Code::Unavailable, "{path}");
        assert!(
            status.message().contains("GRPCRoute m/ext")
                && status.message().contains("RateLimit.example.com"),
            "{}",
            status.message()
        );
    }
    assert_eq!(v1.calls(), 0, "the filtered calls must not be forwarded");
    let ok = call(channel.clone(), ECHO, &[]).await?;
    assert_eq!(backend(ok.metadata()).as_deref(), Some("v1-0"));
    let accepted = route_condition(&mesh, NS, "ext", "Accepted");
    assert_eq!(accepted.map(|c| c.status), Some(ConditionStatus::True));
    feed.shutdown().await;
    v1.shutdown().await;
    Ok(())
}
