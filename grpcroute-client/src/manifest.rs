//! Reading Kubernetes manifests: every `*.yaml`, `*.yml` and `*.json` file of a folder (or
//! single files), multi-document, as `kubectl apply -f` reads them.
//!
//! GRPCRoute, Service, EndpointSlice, ReferenceGrant, BackendTLSPolicy and ConfigMap
//! objects are kept (also inside a `kind: List`); other kinds are skipped with a debug log. A document that is not valid
//! YAML, or whose object does not fit its kind's schema, is a [`ManifestError`] naming the
//! file, the document and the field. An object whose kind and name can be read but whose
//! content does not fit (e.g. a filter `type` of a later Gateway API release) is also
//! carried as the [`InvalidObject`] it is ([`ManifestError::object`]), so that
//! [`ManifestDir`](crate::source::ManifestDir) can reject that object alone. Fields the API
//! types do not know are ignored, as in the Kubernetes source.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{
    convert::{InvalidObject, ObjectKind, decode},
    model::ObjectKey,
    resources::{Object, Resources},
};

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
    /// When the document holds an object of a kind this crate reads, whose namespace and
    /// name can be read but whose content does not fit the API types: that object, as
    /// rejected. `None` when the document itself cannot be read.
    pub object: Option<InvalidObject>,
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
                object: None,
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
        object: None,
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
                let mut problems = Vec::new();
                read_object(value, &mut loaded.resources, &mut problems);
                loaded
                    .errors
                    .extend(problems.into_iter().map(|p| ManifestError {
                        object: p.object,
                        ..err(Some(index), p.message)
                    }));
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

/// What is wrong with one object of a document.
struct Problem {
    message: String,
    /// The object, rejected, when its kind and name could be read.
    object: Option<InvalidObject>,
}

impl From<String> for Problem {
    fn from(message: String) -> Self {
        Self {
            message,
            object: None,
        }
    }
}

impl From<InvalidObject> for Problem {
    fn from(invalid: InvalidObject) -> Self {
        Self {
            message: invalid.to_string(),
            object: Some(invalid),
        }
    }
}

/// Adds one parsed document's object(s) to `out`, and what could not be read to
/// `problems`.
fn read_object(value: Value, out: &mut Resources, problems: &mut Vec<Problem>) {
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
    let read = match (api_version.as_str(), kind.as_str()) {
        ("", _) | (_, "") => {
            Err("not a Kubernetes object: apiVersion and kind are required"
                .to_string()
                .into())
        }
        ("v1", "List") => {
            let Some(Value::Array(items)) = value.get("items").cloned() else {
                problems.push("List has no items array".to_string().into());
                return;
            };
            // Each item on its own: one that cannot be read leaves the others.
            for (i, item) in items.into_iter().enumerate() {
                let mut of_item = Vec::new();
                read_object(item, out, &mut of_item);
                problems.extend(of_item.into_iter().map(|p| Problem {
                    message: format!("items[{i}]: {}", p.message),
                    object: p.object,
                }));
            }
            return;
        }
        ("gateway.networking.k8s.io/v1", "GRPCRoute") => {
            // Decoded as the Kubernetes source does, so that a rejected route keeps the
            // parentRefs its status needs.
            metadata(&value, &kind, &name).and_then(|meta| {
                decode::grpc_route(&meta, &value, DEFAULT_NAMESPACE)
                    .map(|d| {
                        ignored(&kind, &name, &d.unknown);
                        out.push(Object::GrpcRoute(d.object));
                    })
                    .map_err(Problem::from)
            })
        }
        ("v1", "Service") => typed::<k8s_openapi::api::core::v1::Service>(
            value,
            ObjectKind::Service,
            &name,
        )
        .map(|o| out.push(Object::Service(o))),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            typed::<k8s_openapi::api::discovery::v1::EndpointSlice>(
                value,
                ObjectKind::EndpointSlice,
                &name,
            )
            .map(|o| out.push(Object::EndpointSlice(o)))
        }
        (
            "gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1",
            "ReferenceGrant",
        ) => {
            // The two versions have the same schema; read both as v1.
            metadata(&value, &kind, &name).and_then(|meta| {
                decode::reference_grant(&meta, &value, DEFAULT_NAMESPACE)
                    .map(|d| {
                        ignored(&kind, &name, &d.unknown);
                        out.push(Object::ReferenceGrant(d.object));
                    })
                    .map_err(Problem::from)
            })
        }
        ("gateway.networking.k8s.io/v1", "BackendTLSPolicy") => {
            // Decoded as the Kubernetes source does, so that a policy whose spec does not
            // decode still claims the targets it names (its rejection carries them).
            metadata(&value, &kind, &name).and_then(|meta| {
                decode::backend_tls_policy(&meta, &value, DEFAULT_NAMESPACE)
                    .map(|d| {
                        ignored(&kind, &name, &d.unknown);
                        out.push(Object::BackendTlsPolicy(d.object));
                    })
                    .map_err(Problem::from)
            })
        }
        ("v1", "ConfigMap") => typed::<k8s_openapi::api::core::v1::ConfigMap>(value, ObjectKind::ConfigMap, &name)
            .map(|o| out.push(Object::ConfigMap(o))),
        (version, "BackendTLSPolicy") => Err(format!(
            "BackendTLSPolicy {name}: apiVersion {version} is not supported (use gateway.networking.k8s.io/v1)"
        )
        .into()),
        (version, "GRPCRoute") => Err(format!(
            "GRPCRoute {name}: apiVersion {version} is not supported (use gateway.networking.k8s.io/v1)"
        )
        .into()),
        (version, kind) => {
            tracing::debug!(%version, %kind, %name, "ignoring object of a kind that does not affect routing");
            Ok(())
        }
    };
    if let Err(problem) = read {
        problems.push(problem);
    }
}

