//! How a server's certificate is judged, and which certificate the client presents, at
//! each handshake: both read the identity's current credentials, so a rotation takes
//! effect at the next handshake without rebuilding anything.
//!
//! Verification is the chain check rustls (webpki) does for any server — signatures, the
//! validity period of every certificate, the server-auth key usage — against the trust
//! bundle, and then an identity check of our own, because webpki verifies DNS names and IP
//! addresses only while mesh servers are named by SPIFFE IDs (URI SANs).

use std::sync::Arc;

use rustls::{
    CertificateError, DigitallySignedStruct, Error as RustlsError, OtherError, RootCertStore,
    SignatureScheme,
    client::{
        ResolvesClientCert,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor, verify_server_name,
    },
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::ParsedCertificate,
    sign::CertifiedKey,
};

use super::{ServerIdentity, TlsFailure, TrustRoots, san_match::CompiledSanMatcher};
use crate::identity::{Credentials, Identity, SpiffeId, san::SubjectAltNames};

/// Verifies servers of one backend's TLS settings.
#[derive(Debug)]
pub(super) struct Verifier {
    pub(super) provider: Arc<CryptoProvider>,
    pub(super) identity: Option<Identity>,
    pub(super) roots: Roots,
    /// Accepted if any matches; empty: the SNI name must be a DNS name of the certificate.
    pub(super) identities: Vec<ServerIdentity>,
    /// xDS (A29): when set, replaces `identities`: any SAN must match any matcher (none:
    /// the chain alone is verified).
    pub(super) san_matchers: Option<Vec<CompiledSanMatcher>>,
}

#[derive(Debug)]
pub(super) enum Roots {
    Mesh,
    Fixed(Arc<RootCertStore>),
}

impl Roots {
    pub(super) fn new(roots: &TrustRoots) -> Self {
        match roots {
            TrustRoots::Mesh => Self::Mesh,
            TrustRoots::Certificates(certs) => {
                let mut store = RootCertStore::empty();
                store.add_parsable_certificates(certs.iter().cloned());
                Self::Fixed(Arc::new(store))
            }
            TrustRoots::System => Self::Fixed(system_roots()),
        }
    }
}

/// The platform's roots, read once: the OS store does not change under a running process
/// often enough to pay for reading it per connector. Certificates that cannot be read are
/// logged and skipped; with none, every server is an untrusted issuer, which the call's
/// error then says.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: std::sync::OnceLock<Arc<RootCertStore>> = std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            for error in &loaded.errors {
                tracing::warn!(%error, "reading the system's CA certificates");
            }
            let mut store = RootCertStore::empty();
            let (added, ignored) = store.add_parsable_certificates(loaded.certs);
            tracing::debug!(added, ignored, "system CA certificates loaded");
            Arc::new(store)
        })
        .clone()
}

fn ours(failure: TlsFailure) -> RustlsError {
    RustlsError::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(failure))))
}

impl Verifier {
    fn credentials(&self) -> Option<Arc<Credentials>> {
        self.identity.as_ref().and_then(Identity::current)
    }

    /// The trust domain a server is expected in, when every accepted identity names the
    /// same one: its federated bundle (if any) verifies the chain.
    fn expected_trust_domain(&self) -> Option<&str> {
        let mut domains = self.identities.iter().map(|i| match i {
            ServerIdentity::SpiffeId(id) => Some(id.trust_domain()),
            _ => None,
        });
        let first = domains.next()??;
        domains.all(|d| d == Some(first)).then_some(first)
    }

    fn check_identity(
        &self,
        parsed: &ParsedCertificate<'_>,
        end_entity: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
        credentials: Option<&Credentials>,
    ) -> Result<(), RustlsError> {
        let names = SubjectAltNames::of(end_entity.as_ref())
            .map_err(|e| ours(TlsFailure::BadCertificate(e.to_string())))?;
        let own = credentials.map(|c| c.spiffe_id().trust_domain());
        let presented_id = match names.uris.as_slice() {
            [one] => SpiffeId::parse(one).ok(),
            _ => None,
        };
        if let Some(matchers) = &self.san_matchers {
            return check_sans(matchers, &names);
        }
        if self.identities.is_empty() {
            return verify_server_name(parsed, server_name).map_err(|_| {
                ours(TlsFailure::IdentityMismatch {
                    expected: format!("DNS:{}", server_name.to_str()),
                    presented: names.describe(),
                })
            });
        }
        let mut accepted = false;
        for expected in &self.identities {
            accepted = match expected {
                ServerIdentity::SpiffeId(id) => presented_id.as_ref() == Some(id),
                ServerIdentity::SpiffePattern(p) => {
                    if p.is_own_trust_domain() && own.is_none() {
                        return Err(ours(TlsFailure::NoOwnTrustDomain(p.to_string())));
                    }
                    presented_id.as_ref().is_some_and(|id| p.matches(id, own))
                }
                ServerIdentity::DnsName(name) => ServerName::try_from(name.as_str())
                    .is_ok_and(|n| verify_server_name(parsed, &n).is_ok()),
                ServerIdentity::Uri(uri) => names.uris.iter().any(|u| u == uri),
            };
            if accepted {
                break;
            }
        }
        if accepted {
            return Ok(());
        }
        let expected: Vec<String> = self
            .identities
            .iter()
            .map(|i| match i {
                ServerIdentity::SpiffePattern(p) => p.display_with(own),
                other => other.to_string(),
            })
            .collect();
        Err(ours(TlsFailure::IdentityMismatch {
            expected: expected.join(" or "),
            presented: names.describe(),
        }))
    }
}

