//! [`ManifestDir`]: a folder of manifests as a source, reloaded on change.

use std::{path::PathBuf, time::Duration};

use super::{Source, Update, Updater};
use crate::{
    Resources,
    manifest::{self, ManifestError},
    model::Model,
};

/// A folder of Kubernetes manifests (or single manifest files), watched for changes.
///
/// Every `*.yaml`, `*.yml` and `*.json` file is read (see [`manifest::load`]). When
/// anything changes the whole set is read again and applied as one update.
///
/// - If a file or a document cannot be read (not YAML, not a Kubernetes object), nothing
///   of that update is applied: which objects it held is unknown, and applying the rest
///   would delete them. The last good configuration stays in force and the error (file,
///   document, reason) is logged and reported.
/// - An object that can be named but whose content does not fit the API types (e.g. a
///   filter `type` of a later Gateway API release) is rejected alone, as the Kubernetes
///   source does: the rest is applied, and the object shows in
///   [`Mesh::rejected`](crate::Mesh::rejected), in route status, in the
///   `grpcroute_config_rejected_objects` metric and in a warning naming the file. Such a
///   BackendTLSPolicy whose `targetRefs` can still be read also fails its targets' calls
///   (an invalid policy naming the field) rather than leave them in plaintext.
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

/// What an update applies: the objects read, and the objects rejected alone (errors that
/// carry their object).
#[derive(PartialEq)]
struct Applicable {
    resources: Resources,
    rejected: Vec<ManifestError>,
}

impl Applicable {
    /// `Err` with every error when some document could not be read at all.
    fn of(loaded: manifest::Loaded) -> Result<Self, Vec<ManifestError>> {
        if loaded.errors.iter().any(|e| e.object.is_none()) {
            return Err(loaded.errors);
        }
        Ok(Self {
            resources: loaded.resources,
            rejected: loaded.errors,
        })
    }

    fn model(&self) -> Model {
        let mut model = self.resources.to_model();
        model
            .rejected
            .extend(self.rejected.iter().filter_map(|e| e.object.clone()));
        // A BackendTLSPolicy that did not decode but whose targets did still claims them, as
        // in the Kubernetes source.
        model.claim_for_rejected_policies();
        model
            .rejected
            .sort_by(|a, b| (a.kind(), a.key()).cmp(&(b.kind(), b.key())));
        model
    }
}

impl Source for ManifestDir {
    async fn run(self, updater: Updater) {
        let (_watcher, mut events) = self.watch();
        let mut applied: Option<Applicable> = None;
        loop {
            match Applicable::of(manifest::load(&self.paths)) {
                Ok(next) => {
                    if applied.as_ref() != Some(&next) {
                        for error in &next.rejected {
                            tracing::warn!(%error, "manifest object rejected; the others apply");
                        }
                        let Some(report) = updater.apply(Update::Model(next.model())) else {
                            return;
                        };
                        tracing::info!(
                            paths = ?self.paths,
                            version = report.version,
                            rejected = report.rejected.len(),
                            "manifests loaded"
                        );
                        applied = Some(next);
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
