//! GRPCRoute validation: everything the CRD schema and CEL rules enforce, enforced here for
//! objects that never passed an API server, each error naming the field.

use gateway_api::grpcroutes::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::grpc_route;
use crate::model::{Filter, StringMatch};

fn base() -> GrpcRoute {
    GrpcRoute {
        metadata: ObjectMeta {
            name: Some("r".into()),
            namespace: Some("shop".into()),
            generation: Some(3),
            ..Default::default()
        },
        spec: GrpcRouteSpec {
            parent_refs: Some(vec![GrpcRouteParentRefs {
                group: Some(String::new()),
                kind: Some("Service".into()),
                name: "front".into(),
                port: Some(50051),
                ..Default::default()
            }]),
            hostnames: None,
            rules: Some(vec![GrpcRouteRules {
                matches: Some(vec![GrpcRouteRulesMatches {
                    method: Some(GrpcRouteRulesMatchesMethod {
                        service: Some("pkg.v1.Svc".into()),
                        method: Some("Get".into()),
                        r#type: None,
                    }),
                    headers: None,
                }]),
                backend_refs: Some(vec![GrpcRouteRulesBackendRefs {
                    name: "a".into(),
                    port: Some(50051),
                    ..Default::default()
                }]),
                ..Default::default()
            }]),
        },
        status: None,
    }
}

fn rule0(r: &mut GrpcRoute) -> &mut GrpcRouteRules {
    &mut r.spec.rules.as_mut().unwrap()[0]
}

fn error_field(r: &GrpcRoute) -> String {
    let e = grpc_route(r, "default").expect_err("route should be rejected");
    assert!(!e.message().is_empty());
    e.field().to_string()
}

#[test]
fn defaults_are_applied() {
    let mut r = base();
    let p = &mut r.spec.parent_refs.as_mut().unwrap()[0];
    p.group = None;
    p.kind = None;
    let route = grpc_route(&r, "default").unwrap();
    assert_eq!(route.parent_refs[0].group, "gateway.networking.k8s.io");
    assert_eq!(route.parent_refs[0].kind, "Gateway");
    assert_eq!(route.parent_refs[0].namespace, "shop");
    let b = &route.rules[0].backends[0];
    assert_eq!(
        (
            b.group.as_str(),
            b.kind.as_str(),
            b.namespace.as_str(),
            b.weight
        ),
        ("", "Service", "shop", 1)
    );
    assert_eq!(route.generation, Some(3));
}

#[test]
fn missing_matches_become_one_match_all() {
    let mut r = base();
    rule0(&mut r).matches = None;
    let route = grpc_route(&r, "default").unwrap();
    assert_eq!(route.rules[0].matches.len(), 1);
    assert!(
        route.rules[0].matches[0].method.is_none() && route.rules[0].matches[0].headers.is_empty()
    );
}

#[test]
fn method_match_needs_service_or_method() {
    let mut r = base();
    rule0(&mut r).matches.as_mut().unwrap()[0].method =
        Some(GrpcRouteRulesMatchesMethod::default());
    assert_eq!(error_field(&r), "spec.rules[0].matches[0].method");
}

#[test]
fn exact_names_are_checked_and_a_leading_dot_is_dropped() {
    let mut r = base();
    rule0(&mut r).matches.as_mut().unwrap()[0]
        .method
        .as_mut()
        .unwrap()
        .service = Some("pkg/Svc".into());
    assert_eq!(error_field(&r), "spec.rules[0].matches[0].method.service");

    let mut r = base();
    rule0(&mut r).matches.as_mut().unwrap()[0]
        .method
        .as_mut()
        .unwrap()
        .method = Some("Get.All".into());
    assert_eq!(error_field(&r), "spec.rules[0].matches[0].method.method");

    let mut r = base();
    rule0(&mut r).matches.as_mut().unwrap()[0]
        .method
        .as_mut()
        .unwrap()
        .service = Some(".pkg.v1.Svc".into());
    let route = grpc_route(&r, "default").unwrap();
    assert_eq!(
        route.rules[0].matches[0]
            .method
            .as_ref()
            .unwrap()
            .exact_service(),
        Some("pkg.v1.Svc")
    );
}

