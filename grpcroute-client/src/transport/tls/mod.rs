//! TLS to endpoints: the settings a backend's connections use, the connector that performs
//! the handshake (rustls with the ring provider, ALPN `h2`), and how a failure is told.
//!
//! A backend's [`TlsSettings`] are resolved from the mesh's [`TlsPolicy`] (mode, identity,
//! expected-identity rule) and the backend's own [`BackendTls`] when a policy names one.
//! Endpoints are pooled per (address, settings): two backends sharing an address and equal
//! settings share the connection; different settings get different connections.

mod config;
mod failure;
mod first_read;
mod san_match;
mod verify;

use std::{fmt, sync::Arc, time::Duration};

use rustls::{
    ClientConfig,
    client::Resumption,
    pki_types::{IpAddr as PkiIpAddr, ServerName},
};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub use self::config::{BackendTls, ExpectedServerIdentity, ServerIdentity, TlsMode, TrustRoots};
#[cfg(feature = "xds")]
pub(crate) use self::san_match::SanMatcher;
use self::verify::{ClientCertificate, Roots, Verifier};
pub(crate) use self::{failure::TlsFailure, first_read::FirstRead};
use crate::{BackendService, crypto::provider, identity::Identity, route::BackendKey};

/// The mesh-wide TLS configuration, from [`MeshBuilder`](crate::MeshBuilder).
#[derive(Clone, Default)]
pub(crate) struct TlsPolicy {
    pub(crate) mode: TlsMode,
    pub(crate) identity: Option<Identity>,
    pub(crate) expected: ExpectedServerIdentity,
    pub(crate) backend_tls: Option<BackendTlsFn>,
    pub(crate) cluster_domain: String,
}

/// Per-backend TLS settings given in code, until BackendTLSPolicy is read.
pub(crate) type BackendTlsFn = Arc<dyn Fn(&BackendService) -> Option<BackendTls> + Send + Sync>;

impl fmt::Debug for TlsPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsPolicy")
            .field("mode", &self.mode)
            .field("identity", &self.identity.as_ref().map(Identity::source))
            .field("expected", &self.expected)
            .field("backend_tls", &self.backend_tls.is_some())
            .finish()
    }
}

/// The TLS a backend's connections use, resolved: comparable, so that endpoints are pooled
/// per (address, settings) and an unchanged backend keeps its connections.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TlsSettings {
    server_name: String,
    identities: Vec<ServerIdentity>,
    roots: TrustRoots,
    client_certificate: bool,
    /// xDS clusters (gRFC A29): the server is authorized by these SAN matchers instead
    /// of `identities` / the server name.
    xds: Option<XdsServerCheck>,
}

/// How an xDS cluster's servers are authorized, and whose credentials its connections
/// use (part of the settings: clusters with other certificate providers must not share
/// connections).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct XdsServerCheck {
    /// The certificate-provider instances, as messages name them.
    pub(crate) providers: String,
    /// Any SAN of the leaf must match one; empty: the chain alone is verified.
    pub(crate) san_matchers: Vec<san_match::SanMatcher>,
}

impl TlsSettings {
    /// The SNI server name.
    pub(crate) fn server_name(&self) -> &str {
        &self.server_name
    }

    /// The identities a server may present, as messages name them (the server name as a
    /// DNS name when nothing else is expected).
    pub(crate) fn expected(&self) -> Vec<String> {
        if let Some(xds) = &self.xds {
            if xds.san_matchers.is_empty() {
                return vec!["any name (no match_subject_alt_names)".into()];
            }
            return xds
                .san_matchers
                .iter()
                .map(|m| format!("SAN {m}"))
                .collect();
        }
        if self.identities.is_empty() {
            return vec![format!("DNS:{}", self.server_name)];
        }
        self.identities.iter().map(ToString::to_string).collect()
    }

    pub(crate) fn roots(&self) -> &TrustRoots {
        &self.roots
    }

    pub(crate) fn client_certificate(&self) -> bool {
        self.client_certificate
    }

    /// The certificate-provider instances of an xDS cluster's TLS (gRFC A29), as messages
    /// name them; `None` for every other backend.
    #[cfg(feature = "xds")]
    pub(crate) fn xds_providers(&self) -> Option<&str> {
        self.xds.as_ref().map(|x| x.providers.as_str())
    }

    /// The settings of an xDS cluster with an `UpstreamTlsContext` (gRFC A29): no SNI
    /// (A29 ignores `sni`), the server authorized by `check`.
    #[cfg(feature = "xds")]
    pub(crate) fn xds(roots: TrustRoots, client_certificate: bool, check: XdsServerCheck) -> Self {
        Self {
            server_name: String::new(),
            identities: Vec::new(),
            roots,
            client_certificate,
            xds: Some(check),
        }
    }
}

