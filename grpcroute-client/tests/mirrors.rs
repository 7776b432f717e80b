//! RequestMirror: the mirror receives the call as the primary was sent it (method, path,
//! metadata, whole body) whatever kind of body the request has; a mirror backend that
//! never answers holds a bounded number of mirrored calls, each for a bounded time.

mod support;

use std::{sync::atomic::Ordering, time::Duration};

use bytes::Bytes;
use grpcroute_client::{
    Mesh, Resources,
    build::{Backend, Rule, endpoints, route, service},
};
use grpcroute_echo::{EchoConfig, EchoServer};
use http::{Request, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use tonic::{Code, body::Body};
use tower::ServiceExt;

use self::support::{Behaviour, LOCALHOST, TestServer};

const BOUND: Duration = Duration::from_secs(10);

/// `app/front` routes every call to `primary` and mirrors all of them to `shadow`, adding
/// `x-stage: mirrored-rule` on the way (a rule-level request filter, which the mirror sees
/// too).
fn config(primary: u16, shadow: u16) -> Resources {
    Resources::new()
        .with(service("app", "front").port("grpc", 50051))
        .with(service("app", "primary").port("grpc", 50051))
        .with(service("app", "shadow").port("grpc", 50051))
        .with(
            endpoints("app", "primary")
                .port("grpc", primary)
                .ready(LOCALHOST),
        )
        .with(
            endpoints("app", "shadow")
                .port("grpc", shadow)
                .ready(LOCALHOST),
        )
        .with(
            route("app", "mirrored")
                .parent_service("front", Some(50051))
                .rule(
                    Rule::new()
                        .set_request_header("x-stage", "mirrored-rule")
                        .mirror("shadow", 50051, 100)
                        .backend(Backend::service("primary", 50051)),
                ),
        )
}

/// A call to a method the echo servers answer only once they have read the request to its
/// end (so a copy cut short is not counted), with `body`.
fn request(body: Body, tag: &str) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri("/pkg.Mirrored/Call")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-tag", tag)
        .body(body)
        .unwrap()
}

const EMPTY_MESSAGE: &[u8] = &[0, 0, 0, 0, 0];

async fn primary_call(mesh: &Mesh, req: Request<Body>) -> Code {
    let channel = mesh.channel("front.app:50051").unwrap();
    tokio::time::timeout(BOUND, async {
        let response = channel.oneshot(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap_or_default();
        tonic::Status::from_header_map(&trailers).map_or(Code::Ok, |s| s.code())
    })
    .await
    .expect("the primary call ends")
}

/// Waits until `server` has answered `n` calls.
async fn answered(server: &EchoServer, n: u64) {
    let waited = tokio::time::timeout(BOUND, async {
        while server.calls() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "the mirror answered {} of {n} calls",
        server.calls()
    );
}

#[tokio::test]
async fn mirrors_receive_every_body_kind_whole_with_the_primary_metadata() {
    let primary = EchoServer::start(EchoConfig::new("primary")).await.unwrap();
    let shadow = EchoServer::start(EchoConfig::new("shadow")).await.unwrap();
    let mesh = Mesh::builder().namespace("app").build();
    mesh.update(&config(primary.addr().port(), shadow.addr().port()));

    // A body that ends through `is_end_stream` (hyper then never polls it again).
    let full = Body::new(Full::new(Bytes::from_static(EMPTY_MESSAGE)));
    // A streamed body: the message in two frames, then the end.
    let frames = futures_util::stream::iter([
        Ok::<_, tonic::Status>(Frame::data(Bytes::from_static(&EMPTY_MESSAGE[..2]))),
        Ok(Frame::data(Bytes::from_static(&EMPTY_MESSAGE[2..]))),
    ]);
    let streamed = Body::new(StreamBody::new(frames));
    // A body over before it starts (no frame at all).
    let empty = Body::empty();

    for (body, tag) in [(full, "full"), (streamed, "streamed"), (empty, "empty")] {
        primary_call(&mesh, request(body, tag)).await;
        // The mirror answers every call the primary answered: its copies arrived whole.
        answered(&shadow, primary.calls()).await;
        let received = tokio::time::timeout(BOUND, async {
            loop {
                if let Some(r) = shadow
                    .received()
                    .into_iter()
                    .find(|r| r.headers.get("x-tag").is_some_and(|v| v == tag))
                {
                    return r;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the mirror never received the {tag} call"));
        assert_eq!(received.method, http::Method::POST, "{tag}");
        assert_eq!(received.path, "/pkg.Mirrored/Call", "{tag}");
        assert_eq!(received.headers["x-stage"], "mirrored-rule", "{tag}");
        assert_eq!(
            received.headers["content-type"], "application/grpc",
            "{tag}"
        );
    }
    assert_eq!(shadow.calls(), primary.calls());
    assert_eq!(shadow.calls(), 3);
}

#[tokio::test]
async fn a_silent_mirror_holds_a_bounded_number_of_calls_each_for_the_mirror_timeout() {
    let primary = EchoServer::start(EchoConfig::new("primary")).await.unwrap();
    let hole = TestServer::start(Behaviour::Silent).await;
    let mesh = Mesh::builder()
        .namespace("app")
        .mirror_limits(4, Duration::from_millis(500))
        .build();
    mesh.update(&config(primary.addr().port(), hole.addr.port()));

    for i in 0..10 {
        let body = Body::new(Full::new(Bytes::from_static(EMPTY_MESSAGE)));
        assert_eq!(
            primary_call(&mesh, request(body, &i.to_string())).await,
            Code::Ok,
            "the primary never waits for its mirror"
        );
    }
    // Four mirrored calls reached the silent backend; six were dropped.
    let metrics = mesh.metrics().encode();
    assert!(
        metrics.contains(r#"grpcroute_client_mirrors_dropped_total{backend="app/shadow:50051"} 6"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"grpcroute_client_mirrors_in_flight{backend="app/shadow:50051"} 4"#),
        "{metrics}"
    );
    // At the mirror timeout they are abandoned, and their streams reset.
    hole.wait_abandoned(4).await;
    assert_eq!(hole.started.load(Ordering::SeqCst), 4);
    let metrics = mesh.metrics().encode();
    assert!(
        metrics
            .contains(r#"grpcroute_client_mirrors_timed_out_total{backend="app/shadow:50051"} 4"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"grpcroute_client_mirrors_in_flight{backend="app/shadow:50051"} 0"#),
        "{metrics}"
    );
    // With the slots free again, the next call is mirrored.
    let body = Body::new(Full::new(Bytes::from_static(EMPTY_MESSAGE)));
    primary_call(&mesh, request(body, "after")).await;
    tokio::time::timeout(BOUND, async {
        while hole.started.load(Ordering::SeqCst) < 5 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a mirrored call after the others timed out");
}
