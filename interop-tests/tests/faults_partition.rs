//! A silent partition: one of three endpoints stops answering without closing anything (a
//! relay in front of it stops forwarding in both directions). Nothing but the HTTP/2
//! keep-alive of the mesh's connections ([`MeshBuilder::keep_alive`]) can notice: PINGs
//! go unanswered, and the connection is closed at most `interval + timeout` after the
//! last byte the endpoint sent.
//!
//! - With a short keep-alive (1 s + 1 s), under a steady load with long calls in flight:
//!   every call caught on the partitioned endpoint ends `UNAVAILABLE` within
//!   `interval + timeout + slack`, none lasts longer, and every call started after that
//!   bound succeeds on the other endpoints.
//! - With the defaults (30 s + 10 s): calls in flight on the partitioned endpoint end
//!   within 40 s (+ slack). About 40 s of waiting; it runs beside the other tests.

use std::time::Duration;

use anyhow::Context as _;

use grpcroute_client::{Mesh, MeshBuilder};
use grpcroute_interop_tests::{
    backends::GRPC_PORT,
    fault::{
        BODY_DELAY_HEADER, DELAY_HEADER, DelayServer, Ended, Relay, Timeline, service_of,
        spawn_call,
    },
};
use tokio::{task::JoinHandle, time::Instant};
use tonic::Code;

const NS: &str = "faults";
const SERVICE: &str = "part";
const CALLERS: usize = 8;
/// The short keep-alive: PING after 1 s without a byte from the endpoint, give up 1 s
/// later.
const INTERVAL: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_secs(1);
/// Timers, scheduling and a loaded machine.
const SLACK: Duration = Duration::from_millis(1500);
/// The library's defaults (see `MeshBuilder::keep_alive`).
const DEFAULT_DETECTION: Duration = Duration::from_secs(30 + 10);

fn target() -> String {
    format!("{SERVICE}.{NS}:{GRPC_PORT}")
}

fn mesh(builder: MeshBuilder, addrs: &[std::net::SocketAddr]) -> anyhow::Result<Mesh> {
    let mesh = builder.namespace(NS).seed(5).build();
    let report = mesh.update(&service_of(NS, SERVICE, addrs));
    anyhow::ensure!(report.rejected.is_empty(), "{:?}", report.rejected);
    Ok(mesh)
}