impl TlsPolicy {
    /// The settings of `key`'s connections: `None` for plaintext. `policy` is the backend's
    /// own settings where a policy names them (BackendTLSPolicy, compiled with the routes);
    /// without one the builder's [`MeshBuilder::backend_tls`](crate::MeshBuilder::backend_tls)
    /// hook is asked.
    pub(crate) fn settings_for(
        &self,
        key: &BackendKey,
        policy: Option<&BackendTls>,
    ) -> Option<TlsSettings> {
        // xDS clusters say for themselves whether they use TLS (CDS `transport_socket`,
        // gRFC A29); the mesh's mode applies to Services.
        let BackendKey::Service { service, port } = key else {
            return None;
        };
        let backend = BackendService {
            service: service.clone(),
            port: Some(*port),
        };
        let policy = match policy {
            Some(p) => Some(p.clone()),
            None => self.backend_tls.as_ref().and_then(|f| f(&backend)),
        };
        let policy = match (self.mode, policy) {
            (TlsMode::Plaintext, _) | (TlsMode::Policy, None) => return None,
            (TlsMode::Policy | TlsMode::Mutual, Some(p)) => p,
            (TlsMode::Mutual, None) => BackendTls::new(),
        };
        let identities = if !policy.identities.is_empty() {
            policy.identities
        } else if policy.server_name.is_some() {
            // A hostname and no subjectAltNames: the hostname is what is verified.
            Vec::new()
        } else {
            vec![self.expected.for_backend(&backend)]
        };
        let server_name = policy.server_name.unwrap_or_else(|| {
            format!(
                "{}.{}.svc.{}",
                service.name(),
                service.namespace(),
                self.cluster_domain
            )
        });
        Some(TlsSettings {
            server_name,
            identities,
            roots: policy.roots,
            client_certificate: policy
                .client_certificate
                .unwrap_or(self.mode == TlsMode::Mutual || self.identity.is_some()),
            xds: None,
        })
    }
}

/// The [`BackendTls`] a BackendTLSPolicy compiles to: `hostname` as SNI (and the name
/// verified when there are no subjectAltNames), the subjectAltNames as accepted identities
/// (a URI that is a SPIFFE ID as that ID), and its CA bundles or the system roots.
///
/// # Errors
///
/// When a CA bundle is not PEM or holds no certificate: the message names the ConfigMap.
pub(crate) fn backend_tls_of(
    policy: &crate::route::backend_tls::PolicyTls,
) -> Result<BackendTls, String> {
    use crate::{identity::SpiffeId, model::SubjectAltName, route::backend_tls::PolicyRoots};

    let roots = match &policy.roots {
        PolicyRoots::System => TrustRoots::System,
        PolicyRoots::Pem(bundles) => {
            let mut certs = Vec::new();
            for (config_map, pem) in bundles {
                match TrustRoots::from_pem(pem.as_bytes()) {
                    Ok(TrustRoots::Certificates(c)) => certs.extend(c.iter().cloned()),
                    Ok(_) => {}
                    Err(e) => {
                        return Err(format!(
                            "\"ca.crt\" of ConfigMap {config_map} cannot be used: {e}"
                        ));
                    }
                }
            }
            TrustRoots::Certificates(certs.into())
        }
    };
    let mut tls = BackendTls::new()
        .server_name(policy.hostname.clone())
        .trust(roots);
    for san in &policy.subject_alt_names {
        tls = tls.identity(match san {
            SubjectAltName::Hostname(h) => ServerIdentity::DnsName(h.clone()),
            SubjectAltName::Uri(u) => match SpiffeId::parse(u) {
                Ok(id) => ServerIdentity::SpiffeId(id),
                Err(_) => ServerIdentity::Uri(u.clone()),
            },
        });
    }
    Ok(tls)
}

