//! gRPC xDS bootstrap files (`GRPC_XDS_BOOTSTRAP`), one per client: each client gets its
//! own node id so the control plane's log tells them apart.

use serde_json::{Value, json};

/// A node's locality.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLocality {
    /// `region`.
    pub region: String,
    /// `zone`.
    pub zone: String,
    /// `sub_zone`.
    pub sub_zone: String,
}

/// The bootstrap of one xDS client.
#[derive(Clone, Debug, PartialEq)]
pub struct Bootstrap {
    /// `xds_servers[0].server_uri` (`127.0.0.1:PORT`).
    pub server_uri: String,
    /// `xds_servers[0].server_features` (default `["xds_v3"]`).
    pub server_features: Vec<String>,
    /// `node.id`.
    pub node_id: String,
    /// `node.cluster` (default `"grpcroute-xds-tests"`).
    pub node_cluster: String,
    /// `node.locality`. Set by default: grpc-js-xds rejects a bootstrap without it.
    pub locality: Option<NodeLocality>,
    /// `node.metadata`.
    pub metadata: serde_json::Map<String, Value>,
    /// `certificate_providers` (gRFC A29), omitted when empty.
    pub certificate_providers: serde_json::Map<String, Value>,
}

impl Bootstrap {
    /// A bootstrap for node `node_id` against the control plane at `server_uri`, with
    /// insecure channel credentials, `server_features: ["xds_v3"]`, and a locality.
    pub fn new(server_uri: impl Into<String>, node_id: impl Into<String>) -> Self {
        Self {
            server_uri: server_uri.into(),
            server_features: vec!["xds_v3".to_string()],
            node_id: node_id.into(),
            node_cluster: "grpcroute-xds-tests".to_string(),
            locality: Some(NodeLocality {
                region: "region".to_string(),
                zone: "zone-a".to_string(),
                sub_zone: String::new(),
            }),
            metadata: serde_json::Map::new(),
            certificate_providers: serde_json::Map::new(),
        }
    }

    /// Adds a `file_watcher` certificate-provider instance `name` (gRFC A29); `None`
    /// leaves a file out.
    #[must_use]
    pub fn file_watcher(
        mut self,
        name: &str,
        certificate_and_key: Option<(&std::path::Path, &std::path::Path)>,
        ca_certificate: Option<&std::path::Path>,
    ) -> Self {
        let mut config = serde_json::Map::new();
        if let Some((cert, key)) = certificate_and_key {
            config.insert("certificate_file".into(), json!(cert.display().to_string()));
            config.insert("private_key_file".into(), json!(key.display().to_string()));
        }
        if let Some(ca) = ca_certificate {
            config.insert(
                "ca_certificate_file".into(),
                json!(ca.display().to_string()),
            );
        }
        config.insert("refresh_interval".into(), json!("1s"));
        self.certificate_providers.insert(
            name.to_string(),
            json!({"plugin_name": "file_watcher", "config": config}),
        );
        self
    }

    /// Adds a server feature (e.g. `fail_on_data_errors`, `ignore_resource_deletion`).
    #[must_use]
    pub fn server_feature(mut self, feature: &str) -> Self {
        self.server_features.push(feature.to_string());
        self
    }

    /// Removes `node.locality`.
    #[must_use]
    pub fn without_locality(mut self) -> Self {
        self.locality = None;
        self
    }

    /// The bootstrap JSON.
    pub fn to_json(&self) -> Value {
        let mut node = json!({
            "id": self.node_id,
            "cluster": self.node_cluster,
            "metadata": self.metadata,
        });
        if let (Some(l), Some(node)) = (&self.locality, node.as_object_mut()) {
            node.insert(
                "locality".to_string(),
                json!({"region": l.region, "zone": l.zone, "sub_zone": l.sub_zone}),
            );
        }
        let mut root = json!({
            "xds_servers": [{
                "server_uri": self.server_uri,
                "channel_creds": [{"type": "insecure"}],
                "server_features": self.server_features,
            }],
            "node": node,
        });
        if !self.certificate_providers.is_empty()
            && let Some(root) = root.as_object_mut()
        {
            root.insert(
                "certificate_providers".into(),
                Value::Object(self.certificate_providers.clone()),
            );
        }
        root
    }

    /// Writes the JSON to `path`.
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_json().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_has_what_both_oracles_need() {
        let b = Bootstrap::new("127.0.0.1:1234", "n1").server_feature("fail_on_data_errors");
        let j = b.to_json();
        assert_eq!(j["xds_servers"][0]["server_uri"], "127.0.0.1:1234");
        assert_eq!(j["xds_servers"][0]["channel_creds"][0]["type"], "insecure");
        assert_eq!(
            j["xds_servers"][0]["server_features"],
            json!(["xds_v3", "fail_on_data_errors"])
        );
        assert_eq!(j["node"]["id"], "n1");
        assert_eq!(j["node"]["locality"]["zone"], "zone-a");
        assert!(
            b.without_locality().to_json()["node"]
                .get("locality")
                .is_none()
        );
    }
}
