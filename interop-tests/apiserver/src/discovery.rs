//! Discovery documents (`/version`, `/api`, `/apis`, `/apis/{group}[/{version}]`).
//!
//! `/api` and `/apis` also serve aggregated discovery (`apidiscovery.k8s.io/v2`
//! `APIGroupDiscoveryList`, one request for everything) to clients whose `Accept` asks
//! for it, as kubectl ≥ 1.30 and kube's `Discovery::run_aggregated` do; everyone else
//! gets the legacy documents.

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::resources::{ReferenceGrantVersions, Resource, api_version};

/// The Kubernetes version reported by `/version` (that of k8s-openapi's `latest`).
pub(crate) const KUBE_MINOR: &str = "36";

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBE_MINOR,
        "gitVersion": format!("v1.{KUBE_MINOR}.0"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.25.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`.
pub(crate) fn core_versions(addr: SocketAddr) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string()}],
    })
}

/// The non-core groups, in discovery order.
fn groups() -> Vec<&'static str> {
    let mut groups: Vec<&str> = Vec::new();
    for r in Resource::ALL {
        if !r.group().is_empty() && !groups.contains(&r.group()) {
            groups.push(r.group());
        }
    }
    groups
}

/// Versions of a group served under the configuration, preferred (`v1`) first.
fn group_versions(group: &str, rg: ReferenceGrantVersions) -> Vec<&'static str> {
    let mut versions: Vec<&str> = Vec::new();
    for r in Resource::ALL.into_iter().filter(|r| r.group() == group) {
        for v in r.versions(rg) {
            if !versions.contains(v) {
                versions.push(v);
            }
        }
    }
    versions.sort_by_key(|v| (*v != "v1", *v));
    versions
}

fn group_doc(group: &str, rg: ReferenceGrantVersions) -> Value {
    let versions: Vec<Value> = group_versions(group, rg)
        .into_iter()
        .map(|v| json!({"groupVersion": api_version(group, v), "version": v}))
        .collect();
    json!({
        "name": group,
        "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
        "versions": versions,
    })
}

/// `/apis`.
pub(crate) fn group_list(rg: ReferenceGrantVersions) -> Value {
    let groups: Vec<Value> = groups().into_iter().map(|g| group_doc(g, rg)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`.
pub(crate) fn group(group: &str, rg: ReferenceGrantVersions) -> Value {
    let mut doc = group_doc(group, rg);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    doc
}

/// `/api/v1` and `/apis/{group}/{version}`.
pub(crate) fn resource_list(group: &str, version: &str, rg: ReferenceGrantVersions) -> Value {
    let mut resources = Vec::new();
    for r in Resource::ALL {
        if r.group() != group || !r.versions(rg).contains(&version) {
            continue;
        }
        let mut entry = json!({
            "name": r.plural(),
            "singularName": r.singular(),
            "namespaced": r.namespaced(),
            "kind": r.kind(),
            "verbs": VERBS,
        });
        if !r.short_names().is_empty() {
            entry["shortNames"] = json!(r.short_names());
        }
        if r.group() == "gateway.networking.k8s.io" {
            entry["categories"] = json!(["gateway-api"]);
        }
        resources.push(entry);
        if r.has_status() {
            resources.push(json!({
                "name": format!("{}/status", r.plural()),
                "singularName": "",
                "namespaced": r.namespaced(),
                "kind": r.kind(),
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": api_version(group, version),
        "resources": resources,
    })
}

/// The content type of aggregated discovery responses.
pub(crate) const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether an `Accept` header asks for aggregated discovery v2 in JSON.
pub(crate) fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.first() == Some(&"application/json")
            && params.contains(&"g=apidiscovery.k8s.io")
            && params.contains(&"v=v2")
            && params.contains(&"as=APIGroupDiscoveryList")
    })
}

/// Aggregated discovery: the core group (`/api`) or every other group (`/apis`).
pub(crate) fn aggregated(core: bool, rg: ReferenceGrantVersions) -> Value {
    let groups = if core { vec![""] } else { groups() };
    let items: Vec<Value> = groups
        .into_iter()
        .map(|group| {
            let versions: Vec<Value> = group_versions(group, rg)
                .into_iter()
                .map(|version| {
                    let resources: Vec<Value> = Resource::ALL
                        .into_iter()
                        .filter(|r| r.group() == group && r.versions(rg).contains(&version))
                        .map(|r| aggregated_resource(r, version))
                        .collect();
                    json!({"version": version, "resources": resources, "freshness": "Current"})
                })
                .collect();
            let metadata = if group.is_empty() {
                json!({"creationTimestamp": null})
            } else {
                json!({"name": group, "creationTimestamp": null})
            };
            json!({"metadata": metadata, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

fn aggregated_resource(r: Resource, version: &str) -> Value {
    let gvk = json!({"group": r.group(), "version": version, "kind": r.kind()});
    let mut entry = json!({
        "resource": r.plural(),
        "responseKind": gvk,
        "scope": if r.namespaced() { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular(),
        "verbs": VERBS,
    });
    if !r.short_names().is_empty() {
        entry["shortNames"] = json!(r.short_names());
    }
    if r.group() == "gateway.networking.k8s.io" {
        entry["categories"] = json!(["gateway-api"]);
    }
    if r.has_status() {
        entry["subresources"] = json!([{
            "subresource": "status",
            "responseKind": gvk,
            "verbs": ["get", "patch", "update"],
        }]);
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_accept_header() {
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated("application/json, */*"));
        assert!(!wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
        ));
        let doc = aggregated(false, ReferenceGrantVersions::Both);
        assert_eq!(doc["items"][0]["metadata"]["name"], "discovery.k8s.io");
    }

    #[test]
    fn reference_grant_versions_shape_discovery() {
        let both = group("gateway.networking.k8s.io", ReferenceGrantVersions::Both);
        assert_eq!(both["preferredVersion"]["version"], "v1");
        assert_eq!(both["versions"].as_array().map(Vec::len), Some(2));
        let beta = resource_list(
            "gateway.networking.k8s.io",
            "v1beta1",
            ReferenceGrantVersions::V1Beta1Only,
        );
        assert_eq!(beta["resources"][0]["name"], "referencegrants");
        let v1 = resource_list(
            "gateway.networking.k8s.io",
            "v1",
            ReferenceGrantVersions::V1Beta1Only,
        );
        let names: Vec<&str> = v1["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert_eq!(
            names,
            [
                "grpcroutes",
                "grpcroutes/status",
                "backendtlspolicies",
                "backendtlspolicies/status"
            ]
        );
    }
}
