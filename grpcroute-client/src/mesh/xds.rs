//! The xDS part of a mesh: the client (started with the first `xds:` channel), the
//! listeners channels watch, and how an xDS snapshot becomes the listener table and the
//! clusters' backends.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use super::shared::Shared;
use crate::{
    backend::{
        Backend, BackendKey, Balancer, EndpointsSpec, LocalitySpec, Policy, PrioritySpec,
        accrual::{Accrual, FailureAccrual},
    },
    model::xds::{
        ClusterConfig, ClusterConfigKind, ClusterState, ListenerState, cluster::LbPolicyConfig,
        endpoint::EndpointConfig,
    },
    route::xds::XdsTable,
    snapshot::Snapshot,
    source::xds::{Bootstrap, XdsClient, XdsSnapshot},
};

/// How often a LOGICAL_DNS cluster's host is resolved again.
const DNS_REFRESH: Duration = Duration::from_secs(30);

/// The xDS client of a mesh, once started, or the bootstrap to start it with.
#[derive(Debug)]
pub(crate) struct XdsSlot {
    bootstrap: Option<Bootstrap>,
    running: Option<Arc<XdsPart>>,
}

impl XdsSlot {
    pub(crate) fn new(bootstrap: Option<Bootstrap>) -> Self {
        Self {
            bootstrap,
            running: None,
        }
    }
}

impl Shared {
    /// The running xDS client, started now if it is not yet (from the builder's bootstrap,
    /// else the environment's).
    pub(crate) fn xds_part(self: &Arc<Self>) -> Result<Arc<XdsPart>, String> {
        let mut slot = self.xds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = &slot.running {
            return Ok(running.clone());
        }
        let bootstrap = match slot.bootstrap.clone() {
            Some(b) => b,
            None => Bootstrap::from_env().map_err(|e| e.to_string())?,
        };
        let part = Arc::new(XdsPart::start(bootstrap, Arc::downgrade(self))?);
        slot.running = Some(part.clone());
        Ok(part)
    }

    /// The running xDS client, if an `xds:` channel started one.
    pub(crate) fn xds_client(&self) -> Option<XdsClient> {
        let slot = self.xds.lock().unwrap_or_else(|e| e.into_inner());
        slot.running.as_ref().map(|p| p.client.clone())
    }
}

/// The running xDS client of a mesh and the listeners its channels watch.
#[derive(Debug)]
pub(crate) struct XdsPart {
    pub(crate) client: XdsClient,
    interests: Mutex<HashMap<String, Weak<ListenerInterest>>>,
    task: tokio::task::AbortHandle,
}

impl Drop for XdsPart {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A channel's interest in a listener: the listener stays watched while one is held.
#[derive(Debug)]
pub(crate) struct ListenerInterest {
    name: String,
    client: XdsClient,
}

impl Drop for ListenerInterest {
    fn drop(&mut self) {
        self.client.unwatch_listener(self.name.clone());
    }
}

impl XdsPart {
    /// Starts the client for `bootstrap` and the task that applies its snapshots to
    /// `shared` (held weakly: the task ends with the mesh).
    pub(crate) fn start(bootstrap: Bootstrap, shared: Weak<Shared>) -> Result<Self, String> {
        let client = XdsClient::start(bootstrap).map_err(|e| e.to_string())?;
        let mut snapshots = client.snapshots();
        let task = tokio::spawn(async move {
            loop {
                let snapshot = snapshots.borrow_and_update().clone();
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                shared.apply_xds(&snapshot);
                drop(shared);
                if snapshots.changed().await.is_err() {
                    return;
                }
            }
        })
        .abort_handle();
        Ok(Self {
            client,
            interests: Mutex::new(HashMap::new()),
            task,
        })
    }

