//! Mutual TLS end to end on 127.0.0.1: the mesh presents its SPIFFE identity to servers
//! that require client certificates and authorize callers by SPIFFE ID, verifies each
//! server's identity, reads its identity from files in each supported layout, and uses TLS
//! only where a policy says in `TlsMode::Policy`.

mod tls_support;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use grpcroute_client::{
    Mesh,
    identity::{CredentialFiles, Identity, SpiffeId},
    tls::{BackendTls, ServerIdentity, TlsMode, TrustRoots},
};
use grpcroute_echo::{EchoConfig, EchoServer};
use grpcroute_test_identity::{
    CALLER_HEADER, Layout, Leaf, Pem, Presented, SERVER_HEADER, TlsServer, TlsServerOptions, files,
};
use tls_support::{BACKEND, BOUND, CLIENT_ID, Pki, SERVER_ID, call, mesh};
use tonic::{
    Code, Request, Status,
    transport::{Certificate, Identity as TonicIdentity, Server, ServerTlsConfig},
};

/// The README's example: a tonic server that requires client certificates and lets only
/// the callers it names in, by the SPIFFE ID of the certificate they presented.
fn authorize(
    allowed: &'static str,
    seen: Arc<Mutex<Vec<String>>>,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request: Request<()>| {
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let caller =
            SpiffeId::from_certificate(leaf).map_err(|e| Status::unauthenticated(e.to_string()))?;
        seen.lock().unwrap().push(caller.to_string());
        if caller.as_str() != allowed {
            return Err(Status::permission_denied(format!("{caller} may not call")));
        }
        Ok(request)
    }
}

/// A tonic server with TLS (client certificates required from `pki.ca`) serving the gRPC
/// health service behind `authorize`.
async fn tonic_server(pki: &Pki, allowed: &'static str) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = ServerTlsConfig::new()
        .identity(TonicIdentity::from_pem(
            &pki.server.cert_pem,
            &pki.server.key_pem,
        ))
        .client_ca_root(Certificate::from_pem(pki.ca.cert_pem()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (_, health) = tonic_health::server::health_reporter();
    let router = Server::builder()
        .tls_config(tls)
        .unwrap()
        .layer(tonic::service::InterceptorLayer::new(authorize(
            allowed,
            seen.clone(),
        )))
        .add_service(health);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(router.serve_with_incoming(incoming));
    (addr, seen)
}

async fn health_check(mesh: &Mesh) -> Result<tonic_health::pb::HealthCheckResponse, Status> {
    let channel = mesh.channel(tls_support::TARGET).unwrap();
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    tokio::time::timeout(
        BOUND,
        client.check(tonic_health::pb::HealthCheckRequest::default()),
    )
    .await
    .expect("the health check finishes within the bound")
    .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn tonic_server_authorizes_the_mesh_client_by_its_spiffe_id() {
    let pki = Pki::new();
    let (addr, seen) = tonic_server(&pki, CLIENT_ID).await;
    let identity = Identity::from_credentials(pki.client_credentials());
    let mesh = mesh(
        Mesh::builder().tls(TlsMode::Mutual).identity(identity),
        &[addr],
    );
    let response = health_check(&mesh)
        .await
        .expect("an authorized caller is served");
    assert_eq!(response.status, 1, "SERVING");
    assert_eq!(*seen.lock().unwrap(), [CLIENT_ID]);

    // Another identity from the same CA: the server's interceptor refuses it by name.
    let intruder = pki
        .ca
        .issue(&Leaf::spiffe("spiffe://cluster.local/ns/web/sa/intruder"))
        .unwrap();
    let credentials = grpcroute_client::identity::Credentials::from_pem(
        intruder.cert_pem.as_bytes(),
        intruder.key_pem.as_bytes(),
        pki.ca.cert_pem().as_bytes(),
    )
    .unwrap();
    let mesh = tls_support::mesh(
        Mesh::builder()
            .tls(TlsMode::Mutual)
            .identity(Identity::from_credentials(credentials)),
        &[addr],
    );
    let status = health_check(&mesh).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        "spiffe://cluster.local/ns/web/sa/intruder may not call"
    );
}

#[tokio::test]
async fn reads_its_identity_from_each_file_layout() {
    let pki = Pki::new();
    let server = TlsServer::start(TlsServerOptions::mutual(
        "cart",
        &pki.server.cert_pem,
        &pki.server.key_pem,
        pki.ca.cert_pem(),
    ))
    .await
    .unwrap();
    let pem = Pem {
        chain: pki.client.cert_pem.clone(),
        key: pki.client.key_pem.clone(),
        bundle: pki.ca.cert_pem().to_string(),
    };
    let custom = Layout::Custom {
        cert: "svid.pem",
        key: "svid.key",
        ca: "bundle.pem",
    };
    for (layout, atomic) in [
        (Layout::CsiDriverSpiffe, true),
        (Layout::Istio, false),
        (custom, false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        if atomic {
            files::write_atomic(dir.path(), layout, &pem).unwrap();
        } else {
            files::write_each(dir.path(), layout, &pem).unwrap();
        }
        let files = match layout {
            Layout::CsiDriverSpiffe => CredentialFiles::csi_driver_spiffe(dir.path()),
            Layout::Istio => CredentialFiles::istio(dir.path()),
            Layout::Custom { cert, key, ca } => CredentialFiles::new(
                dir.path().join(cert),
                dir.path().join(key),
                dir.path().join(ca),
            ),
        };
        let identity = Identity::from_files(files).unwrap();
        tokio::time::timeout(BOUND, identity.ready())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{layout:?}: no identity within {BOUND:?}: {:?}",
                    identity.last_error()
                )
            });
        assert_eq!(
            identity.spiffe_id().unwrap().as_str(),
            CLIENT_ID,
            "{layout:?}"
        );
        let mesh = mesh(
            Mesh::builder().tls(TlsMode::Mutual).identity(identity),
            &[server.addr()],
        );
        let response = call(&mesh)
            .await
            .unwrap_or_else(|s| panic!("{layout:?}: {s:?}"));
        assert_eq!(
            response.metadata().get(CALLER_HEADER).unwrap(),
            CLIENT_ID,
            "{layout:?}"
        );
        assert_eq!(response.metadata().get(SERVER_HEADER).unwrap(), "cart");
    }
    assert!(
        server
            .presented()
            .iter()
            .all(|p| *p == Presented::Certificate(Some(pki.client.cert_der.clone()))),
        "every connection presented the client's SVID: {:?}",
        server.presented().len()
    );
}

