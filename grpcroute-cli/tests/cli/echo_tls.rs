//! `grpcroute echo --tls-dir`: mutual TLS with an SVID in csi-driver-spiffe's layout. A
//! mesh client in `TlsMode::Mutual` reaches it (and is named in `x-echo-peer`); clients
//! without a certificate, with one from another CA, or in plaintext are refused; rotated
//! files (SVID and CA) are served to new connections without a restart, and a half-written
//! rotation is not; unusable files stop the command at once, naming the file.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use grpcroute_client::{
    Mesh, MeshBuilder, Resources,
    build::{endpoints, service},
    identity::{Credentials, Identity},
    tls::TlsMode,
};
use grpcroute_echo::RawCodec;
use grpcroute_test_identity::{Ca, Issued, Layout, Leaf, Pem, files};
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime},
};
use tokio::io::AsyncReadExt as _;
use tonic::{Code, Request, Response, Status};

use crate::support::{Echo, run};

/// Every network step of these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(10);
const CLIENT_ID: &str = "spiffe://cluster.local/ns/web/sa/frontend";
/// The mesh (namespace `web`) calls `cart.shop`: by default it accepts a server that
/// presents `spiffe://cluster.local/ns/shop/sa/*` (`MeshBuilder::expected_server_identity`).
const SERVER_ID: &str = "spiffe://cluster.local/ns/shop/sa/cart";
const SERVER_ID_V2: &str = "spiffe://cluster.local/ns/shop/sa/cart-v2";
const TARGET: &str = "cart.shop:50051";

/// A CA and the two SVIDs it issued.
struct Pki {
    ca: Ca,
    client: Issued,
    server: Issued,
}

impl Pki {
    fn new(name: &str) -> Self {
        let ca = Ca::new(name).unwrap();
        let client = ca.issue(&Leaf::spiffe(CLIENT_ID)).unwrap();
        let server = ca.issue(&Leaf::spiffe(SERVER_ID)).unwrap();
        Self { ca, client, server }
    }

    /// The server's files: its SVID, and this CA as the bundle.
    fn server_pem(&self, server: &Issued) -> Pem {
        Pem {
            chain: server.cert_pem.clone(),
            key: server.key_pem.clone(),
            bundle: self.ca.cert_pem().to_string(),
        }
    }
}

/// A temporary directory with the server's files written as csi-driver-spiffe (through
/// the kubelet's atomic writer) does.
fn tls_dir(pem: &Pem) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    files::write_atomic(dir.path(), Layout::CsiDriverSpiffe, pem).unwrap();
    dir
}

/// A mesh in namespace `web` whose Service `shop/cart` (port 50051) has `addr` as its one
/// endpoint.
fn mesh(builder: MeshBuilder, addr: SocketAddr) -> Mesh {
    let mesh = builder.namespace("web").build();
    let resources = Resources::new()
        .with(service("shop", "cart").port("grpc", 50051))
        .with(
            endpoints("shop", "cart")
                .name("cart-0")
                .port("grpc", addr.port())
                .ready(addr.ip()),
        );
    let report = mesh.update(&resources);
    assert!(report.rejected.is_empty(), "{report:?}");
    mesh
}

fn mutual_mesh(pki: &Pki, addr: SocketAddr) -> Mesh {
    let credentials = Credentials::from_pem(
        pki.client.cert_pem.as_bytes(),
        pki.client.key_pem.as_bytes(),
        pki.ca.cert_pem().as_bytes(),
    )
    .unwrap();
    mesh(
        Mesh::builder()
            .tls(TlsMode::Mutual)
            .identity(Identity::from_credentials(credentials)),
        addr,
    )
}

/// One call with an empty message, bounded.
async fn call(mesh: &Mesh, step: &str) -> Result<Response<Bytes>, Status> {
    let mut grpc = tonic::client::Grpc::new(mesh.channel(TARGET).unwrap());
    tokio::time::timeout(BOUND, async {
        grpc.ready()
            .await
            .map_err(|e| Status::unknown(e.to_string()))?;
        grpc.unary(
            Request::new(Bytes::new()),
            "/test.Svc/Call".parse().unwrap(),
            RawCodec,
        )
        .await
    })
    .await
    .unwrap_or_else(|_| panic!("{step}: the call did not finish within {BOUND:?}"))
}

