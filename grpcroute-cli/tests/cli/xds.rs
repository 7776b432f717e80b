//! `explain`, `call` and `xds-dump` for xDS listeners, against the test control plane
//! (interop-tests/xds) serving one listener over two loopback backends.

use std::{net::SocketAddr, path::PathBuf};

use grpcroute_xds_control_plane::{
    Backend, ControlPlane,
    builders::{
        ApiListener, ClusterBuilder, RouteBuilder, load_assignment, route_configuration,
        virtual_host,
    },
};
use serde_json::json;

use crate::support::{keys, run};

/// A control plane serving listener `svc` → route config `svc-rc` (virtual host `vh`,
/// domain `*`; route 0 `/pkg.Svc/` to `svc-c`, route 1 non-forwarding) → cluster `svc-c`
/// over two backends; and the bootstrap file for it.
struct Plane {
    _rt: tokio::runtime::Runtime,
    _cp: ControlPlane,
    _backends: Vec<Backend>,
    addrs: Vec<SocketAddr>,
    bootstrap: PathBuf,
    _dir: tempfile::TempDir,
}

fn plane() -> Plane {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (cp, backends) = rt.block_on(async {
        let cp = ControlPlane::start().await.unwrap();
        let b = vec![
            Backend::start("b0").await.unwrap(),
            Backend::start("b1").await.unwrap(),
        ];
        let addrs: Vec<SocketAddr> = b.iter().map(Backend::addr).collect();
        let mut other = RouteBuilder::prefix("/other.").build();
        other.action = None;
        cp.set([
            ApiListener::rds("svc", "svc-rc").build().into(),
            route_configuration(
                "svc-rc",
                vec![virtual_host(
                    "vh",
                    &["*"],
                    vec![
                        RouteBuilder::prefix("/pkg.Svc/").cluster("svc-c").build(),
                        other,
                    ],
                )],
            )
            .into(),
            ClusterBuilder::eds("svc-c").build().into(),
            load_assignment("svc-c", addrs.iter().copied()).into(),
        ]);
        (cp, b)
    });
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = dir.path().join("bootstrap.json");
    cp.bootstrap("cli").write(&bootstrap).unwrap();
    Plane {
        addrs: backends.iter().map(Backend::addr).collect(),
        _rt: rt,
        _cp: cp,
        _backends: backends,
        bootstrap,
        _dir: dir,
    }
}

#[test]
fn explain_names_listener_route_and_cluster_in_the_documented_json() {
    let p = plane();
    let boot = p.bootstrap.to_str().unwrap();
    let out = run(&[
        "explain",
        "--xds-bootstrap",
        boot,
        "--to",
        "xds:///svc",
        "--method",
        "/pkg.Svc/Call",
        "--json",
    ]);
    out.exits(0);
    let e = out.json();
    assert_eq!(e["frontend"], json!({"listener": "svc"}));
    assert_eq!(e["route_set"], "xds");
    assert_eq!(
        e["route"],
        json!({"virtual_host": "vh", "index": 0, "name": null})
    );
    assert_eq!(e["rule"], json!(null));
    assert_eq!(
        (&e["outcome"], &e["status"]),
        (&json!("forward"), &json!("OK"))
    );
    let b = &e["backends"][0];
    assert_eq!(
        keys(b),
        [
            "cluster",
            "ejected",
            "endpoints",
            "namespace",
            "port",
            "reason",
            "request_headers",
            "service",
            "share",
            "valid",
            "weight"
        ]
    );
    assert_eq!(
        (&b["cluster"], &b["namespace"], &b["service"], &b["port"]),
        (&json!("svc-c"), &json!(null), &json!(null), &json!(null))
    );
    assert_eq!(
        (&b["weight"], &b["share"], &b["valid"]),
        (&json!(1), &json!(1.0), &json!(true))
    );
    let mut endpoints: Vec<String> = b["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    endpoints.sort();
    let mut want: Vec<String> = p.addrs.iter().map(ToString::to_string).collect();
    want.sort();
    assert_eq!(endpoints, want);

    // The non-forwarding route, and no route at all: UNAVAILABLE (gRFC A28).
    for method in ["/other.Svc/Call", "/nothing.Svc/Call"] {
        let out = run(&[
            "explain",
            "--xds-bootstrap",
            boot,
            "--to",
            "xds:///svc",
            "--method",
            method,
            "--json",
            "--expect-ok",
        ]);
        out.exits(1);
        let e = out.json();
        assert_eq!(e["status"], "UNAVAILABLE", "{method}: {e}");
    }
    // The human form names the listener, route and cluster.
    let out = run(&[
        "explain",
        "--xds-bootstrap",
        boot,
        "--to",
        "xds:///svc",
        "--method",
        "/pkg.Svc/Call",
    ]);
    out.exits(0);
    for needle in [
        "xDS listener svc",
        "virtual host \"vh\" route 0",
        "cluster svc-c",
    ] {
        assert!(out.stdout.contains(needle), "{needle}:\n{}", out.stdout);
    }
}

#[test]
fn call_tallies_by_cluster() {
    let p = plane();
    let out = run(&[
        "call",
        "--xds-bootstrap",
        p.bootstrap.to_str().unwrap(),
        "--to",
        "xds:///svc",
        "--method",
        "/pkg.Svc/Call",
        "-n",
        "20",
        "-c",
        "4",
        "--json",
        "--expect-ok",
    ]);
    out.exits(0);
    let r = out.json();
    assert_eq!(r["by_backend"], json!({"svc-c": 20}));
    assert_eq!(r["by_status"], json!({"OK": 20}));
}

#[test]
fn xds_dump_shows_every_resource_acked() {
    let p = plane();
    let boot = p.bootstrap.to_str().unwrap();
    let out = run(&[
        "xds-dump",
        "--xds-bootstrap",
        boot,
        "--listener",
        "svc",
        "--json",
    ]);
    out.exits(0);
    let d = out.json();
    assert_eq!(d["connected"], true);
    let mut seen: Vec<(String, String, String)> = d["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["resource_type"].as_str().unwrap().to_string(),
                r["name"].as_str().unwrap().to_string(),
                r["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    let ack = |t: &str, n: &str| (t.to_string(), n.to_string(), "ACKED".to_string());
    assert_eq!(
        seen,
        [
            ack("Cluster", "svc-c"),
            ack("ClusterLoadAssignment", "svc-c"),
            ack("Listener", "svc"),
            ack("RouteConfiguration", "svc-rc"),
        ]
    );
    let out = run(&[
        "xds-dump",
        "--xds-bootstrap",
        boot,
        "--listener",
        "xds:///svc",
    ]);
    out.exits(0);
    assert!(out.stdout.contains("connected"), "{}", out.stdout);
    assert!(out.stdout.contains("ACKED"), "{}", out.stdout);

    // A listener that does not exist stays REQUESTED within a short wait: exit 1.
    let out = run(&[
        "xds-dump",
        "--xds-bootstrap",
        boot,
        "--listener",
        "missing",
        "--wait",
        "1",
        "--json",
    ]);
    out.exits(1);
    assert_eq!(out.json()["resources"][0]["state"], "REQUESTED");
}

#[test]
fn a_bad_bootstrap_is_an_input_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    std::fs::write(&path, r#"{"xds_servers": []}"#).unwrap();
    let out = run(&[
        "explain",
        "--xds-bootstrap",
        path.to_str().unwrap(),
        "--to",
        "xds:///svc",
        "--method",
        "/pkg.Svc/Call",
    ]);
    out.input_error(&["--xds-bootstrap", "bad.json", "xds_servers"]);
}
