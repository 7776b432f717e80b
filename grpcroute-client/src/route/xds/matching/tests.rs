//! Routing decision tests: every matcher kind with hits and near-misses.

use std::sync::Arc;

use envoy_types::pb::envoy::{
    config::route::v3::{
        self as proto, HeaderMatcher as HeaderProto, header_matcher::HeaderMatchSpecifier,
        route_match::PathSpecifier,
    },
    r#type::{
        matcher::v3::{RegexMatcher, StringMatcher, string_matcher::MatchPattern},
        v3::Int64Range,
    },
};
use http::{HeaderMap, HeaderValue};

use super::*;
use crate::source::xds::{
    resource::route::{self, ClusterChoice, RouteAction, VirtualHost},
    testutil::*,
};

fn vhs(domains: &[&[&str]]) -> Vec<Arc<VirtualHost>> {
    let rc = route_config_with(
        "rc",
        domains
            .iter()
            .enumerate()
            .map(|(i, d)| vhost(&format!("vh{i}"), d, vec![]))
            .collect(),
    );
    route::validate(&rc).unwrap().virtual_hosts
}

fn pick(v: &[Arc<VirtualHost>], authority: &str) -> Option<String> {
    select_virtual_host(v, authority).map(|vh| vh.name.clone())
}

#[test]
fn virtual_host_precedence_exact_suffix_prefix_universal() {
    let v = vhs(&[&["*"], &["foo.*"], &["*.example.com"], &["api.example.com"]]);
    assert_eq!(pick(&v, "api.example.com").as_deref(), Some("vh3"));
    assert_eq!(pick(&v, "web.example.com").as_deref(), Some("vh2"));
    assert_eq!(pick(&v, "foo.bar").as_deref(), Some("vh1"));
    assert_eq!(pick(&v, "other").as_deref(), Some("vh0"));
    let none = vhs(&[&["a.com"]]);
    assert_eq!(pick(&none, "b.com"), None);
}

#[test]
fn virtual_host_longest_pattern_then_first() {
    let v = vhs(&[&["*.com"], &["*.example.com"], &["*.example.com"]]);
    assert_eq!(
        pick(&v, "a.example.com").as_deref(),
        Some("vh1"),
        "longer suffix, first on tie"
    );
    let v = vhs(&[&["foo*"], &["foo.bar*"]]);
    assert_eq!(pick(&v, "foo.bar.baz").as_deref(), Some("vh1"));
}

