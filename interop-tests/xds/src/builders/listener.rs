//! LDS: API listeners wrapping an `HttpConnectionManager` (gRFC A27/A39).

use std::time::Duration;

use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::{
                AggregatedConfigSource, ApiVersion, ConfigSource, HttpProtocolOptions,
                config_source::ConfigSourceSpecifier,
            },
            listener::v3::{ApiListener as PbApiListener, Listener},
            route::v3::RouteConfiguration,
        },
        extensions::filters::{
            http::router::v3::Router,
            network::http_connection_manager::v3::{
                HttpConnectionManager, HttpFilter, Rds, http_connection_manager::RouteSpecifier,
                http_filter::ConfigType,
            },
        },
    },
    google::protobuf::Any,
};

use super::duration;

/// A `ConfigSource` pointing at ADS, the only kind gRPC accepts for RDS and EDS.
pub fn ads_config_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(
            ConfigSourceSpecifier::Ads(AggregatedConfigSource::default()),
        ),
        ..Default::default()
    }
}

/// The router filter (`envoy.extensions.filters.http.router.v3.Router`), which gRPC
/// requires last in `http_filters`.
pub fn router_filter() -> HttpFilter {
    http_filter(
        "router",
        envoy_types::util::pack_any(Router::default()),
        false,
    )
}

/// Any HTTP filter (e.g. an unknown type, to see it NACKed unless `is_optional`).
pub fn http_filter(name: &str, config: Any, is_optional: bool) -> HttpFilter {
    HttpFilter {
        name: name.to_string(),
        is_optional,
        config_type: Some(ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

/// Builds a `Listener` whose `api_listener` is an `HttpConnectionManager`, as gRPC
/// clients expect for `xds:///NAME`.
#[derive(Clone, Debug)]
pub struct ApiListener {
    name: String,
    hcm: HttpConnectionManager,
}

impl ApiListener {
    fn new(name: &str, routes: RouteSpecifier) -> Self {
        Self {
            name: name.to_string(),
            hcm: HttpConnectionManager {
                route_specifier: Some(routes),
                http_filters: vec![router_filter()],
                ..Default::default()
            },
        }
    }

    /// Routes from RDS: RouteConfiguration `route_config_name` over ADS.
    pub fn rds(name: &str, route_config_name: &str) -> Self {
        Self::new(
            name,
            RouteSpecifier::Rds(Rds {
                config_source: Some(ads_config_source()),
                route_config_name: route_config_name.to_string(),
            }),
        )
    }

    /// Routes inline in the listener.
    pub fn inline(name: &str, route_config: RouteConfiguration) -> Self {
        Self::new(name, RouteSpecifier::RouteConfig(route_config))
    }

    /// Replaces `http_filters` (the default is the router alone); the list is taken as
    /// given, so a test can leave the router out or put it first.
    #[must_use]
    pub fn http_filters(mut self, filters: Vec<HttpFilter>) -> Self {
        self.hcm.http_filters = filters;
        self
    }

    /// The default `max_stream_duration` of every route
    /// (`common_http_protocol_options.max_stream_duration`, gRFC A31).
    #[must_use]
    pub fn max_stream_duration(mut self, max: Duration) -> Self {
        self.hcm.common_http_protocol_options = Some(HttpProtocolOptions {
            max_stream_duration: Some(duration(max)),
            ..Default::default()
        });
        self
    }

    /// The connection manager as built so far, to change other fields.
    pub fn connection_manager(&mut self) -> &mut HttpConnectionManager {
        &mut self.hcm
    }

    /// The listener.
    pub fn build(self) -> Listener {
        Listener {
            name: self.name,
            api_listener: Some(PbApiListener {
                api_listener: Some(envoy_types::util::pack_any(self.hcm)),
            }),
            ..Default::default()
        }
    }
}

impl From<ApiListener> for Listener {
    fn from(builder: ApiListener) -> Self {
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn rds_listener_wraps_a_connection_manager_over_ads() {
        let listener = ApiListener::rds("svc", "rc")
            .max_stream_duration(Duration::from_millis(1500))
            .build();
        assert_eq!(listener.name, "svc");
        let any = listener.api_listener.unwrap().api_listener.unwrap();
        assert_eq!(
            any.type_url,
            "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
        );
        let hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
        let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
            panic!("not RDS")
        };
        assert_eq!(rds.route_config_name, "rc");
        assert!(matches!(
            rds.config_source.unwrap().config_source_specifier,
            Some(ConfigSourceSpecifier::Ads(_))
        ));
        assert_eq!(hcm.http_filters.len(), 1);
        let Some(ConfigType::TypedConfig(router)) = &hcm.http_filters[0].config_type else {
            panic!("no router config")
        };
        assert_eq!(
            router.type_url,
            "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
        );
        let msd = hcm
            .common_http_protocol_options
            .unwrap()
            .max_stream_duration
            .unwrap();
        assert_eq!((msd.seconds, msd.nanos), (1, 500_000_000));
    }
}
