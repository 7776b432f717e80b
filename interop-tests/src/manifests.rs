//! Conformance manifests as raw documents, and the rewrites that turn the upstream
//! (HTTPRoute- and Gateway-based) scenarios into their gRPC mesh versions.
//!
//! The documents stay `serde_json::Value`s until [`Manifests::resources`] converts the kinds
//! the mesh reads (GRPCRoute, Service, EndpointSlice, ReferenceGrant) into typed objects;
//! everything else (Namespaces, Deployments, Gateways, ...) is only read by the harness.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow, bail};
use grpcroute_client::{Object, Resources};
use serde_json::{Value, json};

/// A path under the vendored conformance folder (`interop-tests/conformance/`), e.g.
/// `conformance_path("v1.6.1/mesh/manifests.yaml")`.
pub fn conformance_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("conformance")
        .join(relative)
}

/// The Gateway API group.
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// A Deployment, as far as the harness needs it: which pods to start and their labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployment {
    /// Namespace (`default` when the manifest has none).
    pub namespace: String,
    /// Name; pods are named `<name>-<i>`.
    pub name: String,
    /// The pod template's labels, which Service selectors match.
    pub labels: BTreeMap<String, String>,
    /// `spec.replicas`, or [`DEFAULT_REPLICAS`] when unset.
    pub replicas: usize,
}

/// Replicas of a Deployment that does not say: two, so that every Service balances.
pub const DEFAULT_REPLICAS: usize = 2;

/// The documents of one or more manifest files.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Manifests {
    docs: Vec<Value>,
}

impl Manifests {
    /// Reads every document of `paths` (files), in order.
    ///
    /// # Errors
    ///
    /// A file that cannot be read or is not valid YAML.
    pub fn load<P: AsRef<Path>>(paths: &[P]) -> anyhow::Result<Self> {
        let mut out = Self::default();
        for path in paths {
            let path = path.as_ref();
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            out.extend(Self::from_yaml(&text).with_context(|| format!("in {}", path.display()))?);
        }
        Ok(out)
    }

    /// Reads conformance files by their paths under `interop-tests/conformance/`.
    ///
    /// # Errors
    ///
    /// As [`Manifests::load`].
    pub fn conformance(relative: &[&str]) -> anyhow::Result<Self> {
        let paths: Vec<PathBuf> = relative.iter().map(|r| conformance_path(r)).collect();
        Self::load(&paths)
    }

    /// Parses a (multi-document) YAML text.
    ///
    /// # Errors
    ///
    /// Invalid YAML.
    pub fn from_yaml(text: &str) -> anyhow::Result<Self> {
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(text).map_err(|e| anyhow!("invalid YAML: {e}"))?;
        Ok(Self {
            docs: docs.into_iter().filter(|d| !d.is_null()).collect(),
        })
    }

    /// Adds the documents of `other`.
    pub fn extend(&mut self, other: Manifests) {
        self.docs.extend(other.docs);
    }

    /// Adds one document.
    pub fn push(&mut self, doc: Value) {
        self.docs.push(doc);
    }

    /// Every document.
    pub fn docs(&self) -> &[Value] {
        &self.docs
    }

