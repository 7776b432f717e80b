//! Smoke test: one header rule and a default rule over two loopback echo backends.

use grpcroute_client::{
    Mesh, Resources,
    build::{Backend, Match, Rule, endpoints, route, service},
};
use grpcroute_echo::{
    EchoConfig, EchoServer,
    pb::{EchoRequest, grpc_echo_client::GrpcEchoClient},
};

#[tokio::test]
async fn routes_by_header_and_weight() {
    let v1 = EchoServer::start(EchoConfig::new("echo-v1")).await.unwrap();
    let v2 = EchoServer::start(EchoConfig::new("echo-v2")).await.unwrap();
    let ip = |s: &EchoServer| s.addr().ip();
    let resources = Resources::new()
        .with(service("ns", "echo").port("grpc", 7070))
        .with(service("ns", "echo-v1").port("grpc", 7070))
        .with(service("ns", "echo-v2").port("grpc", 7070))
        .with(
            endpoints("ns", "echo-v1")
                .port("grpc", v1.addr().port())
                .ready(ip(&v1)),
        )
        .with(
            endpoints("ns", "echo-v2")
                .port("grpc", v2.addr().port())
                .ready(ip(&v2)),
        )
        .with(
            route("ns", "split")
                .parent_service("echo", Some(7070))
                .rule(
                    Rule::new()
                        .matches(Match::any().header("x-group", "b"))
                        .backend(Backend::service("echo-v2", 7070)),
                )
                .rule(Rule::new().backend(Backend::service("echo-v1", 7070))),
        );
    let mesh = Mesh::builder().namespace("ns").build();
    let report = mesh.update(&resources);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    let mut client = GrpcEchoClient::new(mesh.channel("echo:7070").unwrap());
    let r = client.echo(EchoRequest {}).await.unwrap();
    assert_eq!(r.metadata().get("x-echo-backend").unwrap(), "echo-v1");
    let mut req = tonic::Request::new(EchoRequest {});
    req.metadata_mut().insert("x-group", "b".parse().unwrap());
    let r = client.echo(req).await.unwrap();
    assert_eq!(r.metadata().get("x-echo-backend").unwrap(), "echo-v2");
    assert_eq!(
        r.get_ref().assertions.as_ref().unwrap().authority,
        "echo:7070"
    );
}
