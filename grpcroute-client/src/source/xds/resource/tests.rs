//! Validation tests: every accepted shape, and every rejection with its field path.

use std::time::Duration;

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                CircuitBreakers, Cluster as ClusterProto, LoadBalancingPolicy, OutlierDetection,
                circuit_breakers::Thresholds,
                cluster::{
                    ClusterDiscoveryType, DiscoveryType, LbConfig, LbPolicy, LeastRequestLbConfig,
                },
                load_balancing_policy::Policy,
            },
            core::v3::{
                ApiConfigSource, ConfigSource, HealthStatus, RoutingPriority,
                RuntimeFractionalPercent, TransportSocket, TypedExtensionConfig,
                config_source::ConfigSourceSpecifier,
            },
            endpoint::v3::{
                ClusterLoadAssignment,
                cluster_load_assignment::{Policy as ClaPolicy, policy::DropOverload as DropProto},
            },
            listener::v3::Listener as ListenerProto,
            route::v3::{
                ClusterSpecifierPlugin, HeaderMatcher as HeaderProto, NonForwardingAction,
                QueryParameterMatcher, RouteConfiguration,
                header_matcher::HeaderMatchSpecifier,
                route::Action,
                route_action::{ClusterSpecifier, MaxStreamDuration},
                route_match::PathSpecifier,
            },
        },
        extensions::{
            filters::network::http_connection_manager::v3::{
                HttpFilter, Rds, http_connection_manager::RouteSpecifier, http_filter::ConfigType,
            },
            load_balancing_policies::{
                least_request::v3::LeastRequest, ring_hash::v3::RingHash,
                round_robin::v3::RoundRobin, wrr_locality::v3::WrrLocality,
            },
        },
        r#type::{
            matcher::v3::{RegexMatcher, StringMatcher, string_matcher::MatchPattern},
            v3::{FractionalPercent, Int64Range, fractional_percent::DenominatorType},
        },
    },
    google::protobuf::{BoolValue, Duration as DurationProto, UInt32Value},
};

use super::super::testutil::*;
use super::{
    cluster::{self, ClusterKind, LbPolicyConfig},
    endpoint::{self, EndpointHealth},
    listener::{self, ListenerKind, RouteSource},
    route::{
        self, ClusterChoice, DomainPattern, HeaderMatch, PathMatcher, RouteAction, StringMatch,
    },
    *,
};

fn errors<T: std::fmt::Debug>(r: Result<T, ValidationErrors>) -> String {
    r.unwrap_err().to_string()
}

// ---------- decode ----------

#[test]
fn decode_dispatches_by_type_and_unwraps_resource_wrapper() {
    let l = listener_rds("svc", "rc");
    let d = decode(ResourceType::Listener, &any(&l)).unwrap();
    assert_eq!(d.name, "svc");
    assert!(matches!(d.result, Ok(Resource::Listener(_))));

    let wrapped = envoy_types::pb::envoy::service::discovery::v3::Resource {
        name: "svc".into(),
        resource: Some(any(&l)),
        ..Default::default()
    };
    let d = decode(ResourceType::Listener, &any(&wrapped)).unwrap();
    assert_eq!(d.name, "svc");
    assert!(d.result.is_ok());

    let wrong = decode(ResourceType::Cluster, &any(&l)).unwrap_err();
    assert!(matches!(wrong, DecodeError::WrongType { .. }), "{wrong}");
    let garbage = envoy_types::pb::google::protobuf::Any {
        type_url: ResourceType::Cluster.type_url(),
        value: vec![0xff, 0xff, 0xff],
    };
    assert!(matches!(
        decode(ResourceType::Cluster, &garbage),
        Err(DecodeError::Protobuf { .. })
    ));
}

// ---------- Listener ----------

fn hcm_of(l: &Listener) -> &listener::HttpConnectionManagerConfig {
    match &l.kind {
        ListenerKind::Api(h) => h,
        ListenerKind::Socket => panic!("socket listener"),
    }
}

#[test]
fn listener_rds_and_inline() {
    let l = listener::validate(&listener_rds("svc", "rc")).unwrap();
    assert_eq!(hcm_of(&l).routes, RouteSource::Rds("rc".into()));
    assert_eq!(hcm_of(&l).http_filters.len(), 1);
    let l = listener::validate(&listener_inline("svc", route_config("inline", "c1"))).unwrap();
    let RouteSource::Inline(rc) = &hcm_of(&l).routes else {
        panic!()
    };
    assert_eq!(rc.name, "inline");
}

#[test]
fn listener_max_stream_duration_from_hcm() {
    let mut h = hcm(RouteSpecifier::Rds(Rds {
        config_source: Some(ads()),
        route_config_name: "rc".into(),
    }));
    h.common_http_protocol_options = Some(
        envoy_types::pb::envoy::config::core::v3::HttpProtocolOptions {
            max_stream_duration: Some(DurationProto {
                seconds: 3,
                nanos: 0,
            }),
            ..Default::default()
        },
    );
    let l = listener::validate(&listener_with("svc", &h)).unwrap();
    assert_eq!(hcm_of(&l).max_stream_duration, Some(Duration::from_secs(3)));
}

fn with_filters(filters: Vec<HttpFilter>) -> Result<Listener, ValidationErrors> {
    let mut h = hcm(RouteSpecifier::Rds(Rds {
        config_source: Some(ads()),
        route_config_name: "rc".into(),
    }));
    h.http_filters = filters;
    listener::validate(&listener_with("svc", &h))
}

fn filter(name: &str, type_url: &str, optional: bool) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        is_optional: optional,
        config_type: Some(ConfigType::TypedConfig(
            envoy_types::pb::google::protobuf::Any {
                type_url: type_url.into(),
                value: vec![],
            },
        )),
        ..HttpFilter::default()
    }
}

const FAULT: &str = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";

