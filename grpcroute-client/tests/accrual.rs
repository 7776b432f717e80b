//! Failure accrual over loopback: an endpoint that keeps failing is ejected after a few
//! failures in a row and gets no calls until its probe; a successful probe restores it; a
//! backend never loses more than its allowed share, so a backend-wide outage still reaches
//! the servers and reports their status; and ejections show in `explain` and the metrics.
//!
//! A fast `UNAVAILABLE` already makes P2C steer away from an endpoint (it counts as a slow
//! answer), so most tests fail with `INTERNAL`, counted as a failure by the accrual under
//! test and invisible to P2C: what they see is the accrual alone.

mod support;

use std::time::Duration;

use bytes::Bytes;
use grpcroute_client::{
    CallDescription, FailureAccrual, Mesh, Resources,
    build::{endpoints, service},
};
use http::Request;
use http_body_util::{BodyExt, Full};
use tonic::{Code, body::Body};
use tower::ServiceExt;

use self::support::{FlakyServer, LOCALHOST};

const BOUND: Duration = Duration::from_secs(10);

/// `app/svc` over the servers, one EndpointSlice each.
fn config(servers: &[&FlakyServer]) -> Resources {
    let mut r = Resources::new().with(service("app", "svc").port("grpc", 50051));
    for (i, s) in servers.iter().enumerate() {
        r = r.with(
            endpoints("app", "svc")
                .name(&format!("svc-{i}"))
                .port("grpc", s.addr.port())
                .ready(LOCALHOST),
        );
    }
    r
}

fn mesh(accrual: Option<FailureAccrual>, servers: &[&FlakyServer]) -> Mesh {
    let mesh = Mesh::builder()
        .namespace("app")
        .failure_accrual(accrual)
        .seed(7)
        .build();
    assert!(mesh.update(&config(servers)).rejected.is_empty());
    mesh
}

/// Ejection from 300 ms (doubling), 5 failures in a row, `INTERNAL` a failure.
fn quick() -> FailureAccrual {
    FailureAccrual {
        base_ejection: Duration::from_millis(300),
        failure_codes: vec![Code::Internal],
        ..FailureAccrual::default()
    }
}

const INTERNAL: u8 = 13;

async fn call(mesh: &Mesh) -> Code {
    call_with_message(mesh).await.0
}

async fn call_with_message(mesh: &Mesh) -> (Code, String) {
    let channel = mesh.channel("svc.app:50051").unwrap();
    let req = Request::builder()
        .method("POST")
        .uri("/pkg.Svc/Call")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Body::new(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0]))))
        .unwrap();
    tokio::time::timeout(BOUND, async {
        let response = channel.oneshot(req).await.unwrap();
        if let Some(s) = tonic::Status::from_header_map(response.headers()) {
            return (s.code(), s.message().to_string());
        }
        match response.into_body().collect().await {
            Ok(b) => b
                .trailers()
                .and_then(tonic::Status::from_header_map)
                .map_or((Code::Unknown, String::new()), |s| {
                    (s.code(), s.message().to_string())
                }),
            Err(s) => (s.code(), s.message().to_string()),
        }
    })
    .await
    .expect("the call ends")
}

