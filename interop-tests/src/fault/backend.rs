//! A gRPC backend for fault tests: every method answers OK with an empty message after the
//! delay the caller asks for, naming itself in `x-echo-backend` like the echo servers.
//! Calls can so be kept in flight for as long as a test needs them to be when it injects a
//! fault. Two kinds of delay, as request metadata in milliseconds:
//!
//! - [`DELAY_HEADER`] (`x-delay-ms`): nothing is sent until the delay is over, as a unary
//!   handler answers (headers, message and status together);
//! - [`BODY_DELAY_HEADER`] (`x-body-delay-ms`): the response headers are sent at once, the
//!   message and status after the delay, as a server streaming its answer would. The
//!   client's balancer then measures the time to the headers, not the delay: long calls
//!   of this kind do not make their endpoint look slow.
//!
//! Plain HTTP/2 on hyper (no tonic server): the tests need control over connections —
//! graceful shutdown sends GOAWAY on every connection, lets the calls in flight finish and
//! closes the port; dropping the server aborts everything at once.

use std::{
    convert::Infallible,
    future::Future as _,
    io,
    net::SocketAddr,
    pin::{Pin, pin},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt as _;
use hyper::{
    body::{Body, Frame, Incoming},
    server::conn::http2,
    service::service_fn,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::{JoinHandle, JoinSet},
    time::Sleep,
};

use crate::cluster::LOOPBACK;

/// Request metadata: how long the server waits before answering, in milliseconds.
pub const DELAY_HEADER: &str = "x-delay-ms";
/// Request metadata: how long the server waits between the response headers (sent at
/// once) and the message and status, in milliseconds.
pub const BODY_DELAY_HEADER: &str = "x-body-delay-ms";

/// The calls a server received, and how many of them are still being answered.
#[derive(Debug)]
struct Counts {
    started: watch::Sender<u64>,
    finished: AtomicU64,
}

/// Counts a call as finished when dropped: answered, or abandoned by its client.
struct Finished(Arc<Counts>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::SeqCst);
    }
}