#[test]
fn http_filter_rules() {
    let e = errors(with_filters(vec![]));
    assert!(
        e.contains("api_listener.api_listener.http_filters: expected at least one HTTP filter"),
        "{e}"
    );

    let e = errors(with_filters(vec![
        filter("fault", FAULT, false),
        router_filter(),
    ]));
    assert!(e.contains("http_filters[0].typed_config: unsupported filter type type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"), "{e}");

    // Optional unknown filters are ignored.
    let l = with_filters(vec![filter("fault", FAULT, true), router_filter()]).unwrap();
    assert_eq!(hcm_of(&l).http_filters.len(), 1);

    // Optional unknown filters are dropped before the position check (C-core).
    let l = with_filters(vec![router_filter(), filter("fault", FAULT, true)]).unwrap();
    assert_eq!(hcm_of(&l).http_filters.len(), 1);
    let mut second = router_filter();
    second.name = "router2".into();
    let e = errors(with_filters(vec![router_filter(), second]));
    assert!(e.contains("http_filters: terminal filter for config type envoy.extensions.filters.http.router.v3.Router must be the last filter"), "{e}");

    let e = errors(with_filters(vec![filter("fault", FAULT, true)]));
    assert!(e.contains("expected at least one HTTP filter"), "{e}");

    let mut dup = router_filter();
    dup.name = "x".into();
    let e = errors(with_filters(vec![filter("x", FAULT, true), dup]));
    assert!(e.contains("duplicate HTTP filter name: x"), "{e}");
}

#[derive(Clone, PartialEq, prost::Message)]
struct TypedStructProto {
    #[prost(string, tag = "1")]
    type_url: String,
}

#[test]
fn typed_struct_is_unwrapped_by_inner_type() {
    use prost::Message as _;
    let ts = TypedStructProto {
        type_url: "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router".into(),
    };
    let mut f = router_filter();
    f.config_type = Some(ConfigType::TypedConfig(
        envoy_types::pb::google::protobuf::Any {
            type_url: "type.googleapis.com/xds.type.v3.TypedStruct".into(),
            value: ts.encode_to_vec(),
        },
    ));
    let l = with_filters(vec![f]).unwrap();
    assert_eq!(
        hcm_of(&l).http_filters[0].type_url,
        "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
    );
}

#[test]
fn hcm_must_not_trust_forwarded_headers() {
    let mut h = hcm(RouteSpecifier::Rds(Rds {
        config_source: Some(ads()),
        route_config_name: "rc".into(),
    }));
    h.xff_num_trusted_hops = 1;
    let e = errors(listener::validate(&listener_with("svc", &h)));
    assert_eq!(
        e,
        "[api_listener.api_listener.xff_num_trusted_hops: must be zero]"
    );
}

#[test]
fn listener_shapes() {
    let mut h = hcm(RouteSpecifier::Rds(Rds {
        config_source: Some(ConfigSource {
            config_source_specifier: Some(ConfigSourceSpecifier::ApiConfigSource(
                ApiConfigSource::default(),
            )),
            ..Default::default()
        }),
        route_config_name: "rc".into(),
    }));
    let e = errors(listener::validate(&listener_with("svc", &h)));
    assert!(
        e.contains("api_listener.api_listener.rds.config_source: ConfigSource is not ADS or self"),
        "{e}"
    );
    h.route_specifier = None;
    let e = errors(listener::validate(&listener_with("svc", &h)));
    assert!(e.contains("neither rds nor route_config"), "{e}");

    let socket = ListenerProto {
        name: "srv".into(),
        address: Some(socket("0.0.0.0", 8080)),
        ..ListenerProto::default()
    };
    assert_eq!(
        listener::validate(&socket).unwrap().kind,
        ListenerKind::Socket
    );
    let e = errors(listener::validate(&ListenerProto {
        name: "x".into(),
        ..ListenerProto::default()
    }));
    assert!(e.contains("exactly one of api_listener or address"), "{e}");
}

#[test]
fn inline_route_config_errors_carry_the_path() {
    let mut rc = route_config("inline", "c");
    rc.virtual_hosts[0].domains = vec!["a*b".into()];
    let e = errors(listener::validate(&listener_inline("svc", rc)));
    assert!(
        e.contains("api_listener.api_listener.route_config.virtual_hosts[0].domains[0]: invalid domain pattern \"a*b\""),
        "{e}"
    );
}

// ---------- RouteConfiguration ----------

fn rc_with_routes(
    routes: Vec<envoy_types::pb::envoy::config::route::v3::Route>,
) -> RouteConfiguration {
    route_config_with("rc", vec![vhost("vh", &["*"], routes)])
}

fn only_vh(rc: &RouteConfiguration) -> Arc<route::VirtualHost> {
    let v = route::validate(rc).unwrap();
    Arc::clone(&v.virtual_hosts[0])
}

#[test]
fn domain_patterns() {
    assert_eq!(
        DomainPattern::parse("Foo.COM"),
        Some(DomainPattern::Exact("foo.com".into()))
    );
    assert_eq!(
        DomainPattern::parse("*.foo.com"),
        Some(DomainPattern::Suffix(".foo.com".into()))
    );
    assert_eq!(
        DomainPattern::parse("foo.*"),
        Some(DomainPattern::Prefix("foo.".into()))
    );
    assert_eq!(DomainPattern::parse("*"), Some(DomainPattern::Universal));
    for bad in ["", "a*b", "*a*", "**"] {
        assert_eq!(DomainPattern::parse(bad), None, "{bad}");
    }
    let mut rc = rc_with_routes(vec![]);
    rc.virtual_hosts[0].domains.clear();
    let e = errors(route::validate(&rc));
    assert_eq!(e, "[virtual_hosts[0].domains: must be non-empty]");
}

