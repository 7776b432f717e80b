//! The wire-interop scenario, run against each independent gRPC implementation: backends
//! served by Python `grpcio` (gRPC C-core, [`python`]) or Node
//! `@grpc/grpc-js` ([`node`]) behind the mesh. Header routing, a weighted
//! split, request and response filters, metadata, message bodies and non-OK statuses must
//! all cross unchanged, and killed servers must be reported `UNAVAILABLE`.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use grpcroute_client::{
    Mesh, Resources,
    build::{Backend, Match, Rule, endpoints, route, service},
};
use tonic::Code;

use crate::{
    GRPC_PORT, LOOPBACK, assert_share, backend, call, call_with, echoed, metadata, node,
    peer::PeerServer,
    python::{self, python_dir},
    tally,
};

/// The method path the scenario calls (any path: the servers echo whatever they answer).
pub const PATH: &str = "/interop.Echo/Any";

/// An independent gRPC implementation serving the backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Implementation {
    /// Python `grpcio` (gRPC C-core), `python/echo_server.py`.
    PythonGrpcio,
    /// Node `@grpc/grpc-js`, `node/echo_server.js`.
    NodeGrpcJs,
}

impl Implementation {
    /// The namespace of the scenario and the prefix of its Services and pods.
    pub fn short_name(self) -> &'static str {
        match self {
            Self::PythonGrpcio => "py",
            Self::NodeGrpcJs => "node",
        }
    }

    /// The gRPC library's package name.
    pub fn library(self) -> &'static str {
        match self {
            Self::PythonGrpcio => "grpcio",
            Self::NodeGrpcJs => "@grpc/grpc-js",
        }
    }

    /// The version of the library the repository pins.
    ///
    /// # Errors
    ///
    /// An unreadable pin file, or one that pins no exact version.
    pub fn pinned_version(self) -> anyhow::Result<String> {
        match self {
            Self::PythonGrpcio => {
                let text = std::fs::read_to_string(python_dir().join("requirements.txt"))?;
                text.lines()
                    .find_map(|l| l.trim().strip_prefix("grpcio=="))
                    .map(str::to_string)
                    .context("requirements.txt pins no grpcio")
            }
            Self::NodeGrpcJs => node::pinned_grpc_js(),
        }
    }

    /// Starts an echo server named `name` answering [`PATH`].
    ///
    /// # Errors
    ///
    /// The runtime or the library is missing, or the server did not start.
    pub async fn start(self, name: &str) -> anyhow::Result<PeerServer> {
        match self {
            Self::PythonGrpcio => python::start(name).await,
            Self::NodeGrpcJs => node::start(name, &[PATH]).await,
        }
    }

    /// The status message the server sends for request metadata `x-echo-message: message`.
    fn status_message(self, message: &str) -> String {
        let who = match self {
            Self::PythonGrpcio => "python",
            Self::NodeGrpcJs => "node",
        };
        format!("{who} says {message} \u{2713}")
    }

    /// The trailing metadata `x-echo-trailer` the server adds to a failure.
    fn trailer(self) -> &'static str {
        match self {
            Self::PythonGrpcio => "from-python",
            Self::NodeGrpcJs => "from-node",
        }
    }

    /// How the server echoes request metadata sent as one header field per value.
    ///
    /// Both servers join the values their library hands them with `,`. grpcio hands over
    /// each field as its own value. Node's `http2` module joins repeated fields with `, `
    /// (RFC 9110 list syntax) before grpc-js sees them, so grpc-js hands over the single
    /// value `a, b`; a mesh that merged the fields into one field `a,b` would show up as
    /// `a,b` here.
    fn repeated(self, values: &[&str]) -> String {
        match self {
            Self::PythonGrpcio => values.join(","),
            Self::NodeGrpcJs => values.join(", "),
        }
    }
}

