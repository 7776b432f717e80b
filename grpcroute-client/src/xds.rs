//! The xDS source: `xds:///NAME` channels routed by an xDS control plane (istiod, Traffic
//! Director, go-control-plane), the way gRPC's own xDS clients do it.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use grpcroute_client::{Mesh, xds::Bootstrap};
//!
//! // Or leave the bootstrap out: GRPC_XDS_BOOTSTRAP / GRPC_XDS_BOOTSTRAP_CONFIG are read.
//! let bootstrap = Bootstrap::from_json(r#"{
//!     "xds_servers": [{"server_uri": "istiod.istio-system.svc:15010",
//!                      "channel_creds": [{"type": "insecure"}]}],
//!     "node": {"id": "sidecar~10.0.0.7~checkout-client.shop~shop.svc.cluster.local"}
//! }"#)?;
//! let mesh = Mesh::builder().xds_bootstrap(bootstrap).build();
//! let channel = mesh.channel("xds:///checkout.shop.svc.cluster.local:50051")?;
//! // let mut client = CheckoutClient::new(channel);
//! # Ok(()) }
//! ```
//!
//! What it follows: Listener (API listener, RDS or inline routes) → the virtual host whose
//! domains best match the listener name → routes in their configured order → clusters
//! (EDS, aggregate, logical DNS) → endpoints by priority and locality. Only complete
//! configurations take traffic (gRFC A74). See the README for the supported features and
//! failure semantics.

use std::time::SystemTime;

use serde::Serialize;

use crate::source::xds::ResourceDump;
pub use crate::source::xds::bootstrap::{Bootstrap, BootstrapError};

/// The mesh's xDS client and its resources, as gRPC's CSDS shows them (gRFC A40).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ConfigDump {
    /// Whether the ADS stream to the control plane is up.
    pub connected: bool,
    /// Every subscribed resource.
    pub resources: Vec<ResourceState>,
}

/// One subscribed resource.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ResourceState {
    /// `Listener`, `RouteConfiguration`, `Cluster` or `ClusterLoadAssignment`.
    pub resource_type: &'static str,
    /// Its name.
    pub name: String,
    /// The version of the copy in use (empty before the first).
    pub version: String,
    /// `REQUESTED`, `DOES_NOT_EXIST`, `ACKED` or `NACKED`.
    pub state: &'static str,
    /// Whether a good copy is in use (a `NACKED` resource may keep its previous one).
    pub cached: bool,
    /// The last rejection's reason, or the current problem (unreachable, deleted).
    pub last_error: Option<String>,
    /// The version of the last rejected update.
    pub rejected_version: Option<String>,
    /// When the copy in use arrived (Unix seconds).
    pub update_time: Option<f64>,
    /// When the last update was rejected (Unix seconds).
    pub rejected_time: Option<f64>,
}

impl From<&ResourceDump> for ResourceState {
    fn from(d: &ResourceDump) -> Self {
        let unix = |t: Option<SystemTime>| {
            t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64())
        };
        Self {
            resource_type: d.resource_type.name(),
            name: d.name.clone(),
            version: d.version.clone(),
            state: d.state.name(),
            cached: d.has_cached_copy,
            last_error: d.last_error.clone(),
            rejected_version: d.rejected_version.clone(),
            update_time: unix(d.update_time),
            rejected_time: unix(d.rejected_time),
        }
    }
}
