//! Validation of the four xDS resource types into our own, Envoy-free types.
//!
//! Each resource arrives as a protobuf `Any`. It is decoded by its type URL, then validated
//! the way gRPC does it (grpc_xds_features.md): unknown fields are ignored, but a supported
//! field with an unsupported value rejects (NACKs) that resource. Since gRFC A46 the rest of
//! the response still applies, so validation works per resource and collects *every* error
//! of a resource, each naming the field path as C-core does
//! (`virtual_hosts[0].routes[2].match.safe_regex: invalid regex: ...`).
//!
//! The validated types are pure data: they become the data plane's model. They are
//! `PartialEq`, so the client can tell a resent, unchanged resource from a real change and
//! keep the old `Arc` (the data plane relies on `Arc::ptr_eq`).

pub(crate) mod cluster;
pub(crate) mod endpoint;
pub(crate) mod listener;
pub(crate) mod route;
pub(crate) mod upstream_tls;

use std::{fmt, sync::Arc, time::Duration};

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::Cluster as ClusterProto, core::v3 as core,
            endpoint::v3::ClusterLoadAssignment, listener::v3::Listener as ListenerProto,
            route::v3::RouteConfiguration as RouteConfigProto,
        },
        service::discovery::v3::Resource as ResourceWrapper,
    },
    google::protobuf::{Any, Duration as DurationProto},
};
use prost::{Message, Name};

pub(crate) use self::{
    cluster::Cluster, endpoint::EndpointConfig, listener::Listener, route::RouteConfig,
};

/// The four resource types a gRPC client uses, in dependency order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum ResourceType {
    /// LDS: `envoy.config.listener.v3.Listener`.
    Listener,
    /// RDS: `envoy.config.route.v3.RouteConfiguration`.
    RouteConfiguration,
    /// CDS: `envoy.config.cluster.v3.Cluster`.
    Cluster,
    /// EDS: `envoy.config.endpoint.v3.ClusterLoadAssignment`.
    ClusterLoadAssignment,
}

impl ResourceType {
    /// Every type, in dependency order.
    pub(crate) const ALL: [ResourceType; 4] = [
        ResourceType::Listener,
        ResourceType::RouteConfiguration,
        ResourceType::Cluster,
        ResourceType::ClusterLoadAssignment,
    ];

    /// The v3 type URL (`type.googleapis.com/...`).
    pub(crate) fn type_url(self) -> String {
        match self {
            ResourceType::Listener => ListenerProto::type_url(),
            ResourceType::RouteConfiguration => RouteConfigProto::type_url(),
            ResourceType::Cluster => ClusterProto::type_url(),
            ResourceType::ClusterLoadAssignment => ClusterLoadAssignment::type_url(),
        }
    }

    /// The type for a type URL, if it is one of ours.
    pub(crate) fn from_type_url(url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// The short name CSDS and logs use (`Listener`, `RouteConfiguration`, ...).
    pub(crate) fn name(self) -> &'static str {
        match self {
            ResourceType::Listener => "Listener",
            ResourceType::RouteConfiguration => "RouteConfiguration",
            ResourceType::Cluster => "Cluster",
            ResourceType::ClusterLoadAssignment => "ClusterLoadAssignment",
        }
    }

    /// Index into per-type arrays.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Whether a SotW response must carry every subscribed resource of this type, so that
    /// a cached resource missing from it counts as deleted (A53/A88: LDS and CDS only).
    pub(crate) fn all_resources_required_in_sotw(self) -> bool {
        matches!(self, ResourceType::Listener | ResourceType::Cluster)
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A validated resource of any type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Resource {
    /// A Listener.
    Listener(Arc<Listener>),
    /// A RouteConfiguration.
    RouteConfiguration(Arc<RouteConfig>),
    /// A Cluster.
    Cluster(Arc<Cluster>),
    /// A ClusterLoadAssignment.
    Endpoints(Arc<EndpointConfig>),
}

impl Resource {
    /// The type of this resource.
    pub(crate) fn resource_type(&self) -> ResourceType {
        match self {
            Resource::Listener(_) => ResourceType::Listener,
            Resource::RouteConfiguration(_) => ResourceType::RouteConfiguration,
            Resource::Cluster(_) => ResourceType::Cluster,
            Resource::Endpoints(_) => ResourceType::ClusterLoadAssignment,
        }
    }
}

/// One validation error: the field path inside the resource and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    /// Dotted path from the resource root, e.g. `virtual_hosts[0].routes[2].match`.
    pub(crate) field: String,
    /// What is wrong.
    pub(crate) message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Every error found in one resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) struct ValidationErrors(pub(crate) Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        f.write_str("]")
    }
}

/// Collects errors while walking a resource, tracking the current field path.
///
/// Validation keeps going after an error so that the NACK names every problem at once,
/// as C-core's `ValidationErrors` does.
#[derive(Debug, Default)]
pub(crate) struct Validator {
    path: Vec<String>,
    errors: Vec<FieldError>,
}