#[test]
fn regex_errors_name_the_route_and_field() {
    let mut bad = route_prefix("", "c");
    bad.r#match.as_mut().unwrap().path_specifier = Some(PathSpecifier::SafeRegex(RegexMatcher {
        regex: "(unclosed".into(),
        engine_type: None,
    }));
    let rc = rc_with_routes(vec![route_prefix("/a", "c"), route_prefix("/b", "c"), bad]);
    let e = errors(route::validate(&rc));
    assert!(
        e.starts_with("[virtual_hosts[0].routes[2].match.safe_regex: invalid regex: "),
        "{e}"
    );
}

#[test]
fn every_error_of_a_resource_is_reported() {
    let mut no_path = route_prefix("", "c");
    no_path.r#match.as_mut().unwrap().path_specifier = None;
    let mut empty_cluster = route_prefix("", "");
    empty_cluster.name = "x".into();
    let rc = rc_with_routes(vec![no_path, empty_cluster]);
    let e = route::validate(&rc).unwrap_err();
    let fields: Vec<_> = e.0.iter().map(|f| f.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "virtual_hosts[0].routes[0].match.path_specifier",
            "virtual_hosts[0].routes[1].route.cluster"
        ]
    );
}

#[test]
fn path_matchers_and_case_sensitivity() {
    let mut r = route_prefix("/Pkg.Svc/", "c");
    r.r#match.as_mut().unwrap().case_sensitive = Some(BoolValue { value: false });
    let mut exact = route_prefix("", "c");
    exact.r#match.as_mut().unwrap().path_specifier = Some(PathSpecifier::Path("/a.B/C".into()));
    let vh = only_vh(&rc_with_routes(vec![r, exact]));
    assert_eq!(
        vh.routes[0].matcher.path,
        PathMatcher::Prefix {
            prefix: "/pkg.svc/".into(),
            ignore_case: true
        }
    );
    assert_eq!(
        vh.routes[1].matcher.path,
        PathMatcher::Exact {
            path: "/a.B/C".into(),
            ignore_case: false
        }
    );
}

#[test]
fn query_parameters_skip_the_route_but_keep_indexes() {
    let mut q = route_prefix("", "a");
    q.r#match.as_mut().unwrap().query_parameters = vec![QueryParameterMatcher::default()];
    let vh = only_vh(&rc_with_routes(vec![q, route_prefix("", "b")]));
    assert_eq!(vh.routes.len(), 1);
    assert_eq!(vh.routes[0].index, 1);
}

#[test]
fn cluster_specifiers() {
    let mut header = route_prefix("", "a");
    let Some(Action::Route(a)) = &mut header.action else {
        panic!()
    };
    a.cluster_specifier = Some(ClusterSpecifier::ClusterHeader("x-cluster".into()));
    let mut nf = route_prefix("", "a");
    nf.action = Some(Action::NonForwardingAction(NonForwardingAction::default()));
    let vh = only_vh(&rc_with_routes(vec![
        header,
        nf,
        route_weighted(&[("a", 0), ("b", 3), ("c", 1)]),
    ]));
    // cluster_header: skipped; non-forwarding: kept.
    assert_eq!(vh.routes.len(), 2);
    assert_eq!(vh.routes[0].action, RouteAction::NonForwarding);
    let RouteAction::Forward(f) = &vh.routes[1].action else {
        panic!()
    };
    let ClusterChoice::Weighted { clusters, total } = &f.clusters else {
        panic!()
    };
    assert_eq!(*total, 4);
    assert_eq!(
        clusters.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["b", "c"]
    );

    let e = errors(route::validate(&rc_with_routes(vec![route_weighted(&[
        ("a", 0),
        ("b", 0),
    ])])));
    assert_eq!(
        e,
        "[virtual_hosts[0].routes[0].route.weighted_clusters: no valid clusters specified (the sum of weights is 0)]"
    );
    let e = errors(route::validate(&rc_with_routes(vec![route_weighted(&[
        ("a", u32::MAX),
        ("b", 1),
    ])])));
    assert!(e.contains("exceeds uint32 max"), "{e}");
}

#[test]
fn routes_that_cannot_match_a_grpc_path_or_have_no_cluster_specifier_are_skipped() {
    let mut no_spec = route_prefix("", "a");
    let Some(Action::Route(a)) = &mut no_spec.action else {
        panic!()
    };
    a.cluster_specifier = None;
    let path = |p: &str| path_route_proto(PathSpecifier::Path(p.into()));
    let prefix = |p: &str| path_route_proto(PathSpecifier::Prefix(p.into()));
    let routes = vec![
        no_spec,            // 0: skipped
        prefix("no-slash"), // 1: skipped
        prefix("/a/b/"),    // 2: skipped (more than two slashes)
        prefix("//a"),      // 3: skipped
        path("/svc"),       // 4: skipped
        path("/svc/"),      // 5: skipped
        path("//m"),        // 6: skipped
        prefix("/svc/Met"), // 7
        prefix("/"),        // 8
        path("/svc/M"),     // 9
        prefix("/svc"),     // 10
    ];
    let vh = only_vh(&rc_with_routes(routes));
    assert_eq!(
        vh.routes.iter().map(|r| r.index).collect::<Vec<_>>(),
        [7, 8, 9, 10]
    );
}

fn path_route_proto(spec: PathSpecifier) -> envoy_types::pb::envoy::config::route::v3::Route {
    let mut r = route_prefix("", "c");
    r.r#match.as_mut().unwrap().path_specifier = Some(spec);
    r
}

#[test]
fn weighted_cluster_without_weight_is_invalid() {
    let mut r = route_weighted(&[("a", 1)]);
    let Some(Action::Route(a)) = &mut r.action else {
        panic!()
    };
    let Some(ClusterSpecifier::WeightedClusters(w)) = &mut a.cluster_specifier else {
        panic!()
    };
    w.clusters[0].weight = None;
    assert_eq!(
        errors(route::validate(&rc_with_routes(vec![r]))),
        "[virtual_hosts[0].routes[0].route.weighted_clusters.clusters[0].weight: field not present]"
    );
}

