//! RouteConfiguration: virtual hosts, routes, matchers and actions (gRFC A28, A31, A63).
//!
//! The per-call decision over these types is in [`super::super::routing`].

use std::{sync::Arc, time::Duration};

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

/// Compiled-program size limit for `safe_regex` patterns. RE2 (gRPC's engine) caps memory
/// the same way; a pattern over the limit is rejected, not truncated.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A validated RouteConfiguration.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RouteConfig {
    /// The resource name.
    pub(crate) name: String,
    /// The virtual hosts in configured order (the order breaks ties in domain matching).
    pub(crate) virtual_hosts: Vec<Arc<VirtualHost>>,
}

/// A virtual host: the routes for a set of authorities.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VirtualHost {
    /// The configured name (may be empty).
    pub(crate) name: String,
    /// The domain patterns, never empty.
    pub(crate) domains: Vec<DomainPattern>,
    /// The usable routes in configured order; first match wins (A28). Routes gRPC skips
    /// (`query_parameters`, `cluster_header`, ...) are not here; [`Route::index`] keeps
    /// the configured position.
    pub(crate) routes: Vec<Route>,
}

/// A `VirtualHost.domains` entry, lower-cased (C-core matches domains case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DomainPattern {
    /// No `*`: the whole authority.
    Exact(String),
    /// `*foo`: the authority ends with `foo` (stored without the `*`).
    Suffix(String),
    /// `foo*`: the authority starts with `foo` (stored without the `*`).
    Prefix(String),
    /// `*`: anything.
    Universal,
}

impl DomainPattern {
    /// Parses a domain; `None` when it is empty or has a `*` elsewhere than at one end.
    pub(crate) fn parse(domain: &str) -> Option<Self> {
        let lower = domain.to_ascii_lowercase();
        if lower.is_empty() {
            return None;
        }
        if lower == "*" {
            return Some(DomainPattern::Universal);
        }
        let stars = lower.matches('*').count();
        match stars {
            0 => Some(DomainPattern::Exact(lower)),
            1 if lower.starts_with('*') => Some(DomainPattern::Suffix(lower[1..].to_owned())),
            1 if lower.ends_with('*') => {
                Some(DomainPattern::Prefix(lower[..lower.len() - 1].to_owned()))
            }
            _ => None,
        }
    }
}

/// One usable route.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Route {
    /// Position in the configured `routes` list (for explain and logs).
    pub(crate) index: usize,
    /// The configured name, if any.
    pub(crate) name: Option<String>,
    /// What a call must look like.
    pub(crate) matcher: RouteMatch,
    /// What happens to a matching call.
    pub(crate) action: RouteAction,
}

/// `Route.match`: path AND every header AND the runtime fraction.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RouteMatch {
    /// The `:path` matcher.
    pub(crate) path: PathMatcher,
    /// Header matchers; all must match.
    pub(crate) headers: Vec<HeaderMatcher>,
    /// `runtime_fraction.default_value` in parts per million, if set.
    pub(crate) fraction_per_million: Option<u32>,
}

/// A matcher on the call's `:path` (`/package.Service/Method`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PathMatcher {
    /// `prefix`; an empty prefix matches every path.
    Prefix {
        /// The prefix.
        prefix: String,
        /// `case_sensitive: false`.
        ignore_case: bool,
    },
    /// `path`: the whole path.
    Exact {
        /// The path.
        path: String,
        /// `case_sensitive: false`.
        ignore_case: bool,
    },
    /// `safe_regex`: a full match. `case_sensitive` does not apply (as in Envoy and
    /// grpc-go).
    Regex(SafeRegex),
}

/// A header matcher (A28, A63).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HeaderMatcher {
    /// The header name, lower-cased.
    pub(crate) name: String,
    /// How the value is tested.
    pub(crate) kind: HeaderMatch,
    /// `invert_match`. A missing header fails the matcher regardless (except `present`).
    pub(crate) invert: bool,
}

/// How a header value is tested.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum HeaderMatch {
    /// A string comparison (`exact_match`, `prefix_match`, ..., or `string_match`).
    String(StringMatch),
    /// `range_match`: the value parsed as an `i64` is in `[start, end)`.
    Range {
        /// Inclusive start.
        start: i64,
        /// Exclusive end.
        end: i64,
    },
    /// `present_match`: matches when presence equals this.
    Present(bool),
}

