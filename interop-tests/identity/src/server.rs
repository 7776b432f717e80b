//! [`TlsServer`]: a gRPC server over TLS on 127.0.0.1 (rustls, TCP_NODELAY) that answers
//! every method with OK and an empty message, and records what each connection presented:
//! the client's leaf certificate and SPIFFE ID, or the handshake error.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::StreamBody;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::WebPkiClientVerifier,
};
use tokio::{net::TcpListener, task::JoinSet};

use crate::pki::spiffe_id_of;

/// Response metadata naming the server.
pub const SERVER_HEADER: &str = "x-server";
/// Response metadata with the caller's SPIFFE ID (`none` without a client certificate).
pub const CALLER_HEADER: &str = "x-caller";

/// How a [`TlsServer`] is set up.
#[derive(Clone, Debug)]
pub struct TlsServerOptions {
    /// Its name, in [`SERVER_HEADER`].
    pub name: String,
    /// Its certificate chain (PEM).
    pub chain_pem: String,
    /// Its private key (PEM).
    pub key_pem: String,
    /// When set, client certificates are required and must chain to these CAs (PEM).
    pub client_ca_pem: Option<String>,
    /// Whether it offers ALPN `h2` (a gRPC server must).
    pub alpn_h2: bool,
}

impl TlsServerOptions {
    /// A server requiring client certificates from `client_ca_pem`, with ALPN `h2`.
    pub fn mutual(name: &str, chain_pem: &str, key_pem: &str, client_ca_pem: &str) -> Self {
        Self {
            name: name.into(),
            chain_pem: chain_pem.into(),
            key_pem: key_pem.into(),
            client_ca_pem: Some(client_ca_pem.into()),
            alpn_h2: true,
        }
    }
}

/// What one connection presented.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Presented {
    /// The handshake completed; the client's leaf certificate (DER), if it sent one.
    Certificate(Option<Vec<u8>>),
    /// The handshake failed.
    HandshakeFailed(String),
}

/// A running server; stops (dropping its connections) when dropped.
#[derive(Debug)]
pub struct TlsServer {
    addr: SocketAddr,
    presented: Arc<Mutex<Vec<Presented>>>,
    calls: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn server_config(options: &TlsServerOptions) -> anyhow::Result<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_slice_iter(options.chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("server chain")?;
    let key = PrivateKeyDer::from_pem_slice(options.key_pem.as_bytes()).context("server key")?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &options.client_ca_pem {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(cert.context("client CA")?)?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key)?;
    if options.alpn_h2 {
        config.alpn_protocols = vec![b"h2".to_vec()];
    }
    Ok(config)
}

impl TlsServer {
    /// Binds 127.0.0.1 on a free port and serves.
    ///
    /// # Errors
    ///
    /// Bad PEM, or the port cannot be bound.
    pub async fn start(options: TlsServerOptions) -> anyhow::Result<Self> {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(&options)?));
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let presented = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicU64::new(0));
        let name: Arc<str> = options.name.into();
        let (p, c) = (presented.clone(), calls.clone());
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let (acceptor, p, c, name) = (acceptor.clone(), p.clone(), c.clone(), name.clone());
                connections.spawn(async move {
                    let tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(e) => {
                            p.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(Presented::HandshakeFailed(e.to_string()));
                            return;
                        }
                    };
                    let leaf = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .map(|c| c.to_vec());
                    let caller = leaf
                        .as_deref()
                        .and_then(spiffe_id_of)
                        .unwrap_or_else(|| "none".into());
                    p.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Presented::Certificate(leaf));
                    let service = hyper::service::service_fn(move |_req: Request<_>| {
                        c.fetch_add(1, Ordering::Relaxed);
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        // An empty message, then the status in trailers.
                        let frames = futures_util::stream::iter([
                            Ok::<_, Infallible>(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
                            Ok(Frame::trailers(trailers)),
                        ]);
                        let mut response = Response::new(StreamBody::new(frames));
                        let headers = response.headers_mut();
                        headers.insert(
                            "content-type",
                            http::HeaderValue::from_static("application/grpc"),
                        );
                        if let Ok(v) = http::HeaderValue::from_str(&name) {
                            headers.insert(SERVER_HEADER, v);
                        }
                        if let Ok(v) = http::HeaderValue::from_str(&caller) {
                            headers.insert(CALLER_HEADER, v);
                        }
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
                // Reap finished connections so the set does not grow without bound.
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Self {
            addr,
            presented,
            calls,
            task,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What each connection presented, in the order they were accepted.
    pub fn presented(&self) -> Vec<Presented> {
        self.presented
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many calls it answered.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}