/// Checks the server's chain against the roots but not its name: an SVID has no DNS
/// name, and these tests look at the certificate itself.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Connects with rustls (ALPN h2), trusting `roots` and presenting `client` if given, and
/// reads the server's first frame. Ok: the server's leaf certificate (DER), once the server has
/// answered with its SETTINGS; Err: what failed (a refusal shows as the server's alert).
async fn connect(
    addr: SocketAddr,
    roots: &[&Ca],
    client: Option<&Issued>,
) -> Result<Vec<u8>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut store = RootCertStore::empty();
    for ca in roots {
        store
            .add(CertificateDer::from(ca.cert_der().to_vec()))
            .unwrap();
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
        .build()
        .unwrap();
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyName(verifier)));
    let mut config = match client {
        Some(issued) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(issued.cert_der.clone())],
                PrivateKeyDer::try_from(issued.key_der.clone()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    tokio::time::timeout(BOUND, async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from("cart.shop.svc.cluster.local").unwrap();
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN h2");
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        // In TLS 1.3 the server judges the client's certificate after the client's side
        // of the handshake is done: its verdict is the first thing read — an alert, or the
        // HTTP/2 server's SETTINGS, which it sends without waiting for the client.
        let mut frame = [0u8; 9];
        tls.read_exact(&mut frame)
            .await
            .map_err(|e| format!("read: {e}"))?;
        assert_eq!(frame[3], 4, "the server's first frame is SETTINGS");
        Ok(leaf)
    })
    .await
    .expect("the TLS connection is accepted or refused within the bound")
}

#[tokio::test]
async fn a_mutual_tls_mesh_client_reaches_it_and_is_named_in_x_echo_peer() {
    let pki = Pki::new("mesh CA");
    let dir = tls_dir(&pki.server_pem(&pki.server));
    let echo = Echo::start_tls("cart-tls", dir.path());
    let banner: serde_json::Value = serde_json::from_str(&echo.banner).unwrap();
    assert_eq!(banner["tls"]["spiffe_id"], SERVER_ID, "{banner}");
    assert_eq!(banner["tls"]["dir"], dir.path().to_str().unwrap());

    let mesh = mutual_mesh(&pki, echo.addr);
    let response = call(&mesh, "mutual call")
        .await
        .expect("the call is served");
    let metadata = response.metadata();
    assert_eq!(metadata.get("x-echo-backend").unwrap(), "cart-tls");
    assert_eq!(metadata.get("x-echo-peer").unwrap(), CLIENT_ID);
    // The server presented its SVID, as the files say.
    let leaf = connect(echo.addr, &[&pki.ca], Some(&pki.client))
        .await
        .unwrap();
    assert_eq!(leaf, pki.server.cert_der);
}

#[tokio::test]
async fn refuses_clients_without_a_certificate_from_its_ca_and_plaintext_ones() {
    let pki = Pki::new("mesh CA");
    let dir = tls_dir(&pki.server_pem(&pki.server));
    let echo = Echo::start_tls("cart-tls", dir.path());

    let error = connect(echo.addr, &[&pki.ca], None).await.unwrap_err();
    assert!(
        error.contains("CertificateRequired"),
        "no certificate: {error}"
    );

    let other = Ca::new("another CA").unwrap();
    let stranger = other.issue(&Leaf::spiffe(CLIENT_ID)).unwrap();
    let error = connect(echo.addr, &[&pki.ca], Some(&stranger))
        .await
        .unwrap_err();
    assert!(
        error.contains("UnknownCA"),
        "another CA's certificate: {error}"
    );

    let plaintext = mesh(Mesh::builder().tls(TlsMode::Plaintext), echo.addr);
    let status = call(&plaintext, "plaintext call").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "plaintext: {status:?}");

    // None of it stopped the server.
    call(
        &mutual_mesh(&pki, echo.addr),
        "mutual call after the refusals",
    )
    .await
    .expect("a mutual TLS client is still served");
}

