//! The public TLS settings: the mesh's mode, one backend's settings (what a
//! BackendTLSPolicy compiles to), the identities a server may present, the roots it is
//! verified against, and the rule for the identity expected when nothing names one.

use std::{fmt, sync::Arc};

use rustls::pki_types::{CertificateDer, pem::PemObject as _};

use crate::{
    BackendService,
    identity::{CredentialsError, SpiffeId, SpiffeIdError, SpiffeIdPattern},
};

/// How the mesh secures its connections to endpoints. See [the module docs](crate::tls).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsMode {
    /// Every connection is plaintext HTTP/2 (h2c). The default.
    #[default]
    Plaintext,
    /// TLS to the backends a policy names ([`BackendTls`]), plaintext to the others.
    Policy,
    /// Mutual TLS to every backend: the client presents its [`Identity`](crate::identity::Identity)
    /// and verifies each server against the trust bundle and an expected identity.
    Mutual,
}

/// TLS settings for one backend: the server name sent (SNI), the identities the server may
/// present, the roots its chain must lead to, and whether the client presents its own
/// certificate. This is what a Gateway API `BackendTLSPolicy` compiles to.
///
/// ```
/// use grpcroute_client::{identity::SpiffeId, tls::{BackendTls, ServerIdentity}};
///
/// let tls = BackendTls::new()
///     .identity(ServerIdentity::SpiffeId(SpiffeId::parse("spiffe://example.org/ns/shop/sa/checkout")?));
/// # Ok::<(), grpcroute_client::identity::SpiffeIdError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct BackendTls {
    pub(crate) server_name: Option<String>,
    pub(crate) identities: Vec<ServerIdentity>,
    pub(crate) roots: TrustRoots,
    pub(crate) client_certificate: Option<bool>,
}

impl BackendTls {
    /// Mesh defaults: SNI `<service>.<namespace>.svc.<cluster domain>`, the expected
    /// identity of the mesh's rule, the mesh's trust bundle, and the client's certificate
    /// when the mesh has an identity.
    pub fn new() -> Self {
        Self::default()
    }

    /// The server name sent in SNI. When no [`identity`](Self::identity) is given, the
    /// server's certificate must be valid for this DNS name (BackendTLSPolicy `hostname`).
    #[must_use]
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Adds an identity the server may present; a server presenting any of them is
    /// accepted (BackendTLSPolicy `subjectAltNames`).
    #[must_use]
    pub fn identity(mut self, identity: ServerIdentity) -> Self {
        self.identities.push(identity);
        self
    }

    /// The roots the server's chain must lead to (default: the mesh identity's bundle).
    #[must_use]
    pub fn trust(mut self, roots: TrustRoots) -> Self {
        self.roots = roots;
        self
    }

    /// Whether the client presents its certificate (default: when the mesh has an
    /// identity).
    #[must_use]
    pub fn client_certificate(mut self, present: bool) -> Self {
        self.client_certificate = Some(present);
        self
    }
}

/// An identity a server may present.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServerIdentity {
    /// Exactly this SPIFFE ID, as the certificate's one URI SAN.
    SpiffeId(SpiffeId),
    /// A SPIFFE ID matching this pattern, as the certificate's one URI SAN.
    SpiffePattern(SpiffeIdPattern),
    /// A DNS name the certificate is valid for (SAN `DNS:`, wildcards as RFC 6125).
    DnsName(String),
}

impl fmt::Display for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SpiffeId(id) => write!(f, "{id}"),
            Self::SpiffePattern(p) => write!(f, "{p}"),
            Self::DnsName(name) => write!(f, "DNS:{name}"),
        }
    }
}

/// The certificate authorities a server's chain must lead to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TrustRoots {
    /// The trust bundle of the mesh's [`Identity`](crate::identity::Identity), current at
    /// each handshake (for a server of another trust domain: its federated bundle, when the
    /// Workload API gave one).
    #[default]
    Mesh,
    /// These CA certificates (BackendTLSPolicy `caCertificateRefs`).
    Certificates(Arc<[CertificateDer<'static>]>),
}

impl TrustRoots {
    /// The CA certificates of a PEM bundle.
    ///
    /// # Errors
    ///
    /// When it is not PEM or has no certificate.
    pub fn from_pem(pem: &[u8]) -> Result<Self, CredentialsError> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CredentialsError::Pem {
                what: "the CA bundle".into(),
                message: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(CredentialsError::NoCertificate {
                what: "the CA bundle".into(),
            });
        }
        Ok(Self::Certificates(certs.into()))
    }
}

/// The identity a mesh server is expected to present when no policy names one, in
/// [`TlsMode::Mutual`]. The default is the template
/// `spiffe://{trust_domain}/ns/{namespace}/sa/*`: any service account of the backend
/// Service's namespace, in the client's own trust domain.
#[derive(Clone)]
pub struct ExpectedServerIdentity(Expected);

#[derive(Clone)]
enum Expected {
    Template(String),
    Fn(Arc<dyn Fn(&BackendService) -> ServerIdentity + Send + Sync>),
}

/// The default rule for [`ExpectedServerIdentity`].
pub(crate) const DEFAULT_TEMPLATE: &str = "spiffe://{trust_domain}/ns/{namespace}/sa/*";

impl Default for ExpectedServerIdentity {
    fn default() -> Self {
        Self(Expected::Template(DEFAULT_TEMPLATE.into()))
    }
}

impl fmt::Debug for ExpectedServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Expected::Template(t) => f.debug_tuple("Template").field(t).finish(),
            Expected::Fn(_) => f.write_str("Fn(..)"),
        }
    }
}

impl ExpectedServerIdentity {
    /// A SPIFFE ID pattern with placeholders: `{trust_domain}` (the client's own),
    /// `{namespace}` and `{service}` (the backend Service's); a `*` segment matches any one
    /// segment. E.g. `spiffe://{trust_domain}/ns/{namespace}/sa/{service}` when every
    /// Service runs under a service account of its own name.
    ///
    /// # Errors
    ///
    /// When the template is not a SPIFFE ID pattern once its placeholders are filled.
    pub fn template(template: &str) -> Result<Self, SpiffeIdError> {
        SpiffeIdPattern::parse(&expand(template, "ns", "svc"))?;
        Ok(Self(Expected::Template(template.into())))
    }

    /// A function of the backend Service and port.
    pub fn from_fn(f: impl Fn(&BackendService) -> ServerIdentity + Send + Sync + 'static) -> Self {
        Self(Expected::Fn(Arc::new(f)))
    }

    /// The identity expected of `backend`.
    pub(crate) fn for_backend(&self, backend: &BackendService) -> ServerIdentity {
        match &self.0 {
            Expected::Fn(f) => f(backend),
            Expected::Template(t) => {
                let expanded = expand(t, backend.service.namespace(), backend.service.name());
                match SpiffeIdPattern::parse(&expanded) {
                    Ok(p) => ServerIdentity::SpiffePattern(p),
                    // Kubernetes names are valid SPIFFE path segments, so this only
                    // happens for objects built in code with unusual names: expect the
                    // literal string, which no certificate will match, and say why.
                    Err(error) => {
                        tracing::warn!(%error, backend = %backend, "expected server identity cannot be formed");
                        ServerIdentity::DnsName(expanded)
                    }
                }
            }
        }
    }
}

fn expand(template: &str, namespace: &str, service: &str) -> String {
    template
        .replace("{namespace}", namespace)
        .replace("{service}", service)
}
