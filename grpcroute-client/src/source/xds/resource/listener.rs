//! Listener: an API listener wrapping an HttpConnectionManager (gRFC A27, A39, A31).

use std::{sync::Arc, time::Duration};

use envoy_types::pb::{
    envoy::{
        config::listener::v3::Listener as ListenerProto,
        extensions::filters::{
            http::router::v3::Router,
            network::http_connection_manager::v3::{
                HttpConnectionManager, HttpFilter, http_connection_manager::RouteSpecifier,
                http_filter::ConfigType,
            },
        },
    },
    google::protobuf::Any,
};
use prost::{Message, Name};

use super::{RouteConfig, ValidationErrors, Validator, config_source_is_ads, duration, route};
pub(crate) use crate::model::xds::HttpFilterSummary;

/// `xds.type.v3.TypedStruct` and the legacy, wire-compatible `udpa.type.v1.TypedStruct`.
const TYPED_STRUCT_URLS: [&str; 2] = [
    "type.googleapis.com/xds.type.v3.TypedStruct",
    "type.googleapis.com/udpa.type.v1.TypedStruct",
];

/// The one field of a TypedStruct we read (envoy-types does not ship the message).
#[derive(Clone, PartialEq, prost::Message)]
struct TypedStruct {
    /// The inner config's type URL.
    #[prost(string, tag = "1")]
    type_url: String,
}

/// A validated Listener.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Listener {
    /// The resource name.
    pub(crate) name: String,
    /// What kind of listener it is.
    pub(crate) kind: ListenerKind,
}

/// A client needs an API listener; a socket listener (server side, A36) is kept so that
/// the dependency manager can report it as the wrong kind (A74) instead of a NACK.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ListenerKind {
    /// `api_listener` with an HttpConnectionManager.
    Api(HttpConnectionManagerConfig),
    /// `address` set, no `api_listener`: not usable by a client.
    Socket,
}

/// The parts of an HttpConnectionManager a gRPC client uses.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HttpConnectionManagerConfig {
    /// Where the routes come from.
    pub(crate) routes: RouteSource,
    /// The HTTP filters in order, without the optional ones we ignore; the router is last.
    pub(crate) http_filters: Vec<HttpFilterSummary>,
    /// `common_http_protocol_options.max_stream_duration` (A31), the default RPC timeout
    /// cap when the route sets none.
    pub(crate) max_stream_duration: Option<Duration>,
}

/// RDS over ADS, or a RouteConfiguration inlined in the Listener.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RouteSource {
    /// `rds.route_config_name`.
    Rds(String),
    /// `route_config`.
    Inline(Arc<RouteConfig>),
}

/// The router filter: the only terminal filter, which must come last (A39).
fn router_type_url() -> String {
    Router::type_url()
}

/// Validates a Listener.
pub(crate) fn validate(proto: &ListenerProto) -> Result<Listener, ValidationErrors> {
    let mut v = Validator::new();
    let kind = match (&proto.api_listener, &proto.address) {
        (Some(api), _) => v.field("api_listener.api_listener", |v| match &api.api_listener {
            Some(any) => api_listener(v, any),
            None => {
                v.error("field not present");
                None
            }
        }),
        (None, Some(_)) => Some(ListenerKind::Socket),
        (None, None) => {
            v.error("exactly one of api_listener or address must be set");
            None
        }
    };
    let listener = kind.map(|kind| Listener {
        name: proto.name.clone(),
        kind,
    });
    match v.finish(listener)? {
        Some(l) => Ok(l),
        // Unreachable in practice: a `None` kind always records an error.
        None => Err(ValidationErrors(vec![])),
    }
}

