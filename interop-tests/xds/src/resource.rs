//! The four resource types gRPC's xDS client asks for, and a resource as the control plane
//! stores it: a name and a packed protobuf `Any` (so that a test can also serve bytes that
//! do not decode, or a message of the wrong type).

use envoy_types::pb::{
    envoy::config::{
        cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
        route::v3::RouteConfiguration,
    },
    google::protobuf::Any,
};
use prost::Name;

/// A resource type of the gRPC xDS subset (gRFC A27), in the order a client resolves them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    /// LDS: `envoy.config.listener.v3.Listener`.
    Listener,
    /// RDS: `envoy.config.route.v3.RouteConfiguration`.
    RouteConfiguration,
    /// CDS: `envoy.config.cluster.v3.Cluster`.
    Cluster,
    /// EDS: `envoy.config.endpoint.v3.ClusterLoadAssignment`.
    ClusterLoadAssignment,
}

impl ResourceType {
    /// Every type, LDS first.
    pub const ALL: [ResourceType; 4] = [
        ResourceType::Listener,
        ResourceType::RouteConfiguration,
        ResourceType::Cluster,
        ResourceType::ClusterLoadAssignment,
    ];

    /// The `type_url` of requests and responses, e.g.
    /// `type.googleapis.com/envoy.config.listener.v3.Listener`.
    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceType::RouteConfiguration => {
                "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
            }
            ResourceType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceType::ClusterLoadAssignment => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
        }
    }

    /// The type for a `type_url`, if it is one of the four.
    pub fn from_type_url(type_url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.type_url() == type_url)
    }

    /// The message name without its package (`Listener`, `RouteConfiguration`, `Cluster`,
    /// `ClusterLoadAssignment`): what the oracle drivers report in their CSDS dumps.
    pub fn short_name(self) -> &'static str {
        match self {
            ResourceType::Listener => "Listener",
            ResourceType::RouteConfiguration => "RouteConfiguration",
            ResourceType::Cluster => "Cluster",
            ResourceType::ClusterLoadAssignment => "ClusterLoadAssignment",
        }
    }

    /// The type for a [`short_name`](Self::short_name).
    pub fn from_short_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.short_name() == name)
    }

    /// LDS and CDS: a State-of-the-World response carries every subscribed resource that
    /// exists, so one that is absent is deleted; and the first request of a stream with no
    /// names is a wildcard subscription (gRPC clients always name their resources).
    pub fn all_resources_in_each_response(self) -> bool {
        matches!(self, ResourceType::Listener | ResourceType::Cluster)
    }
}

impl std::fmt::Display for ResourceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.short_name())
    }
}

/// A resource as the control plane serves it.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// Its type.
    pub kind: ResourceType,
    /// Its name (what clients subscribe to).
    pub name: String,
    /// The packed message sent in `DiscoveryResponse.resources`.
    pub body: Any,
}

impl Resource {
    /// Any bytes under any `type_url`, served under `kind`/`name`: for responses that a
    /// client must reject (undecodable bytes, the wrong message type).
    pub fn raw(kind: ResourceType, name: impl Into<String>, body: Any) -> Self {
        Self {
            kind,
            name: name.into(),
            body,
        }
    }

    fn packed<M: Name + prost::Message>(kind: ResourceType, name: String, message: M) -> Self {
        Self {
            kind,
            name,
            body: envoy_types::util::pack_any(message),
        }
    }
}

impl From<Listener> for Resource {
    fn from(listener: Listener) -> Self {
        let name = listener.name.clone();
        Self::packed(ResourceType::Listener, name, listener)
    }
}

impl From<RouteConfiguration> for Resource {
    fn from(route_config: RouteConfiguration) -> Self {
        let name = route_config.name.clone();
        Self::packed(ResourceType::RouteConfiguration, name, route_config)
    }
}

impl From<Cluster> for Resource {
    fn from(cluster: Cluster) -> Self {
        let name = cluster.name.clone();
        Self::packed(ResourceType::Cluster, name, cluster)
    }
}

impl From<ClusterLoadAssignment> for Resource {
    fn from(assignment: ClusterLoadAssignment) -> Self {
        let name = assignment.cluster_name.clone();
        Self::packed(ResourceType::ClusterLoadAssignment, name, assignment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_urls_match_the_generated_messages() {
        assert_eq!(ResourceType::Listener.type_url(), Listener::type_url());
        assert_eq!(
            ResourceType::RouteConfiguration.type_url(),
            RouteConfiguration::type_url()
        );
        assert_eq!(ResourceType::Cluster.type_url(), Cluster::type_url());
        assert_eq!(
            ResourceType::ClusterLoadAssignment.type_url(),
            ClusterLoadAssignment::type_url()
        );
        for t in ResourceType::ALL {
            assert_eq!(ResourceType::from_type_url(t.type_url()), Some(t));
            assert_eq!(ResourceType::from_short_name(t.short_name()), Some(t));
        }
    }

    #[test]
    fn names_come_from_the_message() {
        let r = Resource::from(ClusterLoadAssignment {
            cluster_name: "c1".into(),
            ..Default::default()
        });
        assert_eq!(r.name, "c1");
        assert_eq!(r.kind, ResourceType::ClusterLoadAssignment);
    }
}
