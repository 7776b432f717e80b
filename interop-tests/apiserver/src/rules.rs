//! The object-lifecycle rules of the real server, as pure functions on JSON: which
//! metadata the server owns, how `generation` moves, what the status subresource
//! protects. The store applies their results under its lock.

use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::meta::{
    copy_meta_field, meta_str, metadata_mut, name_suffix, now_rfc3339, spec_content,
};
use crate::resources::{ReferenceGrantVersions, Resource, split_api_version};
use crate::store::Target;

/// An object ready to be created (everything but `uid` and `resourceVersion` set).
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) namespace: Option<String>,
    pub(crate) name: String,
    pub(crate) object: Value,
}

/// The outcome of an update.
#[derive(Debug)]
pub(crate) enum Update {
    /// Nothing changed: no new resource version, no event.
    Unchanged,
    Modified(Value),
    /// The last finalizer of an object being deleted was removed: it goes away.
    Finalized(Value),
}

/// Validates and completes an object to create. `namespace` is the URL's; without one
/// (direct writes) the object's own, else `default`.
pub(crate) fn prepare_create(
    resource: Resource,
    rg: ReferenceGrantVersions,
    namespace: Option<&str>,
    mut object: Value,
    target: Target,
) -> Result<Prepared, ApiError> {
    check_type(resource, rg, &object)?;
    let meta = metadata_mut(&mut object)
        .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    let name = match (meta_name(meta, "name"), meta_name(meta, "generateName")) {
        (Some(name), _) => name,
        (None, Some(prefix)) => format!("{prefix}{}", name_suffix()),
        (None, None) => {
            return Err(ApiError::invalid(
                resource,
                "",
                "metadata.name: Required value: name or generateName is required",
            ));
        }
    };
    meta.insert("name".into(), json!(name));
    let namespace = if resource.namespaced() {
        let ns = match (namespace, meta_name(meta, "namespace").as_deref()) {
            (Some(url), Some(body)) if url != body => return Err(namespace_mismatch()),
            (Some(ns), _) | (None, Some(ns)) => ns.to_owned(),
            (None, None) => "default".to_owned(),
        };
        meta.insert("namespace".into(), json!(ns));
        Some(ns)
    } else {
        meta.remove("namespace");
        None
    };
    meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
    meta.insert("generation".into(), json!(1));
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    if let Some(map) = object.as_object_mut() {
        // Real servers reset the status of kinds with a status subresource on create.
        if target != Target::Whole && resource.has_status() {
            map.remove("status");
        }
        match resource {
            Resource::Namespaces => {
                let status = map.entry("status").or_insert_with(|| json!({}));
                if let Some(s) = status.as_object_mut() {
                    s.entry("phase").or_insert_with(|| json!("Active"));
                }
            }
            Resource::Services => {
                map.entry("status")
                    .or_insert_with(|| json!({"loadBalancer": {}}));
            }
            _ => {}
        }
    }
    set_type(resource, rg, &mut object);
    Ok(Prepared {
        namespace,
        name,
        object,
    })
}