#[test]
fn typed_per_filter_config_overrides_need_a_supported_filter_unless_optional() {
    use envoy_types::pb::envoy::config::route::v3::FilterConfig;
    let fault = envoy_types::pb::google::protobuf::Any {
        type_url: FAULT.into(),
        value: vec![],
    };
    let mut r = route_prefix("", "c");
    r.typed_per_filter_config
        .insert("envoy.fault".into(), fault.clone());
    let e = errors(route::validate(&rc_with_routes(vec![r.clone()])));
    assert_eq!(
        e,
        format!(
            "[virtual_hosts[0].routes[0].typed_per_filter_config[envoy.fault]: unsupported filter type {FAULT}]"
        )
    );
    r.typed_per_filter_config.insert(
        "envoy.fault".into(),
        any(&FilterConfig {
            config: Some(fault),
            is_optional: true,
            disabled: false,
        }),
    );
    assert!(route::validate(&rc_with_routes(vec![r])).is_ok());
}

#[test]
fn cluster_specifier_plugins() {
    let mut r = route_prefix("", "a");
    let Some(Action::Route(a)) = &mut r.action else {
        panic!()
    };
    a.cluster_specifier = Some(ClusterSpecifier::ClusterSpecifierPlugin("rls".into()));
    let mut rc = rc_with_routes(vec![r, route_prefix("", "b")]);
    let e = errors(route::validate(&rc));
    assert!(
        e.contains("unknown cluster specifier plugin name \"rls\""),
        "{e}"
    );
    rc.cluster_specifier_plugins = vec![ClusterSpecifierPlugin {
        extension: Some(TypedExtensionConfig {
            name: "rls".into(),
            typed_config: None,
        }),
        is_optional: true,
    }];
    assert_eq!(only_vh(&rc).routes.len(), 1);
    rc.cluster_specifier_plugins[0].is_optional = false;
    assert!(errors(route::validate(&rc)).contains("is not supported"));
}

#[test]
fn header_matchers_validate_and_normalize() {
    #[allow(deprecated)]
    let headers = vec![
        HeaderProto {
            name: "X-Exact".into(),
            header_match_specifier: Some(HeaderMatchSpecifier::ExactMatch("V".into())),
            ..Default::default()
        },
        HeaderProto {
            name: "x-sm".into(),
            invert_match: true,
            header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
                ignore_case: true,
                match_pattern: Some(MatchPattern::Prefix("AbC".into())),
            })),
            ..Default::default()
        },
        HeaderProto {
            name: "x-range".into(),
            header_match_specifier: Some(HeaderMatchSpecifier::RangeMatch(Int64Range {
                start: 10,
                end: 20,
            })),
            ..Default::default()
        },
    ];
    let mut r = route_prefix("", "c");
    r.r#match.as_mut().unwrap().headers = headers;
    let vh = only_vh(&rc_with_routes(vec![r]));
    let h = &vh.routes[0].matcher.headers;
    assert_eq!(h[0].name, "x-exact");
    assert_eq!(
        h[0].kind,
        HeaderMatch::String(StringMatch::Exact {
            value: "V".into(),
            ignore_case: false
        })
    );
    assert!(h[1].invert);
    assert_eq!(
        h[1].kind,
        HeaderMatch::String(StringMatch::Prefix {
            value: "abc".into(),
            ignore_case: true
        })
    );
    assert_eq!(h[2].kind, HeaderMatch::Range { start: 10, end: 20 });

    let mut bad = route_prefix("", "c");
    bad.r#match.as_mut().unwrap().headers = vec![HeaderProto {
        name: "x".into(),
        header_match_specifier: Some(HeaderMatchSpecifier::RangeMatch(Int64Range {
            start: 5,
            end: 1,
        })),
        ..Default::default()
    }];
    let e = errors(route::validate(&rc_with_routes(vec![bad])));
    assert_eq!(
        e,
        "[virtual_hosts[0].routes[0].match.headers[0].range_match: start must not be greater than end]"
    );
}

#[test]
fn string_match_regex_with_ignore_case_is_rejected_as_c_core_does() {
    let matcher = |ignore_case| {
        let mut r = route_prefix("", "c");
        r.r#match.as_mut().unwrap().headers = vec![HeaderProto {
            name: "x".into(),
            header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
                ignore_case,
                match_pattern: Some(MatchPattern::SafeRegex(RegexMatcher {
                    regex: "[a-z]+".into(),
                    ..Default::default()
                })),
            })),
            ..Default::default()
        }];
        rc_with_routes(vec![r])
    };
    assert_eq!(
        errors(route::validate(&matcher(true))),
        "[virtual_hosts[0].routes[0].match.headers[0].string_match.ignore_case: not supported for regex matcher]"
    );
    let vh = only_vh(&matcher(false));
    assert!(matches!(
        vh.routes[0].matcher.headers[0].kind,
        HeaderMatch::String(StringMatch::Regex(_))
    ));
}

#[test]
fn runtime_fraction_is_normalized_to_per_million() {
    let cases = [
        (DenominatorType::Hundred, 25, 250_000),
        (DenominatorType::TenThousand, 25, 2_500),
        (DenominatorType::Million, 25, 25),
        (DenominatorType::Hundred, 1000, 1_000_000),
    ];
    for (denominator, numerator, want) in cases {
        let mut r = route_prefix("", "c");
        r.r#match.as_mut().unwrap().runtime_fraction = Some(RuntimeFractionalPercent {
            default_value: Some(FractionalPercent {
                numerator,
                denominator: denominator as i32,
            }),
            runtime_key: "k".into(),
        });
        let vh = only_vh(&rc_with_routes(vec![r]));
        assert_eq!(vh.routes[0].matcher.fraction_per_million, Some(want));
    }
}