    /// The documents of one kind.
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.docs.iter().filter(move |d| kind_of(d) == kind)
    }

    /// The documents of one kind, to edit.
    pub fn of_kind_mut<'a>(&'a mut self, kind: &'a str) -> impl Iterator<Item = &'a mut Value> {
        self.docs.iter_mut().filter(move |d| kind_of(d) == kind)
    }

    /// Turns every HTTPRoute into a GRPCRoute (same spec, kind changed). Only routes whose
    /// meaning carries over can be converted: header matches, the four filters GRPCRoute
    /// has, backendRefs.
    ///
    /// # Errors
    ///
    /// An HTTPRoute with an HTTP-only feature (path, method or query matches; redirect,
    /// rewrite and other HTTP-only filters; timeouts, retries).
    pub fn http_routes_to_grpc(&mut self) -> anyhow::Result<()> {
        for doc in self.of_kind_mut("HTTPRoute") {
            let name = name_of(doc);
            for (i, rule) in doc["spec"]["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                http_only_features(rule)
                    .map_err(|e| anyhow!("HTTPRoute {name} rule {i}: {e}; it has no gRPC form"))?;
            }
            doc["kind"] = Value::String("GRPCRoute".into());
            doc["apiVersion"] = Value::String(format!("{GATEWAY_GROUP}/v1"));
        }
        Ok(())
    }

    /// Rewrites Service ports with `appProtocol: http` to `kubernetes.io/h2c`: the echo
    /// servers speak gRPC (HTTP/2 cleartext) on every port.
    pub fn h2c_app_protocols(&mut self) {
        for svc in self.of_kind_mut("Service") {
            for port in svc["spec"]["ports"].as_array_mut().into_iter().flatten() {
                if port.get("appProtocol").and_then(Value::as_str) == Some("http") {
                    port["appProtocol"] = Value::String("kubernetes.io/h2c".into());
                }
            }
        }
    }

    /// Re-attaches GRPCRoutes bound to a Gateway to a Service parent instead: for every
    /// Gateway a route names, a selector-less frontend Service of the same name and
    /// namespace is added, with one port per listener port (named after the first listener
    /// on it); a parentRef's `sectionName` (a listener) becomes that listener's `port`.
    ///
    /// # Errors
    ///
    /// A route names a Gateway (or listener) the manifests do not define.
    pub fn reattach_gateway_routes(&mut self) -> anyhow::Result<()> {
        let gateways: BTreeMap<(String, String), Vec<(String, u16)>> = self
            .of_kind("Gateway")
            .map(|g| {
                let listeners = g["spec"]["listeners"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|l| {
                        let name = l["name"].as_str()?.to_string();
                        let port = u16::try_from(l["port"].as_u64()?).ok()?;
                        Some((name, port))
                    })
                    .collect();
                ((namespace_of(g), name_of(g)), listeners)
            })
            .collect();
        let mut frontends: BTreeMap<(String, String), Vec<(String, u16)>> = BTreeMap::new();
        for route in self.of_kind_mut("GRPCRoute") {
            let route_ns = namespace_of(route);
            let route_name = name_of(route);
            for parent in route["spec"]["parentRefs"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                let group = parent
                    .get("group")
                    .and_then(Value::as_str)
                    .unwrap_or(GATEWAY_GROUP);
                let kind = parent
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or("Gateway");
                if group != GATEWAY_GROUP || kind != "Gateway" {
                    continue;
                }
                let gw_ns = parent
                    .get("namespace")
                    .and_then(Value::as_str)
                    .map_or_else(|| route_ns.clone(), str::to_string);
                let gw_name = parent["name"].as_str().unwrap_or_default().to_string();
                let key = (gw_ns.clone(), gw_name.clone());
                let listeners = gateways.get(&key).ok_or_else(|| {
                    anyhow!(
                        "GRPCRoute {route_ns}/{route_name}: Gateway {gw_ns}/{gw_name} is not in the manifests"
                    )
                })?;
                let port = match parent.get("sectionName").and_then(Value::as_str) {
                    None => None,
                    Some(section) => Some(
                        listeners
                            .iter()
                            .find(|(n, _)| n == section)
                            .map(|(_, p)| *p)
                            .ok_or_else(|| {
                                anyhow!("Gateway {gw_ns}/{gw_name} has no listener {section:?}")
                            })?,
                    ),
                };
                let mut new_parent = json!({"group": "", "kind": "Service", "name": gw_name});
                if gw_ns != route_ns {
                    new_parent["namespace"] = Value::String(gw_ns.clone());
                }
                if let Some(port) = port {
                    new_parent["port"] = json!(port);
                }
                *parent = new_parent;
                frontends.insert(key, listeners.clone());
            }
        }
        for ((ns, name), listeners) in frontends {
            let mut ports: Vec<Value> = Vec::new();
            for (listener, port) in listeners {
                if ports.iter().any(|p| p["port"] == json!(port)) {
                    continue;
                }
                ports.push(json!({
                    "name": listener,
                    "port": port,
                    "appProtocol": "kubernetes.io/h2c",
                }));
            }
            self.docs.push(json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"namespace": ns, "name": name},
                "spec": {"ports": ports},
            }));
        }
        Ok(())
    }

    /// The Deployments, with their pod labels and replica counts.
    pub fn deployments(&self) -> Vec<Deployment> {
        self.of_kind("Deployment")
            .map(|d| Deployment {
                namespace: namespace_of(d),
                name: name_of(d),
                labels: d["spec"]["template"]["metadata"]["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect(),
                replicas: d["spec"]["replicas"]
                    .as_u64()
                    .and_then(|r| usize::try_from(r).ok())
                    .unwrap_or(DEFAULT_REPLICAS),
            })
            .collect()
    }

    /// The objects the mesh reads, typed. Other kinds are left out.
    ///
    /// # Errors
    ///
    /// An object that does not fit its kind's schema (or an HTTPRoute left unconverted).
    pub fn resources(&self) -> anyhow::Result<Resources> {
        let mut out = Resources::new();
        for doc in &self.docs {
            let what = || format!("{} {}/{}", kind_of(doc), namespace_of(doc), name_of(doc));
            let object: Object = match kind_of(doc) {
                "GRPCRoute" => typed::<gateway_api::grpcroutes::GrpcRoute>(doc)
                    .with_context(what)?
                    .into(),
                "Service" => typed::<k8s_openapi::api::core::v1::Service>(doc)
                    .with_context(what)?
                    .into(),
                "EndpointSlice" => typed::<k8s_openapi::api::discovery::v1::EndpointSlice>(doc)
                    .with_context(what)?
                    .into(),
                "ReferenceGrant" => {
                    let mut doc = doc.clone();
                    doc["apiVersion"] = Value::String(format!("{GATEWAY_GROUP}/v1"));
                    typed::<gateway_api::referencegrants::ReferenceGrant>(&doc)
                        .with_context(what)?
                        .into()
                }
                "HTTPRoute" => bail!("{}: convert it with http_routes_to_grpc first", what()),
                _ => continue,
            };
            out.push(object);
        }
        Ok(out)
    }
}

