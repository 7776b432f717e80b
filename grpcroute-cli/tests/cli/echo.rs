//! `grpcroute echo`: prints where it listens, answers any method and the gRPC health
//! service, stops cleanly on SIGTERM.

use serde_json::json;

use crate::support::{Echo, keys, run, split_manifests};

#[test]
fn json_banner_names_the_bound_address() {
    let echo = Echo::start("v1");
    let banner: serde_json::Value = serde_json::from_str(&echo.banner).unwrap();
    assert_eq!(keys(&banner), ["listen", "name"]);
    assert!(echo.addr.ip().is_loopback() && echo.port() != 0);
}

#[test]
fn human_banner_names_the_address_and_sigterm_exits_0() {
    let echo = Echo::start_human("v2");
    assert!(
        echo.banner
            .starts_with("echo server v2 listening on 127.0.0.1:"),
        "{}",
        echo.banner
    );
    assert_eq!(echo.terminate(), Some(0));
}

#[test]
fn answers_any_method_and_the_health_service() {
    let echo = Echo::start("direct");
    let dir = split_manifests(echo.port(), echo.port());
    let path = dir.path().to_str().unwrap();
    let call = |method: &str, data: &str| {
        let out = run(&[
            "call",
            "-f",
            path,
            "--to",
            "direct.shop:50051",
            "--method",
            method,
            "-d",
            data,
            "--json",
        ]);
        out.exits(0);
        out.json()["by_status"].clone()
    };
    assert_eq!(call("/made.up.Service/AnyMethod", ""), json!({"OK": 1}));
    // grpc.health.v1.Health/Check for the server as a whole: SERVING.
    assert_eq!(call("/grpc.health.v1.Health/Check", ""), json!({"OK": 1}));
    // For a service it does not know (HealthCheckRequest{service: "foo"}), the real health
    // service answers NOT_FOUND: the probe is not swallowed by the catch-all.
    assert_eq!(
        call("/grpc.health.v1.Health/Check", "0a03666f6f"),
        json!({"NOT_FOUND": 1})
    );
}

#[test]
fn a_busy_port_is_an_input_error() {
    let echo = Echo::start("v1");
    run(&["echo", "--listen", &echo.addr.to_string()])
        .input_error(&["cannot listen on", &echo.addr.to_string()]);
}
