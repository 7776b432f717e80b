//! A call's deadline (its `grpc-timeout`, or the mesh's default timeout) bounds everything
//! the mesh does for it: waiting for the first configuration, connecting, the response
//! headers and the response body. At expiry the call ends `DEADLINE_EXCEEDED` with a
//! message saying where the time went, and the stream is reset so the server stops.

mod support;

use std::{sync::atomic::Ordering, time::Duration};

use bytes::Bytes;
use grpcroute_client::{
    Mesh, Resources,
    build::{endpoints, service},
};
use http::Request;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tonic::{Code, body::Body};
use tower::ServiceExt;

use self::support::{
    Behaviour, LOCALHOST, SLACK, TestServer, blackhole, saturated, tls_alert_server,
};

fn resources(port: u16) -> Resources {
    Resources::new()
        .with(service("shop", "slow").port("grpc", 50051))
        .with(
            endpoints("shop", "slow")
                .port("grpc", port)
                .ready(LOCALHOST),
        )
}

fn mesh(builder: grpcroute_client::MeshBuilder, port: u16) -> Mesh {
    let mesh = builder.namespace("shop").build();
    assert!(mesh.update(&resources(port)).rejected.is_empty());
    mesh
}

fn request(timeout: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder()
        .method("POST")
        .uri("/pkg.Svc/Method")
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = timeout {
        builder = builder.header("grpc-timeout", t);
    }
    builder
        .body(Body::new(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0]))))
        .unwrap()
}

/// Makes a call through `mesh` and reads its whole response: the status, its message, and
/// how long it took.
async fn call(mesh: &Mesh, timeout: Option<&str>) -> (Code, String, Duration) {
    let started = Instant::now();
    let channel = mesh.channel("slow.shop:50051").unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(20), async {
        let response = channel.oneshot(request(timeout)).await.unwrap();
        let headers = response.headers().clone();
        if let Some(status) = tonic::Status::from_header_map(&headers) {
            return (status.code(), status.message().to_string());
        }
        match response.into_body().collect().await {
            Ok(collected) => {
                let trailers = collected.trailers().cloned().unwrap_or_default();
                let status = tonic::Status::from_header_map(&trailers)
                    .unwrap_or_else(|| tonic::Status::unknown("no status"));
                (status.code(), status.message().to_string())
            }
            Err(status) => (status.code(), status.message().to_string()),
        }
    })
    .await
    .expect("the call ends (the test's own bound of 20 s)");
    (outcome.0, outcome.1, started.elapsed())
}

#[tokio::test]
async fn a_silent_endpoint_ends_at_the_deadline_and_its_stream_is_reset() {
    let server = TestServer::start(Behaviour::Silent).await;
    let mesh = mesh(Mesh::builder(), server.addr.port());
    let (code, message, took) = call(&mesh, Some("200m")).await;
    assert_eq!(code, Code::DeadlineExceeded, "{message}");
    assert!(
        took >= Duration::from_millis(190) && took < SLACK,
        "ended after {took:?}"
    );
    assert!(
        message.contains(&format!(
            "waiting for the response of endpoint {} (backend shop/slow:50051)",
            server.addr
        )),
        "{message}"
    );
    assert_eq!(server.started.load(Ordering::SeqCst), 1);
    server.wait_abandoned(1).await;
}

#[tokio::test]
async fn a_response_that_stalls_mid_body_ends_at_the_deadline() {
    let server = TestServer::start(Behaviour::StallsMidBody).await;
    let mesh = mesh(Mesh::builder(), server.addr.port());
    let (code, message, took) = call(&mesh, Some("300m")).await;
    assert_eq!(code, Code::DeadlineExceeded, "{message}");
    assert!(
        took >= Duration::from_millis(290) && took < SLACK,
        "{took:?}"
    );
    assert!(
        message.contains("waiting for the rest of the response of endpoint"),
        "{message}"
    );
    server.wait_abandoned(1).await;
}

#[tokio::test]
async fn connecting_counts_against_the_deadline() {
    let (addr, _fillers, _listener) = saturated().await;
    // The connect timeout alone would allow 10 s; the call's deadline is what ends it.
    let mesh = mesh(
        Mesh::builder().connect_timeout(Duration::from_secs(10)),
        addr.port(),
    );
    let (code, message, took) = call(&mesh, Some("250m")).await;
    assert_eq!(code, Code::DeadlineExceeded, "{message}");
    assert!(took < SLACK, "{took:?}");
    assert!(
        message.contains(&format!(
            "connecting to endpoint {addr} of backend shop/slow:50051"
        )),
        "{message}"
    );
}

