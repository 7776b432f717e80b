//! EDS: ClusterLoadAssignments with priorities, weighted localities and endpoints (A27, A56).

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::{
    core::v3::{
        Address, Locality as PbLocality, SocketAddress, address,
        socket_address::{PortSpecifier, Protocol},
    },
    endpoint::v3::{
        ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
        lb_endpoint::HostIdentifier,
    },
};

pub use envoy_types::pb::envoy::config::core::v3::HealthStatus;

use super::u32_value;

/// One locality of endpoints: priority 0 and weight 1 unless set.
#[derive(Clone, Debug)]
pub struct Locality {
    inner: LocalityLbEndpoints,
}

impl Locality {
    /// A locality in zone `zone` (region `region`, no sub-zone), priority 0, weight 1.
    pub fn new(zone: &str) -> Self {
        Self {
            inner: LocalityLbEndpoints {
                locality: Some(PbLocality {
                    region: "region".to_string(),
                    zone: zone.to_string(),
                    sub_zone: String::new(),
                }),
                load_balancing_weight: Some(u32_value(1)),
                ..Default::default()
            },
        }
    }

    /// Sets the priority (0 is the highest).
    #[must_use]
    pub fn priority(mut self, priority: u32) -> Self {
        self.inner.priority = priority;
        self
    }

    /// Sets the locality weight (`None`: unset, which makes gRPC skip the locality).
    #[must_use]
    pub fn weight(mut self, weight: Option<u32>) -> Self {
        self.inner.load_balancing_weight = weight.map(u32_value);
        self
    }

    /// Sets region and sub-zone.
    #[must_use]
    pub fn region(mut self, region: &str, sub_zone: &str) -> Self {
        if let Some(l) = &mut self.inner.locality {
            l.region = region.to_string();
            l.sub_zone = sub_zone.to_string();
        }
        self
    }

    /// Adds a HEALTHY endpoint of weight 1.
    #[must_use]
    pub fn endpoint(self, addr: SocketAddr) -> Self {
        self.endpoint_with(addr, 1, HealthStatus::Healthy)
    }

    /// Adds HEALTHY endpoints of weight 1.
    #[must_use]
    pub fn endpoints(self, addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        addrs.into_iter().fold(self, Self::endpoint)
    }

    /// Adds an endpoint with a weight and a health status.
    #[must_use]
    pub fn endpoint_with(mut self, addr: SocketAddr, weight: u32, health: HealthStatus) -> Self {
        self.inner.lb_endpoints.push(lb_endpoint(
            &addr.ip().to_string(),
            u32::from(addr.port()),
            weight,
            health,
        ));
        self
    }

    /// Adds an endpoint by host name (LOGICAL_DNS clusters).
    #[must_use]
    pub fn hostname_endpoint(mut self, host: &str, port: u16) -> Self {
        self.inner
            .lb_endpoints
            .push(lb_endpoint(host, u32::from(port), 1, HealthStatus::Unknown));
        self
    }

    /// The message.
    pub fn build(self) -> LocalityLbEndpoints {
        self.inner
    }
}

fn lb_endpoint(host: &str, port: u32, weight: u32, health: HealthStatus) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    protocol: Protocol::Tcp as i32,
                    address: host.to_string(),
                    port_specifier: Some(PortSpecifier::PortValue(port)),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        health_status: health as i32,
        load_balancing_weight: Some(u32_value(weight)),
        ..Default::default()
    }
}

/// Builds a `ClusterLoadAssignment`.
#[derive(Clone, Debug)]
pub struct LoadAssignmentBuilder {
    inner: ClusterLoadAssignment,
}

impl LoadAssignmentBuilder {
    /// No localities yet, for cluster (EDS service) `cluster_name`.
    pub fn new(cluster_name: &str) -> Self {
        Self {
            inner: ClusterLoadAssignment {
                cluster_name: cluster_name.to_string(),
                ..Default::default()
            },
        }
    }

    /// Adds a locality.
    #[must_use]
    pub fn locality(mut self, locality: Locality) -> Self {
        self.inner.endpoints.push(locality.build());
        self
    }

    /// The message.
    pub fn build(self) -> ClusterLoadAssignment {
        self.inner
    }
}

impl From<LoadAssignmentBuilder> for ClusterLoadAssignment {
    fn from(builder: LoadAssignmentBuilder) -> Self {
        builder.build()
    }
}

/// The common case: one locality (priority 0, weight 1) of HEALTHY endpoints.
pub fn load_assignment(
    cluster_name: &str,
    addrs: impl IntoIterator<Item = SocketAddr>,
) -> ClusterLoadAssignment {
    LoadAssignmentBuilder::new(cluster_name)
        .locality(Locality::new("zone-a").endpoints(addrs))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_weights_and_health() {
        let a: SocketAddr = "127.0.0.1:1001".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:1002".parse().unwrap();
        let cla = LoadAssignmentBuilder::new("c")
            .locality(Locality::new("z0").weight(Some(3)).endpoint(a))
            .locality(Locality::new("z1").priority(1).weight(None).endpoint_with(
                b,
                5,
                HealthStatus::Unhealthy,
            ))
            .build();
        assert_eq!(cla.cluster_name, "c");
        assert_eq!(cla.endpoints[0].load_balancing_weight, Some(u32_value(3)));
        assert_eq!(cla.endpoints[1].priority, 1);
        assert_eq!(cla.endpoints[1].load_balancing_weight, None);
        let e = &cla.endpoints[1].lb_endpoints[0];
        assert_eq!(e.health_status, HealthStatus::Unhealthy as i32);
        assert_eq!(e.load_balancing_weight, Some(u32_value(5)));
        let Some(HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
            panic!("no endpoint")
        };
        let Some(address::Address::SocketAddress(sa)) =
            ep.address.as_ref().and_then(|a| a.address.as_ref())
        else {
            panic!("no socket address")
        };
        assert_eq!(sa.address, "127.0.0.1");
        assert_eq!(sa.port_specifier, Some(PortSpecifier::PortValue(1002)));
    }
}
