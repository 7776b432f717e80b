//! Establishing the HTTP/2 (prior knowledge, cleartext) connection to an endpoint.

use std::{io, net::SocketAddr};

use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tonic::body::Body;

use super::TransportConfig;

/// Why no connection could be had. None of these means a call reached the endpoint.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// TCP connect failed (refused, unreachable, ...).
    #[error("connect failed: {0}")]
    Connect(#[source] io::Error),
    /// TCP connect took longer than the connect timeout.
    #[error("connect timed out")]
    Timeout,
    /// TCP connected but the HTTP/2 handshake failed.
    #[error("HTTP/2 handshake failed: {0}")]
    Handshake(#[source] hyper::Error),
    /// A recent attempt failed; the endpoint is avoided until its backoff ends.
    #[error("endpoint is backing off after a failed connect")]
    BackingOff,
    /// The endpoint was removed from the configuration.
    #[error("endpoint was removed from the configuration")]
    Retired,
}

impl ConnectError {
    /// Whether the endpoint failed (rather than being skipped: backing off, removed).
    pub(crate) fn is_failure(&self) -> bool {
        matches!(self, Self::Connect(_) | Self::Timeout | Self::Handshake(_))
    }
}

/// One HTTP/2 connection. Clones of the sender share it; it closes when every sender is
/// gone and the last stream on it has finished.
#[derive(Debug)]
pub(crate) struct Connection {
    send: SendRequest<Body>,
}

impl Connection {
    pub(crate) async fn connect(
        addr: SocketAddr,
        config: &TransportConfig,
    ) -> Result<Self, ConnectError> {
        let tcp = match tokio::time::timeout(
            config.connect_timeout,
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Err(_) => return Err(ConnectError::Timeout),
            Ok(Err(e)) => return Err(ConnectError::Connect(e)),
            Ok(Ok(tcp)) => tcp,
        };
        // Nagle's algorithm plus delayed ACKs adds ~40 ms to small gRPC messages.
        tcp.set_nodelay(true).map_err(ConnectError::Connect)?;
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(config.keepalive_interval)
            .keep_alive_timeout(config.keepalive_timeout)
            .keep_alive_while_idle(false)
            .adaptive_window(true);
        let (send, conn) =
            tokio::time::timeout(config.connect_timeout, builder.handshake(TokioIo::new(tcp)))
                .await
                .map_err(|_| ConnectError::Timeout)?
                .map_err(ConnectError::Handshake)?;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%addr, %error, "connection closed with an error");
            } else {
                tracing::trace!(%addr, "connection closed");
            }
        });
        tracing::debug!(%addr, "connected");
        Ok(Self { send })
    }

    pub(crate) fn is_usable(&self) -> bool {
        !self.send.is_closed()
    }

    /// A sender for one call; dropping it does not affect the connection.
    pub(crate) fn sender(&self) -> SendRequest<Body> {
        self.send.clone()
    }
}
