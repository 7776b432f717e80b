//! Validated xDS configuration, as the xDS source resolves it (gRFC A74): complete
//! listeners and the clusters they reach. Pure data; the xDS source builds it, the routing
//! table compiles it.

pub(crate) mod cluster;
pub(crate) mod endpoint;
pub(crate) mod route;

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use self::{
    cluster::{LbPolicyConfig, OutlierDetectionConfig},
    endpoint::EndpointConfig,
    route::VirtualHost,
};

/// A listener as the data plane sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ListenerState {
    /// No complete configuration yet: calls wait (or fail if the caller will not wait).
    Waiting,
    /// A complete configuration.
    Ready(Arc<ListenerConfig>),
    /// The listener cannot be used: calls fail UNAVAILABLE with this message.
    Failed(XdsFailure),
}

/// A listener's complete routing configuration.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ListenerConfig {
    /// The listener (and authority) name.
    pub(crate) listener_name: String,
    /// The RouteConfiguration's name (RDS, or the inlined config's name).
    pub(crate) route_config_name: String,
    /// Whether the routes came inline in the Listener.
    pub(crate) inline_route_config: bool,
    /// The HTTP filters in use (the router, last).
    pub(crate) http_filters: Vec<HttpFilterSummary>,
    /// The HttpConnectionManager's `max_stream_duration` (A31 default).
    pub(crate) max_stream_duration: Option<Duration>,
    /// The virtual host selected for the listener name; its routes, in order.
    pub(crate) virtual_host: Arc<VirtualHost>,
}

impl ListenerConfig {
    /// Every cluster a route of the virtual host can send to, deduplicated.
    pub(crate) fn cluster_names(&self) -> BTreeSet<&str> {
        self.virtual_host
            .routes
            .iter()
            .flat_map(|r| r.cluster_names())
            .collect()
    }
}

/// A cluster as the data plane sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ClusterState {
    /// Usable.
    Ready(Arc<ClusterConfig>),
    /// Calls picking it fail UNAVAILABLE with this message.
    Failed(XdsFailure),
}

/// A cluster with its endpoints resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClusterConfig {
    /// The cluster name.
    pub(crate) name: String,
    /// What it resolves to.
    pub(crate) kind: ClusterConfigKind,
    /// Endpoint-picking policy.
    pub(crate) lb_policy: LbPolicyConfig,
    /// A32 circuit breaker.
    pub(crate) max_requests: u32,
    /// A50 outlier detection.
    pub(crate) outlier_detection: Option<OutlierDetectionConfig>,
    /// A29 TLS to the endpoints.
    pub(crate) tls: Option<Arc<cluster::UpstreamTls>>,
}

/// The resolved form of a cluster.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ClusterConfigKind {
    /// EDS with its ClusterLoadAssignment.
    Eds {
        /// The EDS resource name.
        eds_service_name: String,
        /// The endpoints (the cache's `Arc`: unchanged endpoints keep it).
        endpoints: Arc<EndpointConfig>,
    },
    /// An aggregate: the leaf clusters in priority order (A37/A75), each also in
    /// [`XdsSnapshot::clusters`].
    Aggregate {
        /// Leaf (EDS or LOGICAL_DNS) cluster names, deduplicated, never empty.
        leaves: Vec<String>,
    },
    /// LOGICAL_DNS: the data plane resolves `host`.
    LogicalDns {
        /// Host name.
        host: String,
        /// Port.
        port: u16,
    },
}

/// Why a listener or cluster cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct XdsFailure {
    /// The kind.
    pub(crate) kind: FailureKind,
    /// For the call's status message; names the resource.
    pub(crate) message: String,
}

/// Kinds of [`XdsFailure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// A resource does not exist (A57 timer, or deleted with `fail_on_data_errors`).
    DoesNotExist,
    /// A resource was NACKed and there is no earlier good copy.
    Nacked,
    /// The control plane was unreachable before the resource arrived (A88 transient).
    Unreachable,
    /// The Listener is a socket listener, not an API listener.
    NotApiListener,
    /// No virtual host's domains match the listener name.
    NoMatchingVirtualHost,
    /// The aggregate cluster graph is deeper than 16.
    AggregateTooDeep,
    /// An aggregate cluster resolves to no leaf cluster.
    AggregateEmpty,
}

/// One HTTP filter as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpFilterSummary {
    /// The instance name.
    pub(crate) name: String,
    /// The config's type URL (a TypedStruct unwrapped to its inner type).
    pub(crate) type_url: String,
}
