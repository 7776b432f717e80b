//! The test control plane: State-of-the-World ADS on 127.0.0.1, driven from the test.

mod ads;
mod log;
mod sotw;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use envoy_types::pb::envoy::service::discovery::v3::{
    DiscoveryResponse, aggregated_discovery_service_server::AggregatedDiscoveryServiceServer,
};
use tokio::{sync::mpsc, time::Instant};
use tonic::{Status, codegen::Service as _};

use self::{
    ads::{Ads, StreamCommand},
    log::Log,
    sotw::TypeSnapshot,
};
pub use self::{
    log::{
        ErrorDetail, LogEntry, LogMark, LoggedRequest, LoggedResponse, StreamEvent, WaitError,
        render_since,
    },
    sotw::ResponseOverride,
};
use crate::{Bootstrap, Resource, ResourceType, lock, serve::H2Server};

/// Why the control plane could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    /// The address could not be bound (on restart: the port was taken meanwhile).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A scriptable SotW ADS server for tests (see the crate docs for the behaviour).
///
/// Resources are shared by every node; subscriptions, versions sent and nonces are per
/// stream. Every change bumps the type's version and pushes a response to each stream
/// subscribed to that type.
#[derive(Debug)]
pub struct ControlPlane {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Mutex<Option<H2Server>>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    log: Log,
}

#[derive(Debug, Default)]
struct State {
    types: BTreeMap<ResourceType, TypeSnapshot>,
    overrides: HashMap<ResourceType, ResponseOverride>,
    stopped: HashMap<ResourceType, BTreeSet<String>>,
    paused: bool,
    refuse_until: Option<Instant>,
    streams: BTreeMap<u64, StreamHandle>,
    next_stream: u64,
    next_nonce: u64,
}

#[derive(Debug)]
struct StreamHandle {
    node_id: Option<String>,
    commands: mpsc::UnboundedSender<StreamCommand>,
}

impl Shared {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Registers a new stream, or `None` while refusing.
    fn open_stream(&self) -> Option<(u64, mpsc::UnboundedReceiver<StreamCommand>)> {
        let mut state = self.lock_state();
        if state.refuse_until.is_some_and(|t| Instant::now() < t) {
            return None;
        }
        state.next_stream += 1;
        let id = state.next_stream;
        let (commands, rx) = mpsc::unbounded_channel();
        state.streams.insert(
            id,
            StreamHandle {
                node_id: None,
                commands,
            },
        );
        Some((id, rx))
    }

    fn set_stream_node(&self, id: u64, node_id: &str) {
        if let Some(s) = self.lock_state().streams.get_mut(&id) {
            s.node_id = Some(node_id.to_string());
        }
    }

    fn close_stream(&self, id: u64) {
        self.lock_state().streams.remove(&id);
    }

    fn broadcast(state: &State, command: impl Fn() -> StreamCommand) -> usize {
        state
            .streams
            .values()
            .filter(|s| s.commands.send(command()).is_ok())
            .count()
    }

    /// Applies `change` to the state, then tells every stream to send what is due.
    fn change(&self, change: impl FnOnce(&mut State)) {
        let state = &mut *self.lock_state();
        change(state);
        Self::broadcast(state, || StreamCommand::Push);
    }
}