/// Makes TLS connections with one backend's settings.
pub(crate) struct TlsConnector {
    settings: TlsSettings,
    server_name: ServerName<'static>,
    connector: tokio_rustls::TlsConnector,
    identity: Option<Identity>,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    pub(crate) fn new(settings: TlsSettings, identity: Option<Identity>) -> Self {
        // An IP address as the name: rustls sends no SNI.
        let no_sni = ServerName::IpAddress(PkiIpAddr::from(std::net::Ipv4Addr::UNSPECIFIED));
        let server_name = if settings.server_name.is_empty() {
            no_sni
        } else {
            ServerName::try_from(settings.server_name.clone()).unwrap_or_else(|_| {
                tracing::warn!(server_name = %settings.server_name, "not a DNS name: sending no SNI");
                no_sni
            })
        };
        let provider = provider();
        let verifier = Verifier {
            provider: provider.clone(),
            identity: identity.clone(),
            roots: Roots::new(&settings.roots),
            identities: settings.identities.clone(),
            san_matchers: settings.xds.as_ref().map(|x| {
                x.san_matchers
                    .iter()
                    .cloned()
                    .map(san_match::CompiledSanMatcher::new)
                    .collect()
            }),
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            // Invariant: the ring provider has cipher suites for TLS 1.2 and 1.3.
            .expect("the ring provider supports the default TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mut config = match (&identity, settings.client_certificate) {
            (Some(identity), true) => {
                builder.with_client_cert_resolver(Arc::new(ClientCertificate(identity.clone())))
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        // Every connection proves the current identity and checks the server against the
        // current bundle: a resumed session would skip both after a rotation. Connections
        // are few and long-lived, so the full handshake costs little.
        config.resumption = Resumption::disabled();
        Self {
            settings,
            server_name,
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            identity,
        }
    }

    pub(crate) fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// Whether the client offers its certificate.
    pub(crate) fn presents_certificate(&self) -> bool {
        self.settings.client_certificate && self.identity.is_some()
    }

    /// The TLS handshake over `tcp`, within `timeout`, and the ALPN check.
    pub(crate) async fn handshake(
        &self,
        tcp: TcpStream,
        timeout: Duration,
    ) -> Result<TlsStream<TcpStream>, TlsFailure> {
        if self.settings.client_certificate {
            match &self.identity {
                None => {
                    return Err(TlsFailure::NoClientIdentity {
                        origin: "the mesh has no identity: see MeshBuilder::identity".into(),
                        last_error: None,
                    });
                }
                Some(identity) if identity.current().is_none() => {
                    return Err(TlsFailure::NoClientIdentity {
                        origin: identity.source().to_string(),
                        last_error: identity.last_error(),
                    });
                }
                Some(_) => {}
            }
        }
        let stream = tokio::time::timeout(
            timeout,
            self.connector.connect(self.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| TlsFailure::Timeout)?
        .map_err(|e| TlsFailure::from_io(&e))?;
        match stream.get_ref().1.alpn_protocol() {
            Some(b"h2") => Ok(stream),
            other => Err(TlsFailure::AlpnNotNegotiated(
                other.map(|p| String::from_utf8_lossy(p).into_owned()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{identity::SpiffeId, model::ObjectKey};

    fn key(ns: &str, name: &str) -> BackendKey {
        BackendKey::Service {
            service: ObjectKey::new(ns, name),
            port: 50051,
        }
    }

    fn policy(mode: TlsMode) -> TlsPolicy {
        TlsPolicy {
            mode,
            cluster_domain: "cluster.local".into(),
            ..TlsPolicy::default()
        }
    }

    #[test]
    fn plaintext_ignores_policies_and_policy_mode_needs_one() {
        let tls = BackendTls::new();
        assert_eq!(
            policy(TlsMode::Plaintext).settings_for(&key("a", "b"), Some(&tls)),
            None
        );
        assert_eq!(
            policy(TlsMode::Policy).settings_for(&key("a", "b"), None),
            None
        );
        assert!(
            policy(TlsMode::Policy)
                .settings_for(&key("a", "b"), Some(&tls))
                .is_some()
        );
    }

    #[test]
    fn mutual_tls_expects_the_namespace_pattern_unless_a_policy_names_an_id() {
        let p = policy(TlsMode::Mutual);
        let s = p.settings_for(&key("shop", "cart"), None).unwrap();
        assert_eq!(s.server_name, "cart.shop.svc.cluster.local");
        assert_eq!(
            s.identities
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["spiffe://{trust_domain}/ns/shop/sa/*"]
        );
        assert!(s.client_certificate);
        let id = SpiffeId::parse("spiffe://td/ns/shop/sa/cart").unwrap();
        let named = BackendTls::new().identity(ServerIdentity::SpiffeId(id.clone()));
        let s = p.settings_for(&key("shop", "cart"), Some(&named)).unwrap();
        assert_eq!(s.identities, [ServerIdentity::SpiffeId(id)]);
        let host = BackendTls::new().server_name("cart.example.com");
        let s = p.settings_for(&key("shop", "cart"), Some(&host)).unwrap();
        assert!(
            s.identities.is_empty(),
            "a hostname alone is verified as a DNS name"
        );
        assert_eq!(s.server_name, "cart.example.com");
    }

    #[test]
    fn the_expected_identity_rule_can_be_a_template_or_a_function() {
        let mut p = policy(TlsMode::Mutual);
        p.expected =
            ExpectedServerIdentity::template("spiffe://{trust_domain}/ns/{namespace}/sa/{service}")
                .unwrap();
        let s = p.settings_for(&key("shop", "cart"), None).unwrap();
        assert_eq!(
            s.identities[0].to_string(),
            "spiffe://{trust_domain}/ns/shop/sa/cart"
        );
        p.expected = ExpectedServerIdentity::from_fn(|b| {
            ServerIdentity::DnsName(format!("{}.internal", b.service.name()))
        });
        let s = p.settings_for(&key("shop", "cart"), None).unwrap();
        assert_eq!(
            s.identities,
            [ServerIdentity::DnsName("cart.internal".into())]
        );
        assert!(ExpectedServerIdentity::template("spiffe://{trust_domain}/a/**").is_err());
    }
}
