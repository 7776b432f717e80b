//! Service and EndpointSlice → model.

use std::net::IpAddr;

use k8s_openapi::api::{core::v1::Service as RawService, discovery::v1::EndpointSlice as RawSlice};

use super::{InvalidObject, ObjectKind, object_key, port};
use crate::model::{
    AppProtocol, Endpoint, EndpointPort, EndpointSlice, IpFamily, Service, ServicePort, ServiceType,
};

/// The label that ties an EndpointSlice to its Service.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

pub(crate) fn service(raw: &RawService, default_namespace: &str) -> Result<Service, InvalidObject> {
    let key = object_key(ObjectKind::Service, &raw.metadata, default_namespace)?;
    let err = |field: String, message: String| {
        InvalidObject::new(ObjectKind::Service, &key, field, message)
    };
    let spec = raw.spec.clone().unwrap_or_default();

    let declared_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    let mut ips = Vec::new();
    let cluster_ip_strings = spec
        .cluster_ips
        .clone()
        .filter(|v| !v.is_empty())
        .or_else(|| spec.cluster_ip.clone().map(|ip| vec![ip]))
        .unwrap_or_default();
    let headless = cluster_ip_strings.iter().any(|ip| ip == "None");
    if !headless {
        for (i, ip) in cluster_ip_strings
            .iter()
            .enumerate()
            .filter(|(_, ip)| !ip.is_empty())
        {
            let parsed: IpAddr = ip.parse().map_err(|_| {
                err(
                    format!("spec.clusterIPs[{i}]"),
                    format!("{ip:?} is not an IP address"),
                )
            })?;
            ips.push(parsed);
        }
    }
    let service_type = match declared_type {
        "ExternalName" => ServiceType::ExternalName,
        _ if headless => ServiceType::Headless,
        "ClusterIP" => ServiceType::ClusterIp,
        "NodePort" => ServiceType::NodePort,
        "LoadBalancer" => ServiceType::LoadBalancer,
        other => {
            return Err(err(
                "spec.type".into(),
                format!("unknown Service type {other:?}"),
            ));
        }
    };

    let ip_family = match spec.ip_families.as_deref().and_then(<[String]>::first) {
        Some(f) => Some(ip_family(f).ok_or_else(|| {
            err(
                "spec.ipFamilies[0]".into(),
                format!("{f:?} is not an IP family (IPv4 or IPv6)"),
            )
        })?),
        None => ips.first().copied().map(IpFamily::of),
    };

    let raw_ports = spec.ports.unwrap_or_default();
    let mut ports = Vec::with_capacity(raw_ports.len());
    for (i, p) in raw_ports.iter().enumerate() {
        let number = port(p.port).ok_or_else(|| {
            err(
                format!("spec.ports[{i}].port"),
                format!("{} is outside 1-65535", p.port),
            )
        })?;
        if matches!(p.protocol.as_deref(), Some(proto) if proto != "TCP") {
            // UDP/SCTP ports cannot carry gRPC; leaving them out makes calls to them fail as
            // "no such port" rather than hang.
            continue;
        }
        let name = p.name.clone().unwrap_or_default();
        if ports.iter().any(|existing: &ServicePort| {
            existing.port == number || (!name.is_empty() && existing.name == name)
        }) {
            return Err(err(
                format!("spec.ports[{i}]"),
                "duplicate port name or number".into(),
            ));
        }
        ports.push(ServicePort {
            name,
            port: number,
            app_protocol: AppProtocol::parse(p.app_protocol.as_deref()),
        });
    }
    Ok(Service {
        key,
        service_type,
        cluster_ips: ips,
        ip_family,
        ports,
    })
}

fn ip_family(name: &str) -> Option<IpFamily> {
    match name {
        "IPv4" => Some(IpFamily::V4),
        "IPv6" => Some(IpFamily::V6),
        _ => None,
    }
}

k8s_openapi::k8s_if_ge_1_36! {
    fn slice_endpoints(s: &RawSlice) -> &[k8s_openapi::api::discovery::v1::Endpoint] {
        s.endpoints.as_deref().unwrap_or_default()
    }
}

k8s_openapi::k8s_if_le_1_35! {
    fn slice_endpoints(s: &RawSlice) -> &[k8s_openapi::api::discovery::v1::Endpoint] {
        &s.endpoints
    }
}

