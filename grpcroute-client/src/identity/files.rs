//! [`CredentialFiles`]: an identity read from three PEM files and read again when they
//! change.
//!
//! Changes are seen two ways: a `notify` watch on the files' directories (which also sees
//! Kubernetes' atomic `..data` symlink swaps), and a periodic re-read in case the watch
//! misses something (an overlay file system, a directory that appeared late). A read whose
//! bytes equal the last generation's is not parsed again.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Weak},
    time::Duration,
};

use super::{Credentials, CredentialsError, Inner};

/// How soon a failed read is retried at first (a rotation caught half-written usually
/// completes within milliseconds); the pause doubles up to the refresh interval.
const RETRY_INITIAL: Duration = Duration::from_millis(100);
/// How long a burst of file events is let settle before the files are read.
const SETTLE: Duration = Duration::from_millis(20);

/// Where an identity's PEM files are: the certificate chain (leaf first), the private key,
/// and the trust bundle. See [the module docs](crate::identity) for the layouts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialFiles {
    certificate_chain: PathBuf,
    private_key: PathBuf,
    trust_bundle: PathBuf,
    refresh_interval: Duration,
}

impl CredentialFiles {
    /// Three files anywhere, as gRPC's A29 `file_watcher` certificate provider names them
    /// (`certificate_file`, `private_key_file`, `ca_certificate_file`).
    pub fn new(
        certificate_chain: impl Into<PathBuf>,
        private_key: impl Into<PathBuf>,
        trust_bundle: impl Into<PathBuf>,
    ) -> Self {
        Self {
            certificate_chain: certificate_chain.into(),
            private_key: private_key.into(),
            trust_bundle: trust_bundle.into(),
            refresh_interval: Duration::from_secs(60),
        }
    }

    /// The volume cert-manager's csi-driver-spiffe mounts (usually at
    /// `/var/run/secrets/spiffe.io`): `tls.crt`, `tls.key`, `ca.crt`.
    pub fn csi_driver_spiffe(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        Self::new(dir.join("tls.crt"), dir.join("tls.key"), dir.join("ca.crt"))
    }

    /// Istio's workload certificate files (`/etc/certs`, or `/var/lib/istio/data` for
    /// proxyless gRPC): `cert-chain.pem`, `key.pem`, `root-cert.pem`.
    pub fn istio(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        Self::new(
            dir.join("cert-chain.pem"),
            dir.join("key.pem"),
            dir.join("root-cert.pem"),
        )
    }

    /// How often the files are read again even without a change notification (default
    /// 60 s; A29's `refresh_interval`, whose default there is 10 min, as it has no watch).
    #[must_use]
    pub fn refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// The certificate chain, private key and trust bundle paths.
    pub fn paths(&self) -> [&Path; 3] {
        [
            &self.certificate_chain,
            &self.private_key,
            &self.trust_bundle,
        ]
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "files {}, {}, {}",
            self.certificate_chain.display(),
            self.private_key.display(),
            self.trust_bundle.display()
        )
    }

    async fn read(&self) -> Result<[Vec<u8>; 3], CredentialsError> {
        let read = |path: PathBuf| async move {
            tokio::fs::read(&path)
                .await
                .map_err(|e| CredentialsError::Read {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })
        };
        Ok([
            read(self.certificate_chain.clone()).await?,
            read(self.private_key.clone()).await?,
            read(self.trust_bundle.clone()).await?,
        ])
    }

    fn directories(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .paths()
            .iter()
            .map(|p| match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }
}

/// Keeps `identity` loaded from `files` until the identity is dropped.
pub(super) async fn watch(identity: Weak<Inner>, files: CredentialFiles) {
    let changed = Arc::new(tokio::sync::Notify::new());
    let mut watcher = None;
    let mut last: Option<[Vec<u8>; 3]> = None;
    let mut retry = RETRY_INITIAL;
    loop {
        if watcher.is_none() {
            watcher = start_watch(&files, &changed);
        }
        let Some(inner) = identity.upgrade() else {
            return;
        };
        let wait = match files.read().await {
            Ok(bytes) if last.as_ref() == Some(&bytes) => files.refresh_interval,
            Ok(bytes) => match Credentials::from_pem(&bytes[0], &bytes[1], &bytes[2]) {
                Ok(credentials) => {
                    inner.replace(credentials);
                    last = Some(bytes);
                    retry = RETRY_INITIAL;
                    files.refresh_interval
                }
                Err(error) => failed(&inner, &files, error, &mut retry),
            },
            Err(error) => failed(&inner, &files, error, &mut retry),
        };
        drop(inner);
        tokio::select! {
            () = changed.notified() => {
                // Let a burst of writes (three files, a symlink swap) finish first.
                tokio::time::sleep(SETTLE).await;
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
}

fn failed(
    inner: &Inner,
    files: &CredentialFiles,
    error: CredentialsError,
    retry: &mut Duration,
) -> Duration {
    inner.report_error(format!("{}: {error}", files.describe()));
    let wait = *retry;
    *retry = (*retry * 2).min(files.refresh_interval);
    wait.min(files.refresh_interval)
}

/// Watches the files' directories; `None` when none can be watched yet (the periodic
/// re-read then carries on alone, and the watch is tried again on the next round).
fn start_watch(
    files: &CredentialFiles,
    changed: &Arc<tokio::sync::Notify>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let changed = changed.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Access events (reads, including ours) are not changes.
        if event.is_ok_and(|e| !e.kind.is_access()) {
            changed.notify_one();
        }
    })
    .ok()?;
    let mut watching = false;
    for dir in files.directories() {
        match watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
            Ok(()) => watching = true,
            Err(error) => {
                tracing::debug!(dir = %dir.display(), %error, "cannot watch credential directory; re-reading periodically");
            }
        }
    }
    watching.then_some(watcher)
}
