//! The xDS dependency manager (gRFC A74 "xDS Config Tears"): follows each listener of
//! interest through its RouteConfiguration, the virtual host that matches the listener
//! name, every cluster its routes can reach (aggregate clusters recursively) and their
//! endpoints; says which resources to subscribe to; and publishes an immutable
//! [`XdsSnapshot`] in which only **complete** configurations are live.
//!
//! Rules:
//! - A listener's new configuration goes live only once every cluster it references is
//!   resolved (arrived, or failed for good). Until then the listener keeps serving its last
//!   complete configuration, whose resources stay subscribed.
//! - Listener and route problems fail the listener (A74: does-not-exist, invalid without a
//!   cached copy, unreachable before it arrived, not an API listener, no matching virtual
//!   host). Cluster problems only fail that cluster.
//! - Unchanged parts keep their `Arc` across snapshots, so the data plane can do
//!   O(change) work with `Arc::ptr_eq`: an EDS update replaces only that cluster's `Arc`.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

pub(crate) use crate::model::xds::{
    ClusterConfig, ClusterConfigKind, ClusterState, FailureKind, ListenerConfig, ListenerState,
    XdsFailure,
};

use super::{
    client::cache::{Lookup, LookupFailure, ResourceLookup},
    resource::{
        Resource, ResourceType,
        cluster::{Cluster, ClusterKind},
        listener::{ListenerKind, RouteSource},
    },
};
use crate::route::xds::matching::select_virtual_host;

/// A37: the tree of aggregate clusters has a depth limit of 16.
const MAX_AGGREGATE_DEPTH: usize = 16;

/// What the data plane consumes: every listener of interest and every cluster they use.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct XdsSnapshot {
    /// Increases with every published change.
    pub(crate) generation: u64,
    /// Per listener name of interest.
    pub(crate) listeners: BTreeMap<String, ListenerState>,
    /// Every cluster a live listener configuration can reach, including the leaves and
    /// intermediate nodes of aggregate clusters.
    pub(crate) clusters: BTreeMap<String, ClusterState>,
}

impl From<LookupFailure> for FailureKind {
    fn from(f: LookupFailure) -> Self {
        match f {
            LookupFailure::DoesNotExist => FailureKind::DoesNotExist,
            LookupFailure::Nacked => FailureKind::Nacked,
            LookupFailure::Unreachable => FailureKind::Unreachable,
        }
    }
}

/// The resource names to subscribe to, per type (indexed by [`ResourceType::index`]).
pub(crate) type Wanted = [BTreeSet<String>; 4];

/// Follows listeners to everything they need; see the module docs.
#[derive(Debug)]
pub(crate) struct DependencyManager {
    /// Listener resource name → the authority its virtual host is chosen for.
    listeners: BTreeMap<String, String>,
    published: Arc<XdsSnapshot>,
    wanted: Wanted,
}

impl Default for DependencyManager {
    fn default() -> Self {
        Self::new()
    }
}

impl DependencyManager {
    pub(crate) fn new() -> Self {
        Self {
            listeners: BTreeMap::new(),
            published: Arc::new(XdsSnapshot::default()),
            wanted: Wanted::default(),
        }
    }

    /// Adds a listener of interest whose virtual host is selected by its own name (the
    /// `xds:///NAME` case with the default `%s` name template); `false` if it already was.
    pub(crate) fn add_listener(&mut self, name: &str) -> bool {
        self.add_listener_with_authority(name, name)
    }

    /// Adds a listener of interest whose virtual host is selected for `authority` (the
    /// target, when a name template makes the resource name differ from it).
    pub(crate) fn add_listener_with_authority(&mut self, name: &str, authority: &str) -> bool {
        self.listeners
            .insert(name.to_owned(), authority.to_owned())
            .is_none()
    }

    /// Removes a listener of interest; `false` if it was not one.
    pub(crate) fn remove_listener(&mut self, name: &str) -> bool {
        self.listeners.remove(name).is_some()
    }

    /// The last published snapshot.
    pub(crate) fn snapshot(&self) -> &Arc<XdsSnapshot> {
        &self.published
    }

