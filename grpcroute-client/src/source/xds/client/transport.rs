//! The seam between the ADS worker and the network: one bidirectional ADS stream at a time.
//!
//! Production uses [`TonicTransport`]; tests script the server with
//! `fake::FakeTransport` (tests only).

use std::{future::Future, pin::Pin, time::Duration};

use envoy_types::pb::envoy::service::discovery::v3::{
    DiscoveryRequest, DiscoveryResponse,
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
};
use futures_util::{Stream, TryFutureExt as _};
use tokio::sync::mpsc;

/// The server's side of an ADS stream.
pub(crate) type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, tonic::Status>> + Send>>;

/// A boxed future.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Opens ADS streams to one control plane.
pub(crate) trait AdsTransport: Send + 'static {
    /// Opens a stream carrying `requests` (the initial ones are already queued in it).
    ///
    /// Resolves once a connection to the server is established (A57 starts the
    /// does-not-exist timers then), without waiting for the server's first message: some
    /// servers send nothing, not even headers, until they have a response.
    fn open(
        &mut self,
        requests: mpsc::UnboundedReceiver<DiscoveryRequest>,
    ) -> BoxFuture<'static, Result<ResponseStream, tonic::Status>>;
}

/// HTTP/2 keepalive: C-core's xDS channel pings every 5 minutes. Pinging more often than
/// that gets a GOAWAY (`too_many_pings`) from servers with grpc-go's default enforcement.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(300);
/// A ping unanswered for this long breaks the connection (a silent control plane).
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// gRPC's minimum connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// ADS over a plaintext tonic channel (`insecure` channel creds).
#[derive(Debug)]
pub(crate) struct TonicTransport {
    endpoint: tonic::transport::Endpoint,
}

impl TonicTransport {
    /// A transport to `server_uri` (`host:port`, optionally `dns:///host:port` or
    /// `http://host:port`).
    pub(crate) fn new(server_uri: &str) -> Result<Self, tonic::transport::Error> {
        let uri = server_uri.strip_prefix("dns:///").unwrap_or(server_uri);
        let uri = if uri.contains("://") {
            uri.to_owned()
        } else {
            format!("http://{uri}")
        };
        let endpoint = tonic::transport::Endpoint::from_shared(uri)?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        Ok(Self { endpoint })
    }
}

impl AdsTransport for TonicTransport {
    fn open(
        &mut self,
        mut requests: mpsc::UnboundedReceiver<DiscoveryRequest>,
    ) -> BoxFuture<'static, Result<ResponseStream, tonic::Status>> {
        let endpoint = self.endpoint.clone();
        Box::pin(async move {
            // A fresh connection per stream: a broken one is never reused, and the connect
            // timeout applies to every attempt.
            let channel = endpoint.connect().await.map_err(|e| {
                tonic::Status::unavailable(format!("cannot connect to the xDS server: {e}"))
            })?;
            // No size limit on responses, as C-core's xDS channel: a SotW response carries
            // every resource of a type and can be large.
            let mut client = AggregatedDiscoveryServiceClient::new(channel)
                .max_decoding_message_size(usize::MAX);
            let outbound = futures_util::stream::poll_fn(move |cx| requests.poll_recv(cx));
            let call = async move {
                client
                    .stream_aggregated_resources(tonic::Request::new(outbound))
                    .await
                    .map(tonic::Response::into_inner)
            };
            let stream: ResponseStream = Box::pin(call.try_flatten_stream());
            Ok(stream)
        })
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A scripted ADS server for worker tests: each `open` hands the test a
    //! [`FakeStream`] to read requests from and write responses to.

    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    };

    use tokio::time::Instant;

    use super::*;

    /// The client side: give it to the worker.
    #[derive(Debug)]
    pub(crate) struct FakeTransport {
        streams: mpsc::UnboundedSender<FakeStream>,
        refuse: Arc<AtomicBool>,
        attempts: Arc<Mutex<Vec<Instant>>>,
    }

    /// The server side of one stream.
    #[derive(Debug)]
    pub(crate) struct FakeStream {
        /// What the client sent.
        pub(crate) requests: mpsc::UnboundedReceiver<DiscoveryRequest>,
        /// What the client receives; dropping it ends the stream cleanly, an `Err` ends it
        /// with that status.
        pub(crate) responses: mpsc::UnboundedSender<Result<DiscoveryResponse, tonic::Status>>,
    }

    /// The test's handle: accepts streams and controls connectivity.
    #[derive(Debug)]
    pub(crate) struct FakeServer {
        /// Streams opened by the client, in order.
        pub(crate) streams: mpsc::UnboundedReceiver<FakeStream>,
        refuse: Arc<AtomicBool>,
        attempts: Arc<Mutex<Vec<Instant>>>,
    }

    impl FakeServer {
        /// While set, `open` fails with UNAVAILABLE (the server is down).
        pub(crate) fn set_refusing(&self, refuse: bool) {
            self.refuse.store(refuse, Ordering::SeqCst);
        }

        /// When each connection attempt was made.
        pub(crate) fn attempts(&self) -> Vec<Instant> {
            self.attempts.lock().unwrap().clone()
        }
    }

    /// A connected transport/server pair.
    pub(crate) fn pair() -> (FakeTransport, FakeServer) {
        let (tx, rx) = mpsc::unbounded_channel();
        let refuse = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        (
            FakeTransport {
                streams: tx,
                refuse: refuse.clone(),
                attempts: attempts.clone(),
            },
            FakeServer {
                streams: rx,
                refuse,
                attempts,
            },
        )
    }

    impl AdsTransport for FakeTransport {
        fn open(
            &mut self,
            requests: mpsc::UnboundedReceiver<DiscoveryRequest>,
        ) -> BoxFuture<'static, Result<ResponseStream, tonic::Status>> {
            self.attempts.lock().unwrap().push(Instant::now());
            let refuse = self.refuse.clone();
            let streams = self.streams.clone();
            Box::pin(async move {
                if refuse.load(Ordering::SeqCst) {
                    return Err(tonic::Status::unavailable("connection refused"));
                }
                let (tx, mut rx) = mpsc::unbounded_channel();
                let _ = streams.send(FakeStream {
                    requests,
                    responses: tx,
                });
                let stream: ResponseStream =
                    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
                Ok(stream)
            })
        }
    }
}
