//! The endpoints of a Kubernetes Service port, from its EndpointSlices.

use std::{net::SocketAddr, sync::Arc};

use crate::model::{EndpointSlice, Service};

/// Where calls to port `port` of `service` go, given the Service's EndpointSlices: the
/// ready endpoints; when there are none, the serving ones that are terminating (what
/// kube-proxy does, so a Service does not go dark while its last pods drain). Each
/// endpoint's first address (as kube-proxy uses it) with the target port the slice gives
/// the Service port's name. Sorted, without duplicates.
///
/// Only slices of the Service's primary IP family count: a dual-stack Service has one
/// slice per family listing the same pods, and taking both would give every pod twice its
/// share.
pub(crate) fn service_endpoints(
    service: &Service,
    port: u16,
    slices: &[Arc<EndpointSlice>],
) -> Vec<SocketAddr> {
    let port_name = service
        .port(port)
        .map(|p| p.name.as_str())
        .unwrap_or_default();
    let mut ready = Vec::new();
    let mut terminating = Vec::new();
    for slice in slices {
        if service.ip_family.is_some_and(|f| f != slice.address_type) {
            continue;
        }
        let Some(target_port) = slice.port_named(port_name) else {
            continue;
        };
        for e in &slice.endpoints {
            let Some(ip) = e.addresses.first() else {
                continue;
            };
            let addr = SocketAddr::new(*ip, target_port);
            if e.ready {
                ready.push(addr);
            } else if e.serving && e.terminating {
                terminating.push(addr);
            }
        }
    }
    let mut chosen = if ready.is_empty() { terminating } else { ready };
    chosen.sort();
    chosen.dedup();
    chosen
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::{
        build::{endpoints, service},
        resources::Resources,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn model(resources: Resources) -> (Arc<Service>, Vec<Arc<EndpointSlice>>) {
        let m = resources.to_model();
        assert!(m.rejected.is_empty(), "{:?}", m.rejected);
        (m.services[0].clone(), m.endpoint_slices)
    }

    /// A Service with an IPv4 and an IPv6 slice listing the same two pods.
    fn dual_stack(cluster_ips: &[&str], families: Option<&[&str]>) -> Resources {
        let mut svc = service("shop", "dual").port("grpc", 50051).build();
        let spec = svc.spec.get_or_insert_with(Default::default);
        spec.cluster_ips = Some(cluster_ips.iter().map(|s| s.to_string()).collect());
        spec.ip_families = families.map(|f| f.iter().map(|s| s.to_string()).collect());
        let v4 = endpoints("shop", "dual")
            .name("dual-v4")
            .port("grpc", 8080)
            .ready(ip("10.0.0.1"))
            .ready(ip("10.0.0.2"));
        let v6 = endpoints("shop", "dual")
            .name("dual-v6")
            .port("grpc", 8080)
            .ready(ip("fd00::1"))
            .ready(ip("fd00::2"));
        Resources::new().with(svc).with(v4).with(v6)
    }

    #[test]
    fn a_dual_stack_service_counts_each_pod_once_in_its_first_family() {
        let (svc, slices) = model(dual_stack(
            &["fd00::10", "10.96.0.10"],
            Some(&["IPv6", "IPv4"]),
        ));
        assert_eq!(
            service_endpoints(&svc, 50051, &slices),
            [
                "[fd00::1]:8080".parse::<SocketAddr>().unwrap(),
                "[fd00::2]:8080".parse().unwrap()
            ],
            "the IPv6 slice only: ipFamilies[0] is IPv6"
        );
        let (svc, slices) = model(dual_stack(
            &["10.96.0.10", "fd00::10"],
            Some(&["IPv4", "IPv6"]),
        ));
        assert_eq!(
            service_endpoints(&svc, 50051, &slices),
            [
                "10.0.0.1:8080".parse::<SocketAddr>().unwrap(),
                "10.0.0.2:8080".parse().unwrap()
            ]
        );
    }

    #[test]
    fn without_ip_families_the_first_cluster_ip_decides() {
        let (svc, slices) = model(dual_stack(&["10.96.0.10", "fd00::10"], None));
        assert_eq!(
            service_endpoints(&svc, 50051, &slices),
            [
                "10.0.0.1:8080".parse::<SocketAddr>().unwrap(),
                "10.0.0.2:8080".parse().unwrap()
            ]
        );
    }

    #[test]
    fn a_headless_service_without_families_takes_every_slice() {
        let mut r = dual_stack(&["None"], None);
        r.services[0].spec.as_mut().unwrap().cluster_ips = Some(vec!["None".into()]);
        let (svc, slices) = model(r);
        assert_eq!(service_endpoints(&svc, 50051, &slices).len(), 4);
    }
}
