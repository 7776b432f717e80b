//! Objects whose schema may be newer than this crate's API types, decoded one at a time.
//!
//! A Gateway API release can add filter types, enum values and fields that the types this
//! crate was built with do not know. Decoding a whole LIST into those types fails on the
//! first such object and takes every other object down with it, so the sources read raw
//! JSON and decode each object here, on its own:
//!
//! - A value the types cannot represent (an unknown filter `type` or enum value, a field
//!   of the wrong shape) rejects that object alone, with reason `UnsupportedValue` and the
//!   path of the field, e.g. `spec.rules[0].filters[1].type`, which is what the Gateway API
//!   asks of implementations that meet an unknown enum value. A rejected GRPCRoute keeps
//!   the parentRefs and generation that can still be read, so its status can say why.
//! - A field the types do not know is ignored and returned in [`Decoded::unknown`] for
//!   the caller to report. That is what every client compiled against an older release
//!   does (Gateway API's versioning policy keeps objects of a newer standard-channel
//!   release readable by older implementations), and rejecting instead would turn every
//!   route off at once when newer CRDs default a new field on every object.

use gateway_api::{grpcroutes::GrpcRouteSpec, referencegrants::ReferenceGrantSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::{InvalidObject, ObjectKind, object_key, route, tls_policy};

/// A decoded object, and the fields of its spec that the API types ignored.
#[derive(Debug)]
pub(crate) struct Decoded<T> {
    pub(crate) object: T,
    /// Paths of fields present in the JSON that the types do not know, e.g.
    /// `spec.rules[0].sessionPersistence`.
    pub(crate) unknown: Vec<String>,
}

/// A GRPCRoute from its metadata and the rest of its JSON (`spec`, `status`, ...). The
/// metadata is validated by the conversion that follows, unless the spec is rejected here.
pub(crate) fn grpc_route(
    metadata: &ObjectMeta,
    data: &Value,
    default_namespace: &str,
) -> Result<Decoded<gateway_api::grpcroutes::GrpcRoute>, InvalidObject> {
    let spec = spec_of(data);
    match spec_from::<GrpcRouteSpec>(spec) {
        Ok((spec, unknown)) => Ok(Decoded {
            object: gateway_api::grpcroutes::GrpcRoute {
                metadata: metadata.clone(),
                spec,
                status: None,
            },
            unknown,
        }),
        Err((field, message)) => {
            let key = object_key(ObjectKind::GrpcRoute, metadata, default_namespace)?;
            let parents = route::readable_parent_refs(spec, &key);
            Err(
                InvalidObject::new(ObjectKind::GrpcRoute, &key, field, message)
                    .with_route_context(&parents, metadata.generation),
            )
        }
    }
}

/// A ReferenceGrant (`v1` or `v1beta1`: the same shape) from its metadata and the rest
/// of its JSON. As for routes, the conversion that follows validates the metadata.
pub(crate) fn reference_grant(
    metadata: &ObjectMeta,
    data: &Value,
    default_namespace: &str,
) -> Result<Decoded<gateway_api::referencegrants::ReferenceGrant>, InvalidObject> {
    let (spec, unknown) = match spec_from::<ReferenceGrantSpec>(spec_of(data)) {
        Ok(decoded) => decoded,
        Err((field, message)) => {
            let key = object_key(ObjectKind::ReferenceGrant, metadata, default_namespace)?;
            return Err(InvalidObject::new(
                ObjectKind::ReferenceGrant,
                &key,
                field,
                message,
            ));
        }
    };
    Ok(Decoded {
        object: gateway_api::referencegrants::ReferenceGrant {
            metadata: metadata.clone(),
            spec,
        },
        unknown,
    })
}

/// A BackendTLSPolicy from its metadata and the rest of its JSON, decoded on its own for
/// the same reason as routes: a newer release's enum value in one policy must not stop
/// the watch of all of them.
///
/// Rejecting such a policy alone would leave its targets without TLS: it would fail open
/// to plaintext, where a policy that decodes but cannot be honoured fails its targets'
/// connections. So when the spec does not decode but its `targetRefs` do, the rejection
/// carries the policy, invalid and naming the field, that still claims those targets
/// ([`InvalidObject::claimed_policy`]); with unreadable `targetRefs` there is nothing to
/// claim and the policy is only rejected.
pub(crate) fn backend_tls_policy(
    metadata: &ObjectMeta,
    data: &Value,
    default_namespace: &str,
) -> Result<Decoded<gateway_api::backendtlspolicies::BackendTlsPolicy>, InvalidObject> {
    use gateway_api::backendtlspolicies::{BackendTlsPolicy, BackendTlsPolicySpec};
    let spec = spec_of(data);
    let (spec, unknown) = match spec_from::<BackendTlsPolicySpec>(spec) {
        Ok(decoded) => decoded,
        Err((field, message)) => {
            let key = object_key(ObjectKind::BackendTlsPolicy, metadata, default_namespace)?;
            let claim =
                tls_policy::undecodable_backend_tls_policy(metadata, spec, &key, &field, &message);
            let invalid = InvalidObject::new(ObjectKind::BackendTlsPolicy, &key, field, message);
            return Err(match claim {
                Some(policy) => invalid.with_claimed_policy(policy),
                None => invalid,
            });
        }
    };
    Ok(Decoded {
        object: BackendTlsPolicy {
            metadata: metadata.clone(),
            spec,
            status: None,
        },
        unknown,
    })
}

/// Logs the ignored fields of an object (once per object version: callers decode each
/// version once).
#[cfg(feature = "kube")]
pub(crate) fn warn_unknown(kind: ObjectKind, key: &crate::model::ObjectKey, unknown: &[String]) {
    if !unknown.is_empty() {
        tracing::warn!(
            %kind,
            object = %key,
            fields = %unknown.join(", "),
            "fields unknown to this client are ignored (the CRDs may be newer than it)"
        );
    }
}

/// `spec`, or an empty object when absent (every GRPCRoute spec field is optional).
fn spec_of(data: &Value) -> &Value {
    static EMPTY: std::sync::LazyLock<Value> =
        std::sync::LazyLock::new(|| Value::Object(serde_json::Map::new()));
    match data.get("spec") {
        Some(spec) if !spec.is_null() => spec,
        _ => &EMPTY,
    }
}

/// Decodes a spec; on failure, the path of the offending field (from `spec`) and why.
fn spec_from<S: DeserializeOwned + Serialize>(
    spec: &Value,
) -> Result<(S, Vec<String>), (String, String)> {
    let decoded: S = serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "spec".to_string()
        } else {
            format!("spec.{path}")
        };
        (field, e.into_inner().to_string())
    })?;
    let mut unknown = Vec::new();
    // Serializing what was decoded shows which fields the types kept; the rest were
    // ignored. The Kubernetes source pays for this once per object version.
    if let Ok(kept) = serde_json::to_value(&decoded) {
        ignored_fields(spec, &kept, "spec", &mut unknown);
    }
    Ok((decoded, unknown))
}

