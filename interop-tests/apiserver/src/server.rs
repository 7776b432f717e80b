//! The listener: binding, the accept loop (which closes and re-binds the same port to
//! refuse connections), and one task per HTTP/1.1 connection.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::faults::{Fault, Faults};
use crate::handle::ApiServerHandle;
use crate::resources::{ReferenceGrantVersions, Resource};
use crate::stats::Recorder;
use crate::store::{Store, Target};

/// State shared by the accept loop, connections, watches and handles.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) faults: Faults,
    pub(crate) stats: Arc<Recorder>,
    pub(crate) bookmark_interval: Duration,
    pub(crate) addr: SocketAddr,
    /// `true` once the server is shutting down.
    pub(crate) shutdown: watch::Sender<bool>,
    /// Whether the listener is bound (false while refusing connections).
    pub(crate) listening: watch::Sender<bool>,
}

/// Configures and starts an [`ApiServer`].
#[derive(Debug, Clone)]
pub struct ApiServerBuilder {
    port: u16,
    bookmark_interval: Duration,
    reference_grants: ReferenceGrantVersions,
    history_limit: usize,
}

impl Default for ApiServerBuilder {
    fn default() -> Self {
        Self {
            port: 0,
            bookmark_interval: Duration::from_secs(1),
            reference_grants: ReferenceGrantVersions::Both,
            history_limit: 100_000,
        }
    }
}

impl ApiServerBuilder {
    /// The port on 127.0.0.1 to listen on (default 0: any free port).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// How often watches that asked for bookmarks get one (default 1 s; real servers
    /// send them about once a minute).
    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.bookmark_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Which ReferenceGrant versions are served (default both, `v1` preferred).
    pub fn reference_grant_versions(mut self, versions: ReferenceGrantVersions) -> Self {
        self.reference_grants = versions;
        self
    }

    /// How many events the history keeps for watches resuming from an old resource
    /// version (default 100 000). Older events are compacted away automatically.
    pub fn history_limit(mut self, events: usize) -> Self {
        self.history_limit = events;
        self
    }

    /// Binds 127.0.0.1:`port` and starts serving. The `default` namespace exists from
    /// the start, as in a real cluster.
    pub async fn start(self) -> io::Result<ApiServer> {
        let listener = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            store: Store::new(self.reference_grants, self.history_limit),
            faults: Faults::new(),
            stats: Arc::default(),
            bookmark_interval: self.bookmark_interval,
            addr,
            shutdown: watch::channel(false).0,
            listening: watch::channel(true).0,
        });
        let default_ns = json!({"metadata": {"name": "default"}});
        shared
            .store
            .create(Resource::Namespaces, None, default_ns, Target::Whole)
            .map_err(io::Error::other)?;
        let accept = tokio::spawn(accept_loop(Arc::clone(&shared), listener));
        tracing::debug!(%addr, "test apiserver listening");
        Ok(ApiServer {
            handle: ApiServerHandle::new(shared),
            accept: Some(accept),
        })
    }
}

/// A Kubernetes API server for tests, serving plain HTTP/1.1 on 127.0.0.1.
///
/// Everything but starting and stopping is on [`ApiServerHandle`], which this derefs to
/// and which [`handle`](Self::handle) clones for use from other tasks. Dropping the
/// server stops it too (without waiting); prefer [`shutdown`](Self::shutdown).
#[derive(Debug)]
pub struct ApiServer {
    handle: ApiServerHandle,
    accept: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// A builder, to choose the port, bookmark interval and ReferenceGrant versions.
    pub fn builder() -> ApiServerBuilder {
        ApiServerBuilder::default()
    }

    /// Starts a server with the defaults on a free port of 127.0.0.1.
    ///
    /// # Panics
    ///
    /// If no port can be bound on 127.0.0.1 (use [`ApiServerBuilder::start`] to get the
    /// error instead).
    pub async fn start() -> ApiServer {
        match Self::builder().start().await {
            Ok(server) => server,
            Err(e) => panic!("cannot start the test apiserver on 127.0.0.1: {e}"),
        }
    }

