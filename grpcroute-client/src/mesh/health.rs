//! How the configuration source is doing, as sources report it.

use std::time::{Duration, SystemTime};

use super::shared::Shared;

#[derive(Default)]
pub(super) struct HealthState {
    pub(super) connected: bool,
    pub(super) last_update: Option<SystemTime>,
    pub(super) disconnected_since: Option<(SystemTime, tokio::time::Instant)>,
    pub(super) last_latency: Option<Duration>,
}

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

impl Shared {
    pub(crate) fn source_health(&self) -> SourceHealth {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        SourceHealth {
            connected: state.health.connected,
            disconnected_since: state.health.disconnected_since.map(|(t, _)| t),
            last_update: state.health.last_update,
            version: state.version,
            last_error: state.last_error.clone(),
            last_latency: state.health.last_latency,
        }
    }

    pub(crate) fn report_connection(&self, connected: bool) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let health = &mut state.health;
        match (connected, health.disconnected_since) {
            (false, None) => {
                tracing::warn!(
                    "lost contact with the configuration source; serving the last good configuration"
                );
                health.disconnected_since = Some((SystemTime::now(), tokio::time::Instant::now()));
            }
            (true, Some((_, since))) => {
                tracing::info!(outage = ?since.elapsed(), "configuration source reachable again");
                health.disconnected_since = None;
            }
            _ => {}
        }
        health.connected = connected;
    }

    pub(crate) fn report_latency(&self, latency: Duration) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .health
            .last_latency = Some(latency);
    }
}