#[test]
fn max_stream_duration_and_timeout_header_max() {
    let mut r = route_prefix("", "c");
    let Some(Action::Route(a)) = &mut r.action else {
        panic!()
    };
    a.max_stream_duration = Some(MaxStreamDuration {
        max_stream_duration: Some(DurationProto {
            seconds: 3,
            nanos: 500_000_000,
        }),
        grpc_timeout_header_max: Some(DurationProto {
            seconds: 0,
            nanos: 0,
        }),
        grpc_timeout_header_offset: None,
    });
    let vh = only_vh(&rc_with_routes(vec![r.clone()]));
    let RouteAction::Forward(f) = &vh.routes[0].action else {
        panic!()
    };
    assert_eq!(f.max_stream_duration, Some(Duration::from_millis(3500)));
    assert_eq!(f.grpc_timeout_header_max, Some(Duration::ZERO));

    let Some(Action::Route(a)) = &mut r.action else {
        panic!()
    };
    a.max_stream_duration.as_mut().unwrap().max_stream_duration = Some(DurationProto {
        seconds: -1,
        nanos: 0,
    });
    let e = errors(route::validate(&rc_with_routes(vec![r])));
    assert_eq!(
        e,
        "[virtual_hosts[0].routes[0].route.max_stream_duration.max_stream_duration: duration must be non-negative]"
    );
}

// ---------- Cluster ----------

#[test]
fn eds_cluster_and_service_name() {
    let c = cluster::validate(&cluster_eds("c1")).unwrap();
    assert_eq!(
        c.kind,
        ClusterKind::Eds {
            eds_service_name: "c1".into()
        }
    );
    assert_eq!(c.lb_policy, LbPolicyConfig::RoundRobin);
    assert_eq!(c.max_requests, 1024);
    let mut p = cluster_eds("c1");
    p.eds_cluster_config.as_mut().unwrap().service_name = "svc-eds".into();
    assert_eq!(
        cluster::validate(&p).unwrap().kind,
        ClusterKind::Eds {
            eds_service_name: "svc-eds".into()
        }
    );
    p.eds_cluster_config.as_mut().unwrap().eds_config = Some(ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::ApiConfigSource(
            ApiConfigSource::default(),
        )),
        ..Default::default()
    });
    assert_eq!(
        errors(cluster::validate(&p)),
        "[eds_cluster_config.eds_config: ConfigSource is not ADS or self]"
    );
}

#[test]
fn aggregate_and_logical_dns_and_unsupported_types() {
    let c = cluster::validate(&cluster_aggregate("agg", &["a", "b"])).unwrap();
    assert_eq!(
        c.kind,
        ClusterKind::Aggregate {
            clusters: vec!["a".into(), "b".into()]
        }
    );
    assert!(
        errors(cluster::validate(&cluster_aggregate("agg", &[])))
            .contains("typed_config.clusters: must be non-empty")
    );

    let mut dns = ClusterProto {
        name: "dns".into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::LogicalDns as i32)),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: "dns".into(),
            endpoints: vec![locality(
                "z",
                0,
                None,
                vec![lb_endpoint("example.com", 443, HealthStatus::Unknown)],
            )],
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        cluster::validate(&dns).unwrap().kind,
        ClusterKind::LogicalDns {
            host: "example.com".into(),
            port: 443
        }
    );
    dns.load_assignment.as_mut().unwrap().endpoints[0]
        .lb_endpoints
        .push(lb_endpoint("other.com", 1, HealthStatus::Unknown));
    assert!(errors(cluster::validate(&dns)).contains("must contain exactly one endpoint"));

    let mut stat = cluster_eds("s");
    stat.cluster_discovery_type = Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32));
    assert_eq!(
        errors(cluster::validate(&stat)),
        "[type: unsupported cluster discovery type STATIC]"
    );
}

#[test]
fn lb_policy_field() {
    let mut c = cluster_eds("c");
    c.lb_policy = LbPolicy::RingHash as i32;
    assert_eq!(
        errors(cluster::validate(&c)),
        "[lb_policy: RING_HASH is not supported by this client]"
    );
    c.lb_policy = LbPolicy::Maglev as i32;
    assert!(errors(cluster::validate(&c)).contains("LB policy MAGLEV is not supported"));
    c.lb_policy = LbPolicy::LeastRequest as i32;
    assert_eq!(
        cluster::validate(&c).unwrap().lb_policy,
        LbPolicyConfig::LeastRequest { choice_count: 2 }
    );
    for (given, want) in [(1, 2), (5, 5), (50, 10)] {
        c.lb_config = Some(LbConfig::LeastRequestLbConfig(LeastRequestLbConfig {
            choice_count: Some(UInt32Value { value: given }),
            ..Default::default()
        }));
        assert_eq!(
            cluster::validate(&c).unwrap().lb_policy,
            LbPolicyConfig::LeastRequest { choice_count: want }
        );
    }
}

fn policy_of<M: prost::Message + prost::Name>(m: &M) -> Policy {
    Policy {
        typed_extension_config: Some(TypedExtensionConfig {
            name: "p".into(),
            typed_config: Some(any(m)),
        }),
    }
}

#[test]
fn load_balancing_policy_takes_precedence_and_picks_first_supported() {
    let mut c = cluster_eds("c");
    c.lb_policy = LbPolicy::RingHash as i32; // ignored: load_balancing_policy wins (A52)
    c.load_balancing_policy = Some(LoadBalancingPolicy {
        policies: vec![
            policy_of(&RingHash::default()),
            policy_of(&RoundRobin::default()),
        ],
    });
    assert_eq!(
        cluster::validate(&c).unwrap().lb_policy,
        LbPolicyConfig::RoundRobin
    );

    c.load_balancing_policy = Some(LoadBalancingPolicy {
        policies: vec![policy_of(&WrrLocality {
            endpoint_picking_policy: Some(LoadBalancingPolicy {
                policies: vec![policy_of(&LeastRequest {
                    choice_count: Some(UInt32Value { value: 3 }),
                    ..Default::default()
                })],
            }),
        })],
    });
    assert_eq!(
        cluster::validate(&c).unwrap().lb_policy,
        LbPolicyConfig::LeastRequest { choice_count: 3 }
    );

    c.load_balancing_policy = Some(LoadBalancingPolicy {
        policies: vec![policy_of(&RingHash::default())],
    });
    let e = errors(cluster::validate(&c));
    assert!(
        e.contains("load_balancing_policy: no supported load balancing policy config found"),
        "{e}"
    );
    assert!(e.contains("ring hash is not supported"), "{e}");
}

