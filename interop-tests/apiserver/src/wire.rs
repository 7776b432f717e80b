//! How objects look in responses: the `apiVersion` the URL named, or, for clients asking
//! for `PartialObjectMetadata` (kube's `metadata_watcher`, `list_metadata`), metadata only.

use serde_json::{Value, json};

use crate::resources::Resource;
use crate::route::Scope;

/// The response shape for one request.
#[derive(Debug, Clone)]
pub(crate) struct Wire {
    resource: Resource,
    api_version: String,
    metadata_only: bool,
}

impl Wire {
    pub(crate) fn new(scope: &Scope, accept: &str) -> Self {
        Self {
            resource: scope.resource,
            api_version: scope.api_version(),
            metadata_only: accept.contains("as=PartialObjectMetadata"),
        }
    }

    /// One object as sent: ReferenceGrants are stored once and served as `v1` and
    /// `v1beta1`, so `apiVersion` is always rewritten to the request's.
    pub(crate) fn object(&self, mut object: Value) -> Value {
        if self.metadata_only {
            let metadata = object.get_mut("metadata").map(Value::take);
            return json!({
                "apiVersion": "meta.k8s.io/v1",
                "kind": "PartialObjectMetadata",
                "metadata": metadata.unwrap_or_else(|| json!({})),
            });
        }
        if let Some(map) = object.as_object_mut() {
            map.insert("apiVersion".into(), json!(self.api_version));
        }
        object
    }

    /// A list response around already-shaped items.
    pub(crate) fn list(&self, metadata: Value, items: Vec<Value>) -> Value {
        let (api_version, kind) = self.list_type();
        json!({"kind": kind, "apiVersion": api_version, "metadata": metadata, "items": items})
    }

    /// `(apiVersion, kind)` for BOOKMARK objects.
    pub(crate) fn type_meta(&self) -> (String, String) {
        if self.metadata_only {
            ("meta.k8s.io/v1".into(), "PartialObjectMetadata".into())
        } else {
            (self.api_version.clone(), self.resource.kind().into())
        }
    }

    fn list_type(&self) -> (String, String) {
        let (api_version, kind) = self.type_meta();
        (api_version, format!("{kind}List"))
    }
}
