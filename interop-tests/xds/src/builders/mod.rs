//! Builders of the resources the scenarios serve: plain `envoy-types` messages with the
//! fields gRPC reads filled in, so a test can still change any field afterwards (or build
//! a deliberately invalid resource from a valid one).
//!
//! ```
//! use grpcroute_xds_control_plane::builders::{
//!     ApiListener, ClusterBuilder, LoadAssignmentBuilder, Locality, RouteBuilder,
//!     route_configuration, virtual_host,
//! };
//! let listener = ApiListener::rds("svc", "rc").build();
//! let routes = route_configuration(
//!     "rc",
//!     vec![virtual_host("vh", &["svc"], vec![RouteBuilder::prefix("/").cluster("c").build()])],
//! );
//! let cluster = ClusterBuilder::eds("c").build();
//! let endpoints = LoadAssignmentBuilder::new("c")
//!     .locality(Locality::new("z1").endpoint("127.0.0.1:50051".parse().unwrap()))
//!     .build();
//! # let _ = (listener, routes, cluster, endpoints);
//! ```

mod cluster;
mod endpoint;
mod listener;
mod route;

pub use self::{
    cluster::{ClusterBuilder, LbPolicy, outlier_detection},
    endpoint::{HealthStatus, LoadAssignmentBuilder, Locality, load_assignment},
    listener::{ApiListener, ads_config_source, http_filter, router_filter},
    route::{RouteBuilder, header, route_configuration, virtual_host},
};

use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};

/// A protobuf `Duration` for a std one.
pub fn duration(d: std::time::Duration) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn u32_value(value: u32) -> UInt32Value {
    UInt32Value { value }
}