/// A29 server authorization: any SAN of the leaf matched by any matcher.
fn check_sans(matchers: &[CompiledSanMatcher], names: &SubjectAltNames) -> Result<(), RustlsError> {
    if matchers.is_empty() {
        return Ok(());
    }
    let ips: Vec<String> = names.ips.iter().map(ToString::to_string).collect();
    let sans = names
        .uris
        .iter()
        .map(|u| (u.as_str(), false))
        .chain(names.dns.iter().map(|d| (d.as_str(), true)))
        .chain(ips.iter().map(|i| (i.as_str(), false)));
    let mut sans = sans;
    if sans.any(|(san, is_dns)| matchers.iter().any(|m| m.matches(san, is_dns))) {
        return Ok(());
    }
    let expected: Vec<String> = matchers
        .iter()
        .map(|m| format!("SAN {}", m.matcher()))
        .collect();
    Err(ours(TlsFailure::IdentityMismatch {
        expected: expected.join(" or "),
        presented: names.describe(),
    }))
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, RustlsError> {
        let credentials = self.credentials();
        let roots = match &self.roots {
            Roots::Fixed(store) => store.clone(),
            Roots::Mesh => match &credentials {
                Some(c) => c.roots_for(self.expected_trust_domain()).clone(),
                None => {
                    let source = self
                        .identity
                        .as_ref()
                        .map_or("the mesh has no identity configured", Identity::source);
                    return Err(ours(TlsFailure::NoTrustBundle(source.to_string())));
                }
            },
        };
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        self.check_identity(&parsed, end_entity, server_name, credentials.as_deref())?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Presents the identity's current certificate.
#[derive(Debug)]
pub(super) struct ClientCertificate(pub(super) Identity);

impl ResolvesClientCert for ClientCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|c| c.key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::tls::san_match::SanMatcher;

    fn names() -> SubjectAltNames {
        SubjectAltNames {
            uris: vec!["spiffe://td/ns/a/sa/server".into()],
            dns: vec!["*.svc.example".into()],
            ips: vec![std::net::Ipv4Addr::LOCALHOST.into()],
            ..SubjectAltNames::default()
        }
    }

    fn check(matchers: Vec<SanMatcher>) -> Result<(), String> {
        let compiled: Vec<CompiledSanMatcher> =
            matchers.into_iter().map(CompiledSanMatcher::new).collect();
        check_sans(&compiled, &names()).map_err(|e| format!("{e:?}"))
    }

    fn exact(value: &str) -> SanMatcher {
        SanMatcher::Exact {
            value: value.into(),
            ignore_case: false,
        }
    }

    #[test]
    fn any_san_matched_by_any_matcher_is_accepted() {
        assert!(check(vec![]).is_ok(), "no matchers: the chain alone");
        assert!(check(vec![exact("nope"), exact("spiffe://td/ns/a/sa/server")]).is_ok());
        assert!(
            check(vec![exact("api.svc.example")]).is_ok(),
            "DNS wildcard"
        );
        assert!(check(vec![exact("127.0.0.1")]).is_ok(), "IP SAN");
    }

    #[test]
    fn a_mismatch_names_the_matchers_and_the_sans() {
        let e = check(vec![exact("spiffe://td/ns/a/sa/other")]).unwrap_err();
        assert!(e.contains("IdentityMismatch"), "{e}");
        assert!(
            e.contains(r#"SAN exact \"spiffe://td/ns/a/sa/other\""#),
            "{e}"
        );
        assert!(
            e.contains("URI:spiffe://td/ns/a/sa/server") && e.contains("DNS:*.svc.example"),
            "{e}"
        );
    }
}
