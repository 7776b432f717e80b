//! `raw-h2`: the floor of the loopback harness. A gRPC unary call made by hand on bare
//! hyper HTTP/2 connections: no tower stack, no buffer task, no routing, no load-aware
//! pick; the calls go round the connections in turn (one connection per server, so the
//! servers do the same work as for the balanced variants).
//!
//! [`H2Settings::Mesh`] builds the connections exactly as the mesh does
//! (`grpcroute-client/src/transport/connect.rs`: TCP_NODELAY, keep-alive pings every 30 s
//! with a 10 s timeout, not while idle, adaptive flow-control window, tokio timer);
//! [`H2Settings::Tonic`] as a default tonic `Endpoint` does (TCP_NODELAY as the harness sets
//! it, no keep-alive, fixed window). The difference between the two is what the mesh's
//! HTTP/2 settings cost per call.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Uri, uri::PathAndQuery};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

/// How the connections are built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum H2Settings {
    /// As the mesh builds its endpoint connections.
    Mesh,
    /// As a default tonic `Endpoint` builds its connection.
    Tonic,
}

/// A round-robin client over one bare HTTP/2 connection per server.
#[derive(Clone, Debug)]
pub struct RawH2 {
    senders: Arc<[SendRequest<Full<Bytes>>]>,
    next: Arc<AtomicUsize>,
    authority: http::uri::Authority,
}

impl RawH2 {
    /// Connects to every server.
    ///
    /// # Errors
    ///
    /// When a connection cannot be made.
    pub async fn connect(
        servers: &[SocketAddr],
        settings: H2Settings,
        authority: &str,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let mut senders = Vec::with_capacity(servers.len());
        for addr in servers {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let mut builder = http2::Builder::new(TokioExecutor::new());
            builder.timer(TokioTimer::new());
            if settings == H2Settings::Mesh {
                builder
                    .keep_alive_interval(Some(Duration::from_secs(30)))
                    .keep_alive_timeout(Duration::from_secs(10))
                    .keep_alive_while_idle(false)
                    .adaptive_window(true);
            }
            let (send, conn) = builder.handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            senders.push(send);
        }
        Ok(Self {
            senders: senders.into(),
            next: Arc::new(AtomicUsize::new(0)),
            authority: authority.parse()?,
        })
    }

    /// One unary call: `message` (an encoded protobuf message) in a gRPC frame, with the
    /// metadata a tonic client sends plus `extra`; the response read to its end, its
    /// status checked and its message returned.
    ///
    /// # Errors
    ///
    /// A transport failure or a non-OK status, as text.
    pub async fn unary(
        &self,
        path: &PathAndQuery,
        message: &[u8],
        extra: &[(&'static str, &'static str)],
    ) -> Result<Bytes, String> {
        let mut frame = BytesMut::with_capacity(5 + message.len());
        frame.put_u8(0);
        frame.put_u32(u32::try_from(message.len()).map_err(|_| "message too large")?);
        frame.put_slice(message);
        let uri = Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(path.clone())
            .build()
            .map_err(|e| e.to_string())?;
        let mut req = Request::new(Full::new(frame.freeze()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri;
        let h = req.headers_mut();
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("content-type", HeaderValue::from_static("application/grpc"));
        h.insert("user-agent", HeaderValue::from_static("raw-h2"));
        for (k, v) in extra {
            h.insert(*k, HeaderValue::from_static(v));
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.senders.len();
        let mut sender = self.senders[i].clone();
        let response = sender
            .send_request(req)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let (parts, body) = response.into_parts();
        let collected = body
            .collect()
            .await
            .map_err(|e| format!("response body: {e}"))?;
        let trailers = collected.trailers().cloned();
        let status = parts
            .headers
            .get("grpc-status")
            .or_else(|| trailers.as_ref().and_then(|t| t.get("grpc-status")))
            .map(HeaderValue::as_bytes);
        if status != Some(b"0") {
            return Err(format!(
                "HTTP {}, grpc-status {:?}",
                parts.status,
                status.map(String::from_utf8_lossy)
            ));
        }
        let data = collected.to_bytes();
        if data.len() < 5 {
            return Ok(Bytes::new());
        }
        Ok(data.slice(5..))
    }
}