#[tokio::test]
async fn a_failing_endpoint_is_ejected_after_consecutive_failures() {
    let good = [
        FlakyServer::start(false).await,
        FlakyServer::start(false).await,
    ];
    let bad = FlakyServer::start_with(true, INTERNAL).await;
    // Ejections from 10 s: the whole test runs within the first.
    let long = FailureAccrual {
        base_ejection: Duration::from_secs(10),
        ..quick()
    };
    let mesh = mesh(Some(long), &[&good[0], &good[1], &bad]);
    let mut failed = 0;
    for _ in 0..300 {
        if call(&mesh).await != Code::Ok {
            failed += 1;
        }
    }
    // Five in a row eject it, and it gets nothing more within its 10 s ejection.
    assert_eq!(
        bad.calls(),
        5,
        "the failing endpoint got {} calls",
        bad.calls()
    );
    assert_eq!(failed, bad.calls(), "only its calls failed");
    // Visible: explain names it, the metrics count it.
    let e = mesh.explain(&CallDescription {
        target: "svc.app:50051".into(),
        path: "/pkg.Svc/Call".into(),
        ..CallDescription::default()
    });
    let ejected: Vec<&str> = e.backends[0]
        .ejected
        .iter()
        .map(|x| x.endpoint.as_str())
        .collect();
    assert_eq!(ejected, [bad.addr.to_string()], "{e:#?}");
    let metrics = mesh.metrics().encode();
    assert!(
        metrics.contains(r#"grpcroute_client_endpoints_ejected{backend="app/svc:50051"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"grpcroute_client_endpoint_ejections_total{backend="app/svc:50051"} "#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_successful_probe_restores_the_endpoint() {
    let good = FlakyServer::start(false).await;
    let flaky = FlakyServer::start_with(true, INTERNAL).await;
    let good2 = FlakyServer::start(false).await;
    // A back-off of 2 s ± 20 %: the 30 calls below must all fall within it, even on a
    // busy machine (300 ms was not always enough).
    let accrual = FailureAccrual {
        base_ejection: Duration::from_secs(2),
        ..quick()
    };
    let mesh = mesh(Some(accrual), &[&good, &flaky, &good2]);
    while flaky.failed.load(std::sync::atomic::Ordering::SeqCst) < 5 {
        call(&mesh).await;
    }
    flaky.set_failing(false);
    let before = flaky.calls();
    for _ in 0..30 {
        call(&mesh).await;
    }
    assert_eq!(
        flaky.calls(),
        before,
        "ejected: no calls during the back-off"
    );
    // After the back-off (at most 2.4 s), a probe succeeds and the endpoint is back.
    tokio::time::sleep(Duration::from_millis(2_600)).await;
    for _ in 0..100 {
        call(&mesh).await;
    }
    assert!(
        flaky.ok.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "its probe reached it"
    );
    let e = mesh.explain(&CallDescription {
        target: "svc.app:50051".into(),
        path: "/pkg.Svc/Call".into(),
        ..CallDescription::default()
    });
    assert!(e.backends[0].ejected.is_empty(), "back in rotation: {e:#?}");
    // (How many of the next calls it takes is the balancer's choice: at one call at a
    // time, peak-EWMA may favour any endpoint for seconds.)
}

#[tokio::test]
async fn a_backend_wide_outage_still_reaches_the_servers() {
    let a = FlakyServer::start_with(true, INTERNAL).await;
    let b = FlakyServer::start_with(true, INTERNAL).await;
    let mesh = mesh(Some(quick()), &[&a, &b]);
    let mut codes = Vec::new();
    for _ in 0..100 {
        codes.push(call_with_message(&mesh).await);
    }
    let codes: Vec<Code> = codes
        .into_iter()
        .map(|(code, message)| {
            assert_eq!(
                message, "overloaded",
                "the servers' own status reaches the caller"
            );
            code
        })
        .collect();
    // At 50 %, one of the two may be out; the other keeps answering with its own status.
    assert!(codes.iter().all(|c| *c == Code::Internal));
    assert_eq!(a.calls() + b.calls(), 100, "every call reached a server");
    assert!(
        a.calls() >= 40 || b.calls() >= 40,
        "{} / {}",
        a.calls(),
        b.calls()
    );
    let e = mesh.explain(&CallDescription {
        target: "svc.app:50051".into(),
        path: "/pkg.Svc/Call".into(),
        ..CallDescription::default()
    });
    assert_eq!(
        e.backends[0].ejected.len(),
        1,
        "one of the two, never both: {e:#?}"
    );
}

#[tokio::test]
async fn with_accrual_off_nothing_is_ejected() {
    // Both endpoints fail every call, so each gets many in a row: with accrual on, one of
    // the two is ejected (see the outage test); off, none is.
    let a = FlakyServer::start_with(true, INTERNAL).await;
    let b = FlakyServer::start_with(true, INTERNAL).await;
    let mesh = mesh(None, &[&a, &b]);
    for _ in 0..100 {
        call(&mesh).await;
    }
    assert_eq!(a.calls() + b.calls(), 100);
    let e = mesh.explain(&CallDescription {
        target: "svc.app:50051".into(),
        path: "/pkg.Svc/Call".into(),
        ..CallDescription::default()
    });
    assert!(e.backends[0].ejected.is_empty(), "{e:#?}");
    let metrics = mesh.metrics().encode();
    assert!(
        metrics.contains(r#"grpcroute_client_endpoint_ejections_total{backend="app/svc:50051"} 0"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn by_default_an_endpoint_answering_unavailable_gets_at_most_a_few_calls() {
    // P2C and the accrual together: the first fast UNAVAILABLE makes the endpoint look
    // slow, and five in a row would eject it.
    let good = [
        FlakyServer::start(false).await,
        FlakyServer::start(false).await,
    ];
    let bad = FlakyServer::start(true).await;
    let mesh = mesh(Some(FailureAccrual::default()), &[&good[0], &good[1], &bad]);
    let mut failed = 0;
    for _ in 0..300 {
        if call(&mesh).await != Code::Ok {
            failed += 1;
        }
    }
    assert!(failed <= 5, "{failed} calls failed");
    assert_eq!(failed, bad.calls());
}
