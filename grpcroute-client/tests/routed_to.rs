//! Every response the mesh routes carries a [`RoutedTo`] extension naming the route, rule,
//! backend and endpoint of the call, failed calls included.

use std::{convert::Infallible, net::IpAddr};

use bytes::Bytes;
use grpcroute_client::{
    BackendService, Mesh, ObjectKey, Resources, RoutedTo,
    build::{Backend, Match, Rule, endpoints, route, service},
};
use grpcroute_echo::{EchoConfig, EchoServer};
use http::{Request, Response};
use http_body_util::Full;
use tonic::body::Body;
use tower::{Layer, ServiceExt};

const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// `shop/front:50051` routes `pkg.Svc/Ok` to `v1` and `pkg.Svc/Gone` to a Service that
/// does not exist; `shop/plain:50051` has no route.
fn mesh(echo: &EchoServer) -> Mesh {
    mesh_reporting(echo, true)
}

fn mesh_reporting(echo: &EchoServer, report: bool) -> Mesh {
    let port = echo.addr().port();
    let resources = Resources::new()
        .with(service("shop", "front").port("grpc", 50051))
        .with(service("shop", "v1").port("grpc", 50051))
        .with(service("shop", "plain").port("grpc", 50051))
        .with(endpoints("shop", "v1").port("grpc", port).ready(LOCALHOST))
        .with(
            endpoints("shop", "plain")
                .port("grpc", port)
                .ready(LOCALHOST),
        )
        .with(
            route("shop", "split")
                .parent_service("front", Some(50051))
                .rule(
                    Rule::new()
                        .matches(Match::method("pkg.Svc", "Ok"))
                        .backend(Backend::service("v1", 50051)),
                )
                .rule(
                    Rule::new()
                        .matches(Match::method("pkg.Svc", "Gone"))
                        .backend(Backend::service("gone", 50051)),
                ),
        );
    let mesh = Mesh::builder()
        .namespace("shop")
        .report_routing(report)
        .build();
    assert!(mesh.update(&resources).rejected.is_empty());
    mesh
}

fn grpc_request(uri: &str) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        // An empty message: flag 0, length 0.
        .body(Body::new(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0]))))
        .unwrap()
}

async fn call(mesh: &Mesh, target: &str, path: &str) -> (RoutedTo, Response<Body>) {
    let channel = mesh.channel(target).unwrap();
    let response = channel.oneshot(grpc_request(path)).await.unwrap();
    let routed = response
        .extensions()
        .get::<RoutedTo>()
        .cloned()
        .expect("every routed response carries RoutedTo");
    (routed, response)
}

fn backend(namespace: &str, name: &str) -> Option<BackendService> {
    Some(BackendService {
        service: ObjectKey::new(namespace, name),
        port: Some(50051),
    })
}

#[tokio::test]
async fn names_route_rule_backend_and_endpoint_of_a_forwarded_call() {
    let echo = EchoServer::start(EchoConfig::new("v1")).await.unwrap();
    let mesh = mesh(&echo);
    let (routed, response) = call(&mesh, "front.shop:50051", "/pkg.Svc/Ok").await;
    assert_eq!(routed.route, Some(ObjectKey::new("shop", "split")));
    assert_eq!(routed.rule, Some(0));
    assert_eq!(routed.backend, backend("shop", "v1"));
    assert_eq!(routed.endpoint, Some(echo.addr()));
    assert_eq!(response.headers()["x-echo-backend"], "v1");
    assert_eq!(routed.backend.unwrap().to_string(), "shop/v1:50051");
}

#[tokio::test]
async fn names_the_picked_backend_of_a_call_that_failed_in_the_mesh() {
    let echo = EchoServer::start(EchoConfig::new("v1")).await.unwrap();
    let mesh = mesh(&echo);

    // The picked backendRef does not resolve: UNAVAILABLE, backend known, no endpoint.
    let (routed, response) = call(&mesh, "front.shop:50051", "/pkg.Svc/Gone").await;
    assert_eq!(response.headers()["grpc-status"], "14");
    assert_eq!(routed.route, Some(ObjectKey::new("shop", "split")));
    assert_eq!(routed.rule, Some(1));
    assert_eq!(routed.backend, backend("shop", "gone"));
    assert_eq!(routed.endpoint, None);

    // No rule matches: UNIMPLEMENTED, nothing was chosen.
    let (routed, response) = call(&mesh, "front.shop:50051", "/pkg.Svc/Other").await;
    assert_eq!(response.headers()["grpc-status"], "12");
    assert_eq!(routed, RoutedTo::default());

    // No such Service.
    let (routed, _) = call(&mesh, "nope.shop:50051", "/pkg.Svc/Ok").await;
    assert_eq!(routed, RoutedTo::default());
    assert_eq!(echo.calls(), 0);
}

#[tokio::test]
async fn a_pass_through_call_names_the_service_itself() {
    let echo = EchoServer::start(EchoConfig::new("plain")).await.unwrap();
    let mesh = mesh(&echo);
    let (routed, _) = call(&mesh, "plain:50051", "/any.Svc/Method").await;
    assert_eq!(routed.route, None);
    assert_eq!(routed.rule, None);
    assert_eq!(routed.backend, backend("shop", "plain"));
    assert_eq!(routed.endpoint, Some(echo.addr()));
}

#[tokio::test]
async fn the_layer_attaches_it_too() {
    let echo = EchoServer::start(EchoConfig::new("v1")).await.unwrap();
    let mesh = mesh(&echo);
    let fallback = tower::service_fn(|_: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::empty()))
    });
    let response = mesh
        .layer()
        .layer(fallback)
        .oneshot(grpc_request("http://front.shop:50051/pkg.Svc/Ok"))
        .await
        .unwrap();
    let routed = response.extensions().get::<RoutedTo>().unwrap();
    assert_eq!(routed.endpoint, Some(echo.addr()));
    assert_eq!(routed.backend, backend("shop", "v1"));
}

#[tokio::test]
async fn nothing_is_attached_unless_asked_for() {
    let echo = EchoServer::start(EchoConfig::new("checkout-v1"))
        .await
        .unwrap();
    let quiet = mesh_reporting(&echo, false);
    let channel = quiet.channel("front.shop:50051").unwrap();
    let response = channel.oneshot(grpc_request("/pkg.Svc/Ok")).await.unwrap();
    assert!(response.extensions().get::<RoutedTo>().is_none());
    assert_eq!(
        response.headers()["x-echo-backend"],
        "checkout-v1",
        "the call itself is routed"
    );
}
