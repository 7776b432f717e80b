//! Which routes a call gets, end to end: consumer routes win over producer routes and are
//! never merged with them; strict ReferenceGrant mode grants and revokes cross-namespace
//! backends; every Kubernetes DNS form of a Service and its ClusterIP reach the same
//! frontend; the tower Layer routes mesh authorities and passes the rest through. Each
//! scenario runs twice: configured directly (`::direct`) and through the Kubernetes API
//! (`::kube`).

use grpcroute_client::{
    ConditionStatus, Mesh, Resources,
    build::{Backend, Match, Rule, grant, route, service},
};
use grpcroute_echo::{
    EchoConfig, EchoServer,
    pb::{EchoRequest, grpc_echo_client::GrpcEchoClient},
};
use grpcroute_interop_tests::{
    Delivery, EchoService, Feed, GRPC_PORT, backend,
    backends::add_all,
    call,
    calls::{ECHO, ECHO_SERVICE, ECHO_TWO},
    each_delivery, metadata, route_condition,
};
use tonic::Code;
use tower::ServiceBuilder;

/// A permissive mesh in `namespace` fed by `feed`.
async fn mesh(feed: &Feed, namespace: &str) -> anyhow::Result<Mesh> {
    feed.mesh(Mesh::builder().namespace(namespace).seed(21))
        .await
}

async fn answer(mesh: &Mesh, target: &str, path: &str) -> Result<String, (Code, String)> {
    let channel = mesh
        .channel(target)
        .map_err(|e| (Code::InvalidArgument, e.to_string()))?;
    call(channel, path, &[])
        .await
        .map(|r| backend(r.metadata()).unwrap_or_default())
        .map_err(|s| (s.code(), s.message().to_string()))
}

