//! Request counters tests can assert on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::resources::Resource;

/// Counters for one resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceStats {
    /// LIST requests served (each page counts).
    pub lists: u64,
    /// WATCH requests served (including ones answered with the 410 `Expired` event).
    pub watches: u64,
    /// Watches currently open.
    pub open_watches: usize,
    /// Successful writes through HTTP (create, update, patch, delete).
    pub writes: u64,
    /// The highest resource version a BOOKMARK of this resource's watches has carried
    /// (written to the watch's body; 0 before any).
    pub bookmark_rv: u64,
}

/// A snapshot of the server's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// TCP connections accepted.
    pub connections: u64,
    /// HTTP requests received (including ones answered with injected faults).
    pub requests: u64,
    /// Requests answered with an injected 500.
    pub injected_failures: u64,
    /// Per-resource counters (resources never requested are absent).
    pub resources: BTreeMap<Resource, ResourceStats>,
}

impl Stats {
    /// Counters for one resource (zero if never requested).
    pub fn resource(&self, resource: Resource) -> ResourceStats {
        self.resources.get(&resource).copied().unwrap_or_default()
    }

    /// LIST requests served for `resource`.
    pub fn lists(&self, resource: Resource) -> u64 {
        self.resource(resource).lists
    }

    /// WATCH requests served for `resource`.
    pub fn watches(&self, resource: Resource) -> u64 {
        self.resource(resource).watches
    }

    /// Watches open now, over all resources.
    pub fn open_watches(&self) -> usize {
        self.resources.values().map(|r| r.open_watches).sum()
    }
}

/// The live counters behind [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    stats: Mutex<Stats>,
}

impl Recorder {
    fn lock(&self) -> MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn snapshot(&self) -> Stats {
        self.lock().clone()
    }

    pub(crate) fn connection(&self) {
        self.lock().connections += 1;
    }

    pub(crate) fn request(&self) {
        self.lock().requests += 1;
    }

    pub(crate) fn injected_failure(&self) {
        self.lock().injected_failures += 1;
    }

    pub(crate) fn list(&self, resource: Resource) {
        self.lock().resources.entry(resource).or_default().lists += 1;
    }

    pub(crate) fn write(&self, resource: Resource) {
        self.lock().resources.entry(resource).or_default().writes += 1;
    }

    pub(crate) fn bookmark(&self, resource: Resource, rv: u64) {
        let mut stats = self.lock();
        let entry = stats.resources.entry(resource).or_default();
        entry.bookmark_rv = entry.bookmark_rv.max(rv);
    }

    /// Counts a watch and tracks it as open until the guard is dropped.
    pub(crate) fn watch(self: &Arc<Self>, resource: Resource) -> OpenWatch {
        let mut stats = self.lock();
        let entry = stats.resources.entry(resource).or_default();
        entry.watches += 1;
        entry.open_watches += 1;
        OpenWatch {
            recorder: Arc::clone(self),
            resource,
        }
    }
}

/// Decrements the open-watch gauge when the watch ends.
#[derive(Debug)]
pub(crate) struct OpenWatch {
    recorder: Arc<Recorder>,
    resource: Resource,
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        let mut stats = self.recorder.lock();
        let entry = stats.resources.entry(self.resource).or_default();
        entry.open_watches = entry.open_watches.saturating_sub(1);
    }
}