#[test]
fn regex_method_and_header_patterns_compile_within_limits() {
    let mut r = base();
    let m = &mut rule0(&mut r).matches.as_mut().unwrap()[0];
    m.method = Some(GrpcRouteRulesMatchesMethod {
        service: Some("pkg\\.v[0-9]+\\..*".into()),
        method: None,
        r#type: Some(GrpcRouteRulesMatchesMethodType::RegularExpression),
    });
    let route = grpc_route(&r, "default").unwrap();
    assert!(matches!(
        route.rules[0].matches[0].method.as_ref().unwrap().service,
        Some(StringMatch::Regex { .. })
    ));

    let mut bomb = base();
    rule0(&mut bomb).matches.as_mut().unwrap()[0].headers =
        Some(vec![GrpcRouteRulesMatchesHeaders {
            name: "x-a".into(),
            value: "(a{100}){100}{100}".into(),
            r#type: Some(GrpcRouteRulesMatchesHeadersType::RegularExpression),
        }]);
    let e = grpc_route(&bomb, "default").unwrap_err();
    assert_eq!(e.field(), "spec.rules[0].matches[0].headers[0].value");
    assert!(e.message().contains("too complex"), "{}", e.message());
}

#[test]
fn duplicate_header_names_keep_only_the_first() {
    let mut r = base();
    rule0(&mut r).matches.as_mut().unwrap()[0].headers = Some(vec![
        GrpcRouteRulesMatchesHeaders {
            name: "X-Env".into(),
            value: "prod".into(),
            r#type: None,
        },
        GrpcRouteRulesMatchesHeaders {
            name: "x-env".into(),
            value: "dev".into(),
            r#type: None,
        },
    ]);
    let route = grpc_route(&r, "default").unwrap();
    let headers = &route.rules[0].matches[0].headers;
    assert_eq!(headers.len(), 1);
    assert_eq!(headers[0].name.as_str(), "x-env");
    assert_eq!(headers[0].value.text(), "prod");
}

#[test]
fn header_names_must_be_tokens() {
    let mut r = base();
    rule0(&mut r).matches.as_mut().unwrap()[0].headers = Some(vec![GrpcRouteRulesMatchesHeaders {
        name: ":authority".into(),
        value: "x".into(),
        r#type: None,
    }]);
    assert_eq!(error_field(&r), "spec.rules[0].matches[0].headers[0].name");
}

#[test]
fn weights_are_bounded() {
    for (weight, ok) in [
        (0, true),
        (1_000_000, true),
        (1_000_001, false),
        (-1, false),
    ] {
        let mut r = base();
        rule0(&mut r).backend_refs.as_mut().unwrap()[0].weight = Some(weight);
        assert_eq!(grpc_route(&r, "default").is_ok(), ok, "weight {weight}");
        if !ok {
            assert_eq!(error_field(&r), "spec.rules[0].backendRefs[0].weight");
        }
    }
}

#[test]
fn limits_of_the_schema() {
    let mut r = base();
    let rule = rule0(&mut r).clone();
    r.spec.rules = Some(vec![rule; 17]);
    assert_eq!(error_field(&r), "spec.rules");

    let mut r = base();
    let m = rule0(&mut r).matches.as_ref().unwrap()[0].clone();
    rule0(&mut r).matches = Some(vec![m; 65]);
    assert_eq!(error_field(&r), "spec.rules[0].matches");

    let mut r = base();
    let parent = r.spec.parent_refs.as_ref().unwrap()[0].clone();
    r.spec.parent_refs = Some(vec![parent; 33]);
    assert_eq!(error_field(&r), "spec.parentRefs");

    let mut r = base();
    r.spec.parent_refs.as_mut().unwrap()[0].port = Some(0);
    assert_eq!(error_field(&r), "spec.parentRefs[0]");
}

#[test]
fn rule_names_are_subdomains_and_unique() {
    let mut r = base();
    rule0(&mut r).name = Some("Not_Valid".into());
    assert_eq!(error_field(&r), "spec.rules[0].name");

    let mut r = base();
    rule0(&mut r).name = Some("canary".into());
    let second = rule0(&mut r).clone();
    r.spec.rules.as_mut().unwrap().push(second);
    assert_eq!(error_field(&r), "spec.rules[1].name");
}

fn header_filter(
    set: &[(&str, &str)],
    add: &[(&str, &str)],
    remove: &[&str],
) -> GrpcRouteRulesFilters {
    GrpcRouteRulesFilters {
        r#type: GrpcRouteRulesFiltersType::RequestHeaderModifier,
        request_header_modifier: Some(GrpcRouteRulesFiltersRequestHeaderModifier {
            set: Some(
                set.iter()
                    .map(|(n, v)| GrpcRouteRulesFiltersRequestHeaderModifierSet {
                        name: (*n).into(),
                        value: (*v).into(),
                    })
                    .collect(),
            ),
            add: Some(
                add.iter()
                    .map(|(n, v)| GrpcRouteRulesFiltersRequestHeaderModifierAdd {
                        name: (*n).into(),
                        value: (*v).into(),
                    })
                    .collect(),
            ),
            remove: Some(remove.iter().map(|s| (*s).into()).collect()),
        }),
        ..Default::default()
    }
}

