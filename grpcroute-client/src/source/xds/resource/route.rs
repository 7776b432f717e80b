//! RouteConfiguration: virtual hosts, routes, matchers and actions (gRFC A28, A31, A63).
//!
//! The per-call decision over these types is in [`super::super::routing`].

use std::sync::Arc;

use envoy_types::pb::envoy::{
    config::{
        core::v3::RuntimeFractionalPercent,
        route::v3::{
            self as proto, header_matcher::HeaderMatchSpecifier, route::Action,
            route_action::ClusterSpecifier, route_match::PathSpecifier,
        },
    },
    r#type::{
        matcher::v3::{RegexMatcher, StringMatcher, string_matcher::MatchPattern},
        v3::{FractionalPercent, fractional_percent::DenominatorType},
    },
};

use std::collections::HashMap;

use envoy_types::pb::{envoy::config::route::v3::FilterConfig, google::protobuf::Any};
use prost::{Message, Name};

use super::{ValidationErrors, Validator, duration, listener::inner_type_url};
pub(crate) use crate::model::xds::route::*;

/// Validates a RouteConfiguration (also used for one inlined in a Listener).
pub(crate) fn validate(proto: &proto::RouteConfiguration) -> Result<RouteConfig, ValidationErrors> {
    let mut v = Validator::new();
    let config = validate_in(&mut v, proto);
    v.finish(config)
}

/// Validates into an existing validator (the Listener's, for an inline route config).
pub(crate) fn validate_in(v: &mut Validator, proto: &proto::RouteConfiguration) -> RouteConfig {
    let plugins = &proto.cluster_specifier_plugins;
    let virtual_hosts = proto
        .virtual_hosts
        .iter()
        .enumerate()
        .map(|(i, vh)| {
            v.field(format!("virtual_hosts[{i}]"), |v| {
                Arc::new(virtual_host(v, vh, plugins))
            })
        })
        .collect();
    RouteConfig {
        name: proto.name.clone(),
        virtual_hosts,
    }
}

fn virtual_host(
    v: &mut Validator,
    proto: &proto::VirtualHost,
    plugins: &[proto::ClusterSpecifierPlugin],
) -> VirtualHost {
    let mut domains = Vec::with_capacity(proto.domains.len());
    v.field("domains", |v| {
        if proto.domains.is_empty() {
            v.error("must be non-empty");
        }
        for (i, d) in proto.domains.iter().enumerate() {
            match DomainPattern::parse(d) {
                Some(p) => domains.push(p),
                None => v.error_at(&format!("[{i}]"), format!("invalid domain pattern \"{d}\"")),
            }
        }
    });
    filter_overrides(v, &proto.typed_per_filter_config);
    let mut routes = Vec::with_capacity(proto.routes.len());
    for (i, r) in proto.routes.iter().enumerate() {
        if let Some(route) = v.field(format!("routes[{i}]"), |v| route(v, i, r, plugins)) {
            routes.push(route);
        }
    }
    VirtualHost {
        name: proto.name.clone(),
        domains,
        routes,
    }
}

/// A route, or `None` when gRPC skips it (or it is invalid; the error is recorded).
fn route(
    v: &mut Validator,
    index: usize,
    proto: &proto::Route,
    plugins: &[proto::ClusterSpecifierPlugin],
) -> Option<Route> {
    let before = v.error_count();
    let Some(m) = &proto.r#match else {
        v.error_at("match", "field not present");
        return None;
    };
    // A28: a route with query parameter matchers never matches, so it is dropped (not an
    // error).
    if !m.query_parameters.is_empty() {
        return None;
    }
    // C-core also skips a route whose path matcher can never match a gRPC path
    // (`/service/method`).
    match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) if !prefix_can_match_grpc_path(p) => return None,
        Some(PathSpecifier::Path(p)) if !is_grpc_path(p) => return None,
        _ => {}
    }
    let matcher = v.field("match", |v| route_match(v, m));
    filter_overrides(v, &proto.typed_per_filter_config);
    let action = match &proto.action {
        Some(Action::Route(action)) => v.field("route", |v| route_action(v, action, plugins)),
        // Kept: calls on it fail UNAVAILABLE (A28).
        _ => Some(Some(RouteAction::NonForwarding)),
    };
    let (Some(matcher), Some(action)) = (matcher, action) else {
        return None;
    };
    if v.error_count() > before {
        return None;
    }
    // `None` inside: a specifier gRPC ignores, so the route is skipped.
    let action = action?;
    Some(Route {
        index,
        name: (!proto.name.is_empty()).then(|| proto.name.clone()),
        matcher,
        action,
    })
}

