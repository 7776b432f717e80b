//! Cluster: discovery type, load-balancing policy, circuit breaking, outlier detection
//! (gRFC A27, A32, A37, A48, A50, A52).
//!
//! Supported: EDS (over ADS or `self`), AGGREGATE and LOGICAL_DNS clusters; the
//! `round_robin` and `least_request` endpoint-picking policies (locality picking is always
//! weighted, as gRPC's `xds_wrr_locality`). **Ring hash is not supported**: a cluster that
//! asks for it (or Maglev, random, ...) is NACKed with a reason, as gRPC asks of a client
//! that cannot honour a configured policy. TLS clusters (`transport_socket`, A29) are
//! validated in [`super::upstream_tls`].

use std::time::Duration;

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                self as proto, CircuitBreakers, LoadBalancingPolicy, OutlierDetection,
                cluster::{ClusterDiscoveryType, DiscoveryType, LbConfig, LbPolicy},
            },
            core::v3::{RoutingPriority, address, socket_address::PortSpecifier},
            endpoint::v3::lb_endpoint::HostIdentifier,
        },
        extensions::{
            clusters::aggregate::v3::ClusterConfig as AggregateConfig,
            load_balancing_policies::{
                least_request::v3::LeastRequest, round_robin::v3::RoundRobin,
                wrr_locality::v3::WrrLocality,
            },
        },
    },
    google::protobuf::{Any, UInt32Value},
};
use prost::{Message, Name};

use super::{
    ValidationErrors, Validator, config_source_is_ads, duration,
    upstream_tls::{self, CertificateProviderNames},
};
pub(crate) use crate::model::xds::cluster::*;

/// A52: nested `load_balancing_policy` configs deeper than this NACK.
const MAX_LB_POLICY_DEPTH: usize = 16;

/// A32: `max_requests` when no DEFAULT threshold sets it.
pub(crate) const DEFAULT_MAX_REQUESTS: u32 = 1024;

/// A validated Cluster.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cluster {
    /// The resource name.
    pub(crate) name: String,
    /// How its endpoints are found.
    pub(crate) kind: ClusterKind,
    /// The endpoint-picking policy.
    pub(crate) lb_policy: LbPolicyConfig,
    /// Circuit breaking: at most this many calls in flight (A32).
    pub(crate) max_requests: u32,
    /// Outlier detection (A50), when configured.
    pub(crate) outlier_detection: Option<OutlierDetectionConfig>,
    /// TLS to the endpoints (A29), when `transport_socket` asks for it.
    pub(crate) tls: Option<std::sync::Arc<UpstreamTls>>,
}

/// The discovery type of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClusterKind {
    /// EDS over ADS.
    Eds {
        /// The ClusterLoadAssignment to watch: `service_name`, else the cluster name.
        eds_service_name: String,
    },
    /// AGGREGATE: the underlying clusters in priority order (A37), never empty.
    Aggregate {
        /// Child cluster names.
        clusters: Vec<String>,
    },
    /// LOGICAL_DNS: one host name, resolved by DNS (A37).
    LogicalDns {
        /// The host.
        host: String,
        /// The port.
        port: u16,
    },
}

/// Validates a Cluster for a bootstrap without certificate providers (tests).
#[cfg(test)]
pub(crate) fn validate(proto: &proto::Cluster) -> Result<Cluster, ValidationErrors> {
    validate_with(proto, &CertificateProviderNames::default())
}

