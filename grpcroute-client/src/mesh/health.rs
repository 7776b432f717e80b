//! How the configuration source is doing, as sources report it.

use std::time::{Duration, SystemTime};

use super::shared::Shared;
use crate::source::SourceHealth;

#[derive(Default)]
pub(super) struct HealthState {
    pub(super) connected: bool,
    pub(super) last_update: Option<SystemTime>,
    pub(super) disconnected_since: Option<(SystemTime, tokio::time::Instant)>,
    pub(super) last_latency: Option<Duration>,
}

impl Shared {
    pub(crate) fn source_health(&self) -> SourceHealth {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        SourceHealth {
            connected: state.health.connected,
            disconnected_since: state.health.disconnected_since.map(|(t, _)| t),
            last_update: state.health.last_update,
            version: state.version,
            last_error: self.core.last_error(),
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
