//! A skeletal OpenAPI v3 (`/openapi/v3`), just enough for kubectl.
//!
//! kubectl ≥ 1.27 validates `apply`/`create` input either on the server (if the OpenAPI
//! v3 document shows the PATCH operation of the kind accepting `fieldValidation`) or on
//! the client (which needs the protobuf OpenAPI v2 document, and fails with "failed to
//! download openapi" without it). Advertising `fieldValidation` makes plain
//! `kubectl apply` work; the server accepts the parameter and validates nothing.
//! No schemas are published, so kubectl builds patches from its compiled-in types (or a
//! JSON merge patch for GRPCRoute/ReferenceGrant), as it does with no OpenAPI at all.
//! `/openapi/v2` stays 404.

use serde_json::{Map, Value, json};

use crate::discovery::KUBE_MINOR;
use crate::resources::{ReferenceGrantVersions, Resource};

/// The group-versions served, as OpenAPI v3 path keys (`api/v1`, `apis/{g}/{v}`).
fn group_versions(rg: ReferenceGrantVersions) -> Vec<(&'static str, &'static str)> {
    let mut gvs = Vec::new();
    for r in Resource::ALL {
        for v in r.versions(rg) {
            if !gvs.contains(&(r.group(), *v)) {
                gvs.push((r.group(), *v));
            }
        }
    }
    gvs
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: where each group-version's document is.
pub(crate) fn root(rg: ReferenceGrantVersions) -> Value {
    let paths: Map<String, Value> = group_versions(rg)
        .into_iter()
        .map(|(g, v)| {
            let path = gv_path(g, v);
            let url = json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash=0")});
            (path, url)
        })
        .collect();
    json!({"paths": paths})
}

/// `/openapi/v3/api/v1`, `/openapi/v3/apis/{group}/{version}`: one PATCH operation per
/// kind, carrying its group-version-kind and the `fieldValidation` parameter.
pub(crate) fn group_version(
    group: &str,
    version: &str,
    rg: ReferenceGrantVersions,
) -> Option<Value> {
    if !group_versions(rg).contains(&(group, version)) {
        return None;
    }
    let mut paths = Map::new();
    for r in Resource::ALL {
        if r.group() != group || !r.versions(rg).contains(&version) {
            continue;
        }
        let prefix = gv_path(group, version);
        let path = if r.namespaced() {
            format!("/{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural())
        } else {
            format!("/{prefix}/{}/{{name}}", r.plural())
        };
        let operation = json!({
            "operationId": format!("patch{}", r.kind()),
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": r.kind()},
            "parameters": [
                {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                {"name": "force", "in": "query", "schema": {"type": "boolean"}},
            ],
            "responses": {"200": {"description": "OK"}},
        });
        paths.insert(path, json!({"patch": operation}));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{KUBE_MINOR}.0")},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

/// Splits `api/v1` / `apis/{g}/{v}` (the part after `/openapi/v3/`).
pub(crate) fn parse_gv(rest: &[&str]) -> Option<(String, String)> {
    match rest {
        ["api", version] => Some((String::new(), (*version).to_owned())),
        ["apis", group, version] => Some(((*group).to_owned(), (*version).to_owned())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_list_served_versions() {
        let root = root(ReferenceGrantVersions::V1Beta1Only);
        assert!(root["paths"]["apis/gateway.networking.k8s.io/v1beta1"].is_object());
        let doc = group_version("", "v1", ReferenceGrantVersions::Both);
        let doc = doc.unwrap_or_default();
        let op = &doc["paths"]["/api/v1/namespaces/{name}"]["patch"];
        assert_eq!(op["x-kubernetes-group-version-kind"]["kind"], "Namespace");
        assert!(
            group_version(
                "gateway.networking.k8s.io",
                "v1beta1",
                ReferenceGrantVersions::V1Only
            )
            .is_none()
        );
    }
}
