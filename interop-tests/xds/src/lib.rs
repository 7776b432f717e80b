//! Differential-test infrastructure for the xDS source of `grpcroute-client`: everything a
//! scenario needs to run a real gRPC xDS client (the oracle) and then the library against
//! the same control plane, and compare.
//!
//! - [`ControlPlane`]: State-of-the-World ADS on 127.0.0.1 (envoy-types' generated
//!   server), driven in-process: set/delete resources per type, chosen `version_info` /
//!   `nonce`, StopOnRequest, pause, kill/refuse streams, stop/restart; it logs every
//!   `DiscoveryRequest` per node id, with waits on the log.
//! - [`builders`]: the LDS/RDS/CDS/EDS resources as `envoy-types` messages.
//! - [`Backend`]: loopback gRPC servers that answer any method with `hostname: <name>` and
//!   honour the psm interop `rpc-behavior` metadata; restartable on the same port.
//! - [`Oracle`]: gRPC C-core (`grpcio`) or `@grpc/grpc-js-xds` in a subprocess, one
//!   bootstrap (node id) each, driven by line-delimited JSON.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use grpcroute_xds_control_plane::{
//!     Backend, CallSpec, ControlPlane, Oracle, ResourceType,
//!     builders::{ApiListener, ClusterBuilder, RouteBuilder, load_assignment, route_configuration, virtual_host},
//! };
//! use std::time::Duration;
//!
//! let cp = ControlPlane::start().await?;
//! let b0 = Backend::start("b0").await?;
//! cp.set([
//!     ApiListener::rds("svc", "rc").build().into(),
//!     route_configuration("rc", vec![virtual_host("vh", &["svc"], vec![
//!         RouteBuilder::prefix("/").cluster("c").build(),
//!     ])]).into(),
//!     ClusterBuilder::eds("c").build().into(),
//!     load_assignment("c", [b0.addr()]).into(),
//! ]);
//! let oracle = Oracle::python(&cp.bootstrap("oracle")).await?;
//! let report = oracle
//!     .call(&CallSpec::new("xds:///svc", "/grpc.testing.TestService/UnaryCall").count(10))
//!     .await?;
//! assert_eq!(report.peer("b0"), 10);
//! cp.wait_for_ack("oracle", ResourceType::Cluster, "1", cp.mark(), Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod backend;
mod bootstrap;
pub mod builders;
pub mod control_plane;
pub mod oracle;
mod resource;
mod serve;
pub mod sut;

pub use self::{
    backend::{Backend, start_backends},
    bootstrap::{Bootstrap, NodeLocality},
    control_plane::{ControlPlane, LogMark, ResponseOverride},
    oracle::{CallReport, CallSpec, CsdsResource, HoldReport, HoldSpec, Oracle, OracleKind},
    resource::{Resource, ResourceType},
    sut::Sut,
};

/// Locks, ignoring poisoning: a panicking test thread must not hide state from others.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
