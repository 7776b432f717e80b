//! Support for the end-to-end tests: a loopback "cluster" built from the Gateway API
//! conformance manifests, and helpers to call through the mesh and judge the results.
//!
//! - [`manifests`]: read the vendored conformance YAML as raw documents and rewrite the
//!   upstream scenarios into their gRPC mesh form (HTTPRoute → GRPCRoute, `appProtocol:
//!   http` → `kubernetes.io/h2c`, Gateway parents → a frontend Service).
//! - [`cluster`]: start one echo server per pod of every Deployment (127.0.0.1 only) and
//!   synthesize the EndpointSlices of the Services that select them.
//! - [`backends`]: hand-made Services of echo servers, for scenarios beyond the manifests.
//! - [`delivery`]: how the configuration reaches the meshes, directly or through a
//!   Kubernetes API server the meshes watch; [`each_delivery!`] runs a scenario with both.
//! - [`load`]: callers calling continuously, every outcome recorded against the
//!   configuration epochs it overlapped.
//! - [`calls`]: call any method path with raw bytes; read the metadata the echo servers
//!   send back.
//! - [`stats`]: tally calls by backend and check weighted shares within 4σ.
//! - [`python`]: backends served by Python `grpcio` (gRPC C-core), for wire interop.
//! - [`node`]: backends served by Node `@grpc/grpc-js`, for wire interop.
//! - [`peer`]: what those two share: set-up commands and the server process.
//! - [`interop`]: the wire-interop scenario, run against each of them.
//! - [`prometheus`]: a real Prometheus server scraping the mesh's metrics and evaluating
//!   the shipped alert rules.
//! - [`fault`]: faults below the mesh — a backend killed mid-call (in a child process), a
//!   relay that partitions or resets connections — and a timeline of every call made
//!   meanwhile.
//! - [`tools`]: whether a missing external tool (kubectl, Prometheus) skips its test or
//!   fails it (`CI=true`, `GRPCROUTE_REQUIRE_*`).

pub mod backends;
pub mod calls;
pub mod cluster;
pub mod delivery;
pub mod fault;
pub mod interop;
pub mod load;
pub mod manifests;
pub mod node;
pub mod peer;
pub mod prometheus;
pub mod python;
pub mod stats;
pub mod tools;

pub use self::{
    backends::{EchoService, EndpointState, GRPC_PORT},
    calls::{backend, call, call_with, echoed, metadata},
    cluster::{Cluster, LOOPBACK, Pod},
    delivery::{Delivery, Feed},
    manifests::{Deployment, Manifests, conformance_path},
    stats::{Tally, assert_share, check_share, tally},
};

/// Makes two tests of each scenario `async fn name(delivery: Delivery) ->
/// anyhow::Result<()>`: `name::direct` and `name::kube`, each carrying the test attributes
/// given (e.g. `#[tokio::test]`).
///
/// ```no_run
/// use grpcroute_interop_tests::{Delivery, each_delivery};
///
/// each_delivery!(#[tokio::test] weighted_split);
/// async fn weighted_split(delivery: Delivery) -> anyhow::Result<()> {
///     let _ = delivery;
///     Ok(())
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! each_delivery {
    ($($(#[$attr:meta])* $name:ident),+ $(,)?) => {$(
        mod $name {
            $(#[$attr])*
            async fn direct() -> ::anyhow::Result<()> {
                super::$name($crate::Delivery::Direct).await
            }
            $(#[$attr])*
            async fn kube() -> ::anyhow::Result<()> {
                super::$name($crate::Delivery::Kube).await
            }
        }
    )+};
}

/// A free port on 127.0.0.1 with nothing listening on it (bound, then released): connects
/// to it are refused.
///
/// # Errors
///
/// If no port can be bound.
pub fn refused_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind((LOOPBACK, 0))?;
    Ok(listener.local_addr()?.port())
}

/// The condition `type_` (`Accepted`, `ResolvedRefs`) the mesh reports for GRPCRoute
/// `namespace/name` on its first Service parent.
pub fn route_condition(
    mesh: &grpcroute_client::Mesh,
    namespace: &str,
    name: &str,
    type_: &str,
) -> Option<grpcroute_client::Condition> {
    mesh.statuses()
        .into_iter()
        .find(|s| s.route.namespace() == namespace && s.route.name() == name)?
        .parents
        .into_iter()
        .next()?
        .conditions
        .into_iter()
        .find(|c| c.type_ == type_)
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes; whether it held.
/// For effects that happen after a call returns (mirrored copies, file reloads).
pub async fn eventually(timeout: std::time::Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Waits until `count` stops changing (the same value for 200 ms; at most 5 s) and
/// returns it: for counters fed by background work, such as mirrored calls.
pub async fn settled(count: impl Fn() -> u64) -> u64 {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut last = count();
    let mut stable_since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let now = count();
        if now != last {
            last = now;
            stable_since = tokio::time::Instant::now();
        } else if stable_since.elapsed() >= std::time::Duration::from_millis(200)
            || tokio::time::Instant::now() >= deadline
        {
            return now;
        }
    }
}
