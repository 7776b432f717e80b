//! Writing credentials the way the mesh finds them: the file names of each layout, written
//! either file by file (each replaced by a rename) or as Kubernetes' atomic writer does for
//! projected and CSI volumes (a new timestamped directory, then one `..data` symlink swap).

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::Context as _;

/// The file names of a layout: certificate chain, private key, trust bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// cert-manager csi-driver-spiffe: `tls.crt`, `tls.key`, `ca.crt`.
    CsiDriverSpiffe,
    /// Istio: `cert-chain.pem`, `key.pem`, `root-cert.pem`.
    Istio,
    /// Names of the test's choosing (gRPC A29 `file_watcher`).
    Custom {
        /// Certificate chain.
        cert: &'static str,
        /// Private key.
        key: &'static str,
        /// Trust bundle.
        ca: &'static str,
    },
}

impl Layout {
    /// The three file names.
    pub fn names(self) -> [&'static str; 3] {
        match self {
            Self::CsiDriverSpiffe => ["tls.crt", "tls.key", "ca.crt"],
            Self::Istio => ["cert-chain.pem", "key.pem", "root-cert.pem"],
            Self::Custom { cert, key, ca } => [cert, key, ca],
        }
    }
}

/// The contents: certificate chain, private key, trust bundle (PEM).
#[derive(Clone, Debug)]
pub struct Pem {
    /// Certificate chain, leaf first.
    pub chain: String,
    /// Private key.
    pub key: String,
    /// Trust bundle.
    pub bundle: String,
}

/// Writes each file to a temporary name and renames it into place: a reader sees old or new
/// files, but may see a new certificate with the old key for a moment (the order is chain,
/// key, bundle).
///
/// # Errors
///
/// I/O errors.
pub fn write_each(dir: &Path, layout: Layout, pem: &Pem) -> anyhow::Result<()> {
    let [cert, key, ca] = layout.names();
    for (name, contents) in [(cert, &pem.chain), (key, &pem.key), (ca, &pem.bundle)] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join(name)).with_context(|| format!("renaming to {name}"))?;
    }
    Ok(())
}

/// Writes as the kubelet's atomic writer does: the files into a new `..<n>` directory, a
/// `..data_tmp` symlink to it renamed over `..data`, and each visible name a symlink to
/// `..data/<name>` (made once). All three files change at the same instant.
///
/// # Errors
///
/// I/O errors.
pub fn write_atomic(dir: &Path, layout: Layout, pem: &Pem) -> anyhow::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let version = format!(
        "..{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let versioned = dir.join(&version);
    std::fs::create_dir(&versioned).with_context(|| format!("creating {}", versioned.display()))?;
    let [cert, key, ca] = layout.names();
    for (name, contents) in [(cert, &pem.chain), (key, &pem.key), (ca, &pem.bundle)] {
        std::fs::write(versioned.join(name), contents)?;
    }
    let data = dir.join("..data");
    let previous: Option<PathBuf> = std::fs::read_link(&data).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&version, &tmp)?;
    std::fs::rename(&tmp, &data).context("swapping ..data")?;
    for name in [cert, key, ca] {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link)?;
        }
    }
    if let Some(previous) = previous {
        let _ = std::fs::remove_dir_all(dir.join(previous));
    }
    Ok(())
}
