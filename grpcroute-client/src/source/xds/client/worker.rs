//! The ADS worker: one SotW stream (A27), subscriptions, ACK/NACK, the cache, timers,
//! reconnects, and the dependency manager it feeds.
//!
//! It owns all xDS state in one task. Its only outputs are a `watch` channel of snapshots,
//! a mutex-guarded dump and atomic counters, none of which can block it: a slow or absent
//! reader never stalls the worker (tonic-xds's >64-cluster deadlock cannot happen).

use std::{
    collections::{BTreeSet, HashSet},
    sync::{Arc, atomic::Ordering},
    time::{Duration, SystemTime},
};

use envoy_types::pb::{
    envoy::{
        config::core::v3::Node,
        service::discovery::v3::{DiscoveryRequest, DiscoveryResponse},
    },
    google::rpc::Status,
};
use futures_util::StreamExt as _;
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use super::super::{
    depmgr::{DependencyManager, XdsSnapshot},
    resource::{self, ResourceType},
};
use super::{
    Command, Shared,
    backoff::Backoff,
    cache::{FailedUpdate, ResourceCache, ResourceStatus},
    transport::{AdsTransport, ResponseStream},
};

/// gRPC's `INVALID_ARGUMENT`, the code of a NACK's `error_detail`.
const INVALID_ARGUMENT: i32 = 3;

/// Settings of the worker.
#[derive(Debug, Clone)]
pub(crate) struct WorkerConfig {
    /// Sent in the first request of each stream.
    pub(crate) node: Node,
    /// A88 `fail_on_data_errors`: a NACK or a deletion drops the cached copy.
    pub(crate) fail_on_data_errors: bool,
    /// A57 does-not-exist timeout (15 s).
    pub(crate) resource_timeout: Duration,
    /// Reconnect backoff.
    pub(crate) backoff: super::backoff::BackoffConfig,
    /// Seed of the backoff jitter.
    pub(crate) seed: u64,
    /// The bootstrap's certificate-provider instances, which TLS clusters may name (A29).
    pub(crate) certificate_providers: resource::upstream_tls::CertificateProviderNames,
}

/// Per-type protocol state.
#[derive(Debug, Default)]
struct TypeState {
    /// The names in the last request sent (or to send on the next stream).
    subscribed: BTreeSet<String>,
    /// The last ACKed version (kept across streams).
    version: String,
    /// The nonce of the last response on the current stream.
    nonce: String,
}

pub(crate) struct Worker<T> {
    transport: T,
    config: WorkerConfig,
    commands: mpsc::UnboundedReceiver<Command>,
    shared: Arc<Shared>,
    snapshots: watch::Sender<Arc<XdsSnapshot>>,
    cache: ResourceCache,
    types: [TypeState; 4],
    depmgr: DependencyManager,
    backoff: Backoff,
    /// The current stream's request sender, while connected.
    stream: Option<mpsc::UnboundedSender<DiscoveryRequest>>,
    /// Whether the current stream got a response yet.
    saw_response: bool,
    /// The last connectivity error, until a stream gets a response (A88: new subscriptions
    /// fail at once while the server is unreachable).
    unreachable: Option<String>,
}

/// Why a stream ended.
enum StreamEnd {
    /// Every handle is gone.
    Shutdown,
    /// The server closed it or it broke.
    Closed(String),
}

enum Event {
    Command(Option<Command>),
    Response(Option<Result<DiscoveryResponse, tonic::Status>>),
    Timer,
}

impl<T: AdsTransport> Worker<T> {
    pub(crate) fn new(
        transport: T,
        config: WorkerConfig,
        commands: mpsc::UnboundedReceiver<Command>,
        shared: Arc<Shared>,
        snapshots: watch::Sender<Arc<XdsSnapshot>>,
    ) -> Self {
        let backoff = Backoff::new(config.backoff, config.seed);
        Self {
            transport,
            config,
            commands,
            shared,
            snapshots,
            cache: ResourceCache::default(),
            types: Default::default(),
            depmgr: DependencyManager::new(),
            backoff,
            stream: None,
            saw_response: false,
            unreachable: None,
        }
    }

