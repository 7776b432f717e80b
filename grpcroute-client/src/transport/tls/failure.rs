//! [`TlsFailure`]: what went wrong in a TLS connection attempt, told the way an operator
//! needs it (whose certificate, which check, what was expected and what was presented),
//! never as a bare "transport error".

use std::io;

use rustls::{AlertDescription, CertificateError, Error as RustlsError};

/// Why a TLS connection to an endpoint could not be established. Each is a per-endpoint
/// connect failure: the call tries another endpoint, and fails `UNAVAILABLE` naming the
/// backend, the endpoint and this when none is left.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TlsFailure {
    /// The server's chain does not lead to a trusted root.
    #[error("the server's certificate is not signed by a trusted authority (unknown issuer)")]
    UntrustedIssuer,
    /// The server's certificate (or one of its chain) has expired.
    #[error("the server's certificate has expired{}", context(.not_after, .now))]
    Expired {
        not_after: Option<String>,
        now: Option<String>,
    },
    /// The server's certificate (or one of its chain) is not valid yet.
    #[error("the server's certificate is not valid yet{}", not_before.as_ref().map(|t| format!(" (valid from {t})")).unwrap_or_default())]
    NotYetValid { not_before: Option<String> },
    /// The certificate is valid but names someone else.
    #[error(
        "SAN mismatch: the server's certificate does not name the expected identity: expected {expected}; presented {presented}"
    )]
    IdentityMismatch { expected: String, presented: String },
    /// Another problem with the server's certificate.
    #[error("the server's certificate was rejected: {0}")]
    BadCertificate(String),
    /// The endpoint did not answer the handshake with TLS.
    #[error("the server presented no certificate: {0}")]
    NoServerCertificate(&'static str),
    /// The server's alert after seeing our certificate (or its absence).
    #[error("the server refused our client certificate ({0})")]
    ClientCertificateRefused(String),
    /// The server did not pick HTTP/2 by ALPN.
    #[error("the server did not negotiate ALPN h2 (it chose {})", .0.as_deref().unwrap_or("no protocol"))]
    AlpnNotNegotiated(Option<String>),
    /// Mutual TLS is required and the identity source has delivered nothing yet.
    #[error("no client certificate to present yet ({origin}{})", last_error.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    NoClientIdentity {
        origin: String,
        last_error: Option<String>,
    },
    /// The mesh trust bundle is needed and the identity source has delivered nothing.
    #[error("no trust bundle to verify the server with yet ({0})")]
    NoTrustBundle(String),
    /// The client's certificate carries no trust domain to fill `{trust_domain}` with.
    #[error(
        "the expected identity {0} needs the client's trust domain, and the client has no SPIFFE identity"
    )]
    NoOwnTrustDomain(String),
    /// The handshake did not finish within the connect timeout.
    #[error("the TLS handshake timed out")]
    Timeout,
    /// Anything else the handshake ended with.
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
}

fn context(not_after: &Option<String>, now: &Option<String>) -> String {
    match (not_after, now) {
        (Some(after), Some(now)) => format!(" (valid until {after}; now {now})"),
        (Some(after), None) => format!(" (valid until {after})"),
        _ => String::new(),
    }
}

impl TlsFailure {
    /// The failure behind an I/O error of a handshake or of the first read after it.
    pub(crate) fn from_io(error: &io::Error) -> Self {
        if let Some(tls) = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<RustlsError>())
        {
            return Self::from_rustls(tls);
        }
        match error.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Self::NoServerCertificate(
                "it closed the connection during the TLS handshake (is it serving plaintext, or refusing connections?)",
            ),
            _ => Self::Handshake(error.to_string()),
        }
    }

    pub(crate) fn from_rustls(error: &RustlsError) -> Self {
        match error {
            RustlsError::InvalidCertificate(cert) => Self::from_certificate_error(cert),
            RustlsError::AlertReceived(alert) => match alert {
                AlertDescription::NoApplicationProtocol => Self::AlpnNotNegotiated(None),
                _ => Self::ClientCertificateRefused(format!("alert: {}", alert_name(*alert))),
            },
            RustlsError::InvalidMessage(_)
            | RustlsError::InappropriateHandshakeMessage { .. }
            | RustlsError::InappropriateMessage { .. } => Self::NoServerCertificate(
                "it answered the TLS handshake with something other than TLS (is it serving plaintext?)",
            ),
            RustlsError::NoCertificatesPresented => {
                Self::NoServerCertificate("it sent an empty certificate list")
            }
            RustlsError::NoApplicationProtocol => Self::AlpnNotNegotiated(None),
            other => Self::Handshake(other.to_string()),
        }
    }

    fn from_certificate_error(error: &CertificateError) -> Self {
        match error {
            CertificateError::UnknownIssuer => Self::UntrustedIssuer,
            CertificateError::Expired => Self::Expired {
                not_after: None,
                now: None,
            },
            CertificateError::ExpiredContext { time, not_after } => Self::Expired {
                not_after: Some(unix_time(not_after.as_secs())),
                now: Some(unix_time(time.as_secs())),
            },
            CertificateError::NotValidYet => Self::NotYetValid { not_before: None },
            CertificateError::NotValidYetContext { not_before, .. } => Self::NotYetValid {
                not_before: Some(unix_time(not_before.as_secs())),
            },
            CertificateError::Other(other) => match other.0.downcast_ref::<Self>() {
                Some(ours) => ours.clone(),
                None => Self::BadCertificate(other.to_string()),
            },
            other => Self::BadCertificate(format!("{other:?}")),
        }
    }
}

/// An alert as the TLS registry names it (`certificate_required`, `unknown_ca`, ...).
fn alert_name(alert: AlertDescription) -> String {
    let debug = format!("{alert:?}");
    let mut out = String::with_capacity(debug.len() + 4);
    for (i, c) in debug.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    // "UnknownCA" would read "unknown_c_a".
    out.replace("c_a", "ca")
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC), for messages.
pub(crate) fn unix_time(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm), for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_alerts_as_the_registry_does() {
        assert_eq!(
            alert_name(AlertDescription::CertificateRequired),
            "certificate_required"
        );
        assert_eq!(alert_name(AlertDescription::UnknownCA), "unknown_ca");
        assert_eq!(
            alert_name(AlertDescription::BadCertificate),
            "bad_certificate"
        );
    }

    #[test]
    fn formats_unix_times_as_utc() {
        assert_eq!(unix_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(unix_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(unix_time(1_767_225_599), "2025-12-31T23:59:59Z");
    }

    #[test]
    fn classifies_what_rustls_reports() {
        let io = |e: RustlsError| io::Error::new(io::ErrorKind::InvalidData, e);
        assert_eq!(
            TlsFailure::from_io(&io(RustlsError::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))),
            TlsFailure::UntrustedIssuer
        );
        assert_eq!(
            TlsFailure::from_io(&io(RustlsError::AlertReceived(
                AlertDescription::CertificateRequired
            ))),
            TlsFailure::ClientCertificateRefused("alert: certificate_required".into())
        );
        assert!(matches!(
            TlsFailure::from_io(&io::Error::from(io::ErrorKind::UnexpectedEof)),
            TlsFailure::NoServerCertificate(_)
        ));
        let ours = TlsFailure::IdentityMismatch {
            expected: "a".into(),
            presented: "b".into(),
        };
        let wrapped = RustlsError::InvalidCertificate(CertificateError::Other(rustls::OtherError(
            std::sync::Arc::new(ours.clone()),
        )));
        assert_eq!(TlsFailure::from_io(&io(wrapped)), ours);
    }
}