/// Validates a Cluster; `providers` are the bootstrap's certificate-provider instances a
/// TLS cluster may name.
pub(crate) fn validate_with(
    proto: &proto::Cluster,
    providers: &CertificateProviderNames,
) -> Result<Cluster, ValidationErrors> {
    let mut v = Validator::new();
    let kind = discovery(&mut v, proto);
    let lb_policy = lb_policy(&mut v, proto);
    let max_requests = max_requests(proto.circuit_breakers.as_ref());
    let outlier_detection = proto
        .outlier_detection
        .as_ref()
        .and_then(|od| v.field("outlier_detection", |v| outlier_detection(v, od)));
    // A27: load reporting may only go to the same server (`self`).
    if let Some(lrs) = &proto.lrs_server
        && !matches!(
            lrs.config_source_specifier,
            Some(envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier::Self_(_))
        )
    {
        v.error_at("lrs_server", "ConfigSource is not self");
    }
    let tls = proto.transport_socket.as_ref().and_then(|socket| {
        v.field("transport_socket", |v| {
            upstream_tls::transport_socket(v, socket, providers)
        })
        .map(std::sync::Arc::new)
    });
    let cluster = match (kind, lb_policy) {
        (Some(kind), Some(lb_policy)) => Some(Cluster {
            name: proto.name.clone(),
            kind,
            lb_policy,
            max_requests,
            outlier_detection,
            tls,
        }),
        _ => None,
    };
    match v.finish(cluster)? {
        Some(c) => Ok(c),
        None => Err(ValidationErrors(vec![])),
    }
}

fn discovery(v: &mut Validator, proto: &proto::Cluster) -> Option<ClusterKind> {
    match &proto.cluster_discovery_type {
        Some(ClusterDiscoveryType::ClusterType(custom)) => v.field("cluster_type", |v| {
            let Some(any) = &custom.typed_config else {
                v.error_at("typed_config", "field not present");
                return None;
            };
            if any.type_url != AggregateConfig::type_url() {
                v.error_at(
                    "typed_config",
                    format!("unsupported custom cluster type {}", any.type_url),
                );
                return None;
            }
            let config = match AggregateConfig::decode(any.value.as_slice()) {
                Ok(c) => c,
                Err(e) => {
                    v.error_at(
                        "typed_config",
                        format!("cannot decode aggregate cluster config: {e}"),
                    );
                    return None;
                }
            };
            if config.clusters.is_empty() {
                v.error_at("typed_config.clusters", "must be non-empty");
                return None;
            }
            Some(ClusterKind::Aggregate {
                clusters: config.clusters,
            })
        }),
        Some(ClusterDiscoveryType::Type(t)) => match DiscoveryType::try_from(*t) {
            Ok(DiscoveryType::Eds) => v.field("eds_cluster_config", |v| {
                let Some(eds) = &proto.eds_cluster_config else {
                    v.error("field not present");
                    return None;
                };
                match &eds.eds_config {
                    Some(s) if config_source_is_ads(s) => {}
                    Some(_) => {
                        v.error_at("eds_config", "ConfigSource is not ADS or self");
                        return None;
                    }
                    None => {
                        v.error_at("eds_config", "field not present");
                        return None;
                    }
                }
                let eds_service_name = if eds.service_name.is_empty() {
                    proto.name.clone()
                } else {
                    eds.service_name.clone()
                };
                Some(ClusterKind::Eds { eds_service_name })
            }),
            Ok(DiscoveryType::LogicalDns) => v.field("load_assignment", |v| logical_dns(v, proto)),
            Ok(other) => {
                v.error_at(
                    "type",
                    format!("unsupported cluster discovery type {}", other.as_str_name()),
                );
                None
            }
            Err(_) => {
                v.error_at("type", format!("unknown cluster discovery type {t}"));
                None
            }
        },
        None => {
            // Proto default: `type` STATIC is 0 and prost decodes an absent oneof as None.
            v.error_at("type", "unsupported cluster discovery type STATIC");
            None
        }
    }
}