    /// What to subscribe to, as of the last [`DependencyManager::update`].
    pub(crate) fn wanted(&self) -> &Wanted {
        &self.wanted
    }

    /// Recomputes from `cache`: refreshes [`DependencyManager::wanted`] and returns the new
    /// snapshot if anything the data plane sees changed.
    pub(crate) fn update(&mut self, cache: &dyn ResourceLookup) -> Option<Arc<XdsSnapshot>> {
        let mut ctx = Walk {
            cache,
            wanted: Wanted::default(),
            memo: BTreeMap::new(),
            in_progress: BTreeSet::new(),
        };
        let prev = Arc::clone(&self.published);
        let mut listeners = BTreeMap::new();
        let mut live_roots: BTreeSet<String> = BTreeSet::new();
        for (name, authority) in &self.listeners {
            let prev_ready = match prev.listeners.get(name) {
                Some(ListenerState::Ready(c)) => Some(c),
                _ => None,
            };
            let keep_previous = |ctx: &mut Walk<'_>, live: &mut BTreeSet<String>| match prev_ready {
                Some(p) => {
                    for c in p.cluster_names() {
                        ctx.cluster(c, 0);
                        live.insert(c.to_owned());
                    }
                    ListenerState::Ready(Arc::clone(p))
                }
                None => ListenerState::Waiting,
            };
            let state = match ctx.listener(name, authority) {
                Candidate::Ready(config) => {
                    let clusters = config.cluster_names();
                    // Walk every cluster (no short-circuit) so all get subscribed.
                    let pending = clusters
                        .iter()
                        .filter(|c| matches!(ctx.cluster(c, 0), Computed::Pending))
                        .count();
                    if pending == 0 {
                        live_roots.extend(clusters.iter().map(|c| (*c).to_owned()));
                        ListenerState::Ready(match prev_ready {
                            Some(p) if **p == config => Arc::clone(p),
                            _ => Arc::new(config),
                        })
                    } else {
                        keep_previous(&mut ctx, &mut live_roots)
                    }
                }
                Candidate::Pending => keep_previous(&mut ctx, &mut live_roots),
                Candidate::Failed(f) => ListenerState::Failed(f),
            };
            listeners.insert(name.clone(), state);
        }
        let mut clusters = BTreeMap::new();
        for root in &live_roots {
            collect(root, &ctx.memo, &prev.clusters, &mut clusters);
        }
        self.wanted = ctx.wanted;
        if same_listeners(&listeners, &prev.listeners) && same_clusters(&clusters, &prev.clusters) {
            return None;
        }
        self.published = Arc::new(XdsSnapshot {
            generation: prev.generation + 1,
            listeners,
            clusters,
        });
        Some(Arc::clone(&self.published))
    }
}

/// A cluster's resolution within one walk.
#[derive(Debug, Clone)]
enum Computed {
    /// Something it needs has not arrived.
    Pending,
    /// Resolved; for an aggregate, `children` are the configured children (to publish
    /// their states too).
    Ready {
        config: ClusterConfig,
        children: Vec<String>,
    },
    /// Failed for good.
    Failed(XdsFailure),
    /// Reached again while being resolved (an aggregate cycle): skipped.
    Cycle,
}

enum Candidate {
    Pending,
    Ready(ListenerConfig),
    Failed(XdsFailure),
}

struct Walk<'a> {
    cache: &'a dyn ResourceLookup,
    wanted: Wanted,
    memo: BTreeMap<String, Computed>,
    in_progress: BTreeSet<String>,
}

fn failure(kind: FailureKind, message: impl Into<String>) -> XdsFailure {
    XdsFailure {
        kind,
        message: message.into(),
    }
}

