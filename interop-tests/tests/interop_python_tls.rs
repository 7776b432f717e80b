//! Mutual TLS with an independent implementation: a Python `grpcio` (gRPC C-core, BoringSSL)
//! server with `ssl_server_credentials(..., require_client_auth=True)` behind the mesh. The
//! mesh verifies the server's SPIFFE ID and presents its own SVID; C-core verifies that and
//! reports the caller's SPIFFE ID from its auth context. A caller the server does not allow
//! is refused by name, and a client certificate from a CA the server does not trust is
//! refused in the handshake (reported by the mesh with the alert). Python and pip are
//! required: without them this test fails.

use std::{net::SocketAddr, path::Path, process::Stdio, time::Duration};

use anyhow::{Context as _, anyhow, bail, ensure};
use grpcroute_client::{
    Mesh, Resources,
    build::{endpoints, service},
    identity::{Credentials, Identity},
    tls::TlsMode,
};
use grpcroute_interop_tests::{calls, python};
use grpcroute_test_identity::{Ca, Issued, Leaf};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use tonic::Code;

const CLIENT_ID: &str = "spiffe://cluster.local/ns/web/sa/frontend";
const SERVER_ID: &str = "spiffe://cluster.local/ns/shop/sa/cart";
const BOUND: Duration = Duration::from_secs(30);

/// Starts `python/tls_echo_server.py` with the server's credentials written to `dir`.
async fn start(
    dir: &Path,
    server: &Issued,
    ca: &Ca,
    allow: &str,
) -> anyhow::Result<(SocketAddr, String, Child)> {
    let python = tokio::task::spawn_blocking(python::interpreter).await??;
    for (name, contents) in [
        ("server.crt", server.cert_pem.as_str()),
        ("server.key", server.key_pem.as_str()),
        ("ca.crt", ca.cert_pem()),
    ] {
        std::fs::write(dir.join(name), contents)?;
    }
    let mut child = Command::new(python)
        .arg(python::python_dir().join("tls_echo_server.py"))
        .args(["--name", "py-tls", "--allow", allow])
        .arg("--cert")
        .arg(dir.join("server.crt"))
        .arg("--key")
        .arg(dir.join("server.key"))
        .arg("--ca")
        .arg(dir.join("ca.crt"))
        // The server exits when its stdin closes, so it cannot outlive this test.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting the Python TLS server")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let line = tokio::time::timeout(BOUND, BufReader::new(stdout).lines().next_line())
        .await
        .map_err(|_| anyhow!("the Python TLS server did not report its port in {BOUND:?}"))??
        .ok_or_else(|| anyhow!("the Python TLS server exited before reporting its port"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let ["PORT", port, "grpcio", version] = words.as_slice() else {
        bail!("unexpected first line from the Python TLS server: {line:?}");
    };
    Ok((
        SocketAddr::from(([127, 0, 0, 1], port.parse()?)),
        (*version).to_string(),
        child,
    ))
}

fn mesh(addr: SocketAddr, client: &Issued, ca: &Ca) -> anyhow::Result<Mesh> {
    let credentials = Credentials::from_pem(
        client.cert_pem.as_bytes(),
        client.key_pem.as_bytes(),
        ca.cert_pem().as_bytes(),
    )?;
    let mesh = Mesh::builder()
        .namespace("web")
        .tls(TlsMode::Mutual)
        .identity(Identity::from_credentials(credentials))
        .build();
    let report = mesh.update(
        &Resources::new()
            .with(service("shop", "cart").port("grpc", 50051))
            .with(
                endpoints("shop", "cart")
                    .port("grpc", addr.port())
                    .ready(addr.ip()),
            ),
    );
    ensure!(report.rejected.is_empty(), "{report:?}");
    Ok(mesh)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_mutual_tls_server_behind_the_mesh() -> anyhow::Result<()> {
    let ca = Ca::new("mesh CA")?;
    let server = ca.issue(&Leaf::spiffe(SERVER_ID))?;
    let client = ca.issue(&Leaf::spiffe(CLIENT_ID))?;
    let dir = tempfile::tempdir()?;
    let (addr, version, _child) = start(dir.path(), &server, &ca, CLIENT_ID).await?;
    eprintln!("grpcio {version} serving mutual TLS on {addr}");

    // The allowed caller: verified both ways, its SPIFFE ID read by C-core.
    let allowed = mesh(addr, &client, &ca)?;
    let channel = allowed.channel("cart.shop:50051")?;
    for _ in 0..3 {
        let response = tokio::time::timeout(
            BOUND,
            calls::call_with(
                channel.clone(),
                "/test.Svc/Call",
                &[],
                bytes::Bytes::from_static(b"\x0a\x02hi"),
            ),
        )
        .await
        .context("call within the bound")?
        .map_err(|s| anyhow!("allowed caller: {s:?}"))?;
        ensure!(
            response.get_ref().as_ref() == b"\x0a\x02hi",
            "the message crosses unchanged"
        );
        let metadata = response.metadata();
        ensure!(
            metadata.get("x-caller").and_then(|v| v.to_str().ok()) == Some(CLIENT_ID),
            "C-core sees the caller's SPIFFE ID: {metadata:?}"
        );
        ensure!(
            metadata
                .get("x-transport-security")
                .and_then(|v| v.to_str().ok())
                == Some("ssl"),
            "{metadata:?}"
        );
    }

    // Another identity from the same CA: authenticated, then refused by name.
    let intruder = ca.issue(&Leaf::spiffe("spiffe://cluster.local/ns/web/sa/intruder"))?;
    let status = tokio::time::timeout(
        BOUND,
        calls::call(
            mesh(addr, &intruder, &ca)?.channel("cart.shop:50051")?,
            "/test.Svc/Call",
            &[],
        ),
    )
    .await
    .context("call within the bound")?
    .expect_err("the server refuses the intruder");
    ensure!(status.code() == Code::PermissionDenied, "{status:?}");
    ensure!(
        status.message() == "spiffe://cluster.local/ns/web/sa/intruder may not call",
        "{status:?}"
    );

    // A client certificate from a CA the server does not trust: BoringSSL's alert, as the
    // mesh reports it.
    let other = Ca::new("another CA")?;
    let stranger = other.issue(&Leaf::spiffe(CLIENT_ID))?;
    let credentials_ca = ca; // the client still trusts the server's CA
    let stranger_mesh = {
        let credentials = Credentials::from_pem(
            stranger.cert_pem.as_bytes(),
            stranger.key_pem.as_bytes(),
            credentials_ca.cert_pem().as_bytes(),
        )?;
        let mesh = Mesh::builder()
            .namespace("web")
            .tls(TlsMode::Mutual)
            .identity(Identity::from_credentials(credentials))
            .build();
        mesh.update(
            &Resources::new()
                .with(service("shop", "cart").port("grpc", 50051))
                .with(
                    endpoints("shop", "cart")
                        .port("grpc", addr.port())
                        .ready(addr.ip()),
                ),
        );
        mesh
    };
    let status = tokio::time::timeout(
        BOUND,
        calls::call(
            stranger_mesh.channel("cart.shop:50051")?,
            "/test.Svc/Call",
            &[],
        ),
    )
    .await
    .context("call within the bound")?
    .expect_err("the server refuses a certificate it cannot verify");
    ensure!(status.code() == Code::Unavailable, "{status:?}");
    ensure!(
        status.message().contains("shop/cart:50051")
            && status.message().contains(&addr.to_string())
            && status
                .message()
                .contains("TLS: the server refused our client certificate ("),
        "{status:?}"
    );
    eprintln!("refused stranger: {}", status.message());
    Ok(())
}
