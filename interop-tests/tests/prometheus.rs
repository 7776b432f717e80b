//! A real Prometheus server scrapes the mesh's `/metrics` and evaluates the alerting and
//! recording rules shipped in `examples/kubernetes/prometheus-rule.yaml`, while calls
//! trickle through a mesh whose canary fails every call it gets.
//!
//! The mesh: Service `shop/front` with GRPCRoute `shop/front-split` sending the echo
//! service 3:1 to `shop/stable` (two echo servers) and `shop/canary` (a server that
//! answers every call `INTERNAL`, as a broken release would: the failure comes from the
//! backend, so the mesh counts it under the server's status, not one of its own); calls to
//! any other service of `front` match no rule. Service `shop/reports` has GRPCRoute
//! `shop/reports-v2`, whose only backendRef names a Service that does not exist.
//!
//! Skipped (with a message) when no Prometheus is found, unless `CI` is set (to anything
//! but `false`/`0`) or `GRPCROUTE_REQUIRE_PROMETHEUS` is (the test script sets it), which
//! makes that a failure. `PROMETHEUS=/path/to/prometheus` overrides the one on PATH; without either,
//! the one `scripts/test.sh` unpacks into `target/tools/prometheus` is used.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, ensure};
use grpcroute_client::{
    Mesh, Metrics, Resources,
    build::{Backend, Match, Rule, endpoints, route, service},
};
use grpcroute_interop_tests::{
    EchoService, GRPC_PORT, LOOPBACK, backend,
    backends::add_all,
    call,
    calls::{ECHO, ECHO_SERVICE},
    prometheus::{FailingServer, MetricsServer, Prometheus, prometheus_for_test, shipped_rules},
};
use serde_json::Value;
use tokio::time::Instant;
use tonic::Code;

const NS: &str = "shop";
const SPLIT: &str = "shop/front-split";
const FRONT: &str = "shop/front:7070";
const STABLE: &str = "shop/stable:7070";
const CANARY: &str = "shop/canary:7070";
const DANGLING: &str = "shop/reports-v2";
/// A method of a service no rule of `front` matches.
const UNMATCHED: &str = "/other.v1.Other/Call";

const RATIO: &str = "grpcroute:backend_error_ratio:rate5m";
const HIGH_ERROR_RATE: &str = "GRPCRouteBackendHighErrorRate";
const CONDITION_FALSE: &str = "GRPCRouteConditionFalse";
const UNMATCHED_CALLS: &str = "GRPCRouteUnmatchedCalls";
const DISCONNECTED: &str = "GRPCRouteClientDisconnected";
const REJECTED: &str = "GRPCRouteObjectsRejected";

