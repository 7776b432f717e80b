//! xDS routing: the compiled listener table and the per-call decision over it.
//!
//! Semantics are gRPC's (gRFC A28, A31), kept apart from GRPCRoute's: routes match in
//! their configured order (first match wins, no precedence), and every failure to route —
//! no matching route, a non-forwarding action, a failed listener or cluster — is
//! `UNAVAILABLE`, never `UNIMPLEMENTED`.

pub(crate) mod matching;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use http::HeaderMap;

use super::{BackendKey, table::FastMap};
use crate::{
    error::CallError,
    model::xds::{
        ClusterState, ListenerConfig, ListenerState,
        route::{ClusterChoice, RouteAction},
    },
    series::{CallStats, ListenerSeries, SeriesKey, SeriesRegistry, SeriesSlot},
};

/// Every listener the mesh's channels asked for, compiled.
#[derive(Debug, Default)]
pub(crate) struct XdsTable {
    listeners: FastMap<Box<str>, Arc<XdsListener>>,
    /// The backend of every cluster slot, by slot id.
    pub(crate) backends: Vec<BackendKey>,
}

/// A listener as calls see it.
#[derive(Debug)]
pub(crate) enum XdsListener {
    /// No complete configuration yet.
    Waiting,
    /// Calls fail `UNAVAILABLE` with this message.
    Failed(Arc<str>),
    /// Routable.
    Ready(ListenerRoutes),
}

/// A listener's routes, with the clusters each can send to resolved to slots.
#[derive(Debug)]
pub(crate) struct ListenerRoutes {
    pub(crate) listener: Arc<str>,
    pub(crate) config: Arc<ListenerConfig>,
    /// `<route config>/<virtual host>`, for series labels.
    pub(crate) route_label: Arc<str>,
    /// Per route of the virtual host, in its order.
    pub(crate) routes: Box<[CompiledRoute]>,
    /// Calls that matched no route.
    pub(crate) unmatched: SeriesSlot,
}

/// What a route does, ready for calls.
#[derive(Debug)]
pub(crate) struct CompiledRoute {
    /// The route's configured index.
    pub(crate) index: usize,
    pub(crate) name: Option<String>,
    /// The clusters a call can go to, with their weight (1 for a single cluster); empty for
    /// a non-forwarding action.
    pub(crate) clusters: Box<[ClusterTarget]>,
    /// Running sums of the weights.
    cumulative: Box<[u64]>,
    /// The action's A31 settings, when it forwards.
    pub(crate) forward: Option<crate::model::xds::route::ForwardAction>,
    /// Calls the route refused before picking a cluster.
    pub(crate) refused: SeriesSlot,
}

/// A cluster a route sends to.
#[derive(Debug)]
pub(crate) struct ClusterTarget {
    pub(crate) name: Arc<str>,
    pub(crate) weight: u32,
    /// The cluster's backend slot, or why calls picking it fail.
    pub(crate) slot: Result<usize, Arc<str>>,
    pub(crate) series: SeriesSlot,
}

/// Where an xDS call goes.
#[derive(Debug)]
pub(crate) struct XdsDecision<'t> {
    pub(crate) routes: &'t ListenerRoutes,
    pub(crate) route: &'t CompiledRoute,
    pub(crate) cluster: &'t ClusterTarget,
    /// The backend slot of the cluster.
    pub(crate) slot: usize,
    /// The call's timeout under gRFC A31, given the caller's own.
    pub(crate) timeout: Option<Duration>,
}

/// An xDS call the router refused, with the series it counts in.
#[derive(Debug)]
pub(crate) struct XdsRefusal<'t> {
    pub(crate) error: Box<CallError>,
    /// `None` when the listener has no series (unknown or not routable). Boxed: refusals
    /// are the rare path.
    pub(crate) series: Option<Box<(&'t SeriesSlot, SeriesKey)>>,
}

/// What a listener lookup says.
#[derive(Debug)]
pub(crate) enum Lookup<'t> {
    /// No complete configuration yet: wait for one.
    Waiting,
    Decided(Result<XdsDecision<'t>, XdsRefusal<'t>>),
}

