//! The status controller's alerts of `examples/kubernetes/prometheus-rule.yaml`, evaluated
//! by a real Prometheus scraping a running `grpcroute status-controller --metrics-addr`
//! (the mesh's own alerts are tested in `interop-tests/tests/prometheus.rs`):
//!
//! 1. another holder keeps the Lease, so the only controller stands by:
//!    `GRPCRouteStatusControllerNoLeader` fires;
//! 2. that holder's Lease is deleted, the controller takes it: the alert resolves;
//! 3. the API server fails every request for a moment while a route changes: the status
//!    write fails and `GRPCRouteStatusWritesFailing` fires, though the retry lands.
//!
//! Skipped, like the other Prometheus test, when no Prometheus is found, unless `CI` is
//! set or `GRPCROUTE_REQUIRE_PROMETHEUS` is (the test script sets it): then it fails.

use std::time::Duration;

use anyhow::{bail, ensure};
use grpcroute_interop_tests::prometheus::{Prometheus, prometheus_for_test, shipped_rules};
use grpcroute_test_apiserver::Resource;
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::MicroTime, jiff::Timestamp};
use serde_json::{Value, json};
use tokio::time::{Instant, sleep};

use crate::status_controller::{Cluster, Controller, backends, eventually};

const NO_LEADER: &str = "GRPCRouteStatusControllerNoLeader";
const WRITES_FAILING: &str = "GRPCRouteStatusWritesFailing";
const LEASE: &str = "grpcroute-status-controller";

/// How long Prometheus may take to scrape, evaluate and fire (or resolve) an alert.
const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_fires_the_status_controller_alerts() -> anyhow::Result<()> {
    let Some(binary) = prometheus_for_test() else {
        return Ok(());
    };
    // The expressions as shipped; only the hold durations are shortened.
    let rules = shipped_rules("1s")?;

    let cluster = Cluster::with_route(&["checkout-v1", "checkout-v2"]).await;

    // 1. Another instance renewed the Lease a moment ago, for an hour.
    let renewed = serde_json::to_value(MicroTime(Timestamp::now()))?;
    cluster.apply(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"namespace": "default", "name": LEASE},
        "spec": {"holderIdentity": "elsewhere", "leaseDurationSeconds": 3600,
                 "acquireTime": renewed, "renewTime": renewed},
    }));
    // Tries (and, once leading, renews) every 3 s; gives up after 6 s without renewal,
    // longer than the fault of step 3.
    let a = Controller::start_with(&cluster, "a", "9", &["--metrics-addr", "127.0.0.1:0"]);
    eventually(Duration::from_secs(10), "a stands by", || {
        a.log().contains("standing by")
    })
    .await;
    let prometheus = Prometheus::start(&binary, a.metrics_addr(), &rules, TIMEOUT).await?;
    let took = until(&prometheus, "NoLeader fires", |alerts| {
        Ok(firing(alerts, NO_LEADER) && !active(alerts, WRITES_FAILING))
    })
    .await?;
    println!("{NO_LEADER} fired {took:?} after Prometheus started");

    // 2. The other holder is gone: a takes the Lease and the alert resolves.
    cluster.server.delete(Resource::Leases, "default", LEASE)?;
    eventually(Duration::from_secs(10), "a leads", || {
        cluster.lease_holder().as_deref() == Some("a")
    })
    .await;
    let took = until(&prometheus, "NoLeader resolves", |alerts| {
        Ok(!active(alerts, NO_LEADER) && !active(alerts, WRITES_FAILING))
    })
    .await?;
    println!("{NO_LEADER} resolved {took:?} after a took the Lease");
    eventually(Duration::from_secs(10), "the first status", || {
        !cluster.ours("shop", "r").is_empty()
    })
    .await;

    // 3. The spec changes (written to the store, status kept) while the API server fails
    // every request: the write fails, is counted, and is retried after the fault.
    cluster.server.fail_requests(Some(Duration::from_secs(2)));
    cluster.store_rules("shop", "r", backends(&["checkout-v2"]));
    let took = until(&prometheus, "WritesFailing fires", |alerts| {
        ensure!(!active(alerts, NO_LEADER), "a lost the lease: {alerts:?}");
        Ok(firing(alerts, WRITES_FAILING))
    })
    .await?;
    println!("{WRITES_FAILING} fired {took:?} after the fault began");
    eventually(Duration::from_secs(15), "the retry lands", || {
        cluster.ours("shop", "r")[0]["conditions"][0]["observedGeneration"] == 2
    })
    .await;
    assert_eq!(cluster.lease_holder().as_deref(), Some("a"));

    prometheus.stop().await?;
    assert_eq!(a.signal("TERM").await, Some(0));
    cluster.shutdown().await;
    Ok(())
}

/// Polls Prometheus's alerts until `done` says so; how long that took. Any alert but the
/// controller's two is an error: the route stays valid and the API connected throughout.
async fn until(
    prometheus: &Prometheus,
    what: &str,
    done: impl Fn(&[Value]) -> anyhow::Result<bool>,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let alerts = prometheus.alerts().await?;
        for alert in &alerts {
            let name = alert["labels"]["alertname"].as_str().unwrap_or_default();
            ensure!(
                name == NO_LEADER || name == WRITES_FAILING,
                "unexpected alert {alert}"
            );
        }
        if done(&alerts)? {
            return Ok(start.elapsed());
        }
        if start.elapsed() > TIMEOUT {
            bail!(
                "{what}: not within {TIMEOUT:?}; alerts: {alerts:?}\nprometheus log:\n{}",
                prometheus.log()
            );
        }
        sleep(Duration::from_millis(250)).await;
    }
}

fn active(alerts: &[Value], name: &str) -> bool {
    alerts.iter().any(|a| a["labels"]["alertname"] == name)
}

fn firing(alerts: &[Value], name: &str) -> bool {
    alerts
        .iter()
        .any(|a| a["labels"]["alertname"] == name && a["state"] == "firing")
}