/// How long Prometheus may take to scrape, evaluate and fire everything.
const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_metrics_and_fires_the_shipped_alerts() -> anyhow::Result<()> {
    let Some(binary) = prometheus_for_test() else {
        return Ok(());
    };
    let started = Instant::now();

    // The rules, exactly as shipped but for the hold durations: each rule's `for:` (5m to
    // 15m as shipped) is shortened to 1s, so that the alerts fire within seconds.
    let rules = shipped_rules("1s")?;
    let names: Vec<&str> = rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter_map(|r| r["alert"].as_str().or(r["record"].as_str()))
        .collect();
    for name in [
        RATIO,
        HIGH_ERROR_RATE,
        CONDITION_FALSE,
        UNMATCHED_CALLS,
        DISCONNECTED,
        REJECTED,
    ] {
        ensure!(
            names.contains(&name),
            "{name} is not in the shipped rules: {names:?}"
        );
    }

    // The mesh.
    let stable = EchoService::start(NS, "stable", 2).await?;
    let canary = FailingServer::start(Code::Internal, "canary is broken").await?;
    let mut resources = Resources::new()
        .with(service(NS, "front").port("grpc", GRPC_PORT))
        .with(service(NS, "canary").port("grpc", GRPC_PORT))
        .with(
            endpoints(NS, "canary")
                .port("grpc", canary.addr().port())
                .ready(LOOPBACK),
        )
        .with(
            route(NS, "front-split")
                .parent_service("front", Some(GRPC_PORT))
                .rule(
                    Rule::new()
                        .matches(Match::service(ECHO_SERVICE))
                        .backend(Backend::service("stable", GRPC_PORT).weight(3))
                        .backend(Backend::service("canary", GRPC_PORT).weight(1)),
                ),
        )
        .with(service(NS, "reports").port("grpc", GRPC_PORT))
        .with(
            route(NS, "reports-v2")
                .parent_service("reports", Some(GRPC_PORT))
                .rule(Rule::new().backend(Backend::service("reports-v2", GRPC_PORT))),
        );
    add_all(&mut resources, stable.objects());
    let mesh = Mesh::builder().namespace(NS).seed(7).build();
    let report = mesh.update(&resources);
    ensure!(report.rejected.is_empty(), "{:?}", report.rejected);

    // A steady trickle: every 20 ms one call to the split and one that matches no rule.
    let outcomes = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let caller = {
        let front = mesh.channel("front:7070")?;
        let outcomes = outcomes.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                for path in [ECHO, UNMATCHED] {
                    let outcome = match call(front.clone(), path, &[]).await {
                        Ok(r) => format!("OK from {}", backend(r.metadata()).unwrap_or_default()),
                        Err(s) => format!("{:?} {}", s.code(), s.message()),
                    };
                    *outcomes.lock().unwrap().entry(outcome).or_default() += 1;
                }
            }
        })
    };

    let metrics = MetricsServer::start(mesh.metrics()).await?;
    let prometheus = Prometheus::start(&binary, metrics.addr(), &rules, TIMEOUT).await?;
    eprintln!(
        "{} on {}, scraping http://{}/metrics (ready after {:?})",
        binary.display(),
        prometheus.addr(),
        metrics.addr(),
        started.elapsed()
    );

    let deadline = Instant::now() + TIMEOUT;
    let mut polls = 0;
    let mut first_scrape = None;
    let state = loop {
        polls += 1;
        if metrics.scrapes() > 0 {
            first_scrape.get_or_insert_with(|| started.elapsed());
        }
        let state = observe(&prometheus, &mesh.metrics()).await;
        match &state {
            Ok(state) if state.unmet.is_empty() => break state.clone(),
            Err(e) => bail!("{e:#}\nprometheus log:\n{}", prometheus.log()),
            Ok(state) if Instant::now() >= deadline => bail!(
                "after {TIMEOUT:?}, still unmet:\n  {}\nalerts: {:#}\nprometheus log:\n{}",
                state.unmet.join("\n  "),
                Value::Array(state.alerts.clone()),
                prometheus.log()
            ),
            Ok(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    let elapsed = started.elapsed();
    check_metadata(&prometheus).await?;
    caller.abort();
    prometheus.stop().await?;

    let outcomes = outcomes.lock().unwrap().clone();
    eprintln!(
        "everything held after {elapsed:?} (first scrape seen after {:?}; {polls} polls, {} scrapes); alerts:",
        first_scrape.unwrap_or_default(),
        metrics.scrapes()
    );
    for alert in &state.alerts {
        eprintln!("  {} {}", alert["state"], alert["labels"]);
    }
    eprintln!("{RATIO}: {:?}", state.ratios);
    eprintln!("calls: {outcomes:?}");
    for outcome in outcomes.keys() {
        ensure!(
            outcome.starts_with("OK from stable-")
                || outcome == "Internal canary is broken"
                || outcome.starts_with("Unimplemented "),
            "unexpected outcome {outcome:?} in {outcomes:?}"
        );
    }
    ensure!(canary.calls() > 0 && stable.calls() > 0);
    stable.shutdown().await;
    Ok(())
}

/// The types and units Prometheus took from the exposition's `TYPE` and `UNIT` lines: one
/// entry per metric family (a counter's without `_total`), exactly ours.
async fn check_metadata(prometheus: &Prometheus) -> anyhow::Result<()> {
    let field = |m: &Value, k: &str| m[k].as_str().unwrap_or_default().to_string();
    let metadata: BTreeMap<String, String> = prometheus
        .api("/api/v1/targets/metadata")
        .await?
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                field(m, "metric"),
                format!("{} {}", field(m, "type"), field(m, "unit")),
            )
        })
        .filter(|(metric, _)| metric.starts_with("grpcroute_"))
        .collect();
    let expected: BTreeMap<String, String> = [
        ("grpcroute_client_calls", "counter "),
        (
            "grpcroute_client_call_duration_seconds",
            "histogram seconds",
        ),
        ("grpcroute_config_version", "gauge "),
        (
            "grpcroute_config_last_update_timestamp_seconds",
            "gauge seconds",
        ),
        ("grpcroute_config_rejected_objects", "gauge "),
        ("grpcroute_route_condition", "gauge "),
        ("grpcroute_endpoints", "gauge "),
        ("grpcroute_source_connected", "gauge "),
        // Failure accrual and mirrors (issue 9).
        ("grpcroute_client_endpoint_ejections", "counter "),
        ("grpcroute_client_endpoints_ejected", "gauge "),
        ("grpcroute_client_mirrors_dropped", "counter "),
        ("grpcroute_client_mirrors_in_flight", "gauge "),
        ("grpcroute_client_mirrors_timed_out", "counter "),
    ]
    .into_iter()
    .map(|(m, t)| (m.to_string(), t.to_string()))
    .collect();
    ensure!(metadata == expected, "metadata {metadata:#?}");
    Ok(())
}

/// What Prometheus shows at one moment.
#[derive(Clone, Debug)]
struct State {
    /// The expectations not met yet.
    unmet: Vec<String>,
    /// The alerts pending or firing.
    alerts: Vec<Value>,
    /// The recording rule's value for each backend.
    ratios: BTreeMap<String, f64>,
}

