//! Fault injection below the mesh: what a crashed, killed, partitioned or terminating
//! backend looks like from the client's side, and a record of every call made meanwhile.
//!
//! - [`backend`](mod@backend): [`DelayServer`], a gRPC backend whose calls take
//!   as long as the caller asks (`x-delay-ms`, or `x-body-delay-ms` after sending the
//!   response headers), so that calls are in flight when the fault strikes; it counts the calls it received and shuts down gracefully (GOAWAY, the calls
//!   in flight finish) on request.
//! - [`process`]: the same backend in a child process (the `fault-backend` binary of this
//!   crate), to be killed with SIGKILL mid-call as a crashing pod is, or stopped
//!   gracefully.
//! - [`relay`]: a loopback TCP relay in front of a backend that can stop forwarding in
//!   both directions without closing anything (a silent partition), resume, and reset
//!   every connection (RST).
//! - [`timeline`]: callers that call through the mesh without pause, recording when each
//!   call started and ended and who answered, and the figures the fault tests print:
//!   calls made, failed, and how long until traffic moved.
//!
//! API-server faults live in the test API server itself
//! ([`ApiServerHandle`](grpcroute_test_apiserver::ApiServerHandle): `stall_open_watches`,
//! `stall_requests`, `refuse_connections`, ...).

use std::{net::SocketAddr, time::Duration};

use grpcroute_client::{
    Mesh, Resources,
    build::{endpoints, service},
};
use tokio::{task::JoinHandle, time::Instant};
use tonic::Status;

use crate::{
    backends::GRPC_PORT,
    calls::{ECHO, backend, call},
    cluster::LOOPBACK,
};

pub mod backend;
pub mod process;
pub mod relay;
pub mod timeline;

pub use self::{
    backend::{BODY_DELAY_HEADER, DELAY_HEADER, DelayServer},
    process::BackendProcess,
    relay::Relay,
    timeline::{CallRecord, Calls, Timeline},
};

/// Service `namespace/name` (port `grpc` 7070) with one ready EndpointSlice per address,
/// named `<name>-<port>`: the same name for the same endpoint whatever the others are.
pub fn service_of(namespace: &str, name: &str, addrs: &[SocketAddr]) -> Resources {
    let mut resources = Resources::new().with(service(namespace, name).port("grpc", GRPC_PORT));
    for addr in addrs {
        resources.push(
            endpoints(namespace, name)
                .name(&format!("{name}-{}", addr.port()))
                .port("grpc", addr.port())
                .ready(LOOPBACK),
        );
    }
    resources
}

/// The outcome of a call made with [`spawn_call`]: when it ended, and who answered (or
/// the failure; a call abandoned at the bound is `DEADLINE_EXCEEDED` "hung").
pub type Ended = (Instant, Result<String, Status>);

/// Starts one call of [`ECHO`] to `target` through `mesh.channel`, with `metadata`
/// (e.g. a [`DELAY_HEADER`]), abandoned as hung after `bound`.
///
/// # Errors
///
/// An invalid target.
pub fn spawn_call(
    mesh: &Mesh,
    target: &str,
    metadata: &[(&str, &str)],
    bound: Duration,
) -> anyhow::Result<JoinHandle<Ended>> {
    let channel = mesh.channel(target)?;
    let metadata: Vec<(String, String)> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Ok(tokio::spawn(async move {
        let metadata: Vec<(&str, &str)> = metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let result = match tokio::time::timeout(bound, call(channel, ECHO, &metadata)).await {
            Err(_) => Err(Status::deadline_exceeded(format!(
                "hung: no answer within {bound:?}"
            ))),
            Ok(result) => result.map(|r| backend(r.metadata()).unwrap_or_else(|| "?".into())),
        };
        (Instant::now(), result)
    }))
}
