//! Test servers shared by the integration tests: an HTTP/2 server whose calls hang, stall
//! or answer late, and listeners that never answer at all.

#![allow(dead_code, unreachable_pub)]

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::StreamBody;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
/// Generous: every bound in the tests is far above the timeouts their calls carry, and far
/// below what the mesh would take without them (keep-alive: 30 s + 10 s).
pub const SLACK: Duration = Duration::from_secs(3);

/// What a test server does with a call.
#[derive(Clone, Copy)]
pub enum Behaviour {
    /// Accepts the stream and never answers.
    Silent,
    /// Sends headers and one message, then nothing more.
    StallsMidBody,
    /// Answers OK after this long.
    AnswersAfter(Duration),
}

/// An HTTP/2 server on 127.0.0.1 (TCP_NODELAY) that counts the calls it started and the
/// ones whose handling was abandoned (the stream reset, or the connection gone) before it
/// finished them, and records the `grpc-timeout` each call carried.
pub struct TestServer {
    pub addr: SocketAddr,
    pub started: Arc<AtomicUsize>,
    pub abandoned: Arc<AtomicUsize>,
    pub timeouts: Arc<std::sync::Mutex<Vec<Option<String>>>>,
}

/// Counts an abandoned call when dropped before `done`.
pub struct DropGuard(Arc<AtomicUsize>, bool);

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl TestServer {
    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let started = Arc::new(AtomicUsize::new(0));
        let abandoned = Arc::new(AtomicUsize::new(0));
        let timeouts = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, a, t) = (started.clone(), abandoned.clone(), timeouts.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                tcp.set_nodelay(true).unwrap();
                let (s, a, t) = (s.clone(), a.clone(), t.clone());
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        s.fetch_add(1, Ordering::SeqCst);
                        t.lock().unwrap().push(
                            req.headers()
                                .get("grpc-timeout")
                                .map(|v| v.to_str().unwrap().to_string()),
                        );
                        let a = a.clone();
                        async move {
                            let mut guard = DropGuard(a.clone(), false);
                            match behaviour {
                                Behaviour::Silent => {
                                    std::future::pending::<()>().await;
                                    unreachable!()
                                }
                                Behaviour::StallsMidBody => {
                                    guard.1 = true;
                                    let body_guard = DropGuard(a, false);
                                    let frames = futures_util::stream::once(async {
                                        Ok::<_, Infallible>(Frame::data(Bytes::from_static(&[
                                            0, 0, 0, 0, 0,
                                        ])))
                                    })
                                    .chain(
                                        futures_util::stream::once(async move {
                                            let _keep = body_guard;
                                            std::future::pending::<()>().await;
                                            unreachable!()
                                        }),
                                    );
                                    Ok::<_, Infallible>(grpc_response(
                                        http_body_util::combinators::UnsyncBoxBody::new(
                                            StreamBody::new(frames),
                                        ),
                                    ))
                                }
                                Behaviour::AnswersAfter(delay) => {
                                    tokio::time::sleep(delay).await;
                                    guard.1 = true;
                                    let mut trailers = http::HeaderMap::new();
                                    trailers.insert("grpc-status", "0".parse().unwrap());
                                    let frames = futures_util::stream::iter([
                                        Ok::<_, Infallible>(Frame::data(Bytes::from_static(&[
                                            0, 0, 0, 0, 0,
                                        ]))),
                                        Ok(Frame::trailers(trailers)),
                                    ]);
                                    Ok(grpc_response(
                                        http_body_util::combinators::UnsyncBoxBody::new(
                                            StreamBody::new(frames),
                                        ),
                                    ))
                                }
                            }
                        }
                    });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service),
                );
            }
        });
        Self {
            addr,
            started,
            abandoned,
            timeouts,
        }
    }

    /// Waits (bounded) until `n` calls were abandoned by the server.
    pub async fn wait_abandoned(&self, n: usize) {
        let waited = tokio::time::timeout(SLACK, async {
            while self.abandoned.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "the server still works on the call: its stream was not reset ({} of {n} abandoned)",
            self.abandoned.load(Ordering::SeqCst)
        );
    }
}

