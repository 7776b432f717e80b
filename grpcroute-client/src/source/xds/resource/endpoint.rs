//! ClusterLoadAssignment: priorities, weighted localities and endpoints (gRFC A27).

use std::{
    collections::{BTreeMap, HashSet},
    net::{IpAddr, SocketAddr},
};

use envoy_types::pb::envoy::config::{
    core::v3::{HealthStatus, address, socket_address::PortSpecifier},
    endpoint::v3::{
        ClusterLoadAssignment, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
    },
};

use super::{ValidationErrors, Validator, route::fractional_percent_per_million};
pub(crate) use crate::model::xds::endpoint::*;

/// Validates a ClusterLoadAssignment.
pub(crate) fn validate(proto: &ClusterLoadAssignment) -> Result<EndpointConfig, ValidationErrors> {
    let mut v = Validator::new();
    let mut by_priority: BTreeMap<u32, Vec<LocalityEndpoints>> = BTreeMap::new();
    let mut seen_addresses = HashSet::new();
    let mut seen_localities = HashSet::new();
    for (i, l) in proto.endpoints.iter().enumerate() {
        v.field(format!("endpoints[{i}]"), |v| {
            if let Some(le) = locality(v, l, &mut seen_addresses) {
                if !seen_localities.insert((l.priority, le.locality.clone())) {
                    v.error("duplicate locality found in priority");
                }
                by_priority.entry(l.priority).or_default().push(le);
            }
        });
    }
    // A27: no gaps, and the locality weights of a priority fit a u32.
    let mut priorities = Vec::with_capacity(by_priority.len());
    for (expected, (p, localities)) in by_priority.into_iter().enumerate() {
        if u32::try_from(expected).ok() != Some(p) {
            v.error_at("endpoints", format!("priority {expected} is empty but priority {p} is not (priorities must not have gaps)"));
            break;
        }
        let sum: u64 = localities.iter().map(|l| u64::from(l.weight)).sum();
        if sum > u64::from(u32::MAX) {
            v.error_at(
                "endpoints",
                format!("sum of locality weights for priority {p} exceeds uint32 max"),
            );
        }
        priorities.push(Priority { localities });
    }
    let mut drop_overloads = Vec::new();
    if let Some(policy) = &proto.policy {
        // `overprovisioning_factor` is ignored: gRPC advertises
        // envoy.lb.does_not_support_overprovisioning.
        for (i, d) in policy.drop_overloads.iter().enumerate() {
            v.field(format!("policy.drop_overloads[{i}]"), |v| {
                if d.category.is_empty() {
                    v.error_at("category", "empty drop category name");
                }
                let Some(p) = &d.drop_percentage else {
                    v.error_at("drop_percentage", "field not present");
                    return;
                };
                let per_million = v
                    .field("drop_percentage", |v| fractional_percent_per_million(v, p))
                    .unwrap_or(0);
                drop_overloads.push(DropOverload {
                    category: d.category.clone(),
                    per_million,
                });
            });
        }
    }
    v.finish(EndpointConfig {
        priorities,
        drop_overloads,
    })
}

/// One `endpoints[]` entry, or `None` when it is skipped (weight unset or 0) or invalid.
fn locality(
    v: &mut Validator,
    l: &LocalityLbEndpoints,
    seen: &mut HashSet<SocketAddr>,
) -> Option<LocalityEndpoints> {
    // A27: "If the load_balancing_weight field is unset, the endpoints entry is skipped".
    // A zero weight could never be picked either.
    let weight = l
        .load_balancing_weight
        .as_ref()
        .map(|w| w.value)
        .filter(|w| *w > 0)?;
    let Some(x) = &l.locality else {
        v.error_at("locality", "field not present");
        return None;
    };
    let locality = Locality {
        region: x.region.clone(),
        zone: x.zone.clone(),
        sub_zone: x.sub_zone.clone(),
    };
    let mut endpoints = Vec::with_capacity(l.lb_endpoints.len());
    for (i, e) in l.lb_endpoints.iter().enumerate() {
        if let Some(ep) = v.field(format!("lb_endpoints[{i}]"), |v| endpoint(v, e, seen)) {
            endpoints.push(ep);
        }
    }
    Some(LocalityEndpoints {
        locality,
        weight,
        endpoints,
    })
}

fn endpoint(v: &mut Validator, e: &LbEndpoint, seen: &mut HashSet<SocketAddr>) -> Option<Endpoint> {
    // A27: an entry whose status is not HEALTHY or UNKNOWN is ignored entirely: its
    // address is neither validated nor counted for duplicates (as in C-core).
    let health = match HealthStatus::try_from(e.health_status) {
        Ok(HealthStatus::Healthy) => EndpointHealth::Healthy,
        Ok(HealthStatus::Unknown) => EndpointHealth::Unknown,
        _ => return None,
    };
    let weight = match &e.load_balancing_weight {
        None => 1,
        Some(w) if w.value > 0 => w.value,
        Some(_) => {
            v.error_at("load_balancing_weight", "must be greater than 0");
            return None;
        }
    };
    let address = v.field("endpoint.address.socket_address", |v| {
        let Some(HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
            v.error("field not present");
            return None;
        };
        let Some(address::Address::SocketAddress(s)) =
            ep.address.as_ref().and_then(|a| a.address.as_ref())
        else {
            v.error("field not present");
            return None;
        };
        let ip: IpAddr = match s.address.parse() {
            Ok(ip) => ip,
            Err(_) => {
                v.error_at(
                    "address",
                    format!("not an IPv4 or IPv6 address: \"{}\"", s.address),
                );
                return None;
            }
        };
        let port = match s.port_specifier {
            Some(PortSpecifier::PortValue(p)) => match u16::try_from(p) {
                Ok(p) => p,
                Err(_) => {
                    v.error_at("port_value", format!("invalid port {p}"));
                    return None;
                }
            },
            _ => {
                v.error_at("port_value", "field not present");
                return None;
            }
        };
        Some(SocketAddr::new(ip, port))
    })?;
    // A27: unique across the cluster (all priorities and localities).
    if !seen.insert(address) {
        v.error(format!("duplicate endpoint address {address}"));
        return None;
    }
    Some(Endpoint {
        address,
        weight,
        health,
    })
}
