//! The Kubernetes source against a real list/watch API server on loopback: initial sync,
//! following changes, relists, outages, ReferenceGrant versions, invalid objects.

use std::time::Duration;

use grpcroute_client::{
    Mesh,
    build::{Backend, Match, Rule, endpoints, grant, route, service},
    source::KubeSource,
};
use grpcroute_echo::{
    EchoConfig, EchoServer,
    pb::{EchoRequest, grpc_echo_client::GrpcEchoClient},
};
use grpcroute_test_apiserver::{ApiServer, ReferenceGrantVersions, Resource};
use serde_json::{Value, json};
use tonic::Code;

fn value(object: impl serde::Serialize) -> Value {
    serde_json::to_value(object).unwrap()
}

/// Two echo backends and the Services/EndpointSlices for `echo` (frontend), `echo-v1`,
/// `echo-v2` in namespace `mesh`, applied to the API server.
async fn backends(server: &ApiServer) -> (EchoServer, EchoServer) {
    let v1 = EchoServer::start(EchoConfig::new("echo-v1")).await.unwrap();
    let v2 = EchoServer::start(EchoConfig::new("echo-v2")).await.unwrap();
    for name in ["echo", "echo-v1", "echo-v2"] {
        server
            .apply(value(service("mesh", name).port("grpc", 7070).build()))
            .unwrap();
    }
    for (name, s) in [("echo-v1", &v1), ("echo-v2", &v2), ("echo", &v1)] {
        let slice = endpoints("mesh", name)
            .name(&format!("{name}-slice"))
            .port("grpc", s.addr().port())
            .ready(s.addr().ip());
        server.apply(value(slice.build())).unwrap();
    }
    (v1, v2)
}

fn header_route(default_backend: &str) -> Value {
    value(
        route("mesh", "split")
            .parent_service("echo", Some(7070))
            .rule(
                Rule::new()
                    .matches(Match::any().header("x-group", "b"))
                    .backend(Backend::service("echo-v2", 7070)),
            )
            .rule(Rule::new().backend(Backend::service(default_backend, 7070)))
            .build(),
    )
}

fn mesh_for(server: &ApiServer) -> Mesh {
    let source =
        KubeSource::with_client(server.client().unwrap()).watch_timeout(Duration::from_secs(2));
    Mesh::builder()
        .namespace("mesh")
        .ready_timeout(Duration::from_secs(5))
        .build_with_source(source)
}

/// The backend that serves one Echo call, or the error code.
async fn call(
    mesh: &Mesh,
    meta: Option<(&'static str, &'static str)>,
) -> Result<String, (Code, String)> {
    let mut client = GrpcEchoClient::new(mesh.channel("echo:7070").unwrap());
    let mut req = tonic::Request::new(EchoRequest {});
    if let Some((k, v)) = meta {
        req.metadata_mut().insert(k, v.parse().unwrap());
    }
    match client.echo(req).await {
        Ok(r) => Ok(r
            .metadata()
            .get("x-echo-backend")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()),
        Err(s) => Err((s.code(), s.message().to_string())),
    }
}

