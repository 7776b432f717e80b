//! What a certificate says about whom it names: its subject alternative names and its
//! validity period, read with `x509-parser` (rustls verifies chains but does not list
//! names, and webpki has no URI names at all).

use x509_parser::{extensions::GeneralName, prelude::FromDer as _};

use super::SpiffeIdError;

/// The names of a certificate, as presented (not validated).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SubjectAltNames {
    pub(crate) uris: Vec<String>,
    pub(crate) dns: Vec<String>,
    pub(crate) ips: Vec<std::net::IpAddr>,
    /// Seconds since the Unix epoch.
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
}

impl SubjectAltNames {
    pub(crate) fn of(der: &[u8]) -> Result<Self, SpiffeIdError> {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
            .map_err(|e| SpiffeIdError::Certificate(e.to_string()))?;
        let mut out = Self {
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            ..Self::default()
        };
        let san = cert
            .subject_alternative_name()
            .map_err(|e| SpiffeIdError::Certificate(e.to_string()))?;
        for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
            match name {
                GeneralName::URI(uri) => out.uris.push((*uri).to_string()),
                GeneralName::DNSName(dns) => out.dns.push((*dns).to_string()),
                GeneralName::IPAddress(bytes) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                        out.ips.push(v4.into());
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                        out.ips.push(v6.into());
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Every name, for messages: `URI:…`, `DNS:…`, `IP:…`.
    pub(crate) fn describe(&self) -> String {
        let names: Vec<String> = self
            .uris
            .iter()
            .map(|u| format!("URI:{u}"))
            .chain(self.dns.iter().map(|d| format!("DNS:{d}")))
            .chain(self.ips.iter().map(|i| format!("IP:{i}")))
            .collect();
        if names.is_empty() {
            "no subject alternative names".into()
        } else {
            names.join(", ")
        }
    }
}
