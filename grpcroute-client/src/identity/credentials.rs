//! [`Credentials`]: one generation of the client's identity (an X.509 SVID, its private key,
//! and the trust bundles that servers are verified against), parsed and checked once when
//! it is loaded so that handshakes only read it.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use rustls::{
    RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    sign::CertifiedKey,
};

use super::{SpiffeId, SpiffeIdError, san::SubjectAltNames};

/// The client's identity at one moment: its X.509 SVID (certificate chain and private key)
/// and the trust bundle(s) it verifies servers with. Immutable; a rotation replaces it.
#[derive(Clone)]
pub struct Credentials {
    pub(crate) key: Arc<CertifiedKey>,
    spiffe_id: SpiffeId,
    not_after: SystemTime,
    /// The bundle of the client's own trust domain (for files: the one bundle they have).
    pub(crate) roots: Arc<RootCertStore>,
    /// Bundles of other trust domains, by trust domain (federation; Workload API only).
    pub(crate) federated: HashMap<String, Arc<RootCertStore>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("spiffe_id", &self.spiffe_id)
            .field("not_after", &self.not_after)
            .field("chain_len", &self.key.cert.len())
            .field("roots", &self.roots.len())
            .field("federated", &self.federated.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Why credentials could not be loaded. The previous generation (if any) stays in use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// A file could not be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        message: String,
    },
    /// The certificate chain has no certificate.
    #[error("{what} has no PEM certificate")]
    NoCertificate {
        /// Which input.
        what: String,
    },
    /// PEM that cannot be decoded.
    #[error("{what} is not valid PEM: {message}")]
    Pem {
        /// Which input.
        what: String,
        /// Details.
        message: String,
    },
    /// The key file has no private key (PKCS#8, PKCS#1 or SEC1).
    #[error("{what} has no PEM private key")]
    NoPrivateKey {
        /// Which input.
        what: String,
    },
    /// The private key is of a type the ring provider cannot sign with, or does not match
    /// the certificate (a rotation caught between writing the two files).
    #[error("the private key cannot be used with the certificate: {0}")]
    Key(String),
    /// The leaf certificate is not an X.509 SVID.
    #[error("the certificate is not a usable SVID: {0}")]
    NotAnSvid(SpiffeIdError),
    /// The trust bundle has no certificate that can be a trust anchor.
    #[error("the trust bundle has no usable CA certificate ({0})")]
    TrustBundle(String),
}

impl Credentials {
    /// Credentials from PEM: the certificate chain (leaf first), the private key, and the
    /// trust bundle (one or more CA certificates).
    ///
    /// # Errors
    ///
    /// When any part is missing or malformed, the key does not match the leaf, or the leaf
    /// is not an X.509 SVID (exactly one `spiffe://` URI SAN).
    pub fn from_pem(
        certificate_chain: &[u8],
        private_key: &[u8],
        trust_bundle: &[u8],
    ) -> Result<Self, CredentialsError> {
        let chain = pem_certificates(certificate_chain, "the certificate chain")?;
        let key = PrivateKeyDer::from_pem_slice(private_key).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => CredentialsError::NoPrivateKey {
                what: "the private key".into(),
            },
            other => CredentialsError::Pem {
                what: "the private key".into(),
                message: other.to_string(),
            },
        })?;
        let roots = pem_certificates(trust_bundle, "the trust bundle")?;
        Self::from_der(chain, key, roots, HashMap::new())
    }

    /// Credentials from DER, with bundles of federated trust domains.
    pub(crate) fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        roots: Vec<CertificateDer<'static>>,
        federated: HashMap<String, Vec<CertificateDer<'static>>>,
    ) -> Result<Self, CredentialsError> {
        let leaf = chain
            .first()
            .ok_or_else(|| CredentialsError::NoCertificate {
                what: "the certificate chain".into(),
            })?;
        let spiffe_id =
            SpiffeId::from_certificate(leaf.as_ref()).map_err(CredentialsError::NotAnSvid)?;
        let names = SubjectAltNames::of(leaf.as_ref()).map_err(CredentialsError::NotAnSvid)?;
        let not_after = SystemTime::UNIX_EPOCH
            + Duration::from_secs(u64::try_from(names.not_after).unwrap_or(0));
        let key = CertifiedKey::from_der(chain, key, &crate::crypto::provider())
            .map_err(|e| CredentialsError::Key(e.to_string()))?;
        let store = |certs: Vec<CertificateDer<'static>>| {
            let mut store = RootCertStore::empty();
            let (_, rejected) = store.add_parsable_certificates(certs);
            if store.is_empty() {
                return Err(CredentialsError::TrustBundle(format!(
                    "{rejected} certificate(s) rejected"
                )));
            }
            Ok(Arc::new(store))
        };
        Ok(Self {
            key: Arc::new(key),
            spiffe_id,
            not_after,
            roots: store(roots)?,
            federated: federated
                .into_iter()
                .map(|(td, certs)| Ok((td, store(certs)?)))
                .collect::<Result<_, CredentialsError>>()?,
        })
    }

    /// The client's SPIFFE ID (the SVID's URI SAN).
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The certificate chain presented to servers, leaf first (DER).
    pub fn certificate_chain(&self) -> &[CertificateDer<'static>] {
        &self.key.cert
    }

    /// When the leaf certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The roots to verify a server of `trust_domain` with: that domain's federated bundle
    /// if there is one, else the client's own bundle.
    pub(crate) fn roots_for(&self, trust_domain: Option<&str>) -> &Arc<RootCertStore> {
        trust_domain
            .and_then(|td| self.federated.get(td))
            .unwrap_or(&self.roots)
    }
}

