//! Rotation under load: the client's credentials change (files rewritten, or a new SVID
//! pushed by the Workload API) while callers call continuously. No call fails, connections
//! already open keep serving, and every connection made after the rotation presents the
//! new certificate. New connections are made the way a rollout makes them: the backend's
//! endpoints are replaced by new servers.

mod tls_support;

use std::time::Duration;

use grpcroute_client::{
    Mesh,
    identity::{CredentialFiles, Identity, WorkloadApi},
    tls::TlsMode,
};
use grpcroute_test_identity::{
    Layout, Leaf, Pem, Presented, TlsServer, TlsServerOptions, WorkloadApiServer, files,
};
use tls_support::{BOUND, CLIENT_ID, Load, Pki, mesh, resources};

async fn server(pki: &Pki, name: &str) -> TlsServer {
    TlsServer::start(TlsServerOptions::mutual(
        name,
        &pki.server.cert_pem,
        &pki.server.key_pem,
        pki.ca.cert_pem(),
    ))
    .await
    .unwrap()
}

fn pem(pki: &Pki, svid: &grpcroute_test_identity::Issued) -> Pem {
    Pem {
        chain: svid.cert_pem.clone(),
        key: svid.key_pem.clone(),
        bundle: pki.ca.cert_pem().to_string(),
    }
}

/// Waits (bounded) for the identity's generation to reach `generation`.
async fn wait_generation(identity: &Identity, generation: u64, step: &str) {
    let mut updates = identity.updates();
    tokio::time::timeout(BOUND, updates.wait_for(|g| *g >= generation))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{step}: generation {generation} not reached within {BOUND:?} (last error {:?})",
                identity.last_error()
            )
        })
        .unwrap();
}

