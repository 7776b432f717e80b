//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902), a strategic merge
//! patch good enough for the kinds served here, and a simplified server-side apply.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// The patch formats a PATCH request may carry, keyed by its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchType {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/json-patch+json`.
    Json,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    pub(crate) fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/json-patch+json" => Ok(Self::Json),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(Self::Apply),
            _ => Err(ApiError::unsupported_media_type(content_type)),
        }
    }
}

/// Parses a body that is JSON, or YAML (kubectl and kube send JSON, which is also YAML;
/// a hand-written apply body may be real YAML).
pub(crate) fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).or_else(|json_err| {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request(format!("invalid JSON body: {json_err}")))?;
        serde_saphyr::from_str::<Value>(text)
            .map_err(|_| ApiError::bad_request(format!("invalid JSON or YAML body: {json_err}")))
    })
}

/// Applies `patch` of the given type to a copy of `current`.
pub(crate) fn apply_patch(
    current: &Value,
    patch_type: PatchType,
    body: &[u8],
) -> Result<Value, ApiError> {
    let mut target = current.clone();
    match patch_type {
        PatchType::Merge => json_patch::merge(&mut target, &parse_body(body)?),
        PatchType::Strategic => strategic_merge(&mut target, &parse_body(body)?, ""),
        PatchType::Apply => server_side_apply(&mut target, &parse_body(body)?),
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut target, &ops)
                .map_err(|e| ApiError::invalid_patch(format!("the JSON patch failed: {e}")))?;
        }
    }
    Ok(target)
}

/// Simplified server-side apply: the applied configuration is merged into the live
/// object (maps recursively, lists and scalars replaced). Field ownership is not
/// tracked, so `force` is irrelevant, no conflicts are ever reported, and a field
/// dropped from a later apply is *not* removed.
pub(crate) fn server_side_apply(target: &mut Value, applied: &Value) {
    json_patch::merge(target, applied);
}

/// List fields merged element-by-element (by this key) rather than replaced, for the
/// kinds served here. Anything else with a list is `atomic`/replace in Kubernetes too.
fn merge_key(path: &str) -> Option<&'static str> {
    match path {
        "spec.ports" => Some("port"),
        "metadata.ownerReferences" => Some("uid"),
        _ => None,
    }
}

/// Primitive lists with `patchStrategy: merge` (union instead of replace).
fn is_merged_primitive_list(path: &str) -> bool {
    path == "metadata.finalizers"
}

/// A strategic merge patch, as kubectl sends for built-in kinds (Service, Namespace,
/// EndpointSlice, Lease). Supports `$patch: replace|delete`, `$retainKeys`,
/// `$setElementOrder/<field>`, `$deleteFromPrimitiveList/<field>` and merge keys for the
/// few list fields above.
pub(crate) fn strategic_merge(target: &mut Value, patch: &Value, path: &str) {
    let Value::Object(patch_map) = patch else {
        *target = strip_directives(patch);
        return;
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = strip_directives(patch);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target_map) = target else {
        return;
    };
    if let Some(Value::Array(keep)) = patch_map.get("$retainKeys") {
        target_map.retain(|k, _| keep.iter().any(|kept| kept.as_str() == Some(k.as_str())));
    }
    let mut orders = Vec::new();
    for (key, value) in patch_map {
        let child_path = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        if key == "$patch" || key == "$retainKeys" {
            continue;
        } else if let Some(field) = key.strip_prefix("$setElementOrder/") {
            orders.push((field.to_owned(), value));
        } else if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(remove)) =
                (target_map.get_mut(field), value)
            {
                list.retain(|item| !remove.contains(item));
            }
        } else if value.is_null() || is_delete_directive(value) {
            target_map.remove(key);
        } else if let Value::Array(items) = value {
            let existing = target_map.entry(key.clone()).or_insert(Value::Null);
            merge_list(existing, items, &child_path);
        } else if value.is_object() {
            let existing = target_map.entry(key.clone()).or_insert(Value::Null);
            strategic_merge(existing, value, &child_path);
        } else {
            target_map.insert(key.clone(), value.clone());
        }
    }
    for (field, order) in orders {
        let child_path = if path.is_empty() {
            field.clone()
        } else {
            format!("{path}.{field}")
        };
        if let (Some(Value::Array(list)), Value::Array(order)) = (target_map.get_mut(&field), order)
        {
            reorder(list, order, merge_key(&child_path));
        }
    }
}