/// Calls until `expected` answers (or 5 s pass); returns how long that took.
async fn converge(
    mesh: &Mesh,
    meta: Option<(&'static str, &'static str)>,
    expected: &str,
) -> Duration {
    let started = tokio::time::Instant::now();
    loop {
        if call(mesh, meta).await.as_deref() == Ok(expected) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never converged to {expected}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn syncs_then_routes_and_follows_changes() {
    let server = ApiServer::start().await;
    let (_v1, _v2) = backends(&server).await;
    server.apply(header_route("echo-v1")).unwrap();
    let mesh = mesh_for(&server);
    tokio::time::timeout(Duration::from_secs(5), mesh.ready())
        .await
        .expect("initial sync");
    assert_eq!(call(&mesh, None).await.unwrap(), "echo-v1");
    assert_eq!(
        call(&mesh, Some(("x-group", "b"))).await.unwrap(),
        "echo-v2"
    );
    assert!(mesh.source_health().connected);

    // A route change through the API is followed.
    server.apply(header_route("echo-v2")).unwrap();
    let took = converge(&mesh, None, "echo-v2").await;
    println!("route change converged in {took:?}");

    // Deleting the route: calls pass through to the Service's own endpoints.
    server
        .delete(Resource::GrpcRoutes, "mesh", "split")
        .unwrap();
    converge(&mesh, Some(("x-group", "b")), "echo-v1").await;
    assert!(mesh.source_health().last_latency.is_some());
}

#[tokio::test]
async fn calls_wait_for_the_initial_sync_and_fail_unavailable_without_it() {
    let server = ApiServer::start().await;
    let (_v1, _v2) = backends(&server).await;
    server.stall_requests(None);
    let source = KubeSource::with_client(server.client().unwrap());
    let mesh = Mesh::builder()
        .namespace("mesh")
        .ready_timeout(Duration::from_millis(300))
        .build_with_source(source);
    let (code, message) = call(&mesh, None).await.unwrap_err();
    assert_eq!(code, Code::Unavailable);
    assert!(message.contains("has not synced"), "{message}");
    server.stop_stalling();
    tokio::time::timeout(Duration::from_secs(10), mesh.ready())
        .await
        .expect("syncs once the server answers");
    assert_eq!(
        call(&mesh, None).await.unwrap(),
        "echo-v1",
        "no routes: pass-through to echo's endpoints"
    );
}

#[tokio::test]
async fn compaction_relists_and_drops_objects_deleted_meanwhile() {
    let server = ApiServer::start().await;
    let (_v1, _v2) = backends(&server).await;
    server.apply(header_route("echo-v2")).unwrap();
    let mesh = mesh_for(&server);
    mesh.ready().await;
    assert_eq!(call(&mesh, None).await.unwrap(), "echo-v2");
    let lists_before = server.stats().lists(Resource::GrpcRoutes);

    // The route disappears while every watch is cut and history is compacted: the next
    // watch gets 410, relists, and the relist must not keep the deleted route.
    server.stall_requests(None);
    server.compact();
    server
        .delete(Resource::GrpcRoutes, "mesh", "split")
        .unwrap();
    server.stop_stalling();
    converge(&mesh, None, "echo-v1").await;
    assert!(
        server.stats().lists(Resource::GrpcRoutes) > lists_before,
        "relisted"
    );
}

#[tokio::test]
async fn an_outage_keeps_serving_and_changes_made_meanwhile_arrive_after() {
    let server = ApiServer::start().await;
    let (_v1, _v2) = backends(&server).await;
    server.apply(header_route("echo-v1")).unwrap();
    let mesh = mesh_for(&server);
    mesh.ready().await;

    server.refuse_connections(None).await;
    server.drop_watches();
    let down = tokio::time::Instant::now();
    while mesh.source_health().connected {
        assert!(
            down.elapsed() < Duration::from_secs(10),
            "the outage is never noticed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(mesh.source_health().disconnected_since.is_some());
    // The last good configuration keeps serving.
    for _ in 0..20 {
        assert_eq!(call(&mesh, None).await.unwrap(), "echo-v1");
    }
    // Changed while the API server is unreachable...
    server.apply(header_route("echo-v2")).unwrap();
    assert_eq!(call(&mesh, None).await.unwrap(), "echo-v1");
    // ...and picked up once it is back.
    server.accept_connections().await;
    let took = converge(&mesh, None, "echo-v2").await;
    println!("picked up the change {took:?} after the API server came back");
    let back = tokio::time::Instant::now();
    while !mesh.source_health().connected {
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "recovery is never noticed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn v1beta1_reference_grants_are_used_and_revocation_is_immediate() {
    let server = ApiServer::builder()
        .reference_grant_versions(ReferenceGrantVersions::V1Beta1Only)
        .start()
        .await
        .unwrap();
    let (_v1, _v2) = backends(&server).await;
    server
        .apply(value(service("web", "front").port("grpc", 7070).build()))
        .unwrap();
    server
        .apply(value(
            route("web", "cross")
                .parent_service("front", Some(7070))
                .rule(Rule::new().backend(Backend::service("echo-v2", 7070).namespace("mesh")))
                .build(),
        ))
        .unwrap();
    let mut beta = value(grant("mesh", "allow-web", "web", Some("echo-v2")));
    beta["apiVersion"] = json!("gateway.networking.k8s.io/v1beta1");
    server.apply(beta).unwrap();

    let source =
        KubeSource::with_client(server.client().unwrap()).watch_timeout(Duration::from_secs(2));
    let mesh = Mesh::builder()
        .namespace("web")
        .strict_reference_grants(true)
        .build_with_source(source);
    mesh.ready().await;
    let mut client = GrpcEchoClient::new(mesh.channel("front:7070").unwrap());
    let r = client.echo(EchoRequest {}).await.expect("granted");
    assert_eq!(r.metadata().get("x-echo-backend").unwrap(), "echo-v2");

    server
        .delete(Resource::ReferenceGrants, "mesh", "allow-web")
        .unwrap();
    let started = tokio::time::Instant::now();
    loop {
        match client.echo(EchoRequest {}).await {
            Err(s) if s.code() == Code::Unavailable => {
                assert!(s.message().contains("RefNotPermitted"), "{}", s.message());
                break;
            }
            _ => assert!(
                started.elapsed() < Duration::from_secs(5),
                "access never revoked"
            ),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn invalid_objects_are_rejected_alone() {
    let server = ApiServer::start().await;
    let (_v1, _v2) = backends(&server).await;
    server.apply(header_route("echo-v2")).unwrap();
    let mut bad = value(
        route("mesh", "bad")
            .parent_service("echo-v1", None)
            .rule(
                Rule::new()
                    .matches(Match::regex(Some("(unclosed"), None))
                    .backend(Backend::service("echo-v2", 7070)),
            )
            .build(),
    );
    bad["metadata"]["generation"] = json!(1);
    server.apply(bad).unwrap();
    let mesh = mesh_for(&server);
    mesh.ready().await;
    assert_eq!(
        call(&mesh, None).await.unwrap(),
        "echo-v2",
        "the valid route works"
    );
    let rejected = mesh.rejected();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0].key().name(), "bad");
    assert_eq!(
        rejected[0].field(),
        "spec.rules[0].matches[0].method.service"
    );
}