impl XdsTable {
    /// Compiles `listeners` (every listener some channel watches) against `clusters`.
    pub(crate) fn compile(
        listeners: &BTreeMap<String, ListenerState>,
        clusters: &BTreeMap<String, ClusterState>,
    ) -> Self {
        let mut slots: BTreeMap<String, usize> = BTreeMap::new();
        let mut backends = Vec::new();
        let mut slot_of = |name: &str| -> Result<usize, Arc<str>> {
            match clusters.get(name) {
                Some(ClusterState::Ready(_)) => {}
                Some(ClusterState::Failed(f)) => return Err(f.message.as_str().into()),
                None => return Err(format!("cluster {name} is not known").into()),
            }
            if let Some(&s) = slots.get(name) {
                return Ok(s);
            }
            let s = backends.len();
            backends.push(BackendKey::Cluster(name.into()));
            slots.insert(name.to_string(), s);
            Ok(s)
        };
        let listeners = listeners
            .iter()
            .map(|(name, state)| {
                let compiled = match state {
                    ListenerState::Waiting => XdsListener::Waiting,
                    ListenerState::Failed(f) => XdsListener::Failed(f.message.as_str().into()),
                    ListenerState::Ready(config) => {
                        XdsListener::Ready(compile_listener(name, config, &mut slot_of))
                    }
                };
                (name.as_str().into(), Arc::new(compiled))
            })
            .collect();
        Self {
            listeners,
            backends,
        }
    }

    /// The listener `name` as calls see it; `None` when no channel watches it.
    pub(crate) fn listener(&self, name: &str) -> Option<&Arc<XdsListener>> {
        self.listeners.get(name)
    }

    /// Routes a call to listener `name`. `random` feeds `runtime_fraction` and the weighted
    /// cluster pick; `caller_timeout` is the call's own timeout, for A31.
    pub(crate) fn decide<'t>(
        &'t self,
        name: &str,
        path: &str,
        headers: &HeaderMap,
        mut random: impl FnMut() -> u64,
        caller_timeout: Option<Duration>,
    ) -> Lookup<'t> {
        let listener = match self.listeners.get(name).map(|l| &**l) {
            None | Some(XdsListener::Waiting) => return Lookup::Waiting,
            Some(XdsListener::Failed(message)) => {
                return Lookup::Decided(Err(XdsRefusal {
                    error: Box::new(CallError::XdsUnavailable {
                        listener: name.to_string(),
                        message: message.to_string(),
                    }),
                    series: None,
                }));
            }
            Some(XdsListener::Ready(routes)) => routes,
        };
        Lookup::Decided(decide_in(
            listener,
            path,
            headers,
            &mut random,
            caller_timeout,
        ))
    }

    /// Whether calls can still be counted in `key` under this table.
    pub(crate) fn reaches(&self, key: &ListenerSeries) -> bool {
        let Some(XdsListener::Ready(routes)) = self.listeners.get(&*key.listener).map(|l| &**l)
        else {
            return false;
        };
        let Some((label, index)) = &key.route else {
            return true;
        };
        *label == routes.route_label
            && routes.routes.iter().any(|r| {
                r.index == *index
                    && key
                        .cluster
                        .as_ref()
                        .is_none_or(|c| r.clusters.iter().any(|t| t.name == *c))
            })
    }
}

fn compile_listener(
    name: &str,
    config: &Arc<ListenerConfig>,
    slot_of: &mut impl FnMut(&str) -> Result<usize, Arc<str>>,
) -> ListenerRoutes {
    let vh = &config.virtual_host;
    let routes = vh
        .routes
        .iter()
        .map(|route| {
            let (clusters, forward): (Vec<ClusterTarget>, _) = match &route.action {
                RouteAction::NonForwarding => (Vec::new(), None),
                RouteAction::Forward(f) => {
                    let targets = match &f.clusters {
                        ClusterChoice::Single(c) => vec![(c.as_str(), 1)],
                        ClusterChoice::Weighted { clusters, .. } => clusters
                            .iter()
                            .map(|w| (w.name.as_str(), w.weight))
                            .collect(),
                    };
                    (
                        targets
                            .into_iter()
                            .map(|(c, weight)| ClusterTarget {
                                name: c.into(),
                                weight,
                                slot: slot_of(c),
                                series: SeriesSlot::default(),
                            })
                            .collect(),
                        Some(f.clone()),
                    )
                }
            };
            let mut sum = 0u64;
            let cumulative = clusters
                .iter()
                .map(|c| {
                    sum += u64::from(c.weight);
                    sum
                })
                .collect();
            CompiledRoute {
                index: route.index,
                name: route.name.clone(),
                clusters: clusters.into_boxed_slice(),
                cumulative,
                forward,
                refused: SeriesSlot::default(),
            }
        })
        .collect();
    ListenerRoutes {
        listener: name.into(),
        route_label: format!("{}/{}", config.route_config_name, vh.name).into(),
        config: config.clone(),
        routes,
        unmatched: SeriesSlot::default(),
    }
}