impl ControlPlane {
    /// Starts serving on a free port of 127.0.0.1, with no resources.
    ///
    /// # Errors
    ///
    /// When no port can be bound.
    pub async fn start() -> Result<Self, ControlPlaneError> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts serving on `addr` (keep it on loopback), with no resources.
    ///
    /// # Errors
    ///
    /// When `addr` cannot be bound.
    pub async fn start_on(addr: SocketAddr) -> Result<Self, ControlPlaneError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            log: Log::new(),
        });
        let server = serve(shared.clone(), addr).await?;
        Ok(Self {
            shared,
            addr: server.addr(),
            server: Mutex::new(Some(server)),
        })
    }

    /// Where it listens (the same port across [`restart`](Self::restart)s).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, the `server_uri` of a bootstrap.
    pub fn server_uri(&self) -> String {
        self.addr.to_string()
    }

    /// A bootstrap for a client of node `node_id` (see [`Bootstrap`] for the defaults).
    pub fn bootstrap(&self, node_id: &str) -> Bootstrap {
        Bootstrap::new(self.server_uri(), node_id)
    }

    // ----- resources -----

    /// Sets (adds or replaces) resources; each type touched gets one new version.
    pub fn set(&self, resources: impl IntoIterator<Item = Resource>) {
        self.shared.change(|state| {
            let mut touched = BTreeSet::new();
            for r in resources {
                touched.insert(r.kind);
                state
                    .types
                    .entry(r.kind)
                    .or_default()
                    .resources
                    .insert(r.name, r.body);
            }
            for kind in touched {
                state.types.entry(kind).or_default().version += 1;
            }
        });
    }

    /// Sets one resource (anything that converts: a `Listener`, `RouteConfiguration`,
    /// `Cluster`, `ClusterLoadAssignment`, or a [`Resource`]).
    pub fn set_one(&self, resource: impl Into<Resource>) {
        self.set([resource.into()]);
    }

    /// Deletes resources of `kind` (absent names are ignored); one new version.
    pub fn delete(&self, kind: ResourceType, names: &[&str]) {
        self.shared.change(|state| {
            let snapshot = state.types.entry(kind).or_default();
            for name in names {
                snapshot.resources.remove(*name);
            }
            snapshot.version += 1;
        });
    }

    /// Makes `resources` the whole content of `kind` (one new version): what a SotW
    /// control plane with a snapshot does.
    pub fn replace_all(&self, kind: ResourceType, resources: impl IntoIterator<Item = Resource>) {
        self.shared.change(|state| {
            let snapshot = state.types.entry(kind).or_default();
            snapshot.resources = resources
                .into_iter()
                .filter(|r| r.kind == kind)
                .map(|r| (r.name, r.body))
                .collect();
            snapshot.version += 1;
        });
    }

    /// A new version of `kind` with the same resources, pushed to every subscriber.
    pub fn resend(&self, kind: ResourceType) {
        self.shared.change(|state| {
            state.types.entry(kind).or_default().version += 1;
        });
    }

    /// The version counter of `kind` (0 before any change).
    pub fn version(&self, kind: ResourceType) -> u64 {
        self.shared
            .lock_state()
            .types
            .get(&kind)
            .map_or(0, |t| t.version)
    }

    /// The `version_info` responses of `kind` carry now (the counter, or the override).
    pub fn version_info(&self, kind: ResourceType) -> String {
        let state = self.shared.lock_state();
        state
            .overrides
            .get(&kind)
            .and_then(|o| o.version_info.clone())
            .unwrap_or_else(|| state.types.get(&kind).map_or(0, |t| t.version).to_string())
    }

    /// The names of the resources of `kind`.
    pub fn resource_names(&self, kind: ResourceType) -> Vec<String> {
        self.shared
            .lock_state()
            .types
            .get(&kind)
            .map(|t| t.resources.keys().cloned().collect())
            .unwrap_or_default()
    }

    // ----- test hooks -----

    /// From now on, responses of `kind` carry these `version_info` / `nonce` instead of
    /// the generated ones (until [`clear_override`](Self::clear_override)). Takes effect
    /// with the next response; use [`resend`](Self::resend) to cause one.
    pub fn set_override(&self, kind: ResourceType, response_override: ResponseOverride) {
        self.shared
            .lock_state()
            .overrides
            .insert(kind, response_override);
    }

    /// Back to generated `version_info` / `nonce` for `kind`.
    pub fn clear_override(&self, kind: ResourceType) {
        self.shared.lock_state().overrides.remove(&kind);
    }

    /// Stops answering resource `kind`/`name` (psm's StopOnRequest, without exiting): it is
    /// never included in a response, and a stream whose subscription names it gets no
    /// response of that type at all.
    pub fn stop_on_request(&self, kind: ResourceType, name: &str) {
        self.shared.change(|state| {
            state
                .stopped
                .entry(kind)
                .or_default()
                .insert(name.to_string());
        });
    }

    /// Answers `kind`/`name` again (what was held back is sent now).
    pub fn resume_on_request(&self, kind: ResourceType, name: &str) {
        self.shared.change(|state| {
            if let Some(s) = state.stopped.get_mut(&kind) {
                s.remove(name);
            }
        });
    }

    /// Accepts streams and logs requests but sends nothing until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.shared.lock_state().paused = true;
    }

    /// Ends a [`pause`](Self::pause): every stream gets what is due.
    pub fn resume(&self) {
        self.shared.change(|state| state.paused = false);
    }

    /// Sends `response` as is on every open stream of node `node_id` (for responses the
    /// resource model cannot express: wrong or undecodable resources, duplicate names, a
    /// reused nonce). Returns how many streams it went to. Subscriptions are unaffected.
    pub fn push_raw(&self, node_id: &str, response: DiscoveryResponse) -> usize {
        let state = self.shared.lock_state();
        state
            .streams
            .values()
            .filter(|s| s.node_id.as_deref() == Some(node_id))
            .filter(|s| {
                s.commands
                    .send(StreamCommand::Raw(response.clone()))
                    .is_ok()
            })
            .count()
    }

    /// Ends every open stream with UNAVAILABLE (the connection stays up; clients open a
    /// new stream). Returns how many were ended.
    pub fn kill_streams(&self) -> usize {
        let state = self.shared.lock_state();
        Shared::broadcast(&state, || {
            StreamCommand::End(Status::unavailable("stream killed by the test"))
        })
    }

    /// For `duration`, new streams end at once with UNAVAILABLE, before any response (an
    /// A57 connectivity failure); `Duration::ZERO` stops refusing.
    pub fn refuse_streams_for(&self, duration: Duration) {
        self.shared.lock_state().refuse_until = Some(Instant::now() + duration);
    }

    /// [`kill_streams`](Self::kill_streams), then refuse new ones for `duration`.
    pub fn kill_streams_and_refuse(&self, duration: Duration) -> usize {
        self.refuse_streams_for(duration);
        self.kill_streams()
    }

    /// Goes down like a crashed process: the port is closed and every connection dropped
    /// (clients see connection resets and refused connections). Resources, versions and the
    /// log are kept for [`restart`](Self::restart).
    pub fn stop(&self) {
        lock(&self.server).take();
        let state = self.shared.lock_state();
        Shared::broadcast(&state, || {
            StreamCommand::End(Status::unavailable("control plane stopped"))
        });
    }

    /// Serves again on the same port (after [`stop`](Self::stop); a no-op when serving).
    ///
    /// # Errors
    ///
    /// When the port cannot be bound again.
    pub async fn restart(&self) -> Result<(), ControlPlaneError> {
        if self.is_serving() {
            return Ok(());
        }
        let server = serve(self.shared.clone(), self.addr).await?;
        *lock(&self.server) = Some(server);
        Ok(())
    }

    /// Whether it is serving (not [`stop`](Self::stop)ped).
    pub fn is_serving(&self) -> bool {
        lock(&self.server).is_some()
    }

    /// How many streams of node `node_id` are open now.
    pub fn open_streams(&self, node_id: &str) -> usize {
        self.shared
            .lock_state()
            .streams
            .values()
            .filter(|s| s.node_id.as_deref() == Some(node_id))
            .count()
    }

    // ----- the log -----

    /// The current end of the log, to wait only for what comes after.
    pub fn mark(&self) -> LogMark {
        self.shared.log.mark()
    }

    /// Everything logged, in order.
    pub fn log(&self) -> Vec<LogEntry> {
        self.shared.log.entries()
    }

    /// The log of node `node_id`, one line per entry (for failure messages).
    pub fn render_log(&self, node_id: &str) -> String {
        log::render(&self.shared.log.for_node(node_id))
    }

    /// Every request of node `node_id`, in order.
    pub fn requests(&self, node_id: &str) -> Vec<LoggedRequest> {
        self.shared
            .log
            .for_node(node_id)
            .into_iter()
            .filter_map(|e| match e {
                LogEntry::Request(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// Every response sent to node `node_id`, in order.
    pub fn responses(&self, node_id: &str) -> Vec<LoggedResponse> {
        self.shared
            .log
            .for_node(node_id)
            .into_iter()
            .filter_map(|e| match e {
                LogEntry::Response(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// Stream openings and endings of node `node_id`.
    pub fn stream_events(&self, node_id: &str) -> Vec<StreamEvent> {
        self.shared
            .log
            .for_node(node_id)
            .into_iter()
            .filter_map(|e| match e {
                LogEntry::Stream(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    /// Waits (at most `timeout`) for a request of `node_id`, logged at or after `since`,
    /// that satisfies `pred`; `what` describes it in the error.
    ///
    /// # Errors
    ///
    /// [`WaitError`] (with the node's log) when none came in time.
    pub async fn wait_for_request(
        &self,
        node_id: &str,
        since: LogMark,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&LoggedRequest) -> bool,
    ) -> Result<LoggedRequest, WaitError> {
        self.shared
            .log
            .wait_for_request(node_id, since, timeout, what, pred)
            .await
    }

    /// Waits until `node_id` ACKs `version` of `kind` (see [`LoggedRequest::is_ack_of`]).
    ///
    /// # Errors
    ///
    /// [`WaitError`] when it did not in time.
    pub async fn wait_for_ack(
        &self,
        node_id: &str,
        kind: ResourceType,
        version: &str,
        since: LogMark,
        timeout: Duration,
    ) -> Result<LoggedRequest, WaitError> {
        self.wait_for_request(
            node_id,
            since,
            timeout,
            &format!("an ACK of {kind} version {version:?}"),
            |r| r.is_ack_of(kind, version),
        )
        .await
    }

    /// Waits until `node_id` NACKs a response of `kind`.
    ///
    /// # Errors
    ///
    /// [`WaitError`] when it did not in time.
    pub async fn wait_for_nack(
        &self,
        node_id: &str,
        kind: ResourceType,
        since: LogMark,
        timeout: Duration,
    ) -> Result<LoggedRequest, WaitError> {
        self.wait_for_request(node_id, since, timeout, &format!("a NACK of {kind}"), |r| {
            r.kind() == Some(kind) && r.is_nack()
        })
        .await
    }

    /// Waits until `node_id` sends a request of `kind` subscribing to exactly `names`
    /// (in any order).
    ///
    /// # Errors
    ///
    /// [`WaitError`] when it did not in time.
    pub async fn wait_for_subscription(
        &self,
        node_id: &str,
        kind: ResourceType,
        names: &[&str],
        since: LogMark,
        timeout: Duration,
    ) -> Result<LoggedRequest, WaitError> {
        let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        want.sort();
        self.wait_for_request(
            node_id,
            since,
            timeout,
            &format!("a {kind} subscription to exactly {want:?}"),
            |r| r.kind() == Some(kind) && r.sorted_names() == want,
        )
        .await
    }
}

/// Binds `addr` and serves the ADS service of `shared` on it.
async fn serve(shared: Arc<Shared>, addr: SocketAddr) -> Result<H2Server, ControlPlaneError> {
    let bind_error = |source| ControlPlaneError::Bind { addr, source };
    let listener = crate::serve::bind(addr).await.map_err(bind_error)?;
    let service = AggregatedDiscoveryServiceServer::new(Ads { shared });
    H2Server::spawn(listener, move |req| {
        let mut service = service.clone();
        async move { service.call(req).await }
    })
    .map_err(bind_error)
}