    pub(crate) async fn run(mut self) {
        loop {
            // Nothing to ask for: stay idle until a listener is watched.
            while self.types.iter().all(|t| t.subscribed.is_empty()) {
                match self.commands.recv().await {
                    Some(c) => self.command(c),
                    None => return,
                }
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let queued = self.queue_initial_requests(&tx);
            let opened = {
                let open = self.transport.open(rx);
                tokio::pin!(open);
                loop {
                    tokio::select! {
                        r = &mut open => break Some(r),
                        c = self.commands.recv() => match c {
                            // Subscription changes while connecting are sent once
                            // connected (below).
                            Some(c) => self.command_offline(c),
                            None => break None,
                        },
                    }
                }
            };
            let Some(opened) = opened else { return };
            match opened {
                Ok(responses) => {
                    // Lists that changed while connecting go out now.
                    for ty in ResourceType::ALL {
                        let state = &self.types[ty.index()];
                        if state.subscribed != queued[ty.index()] {
                            let _ = tx.send(DiscoveryRequest {
                                version_info: state.version.clone(),
                                resource_names: state.subscribed.iter().cloned().collect(),
                                type_url: ty.type_url(),
                                ..DiscoveryRequest::default()
                            });
                        }
                    }
                    self.stream = Some(tx);
                    self.saw_response = false;
                    self.on_connected();
                    let end = self.run_stream(responses).await;
                    self.stream = None;
                    self.on_disconnected();
                    match end {
                        StreamEnd::Shutdown => return,
                        StreamEnd::Closed(reason) => {
                            if self.saw_response {
                                // A57: a close after a response is not an error; reconnect
                                // with a fresh backoff.
                                tracing::debug!(%reason, "xDS stream closed after a response; reconnecting");
                                self.backoff.reset();
                            } else {
                                self.connectivity_error(format!(
                                    "xDS stream closed before any response: {reason}"
                                ));
                            }
                        }
                    }
                }
                Err(status) => {
                    self.connectivity_error(format!(
                        "xDS server unreachable: {}",
                        status.message()
                    ));
                }
            }
            let delay = if self.saw_response {
                Duration::ZERO
            } else {
                self.backoff.next_delay()
            };
            self.saw_response = false;
            if !self.sleep_handling_commands(delay).await {
                return;
            }
        }
    }

    /// Sleeps `delay` while still applying commands. `false` on shutdown.
    async fn sleep_handling_commands(&mut self, delay: Duration) -> bool {
        let wake = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => return true,
                c = self.commands.recv() => match c {
                    Some(c) => self.command_offline(c),
                    None => return false,
                },
            }
        }
    }

    async fn run_stream(&mut self, mut responses: ResponseStream) -> StreamEnd {
        loop {
            let deadline = self.next_deadline();
            let event = tokio::select! {
                c = self.commands.recv() => Event::Command(c),
                r = responses.next() => Event::Response(r),
                _ = sleep_until_opt(deadline), if deadline.is_some() => Event::Timer,
            };
            match event {
                Event::Command(None) => return StreamEnd::Shutdown,
                Event::Command(Some(c)) => self.command(c),
                Event::Response(Some(Ok(resp))) => self.on_response(resp),
                Event::Response(Some(Err(status))) => {
                    return StreamEnd::Closed(format!("{:?}: {}", status.code(), status.message()));
                }
                Event::Response(None) => {
                    return StreamEnd::Closed("closed by the server".to_owned());
                }
                Event::Timer => self.on_timers(),
            }
        }
    }

    // ---- commands and subscriptions ----

    fn command(&mut self, c: Command) {
        match c {
            Command::WatchListener { name, authority } => {
                self.depmgr.add_listener_with_authority(&name, &authority);
            }
            Command::UnwatchListener(name) => {
                self.depmgr.remove_listener(&name);
            }
        }
        self.refresh();
    }

    /// While not connected: same state changes; requests go out with the next stream.
    fn command_offline(&mut self, c: Command) {
        self.command(c);
    }

    /// Recomputes the dependency graph, syncs subscriptions and publishes.
    fn refresh(&mut self) {
        // New subscriptions may fail at once (unreachable server), which can change the
        // graph again; a few rounds always settle (each round only adds failed leaves).
        for _ in 0..8 {
            if let Some(snapshot) = self.depmgr.update(&self.cache) {
                self.snapshots.send_replace(snapshot);
            }
            if !self.sync_subscriptions() {
                break;
            }
        }
        self.publish_dump();
    }

    /// Brings every type's subscription to what the dependency manager wants, sending the
    /// changed lists. Returns whether a new entry failed at once (needs another round).
    fn sync_subscriptions(&mut self) -> bool {
        let wanted = self.depmgr.wanted().clone();
        let mut failed_now = false;
        let now = Instant::now();
        for ty in ResourceType::ALL {
            let want = &wanted[ty.index()];
            let state = &mut self.types[ty.index()];
            if &state.subscribed == want {
                continue;
            }
            for gone in state.subscribed.difference(want) {
                self.cache.unsubscribe(ty, gone);
            }
            for new in want.difference(&state.subscribed) {
                if self.cache.subscribe(ty, new) {
                    let Some(e) = self.cache.get_mut(ty, new) else {
                        continue;
                    };
                    if self.stream.is_some() {
                        // A57: the timer starts when the subscription is sent on a
                        // connected stream.
                        e.deadline = Some(now + self.config.resource_timeout);
                    } else if let Some(err) = &self.unreachable {
                        e.ambient_error = Some(err.clone());
                        failed_now = true;
                    }
                }
            }
            state.subscribed = want.clone();
            if let Some(tx) = &self.stream {
                let req = DiscoveryRequest {
                    version_info: state.version.clone(),
                    resource_names: state.subscribed.iter().cloned().collect(),
                    type_url: ty.type_url(),
                    response_nonce: state.nonce.clone(),
                    ..DiscoveryRequest::default()
                };
                let _ = tx.send(req);
            }
        }
        failed_now
    }

    /// The first requests of a stream: every subscribed type with its last version and an
    /// empty nonce; the node only in the very first (A27).
    fn queue_initial_requests(
        &mut self,
        tx: &mpsc::UnboundedSender<DiscoveryRequest>,
    ) -> [BTreeSet<String>; 4] {
        let mut first = true;
        for ty in ResourceType::ALL {
            let state = &mut self.types[ty.index()];
            state.nonce.clear();
            if state.subscribed.is_empty() {
                continue;
            }
            let req = DiscoveryRequest {
                version_info: state.version.clone(),
                node: first.then(|| self.config.node.clone()),
                resource_names: state.subscribed.iter().cloned().collect(),
                type_url: ty.type_url(),
                response_nonce: String::new(),
                ..DiscoveryRequest::default()
            };
            first = false;
            let _ = tx.send(req);
        }
        std::array::from_fn(|i| self.types[i].subscribed.clone())
    }

    // ---- connectivity ----

    fn on_connected(&mut self) {
        self.shared.connected.store(true, Ordering::Relaxed);
        // A57: arm the timer of every resource not cached yet; cached ones (including
        // DOES_NOT_EXIST) do not get one again after a reconnect.
        let deadline = Instant::now() + self.config.resource_timeout;
        for e in self.cache.all_mut() {
            if e.status == ResourceStatus::Requested && e.resource.is_none() {
                e.deadline = Some(deadline);
            }
        }
    }

    fn on_disconnected(&mut self) {
        self.shared.connected.store(false, Ordering::Relaxed);
        // Timers never run while disconnected (A57).
        for e in self.cache.all_mut() {
            e.deadline = None;
        }
    }

    /// A88 transient error: cached resources keep being used, with an ambient error;
    /// resources not cached fail (their watchers get the error).
    fn connectivity_error(&mut self, message: String) {
        tracing::warn!(error = %message, "xDS control plane connectivity error");
        if self.unreachable.is_none() {
            self.shared.server_failures.fetch_add(1, Ordering::Relaxed);
        }
        for e in self.cache.all_mut() {
            e.ambient_error = Some(message.clone());
        }
        self.unreachable = Some(message);
        self.refresh();
    }

    // ---- responses ----

    fn on_response(&mut self, resp: DiscoveryResponse) {
        if !self.saw_response {
            self.saw_response = true;
            self.backoff.reset();
            if self.unreachable.take().is_some() {
                for e in self.cache.all_mut() {
                    e.ambient_error = None;
                }
            }
        }
        let Some(ty) = ResourceType::from_type_url(&resp.type_url) else {
            tracing::warn!(type_url = %resp.type_url, "ignoring an xDS response of an unknown type");
            return;
        };
        let now = SystemTime::now();
        let fail_on_data_errors = self.config.fail_on_data_errors;
        let mut errors: Vec<String> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let (mut valid, mut invalid) = (0u64, 0u64);
        for (i, any) in resp.resources.iter().enumerate() {
            let decoded = match resource::decode_with(ty, any, &self.config.certificate_providers) {
                Ok(d) => d,
                Err(e) => {
                    invalid += 1;
                    errors.push(format!("resource index {i}: {e}"));
                    continue;
                }
            };
            // A27: resources nobody subscribed to are ignored.
            if !self.types[ty.index()].subscribed.contains(&decoded.name) {
                continue;
            }
            if !seen.insert(decoded.name.clone()) {
                invalid += 1;
                errors.push(format!(
                    "resource index {i}: duplicate resource name \"{}\"",
                    decoded.name
                ));
                continue;
            }
            match decoded.result {
                Ok(r) => {
                    valid += 1;
                    self.cache.accept(&decoded.name, r, &resp.version_info, now);
                }
                Err(e) => {
                    invalid += 1;
                    let message = format!("{}: {e}", decoded.name);
                    errors.push(format!("resource index {i}: {message}"));
                    self.cache.reject(
                        ty,
                        &decoded.name,
                        &resp.version_info,
                        message,
                        now,
                        fail_on_data_errors,
                    );
                }
            }
        }
        self.shared.resource_updates_valid[ty.index()].fetch_add(valid, Ordering::Relaxed);
        self.shared.resource_updates_invalid[ty.index()].fetch_add(invalid, Ordering::Relaxed);
        if ty.all_resources_required_in_sotw() {
            self.on_absent(ty, &seen, &resp.version_info, now);
        }
        // ACK or NACK. The version moves on when the response had valid resources, even
        // if others were rejected (C-core's rule): the NACK of a partly valid response
        // carries the new version, since the client now uses resources of it.
        let state = &mut self.types[ty.index()];
        state.nonce = resp.nonce.clone();
        if valid > 0 || errors.is_empty() {
            state.version = resp.version_info.clone();
        }
        let error_detail = if errors.is_empty() {
            None
        } else {
            tracing::warn!(type_url = %resp.type_url, version = %resp.version_info, errors = ?errors, "NACKing xDS response");
            Some(Status {
                code: INVALID_ARGUMENT,
                message: format!("xDS response validation errors: [{}]", errors.join("; ")),
                details: Vec::new(),
            })
        };
        if let Some(tx) = &self.stream {
            let _ = tx.send(DiscoveryRequest {
                version_info: state.version.clone(),
                resource_names: state.subscribed.iter().cloned().collect(),
                type_url: ty.type_url(),
                response_nonce: state.nonce.clone(),
                error_detail,
                ..DiscoveryRequest::default()
            });
        }
        self.refresh();
    }

    /// LDS/CDS in SotW carry every subscribed resource, so a cached one missing from the
    /// response was deleted: it becomes DOES_NOT_EXIST, with the deleting version as its
    /// failed update (C-core's CSDS shows the same). A88: the cached copy is still used
    /// unless `fail_on_data_errors`, which drops it.
    fn on_absent(
        &mut self,
        ty: ResourceType,
        seen: &HashSet<String>,
        version: &str,
        now: SystemTime,
    ) {
        let fail = self.config.fail_on_data_errors;
        for (name, e) in self.cache.entries_mut(ty).iter_mut() {
            if seen.contains(name) || e.resource.is_none() {
                continue;
            }
            let error = if fail {
                tracing::warn!(%ty, %name, "xDS resource deleted by the control plane (fail_on_data_errors)");
                e.resource = None;
                format!("{ty} resource {name} was deleted by the control plane")
            } else {
                tracing::warn!(%ty, %name, "xDS resource deleted by the control plane; keeping the cached copy (A88)");
                format!(
                    "{ty} resource {name} was deleted by the control plane; ignoring the deletion and using the cached copy"
                )
            };
            e.status = ResourceStatus::DoesNotExist;
            e.ambient_error = None;
            e.failed = Some(FailedUpdate {
                version: version.to_owned(),
                error,
                time: now,
            });
        }
    }

    // ---- A57 timers ----

    fn next_deadline(&self) -> Option<Instant> {
        ResourceType::ALL
            .iter()
            .flat_map(|ty| self.cache.entries(*ty).values())
            .filter_map(|e| e.deadline)
            .min()
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        let mut fired = false;
        for ty in ResourceType::ALL {
            for (name, e) in self.cache.entries_mut(ty).iter_mut() {
                if e.deadline.is_some_and(|d| d <= now) {
                    e.deadline = None;
                    if e.status == ResourceStatus::Requested && e.resource.is_none() {
                        tracing::warn!(%ty, %name, "xDS resource does not exist (no response within the timeout)");
                        e.status = ResourceStatus::DoesNotExist;
                        fired = true;
                    }
                }
            }
        }
        if fired {
            self.refresh();
        }
    }

    fn publish_dump(&self) {
        let dump = self.cache.dump();
        if let Ok(mut d) = self.shared.dump.lock() {
            *d = dump;
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