fn decide_in<'t>(
    listener: &'t ListenerRoutes,
    path: &str,
    headers: &HeaderMap,
    random: &mut impl FnMut() -> u64,
    caller_timeout: Option<Duration>,
) -> Result<XdsDecision<'t>, XdsRefusal<'t>> {
    let vh = &listener.config.virtual_host;
    let refuse = |error: CallError, slot, key| XdsRefusal {
        error: Box::new(error),
        series: Some(Box::new((slot, key))),
    };
    // The compiled routes are index-aligned with the virtual host's.
    let matched = vh
        .routes
        .iter()
        .position(|r| matching::route_matches(r, path, headers, random));
    let Some(i) = matched else {
        return Err(refuse(
            CallError::XdsNoRoute {
                listener: listener.listener.to_string(),
                virtual_host: vh.name.clone(),
                path: path.to_string(),
            },
            &listener.unmatched,
            listener.series(None, None),
        ));
    };
    let Some(route) = listener.routes.get(i) else {
        return Err(refuse(
            CallError::XdsNoRoute {
                listener: listener.listener.to_string(),
                virtual_host: vh.name.clone(),
                path: path.to_string(),
            },
            &listener.unmatched,
            listener.series(None, None),
        ));
    };
    let (Some(forward), Some(total)) = (&route.forward, route.cumulative.last().copied()) else {
        return Err(refuse(
            CallError::XdsNonForwarding {
                listener: listener.listener.to_string(),
                route: route.describe(),
            },
            &route.refused,
            listener.series(Some(route.index), None),
        ));
    };
    // A28: a random pick per call; zero weights were dropped at validation.
    let r = random() % total.max(1);
    let picked = route.cumulative.partition_point(|&c| c <= r);
    let Some(cluster) = route.clusters.get(picked) else {
        return Err(refuse(
            CallError::XdsNonForwarding {
                listener: listener.listener.to_string(),
                route: route.describe(),
            },
            &route.refused,
            listener.series(Some(route.index), None),
        ));
    };
    let slot = match &cluster.slot {
        Ok(slot) => *slot,
        Err(message) => {
            return Err(refuse(
                CallError::XdsClusterUnavailable {
                    cluster: cluster.name.to_string(),
                    route: route.describe(),
                    message: message.to_string(),
                },
                &cluster.series,
                listener.series(Some(route.index), Some(&cluster.name)),
            ));
        }
    };
    Ok(XdsDecision {
        routes: listener,
        route,
        cluster,
        slot,
        timeout: matching::call_timeout(
            forward,
            listener.config.max_stream_duration,
            caller_timeout,
        ),
    })
}

impl ListenerRoutes {
    /// The series key of calls to this listener on route `route` to `cluster`.
    pub(crate) fn series(&self, route: Option<usize>, cluster: Option<&Arc<str>>) -> SeriesKey {
        SeriesKey::Listener(ListenerSeries {
            listener: self.listener.clone(),
            route: route.map(|i| (self.route_label.clone(), i)),
            cluster: cluster.cloned(),
        })
    }
}

impl CompiledRoute {
    /// `route 2 ("canary")` of the virtual host.
    pub(crate) fn describe(&self) -> String {
        match &self.name {
            Some(name) => format!("route {} ({name:?})", self.index),
            None => format!("route {}", self.index),
        }
    }
}

impl XdsDecision<'_> {
    /// The series of the call.
    pub(crate) fn stats(&self, registry: &SeriesRegistry) -> &Arc<CallStats> {
        self.cluster.series.get(registry, || {
            self.routes
                .series(Some(self.route.index), Some(&self.cluster.name))
        })
    }
}