/// A running backend on 127.0.0.1. Stops at once when dropped (its connections are
/// closed, calls in flight are abandoned); [`DelayServer::shutdown`] stops it gracefully.
#[derive(Debug)]
pub struct DelayServer {
    addr: SocketAddr,
    name: String,
    counts: Arc<Counts>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl DelayServer {
    /// Starts a backend named `name` on a free port of 127.0.0.1.
    ///
    /// # Errors
    ///
    /// No port can be bound, or `name` is not a valid metadata value.
    pub async fn start(name: &str) -> io::Result<Self> {
        let listener = TcpListener::bind((LOOPBACK, 0)).await?;
        let addr = listener.local_addr()?;
        let backend = HeaderValue::from_str(name).map_err(io::Error::other)?;
        let counts = Arc::new(Counts {
            started: watch::channel(0).0,
            finished: AtomicU64::new(0),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve(listener, backend, counts.clone(), stopped));
        Ok(Self {
            addr,
            name: name.to_string(),
            counts,
            stop,
            task,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its name, the `x-echo-backend` of its answers.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Calls received so far.
    pub fn started(&self) -> u64 {
        *self.counts.started.borrow()
    }

    /// Calls received and not yet answered (or abandoned).
    pub fn in_flight(&self) -> u64 {
        self.started()
            .saturating_sub(self.counts.finished.load(Ordering::SeqCst))
    }

    /// The number of calls received, notified as each arrives.
    pub fn started_updates(&self) -> watch::Receiver<u64> {
        self.counts.started.subscribe()
    }

    /// Stops gracefully: closes the port (connects are refused from then on), sends GOAWAY
    /// on every connection, and returns once the calls in flight have been answered and
    /// the connections closed.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let _ = (&mut self.task).await;
    }
}

impl Drop for DelayServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    listener: TcpListener,
    backend: HeaderValue,
    counts: Arc<Counts>,
    mut stop: watch::Receiver<bool>,
) {
    // Dropping the set (when the task is aborted) closes every connection.
    let mut connections = JoinSet::new();
    let connection_stop = stop.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let stop = connection_stop.clone();
                connections.spawn(connection(tcp, backend.clone(), counts.clone(), stop));
                while connections.try_join_next().is_some() {}
            }
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn connection(
    tcp: TcpStream,
    backend: HeaderValue,
    counts: Arc<Counts>,
    mut stop: watch::Receiver<bool>,
) {
    // Small answers must not wait for delayed ACKs.
    let _ = tcp.set_nodelay(true);
    let service = service_fn(move |request| answer(request, backend.clone(), counts.clone()));
    let mut conn = pin!(
        http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(TokioIo::new(tcp), service)
    );
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stop.wait_for(|stop| *stop) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

async fn answer(
    request: Request<Incoming>,
    backend: HeaderValue,
    counts: Arc<Counts>,
) -> Result<Response<Answer>, Infallible> {
    let delay = |name| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .map(Duration::from_millis)
    };
    let (delay, body_delay) = (delay(DELAY_HEADER), delay(BODY_DELAY_HEADER));
    // Read the request to its end before answering, as a real handler does.
    let _ = request.into_body().collect().await;
    counts.started.send_modify(|n| *n += 1);
    let finished = Finished(counts);
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let mut response = Response::new(Answer {
        delay: body_delay.map(|d| Box::pin(tokio::time::sleep(d))),
        message_sent: false,
        finished: Some(finished),
    });
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    headers.insert(grpcroute_echo::BACKEND_HEADER, backend);
    Ok(response)
}

/// The answer's body: after its delay, one empty message, then `grpc-status: 0`. The call
/// counts as finished when the body has ended or is dropped.
struct Answer {
    delay: Option<Pin<Box<Sleep>>>,
    message_sent: bool,
    finished: Option<Finished>,
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(delay) = &mut self.delay {
            ready!(delay.as_mut().poll(cx));
            self.delay = None;
        }
        if !self.message_sent {
            self.message_sent = true;
            // One message: not compressed, length 0.
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0])))));
        }
        if self.finished.take().is_some() {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.finished.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::{ECHO, backend, call};

    async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn answers_after_the_asked_delay_and_drains_on_shutdown() {
        let server = DelayServer::start("d-0").await.unwrap();
        let channel = channel(server.addr()).await;
        let answer = call(channel.clone(), ECHO, &[]).await.unwrap();
        assert_eq!(backend(answer.metadata()).as_deref(), Some("d-0"));

        let slow = tokio::spawn(call(channel.clone(), ECHO, &[(DELAY_HEADER, "400")]));
        let mut started = server.started_updates();
        started.wait_for(|n| *n == 2).await.unwrap();
        assert_eq!(server.in_flight(), 1);
        let addr = server.addr();
        let begun = tokio::time::Instant::now();
        server.shutdown().await;
        assert!(
            begun.elapsed() >= Duration::from_millis(300),
            "shutdown waited for the call in flight"
        );
        let answer = slow.await.unwrap().expect("the call in flight finished");
        assert_eq!(backend(answer.metadata()).as_deref(), Some("d-0"));
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "the port is closed"
        );
    }

    #[tokio::test]
    async fn a_body_delay_sends_the_headers_at_once() {
        let server = DelayServer::start("d-1").await.unwrap();
        let mut client = tonic::client::Grpc::new(channel(server.addr()).await);
        client.ready().await.unwrap();
        let mut request = tonic::Request::new(Bytes::new());
        request
            .metadata_mut()
            .insert(BODY_DELAY_HEADER, "500".parse().unwrap());
        let begun = tokio::time::Instant::now();
        let response = client
            .server_streaming(request, ECHO.parse().unwrap(), crate::calls::RawCodec)
            .await
            .unwrap();
        assert!(
            begun.elapsed() < Duration::from_millis(400),
            "headers at once"
        );
        assert_eq!(server.in_flight(), 1);
        let mut messages = response.into_inner();
        assert!(messages.message().await.unwrap().is_some());
        assert!(
            begun.elapsed() >= Duration::from_millis(500),
            "the message after the delay"
        );
        assert!(messages.message().await.unwrap().is_none());
        assert!(crate::eventually(Duration::from_secs(5), || server.in_flight() == 0).await);
    }

    #[tokio::test]
    async fn dropped_calls_count_as_finished() {
        let server = DelayServer::start("d-2").await.unwrap();
        let channel = channel(server.addr()).await;
        let slow = tokio::spawn(call(channel, ECHO, &[(DELAY_HEADER, "60000")]));
        let mut started = server.started_updates();
        started.wait_for(|n| *n == 1).await.unwrap();
        assert_eq!(server.in_flight(), 1);
        slow.abort();
        assert!(
            crate::eventually(Duration::from_secs(5), || server.in_flight() == 0).await,
            "the client's RST_STREAM ends the call on the server"
        );
    }
}