impl Walk<'_> {
    fn want(&mut self, ty: ResourceType, name: &str) {
        self.wanted[ty.index()].insert(name.to_owned());
    }

    fn listener(&mut self, name: &str, authority: &str) -> Candidate {
        self.want(ResourceType::Listener, name);
        let listener = match self.cache.lookup(ResourceType::Listener, name) {
            Lookup::Ready(Resource::Listener(l)) => Arc::clone(l),
            Lookup::Ready(_) | Lookup::Pending => return Candidate::Pending,
            Lookup::Failed(kind, message) => {
                return Candidate::Failed(failure(kind.into(), message));
            }
        };
        let hcm = match &listener.kind {
            ListenerKind::Api(hcm) => hcm,
            ListenerKind::Socket => {
                return Candidate::Failed(failure(
                    FailureKind::NotApiListener,
                    format!("Listener {name} is not an API listener"),
                ));
            }
        };
        let (route_config, inline) = match &hcm.routes {
            RouteSource::Inline(rc) => (Arc::clone(rc), true),
            RouteSource::Rds(rds) => {
                self.want(ResourceType::RouteConfiguration, rds);
                match self.cache.lookup(ResourceType::RouteConfiguration, rds) {
                    Lookup::Ready(Resource::RouteConfiguration(rc)) => (Arc::clone(rc), false),
                    Lookup::Ready(_) | Lookup::Pending => return Candidate::Pending,
                    Lookup::Failed(kind, message) => {
                        return Candidate::Failed(failure(kind.into(), message));
                    }
                }
            }
        };
        // A74/A28: the virtual host is chosen here, for the channel's authority (the
        // listener name unless a name template made them differ).
        let Some(vh) = select_virtual_host(&route_config.virtual_hosts, authority) else {
            return Candidate::Failed(failure(
                FailureKind::NoMatchingVirtualHost,
                format!(
                    "no virtual host in RouteConfiguration {} matches domain {authority}",
                    route_config.name
                ),
            ));
        };
        Candidate::Ready(ListenerConfig {
            listener_name: name.to_owned(),
            route_config_name: route_config.name.clone(),
            inline_route_config: inline,
            http_filters: hcm.http_filters.clone(),
            max_stream_duration: hcm.max_stream_duration,
            virtual_host: Arc::clone(vh),
        })
    }

    fn cluster(&mut self, name: &str, depth: usize) -> Computed {
        if let Some(c) = self.memo.get(name) {
            return c.clone();
        }
        if self.in_progress.contains(name) {
            return Computed::Cycle;
        }
        self.want(ResourceType::Cluster, name);
        let result = if depth >= MAX_AGGREGATE_DEPTH {
            Computed::Failed(failure(
                FailureKind::AggregateTooDeep,
                format!(
                    "aggregate cluster graph exceeds max depth of {MAX_AGGREGATE_DEPTH} at cluster {name}"
                ),
            ))
        } else {
            match self.cache.lookup(ResourceType::Cluster, name) {
                Lookup::Ready(Resource::Cluster(c)) => {
                    let c = Arc::clone(c);
                    self.resolve(&c, depth)
                }
                Lookup::Ready(_) | Lookup::Pending => Computed::Pending,
                Lookup::Failed(kind, message) => Computed::Failed(failure(kind.into(), message)),
            }
        };
        self.memo.insert(name.to_owned(), result.clone());
        result
    }

    fn resolve(&mut self, c: &Cluster, depth: usize) -> Computed {
        let config = |kind| ClusterConfig {
            name: c.name.clone(),
            kind,
            lb_policy: c.lb_policy,
            max_requests: c.max_requests,
            outlier_detection: c.outlier_detection.clone(),
            tls: c.tls.clone(),
        };
        match &c.kind {
            ClusterKind::Eds { eds_service_name } => {
                self.want(ResourceType::ClusterLoadAssignment, eds_service_name);
                match self
                    .cache
                    .lookup(ResourceType::ClusterLoadAssignment, eds_service_name)
                {
                    Lookup::Ready(Resource::Endpoints(e)) => Computed::Ready {
                        config: config(ClusterConfigKind::Eds {
                            eds_service_name: eds_service_name.clone(),
                            endpoints: Arc::clone(e),
                        }),
                        children: Vec::new(),
                    },
                    Lookup::Ready(_) | Lookup::Pending => Computed::Pending,
                    Lookup::Failed(kind, message) => {
                        Computed::Failed(failure(kind.into(), message))
                    }
                }
            }
            ClusterKind::LogicalDns { host, port } => Computed::Ready {
                config: config(ClusterConfigKind::LogicalDns {
                    host: host.clone(),
                    port: *port,
                }),
                children: Vec::new(),
            },
            ClusterKind::Aggregate { clusters } => {
                self.in_progress.insert(c.name.clone());
                let mut leaves: Vec<String> = Vec::new();
                let mut pending = false;
                let mut too_deep = None;
                for child in clusters {
                    match self.cluster(child, depth + 1) {
                        Computed::Pending => pending = true,
                        Computed::Ready {
                            config: child_config,
                            ..
                        } => {
                            let child_leaves = match &child_config.kind {
                                ClusterConfigKind::Aggregate { leaves } => leaves.clone(),
                                _ => vec![child.clone()],
                            };
                            // Duplicates keep their earliest position (A37).
                            for l in child_leaves {
                                if !leaves.contains(&l) {
                                    leaves.push(l);
                                }
                            }
                        }
                        Computed::Failed(f) if f.kind == FailureKind::AggregateTooDeep => {
                            too_deep = Some(f);
                        }
                        // A74: a child that does not exist (or failed) is skipped; so is a
                        // cycle back to an ancestor.
                        Computed::Failed(_) | Computed::Cycle => {}
                    }
                }
                self.in_progress.remove(&c.name);
                if let Some(f) = too_deep {
                    Computed::Failed(f)
                } else if pending {
                    Computed::Pending
                } else if leaves.is_empty() {
                    Computed::Failed(failure(
                        FailureKind::AggregateEmpty,
                        format!("aggregate cluster {} has no usable leaf clusters", c.name),
                    ))
                } else {
                    Computed::Ready {
                        config: config(ClusterConfigKind::Aggregate { leaves }),
                        children: clusters.clone(),
                    }
                }
            }
        }
    }
}

