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
        ClusterConfig, ClusterConfigKind, ClusterState, ListenerState,
        cluster::{LbPolicyConfig, UpstreamTls},
        endpoint::EndpointConfig,
    },
    route::xds::XdsTable,
    snapshot::Snapshot,
    source::xds::{Bootstrap, XdsClient, XdsSnapshot},
    transport::{ResolvedSecurity, Security},
};

/// How often a LOGICAL_DNS cluster's host is resolved again.
const DNS_REFRESH: Duration = Duration::from_secs(30);

/// The xDS client of a mesh, once started, or the bootstrap to start it with.
#[derive(Debug)]
pub(crate) struct XdsSlot {
    bootstrap: Option<Bootstrap>,
    running: Option<Arc<XdsPart>>,
    /// The identities of TLS clusters (gRFC A29), one per (certificate instance, CA
    /// instance) pair: clusters naming the same instances share one file watch.
    #[cfg(feature = "tls")]
    identities: HashMap<(String, String), crate::identity::Identity>,
}

impl XdsSlot {
    pub(crate) fn new(bootstrap: Option<Bootstrap>) -> Self {
        Self {
            bootstrap,
            running: None,
            #[cfg(feature = "tls")]
            identities: HashMap::new(),
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
        // Kept: TLS clusters read its certificate providers.
        slot.bootstrap = Some(bootstrap.clone());
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
            let next = Snapshot {
                xds: table,
                xds_backends: backends,
                ..current.as_deref().cloned().unwrap_or_default()
            };
            let next = Arc::new(next);
            // Clusters the new table no longer reaches keep their endpoints: a call that
            // loaded the previous snapshot an instant ago still picks from them (emptying
            // them here failed such calls `UNAVAILABLE`, found by the convergence
            // benchmark). They leave the pool when the last holder drops them.
            drop(current);
            drop(self.core.snapshot.swap(Some(next.clone())));
            self.registry.prune();
            self.core.series.retain_reachable(|key| next.reaches(key));
        }
        state.xds.last = Some(snapshot.clone());
        self.published(&mut state, "xds");
    }

    /// Gives a cluster's backend the endpoints, policy and security `snapshot` has for it.
    fn set_cluster(&self, backend: &Arc<Backend>, name: &str, snapshot: &XdsSnapshot) {
        let Some(ClusterState::Ready(config)) = snapshot.clusters.get(name) else {
            backend.set_endpoints(&[]);
            return;
        };
        let security = match cluster_tls(config, snapshot) {
            Ok(tls) => self.xds_security(tls, &backend.security()),
            Err(reason) => ResolvedSecurity::Unusable(reason),
        };
        backend.set_resolved_security(security);
        match &config.kind {
            ClusterConfigKind::LogicalDns { host, port } => {
                let policy = policy(config, self.accrual.as_ref());
                let leaves = vec![Leaf::Dns {
                    host: host.clone(),
                    port: *port,
                }];
                resolve_and_set(backend, leaves, policy);
            }
            ClusterConfigKind::Aggregate { leaves } => {
                let (leaves, policy) = aggregate_leaves(leaves, snapshot, self.accrual.as_ref());
                if leaves.iter().any(|l| matches!(l, Leaf::Dns { .. })) {
                    resolve_and_set(backend, leaves, policy);
                } else {
                    stop_resolving(backend);
                    backend.set_spec(compose(&leaves, policy, &HashMap::new()));
                }
            }
            ClusterConfigKind::Eds { endpoints, .. } => {
                stop_resolving(backend);
                backend.set_spec(EndpointsSpec {
                    priorities: priorities(endpoints),
                    policy: policy(config, self.accrual.as_ref()),
                });
            }
        }
    }
}