#[test]
fn circuit_breaker_first_default_threshold() {
    let mut c = cluster_eds("c");
    c.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![
            Thresholds {
                priority: RoutingPriority::High as i32,
                max_requests: Some(UInt32Value { value: 7 }),
                ..Default::default()
            },
            Thresholds {
                priority: RoutingPriority::Default as i32,
                max_requests: Some(UInt32Value { value: 500 }),
                ..Default::default()
            },
            Thresholds {
                priority: RoutingPriority::Default as i32,
                max_requests: Some(UInt32Value { value: 9 }),
                ..Default::default()
            },
        ],
        ..Default::default()
    });
    assert_eq!(cluster::validate(&c).unwrap().max_requests, 500);
    c.circuit_breakers.as_mut().unwrap().thresholds[1].max_requests = None;
    assert_eq!(cluster::validate(&c).unwrap().max_requests, 1024);
}

#[test]
fn outlier_detection_defaults_and_validation() {
    let mut c = cluster_eds("c");
    c.outlier_detection = Some(OutlierDetection::default());
    let od = cluster::validate(&c).unwrap().outlier_detection.unwrap();
    assert_eq!(od.interval, Duration::from_secs(10));
    assert_eq!(od.base_ejection_time, Duration::from_secs(30));
    assert_eq!(od.max_ejection_time, Duration::from_secs(300));
    assert_eq!(od.max_ejection_percent, 10);
    assert!(
        od.success_rate.is_none(),
        "C-core: only when enforcing_success_rate is set"
    );
    c.outlier_detection = Some(OutlierDetection {
        enforcing_success_rate: Some(UInt32Value { value: 100 }),
        ..Default::default()
    });
    let od = cluster::validate(&c).unwrap().outlier_detection.unwrap();
    let sr = od.success_rate.unwrap();
    assert_eq!(
        (
            sr.stdev_factor,
            sr.enforcement_percentage,
            sr.minimum_hosts,
            sr.request_volume
        ),
        (1900, 100, 5, 100)
    );
    assert!(
        od.failure_percentage.is_none(),
        "enforcing_failure_percentage defaults to 0"
    );

    c.outlier_detection = Some(OutlierDetection {
        enforcing_success_rate: Some(UInt32Value { value: 0 }),
        enforcing_failure_percentage: Some(UInt32Value { value: 50 }),
        ..Default::default()
    });
    let od = cluster::validate(&c).unwrap().outlier_detection.unwrap();
    assert!(od.success_rate.is_none());
    let fp = od.failure_percentage.unwrap();
    assert_eq!(
        (
            fp.threshold,
            fp.enforcement_percentage,
            fp.minimum_hosts,
            fp.request_volume
        ),
        (85, 50, 5, 50)
    );

    c.outlier_detection = Some(OutlierDetection {
        max_ejection_percent: Some(UInt32Value { value: 101 }),
        interval: Some(DurationProto {
            seconds: -5,
            nanos: 0,
        }),
        ..Default::default()
    });
    let e = errors(cluster::validate(&c));
    assert_eq!(
        e,
        "[outlier_detection.interval: duration must be non-negative; outlier_detection.max_ejection_percent: value must be <= 100]"
    );
}

#[test]
fn lrs_server_must_be_self() {
    let mut c = cluster_eds("c");
    c.lrs_server = Some(ads());
    assert_eq!(
        errors(cluster::validate(&c)),
        "[lrs_server: ConfigSource is not self]"
    );
    c.lrs_server = Some(ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Self_(Default::default())),
        ..Default::default()
    });
    assert!(cluster::validate(&c).is_ok());
}

mod tls {
    //! CDS `transport_socket` with an `UpstreamTlsContext` (gRFC A29).

    use envoy_types::pb::envoy::{
        config::core::v3::transport_socket::ConfigType as SocketConfig,
        extensions::transport_sockets::tls::v3::{
            CertificateProviderPluginInstance, CertificateValidationContext, CommonTlsContext,
            UpstreamTlsContext,
            common_tls_context::{
                CertificateProviderInstance, CombinedCertificateValidationContext,
                ValidationContextType,
            },
        },
    };
    use prost::{Message, Name};

    use super::*;
    use crate::source::xds::resource::upstream_tls::CertificateProviderNames;

    fn providers() -> CertificateProviderNames {
        CertificateProviderNames(["ca".to_string(), "id".to_string()].into())
    }

    fn instance(name: &str) -> Option<CertificateProviderPluginInstance> {
        Some(CertificateProviderPluginInstance {
            instance_name: name.into(),
            certificate_name: String::new(),
        })
    }

    fn san(pattern: MatchPattern, ignore_case: bool) -> StringMatcher {
        StringMatcher {
            match_pattern: Some(pattern),
            ignore_case,
        }
    }

