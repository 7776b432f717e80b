//! What sources report about themselves, and what an update changed.

use std::time::{Duration, SystemTime};

use crate::model::InvalidObject;

/// How the mesh's configuration source is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SourceHealth {
    /// Whether the source reaches where its configuration comes from (sources that have
    /// nothing to reach, like a fixed configuration, count as connected once they
    /// published). For the Kubernetes source: the API server answers; its watches may
    /// need a few more seconds (their backoff) before changes made during an outage
    /// arrive, which `last_update` then shows.
    pub connected: bool,
    /// When the source is not connected: since when.
    pub disconnected_since: Option<SystemTime>,
    /// When the configuration was last updated.
    pub last_update: Option<SystemTime>,
    /// How many updates have been applied.
    pub version: u64,
    /// The source's last error, until it publishes again.
    pub last_error: Option<String>,
    /// How long the last change took from reaching the source to serving calls, when the
    /// source measures it.
    pub last_latency: Option<Duration>,
}

/// What an update changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UpdateReport {
    /// Counts the updates applied, from 1.
    pub version: u64,
    /// Routes, Services, EndpointSlices and ReferenceGrants added, changed and removed.
    pub changes: ChangeSummary,
    /// Endpoint addresses that started and stopped taking calls.
    pub endpoints_added: usize,
    /// See `endpoints_added`.
    pub endpoints_removed: usize,
    /// Objects left out because they are invalid.
    pub rejected: Vec<InvalidObject>,
}

/// Object counts by change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeSummary {
    /// Objects that are new.
    pub added: usize,
    /// Objects whose content changed.
    pub changed: usize,
    /// Objects that are gone.
    pub removed: usize,
}