#[test]
fn virtual_host_case_insensitive_and_star_needs_a_character() {
    let v = vhs(&[&["*.Example.COM"], &["Svc:50051"], &["pre*"]]);
    assert_eq!(pick(&v, "A.EXAMPLE.com").as_deref(), Some("vh0"));
    assert_eq!(pick(&v, "svc:50051").as_deref(), Some("vh1"));
    // C-core: the `*` must match at least one character.
    assert_eq!(pick(&v, ".example.com"), None);
    assert_eq!(pick(&v, "pre"), None);
    assert_eq!(pick(&v, "prefix").as_deref(), Some("vh2"));
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn header_route(h: HeaderProto) -> route::HeaderMatcher {
    let mut r = route_prefix("", "c");
    r.r#match.as_mut().unwrap().headers = vec![h];
    let vh = route::validate(&route_config_with("rc", vec![vhost("vh", &["*"], vec![r])]))
        .unwrap()
        .virtual_hosts[0]
        .clone();
    vh.routes[0].matcher.headers[0].clone()
}

#[allow(deprecated)]
fn hm(name: &str, spec: HeaderMatchSpecifier, invert: bool) -> route::HeaderMatcher {
    header_route(HeaderProto {
        name: name.into(),
        invert_match: invert,
        header_match_specifier: Some(spec),
        ..Default::default()
    })
}

fn sm(pattern: MatchPattern, ignore_case: bool) -> HeaderMatchSpecifier {
    HeaderMatchSpecifier::StringMatch(StringMatcher {
        ignore_case,
        match_pattern: Some(pattern),
    })
}

fn check(m: &route::HeaderMatcher, cases: &[(&[(&str, &str)], bool)]) {
    for (h, want) in cases {
        assert_eq!(header_matches(m, &headers(h)), *want, "{m:?} on {h:?}");
    }
}

#[test]
#[allow(deprecated)]
fn exact_prefix_suffix_contains() {
    let exact = hm(
        "x-md",
        HeaderMatchSpecifier::ExactMatch("empty_ytpme".into()),
        false,
    );
    check(
        &exact,
        &[
            (&[("x-md", "empty_ytpme")], true),
            (&[("x-md", "Empty_ytpme")], false),
            (&[("x-md", "empty_ytpm")], false),
            (&[], false),
        ],
    );
    let prefix = hm(
        "x-md",
        HeaderMatchSpecifier::PrefixMatch("un".into()),
        false,
    );
    check(
        &prefix,
        &[
            (&[("x-md", "unary")], true),
            (&[("x-md", "un")], true),
            (&[("x-md", "u")], false),
            (&[("x-md", "Unary")], false),
        ],
    );
    let suffix = hm(
        "x-md",
        HeaderMatchSpecifier::SuffixMatch("me".into()),
        false,
    );
    check(
        &suffix,
        &[
            (&[("x-md", "empty_ytpme")], true),
            (&[("x-md", "mE")], false),
            (&[("x-md", "e")], false),
        ],
    );
    let contains = hm(
        "x-md",
        HeaderMatchSpecifier::ContainsMatch("ry_y".into()),
        false,
    );
    check(
        &contains,
        &[
            (&[("x-md", "unary_yranu")], true),
            (&[("x-md", "ry_")], false),
        ],
    );
}

#[test]
fn string_match_with_ignore_case() {
    let exact = hm("x-md", sm(MatchPattern::Exact("AbC".into()), true), false);
    check(
        &exact,
        &[
            (&[("x-md", "abc")], true),
            (&[("x-md", "ABC")], true),
            (&[("x-md", "abcd")], false),
        ],
    );
    let exact_cs = hm("x-md", sm(MatchPattern::Exact("AbC".into()), false), false);
    check(
        &exact_cs,
        &[(&[("x-md", "AbC")], true), (&[("x-md", "abc")], false)],
    );
    let prefix = hm("x-md", sm(MatchPattern::Prefix("UN".into()), true), false);
    check(
        &prefix,
        &[
            (&[("x-md", "unary")], true),
            (&[("x-md", "uNARY")], true),
            (&[("x-md", "xun")], false),
        ],
    );
    let suffix = hm("x-md", sm(MatchPattern::Suffix("ME".into()), true), false);
    check(
        &suffix,
        &[
            (&[("x-md", "empty_ytpme")], true),
            (&[("x-md", "m")], false),
        ],
    );
    let contains = hm(
        "x-md",
        sm(MatchPattern::Contains("Y_Y".into()), true),
        false,
    );
    check(
        &contains,
        &[
            (&[("x-md", "unary_yranu")], true),
            (&[("x-md", "unary-yranu")], false),
        ],
    );
    // A regex matches case-sensitively (`ignore_case` with a regex is NACKed, as
    // C-core does: see the resource tests).
    let re = hm(
        "x-md",
        sm(
            MatchPattern::SafeRegex(RegexMatcher {
                regex: "ab".into(),
                engine_type: None,
            }),
            false,
        ),
        false,
    );
    check(
        &re,
        &[(&[("x-md", "ab")], true), (&[("x-md", "AB")], false)],
    );
}

#[test]
#[allow(deprecated)]
fn regex_is_a_full_match() {
    let re = hm(
        "x-md",
        HeaderMatchSpecifier::SafeRegexMatch(RegexMatcher {
            regex: "^em.*me$".into(),
            engine_type: None,
        }),
        false,
    );
    check(
        &re,
        &[
            (&[("x-md", "empty_ytpme")], true),
            (&[("x-md", "xempty_ytpme")], false),
        ],
    );
    let partial = hm(
        "x-md",
        HeaderMatchSpecifier::SafeRegexMatch(RegexMatcher {
            regex: "em".into(),
            engine_type: None,
        }),
        false,
    );
    check(
        &partial,
        &[(&[("x-md", "em")], true), (&[("x-md", "empty")], false)],
    );
}

#[test]
fn range_is_half_open_on_i64() {
    let range = hm(
        "x-n",
        HeaderMatchSpecifier::RangeMatch(Int64Range {
            start: 100,
            end: 200,
        }),
        false,
    );
    check(
        &range,
        &[
            (&[("x-n", "100")], true),
            (&[("x-n", "199")], true),
            (&[("x-n", "159")], true),
            (&[("x-n", "200")], false),
            (&[("x-n", "99")], false),
            (&[("x-n", "-150")], false),
            (&[("x-n", "1.5e2")], false),
            (&[("x-n", "abc")], false),
            (&[], false),
        ],
    );
    let neg = hm(
        "x-n",
        HeaderMatchSpecifier::RangeMatch(Int64Range {
            start: i64::MIN,
            end: 0,
        }),
        false,
    );
    check(
        &neg,
        &[
            (&[("x-n", "-9223372036854775808")], true),
            (&[("x-n", "0")], false),
        ],
    );
}

#[test]
#[allow(deprecated)]
fn missing_header_fails_regardless_of_invert_except_present() {
    let inv = hm(
        "x-md",
        HeaderMatchSpecifier::ExactMatch("unary_yranu".into()),
        true,
    );
    check(
        &inv,
        &[
            (&[("x-md", "unary_yranu")], false),
            (&[("x-md", "empty_ytpme")], true),
            (&[], false),
        ],
    );
    let present = hm("x-md", HeaderMatchSpecifier::PresentMatch(true), false);
    check(
        &present,
        &[
            (&[("x-md", "")], true),
            (&[("x-md", "v")], true),
            (&[], false),
        ],
    );
    let absent = hm("x-md", HeaderMatchSpecifier::PresentMatch(false), false);
    check(&absent, &[(&[("x-md", "v")], false), (&[], true)]);
    let present_inv = hm("x-md", HeaderMatchSpecifier::PresentMatch(true), true);
    check(&present_inv, &[(&[("x-md", "v")], false), (&[], true)]);
}

#[test]
#[allow(deprecated)]
fn bin_headers_are_never_matched_and_content_type_is_grpc() {
    let bin = hm("x-md-bin", HeaderMatchSpecifier::PresentMatch(true), false);
    check(&bin, &[(&[("x-md-bin", "AAAA")], false), (&[], false)]);
    let bin_exact_inv = hm(
        "x-md-bin",
        HeaderMatchSpecifier::ExactMatch("x".into()),
        true,
    );
    check(&bin_exact_inv, &[(&[("x-md-bin", "y")], false)]);
    let ct = hm(
        "content-type",
        HeaderMatchSpecifier::ExactMatch("application/grpc".into()),
        false,
    );
    check(
        &ct,
        &[
            (&[], true),
            (&[("content-type", "application/grpc+proto")], true),
        ],
    );
    let ct_proto = hm(
        "content-type",
        HeaderMatchSpecifier::ExactMatch("application/grpc+proto".into()),
        false,
    );
    check(
        &ct_proto,
        &[(&[("content-type", "application/grpc+proto")], false)],
    );
}

#[test]
#[allow(deprecated)]
fn multiple_values_are_joined_with_commas() {
    let exact = hm(
        "x-md",
        HeaderMatchSpecifier::ExactMatch("a,b".into()),
        false,
    );
    check(
        &exact,
        &[
            (&[("x-md", "a"), ("x-md", "b")], true),
            (&[("x-md", "a")], false),
            (&[("x-md", "a,b")], true),
        ],
    );
    // Header names are matched lower-case (gRPC metadata keys are).
    let upper = hm("X-MD", HeaderMatchSpecifier::ExactMatch("v".into()), false);
    check(&upper, &[(&[("x-md", "v")], true)]);
}

fn vh_with(routes: Vec<proto::Route>) -> Arc<VirtualHost> {
    route::validate(&route_config_with("rc", vec![vhost("vh", &["*"], routes)]))
        .unwrap()
        .virtual_hosts[0]
        .clone()
}

fn path_route(spec: PathSpecifier, case_sensitive: Option<bool>, cluster: &str) -> proto::Route {
    let mut r = route_prefix("", cluster);
    let m = r.r#match.as_mut().unwrap();
    m.path_specifier = Some(spec);
    m.case_sensitive =
        case_sensitive.map(|value| envoy_types::pb::google::protobuf::BoolValue { value });
    r
}

fn cluster_for(vh: &VirtualHost, path: &str, h: &HeaderMap) -> Option<String> {
    let r = select_route(vh, path, h, || 0)?;
    match &r.action {
        RouteAction::Forward(f) => Some(pick_cluster(&f.clusters, 0).to_owned()),
        RouteAction::NonForwarding => Some("<non-forwarding>".to_owned()),
    }
}

#[test]
fn path_matching_prefix_exact_regex_and_case() {
    let vh = vh_with(vec![
        path_route(
            PathSpecifier::Path("/grpc.testing.TestService/EmptyCall".into()),
            None,
            "exact",
        ),
        path_route(
            PathSpecifier::Prefix("/grpc.testing.TestService/Unary".into()),
            None,
            "prefix",
        ),
        path_route(
            PathSpecifier::SafeRegex(RegexMatcher {
                regex: r"^\/.*\/StreamingCall$".into(),
                engine_type: None,
            }),
            None,
            "regex",
        ),
        path_route(
            PathSpecifier::Path("/gRpC.tEsTinG.tEstseRvice/empTycaLl2".into()),
            Some(false),
            "nocase",
        ),
    ]);
    let h = HeaderMap::new();
    let c = |p: &str| cluster_for(&vh, p, &h);
    assert_eq!(
        c("/grpc.testing.TestService/EmptyCall").as_deref(),
        Some("exact")
    );
    assert_eq!(c("/grpc.testing.TestService/EmptyCallX"), None);
    assert_eq!(
        c("/grpc.testing.testservice/EmptyCall"),
        None,
        "case-sensitive by default"
    );
    assert_eq!(
        c("/grpc.testing.TestService/UnaryCall").as_deref(),
        Some("prefix")
    );
    assert_eq!(c("/grpc.testing.TestService/Unar"), None, "prefix boundary");
    assert_eq!(
        c("/grpc.testing.TestService/StreamingCall").as_deref(),
        Some("regex")
    );
    assert_eq!(
        c("x/grpc.testing.TestService/StreamingCallx"),
        None,
        "regex is a full match"
    );
    assert_eq!(
        c("/grpc.testing.TestService/EmptyCall2").as_deref(),
        Some("nocase")
    );
}

#[test]
fn first_match_wins_in_configured_order() {
    let vh = vh_with(vec![
        route_prefix("/pkg.Svc/", "broad"),
        path_route(PathSpecifier::Path("/pkg.Svc/Exact".into()), None, "exact"),
    ]);
    assert_eq!(
        cluster_for(&vh, "/pkg.Svc/Exact", &HeaderMap::new()).as_deref(),
        Some("broad")
    );
    assert_eq!(cluster_for(&vh, "/other/Method", &HeaderMap::new()), None);
    let empty_prefix = vh_with(vec![route_prefix("", "all")]);
    assert_eq!(
        cluster_for(&empty_prefix, "/a/b", &HeaderMap::new()).as_deref(),
        Some("all")
    );
}

#[test]
fn non_forwarding_route_is_selected_so_the_call_fails() {
    let mut nf = route_prefix("", "x");
    nf.action = Some(proto::route::Action::NonForwardingAction(Default::default()));
    let vh = vh_with(vec![nf, route_prefix("", "later")]);
    assert_eq!(
        cluster_for(&vh, "/a/b", &HeaderMap::new()).as_deref(),
        Some("<non-forwarding>")
    );
}

#[test]
fn runtime_fraction_uses_the_injected_random_number() {
    assert!(fraction_matches(250_000, 249_999));
    assert!(!fraction_matches(250_000, 250_000));
    assert!(fraction_matches(250_000, 1_000_000 + 5), "modulo 1e6");
    assert!(!fraction_matches(0, 0));
    assert!(fraction_matches(1_000_000, 999_999));

    let mut r = route_prefix("", "sampled");
    r.r#match.as_mut().unwrap().runtime_fraction = Some(
        envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent {
            default_value: Some(envoy_types::pb::envoy::r#type::v3::FractionalPercent {
                numerator: 25,
                denominator: 0,
            }),
            runtime_key: String::new(),
        },
    );
    let vh = vh_with(vec![r, route_prefix("", "rest")]);
    let h = HeaderMap::new();
    let name = |rand: u64| select_route(&vh, "/a/b", &h, || rand).map(|r| r.index);
    assert_eq!(name(249_999), Some(0));
    assert_eq!(name(250_000), Some(1));
    // The random source is only drawn for routes with a fraction.
    let mut draws = 0;
    let plain = vh_with(vec![route_prefix("", "x")]);
    select_route(&plain, "/a/b", &h, || {
        draws += 1;
        0
    });
    assert_eq!(draws, 0);
}

