//! Wire interop with an independent gRPC implementation: backends served by Python `grpcio`
//! (gRPC C-core, pinned in `python/requirements.txt`) behind the mesh. Header routing, a
//! weighted split, request filters, metadata, message bodies and non-OK statuses must all
//! cross unchanged. Python and pip are required: without them this test fails.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use grpcroute_client::{
    Mesh, Resources,
    build::{Backend, Match, Rule, endpoints, route, service},
};
use grpcroute_interop_tests::{
    GRPC_PORT, LOOPBACK, assert_share, backend, call, call_with, echoed, metadata,
    python::{PythonServer, python_dir},
    tally,
};
use tonic::Code;

const NS: &str = "py";
const PATH: &str = "/interop.Echo/Any";

/// The grpcio version `requirements.txt` pins.
fn pinned_grpcio() -> anyhow::Result<String> {
    let text = std::fs::read_to_string(python_dir().join("requirements.txt"))?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("grpcio=="))
        .map(str::to_string)
        .context("requirements.txt pins no grpcio")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_backends_behind_the_mesh() -> anyhow::Result<()> {
    let names = ["py-v1-0", "py-v1-1", "py-v2-0", "py-v2-1"];
    let mut starting = tokio::task::JoinSet::new();
    for name in names {
        starting.spawn(PythonServer::start(name));
    }
    let mut servers = Vec::new();
    while let Some(server) = starting.join_next().await {
        servers.push(server??);
    }
    servers.sort_by(|a, b| a.name().cmp(b.name()));
    let pinned = pinned_grpcio()?;
    for s in &servers {
        assert_eq!(
            s.grpcio_version(),
            pinned,
            "{} runs another grpcio",
            s.name()
        );
        assert!(s.addr().ip().is_loopback());
    }

    let mut resources = Resources::new()
        .with(service(NS, "front").port("grpc", GRPC_PORT))
        .with(service(NS, "py-v1").port("grpc", GRPC_PORT))
        .with(service(NS, "py-v2").port("grpc", GRPC_PORT))
        .with(
            route(NS, "py-routes")
                .parent_service("front", Some(GRPC_PORT))
                .rule(
                    Rule::new()
                        .matches(Match::any().header("x-pin", "v2"))
                        .set_request_header("x-mesh", "pinned")
                        .set_response_header("x-route-rule", "pin")
                        .backend(Backend::service("py-v2", GRPC_PORT)),
                )
                .rule(
                    Rule::new()
                        .set_request_header("x-mesh", "split")
                        .backend(Backend::service("py-v1", GRPC_PORT).weight(75))
                        .backend(Backend::service("py-v2", GRPC_PORT).weight(25)),
                ),
        );
    for s in &servers {
        // Pod `py-v1-0` belongs to Service `py-v1`.
        let (svc, _) = s.name().rsplit_once('-').context("pod name")?;
        resources.push(
            endpoints(NS, svc)
                .name(s.name())
                .port("grpc", s.addr().port())
                .ready(LOOPBACK),
        );
    }
    let mesh = Mesh::builder().namespace(NS).seed(51).build();
    let report = mesh.update(&resources);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    let channel = mesh.channel("front:7070")?;

    // Weighted split, with a distinct message body per call coming back unchanged.
    let n = 400;
    let t = tally(n, |i| {
        let channel = channel.clone();
        async move {
            let body = Bytes::from(format!("payload-{i}"));
            let r = call_with(channel, PATH, &[], body.clone()).await?;
            assert_eq!(r.get_ref(), &body, "the body must come back unchanged");
            assert_eq!(echoed(r.metadata(), "x-mesh").as_deref(), Some("split"));
            assert_eq!(
                metadata(r.metadata(), "x-echo-method").as_deref(),
                Some(PATH)
            );
            Ok(r)
        }
    })
    .await;
    t.assert_no_errors();
    assert_share("py-v1", t.by_prefix("py-v1-"), n, 0.75);
    assert_share("py-v2", t.by_prefix("py-v2-"), n, 0.25);

    // Header routing, request and response filters, repeated metadata keys.
    for _ in 0..20 {
        let r = call(
            channel.clone(),
            PATH,
            &[("x-pin", "v2"), ("x-multi", "a"), ("x-multi", "b")],
        )
        .await?;
        let md = r.metadata();
        assert!(
            backend(md).is_some_and(|b| b.starts_with("py-v2-")),
            "{md:?}"
        );
        assert_eq!(echoed(md, "x-pin").as_deref(), Some("v2"));
        assert_eq!(echoed(md, "x-mesh").as_deref(), Some("pinned"));
        assert_eq!(echoed(md, "x-multi").as_deref(), Some("a,b"));
        assert_eq!(metadata(md, "x-route-rule").as_deref(), Some("pin"));
    }

    // A large message crosses HTTP/2 flow control both ways.
    let big = Bytes::from(
        (0..1_000_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let r = call_with(channel.clone(), PATH, &[("x-pin", "v2")], big.clone()).await?;
    assert_eq!(r.get_ref().len(), big.len());
    assert_eq!(r.get_ref(), &big);

    // Non-OK statuses from the Python handler reach the tonic client unchanged: code,
    // (percent-encoded, non-ASCII) details and trailing metadata.
    for code in [
        Code::InvalidArgument,
        Code::NotFound,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::Unauthenticated,
    ] {
        let wanted = (code as i32).to_string();
        let message = format!("code-{wanted}");
        let status = call(
            channel.clone(),
            PATH,
            &[("x-echo-status", &wanted), ("x-echo-message", &message)],
        )
        .await
        .err()
        .with_context(|| format!("code {code:?} must fail"))?;
        assert_eq!(status.code(), code);
        assert_eq!(status.message(), format!("python says {message} \u{2713}"));
        assert_eq!(
            metadata(status.metadata(), "x-echo-trailer").as_deref(),
            Some("from-python"),
            "{code:?}: {:?}",
            status.metadata()
        );
    }

    // Killing the processes takes their endpoints down: the mesh reports it as
    // UNAVAILABLE, and nothing is left running.
    for s in servers {
        s.kill().await?;
    }
    let status = tokio::time::timeout(Duration::from_secs(10), call(channel.clone(), PATH, &[]))
        .await?
        .err()
        .context("calls to killed servers must fail")?;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    Ok(())
}