    #[allow(deprecated)]
    fn context(sans: Vec<StringMatcher>) -> UpstreamTlsContext {
        UpstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                tls_certificate_provider_instance: instance("id"),
                validation_context_type: Some(ValidationContextType::ValidationContext(
                    CertificateValidationContext {
                        ca_certificate_provider_instance: instance("ca"),
                        match_subject_alt_names: sans,
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn with_socket(ctx: &UpstreamTlsContext) -> ClusterProto {
        let mut c = cluster_eds("c");
        c.transport_socket = Some(TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(SocketConfig::TypedConfig(
                envoy_types::pb::google::protobuf::Any {
                    type_url: UpstreamTlsContext::type_url(),
                    value: ctx.encode_to_vec(),
                },
            )),
        });
        c
    }

    fn check(ctx: &UpstreamTlsContext) -> Result<cluster::Cluster, ValidationErrors> {
        cluster::validate_with(&with_socket(ctx), &providers())
    }

    const CTC: &str = "transport_socket.typed_config.common_tls_context";

    #[test]
    fn mutual_tls_with_every_san_matcher_kind() {
        let ctx = context(vec![
            san(MatchPattern::Exact("spiffe://td/ns/a/sa/b".into()), false),
            san(MatchPattern::Prefix("SPIFFE://td/".into()), true),
            san(MatchPattern::Suffix(".example.com".into()), false),
            san(MatchPattern::Contains("/ns/".into()), false),
            san(
                MatchPattern::SafeRegex(RegexMatcher {
                    regex: "spiffe://td/.*".into(),
                    ..Default::default()
                }),
                false,
            ),
        ]);
        let tls = check(&ctx).unwrap().tls.unwrap();
        assert_eq!(tls.ca_instance, "ca");
        assert_eq!(tls.identity_instance.as_deref(), Some("id"));
        assert_eq!(tls.san_matchers.len(), 5);
        assert_eq!(
            tls.san_matchers[1],
            StringMatch::Prefix {
                value: "spiffe://td/".into(),
                ignore_case: true
            }
        );
        assert!(matches!(tls.san_matchers[4], StringMatch::Regex(_)));
    }

    #[test]
    fn tls_without_client_certificate_and_without_matchers() {
        let mut ctx = context(vec![]);
        ctx.common_tls_context
            .as_mut()
            .unwrap()
            .tls_certificate_provider_instance = None;
        let tls = check(&ctx).unwrap().tls.unwrap();
        assert_eq!(tls.identity_instance, None);
        assert!(tls.san_matchers.is_empty());
    }

    #[test]
    #[allow(deprecated)]
    fn combined_context_and_deprecated_instance_fields() {
        // The A29 shape: `combined_validation_context` with the CA instance beside the
        // default context (which carries the matchers), the identity in the old field.
        let ctx = UpstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                tls_certificate_certificate_provider_instance: Some(CertificateProviderInstance {
                    instance_name: "id".into(),
                    certificate_name: String::new(),
                }),
                validation_context_type: Some(ValidationContextType::CombinedValidationContext(
                    CombinedCertificateValidationContext {
                        default_validation_context: Some(CertificateValidationContext {
                            match_subject_alt_names: vec![san(
                                MatchPattern::Exact("x".into()),
                                false,
                            )],
                            ..Default::default()
                        }),
                        validation_context_certificate_provider_instance: Some(
                            CertificateProviderInstance {
                                instance_name: "ca".into(),
                                certificate_name: String::new(),
                            },
                        ),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            ..Default::default()
        };
        let tls = check(&ctx).unwrap().tls.unwrap();
        assert_eq!(
            (tls.ca_instance.as_str(), tls.identity_instance.as_deref()),
            ("ca", Some("id"))
        );
        assert_eq!(tls.san_matchers.len(), 1);
    }

    #[test]
    fn unknown_instances_are_named() {
        let mut ctx = context(vec![]);
        let common = ctx.common_tls_context.as_mut().unwrap();
        common.tls_certificate_provider_instance = instance("nope");
        let e = errors(check(&ctx));
        assert_eq!(
            e,
            format!(
                "[{CTC}.tls_certificate_provider_instance.instance_name: unrecognized certificate provider instance name: \"nope\"]"
            )
        );
        // Without the bootstrap's instances, the same cluster NACKs.
        let e = errors(cluster::validate(&with_socket(&context(vec![]))));
        assert!(
            e.contains("validation_context.ca_certificate_provider_instance.instance_name: unrecognized certificate provider instance name: \"ca\""),
            "{e}"
        );
    }

    #[test]
    fn a_ca_instance_is_required() {
        let mut ctx = context(vec![]);
        ctx.common_tls_context
            .as_mut()
            .unwrap()
            .validation_context_type = None;
        assert_eq!(
            errors(check(&ctx)),
            format!("[{CTC}: no CA certificate provider instance configured]")
        );
        let ctx = UpstreamTlsContext::default();
        assert_eq!(
            errors(check(&ctx)),
            format!("[{CTC}: no CA certificate provider instance configured]")
        );
    }

    #[test]
    fn unsupported_settings_nack_naming_the_field() {
        let mut ctx = context(vec![san(
            MatchPattern::SafeRegex(RegexMatcher {
                regex: "a".into(),
                ..Default::default()
            }),
            true,
        )]);
        ctx.sni = "server.example".into();
        ctx.allow_renegotiation = true;
        let common = ctx.common_tls_context.as_mut().unwrap();
        common.tls_params = Some(Default::default());
        common.tls_certificates = vec![Default::default()];
        if let Some(ValidationContextType::ValidationContext(cvc)) =
            &mut common.validation_context_type
        {
            cvc.verify_certificate_hash = vec!["ab".into()];
            cvc.crl = Some(Default::default());
            cvc.trusted_ca = Some(Default::default());
            cvc.allow_expired_certificate = true;
        }
        let e = errors(check(&ctx));
        for field in [
            "transport_socket.typed_config.sni: setting SNI is not supported",
            "transport_socket.typed_config.allow_renegotiation: TLS renegotiation is not supported",
            &format!("{CTC}.tls_params: unsupported"),
            &format!("{CTC}.tls_certificates: unsupported"),
            &format!(
                "{CTC}.validation_context.match_subject_alt_names[0].ignore_case: not supported for regex matcher"
            ),
            &format!("{CTC}.validation_context.verify_certificate_hash: unsupported"),
            &format!("{CTC}.validation_context.crl: unsupported"),
            &format!("{CTC}.validation_context.trusted_ca: unsupported"),
            &format!("{CTC}.validation_context.allow_expired_certificate: unsupported"),
        ] {
            assert!(e.contains(field), "{field} missing from {e}");
        }
    }

    #[test]
    fn other_transport_sockets_and_missing_config_nack() {
        let mut c = cluster_eds("c");
        c.transport_socket = Some(TransportSocket::default());
        assert_eq!(
            errors(cluster::validate_with(&c, &providers())),
            "[transport_socket.typed_config: field not present]"
        );
        c.transport_socket = Some(TransportSocket {
            name: "raw".into(),
            config_type: Some(SocketConfig::TypedConfig(envoy_types::pb::google::protobuf::Any {
                type_url: "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer".into(),
                value: vec![],
            })),
        });
        assert_eq!(
            errors(cluster::validate_with(&c, &providers())),
            "[transport_socket.typed_config: unsupported transport socket type type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer]"
        );
    }
}

// ---------- ClusterLoadAssignment ----------

#[test]
fn endpoints_priorities_localities_health() {
    let mut p = cla("c", &[("10.0.0.1", 80)]);
    p.endpoints.push(locality(
        "z2",
        1,
        Some(3),
        vec![
            lb_endpoint("::1", 81, HealthStatus::Unknown),
            lb_endpoint("10.0.0.3", 80, HealthStatus::Unhealthy),
            lb_endpoint("10.0.0.4", 80, HealthStatus::Draining),
        ],
    ));
    // Unset weight: the entry is skipped.
    p.endpoints.push(locality(
        "z3",
        0,
        None,
        vec![lb_endpoint("10.0.0.9", 80, HealthStatus::Healthy)],
    ));
    p.policy = Some(ClaPolicy {
        drop_overloads: vec![DropProto {
            category: "lb".into(),
            drop_percentage: Some(FractionalPercent {
                numerator: 5,
                denominator: DenominatorType::Hundred as i32,
            }),
        }],
        overprovisioning_factor: Some(UInt32Value { value: 140 }),
        ..Default::default()
    });
    let e = endpoint::validate(&p).unwrap();
    assert_eq!(e.priorities.len(), 2);
    assert_eq!(e.priorities[0].localities.len(), 1);
    let p1 = &e.priorities[1].localities[0];
    assert_eq!(p1.weight, 3);
    assert_eq!(p1.locality.zone, "z2");
    assert_eq!(p1.endpoints.len(), 1, "UNHEALTHY and DRAINING are ignored");
    assert_eq!(p1.endpoints[0].address, "[::1]:81".parse().unwrap());
    assert_eq!(p1.endpoints[0].health, EndpointHealth::Unknown);
    assert_eq!(p1.endpoints[0].weight, 1);
    assert_eq!(e.drop_overloads[0].per_million, 50_000);
}

#[test]
fn endpoint_validation_errors() {
    let mut gap = cla("c", &[("10.0.0.1", 80)]);
    gap.endpoints[0].priority = 1;
    assert!(errors(endpoint::validate(&gap)).contains("priority 0 is empty but priority 1 is not"));

    let mut dup_loc = cla("c", &[("10.0.0.1", 80)]);
    dup_loc.endpoints.push(locality(
        "z",
        0,
        Some(1),
        vec![lb_endpoint("10.0.0.2", 80, HealthStatus::Healthy)],
    ));
    assert_eq!(
        errors(endpoint::validate(&dup_loc)),
        "[endpoints[1]: duplicate locality found in priority]"
    );

    let dup_addr = cla("c", &[("10.0.0.1", 80), ("10.0.0.1", 80)]);
    assert_eq!(
        errors(endpoint::validate(&dup_addr)),
        "[endpoints[0].lb_endpoints[1]: duplicate endpoint address 10.0.0.1:80]"
    );

    let host = cla("c", &[("backend.local", 80)]);
    assert!(errors(endpoint::validate(&host)).contains("endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address: not an IPv4 or IPv6 address"));

    // Ignored (unhealthy) entries are not validated nor counted as duplicates (C-core).
    let mut ignored = cla("c", &[("10.0.0.1", 80)]);
    ignored.endpoints[0]
        .lb_endpoints
        .push(lb_endpoint("10.0.0.1", 80, HealthStatus::Unhealthy));
    ignored.endpoints[0]
        .lb_endpoints
        .push(lb_endpoint("not-an-ip", 80, HealthStatus::Draining));
    assert_eq!(
        endpoint::validate(&ignored).unwrap().priorities[0].localities[0]
            .endpoints
            .len(),
        1
    );

    let mut no_locality = cla("c", &[("10.0.0.1", 80)]);
    no_locality.endpoints[0].locality = None;
    assert_eq!(
        errors(endpoint::validate(&no_locality)),
        "[endpoints[0].locality: field not present]"
    );

    let mut drops = cla("c", &[("10.0.0.1", 80)]);
    drops.policy = Some(ClaPolicy {
        drop_overloads: vec![DropProto {
            category: String::new(),
            drop_percentage: None,
        }],
        ..Default::default()
    });
    assert_eq!(
        errors(endpoint::validate(&drops)),
        "[policy.drop_overloads[0].category: empty drop category name; policy.drop_overloads[0].drop_percentage: field not present]"
    );

    let mut heavy = cla("c", &[("10.0.0.1", 80)]);
    heavy.endpoints[0].load_balancing_weight = Some(UInt32Value { value: u32::MAX });
    heavy.endpoints.push(locality("z2", 0, Some(1), vec![]));
    assert!(errors(endpoint::validate(&heavy)).contains("exceeds uint32 max"));
}