fn is_delete_directive(value: &Value) -> bool {
    value.get("$patch").and_then(Value::as_str) == Some("delete")
}

fn merge_list(existing: &mut Value, items: &[Value], path: &str) {
    let replace_all = items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"));
    let mut list = match existing.take() {
        Value::Array(list) => list,
        _ => Vec::new(),
    };
    let Some(key) = merge_key(path).filter(|_| !replace_all) else {
        if is_merged_primitive_list(path) && !replace_all {
            for item in items {
                if !list.contains(item) {
                    list.push(item.clone());
                }
            }
        } else {
            let kept = items.iter().filter(|i| i.get("$patch").is_none());
            list = kept.map(strip_directives).collect();
        }
        *existing = Value::Array(list);
        return;
    };
    for item in items {
        let id = item.get(key);
        let position = list.iter().position(|e| id.is_some() && e.get(key) == id);
        match (position, is_delete_directive(item)) {
            (Some(i), true) => {
                list.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut list[i], item, path),
            (None, false) => list.push(strip_directives(item)),
        }
    }
    *existing = Value::Array(list);
}

/// Orders `list` as `order` says (elements named in it first, in that order).
fn reorder(list: &mut [Value], order: &[Value], key: Option<&str>) {
    let rank = |item: &Value| {
        order
            .iter()
            .position(|o| match key {
                Some(k) => o.get(k).is_some() && o.get(k) == item.get(k),
                None => o == item,
            })
            .unwrap_or(usize::MAX)
    };
    list.sort_by_key(rank);
}

/// Drops `$...` directive keys (recursively) so they never land in a stored object.
fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn strategic_merge_merges_service_ports_by_port() {
        let mut svc = json!({"metadata": {"name": "s", "labels": {"a": "1"}},
            "spec": {"ports": [{"port": 80, "name": "http"}, {"port": 81, "name": "grpc"}]}});
        let patch = json!({
            "metadata": {"labels": {"a": null, "b": "2"}},
            "spec": {
                "$setElementOrder/ports": [{"port": 82}, {"port": 81}],
                "ports": [{"port": 81, "targetPort": 9090}, {"port": 80, "$patch": "delete"},
                          {"port": 82, "name": "new"}]
            }
        });
        strategic_merge(&mut svc, &patch, "");
        assert_eq!(
            svc,
            json!({"metadata": {"name": "s", "labels": {"b": "2"}},
                "spec": {"ports": [{"port": 82, "name": "new"},
                                   {"port": 81, "name": "grpc", "targetPort": 9090}]}})
        );
    }

    #[test]
    fn strategic_merge_replaces_atomic_lists_and_honours_directives() {
        let mut eps = json!({"endpoints": [{"addresses": ["10.0.0.1"]}],
            "metadata": {"finalizers": ["a"]}, "spec": {"x": {"y": 1}}});
        let patch = json!({"endpoints": [{"addresses": ["10.0.0.2"]}],
            "metadata": {"finalizers": ["b"]},
            "spec": {"x": {"$patch": "replace", "z": 2}}});
        strategic_merge(&mut eps, &patch, "");
        assert_eq!(
            eps,
            json!({"endpoints": [{"addresses": ["10.0.0.2"]}],
                "metadata": {"finalizers": ["a", "b"]}, "spec": {"x": {"z": 2}}})
        );
    }

    #[test]
    fn json_and_merge_patches() -> Result<(), ApiError> {
        let obj = json!({"spec": {"a": 1, "b": [1, 2]}});
        let merged = apply_patch(&obj, PatchType::Merge, br#"{"spec":{"a":null,"b":[3]}}"#)?;
        assert_eq!(merged, json!({"spec": {"b": [3]}}));
        let patched = apply_patch(
            &obj,
            PatchType::Json,
            br#"[{"op":"replace","path":"/spec/a","value":5},{"op":"add","path":"/spec/b/-","value":9}]"#,
        )?;
        assert_eq!(patched, json!({"spec": {"a": 5, "b": [1, 2, 9]}}));
        let failed = apply_patch(
            &obj,
            PatchType::Json,
            br#"[{"op":"test","path":"/spec/a","value":2}]"#,
        );
        assert_eq!(failed.map_err(|e| e.code), Err(422));
        let applied = apply_patch(&obj, PatchType::Apply, b"spec:\n  c: x\n")?;
        assert_eq!(applied, json!({"spec": {"a": 1, "b": [1, 2], "c": "x"}}));
        Ok(())
    }
}
