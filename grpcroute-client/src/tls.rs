//! TLS and mutual TLS to the endpoints (feature `tls`, on by default).
//!
//! Every connection the mesh opens is plaintext HTTP/2 (h2c) or TLS (rustls with the ring
//! provider, TLS 1.2 or 1.3, ALPN `h2`), chosen per backend by the mesh's [`TlsMode`]:
//!
//! | mode | backends a policy names ([`BackendTls`]) | other backends |
//! |---|---|---|
//! | [`TlsMode::Plaintext`] (default) | plaintext | plaintext |
//! | [`TlsMode::Policy`] | TLS as the policy says | plaintext |
//! | [`TlsMode::Mutual`] | mutual TLS, refined by the policy | mutual TLS with the mesh defaults |
//!
//! Policies come from [`MeshBuilder::backend_tls`](crate::MeshBuilder::backend_tls) (and,
//! later, from Gateway API `BackendTLSPolicy` objects).
//!
//! # How a server is verified
//!
//! 1. Its chain must lead to a root of the trust bundle: the mesh identity's bundle
//!    ([`TrustRoots::Mesh`], current at each handshake), or the policy's own CAs. Every
//!    certificate of the chain must be within its validity period.
//! 2. It must name an expected identity:
//!    - the SPIFFE ID, pattern or DNS name(s) a policy gives (any one of them);
//!    - else, with a policy that gives only a server name, that DNS name;
//!    - else the mesh's rule, [`MeshBuilder::expected_server_identity`](crate::MeshBuilder::expected_server_identity),
//!      by default `spiffe://{trust_domain}/ns/{namespace}/sa/*`: a SPIFFE ID (the
//!      certificate's one URI SAN) of any service account in the backend Service's
//!      namespace, in the client's own trust domain — what Istio's and Linkerd's
//!      identities look like, and what csi-driver-spiffe and SPIRE's Kubernetes
//!      registrations issue.
//!
//! The SNI server name is `<service>.<namespace>.svc.<cluster domain>` unless a policy sets
//! one. In [`TlsMode::Mutual`] the client presents its [`Identity`](crate::identity::Identity)'s
//! current certificate.
//!
//! # Failures
//!
//! A failed handshake is a failed connect to that endpoint: the call tries another endpoint
//! of the backend, then fails `UNAVAILABLE` with a message naming the backend, the endpoint
//! and what failed — an untrusted issuer, an expired or not yet valid certificate, a SAN
//! mismatch (expected and presented names), a server that presented no certificate (it
//! answered in plaintext, or closed the connection), a server that refused the client's
//! certificate (with its alert: `certificate_required`, `unknown_ca`, `bad_certificate`,
//! …), or ALPN `h2` not negotiated. The endpoint then backs off like any endpoint whose
//! connect failed.
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use grpcroute_client::{Mesh, identity::{CredentialFiles, Identity}, source::ManifestDir, tls::TlsMode};
//!
//! let identity = Identity::from_files(CredentialFiles::csi_driver_spiffe("/var/run/secrets/spiffe.io"))?;
//! let mesh = Mesh::builder()
//!     .tls(TlsMode::Mutual)
//!     .identity(identity)
//!     .build_with_source(ManifestDir::new("manifests/"));
//! # Ok(()) }
//! ```

pub use crate::transport::tls::{
    BackendTls, ExpectedServerIdentity, ServerIdentity, TlsMode, TrustRoots,
};
