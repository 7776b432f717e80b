//! Test support for grpcroute-client's TLS tests: everything is made on the spot on
//! 127.0.0.1 and in temporary directories.
//!
//! - [`pki`]: root CAs and leaf certificates with `rcgen` — X.509 SVIDs (one `spiffe://`
//!   URI SAN), DNS-named server certificates, expired and not-yet-valid ones.
//! - [`files`]: credentials written in the layouts the mesh reads (csi-driver-spiffe,
//!   Istio, custom names), file by file or with Kubernetes' atomic `..data` swap.
//! - [`server`]: a TLS gRPC server (rustls) that answers every method and records the
//!   certificate each connection presented.
//! - [`workload_api`]: the X.509 part of the SPIFFE Workload API on a Unix socket, pushing
//!   new SVIDs on demand.

pub mod files;
pub mod pki;
pub mod server;
pub mod workload_api;

/// The generated Workload API messages and server (from `proto/workload.proto`).
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    rust_2018_idioms,
    missing_debug_implementations
)]
pub mod pb {
    tonic::include_proto!("_");
}

pub use self::{
    files::{Layout, Pem},
    pki::{Ca, Issued, Leaf, spiffe_id_of},
    server::{CALLER_HEADER, Presented, SERVER_HEADER, TlsServer, TlsServerOptions},
    workload_api::WorkloadApiServer,
};
