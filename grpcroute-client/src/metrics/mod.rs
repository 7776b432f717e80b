//! Prometheus metrics of a mesh: what happened to the calls (by frontend, route, rule,
//! backend and gRPC status, with latency) and the state of the configuration (version,
//! rejected objects, route conditions, source connection).
//!
//! Calls record into atomic counters that the routing table holds for every (frontend,
//! rule, backend) it can route to, so recording takes no lock; a scrape reads them.

mod http;

use std::{
    fmt::Write as _,
    sync::{Arc, Weak},
    time::UNIX_EPOCH,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};
use tonic::Code;

pub use self::http::serve_metrics;
use crate::{
    route::table::ConditionStatus,
    series::{self, BUCKETS, CallStats, SeriesKey, SeriesRegistry},
    snapshot::Snapshot,
    source::SourceHealth,
};

/// What the metrics read of a mesh, on each scrape.
pub(crate) trait MetricsView: Send + Sync {
    /// The call series.
    fn series(&self) -> &SeriesRegistry;
    /// The configuration in force.
    fn snapshot(&self) -> Option<Arc<Snapshot>>;
    /// The source's health and the configuration's version.
    fn health(&self) -> SourceHealth;
    /// How many endpoint addresses the backends list.
    fn endpoint_count(&self) -> usize;
    /// The xDS client's counters and resources, once it runs.
    #[cfg(feature = "xds")]
    fn xds(&self) -> Option<crate::source::xds::XdsClient>;
}

/// The metrics of a [`Mesh`](crate::Mesh), for Prometheus.
///
/// Get one with [`Mesh::metrics`](crate::Mesh::metrics), then either add it to the
/// application's own [`prometheus_client`] registry with [`Metrics::register`], or render
/// it alone with [`Metrics::encode`] and serve that on the application's `/metrics`.
/// The handle does not keep the mesh alive: once every clone of the mesh is dropped, it
/// reports nothing.
///
/// | metric | type | labels |
/// |---|---|---|
/// | `grpcroute_client_calls_total` | counter | `frontend`, `route`, `rule`, `backend`, `grpc_code` |
/// | `grpcroute_client_call_duration_seconds` | histogram | `frontend`, `route`, `rule`, `backend` |
/// | `grpcroute_config_version` | gauge | |
/// | `grpcroute_config_last_update_timestamp_seconds` | gauge | |
/// | `grpcroute_config_rejected_objects` | gauge | |
/// | `grpcroute_route_condition` | gauge (1 True, 0 False) | `route`, `parent`, `condition` |
/// | `grpcroute_endpoints` | gauge | |
/// | `grpcroute_source_connected` | gauge (1 or 0) | |
/// | `grpcroute_client_endpoint_ejections_total` | counter | `backend` |
/// | `grpcroute_client_endpoints_ejected` | gauge | `backend` |
/// | `grpcroute_client_mirrors_in_flight` | gauge | `backend` |
/// | `grpcroute_client_mirrors_dropped_total` | counter | `backend` |
/// | `grpcroute_client_mirrors_timed_out_total` | counter | `backend` |
/// | `grpcroute_xds_client_connected` | gauge (1 or 0) | (with the `xds` feature, once an `xds:` channel exists) |
/// | `grpcroute_xds_client_server_failures_total` | counter | |
/// | `grpcroute_xds_client_resource_updates_valid_total` | counter | `resource_type` |
/// | `grpcroute_xds_client_resource_updates_invalid_total` | counter | `resource_type` |
/// | `grpcroute_xds_client_resources` | gauge | `resource_type`, `cache_state` |
///
/// For calls to an xDS listener, `frontend` is `xds:///<listener>`, `route` the route
/// configuration and virtual host (`<route config>/<virtual host>`), `rule` the route's index
/// in it and `backend` the cluster.
///
/// A call is counted once it ends, under its final status: the one the server sent, the
/// one the mesh answered with (`UNIMPLEMENTED` when no rule matched, `UNAVAILABLE` for an
/// invalid or endpoint-less backend), or `CANCELLED` when the caller dropped it first.
/// `frontend` is the Service port called (`namespace/name:port`), `route` the GRPCRoute
/// whose rule took the call (`namespace/name`) and `rule` its index, `backend` the
/// Service port picked by weight; a label that does not apply is empty (no route for a
/// pass-through call; no backend when the call was refused before one was picked; all
/// empty for a call to a Service the mesh does not know). Series of routes and backends
/// that leave the configuration are dropped.
///
/// The alert of a canary whose error rate runs away:
///
/// ```text
/// 1 - (sum by (route, backend) (rate(grpcroute_client_calls_total{route!="", grpc_code="OK"}[5m]))
///      / sum by (route, backend) (rate(grpcroute_client_calls_total{route!=""}[5m]))) > 0.05
/// ```
///
/// (`1 - OK / all` rather than `failed / all`: every series has its `OK` sample from the
/// start, so a backend that never failed is at 0 rather than absent.)
#[derive(Clone, Debug)]
pub struct Metrics {
    view: Weak<dyn MetricsView>,
}

