//! CDS: EDS, aggregate and LOGICAL_DNS clusters with the settings gRPC reads (A27, A32,
//! A37, A48, A50).

use std::time::Duration;

use envoy_types::pb::envoy::{
    config::{
        cluster::v3::{
            CircuitBreakers, Cluster, OutlierDetection,
            circuit_breakers::Thresholds,
            cluster::{ClusterDiscoveryType, CustomClusterType, DiscoveryType, EdsClusterConfig},
        },
        core::v3::{RoutingPriority, TransportSocket, transport_socket},
        endpoint::v3::ClusterLoadAssignment,
    },
    extensions::{
        clusters::aggregate::v3::ClusterConfig,
        transport_sockets::tls::v3::{
            CertificateProviderPluginInstance, CertificateValidationContext, CommonTlsContext,
            UpstreamTlsContext, common_tls_context::ValidationContextType,
        },
    },
    r#type::matcher::v3::StringMatcher,
};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message as _, Name as _};

pub use envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy;

use super::{
    ads_config_source, duration,
    endpoint::{LoadAssignmentBuilder, Locality},
    u32_value,
};

/// Builds a `Cluster`.
#[derive(Clone, Debug)]
pub struct ClusterBuilder {
    cluster: Cluster,
}

impl ClusterBuilder {
    /// An EDS cluster over ADS; its endpoints are the ClusterLoadAssignment named like the
    /// cluster (or [`service_name`](Self::service_name)). LB policy ROUND_ROBIN.
    pub fn eds(name: &str) -> Self {
        Self {
            cluster: Cluster {
                name: name.to_string(),
                cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
                eds_cluster_config: Some(EdsClusterConfig {
                    eds_config: Some(ads_config_source()),
                    service_name: String::new(),
                }),
                lb_policy: LbPolicy::RoundRobin as i32,
                ..Default::default()
            },
        }
    }

    /// An aggregate cluster (`envoy.extensions.clusters.aggregate.v3.ClusterConfig`) over
    /// `clusters`, in priority order.
    pub fn aggregate(name: &str, clusters: &[&str]) -> Self {
        let config = ClusterConfig {
            clusters: clusters.iter().map(|c| c.to_string()).collect(),
        };
        Self {
            cluster: Cluster {
                name: name.to_string(),
                cluster_discovery_type: Some(ClusterDiscoveryType::ClusterType(
                    CustomClusterType {
                        name: "envoy.clusters.aggregate".to_string(),
                        typed_config: Some(envoy_types::util::pack_any(config)),
                    },
                )),
                lb_policy: LbPolicy::ClusterProvided as i32,
                ..Default::default()
            },
        }
    }

    /// A LOGICAL_DNS cluster resolving `host:port` (one locality, one endpoint, as gRPC
    /// requires).
    pub fn logical_dns(name: &str, host: &str, port: u16) -> Self {
        let assignment: ClusterLoadAssignment = LoadAssignmentBuilder::new(name)
            .locality(Locality::new("dns").hostname_endpoint(host, port))
            .build();
        Self {
            cluster: Cluster {
                name: name.to_string(),
                cluster_discovery_type: Some(ClusterDiscoveryType::Type(
                    DiscoveryType::LogicalDns as i32,
                )),
                load_assignment: Some(assignment),
                lb_policy: LbPolicy::RoundRobin as i32,
                ..Default::default()
            },
        }
    }

    /// The EDS resource name, if not the cluster's.
    #[must_use]
    pub fn service_name(mut self, service_name: &str) -> Self {
        self.cluster
            .eds_cluster_config
            .get_or_insert_with(|| EdsClusterConfig {
                eds_config: Some(ads_config_source()),
                service_name: String::new(),
            })
            .service_name = service_name.to_string();
        self
    }

    /// `lb_policy`.
    #[must_use]
    pub fn lb_policy(mut self, policy: LbPolicy) -> Self {
        self.cluster.lb_policy = policy as i32;
        self
    }

    /// `circuit_breakers.thresholds[priority DEFAULT].max_requests` (A32).
    #[must_use]
    pub fn max_requests(mut self, max_requests: u32) -> Self {
        self.cluster.circuit_breakers = Some(CircuitBreakers {
            thresholds: vec![Thresholds {
                priority: RoutingPriority::Default as i32,
                max_requests: Some(u32_value(max_requests)),
                ..Default::default()
            }],
            ..Default::default()
        });
        self
    }

