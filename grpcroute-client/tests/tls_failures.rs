//! Every TLS failure is a failed connect to that endpoint: the call tries another endpoint
//! of the backend, and when none is left fails `UNAVAILABLE` with a message naming the
//! backend, the endpoint and what failed.

mod tls_support;

use std::net::SocketAddr;

use grpcroute_client::{
    Mesh,
    identity::{CredentialFiles, Identity},
    tls::{BackendTls, TlsMode},
};
use grpcroute_echo::{EchoConfig, EchoServer};
use grpcroute_test_identity::{Ca, Issued, Leaf, Presented, TlsServer, TlsServerOptions};
use tls_support::{BACKEND, CLIENT_ID, Pki, SERVER_ID, call, mesh};
use tonic::Code;

/// A server presenting `server` and requiring client certificates from `client_ca`.
async fn server(server: &Issued, client_ca: &Ca) -> TlsServer {
    TlsServer::start(TlsServerOptions::mutual(
        "cart",
        &server.cert_pem,
        &server.key_pem,
        client_ca.cert_pem(),
    ))
    .await
    .unwrap()
}

fn mutual(pki: &Pki, addrs: &[SocketAddr]) -> Mesh {
    mesh(
        Mesh::builder()
            .tls(TlsMode::Mutual)
            .identity(Identity::from_credentials(pki.client_credentials())),
        addrs,
    )
}

/// The call fails UNAVAILABLE, naming the backend, the endpoint and every `expected` part.
async fn assert_fails(mesh: &Mesh, endpoint: SocketAddr, expected: &[&str]) {
    let status = call(mesh).await.expect_err("the call must fail");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let message = status.message();
    assert!(message.contains(BACKEND), "names the backend: {message}");
    assert!(
        message.contains(&endpoint.to_string()),
        "names the endpoint: {message}"
    );
    for part in expected {
        assert!(message.contains(part), "says {part:?}: {message}");
    }
    assert!(
        !message.to_lowercase().contains("transport error"),
        "{message}"
    );
}

#[tokio::test]
async fn untrusted_issuer() {
    let pki = Pki::new();
    let other = Ca::new("another CA").unwrap();
    let s = server(&other.issue(&Leaf::spiffe(SERVER_ID)).unwrap(), &pki.ca).await;
    assert_fails(
        &mutual(&pki, &[s.addr()]),
        s.addr(),
        &["TLS: the server's certificate is not signed by a trusted authority (unknown issuer)"],
    )
    .await;
}

