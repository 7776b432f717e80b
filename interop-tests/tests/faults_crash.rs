//! A crashed backend, not a graceful one: nothing tells the client beforehand (no GOAWAY),
//! the calls in flight are lost with the connection.
//!
//! - A connection reset (a relay in front of one of three endpoints resets every
//!   connection, RST) while long calls and a steady load are in flight: every call on that
//!   connection ends at once `UNAVAILABLE`, naming the endpoint; the calls on the other
//!   endpoints are undisturbed; the next calls succeed (the server is still up, but the
//!   balancer now prefers the other endpoints: its failed calls count as slow ones).
//! - A backend process killed with SIGKILL in the same situation: its calls end at once
//!   `UNAVAILABLE`; from then on its port refuses, so the next calls go to the other two
//!   endpoints (retried there, since a refused connect provably never reached a server)
//!   and none fails.
//!
//! Direct delivery only: the faults are below the configuration, which does not change.
//! Each test prints its figures (`--nocapture`); see `interop-tests/README.md`.

use std::time::Duration;

use grpcroute_client::Mesh;
use grpcroute_interop_tests::{
    backends::GRPC_PORT,
    fault::{
        BackendProcess, DELAY_HEADER, DelayServer, Ended, Relay, Timeline, service_of, spawn_call,
    },
};
use tokio::{task::JoinHandle, time::Instant};
use tonic::Code;

const NS: &str = "faults";
const SERVICE: &str = "crash";
const CALLERS: usize = 8;
/// A call taking longer than this is a hang: the test fails on it.
const CALL_BOUND: Duration = Duration::from_secs(20);
/// How long the long calls ask the servers to take.
const LONG: &str = "6000";
/// How soon after the fault the calls it caught must have ended.
const ENDED_WITHIN: Duration = Duration::from_secs(2);
/// After the fault, calls started this much later must all succeed: by then the client
/// has seen the connection end (on loopback, microseconds; this is a generous margin).
const SETTLED: Duration = Duration::from_millis(100);

fn target() -> String {
    format!("{SERVICE}.{NS}:{GRPC_PORT}")
}

fn mesh(addrs: &[std::net::SocketAddr]) -> anyhow::Result<Mesh> {
    let mesh = Mesh::builder().namespace(NS).seed(9).build();
    let report = mesh.update(&service_of(NS, SERVICE, addrs));
    anyhow::ensure!(report.rejected.is_empty(), "{:?}", report.rejected);
    Ok(mesh)
}

/// Starts long calls one at a time until the victim has `wanted` of them in flight (each
/// call is awaited until a server has it); returns them.
async fn long_calls(
    mesh: &Mesh,
    received: impl Fn() -> u64,
    victim_received: impl Fn() -> u64,
    wanted: u64,
) -> anyhow::Result<Vec<JoinHandle<Ended>>> {
    let victim_base = victim_received();
    let mut calls = Vec::new();
    while victim_received() - victim_base < wanted {
        anyhow::ensure!(
            calls.len() < 20,
            "the balancer put {} of {} long calls on the victim",
            victim_received() - victim_base,
            calls.len()
        );
        let before = received();
        calls.push(spawn_call(
            mesh,
            &target(),
            &[(DELAY_HEADER, LONG)],
            CALL_BOUND,
        )?);
        anyhow::ensure!(
            grpcroute_interop_tests::eventually(Duration::from_secs(5), || received() > before)
                .await,
            "a long call reached no server"
        );
    }
    Ok(calls)
}