/// Whether a `prefix` can match some `/service/method` path.
fn prefix_can_match_grpc_path(prefix: &str) -> bool {
    if prefix.is_empty() {
        return true;
    }
    let Some(rest) = prefix.strip_prefix('/') else {
        return false;
    };
    let parts: Vec<&str> = rest.splitn(3, '/').collect();
    parts.len() == 1 || (parts.len() == 2 && !parts[0].is_empty())
}

/// Whether `path` has the form `/service/method` (both non-empty).
fn is_grpc_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let parts: Vec<&str> = rest.splitn(3, '/').collect();
    parts.len() == 2 && !parts[0].is_empty() && !parts[1].is_empty()
}

/// `typed_per_filter_config` (A39): every override must name a filter type this client
/// supports, unless wrapped in an optional `FilterConfig`. The only filter here is the
/// router, which takes no override, so every required override NACKs (C-core rejects
/// overrides for the router too). Keys are visited in sorted order for stable errors.
fn filter_overrides(v: &mut Validator, overrides: &HashMap<String, Any>) {
    if overrides.is_empty() {
        return;
    }
    let mut keys: Vec<&String> = overrides.keys().collect();
    keys.sort();
    v.field("typed_per_filter_config", |v| {
        for key in keys {
            let any = &overrides[key];
            v.field(format!("[{key}]"), |v| {
                if key.is_empty() {
                    v.error("filter name must be non-empty");
                }
                let (inner, optional) = if any.type_url == FilterConfig::type_url() {
                    match FilterConfig::decode(any.value.as_slice()) {
                        Ok(fc) => (fc.config.unwrap_or_default(), fc.is_optional),
                        Err(_) => {
                            v.error("could not parse FilterConfig");
                            return;
                        }
                    }
                } else {
                    (any.clone(), false)
                };
                if !optional {
                    v.error(format!(
                        "unsupported filter type {}",
                        inner_type_url(&inner)
                    ));
                }
            });
        }
    });
}

fn route_match(v: &mut Validator, m: &proto::RouteMatch) -> Option<RouteMatch> {
    let ignore_case = m.case_sensitive.as_ref().is_some_and(|b| !b.value);
    let path = match &m.path_specifier {
        Some(PathSpecifier::Prefix(prefix)) => Some(PathMatcher::Prefix {
            prefix: fold(prefix, ignore_case),
            ignore_case,
        }),
        Some(PathSpecifier::Path(path)) => Some(PathMatcher::Exact {
            path: fold(path, ignore_case),
            ignore_case,
        }),
        Some(PathSpecifier::SafeRegex(r)) => v
            .field("safe_regex", |v| regex(v, r))
            .map(PathMatcher::Regex),
        Some(_) => {
            v.error_at("path_specifier", "unsupported path specifier");
            None
        }
        None => {
            v.error_at("path_specifier", "field not present");
            None
        }
    };
    let headers: Vec<_> = m
        .headers
        .iter()
        .enumerate()
        .filter_map(|(i, h)| v.field(format!("headers[{i}]"), |v| header_matcher(v, h)))
        .collect();
    let fraction_per_million = m
        .runtime_fraction
        .as_ref()
        .and_then(|f| v.field("runtime_fraction", |v| runtime_fraction(v, f)));
    if headers.len() != m.headers.len() {
        return None;
    }
    Some(RouteMatch {
        path: path?,
        headers,
        fraction_per_million,
    })
}

fn fold(s: &str, ignore_case: bool) -> String {
    if ignore_case {
        s.to_ascii_lowercase()
    } else {
        s.to_owned()
    }
}

fn regex(v: &mut Validator, r: &RegexMatcher) -> Option<SafeRegex> {
    // `engine_type` (google_re2) and its `max_program_size` are ignored, as gRPC does.
    match SafeRegex::new(&r.regex) {
        Ok(re) => Some(re),
        Err(e) => {
            v.error(e);
            None
        }
    }
}

