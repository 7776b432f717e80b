//! Dependency manager tests over an in-memory lookup.

use std::collections::BTreeMap;

use super::super::{
    client::cache::{Lookup, LookupFailure, ResourceLookup},
    resource::{self, Resource, ResourceType},
    testutil::*,
};
use super::*;

#[derive(Default)]
struct Fake {
    entries: BTreeMap<(ResourceType, String), Result<Resource, LookupFailure>>,
}

impl ResourceLookup for Fake {
    fn lookup(&self, ty: ResourceType, name: &str) -> Lookup<'_> {
        match self.entries.get(&(ty, name.to_owned())) {
            None => Lookup::Pending,
            Some(Ok(r)) => Lookup::Ready(r),
            Some(Err(f)) => Lookup::Failed(*f, format!("{ty} {name} failed")),
        }
    }
}

impl Fake {
    fn put<M: prost::Message + prost::Name>(&mut self, ty: ResourceType, m: &M) {
        let d = resource::decode(ty, &any(m)).unwrap();
        self.entries.insert((ty, d.name), Ok(d.result.unwrap()));
    }
    fn fail(&mut self, ty: ResourceType, name: &str, f: LookupFailure) {
        self.entries.insert((ty, name.to_owned()), Err(f));
    }
}

fn wanted(d: &DependencyManager, ty: ResourceType) -> Vec<&str> {
    d.wanted()[ty.index()].iter().map(String::as_str).collect()
}

fn ready(s: &XdsSnapshot, l: &str) -> Arc<ListenerConfig> {
    match &s.listeners[l] {
        ListenerState::Ready(c) => Arc::clone(c),
        other => panic!("{l} not ready: {other:?}"),
    }
}

fn cluster_ready(s: &XdsSnapshot, c: &str) -> Arc<ClusterConfig> {
    match s.clusters.get(c) {
        Some(ClusterState::Ready(c)) => Arc::clone(c),
        other => panic!("{c} not ready: {other:?}"),
    }
}

use ResourceType::{
    Cluster as CDS, ClusterLoadAssignment as EDS, Listener as LDS, RouteConfiguration as RDS,
};

#[test]
fn follows_the_graph_and_publishes_only_when_complete() {
    let mut d = DependencyManager::new();
    let mut f = Fake::default();
    d.add_listener("svc");
    let s = d.update(&f).unwrap();
    assert_eq!(s.listeners["svc"], ListenerState::Waiting);
    assert_eq!(wanted(&d, LDS), ["svc"]);

    f.put(LDS, &listener_rds("svc", "rc"));
    assert!(
        d.update(&f).is_none(),
        "still waiting: nothing new to publish"
    );
    assert_eq!(wanted(&d, RDS), ["rc"]);

    f.put(
        RDS,
        &route_config_with(
            "rc",
            vec![vhost(
                "vh",
                &["svc"],
                vec![route_weighted(&[("a", 1), ("b", 1)])],
            )],
        ),
    );
    assert!(d.update(&f).is_none());
    assert_eq!(wanted(&d, CDS), ["a", "b"]);

    f.put(CDS, &cluster_eds("a"));
    f.put(CDS, &cluster_eds("b"));
    assert!(d.update(&f).is_none());
    assert_eq!(wanted(&d, EDS), ["a", "b"]);

    f.put(EDS, &cla("a", &[("10.0.0.1", 80)]));
    assert!(d.update(&f).is_none(), "b's endpoints are still missing");
    f.put(EDS, &cla("b", &[("10.0.0.2", 80)]));
    let s = d.update(&f).unwrap();
    let l = ready(&s, "svc");
    assert_eq!(l.route_config_name, "rc");
    assert_eq!(l.virtual_host.name, "vh");
    assert_eq!(s.clusters.len(), 2);
    let ClusterConfigKind::Eds { endpoints, .. } = &cluster_ready(&s, "a").kind else {
        panic!()
    };
    assert_eq!(
        endpoints.priorities[0].localities[0].endpoints[0].address,
        "10.0.0.1:80".parse().unwrap()
    );
    assert_eq!(s.generation, 2);
}

