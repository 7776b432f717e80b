//! A gRPC echo server for trying GRPCRoutes locally and in tests: the counterpart of the
//! Gateway API conformance suite's echo backend.
//!
//! It answers every method with OK and tells the caller who answered and what arrived:
//!
//! - response metadata `x-echo-backend: <name>`, `x-echo-authority: <:authority>` and
//!   `x-echo-request-<key>: <value>` for every request metadata key (values of a repeated
//!   key joined with `,`);
//! - `gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/{Echo,EchoTwo}` answer with the
//!   conformance suite's `EchoResponse` (method, headers, authority, namespace, pod);
//!   `EchoThree` is UNIMPLEMENTED, as upstream;
//! - any other method answers with an empty message, which decodes as the default value of
//!   any protobuf response type;
//! - `grpc.health.v1.Health` reports SERVING, so Kubernetes gRPC probes work.
//!
//! Every accepted connection has TCP_NODELAY set. [`EchoServer::start_with_incoming`] serves
//! connections accepted by the caller instead (the `grpcroute echo --tls-dir` command's
//! mutual TLS); when they name the caller ([`PeerIdentity`]), responses carry
//! `x-echo-peer: <caller's SPIFFE ID>`.

mod codec;
mod headers;
mod server;

pub use self::{
    codec::RawCodec,
    headers::{PeerIdentity, Received},
    server::{EchoConfig, EchoServer, StartError},
};

/// The conformance suite's echo service (`grpcecho.proto`).
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    rust_2018_idioms,
    missing_debug_implementations
)]
pub mod pb {
    tonic::include_proto!("gateway_api_conformance.echo_basic.grpcecho");
}

/// Response metadata naming the backend that served the call.
pub const BACKEND_HEADER: &str = "x-echo-backend";
/// Response metadata carrying the request's `:authority`.
pub const AUTHORITY_HEADER: &str = "x-echo-authority";
/// Response metadata with the caller's SPIFFE ID, when its connection authenticated one
/// ([`PeerIdentity`]).
pub const PEER_HEADER: &str = "x-echo-peer";
/// Prefix of the response metadata echoing each request metadata key.
pub const REQUEST_HEADER_PREFIX: &str = "x-echo-request-";