#[test]
fn header_filters_allow_one_action_per_name() {
    let mut r = base();
    rule0(&mut r).filters = Some(vec![header_filter(
        &[("X-A", "1")],
        &[("x-b", "2")],
        &["x-c"],
    )]);
    let route = grpc_route(&r, "default").unwrap();
    let Filter::RequestHeaders(m) = &route.rules[0].filters[0] else {
        panic!("expected a header filter")
    };
    assert_eq!(m.set[0].0.as_str(), "x-a", "names are lower-cased");

    let mut r = base();
    rule0(&mut r).filters = Some(vec![header_filter(&[("x-a", "1")], &[("X-A", "2")], &[])]);
    assert_eq!(
        error_field(&r),
        "spec.rules[0].filters[0].requestHeaderModifier.add[0].name"
    );
}

#[test]
fn a_filter_type_may_not_repeat_and_its_config_must_match() {
    let mut r = base();
    rule0(&mut r).filters = Some(vec![
        header_filter(&[("x-a", "1")], &[], &[]),
        header_filter(&[("x-b", "1")], &[], &[]),
    ]);
    let e = grpc_route(&r, "default").unwrap_err();
    assert_eq!(
        (e.field(), e.reason()),
        ("spec.rules[0].filters[1]", "IncompatibleFilters")
    );

    let mut r = base();
    let mut f = header_filter(&[("x-a", "1")], &[], &[]);
    f.r#type = GrpcRouteRulesFiltersType::ResponseHeaderModifier;
    rule0(&mut r).filters = Some(vec![f]);
    assert_eq!(
        error_field(&r),
        "spec.rules[0].filters[0].requestHeaderModifier"
    );
}

#[test]
fn mirror_fraction_and_percent() {
    let mirror = |percent: Option<i32>, fraction: Option<(i32, Option<i32>)>| {
        let mut r = base();
        rule0(&mut r).filters = Some(vec![GrpcRouteRulesFilters {
            r#type: GrpcRouteRulesFiltersType::RequestMirror,
            request_mirror: Some(GrpcRouteRulesFiltersRequestMirror {
                backend_ref: GrpcRouteRulesFiltersRequestMirrorBackendRef {
                    name: "shadow".into(),
                    port: Some(50051),
                    ..Default::default()
                },
                percent,
                fraction: fraction.map(|(numerator, denominator)| {
                    GrpcRouteRulesFiltersRequestMirrorFraction {
                        numerator,
                        denominator,
                    }
                }),
            }),
            ..Default::default()
        }]);
        grpc_route(&r, "default").map(|route| match &route.rules[0].filters[0] {
            Filter::Mirror(m) => (m.numerator, m.denominator),
            other => panic!("unexpected {other:?}"),
        })
    };
    assert_eq!(
        mirror(None, None).unwrap(),
        (1, 1),
        "no percent or fraction: everything"
    );
    assert_eq!(mirror(Some(25), None).unwrap(), (25, 100));
    assert_eq!(
        mirror(None, Some((1, None))).unwrap(),
        (1, 100),
        "denominator defaults to 100"
    );
    assert_eq!(mirror(None, Some((3, Some(7)))).unwrap(), (3, 7));
    assert!(mirror(Some(101), None).is_err());
    assert!(mirror(Some(5), Some((1, None))).is_err(), "not both");
    assert!(
        mirror(None, Some((8, Some(7)))).is_err(),
        "numerator above denominator"
    );
    assert!(mirror(None, Some((1, Some(0)))).is_err());
}

#[test]
fn rejected_routes_keep_their_parent_refs_for_status() {
    let mut r = base();
    rule0(&mut r).backend_refs.as_mut().unwrap()[0].weight = Some(-5);
    let e = grpc_route(&r, "default").unwrap_err();
    assert_eq!(e.parent_refs().len(), 1);
    assert_eq!(e.parent_refs()[0].name, "front");
    assert_eq!(e.generation(), Some(3));
    assert_eq!(
        e.to_string(),
        format!(
            "GRPCRoute shop/r: spec.rules[0].backendRefs[0].weight: {}",
            e.message()
        )
    );
}