/// Checks the long calls: those on the victim (`on_victim` of them) failed UNAVAILABLE
/// within [`ENDED_WITHIN`] of `fault`, the others were answered by another server.
async fn check_long_calls(
    calls: Vec<JoinHandle<Ended>>,
    fault: Instant,
    victim: &str,
    on_victim: u64,
) -> anyhow::Result<String> {
    let mut failed = 0;
    let mut slowest = Duration::ZERO;
    let total = calls.len() as u64;
    for call in calls {
        let (ended, result) = call.await?;
        match result {
            Ok(backend) => anyhow::ensure!(backend != victim, "{victim} answered after the fault"),
            Err(status) => {
                failed += 1;
                let took = ended.saturating_duration_since(fault);
                slowest = slowest.max(took);
                anyhow::ensure!(
                    status.code() == Code::Unavailable,
                    "a long call on the victim ended {status:?}, not UNAVAILABLE"
                );
                anyhow::ensure!(
                    took <= ENDED_WITHIN,
                    "a long call on the victim ended {took:?} after the fault: {status:?}"
                );
            }
        }
    }
    anyhow::ensure!(
        failed == on_victim,
        "{failed} long calls failed, but the victim had {on_victim}"
    );
    Ok(format!(
        "{total} long calls ({LONG} ms), {on_victim} on the victim: all {failed} ended \
         UNAVAILABLE within {:.0} ms of the fault, the other {} were answered",
        slowest.as_secs_f64() * 1e3,
        total - failed
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_connection_ends_its_calls_unavailable_and_the_next_succeed() -> anyhow::Result<()>
{
    let servers = [
        DelayServer::start("crash-0").await?,
        DelayServer::start("crash-1").await?,
        DelayServer::start("crash-2").await?,
    ];
    let relay = Relay::start(servers[0].addr()).await?;
    let mesh = mesh(&[relay.addr(), servers[1].addr(), servers[2].addr()])?;
    let received = || servers.iter().map(DelayServer::started).sum::<u64>();

    let long = long_calls(&mesh, received, || servers[0].started(), 2).await?;
    let on_victim = servers[0].in_flight();
    let timeline = Timeline::start(&mesh, &target(), CALLERS, &[], CALL_BOUND)?;
    anyhow::ensure!(timeline.more_calls(200, Duration::from_secs(10)).await);
    anyhow::ensure!(relay.open() >= 1, "the mesh is connected through the relay");

    let fault_at = timeline.now();
    let fault = Instant::now();
    relay.reset();
    // The relay's task resets the connections when it next runs: the calls that must
    // succeed are those started after that (plus SETTLED), not after the order.
    anyhow::ensure!(
        grpcroute_interop_tests::eventually(Duration::from_secs(5), || relay.reset_count() > 0)
            .await,
        "the relay did not reset"
    );
    let reset_at = timeline.now();
    anyhow::ensure!(timeline.more_calls(300, Duration::from_secs(10)).await);
    let calls = timeline.stop().await;
    let long = check_long_calls(long, fault, "crash-0", on_victim).await?;

    let figures = calls.figures(fault_at, "crash-0");
    println!("connection reset: {long}");
    println!(
        "connection reset: {figures}; failures {:?}, e.g. {:?}",
        calls.failures_by_code(),
        calls.failed().first().map(|r| &r.result)
    );
    anyhow::ensure!(calls.hung().is_empty(), "hung calls: {:?}", calls.hung());
    for failed in calls.failed() {
        let status = failed
            .result
            .as_ref()
            .err()
            .map(|s| (s.code(), s.message()));
        anyhow::ensure!(
            matches!(status, Some((Code::Unavailable, m)) if m.contains(&relay.addr().to_string())),
            "a failure that is not an UNAVAILABLE naming the endpoint: {failed:?}"
        );
        anyhow::ensure!(
            failed.started < reset_at + SETTLED,
            "a call started {:?} after the reset failed: {failed:?}",
            failed.started.saturating_sub(reset_at)
        );
        anyhow::ensure!(failed.ended <= fault_at + ENDED_WITHIN, "{failed:?}");
    }
    anyhow::ensure!(relay.reset_count() >= 1, "the relay reset a connection");
    for server in servers {
        server.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_call_fails_its_calls_unavailable_and_traffic_moves()
-> anyhow::Result<()> {
    let victim = BackendProcess::start(env!("CARGO_BIN_EXE_fault-backend"), "crash-0").await?;
    let others = [
        DelayServer::start("crash-1").await?,
        DelayServer::start("crash-2").await?,
    ];
    let victim_addr = victim.addr();
    let mesh = mesh(&[victim_addr, others[0].addr(), others[1].addr()])?;
    let received = || victim.started() + others.iter().map(DelayServer::started).sum::<u64>();

    let victim_before = victim.started();
    let long = long_calls(&mesh, received, || victim.started(), 2).await?;
    let on_victim = victim.started() - victim_before;
    let timeline = Timeline::start(&mesh, &target(), CALLERS, &[], CALL_BOUND)?;
    anyhow::ensure!(timeline.more_calls(200, Duration::from_secs(10)).await);

    let fault_at = timeline.now();
    let fault = Instant::now();
    victim.kill().await?;
    let killed_after = fault.elapsed();
    anyhow::ensure!(timeline.more_calls(300, Duration::from_secs(10)).await);
    let calls = timeline.stop().await;
    let long = check_long_calls(long, fault, "crash-0", on_victim).await?;

    let figures = calls.figures(fault_at, "crash-0");
    println!("SIGKILL: {long}");
    println!(
        "SIGKILL (process gone {:.1} ms after the signal): {figures}; failures {:?}, e.g. {:?}",
        killed_after.as_secs_f64() * 1e3,
        calls.failures_by_code(),
        calls.failed().first().map(|r| &r.result)
    );
    anyhow::ensure!(calls.hung().is_empty(), "hung calls: {:?}", calls.hung());
    let settled = fault_at + killed_after + SETTLED;
    for failed in calls.failed() {
        let status = failed
            .result
            .as_ref()
            .err()
            .map(|s| (s.code(), s.message()));
        anyhow::ensure!(
            matches!(status, Some((Code::Unavailable, m)) if m.contains(&victim_addr.to_string())),
            "a failure that is not an UNAVAILABLE naming the endpoint: {failed:?}"
        );
        anyhow::ensure!(
            failed.started < settled,
            "a call started {:?} after the kill failed: {failed:?}",
            failed.started.saturating_sub(fault_at)
        );
    }
    for call in calls.started_from(settled) {
        anyhow::ensure!(
            !call.answered_by("crash-0"),
            "the killed backend answered: {call:?}"
        );
    }
    for server in others {
        server.shutdown().await;
    }
    Ok(())
}
