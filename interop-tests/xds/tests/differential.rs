//! The differential harness (issue 11): each scenario runs gRPC C-core (`grpcio`) against
//! the control plane first, then the library, and compares what they did: which backends
//! answered, with what status, and what they asked the control plane for. `@grpc/grpc-js-xds`
//! runs the scenarios where it matters as a second, independent oracle; where the two
//! oracles differ, the difference is recorded (README) and the library follows C-core.
//!
//! Every scenario has its own control plane, backends and node ids, and is bounded in time.

mod common;

use std::time::Duration;

use anyhow::{Context as _, ensure};
use common::{UNARY, addrs, bounded, oracle, ping_pong};
use grpcroute_xds_control_plane::{
    CallReport, CallSpec, ControlPlane, Oracle, OracleKind, ResourceType, Sut,
    control_plane::LogMark, start_backends,
};

const LIMIT: Duration = Duration::from_secs(120);
const WAIT: Duration = Duration::from_secs(15);

/// Runs `spec` on the oracle (when it could be started) and on the library.
async fn both(
    oracle: Option<&Oracle>,
    sut: &Sut,
    spec: &CallSpec,
) -> anyhow::Result<(Option<CallReport>, CallReport)> {
    let theirs = match oracle {
        Some(o) => Some(o.call(spec).await?),
        None => None,
    };
    let ours = sut.call(spec).await?;
    Ok((theirs, ours))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_pong_reaches_every_endpoint() -> anyhow::Result<()> {
    bounded("ping_pong", LIMIT, async {
        let cp = ControlPlane::start().await?;
        let backends = start_backends("b", 4).await?;
        cp.set(ping_pong("svc", &addrs(&backends)));
        let oracle = oracle(OracleKind::Python, &cp, "oracle").await?;
        let sut = Sut::start(&cp.bootstrap("sut"))?;
        let spec = CallSpec::new("xds:///svc", UNARY).count(100);
        let (theirs, ours) = both(oracle.as_ref(), &sut, &spec).await?;
        for (who, report) in [("oracle", theirs.as_ref()), ("sut", Some(&ours))] {
            let Some(report) = report else { continue };
            ensure!(report.failures() == 0, "{who}: {report:?}");
            for b in &backends {
                ensure!(
                    report.peer(b.name()) > 0,
                    "{who}: {} got nothing: {report:?}",
                    b.name()
                );
            }
        }
        // The ADS exchange: each type requested by name, first with an empty version and
        // nonce, the node on the first request only, then ACKed at version 1.
        for (t, name) in [
            (ResourceType::Listener, "svc"),
            (ResourceType::RouteConfiguration, "svc-rc"),
            (ResourceType::Cluster, "svc-c"),
            (ResourceType::ClusterLoadAssignment, "svc-c"),
        ] {
            cp.wait_for_ack("sut", t, "1", LogMark::START, WAIT).await?;
            let requests = cp.requests("sut");
            let first = requests
                .iter()
                .find(|r| r.kind() == Some(t))
                .context("no request")?;
            ensure!(
                first.version_info.is_empty() && first.response_nonce.is_empty(),
                "first {t} request: {first:?}"
            );
            ensure!(
                first.resource_names == [name],
                "first {t} request: {first:?}"
            );
        }
        let requests = cp.requests("sut");
        ensure!(
            requests.first().is_some_and(|r| r.has_node),
            "node on the first request"
        );
        ensure!(
            requests.iter().skip(1).all(|r| !r.has_node),
            "node only on the first request of the stream"
        );
        Ok(())
    })
    .await
}