/// A37: exactly one locality with exactly one endpoint naming `host:port`.
fn logical_dns(v: &mut Validator, proto: &proto::Cluster) -> Option<ClusterKind> {
    let Some(cla) = &proto.load_assignment else {
        v.error("field not present");
        return None;
    };
    if cla.endpoints.len() != 1 {
        v.error_at(
            "endpoints",
            "must contain exactly one locality for LOGICAL_DNS clusters",
        );
        return None;
    }
    v.field("endpoints[0].lb_endpoints", |v| {
        let lb = &cla.endpoints[0].lb_endpoints;
        if lb.len() != 1 {
            v.error("must contain exactly one endpoint for LOGICAL_DNS clusters");
            return None;
        }
        v.field("[0].endpoint.address.socket_address", |v| {
            let sock = match &lb[0].host_identifier {
                Some(HostIdentifier::Endpoint(e)) => {
                    match e.address.as_ref().and_then(|a| a.address.as_ref()) {
                        Some(address::Address::SocketAddress(s)) => s,
                        _ => {
                            v.error("field not present");
                            return None;
                        }
                    }
                }
                _ => {
                    v.error("field not present");
                    return None;
                }
            };
            if sock.address.is_empty() {
                v.error_at("address", "must be non-empty");
                return None;
            }
            if !sock.resolver_name.is_empty() {
                v.error_at(
                    "resolver_name",
                    "LOGICAL_DNS clusters must not have a custom resolver name set",
                );
                return None;
            }
            let port = match sock.port_specifier {
                Some(PortSpecifier::PortValue(p)) => match u16::try_from(p) {
                    Ok(p) => p,
                    Err(_) => {
                        v.error_at("port_value", "invalid port");
                        return None;
                    }
                },
                _ => {
                    v.error_at("port_value", "field not present");
                    return None;
                }
            };
            Some(ClusterKind::LogicalDns {
                host: sock.address.clone(),
                port,
            })
        })
    })
}

fn lb_policy(v: &mut Validator, proto: &proto::Cluster) -> Option<LbPolicyConfig> {
    // A52: `load_balancing_policy` takes precedence over `lb_policy`.
    if let Some(lbp) = &proto.load_balancing_policy {
        return v.field("load_balancing_policy", |v| policy_list(v, lbp, 0));
    }
    match LbPolicy::try_from(proto.lb_policy) {
        Ok(LbPolicy::RoundRobin) => Some(LbPolicyConfig::RoundRobin),
        Ok(LbPolicy::LeastRequest) => {
            let choice_count = match &proto.lb_config {
                Some(LbConfig::LeastRequestLbConfig(c)) => c.choice_count.as_ref(),
                _ => None,
            };
            Some(least_request(choice_count))
        }
        Ok(LbPolicy::RingHash) => {
            v.error_at("lb_policy", "RING_HASH is not supported by this client");
            None
        }
        Ok(other) => {
            v.error_at(
                "lb_policy",
                format!("LB policy {} is not supported", other.as_str_name()),
            );
            None
        }
        Err(_) => {
            v.error_at(
                "lb_policy",
                format!("unknown LB policy {}", proto.lb_policy),
            );
            None
        }
    }
}

/// A48: `choice_count` defaults to 2 and is clamped to [2, 10].
fn least_request(choice_count: Option<&UInt32Value>) -> LbPolicyConfig {
    LbPolicyConfig::LeastRequest {
        choice_count: choice_count.map_or(2, |c| c.value.clamp(2, 10)),
    }
}

/// A52: the first entry whose type this client supports; none supported NACKs.
fn policy_list(
    v: &mut Validator,
    list: &LoadBalancingPolicy,
    depth: usize,
) -> Option<LbPolicyConfig> {
    if depth >= MAX_LB_POLICY_DEPTH {
        v.error("exceeded max recursion depth of 16");
        return None;
    }
    let mut unsupported = Vec::new();
    for (i, p) in list.policies.iter().enumerate() {
        let Some(any) = p
            .typed_extension_config
            .as_ref()
            .and_then(|t| t.typed_config.as_ref())
        else {
            v.error_at(
                &format!("policies[{i}].typed_extension_config.typed_config"),
                "field not present",
            );
            return None;
        };
        let path = format!("policies[{i}].typed_extension_config.typed_config");
        match v.field(path, |v| policy(v, any, depth)) {
            PolicyOutcome::Supported(p) => return Some(p),
            PolicyOutcome::Invalid => return None,
            PolicyOutcome::Unsupported => unsupported.push(any.type_url.clone()),
        }
    }
    v.error(format!(
        "no supported load balancing policy config found (this client supports round_robin, least_request and wrr_locality; ring hash is not supported); got [{}]",
        unsupported.join(", ")
    ));
    None
}

enum PolicyOutcome {
    Supported(LbPolicyConfig),
    Unsupported,
    Invalid,
}