    /// An interest in listener `name`, watching it if no channel does yet.
    pub(crate) fn interest(&self, name: &str) -> Arc<ListenerInterest> {
        let mut interests = self.interests.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = interests.get(name).and_then(Weak::upgrade) {
            return existing;
        }
        let interest = Arc::new(ListenerInterest {
            name: name.to_string(),
            client: self.client.clone(),
        });
        self.client.watch_listener(name);
        interests.retain(|_, w| w.strong_count() > 0);
        interests.insert(name.to_string(), Arc::downgrade(&interest));
        interest
    }
}

/// What the mesh keeps of the last xDS snapshot it applied.
#[derive(Debug, Default)]
pub(crate) struct XdsState {
    last: Option<Arc<XdsSnapshot>>,
}

impl Shared {
    /// Applies an xDS snapshot. When only clusters' endpoints or settings changed, their
    /// backends are updated in place; otherwise the listener table is compiled again.
    pub(crate) fn apply_xds(&self, snapshot: &Arc<XdsSnapshot>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let same_routing = state
            .xds
            .last
            .as_ref()
            .is_some_and(|last| same_routing(last, snapshot));
        let current = self.core.snapshot.load_full();
        if same_routing && let Some(current) = &current {
            // Endpoint-only (EDS) or cluster-setting (CDS) changes: one backend each, and
            // the aggregates over them.
            let changed: HashSet<&str> = snapshot
                .clusters
                .iter()
                .filter(|(name, cluster)| {
                    state_changed(
                        state_of(state.xds.last.as_deref(), name.as_str()),
                        Some(cluster),
                    )
                })
                .map(|(name, _)| name.as_str())
                .collect();
            for (key, backend) in current.xds.backends.iter().zip(current.xds_backends.iter()) {
                let BackendKey::Cluster(name) = key else {
                    continue;
                };
                let touched = changed.contains(&**name)
                    || leaves_of(snapshot, name)
                        .iter()
                        .any(|l| changed.contains(l.as_str()));
                if touched {
                    self.set_cluster(backend, name, snapshot);
                }
            }
        } else {
            let table = Arc::new(XdsTable::compile(&snapshot.listeners, &snapshot.clusters));
            let backends: Arc<[Arc<Backend>]> = table
                .backends
                .iter()
                .map(|key| {
                    let (backend, _) = self.registry.get_or_create(key);
                    if let BackendKey::Cluster(name) = key {
                        self.set_cluster(&backend, name, snapshot);
                    }
                    backend
                })
                .collect();
            let bound: HashSet<*const Backend> = backends.iter().map(Arc::as_ptr).collect();
            let next = Snapshot {
                xds: table,
                xds_backends: backends,
                ..current.as_deref().cloned().unwrap_or_default()
            };
            let next = Arc::new(next);
            let previous = self.core.snapshot.swap(Some(next.clone()));
            if let Some(previous) = previous {
                for b in previous.xds_backends.iter() {
                    if !bound.contains(&Arc::as_ptr(b)) {
                        b.set_endpoints(&[]);
                    }
                }
            }
            self.registry.prune();
            self.core.series.retain_reachable(|key| next.reaches(key));
        }
        state.xds.last = Some(snapshot.clone());
        self.published(&mut state, "xds");
    }

    /// Gives a cluster's backend the endpoints and policy `snapshot` has for it.
    fn set_cluster(&self, backend: &Arc<Backend>, name: &str, snapshot: &XdsSnapshot) {
        let Some(ClusterState::Ready(config)) = snapshot.clusters.get(name) else {
            backend.set_endpoints(&[]);
            return;
        };
        match &config.kind {
            ClusterConfigKind::LogicalDns { host, port } => {
                let policy = policy(config, self.accrual.as_ref());
                resolve_logical_dns(backend, host.clone(), *port, policy);
            }
            _ => {
                backend.set_spec(spec(config, snapshot, self.accrual.as_ref()));
            }
        }
    }
}

/// Whether two snapshots route the same: the same listeners in the same states (by
/// identity), and the same clusters, each usable in both or failed alike.
fn same_routing(a: &XdsSnapshot, b: &XdsSnapshot) -> bool {
    let listeners_same = a.listeners.len() == b.listeners.len()
        && a.listeners
            .iter()
            .zip(&b.listeners)
            .all(|((na, la), (nb, lb))| {
                na == nb
                    && match (la, lb) {
                        (ListenerState::Ready(x), ListenerState::Ready(y)) => Arc::ptr_eq(x, y),
                        (x, y) => x == y,
                    }
            });
    let clusters_same = a.clusters.len() == b.clusters.len()
        && a.clusters
            .iter()
            .zip(&b.clusters)
            .all(|((na, ca), (nb, cb))| {
                na == nb
                    && match (ca, cb) {
                        (ClusterState::Ready(_), ClusterState::Ready(_)) => true,
                        (x, y) => x == y,
                    }
            });
    listeners_same && clusters_same
}

fn state_of<'a>(snapshot: Option<&'a XdsSnapshot>, name: &str) -> Option<&'a ClusterState> {
    snapshot?.clusters.get(name)
}

fn state_changed(before: Option<&ClusterState>, after: Option<&ClusterState>) -> bool {
    match (before, after) {
        (Some(ClusterState::Ready(a)), Some(ClusterState::Ready(b))) => !Arc::ptr_eq(a, b),
        (a, b) => a != b,
    }
}

