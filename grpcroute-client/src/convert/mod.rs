//! The edge: Kubernetes objects (GRPCRoute, Service, EndpointSlice, ReferenceGrant) in, the
//! validated [`crate::model`] out.
//!
//! Objects read from files or built in code never passed an API server, so everything the
//! CRD schema and its CEL rules would have enforced is enforced here. Each invalid object is
//! rejected on its own with an [`InvalidObject`] naming the object and the field.

mod filter;
mod grant;
mod route;
mod service;

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub(crate) use self::{
    grant::reference_grant,
    route::grpc_route,
    service::{SERVICE_NAME_LABEL, endpoint_slice, service},
};
use crate::model::{ObjectKey, ParentRef};

/// The kinds of object this crate reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// `gateway.networking.k8s.io/v1` GRPCRoute.
    GrpcRoute,
    /// Core `v1` Service.
    Service,
    /// `discovery.k8s.io/v1` EndpointSlice.
    EndpointSlice,
    /// `gateway.networking.k8s.io` ReferenceGrant (`v1` or `v1beta1`).
    ReferenceGrant,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::GrpcRoute => "GRPCRoute",
            Self::Service => "Service",
            Self::EndpointSlice => "EndpointSlice",
            Self::ReferenceGrant => "ReferenceGrant",
        })
    }
}

/// An object that failed validation. It is left out of routing; everything else keeps
/// working.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{} {}: {}: {}", .0.kind, .0.key, .0.field, .0.message)]
pub struct InvalidObject(Box<Details>);

#[derive(Clone, Debug, PartialEq)]
struct Details {
    kind: ObjectKind,
    key: ObjectKey,
    field: String,
    message: String,
    reason: &'static str,
    /// For routes: the parentRefs that could still be read, so status can be reported.
    parent_refs: Vec<ParentRef>,
    generation: Option<i64>,
}

impl InvalidObject {
    pub(crate) fn new(
        kind: ObjectKind,
        key: &ObjectKey,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self(Box::new(Details {
            kind,
            key: key.clone(),
            field: field.into(),
            message: message.into(),
            reason: "UnsupportedValue",
            parent_refs: Vec::new(),
            generation: None,
        }))
    }

    pub(crate) fn with_reason(mut self, reason: &'static str) -> Self {
        self.0.reason = reason;
        self
    }

    /// Attaches what status reporting needs of a rejected route.
    pub(crate) fn with_route_context(
        mut self,
        parent_refs: &[ParentRef],
        generation: Option<i64>,
    ) -> Self {
        self.0.parent_refs = parent_refs.to_vec();
        self.0.generation = generation;
        self
    }

    pub(crate) fn parent_refs(&self) -> &[ParentRef] {
        &self.0.parent_refs
    }

    pub(crate) fn generation(&self) -> Option<i64> {
        self.0.generation
    }

    /// The kind of the rejected object.
    pub fn kind(&self) -> ObjectKind {
        self.0.kind
    }

    /// Its namespace and name.
    pub fn key(&self) -> &ObjectKey {
        &self.0.key
    }

    /// The path of the offending field, e.g. `spec.rules[0].matches[1].method.service`.
    pub fn field(&self) -> &str {
        &self.0.field
    }

    /// Why the field is invalid.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The status reason a GRPCRoute gets for this (`UnsupportedValue` or
    /// `IncompatibleFilters`).
    pub fn reason(&self) -> &'static str {
        self.0.reason
    }
}

/// The key of an object from its metadata; a missing namespace means `default_namespace`
/// (what `kubectl apply` does with the current context's namespace).
pub(crate) fn object_key(
    kind: ObjectKind,
    meta: &ObjectMeta,
    default_namespace: &str,
) -> Result<ObjectKey, InvalidObject> {
    let namespace = meta.namespace.as_deref().unwrap_or(default_namespace);
    let name = meta.name.as_deref().unwrap_or_default();
    let key = ObjectKey::new(namespace, name);
    if name.is_empty() {
        return Err(InvalidObject::new(
            kind,
            &key,
            "metadata.name",
            "is required",
        ));
    }
    if !is_dns_label(namespace) {
        return Err(InvalidObject::new(
            kind,
            &key,
            "metadata.namespace",
            format!("{namespace:?} is not a valid namespace name"),
        ));
    }
    Ok(key)
}

/// RFC 1123 label: what Kubernetes requires of namespace and Service names.
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain (rule names, most object names).
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A port number from the API's `int32`.
pub(crate) fn port(value: i32) -> Option<u16> {
    u16::try_from(value).ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert!(is_dns_label("shop-1"));
        assert!(!is_dns_label("Shop"));
        assert!(!is_dns_label("-shop"));
        assert!(!is_dns_label(""));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(is_dns_subdomain("named-rule.v1"));
        assert!(!is_dns_subdomain("named..rule"));
    }

    #[test]
    fn ports_must_be_in_range() {
        assert_eq!(port(50051), Some(50051));
        assert_eq!(port(0), None);
        assert_eq!(port(65536), None);
        assert_eq!(port(-1), None);
    }

    #[test]
    fn missing_name_is_rejected_naming_the_field() {
        let err = object_key(ObjectKind::Service, &ObjectMeta::default(), "default").unwrap_err();
        assert_eq!(err.field(), "metadata.name");
        assert_eq!(err.key().namespace(), "default");
    }
}
