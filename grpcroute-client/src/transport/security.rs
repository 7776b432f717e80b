//! The connector seam: how a backend's endpoints are connected to (plaintext h2c, or TLS
//! with resolved settings), and the mesh-wide policy that decides it per backend.

use std::hash::{Hash, Hasher};
#[cfg(feature = "tls")]
use std::sync::Arc;

use crate::backend::BackendKey;

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
    fn settings(&self) -> Option<&super::tls::TlsSettings> {
        match self {
            Self::Plaintext => None,
            Self::Tls(tls) => Some(tls.settings()),
        }
    }

    #[cfg(not(feature = "tls"))]
    fn settings(&self) -> Option<&()> {
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

impl SecurityPolicy {
    /// The security of `key`'s connections. `current` is returned (keeping the backend's
    /// endpoints) when the settings did not change, so that a configuration update does
    /// not build a connector per backend.
    #[cfg_attr(not(feature = "tls"), allow(clippy::unused_self))]
    pub(crate) fn security_for(&self, key: &BackendKey, current: &Security) -> Security {
        #[cfg(feature = "tls")]
        {
            self.security_with_policy(key, None, current)
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = (key, current);
            Security::Plaintext
        }
    }

    /// [`SecurityPolicy::security_for`], with the backend's own TLS settings where a policy
    /// names them (a BackendTLSPolicy compiled with the routes: pass it here).
    #[cfg(feature = "tls")]
    pub(crate) fn security_with_policy(
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