#[tokio::test]
async fn policy_mode_uses_tls_only_for_the_backends_a_policy_names() {
    let pki = Pki::new();
    // A server with a DNS certificate and no client authentication, as a BackendTLSPolicy
    // with a hostname and a CA would describe.
    let dns = pki.ca.issue(&Leaf::dns("cart.example.com")).unwrap();
    let tls_server = TlsServer::start(TlsServerOptions {
        client_ca_pem: None,
        ..TlsServerOptions::mutual("cart-tls", &dns.cert_pem, &dns.key_pem, "")
    })
    .await
    .unwrap();
    let plain = EchoServer::start(EchoConfig::new("plain")).await.unwrap();
    let roots = TrustRoots::from_pem(pki.ca.cert_pem().as_bytes()).unwrap();
    let builder = Mesh::builder()
        .tls(TlsMode::Policy)
        .backend_tls(move |backend| {
            (backend.service.name() == "cart").then(|| {
                BackendTls::new()
                    .server_name("cart.example.com")
                    .trust(roots.clone())
            })
        });
    let mesh = mesh(builder, &[tls_server.addr()]);
    let mut resources = tls_support::resources(&[tls_server.addr()]);
    resources = resources
        .with(grpcroute_client::build::service("shop", "plain").port("grpc", 50051))
        .with(
            grpcroute_client::build::endpoints("shop", "plain")
                .port("grpc", plain.addr().port())
                .ready(plain.addr().ip()),
        );
    assert!(mesh.update(&resources).rejected.is_empty());

    let response = call(&mesh)
        .await
        .expect("TLS to the backend the policy names");
    assert_eq!(response.metadata().get(SERVER_HEADER).unwrap(), "cart-tls");
    assert_eq!(response.metadata().get(CALLER_HEADER).unwrap(), "none");
    let channel = mesh.channel("plain.shop:50051").unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let response = tokio::time::timeout(
        BOUND,
        grpc.unary(
            Request::new(bytes::Bytes::new()),
            "/test.Svc/Call".parse().unwrap(),
            grpcroute_echo::RawCodec,
        ),
    )
    .await
    .unwrap()
    .expect("plaintext to the backend no policy names");
    assert_eq!(response.metadata().get("x-echo-backend").unwrap(), "plain");
}

#[tokio::test]
async fn a_policy_naming_an_exact_spiffe_id_overrides_the_namespace_rule() {
    let pki = Pki::new();
    let server = TlsServer::start(TlsServerOptions::mutual(
        "cart",
        &pki.server.cert_pem,
        &pki.server.key_pem,
        pki.ca.cert_pem(),
    ))
    .await
    .unwrap();
    let exact = |id: &str| {
        let id = SpiffeId::parse(id).unwrap();
        move |_: &grpcroute_client::BackendService| {
            Some(BackendTls::new().identity(ServerIdentity::SpiffeId(id.clone())))
        }
    };
    let identity = Identity::from_credentials(pki.client_credentials());
    let right = mesh(
        Mesh::builder()
            .tls(TlsMode::Mutual)
            .identity(identity.clone())
            .backend_tls(exact(SERVER_ID)),
        &[server.addr()],
    );
    call(&right)
        .await
        .expect("the server presents the exact ID");
    let wrong = mesh(
        Mesh::builder()
            .tls(TlsMode::Mutual)
            .identity(identity)
            .backend_tls(exact("spiffe://cluster.local/ns/shop/sa/other")),
        &[server.addr()],
    );
    let status = call(&wrong).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains(BACKEND)
            && status.message().contains(
                "expected spiffe://cluster.local/ns/shop/sa/other; presented URI:spiffe://cluster.local/ns/shop/sa/cart"
            ),
        "{}",
        status.message()
    );
}