// The deprecated direct matchers are still what gRPC (and control planes) use.
#[allow(deprecated)]
fn header_matcher(v: &mut Validator, h: &proto::HeaderMatcher) -> Option<HeaderMatcher> {
    if h.name.is_empty() {
        v.error_at("name", "must be non-empty");
        return None;
    }
    let string = |value: &str, ignore_case: bool, make: fn(String, bool) -> StringMatch| {
        Some(HeaderMatch::String(make(
            fold(value, ignore_case),
            ignore_case,
        )))
    };
    let kind = match &h.header_match_specifier {
        Some(HeaderMatchSpecifier::ExactMatch(s)) => string(s, false, |value, ignore_case| {
            StringMatch::Exact { value, ignore_case }
        }),
        Some(HeaderMatchSpecifier::PrefixMatch(s)) => string(s, false, |value, ignore_case| {
            StringMatch::Prefix { value, ignore_case }
        }),
        Some(HeaderMatchSpecifier::SuffixMatch(s)) => string(s, false, |value, ignore_case| {
            StringMatch::Suffix { value, ignore_case }
        }),
        Some(HeaderMatchSpecifier::ContainsMatch(s)) => string(s, false, |value, ignore_case| {
            StringMatch::Contains { value, ignore_case }
        }),
        Some(HeaderMatchSpecifier::SafeRegexMatch(r)) => v
            .field("safe_regex_match", |v| regex(v, r))
            .map(|r| HeaderMatch::String(StringMatch::Regex(r))),
        Some(HeaderMatchSpecifier::RangeMatch(r)) => {
            if r.start > r.end {
                v.error_at("range_match", "start must not be greater than end");
                None
            } else {
                Some(HeaderMatch::Range {
                    start: r.start,
                    end: r.end,
                })
            }
        }
        Some(HeaderMatchSpecifier::PresentMatch(p)) => Some(HeaderMatch::Present(*p)),
        Some(HeaderMatchSpecifier::StringMatch(s)) => v
            .field("string_match", |v| string_matcher(v, s))
            .map(HeaderMatch::String),
        None => {
            v.error_at("header_match_specifier", "field not present");
            None
        }
    }?;
    Some(HeaderMatcher {
        name: h.name.to_ascii_lowercase(),
        kind,
        invert: h.invert_match,
    })
}

/// Validates a `StringMatcher` (A63).
pub(crate) fn string_matcher(v: &mut Validator, s: &StringMatcher) -> Option<StringMatch> {
    let ic = s.ignore_case;
    match &s.match_pattern {
        Some(MatchPattern::Exact(x)) => Some(StringMatch::Exact {
            value: fold(x, ic),
            ignore_case: ic,
        }),
        Some(MatchPattern::Prefix(x)) => Some(StringMatch::Prefix {
            value: fold(x, ic),
            ignore_case: ic,
        }),
        Some(MatchPattern::Suffix(x)) => Some(StringMatch::Suffix {
            value: fold(x, ic),
            ignore_case: ic,
        }),
        Some(MatchPattern::Contains(x)) => Some(StringMatch::Contains {
            value: fold(x, ic),
            ignore_case: ic,
        }),
        // C-core rejects `ignore_case` on a regex rather than ignore it (its
        // `StringMatcher::Create`); so does this client, or a route config C-core NACKs
        // would route here.
        Some(MatchPattern::SafeRegex(_)) if ic => {
            v.error_at("ignore_case", "not supported for regex matcher");
            None
        }
        Some(MatchPattern::SafeRegex(r)) => v
            .field("safe_regex", |v| regex(v, r))
            .map(StringMatch::Regex),
        Some(MatchPattern::Custom(_)) => {
            v.error_at("custom", "custom string matchers are not supported");
            None
        }
        None => {
            v.error_at("match_pattern", "field not present");
            None
        }
    }
}

fn runtime_fraction(v: &mut Validator, f: &RuntimeFractionalPercent) -> Option<u32> {
    // Only `default_value` is used; `runtime_key` needs an Envoy runtime (A28).
    let d = f.default_value.as_ref()?;
    v.field("default_value", |v| fractional_percent_per_million(v, d))
}

