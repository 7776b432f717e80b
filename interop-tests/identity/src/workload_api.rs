//! [`WorkloadApiServer`]: the X.509 half of the SPIFFE Workload API on a Unix socket, as a
//! SPIRE agent serves it: every `FetchX509SVID` stream gets the current SVID at once and
//! each one [`push`](WorkloadApiServer::push)ed after it.

use std::{
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use futures_util::{Stream, StreamExt as _};
use tokio::sync::watch;
use tokio_stream::wrappers::{UnixListenerStream, WatchStream};
use tonic::{Request, Response, Status};

use crate::{
    pb::{
        X509BundlesRequest, X509BundlesResponse, X509svid, X509svidRequest, X509svidResponse,
        spiffe_workload_api_server::{SpiffeWorkloadApi, SpiffeWorkloadApiServer},
    },
    pki::Issued,
};

/// A running Workload API; stops when dropped.
#[derive(Debug)]
pub struct WorkloadApiServer {
    socket: PathBuf,
    current: watch::Sender<Option<X509svidResponse>>,
    streams: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WorkloadApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Api {
    current: watch::Receiver<Option<X509svidResponse>>,
    streams: Arc<AtomicUsize>,
}

type Updates<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The specification requires this metadata on every call, so that a browser cannot be
/// tricked into calling a local agent.
fn check_header<T>(request: &Request<T>) -> Result<(), Status> {
    match request.metadata().get("workload.spiffe.io") {
        Some(v) if v == "true" => Ok(()),
        _ => Err(Status::invalid_argument(
            "security header missing from request",
        )),
    }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for Api {
    type FetchX509SVIDStream = Updates<X509svidResponse>;
    type FetchX509BundlesStream = Updates<X509BundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        check_header(&request)?;
        self.streams.fetch_add(1, Ordering::Relaxed);
        let stream =
            WatchStream::new(self.current.clone()).filter_map(|r| async move { r.map(Ok) });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        check_header(&request)?;
        let stream = WatchStream::new(self.current.clone()).filter_map(|r| async move {
            r.map(|r| {
                let mut bundles = r.federated_bundles.clone();
                for svid in &r.svids {
                    if let Some(td) = svid
                        .spiffe_id
                        .strip_prefix("spiffe://")
                        .and_then(|rest| rest.split('/').next())
                    {
                        bundles.insert(td.to_string(), svid.bundle.clone());
                    }
                }
                Ok(X509BundlesResponse {
                    crl: Vec::new(),
                    bundles,
                })
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

impl WorkloadApiServer {
    /// Serves on `dir/agent.sock`.
    ///
    /// # Errors
    ///
    /// When the socket cannot be bound.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let socket = dir.join("agent.sock");
        let listener = tokio::net::UnixListener::bind(&socket)?;
        let (current, rx) = watch::channel(None);
        let streams = Arc::new(AtomicUsize::new(0));
        let api = Api {
            current: rx,
            streams: streams.clone(),
        };
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(SpiffeWorkloadApiServer::new(api))
                .serve_with_incoming(UnixListenerStream::new(listener))
                .await;
        });
        Ok(Self {
            socket,
            current,
            streams,
            task,
        })
    }

    /// The endpoint to give the client: `unix://<path>`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Makes `svid` (for `spiffe_id`, in a trust domain with `bundle`, DER CA certificates)
    /// the current SVID and sends it on every open stream.
    pub fn push(&self, spiffe_id: &str, svid: &Issued, bundle: &[&[u8]]) {
        self.current.send_replace(Some(X509svidResponse {
            svids: vec![X509svid {
                spiffe_id: spiffe_id.into(),
                x509_svid: svid.cert_der.clone(),
                x509_svid_key: svid.key_der.clone(),
                bundle: bundle.concat(),
                hint: String::new(),
            }],
            crl: Vec::new(),
            federated_bundles: Default::default(),
        }));
    }

    /// How many `FetchX509SVID` streams were opened.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }
}