/// The leaf clusters of an aggregate (empty for any other cluster).
fn leaves_of<'a>(snapshot: &'a XdsSnapshot, name: &str) -> &'a [String] {
    match snapshot.clusters.get(name) {
        Some(ClusterState::Ready(c)) => match &c.kind {
            ClusterConfigKind::Aggregate { leaves } => leaves,
            _ => &[],
        },
        _ => &[],
    }
}

/// A cluster's policy. Outlier detection (gRFC A50) becomes failure accrual with the
/// cluster's ejection times and share; A50's success-rate and failure-percentage
/// statistics are approximated by the mesh's consecutive-failure rule (documented).
fn policy(config: &ClusterConfig, template: Option<&FailureAccrual>) -> Policy {
    let accrual = config.outlier_detection.as_ref().map(|od| {
        let base = template.cloned().unwrap_or_default();
        Accrual::from(&FailureAccrual {
            base_ejection: od.base_ejection_time,
            max_ejection: od.max_ejection_time.max(od.base_ejection_time),
            max_ejected_percent: u8::try_from(od.max_ejection_percent.min(100)).unwrap_or(100),
            ..base
        })
    });
    Policy {
        accrual,
        balancer: match config.lb_policy {
            LbPolicyConfig::RoundRobin => Balancer::RoundRobin,
            // P2C over peak-EWMA: `least_request` with the latency-aware load linkerd uses;
            // `choice_count` above 2 is not honoured (documented).
            LbPolicyConfig::LeastRequest { .. } => Balancer::PeakEwma,
        },
        max_requests: Some(config.max_requests),
    }
}

/// The endpoints and policy of an EDS cluster, or of an aggregate: the leaves' priorities
/// one after the other, in the aggregate's order (gRFC A37/A75), with the first leaf's
/// balancer. An aggregate has no circuit breaker of its own (gRPC applies each leaf's).
fn spec(
    config: &ClusterConfig,
    snapshot: &XdsSnapshot,
    template: Option<&FailureAccrual>,
) -> EndpointsSpec {
    match &config.kind {
        ClusterConfigKind::Eds { endpoints, .. } => EndpointsSpec {
            priorities: priorities(endpoints),
            policy: policy(config, template),
        },
        ClusterConfigKind::Aggregate { leaves } => {
            let mut priorities_all = Vec::new();
            let mut first: Option<Policy> = None;
            for leaf in leaves {
                let Some(ClusterState::Ready(leaf)) = snapshot.clusters.get(leaf) else {
                    continue;
                };
                if let ClusterConfigKind::Eds { endpoints, .. } = &leaf.kind {
                    priorities_all.extend(priorities(endpoints));
                    first.get_or_insert(policy(leaf, template));
                }
            }
            EndpointsSpec {
                priorities: priorities_all,
                policy: Policy {
                    max_requests: None,
                    ..first.unwrap_or_default()
                },
            }
        }
        ClusterConfigKind::LogicalDns { .. } => EndpointsSpec::default(),
    }
}

fn priorities(endpoints: &EndpointConfig) -> Vec<PrioritySpec> {
    endpoints
        .priorities
        .iter()
        .map(|p| PrioritySpec {
            localities: p
                .localities
                .iter()
                .map(|l| LocalitySpec {
                    name: format!(
                        "{}/{}/{}",
                        l.locality.region, l.locality.zone, l.locality.sub_zone
                    )
                    .into(),
                    weight: l.weight,
                    addrs: l.endpoints.iter().map(|e| e.address).collect(),
                })
                .collect(),
        })
        .collect()
}

/// Resolves a LOGICAL_DNS cluster's host now and every [`DNS_REFRESH`] while its backend
/// lives, giving it every address found (gRFC A37: one locality, one priority).
fn resolve_logical_dns(backend: &Arc<Backend>, host: String, port: u16, policy: Policy) {
    let weak = Arc::downgrade(backend);
    let task = tokio::spawn(async move {
        loop {
            let found: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), port)).await
            {
                Ok(addrs) => addrs.collect(),
                Err(error) => {
                    tracing::warn!(%host, %error, "LOGICAL_DNS cluster: resolution failed");
                    Vec::new()
                }
            };
            let Some(backend) = weak.upgrade() else {
                return;
            };
            if !found.is_empty() {
                let mut spec = EndpointsSpec::flat(found);
                spec.policy = policy;
                backend.set_spec(spec);
            }
            drop(backend);
            tokio::time::sleep(DNS_REFRESH).await;
        }
    });
    backend.replace_task(task.abort_handle());
}