/// Starts calls with `delay` (metadata name and milliseconds) one at a time until the
/// first server has `wanted` of them in flight.
async fn long_calls(
    mesh: &Mesh,
    servers: &[DelayServer],
    delay: (&str, &str),
    wanted: u64,
    bound: Duration,
) -> anyhow::Result<Vec<JoinHandle<Ended>>> {
    let received = || servers.iter().map(DelayServer::started).sum::<u64>();
    let mut calls = Vec::new();
    // The victim is reached through a relay, so its first answers can be slower than the
    // others' and the load-aware balancer may avoid it for a while: it takes it again once
    // the others carry enough calls in flight (P2C over latency x pending). 20 attempts were
    // once not enough on a loaded machine (1 of 20 on the victim); 60 always are.
    while servers[0].in_flight() < wanted {
        anyhow::ensure!(
            calls.len() < 60,
            "the balancer put {} of {} long calls on the victim",
            servers[0].in_flight(),
            calls.len()
        );
        let before = received();
        calls.push(spawn_call(mesh, &target(), &[delay], bound)?);
        anyhow::ensure!(
            grpcroute_interop_tests::eventually(Duration::from_secs(5), || received() > before)
                .await,
            "a long call reached no server"
        );
    }
    Ok(calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_partition_is_detected_by_keep_alive_and_traffic_moves() -> anyhow::Result<()> {
    let bound = INTERVAL + TIMEOUT + SLACK;
    let servers = [
        DelayServer::start("part-0").await?,
        DelayServer::start("part-1").await?,
        DelayServer::start("part-2").await?,
    ];
    let relay = Relay::start(servers[0].addr()).await?;
    let mesh = mesh(
        Mesh::builder().keep_alive(INTERVAL, TIMEOUT),
        &[relay.addr(), servers[1].addr(), servers[2].addr()],
    )?;
    // Long enough to outlast the detection on the victim; answered on the others. Their
    // headers come at once: a long call must not make its endpoint look slow to the
    // balancer (a unary call's latency is its time to the headers), which would send new
    // calls to the partitioned endpoint once its own failures were forgotten.
    let long = long_calls(
        &mesh,
        &servers,
        (BODY_DELAY_HEADER, "8000"),
        2,
        Duration::from_secs(20),
    )
    .await?;
    let on_victim = servers[0].in_flight();
    let timeline = Timeline::start(&mesh, &target(), CALLERS, &[], Duration::from_secs(20))?;
    anyhow::ensure!(timeline.more_calls(200, Duration::from_secs(10)).await);

    let fault_at = timeline.now();
    let fault = Instant::now();
    relay.partition();
    tokio::time::sleep(bound + Duration::from_secs(1)).await;
    anyhow::ensure!(timeline.more_calls(200, Duration::from_secs(10)).await);
    let calls = timeline.stop().await;

    let mut detected = Duration::ZERO;
    let mut failed_long = 0;
    for call in long {
        let (ended, result) = call.await?;
        if let Err(status) = result {
            failed_long += 1;
            let took = ended.saturating_duration_since(fault);
            detected = detected.max(took);
            anyhow::ensure!(
                status.code() == Code::Unavailable && took <= bound,
                "a long call on the partitioned endpoint ended {status:?} {took:?} after the \
                 partition, not UNAVAILABLE within {bound:?}"
            );
        }
    }
    anyhow::ensure!(
        failed_long == on_victim,
        "{failed_long} long calls failed; the partitioned endpoint had {on_victim}"
    );
    let figures = calls.figures(fault_at, "part-0");
    let caught: Vec<_> = calls
        .in_flight_at(fault_at)
        .into_iter()
        .filter(|r| r.failed())
        .collect();
    let detected_short = caught
        .iter()
        .map(|r| r.ended.saturating_sub(fault_at))
        .max()
        .unwrap_or_default();
    println!(
        "partition, keep-alive {INTERVAL:?} + {TIMEOUT:?}: {on_victim} long calls on the \
         partitioned endpoint ended UNAVAILABLE {:.0} ms after the partition at the latest \
         ({} short calls caught in flight, ended by {:.0} ms); {figures}; failures {:?}, e.g. {:?}",
        detected.as_secs_f64() * 1e3,
        caught.len(),
        detected_short.as_secs_f64() * 1e3,
        calls.failures_by_code(),
        calls.failed().first().map(|r| &r.result),
    );
    anyhow::ensure!(calls.hung().is_empty(), "hung calls: {:?}", calls.hung());
    for call in &calls.0 {
        anyhow::ensure!(
            call.duration() <= bound,
            "a call took {:?}, longer than keep-alive allows ({bound:?}): {call:?}",
            call.duration()
        );
        if let Err(status) = &call.result {
            anyhow::ensure!(status.code() == Code::Unavailable, "{call:?}");
        }
    }
    for call in calls.started_from(fault_at + bound) {
        anyhow::ensure!(
            !call.failed() && !call.answered_by("part-0"),
            "after the detection bound, a call did not go elsewhere: {call:?}"
        );
    }
    anyhow::ensure!(
        calls.started_from(fault_at + bound).len() > 50,
        "traffic kept flowing after the detection"
    );
    relay.resume();
    for server in servers {
        server.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_keep_alive_detects_a_partition_within_40_seconds() -> anyhow::Result<()> {
    let bound = DEFAULT_DETECTION + SLACK;
    let servers = [
        DelayServer::start("part-0").await?,
        DelayServer::start("part-1").await?,
    ];
    let relay = Relay::start(servers[0].addr()).await?;
    let mesh = mesh(Mesh::builder(), &[relay.addr(), servers[1].addr()])?;
    // Unary calls that would take a minute (no response headers yet): only the keep-alive
    // can end those on the victim.
    let mut long = long_calls(
        &mesh,
        &servers,
        (DELAY_HEADER, "60000"),
        2,
        Duration::from_secs(90),
    )
    .await?;
    let on_victim = servers[0].in_flight();
    let fault = Instant::now();
    relay.partition();
    let mut detected = Vec::new();
    // The calls on the healthy endpoint take a minute: wait only for the victim's.
    while (detected.len() as u64) < on_victim {
        anyhow::ensure!(
            fault.elapsed() <= bound + Duration::from_secs(5),
            "calls on the partitioned endpoint outlived {bound:?} ({} of {on_victim} ended)",
            detected.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (finished, running): (Vec<_>, Vec<_>) =
            long.into_iter().partition(JoinHandle::is_finished);
        long = running;
        for call in finished {
            let (ended, result) = call.await?;
            let status = result.err().context("a long call was answered")?;
            anyhow::ensure!(status.code() == Code::Unavailable, "{status:?}");
            detected.push(ended.saturating_duration_since(fault));
        }
    }
    for call in long {
        call.abort();
    }
    let latest = detected.iter().max().copied().unwrap_or_default();
    println!(
        "partition, default keep-alive (30 s + 10 s): {on_victim} calls in flight on the \
         partitioned endpoint ended UNAVAILABLE after {detected:?}"
    );
    anyhow::ensure!(detected.len() as u64 == on_victim, "{detected:?}");
    anyhow::ensure!(
        latest <= bound,
        "detected after {latest:?}, later than {bound:?}"
    );
    relay.resume();
    Ok(())
}