    /// `outlier_detection` (A50; see [`outlier_detection`]).
    #[must_use]
    pub fn outlier_detection(mut self, outlier_detection: OutlierDetection) -> Self {
        self.cluster.outlier_detection = Some(outlier_detection);
        self
    }

    /// TLS to the endpoints (gRFC A29): `transport_socket` with an `UpstreamTlsContext`
    /// whose roots come from certificate-provider instance `ca_instance`, whose client
    /// certificate (mutual TLS) comes from `identity_instance`, and whose server is
    /// authorized by `san_matchers` (`match_subject_alt_names`).
    #[must_use]
    #[allow(deprecated)] // `match_subject_alt_names` is the field gRPC reads.
    pub fn upstream_tls(
        mut self,
        ca_instance: &str,
        identity_instance: Option<&str>,
        san_matchers: Vec<StringMatcher>,
    ) -> Self {
        let instance = |name: &str| CertificateProviderPluginInstance {
            instance_name: name.to_string(),
            certificate_name: String::new(),
        };
        let context = UpstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                tls_certificate_provider_instance: identity_instance.map(instance),
                validation_context_type: Some(ValidationContextType::ValidationContext(
                    CertificateValidationContext {
                        ca_certificate_provider_instance: Some(instance(ca_instance)),
                        match_subject_alt_names: san_matchers,
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.cluster.transport_socket = Some(TransportSocket {
            name: "envoy.transport_sockets.tls".to_string(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(Any {
                type_url: UpstreamTlsContext::type_url(),
                value: context.encode_to_vec(),
            })),
        });
        self
    }

    /// The cluster as built so far, to change other fields.
    pub fn cluster_mut(&mut self) -> &mut Cluster {
        &mut self.cluster
    }

    /// The cluster.
    pub fn build(self) -> Cluster {
        self.cluster
    }
}

impl From<ClusterBuilder> for Cluster {
    fn from(builder: ClusterBuilder) -> Self {
        builder.build()
    }
}

/// Success-rate outlier detection as the psm `outlier_detection` test sets it: every
/// `interval`, hosts with at least `request_volume` calls whose success rate is low are
/// ejected for `base_ejection_time` (failure-percentage detection off, A50 defaults
/// otherwise).
pub fn outlier_detection(
    interval: Duration,
    base_ejection_time: Duration,
    request_volume: u32,
) -> OutlierDetection {
    OutlierDetection {
        interval: Some(duration(interval)),
        base_ejection_time: Some(duration(base_ejection_time)),
        success_rate_request_volume: Some(u32_value(request_volume)),
        success_rate_minimum_hosts: Some(u32_value(1)),
        enforcing_success_rate: Some(u32_value(100)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::{
        core::v3::config_source::ConfigSourceSpecifier, endpoint::v3::lb_endpoint::HostIdentifier,
    };
    use prost::Message as _;

    use super::*;

    #[test]
    fn eds_cluster_over_ads_with_settings() {
        let c = ClusterBuilder::eds("c")
            .service_name("c-eds")
            .lb_policy(LbPolicy::LeastRequest)
            .max_requests(50)
            .build();
        assert_eq!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
        );
        let eds = c.eds_cluster_config.unwrap();
        assert_eq!(eds.service_name, "c-eds");
        assert!(matches!(
            eds.eds_config.unwrap().config_source_specifier,
            Some(ConfigSourceSpecifier::Ads(_))
        ));
        assert_eq!(c.lb_policy, LbPolicy::LeastRequest as i32);
        assert_eq!(
            c.circuit_breakers.unwrap().thresholds[0].max_requests,
            Some(u32_value(50))
        );
    }

    #[test]
    fn aggregate_and_logical_dns() {
        let a = ClusterBuilder::aggregate("agg", &["p", "s"]).build();
        let Some(ClusterDiscoveryType::ClusterType(t)) = a.cluster_discovery_type else {
            panic!("not a custom cluster type")
        };
        let any = t.typed_config.unwrap();
        assert_eq!(
            any.type_url,
            "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig"
        );
        assert_eq!(
            ClusterConfig::decode(any.value.as_slice())
                .unwrap()
                .clusters,
            ["p", "s"]
        );
        let d = ClusterBuilder::logical_dns("dns", "localhost", 8080).build();
        let la = d.load_assignment.unwrap();
        assert_eq!(la.endpoints.len(), 1);
        let Some(HostIdentifier::Endpoint(e)) = &la.endpoints[0].lb_endpoints[0].host_identifier
        else {
            panic!("no endpoint")
        };
        assert!(format!("{e:?}").contains("localhost"));
    }
}