impl Metrics {
    pub(crate) fn new(view: Weak<dyn MetricsView>) -> Self {
        Self { view }
    }

    /// Adds these metrics to `registry`, read on each of its scrapes.
    pub fn register(self, registry: &mut Registry) {
        registry.register_collector(Box::new(self));
    }

    /// The metrics in the OpenMetrics text format (`application/openmetrics-text;
    /// version=1.0.0; charset=utf-8`), ending with `# EOF`.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut registry = Registry::default();
        self.clone().register(&mut registry);
        let mut out = String::new();
        // Writing to a String cannot fail, and every value encodes.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

impl Collector for Metrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let Some(view) = self.view.upgrade() else {
            return Ok(());
        };
        encode_calls(&*view, &mut encoder)?;
        encode_config(&*view, &mut encoder)?;
        encode_backends(&*view, &mut encoder)?;
        #[cfg(feature = "xds")]
        encode_xds(&*view, &mut encoder)?;
        Ok(())
    }
}

fn encode_calls(view: &dyn MetricsView, encoder: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
    let registered = view.series().snapshot();
    // The unrouted series first: every label empty.
    let series: Vec<(Labels, &CallStats)> =
        std::iter::once((labels(None), view.series().unrouted()))
            .chain(
                registered
                    .iter()
                    .map(|(key, stats)| (labels(Some(key)), &**stats)),
            )
            .collect();

    let mut calls = encoder.encode_descriptor(
        "grpcroute_client_calls",
        "Calls routed by the mesh, by frontend Service port, route, rule, backend and final gRPC status.",
        None,
        MetricType::Counter,
    )?;
    for (key, stats) in &series {
        for code in 0..series::CODES {
            let code = Code::from_i32(code as i32);
            let n = stats.count(code);
            // OK is always there, so that error ratios have a denominator from the start.
            if n == 0 && code != Code::Ok {
                continue;
            }
            let labels = (&key[..], [("grpc_code", code_name(code))]);
            ConstCounter::new(n).encode(calls.encode_family(&labels)?)?;
        }
    }

    let mut durations = encoder.encode_descriptor(
        "grpcroute_client_call_duration",
        "Time from a call entering the mesh to the end of its response.",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for (key, stats) in &series {
        let counts = stats.buckets();
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(counts)
            .collect();
        durations
            .encode_family(key)?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                stats.sum_seconds(),
                counts.iter().sum(),
                &buckets,
                None,
            )?;
    }
    Ok(())
}

