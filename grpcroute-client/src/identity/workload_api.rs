//! [`WorkloadApi`]: an identity from the SPIFFE Workload API (a SPIRE agent, or any
//! implementation), through the `spiffe` crate's `X509Source`, which keeps a stream open to
//! the agent, reconnects with backoff, and hands over each SVID and bundle the agent pushes.

use std::{collections::HashMap, sync::Weak, time::Duration};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spiffe::{X509Source, X509SourceBuilder};

use super::{Credentials, CredentialsError, Identity, IdentityError, Inner};

/// Where the Workload API is, and how long to wait for the first SVID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadApi {
    endpoint: Option<String>,
    initial_sync_timeout: Duration,
}

impl WorkloadApi {
    /// The agent named by `SPIFFE_ENDPOINT_SOCKET` (e.g. `unix:///run/spire/agent.sock`).
    pub fn from_env() -> Self {
        Self {
            endpoint: None,
            initial_sync_timeout: Duration::from_secs(10),
        }
    }

    /// The agent at `endpoint` (`unix:///path/to/socket`, or `tcp://ip:port`).
    pub fn endpoint(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: Some(endpoint.into()),
            ..Self::from_env()
        }
    }

    /// How long [`Identity::from_workload_api`] waits for the first SVID (default 10 s).
    #[must_use]
    pub fn initial_sync_timeout(mut self, timeout: Duration) -> Self {
        self.initial_sync_timeout = timeout;
        self
    }

    fn describe(&self) -> String {
        match &self.endpoint {
            Some(e) => format!("SPIFFE Workload API at {e}"),
            None => "SPIFFE Workload API at $SPIFFE_ENDPOINT_SOCKET".into(),
        }
    }
}

impl Identity {
    /// An identity from the SPIFFE Workload API: waits for the first SVID, then follows
    /// every rotation the agent pushes until the identity is dropped. When the stream
    /// breaks, the last SVID stays in use while the `spiffe` crate reconnects.
    ///
    /// # Errors
    ///
    /// Outside a tokio runtime; when the agent cannot be reached or gives no usable SVID
    /// within the initial sync timeout.
    pub async fn from_workload_api(api: WorkloadApi) -> Result<Self, IdentityError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| IdentityError::NoRuntime)?;
        let mut builder = X509SourceBuilder::new().initial_sync_timeout(api.initial_sync_timeout);
        if let Some(endpoint) = &api.endpoint {
            builder = builder.endpoint(endpoint);
        }
        let source = builder
            .build()
            .await
            .map_err(|e| IdentityError::WorkloadApi(e.to_string()))?;
        let identity = Self::new(api.describe());
        identity.replace(credentials(&source)?);
        let task = runtime.spawn(follow(std::sync::Arc::downgrade(&identity.inner), source));
        identity.set_task(task.abort_handle());
        Ok(identity)
    }
}

/// Takes every update of `source` until the identity is dropped or the source closes.
async fn follow(identity: Weak<Inner>, source: X509Source) {
    let mut updates = source.updated();
    loop {
        let changed = updates.changed().await;
        let Some(inner) = identity.upgrade() else {
            break;
        };
        match changed {
            Ok(_) => match credentials(&source) {
                Ok(c) => inner.replace(c),
                Err(e) => inner.report_error(e.to_string()),
            },
            Err(e) => {
                inner.report_error(format!("the Workload API source closed: {e}"));
                break;
            }
        }
    }
    source.shutdown().await;
}

/// The source's selected SVID and its bundles, as credentials.
fn credentials(source: &X509Source) -> Result<Credentials, IdentityError> {
    let unusable = |e: &dyn std::fmt::Display| IdentityError::WorkloadApi(e.to_string());
    let svid = source.svid().map_err(|e| unusable(&e))?;
    let bundles = source.bundle_set().map_err(|e| unusable(&e))?;
    let own = svid.spiffe_id().trust_domain_name().to_string();
    let chain = svid
        .cert_chain()
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
        .collect();
    // The Workload API delivers keys as PKCS#8 DER.
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        svid.private_key().as_bytes().to_vec(),
    ));
    let mut roots = Vec::new();
    let mut federated = HashMap::new();
    for (td, bundle) in bundles.iter() {
        let certs: Vec<CertificateDer<'static>> = bundle
            .authorities()
            .iter()
            .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
            .collect();
        if td.as_str() == own {
            roots = certs;
        } else {
            federated.insert(td.as_str().to_string(), certs);
        }
    }
    if roots.is_empty() {
        return Err(IdentityError::Credentials(CredentialsError::TrustBundle(
            format!("the Workload API sent no bundle for the SVID's trust domain {own}"),
        )));
    }
    Ok(Credentials::from_der(chain, key, roots, federated)?)
}
