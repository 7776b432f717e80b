//! The edge: Kubernetes objects (GRPCRoute, Service, EndpointSlice, ReferenceGrant) in, the
//! validated [`crate::model`] out.
//!
//! Objects read from files or built in code never passed an API server, so everything the
//! CRD schema and its CEL rules would have enforced is enforced here. Each invalid object is
//! rejected on its own with an [`InvalidObject`] naming the object and the field.

pub(crate) mod decode;
mod filter;
mod grant;
mod route;
mod service;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub(crate) use self::{
    grant::reference_grant,
    route::grpc_route,
    service::{SERVICE_NAME_LABEL, endpoint_slice, service},
};
use crate::model::ObjectKey;
pub(crate) use crate::model::{InvalidObject, ObjectKind};

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