pub fn grpc_response<B>(body: B) -> Response<B> {
    Response::builder()
        .header("content-type", "application/grpc")
        .body(body)
        .unwrap()
}

/// A listener whose accept queue is full and which never accepts: further connects hang in
/// the TCP handshake (the kernel drops their SYNs), as to a host that went dark.
pub async fn saturated() -> (
    SocketAddr,
    Vec<tokio::net::TcpStream>,
    tokio::net::TcpListener,
) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(LOCALHOST, 0)).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    // Fill the accept queue (backlog 0 still queues one, and the SYN queue takes a few):
    // stop once a connect no longer completes.
    for _ in 0..64 {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(tcp)) => fillers.push(tcp),
            _ => break,
        }
    }
    (addr, fillers, listener)
}

/// A listener that accepts TCP connections and never speaks HTTP/2.
pub async fn blackhole() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    (addr, task)
}

/// A listener that answers every connection with what a TLS server sends a client that
/// does not speak TLS (a fatal `protocol_version` alert record), then holds the socket
/// open: the client reads bytes that are not HTTP/2, not a closed connection.
pub async fn tls_alert_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut tcp, _)) = listener.accept().await {
            tcp.set_nodelay(true).unwrap();
            let _ = tcp
                .write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46])
                .await;
            held.push(tcp);
        }
    });
    (addr, task)
}

/// An HTTP/2 server on 127.0.0.1 (TCP_NODELAY) that answers every call OK, or, while
/// `failing` is set, `UNAVAILABLE` (trailers-only, as an overloaded server does). It counts
/// the calls it answered each way.
pub struct FlakyServer {
    pub addr: SocketAddr,
    pub failing: Arc<std::sync::atomic::AtomicBool>,
    /// The gRPC code it fails with.
    pub code: u8,
    pub ok: Arc<AtomicUsize>,
    pub failed: Arc<AtomicUsize>,
}

impl FlakyServer {
    pub async fn start(failing: bool) -> Self {
        Self::start_with(failing, 14).await
    }

    /// Fails with gRPC code `code` while failing.
    pub async fn start_with(failing: bool, code: u8) -> Self {
        let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(failing));
        let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (f, o, x) = (flag.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                tcp.set_nodelay(true).unwrap();
                let (f, o, x) = (f.clone(), o.clone(), x.clone());
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (f, o, x) = (f.clone(), o.clone(), x.clone());
                        async move {
                            // Read the request whole first, as a real handler does.
                            let _ = http_body_util::BodyExt::collect(req.into_body()).await;
                            let mut trailers = http::HeaderMap::new();
                            let response = if f.load(Ordering::SeqCst) {
                                x.fetch_add(1, Ordering::SeqCst);
                                Response::builder()
                                    .header("content-type", "application/grpc")
                                    .header("grpc-status", code.to_string())
                                    .header("grpc-message", "overloaded")
                                    .body(http_body_util::combinators::UnsyncBoxBody::new(
                                        StreamBody::new(futures_util::stream::empty::<
                                            Result<Frame<Bytes>, Infallible>,
                                        >(
                                        )),
                                    ))
                                    .unwrap()
                            } else {
                                o.fetch_add(1, Ordering::SeqCst);
                                trailers.insert("grpc-status", "0".parse().unwrap());
                                let frames = futures_util::stream::iter([
                                    Ok::<_, Infallible>(Frame::data(Bytes::from_static(&[
                                        0, 0, 0, 0, 0,
                                    ]))),
                                    Ok(Frame::trailers(trailers)),
                                ]);
                                grpc_response(http_body_util::combinators::UnsyncBoxBody::new(
                                    StreamBody::new(frames),
                                ))
                            };
                            Ok::<_, Infallible>(response)
                        }
                    });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service),
                );
            }
        });
        Self {
            addr,
            code,
            failing: flag,
            ok,
            failed,
        }
    }

    /// Calls it answered, either way.
    pub fn calls(&self) -> usize {
        self.ok.load(Ordering::SeqCst) + self.failed.load(Ordering::SeqCst)
    }

    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}
