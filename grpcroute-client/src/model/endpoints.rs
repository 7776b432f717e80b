use std::net::IpAddr;

use super::{IpFamily, ObjectKey};

/// An EndpointSlice: the backend ("endpoints") side of one Service.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct EndpointSlice {
    pub(crate) key: ObjectKey,
    /// The Service named by the `kubernetes.io/service-name` label.
    pub(crate) service: String,
    /// `addressType`: every address of the slice is of this family.
    pub(crate) address_type: IpFamily,
    pub(crate) ports: Vec<EndpointPort>,
    pub(crate) endpoints: Vec<Endpoint>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct EndpointPort {
    /// Matches the Service port's name; `""` for an unnamed port.
    pub(crate) name: String,
    pub(crate) port: u16,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Endpoint {
    pub(crate) addresses: Vec<IpAddr>,
    pub(crate) ready: bool,
    pub(crate) serving: bool,
    pub(crate) terminating: bool,
}

impl EndpointSlice {
    /// The Service the slice belongs to.
    pub(crate) fn service_key(&self) -> ObjectKey {
        ObjectKey::new(self.key.namespace_arc().clone(), self.service.as_str())
    }

    pub(crate) fn port_named(&self, name: &str) -> Option<u16> {
        self.ports.iter().find(|p| p.name == name).map(|p| p.port)
    }
}
