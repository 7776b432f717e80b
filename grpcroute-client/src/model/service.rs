use std::net::IpAddr;

use super::ObjectKey;

/// A Kubernetes Service, reduced to what routing needs.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Service {
    pub(crate) key: ObjectKey,
    pub(crate) service_type: ServiceType,
    /// Empty for headless and ExternalName Services.
    pub(crate) cluster_ips: Vec<IpAddr>,
    /// The family of the Service's primary IP (`spec.ipFamilies[0]`, else that of its first
    /// ClusterIP). A dual-stack Service has an EndpointSlice per family listing the same
    /// pods; only this family's slices are its endpoints. `None`: any family.
    pub(crate) ip_family: Option<IpFamily>,
    pub(crate) ports: Vec<ServicePort>,
}

/// An IP family, as `spec.ipFamilies` and an EndpointSlice's `addressType` name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub(crate) fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ServiceType {
    ClusterIp,
    Headless,
    NodePort,
    LoadBalancer,
    ExternalName,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ServicePort {
    /// The port name; `""` when the Service has a single unnamed port.
    pub(crate) name: String,
    pub(crate) port: u16,
    pub(crate) app_protocol: AppProtocol,
}

/// What `appProtocol` says about the port, as far as a gRPC client cares (GEP-1911).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AppProtocol {
    /// Unset, or a value naming gRPC or HTTP/2 cleartext.
    Compatible,
    /// A value naming a protocol this client cannot speak to the backend.
    Unsupported(String),
}

impl AppProtocol {
    pub(crate) fn parse(value: Option<&str>) -> Self {
        let Some(value) = value else {
            return Self::Compatible;
        };
        let lower = value.to_ascii_lowercase();
        // Anything naming gRPC or h2c is fine (`grpc`, `kubernetes.io/h2c`, the seed's
        // `kubernetes.io/grpc`); values that clearly name another protocol are not. Unknown
        // vendor values are accepted: GEP-1911 lets the route type decide.
        const UNSUPPORTED: &[&str] = &[
            "http",
            "https",
            "http/1.1",
            "kubernetes.io/ws",
            "kubernetes.io/wss",
            "tcp",
            "udp",
            "sctp",
            "tls",
        ];
        if UNSUPPORTED.contains(&lower.as_str()) {
            Self::Unsupported(value.to_string())
        } else {
            Self::Compatible
        }
    }
}

impl Service {
    pub(crate) fn port(&self, port: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == port)
    }

    pub(crate) fn port_named(&self, name: &str) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_protocol_accepts_grpc_spellings_and_rejects_other_protocols() {
        for ok in [
            None,
            Some("grpc"),
            Some("kubernetes.io/h2c"),
            Some("kubernetes.io/grpc"),
            Some("h2c"),
            Some("example.com/custom"),
        ] {
            assert_eq!(AppProtocol::parse(ok), AppProtocol::Compatible, "{ok:?}");
        }
        for bad in ["http", "HTTPS", "kubernetes.io/ws", "tcp"] {
            assert!(
                matches!(AppProtocol::parse(Some(bad)), AppProtocol::Unsupported(_)),
                "{bad}"
            );
        }
    }
}