#[test]
fn call_timeout_follows_the_a31_table() {
    use std::time::Duration;
    let s = Duration::from_secs;
    let action = |header_max: Option<u64>, msd: Option<u64>| route::ForwardAction {
        clusters: ClusterChoice::Single("c".into()),
        max_stream_duration: msd.map(s),
        grpc_timeout_header_max: header_max.map(s),
    };
    // (app deadline, grpc_timeout_header_max, max_stream_duration) -> effective
    let table = [
        (None, None, None, None),
        (None, None, Some(0), None),
        (None, None, Some(10), Some(10)),
        (None, Some(0), Some(10), None),
        (None, Some(10), Some(30), Some(10)),
        (Some(20), None, None, Some(20)),
        (Some(20), None, Some(0), Some(20)),
        (Some(20), None, Some(10), Some(10)),
        (Some(20), Some(0), Some(10), Some(20)),
        (Some(20), Some(10), None, Some(10)),
    ];
    for (app, header_max, msd, want) in table {
        assert_eq!(
            call_timeout(&action(header_max, msd), None, app.map(s)),
            want.map(s),
            "app {app:?} header_max {header_max:?} msd {msd:?}"
        );
    }
    // The listener's max_stream_duration applies when the route sets neither.
    assert_eq!(
        call_timeout(&action(None, None), Some(s(5)), Some(s(20))),
        Some(s(5))
    );
    assert_eq!(
        call_timeout(&action(None, Some(7)), Some(s(5)), None),
        Some(s(7))
    );
}

