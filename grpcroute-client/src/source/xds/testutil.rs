//! Builders of Envoy protos for the xDS tests.

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                Cluster,
                cluster::{
                    ClusterDiscoveryType, CustomClusterType, DiscoveryType, EdsClusterConfig,
                },
            },
            core::v3::{
                Address, AggregatedConfigSource, ConfigSource, HealthStatus, Locality,
                SocketAddress, address, config_source::ConfigSourceSpecifier,
                socket_address::PortSpecifier,
            },
            endpoint::v3::{
                ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
                lb_endpoint::HostIdentifier,
            },
            listener::v3::{ApiListener, Listener},
            route::v3::{
                Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
                route::Action, route_action::ClusterSpecifier, route_match::PathSpecifier,
                weighted_cluster::ClusterWeight,
            },
        },
        extensions::{
            clusters::aggregate::v3::ClusterConfig as AggregateConfig,
            filters::{
                http::router::v3::Router,
                network::http_connection_manager::v3::{
                    HttpConnectionManager, HttpFilter, Rds,
                    http_connection_manager::RouteSpecifier, http_filter::ConfigType,
                },
            },
        },
        service::discovery::v3::DiscoveryResponse,
    },
    google::protobuf::{Any, UInt32Value},
};
use prost::{Message, Name};

use super::resource::ResourceType;

/// Any of a message.
pub(crate) fn any<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

/// A ConfigSource pointing at ADS.
pub(crate) fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..ConfigSource::default()
    }
}

/// The router filter.
pub(crate) fn router_filter() -> HttpFilter {
    HttpFilter {
        name: "router".into(),
        config_type: Some(ConfigType::TypedConfig(any(&Router::default()))),
        ..HttpFilter::default()
    }
}

/// An HttpConnectionManager with the router and the given route specifier.
pub(crate) fn hcm(routes: RouteSpecifier) -> HttpConnectionManager {
    HttpConnectionManager {
        http_filters: vec![router_filter()],
        route_specifier: Some(routes),
        ..HttpConnectionManager::default()
    }
}

/// An API listener wrapping `hcm`.
pub(crate) fn listener_with(name: &str, hcm: &HttpConnectionManager) -> Listener {
    Listener {
        name: name.into(),
        api_listener: Some(ApiListener {
            api_listener: Some(any(hcm)),
        }),
        ..Listener::default()
    }
}

/// An API listener using RDS `rc` over ADS.
pub(crate) fn listener_rds(name: &str, rc: &str) -> Listener {
    listener_with(
        name,
        &hcm(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: rc.into(),
        })),
    )
}

/// An API listener with an inline RouteConfiguration.
pub(crate) fn listener_inline(name: &str, rc: RouteConfiguration) -> Listener {
    listener_with(name, &hcm(RouteSpecifier::RouteConfig(rc)))
}

/// A route matching `prefix`, to `cluster`.
pub(crate) fn route_prefix(prefix: &str, cluster: &str) -> Route {
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix(prefix.into())),
            ..RouteMatch::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
            ..RouteAction::default()
        })),
        ..Route::default()
    }
}

/// A route matching everything, weighted over `clusters`.
pub(crate) fn route_weighted(clusters: &[(&str, u32)]) -> Route {
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix(String::new())),
            ..RouteMatch::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::WeightedClusters(WeightedCluster {
                clusters: clusters
                    .iter()
                    .map(|(n, w)| ClusterWeight {
                        name: (*n).into(),
                        weight: Some(UInt32Value { value: *w }),
                        ..ClusterWeight::default()
                    })
                    .collect(),
                ..WeightedCluster::default()
            })),
            ..RouteAction::default()
        })),
        ..Route::default()
    }
}

/// A virtual host.
pub(crate) fn vhost(name: &str, domains: &[&str], routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| (*d).into()).collect(),
        routes,
        ..VirtualHost::default()
    }
}

/// A RouteConfiguration with one `*` virtual host routing everything to `cluster`.
pub(crate) fn route_config(name: &str, cluster: &str) -> RouteConfiguration {
    RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![vhost("vh", &["*"], vec![route_prefix("", cluster)])],
        ..RouteConfiguration::default()
    }
}

/// A RouteConfiguration with the given virtual hosts.
pub(crate) fn route_config_with(name: &str, vhs: Vec<VirtualHost>) -> RouteConfiguration {
    RouteConfiguration {
        name: name.into(),
        virtual_hosts: vhs,
        ..RouteConfiguration::default()
    }
}

/// An EDS cluster over ADS (EDS name = cluster name).
pub(crate) fn cluster_eds(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        ..Cluster::default()
    }
}

/// An aggregate cluster.
pub(crate) fn cluster_aggregate(name: &str, children: &[&str]) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::ClusterType(CustomClusterType {
            name: "envoy.clusters.aggregate".into(),
            typed_config: Some(any(&AggregateConfig {
                clusters: children.iter().map(|c| (*c).into()).collect(),
            })),
        })),
        ..Cluster::default()
    }
}

/// A socket address.
pub(crate) fn socket(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..SocketAddress::default()
        })),
    }
}

/// An endpoint with a health status.
pub(crate) fn lb_endpoint(ip: &str, port: u32, health: HealthStatus) -> LbEndpoint {
    LbEndpoint {
        health_status: health as i32,
        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
            address: Some(socket(ip, port)),
            ..Endpoint::default()
        })),
        ..LbEndpoint::default()
    }
}

/// A locality entry.
pub(crate) fn locality(
    zone: &str,
    priority: u32,
    weight: Option<u32>,
    endpoints: Vec<LbEndpoint>,
) -> LocalityLbEndpoints {
    LocalityLbEndpoints {
        locality: Some(Locality {
            region: "r".into(),
            zone: zone.into(),
            sub_zone: String::new(),
        }),
        lb_endpoints: endpoints,
        load_balancing_weight: weight.map(|value| UInt32Value { value }),
        priority,
        ..LocalityLbEndpoints::default()
    }
}

/// A ClusterLoadAssignment with one locality holding `addrs` (healthy, port from each).
pub(crate) fn cla(name: &str, addrs: &[(&str, u32)]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![locality(
            "z",
            0,
            Some(1),
            addrs
                .iter()
                .map(|(ip, port)| lb_endpoint(ip, *port, HealthStatus::Healthy))
                .collect(),
        )],
        ..ClusterLoadAssignment::default()
    }
}

/// A DiscoveryResponse.
pub(crate) fn response(
    ty: ResourceType,
    version: &str,
    nonce: &str,
    resources: Vec<Any>,
) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.into(),
        resources,
        type_url: ty.type_url(),
        nonce: nonce.into(),
        ..DiscoveryResponse::default()
    }
}
