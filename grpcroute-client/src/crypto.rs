//! The one rustls crypto provider the crate uses (ring), for the client's certificates
//! (`identity`) and its TLS connections (`transport::tls`). Built once; rustls' process
//! default is left alone, since the application may have installed another.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// The ring provider.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}