    /// A cloneable handle to the running server.
    pub fn handle(&self) -> ApiServerHandle {
        self.handle.clone()
    }

    /// Stops accepting, drops every connection and watch, and waits for the listener to
    /// close. Handles still alive keep working for direct object access.
    pub async fn shutdown(mut self) {
        self.handle.shared().shutdown.send_replace(true);
        if let Some(accept) = self.accept.take()
            && let Err(e) = accept.await
        {
            tracing::warn!("test apiserver accept loop failed: {e}");
        }
    }
}

impl Deref for ApiServer {
    type Target = ApiServerHandle;

    fn deref(&self) -> &ApiServerHandle {
        &self.handle
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.handle.shared().shutdown.send_replace(true);
    }
}

/// A listener with `SO_REUSEADDR`, so the same port can be bound again right after the
/// server closed it (its old connections linger in TIME_WAIT).
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn rebind(addr: SocketAddr) -> io::Result<TcpListener> {
    let mut attempt = 0;
    loop {
        match bind(addr) {
            Ok(listener) => return Ok(listener),
            Err(e) if attempt < 100 => {
                tracing::debug!(%addr, "re-binding failed, retrying: {e}");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

enum Step {
    Stop,
    FaultsChanged,
    Accepted(io::Result<(TcpStream, SocketAddr)>),
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut listener = Some(listener);
    let mut shutdown = shared.shutdown.subscribe();
    let mut faults = shared.faults.subscribe();
    loop {
        let Some(bound) = &listener else {
            // Refusing: nothing listens on the port, so connects fail fast.
            tokio::select! {
                _ = shutdown.changed() => return,
                () = shared.faults.over(Fault::Refuse) => {}
            }
            match rebind(shared.addr).await {
                Ok(l) => {
                    listener = Some(l);
                    shared.listening.send_replace(true);
                    tracing::debug!(addr = %shared.addr, "accepting connections again");
                }
                Err(e) => {
                    tracing::error!(addr = %shared.addr, "cannot re-bind the test apiserver: {e}");
                    return;
                }
            }
            continue;
        };
        let step = tokio::select! {
            biased;
            _ = shutdown.changed() => Step::Stop,
            changed = faults.changed() => match changed {
                Ok(()) => Step::FaultsChanged,
                Err(_) => Step::Stop,
            },
            accepted = bound.accept() => Step::Accepted(accepted),
        };
        match step {
            Step::Stop => return,
            Step::FaultsChanged => {
                if shared.faults.active(Fault::Refuse) {
                    listener = None;
                    shared.faults.drop_connections();
                    shared.listening.send_replace(false);
                    tracing::debug!(addr = %shared.addr, "refusing connections");
                }
            }
            Step::Accepted(Ok((stream, _peer))) => spawn_connection(&shared, stream),
            Step::Accepted(Err(e)) => {
                // E.g. out of file descriptors: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn spawn_connection(shared: &Arc<Shared>, stream: TcpStream) {
    shared.stats.connection();
    // Watch events are small writes that must not wait for Nagle.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("set_nodelay: {e}");
    }
    let mut epoch = shared.faults.connection_epoch();
    let mut shutdown = shared.shutdown.subscribe();
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let service = service_fn(move |request| crate::http::handle(Arc::clone(&shared), request));
        // No header-read timeout: hyper would also apply it to idle keep-alive
        // connections, and a client reusing one just as it closes sees a spurious error.
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .serve_connection(TokioIo::new(stream), service);
        // Dropping the connection future closes the socket: that is how "restart" and
        // "refuse connections" cut clients off.
        tokio::select! {
            result = connection => {
                if let Err(e) = result {
                    tracing::debug!("connection ended: {e}");
                }
            }
            _ = epoch.changed() => {}
            _ = shutdown.changed() => {}
        }
    });
}
