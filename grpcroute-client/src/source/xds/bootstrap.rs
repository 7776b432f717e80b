//! The xDS bootstrap (gRFC A27, doc/grpc_xds_bootstrap_format.md): which control plane to
//! talk to and who this client is.
//!
//! Read from JSON text, from the environment (`GRPC_XDS_BOOTSTRAP` names a file and takes
//! precedence over `GRPC_XDS_BOOTSTRAP_CONFIG`, inline JSON), or built in code. Unknown
//! fields are ignored (A27). Errors name the field: `xds_servers[0].server_uri: missing`.

use std::{collections::HashMap, path::PathBuf};

use envoy_types::pb::{
    envoy::config::core::v3::{Locality, Node, node::UserAgentVersionType},
    google::protobuf::{ListValue, NullValue, Struct, Value, value::Kind},
};
use serde_json::{Map, Value as Json};

/// The environment variable naming a bootstrap file.
pub(crate) const ENV_BOOTSTRAP_FILE: &str = "GRPC_XDS_BOOTSTRAP";
/// The environment variable holding bootstrap JSON.
pub(crate) const ENV_BOOTSTRAP_CONFIG: &str = "GRPC_XDS_BOOTSTRAP_CONFIG";

/// `user_agent_name` sent in the Node.
pub(crate) const USER_AGENT_NAME: &str = "grpcroute-client";

/// `client_features` sent in the Node: gRPC does no overprovisioning-based graceful
/// failover, and accepts `Resource`-wrapped entries in SotW responses.
pub(crate) const CLIENT_FEATURES: [&str; 2] = [
    "envoy.lb.does_not_support_overprovisioning",
    "xds.config.resource-in-sotw",
];

/// An xDS bootstrap (gRFC A27): the control plane to reach, and who this client is.
///
/// Read from `GRPC_XDS_BOOTSTRAP` (a file) or `GRPC_XDS_BOOTSTRAP_CONFIG` (inline JSON)
/// with [`Bootstrap::from_env`], from JSON with [`Bootstrap::from_json`], or built with
/// [`Bootstrap::new`]. Unknown fields are ignored; a known field with a wrong value is an
/// error naming it.
#[derive(Debug, Clone, PartialEq)]
pub struct Bootstrap {
    /// The control planes in priority order; only the first is used (no A71 fallback yet).
    pub(crate) xds_servers: Vec<XdsServer>,
    /// Who this client is.
    pub(crate) node: NodeInfo,
    /// `certificate_providers` (A29), kept raw: an instance's plugin config is read
    /// ([`Bootstrap::file_watcher`]) when a TLS cluster names it.
    pub(crate) certificate_providers: Map<String, Json>,
    /// `client_default_listener_resource_name_template` (A47), default `%s`.
    pub(crate) client_default_listener_resource_name_template: String,
}

/// One `xds_servers` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct XdsServer {
    /// `server_uri`: `host:port` (a gRPC target; `dns:///` and `http://` prefixes accepted).
    pub(crate) server_uri: String,
    /// The first supported `channel_creds` entry.
    pub(crate) channel_creds: ChannelCreds,
    /// `server_features` contains `ignore_resource_deletion` (A53; implied by A88).
    pub(crate) ignore_resource_deletion: bool,
    /// `server_features` contains `fail_on_data_errors` (A88).
    pub(crate) fail_on_data_errors: bool,
}

/// Channel credentials for the ADS channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelCreds {
    /// Plaintext.
    Insecure,
}

/// The `node` object.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct NodeInfo {
    /// `id`.
    pub(crate) id: String,
    /// `cluster`.
    pub(crate) cluster: String,
    /// `locality`.
    pub(crate) locality: Option<NodeLocality>,
    /// `metadata`, any JSON object.
    pub(crate) metadata: Map<String, Json>,
}

/// `node.locality`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct NodeLocality {
    /// `region`.
    pub(crate) region: String,
    /// `zone`.
    pub(crate) zone: String,
    /// `sub_zone`.
    pub(crate) sub_zone: String,
}