fn complete(f: &mut Fake, clusters: &[&str]) {
    for c in clusters {
        f.put(CDS, &cluster_eds(c));
        f.put(EDS, &cla(c, &[("10.0.0.1", 80)]));
    }
}

#[test]
fn a_new_route_config_waits_for_its_clusters() {
    let mut d = DependencyManager::new();
    let mut f = Fake::default();
    d.add_listener("svc");
    f.put(LDS, &listener_rds("svc", "rc"));
    f.put(RDS, &route_config("rc", "a"));
    complete(&mut f, &["a"]);
    let s1 = d.update(&f).unwrap();
    let old = ready(&s1, "svc");

    // The route moves to cluster b, not there yet: the old config keeps serving.
    f.put(RDS, &route_config("rc", "b"));
    assert!(d.update(&f).is_none());
    assert_eq!(
        wanted(&d, CDS),
        ["a", "b"],
        "both subscribed while b is pending"
    );
    f.put(CDS, &cluster_eds("b"));
    assert!(d.update(&f).is_none(), "b's endpoints still missing");
    assert_eq!(wanted(&d, EDS), ["a", "b"]);
    let s = d.snapshot();
    assert!(Arc::ptr_eq(&ready(s, "svc"), &old));
    assert!(s.clusters.contains_key("a"));

    f.put(EDS, &cla("b", &[("10.0.0.9", 80)]));
    let s2 = d.update(&f).unwrap();
    assert_eq!(
        ready(&s2, "svc")
            .cluster_names()
            .into_iter()
            .collect::<Vec<_>>(),
        ["b"]
    );
    assert_eq!(s2.clusters.keys().collect::<Vec<_>>(), ["b"]);
    assert_eq!(
        wanted(&d, CDS),
        ["b"],
        "a is unsubscribed once the new config is live"
    );
    assert_eq!(wanted(&d, EDS), ["b"]);
}

#[test]
fn an_eds_change_replaces_only_that_clusters_arc() {
    let mut d = DependencyManager::new();
    let mut f = Fake::default();
    d.add_listener("svc");
    f.put(LDS, &listener_rds("svc", "rc"));
    f.put(
        RDS,
        &route_config_with(
            "rc",
            vec![vhost(
                "vh",
                &["*"],
                vec![route_weighted(&[("a", 1), ("b", 1)])],
            )],
        ),
    );
    complete(&mut f, &["a", "b"]);
    let s1 = d.update(&f).unwrap();

    f.put(EDS, &cla("b", &[("10.0.0.7", 80)]));
    let s2 = d.update(&f).unwrap();
    assert!(Arc::ptr_eq(&ready(&s1, "svc"), &ready(&s2, "svc")));
    assert!(Arc::ptr_eq(
        &cluster_ready(&s1, "a"),
        &cluster_ready(&s2, "a")
    ));
    assert!(!Arc::ptr_eq(
        &cluster_ready(&s1, "b"),
        &cluster_ready(&s2, "b")
    ));

    // The same content again (a new Arc from the decoder) publishes nothing.
    f.put(EDS, &cla("b", &[("10.0.0.7", 80)]));
    f.put(
        RDS,
        &route_config_with(
            "rc",
            vec![vhost(
                "vh",
                &["*"],
                vec![route_weighted(&[("a", 1), ("b", 1)])],
            )],
        ),
    );
    assert!(d.update(&f).is_none());
}