/// Reads Prometheus's targets, queries and alerts, and checks them: an expectation not met
/// yet goes into `unmet`; something that must never happen (an alert for the stable
/// backend, a disconnected client) is an error at once.
async fn observe(prometheus: &Prometheus, metrics: &Metrics) -> anyhow::Result<State> {
    let mut unmet = Vec::new();

    // Prometheus parses the exposition: the target is up and every sample was taken.
    let targets = prometheus.api("/api/v1/targets").await?;
    let active = targets["activeTargets"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // Discovery is asynchronous: the target shows up shortly after the start.
    ensure!(active.len() <= 1, "one scrape target: {targets}");
    match active.first() {
        Some(target) if target["health"] == "up" && target["lastError"] == "" => {}
        Some(target) => unmet.push(format!(
            "target health {} (lastError {})",
            target["health"], target["lastError"]
        )),
        None => unmet.push("the scrape target".into()),
    }
    let samples = metrics
        .encode()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    let scraped = prometheus
        .query("scrape_samples_scraped{job=\"grpcroute\"}")
        .await?;
    if scraped.iter().map(|(_, v)| *v).ne([samples as f64]) {
        unmet.push(format!(
            "scrape_samples_scraped {scraped:?}, the exposition has {samples}"
        ));
    }
    let version = prometheus.query("grpcroute_config_version").await?;
    if version.iter().map(|(_, v)| *v).ne([1.0]) {
        unmet.push(format!("grpcroute_config_version {version:?}"));
    }
    // The histogram's buckets (up to le="+Inf") make a quantile.
    let median = prometheus
        .query(
            "histogram_quantile(0.5, sum by (backend, le) (rate(grpcroute_client_call_duration_seconds_bucket[1m])))",
        )
        .await?;
    let stable_median = median
        .iter()
        .find(|(m, _)| m["backend"] == STABLE)
        .map(|(_, v)| *v);
    if !stable_median.is_some_and(|v| v.is_finite() && v > 0.0) {
        unmet.push(format!("median call duration {median:?}"));
    }

    // The recording rule: the canary fails every call it gets; the stable backend none.
    let ratios: BTreeMap<String, f64> = prometheus
        .query(RATIO)
        .await?
        .into_iter()
        .map(|(m, v)| {
            ensure!(m["route"] == SPLIT, "{RATIO} for another route: {m}");
            Ok((m["backend"].as_str().unwrap_or_default().to_string(), v))
        })
        .collect::<anyhow::Result<_>>()?;
    if !ratios.get(CANARY).is_some_and(|&r| r > 0.05) {
        unmet.push(format!("{RATIO} of {CANARY} > 0.05: {ratios:?}"));
    }
    // A backend that never failed is at 0, not absent: dashboards show its line.
    match ratios.get(STABLE) {
        Some(&r) => ensure!(r == 0.0, "{RATIO} of {STABLE} is {r}"),
        None => unmet.push(format!("{RATIO} of {STABLE} is 0: {ratios:?}")),
    }

    // The alerts.
    let alerts = prometheus.alerts().await?;
    let firing = |name: &str, labels: &[(&str, &str)]| {
        alerts.iter().any(|a| {
            a["state"] == "firing"
                && a["labels"]["alertname"] == name
                && labels.iter().all(|(k, v)| a["labels"][*k] == *v)
        })
    };
    for alert in &alerts {
        let labels = &alert["labels"];
        match labels["alertname"].as_str().unwrap_or_default() {
            HIGH_ERROR_RATE => ensure!(
                labels["backend"] == CANARY && labels["route"] == SPLIT,
                "only the canary fails: {alert}"
            ),
            CONDITION_FALSE => ensure!(
                labels["route"] == DANGLING && labels["condition"] == "ResolvedRefs",
                "only {DANGLING} has a False condition (ResolvedRefs): {alert}"
            ),
            UNMATCHED_CALLS => ensure!(labels["frontend"] == FRONT, "{alert}"),
            _ => bail!("unexpected alert {alert}"),
        }
    }
    if !firing(HIGH_ERROR_RATE, &[("backend", CANARY), ("route", SPLIT)]) {
        unmet.push(format!("{HIGH_ERROR_RATE} firing for {CANARY}"));
    }
    let dangling = [
        ("route", DANGLING),
        ("parent", "shop/reports:7070"),
        ("condition", "ResolvedRefs"),
    ];
    if !firing(CONDITION_FALSE, &dangling) {
        unmet.push(format!("{CONDITION_FALSE} firing for {DANGLING}"));
    }
    if !firing(UNMATCHED_CALLS, &[("frontend", FRONT)]) {
        unmet.push(format!("{UNMATCHED_CALLS} firing for {FRONT}"));
    }
    Ok(State {
        unmet,
        alerts,
        ratios,
    })
}
