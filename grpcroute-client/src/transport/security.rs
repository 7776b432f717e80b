//! The connector seam: how a backend's endpoints are connected to (plaintext h2c, or TLS
//! with resolved settings), and the mesh-wide policy that decides it per backend.

use std::hash::{Hash, Hasher};
#[cfg(feature = "tls")]
use std::sync::Arc;

use crate::route::{BackendKey, backend_tls::AppliedTls};

/// How an endpoint's connections are made. Compared (and hashed) by settings, not by
/// connector instance: equal settings may share an endpoint and its connection.
#[derive(Clone, Debug, Default)]
pub(crate) enum Security {
    /// HTTP/2 with prior knowledge over TCP.
    #[default]
    Plaintext,
    /// HTTP/2 over TLS (ALPN `h2`).
    #[cfg(feature = "tls")]
    Tls(Arc<super::tls::TlsConnector>),
}

impl Security {
    #[cfg(feature = "tls")]
    pub(crate) fn settings(&self) -> Option<&super::tls::TlsSettings> {
        match self {
            Self::Plaintext => None,
            Self::Tls(tls) => Some(tls.settings()),
        }
    }

    #[cfg(not(feature = "tls"))]
    pub(crate) fn settings(&self) -> Option<&()> {
        None
    }
}

impl PartialEq for Security {
    fn eq(&self, other: &Self) -> bool {
        self.settings() == other.settings()
    }
}

impl Eq for Security {}

impl Hash for Security {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.settings().hash(state);
    }
}

/// Decides each backend's [`Security`] from the mesh's TLS configuration.
#[derive(Debug, Default)]
pub(crate) struct SecurityPolicy {
    #[cfg(feature = "tls")]
    pub(crate) tls: super::tls::TlsPolicy,
}

/// A backend's security under the configuration in force: how its endpoints are
/// connected to, or why it cannot take calls (a BackendTLSPolicy that cannot be honoured:
/// its calls fail rather than go out in plaintext).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Resolved {
    Usable(Security),
    Unusable(String),
}

impl SecurityPolicy {
    /// The security of `key`'s connections, under the BackendTLSPolicy `applied` to it (if
    /// one is). `current` is returned (keeping the backend's endpoints) when the settings
    /// did not change, so that a configuration update does not build a connector per
    /// backend. In [`TlsMode::Plaintext`](super::tls::TlsMode::Plaintext) policies are not
    /// applied at all.
    #[cfg_attr(not(feature = "tls"), allow(clippy::unused_self))]
    pub(crate) fn security_for(
        &self,
        key: &BackendKey,
        applied: Option<&AppliedTls>,
        current: &Security,
    ) -> Resolved {
        #[cfg(feature = "tls")]
        {
            if self.tls.mode == super::tls::TlsMode::Plaintext {
                return Resolved::Usable(Security::Plaintext);
            }
            let policy = match applied.map(|a| (a, &a.settings)) {
                None => None,
                Some((a, Ok(settings))) => match super::tls::backend_tls_of(settings) {
                    Ok(tls) => Some(tls),
                    Err(message) => {
                        return Resolved::Unusable(format!(
                            "BackendTLSPolicy {}: {message}",
                            a.policy
                        ));
                    }
                },
                Some((_, Err(message))) => return Resolved::Unusable(message.clone()),
            };
            Resolved::Usable(self.security_with_policy(key, policy.as_ref(), current))
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = (key, current);
            match applied {
                None => Resolved::Usable(Security::Plaintext),
                Some(a) => Resolved::Unusable(format!(
                    "BackendTLSPolicy {} asks for TLS, and this build has no TLS support (feature `tls`)",
                    a.policy
                )),
            }
        }
    }

    /// The security of `key`'s connections with the backend's own TLS settings where a
    /// policy names them (a compiled BackendTLSPolicy); without one the builder's
    /// [`MeshBuilder::backend_tls`](crate::MeshBuilder::backend_tls) hook is asked.
    #[cfg(feature = "tls")]
    fn security_with_policy(
        &self,
        key: &BackendKey,
        policy: Option<&super::tls::BackendTls>,
        current: &Security,
    ) -> Security {
        match self.tls.settings_for(key, policy) {
            None => Security::Plaintext,
            Some(settings) if current.settings() == Some(&settings) => current.clone(),
            Some(settings) => Security::Tls(Arc::new(super::tls::TlsConnector::new(
                settings,
                self.tls.identity.clone(),
            ))),
        }
    }
}