/// The config of a `file_watcher` certificate-provider instance (gRFC A29).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileWatcher {
    /// `certificate_file` (with `private_key_file`: the identity).
    pub(crate) certificate_file: Option<PathBuf>,
    /// `private_key_file`.
    pub(crate) private_key_file: Option<PathBuf>,
    /// `ca_certificate_file` (the roots).
    pub(crate) ca_certificate_file: Option<PathBuf>,
    /// `refresh_interval` (default 600 s).
    pub(crate) refresh_interval: std::time::Duration,
}

impl Bootstrap {
    /// The `file_watcher` config of certificate-provider instance `name`.
    ///
    /// # Errors
    ///
    /// When there is no such instance, its plugin is not `file_watcher`, or its config is
    /// not the plugin's (gRPC's rules: the certificate and key come together, and at least
    /// one of certificate and CA file is given).
    pub(crate) fn file_watcher(&self, name: &str) -> Result<FileWatcher, String> {
        let at = |m: &str| format!("certificate_providers[{name:?}]: {m}");
        let instance = self
            .certificate_providers
            .get(name)
            .and_then(Json::as_object)
            .ok_or_else(|| at("no such instance"))?;
        match instance.get("plugin_name").and_then(Json::as_str) {
            Some("file_watcher") => {}
            Some(other) => {
                return Err(at(&format!(
                    "unsupported plugin {other:?} (only file_watcher)"
                )));
            }
            None => return Err(at("plugin_name is missing")),
        }
        let empty = Map::new();
        let config = match instance.get("config") {
            None => &empty,
            Some(Json::Object(c)) => c,
            Some(_) => return Err(at("config must be an object")),
        };
        let path = |field: &str| -> Result<Option<PathBuf>, String> {
            match config.get(field) {
                None => Ok(None),
                Some(Json::String(p)) if !p.is_empty() => Ok(Some(PathBuf::from(p))),
                Some(_) => Err(at(&format!("config.{field} must be a non-empty string"))),
            }
        };
        let certificate_file = path("certificate_file")?;
        let private_key_file = path("private_key_file")?;
        let ca_certificate_file = path("ca_certificate_file")?;
        if certificate_file.is_some() != private_key_file.is_some() {
            return Err(at(
                "config: certificate_file and private_key_file must be given together",
            ));
        }
        if certificate_file.is_none() && ca_certificate_file.is_none() {
            return Err(at(
                "config: at least one of certificate_file and ca_certificate_file is needed",
            ));
        }
        let refresh_interval = match config.get("refresh_interval") {
            None => std::time::Duration::from_secs(600),
            Some(Json::String(d)) => parse_json_duration(d)
                .ok_or_else(|| at("config.refresh_interval must be a duration such as \"60s\""))?,
            Some(_) => return Err(at("config.refresh_interval must be a string")),
        };
        Ok(FileWatcher {
            certificate_file,
            private_key_file,
            ca_certificate_file,
            refresh_interval,
        })
    }
}

/// A JSON protobuf Duration (`"60s"`, `"1.5s"`), positive.
fn parse_json_duration(text: &str) -> Option<std::time::Duration> {
    let seconds: f64 = text.strip_suffix('s')?.parse().ok()?;
    (seconds.is_finite() && seconds > 0.0).then(|| std::time::Duration::from_secs_f64(seconds))
}