fn pem_certificates(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, CredentialsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CredentialsError::Pem {
            what: what.into(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CredentialsError::NoCertificate { what: what.into() });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use grpcroute_test_identity::{Ca, Leaf};

    use super::*;

    const ID: &str = "spiffe://example.org/ns/a/sa/b";

    #[test]
    fn takes_a_whole_svid_and_refuses_what_is_not_one() {
        let ca = Ca::new("ca").unwrap();
        let a = ca.issue(&Leaf::spiffe(ID)).unwrap();
        let b = ca.issue(&Leaf::spiffe(ID)).unwrap();
        let bundle = ca.cert_pem().as_bytes();
        let ok =
            Credentials::from_pem(a.cert_pem.as_bytes(), a.key_pem.as_bytes(), bundle).unwrap();
        assert_eq!(ok.spiffe_id().as_str(), ID);
        assert_eq!(ok.certificate_chain()[0].as_ref(), a.cert_der.as_slice());
        assert!(ok.not_after() > SystemTime::now());

        // A rotation caught between writing the certificate and the key.
        assert!(matches!(
            Credentials::from_pem(b.cert_pem.as_bytes(), a.key_pem.as_bytes(), bundle),
            Err(CredentialsError::Key(_))
        ));
        let dns = ca.issue(&Leaf::dns("a.example.org")).unwrap();
        assert!(matches!(
            Credentials::from_pem(dns.cert_pem.as_bytes(), dns.key_pem.as_bytes(), bundle),
            Err(CredentialsError::NotAnSvid(SpiffeIdError::NotAnSvid(0)))
        ));
        assert!(matches!(
            Credentials::from_pem(b"", a.key_pem.as_bytes(), bundle),
            Err(CredentialsError::NoCertificate { .. })
        ));
        assert!(matches!(
            Credentials::from_pem(a.cert_pem.as_bytes(), b"", bundle),
            Err(CredentialsError::NoPrivateKey { .. })
        ));
        assert!(matches!(
            Credentials::from_pem(a.cert_pem.as_bytes(), a.key_pem.as_bytes(), b""),
            Err(CredentialsError::NoCertificate { .. })
        ));
    }

    #[test]
    fn a_servers_spiffe_id_is_read_from_its_certificate() {
        let ca = Ca::new("ca").unwrap();
        let svid = ca.issue(&Leaf::spiffe(ID)).unwrap();
        assert_eq!(
            SpiffeId::from_certificate(&svid.cert_der).unwrap().as_str(),
            ID
        );
        let dns = ca.issue(&Leaf::dns("a.example.org")).unwrap();
        assert_eq!(
            SpiffeId::from_certificate(&dns.cert_der),
            Err(SpiffeIdError::NotAnSvid(0))
        );
        assert!(matches!(
            SpiffeId::from_certificate(b"not DER"),
            Err(SpiffeIdError::Certificate(_))
        ));
    }
}