fn api_listener(v: &mut Validator, any: &Any) -> Option<ListenerKind> {
    if any.type_url != HttpConnectionManager::type_url() {
        v.error(format!("unsupported api_listener type {}", any.type_url));
        return None;
    }
    let hcm = match HttpConnectionManager::decode(any.value.as_slice()) {
        Ok(hcm) => hcm,
        Err(e) => {
            v.error(format!("cannot decode HttpConnectionManager: {e}"));
            return None;
        }
    };
    let before = v.error_count();
    let routes = match &hcm.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => v.field("rds", |v| {
            match &rds.config_source {
                Some(s) if config_source_is_ads(s) => {}
                Some(_) => v.error_at("config_source", "ConfigSource is not ADS or self"),
                None => v.error_at("config_source", "field not present"),
            }
            if rds.route_config_name.is_empty() {
                v.error_at("route_config_name", "must be non-empty");
            }
            RouteSource::Rds(rds.route_config_name.clone())
        }),
        Some(RouteSpecifier::RouteConfig(rc)) => v.field("route_config", |v| {
            RouteSource::Inline(Arc::new(route::validate_in(v, rc)))
        }),
        Some(RouteSpecifier::ScopedRoutes(_)) => {
            v.error_at("scoped_routes", "scoped routes are not supported");
            return None;
        }
        None => {
            v.error("neither rds nor route_config is set");
            return None;
        }
    };
    // A41: a client ignores the X-Forwarded-For machinery, so it must be off.
    if hcm.xff_num_trusted_hops != 0 {
        v.error_at("xff_num_trusted_hops", "must be zero");
    }
    if !hcm.original_ip_detection_extensions.is_empty() {
        v.error_at("original_ip_detection_extensions", "must be empty");
    }
    let http_filters = http_filters(v, &hcm.http_filters);
    let max_stream_duration = hcm
        .common_http_protocol_options
        .as_ref()
        .and_then(|o| o.max_stream_duration.as_ref())
        .and_then(|d| {
            v.field("common_http_protocol_options.max_stream_duration", |v| {
                duration(v, d)
            })
        });
    if v.error_count() > before {
        return None;
    }
    Some(ListenerKind::Api(HttpConnectionManagerConfig {
        routes,
        http_filters,
        max_stream_duration,
    }))
}

/// A39: at least one filter, unique names, unknown non-optional types NACK, optional ones
/// are ignored, and the router is the one terminal filter and comes last. The only filter
/// this client implements is the router; fault injection (A33) and the rest are "unknown"
/// to it, so they NACK unless optional.
fn http_filters(v: &mut Validator, filters: &[HttpFilter]) -> Vec<HttpFilterSummary> {
    let router = router_type_url();
    let mut kept: Vec<HttpFilterSummary> = Vec::new();
    let mut names = std::collections::HashSet::new();
    v.field("http_filters", |v| {
        let before = v.error_count();
        for (i, f) in filters.iter().enumerate() {
            v.field(format!("[{i}]"), |v| {
                if f.name.is_empty() {
                    v.error_at("name", "empty filter name");
                    return;
                }
                if !names.insert(f.name.as_str()) {
                    v.error_at("name", format!("duplicate HTTP filter name: {}", f.name));
                    return;
                }
                let type_url = match &f.config_type {
                    Some(ConfigType::TypedConfig(any)) => inner_type_url(any),
                    Some(ConfigType::ConfigDiscovery(_)) | None => {
                        if !f.is_optional {
                            v.error_at("typed_config", "field not present");
                        }
                        return;
                    }
                };
                if type_url == router {
                    kept.push(HttpFilterSummary {
                        name: f.name.clone(),
                        type_url,
                    });
                } else if !f.is_optional {
                    v.error_at("typed_config", format!("unsupported filter type {type_url}"));
                }
            });
        }
        if v.error_count() == before && kept.is_empty() {
            v.error("expected at least one HTTP filter");
        }
        // Among the filters kept (optional unknown ones are dropped first, as C-core
        // does), only the last may be terminal, and it must be.
        let last = kept.len().saturating_sub(1);
        if kept.iter().take(last).any(|f| f.type_url == router) {
            v.error("terminal filter for config type envoy.extensions.filters.http.router.v3.Router must be the last filter in the chain");
        }
    });
    kept
}

/// The type URL of a filter config, looking inside a TypedStruct (A39).
pub(crate) fn inner_type_url(any: &Any) -> String {
    if TYPED_STRUCT_URLS.contains(&any.type_url.as_str())
        && let Ok(ts) = TypedStruct::decode(any.value.as_slice())
    {
        return ts.type_url;
    }
    any.type_url.clone()
}
