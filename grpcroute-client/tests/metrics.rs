//! The mesh's Prometheus metrics count every call once, under the series of the frontend,
//! route, rule and backend that took it and its final gRPC status, whichever way the call
//! ends: OK, a status from the server's trailers, a refusal by the mesh, a caller that gave
//! up. Configuration gauges follow updates.

use std::{convert::Infallible, net::IpAddr, net::SocketAddr, time::Duration};

use bytes::Bytes;
use grpcroute_client::{
    Mesh, Resources, RoutedTo,
    build::{Backend, Match, Rule, endpoints, route, service},
};
use grpcroute_echo::{EchoConfig, EchoServer};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use tonic::body::Body;
use tower::ServiceExt;

const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn grpc_request(path: &str) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Body::new(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0]))))
        .unwrap()
}

/// Sends one call and reads its response to the end, as a gRPC client does.
async fn call(mesh: &Mesh, target: &str, path: &str) -> (RoutedTo, Response<Bytes>) {
    let response = mesh
        .channel(target)
        .unwrap()
        .oneshot(grpc_request(path))
        .await
        .unwrap();
    let routed = response.extensions().get::<RoutedTo>().cloned().unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (routed, Response::from_parts(parts, body))
}

/// The value of the sample `name{labels}` in `text`, where `labels` is the exact label
/// list as encoded; `None` when there is no such sample.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.parse().unwrap())
}

fn calls(text: &str, frontend: &str, route: &str, rule: &str, backend: &str, code: &str) -> f64 {
    let labels = format!(
        "frontend=\"{frontend}\",route=\"{route}\",rule=\"{rule}\",backend=\"{backend}\",grpc_code=\"{code}\""
    );
    sample(text, "grpcroute_client_calls_total", &labels).unwrap_or(0.0)
}

fn duration_count(text: &str, frontend: &str, route: &str, rule: &str, backend: &str) -> f64 {
    let labels =
        format!("frontend=\"{frontend}\",route=\"{route}\",rule=\"{rule}\",backend=\"{backend}\"");
    sample(
        text,
        "grpcroute_client_call_duration_seconds_count",
        &labels,
    )
    .unwrap_or(0.0)
}

/// A server whose every call ends with status `code` in its trailers, after one message:
/// the status only the response body's end reveals.
async fn trailer_status_server(code: u8) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: Request<hyper::body::Incoming>| async move {
                        let _ = req.into_body().collect().await;
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", HeaderValue::from(u16::from(code)));
                        trailers.insert("grpc-message", HeaderValue::from_static("from-trailers"));
                        let frames = futures_util::stream::iter([
                            Ok::<_, Infallible>(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
                            Ok(Frame::trailers(trailers)),
                        ]);
                        let response = Response::builder()
                            .header("content-type", "application/grpc")
                            .body(StreamBody::new(frames))
                            .unwrap();
                        Ok::<_, Infallible>(response)
                    },
                );
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
            });
        }
    });
    addr
}

/// `shop/front:50051`: `pkg.Svc/Split` 3:1 over `v1`/`v2`, `pkg.Svc/Gone` to a Service
/// that does not exist, `pkg.Svc/Fail` to a server that fails every call in its trailers,
/// `pkg.Svc/Slow` to a server that answers after a minute. `shop/plain:50051` has no
/// route.
async fn setup() -> (Mesh, Vec<EchoServer>, Resources) {
    let v1 = EchoServer::start(EchoConfig::new("v1")).await.unwrap();
    let v2 = EchoServer::start(EchoConfig::new("v2")).await.unwrap();
    let slow = EchoServer::start(EchoConfig::new("slow").delay(Duration::from_secs(60)))
        .await
        .unwrap();
    let failing = trailer_status_server(5).await;
    let mut resources = Resources::new()
        .with(
            route("shop", "split")
                .parent_service("front", Some(50051))
                .rule(
                    Rule::new()
                        .matches(Match::method("pkg.Svc", "Split"))
                        .backend(Backend::service("v1", 50051).weight(3))
                        .backend(Backend::service("v2", 50051).weight(1)),
                )
                .rule(
                    Rule::new()
                        .matches(Match::method("pkg.Svc", "Gone"))
                        .backend(Backend::service("gone", 50051)),
                )
                .rule(
                    Rule::new()
                        .matches(Match::method("pkg.Svc", "Fail"))
                        .backend(Backend::service("failing", 50051)),
                )
                .rule(
                    Rule::new()
                        .matches(Match::method("pkg.Svc", "Slow"))
                        .backend(Backend::service("slow", 50051)),
                ),
        )
        .with(service("shop", "front").port("grpc", 50051));
    for (name, addr) in [
        ("v1", v1.addr()),
        ("v2", v2.addr()),
        ("slow", slow.addr()),
        ("failing", failing),
        ("plain", v1.addr()),
    ] {
        resources.push(service("shop", name).port("grpc", 50051));
        resources.push(
            endpoints("shop", name)
                .port("grpc", addr.port())
                .ready(LOCALHOST),
        );
    }
    let mesh = Mesh::builder()
        .namespace("shop")
        .report_routing(true)
        .seed(7)
        .build();
    assert!(mesh.update(&resources).rejected.is_empty());
    (mesh, vec![v1, v2, slow], resources)
}