/// Puts `name` (and, for aggregates, its children) into `out`: the computed state when
/// resolved (reusing the previous `Arc` when equal), else the previously published one.
fn collect(
    name: &str,
    memo: &BTreeMap<String, Computed>,
    prev: &BTreeMap<String, ClusterState>,
    out: &mut BTreeMap<String, ClusterState>,
) {
    if out.contains_key(name) {
        return;
    }
    let (state, children): (Option<ClusterState>, Vec<String>) = match memo.get(name) {
        Some(Computed::Ready { config, children }) => {
            let arc = match prev.get(name) {
                Some(ClusterState::Ready(p)) if **p == *config => Arc::clone(p),
                _ => Arc::new(config.clone()),
            };
            (Some(ClusterState::Ready(arc)), children.clone())
        }
        Some(Computed::Failed(f)) => (Some(ClusterState::Failed(f.clone())), Vec::new()),
        // Still resolving: the previously published state (a kept configuration).
        Some(Computed::Pending) | Some(Computed::Cycle) | None => {
            let p = prev.get(name).cloned();
            let children = match &p {
                Some(ClusterState::Ready(c)) => match &c.kind {
                    ClusterConfigKind::Aggregate { leaves } => leaves.clone(),
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            };
            (p, children)
        }
    };
    if let Some(state) = state {
        out.insert(name.to_owned(), state);
    }
    for child in &children {
        collect(child, memo, prev, out);
    }
}

fn same_listeners(
    a: &BTreeMap<String, ListenerState>,
    b: &BTreeMap<String, ListenerState>,
) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ka, va), (kb, vb))| {
            ka == kb
                && match (va, vb) {
                    (ListenerState::Ready(x), ListenerState::Ready(y)) => Arc::ptr_eq(x, y),
                    (x, y) => x == y,
                }
        })
}

fn same_clusters(a: &BTreeMap<String, ClusterState>, b: &BTreeMap<String, ClusterState>) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ka, va), (kb, vb))| {
            ka == kb
                && match (va, vb) {
                    (ClusterState::Ready(x), ClusterState::Ready(y)) => Arc::ptr_eq(x, y),
                    (x, y) => x == y,
                }
        })
}

#[cfg(test)]
mod tests;