#[test]
fn range_allows_surrounding_whitespace_like_simple_atoi() {
    let range = hm(
        "x-n",
        HeaderMatchSpecifier::RangeMatch(Int64Range {
            start: 100,
            end: 200,
        }),
        false,
    );
    check(&range, &[(&[("x-n", "+150")], true)]);
    let mut h = HeaderMap::new();
    h.insert("x-n", HeaderValue::from_static("150 "));
    assert!(header_matches(&range, &h));
}

#[test]
fn weighted_pick_uses_cumulative_weights() {
    let vh = vh_with(vec![route_weighted(&[("a", 20), ("zero", 0), ("b", 80)])]);
    let RouteAction::Forward(f) = &vh.routes[0].action else {
        panic!()
    };
    let ClusterChoice::Weighted { total, .. } = &f.clusters else {
        panic!()
    };
    assert_eq!(*total, 100);
    assert_eq!(pick_cluster(&f.clusters, 0), "a");
    assert_eq!(pick_cluster(&f.clusters, 19), "a");
    assert_eq!(pick_cluster(&f.clusters, 20), "b");
    assert_eq!(pick_cluster(&f.clusters, 99), "b");
    assert_eq!(pick_cluster(&f.clusters, 100), "a", "modulo total");
    let counts = (0..100u64).fold([0; 2], |mut acc, r| {
        acc[usize::from(pick_cluster(&f.clusters, r) == "b")] += 1;
        acc
    });
    assert_eq!(counts, [20, 80]);
}