#[tokio::test]
async fn a_server_that_never_speaks_http2_ends_at_the_deadline() {
    // TCP connects; the server never sends its HTTP/2 settings nor answers.
    let (addr, _hole) = blackhole().await;
    let mesh = mesh(
        Mesh::builder().connect_timeout(Duration::from_secs(10)),
        addr.port(),
    );
    let (code, message, took) = call(&mesh, Some("250m")).await;
    assert_eq!(code, Code::DeadlineExceeded, "{message}");
    assert!(took < SLACK, "{took:?}");
    assert!(message.contains(&format!("endpoint {addr}")), "{message}");
}

/// A server that answers in something other than HTTP/2 (a TLS server's alert to a
/// plaintext client) breaks the connection: the call fails UNAVAILABLE at once, as gRPC's
/// own clients report a broken connection, not INTERNAL and not at its deadline.
#[tokio::test]
async fn a_server_answering_in_another_protocol_fails_the_call_unavailable() {
    let (addr, _server) = tls_alert_server().await;
    let mesh = mesh(Mesh::builder(), addr.port());
    let (code, message, took) = call(&mesh, Some("5S")).await;
    assert_eq!(code, Code::Unavailable, "{message}");
    assert!(took < SLACK, "{took:?}");
    assert!(message.contains(&format!("{addr}")), "{message}");
}

#[tokio::test]
async fn waiting_for_the_first_configuration_counts_against_the_deadline() {
    let mesh = Mesh::builder()
        .namespace("shop")
        .ready_timeout(Duration::from_secs(30))
        .build();
    let (code, message, took) = call(&mesh, Some("150m")).await;
    assert_eq!(code, Code::DeadlineExceeded, "{message}");
    assert!(took < SLACK, "{took:?}");
    assert!(
        message.contains("waiting for the mesh's first configuration"),
        "{message}"
    );
    // Without a deadline, the ready timeout applies, and the call fails UNAVAILABLE.
    let mesh = Mesh::builder()
        .namespace("shop")
        .ready_timeout(Duration::from_millis(100))
        .build();
    let (code, message, _) = call(&mesh, None).await;
    assert_eq!(code, Code::Unavailable, "{message}");
    assert!(message.contains("not synced"), "{message}");
}

#[tokio::test]
async fn the_default_timeout_applies_to_calls_without_one_and_is_sent_to_the_server() {
    let server = TestServer::start(Behaviour::Silent).await;
    let mesh = mesh(
        Mesh::builder().default_timeout(Duration::from_millis(1_000)),
        server.addr.port(),
    );
    let (code, message, took) = call(&mesh, None).await;
    assert_eq!(code, Code::DeadlineExceeded, "{message}");
    assert!(message.contains("deadline of 1s"), "{message}");
    assert!(took < SLACK, "{took:?}");
    let sent = server.timeouts.lock().unwrap()[0]
        .clone()
        .expect("grpc-timeout sent");
    let sent = grpc_timeout(&sent);
    // What is left after the connect: most of it, however slow a busy machine connects.
    assert!(
        sent <= Duration::from_millis(1_000) && sent > Duration::from_millis(500),
        "the server learns the time left: {sent:?}"
    );
    server.wait_abandoned(1).await;
}

#[tokio::test]
async fn a_call_without_a_deadline_waits_for_its_server_by_default() {
    let server = TestServer::start(Behaviour::AnswersAfter(Duration::from_millis(400))).await;
    let mesh = mesh(Mesh::builder(), server.addr.port());
    let (code, message, took) = call(&mesh, None).await;
    assert_eq!(code, Code::Ok, "{message}");
    assert!(took >= Duration::from_millis(390), "{took:?}");
    assert_eq!(
        server.timeouts.lock().unwrap()[0],
        None,
        "no deadline to send"
    );
    // A call's own timeout wins over the default, in both directions.
    let mesh = mesh_with_default(&server, Duration::from_millis(100));
    let (code, message, _) = call(&mesh, Some("2S")).await;
    assert_eq!(code, Code::Ok, "{message}");
}

fn mesh_with_default(server: &TestServer, default: Duration) -> Mesh {
    mesh(Mesh::builder().default_timeout(default), server.addr.port())
}

fn grpc_timeout(value: &str) -> Duration {
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().unwrap();
    match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        other => panic!("unit {other}"),
    }
}
