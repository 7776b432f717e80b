//! TLS clusters (gRFC A29): CDS `transport_socket` with an `UpstreamTlsContext` whose
//! certificates come from the bootstrap's `file_watcher` certificate providers. The
//! library's calls reach a TLS server that requires client certificates when the SAN
//! matchers accept the server's certificate, and fail `UNAVAILABLE` naming the SAN
//! mismatch when they do not.

mod common;

use std::{path::Path, time::Duration};

use anyhow::{Context as _, ensure};
use common::{UNARY, bounded};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use grpcroute_test_identity::{
    pki::{Ca, Issued, Leaf, spiffe_id_of},
    server::{Presented, TlsServer, TlsServerOptions},
};
use grpcroute_xds_control_plane::{
    Bootstrap, CallReport, CallSpec, ControlPlane, Oracle, OracleKind, Resource, Sut,
    builders::{
        ApiListener, ClusterBuilder, RouteBuilder, load_assignment, route_configuration,
        virtual_host,
    },
};

const TEST_LIMIT: Duration = Duration::from_secs(60);
const SERVER_ID: &str = "spiffe://xds.test/ns/default/sa/server";
const CLIENT_ID: &str = "spiffe://xds.test/ns/default/sa/client";

fn exact(value: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Exact(value.into())),
        ignore_case: false,
    }
}

fn prefix(value: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Prefix(value.into())),
        ignore_case: false,
    }
}

fn resources(server: &TlsServer, sans: Vec<StringMatcher>) -> Vec<Resource> {
    resources_with(server, Some("id"), sans)
}

fn resources_with(
    server: &TlsServer,
    identity: Option<&str>,
    sans: Vec<StringMatcher>,
) -> Vec<Resource> {
    vec![
        ApiListener::rds("svc", "svc-rc").build().into(),
        route_configuration(
            "svc-rc",
            vec![virtual_host(
                "vh",
                &["*"],
                vec![RouteBuilder::prefix("/").cluster("svc-c").build()],
            )],
        )
        .into(),
        ClusterBuilder::eds("svc-c")
            .upstream_tls("ca", identity, sans)
            .build()
            .into(),
        load_assignment("svc-c", [server.addr()]).into(),
    ]
}

/// A mutual-TLS server (client certificates from `ca`), the client's credential files, and
/// a bootstrap with instance `id` (certificate and key) and `ca` (the CA file).
struct Setup {
    _dir: tempfile::TempDir,
    server: TlsServer,
    server_cert: Issued,
    bootstrap: Bootstrap,
    cp: ControlPlane,
}

async fn setup() -> anyhow::Result<Setup> {
    let ca = Ca::new("xds test CA")?;
    let server_cert = ca.issue(&Leaf::spiffe(SERVER_ID).with_dns("server.xds.test"))?;
    let client_cert = ca.issue(&Leaf::spiffe(CLIENT_ID))?;
    let server = TlsServer::start(TlsServerOptions::mutual(
        "s0",
        &server_cert.cert_pem,
        &server_cert.key_pem,
        ca.cert_pem(),
    ))
    .await?;
    let dir = tempfile::tempdir()?;
    let write = |name: &str, text: &str| -> anyhow::Result<std::path::PathBuf> {
        let path = dir.path().join(name);
        std::fs::write(&path, text).with_context(|| path.display().to_string())?;
        Ok(path)
    };
    let (crt, key, ca_file) = (
        write("client.crt", &client_cert.cert_pem)?,
        write("client.key", &client_cert.key_pem)?,
        write("ca.crt", ca.cert_pem())?,
    );
    let cp = ControlPlane::start().await?;
    let bootstrap = cp
        .bootstrap("sut-tls")
        .file_watcher("id", Some((crt.as_path(), key.as_path())), None)
        .file_watcher("ca", None, Some(Path::new(&ca_file)));
    Ok(Setup {
        _dir: dir,
        server,
        server_cert,
        bootstrap,
        cp,
    })
}

