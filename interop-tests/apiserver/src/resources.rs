//! The fixed table of kinds this server serves, and which versions of them.

use std::fmt;

/// A kind of object the server stores.
///
/// Objects of one resource share one storage, whatever version a request names: a
/// ReferenceGrant written through `v1beta1` is read back through `v1` too (the two
/// versions have the same schema, so the "conversion" only rewrites `apiVersion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// core/v1 `namespaces` (cluster-scoped).
    Namespaces,
    /// core/v1 `services`.
    Services,
    /// `discovery.k8s.io/v1` `endpointslices`.
    EndpointSlices,
    /// `gateway.networking.k8s.io/v1` `grpcroutes` (has a `status` subresource).
    GrpcRoutes,
    /// `gateway.networking.k8s.io` `referencegrants` (`v1` and/or `v1beta1`).
    ReferenceGrants,
    /// `coordination.k8s.io/v1` `leases`.
    Leases,
    /// core/v1 `configmaps`.
    ConfigMaps,
    /// `gateway.networking.k8s.io/v1` `backendtlspolicies` (has a `status` subresource).
    BackendTlsPolicies,
}

/// Which versions of `gateway.networking.k8s.io` ReferenceGrant are served.
///
/// `V1Beta1Only` reproduces a cluster with Gateway API CRDs older than v1.3, to test a
/// client's discovery fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReferenceGrantVersions {
    /// Serve `v1` (preferred) and `v1beta1`.
    #[default]
    Both,
    /// Serve only `v1`.
    V1Only,
    /// Serve only `v1beta1`.
    V1Beta1Only,
}

impl ReferenceGrantVersions {
    fn versions(self) -> &'static [&'static str] {
        match self {
            Self::Both => &["v1", "v1beta1"],
            Self::V1Only => &["v1"],
            Self::V1Beta1Only => &["v1beta1"],
        }
    }
}

impl Resource {
    /// Every resource, in discovery order.
    pub const ALL: [Resource; 8] = [
        Resource::Namespaces,
        Resource::Services,
        Resource::EndpointSlices,
        Resource::GrpcRoutes,
        Resource::ReferenceGrants,
        Resource::Leases,
        Resource::ConfigMaps,
        Resource::BackendTlsPolicies,
    ];

    /// API group (`""` for core).
    pub fn group(self) -> &'static str {
        match self {
            Self::Namespaces | Self::Services | Self::ConfigMaps => "",
            Self::EndpointSlices => "discovery.k8s.io",
            Self::GrpcRoutes | Self::ReferenceGrants | Self::BackendTlsPolicies => {
                "gateway.networking.k8s.io"
            }
            Self::Leases => "coordination.k8s.io",
        }
    }

    /// Lower-case plural used in URLs.
    pub fn plural(self) -> &'static str {
        match self {
            Self::Namespaces => "namespaces",
            Self::Services => "services",
            Self::EndpointSlices => "endpointslices",
            Self::GrpcRoutes => "grpcroutes",
            Self::ReferenceGrants => "referencegrants",
            Self::Leases => "leases",
            Self::ConfigMaps => "configmaps",
            Self::BackendTlsPolicies => "backendtlspolicies",
        }
    }

    /// Lower-case singular name (what `kubectl get grpcroute` resolves).
    pub fn singular(self) -> &'static str {
        match self {
            Self::Namespaces => "namespace",
            Self::Services => "service",
            Self::EndpointSlices => "endpointslice",
            Self::GrpcRoutes => "grpcroute",
            Self::ReferenceGrants => "referencegrant",
            Self::Leases => "lease",
            Self::ConfigMaps => "configmap",
            Self::BackendTlsPolicies => "backendtlspolicy",
        }
    }

    /// The `kind` of one object.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Namespaces => "Namespace",
            Self::Services => "Service",
            Self::EndpointSlices => "EndpointSlice",
            Self::GrpcRoutes => "GRPCRoute",
            Self::ReferenceGrants => "ReferenceGrant",
            Self::Leases => "Lease",
            Self::ConfigMaps => "ConfigMap",
            Self::BackendTlsPolicies => "BackendTLSPolicy",
        }
    }

    /// Short names advertised in discovery (as the real server / CRDs do).
    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Self::Namespaces => &["ns"],
            Self::Services => &["svc"],
            Self::ReferenceGrants => &["refgrant"],
            Self::ConfigMaps => &["cm"],
            Self::BackendTlsPolicies => &["btlspolicy"],
            Self::EndpointSlices | Self::GrpcRoutes | Self::Leases => &[],
        }
    }

    /// Whether objects live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, Self::Namespaces)
    }

    /// Whether the resource has a `status` subresource, which makes writes to the main
    /// resource ignore `.status` (and writes to `/status` change nothing else).
    pub fn has_status(self) -> bool {
        matches!(
            self,
            Self::Namespaces | Self::Services | Self::GrpcRoutes | Self::BackendTlsPolicies
        )
    }

    /// The versions served under the configuration; the first is the preferred one.
    pub fn versions(self, rg: ReferenceGrantVersions) -> &'static [&'static str] {
        match self {
            Self::ReferenceGrants => rg.versions(),
            _ => &["v1"],
        }
    }

    /// The `apiVersion` objects carry when read without naming a version (the preferred
    /// served version).
    pub fn api_version(self, rg: ReferenceGrantVersions) -> String {
        let version = self.versions(rg).first().copied().unwrap_or("v1");
        api_version(self.group(), version)
    }

    /// Finds the resource stored under `group` with this `kind` (any served version).
    pub fn from_group_kind(group: &str, kind: &str) -> Option<Resource> {
        Self::ALL
            .into_iter()
            .find(|r| r.group() == group && r.kind() == kind)
    }

    /// Finds the resource for a URL's group, version and plural, if served.
    pub(crate) fn from_path(
        group: &str,
        version: &str,
        plural: &str,
        rg: ReferenceGrantVersions,
    ) -> Option<Resource> {
        Self::ALL.into_iter().find(|r| {
            r.group() == group && r.plural() == plural && r.versions(rg).contains(&version)
        })
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group().is_empty() {
            f.write_str(self.plural())
        } else {
            write!(f, "{}.{}", self.plural(), self.group())
        }
    }
}

/// `group/version`, or just `version` for the core group.
pub(crate) fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    }
}

/// Splits an `apiVersion` into group and version.
pub(crate) fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}