pub(crate) fn endpoint_slice(
    raw: &RawSlice,
    default_namespace: &str,
) -> Result<EndpointSlice, InvalidObject> {
    let key = object_key(ObjectKind::EndpointSlice, &raw.metadata, default_namespace)?;
    let err = |field: String, message: String| {
        InvalidObject::new(ObjectKind::EndpointSlice, &key, field, message)
    };

    let service = raw
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .cloned()
        .ok_or_else(|| {
            err(
                format!("metadata.labels[{SERVICE_NAME_LABEL}]"),
                "is required to associate the slice with a Service".into(),
            )
        })?;
    let address_type = ip_family(&raw.address_type).ok_or_else(|| {
        err(
            "addressType".into(),
            format!(
                "{:?} is not supported (only IPv4 and IPv6 endpoints can be dialled)",
                raw.address_type
            ),
        )
    })?;

    let mut ports = Vec::new();
    for (i, p) in raw.ports.iter().flatten().enumerate() {
        if matches!(p.protocol.as_deref(), Some(proto) if proto != "TCP") {
            continue;
        }
        // A port without a number means "all ports" for a selector-less Service; a proxyless
        // client has nothing to dial for it.
        let Some(number) = p.port else { continue };
        let number = port(number).ok_or_else(|| {
            err(
                format!("ports[{i}].port"),
                format!("{number} is outside 1-65535"),
            )
        })?;
        ports.push(EndpointPort {
            name: p.name.clone().unwrap_or_default(),
            port: number,
        });
    }

    let mut endpoints = Vec::new();
    for (i, e) in slice_endpoints(raw).iter().enumerate() {
        let addresses = e
            .addresses
            .iter()
            .enumerate()
            .map(|(j, a)| {
                a.parse::<IpAddr>().map_err(|_| {
                    err(
                        format!("endpoints[{i}].addresses[{j}]"),
                        format!("{a:?} is not an IP address"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let conditions = e.conditions.clone().unwrap_or_default();
        // "nil should be interpreted as true" for ready; serving defaults to ready.
        let ready = conditions.ready.unwrap_or(true);
        endpoints.push(Endpoint {
            addresses,
            ready,
            serving: conditions.serving.unwrap_or(ready),
            terminating: conditions.terminating.unwrap_or(false),
        });
    }
    Ok(EndpointSlice {
        key,
        service,
        address_type,
        ports,
        endpoints,
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::{
        core::v1::{ServicePort as RawPort, ServiceSpec},
        discovery::v1::{
            Endpoint as RawEndpoint, EndpointConditions, EndpointPort as RawEndpointPort,
        },
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn meta(ns: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..Default::default()
        }
    }

    #[test]
    fn service_types_and_ports() {
        let raw = RawService {
            metadata: meta("shop", "checkout"),
            spec: Some(ServiceSpec {
                cluster_ip: Some("10.96.0.10".into()),
                ports: Some(vec![
                    RawPort {
                        name: Some("grpc".into()),
                        port: 50051,
                        app_protocol: Some("kubernetes.io/h2c".into()),
                        ..Default::default()
                    },
                    RawPort {
                        name: Some("dns".into()),
                        port: 53,
                        protocol: Some("UDP".into()),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let svc = service(&raw, "default").unwrap();
        assert_eq!(svc.service_type, ServiceType::ClusterIp);
        assert_eq!(
            svc.cluster_ips,
            vec!["10.96.0.10".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(svc.ports.len(), 1, "UDP ports are left out");
        assert_eq!(svc.port_named("grpc").unwrap().port, 50051);

        let mut headless = raw.clone();
        headless.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        assert_eq!(
            service(&headless, "default").unwrap().service_type,
            ServiceType::Headless
        );

        let mut bad = raw.clone();
        bad.spec.as_mut().unwrap().cluster_ip = Some("ten.ninety-six".into());
        assert_eq!(
            service(&bad, "default").unwrap_err().field(),
            "spec.clusterIPs[0]"
        );

        let mut bad_port = raw;
        bad_port.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 70000;
        assert_eq!(
            service(&bad_port, "default").unwrap_err().field(),
            "spec.ports[0].port"
        );
    }

    fn slice(endpoints: Vec<RawEndpoint>) -> RawSlice {
        let mut metadata = meta("shop", "checkout-abc");
        metadata.labels = Some([(SERVICE_NAME_LABEL.to_string(), "checkout".to_string())].into());
        #[allow(clippy::useless_conversion)]
        RawSlice {
            metadata,
            address_type: "IPv4".into(),
            ports: Some(vec![RawEndpointPort {
                name: Some("grpc".into()),
                port: Some(9101),
                ..Default::default()
            }]),
            endpoints: endpoints.into(),
        }
    }

    #[test]
    fn endpoint_conditions_default_to_ready() {
        let raw = slice(vec![
            RawEndpoint {
                addresses: vec!["127.0.0.1".into()],
                ..Default::default()
            },
            RawEndpoint {
                addresses: vec!["127.0.0.2".into()],
                conditions: Some(EndpointConditions {
                    ready: Some(false),
                    serving: Some(true),
                    terminating: Some(true),
                }),
                ..Default::default()
            },
        ]);
        let s = endpoint_slice(&raw, "default").unwrap();
        assert_eq!(s.service, "checkout");
        assert_eq!(s.port_named("grpc"), Some(9101));
        assert!(s.endpoints[0].ready && s.endpoints[0].serving && !s.endpoints[0].terminating);
        assert!(!s.endpoints[1].ready && s.endpoints[1].serving && s.endpoints[1].terminating);
    }

    #[test]
    fn slice_without_service_label_or_with_fqdn_is_rejected() {
        let mut raw = slice(vec![]);
        raw.metadata.labels = None;
        assert!(
            endpoint_slice(&raw, "default")
                .unwrap_err()
                .field()
                .starts_with("metadata.labels")
        );

        let mut fqdn = slice(vec![]);
        fqdn.address_type = "FQDN".into();
        assert_eq!(
            endpoint_slice(&fqdn, "default").unwrap_err().field(),
            "addressType"
        );

        let bad_ip = slice(vec![RawEndpoint {
            addresses: vec!["not-an-ip".into()],
            ..Default::default()
        }]);
        assert_eq!(
            endpoint_slice(&bad_ip, "default").unwrap_err().field(),
            "endpoints[0].addresses[0]"
        );
    }
}