#[tokio::test]
async fn new_connections_get_rotated_files_without_a_restart() {
    let pki = Pki::new("mesh CA");
    let dir = tls_dir(&pki.server_pem(&pki.server));
    let echo = Echo::start_tls("cart-tls", dir.path());
    let first = connect(echo.addr, &[&pki.ca], Some(&pki.client))
        .await
        .unwrap();
    assert_eq!(first, pki.server.cert_der);

    // csi-driver-spiffe's renewal: a new SVID from the same CA, swapped in atomically.
    let renewed = pki.ca.issue(&Leaf::spiffe(SERVER_ID_V2)).unwrap();
    files::write_atomic(
        dir.path(),
        Layout::CsiDriverSpiffe,
        &pki.server_pem(&renewed),
    )
    .unwrap();
    let leaf = connect(echo.addr, &[&pki.ca], Some(&pki.client))
        .await
        .unwrap();
    assert_eq!(
        leaf, renewed.cert_der,
        "a new connection gets the renewed SVID"
    );
    let response = call(&mutual_mesh(&pki, echo.addr), "call after the renewal")
        .await
        .expect("the mesh accepts the renewed SVID (ns/shop/sa/*)");
    assert_eq!(response.metadata().get("x-echo-peer").unwrap(), CLIENT_ID);

    // Half a rotation (the key of the next SVID written before its certificate) is not
    // taken: the renewed SVID is still served; the completed one is.
    let next_svid = pki.ca.issue(&Leaf::spiffe(SERVER_ID)).unwrap();
    std::fs::write(dir.path().join("..data/tls.key"), &next_svid.key_pem).unwrap();
    let leaf = connect(echo.addr, &[&pki.ca], Some(&pki.client))
        .await
        .unwrap();
    assert_eq!(
        leaf, renewed.cert_der,
        "a key without its certificate is not taken"
    );
    std::fs::write(dir.path().join("..data/tls.crt"), &next_svid.cert_pem).unwrap();
    let leaf = connect(echo.addr, &[&pki.ca], Some(&pki.client))
        .await
        .unwrap();
    assert_eq!(leaf, next_svid.cert_der, "the completed rotation is taken");

    // A CA rotation: the new bundle is the only one client certificates may chain to.
    let next = Pki::new("next mesh CA");
    files::write_atomic(
        dir.path(),
        Layout::CsiDriverSpiffe,
        &next.server_pem(&next.server),
    )
    .unwrap();
    let error = connect(echo.addr, &[&pki.ca, &next.ca], Some(&pki.client))
        .await
        .unwrap_err();
    assert!(error.contains("UnknownCA"), "the old CA's client: {error}");
    let leaf = connect(echo.addr, &[&next.ca], Some(&next.client))
        .await
        .unwrap();
    assert_eq!(leaf, next.server.cert_der);

    // File by file (each renamed into place), as other tools write.
    let again = next.ca.issue(&Leaf::spiffe(SERVER_ID_V2)).unwrap();
    let plain = tempfile::tempdir().unwrap();
    files::write_each(
        plain.path(),
        Layout::CsiDriverSpiffe,
        &next.server_pem(&next.server),
    )
    .unwrap();
    let echo = Echo::start_tls("cart-tls-2", plain.path());
    let leaf = connect(echo.addr, &[&next.ca], Some(&next.client))
        .await
        .unwrap();
    assert_eq!(leaf, next.server.cert_der);
    files::write_each(
        plain.path(),
        Layout::CsiDriverSpiffe,
        &next.server_pem(&again),
    )
    .unwrap();
    let leaf = connect(echo.addr, &[&next.ca], Some(&next.client))
        .await
        .unwrap();
    assert_eq!(leaf, again.cert_der);
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

#[test]
fn unusable_files_stop_it_at_start_naming_the_file() {
    let pki = Pki::new("mesh CA");
    let echo_tls = |dir: &Path| {
        run(&[
            "echo",
            "--listen",
            "127.0.0.1:0",
            "--tls-dir",
            path_str(dir),
        ])
    };

    let empty = tempfile::tempdir().unwrap();
    let crt = empty.path().join("tls.crt");
    echo_tls(empty.path()).input_error(&["--tls-dir: cannot read", path_str(&crt)]);

    let dir = tempfile::tempdir().unwrap();
    files::write_each(
        dir.path(),
        Layout::CsiDriverSpiffe,
        &pki.server_pem(&pki.server),
    )
    .unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::remove_file(&ca).unwrap();
    echo_tls(dir.path()).input_error(&["cannot read", path_str(&ca)]);

    files::write_each(
        dir.path(),
        Layout::CsiDriverSpiffe,
        &pki.server_pem(&pki.server),
    )
    .unwrap();
    let key = dir.path().join("tls.key");
    std::fs::write(&key, &pki.client.key_pem).unwrap();
    echo_tls(dir.path()).input_error(&[
        "the private key in",
        path_str(&key),
        "does not match the certificate in",
        path_str(&dir.path().join("tls.crt")),
    ]);

    std::fs::write(&key, "not a key\n").unwrap();
    echo_tls(dir.path()).input_error(&[path_str(&key), "has no PEM private key"]);
}

/// Every document of a shipped manifest file under `examples/kubernetes/`.
fn shipped(file: &str) -> Vec<serde_json::Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/kubernetes")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    text.split("\n---\n")
        .map(|doc| serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("{file}: {e}")))
        .filter(|doc: &serde_json::Value| !doc.is_null())
        .collect()
}