fn policy(v: &mut Validator, any: &Any, depth: usize) -> PolicyOutcome {
    let url = any.type_url.as_str();
    if url == RoundRobin::type_url() {
        PolicyOutcome::Supported(LbPolicyConfig::RoundRobin)
    } else if url == LeastRequest::type_url() {
        match LeastRequest::decode(any.value.as_slice()) {
            Ok(lr) => PolicyOutcome::Supported(least_request(lr.choice_count.as_ref())),
            Err(e) => {
                v.error(format!("cannot decode LeastRequest: {e}"));
                PolicyOutcome::Invalid
            }
        }
    } else if url == WrrLocality::type_url() {
        // Locality picking is always weighted here; the child picks endpoints.
        let wrr = match WrrLocality::decode(any.value.as_slice()) {
            Ok(w) => w,
            Err(e) => {
                v.error(format!("cannot decode WrrLocality: {e}"));
                return PolicyOutcome::Invalid;
            }
        };
        let Some(child) = &wrr.endpoint_picking_policy else {
            v.error_at("endpoint_picking_policy", "field not present");
            return PolicyOutcome::Invalid;
        };
        match v.field("endpoint_picking_policy", |v| {
            policy_list(v, child, depth + 1)
        }) {
            Some(p) => PolicyOutcome::Supported(p),
            None => PolicyOutcome::Invalid,
        }
    } else {
        PolicyOutcome::Unsupported
    }
}

/// A32: the first threshold with priority DEFAULT; its `max_requests`, default 1024.
fn max_requests(cb: Option<&CircuitBreakers>) -> u32 {
    cb.and_then(|cb| {
        cb.thresholds
            .iter()
            .find(|t| t.priority == RoutingPriority::Default as i32)
    })
    .and_then(|t| t.max_requests.as_ref())
    .map_or(DEFAULT_MAX_REQUESTS, |m| m.value)
}

fn outlier_detection(v: &mut Validator, od: &OutlierDetection) -> Option<OutlierDetectionConfig> {
    let before = v.error_count();
    let dur = |v: &mut Validator,
               name: &str,
               d: &Option<envoy_types::pb::google::protobuf::Duration>,
               default: u64| {
        match d {
            Some(d) => v.field(name, |v| duration(v, d)).unwrap_or_default(),
            None => Duration::from_secs(default),
        }
    };
    let interval = dur(v, "interval", &od.interval, 10);
    let base_ejection_time = dur(v, "base_ejection_time", &od.base_ejection_time, 30);
    let max_ejection_time = dur(v, "max_ejection_time", &od.max_ejection_time, 300);
    let percent = |v: &mut Validator, name: &str, value: &Option<UInt32Value>, default: u32| {
        let p = value.as_ref().map_or(default, |x| x.value);
        if p > 100 {
            v.error_at(name, "value must be <= 100");
        }
        p
    };
    let max_ejection_percent = percent(v, "max_ejection_percent", &od.max_ejection_percent, 10);
    let enforcing_success_rate =
        percent(v, "enforcing_success_rate", &od.enforcing_success_rate, 0);
    let failure_threshold = percent(
        v,
        "failure_percentage_threshold",
        &od.failure_percentage_threshold,
        85,
    );
    let enforcing_failure = percent(
        v,
        "enforcing_failure_percentage",
        &od.enforcing_failure_percentage,
        0,
    );
    let or = |x: &Option<UInt32Value>, default: u32| x.as_ref().map_or(default, |x| x.value);
    if v.error_count() > before {
        return None;
    }
    Some(OutlierDetectionConfig {
        interval,
        base_ejection_time,
        max_ejection_time,
        max_ejection_percent,
        success_rate: (enforcing_success_rate != 0).then(|| SuccessRateEjection {
            stdev_factor: or(&od.success_rate_stdev_factor, 1900),
            enforcement_percentage: enforcing_success_rate,
            minimum_hosts: or(&od.success_rate_minimum_hosts, 5),
            request_volume: or(&od.success_rate_request_volume, 100),
        }),
        failure_percentage: (enforcing_failure != 0).then(|| FailurePercentageEjection {
            threshold: failure_threshold,
            enforcement_percentage: enforcing_failure,
            minimum_hosts: or(&od.failure_percentage_minimum_hosts, 5),
            request_volume: or(&od.failure_percentage_request_volume, 50),
        }),
    })
}