each_delivery! { #[tokio::test] consumer_routes_win_and_are_never_merged }
/// Producer routes on `prod/api`: EchoTwo → v2, everything else → v1. A consumer route in
/// `cons`: Echo → v2 only. Clients in `cons` see only the consumer route (EchoTwo finds no
/// rule: the producer's rule is not merged in); clients in `prod` and elsewhere see only
/// the producer routes.
async fn consumer_routes_win_and_are_never_merged(delivery: Delivery) -> anyhow::Result<()> {
    let v1 = EchoService::start("prod", "v1", 1).await?;
    let v2 = EchoService::start("prod", "v2", 1).await?;
    let mut resources = Resources::new()
        .with(service("prod", "api").port("grpc", GRPC_PORT))
        .with(
            route("prod", "api-producer")
                .parent_service("api", Some(GRPC_PORT))
                .rule(
                    Rule::new()
                        .matches(Match::method(ECHO_SERVICE, "EchoTwo"))
                        .backend(Backend::service("v2", GRPC_PORT)),
                )
                .rule(Rule::new().backend(Backend::service("v1", GRPC_PORT))),
        )
        .with(
            route("cons", "api-consumer")
                .parent_service_in("prod", "api", Some(GRPC_PORT))
                .rule(
                    Rule::new()
                        .matches(Match::method(ECHO_SERVICE, "Echo"))
                        .backend(Backend::service("v2", GRPC_PORT).namespace("prod")),
                ),
        );
    add_all(&mut resources, v1.objects());
    add_all(&mut resources, v2.objects());
    let target = "api.prod:7070";

    let feed = Feed::with(delivery, resources).await?;
    let consumer = mesh(&feed, "cons").await?;
    for _ in 0..5 {
        assert_eq!(answer(&consumer, target, ECHO).await, Ok("v2-0".into()));
        match answer(&consumer, target, ECHO_TWO).await {
            Err((Code::Unimplemented, m)) => {
                assert!(
                    m.contains("consumer") && m.contains("cons/api-consumer"),
                    "{m}"
                );
                assert!(!m.contains("api-producer"), "{m}");
            }
            other => anyhow::bail!("consumer EchoTwo: {other:?}"),
        }
    }
    for ns in ["prod", "elsewhere"] {
        let producer = mesh(&feed, ns).await?;
        for _ in 0..5 {
            assert_eq!(
                answer(&producer, target, ECHO).await,
                Ok("v1-0".into()),
                "{ns}"
            );
            assert_eq!(
                answer(&producer, target, ECHO_TWO).await,
                Ok("v2-0".into()),
                "{ns}"
            );
        }
    }
    v1.shutdown().await;
    v2.shutdown().await;
    feed.shutdown().await;
    Ok(())
}

each_delivery! { #[tokio::test] strict_reference_grants_grant_and_revoke }
/// Strict mode: a cross-namespace backendRef fails UNAVAILABLE (RefNotPermitted) without a
/// ReferenceGrant, works with one, and stops working at the first update without it. A
/// grant for another Service does not count. The default (permissive) mode needs none.
async fn strict_reference_grants_grant_and_revoke(delivery: Delivery) -> anyhow::Result<()> {
    let store = EchoService::start("data", "store", 1).await?;
    let mut base = Resources::new()
        .with(service("app", "front").port("grpc", GRPC_PORT))
        .with(
            route("app", "to-store")
                .parent_service("front", None)
                .rule(Rule::new().backend(Backend::service("store", GRPC_PORT).namespace("data"))),
        );
    add_all(&mut base, store.objects());
    let granted = base
        .clone()
        .with(grant("data", "allow-app", "app", Some("store")));
    let other_service = base
        .clone()
        .with(grant("data", "allow-app", "app", Some("not-store")));

    let feed = Feed::with(delivery, base.clone()).await?;
    let strict = feed
        .mesh(
            Mesh::builder()
                .namespace("app")
                .seed(22)
                .strict_reference_grants(true),
        )
        .await?;
    let denied = |result: Result<String, (Code, String)>| match result {
        Err((Code::Unavailable, m)) => {
            assert!(
                m.contains("RefNotPermitted") && m.contains("app/to-store"),
                "{m}"
            );
            Ok(())
        }
        other => Err(anyhow::anyhow!("expected RefNotPermitted, got {other:?}")),
    };

    denied(answer(&strict, "front:7070", ECHO).await)?;
    let resolved = route_condition(&strict, "app", "to-store", "ResolvedRefs");
    assert_eq!(
        resolved.map(|c| (c.status, c.reason)),
        Some((ConditionStatus::False, "RefNotPermitted".to_string()))
    );
    feed.set(other_service).await?;
    denied(answer(&strict, "front:7070", ECHO).await)?;
    feed.set(granted).await?;
    assert_eq!(
        answer(&strict, "front:7070", ECHO).await,
        Ok("store-0".into())
    );
    // Revoked by the very next update.
    feed.set(base).await?;
    denied(answer(&strict, "front:7070", ECHO).await)?;

    let permissive = mesh(&feed, "app").await?;
    assert_eq!(
        answer(&permissive, "front:7070", ECHO).await,
        Ok("store-0".into())
    );
    assert_eq!(store.calls(), 2);
    store.shutdown().await;
    feed.shutdown().await;
    Ok(())
}

each_delivery! { #[tokio::test] every_dns_form_and_the_cluster_ip_reach_the_same_frontend }
/// `svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local` and the ClusterIP all name the
/// same frontend (the route's response header shows the route applied); from another
/// namespace a bare `svc` means that namespace's Service. Nothing is ever dialled at the
/// ClusterIP (a loopback address where nothing listens).
async fn every_dns_form_and_the_cluster_ip_reach_the_same_frontend(
    delivery: Delivery,
) -> anyhow::Result<()> {
    let backend_svc = EchoService::start("shop", "echo-backend", 1).await?;
    let mut resources = Resources::new()
        .with(
            service("shop", "echo")
                .cluster_ip("127.255.0.10")
                .port("grpc", GRPC_PORT),
        )
        .with(
            route("shop", "echo-route")
                .parent_service("echo", None)
                .rule(
                    Rule::new()
                        .set_response_header("x-route", "echo-route")
                        .backend(Backend::service("echo-backend", GRPC_PORT)),
                ),
        );
    add_all(&mut resources, backend_svc.objects());
    let feed = Feed::with(delivery, resources).await?;
    let local = mesh(&feed, "shop").await?;
    let remote = mesh(&feed, "elsewhere").await?;
    let forms = [
        "echo:7070",
        "echo.shop:7070",
        "echo.shop.svc:7070",
        "echo.shop.svc.cluster.local:7070",
        "echo.shop.svc.cluster.local.:7070",
        "127.255.0.10:7070",
        "http://echo.shop:7070",
    ];
    for (mesh, forms) in [(&local, &forms[..]), (&remote, &forms[1..])] {
        for target in forms {
            let response = call(mesh.channel(target)?, ECHO, &[]).await?;
            assert_eq!(
                metadata(response.metadata(), "x-route").as_deref(),
                Some("echo-route"),
                "{target}"
            );
            assert_eq!(
                backend(response.metadata()).as_deref(),
                Some("echo-backend-0")
            );
        }
    }
    match answer(&remote, "echo:7070", ECHO).await {
        Err((Code::Unavailable, m)) => assert!(m.contains("elsewhere/echo not found"), "{m}"),
        other => anyhow::bail!("bare name from another namespace: {other:?}"),
    }
    assert!(local.channel("api.example.com:443").is_err());
    assert!(local.channel("echo.shop.svc.other.domain:7070").is_err());
    assert_eq!(backend_svc.calls(), (forms.len() * 2 - 1) as u64);
    backend_svc.shutdown().await;
    feed.shutdown().await;
    Ok(())
}

each_delivery! { #[tokio::test] layer_routes_mesh_authorities_and_passes_the_rest }
/// The tower Layer form: a stack `mesh.layer()` over a plain tonic channel routes calls
/// whose origin is a Service of the mesh and hands every other call to the channel.
async fn layer_routes_mesh_authorities_and_passes_the_rest(
    delivery: Delivery,
) -> anyhow::Result<()> {
    let v2 = EchoService::start("ns", "v2", 1).await?;
    let fallback = EchoServer::start(EchoConfig::new("fallback")).await?;
    let mut resources = Resources::new()
        .with(service("ns", "echo").port("grpc", GRPC_PORT))
        .with(
            route("ns", "echo").parent_service("echo", None).rule(
                Rule::new()
                    .set_response_header("x-route", "echo")
                    .backend(Backend::service("v2", GRPC_PORT)),
            ),
        );
    add_all(&mut resources, v2.objects());
    let feed = Feed::with(delivery, resources).await?;
    let mesh = mesh(&feed, "ns").await?;
    let fallback_channel =
        tonic::transport::Channel::from_shared(format!("http://{}", fallback.addr()))?
            .connect()
            .await?;
    let stack = ServiceBuilder::new()
        .layer(mesh.layer())
        .service(fallback_channel);

    for origin in ["http://echo.ns:7070", "http://echo:7070"] {
        let mut client = GrpcEchoClient::with_origin(stack.clone(), origin.parse()?);
        let r = client.echo(EchoRequest {}).await?;
        assert_eq!(backend(r.metadata()).as_deref(), Some("v2-0"), "{origin}");
        assert_eq!(metadata(r.metadata(), "x-route").as_deref(), Some("echo"));
    }
    let not_mesh = [
        "http://example.com:7070".to_string(),
        "http://api.internal.example.org:7070".to_string(),
        format!("http://{}", fallback.addr()),
    ];
    for origin in &not_mesh {
        let mut client = GrpcEchoClient::with_origin(stack.clone(), origin.parse()?);
        let r = client.echo(EchoRequest {}).await?;
        assert_eq!(
            backend(r.metadata()).as_deref(),
            Some("fallback"),
            "{origin}"
        );
        assert_eq!(metadata(r.metadata(), "x-route"), None);
    }
    assert_eq!(v2.calls(), 2);
    assert_eq!(fallback.calls(), not_mesh.len() as u64);
    v2.shutdown().await;
    fallback.shutdown().await;
    feed.shutdown().await;
    Ok(())
}
