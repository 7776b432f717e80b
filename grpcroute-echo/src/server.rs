//! Starting and stopping an echo server.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::StreamBody;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::oneshot,
    task::JoinHandle,
};
use tokio_stream::Stream;
use tonic::{
    server::NamedService,
    service::Routes,
    transport::{
        Server,
        server::{Connected, TcpIncoming},
    },
};

use crate::{
    headers::{EchoHeadersLayer, Received, ReceivedLog, RequestAuthority},
    pb::{
        Assertions, Context as EchoContext, EchoRequest, EchoResponse, Header,
        grpc_echo_server::{GrpcEcho, GrpcEchoServer},
    },
};

/// What an echo server says about itself.
#[derive(Clone, Debug)]
pub struct EchoConfig {
    /// Reported in `x-echo-backend` (e.g. `echo-v1`).
    pub name: String,
    /// Reported as the pod's namespace.
    pub namespace: String,
    /// Reported as the pod name (defaults to the name).
    pub pod: Option<String>,
    /// Reported as the Service name.
    pub service: Option<String>,
    /// Where to listen (default `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// Answer every call after this long (default: at once).
    pub delay: Option<Duration>,
}

impl EchoConfig {
    /// An echo server called `name`, in namespace `default`, on a free loopback port.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            namespace: "default".into(),
            pod: None,
            service: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            delay: None,
        }
    }

    /// Sets the namespace.
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets the pod name.
    #[must_use]
    pub fn pod(mut self, pod: impl Into<String>) -> Self {
        self.pod = Some(pod.into());
        self
    }

    /// Sets the Service name reported in the conformance `EchoResponse`.
    #[must_use]
    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = Some(service.into());
        self
    }

    /// Sets the listen address.
    #[must_use]
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Delays every answer.
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
}

/// A running echo server.
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    name: String,
    calls: Arc<AtomicU64>,
    failing: Arc<AtomicBool>,
    received: ReceivedLog,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The name is not a valid metadata value.
    #[error("backend name {0:?} is not a valid metadata value")]
    Name(String),
}

