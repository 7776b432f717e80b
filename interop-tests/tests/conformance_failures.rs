//! Failure semantics end to end (reference digest section 3; no upstream gRPC test covers
//! them): invalid backend shares fail UNAVAILABLE with a message naming route, rule and
//! backend; all weights 0 is UNAVAILABLE; a rule without backendRefs is UNIMPLEMENTED; a
//! backend without ready endpoints is UNAVAILABLE; terminating-but-serving endpoints are a
//! fallback when nothing is ready. Each scenario runs twice: configured directly
//! (`::direct`) and through the Kubernetes API (`::kube`).

use grpcroute_client::{
    Mesh, Resources,
    build::{Backend, Rule, route, service},
};
use grpcroute_interop_tests::{
    Delivery, EchoService, EndpointState, Feed, GRPC_PORT, assert_share, backend,
    backends::add_all,
    call,
    calls::{ECHO, ECHO_TWO},
    each_delivery, tally,
};
use tonic::{Code, Status};

const NS: &str = "shop";
const FRONT: &str = "front:7070";

/// A mesh in `shop` with the frontend Service `front`, `backends`' objects and `extra`,
/// and the feed that configures it.
async fn mesh_with(
    delivery: Delivery,
    backends: &[&EchoService],
    extra: Vec<grpcroute_client::Object>,
) -> anyhow::Result<(Feed, Mesh)> {
    let mut resources = Resources::new().with(service(NS, "front").port("grpc", GRPC_PORT));
    for b in backends {
        add_all(&mut resources, b.objects());
    }
    add_all(&mut resources, extra);
    let feed = Feed::with(delivery, resources).await?;
    let mesh = feed.mesh(Mesh::builder().namespace(NS).seed(11)).await?;
    Ok((feed, mesh))
}

async fn status_of(mesh: &Mesh, target: &str, path: &str) -> anyhow::Result<Status> {
    match call(mesh.channel(target)?, path, &[]).await {
        Ok(r) => anyhow::bail!(
            "expected a failure, got an answer from {:?}",
            backend(r.metadata())
        ),
        Err(s) => Ok(s),
    }
}

