//! The Kubernetes source: watches GRPCRoutes, Services, EndpointSlices and ReferenceGrants
//! with kube-rs and publishes the routing configuration they describe. No control plane,
//! no sidecar: the client follows the API server directly.
//!
//! - Start-up: the first configuration is published only when every watch has finished
//!   its initial list; calls made before then wait (see
//!   [`MeshBuilder::ready_timeout`](crate::MeshBuilder::ready_timeout)).
//! - Updates: bursts of events are coalesced into one rebuild after a short quiet period,
//!   bounded by a maximum delay; unchanged objects are not converted again.
//! - Faults: watch errors retry with exponential backoff and jitter (client-go's
//!   parameters); an expired `resourceVersion` (410) relists, and the relisted objects
//!   replace the old ones atomically; while the API server is unreachable the last good
//!   configuration keeps serving, and the outage shows in
//!   [`Mesh::source_health`](crate::Mesh::source_health) and in the logs.
//! - Stalls: a watch that stays open but delivers nothing, not even the bookmark API
//!   servers send about once a minute, is abandoned after
//!   [`KubeSource::stall_timeout`] and started again from the last resource version
//!   seen (see `stall`).

mod stall;
mod state;
mod watch;

use std::time::Duration;

use crate::source::{Source, Updater};

/// The default of [`KubeSource::stall_timeout`]: one and a half times the period of the
/// bookmarks Kubernetes sends to every watch.
const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(90);

/// Where the watches look.
#[derive(Clone)]
pub struct KubeSource {
    client: Option<kube::Client>,
    namespaces: Vec<String>,
    service_selector: Option<String>,
    quiet: Duration,
    max_delay: Duration,
    watch_timeout: Option<u32>,
    stall_timeout: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("namespaces", &self.namespaces)
            .field("service_selector", &self.service_selector)
            .finish_non_exhaustive()
    }
}

impl Default for KubeSource {
    fn default() -> Self {
        Self {
            client: None,
            namespaces: Vec::new(),
            service_selector: None,
            quiet: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            watch_timeout: None,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(5),
        }
    }
}

impl KubeSource {
    /// Watches every namespace, with a client from the environment (the in-cluster service
    /// account, else the kubeconfig).
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses this client instead of one from the environment.
    pub fn with_client(client: kube::Client) -> Self {
        Self {
            client: Some(client),
            ..Self::default()
        }
    }

    /// Watches only these namespaces (the RBAC can then be namespaced Roles). Services,
    /// routes and grants outside them are invisible to the mesh.
    #[must_use]
    pub fn namespaces<I: IntoIterator<Item = S>, S: Into<String>>(mut self, namespaces: I) -> Self {
        self.namespaces = namespaces.into_iter().map(Into::into).collect();
        self
    }

    /// Watches only the Services matching this label selector (e.g. `mesh=enabled`).
    #[must_use]
    pub fn service_selector(mut self, selector: impl Into<String>) -> Self {
        self.service_selector = Some(selector.into());
        self
    }

    /// Coalescing of bursts: a rebuild waits until no event arrived for `quiet` (default
    /// 5 ms), but never longer than `max_delay` after the first event of the burst (default
    /// 50 ms).
    #[must_use]
    pub fn coalesce(mut self, quiet: Duration, max_delay: Duration) -> Self {
        self.quiet = quiet;
        self.max_delay = max_delay.max(quiet);
        self
    }

    /// How a failed watch retries: exponential backoff from `initial` to `max` (defaults
    /// 250 ms and 5 s), each pause jittered by ±50 % so the clients of a mesh do not all
    /// come back at once. After an outage a change made meanwhile arrives within about
    /// `max` of the API server's return; a larger `max` is gentler on a recovering API
    /// server with many clients.
    #[must_use]
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max.max(initial);
        self
    }

    /// The server-side timeout of each watch request (default: kube-rs's, 290 s). Shorter
    /// values make the watches reconnect more often; tests use them.
    #[must_use]
    pub fn watch_timeout(mut self, timeout: Duration) -> Self {
        self.watch_timeout = Some(u32::try_from(timeout.as_secs().max(1)).unwrap_or(u32::MAX));
        self
    }

    /// How long a request to the API server may go without receiving anything before it
    /// is abandoned and retried (default 90 s): the response
    /// must start within it, and a watch must deliver an event or a bookmark at least once
    /// per `timeout`. API servers send every watch a bookmark about once a minute
    /// (Kubernetes 1.27 and later), so a silent watch is a stalled one — a stuck
    /// connection, or a proxy or API server instance that stopped forwarding — and is
    /// started again, from the last resource version seen, after the watch backoff. A change
    /// made meanwhile then arrives within `timeout` plus that backoff. Each stall is
    /// logged (warning) and shown as the last error in
    /// [`Mesh::source_health`](crate::Mesh::source_health). Keep it above the bookmark
    /// period: a quiet watch on a server that sends no periodic bookmarks is restarted
    /// every `timeout` (one watch request, no relist). Zero turns the detection off,
    /// leaving kube-rs's own (the watch timeout plus 5 s).
    #[must_use]
    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = timeout;
        self
    }
}

impl Source for KubeSource {
    async fn run(self, updater: Updater) {
        watch::run(self, updater).await;
    }
}