fn typed<T: serde::de::DeserializeOwned>(doc: &Value) -> anyhow::Result<T> {
    Ok(serde_json::from_value(doc.clone())?)
}

/// Why an HTTPRoute rule has no GRPCRoute equivalent, if it has none.
fn http_only_features(rule: &Value) -> Result<(), String> {
    for field in ["timeouts", "retry"] {
        if rule.get(field).is_some() {
            return Err(format!("`{field}` is HTTPRoute-only"));
        }
    }
    for m in rule["matches"].as_array().into_iter().flatten() {
        for field in ["path", "method", "queryParams"] {
            if m.get(field).is_some() {
                return Err(format!("matches on `{field}` are HTTP-only"));
            }
        }
    }
    let filters = rule["filters"].as_array().into_iter().flatten().chain(
        rule["backendRefs"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|b| b["filters"].as_array().into_iter().flatten()),
    );
    for f in filters {
        let kind = f["type"].as_str().unwrap_or_default();
        if !matches!(
            kind,
            "RequestHeaderModifier" | "ResponseHeaderModifier" | "RequestMirror" | "ExtensionRef"
        ) {
            return Err(format!("filter {kind} is HTTP-only"));
        }
    }
    Ok(())
}

/// `kind` of a document (`""` if none).
pub fn kind_of(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

/// `metadata.name` of a document (`""` if none).
pub fn name_of(doc: &Value) -> String {
    doc["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `metadata.namespace` of a document, `default` if none.
pub fn namespace_of(doc: &Value) -> String {
    doc["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_manifests_have_deployments_with_default_replicas() {
        let m = Manifests::conformance(&["v1.6.1/mesh/manifests.yaml"]).unwrap();
        let deployments = m.deployments();
        assert_eq!(deployments.len(), 3);
        let v1 = &deployments[0];
        assert_eq!(v1.namespace, "gateway-conformance-mesh");
        assert_eq!(v1.name, "echo-v1");
        assert_eq!(v1.replicas, DEFAULT_REPLICAS);
        assert_eq!(v1.labels["version"], "v1");
        assert_eq!(m.resources().unwrap().services.len(), 3);
    }

    #[test]
    fn http_routes_with_http_only_matches_are_refused() {
        let mut m = Manifests::conformance(&["v1.6.1/tests/mesh/mesh-split.yaml"]).unwrap();
        let err = m.http_routes_to_grpc().unwrap_err().to_string();
        assert!(err.contains("path"), "{err}");
        let mut m = Manifests::conformance(&["v1.6.1/tests/mesh/mesh-ports.yaml"]).unwrap();
        m.http_routes_to_grpc().unwrap();
        assert_eq!(m.resources().unwrap().routes.len(), 2);
    }

    #[test]
    fn app_protocol_http_becomes_h2c() {
        let mut m = Manifests::conformance(&["v1.6.1/mesh/manifests.yaml"]).unwrap();
        m.h2c_app_protocols();
        let text = serde_json::to_string(m.docs()).unwrap();
        assert!(!text.contains(r#""appProtocol":"http""#));
        assert!(text.contains("kubernetes.io/h2c"));
    }

    #[test]
    fn gateway_routes_are_reattached_to_a_frontend_service() {
        let mut m = Manifests::conformance(&[
            "v1.6.1/base/manifests.yaml",
            "v1.6.1/tests/grpcroute-weight.yaml",
        ])
        .unwrap();
        m.reattach_gateway_routes().unwrap();
        let resources = m.resources().unwrap();
        let route = &resources.routes[0];
        let parent = &route.spec.parent_refs.as_ref().unwrap()[0];
        assert_eq!(parent.kind.as_deref(), Some("Service"));
        assert_eq!(parent.group.as_deref(), Some(""));
        assert_eq!(parent.name, "same-namespace");
        let frontend = resources
            .services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some("same-namespace"))
            .unwrap();
        let ports = frontend.spec.as_ref().unwrap().ports.as_ref().unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].port, 80);
        assert!(frontend.spec.as_ref().unwrap().selector.is_none());
    }

    #[test]
    fn a_route_to_an_unknown_gateway_is_an_error() {
        let mut m = Manifests::conformance(&["v1.6.1/tests/grpcroute-weight.yaml"]).unwrap();
        assert!(m.reattach_gateway_routes().is_err());
    }
}
