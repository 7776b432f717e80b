use super::{Filter, ObjectKey, RouteMatch};

/// A GRPCRoute.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GrpcRoute {
    pub(crate) key: ObjectKey,
    /// `metadata.creationTimestamp` in seconds since the epoch; `None` for objects that
    /// never went through an API server (manifests, code), which then tie on this criterion.
    pub(crate) created: Option<i64>,
    pub(crate) generation: Option<i64>,
    pub(crate) parent_refs: Vec<ParentRef>,
    pub(crate) rules: Vec<Rule>,
}

/// A `parentRef`, with defaults applied (`group: gateway.networking.k8s.io`, `kind:
/// Gateway`, namespace of the route).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ParentRef {
    pub(crate) group: String,
    pub(crate) kind: String,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) port: Option<u16>,
    pub(crate) section_name: Option<String>,
    /// Whether `namespace` was written in the object (status echoes the ref as written).
    pub(crate) namespace_explicit: bool,
    pub(crate) group_explicit: bool,
    pub(crate) kind_explicit: bool,
}

impl ParentRef {
    /// GAMMA binding: only `kind: Service` in the core group (`""`) attaches to a Service.
    pub(crate) fn is_service(&self) -> bool {
        self.group.is_empty() && self.kind == "Service"
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Rule {
    pub(crate) name: Option<String>,
    /// Never empty: a rule without matches gets one empty match, which matches every call.
    pub(crate) matches: Vec<RouteMatch>,
    pub(crate) filters: Vec<Filter>,
    pub(crate) backends: Vec<BackendRef>,
}

/// A `backendRef`, with defaults applied (`group: ""`, `kind: Service`, namespace of the
/// route, weight 1). `port` is required for Services but kept optional here so a ref that
/// lacks it stays in the rule (and takes its share, failing) instead of vanishing.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BackendRef {
    pub(crate) group: String,
    pub(crate) kind: String,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) port: Option<u16>,
    pub(crate) weight: u32,
    pub(crate) filters: Vec<Filter>,
}

impl BackendRef {
    pub(crate) fn is_service(&self) -> bool {
        self.group.is_empty() && self.kind == "Service"
    }
}