/// Computes the stored object for a write of `desired` over `old` (at `(namespace,
/// name)`): checks identity and optimistic concurrency, keeps server-owned metadata,
/// honours the status subresource, and bumps `generation` when anything but metadata
/// and status changed.
pub(crate) fn prepare_update(
    resource: Resource,
    rg: ReferenceGrantVersions,
    (namespace, name): (&str, &str),
    old: &Value,
    desired: Value,
    target: Target,
) -> Result<Update, ApiError> {
    check_type(resource, rg, &desired)?;
    if !desired.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    check_name(resource, &desired, name)?;
    if resource.namespaced() && meta_str(&desired, "namespace").is_some_and(|ns| ns != namespace) {
        return Err(namespace_mismatch());
    }
    let old_rv = meta_str(old, "resourceVersion").unwrap_or("");
    let stale =
        meta_str(&desired, "resourceVersion").is_some_and(|rv| !rv.is_empty() && rv != old_rv);
    if target != Target::Whole && stale {
        return Err(ApiError::conflict(
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    let mut new = match target {
        Target::Whole => desired,
        Target::Main => {
            let mut new = desired;
            if resource.has_status() {
                set_status(&mut new, old.get("status").cloned());
            }
            new
        }
        Target::Status => {
            let mut new = old.clone();
            set_status(&mut new, desired.get("status").cloned());
            new
        }
    };
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "resourceVersion",
    ] {
        copy_meta_field(old, &mut new, field);
    }
    let generation = old
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let bump = i64::from(spec_content(old) != spec_content(&new));
    if let Some(meta) = metadata_mut(&mut new) {
        meta.insert("generation".into(), json!(generation + bump));
    }
    set_type(resource, rg, &mut new);
    if new == *old {
        // No-op writes do not bump the resource version or emit events (as etcd-backed
        // servers behave), so `kubectl apply` twice reports "unchanged".
        return Ok(Update::Unchanged);
    }
    let finalized = meta_str(&new, "deletionTimestamp").is_some()
        && new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
    Ok(if finalized {
        Update::Finalized(new)
    } else {
        Update::Modified(new)
    })
}

/// A body naming another object than the URL is a 400, as on the real server.
pub(crate) fn check_name(
    resource: Resource,
    object: &Value,
    url_name: &str,
) -> Result<(), ApiError> {
    match meta_str(object, "name") {
        Some(name) if name != url_name => Err(ApiError::bad_request(format!(
            "the name of the object ({name}) does not match the name on the URL ({url_name}) for {resource}"
        ))),
        _ => Ok(()),
    }
}

fn namespace_mismatch() -> ApiError {
    ApiError::bad_request(
        "the namespace of the provided object does not match the namespace sent on the request",
    )
}

/// Rejects a body whose `kind`/`apiVersion` name another resource (or an unserved
/// version).
fn check_type(
    resource: Resource,
    rg: ReferenceGrantVersions,
    object: &Value,
) -> Result<(), ApiError> {
    if let Some(kind) = object.get("kind").and_then(Value::as_str)
        && kind != resource.kind()
    {
        return Err(ApiError::bad_request(format!(
            "the kind of the provided object ({kind}) does not match the resource ({resource})"
        )));
    }
    if let Some(api_version) = object.get("apiVersion").and_then(Value::as_str) {
        let (group, version) = split_api_version(api_version);
        if group != resource.group() || !resource.versions(rg).contains(&version) {
            return Err(ApiError::bad_request(format!(
                "the API version of the provided object ({api_version}) does not match the resource ({resource})"
            )));
        }
    }
    Ok(())
}

/// Stores objects with the preferred version; responses rewrite it per request.
fn set_type(resource: Resource, rg: ReferenceGrantVersions, object: &mut Value) {
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".into(), json!(resource.api_version(rg)));
        map.insert("kind".into(), json!(resource.kind()));
    }
}

fn meta_name(meta: &Map<String, Value>, field: &str) -> Option<String> {
    meta.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn set_status(object: &mut Value, status: Option<Value>) {
    if let Some(map) = object.as_object_mut() {
        match status {
            Some(s) => map.insert("status".into(), s),
            None => map.remove("status"),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RG: ReferenceGrantVersions = ReferenceGrantVersions::Both;

    fn route(spec: Value, status: Value) -> Value {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
            "metadata": {"name": "r", "namespace": "n", "resourceVersion": "5", "generation": 1,
                         "uid": "u", "creationTimestamp": "t"},
            "spec": spec, "status": status})
    }

    fn update(old: &Value, desired: Value, target: Target) -> Result<Update, ApiError> {
        prepare_update(Resource::GrpcRoutes, RG, ("n", "r"), old, desired, target)
    }

    #[test]
    fn generation_and_status_rules() -> Result<(), ApiError> {
        let old = route(json!({"a": 1}), json!({"s": 1}));
        // Main writes ignore status; a spec change bumps the generation.
        let Update::Modified(new) =
            update(&old, route(json!({"a": 2}), json!({"s": 9})), Target::Main)?
        else {
            panic!("expected a modification");
        };
        assert_eq!(
            (new["metadata"]["generation"].clone(), new["status"].clone()),
            (json!(2), json!({"s": 1}))
        );
        // Status writes change only status, never the generation.
        let Update::Modified(new) = update(
            &old,
            route(json!({"a": 3}), json!({"s": 2})),
            Target::Status,
        )?
        else {
            panic!("expected a modification");
        };
        assert_eq!(
            (new["metadata"]["generation"].clone(), new["spec"].clone()),
            (json!(1), json!({"a": 1}))
        );
        // Identical content is no write at all, and a stale version is a conflict.
        assert!(matches!(
            update(&old, old.clone(), Target::Main)?,
            Update::Unchanged
        ));
        let mut stale = old.clone();
        stale["metadata"]["resourceVersion"] = json!("4");
        assert_eq!(
            update(&old, stale.clone(), Target::Main)
                .map(|_| ())
                .map_err(|e| e.code),
            Err(409)
        );
        assert!(
            update(&old, stale, Target::Whole).is_ok(),
            "direct writes skip the check"
        );
        Ok(())
    }

    #[test]
    fn create_fills_server_owned_metadata() -> Result<(), ApiError> {
        let p = prepare_create(
            Resource::GrpcRoutes,
            RG,
            Some("n"),
            route(json!({}), json!({"s": 1})),
            Target::Main,
        )?;
        assert_eq!((p.namespace.as_deref(), p.name.as_str()), (Some("n"), "r"));
        assert_eq!(p.object["metadata"]["generation"], 1);
        assert!(p.object.get("status").is_none());
        let other_ns = prepare_create(
            Resource::GrpcRoutes,
            RG,
            Some("x"),
            route(json!({}), json!({})),
            Target::Main,
        );
        assert_eq!(other_ns.map(|_| ()).map_err(|e| e.code), Err(400));
        let ns = prepare_create(
            Resource::Namespaces,
            RG,
            None,
            json!({"metadata": {"name": "a", "namespace": "b"}}),
            Target::Main,
        )?;
        assert_eq!(ns.object["status"]["phase"], "Active");
        assert_eq!(ns.namespace, None);
        Ok(())
    }
}