#[test]
fn listener_failures() {
    let mut d = DependencyManager::new();
    let mut f = Fake::default();
    for l in ["gone", "socket", "novh", "bad"] {
        d.add_listener(l);
    }
    f.fail(LDS, "gone", LookupFailure::DoesNotExist);
    f.put(
        LDS,
        &envoy_types::pb::envoy::config::listener::v3::Listener {
            name: "socket".into(),
            address: Some(socket("0.0.0.0", 1)),
            ..Default::default()
        },
    );
    f.put(
        LDS,
        &listener_inline(
            "novh",
            route_config_with("rc", vec![vhost("vh", &["other"], vec![])]),
        ),
    );
    f.put(LDS, &listener_rds("bad", "bad-rc"));
    f.fail(RDS, "bad-rc", LookupFailure::Nacked);
    let s = d.update(&f).unwrap();
    let kind = |l: &str| match &s.listeners[l] {
        ListenerState::Failed(e) => e.kind,
        other => panic!("{other:?}"),
    };
    assert_eq!(kind("gone"), FailureKind::DoesNotExist);
    assert_eq!(kind("socket"), FailureKind::NotApiListener);
    assert_eq!(kind("novh"), FailureKind::NoMatchingVirtualHost);
    assert_eq!(kind("bad"), FailureKind::Nacked);
}

#[test]
fn a_missing_cluster_fails_only_that_cluster() {
    let mut d = DependencyManager::new();
    let mut f = Fake::default();
    d.add_listener("svc");
    f.put(LDS, &listener_rds("svc", "rc"));
    f.put(
        RDS,
        &route_config_with(
            "rc",
            vec![vhost(
                "vh",
                &["*"],
                vec![route_weighted(&[("a", 1), ("gone", 1)])],
            )],
        ),
    );
    complete(&mut f, &["a"]);
    f.fail(CDS, "gone", LookupFailure::DoesNotExist);
    let s = d.update(&f).unwrap();
    ready(&s, "svc");
    assert!(
        matches!(&s.clusters["gone"], ClusterState::Failed(e) if e.kind == FailureKind::DoesNotExist)
    );
    cluster_ready(&s, "a");
}

#[test]
fn aggregate_leaves_in_priority_order_with_missing_children_skipped() {
    let mut d = DependencyManager::new();
    let mut f = Fake::default();
    d.add_listener("svc");
    f.put(LDS, &listener_inline("svc", route_config("rc", "agg")));
    f.put(
        CDS,
        &cluster_aggregate("agg", &["p0", "inner", "missing", "p1"]),
    );
    f.put(CDS, &cluster_aggregate("inner", &["p1", "p2"]));
    f.fail(CDS, "missing", LookupFailure::DoesNotExist);
    complete(&mut f, &["p0", "p1"]);
    f.put(CDS, &cluster_eds("p2"));
    assert!(
        d.update(&f).unwrap().listeners["svc"] == ListenerState::Waiting,
        "p2's endpoints pending"
    );
    assert_eq!(
        wanted(&d, CDS),
        ["agg", "inner", "missing", "p0", "p1", "p2"]
    );
    f.put(EDS, &cla("p2", &[("10.0.0.2", 80)]));
    let s = d.update(&f).unwrap();
    ready(&s, "svc");
    let ClusterConfigKind::Aggregate { leaves } = &cluster_ready(&s, "agg").kind else {
        panic!()
    };
    assert_eq!(
        leaves,
        &["p0", "p1", "p2"],
        "dedup keeps the earliest position"
    );
    for leaf in ["p0", "p1", "p2", "inner"] {
        cluster_ready(&s, leaf);
    }
}

