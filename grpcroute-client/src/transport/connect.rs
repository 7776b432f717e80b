//! Establishing the HTTP/2 connection to an endpoint: cleartext with prior knowledge (h2c),
//! or over TLS with ALPN `h2`, as the endpoint's [`Security`] says.

use std::{io, net::SocketAddr};

use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::body::Body;

use super::{Security, TransportConfig};

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
    /// The TLS handshake failed, or the server refused the client's certificate.
    #[cfg(feature = "tls")]
    #[error("TLS: {0}")]
    Tls(#[source] super::tls::TlsFailure),
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
        security: &Security,
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
        match security {
            Security::Plaintext => Self::handshake(addr, config, tcp).await,
            #[cfg(feature = "tls")]
            Security::Tls(tls) => {
                let stream = tls
                    .handshake(tcp, config.connect_timeout)
                    .await
                    .map_err(ConnectError::Tls)?;
                let (stream, verdict) =
                    super::tls::FirstRead::new(stream, tls.presents_certificate());
                let connection = Self::handshake(addr, config, stream).await?;
                // The server's first frame, or its alert refusing our certificate.
                match tokio::time::timeout(config.connect_timeout, verdict).await {
                    Ok(Ok(Ok(()))) => Ok(connection),
                    Ok(Ok(Err(failure))) => Err(ConnectError::Tls(failure)),
                    // The connection task ended without reading: it failed writing.
                    Ok(Err(_)) => Err(ConnectError::Tls(super::tls::TlsFailure::Handshake(
                        "the connection closed before the server's first frame".into(),
                    ))),
                    Err(_) => Err(ConnectError::Tls(super::tls::TlsFailure::Handshake(
                        "no HTTP/2 frame from the server within the connect timeout".into(),
                    ))),
                }
            }
        }
    }

    async fn handshake<T>(
        addr: SocketAddr,
        config: &TransportConfig,
        io: T,
    ) -> Result<Self, ConnectError>
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(config.keepalive_interval)
            .keep_alive_timeout(config.keepalive_timeout)
            .keep_alive_while_idle(false)
            .adaptive_window(true);
        let (send, conn) =
            tokio::time::timeout(config.connect_timeout, builder.handshake(TokioIo::new(io)))
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