/// The labels of a series of calls.
type Labels = [(&'static str, String); 4];

/// `frontend`, `route`, `rule` and `backend` of a series; empty where they do not apply
/// (all of them for the unrouted series, `None`). For an xDS listener: `frontend` is
/// `xds:///<listener>`, `route` the route configuration and virtual host
/// (`<route config>/<virtual host>`), `rule` the route's index in it, `backend` the
/// cluster.
fn labels(key: Option<&SeriesKey>) -> Labels {
    let (frontend, route, rule, backend) = match key {
        None => (None, None, None, None),
        Some(SeriesKey::Service(k)) => {
            let (route, rule) = k
                .rule
                .as_ref()
                .map(|(route, index)| (route.to_string(), index.to_string()))
                .unzip();
            (
                k.frontend
                    .as_ref()
                    .map(|(service, port)| format!("{service}:{port}")),
                route,
                rule,
                k.backend.as_ref().map(ToString::to_string),
            )
        }
        Some(SeriesKey::Listener(k)) => {
            let (route, rule) = k
                .route
                .as_ref()
                .map(|(route, index)| (route.to_string(), index.to_string()))
                .unzip();
            (
                Some(format!("xds:///{}", k.listener)),
                route,
                rule,
                k.cluster.as_ref().map(ToString::to_string),
            )
        }
    };
    let [frontend, route, rule, backend] =
        [frontend, route, rule, backend].map(Option::unwrap_or_default);
    [
        ("frontend", frontend),
        ("route", route),
        ("rule", rule),
        ("backend", backend),
    ]
}

fn encode_config(view: &dyn MetricsView, encoder: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
    let health = view.health();
    let snapshot = view.snapshot();

    let gauge = |encoder: &mut DescriptorEncoder<'_>, name, help, unit, value: f64| {
        ConstGauge::new(value).encode(encoder.encode_descriptor(
            name,
            help,
            unit,
            MetricType::Gauge,
        )?)
    };
    gauge(
        encoder,
        "grpcroute_config_version",
        "Configuration updates applied; 0 until the first.",
        None,
        health.version as f64,
    )?;
    gauge(
        encoder,
        "grpcroute_config_last_update_timestamp",
        "When the configuration was last updated (Unix time); 0 before the first update.",
        Some(&Unit::Seconds),
        health
            .last_update
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64()),
    )?;
    gauge(
        encoder,
        "grpcroute_config_rejected_objects",
        "Objects of the current configuration left out because they are invalid.",
        None,
        snapshot.as_ref().map_or(0, |s| s.table.rejected.len()) as f64,
    )?;
    gauge(
        encoder,
        "grpcroute_endpoints",
        "Endpoint addresses the routing table can send calls to.",
        None,
        view.endpoint_count() as f64,
    )?;
    gauge(
        encoder,
        "grpcroute_source_connected",
        "1 while the configuration source reaches where its configuration comes from.",
        None,
        if health.connected { 1.0 } else { 0.0 },
    )?;

    let mut conditions = encoder.encode_descriptor(
        "grpcroute_route_condition",
        "The conditions the mesh computes for each Service parent of each GRPCRoute: 1 True, 0 False.",
        None,
        MetricType::Gauge,
    )?;
    let mut parent = String::new();
    for route in snapshot.iter().flat_map(|s| &s.table.statuses) {
        let name = route.route.to_string();
        for p in &route.parents {
            let r = &p.parent_ref;
            parent.clear();
            let ns = r.namespace.as_deref().unwrap_or(route.route.namespace());
            let _ = write!(parent, "{ns}/{}", r.name);
            if let Some(port) = r.port {
                let _ = write!(parent, ":{port}");
            }
            for c in &p.conditions {
                let labels = [
                    ("route", name.as_str()),
                    ("parent", parent.as_str()),
                    ("condition", c.type_),
                ];
                let value = i64::from(c.status == ConditionStatus::True);
                ConstGauge::new(value).encode(conditions.encode_family(&labels)?)?;
            }
        }
    }
    Ok(())
}