/// Runs load over server A, rotates with `rotate` (which returns the new leaf DER), moves
/// the backend to server B, and checks: no failed call, A saw only the old certificate, B
/// only the new one, and both served calls.
async fn rotation_under_load<F, Fut>(name: &str, pki: &Pki, identity: Identity, rotate: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Vec<u8>>,
{
    let a = server(pki, "a").await;
    let b = server(pki, "b").await;
    let mesh = mesh(
        Mesh::builder()
            .tls(TlsMode::Mutual)
            .identity(identity.clone()),
        &[a.addr()],
    );
    let load = Load::start(&mesh, 4);
    load.wait_for_more(200, "before the rotation").await;

    // The figures (shown with --nocapture) are timed from the rewrite (or push).
    let rotated_at = tokio::time::Instant::now();
    let new_leaf = rotate().await;
    wait_generation(&identity, 2, "after the rotation").await;
    let reloaded = rotated_at.elapsed();
    // Calls go on over the connection made with the old certificate.
    load.wait_for_more(200, "after the rotation, on the old connection")
        .await;

    // A rollout: new endpoints, the old one removed.
    let updated_at = tokio::time::Instant::now();
    let report = mesh.update(&resources(&[b.addr()]));
    assert!(report.rejected.is_empty());
    // The first handshake at B (every one there must present the new certificate, checked
    // below): polled, so the figure is late by up to a millisecond.
    tokio::time::timeout(BOUND, async {
        while b.presented().is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("a connection to the new endpoint within the bound");
    let (to_handshake, after_update) = (rotated_at.elapsed(), updated_at.elapsed());
    let served_by_b = b.calls();
    load.wait_for_more(200, "on the new endpoint").await;
    let (ok, failures) = load.stop().await;
    eprintln!(
        "rotation figures ({name}): {} calls made, {} failed; rewrite -> credentials reloaded {:.1} ms; \
         rewrite -> first new handshake presenting the new certificate {:.1} ms \
         (of which endpoint update -> that handshake {:.1} ms; the rest is the test keeping \
         200 calls on the old connection first)",
        ok as usize + failures.len(),
        failures.len(),
        reloaded.as_secs_f64() * 1e3,
        to_handshake.as_secs_f64() * 1e3,
        after_update.as_secs_f64() * 1e3,
    );
    assert!(
        failures.is_empty(),
        "{} of {} calls failed: {:?}",
        failures.len(),
        ok as usize + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(b.calls() > served_by_b, "the new endpoint served calls");
    assert!(a.calls() > 0);

    let old = Presented::Certificate(Some(pki.client.cert_der.clone()));
    let new = Presented::Certificate(Some(new_leaf));
    assert!(
        !a.presented().is_empty() && a.presented().iter().all(|p| *p == old),
        "connections before the rotation presented the old certificate: {} connections",
        a.presented().len()
    );
    assert!(
        !b.presented().is_empty() && b.presented().iter().all(|p| *p == new),
        "connections after the rotation present the new certificate: {:?}",
        b.presented().iter().map(|p| *p == old).collect::<Vec<_>>()
    );
    eprintln!(
        "rotation under load: {ok} calls, 0 failed; {} connection(s) before, {} after",
        a.presented().len(),
        b.presented().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_rotated_atomically_under_load() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    files::write_atomic(dir.path(), Layout::CsiDriverSpiffe, &pem(&pki, &pki.client)).unwrap();
    // The periodic re-read is far beyond the test: the file watch must see the swap.
    let identity = Identity::from_files(
        CredentialFiles::csi_driver_spiffe(dir.path()).refresh_interval(Duration::from_secs(600)),
    )
    .unwrap();
    tokio::time::timeout(BOUND, identity.ready()).await.unwrap();
    let renewed = pki.ca.issue(&Leaf::spiffe(CLIENT_ID)).unwrap();
    let path = dir.path().to_path_buf();
    let written = pem(&pki, &renewed);
    rotation_under_load(
        "files_rotated_atomically_under_load",
        &pki,
        identity,
        || async move {
            files::write_atomic(&path, Layout::CsiDriverSpiffe, &written).unwrap();
            renewed.cert_der
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_rewritten_one_by_one_under_load() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    files::write_each(dir.path(), Layout::Istio, &pem(&pki, &pki.client)).unwrap();
    let identity = Identity::from_files(
        CredentialFiles::istio(dir.path()).refresh_interval(Duration::from_secs(600)),
    )
    .unwrap();
    tokio::time::timeout(BOUND, identity.ready()).await.unwrap();
    let renewed = pki.ca.issue(&Leaf::spiffe(CLIENT_ID)).unwrap();
    let path = dir.path().to_path_buf();
    let written = pem(&pki, &renewed);
    // The chain is renamed in before the key: for a moment the files disagree, and the
    // mismatched pair must never be taken.
    rotation_under_load(
        "files_rewritten_one_by_one_under_load",
        &pki,
        identity,
        || async move {
            files::write_each(&path, Layout::Istio, &written).unwrap();
            renewed.cert_der
        },
    )
    .await;
}

#[tokio::test]
async fn periodic_reread_finds_changes_without_the_watch() {
    // Files in a directory that does not exist yet cannot be watched at first: the periodic
    // re-read is what finds them.
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let late = dir.path().join("late");
    let identity = Identity::from_files(
        CredentialFiles::csi_driver_spiffe(&late).refresh_interval(Duration::from_millis(50)),
    )
    .unwrap();
    // The first read runs on the blocking pool: wait for its failure rather than guess.
    tokio::time::timeout(BOUND, async {
        while identity.last_error().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the first read fails and says so");
    assert!(identity.current().is_none());
    assert!(
        identity.last_error().unwrap().contains("tls.crt"),
        "{:?}",
        identity.last_error()
    );
    std::fs::create_dir(&late).unwrap();
    files::write_each(&late, Layout::CsiDriverSpiffe, &pem(&pki, &pki.client)).unwrap();
    tokio::time::timeout(BOUND, identity.ready())
        .await
        .expect("found by the periodic re-read");
    assert_eq!(identity.spiffe_id().unwrap().as_str(), CLIENT_ID);
    assert_eq!(identity.last_error(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_api_rotation_under_load() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let agent = WorkloadApiServer::start(dir.path()).await.unwrap();
    agent.push(CLIENT_ID, &pki.client, &[pki.ca.cert_der()]);
    let identity = tokio::time::timeout(
        BOUND,
        Identity::from_workload_api(WorkloadApi::endpoint(agent.endpoint())),
    )
    .await
    .expect("the first SVID within the bound")
    .unwrap();
    assert_eq!(identity.spiffe_id().unwrap().as_str(), CLIENT_ID);
    assert!(identity.source().contains("agent.sock"));
    let renewed = pki.ca.issue(&Leaf::spiffe(CLIENT_ID)).unwrap();
    let ca = pki.ca.cert_der().to_vec();
    rotation_under_load("workload_api_rotation_under_load", &pki, identity, || {
        let agent = &agent;
        async move {
            agent.push(CLIENT_ID, &renewed, &[&ca]);
            renewed.cert_der
        }
    })
    .await;
    assert!(agent.streams() >= 1, "the rotation came over a stream");
}
