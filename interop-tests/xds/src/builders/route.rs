//! RDS: route configurations, virtual hosts, routes and their matchers (gRFC A28/A31/A63).

use std::time::Duration;

use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::RuntimeFractionalPercent,
            route::v3::{
                HeaderMatcher, NonForwardingAction, QueryParameterMatcher, Route, RouteAction,
                RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
                query_parameter_matcher::QueryParameterMatchSpecifier,
                route::Action,
                route_action::{
                    ClusterSpecifier, HashPolicy, MaxStreamDuration,
                    hash_policy::{FilterState, Header, PolicySpecifier},
                },
                route_match::PathSpecifier,
                weighted_cluster::ClusterWeight,
            },
        },
        r#type::{
            matcher::v3::RegexMatcher,
            v3::{FractionalPercent, fractional_percent::DenominatorType},
        },
    },
    google::protobuf::BoolValue,
};

use super::{duration, u32_value};

/// A route configuration of `virtual_hosts`.
pub fn route_configuration(name: &str, virtual_hosts: Vec<VirtualHost>) -> RouteConfiguration {
    RouteConfiguration {
        name: name.to_string(),
        virtual_hosts,
        ..Default::default()
    }
}

/// A virtual host answering `domains` (exact, `*suffix`, `prefix*` or `*`).
pub fn virtual_host(name: &str, domains: &[&str], routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: name.to_string(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
        ..Default::default()
    }
}

fn regex(pattern: &str) -> RegexMatcher {
    // No engine_type: it is deprecated, and gRPC always uses RE2 semantics.
    RegexMatcher {
        regex: pattern.to_string(),
        ..Default::default()
    }
}

/// Builds one route: a path matcher, then optional conditions, then an action.
#[derive(Clone, Debug)]
pub struct RouteBuilder {
    route: Route,
    action: RouteAction,
    non_forwarding: bool,
}

impl RouteBuilder {
    fn with_path(path: PathSpecifier) -> Self {
        Self::with_match(RouteMatch {
            path_specifier: Some(path),
            ..Default::default()
        })
    }

    /// Matches paths starting with `prefix` (`""` and `"/"` match everything).
    pub fn prefix(prefix: &str) -> Self {
        Self::with_path(PathSpecifier::Prefix(prefix.to_string()))
    }

    /// Matches exactly `path` (`/pkg.Service/Method`).
    pub fn path(path: &str) -> Self {
        Self::with_path(PathSpecifier::Path(path.to_string()))
    }

    /// Matches paths that fully match the RE2 `pattern`.
    pub fn safe_regex(pattern: &str) -> Self {
        Self::with_path(PathSpecifier::SafeRegex(regex(pattern)))
    }

    /// A route with any `RouteMatch` (e.g. one without a path specifier, which gRPC NACKs).
    pub fn with_match(route_match: RouteMatch) -> Self {
        Self {
            route: Route {
                r#match: Some(route_match),
                ..Default::default()
            },
            action: RouteAction::default(),
            non_forwarding: false,
        }
    }

    fn route_match(&mut self) -> &mut RouteMatch {
        self.route.r#match.get_or_insert_with(RouteMatch::default)
    }

    /// Names the route.
    #[must_use]
    pub fn name(mut self, name: &str) -> Self {
        self.route.name = name.to_string();
        self
    }

    /// Sets `case_sensitive` of the path match (unset means true).
    #[must_use]
    pub fn case_sensitive(mut self, case_sensitive: bool) -> Self {
        self.route_match().case_sensitive = Some(BoolValue {
            value: case_sensitive,
        });
        self
    }

    /// Adds a header matcher (see [`header`]); all of them must match.
    #[must_use]
    pub fn header(mut self, matcher: HeaderMatcher) -> Self {
        self.route_match().headers.push(matcher);
        self
    }

    /// Matches only this fraction of calls (`runtime_fraction.default_value`, per million).
    #[must_use]
    pub fn runtime_fraction_per_million(mut self, numerator: u32) -> Self {
        self.route_match().runtime_fraction = Some(RuntimeFractionalPercent {
            default_value: Some(FractionalPercent {
                numerator,
                denominator: DenominatorType::Million as i32,
            }),
            ..Default::default()
        });
        self
    }

    /// Adds a `query_parameters` matcher (present match on `name`): gRPC skips such routes.
    #[must_use]
    pub fn query_parameter(mut self, name: &str) -> Self {
        self.route_match()
            .query_parameters
            .push(QueryParameterMatcher {
                name: name.to_string(),
                query_parameter_match_specifier: Some(QueryParameterMatchSpecifier::PresentMatch(
                    true,
                )),
            });
        self
    }

