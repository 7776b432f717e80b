//! `grpcroute echo --tls-dir DIR`: mutual TLS with an X.509 SVID from files in cert-manager
//! csi-driver-spiffe's layout — `tls.crt` (certificate chain, leaf first), `tls.key` (its
//! private key), `ca.crt` (the CAs client certificates must chain to) — the names
//! `CredentialFiles::csi_driver_spiffe` reads on the client's side.
//!
//! Rotation: each generation of the three files becomes one whole rustls `ServerConfig`
//! (the key pair, a `WebPkiClientVerifier` over `ca.crt` that requires a client certificate,
//! ALPN `h2`). Before each handshake the files' metadata (device, inode, size, mtime; symlinks
//! followed, so Kubernetes' atomic `..data` swap counts) is compared with what was last
//! seen; when it differs they are read again. A new generation is taken only when it is
//! whole and consistent (the key matches the certificate, the bundle has a usable CA);
//! otherwise the previous one keeps serving, the error is logged, and the files are read
//! again at their next change (a rotation caught between two writes completes then).
//!
//! Why a config per generation rather than a reloading `ResolvesServerCert` beside a
//! verifier of its own: a CA rotation re-issues the SVID too, and swapping the whole config
//! changes key pair and bundle at the same instant, with no custom rustls traits; and why
//! a check per connection rather than a file watch or a timer: it costs three `stat` calls
//! per connection (gRPC connections are long-lived), and a new connection never sees files
//! older than the ones on disk. Connections already open keep the generation they started
//! with, as TLS does.

use std::{
    convert::Infallible,
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex, OnceLock},
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use futures_util::Stream;
use grpcroute_client::identity::SpiffeId;
use grpcroute_echo::PeerIdentity;
use rustls::{
    RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::WebPkiClientVerifier,
    sign::{CertifiedKey, SingleCertAndKey},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tonic::transport::server::Connected;

/// The certificate chain's file name.
pub(crate) const CERT_FILE: &str = "tls.crt";
/// The private key's file name.
pub(crate) const KEY_FILE: &str = "tls.key";
/// The trust bundle's file name.
pub(crate) const CA_FILE: &str = "ca.crt";

/// A client that connects and then sends nothing holds a task and a socket until this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The ring provider, as the library uses (rustls' process default is left alone).
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Why the files cannot be served: each names the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsDirError {
    #[error("--tls-dir: cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("--tls-dir: {} is not valid PEM: {message}", path.display())]
    Pem { path: PathBuf, message: String },
    #[error("--tls-dir: {} has no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("--tls-dir: {} has no PEM private key (PKCS#8, PKCS#1 or SEC1)", path.display())]
    NoKey { path: PathBuf },
    #[error("--tls-dir: cannot use the private key in {}: {message}", path.display())]
    Key { path: PathBuf, message: String },
    #[error(
        "--tls-dir: the private key in {} does not match the certificate in {}",
        key.display(),
        cert.display()
    )]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("--tls-dir: {} has no usable CA certificate: {message}", path.display())]
    Bundle { path: PathBuf, message: String },
    #[error("--tls-dir: cannot build the TLS configuration: {0}")]
    Config(String),
}

/// What identifies one version of a file without reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

/// The three files' stamps (`None`: could not be stat'ed).
type Fingerprint = [Option<Stamp>; 3];

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    // `metadata` follows symlinks: an atomic `..data` swap changes the inode.
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

/// One generation of the files, ready to serve.
#[derive(Debug)]
pub(crate) struct Generation {
    pub(crate) config: Arc<ServerConfig>,
    /// The server certificate's SPIFFE ID, if it is an X.509 SVID.
    pub(crate) spiffe_id: Option<String>,
}

#[derive(Debug)]
struct State {
    current: Arc<Generation>,
    /// The fingerprint last read, whether or not it made a generation: a broken set of
    /// files is read again only once it changes.
    seen: Fingerprint,
}

/// The credentials directory, and the generation its files currently make.
#[derive(Debug)]
pub(crate) struct TlsDir {
    dir: PathBuf,
    paths: [PathBuf; 3],
    state: Mutex<State>,
}

impl TlsDir {
    /// Reads the files once: an error here stops the command.
    pub(crate) fn load(dir: &Path) -> Result<Self, TlsDirError> {
        let paths = [CERT_FILE, KEY_FILE, CA_FILE].map(|name| dir.join(name));
        let seen = paths.each_ref().map(|p| stamp(p));
        let current = Arc::new(build(&paths)?);
        Ok(Self {
            dir: dir.to_path_buf(),
            paths,
            state: Mutex::new(State { current, seen }),
        })
    }

