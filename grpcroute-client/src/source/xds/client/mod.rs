//! The xDS client handle and its ADS worker.
//!
//! [`XdsClient::start`] spawns one worker task on the current tokio runtime; it keeps one
//! ADS stream to the bootstrap's first server and stops when the last handle is dropped.
//! The data plane names the listeners it needs ([`XdsClient::watch_listener`]) and reads
//! complete configurations from [`XdsClient::snapshots`].

pub(crate) mod backoff;
pub(crate) mod cache;
pub(crate) mod transport;
mod worker;

#[cfg(test)]
mod tests;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::{mpsc, watch};

pub(crate) use self::cache::{ResourceDump, ResourceStatus};
use self::{
    backoff::BackoffConfig,
    transport::{AdsTransport, TonicTransport},
    worker::{Worker, WorkerConfig},
};
use super::{
    bootstrap::{Bootstrap, BootstrapError},
    depmgr::XdsSnapshot,
    resource::ResourceType,
};

/// A57: a subscribed resource that has not arrived this long after the subscription was
/// sent on a connected stream does not exist.
pub(crate) const RESOURCE_DOES_NOT_EXIST_TIMEOUT: Duration = Duration::from_secs(15);

/// Commands from handles to the worker.
#[derive(Debug)]
pub(crate) enum Command {
    WatchListener { name: String, authority: String },
    UnwatchListener(String),
}

/// State the worker shares with handles; none of it can block the worker.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    connected: AtomicBool,
    server_failures: AtomicU64,
    resource_updates_valid: [AtomicU64; 4],
    resource_updates_invalid: [AtomicU64; 4],
    dump: Mutex<Vec<ResourceDump>>,
}

/// A78-style xDS client counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct XdsClientMetrics {
    /// `grpc.xds_client.connected`: 1 while an ADS stream is up.
    pub(crate) connected: bool,
    /// `grpc.xds_client.server_failure`: outages (first failure after being healthy).
    pub(crate) server_failures: u64,
    /// `grpc.xds_client.resource_updates_valid`, per [`ResourceType`] index.
    pub(crate) resource_updates_valid: [u64; 4],
    /// `grpc.xds_client.resource_updates_invalid`, per [`ResourceType`] index.
    pub(crate) resource_updates_invalid: [u64; 4],
}

/// Why [`XdsClient::start`] failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// The bootstrap lists no server.
    #[error("xDS bootstrap has no xds_servers")]
    NoServer,
    /// The server URI is not usable.
    #[error("xDS server URI {uri}: {source}")]
    BadServerUri {
        /// The URI.
        uri: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// Loading the bootstrap failed.
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    /// Called outside a tokio runtime.
    #[error("the xDS client must be started inside a tokio runtime")]
    NoRuntime,
}

/// A handle to a running xDS client. Cheap to clone; the worker stops when the last
/// handle is dropped.
#[derive(Debug, Clone)]
pub(crate) struct XdsClient {
    commands: mpsc::UnboundedSender<Command>,
    snapshots: watch::Receiver<Arc<XdsSnapshot>>,
    shared: Arc<Shared>,
}

impl XdsClient {
    /// Starts a client for `bootstrap` on the current tokio runtime.
    pub(crate) fn start(bootstrap: Bootstrap) -> Result<Self, StartError> {
        tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        let server = bootstrap.server().ok_or(StartError::NoServer)?;
        let transport =
            TonicTransport::new(&server.server_uri).map_err(|source| StartError::BadServerUri {
                uri: server.server_uri.clone(),
                source,
            })?;
        let seed = {
            use rand::Rng as _;
            rand::rng().next_u64()
        };
        Ok(Self::start_with_transport(&bootstrap, transport, seed))
    }

    /// Starts a client whose bootstrap comes from the environment (`GRPC_XDS_BOOTSTRAP`,
    /// then `GRPC_XDS_BOOTSTRAP_CONFIG`).
    pub(crate) fn start_from_env() -> Result<Self, StartError> {
        Self::start(Bootstrap::from_env()?)
    }

    /// Starts a client over any transport (tests use a scripted one). Must be called
    /// inside a tokio runtime.
    pub(crate) fn start_with_transport<T: AdsTransport>(
        bootstrap: &Bootstrap,
        transport: T,
        seed: u64,
    ) -> Self {
        let config = WorkerConfig {
            node: bootstrap.node_proto(),
            fail_on_data_errors: bootstrap.server().is_some_and(|s| s.fail_on_data_errors),
            resource_timeout: RESOURCE_DOES_NOT_EXIST_TIMEOUT,
            backoff: BackoffConfig::default(),
            seed,
            certificate_providers:
                crate::source::xds::resource::upstream_tls::CertificateProviderNames(
                    bootstrap.certificate_providers.keys().cloned().collect(),
                ),
        };
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (snapshot_tx, snapshots) = watch::channel(Arc::new(XdsSnapshot::default()));
        let shared = Arc::new(Shared::default());
        let worker = Worker::new(
            transport,
            config,
            command_rx,
            Arc::clone(&shared),
            snapshot_tx,
        );
        tokio::spawn(worker.run());
        Self {
            commands,
            snapshots,
            shared,
        }
    }

    /// Starts following listener `name` (an `xds:///NAME` target's resource name); its
    /// virtual host is selected for `name` as the authority.
    pub(crate) fn watch_listener(&self, name: impl Into<String>) {
        let name = name.into();
        let authority = name.clone();
        let _ = self
            .commands
            .send(Command::WatchListener { name, authority });
    }

    /// Like [`XdsClient::watch_listener`], selecting the virtual host for `authority` (the
    /// target) when a listener name template (A47) makes the resource name differ.
    pub(crate) fn watch_listener_with_authority(
        &self,
        name: impl Into<String>,
        authority: impl Into<String>,
    ) {
        let _ = self.commands.send(Command::WatchListener {
            name: name.into(),
            authority: authority.into(),
        });
    }

    /// Stops following listener `name`; its resources are unsubscribed when no other
    /// listener needs them.
    pub(crate) fn unwatch_listener(&self, name: impl Into<String>) {
        let _ = self.commands.send(Command::UnwatchListener(name.into()));
    }

    /// Complete configurations, newest first; never blocks the worker.
    pub(crate) fn snapshots(&self) -> watch::Receiver<Arc<XdsSnapshot>> {
        self.snapshots.clone()
    }

    /// Whether an ADS stream is up.
    pub(crate) fn connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// The cache as CSDS shows it (A40): every subscribed resource with its state.
    pub(crate) fn dump(&self) -> Vec<ResourceDump> {
        self.shared
            .dump
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    /// A78-style counters.
    pub(crate) fn metrics(&self) -> XdsClientMetrics {
        let load = |a: &[AtomicU64; 4]| std::array::from_fn(|i| a[i].load(Ordering::Relaxed));
        XdsClientMetrics {
            connected: self.connected(),
            server_failures: self.shared.server_failures.load(Ordering::Relaxed),
            resource_updates_valid: load(&self.shared.resource_updates_valid),
            resource_updates_invalid: load(&self.shared.resource_updates_invalid),
        }
    }
}

impl XdsClientMetrics {
    /// Valid updates of one type.
    pub(crate) fn valid(&self, ty: ResourceType) -> u64 {
        self.resource_updates_valid[ty.index()]
    }

    /// Invalid updates of one type.
    pub(crate) fn invalid(&self, ty: ResourceType) -> u64 {
        self.resource_updates_invalid[ty.index()]
    }
}