/// Matching SANs (exact, then prefix): every call succeeds over mutual TLS and the
/// server saw the client's SPIFFE ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matching_sans_connect_with_mutual_tls() -> anyhow::Result<()> {
    bounded("matching_sans_connect_with_mutual_tls", TEST_LIMIT, async {
        let s = setup().await?;
        s.cp.set(resources(
            &s.server,
            vec![exact("spiffe://other"), exact(SERVER_ID)],
        ));
        let sut = Sut::start(&s.bootstrap)?;
        let spec = CallSpec::new("xds:///svc", UNARY)
            .count(10)
            .wait_for_ready(true);
        let r = sut.call(&spec).await?;
        ensure!(
            r.ok() == 10,
            "exact matcher: {:?} {:?}",
            r.by_status,
            r.errors
        );
        let presented = s.server.presented();
        ensure!(
            presented.iter().all(|p| matches!(
                p,
                Presented::Certificate(Some(der)) if spiffe_id_of(der).as_deref() == Some(CLIENT_ID)
            )),
            "the server saw {presented:?}"
        );
        ensure!(!presented.is_empty(), "no connection was made");
        // explain says what the calls got: mutual TLS, the SAN matchers, the providers.
        let e = sut.mesh().explain(&grpcroute_client::CallDescription {
            target: "xds:///svc".into(),
            path: UNARY.into(),
            ..Default::default()
        });
        let tls = e.backends[0]
            .tls
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("explain shows no TLS: {e:?}"))?;
        ensure!(
            tls.enabled && tls.client_certificate && tls.server_name.is_none(),
            "{tls:?}"
        );
        ensure!(
            tls.verify.iter().any(|v| v.contains(SERVER_ID)),
            "the SAN matchers: {tls:?}"
        );
        ensure!(
            tls.roots
                .iter()
                .any(|r| r.starts_with("certificate providers")),
            "{tls:?}"
        );
        Ok(())
    })
    .await
}