/// The scenario: four servers of `implementation` as pods `<short>-v1-0`, `<short>-v1-1`,
/// `<short>-v2-0`, `<short>-v2-1` of Services `<short>-v1` and `<short>-v2`, reached
/// through a route on Service `front` in namespace `<short>`. Panics (it is a test) on a
/// failed check.
///
/// # Errors
///
/// A server that cannot start, or a call that fails where it must succeed.
pub async fn backends_behind_the_mesh(implementation: Implementation) -> anyhow::Result<()> {
    let ns = implementation.short_name();
    let names = ["v1-0", "v1-1", "v2-0", "v2-1"].map(|pod| format!("{ns}-{pod}"));
    let mut starting = tokio::task::JoinSet::new();
    for name in names {
        starting.spawn(async move { implementation.start(&name).await });
    }
    let mut servers = Vec::new();
    while let Some(server) = starting.join_next().await {
        servers.push(server??);
    }
    servers.sort_by(|a, b| a.name().cmp(b.name()));
    let pinned = implementation.pinned_version()?;
    for s in &servers {
        assert_eq!(
            s.library_version(),
            pinned,
            "{} runs another {}",
            s.name(),
            implementation.library()
        );
        assert!(s.addr().ip().is_loopback());
    }

    let (v1, v2) = (format!("{ns}-v1"), format!("{ns}-v2"));
    let mut resources = Resources::new()
        .with(service(ns, "front").port("grpc", GRPC_PORT))
        .with(service(ns, &v1).port("grpc", GRPC_PORT))
        .with(service(ns, &v2).port("grpc", GRPC_PORT))
        .with(
            route(ns, &format!("{ns}-routes"))
                .parent_service("front", Some(GRPC_PORT))
                .rule(
                    Rule::new()
                        .matches(Match::any().header("x-pin", "v2"))
                        .set_request_header("x-mesh", "pinned")
                        .set_response_header("x-route-rule", "pin")
                        .backend(Backend::service(&v2, GRPC_PORT)),
                )
                .rule(
                    Rule::new()
                        .set_request_header("x-mesh", "split")
                        .backend(Backend::service(&v1, GRPC_PORT).weight(75))
                        .backend(Backend::service(&v2, GRPC_PORT).weight(25)),
                ),
        );
    for s in &servers {
        // Pod `py-v1-0` belongs to Service `py-v1`.
        let (svc, _) = s.name().rsplit_once('-').context("pod name")?;
        resources.push(
            endpoints(ns, svc)
                .name(s.name())
                .port("grpc", s.addr().port())
                .ready(LOOPBACK),
        );
    }
    let mesh = Mesh::builder().namespace(ns).seed(51).build();
    let report = mesh.update(&resources);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    let channel = mesh.channel(&format!("front:{GRPC_PORT}"))?;

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
    assert_share(&v1, t.by_prefix(&format!("{v1}-")), n, 0.75);
    assert_share(&v2, t.by_prefix(&format!("{v2}-")), n, 0.25);

    // Header routing, request and response filters, repeated metadata keys.
    let repeated = implementation.repeated(&["a", "b"]);
    for _ in 0..20 {
        let r = call(
            channel.clone(),
            PATH,
            &[("x-pin", "v2"), ("x-multi", "a"), ("x-multi", "b")],
        )
        .await?;
        let md = r.metadata();
        assert!(
            backend(md).is_some_and(|b| b.starts_with(&format!("{v2}-"))),
            "{md:?}"
        );
        assert_eq!(echoed(md, "x-pin").as_deref(), Some("v2"));
        assert_eq!(echoed(md, "x-mesh").as_deref(), Some("pinned"));
        assert_eq!(echoed(md, "x-multi").as_deref(), Some(repeated.as_str()));
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

    // Non-OK statuses from the handler reach the tonic client unchanged: code,
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
        assert_eq!(status.message(), implementation.status_message(&message));
        assert_eq!(
            metadata(status.metadata(), "x-echo-trailer").as_deref(),
            Some(implementation.trailer()),
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