/// A string matcher (`envoy.type.matcher.v3.StringMatcher`, A63).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StringMatch {
    /// Equal.
    Exact {
        /// The value (lower-cased when `ignore_case`).
        value: String,
        /// ASCII case-insensitive.
        ignore_case: bool,
    },
    /// Starts with.
    Prefix {
        /// The prefix (lower-cased when `ignore_case`).
        value: String,
        /// ASCII case-insensitive.
        ignore_case: bool,
    },
    /// Ends with.
    Suffix {
        /// The suffix (lower-cased when `ignore_case`).
        value: String,
        /// ASCII case-insensitive.
        ignore_case: bool,
    },
    /// Contains.
    Contains {
        /// The substring (lower-cased when `ignore_case`).
        value: String,
        /// ASCII case-insensitive.
        ignore_case: bool,
    },
    /// Full regex match; `ignore_case` does not apply (A63).
    Regex(SafeRegex),
}

/// A compiled `safe_regex` with full-match semantics.
///
/// gRPC uses RE2. The `regex` crate implements the same family (no backreferences or
/// look-around, linear time) with a near-identical syntax; patterns RE2 accepts and the
/// crate does not (or the reverse) are rare and are reported as invalid regexes.
#[derive(Debug, Clone)]
pub(crate) struct SafeRegex {
    /// The pattern as configured.
    pub(crate) pattern: String,
    /// Compiled as `^(?:pattern)$`.
    pub(crate) regex: regex::Regex,
}

impl PartialEq for SafeRegex {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl SafeRegex {
    /// Compiles `pattern` for full matching.
    pub(crate) fn new(pattern: &str) -> Result<Self, String> {
        let regex = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| format!("invalid regex: {e}"))?;
        Ok(Self {
            pattern: pattern.to_owned(),
            regex,
        })
    }

    /// Whether the whole of `s` matches.
    pub(crate) fn is_full_match(&self, s: &str) -> bool {
        self.regex.is_match(s)
    }
}

/// What a matching route does with a call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RouteAction {
    /// Send it to a cluster.
    Forward(ForwardAction),
    /// A non-forwarding action (`non_forwarding_action`, redirect, direct response,
    /// filter action, or none): gRPC keeps the route and fails its calls `UNAVAILABLE`
    /// (A28: "matched route does not have a supported route action type").
    NonForwarding,
}

/// `RouteAction` with a supported cluster specifier.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ForwardAction {
    /// The cluster(s).
    pub(crate) clusters: ClusterChoice,
    /// `max_stream_duration.max_stream_duration` (A31); `None` when unset. When
    /// `grpc_timeout_header_max` is unset this caps the call (0 means no cap), else the
    /// listener's HCM value applies.
    pub(crate) max_stream_duration: Option<Duration>,
    /// `max_stream_duration.grpc_timeout_header_max` (A31); `None` when unset. When set it
    /// takes precedence over `max_stream_duration` and caps the call's own deadline (0 means
    /// the caller's deadline alone). The caller's deadline is never exceeded.
    pub(crate) grpc_timeout_header_max: Option<Duration>,
}

/// The cluster choice of a route.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ClusterChoice {
    /// `cluster`.
    Single(String),
    /// `weighted_clusters`: entries with weight 0 removed, `total` > 0 (a random pick
    /// per call, A28).
    Weighted {
        /// The entries, each with weight > 0.
        clusters: Vec<WeightedCluster>,
        /// Sum of the weights, at most `u32::MAX`.
        total: u64,
    },
}

impl ClusterChoice {
    /// Every cluster name this choice can pick.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        let (single, weighted) = match self {
            ClusterChoice::Single(name) => (Some(name.as_str()), &[][..]),
            ClusterChoice::Weighted { clusters, .. } => (None, clusters.as_slice()),
        };
        single
            .into_iter()
            .chain(weighted.iter().map(|w| w.name.as_str()))
    }
}

/// One `weighted_clusters` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WeightedCluster {
    /// The cluster name.
    pub(crate) name: String,
    /// Its weight (> 0).
    pub(crate) weight: u32,
}

impl Route {
    /// Every cluster a call on this route can go to.
    pub(crate) fn cluster_names(&self) -> impl Iterator<Item = &str> {
        match &self.action {
            RouteAction::Forward(f) => Some(f.clusters.names()),
            RouteAction::NonForwarding => None,
        }
        .into_iter()
        .flatten()
    }
}

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