impl Validator {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Runs `f` with `name` appended to the field path (`name` may carry an index:
    /// `routes[2]`).
    pub(crate) fn field<R>(
        &mut self,
        name: impl Into<String>,
        f: impl FnOnce(&mut Self) -> R,
    ) -> R {
        self.path.push(name.into());
        let r = f(self);
        self.path.pop();
        r
    }

    /// Records an error at the current path.
    pub(crate) fn error(&mut self, message: impl Into<String>) {
        // `a`, `[0]`, `b` → `a[0].b`.
        let mut field = String::new();
        for segment in &self.path {
            if !field.is_empty() && !segment.starts_with('[') {
                field.push('.');
            }
            field.push_str(segment);
        }
        self.errors.push(FieldError {
            field,
            message: message.into(),
        });
    }

    /// Records an error at `name` below the current path.
    pub(crate) fn error_at(&mut self, name: &str, message: impl Into<String>) {
        self.field(name, |v| v.error(message));
    }

    /// The number of errors so far (to tell whether a sub-walk failed).
    pub(crate) fn error_count(&self) -> usize {
        self.errors.len()
    }

    /// `Ok(value)` when no error was recorded.
    pub(crate) fn finish<T>(self, value: T) -> Result<T, ValidationErrors> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(ValidationErrors(self.errors))
        }
    }
}

/// A response entry that could not even be decoded: it cannot be attributed to a resource
/// name, so only the NACK carries it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// The `Any` has another type than the response's.
    #[error("resource has type {found}, expected {expected}")]
    WrongType {
        /// The type URL found.
        found: String,
        /// The response's type URL.
        expected: String,
    },
    /// The bytes are not a valid protobuf of that type.
    #[error("cannot decode {type_name}: {reason}")]
    Protobuf {
        /// The message type.
        type_name: &'static str,
        /// The decoder's error.
        reason: String,
    },
}

/// The outcome of decoding one entry of a response: its name, and either the validated
/// resource or why it is invalid.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// The resource name.
    pub(crate) name: String,
    /// The validated resource, or its errors.
    pub(crate) result: Result<Resource, ValidationErrors>,
}

/// Decodes and validates one `Any` of a response of type `ty`.
///
/// The `envoy.service.discovery.v3.Resource` wrapper is unwrapped first: the client
/// advertises `xds.config.resource-in-sotw`, which lets a server send it in SotW.
pub(crate) fn decode(ty: ResourceType, any: &Any) -> Result<Decoded, DecodeError> {
    decode_with(ty, any, &upstream_tls::CertificateProviderNames::default())
}

/// [`decode`] for a bootstrap whose certificate-provider instances are `providers` (the
/// names a TLS cluster may refer to, gRFC A29).
pub(crate) fn decode_with(
    ty: ResourceType,
    any: &Any,
    providers: &upstream_tls::CertificateProviderNames,
) -> Result<Decoded, DecodeError> {
    let unwrapped;
    let any = if any.type_url == ResourceWrapper::type_url() {
        let wrapper =
            ResourceWrapper::decode(any.value.as_slice()).map_err(|e| DecodeError::Protobuf {
                type_name: "envoy.service.discovery.v3.Resource",
                reason: e.to_string(),
            })?;
        unwrapped = wrapper.resource.unwrap_or_default();
        &unwrapped
    } else {
        any
    };
    if any.type_url != ty.type_url() {
        return Err(DecodeError::WrongType {
            found: any.type_url.clone(),
            expected: ty.type_url(),
        });
    }
    let bytes = any.value.as_slice();
    let proto_err = |e: prost::DecodeError| DecodeError::Protobuf {
        type_name: ty.name(),
        reason: e.to_string(),
    };
    Ok(match ty {
        ResourceType::Listener => {
            let proto = ListenerProto::decode(bytes).map_err(proto_err)?;
            Decoded {
                name: proto.name.clone(),
                result: listener::validate(&proto).map(|l| Resource::Listener(Arc::new(l))),
            }
        }
        ResourceType::RouteConfiguration => {
            let proto = RouteConfigProto::decode(bytes).map_err(proto_err)?;
            Decoded {
                name: proto.name.clone(),
                result: route::validate(&proto).map(|r| Resource::RouteConfiguration(Arc::new(r))),
            }
        }
        ResourceType::Cluster => {
            let proto = ClusterProto::decode(bytes).map_err(proto_err)?;
            Decoded {
                name: proto.name.clone(),
                result: cluster::validate_with(&proto, providers)
                    .map(|c| Resource::Cluster(Arc::new(c))),
            }
        }
        ResourceType::ClusterLoadAssignment => {
            let proto = ClusterLoadAssignment::decode(bytes).map_err(proto_err)?;
            Decoded {
                name: proto.cluster_name.clone(),
                result: endpoint::validate(&proto).map(|e| Resource::Endpoints(Arc::new(e))),
            }
        }
    })
}

/// Validates a protobuf Duration (the proto's own rules: seconds within ±10000 years,
/// nanos within a second, same sign) and requires it to be non-negative.
pub(crate) fn duration(v: &mut Validator, d: &DurationProto) -> Option<Duration> {
    const MAX_SECONDS: i64 = 315_576_000_000;
    if d.seconds < 0 || d.nanos < 0 {
        v.error("duration must be non-negative");
        return None;
    }
    if d.seconds > MAX_SECONDS {
        v.error("seconds must be in the range [0, 315576000000]");
        return None;
    }
    if d.nanos > 999_999_999 {
        v.error("nanos must be in the range [0, 999999999]");
        return None;
    }
    // Both checked non-negative above.
    Some(Duration::new(
        d.seconds.unsigned_abs(),
        d.nanos.unsigned_abs(),
    ))
}

/// Whether a ConfigSource points at ADS or at `self` (A27: the only ones gRPC accepts).
pub(crate) fn config_source_is_ads(source: &core::ConfigSource) -> bool {
    use core::config_source::ConfigSourceSpecifier;
    matches!(
        source.config_source_specifier,
        Some(ConfigSourceSpecifier::Ads(_)) | Some(ConfigSourceSpecifier::Self_(_))
    )
}

#[cfg(test)]
mod tests;