#[tokio::test]
async fn calls_during_the_backoff_still_say_why() {
    let pki = Pki::new();
    let other = Ca::new("another CA").unwrap();
    let s = server(&other.issue(&Leaf::spiffe(SERVER_ID)).unwrap(), &pki.ca).await;
    let mesh = mesh(
        Mesh::builder()
            .tls(TlsMode::Mutual)
            .identity(Identity::from_credentials(pki.client_credentials()))
            .connect_backoff(
                std::time::Duration::from_secs(30),
                std::time::Duration::from_secs(30),
            ),
        &[s.addr()],
    );
    let expected = "not signed by a trusted authority (unknown issuer)";
    assert_fails(&mesh, s.addr(), &[expected]).await;
    // The endpoint now waits out its backoff: no connect is attempted, and the message
    // still names the cause.
    assert_fails(
        &mesh,
        s.addr(),
        &[
            "every endpoint is backing off after failed connects, or ejected after failed calls; last: ",
            expected,
        ],
    )
    .await;
    // The server records the failed handshake when it sees the client's alert.
    tokio::time::timeout(tls_support::BOUND, async {
        while s.presented().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the server saw the handshake");
    assert_eq!(s.presented().len(), 1, "one handshake, then the backoff");
}

#[tokio::test]
async fn expired_and_not_yet_valid_certificates() {
    let pki = Pki::new();
    let s = server(
        &pki.ca.issue(&Leaf::spiffe(SERVER_ID).expired()).unwrap(),
        &pki.ca,
    )
    .await;
    assert_fails(
        &mutual(&pki, &[s.addr()]),
        s.addr(),
        &[
            "TLS: the server's certificate has expired (valid until ",
            "; now ",
        ],
    )
    .await;
    let s = server(
        &pki.ca
            .issue(&Leaf::spiffe(SERVER_ID).not_yet_valid())
            .unwrap(),
        &pki.ca,
    )
    .await;
    assert_fails(
        &mutual(&pki, &[s.addr()]),
        s.addr(),
        &["TLS: the server's certificate is not valid yet (valid from "],
    )
    .await;
}

#[tokio::test]
async fn wrong_san() {
    let pki = Pki::new();
    // Same trust domain, another namespace's service account.
    let s = server(
        &pki.ca
            .issue(&Leaf::spiffe("spiffe://cluster.local/ns/billing/sa/cart"))
            .unwrap(),
        &pki.ca,
    )
    .await;
    assert_fails(
        &mutual(&pki, &[s.addr()]),
        s.addr(),
        &["SAN mismatch", "expected spiffe://cluster.local/ns/shop/sa/*; presented URI:spiffe://cluster.local/ns/billing/sa/cart"],
    )
    .await;
    // Another trust domain.
    let s = server(
        &pki.ca
            .issue(&Leaf::spiffe("spiffe://evil.example/ns/shop/sa/cart"))
            .unwrap(),
        &pki.ca,
    )
    .await;
    assert_fails(
        &mutual(&pki, &[s.addr()]),
        s.addr(),
        &["expected spiffe://cluster.local/ns/shop/sa/*; presented URI:spiffe://evil.example/ns/shop/sa/cart"],
    )
    .await;
    // A DNS-only certificate where a SPIFFE ID is expected.
    let s = server(
        &pki.ca
            .issue(&Leaf::dns("cart.shop.svc.cluster.local"))
            .unwrap(),
        &pki.ca,
    )
    .await;
    assert_fails(
        &mutual(&pki, &[s.addr()]),
        s.addr(),
        &["presented DNS:cart.shop.svc.cluster.local"],
    )
    .await;
}

#[tokio::test]
async fn server_presents_no_certificate() {
    let pki = Pki::new();
    let plain = EchoServer::start(EchoConfig::new("plain")).await.unwrap();
    assert_fails(
        &mutual(&pki, &[plain.addr()]),
        plain.addr(),
        &["TLS: the server presented no certificate: "],
    )
    .await;
}

#[tokio::test]
async fn server_refuses_our_certificate() {
    let pki = Pki::new();
    // The server trusts another CA for its clients.
    let other = Ca::new("another client CA").unwrap();
    let s = server(&pki.server, &other).await;
    assert_fails(
        &mutual(&pki, &[s.addr()]),
        s.addr(),
        &["TLS: the server refused our client certificate (alert: "],
    )
    .await;
    assert!(
        matches!(
            s.presented().as_slice(),
            [Presented::HandshakeFailed(_), ..]
        ),
        "{:?}",
        s.presented()
    );

    // No client certificate at all, to a server that requires one.
    let s = server(&pki.server, &pki.ca).await;
    let no_client_cert = mesh(
        Mesh::builder()
            .tls(TlsMode::Policy)
            .identity(Identity::from_credentials(pki.client_credentials()))
            .backend_tls(|_| Some(BackendTls::new().client_certificate(false))),
        &[s.addr()],
    );
    assert_fails(
        &no_client_cert,
        s.addr(),
        &["TLS: the server refused our client certificate (alert: certificate_required)"],
    )
    .await;
}

#[tokio::test]
async fn alpn_h2_not_negotiated() {
    let pki = Pki::new();
    let s = TlsServer::start(TlsServerOptions {
        alpn_h2: false,
        ..TlsServerOptions::mutual(
            "cart",
            &pki.server.cert_pem,
            &pki.server.key_pem,
            pki.ca.cert_pem(),
        )
    })
    .await
    .unwrap();
    assert_fails(
        &mutual(&pki, &[s.addr()]),
        s.addr(),
        &["TLS: the server did not negotiate ALPN h2 (it chose no protocol)"],
    )
    .await;
}

#[tokio::test]
async fn no_identity_yet() {
    let pki = Pki::new();
    let s = server(&pki.server, &pki.ca).await;
    let dir = tempfile::tempdir().unwrap();
    let identity = Identity::from_files(CredentialFiles::csi_driver_spiffe(dir.path())).unwrap();
    let mesh = mesh(
        Mesh::builder().tls(TlsMode::Mutual).identity(identity),
        &[s.addr()],
    );
    assert_fails(
        &mesh,
        s.addr(),
        &[
            "TLS: no client certificate to present yet (files ",
            "tls.crt",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_failing_endpoint_is_skipped_for_a_good_one() {
    let pki = Pki::new();
    let bad = server(
        &pki.ca
            .issue(&Leaf::spiffe("spiffe://cluster.local/ns/billing/sa/cart"))
            .unwrap(),
        &pki.ca,
    )
    .await;
    let good = server(&pki.server, &pki.ca).await;
    let mesh = mutual(&pki, &[bad.addr(), good.addr()]);
    for _ in 0..20 {
        let response = call(&mesh)
            .await
            .expect("the good endpoint serves every call");
        assert_eq!(
            response
                .metadata()
                .get(grpcroute_test_identity::CALLER_HEADER)
                .unwrap(),
            CLIENT_ID
        );
    }
    assert_eq!(good.calls(), 20);
    assert_eq!(
        bad.calls(),
        0,
        "no call is ever sent to the unverified endpoint"
    );
}
