//! The client's workload identity for mutual TLS: an X.509 SVID (a certificate whose one
//! URI SAN is a SPIFFE ID, e.g. `spiffe://cluster.local/ns/shop/sa/checkout`), its private
//! key, and the trust bundle servers are verified against.
//!
//! An [`Identity`] is a handle on the current [`Credentials`], kept fresh by its source:
//!
//! | source | constructor | rotation |
//! |---|---|---|
//! | files in a directory | [`Identity::from_files`] with a [`CredentialFiles`] layout | a file watch (`notify`), plus a periodic re-read as a safety net |
//! | the SPIFFE Workload API (SPIRE, …) | `Identity::from_workload_api` (feature `spiffe`) | the agent pushes each new SVID and bundle |
//! | your own code | [`Identity::from_credentials`], then [`Identity::replace`] | when you call it |
//!
//! The file layouts read ([`CredentialFiles`]):
//!
//! | layout | certificate chain | private key | trust bundle | usual mount |
//! |---|---|---|---|---|
//! | cert-manager [csi-driver-spiffe] | `tls.crt` | `tls.key` | `ca.crt` | `/var/run/secrets/spiffe.io` |
//! | Istio workload certificates | `cert-chain.pem` | `key.pem` | `root-cert.pem` | `/etc/certs` (proxyless gRPC: `/var/lib/istio/data`) |
//! | gRPC A29 `file_watcher` plugin | `certificate_file` | `private_key_file` | `ca_certificate_file` | any paths ([`CredentialFiles::new`]) |
//!
//! Every file is PEM: the chain leaf first, the key PKCS#8, PKCS#1 or SEC1 (RSA, ECDSA
//! P-256/P-384, Ed25519), the bundle one or more CA certificates. A new generation is only
//! taken when it is whole and consistent — a key that does not match the certificate (a
//! rotation caught between two writes) keeps the previous generation and is read again
//! shortly after. Kubernetes' atomic `..data` symlink swaps are seen like any other write.
//!
//! Rotation never breaks calls: each new TLS handshake reads the current credentials (no
//! session resumption, so every connection proves the current identity and verifies the
//! server against the current bundle), and connections already open keep working until
//! they close on their own.
//!
//! [csi-driver-spiffe]: https://cert-manager.io/docs/usage/csi-driver-spiffe/

mod credentials;
mod files;
pub(crate) mod san;
mod spiffe_id;
#[cfg(feature = "spiffe")]
mod workload_api;

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

#[cfg(feature = "spiffe")]
pub use self::workload_api::WorkloadApi;
pub use self::{
    credentials::{Credentials, CredentialsError},
    files::CredentialFiles,
    spiffe_id::{SpiffeId, SpiffeIdError, SpiffeIdPattern},
};

/// The client's identity: the current [`Credentials`] and the source that renews them.
/// Cheap to clone; the source's background work stops when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Identity {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    source: String,
    current: ArcSwapOption<Credentials>,
    /// Counts the generations taken (0 before the first).
    generation: watch::Sender<u64>,
    last_error: Mutex<Option<String>>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

/// Why an identity source could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Sources watch in the background and need a tokio runtime.
    #[error("identity sources must be started inside a tokio runtime")]
    NoRuntime,
    /// The SPIFFE Workload API could not be reached or gave no usable SVID.
    #[error("SPIFFE Workload API: {0}")]
    WorkloadApi(String),
    /// The credentials the source gave are unusable.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

impl Identity {
    fn new(source: String) -> Self {
        let (generation, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                source,
                current: ArcSwapOption::empty(),
                generation,
                last_error: Mutex::new(None),
                task: Mutex::new(None),
            }),
        }
    }

    /// A fixed identity, which changes only when [`Identity::replace`] is called (for
    /// tests, and for sources of your own).
    pub fn from_credentials(credentials: Credentials) -> Self {
        let identity = Self::new("credentials given in code".into());
        identity.replace(credentials);
        identity
    }

    /// An identity read from files, and read again whenever they change (see
    /// [`CredentialFiles`] for the layouts). Returns at once: until the files can be read,
    /// connections that need the identity fail (naming the files and the error), and
    /// [`Identity::ready`] waits.
    ///
    /// # Errors
    ///
    /// Outside a tokio runtime.
    pub fn from_files(files: CredentialFiles) -> Result<Self, IdentityError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| IdentityError::NoRuntime)?;
        let identity = Self::new(files.describe());
        let task = runtime.spawn(files::watch(Arc::downgrade(&identity.inner), files));
        identity.set_task(task.abort_handle());
        Ok(identity)
    }

    pub(crate) fn set_task(&self, task: tokio::task::AbortHandle) {
        *self.inner.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    /// Takes `credentials` as the current generation: the next handshake uses them.
    pub fn replace(&self, credentials: Credentials) {
        self.inner.replace(credentials);
    }

    /// The current credentials; `None` until the source has delivered its first.
    pub fn current(&self) -> Option<Arc<Credentials>> {
        self.inner.current.load_full()
    }

    /// The current SPIFFE ID.
    pub fn spiffe_id(&self) -> Option<SpiffeId> {
        self.inner
            .current
            .load()
            .as_ref()
            .map(|c| c.spiffe_id().clone())
    }

    /// Where the credentials come from, for messages.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// The source's last error, if its last attempt to renew the credentials failed.
    pub fn last_error(&self) -> Option<String> {
        self.inner.last_error()
    }

    /// Notifies each new generation of credentials: the value counts the generations taken
    /// so far (0 before the first).
    pub fn updates(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    /// Waits until the source has delivered its first credentials.
    pub async fn ready(&self) {
        let mut rx = self.updates();
        // The sender lives in `self.inner`: this cannot fail.
        let _ = rx.wait_for(|generation| *generation > 0).await;
    }
}

impl Inner {
    pub(crate) fn replace(&self, credentials: Credentials) {
        tracing::info!(
            source = %self.source,
            spiffe_id = %credentials.spiffe_id(),
            "workload identity loaded"
        );
        self.current.store(Some(Arc::new(credentials)));
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.generation.send_modify(|g| *g += 1);
    }

    pub(crate) fn report_error(&self, error: String) {
        tracing::warn!(source = %self.source, %error, "workload identity not renewed; keeping the current one");
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