impl Shared {
    /// The security of a cluster's connections: plaintext, or TLS with the certificate
    /// providers and SAN matchers of its `UpstreamTlsContext` (gRFC A29). A provider that
    /// cannot be used makes the cluster's calls fail `UNAVAILABLE` with the reason (never
    /// plaintext instead).
    #[cfg(feature = "tls")]
    fn xds_security(&self, tls: Option<&UpstreamTls>, current: &Security) -> ResolvedSecurity {
        use crate::{
            identity::{CredentialFiles, Identity},
            model::xds::route::StringMatch,
            transport::tls::{SanMatcher, TlsConnector, TlsSettings, TrustRoots, XdsServerCheck},
        };
        let Some(tls) = tls else {
            return ResolvedSecurity::Usable(Security::Plaintext);
        };
        let mut slot = self.xds.lock().unwrap_or_else(|e| e.into_inner());
        let Some(bootstrap) = slot.bootstrap.clone() else {
            return ResolvedSecurity::Unusable("TLS cluster: no bootstrap".into());
        };
        let unusable = |m: String| ResolvedSecurity::Unusable(format!("TLS cluster: {m}"));
        let ca = match bootstrap.file_watcher(&tls.ca_instance) {
            Ok(ca) => ca,
            Err(e) => return unusable(e),
        };
        let Some(ca_file) = ca.ca_certificate_file else {
            return unusable(format!(
                "certificate provider instance {:?} has no ca_certificate_file",
                tls.ca_instance
            ));
        };
        let (identity, roots) = match &tls.identity_instance {
            Some(name) => {
                let id = match bootstrap.file_watcher(name) {
                    Ok(id) => id,
                    Err(e) => return unusable(e),
                };
                let (Some(cert), Some(key)) = (id.certificate_file, id.private_key_file) else {
                    return unusable(format!(
                        "certificate provider instance {name:?} has no certificate_file"
                    ));
                };
                let key_of = (name.clone(), tls.ca_instance.clone());
                let identity = match slot.identities.get(&key_of) {
                    Some(identity) => identity.clone(),
                    None => {
                        // One watch of the three files: the CA instance's roots are read
                        // (and reloaded) with the certificate as the identity's bundle.
                        // Read once now as well: the watch's first read is
                        // asynchronous, and the cluster's first handshakes (made as soon as
                        // this returns) would otherwise find no certificate to present.
                        let first =
                            [&cert, &key, &ca_file].map(|p| std::fs::read(p).unwrap_or_default());
                        let files = CredentialFiles::new(cert, key, ca_file)
                            .refresh_interval(id.refresh_interval);
                        match Identity::from_files(files) {
                            Ok(identity) => {
                                if let Ok(credentials) = crate::identity::Credentials::from_pem(
                                    &first[0], &first[1], &first[2],
                                ) {
                                    identity.replace(credentials);
                                }
                                slot.identities.insert(key_of, identity.clone());
                                identity
                            }
                            Err(e) => return unusable(e.to_string()),
                        }
                    }
                };
                (Some(identity), TrustRoots::Mesh)
            }
            // TLS without a client certificate: the CA file is read now (again at each
            // update of the cluster), not watched.
            None => match std::fs::read(&ca_file)
                .map_err(|e| e.to_string())
                .and_then(|pem| TrustRoots::from_pem(&pem).map_err(|e| e.to_string()))
            {
                Ok(roots) => (None, roots),
                Err(e) => return unusable(format!("{}: {e}", ca_file.display())),
            },
        };
        drop(slot);
        let san_matchers = tls
            .san_matchers
            .iter()
            .map(|m| match m {
                StringMatch::Exact { value, ignore_case } => SanMatcher::Exact {
                    value: value.clone(),
                    ignore_case: *ignore_case,
                },
                StringMatch::Prefix { value, ignore_case } => SanMatcher::Prefix {
                    value: value.clone(),
                    ignore_case: *ignore_case,
                },
                StringMatch::Suffix { value, ignore_case } => SanMatcher::Suffix {
                    value: value.clone(),
                    ignore_case: *ignore_case,
                },
                StringMatch::Contains { value, ignore_case } => SanMatcher::Contains {
                    value: value.clone(),
                    ignore_case: *ignore_case,
                },
                StringMatch::Regex(r) => SanMatcher::Regex(r.pattern.clone()),
            })
            .collect();
        let providers = match &tls.identity_instance {
            Some(id) => format!("certificate {id:?}, CA {:?}", tls.ca_instance),
            None => format!("CA {:?}", tls.ca_instance),
        };
        let settings = TlsSettings::xds(
            roots,
            identity.is_some(),
            XdsServerCheck {
                providers,
                san_matchers,
            },
        );
        if current.settings() == Some(&settings) {
            return ResolvedSecurity::Usable(current.clone());
        }
        ResolvedSecurity::Usable(Security::Tls(Arc::new(TlsConnector::new(
            settings, identity,
        ))))
    }