/// A FractionalPercent in parts per million.
pub(crate) fn fractional_percent_per_million(
    v: &mut Validator,
    d: &FractionalPercent,
) -> Option<u32> {
    let scale = match DenominatorType::try_from(d.denominator) {
        Ok(DenominatorType::Hundred) => 10_000,
        Ok(DenominatorType::TenThousand) => 100,
        Ok(DenominatorType::Million) => 1,
        Err(_) => {
            v.error_at(
                "denominator",
                format!("unknown denominator {}", d.denominator),
            );
            return None;
        }
    };
    Some(d.numerator.saturating_mul(scale).min(1_000_000))
}

/// `Some(Some(action))`: usable; `Some(None)`: gRPC ignores the route; `None`: invalid.
fn route_action(
    v: &mut Validator,
    a: &proto::RouteAction,
    plugins: &[proto::ClusterSpecifierPlugin],
) -> Option<Option<RouteAction>> {
    let clusters = match &a.cluster_specifier {
        Some(ClusterSpecifier::Cluster(name)) => {
            if name.is_empty() {
                v.error_at("cluster", "must be non-empty");
                return None;
            }
            ClusterChoice::Single(name.clone())
        }
        Some(ClusterSpecifier::WeightedClusters(w)) => {
            v.field("weighted_clusters", |v| weighted_clusters(v, w))?
        }
        // grpc_xds_features.md: `cluster_header` is ignored, so the route is skipped.
        Some(ClusterSpecifier::ClusterHeader(_)) => return Some(None),
        Some(ClusterSpecifier::ClusterSpecifierPlugin(name)) => {
            // No plugin type is supported yet (RLS would be). A reference to an undefined
            // plugin NACKs; an optional plugin we do not support skips the route; a
            // required one NACKs (A28 / C-core).
            let plugin = plugins
                .iter()
                .find(|p| p.extension.as_ref().is_some_and(|e| &e.name == name));
            match plugin {
                None => {
                    v.error_at(
                        "cluster_specifier_plugin",
                        format!("unknown cluster specifier plugin name \"{name}\""),
                    );
                    return None;
                }
                Some(p) if p.is_optional => return Some(None),
                Some(_) => {
                    v.error_at(
                        "cluster_specifier_plugin",
                        format!("cluster specifier plugin \"{name}\" is not supported"),
                    );
                    return None;
                }
            }
        }
        Some(ClusterSpecifier::InlineClusterSpecifierPlugin(_)) => return Some(None),
        // No (known) cluster specifier: C-core ignores the route.
        None => return Some(None),
    };
    let mut max_stream_duration = None;
    let mut grpc_timeout_header_max = None;
    if let Some(m) = &a.max_stream_duration {
        v.field("max_stream_duration", |v| {
            if let Some(d) = &m.max_stream_duration {
                max_stream_duration = v.field("max_stream_duration", |v| duration(v, d));
            }
            if let Some(d) = &m.grpc_timeout_header_max {
                grpc_timeout_header_max = v.field("grpc_timeout_header_max", |v| duration(v, d));
            }
        });
    }
    Some(Some(RouteAction::Forward(ForwardAction {
        clusters,
        max_stream_duration,
        grpc_timeout_header_max,
    })))
}

fn weighted_clusters(v: &mut Validator, w: &proto::WeightedCluster) -> Option<ClusterChoice> {
    let mut clusters = Vec::with_capacity(w.clusters.len());
    let mut total: u64 = 0;
    let before = v.error_count();
    for (i, c) in w.clusters.iter().enumerate() {
        v.field(format!("clusters[{i}]"), |v| {
            filter_overrides(v, &c.typed_per_filter_config);
            if c.name.is_empty() {
                v.error_at("name", "must be non-empty");
                return;
            }
            let Some(weight) = c.weight.as_ref().map(|w| w.value) else {
                v.error_at("weight", "field not present");
                return;
            };
            // Zero weights never get picked: drop them (grpc-go, C-core).
            if weight > 0 {
                total += u64::from(weight);
                clusters.push(WeightedCluster {
                    name: c.name.clone(),
                    weight,
                });
            }
        });
    }
    if v.error_count() > before {
        return None;
    }
    if total == 0 {
        v.error("no valid clusters specified (the sum of weights is 0)");
        return None;
    }
    if total > u64::from(u32::MAX) {
        v.error("sum of cluster weights exceeds uint32 max");
        return None;
    }
    Some(ClusterChoice::Weighted { clusters, total })
}
