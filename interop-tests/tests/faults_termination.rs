//! The termination race: an endpoint's server stops before the EndpointSlice update that
//! removes it reaches the mesh — in a cluster the kubelet signals the pod while the
//! endpoint controller and every client's watch are still catching up. For a window
//! (here half a second, plus the update's own way through the API server with the Kube
//! delivery) the mesh still lists an endpoint that is gone.
//!
//! One of three endpoints is a backend process; under a steady load (8 callers, calls
//! taking 20 ms at the servers so that some are always in flight there):
//!
//! - graceful stop (the process's SIGTERM path: GOAWAY, calls in flight finish, the port
//!   closes, it exits): no call fails. Calls the server refused by its GOAWAY and calls
//!   whose connect is refused provably never reached it, and the mesh sends them to
//!   another endpoint.
//! - crash (SIGKILL): the calls it had in flight fail `UNAVAILABLE` — they reached the
//!   server, which may have acted on them, so the mesh must not send them again — and so
//!   may a call written on the connection in the instant before the client sees it
//!   reset. Every call started after that instant (100 ms is a generous margin on
//!   loopback) succeeds elsewhere.
//!
//! Both deliveries: the update comes straight from `Mesh::update`, or through the test
//! API server and the mesh's watches.

use std::time::Duration;

use grpcroute_client::Mesh;
use grpcroute_interop_tests::{
    Delivery, Feed,
    backends::GRPC_PORT,
    each_delivery,
    fault::{BackendProcess, DELAY_HEADER, DelayServer, Timeline, service_of},
};
use tonic::Code;

const NS: &str = "faults";
const SERVICE: &str = "term";
const CALLERS: usize = 8;
/// A call taking longer than this is a hang: the test fails on it.
const CALL_BOUND: Duration = Duration::from_secs(20);
/// Between the server's end and the slice update.
const WINDOW: Duration = Duration::from_millis(500);
/// After the crash, calls started this much later must all succeed.
const SETTLED: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Graceful,
    Crash,
}

each_delivery! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    graceful_stop_before_the_slice_update_loses_nothing,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    crash_before_the_slice_update_fails_only_calls_that_reached_the_server
}

async fn graceful_stop_before_the_slice_update_loses_nothing(
    delivery: Delivery,
) -> anyhow::Result<()> {
    race(delivery, Stop::Graceful).await
}

async fn crash_before_the_slice_update_fails_only_calls_that_reached_the_server(
    delivery: Delivery,
) -> anyhow::Result<()> {
    race(delivery, Stop::Crash).await
}

async fn race(delivery: Delivery, stop: Stop) -> anyhow::Result<()> {
    let victim = BackendProcess::start(env!("CARGO_BIN_EXE_fault-backend"), "term-0").await?;
    let others = [
        DelayServer::start("term-1").await?,
        DelayServer::start("term-2").await?,
    ];
    let addrs = [victim.addr(), others[0].addr(), others[1].addr()];
    let victim_addr = victim.addr().to_string();
    let feed = Feed::with(delivery, service_of(NS, SERVICE, &addrs)).await?;
    let mesh = feed.mesh(Mesh::builder().namespace(NS).seed(11)).await?;
    let target = format!("{SERVICE}.{NS}:{GRPC_PORT}");
    let timeline = Timeline::start(&mesh, &target, CALLERS, &[(DELAY_HEADER, "20")], CALL_BOUND)?;
    anyhow::ensure!(timeline.more_calls(200, Duration::from_secs(10)).await);
    anyhow::ensure!(victim.started() > 0, "the victim took calls");

    let stop_at = timeline.now();
    match stop {
        Stop::Graceful => victim.shutdown(Duration::from_secs(10)).await?,
        Stop::Crash => victim.kill().await?,
    }
    let gone_at = timeline.now();
    tokio::time::sleep(WINDOW).await;
    let update_at = timeline.now();
    feed.set(service_of(NS, SERVICE, &addrs[1..])).await?;
    let updated_at = timeline.now();
    anyhow::ensure!(timeline.more_calls(200, Duration::from_secs(10)).await);
    let calls = timeline.stop().await;

    let figures = calls.figures(stop_at, "term-0");
    let window: Vec<_> = calls
        .0
        .iter()
        .filter(|r| r.started >= gone_at && r.started < updated_at)
        .collect();
    let window_failed = window.iter().filter(|r| r.failed()).count();
    println!(
        "termination race ({stop:?}, {delivery:?}): server gone {:.0} ms after the stop \
         began; slice update reached the mesh {:.0} ms after that ({:.0} ms of it the \
         update's own way); {} calls started in that window, {window_failed} failed; \
         {figures}; failures {:?}, e.g. {:?}",
        (gone_at - stop_at).as_secs_f64() * 1e3,
        (updated_at - gone_at).as_secs_f64() * 1e3,
        (updated_at - update_at).as_secs_f64() * 1e3,
        window.len(),
        calls.failures_by_code(),
        calls.failed().first().map(|r| &r.result),
    );
    anyhow::ensure!(calls.hung().is_empty(), "hung calls: {:?}", calls.hung());
    for call in calls.started_from(gone_at) {
        anyhow::ensure!(
            !call.answered_by("term-0"),
            "the stopped server answered: {call:?}"
        );
    }
    match stop {
        Stop::Graceful => {
            anyhow::ensure!(
                calls.failed().is_empty(),
                "a graceful stop failed calls: {:?}",
                calls.failed()
            );
        }
        Stop::Crash => {
            for failed in calls.failed() {
                let status = failed
                    .result
                    .as_ref()
                    .err()
                    .map(|s| (s.code(), s.message()));
                anyhow::ensure!(
                    matches!(status, Some((Code::Unavailable, m)) if m.contains(&victim_addr)),
                    "a failure that is not an UNAVAILABLE naming the endpoint: {failed:?}"
                );
                anyhow::ensure!(
                    failed.started < gone_at + SETTLED,
                    "a call started {:?} after the crash failed: {failed:?}",
                    failed.started.saturating_sub(gone_at)
                );
            }
        }
    }
    for server in others {
        server.shutdown().await;
    }
    feed.shutdown().await;
    Ok(())
}