/// The runtime state of the backends the configuration names: ejected endpoints and
/// mirrored calls.
fn encode_backends(
    view: &dyn MetricsView,
    encoder: &mut DescriptorEncoder<'_>,
) -> std::fmt::Result {
    let Some(snapshot) = view.snapshot() else {
        return Ok(());
    };
    let all = snapshot.all_backends();
    let mut ejections = encoder.encode_descriptor(
        "grpcroute_client_endpoint_ejections",
        "Endpoints ejected by failure accrual, by backend.",
        None,
        MetricType::Counter,
    )?;
    for b in &all {
        let labels = [("backend", &**b.label())];
        ConstCounter::new(b.ejections()).encode(ejections.encode_family(&labels)?)?;
    }
    let mut ejected = encoder.encode_descriptor(
        "grpcroute_client_endpoints_ejected",
        "Endpoints out of rotation now (ejected by failure accrual), by backend.",
        None,
        MetricType::Gauge,
    )?;
    for b in &all {
        let labels = [("backend", &**b.label())];
        ConstGauge::new(b.ejected().len() as i64).encode(ejected.encode_family(&labels)?)?;
    }
    // Only backends that mirrored calls reached: most never are mirror targets.
    let mirrored: Vec<_> = all
        .iter()
        .filter(|b| {
            b.mirrors.in_flight() > 0 || b.mirrors.dropped() > 0 || b.mirrors.timeouts() > 0
        })
        .collect();
    let mut in_flight = encoder.encode_descriptor(
        "grpcroute_client_mirrors_in_flight",
        "Mirrored calls (RequestMirror) running now, by mirror backend.",
        None,
        MetricType::Gauge,
    )?;
    for b in &mirrored {
        let labels = [("backend", &**b.label())];
        ConstGauge::new(b.mirrors.in_flight() as i64).encode(in_flight.encode_family(&labels)?)?;
    }
    let mut dropped = encoder.encode_descriptor(
        "grpcroute_client_mirrors_dropped",
        "Mirrored calls not made because the mirror backend already had its limit in flight.",
        None,
        MetricType::Counter,
    )?;
    for b in &mirrored {
        let labels = [("backend", &**b.label())];
        ConstCounter::new(b.mirrors.dropped()).encode(dropped.encode_family(&labels)?)?;
    }
    let mut timed_out = encoder.encode_descriptor(
        "grpcroute_client_mirrors_timed_out",
        "Mirrored calls abandoned at the mirror timeout.",
        None,
        MetricType::Counter,
    )?;
    for b in &mirrored {
        let labels = [("backend", &**b.label())];
        ConstCounter::new(b.mirrors.timeouts()).encode(timed_out.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The xDS client, as gRFC A78 names its metrics: whether the ADS stream is up, server
/// failures, valid and invalid resource updates by type, and resources by cache state.
#[cfg(feature = "xds")]
fn encode_xds(view: &dyn MetricsView, encoder: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
    use crate::source::xds::resource::ResourceType;

    let Some(client) = view.xds() else {
        return Ok(());
    };
    let m = client.metrics();
    ConstGauge::new(i64::from(m.connected)).encode(encoder.encode_descriptor(
        "grpcroute_xds_client_connected",
        "1 while the ADS stream to the xDS control plane is up.",
        None,
        MetricType::Gauge,
    )?)?;
    ConstCounter::new(m.server_failures).encode(encoder.encode_descriptor(
        "grpcroute_xds_client_server_failures",
        "ADS streams that failed (connectivity errors, streams closed before any response).",
        None,
        MetricType::Counter,
    )?)?;
    for (name, help, counts) in [
        (
            "grpcroute_xds_client_resource_updates_valid",
            "Resources received and accepted, by type.",
            m.resource_updates_valid,
        ),
        (
            "grpcroute_xds_client_resource_updates_invalid",
            "Resources received and rejected (NACKed), by type.",
            m.resource_updates_invalid,
        ),
    ] {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for ty in ResourceType::ALL {
            let labels = [("resource_type", ty.name())];
            ConstCounter::new(counts[ty.index()]).encode(family.encode_family(&labels)?)?;
        }
    }
    let mut by_state: std::collections::BTreeMap<(&str, &str), i64> = Default::default();
    for r in client.dump() {
        *by_state
            .entry((r.resource_type.name(), r.state.name()))
            .or_default() += 1;
    }
    let mut resources = encoder.encode_descriptor(
        "grpcroute_xds_client_resources",
        "Subscribed resources by type and cache state (REQUESTED, DOES_NOT_EXIST, ACKED, NACKED).",
        None,
        MetricType::Gauge,
    )?;
    for ((ty, state), n) in by_state {
        let labels = [("resource_type", ty), ("cache_state", state)];
        ConstGauge::new(n).encode(resources.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The canonical name of a gRPC status code (`"OK"`, `"UNAVAILABLE"`), as gRPC's
/// documentation writes them and as the mesh's metrics label calls.
#[must_use]
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