#[test]
fn aggregate_depth_limit_and_cycles() {
    // A chain c0 -> c1 -> ... -> leaf: 16 clusters deep is fine, 17 is not (A37).
    for (len, ok) in [(16usize, true), (17, false)] {
        let mut d = DependencyManager::new();
        let mut f = Fake::default();
        d.add_listener("svc");
        f.put(LDS, &listener_inline("svc", route_config("rc", "c0")));
        for i in 0..len - 1 {
            f.put(
                CDS,
                &cluster_aggregate(&format!("c{i}"), &[&format!("c{}", i + 1)]),
            );
        }
        complete(&mut f, &[&format!("c{}", len - 1)]);
        let s = d.update(&f).unwrap();
        match &s.clusters["c0"] {
            ClusterState::Ready(_) => assert!(ok, "len {len}"),
            ClusterState::Failed(e) => {
                assert!(!ok, "len {len}: {e:?}");
                assert_eq!(e.kind, FailureKind::AggregateTooDeep);
            }
        }
    }

    // a -> b -> a, plus a leaf under b: the cycle is cut, the leaf is found.
    let mut d = DependencyManager::new();
    let mut f = Fake::default();
    d.add_listener("svc");
    f.put(LDS, &listener_inline("svc", route_config("rc", "a")));
    f.put(CDS, &cluster_aggregate("a", &["b"]));
    f.put(CDS, &cluster_aggregate("b", &["a", "leaf"]));
    complete(&mut f, &["leaf"]);
    let s = d.update(&f).unwrap();
    let ClusterConfigKind::Aggregate { leaves } = &cluster_ready(&s, "a").kind else {
        panic!()
    };
    assert_eq!(leaves, &["leaf"]);

    // A pure cycle has no leaves: that cluster fails, the listener does not.
    let mut d = DependencyManager::new();
    let mut f = Fake::default();
    d.add_listener("svc");
    f.put(LDS, &listener_inline("svc", route_config("rc", "x")));
    f.put(CDS, &cluster_aggregate("x", &["y"]));
    f.put(CDS, &cluster_aggregate("y", &["x"]));
    let s = d.update(&f).unwrap();
    ready(&s, "svc");
    assert!(
        matches!(&s.clusters["x"], ClusterState::Failed(e) if e.kind == FailureKind::AggregateEmpty)
    );
}

#[test]
fn the_virtual_host_is_selected_for_the_authority() {
    let mut d = DependencyManager::new();
    let mut f = Fake::default();
    d.add_listener_with_authority(
        "xdstp://auth/envoy.config.listener.v3.Listener/svc",
        "svc:443",
    );
    let rc = route_config_with(
        "rc",
        vec![
            vhost("other", &["*"], vec![route_prefix("", "x")]),
            vhost("mine", &["svc:443"], vec![route_prefix("", "y")]),
        ],
    );
    f.put(
        LDS,
        &listener_inline("xdstp://auth/envoy.config.listener.v3.Listener/svc", rc),
    );
    complete(&mut f, &["x", "y"]);
    let s = d.update(&f).unwrap();
    assert_eq!(
        ready(&s, "xdstp://auth/envoy.config.listener.v3.Listener/svc")
            .virtual_host
            .name,
        "mine"
    );
    assert_eq!(
        wanted(&d, CDS),
        ["y"],
        "only the selected virtual host's clusters"
    );
}

#[test]
fn removing_a_listener_unsubscribes_what_only_it_needed() {
    let mut d = DependencyManager::new();
    let mut f = Fake::default();
    d.add_listener("one");
    d.add_listener("two");
    f.put(LDS, &listener_inline("one", route_config("r1", "shared")));
    f.put(
        LDS,
        &listener_inline(
            "two",
            route_config_with(
                "r2",
                vec![vhost(
                    "vh",
                    &["*"],
                    vec![route_weighted(&[("shared", 1), ("own", 1)])],
                )],
            ),
        ),
    );
    complete(&mut f, &["shared", "own"]);
    d.update(&f).unwrap();
    assert_eq!(wanted(&d, CDS), ["own", "shared"]);
    d.remove_listener("two");
    let s = d.update(&f).unwrap();
    assert_eq!(wanted(&d, LDS), ["one"]);
    assert_eq!(wanted(&d, CDS), ["shared"]);
    assert_eq!(s.listeners.keys().collect::<Vec<_>>(), ["one"]);
    assert_eq!(s.clusters.keys().collect::<Vec<_>>(), ["shared"]);
}