    /// The generation for the next handshake: the files are read again if they changed
    /// since they were last read. Blocking (file I/O).
    pub(crate) fn current(&self) -> Arc<Generation> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Stamps before reading: a write during the read shows at the next check.
        let now = self.paths.each_ref().map(|p| stamp(p));
        if now != state.seen {
            state.seen = now;
            match build(&self.paths) {
                Ok(generation) => {
                    tracing::info!(
                        spiffe_id = generation.spiffe_id.as_deref().unwrap_or("none"),
                        dir = %self.dir.display(),
                        "TLS credentials reloaded"
                    );
                    state.current = Arc::new(generation);
                }
                Err(error) => tracing::warn!(
                    dir = %self.dir.display(),
                    %error,
                    "TLS credentials not reloaded; serving the previous ones"
                ),
            }
        }
        state.current.clone()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsDirError> {
    std::fs::read(path).map_err(|source| TlsDirError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn certificates(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsDirError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsDirError::Pem {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsDirError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Reads and checks the three files and makes them one server configuration.
fn build([cert, key, ca]: &[PathBuf; 3]) -> Result<Generation, TlsDirError> {
    let (cert_pem, key_pem, ca_pem) = (read(cert)?, read(key)?, read(ca)?);
    let chain = certificates(&cert_pem, cert)?;
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsDirError::NoKey { path: key.clone() },
        other => TlsDirError::Pem {
            path: key.clone(),
            message: other.to_string(),
        },
    })?;
    let provider = provider();
    let signing_key = provider
        .key_provider
        .load_private_key(private_key)
        .map_err(|e| TlsDirError::Key {
            path: key.clone(),
            message: e.to_string(),
        })?;
    let spiffe_id = chain
        .first()
        .and_then(|leaf| SpiffeId::from_certificate(leaf).ok())
        .map(|id| id.as_str().to_owned());
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // As rustls' own `with_single_cert`: a key whose public half cannot be derived is
        // not a mismatch.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsDirError::KeyMismatch {
                key: key.clone(),
                cert: cert.clone(),
            });
        }
        Err(e) => {
            return Err(TlsDirError::Pem {
                path: cert.clone(),
                message: e.to_string(),
            });
        }
    }

    let mut roots = RootCertStore::empty();
    let (_, rejected) = roots.add_parsable_certificates(certificates(&ca_pem, ca)?);
    let bundle_error = |message: String| TlsDirError::Bundle {
        path: ca.clone(),
        message,
    };
    if roots.is_empty() {
        return Err(bundle_error(format!("{rejected} certificate(s) rejected")));
    }
    // Client certificates are required (no `allow_unauthenticated`).
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| bundle_error(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsDirError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Generation {
        config: Arc::new(config),
        spiffe_id,
    })
}

/// One accepted, authenticated TLS connection.
pub(crate) struct TlsConnection {
    stream: TlsStream<TcpStream>,
    peer: PeerIdentity,
}

impl std::fmt::Debug for TlsConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnection")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = PeerIdentity;

    fn connect_info(&self) -> PeerIdentity {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The connections `listener` accepts, each after a completed handshake with the then
/// current generation of `dir`. Handshakes run concurrently (a slow client delays no
/// other); failed ones are logged at debug level and dropped. Accepting stops when the
/// stream is dropped.
pub(crate) fn incoming(
    listener: TcpListener,
    dir: Arc<TlsDir>,
) -> impl Stream<Item = Result<TlsConnection, Infallible>> + Send + 'static {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept(listener, dir, tx));
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|connection| (Ok(connection), rx))
    })
}

async fn accept(listener: TcpListener, dir: Arc<TlsDir>, tx: mpsc::Sender<TlsConnection>) {
    loop {
        let (tcp, remote) = tokio::select! {
            () = tx.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // E.g. out of file descriptors: do not spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // As the plaintext path: without it, Nagle plus delayed ACKs adds ~40 ms to small
        // responses.
        let _ = tcp.set_nodelay(true);
        tokio::spawn(handshake(tcp, remote, dir.clone(), tx.clone()));
    }
}

async fn handshake(
    tcp: TcpStream,
    remote: SocketAddr,
    dir: Arc<TlsDir>,
    tx: mpsc::Sender<TlsConnection>,
) {
    let Ok(generation) = tokio::task::spawn_blocking(move || dir.current()).await else {
        return;
    };
    let acceptor = TlsAcceptor::from(generation.config.clone());
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(%remote, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "TLS handshake timed out");
            return;
        }
    };
    let spiffe_id = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|leaf| SpiffeId::from_certificate(leaf).ok())
        .map(|id| id.as_str().to_owned());
    let _ = tx
        .send(TlsConnection {
            stream,
            peer: PeerIdentity { spiffe_id },
        })
        .await;
}