    fn action(&mut self) -> &mut RouteAction {
        self.non_forwarding = false;
        &mut self.action
    }

    /// Sends matching calls to `cluster`.
    #[must_use]
    pub fn cluster(mut self, cluster: &str) -> Self {
        self.action().cluster_specifier = Some(ClusterSpecifier::Cluster(cluster.to_string()));
        self
    }

    /// Splits matching calls over `clusters` by weight (entries are kept as given, weight
    /// 0 included).
    #[must_use]
    pub fn weighted_clusters(mut self, clusters: &[(&str, u32)]) -> Self {
        self.action().cluster_specifier =
            Some(ClusterSpecifier::WeightedClusters(WeightedCluster {
                clusters: clusters
                    .iter()
                    .map(|(name, weight)| ClusterWeight {
                        name: name.to_string(),
                        weight: Some(u32_value(*weight)),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }));
        self
    }

    /// A `non_forwarding_action` (gRPC clients fail matching calls with UNAVAILABLE).
    #[must_use]
    pub fn non_forwarding(mut self) -> Self {
        self.non_forwarding = true;
        self
    }

    /// `max_stream_duration.max_stream_duration` of the route action (A31).
    #[must_use]
    pub fn max_stream_duration(mut self, max: Duration) -> Self {
        self.action()
            .max_stream_duration
            .get_or_insert_with(MaxStreamDuration::default)
            .max_stream_duration = Some(duration(max));
        self
    }

    /// `max_stream_duration.grpc_timeout_header_max` of the route action (A31).
    #[must_use]
    pub fn grpc_timeout_header_max(mut self, max: Duration) -> Self {
        self.action()
            .max_stream_duration
            .get_or_insert_with(MaxStreamDuration::default)
            .grpc_timeout_header_max = Some(duration(max));
        self
    }

    /// Adds a `hash_policy` on request header `name` (ring hash, A42).
    #[must_use]
    pub fn hash_on_header(mut self, name: &str, terminal: bool) -> Self {
        self.action().hash_policy.push(HashPolicy {
            terminal,
            policy_specifier: Some(PolicySpecifier::Header(Header {
                header_name: name.to_string(),
                regex_rewrite: None,
            })),
        });
        self
    }

    /// Adds a `hash_policy` on the channel id (`filter_state` key `io.grpc.channel_id`,
    /// A42: one hash per channel).
    #[must_use]
    pub fn hash_on_channel_id(mut self, terminal: bool) -> Self {
        self.action().hash_policy.push(HashPolicy {
            terminal,
            policy_specifier: Some(PolicySpecifier::FilterState(FilterState {
                key: "io.grpc.channel_id".to_string(),
            })),
        });
        self
    }

    /// The route as built so far, to change other fields (its `action` is replaced by
    /// the one of this builder, if one was chosen).
    pub fn route_mut(&mut self) -> &mut Route {
        &mut self.route
    }

    /// The route.
    pub fn build(self) -> Route {
        let mut route = self.route;
        if self.non_forwarding {
            route.action = Some(Action::NonForwardingAction(NonForwardingAction::default()));
        } else if self.action != RouteAction::default() {
            route.action = Some(Action::Route(self.action));
        }
        route
    }
}

impl From<RouteBuilder> for Route {
    fn from(builder: RouteBuilder) -> Self {
        builder.build()
    }
}

/// Header matchers, one function per kind. [`invert`](header::invert) flips any of them.
// Envoy deprecates the bare `*_match` kinds in favour of `string_match`, but gRPC still
// implements both and the psm tests use the old ones: scenarios must be able to send them.
#[allow(deprecated)]
pub mod header {
    use envoy_types::pb::envoy::{
        config::route::v3::{HeaderMatcher, header_matcher::HeaderMatchSpecifier},
        r#type::{
            matcher::v3::{StringMatcher, string_matcher::MatchPattern},
            v3::Int64Range,
        },
    };

    fn matcher(name: &str, specifier: HeaderMatchSpecifier) -> HeaderMatcher {
        HeaderMatcher {
            name: name.to_string(),
            header_match_specifier: Some(specifier),
            ..Default::default()
        }
    }

    /// `exact_match`.
    pub fn exact(name: &str, value: &str) -> HeaderMatcher {
        matcher(name, HeaderMatchSpecifier::ExactMatch(value.to_string()))
    }

    /// `safe_regex_match` (RE2, full match).
    pub fn safe_regex(name: &str, pattern: &str) -> HeaderMatcher {
        matcher(
            name,
            HeaderMatchSpecifier::SafeRegexMatch(super::regex(pattern)),
        )
    }

    /// `range_match`: an integer value in `[start, end)`.
    pub fn range(name: &str, start: i64, end: i64) -> HeaderMatcher {
        matcher(
            name,
            HeaderMatchSpecifier::RangeMatch(Int64Range { start, end }),
        )
    }

    /// `present_match`: the header is (or, with `false`, is not) there.
    pub fn present(name: &str, present: bool) -> HeaderMatcher {
        matcher(name, HeaderMatchSpecifier::PresentMatch(present))
    }

    /// `prefix_match`.
    pub fn prefix(name: &str, prefix: &str) -> HeaderMatcher {
        matcher(name, HeaderMatchSpecifier::PrefixMatch(prefix.to_string()))
    }

    /// `suffix_match`.
    pub fn suffix(name: &str, suffix: &str) -> HeaderMatcher {
        matcher(name, HeaderMatchSpecifier::SuffixMatch(suffix.to_string()))
    }

    /// `contains_match`.
    pub fn contains(name: &str, infix: &str) -> HeaderMatcher {
        matcher(name, HeaderMatchSpecifier::ContainsMatch(infix.to_string()))
    }

    /// The kinds of `string_match` (A63).
    #[derive(Clone, Debug)]
    pub enum StringMatch<'a> {
        /// `exact`.
        Exact(&'a str),
        /// `prefix`.
        Prefix(&'a str),
        /// `suffix`.
        Suffix(&'a str),
        /// `contains`.
        Contains(&'a str),
        /// `safe_regex` (`ignore_case` does not apply to it).
        SafeRegex(&'a str),
    }

    /// `string_match` with `ignore_case`.
    pub fn string(name: &str, pattern: StringMatch<'_>, ignore_case: bool) -> HeaderMatcher {
        let pattern = match pattern {
            StringMatch::Exact(v) => MatchPattern::Exact(v.to_string()),
            StringMatch::Prefix(v) => MatchPattern::Prefix(v.to_string()),
            StringMatch::Suffix(v) => MatchPattern::Suffix(v.to_string()),
            StringMatch::Contains(v) => MatchPattern::Contains(v.to_string()),
            StringMatch::SafeRegex(v) => MatchPattern::SafeRegex(super::regex(v)),
        };
        matcher(
            name,
            HeaderMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(pattern),
                ignore_case,
            }),
        )
    }

    /// The same matcher with `invert_match` set.
    pub fn invert(mut matcher: HeaderMatcher) -> HeaderMatcher {
        matcher.invert_match = true;
        matcher
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;

    use super::*;

    #[test]
    fn a_route_keeps_every_condition_and_its_action() {
        let route = RouteBuilder::prefix("/grpc.testing.TestService/")
            .name("r0")
            .case_sensitive(false)
            .header(header::invert(header::exact("xds_md", "a")))
            .header(header::string("k", header::StringMatch::Suffix("Me"), true))
            .runtime_fraction_per_million(250_000)
            .weighted_clusters(&[("a", 20), ("b", 0)])
            .max_stream_duration(Duration::from_secs(3))
            .grpc_timeout_header_max(Duration::ZERO)
            .hash_on_header("xds_md", true)
            .build();
        let m = route.r#match.unwrap();
        assert_eq!(m.case_sensitive, Some(BoolValue { value: false }));
        assert!(m.headers[0].invert_match);
        assert!(matches!(
            &m.headers[1].header_match_specifier,
            Some(HeaderMatchSpecifier::StringMatch(s)) if s.ignore_case
        ));
        assert_eq!(
            m.runtime_fraction.unwrap().default_value.unwrap().numerator,
            250_000
        );
        let Some(Action::Route(action)) = route.action else {
            panic!("no route action")
        };
        let Some(ClusterSpecifier::WeightedClusters(w)) = action.cluster_specifier else {
            panic!("not weighted")
        };
        assert_eq!(w.clusters.len(), 2);
        assert_eq!(w.clusters[1].weight, Some(u32_value(0)));
        let msd = action.max_stream_duration.unwrap();
        assert_eq!(msd.max_stream_duration.unwrap().seconds, 3);
        assert_eq!(msd.grpc_timeout_header_max.unwrap().seconds, 0);
        assert!(matches!(
            &action.hash_policy[0].policy_specifier,
            Some(PolicySpecifier::Header(h)) if h.header_name == "xds_md"
        ));
    }

    #[test]
    fn non_forwarding_replaces_the_action() {
        let route = RouteBuilder::path("/a/b")
            .cluster("c")
            .non_forwarding()
            .build();
        assert!(matches!(route.action, Some(Action::NonForwardingAction(_))));
    }
}
