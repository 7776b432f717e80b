//! A validated RouteConfiguration: virtual hosts, routes, matchers and actions (gRFC A28,
//! A31, A63). The per-call decision over these types is in `route::xds`.

use std::{sync::Arc, time::Duration};

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