/// Adds to `out` the paths of the fields of `original` that `kept` lacks. `null` values
/// are not fields (the types drop them, and so does the API server).
fn ignored_fields(original: &Value, kept: &Value, path: &str, out: &mut Vec<String>) {
    match (original, kept) {
        (Value::Object(original), Value::Object(kept)) => {
            for (name, value) in original {
                let at = format!("{path}.{name}");
                match kept.get(name) {
                    Some(k) => ignored_fields(value, k, &at, out),
                    None if value.is_null() => {}
                    None => out.push(at),
                }
            }
        }
        (Value::Array(original), Value::Array(kept)) => {
            for (i, (o, k)) in original.iter().zip(kept).enumerate() {
                ignored_fields(o, k, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::ObjectKey;

    fn meta(generation: i64) -> ObjectMeta {
        ObjectMeta {
            name: Some("r".into()),
            namespace: Some("shop".into()),
            generation: Some(generation),
            ..ObjectMeta::default()
        }
    }

    fn route_with_filter(filter: Value) -> Value {
        json!({"spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "checkout", "port": 50051}],
            "rules": [{"filters": [filter], "backendRefs": [{"name": "v1", "port": 50051}]}],
        }})
    }

    #[test]
    fn an_unknown_filter_type_names_the_field_and_keeps_the_parents() {
        let data = route_with_filter(json!({"type": "FutureFilter", "futureFilter": {"x": 1}}));
        let e = grpc_route(&meta(3), &data, "default").unwrap_err();
        assert_eq!(e.field(), "spec.rules[0].filters[0].type");
        assert!(
            e.message().contains("unknown variant `FutureFilter`"),
            "{e}"
        );
        assert_eq!(e.reason(), "UnsupportedValue");
        assert_eq!(e.key(), &ObjectKey::new("shop", "r"));
        assert_eq!(e.generation(), Some(3));
        assert_eq!(e.parent_refs().len(), 1);
        assert_eq!(e.parent_refs()[0].name, "checkout");
    }

    #[test]
    fn an_unknown_enum_value_and_a_wrong_shape_are_rejected() {
        let data = json!({"spec": {"rules": [{"matches": [{"method": {"type": "Prefix", "service": "a.B"}}]}]}});
        let e = grpc_route(&meta(1), &data, "default").unwrap_err();
        assert_eq!(e.field(), "spec.rules[0].matches[0].method.type");
        let data = json!({"spec": {"rules": {"not": "a list"}}});
        let e = grpc_route(&meta(1), &data, "default").unwrap_err();
        assert_eq!(e.field(), "spec.rules");
    }

    #[test]
    fn unreadable_parent_refs_leave_the_readable_ones() {
        let data = json!({"spec": {
            "parentRefs": [{"name": "a", "port": "not a number"}, {"kind": "Service", "group": "", "name": "b"}],
        }});
        let e = grpc_route(&meta(1), &data, "default").unwrap_err();
        assert_eq!(e.field(), "spec.parentRefs[0].port");
        let names: Vec<&str> = e.parent_refs().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["b"]);
    }

    #[test]
    fn unknown_fields_are_ignored_and_listed() {
        let mut data = route_with_filter(json!({
            "type": "RequestHeaderModifier",
            "requestHeaderModifier": {"set": [{"name": "x", "value": "1"}], "future": true},
        }));
        data["spec"]["rules"][0]["sessionPersistence"] = json!({"type": "Cookie"});
        data["spec"]["rules"][0]["name"] = Value::Null;
        let decoded = grpc_route(&meta(1), &data, "default").unwrap();
        assert_eq!(
            decoded.unknown,
            [
                "spec.rules[0].filters[0].requestHeaderModifier.future",
                "spec.rules[0].sessionPersistence"
            ]
        );
        assert_eq!(decoded.object.spec.rules.unwrap().len(), 1);
        let known = route_with_filter(json!({"type": "RequestHeaderModifier",
            "requestHeaderModifier": {"set": [{"name": "x", "value": "1"}]}}));
        assert!(
            grpc_route(&meta(1), &known, "default")
                .unwrap()
                .unknown
                .is_empty()
        );
    }

    /// No false alarm: every field the types know, set, is found again.
    #[test]
    fn a_route_using_every_known_field_has_no_unknown_fields() {
        let backend = json!({"group": "", "kind": "Service", "name": "v1", "namespace": "shop", "port": 50051});
        let filters = json!([
            {"type": "RequestHeaderModifier", "requestHeaderModifier": {
                "set": [{"name": "a", "value": "1"}], "add": [{"name": "b", "value": "2"}], "remove": ["c"]}},
            {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"set": [{"name": "a", "value": "1"}]}},
            {"type": "RequestMirror", "requestMirror": {"backendRef": backend, "percent": 10}},
            {"type": "RequestMirror", "requestMirror": {"backendRef": backend, "fraction": {"numerator": 1, "denominator": 3}}},
            {"type": "ExtensionRef", "extensionRef": {"group": "example.com", "kind": "Thing", "name": "t"}},
        ]);
        let mut weighted = backend.clone();
        weighted["weight"] = json!(3);
        weighted["filters"] = filters.clone();
        let data = json!({"spec": {
            "hostnames": ["a.example.com"],
            "parentRefs": [{"group": "", "kind": "Service", "namespace": "shop", "name": "checkout",
                            "port": 50051, "sectionName": "grpc"}],
            "rules": [{
                "name": "first",
                "matches": [{
                    "method": {"type": "Exact", "service": "a.B", "method": "C"},
                    "headers": [{"type": "RegularExpression", "name": "x", "value": "y.*"}],
                }],
                "filters": filters,
                "backendRefs": [weighted],
            }],
        }});
        let decoded = grpc_route(&meta(1), &data, "default").unwrap();
        assert_eq!(decoded.unknown, Vec::<String>::new());
        let grant = json!({"spec": {
            "from": [{"group": "gateway.networking.k8s.io", "kind": "GRPCRoute", "namespace": "web"}],
            "to": [{"group": "", "kind": "Service", "name": "v1"}],
        }});
        let decoded = reference_grant(&meta(1), &grant, "default").unwrap();
        assert_eq!(decoded.unknown, Vec::<String>::new());
    }

    fn policy_with_san(san: Value) -> Value {
        json!({"spec": {
            "targetRefs": [
                {"group": "", "kind": "Service", "name": "cart", "sectionName": "grpc"},
                {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"},
            ],
            "validation": {"hostname": "cart.example.com", "wellKnownCACertificates": "System",
                           "subjectAltNames": [san]},
        }})
    }

    /// An undecodable policy is rejected, and still claims the Services it targets as an
    /// invalid policy naming the field, so that their calls fail rather than go out in
    /// plaintext.
    #[test]
    fn an_undecodable_policy_with_readable_targets_still_claims_them() {
        let mut metadata = meta(4);
        metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-01-02T03:04:05Z".parse().unwrap(),
        ));
        let data = policy_with_san(json!({"type": "IPAddress", "ipAddress": "10.0.0.1"}));
        let e = backend_tls_policy(&metadata, &data, "default").unwrap_err();
        assert_eq!(e.kind(), ObjectKind::BackendTlsPolicy);
        assert_eq!(e.field(), "spec.validation.subjectAltNames[0].type");
        let claim = e.claimed_policy().expect("the targets are claimed");
        assert_eq!(claim.key, ObjectKey::new("shop", "r"));
        assert_eq!(claim.generation, Some(4));
        assert_eq!(claim.created, metadata.creation_timestamp);
        // Only the core Service: the Gateway is another implementation's.
        assert_eq!(
            claim.targets,
            [crate::model::PolicyTarget {
                service: "cart".into(),
                section_name: Some("grpc".into()),
            }]
        );
        let problem = claim.validation.as_ref().unwrap_err();
        assert_eq!(problem.field, "spec.validation.subjectAltNames[0].type");
        assert!(
            problem.message.contains("unknown variant `IPAddress`"),
            "{problem:?}"
        );
        // A valid SAN decodes: no rejection at all.
        let data = policy_with_san(json!({"type": "URI", "uri": "spiffe://td/ns/shop/sa/cart"}));
        assert!(backend_tls_policy(&metadata, &data, "default").is_ok());
    }

    #[test]
    fn an_undecodable_policy_without_readable_targets_claims_nothing() {
        let mut data = policy_with_san(json!({"type": "IPAddress"}));
        // Targets of the wrong shape: which Services it is for is unknown.
        data["spec"]["targetRefs"][0]["name"] = json!(7);
        let e = backend_tls_policy(&meta(1), &data, "default").unwrap_err();
        assert_eq!(e.field(), "spec.targetRefs[0].name");
        assert!(e.claimed_policy().is_none());
        // Readable, but only another implementation's kinds, or an invalid Service name.
        let mut data = policy_with_san(json!({"type": "IPAddress"}));
        data["spec"]["targetRefs"] = json!([{"group": "x.io", "kind": "Thing", "name": "t"}]);
        let e = backend_tls_policy(&meta(1), &data, "default").unwrap_err();
        assert!(e.claimed_policy().is_none());
        data["spec"]["targetRefs"] =
            json!([{"group": "", "kind": "Service", "name": "Not_A_Name"}]);
        let e = backend_tls_policy(&meta(1), &data, "default").unwrap_err();
        assert_eq!(e.field(), "spec.validation.subjectAltNames[0].type");
        assert!(e.claimed_policy().is_none());
        // No spec at all.
        let e = backend_tls_policy(&meta(1), &json!({}), "default").unwrap_err();
        assert!(e.claimed_policy().is_none());
    }

    #[test]
    fn a_missing_spec_is_an_empty_route_and_an_incomplete_grant_is_rejected() {
        assert!(grpc_route(&meta(1), &json!({}), "default").is_ok());
        let e = reference_grant(&meta(1), &json!({"spec": {"to": []}}), "default").unwrap_err();
        assert_eq!(e.field(), "spec");
        assert!(e.message().contains("missing field `from`"), "{e}");
    }
}
