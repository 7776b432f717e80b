//! Serving HTTP/2 (gRPC) on a loopback listener in a way a test can kill: every
//! connection is a task of one `JoinSet` owned by the accept task, so aborting that task
//! closes the listening socket and drops every connection at once (what a crashed process
//! looks like to its clients).

use std::{convert::Infallible, future::Future, net::SocketAddr, time::Duration};

use http::{Request, Response};
use hyper::{body::Incoming, server::conn::http2, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{net::TcpListener, task::JoinSet};

/// A running server; stopped (abruptly) when dropped.
#[derive(Debug)]
pub(crate) struct H2Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl H2Server {
    /// Serves `handler` on `listener`. TCP_NODELAY is set on every accepted socket: without
    /// it Nagle plus delayed ACKs adds ~40 ms to small responses.
    pub(crate) fn spawn<F, Fut, B>(listener: TcpListener, handler: F) -> std::io::Result<Self>
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let handler = handler.clone();
                            connections.spawn(async move {
                                let service = service_fn(handler);
                                let _ = http2::Builder::new(TokioExecutor::new())
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            });
                        }
                        // E.g. out of file descriptors: back off instead of spinning.
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok(Self { addr, task })
    }

    /// Where it listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for H2Server {
    fn drop(&mut self) {
        // Dropping the accept task drops the listener and the JoinSet, which aborts every
        // connection task.
        self.task.abort();
    }
}

/// Binds `addr` (on Unix tokio sets SO_REUSEADDR, so a restarted server can take the same
/// port back while old connections linger in TIME_WAIT).
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