const FRONT: &str = "shop/front:50051";
const SPLIT: &str = "shop/split";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_counted_once_under_its_route_backend_and_status() {
    let (mesh, _servers, _) = setup().await;
    let metrics = mesh.metrics();

    // Weighted split: the series agree exactly with where the calls went.
    let mut to_v1 = 0.0;
    let n = 200;
    for _ in 0..n {
        let (routed, response) = call(&mesh, "front:50051", "/pkg.Svc/Split").await;
        assert_eq!(
            response.headers()["x-echo-backend"].to_str().unwrap().len(),
            2
        );
        if routed.backend.unwrap().service.name() == "v1" {
            to_v1 += 1.0;
        }
    }
    let text = metrics.encode();
    let v1 = calls(&text, FRONT, SPLIT, "0", "shop/v1:50051", "OK");
    let v2 = calls(&text, FRONT, SPLIT, "0", "shop/v2:50051", "OK");
    assert_eq!(v1, to_v1, "{text}");
    assert_eq!(v1 + v2, f64::from(n));
    assert!(v2 > 0.0, "both backends took calls");
    assert_eq!(
        duration_count(&text, FRONT, SPLIT, "0", "shop/v1:50051"),
        v1
    );

    // The status comes in the trailers, after a message.
    for _ in 0..3 {
        let (_, response) = call(&mesh, "front:50051", "/pkg.Svc/Fail").await;
        assert_eq!(response.status(), 200);
    }
    // Refused by the mesh: an invalid backend, no matching rule, no such Service.
    let (_, r) = call(&mesh, "front:50051", "/pkg.Svc/Gone").await;
    assert_eq!(r.headers()["grpc-status"], "14");
    let (_, r) = call(&mesh, "front:50051", "/pkg.Svc/Other").await;
    assert_eq!(r.headers()["grpc-status"], "12");
    let (_, r) = call(&mesh, "nope:50051", "/pkg.Svc/Split").await;
    assert_eq!(r.headers()["grpc-status"], "14");
    // Pass-through.
    call(&mesh, "plain:50051", "/any.Svc/Method").await;
    // The caller gives up before the answer.
    let slow = mesh
        .channel("front:50051")
        .unwrap()
        .oneshot(grpc_request("/pkg.Svc/Slow"));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), slow)
            .await
            .is_err()
    );

    let text = metrics.encode();
    let failing = "shop/failing:50051";
    assert_eq!(
        calls(&text, FRONT, SPLIT, "2", failing, "NOT_FOUND"),
        3.0,
        "{text}"
    );
    assert_eq!(calls(&text, FRONT, SPLIT, "2", failing, "OK"), 0.0);
    assert_eq!(
        calls(&text, FRONT, SPLIT, "1", "shop/gone:50051", "UNAVAILABLE"),
        1.0
    );
    assert_eq!(calls(&text, FRONT, "", "", "", "UNIMPLEMENTED"), 1.0);
    assert_eq!(calls(&text, "", "", "", "", "UNAVAILABLE"), 1.0);
    assert_eq!(
        calls(&text, "shop/plain:50051", "", "", "shop/plain:50051", "OK"),
        1.0
    );
    assert_eq!(
        calls(&text, FRONT, SPLIT, "3", "shop/slow:50051", "CANCELLED"),
        1.0
    );
    // OK is always present, so ratios have a denominator; other codes only once seen.
    assert!(text.contains(&format!(
        "grpcroute_client_calls_total{{frontend=\"{FRONT}\",route=\"{SPLIT}\",rule=\"1\",backend=\"shop/gone:50051\",grpc_code=\"OK\"}} 0"
    )));
    assert!(!text.contains("grpc_code=\"DATA_LOSS\""));

    // The sum of every series is every call made.
    let total: f64 = text
        .lines()
        .filter(|l| l.starts_with("grpcroute_client_calls_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(total, f64::from(n) + 3.0 + 3.0 + 1.0 + 1.0);
    assert!(text.ends_with("# EOF\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_gauges_and_series_follow_updates() {
    let (mesh, servers, resources) = setup().await;
    let metrics = mesh.metrics();
    let text = metrics.encode();
    assert_eq!(
        sample(&text, "grpcroute_config_version", ""),
        None,
        "no labels"
    );
    let gauge = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .map(|v| v.parse::<f64>().unwrap())
            .unwrap()
    };
    assert_eq!(gauge(&text, "grpcroute_config_version"), 1.0);
    assert_eq!(gauge(&text, "grpcroute_config_rejected_objects"), 0.0);
    assert_eq!(gauge(&text, "grpcroute_source_connected"), 1.0);
    assert_eq!(
        gauge(&text, "grpcroute_endpoints"),
        4.0,
        "v1, v2, slow, failing"
    );
    assert!(gauge(&text, "grpcroute_config_last_update_timestamp_seconds") > 1.7e9);
    // The route's backendRef to `gone` does not resolve.
    let condition = |text: &str, c: &str| {
        sample(
            text,
            "grpcroute_route_condition",
            &format!("route=\"{SPLIT}\",parent=\"shop/front:50051\",condition=\"{c}\""),
        )
    };
    assert_eq!(condition(&text, "Accepted"), Some(1.0), "{text}");
    assert_eq!(condition(&text, "ResolvedRefs"), Some(0.0));

    call(&mesh, "front:50051", "/pkg.Svc/Split").await;
    let text = metrics.encode();
    assert!(text.contains("route=\"shop/split\""));
    let split_calls = |text: &str| {
        calls(text, FRONT, SPLIT, "0", "shop/v1:50051", "OK")
            + calls(text, FRONT, SPLIT, "0", "shop/v2:50051", "OK")
    };
    assert_eq!(split_calls(&text), 1.0);

    // An update that keeps the route (here: one more Service) keeps its series and counts,
    // including before the new table's first call into them.
    let kept = resources.with(service("shop", "extra").port("grpc", 50051));
    assert!(mesh.update(&kept).rejected.is_empty());
    assert_eq!(
        split_calls(&metrics.encode()),
        1.0,
        "kept across the update"
    );
    call(&mesh, "front:50051", "/pkg.Svc/Split").await;
    assert_eq!(split_calls(&metrics.encode()), 2.0, "and counting on");

    // The route goes away: its series with it; an invalid object is counted.
    let v1 = &servers[0];
    let resources = Resources::new()
        .with(service("shop", "front").port("grpc", 50051))
        .with(
            endpoints("shop", "front")
                .port("grpc", v1.addr().port())
                .ready(LOCALHOST),
        )
        .with(
            serde_json::from_value::<gateway_api::grpcroutes::GrpcRoute>(serde_json::json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "GRPCRoute",
                "metadata": {"name": "bad", "namespace": "shop"},
                "spec": {"rules": [{"matches": [{"method": {"type": "RegularExpression", "service": "("}}]}]}
            }))
            .unwrap(),
        );
    let report = mesh.update(&resources);
    assert_eq!(report.rejected.len(), 1);
    let text = metrics.encode();
    assert!(!text.contains("route=\"shop/split\""), "{text}");
    assert_eq!(gauge(&text, "grpcroute_config_version"), 3.0);
    assert_eq!(gauge(&text, "grpcroute_config_rejected_objects"), 1.0);
    assert_eq!(condition(&text, "Accepted"), None);
    call(&mesh, "front:50051", "/pkg.Svc/Split").await;
    assert_eq!(
        calls(&metrics.encode(), FRONT, "", "", FRONT, "OK"),
        1.0,
        "now a pass-through call"
    );

    // The handle does not keep the mesh alive.
    drop(mesh);
    assert_eq!(metrics.encode(), "# EOF\n");
}

#[tokio::test]
async fn registers_into_an_application_registry() {
    let mesh = Mesh::builder().namespace("shop").build();
    let mut registry = grpcroute_client::prometheus_client::registry::Registry::default();
    mesh.metrics().register(&mut registry);
    let mut text = String::new();
    grpcroute_client::prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("# TYPE grpcroute_client_calls counter"),
        "{text}"
    );
    assert!(text.contains("# TYPE grpcroute_client_call_duration_seconds histogram"));
    assert!(text.contains("grpcroute_config_version 0"));
}
