//! [`ManifestDir`]: a folder of manifests as a source, reloaded on change.

use std::{path::PathBuf, time::Duration};

use super::{Source, Updater};
use crate::{
    Resources,
    manifest::{self, ManifestError},
};

/// A folder of Kubernetes manifests (or single manifest files), watched for changes.
///
/// Every `*.yaml`, `*.yml` and `*.json` file is read (see [`manifest::load`]). When
/// anything changes the whole set is read again and applied as one update. If any
/// document fails to parse, nothing of that update is applied: the last good configuration
/// stays in force and the error (file, document, reason) is logged and reported.
#[derive(Clone, Debug)]
pub struct ManifestDir {
    paths: Vec<PathBuf>,
    debounce: Duration,
    poll_interval: Duration,
}

impl ManifestDir {
    /// Watches one folder or file.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::with_paths(vec![path.into()])
    }

    /// Watches several folders or files, read as one configuration.
    pub fn with_paths(paths: Vec<PathBuf>) -> Self {
        Self {
            paths,
            debounce: Duration::from_millis(50),
            poll_interval: Duration::from_secs(5),
        }
    }

    /// How long to wait for a burst of file events to settle before reloading (default
    /// 50 ms).
    #[must_use]
    pub fn debounce(mut self, debounce: Duration) -> Self {
        self.debounce = debounce;
        self
    }

    /// How often to re-read even without a file event, as a safety net for file systems
    /// that do not report changes (default 5 s).
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Reads the manifests once. `Err` if any document failed.
    pub fn load(&self) -> Result<Resources, Vec<ManifestError>> {
        let loaded = manifest::load(&self.paths);
        if loaded.errors.is_empty() {
            Ok(loaded.resources)
        } else {
            Err(loaded.errors)
        }
    }

    fn watch(
        &self,
    ) -> (
        Option<notify::RecommendedWatcher>,
        tokio::sync::mpsc::Receiver<()>,
    ) {
        use notify::Watcher;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| !e.kind.is_access()) {
                // A full channel already holds a pending reload.
                let _ = tx.try_send(());
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(error) => {
                tracing::warn!(%error, "cannot watch manifests; polling only");
                return (None, rx);
            }
        };
        for path in &self.paths {
            // Watch a file's folder: editors replace files by renaming, which would end a
            // watch on the file itself.
            let dir = if path.is_file() {
                path.parent().map(PathBuf::from).unwrap_or_default()
            } else {
                path.clone()
            };
            let dir = if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            };
            if let Err(error) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
                tracing::warn!(path = %dir.display(), %error, "cannot watch manifests; polling only");
            }
        }
        (Some(watcher), rx)
    }
}

impl Source for ManifestDir {
    async fn run(self, updater: Updater) {
        let (_watcher, mut events) = self.watch();
        let mut applied: Option<Resources> = None;
        loop {
            match self.load() {
                Ok(resources) => {
                    if applied.as_ref() != Some(&resources) {
                        let Some(report) = updater.update(&resources) else {
                            return;
                        };
                        tracing::info!(
                            paths = ?self.paths,
                            version = report.version,
                            rejected = report.rejected.len(),
                            "manifests loaded"
                        );
                        applied = Some(resources);
                    }
                }
                Err(errors) => {
                    for error in &errors {
                        tracing::warn!(%error, "manifest not loaded");
                    }
                    let summary = errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ");
                    if !updater.report_error(format!("manifests not applied: {summary}")) {
                        return;
                    }
                }
            }
            if updater.is_closed() {
                return;
            }
            tokio::select! {
                event = events.recv() => {
                    if event.is_some() {
                        tokio::time::sleep(self.debounce).await;
                        while events.try_recv().is_ok() {}
                    } else {
                        tokio::time::sleep(self.poll_interval).await;
                    }
                }
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }
}
