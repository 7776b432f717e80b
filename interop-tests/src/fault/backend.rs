//! A gRPC backend for fault tests: every method answers OK with an empty message after the
//! delay the caller asks for in `x-delay-ms` (none by default), naming itself in
//! `x-echo-backend` like the echo servers. Calls can so be kept in flight for as long as a
//! test needs them to be when it injects a fault.
//!
//! Plain HTTP/2 on hyper (no tonic server): the tests need control over connections —
//! graceful shutdown sends GOAWAY on every connection, lets the calls in flight finish and
//! closes the port; dropping the server aborts everything at once.

use std::{
    convert::Infallible,
    io,
    net::SocketAddr,
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt as _, Full, combinators::UnsyncBoxBody};
use hyper::{body::Incoming, server::conn::http2, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::{JoinHandle, JoinSet},
};

use crate::cluster::LOOPBACK;

/// Request metadata: how long the server waits before answering, in milliseconds.
pub const DELAY_HEADER: &str = "x-delay-ms";

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

type AnswerBody = UnsyncBoxBody<Bytes, Infallible>;

async fn answer(
    request: Request<Incoming>,
    backend: HeaderValue,
    counts: Arc<Counts>,
) -> Result<Response<AnswerBody>, Infallible> {
    let delay = request
        .headers()
        .get(DELAY_HEADER)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .map(Duration::from_millis);
    // Read the request to its end before answering, as a real handler does.
    let _ = request.into_body().collect().await;
    counts.started.send_modify(|n| *n += 1);
    let _finished = Finished(counts);
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    // One message: not compressed, length 0.
    let body = Full::new(Bytes::from_static(&[0, 0, 0, 0, 0]))
        .with_trailers(async move { Some(Ok(trailers)) })
        .boxed_unsync();
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    headers.insert(grpcroute_echo::BACKEND_HEADER, backend);
    Ok(response)
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
}