/// TLS without a client certificate (no `tls_certificate_provider_instance`) and without
/// SAN matchers: the chain alone is verified (A29) against the CA instance's file, and no
/// certificate is presented. A server of another CA fails `UNAVAILABLE` naming the issuer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_only_tls_without_matchers_verifies_the_chain() -> anyhow::Result<()> {
    bounded(
        "server_only_tls_without_matchers_verifies_the_chain",
        TEST_LIMIT,
        async {
            let s = setup().await?;
            let server_only = |cert: &Issued, name: &str| {
                let mut options = TlsServerOptions::mutual(name, &cert.cert_pem, &cert.key_pem, "");
                options.client_ca_pem = None;
                options
            };
            let trusted = TlsServer::start(server_only(&s.server_cert, "trusted")).await?;
            let other_ca = Ca::new("another CA")?;
            let untrusted = TlsServer::start(server_only(
                &other_ca.issue(&Leaf::spiffe(SERVER_ID))?,
                "untrusted",
            ))
            .await?;
            let sut = Sut::start(&s.bootstrap)?;
            s.cp.set(resources_with(&trusted, None, vec![]));
            let ready = CallSpec::new("xds:///svc", UNARY)
                .count(5)
                .wait_for_ready(true)
                .timeout(Duration::from_secs(10));
            let r = sut.call(&ready).await?;
            ensure!(
                r.ok() == 5,
                "trusted server: {:?} {:?}",
                r.by_status,
                r.errors
            );
            let presented = trusted.presented();
            ensure!(
                !presented.is_empty()
                    && presented.iter().all(|p| *p == Presented::Certificate(None)),
                "the trusted server saw {presented:?}"
            );
            s.cp.set(resources_with(&untrusted, None, vec![]));
            let spec = CallSpec::new("xds:///svc", UNARY)
                .count(3)
                .timeout(Duration::from_secs(5));
            let mut last = None;
            for _ in 0..50 {
                let r = sut.call(&spec).await?;
                if r.status("UNAVAILABLE") == 3 {
                    last = Some(r);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let r = last.context("calls to an untrusted server never failed UNAVAILABLE")?;
            ensure!(
                !r.errors.is_empty() && r.errors.iter().all(|e| e.contains("issuer")),
                "errors: {:?}",
                r.errors
            );
            Ok(())
        },
    )
    .await
}

/// A SAN matcher the server's certificate does not satisfy: calls fail `UNAVAILABLE`
/// with a message naming the SAN mismatch; a matching one afterwards works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn san_mismatch_fails_unavailable_naming_it() -> anyhow::Result<()> {
    bounded(
        "san_mismatch_fails_unavailable_naming_it",
        TEST_LIMIT,
        async {
            let s = setup().await?;
            s.cp.set(resources(
                &s.server,
                vec![exact("spiffe://xds.test/ns/default/sa/other")],
            ));
            let sut = Sut::start(&s.bootstrap)?;
            let spec = CallSpec::new("xds:///svc", UNARY)
                .count(3)
                .timeout(Duration::from_secs(5));
            // The first call waits for the configuration (xDS round trip), then fails.
            let mut last = None;
            for _ in 0..50 {
                let r = sut.call(&spec).await?;
                if r.status("UNAVAILABLE") == 3 {
                    last = Some(r);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let r = last.context("calls never failed UNAVAILABLE")?;
            ensure!(
                r.errors.iter().all(|e| e.contains("SAN mismatch")
                    && e.contains("exact \"spiffe://xds.test/ns/default/sa/other\"")
                    && e.contains(SERVER_ID)),
                "errors: {:?}",
                r.errors
            );
            ensure!(!r.errors.is_empty(), "no error messages");
            // A prefix matcher that accepts the server: calls succeed.
            s.cp.set(resources(
                &s.server,
                vec![prefix("spiffe://xds.test/ns/default/")],
            ));
            let mut ok = false;
            for _ in 0..50 {
                if sut.call(&spec).await?.ok() == 3 {
                    ok = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            ensure!(ok, "calls did not recover after the matcher changed");
            Ok(())
        },
    )
    .await
}

/// The same bootstrap, certificates and clusters given to gRPC C-core (`grpcio` with
/// `xds_channel_credentials`): both connect with matching SANs and both fail every call
/// `UNAVAILABLE` on a mismatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_against_grpcio() -> anyhow::Result<()> {
    bounded(
        "differential_against_grpcio",
        Duration::from_secs(120),
        async {
            let s = setup().await?;
            let oracle = match Oracle::start(
                OracleKind::Python,
                &s.bootstrap,
                &[("XDS_DRIVER_XDS_CREDENTIALS", "1")],
            )
            .await
            {
                Ok(o) => o,
                Err(e) if e.is_missing_tool() && std::env::var("CI").as_deref() != Ok("true") => {
                    eprintln!("SKIPPED (not under CI=true): {e}");
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
            let sut = Sut::start(&s.bootstrap)?;
            let ready = CallSpec::new("xds:///svc", UNARY)
                .count(10)
                .wait_for_ready(true)
                .timeout(Duration::from_secs(10));
            s.cp.set(resources(&s.server, vec![exact(SERVER_ID)]));
            let ours = sut.call(&ready).await?;
            let theirs = oracle.call(&ready).await?;
            println!(
                "matching: ours {:?}, grpcio {:?} {:?}",
                ours.by_status, theirs.by_status, theirs.errors
            );
            ensure!(
                ours.ok() == 10 && theirs.ok() == 10,
                "matching SAN: ours {ours:?}; grpcio {theirs:?}"
            );

            s.cp.set(resources(
                &s.server,
                vec![exact("spiffe://xds.test/ns/default/sa/other")],
            ));
            let failing = CallSpec::new("xds:///svc", UNARY)
                .count(3)
                .timeout(Duration::from_secs(5));
            // Both keep their connections open under the old cluster until it changes: wait
            // until each applies the new one (every call fails) or give up.
            async fn settle(
                mut call: impl AsyncFnMut() -> anyhow::Result<CallReport>,
            ) -> anyhow::Result<CallReport> {
                let mut last = None;
                for _ in 0..50 {
                    let r = call().await?;
                    if r.ok() == 0 {
                        return Ok(r);
                    }
                    last = Some(r);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                anyhow::bail!("calls still succeed: {last:?}")
            }
            let ours = settle(async || Ok(sut.call(&failing).await?)).await?;
            let theirs = settle(async || Ok(oracle.call(&failing).await?)).await?;
            println!(
                "mismatch: ours {:?} {:?}; grpcio {:?} {:?}",
                ours.by_status, ours.errors, theirs.by_status, theirs.errors
            );
            ensure!(
                ours.status("UNAVAILABLE") == 3 && theirs.status("UNAVAILABLE") == 3,
                "SAN mismatch: ours {ours:?}; grpcio {theirs:?}"
            );
            Ok(())
        },
    )
    .await
}
