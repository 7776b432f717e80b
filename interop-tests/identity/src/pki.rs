//! Certificate authorities and leaf certificates made on the spot with `rcgen` (ECDSA
//! P-256, as SPIRE issues): SPIFFE SVIDs, DNS-named server certificates, and the broken ones
//! the failure tests need (expired, not yet valid, another trust domain's, no SAN).

use std::time::Duration;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

/// A self-signed root CA.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: Vec<u8>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// A certificate and its private key.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The leaf certificate, PEM.
    pub cert_pem: String,
    /// The leaf certificate, DER.
    pub cert_der: Vec<u8>,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
}

/// What a leaf certificate says.
#[derive(Clone, Debug)]
pub struct Leaf {
    uris: Vec<String>,
    dns: Vec<String>,
    /// Offsets from now; negative is in the past.
    valid_from: i64,
    valid_until: i64,
}

impl Leaf {
    /// An X.509 SVID: the one URI SAN `id`, valid from an hour ago for a day.
    pub fn spiffe(id: &str) -> Self {
        Self {
            uris: vec![id.into()],
            dns: Vec::new(),
            valid_from: -3600,
            valid_until: 86_400,
        }
    }

    /// A server certificate for a DNS name.
    pub fn dns(name: &str) -> Self {
        Self {
            uris: Vec::new(),
            dns: vec![name.into()],
            ..Self::spiffe("")
        }
    }

    /// Adds a DNS SAN.
    pub fn with_dns(mut self, name: &str) -> Self {
        self.dns.push(name.into());
        self
    }

    /// Expired an hour ago.
    pub fn expired(mut self) -> Self {
        self.valid_from = -7200;
        self.valid_until = -3600;
        self
    }

    /// Valid from an hour from now.
    pub fn not_yet_valid(mut self) -> Self {
        self.valid_from = 3600;
        self.valid_until = 7200;
        self
    }
}

fn at(offset: i64) -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    if offset >= 0 {
        now + Duration::from_secs(offset.unsigned_abs())
    } else {
        now - Duration::from_secs(offset.unsigned_abs())
    }
}

impl Ca {
    /// A new root CA named `name`.
    ///
    /// # Errors
    ///
    /// If rcgen fails (it does not with these parameters).
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let key = KeyPair::generate().context("generating a CA key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = at(-86_400);
        params.not_after = at(10 * 86_400);
        let cert = params.self_signed(&key).context("self-signing the CA")?;
        Ok(Self {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM (a trust bundle of one).
    pub fn cert_pem(&self) -> &str {
        &self.pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.der
    }

    /// Issues a leaf certificate (server and client auth) with a fresh key.
    ///
    /// # Errors
    ///
    /// When a SAN is not valid for rcgen.
    pub fn issue(&self, leaf: &Leaf) -> anyhow::Result<Issued> {
        let key = KeyPair::generate().context("generating a leaf key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        // The X.509-SVID specification: a leaf says it is not a CA (SPIRE does; the spiffe
        // crate rejects a leaf without basicConstraints).
        params.is_ca = IsCa::ExplicitNoCa;
        for uri in &leaf.uris {
            params
                .subject_alt_names
                .push(SanType::URI(uri.as_str().try_into()?));
        }
        for dns in &leaf.dns {
            params
                .subject_alt_names
                .push(SanType::DnsName(dns.as_str().try_into()?));
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = at(leaf.valid_from);
        params.not_after = at(leaf.valid_until);
        let cert = params
            .signed_by(&key, &self.issuer)
            .context("signing a leaf")?;
        Ok(Issued {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        })
    }
}

/// The SPIFFE ID (one URI SAN) of a DER certificate, if it has one.
pub fn spiffe_id_of(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::URI(u) => Some((*u).to_string()),
        _ => None,
    })
}