/// The mTLS example's backends are the plaintext ones (same Deployments, labels, ports)
/// with `--tls-dir` on the csi-driver-spiffe volume, no gRPC probe (it cannot present a
/// certificate), and a ServiceAccount the driver may create CertificateRequests for.
#[test]
fn the_mtls_example_backends_are_the_plaintext_ones_with_tls_dir() {
    let plain = shipped("backends.yaml");
    let mtls = shipped("mtls/backends.yaml");
    assert_eq!(plain.len(), mtls.len());
    let rbac = shipped("mtls/rbac.yaml");
    let bound: Vec<&serde_json::Value> = rbac
        .iter()
        .filter(|d| d["kind"] == "RoleBinding")
        .flat_map(|d| d["subjects"].as_array().unwrap())
        .map(|s| &s["name"])
        .collect();
    for (p, m) in plain.iter().zip(&mtls) {
        let name = &m["metadata"]["name"];
        assert_eq!(p["metadata"], m["metadata"]);
        assert_eq!(p["spec"]["selector"], m["spec"]["selector"], "{name}");
        assert_eq!(
            p["spec"]["template"]["metadata"],
            m["spec"]["template"]["metadata"]
        );
        let (pc, mc) = (
            &p["spec"]["template"]["spec"]["containers"][0],
            &m["spec"]["template"]["spec"]["containers"][0],
        );
        assert_eq!(pc["ports"], mc["ports"], "{name}");
        let args: Vec<&str> = mc["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let plain_args: Vec<&str> = pc["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args[..plain_args.len()], plain_args[..], "{name}");
        let ["--tls-dir", dir] = args[plain_args.len()..] else {
            panic!("{name}: {args:?}");
        };
        let mount = mc["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["mountPath"] == dir)
            .unwrap_or_else(|| panic!("{name}: nothing mounted at {dir}"));
        let volume = m["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        assert_eq!(
            volume["csi"]["driver"], "spiffe.csi.cert-manager.io",
            "{name}"
        );
        for probe in ["readinessProbe", "livenessProbe"] {
            assert!(
                mc[probe]["grpc"].is_null() && !mc[probe]["tcpSocket"].is_null(),
                "{name} {probe}"
            );
        }
        let account = &m["spec"]["template"]["spec"]["serviceAccountName"];
        assert!(
            bound.contains(&account),
            "{name}: {account} may not create CertificateRequests"
        );
    }
    assert!(
        bound.iter().any(|s| *s == "mesh-client"),
        "the client's ServiceAccount is bound"
    );
}
