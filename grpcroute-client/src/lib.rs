//! A proxyless GAMMA service mesh for [tonic]: every gRPC call a client makes is routed
//! in-process by the Kubernetes Gateway API [GRPCRoute]s attached to the destination
//! Service, then balanced over that backend's endpoints and sent straight to one of them
//! over a pooled HTTP/2 connection. No sidecar, no proxy hop.
//!
//! # Getting started
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use grpcroute_client::{Mesh, source::ManifestDir};
//!
//! // Routes, Services and EndpointSlices from a folder of manifests, reloaded on change.
//! let mesh = Mesh::builder()
//!     .namespace("web")
//!     .build_with_source(ManifestDir::new("manifests/"));
//! mesh.ready().await;
//!
//! // One channel per destination Service; pass it to any tonic-generated client.
//! let channel = mesh.channel("checkout.shop:50051")?;
//! // let mut client = CheckoutClient::new(channel);
//! # Ok(()) }
//! ```
//!
//! For each call the mesh:
//!
//! 1. identifies the destination Service and port (the *frontend*) from the target:
//!    `svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local` or the ClusterIP;
//! 2. selects the GRPCRoutes attached to it (GEP-1294): the consumer routes of the
//!    client's namespace if there are any, else the producer routes of the Service's
//!    namespace, else none (the call goes to the Service's own endpoints);
//! 3. finds the rule that matches the call's service, method and metadata by the spec's
//!    precedence, and applies its filters (header modifiers, mirroring);
//! 4. picks a backend by weight, an endpoint of it by power-of-two-choices over
//!    peak-EWMA load, and sends the call there.
//!
//! # Configuration sources
//!
//! | source | how |
//! |---|---|
//! | a folder of manifests | [`source::ManifestDir`], or [`manifest::load`] once |
//! | Rust code | [`build`] helpers or the API types, into [`Resources`], then [`Mesh::update`] |
//! | anything else | implement [`source::Source`] |
//!
//! # Transport security
//!
//! Connections are plaintext HTTP/2 unless [`MeshBuilder`] says otherwise: TLS where a
//! per-backend policy asks for it, or mutual TLS to every backend with the client's SPIFFE
//! identity (an X.509 SVID from files or the SPIFFE Workload API, followed through
//! rotations). See the `tls` and `identity` modules (cargo features `tls` and `spiffe`, both
//! on by default).
//!
//! # Semantics
//!
//! | GRPCRoute feature | status |
//! |---|---|
//! | Service parentRefs (`group: ""`, `kind: Service`), `port`, `sectionName` | supported |
//! | producer and consumer routes, pass-through without routes | supported |
//! | method match `Exact` (service+method, service, method) and `RegularExpression` | supported |
//! | header match `Exact` and `RegularExpression`, case-insensitive names | supported |
//! | precedence (service chars, method chars, header count, age, name, rule order) | supported |
//! | weighted backendRefs, invalid-backend shares failing `UNAVAILABLE` | supported |
//! | `RequestHeaderModifier`, `ResponseHeaderModifier` (rule and backend level) | supported |
//! | `RequestMirror` (`percent`, `fraction`) | supported |
//! | `ExtensionRef` filters | rule fails `UNAVAILABLE` (never skipped) |
//! | ReferenceGrant for cross-namespace backends | optional strict mode |
//! | `hostnames` | ignored for Service parents, as GEP-1294 says |
//! | Gateway parentRefs | not this library's (no status entry) |
//!
//! Routing failures reach the caller as gRPC statuses: no matching rule is
//! `UNIMPLEMENTED`, an invalid or endpoint-less backend `UNAVAILABLE` (see [`CallError`]).
//!
//! [tonic]: https://docs.rs/tonic
//! [GRPCRoute]: https://gateway-api.sigs.k8s.io/api-types/grpcroute/

// Library code never unwraps; tests may (a panic is how a test fails).
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod backend;
pub mod build;
mod channel;
mod convert;
#[cfg(feature = "tls")]
mod crypto;
mod deadline;
mod dispatch;
mod error;
mod explain;
#[cfg(feature = "tls")]
pub mod identity;
mod layer;
pub mod manifest;
mod mesh;
mod metrics;
mod model;
mod namespace;
mod resources;
mod rng;
mod route;
mod routed;
mod series;
mod snapshot;
pub mod source;
mod target;
#[cfg(feature = "tls")]
pub mod tls;
mod transport;
#[cfg(feature = "xds")]
pub mod xds;

pub use self::{
    backend::accrual::FailureAccrual,
    channel::{Channel, ResponseFuture},
    error::CallError,
    explain::{
        BackendExplanation, CallDescription, EjectedEndpoint, Explanation, FrontendRef, RouteRef,
        RuleRef, TlsExplanation,
    },
    layer::{MeshLayer, Routed},
    mesh::{Mesh, MeshBuilder},
    metrics::{Metrics, code_name, serve_metrics},
    model::{InvalidObject, ObjectKey, ObjectKind},
    resources::{Object, Resources},
    route::backend_tls::BackendTlsPolicyStatus,
    route::table::{
        Condition, ConditionStatus, ParentReference, ParentStatus, RouteSetKind, RouteStatus,
    },
    routed::{BackendService, RoutedTo},
    source::{ChangeSummary, SourceHealth, UpdateReport},
    target::TargetError,
};

// Benchmark hooks: compiled only with the non-default `bench` feature, which the benches
// crate enables, so they are never part of the documented API.
#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench_support;

/// The Prometheus client library whose registry [`Metrics::register`] takes.
pub use prometheus_client;

/// The Gateway API group.
pub(crate) const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