/// Why a bootstrap could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootstrapError {
    /// Neither environment variable is set.
    #[error("no xDS bootstrap: set {ENV_BOOTSTRAP_FILE} (a file) or {ENV_BOOTSTRAP_CONFIG} (JSON)")]
    NotConfigured,
    /// The file named by `GRPC_XDS_BOOTSTRAP` cannot be read.
    #[error("cannot read xDS bootstrap file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not JSON.
    #[error("xDS bootstrap is not valid JSON: {0}")]
    Json(String),
    /// A field is missing or wrong.
    #[error("xDS bootstrap: {field}: {message}")]
    Field {
        /// The field path, e.g. `xds_servers[0].server_uri`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

fn field_err(field: impl Into<String>, message: impl Into<String>) -> BootstrapError {
    BootstrapError::Field {
        field: field.into(),
        message: message.into(),
    }
}

impl Bootstrap {
    /// A bootstrap for one plaintext control plane at `server_uri`, with node id `node_id`.
    pub fn new(server_uri: impl Into<String>, node_id: impl Into<String>) -> Self {
        Self {
            xds_servers: vec![XdsServer {
                server_uri: server_uri.into(),
                channel_creds: ChannelCreds::Insecure,
                ignore_resource_deletion: false,
                fail_on_data_errors: false,
            }],
            node: NodeInfo {
                id: node_id.into(),
                ..NodeInfo::default()
            },
            certificate_providers: Map::new(),
            client_default_listener_resource_name_template: "%s".to_owned(),
        }
    }

    /// Reads the bootstrap named by the environment: `GRPC_XDS_BOOTSTRAP` (a file) first,
    /// else `GRPC_XDS_BOOTSTRAP_CONFIG` (JSON).
    ///
    /// # Errors
    ///
    /// When neither variable is set, the file cannot be read, or the JSON is invalid.
    pub fn from_env() -> Result<Self, BootstrapError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`Bootstrap::from_env`] over an arbitrary variable lookup (testable without
    /// touching the process environment).
    pub(crate) fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, BootstrapError> {
        if let Some(path) = var(ENV_BOOTSTRAP_FILE).filter(|p| !p.is_empty()) {
            let path = PathBuf::from(path);
            let text = std::fs::read_to_string(&path)
                .map_err(|source| BootstrapError::Io { path, source })?;
            return Self::from_json(&text);
        }
        match var(ENV_BOOTSTRAP_CONFIG).filter(|c| !c.is_empty()) {
            Some(text) => Self::from_json(&text),
            None => Err(BootstrapError::NotConfigured),
        }
    }

    /// Parses bootstrap JSON.
    ///
    /// # Errors
    ///
    /// When it is not JSON or a field is missing or wrong (the error names it).
    pub fn from_json(text: &str) -> Result<Self, BootstrapError> {
        let root: Json =
            serde_json::from_str(text).map_err(|e| BootstrapError::Json(e.to_string()))?;
        let root = root
            .as_object()
            .ok_or_else(|| field_err("(root)", "must be a JSON object"))?;
        let servers = match root.get("xds_servers") {
            Some(Json::Array(a)) => a,
            Some(_) => return Err(field_err("xds_servers", "must be an array")),
            None => return Err(field_err("xds_servers", "missing")),
        };
        if servers.is_empty() {
            return Err(field_err("xds_servers", "must be non-empty"));
        }
        let xds_servers = servers
            .iter()
            .enumerate()
            .map(|(i, s)| xds_server(&format!("xds_servers[{i}]"), s))
            .collect::<Result<Vec<_>, _>>()?;
        let node = match root.get("node") {
            None => NodeInfo::default(),
            Some(n) => node_info(n)?,
        };
        let certificate_providers = match root.get("certificate_providers") {
            None => Map::new(),
            Some(Json::Object(m)) => m.clone(),
            Some(_) => return Err(field_err("certificate_providers", "must be an object")),
        };
        let client_default_listener_resource_name_template =
            match root.get("client_default_listener_resource_name_template") {
                None => "%s".to_owned(),
                Some(Json::String(s)) => s.clone(),
                Some(_) => {
                    return Err(field_err(
                        "client_default_listener_resource_name_template",
                        "must be a string",
                    ));
                }
            };
        Ok(Self {
            xds_servers,
            node,
            certificate_providers,
            client_default_listener_resource_name_template,
        })
    }

    /// The control plane this client talks to (the first `xds_servers` entry).
    pub(crate) fn server(&self) -> Option<&XdsServer> {
        self.xds_servers.first()
    }

    /// The listener resource name for an `xds:///NAME` target (A47 template, `%s` → name).
    pub(crate) fn listener_resource_name(&self, target: &str) -> String {
        self.client_default_listener_resource_name_template
            .replace("%s", target)
    }

    /// The Node sent in the first request of every ADS stream.
    pub(crate) fn node_proto(&self) -> Node {
        let n = &self.node;
        Node {
            id: n.id.clone(),
            cluster: n.cluster.clone(),
            metadata: (!n.metadata.is_empty()).then(|| json_object_to_struct(&n.metadata)),
            locality: n.locality.as_ref().map(|l| Locality {
                region: l.region.clone(),
                zone: l.zone.clone(),
                sub_zone: l.sub_zone.clone(),
            }),
            user_agent_name: USER_AGENT_NAME.to_owned(),
            user_agent_version_type: Some(UserAgentVersionType::UserAgentVersion(
                env!("CARGO_PKG_VERSION").to_owned(),
            )),
            client_features: CLIENT_FEATURES.iter().map(|f| (*f).to_owned()).collect(),
            ..Node::default()
        }
    }
}

fn xds_server(path: &str, s: &Json) -> Result<XdsServer, BootstrapError> {
    let s = s
        .as_object()
        .ok_or_else(|| field_err(path, "must be an object"))?;
    let server_uri = match s.get("server_uri") {
        Some(Json::String(u)) if !u.is_empty() => u.clone(),
        Some(Json::String(_)) => {
            return Err(field_err(format!("{path}.server_uri"), "must be non-empty"));
        }
        Some(_) => return Err(field_err(format!("{path}.server_uri"), "must be a string")),
        None => return Err(field_err(format!("{path}.server_uri"), "missing")),
    };
    let creds_path = format!("{path}.channel_creds");
    let creds = match s.get("channel_creds") {
        Some(Json::Array(a)) => a,
        Some(_) => return Err(field_err(creds_path, "must be an array")),
        None => return Err(field_err(creds_path, "missing")),
    };
    let mut channel_creds = None;
    let mut unsupported = Vec::new();
    for (i, c) in creds.iter().enumerate() {
        let ty = c
            .get("type")
            .and_then(Json::as_str)
            .ok_or_else(|| field_err(format!("{creds_path}[{i}].type"), "missing"))?;
        // The first type this client supports wins (A27).
        match ty {
            "insecure" => {
                channel_creds = Some(ChannelCreds::Insecure);
                break;
            }
            other => unsupported.push(other.to_owned()),
        }
    }
    let channel_creds = channel_creds.ok_or_else(|| {
        let message = if unsupported.iter().any(|t| t == "tls") {
            format!(
                "tls is not supported yet (only insecure); no supported type in [{}]",
                unsupported.join(", ")
            )
        } else {
            format!(
                "no supported type (only insecure) in [{}]",
                unsupported.join(", ")
            )
        };
        field_err(creds_path.clone(), message)
    })?;
    let mut features: Vec<&str> = Vec::new();
    match s.get("server_features") {
        None => {}
        Some(Json::Array(a)) => features.extend(a.iter().filter_map(Json::as_str)),
        Some(_) => {
            return Err(field_err(
                format!("{path}.server_features"),
                "must be an array",
            ));
        }
    }
    Ok(XdsServer {
        server_uri,
        channel_creds,
        ignore_resource_deletion: features.contains(&"ignore_resource_deletion"),
        fail_on_data_errors: features.contains(&"fail_on_data_errors"),
    })
}

fn node_info(n: &Json) -> Result<NodeInfo, BootstrapError> {
    let n = n
        .as_object()
        .ok_or_else(|| field_err("node", "must be an object"))?;
    let string =
        |obj: &Map<String, Json>, key: &str, path: &str| -> Result<String, BootstrapError> {
            match obj.get(key) {
                None => Ok(String::new()),
                Some(Json::String(s)) => Ok(s.clone()),
                Some(_) => Err(field_err(format!("{path}.{key}"), "must be a string")),
            }
        };
    let locality = match n.get("locality") {
        None => None,
        Some(Json::Object(l)) => Some(NodeLocality {
            region: string(l, "region", "node.locality")?,
            zone: string(l, "zone", "node.locality")?,
            sub_zone: string(l, "sub_zone", "node.locality")?,
        }),
        Some(_) => return Err(field_err("node.locality", "must be an object")),
    };
    let metadata = match n.get("metadata") {
        None => Map::new(),
        Some(Json::Object(m)) => m.clone(),
        Some(_) => return Err(field_err("node.metadata", "must be an object")),
    };
    Ok(NodeInfo {
        id: string(n, "id", "node")?,
        cluster: string(n, "cluster", "node")?,
        locality,
        metadata,
    })
}

/// A JSON object as a protobuf Struct.
pub(crate) fn json_object_to_struct(m: &Map<String, Json>) -> Struct {
    Struct {
        fields: m
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect::<HashMap<_, _>>(),
    }
}

fn json_to_value(v: &Json) -> Value {
    let kind = match v {
        Json::Null => Kind::NullValue(NullValue::NullValue as i32),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        Json::Object(o) => Kind::StructValue(json_object_to_struct(o)),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{
        "xds_servers": [{
            "server_uri": "127.0.0.1:18000",
            "channel_creds": [{"type": "google_default"}, {"type": "insecure"}],
            "server_features": ["xds_v3", "fail_on_data_errors", "something_new"]
        }],
        "node": {
            "id": "node-1", "cluster": "c1",
            "locality": {"region": "r", "zone": "z", "sub_zone": "s"},
            "metadata": {"INSTANCE_IP": "10.0.0.1", "n": 3, "list": [true, null], "o": {"k": "v"}},
            "unknown_node_field": 1
        },
        "certificate_providers": {"default": {"plugin_name": "file_watcher", "config": {}}},
        "unknown_top_level": {"x": 1}
    }"#;

    #[test]
    fn parses_every_field_and_ignores_unknown_ones() {
        let b = Bootstrap::from_json(FULL).unwrap();
        let s = b.server().unwrap();
        assert_eq!(s.server_uri, "127.0.0.1:18000");
        assert_eq!(s.channel_creds, ChannelCreds::Insecure);
        assert!(s.fail_on_data_errors);
        assert!(!s.ignore_resource_deletion);
        assert_eq!(b.node.id, "node-1");
        assert_eq!(b.node.cluster, "c1");
        assert_eq!(
            b.node.locality,
            Some(NodeLocality {
                region: "r".into(),
                zone: "z".into(),
                sub_zone: "s".into()
            })
        );
        assert!(b.certificate_providers.contains_key("default"));
        assert_eq!(b.client_default_listener_resource_name_template, "%s");
        assert_eq!(b.listener_resource_name("svc:50051"), "svc:50051");
    }

    #[test]
    fn node_proto_carries_user_agent_features_and_metadata() {
        let node = Bootstrap::from_json(FULL).unwrap().node_proto();
        assert_eq!(node.user_agent_name, "grpcroute-client");
        assert_eq!(
            node.user_agent_version_type,
            Some(UserAgentVersionType::UserAgentVersion(
                env!("CARGO_PKG_VERSION").into()
            ))
        );
        assert_eq!(
            node.client_features,
            vec![
                "envoy.lb.does_not_support_overprovisioning".to_owned(),
                "xds.config.resource-in-sotw".to_owned()
            ]
        );
        let md = node.metadata.unwrap();
        assert_eq!(
            md.fields["INSTANCE_IP"].kind,
            Some(Kind::StringValue("10.0.0.1".into()))
        );
        assert_eq!(md.fields["n"].kind, Some(Kind::NumberValue(3.0)));
        let Some(Kind::StructValue(o)) = &md.fields["o"].kind else {
            panic!("nested object")
        };
        assert_eq!(o.fields["k"].kind, Some(Kind::StringValue("v".into())));
        assert_eq!(node.locality.unwrap().zone, "z");
    }

    fn err(json: &str) -> String {
        Bootstrap::from_json(json).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(err(r#"{}"#), "xDS bootstrap: xds_servers: missing");
        assert_eq!(
            err(r#"{"xds_servers": []}"#),
            "xDS bootstrap: xds_servers: must be non-empty"
        );
        assert_eq!(
            err(r#"{"xds_servers": [{"channel_creds": [{"type": "insecure"}]}]}"#),
            "xDS bootstrap: xds_servers[0].server_uri: missing"
        );
        assert_eq!(
            err(r#"{"xds_servers": [{"server_uri": "a:1"}]}"#),
            "xDS bootstrap: xds_servers[0].channel_creds: missing"
        );
        assert_eq!(
            err(r#"{"xds_servers": [{"server_uri": "a:1", "channel_creds": [{"config": {}}]}]}"#),
            "xDS bootstrap: xds_servers[0].channel_creds[0].type: missing"
        );
        assert_eq!(
            err(
                r#"{"xds_servers": [{"server_uri": "a:1", "channel_creds": [{"type": "insecure"}]}], "node": {"id": 5}}"#
            ),
            "xDS bootstrap: node.id: must be a string"
        );
        assert!(err("not json").starts_with("xDS bootstrap is not valid JSON"));
    }

    #[test]
    fn tls_creds_are_reported_unless_a_supported_entry_follows() {
        let e = err(
            r#"{"xds_servers": [{"server_uri": "a:1", "channel_creds": [{"type": "tls", "config": {}}]}]}"#,
        );
        assert!(
            e.contains("xds_servers[0].channel_creds: tls is not supported yet"),
            "{e}"
        );
        let ok = Bootstrap::from_json(
            r#"{"xds_servers": [{"server_uri": "a:1", "channel_creds": [{"type": "tls"}, {"type": "insecure"}]}]}"#,
        )
        .unwrap();
        assert_eq!(ok.xds_servers[0].channel_creds, ChannelCreds::Insecure);
    }

    #[test]
    fn env_file_takes_precedence_over_inline_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bootstrap.json");
        std::fs::write(&path, FULL).unwrap();
        let inline = r#"{"xds_servers": [{"server_uri": "inline:1", "channel_creds": [{"type": "insecure"}]}]}"#;
        let vars = |file: Option<String>| {
            move |k: &str| match k {
                ENV_BOOTSTRAP_FILE => file.clone(),
                ENV_BOOTSTRAP_CONFIG => Some(inline.to_owned()),
                _ => None,
            }
        };
        let from_file = Bootstrap::from_vars(vars(Some(path.display().to_string()))).unwrap();
        assert_eq!(from_file.xds_servers[0].server_uri, "127.0.0.1:18000");
        let from_inline = Bootstrap::from_vars(vars(None)).unwrap();
        assert_eq!(from_inline.xds_servers[0].server_uri, "inline:1");
        assert!(matches!(
            Bootstrap::from_vars(|_| None),
            Err(BootstrapError::NotConfigured)
        ));
        let missing = Bootstrap::from_vars(vars(Some("/nonexistent/bootstrap.json".into())));
        assert!(matches!(missing, Err(BootstrapError::Io { .. })));
    }

    #[test]
    fn built_in_code() {
        let b = Bootstrap::new("127.0.0.1:1", "n");
        assert_eq!(b.server().unwrap().server_uri, "127.0.0.1:1");
        assert_eq!(b.node_proto().id, "n");
        assert_eq!(b.listener_resource_name("x"), "x");
    }

    #[test]
    fn file_watcher_instances() {
        let b = Bootstrap::from_json(
            r#"{"xds_servers": [{"server_uri": "localhost:1", "channel_creds": [{"type": "insecure"}]}],
            "node": {"id": "n"},
            "certificate_providers": {
                "both": {"plugin_name": "file_watcher", "config": {"certificate_file": "/c", "private_key_file": "/k", "ca_certificate_file": "/ca", "refresh_interval": "1.5s"}},
                "ca": {"plugin_name": "file_watcher", "config": {"ca_certificate_file": "/ca"}},
                "half": {"plugin_name": "file_watcher", "config": {"certificate_file": "/c"}},
                "none": {"plugin_name": "file_watcher", "config": {}},
                "other": {"plugin_name": "meshca", "config": {}}
            }}"#,
        )
        .unwrap();
        let both = b.file_watcher("both").unwrap();
        assert_eq!(both.private_key_file, Some(PathBuf::from("/k")));
        assert_eq!(
            both.refresh_interval,
            std::time::Duration::from_millis(1500)
        );
        let ca = b.file_watcher("ca").unwrap();
        assert_eq!(
            (ca.certificate_file, ca.refresh_interval),
            (None, std::time::Duration::from_secs(600))
        );
        for (name, error) in [
            ("half", "must be given together"),
            ("none", "at least one of"),
            ("other", "unsupported plugin \"meshca\""),
            ("missing", "no such instance"),
        ] {
            let e = b.file_watcher(name).unwrap_err();
            assert!(e.contains(error) && e.contains(name), "{name}: {e}");
        }
    }
}