impl EchoServer {
    /// Binds and starts serving in the background.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound or the name is not a valid metadata value.
    pub async fn start(config: EchoConfig) -> Result<Self, StartError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        // tonic's `serve_with_incoming` ignores `Server::tcp_nodelay`; the incoming stream
        // must set it, or Nagle plus delayed ACKs adds ~40 ms to small responses.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        Self::start_with_incoming(config, addr, incoming).await
    }

    /// Starts serving the connections `incoming` yields (e.g. TLS streams accepted by the
    /// caller), in the background; `addr` is what [`EchoServer::addr`] reports, and
    /// `config.listen` is not used. Setting TCP_NODELAY on the sockets is the caller's
    /// job. When the connections' [`Connected::ConnectInfo`] is a
    /// [`PeerIdentity`](crate::PeerIdentity) naming the caller, every response on them
    /// carries [`PEER_HEADER`](crate::PEER_HEADER).
    ///
    /// Errors `incoming` yields are skipped (tonic logs them at trace level).
    ///
    /// # Errors
    ///
    /// When the name is not a valid metadata value.
    pub async fn start_with_incoming<I, IO, IE>(
        config: EchoConfig,
        addr: SocketAddr,
        incoming: I,
    ) -> Result<Self, StartError>
    where
        I: Stream<Item = Result<IO, IE>> + Send + 'static,
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
        IE: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    {
        let backend = HeaderValue::from_str(&config.name)
            .map_err(|_| StartError::Name(config.name.clone()))?;
        let calls = Arc::new(AtomicU64::new(0));
        let received = ReceivedLog::default();

        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<GrpcEchoServer<Echo>>().await;
        let failing = Arc::new(AtomicBool::new(false));
        let echo = Echo {
            config: Arc::new(config.clone()),
            calls: calls.clone(),
            failing: failing.clone(),
        };
        let routes = Routes::new(GrpcEchoServer::new(echo.clone()))
            .add_service(health_service)
            .into_axum_router()
            .fallback_service(AnyMethod { echo });

        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(
            Server::builder()
                .layer(EchoHeadersLayer {
                    backend: Arc::new(backend),
                    received: received.clone(),
                })
                .add_routes(Routes::from(routes))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                }),
        );
        Ok(Self {
            addr,
            name: config.name,
            calls,
            failing,
            received,
            shutdown: Some(tx),
            task,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its backend name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many calls it has answered (failed ones included).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// From now on answer every call `UNAVAILABLE` (`true`), or normally again (`false`):
    /// a pod whose dependency is down, as failure accrual sees it.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }

    /// The requests it received (up to the last 4096), oldest first: method, path and
    /// headers, as they arrived (including calls it has not answered yet).
    pub fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Stops gracefully: stops accepting, tells connected clients to go away (HTTP/2
    /// GOAWAY), and waits for the calls in flight to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Stops at once, dropping connections and calls in flight (a crashed pod).
    pub fn kill(self) {
        self.task.abort();
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone, Debug)]
struct Echo {
    config: Arc<EchoConfig>,
    calls: Arc<AtomicU64>,
    failing: Arc<AtomicBool>,
}

impl Echo {
    async fn answer(&self) -> Result<(), tonic::Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(delay) = self.config.delay {
            tokio::time::sleep(delay).await;
        }
        if self.failing.load(Ordering::Relaxed) {
            return Err(tonic::Status::unavailable(format!(
                "echo server {} is failing",
                self.config.name
            )));
        }
        Ok(())
    }

    fn response(&self, method: &str, request: &tonic::Request<EchoRequest>) -> EchoResponse {
        let headers = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| Header {
                key: k.to_string(),
                value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
            })
            .collect();
        let authority = request
            .extensions()
            .get::<RequestAuthority>()
            .map(|a| a.0.clone())
            .unwrap_or_default();
        EchoResponse {
            assertions: Some(Assertions {
                fully_qualified_method: format!("/{}/{method}", GrpcEchoServer::<Echo>::NAME),
                headers,
                authority,
                context: Some(EchoContext {
                    namespace: self.config.namespace.clone(),
                    ingress: String::new(),
                    service_name: self.config.service.clone().unwrap_or_default(),
                    pod: self
                        .config
                        .pod
                        .clone()
                        .unwrap_or_else(|| self.config.name.clone()),
                }),
                tls_assertions: None,
            }),
            request: Some(EchoRequest {}),
        }
    }
}

#[tonic::async_trait]
impl GrpcEcho for Echo {
    async fn echo(
        &self,
        request: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoResponse>, tonic::Status> {
        self.answer().await?;
        Ok(tonic::Response::new(self.response("Echo", &request)))
    }

    async fn echo_two(
        &self,
        request: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoResponse>, tonic::Status> {
        self.answer().await?;
        Ok(tonic::Response::new(self.response("EchoTwo", &request)))
    }

    async fn echo_three(
        &self,
        _: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoResponse>, tonic::Status> {
        self.answer().await?;
        Err(tonic::Status::unimplemented(
            "EchoThree is intentionally unimplemented",
        ))
    }
}

/// Answers any other method: OK with an empty message.
#[derive(Clone, Debug)]
struct AnyMethod {
    echo: Echo,
}

type AnyBody = StreamBody<tokio_stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

impl<B> tower::Service<Request<B>> for AnyMethod
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    type Response = Response<AnyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let echo = self.echo.clone();
        Box::pin(async move {
            // Read the request to its end before answering, as a real handler does: an
            // unread request stream left open makes HTTP/2 peers reset the connection. A
            // request that fails before its end (reset by the client) is not answered, and
            // not counted.
            let whole = http_body_util::BodyExt::collect(req.into_body())
                .await
                .is_ok();
            let failed = whole && echo.answer().await.is_err();
            let mut trailers = HeaderMap::new();
            let frames = if failed {
                trailers.insert("grpc-status", HeaderValue::from_static("14"));
                vec![Ok(Frame::trailers(trailers))]
            } else {
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                // A message frame: not compressed, length 0.
                vec![
                    Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
                    Ok(Frame::trailers(trailers)),
                ]
            };
            let mut response = Response::new(StreamBody::new(tokio_stream::iter(frames)));
            response
                .headers_mut()
                .insert("content-type", HeaderValue::from_static("application/grpc"));
            Ok(response)
        })
    }
}
