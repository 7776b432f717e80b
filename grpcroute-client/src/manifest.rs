//! Reading Kubernetes manifests: every `*.yaml`, `*.yml` and `*.json` file of a folder (or
//! single files), multi-document, as `kubectl apply -f` reads them.
//!
//! GRPCRoute, Service, EndpointSlice, ReferenceGrant, BackendTLSPolicy and ConfigMap
//! objects are kept (also inside a `kind: List`); other kinds are skipped with a debug log. A document that is not valid
//! YAML, or whose object does not fit its kind's schema, is a [`ManifestError`] naming the
//! file, the document and the field.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::resources::{Object, Resources};

/// A document that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", file.display(), document.map(|d| format!(" (document {d})")).unwrap_or_default())]
pub struct ManifestError {
    /// The file.
    pub file: PathBuf,
    /// The 0-based index of the document in the file, when the file itself could be read.
    pub document: Option<usize>,
    /// What is wrong, with the object and field where known.
    pub message: String,
}

/// The result of reading manifests: everything that could be read, and what could not.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Loaded {
    /// The objects read.
    pub resources: Resources,
    /// The documents that failed.
    pub errors: Vec<ManifestError>,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
}

/// Reads every manifest file under `paths` (files, or folders of files; folders are not
/// descended into, as with `kubectl apply -f DIR`). Files are read in name order.
pub fn load(paths: &[PathBuf]) -> Loaded {
    let mut loaded = Loaded::default();
    for path in paths {
        match manifest_files(path) {
            Ok(files) => {
                for file in files {
                    load_file(&file, &mut loaded);
                    loaded.files.push(file);
                }
            }
            Err(message) => loaded.errors.push(ManifestError {
                file: path.clone(),
                document: None,
                message,
            }),
        }
    }
    loaded
}

/// The manifest files `path` names: itself if a file, else its `*.yaml|yml|json` entries.
pub(crate) fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| format!("cannot list: {e}"))? {
        let entry = entry.map_err(|e| format!("cannot list: {e}"))?;
        let p = entry.path();
        // Editors' swap and backup files (".x.yaml.swp", "x.yaml~") are not manifests.
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if !hidden && is_manifest(&p) && p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

pub(crate) fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn load_file(file: &Path, loaded: &mut Loaded) {
    let err = |document, message: String| ManifestError {
        file: file.to_path_buf(),
        document,
        message,
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            loaded.errors.push(err(None, format!("cannot read: {e}")));
            return;
        }
    };
    let json = file.extension().is_some_and(|e| e == "json");
    let documents: Vec<(usize, Result<Value, String>)> = if json {
        vec![(
            0,
            serde_json::from_str(&text).map_err(|e| format!("invalid JSON: {e}")),
        )]
    } else {
        yaml_documents(&text)
            .into_iter()
            .enumerate()
            .filter(|(_, (_, doc))| !is_blank(doc))
            .map(|(i, (line, doc))| {
                (
                    i,
                    serde_saphyr::from_str::<Value>(doc)
                        .map_err(|e| format!("invalid YAML (from line {line}): {e}")),
                )
            })
            .collect()
    };
    for (index, document) in documents {
        match document {
            Ok(Value::Null) => {}
            Ok(value) => {
                if let Err(message) = read_object(value, &mut loaded.resources) {
                    loaded.errors.push(err(Some(index), message));
                }
            }
            Err(message) => loaded.errors.push(err(Some(index), message)),
        }
    }
}

/// Splits a YAML stream at its `---` document markers, with each document's first line.
/// Markers are only recognised at the start of a line, which YAML requires of them.
fn yaml_documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") || trimmed == "..." {
            docs.push((start_line, &text[start..offset]));
            // `--- {inline}` keeps its content on the marker line.
            let content = if trimmed.starts_with("--- ") {
                offset + 4
            } else {
                offset + line.len()
            };
            start = content.min(text.len());
            start_line = n + if trimmed.starts_with("--- ") { 1 } else { 2 };
        }
        offset += line.len();
    }
    docs.push((start_line, &text[start..]));
    docs
}

fn is_blank(doc: &str) -> bool {
    doc.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "%YAML 1.2" || l.starts_with("%TAG")
    })
}

/// Adds one parsed document's object(s) to `out`.
fn read_object(value: Value, out: &mut Resources) -> Result<(), String> {
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let name = ObjectName::of(&value);
    match (api_version.as_str(), kind.as_str()) {
        ("", _) | (_, "") => {
            Err("not a Kubernetes object: apiVersion and kind are required".into())
        }
        ("v1", "List") => {
            let Some(Value::Array(items)) = value.get("items").cloned() else {
                return Err("List has no items array".into());
            };
            for (i, item) in items.into_iter().enumerate() {
                read_object(item, out).map_err(|e| format!("items[{i}]: {e}"))?;
            }
            Ok(())
        }
        ("gateway.networking.k8s.io/v1", "GRPCRoute") => {
            typed::<gateway_api::grpcroutes::GrpcRoute>(value, &kind, &name)
                .map(|o| out.push(Object::GrpcRoute(o)))
        }
        ("v1", "Service") => typed::<k8s_openapi::api::core::v1::Service>(value, &kind, &name)
            .map(|o| out.push(Object::Service(o))),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            typed::<k8s_openapi::api::discovery::v1::EndpointSlice>(value, &kind, &name)
                .map(|o| out.push(Object::EndpointSlice(o)))
        }
        (
            "gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1",
            "ReferenceGrant",
        ) => {
            // The two versions have the same schema; read both as v1.
            let mut value = value;
            value["apiVersion"] = Value::String("gateway.networking.k8s.io/v1".into());
            typed::<gateway_api::referencegrants::ReferenceGrant>(value, &kind, &name)
                .map(|o| out.push(Object::ReferenceGrant(o)))
        }
        ("gateway.networking.k8s.io/v1", "BackendTLSPolicy") => {
            typed::<gateway_api::backendtlspolicies::BackendTlsPolicy>(value, &kind, &name)
                .map(|o| out.push(Object::BackendTlsPolicy(o)))
        }
        ("v1", "ConfigMap") => typed::<k8s_openapi::api::core::v1::ConfigMap>(value, &kind, &name)
            .map(|o| out.push(Object::ConfigMap(o))),
        (version, "BackendTLSPolicy") => Err(format!(
            "BackendTLSPolicy {name}: apiVersion {version} is not supported (use gateway.networking.k8s.io/v1)"
        )),
        (version, "GRPCRoute") => Err(format!(
            "GRPCRoute {name}: apiVersion {version} is not supported (use gateway.networking.k8s.io/v1)"
        )),
        (version, kind) => {
            tracing::debug!(%version, %kind, %name, "ignoring object of a kind that does not affect routing");
            Ok(())
        }
    }
}

fn typed<T: DeserializeOwned>(value: Value, kind: &str, name: &ObjectName) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            String::new()
        } else {
            format!("{path}: ")
        };
        format!("{kind} {name}: {field}{}", e.inner())
    })
}

/// `namespace/name` of a raw object, for messages.
struct ObjectName(String);

impl ObjectName {
    fn of(value: &Value) -> Self {
        let meta = value.get("metadata");
        let field = |f| meta.and_then(|m| m.get(f)).and_then(Value::as_str);
        Self(match (field("namespace"), field("name")) {
            (Some(ns), Some(n)) => format!("{ns}/{n}"),
            (None, Some(n)) => n.to_string(),
            _ => "(unnamed)".to_string(),
        })
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
