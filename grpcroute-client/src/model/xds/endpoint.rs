//! A validated ClusterLoadAssignment: priorities, localities, endpoints (gRFC A27).

use std::net::SocketAddr;

/// A validated ClusterLoadAssignment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct EndpointConfig {
    /// Priorities from 0 (most preferred) without gaps. Empty: the cluster has no
    /// endpoints (unreachable, A27).
    pub(crate) priorities: Vec<Priority>,
    /// `policy.drop_overloads`: categories of calls to drop, in parts per million.
    pub(crate) drop_overloads: Vec<DropOverload>,
}

/// The localities of one priority.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Priority {
    /// Localities with a weight; the sum of weights fits a `u32`.
    pub(crate) localities: Vec<LocalityEndpoints>,
}

/// The endpoints of one locality.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LocalityEndpoints {
    /// Where they are.
    pub(crate) locality: Locality,
    /// `load_balancing_weight` (> 0) for weighted locality picking.
    pub(crate) weight: u32,
    /// The usable endpoints (health HEALTHY or UNKNOWN). May be empty.
    pub(crate) endpoints: Vec<Endpoint>,
}

/// An Envoy locality.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct Locality {
    /// Region.
    pub(crate) region: String,
    /// Zone.
    pub(crate) zone: String,
    /// Sub-zone.
    pub(crate) sub_zone: String,
}

/// One endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// Its address.
    pub(crate) address: SocketAddr,
    /// `load_balancing_weight`, default 1.
    pub(crate) weight: u32,
    /// Reported health (only the usable ones are kept).
    pub(crate) health: EndpointHealth,
}

/// The health statuses gRPC uses an endpoint for (A27).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndpointHealth {
    /// HEALTHY.
    Healthy,
    /// UNKNOWN (Envoy treats it as healthy).
    Unknown,
}

/// A drop category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DropOverload {
    /// The category name.
    pub(crate) category: String,
    /// Calls to drop, in parts per million.
    pub(crate) per_million: u32,
}