/// Fields the API types ignored. Debug only: manifests are read again on every change
/// and poll, and the types' ignoring them is what the Kubernetes source does too.
fn ignored(kind: &str, name: &ObjectName, fields: &[String]) {
    if !fields.is_empty() {
        tracing::debug!(%kind, %name, fields = %fields.join(", "), "fields unknown to the API types are ignored");
    }
}

/// The namespace of objects that name none, as in [`Resources`].
const DEFAULT_NAMESPACE: &str = "default";

/// An object's metadata; without it the object cannot even be named.
fn metadata(value: &Value, kind: &str, name: &ObjectName) -> Result<ObjectMeta, Problem> {
    let Some(meta) = value.get("metadata") else {
        return Ok(ObjectMeta::default());
    };
    serde_path_to_error::deserialize(meta)
        .map_err(|e| format!("{kind} {name}: metadata.{}: {}", e.path(), e.inner()).into())
}

/// Decodes a core object; one whose content does not fit is rejected alone when it can
/// be named.
fn typed<T: DeserializeOwned>(
    value: Value,
    kind: ObjectKind,
    name: &ObjectName,
) -> Result<T, Problem> {
    let key = name.key();
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        match key {
            Some(key) if path != "." && !path.starts_with("metadata") => {
                InvalidObject::new(kind, &key, path, message).into()
            }
            _ => {
                let field = if path == "." {
                    String::new()
                } else {
                    format!("{path}: ")
                };
                format!("{kind} {name}: {field}{message}").into()
            }
        }
    })
}

/// `namespace/name` of a raw object, for messages.
struct ObjectName {
    namespace: Option<String>,
    name: Option<String>,
}

impl ObjectName {
    fn of(value: &Value) -> Self {
        let meta = value.get("metadata");
        let field = |f| {
            meta.and_then(|m| m.get(f))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Self {
            namespace: field("namespace"),
            name: field("name"),
        }
    }

    /// The key of the object, when it has a name.
    fn key(&self) -> Option<ObjectKey> {
        let name = self.name.as_deref().filter(|n| !n.is_empty())?;
        Some(ObjectKey::new(
            self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE),
            name,
        ))
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.namespace, &self.name) {
            (Some(ns), Some(n)) => write!(f, "{ns}/{n}"),
            (None, Some(n)) => f.write_str(n),
            _ => f.write_str("(unnamed)"),
        }
    }
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