each_delivery! { #[tokio::test] invalid_backend_takes_its_share_as_unavailable }
/// Equal weights, one backendRef to a Service that does not exist: about half the calls
/// fail UNAVAILABLE, each naming the route, the rule and the backend; the rest succeed.
async fn invalid_backend_takes_its_share_as_unavailable(delivery: Delivery) -> anyhow::Result<()> {
    let v1 = EchoService::start(NS, "v1", 2).await?;
    let (feed, mesh) = mesh_with(
        delivery,
        &[&v1],
        vec![
            route(NS, "split")
                .parent_service("front", Some(GRPC_PORT))
                .rule(
                    Rule::new()
                        .backend(Backend::service("v1", GRPC_PORT).weight(50))
                        .backend(Backend::service("missing", GRPC_PORT).weight(50)),
                )
                .into(),
        ],
    )
    .await?;
    let channel = mesh.channel(FRONT)?;
    let n = 400;
    let t = tally(n, |_| call(channel.clone(), ECHO, &[])).await;
    assert_eq!(t.errors_with(Code::Unavailable), t.errors.len());
    assert_share("UNAVAILABLE", t.errors.len(), n, 0.5);
    assert_share("v1", t.by_prefix("v1-"), n, 0.5);
    assert_eq!(
        v1.calls() as usize,
        t.ok(),
        "failed calls never reach a server"
    );
    for status in &t.errors {
        let m = status.message();
        assert!(
            m.contains("GRPCRoute shop/split rule 0")
                && m.contains("shop/missing:7070")
                && m.contains("BackendNotFound"),
            "{m}"
        );
    }
    v1.shutdown().await;
    feed.shutdown().await;
    Ok(())
}

each_delivery! { #[tokio::test] all_weights_zero_is_unavailable }
/// Every weight 0: UNAVAILABLE, no server sees the call.
async fn all_weights_zero_is_unavailable(delivery: Delivery) -> anyhow::Result<()> {
    let v1 = EchoService::start(NS, "v1", 1).await?;
    let (feed, mesh) = mesh_with(
        delivery,
        &[&v1],
        vec![
            route(NS, "zero")
                .parent_service("front", None)
                .rule(Rule::new().backend(Backend::service("v1", GRPC_PORT).weight(0)))
                .into(),
        ],
    )
    .await?;
    for _ in 0..10 {
        let s = status_of(&mesh, FRONT, ECHO).await?;
        assert_eq!(s.code(), Code::Unavailable);
        assert!(
            s.message().contains("GRPCRoute shop/zero rule 0") && s.message().contains("weight 0"),
            "{}",
            s.message()
        );
    }
    assert_eq!(v1.calls(), 0);
    v1.shutdown().await;
    feed.shutdown().await;
    Ok(())
}

each_delivery! { #[tokio::test] rule_without_backend_refs_is_unimplemented }
/// A matching rule without backendRefs performs no forwarding: UNIMPLEMENTED. Other rules
/// of the route still work.
async fn rule_without_backend_refs_is_unimplemented(delivery: Delivery) -> anyhow::Result<()> {
    let v1 = EchoService::start(NS, "v1", 1).await?;
    let (feed, mesh) = mesh_with(
        delivery,
        &[&v1],
        vec![
            route(NS, "partial")
                .parent_service("front", Some(GRPC_PORT))
                .rule(Rule::new().matches(grpcroute_client::build::Match::method(
                    grpcroute_interop_tests::calls::ECHO_SERVICE,
                    "EchoTwo",
                )))
                .rule(Rule::new().backend(Backend::service("v1", GRPC_PORT)))
                .into(),
        ],
    )
    .await?;
    let s = status_of(&mesh, FRONT, ECHO_TWO).await?;
    assert_eq!(s.code(), Code::Unimplemented);
    assert!(
        s.message().contains("GRPCRoute shop/partial rule 0")
            && s.message().contains("no backendRefs"),
        "{}",
        s.message()
    );
    assert_eq!(v1.calls(), 0);
    let ok = call(mesh.channel(FRONT)?, ECHO, &[]).await?;
    assert_eq!(backend(ok.metadata()).as_deref(), Some("v1-0"));
    v1.shutdown().await;
    feed.shutdown().await;
    Ok(())
}

each_delivery! { #[tokio::test] backend_without_ready_endpoints_is_unavailable }
/// A backend whose endpoints are all not ready (or that has no EndpointSlice at all), and
/// a route-less Service in the same state: UNAVAILABLE, naming the backend.
async fn backend_without_ready_endpoints_is_unavailable(delivery: Delivery) -> anyhow::Result<()> {
    let sick = EchoService::start(NS, "sick", 2).await?;
    let mut extra: Vec<grpcroute_client::Object> = vec![
        sick.service().into(),
        service(NS, "bare").port("grpc", GRPC_PORT).into(),
        route(NS, "to-sick")
            .parent_service("front", None)
            .rule(Rule::new().backend(Backend::service("sick", GRPC_PORT)))
            .into(),
    ];
    for i in 0..2 {
        if let Some(slice) = sick.slice(i, EndpointState::NotReady) {
            extra.push(slice.into());
        }
    }
    let (feed, mesh) = mesh_with(delivery, &[], extra).await?;
    let s = status_of(&mesh, FRONT, ECHO).await?;
    assert_eq!(s.code(), Code::Unavailable);
    assert!(
        s.message().contains("shop/sick:7070") && s.message().contains("no ready endpoints"),
        "{}",
        s.message()
    );
    for target in ["sick:7070", "bare:7070"] {
        let s = status_of(&mesh, target, ECHO).await?;
        assert_eq!(s.code(), Code::Unavailable, "{target}");
        assert!(
            s.message().contains("no ready endpoints"),
            "{target}: {}",
            s.message()
        );
    }
    // An unknown Service, and a port the Service does not have.
    let s = status_of(&mesh, "nowhere:7070", ECHO).await?;
    assert_eq!(s.code(), Code::Unavailable);
    assert!(
        s.message().contains("shop/nowhere not found"),
        "{}",
        s.message()
    );
    let s = status_of(&mesh, "front:9999", ECHO).await?;
    assert_eq!(s.code(), Code::Unavailable);
    assert_eq!(sick.calls(), 0);
    sick.shutdown().await;
    feed.shutdown().await;
    Ok(())
}

each_delivery! { #[tokio::test] terminating_endpoints_serve_only_when_nothing_is_ready }
/// With no ready endpoint, serving-but-terminating ones take the calls (as kube-proxy
/// does); as soon as a ready endpoint exists, the terminating one gets nothing.
async fn terminating_endpoints_serve_only_when_nothing_is_ready(
    delivery: Delivery,
) -> anyhow::Result<()> {
    let drain = EchoService::start(NS, "drain", 2).await?;
    let route_obj = || {
        grpcroute_client::Object::from(
            route(NS, "to-drain")
                .parent_service("front", None)
                .rule(Rule::new().backend(Backend::service("drain", GRPC_PORT))),
        )
    };
    let slices = |states: [EndpointState; 2]| -> Vec<grpcroute_client::Object> {
        states
            .iter()
            .enumerate()
            .filter_map(|(i, s)| drain.slice(i, *s))
            .map(Into::into)
            .collect()
    };
    let mut extra = vec![drain.service().into(), route_obj()];
    extra.extend(slices([
        EndpointState::Terminating,
        EndpointState::NotReady,
    ]));
    let (feed, mesh) = mesh_with(delivery, &[], extra).await?;
    let channel = mesh.channel(FRONT)?;
    let t = tally(20, |_| call(channel.clone(), ECHO, &[])).await;
    t.assert_no_errors();
    assert_eq!(t.by_prefix("drain-0"), 20, "{:?}", t.backends);

    // drain-1 becomes ready: drain-0 (still terminating) is no longer used.
    let mut resources = Resources::new().with(service(NS, "front").port("grpc", GRPC_PORT));
    add_all(&mut resources, vec![drain.service().into(), route_obj()]);
    add_all(
        &mut resources,
        slices([EndpointState::Terminating, EndpointState::Ready]),
    );
    feed.set(resources).await?;
    let t = tally(20, |_| call(channel.clone(), ECHO, &[])).await;
    t.assert_no_errors();
    assert_eq!(t.by_prefix("drain-1"), 20, "{:?}", t.backends);
    drain.shutdown().await;
    feed.shutdown().await;
    Ok(())
}
