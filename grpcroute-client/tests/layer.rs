//! Which calls [`MeshLayer`] claims, before and after the first configuration, and that the
//! calls it routes never wait for the wrapped service.

use std::{
    convert::Infallible,
    net::IpAddr,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use grpcroute_client::{
    Mesh, Resources, RoutedTo,
    build::{endpoints, service},
};
use grpcroute_echo::{EchoConfig, EchoServer};
use http::{Request, Response};
use http_body_util::Full;
use tokio::time::Instant;
use tonic::{Code, body::Body};
use tower::{Layer, Service, ServiceExt};

const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
const BOUND: Duration = Duration::from_secs(10);

/// The wrapped service: answers OK and records the authority of every call it gets.
/// `ready: false` makes it never ready.
#[derive(Clone)]
struct Inner {
    seen: Arc<Mutex<Vec<String>>>,
    ready: bool,
}

impl Service<Request<Body>> for Inner {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.ready {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let authority = req.uri().authority().map(ToString::to_string);
        self.seen
            .lock()
            .unwrap()
            .push(authority.unwrap_or_default());
        std::future::ready(Ok(Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", "0")
            .header("x-from", "inner")
            .body(Body::empty())
            .unwrap()))
    }
}

fn inner(ready: bool) -> Inner {
    Inner {
        seen: Arc::new(Mutex::new(Vec::new())),
        ready,
    }
}

fn request(authority: &str) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri(format!("http://{authority}/pkg.Svc/Method"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Body::new(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0]))))
        .unwrap()
}

/// `app/order:50051` (ClusterIP 10.96.0.20) with one endpoint, the echo server.
fn config(echo: &EchoServer) -> Resources {
    Resources::new()
        .with(
            service("app", "order")
                .cluster_ip("10.96.0.20")
                .port("grpc", 50051),
        )
        .with(
            endpoints("app", "order")
                .port("grpc", echo.addr().port())
                .ready(LOCALHOST),
        )
}

/// Calls through the layer: the gRPC code, and whether the wrapped service answered.
async fn call(svc: &mut grpcroute_client::Routed<Inner>, authority: &str) -> (Code, bool) {
    let response = tokio::time::timeout(BOUND, async {
        svc.ready()
            .await
            .unwrap()
            .call(request(authority))
            .await
            .unwrap()
    })
    .await
    .expect("the call ends");
    let from_inner = response.headers().contains_key("x-from");
    let code = tonic::Status::from_header_map(response.headers()).map_or(Code::Ok, |s| s.code());
    (code, from_inner)
}

#[tokio::test]
async fn before_the_first_configuration_a_mesh_call_fails_closed() {
    let mesh = Mesh::builder()
        .namespace("app")
        .ready_timeout(Duration::from_millis(200))
        .report_routing(true)
        .build();
    let inner = inner(true);
    let mut svc = mesh.layer().layer(inner.clone());
    for authority in [
        "order.app:50051",
        "order:50051",
        "example.com:443",
        "10.96.0.20:50051",
    ] {
        let (code, from_inner) = call(&mut svc, authority).await;
        assert_eq!(
            (code, from_inner),
            (Code::Unavailable, false),
            "{authority}: could be a Service of the mesh, so it is not sent unrouted"
        );
    }
    assert!(inner.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn names_no_service_can_have_go_to_the_wrapped_service_at_once() {
    // No configuration ever arrives, and the ready timeout is long: nothing here may wait.
    let mesh = Mesh::builder()
        .namespace("app")
        .ready_timeout(Duration::from_secs(30))
        .build();
    let inner = inner(true);
    let mut svc = mesh.layer().layer(inner.clone());
    for authority in [
        "api.example.com:443",
        "localhost:50051",
        "127.0.0.1:50051",
        "[::1]:50051",
        "169.254.169.254:80",
        "0.0.0.0:80",
    ] {
        let started = Instant::now();
        let (code, from_inner) = call(&mut svc, authority).await;
        assert_eq!((code, from_inner), (Code::Ok, true), "{authority}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{authority} waited"
        );
    }
}

#[tokio::test]
async fn after_the_first_configuration_the_configuration_decides() {
    let echo = EchoServer::start(EchoConfig::new("order-v1"))
        .await
        .unwrap();
    let mesh = Mesh::builder()
        .namespace("app")
        .report_routing(true)
        .build();
    mesh.update(&config(&echo));
    let inner = inner(true);
    let mut svc = mesh.layer().layer(inner.clone());
    // The mesh's Service, by name and by ClusterIP.
    for authority in [
        "order.app:50051",
        "order:50051",
        "order.app.svc.cluster.local:50051",
        "10.96.0.20:50051",
    ] {
        let (code, from_inner) = call(&mut svc, authority).await;
        assert_eq!((code, from_inner), (Code::Ok, false), "{authority}");
    }
    // Two-label external names and IPs that are no ClusterIP are not the mesh's.
    for authority in ["example.com:443", "10.1.2.3:80", "other.app:50051"] {
        let (code, from_inner) = call(&mut svc, authority).await;
        assert_eq!((code, from_inner), (Code::Ok, true), "{authority}");
    }
    assert_eq!(
        *inner.seen.lock().unwrap(),
        ["example.com:443", "10.1.2.3:80", "other.app:50051"]
    );
    assert_eq!(echo.calls(), 4);
}

#[tokio::test]
async fn a_configuration_arriving_while_a_call_waits_routes_it() {
    let echo = EchoServer::start(EchoConfig::new("order-v1"))
        .await
        .unwrap();
    let mesh = Mesh::builder()
        .namespace("app")
        .ready_timeout(Duration::from_secs(5))
        .report_routing(true)
        .build();
    let inner = inner(true);
    let mut svc = mesh.layer().layer(inner.clone());
    let waiting = tokio::spawn(async move { call(&mut svc, "order.app:50051").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    mesh.update(&config(&echo));
    let (code, from_inner) = waiting.await.unwrap();
    assert_eq!((code, from_inner), (Code::Ok, false));
    assert_eq!(echo.calls(), 1);
}

#[tokio::test]
async fn calls_the_mesh_routes_do_not_wait_for_the_wrapped_service() {
    let echo = EchoServer::start(EchoConfig::new("order-v1"))
        .await
        .unwrap();
    let mesh = Mesh::builder()
        .namespace("app")
        .report_routing(true)
        .build();
    mesh.update(&config(&echo));
    let mut svc = mesh.layer().layer(inner(false));
    let response = tokio::time::timeout(BOUND, async {
        svc.ready()
            .await
            .unwrap()
            .call(request("order.app:50051"))
            .await
            .unwrap()
    })
    .await
    .expect("a mesh call is not held up by the wrapped service's readiness");
    assert!(response.extensions().get::<RoutedTo>().is_some());
    assert_eq!(echo.calls(), 1);
    // A call that goes to the wrapped service does wait for it (bounded here).
    let pending = tokio::time::timeout(Duration::from_millis(200), async {
        svc.ready()
            .await
            .unwrap()
            .call(request("example.com:443"))
            .await
    })
    .await;
    assert!(pending.is_err(), "the wrapped service is never ready");
}