    #[cfg(not(feature = "tls"))]
    #[allow(clippy::unused_self)]
    fn xds_security(&self, tls: Option<&UpstreamTls>, _current: &Security) -> ResolvedSecurity {
        match tls {
            None => ResolvedSecurity::Usable(Security::Plaintext),
            Some(_) => ResolvedSecurity::Unusable(
                "TLS cluster: this build has no TLS support (feature `tls`)".into(),
            ),
        }
    }
}

/// The TLS of a cluster: its own, or for an aggregate that of its leaves, which must
/// agree (a backend has one security; leaves that differ cannot be honoured).
fn cluster_tls<'a>(
    config: &'a ClusterConfig,
    snapshot: &'a XdsSnapshot,
) -> Result<Option<&'a UpstreamTls>, String> {
    let ClusterConfigKind::Aggregate { leaves } = &config.kind else {
        return Ok(config.tls.as_deref());
    };
    let mut ready = leaves
        .iter()
        .filter_map(|l| match snapshot.clusters.get(l) {
            Some(ClusterState::Ready(c)) => Some(c.tls.as_deref()),
            _ => None,
        });
    let first = ready.next().flatten();
    if ready.all(|t| t == first) {
        Ok(first)
    } else {
        Err(format!(
            "aggregate cluster {:?}: its leaf clusters differ in TLS settings, which is not supported",
            config.name
        ))
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

/// One leaf of a cluster's endpoints, in priority order.
#[derive(Clone, Debug, PartialEq)]
enum Leaf {
    /// An EDS leaf's priorities.
    Priorities(Vec<PrioritySpec>),
    /// A LOGICAL_DNS leaf: one priority of the addresses `host:port` resolves to (A37).
    Dns { host: String, port: u16 },
}

/// The leaves of an aggregate in its order (gRFC A37/A75) and its policy: the first
/// leaf's balancer, no circuit breaker of its own (gRPC applies each leaf's). Leaves not
/// ready are left out.
fn aggregate_leaves(
    leaves: &[String],
    snapshot: &XdsSnapshot,
    template: Option<&FailureAccrual>,
) -> (Vec<Leaf>, Policy) {
    let mut out = Vec::new();
    let mut first: Option<Policy> = None;
    for leaf in leaves {
        let Some(ClusterState::Ready(leaf)) = snapshot.clusters.get(leaf) else {
            continue;
        };
        match &leaf.kind {
            ClusterConfigKind::Eds { endpoints, .. } => {
                out.push(Leaf::Priorities(priorities(endpoints)));
            }
            ClusterConfigKind::LogicalDns { host, port } => out.push(Leaf::Dns {
                host: host.clone(),
                port: *port,
            }),
            // The dependency manager flattens nested aggregates into their leaves.
            ClusterConfigKind::Aggregate { .. } => continue,
        }
        first.get_or_insert(policy(leaf, template));
    }
    let policy = Policy {
        max_requests: None,
        ..first.unwrap_or_default()
    };
    (out, policy)
}

/// The endpoints of `leaves` one priority after the other: an EDS leaf's priorities, a
/// DNS leaf's addresses (from `resolved`) as one priority of one locality, or nothing
/// when it resolved to no address, so that the next leaf takes over (C-core's priority
/// policy over the aggregate's children).
fn compose(
    leaves: &[Leaf],
    policy: Policy,
    resolved: &HashMap<(String, u16), Vec<SocketAddr>>,
) -> EndpointsSpec {
    let mut priorities = Vec::new();
    for leaf in leaves {
        match leaf {
            Leaf::Priorities(p) => priorities.extend(p.iter().cloned()),
            Leaf::Dns { host, port } => {
                let Some(addrs) = resolved.get(&(host.clone(), *port)) else {
                    continue;
                };
                if addrs.is_empty() {
                    continue;
                }
                priorities.extend(EndpointsSpec::flat(addrs.clone()).priorities);
            }
        }
    }
    EndpointsSpec { priorities, policy }
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

/// Resolves the DNS leaves of a cluster (a LOGICAL_DNS cluster, or an aggregate with
/// LOGICAL_DNS leaves) now and every [`DNS_REFRESH`] while its backend lives, giving it
/// the composed endpoints each time. A host that fails to resolve keeps its last
/// addresses (none before its first success: then the next leaf serves).
fn resolve_and_set(backend: &Arc<Backend>, leaves: Vec<Leaf>, policy: Policy) {
    let weak = Arc::downgrade(backend);
    let task = tokio::spawn(async move {
        let mut resolved: HashMap<(String, u16), Vec<SocketAddr>> = HashMap::new();
        loop {
            for leaf in &leaves {
                let Leaf::Dns { host, port } = leaf else {
                    continue;
                };
                match tokio::net::lookup_host((host.as_str(), *port)).await {
                    Ok(addrs) => {
                        let found: Vec<SocketAddr> = addrs.collect();
                        if !found.is_empty() {
                            resolved.insert((host.clone(), *port), found);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%host, %error, "LOGICAL_DNS cluster: resolution failed");
                    }
                }
            }
            let Some(backend) = weak.upgrade() else {
                return;
            };
            backend.set_spec(compose(&leaves, policy, &resolved));
            drop(backend);
            tokio::time::sleep(DNS_REFRESH).await;
        }
    });
    backend.replace_task(task.abort_handle());
}

/// Ends a backend's DNS refresh, if it has one (its cluster is no longer resolved by
/// DNS: the task would otherwise overwrite the new endpoints).
fn stop_resolving(backend: &Backend) {
    // A finished task in its place aborts the previous one.
    backend.replace_task(tokio::spawn(async {}).abort_handle());
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        backend::Registry,
        model::xds::endpoint::{Endpoint, EndpointHealth, Locality, LocalityEndpoints, Priority},
        transport::TransportConfig,
    };

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn eds(name: &str, ports: &[u16]) -> ClusterConfig {
        let priorities = if ports.is_empty() {
            Vec::new()
        } else {
            vec![Priority {
                localities: vec![LocalityEndpoints {
                    locality: Locality::default(),
                    weight: 1,
                    endpoints: ports
                        .iter()
                        .map(|&p| Endpoint {
                            address: addr(p),
                            weight: 1,
                            health: EndpointHealth::Healthy,
                        })
                        .collect(),
                }],
            }]
        };
        ClusterConfig {
            name: name.to_string(),
            kind: ClusterConfigKind::Eds {
                eds_service_name: name.to_string(),
                endpoints: Arc::new(EndpointConfig {
                    priorities,
                    drop_overloads: Vec::new(),
                }),
            },
            lb_policy: LbPolicyConfig::RoundRobin,
            max_requests: 10,
            outlier_detection: None,
            tls: None,
        }
    }

    fn dns(name: &str, host: &str, port: u16) -> ClusterConfig {
        ClusterConfig {
            name: name.to_string(),
            kind: ClusterConfigKind::LogicalDns {
                host: host.to_string(),
                port,
            },
            lb_policy: LbPolicyConfig::LeastRequest { choice_count: 2 },
            max_requests: 5,
            outlier_detection: None,
            tls: None,
        }
    }

    fn snapshot(clusters: Vec<ClusterConfig>) -> XdsSnapshot {
        XdsSnapshot {
            generation: 1,
            listeners: BTreeMap::new(),
            clusters: clusters
                .into_iter()
                .map(|c| (c.name.clone(), ClusterState::Ready(Arc::new(c))))
                .collect(),
        }
    }

    fn tls(ca: &str) -> Option<Arc<UpstreamTls>> {
        Some(Arc::new(UpstreamTls {
            ca_instance: ca.into(),
            identity_instance: None,
            san_matchers: Vec::new(),
        }))
    }

    fn aggregate(name: &str, leaves: &[&str]) -> ClusterConfig {
        ClusterConfig {
            kind: ClusterConfigKind::Aggregate {
                leaves: leaves.iter().map(ToString::to_string).collect(),
            },
            ..eds(name, &[])
        }
    }

    #[test]
    fn an_aggregate_takes_the_tls_its_leaves_agree_on() {
        let same = snapshot(vec![
            ClusterConfig {
                tls: tls("ca"),
                ..eds("a", &[1])
            },
            ClusterConfig {
                tls: tls("ca"),
                ..eds("b", &[2])
            },
            aggregate("agg", &["a", "b"]),
        ]);
        let ClusterState::Ready(agg) = &same.clusters["agg"] else {
            panic!("not ready")
        };
        assert_eq!(
            cluster_tls(agg, &same)
                .unwrap()
                .map(|t| t.ca_instance.as_str()),
            Some("ca")
        );
        // One leaf in plaintext, one with TLS: the aggregate cannot be honoured.
        let differ = snapshot(vec![
            ClusterConfig {
                tls: tls("ca"),
                ..eds("a", &[1])
            },
            eds("b", &[2]),
            aggregate("agg", &["a", "b"]),
        ]);
        let ClusterState::Ready(agg) = &differ.clusters["agg"] else {
            panic!("not ready")
        };
        let e = cluster_tls(agg, &differ).unwrap_err();
        assert!(
            e.contains("differ in TLS settings") && e.contains("agg"),
            "{e}"
        );
    }

    /// Each priority's addresses.
    fn by_priority(spec: &EndpointsSpec) -> Vec<Vec<SocketAddr>> {
        spec.priorities
            .iter()
            .map(|p| p.localities.iter().flat_map(|l| l.addrs.clone()).collect())
            .collect()
    }

    #[test]
    fn an_aggregate_falls_through_to_its_logical_dns_leaf() {
        let names = ["eds".to_string(), "dns".to_string()];
        let resolved = HashMap::from([(("dns.example".to_string(), 9000), vec![addr(9000)])]);
        // Both leaves: the EDS leaf's priority first, then the DNS leaf's addresses.
        let s = snapshot(vec![eds("eds", &[1, 2]), dns("dns", "dns.example", 9000)]);
        let (leaves, policy) = aggregate_leaves(&names, &s, None);
        assert_eq!(
            by_priority(&compose(&leaves, policy, &resolved)),
            [vec![addr(1), addr(2)], vec![addr(9000)]]
        );
        // The first leaf's balancer, no circuit breaker of the aggregate's own.
        assert_eq!(policy.balancer, Balancer::RoundRobin);
        assert_eq!(policy.max_requests, None);
        // The EDS leaf without endpoints: the DNS leaf is the only priority (C-core's
        // priority policy moves to the next child).
        let s = snapshot(vec![eds("eds", &[]), dns("dns", "dns.example", 9000)]);
        let (leaves, policy) = aggregate_leaves(&names, &s, None);
        assert_eq!(
            by_priority(&compose(&leaves, policy, &resolved)),
            [vec![addr(9000)]]
        );
        // Not resolved (yet): the EDS leaf alone.
        let s = snapshot(vec![eds("eds", &[1]), dns("dns", "dns.example", 9000)]);
        let (leaves, policy) = aggregate_leaves(&names, &s, None);
        assert_eq!(
            by_priority(&compose(&leaves, policy, &HashMap::new())),
            [vec![addr(1)]]
        );
        // A DNS leaf first gives its balancer.
        let names = ["dns".to_string(), "eds".to_string()];
        let (leaves, policy) = aggregate_leaves(&names, &s, None);
        assert_eq!(policy.balancer, Balancer::PeakEwma);
        assert_eq!(
            by_priority(&compose(&leaves, policy, &resolved)),
            [vec![addr(9000)], vec![addr(1)]]
        );
    }

    #[tokio::test]
    async fn a_cluster_no_longer_resolved_by_dns_keeps_its_new_endpoints() {
        let registry = Registry::new(TransportConfig::default());
        let (backend, _) = registry.get_or_create(&BackendKey::Cluster("c".into()));
        let leaves = vec![Leaf::Dns {
            host: "localhost".to_string(),
            port: 9000,
        }];
        resolve_and_set(&backend, leaves, Policy::default());
        // The DNS leaf resolves: its addresses are set.
        tokio::time::timeout(Duration::from_secs(10), async {
            while backend.endpoints().is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("a_cluster_no_longer_resolved_by_dns: localhost resolves");
        // The cluster becomes EDS: the DNS refresh stops, the EDS endpoints stay.
        stop_resolving(&backend);
        backend.set_spec(EndpointsSpec::flat(vec![addr(1)]));
        tokio::task::yield_now().await;
        tokio::time::pause();
        tokio::time::advance(DNS_REFRESH * 3).await;
        tokio::time::resume();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now: Vec<SocketAddr> = backend.endpoints().all().iter().map(|e| e.addr()).collect();
        assert_eq!(now, [addr(1)]);
    }
}
