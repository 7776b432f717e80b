//! ADS worker tests against a scripted server, on paused tokio time.
//!
//! Every wait is bounded by a (virtual) timeout shorter than the 15 s does-not-exist
//! timer, with a message naming the step.

use std::{sync::Arc, time::Duration};

use envoy_types::pb::{
    envoy::{
        config::{cluster::v3::cluster::LbPolicy, core::v3::HealthStatus},
        service::discovery::v3::{DiscoveryRequest, DiscoveryResponse},
    },
    google::protobuf::Any,
};
use tokio::{sync::watch, time::timeout};

use super::super::{
    depmgr::{ClusterState, FailureKind, ListenerState, XdsSnapshot},
    resource::ResourceType::{
        self, Cluster as CDS, ClusterLoadAssignment as EDS, Listener as LDS,
        RouteConfiguration as RDS,
    },
    testutil::*,
};
use super::{
    transport::fake::{self, FakeServer, FakeStream},
    *,
};

const STEP: Duration = Duration::from_secs(1);

struct Harness {
    client: XdsClient,
    server: FakeServer,
}

fn start_with(bootstrap: Bootstrap) -> Harness {
    let (transport, server) = fake::pair();
    let client = XdsClient::start_with_transport(&bootstrap, transport, 42);
    Harness { client, server }
}

fn start() -> Harness {
    start_with(Bootstrap::new("fake:1", "test-node"))
}

impl Harness {
    async fn stream(&mut self, step: &str) -> FakeStream {
        timeout(STEP, self.server.streams.recv())
            .await
            .unwrap_or_else(|_| panic!("{step}: no stream opened"))
            .expect("transport dropped")
    }
}

async fn req(s: &mut FakeStream, step: &str) -> DiscoveryRequest {
    timeout(STEP, s.requests.recv())
        .await
        .unwrap_or_else(|_| panic!("{step}: no request"))
        .unwrap_or_else(|| panic!("{step}: request channel closed"))
}

async fn no_req(s: &mut FakeStream, step: &str) {
    if let Ok(Some(r)) = timeout(Duration::from_millis(100), s.requests.recv()).await {
        panic!("{step}: unexpected request {r:?}");
    }
}

fn ty_of(r: &DiscoveryRequest) -> ResourceType {
    ResourceType::from_type_url(&r.type_url).expect("known type")
}

fn names(r: &DiscoveryRequest) -> Vec<&str> {
    r.resource_names.iter().map(String::as_str).collect()
}

fn send(s: &FakeStream, ty: ResourceType, version: &str, nonce: &str, resources: Vec<Any>) {
    s.responses
        .send(Ok(response(ty, version, nonce, resources)))
        .expect("client stream gone");
}

async fn wait_for(
    rx: &mut watch::Receiver<Arc<XdsSnapshot>>,
    step: &str,
    pred: impl Fn(&XdsSnapshot) -> bool,
) -> Arc<XdsSnapshot> {
    let r = timeout(STEP * 5, async {
        loop {
            let s = Arc::clone(&rx.borrow_and_update());
            if pred(&s) {
                return s;
            }
            rx.changed().await.expect("worker gone");
        }
    })
    .await;
    r.unwrap_or_else(|_| {
        panic!(
            "{step}: condition not reached; last snapshot {:?}",
            rx.borrow()
        )
    })
}

fn listener_ready(s: &XdsSnapshot, l: &str) -> bool {
    matches!(s.listeners.get(l), Some(ListenerState::Ready(_)))
}

fn listener_failed(s: &XdsSnapshot, l: &str, kind: FailureKind) -> bool {
    matches!(s.listeners.get(l), Some(ListenerState::Failed(f)) if f.kind == kind)
}

fn dump_of(c: &XdsClient, ty: ResourceType, name: &str) -> ResourceDump {
    c.dump()
        .into_iter()
        .find(|d| d.resource_type == ty && d.name == name)
        .unwrap_or_else(|| panic!("{ty} {name} not in dump: {:?}", c.dump()))
}

/// Serves LDS svc → RDS rc → CDS `clusters` → EDS, answering the requests in order, and
/// returns the stream once the snapshot is ready.
async fn serve_basic(h: &mut Harness, clusters: &[&str]) -> FakeStream {
    h.client.watch_listener("svc");
    let mut s = h.stream("basic: connect").await;
    let r = req(&mut s, "basic: LDS").await;
    assert_eq!(ty_of(&r), LDS);
    send(&s, LDS, "l1", "n1", vec![any(&listener_rds("svc", "rc"))]);
    assert_eq!(req(&mut s, "basic: LDS ack").await.response_nonce, "n1");
    let r = req(&mut s, "basic: RDS sub").await;
    assert_eq!((ty_of(&r), names(&r)), (RDS, vec!["rc"]));
    let weights: Vec<(&str, u32)> = clusters.iter().map(|c| (*c, 1)).collect();
    send(
        &s,
        RDS,
        "r1",
        "n2",
        vec![any(&route_config_with(
            "rc",
            vec![vhost("vh", &["*"], vec![route_weighted(&weights)])],
        ))],
    );
    assert_eq!(req(&mut s, "basic: RDS ack").await.response_nonce, "n2");
    let r = req(&mut s, "basic: CDS sub").await;
    assert_eq!(ty_of(&r), CDS);
    send(
        &s,
        CDS,
        "c1",
        "n3",
        clusters.iter().map(|c| any(&cluster_eds(c))).collect(),
    );
    assert_eq!(req(&mut s, "basic: CDS ack").await.response_nonce, "n3");
    let r = req(&mut s, "basic: EDS sub").await;
    assert_eq!(ty_of(&r), EDS);
    let claz: Vec<Any> = clusters
        .iter()
        .enumerate()
        .map(|(i, c)| {
            any(&cla(
                c,
                &[(&format!("10.0.{}.{}", i / 200, i % 200 + 1), 80)],
            ))
        })
        .collect();
    send(&s, EDS, "e1", "n4", claz);
    assert_eq!(req(&mut s, "basic: EDS ack").await.response_nonce, "n4");
    let mut rx = h.client.snapshots();
    wait_for(&mut rx, "basic: ready", |s| listener_ready(s, "svc")).await;
    s
}

#[tokio::test(start_paused = true)]
async fn ack_nack_shape_and_node_only_in_the_first_request() {
    let mut h = start();
    h.client.watch_listener("svc");
    let mut s = h.stream("connect").await;
    let first = req(&mut s, "first LDS").await;
    assert_eq!(ty_of(&first), LDS);
    assert_eq!(names(&first), ["svc"]);
    assert_eq!(
        (first.version_info.as_str(), first.response_nonce.as_str()),
        ("", "")
    );
    let node = first.node.expect("node in the first request");
    assert_eq!(node.id, "test-node");
    assert_eq!(node.user_agent_name, "grpcroute-client");

    send(&s, LDS, "1", "A", vec![any(&listener_rds("svc", "rc"))]);
    let ack = req(&mut s, "LDS ack").await;
    assert_eq!(
        (
            ty_of(&ack),
            ack.version_info.as_str(),
            ack.response_nonce.as_str()
        ),
        (LDS, "1", "A")
    );
    assert!(ack.error_detail.is_none() && ack.node.is_none());
    let rds = req(&mut s, "RDS sub").await;
    assert_eq!(
        (
            ty_of(&rds),
            names(&rds),
            rds.version_info.as_str(),
            rds.response_nonce.as_str()
        ),
        (RDS, vec!["rc"], "", "")
    );
    assert!(
        rds.node.is_none(),
        "node only in the first request of a stream"
    );

    // An invalid first RouteConfiguration: NACK with the (empty) previous version.
    let mut bad = route_config("rc", "c");
    bad.virtual_hosts[0].routes[0]
        .r#match
        .as_mut()
        .unwrap()
        .path_specifier = Some(
        envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier::SafeRegex(
            envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher {
                regex: "(".into(),
                engine_type: None,
            },
        ),
    );
    send(&s, RDS, "2", "B", vec![any(&bad)]);
    let nack = req(&mut s, "RDS nack").await;
    assert_eq!(
        (nack.version_info.as_str(), nack.response_nonce.as_str()),
        ("", "B")
    );
    let detail = nack.error_detail.expect("error_detail");
    assert_eq!(detail.code, 3, "INVALID_ARGUMENT");
    assert!(
        detail
            .message
            .contains("rc: [virtual_hosts[0].routes[0].match.safe_regex: invalid regex"),
        "{}",
        detail.message
    );

    send(&s, RDS, "3", "C", vec![any(&route_config("rc", "c"))]);
    let ack = req(&mut s, "RDS ack").await;
    assert_eq!(
        (ack.version_info.as_str(), ack.response_nonce.as_str()),
        ("3", "C")
    );
    assert!(ack.error_detail.is_none());
    let cds = req(&mut s, "CDS sub").await;
    assert_eq!((ty_of(&cds), names(&cds)), (CDS, vec!["c"]));

    // A second invalid update: NACK keeps version 3 and carries the rejected nonce.
    send(&s, RDS, "4", "D", vec![any(&bad)]);
    let nack = req(&mut s, "RDS nack 2").await;
    assert_eq!(
        (nack.version_info.as_str(), nack.response_nonce.as_str()),
        ("3", "D")
    );
    let d = dump_of(&h.client, RDS, "rc");
    assert_eq!(d.state, ResourceStatus::Nacked);
    assert_eq!(d.version, "3");
    assert_eq!(d.rejected_version.as_deref(), Some("4"));
    assert!(d.has_cached_copy, "A88: the last good copy is kept");
    assert!(d.last_error.unwrap().contains("invalid regex"));
    assert!(d.rejected_time.is_some() && d.update_time.is_some());
    let m = h.client.metrics();
    assert_eq!((m.valid(RDS), m.invalid(RDS)), (1, 2));
    assert_eq!(m.valid(LDS), 1);
}

#[tokio::test(start_paused = true)]
async fn a_nack_keeps_serving_the_last_good_config() {
    let mut h = start();
    let mut s = serve_basic(&mut h, &["a"]).await;
    let before = h.client.snapshots().borrow().clone();
    let mut bad = route_config("rc", "a");
    bad.virtual_hosts[0].domains = vec!["a*b".into()];
    send(&s, RDS, "r2", "n9", vec![any(&bad)]);
    let nack = req(&mut s, "nack").await;
    assert_eq!(nack.version_info, "r1");
    no_req(&mut s, "nothing else").await;
    let after = h.client.snapshots().borrow().clone();
    assert_eq!(
        after.generation, before.generation,
        "nothing the data plane sees changed"
    );
    assert!(listener_ready(&after, "svc"));
}

#[tokio::test(start_paused = true)]
async fn a_partial_nack_applies_the_valid_resources() {
    let mut h = start();
    h.client.watch_listener("svc");
    let mut s = h.stream("connect").await;
    req(&mut s, "LDS").await;
    send(
        &s,
        LDS,
        "1",
        "A",
        vec![any(&listener_inline(
            "svc",
            route_config_with(
                "rc",
                vec![vhost(
                    "vh",
                    &["*"],
                    vec![route_weighted(&[("good", 1), ("bad", 1)])],
                )],
            ),
        ))],
    );
    req(&mut s, "LDS ack").await;
    let cds = req(&mut s, "CDS sub").await;
    assert_eq!(names(&cds), ["bad", "good"]);
    let mut bad = cluster_eds("bad");
    bad.lb_policy = LbPolicy::RingHash as i32;
    send(
        &s,
        CDS,
        "1",
        "B",
        vec![any(&cluster_eds("good")), any(&bad)],
    );
    let nack = req(&mut s, "CDS nack").await;
    // C-core: a response with valid resources moves the version on even when it is
    // NACKed (the client uses those resources now).
    assert_eq!(
        (nack.version_info.as_str(), nack.response_nonce.as_str()),
        ("1", "B")
    );
    let msg = nack.error_detail.unwrap().message;
    assert!(
        msg.contains("bad: [lb_policy: RING_HASH is not supported"),
        "{msg}"
    );
    assert!(!msg.contains("good"), "{msg}");
    let eds = req(&mut s, "EDS sub for the valid cluster").await;
    assert_eq!((ty_of(&eds), names(&eds)), (EDS, vec!["good"]));
    send(
        &s,
        EDS,
        "1",
        "C",
        vec![any(&cla("good", &[("10.0.0.1", 80)]))],
    );
    let mut rx = h.client.snapshots();
    let snap = wait_for(&mut rx, "ready with the good cluster", |s| {
        listener_ready(s, "svc")
    })
    .await;
    assert!(matches!(snap.clusters["good"], ClusterState::Ready(_)));
    assert!(
        matches!(&snap.clusters["bad"], ClusterState::Failed(f) if f.kind == FailureKind::Nacked)
    );
    assert_eq!(dump_of(&h.client, CDS, "good").state, ResourceStatus::Acked);
    assert_eq!(
        dump_of(&h.client, CDS, "good").version,
        "1",
        "valid resources take the response version"
    );
    assert_eq!(dump_of(&h.client, CDS, "bad").state, ResourceStatus::Nacked);
}

#[tokio::test(start_paused = true)]
async fn does_not_exist_fires_15s_after_connecting_not_while_disconnected() {
    let mut h = start();
    h.server.set_refusing(true);
    h.client.watch_listener("missing");
    let mut rx = h.client.snapshots();
    // Unreachable and not cached: fails at once (A88 transient error), not DOES_NOT_EXIST.
    wait_for(&mut rx, "unreachable", |s| {
        listener_failed(s, "missing", FailureKind::Unreachable)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        dump_of(&h.client, LDS, "missing").state,
        ResourceStatus::Requested
    );
    assert!(!h.client.connected());
    assert_eq!(
        h.client.metrics().server_failures,
        1,
        "one outage, however many attempts"
    );

    h.server.set_refusing(false);
    let mut s = timeout(Duration::from_secs(120), h.server.streams.recv())
        .await
        .expect("reconnect")
        .unwrap();
    let connected_at = tokio::time::Instant::now();
    req(&mut s, "LDS sub").await;
    assert!(h.client.connected());
    tokio::time::sleep_until(connected_at + Duration::from_millis(14_900)).await;
    assert_eq!(
        dump_of(&h.client, LDS, "missing").state,
        ResourceStatus::Requested
    );
    tokio::time::sleep_until(connected_at + Duration::from_millis(15_100)).await;
    assert_eq!(
        dump_of(&h.client, LDS, "missing").state,
        ResourceStatus::DoesNotExist
    );
    wait_for(&mut rx, "does not exist", |s| {
        listener_failed(s, "missing", FailureKind::DoesNotExist)
    })
    .await;

    // It shows up later: used.
    send(
        &s,
        LDS,
        "1",
        "A",
        vec![any(&listener_inline("missing", route_config("rc", "c")))],
    );
    req(&mut s, "ack").await;
    assert_eq!(
        dump_of(&h.client, LDS, "missing").state,
        ResourceStatus::Acked
    );
}

#[tokio::test(start_paused = true)]
async fn timer_starts_when_a_later_subscription_is_sent() {
    let mut h = start();
    h.client.watch_listener("one");
    let mut s = h.stream("connect").await;
    req(&mut s, "sub one").await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    h.client.watch_listener("two");
    let r = req(&mut s, "sub two").await;
    assert_eq!(
        names(&r),
        ["one", "two"],
        "a new name resends the full list"
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        dump_of(&h.client, LDS, "one").state,
        ResourceStatus::DoesNotExist
    );
    assert_eq!(
        dump_of(&h.client, LDS, "two").state,
        ResourceStatus::Requested
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        dump_of(&h.client, LDS, "two").state,
        ResourceStatus::DoesNotExist
    );

    h.client.unwatch_listener("one");
    assert_eq!(names(&req(&mut s, "unsub one").await), ["two"]);
    h.client.unwatch_listener("two");
    let last = req(&mut s, "unsub two").await;
    assert!(
        last.resource_names.is_empty(),
        "removing the last name sends the shrunken (empty) list"
    );
    assert!(h.client.dump().is_empty());
}

#[tokio::test(start_paused = true)]
async fn reconnect_resends_versions_with_empty_nonce_and_keeps_the_cache() {
    let mut h = start();
    let s = serve_basic(&mut h, &["a"]).await;
    drop(s); // the server ends the stream after responses: not an error
    let mut s2 = h.stream("reconnect").await;
    let mut got = Vec::new();
    for step in ["LDS", "RDS", "CDS", "EDS"] {
        got.push(req(&mut s2, step).await);
    }
    let summary: Vec<_> = got
        .iter()
        .map(|r| {
            (
                ty_of(r),
                r.version_info.as_str(),
                r.response_nonce.as_str(),
                names(r),
                r.node.is_some(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (LDS, "l1", "", vec!["svc"], true),
            (RDS, "r1", "", vec!["rc"], false),
            (CDS, "c1", "", vec!["a"], false),
            (EDS, "e1", "", vec!["a"], false),
        ]
    );
    // Cached resources get no does-not-exist timer on the new stream (A57).
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        h.client
            .dump()
            .iter()
            .all(|d| d.state == ResourceStatus::Acked),
        "{:?}",
        h.client.dump()
    );
    assert!(listener_ready(&h.client.snapshots().borrow(), "svc"));
    assert_eq!(h.client.metrics().server_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn deletion_of_a_cached_listener_is_ignored_by_default() {
    let mut h = start();
    let mut s = serve_basic(&mut h, &["a"]).await;
    send(&s, LDS, "l2", "n5", vec![]);
    let ack = req(&mut s, "ack of the empty LDS").await;
    assert_eq!(ack.version_info, "l2");
    // As C-core's CSDS shows it (under A88): DOES_NOT_EXIST, the deleting version as the
    // failed update, and the cached copy still in use.
    let d = dump_of(&h.client, LDS, "svc");
    assert_eq!(d.state, ResourceStatus::DoesNotExist);
    assert!(d.has_cached_copy);
    assert_eq!(d.rejected_version.as_deref(), Some("l2"));
    assert!(
        d.last_error
            .unwrap()
            .contains("deleted by the control plane")
    );
    assert!(listener_ready(&h.client.snapshots().borrow(), "svc"));
    // CDS too.
    send(&s, CDS, "c2", "n6", vec![]);
    req(&mut s, "ack of the empty CDS").await;
    assert!(matches!(
        h.client.snapshots().borrow().clusters["a"],
        ClusterState::Ready(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn deletion_with_fail_on_data_errors_makes_it_not_exist() {
    let mut b = Bootstrap::new("fake:1", "n");
    b.xds_servers[0].fail_on_data_errors = true;
    let mut h = start_with(b);
    let mut s = serve_basic(&mut h, &["a"]).await;
    send(&s, LDS, "l2", "n5", vec![]);
    req(&mut s, "ack").await;
    let d = dump_of(&h.client, LDS, "svc");
    assert_eq!(d.state, ResourceStatus::DoesNotExist);
    assert!(!d.has_cached_copy);
    assert_eq!(
        d.version, "",
        "no copy in use, no version (as C-core's CSDS)"
    );
    assert_eq!(d.rejected_version.as_deref(), Some("l2"));
    let mut rx = h.client.snapshots();
    wait_for(&mut rx, "listener gone", |s| {
        listener_failed(s, "svc", FailureKind::DoesNotExist)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_stream_closed_before_any_response_is_a_connectivity_error() {
    let mut h = start();
    h.client.watch_listener("svc");
    let s = h.stream("connect").await;
    s.responses
        .send(Err(tonic::Status::unavailable("going away")))
        .unwrap();
    let mut rx = h.client.snapshots();
    let snap = wait_for(&mut rx, "unreachable", |s| {
        listener_failed(s, "svc", FailureKind::Unreachable)
    })
    .await;
    let ListenerState::Failed(f) = &snap.listeners["svc"] else {
        panic!()
    };
    assert!(
        f.message.contains("closed before any response"),
        "{}",
        f.message
    );
    assert_eq!(h.client.metrics().server_failures, 1);
    assert!(!h.client.connected());
}

#[tokio::test(start_paused = true)]
async fn transient_errors_keep_cached_resources_with_an_ambient_error() {
    let mut h = start();
    let s = serve_basic(&mut h, &["a"]).await;
    let before = h.client.snapshots().borrow().clone();
    s.responses
        .send(Err(tonic::Status::unavailable("boom")))
        .unwrap();
    // The next stream dies before answering: now it is a connectivity error.
    let s2 = h.stream("reconnect").await;
    s2.responses
        .send(Err(tonic::Status::unavailable("boom again")))
        .unwrap();
    h.server.set_refusing(true);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let after = h.client.snapshots().borrow().clone();
    assert!(listener_ready(&after, "svc"));
    assert_eq!(
        after.generation, before.generation,
        "the cache keeps serving unchanged"
    );
    let d = dump_of(&h.client, CDS, "a");
    assert_eq!(d.state, ResourceStatus::Acked);
    // The latest connectivity error is the ambient error of every cached resource.
    let err = d.last_error.unwrap();
    assert!(
        err.contains("xDS server unreachable: connection refused"),
        "{err}"
    );
    assert_eq!(h.client.metrics().server_failures, 1);

    // A new listener while the server is unreachable fails at once.
    h.client.watch_listener("new");
    let mut rx = h.client.snapshots();
    wait_for(&mut rx, "new listener fails fast", |s| {
        listener_failed(s, "new", FailureKind::Unreachable)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn reconnect_backoff_grows_with_jitter() {
    let h = start();
    h.server.set_refusing(true);
    h.client.watch_listener("svc");
    tokio::time::sleep(Duration::from_secs(60)).await;
    let attempts = h.server.attempts();
    assert!(attempts.len() >= 6, "{attempts:?}");
    let mut base = 1.0_f64;
    for w in attempts.windows(2).take(6) {
        let gap = (w[1] - w[0]).as_secs_f64();
        assert!(
            gap >= base * 0.8 - 1e-6 && gap <= base * 1.2 + 1e-6,
            "gap {gap} vs base {base}"
        );
        base *= 1.6;
    }
}

#[tokio::test(start_paused = true)]
async fn subscriptions_follow_route_changes() {
    let mut h = start();
    let mut s = serve_basic(&mut h, &["a"]).await;
    send(&s, RDS, "r2", "n5", vec![any(&route_config("rc", "b"))]);
    req(&mut s, "RDS ack").await;
    let cds = req(&mut s, "CDS with a and b").await;
    assert_eq!(
        (ty_of(&cds), names(&cds), cds.version_info.as_str()),
        (CDS, vec!["a", "b"], "c1")
    );
    // The new route is not live until b and its endpoints are in.
    send(
        &s,
        CDS,
        "c2",
        "n6",
        vec![any(&cluster_eds("a")), any(&cluster_eds("b"))],
    );
    req(&mut s, "CDS ack").await;
    let eds = req(&mut s, "EDS with a and b").await;
    assert_eq!(names(&eds), ["a", "b"]);
    let snap = h.client.snapshots().borrow().clone();
    let ListenerState::Ready(l) = &snap.listeners["svc"] else {
        panic!()
    };
    assert_eq!(
        l.cluster_names().into_iter().collect::<Vec<_>>(),
        ["a"],
        "old config still live"
    );

    send(
        &s,
        EDS,
        "e2",
        "n7",
        vec![
            any(&cla("a", &[("10.0.0.1", 80)])),
            any(&cla("b", &[("10.0.0.2", 80)])),
        ],
    );
    req(&mut s, "EDS ack").await;
    let mut rx = h.client.snapshots();
    wait_for(&mut rx, "new config live", |s| {
        matches!(&s.listeners["svc"], ListenerState::Ready(l) if l.cluster_names().contains("b"))
    })
    .await;
    let cds = req(&mut s, "CDS shrinks to b").await;
    assert_eq!((ty_of(&cds), names(&cds)), (CDS, vec!["b"]));
    let eds = req(&mut s, "EDS shrinks to b").await;
    assert_eq!((ty_of(&eds), names(&eds)), (EDS, vec!["b"]));
}

#[tokio::test(start_paused = true)]
async fn no_reader_can_block_the_worker_with_200_clusters() {
    let mut h = start();
    // A receiver nobody reads, taken before anything happens.
    let _idle = h.client.snapshots();
    let clusters: Vec<String> = (0..200).map(|i| format!("c{i:03}")).collect();
    let refs: Vec<&str> = clusters.iter().map(String::as_str).collect();
    let mut s = serve_basic(&mut h, &refs).await;
    let snap = h.client.snapshots().borrow().clone();
    assert_eq!(snap.clusters.len(), 200);
    assert!(
        snap.clusters
            .values()
            .all(|c| matches!(c, ClusterState::Ready(_)))
    );
    // EDS churn with nobody reading: the worker keeps ACKing.
    for v in 2..20 {
        let claz = refs
            .iter()
            .map(|c| any(&cla(c, &[("10.1.0.1", v)])))
            .collect();
        send(&s, EDS, &format!("e{v}"), &format!("m{v}"), claz);
        let ack = req(&mut s, "EDS ack under churn").await;
        assert_eq!(ack.response_nonce, format!("m{v}"));
    }
}

#[tokio::test(start_paused = true)]
async fn unhealthy_endpoints_and_unknown_types_do_not_disturb() {
    let mut h = start();
    let mut s = serve_basic(&mut h, &["a"]).await;
    let mut c = cla("a", &[("10.0.0.1", 80)]);
    c.endpoints[0]
        .lb_endpoints
        .push(lb_endpoint("10.0.0.2", 80, HealthStatus::Unhealthy));
    send(&s, EDS, "e2", "x", vec![any(&c)]);
    assert_eq!(req(&mut s, "ack").await.version_info, "e2");
    s.responses
        .send(Ok(DiscoveryResponse {
            type_url: "type.googleapis.com/some.Other".into(),
            nonce: "z".into(),
            ..DiscoveryResponse::default()
        }))
        .unwrap();
    no_req(&mut s, "unknown type ignored").await;
    assert!(h.client.connected());
}

#[tokio::test(start_paused = true)]
async fn the_worker_stops_when_the_last_handle_drops() {
    let mut h = start();
    let mut s = serve_basic(&mut h, &["a"]).await;
    let snapshots = h.client.snapshots();
    let clone = h.client.clone();
    drop(h.client);
    no_req(&mut s, "a clone still holds the worker").await;
    assert!(!s.responses.is_closed());
    drop(clone);
    let end = timeout(STEP, s.requests.recv())
        .await
        .expect("worker did not stop");
    assert!(end.is_none(), "the request stream ends with the worker");
    drop(snapshots);
}

#[test]
fn start_outside_a_runtime_is_an_error() {
    let err = XdsClient::start(Bootstrap::new("127.0.0.1:1", "n")).unwrap_err();
    assert!(matches!(err, StartError::NoRuntime), "{err}");
}

mod network {
    //! One real-network round trip: the tonic transport against a tiny in-test ADS
    //! server on 127.0.0.1.

    use std::pin::Pin;

    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse,
        aggregated_discovery_service_server::{
            AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
        },
    };
    use futures_util::{Stream, StreamExt as _};
    use tokio::sync::mpsc;

    use super::*;

    type Out<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>;

    /// Answers each subscription of a known name once, and reports every request.
    struct Server {
        seen: mpsc::UnboundedSender<DiscoveryRequest>,
    }

    fn answer(r: &DiscoveryRequest) -> Option<DiscoveryResponse> {
        if !r.response_nonce.is_empty() {
            return None; // an ACK
        }
        let ty = ResourceType::from_type_url(&r.type_url)?;
        let resources = match ty {
            LDS => vec![any(&listener_inline("svc", route_config("rc", "c")))],
            CDS => vec![any(&cluster_eds("c"))],
            EDS => vec![any(&cla("c", &[("127.0.0.1", 50051)]))],
            RDS => return None,
        };
        Some(response(ty, "1", &format!("{ty}-1"), resources))
    }

    #[tonic::async_trait]
    impl AggregatedDiscoveryService for Server {
        type StreamAggregatedResourcesStream = Out<DiscoveryResponse>;
        type DeltaAggregatedResourcesStream = Out<DeltaDiscoveryResponse>;

        async fn stream_aggregated_resources(
            &self,
            request: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
        ) -> Result<tonic::Response<Self::StreamAggregatedResourcesStream>, tonic::Status> {
            let seen = self.seen.clone();
            let out = request.into_inner().filter_map(move |r| {
                let seen = seen.clone();
                async move {
                    let r = r.ok()?;
                    let reply = answer(&r);
                    let _ = seen.send(r);
                    reply.map(Ok)
                }
            });
            Ok(tonic::Response::new(Box::pin(out)))
        }

        async fn delta_aggregated_resources(
            &self,
            _request: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
        ) -> Result<tonic::Response<Self::DeltaAggregatedResourcesStream>, tonic::Status> {
            Err(tonic::Status::unimplemented("delta"))
        }
    }

    #[tokio::test]
    async fn tonic_transport_against_a_loopback_ads_server() {
        let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap())
            .unwrap()
            .with_nodelay(Some(true));
        let addr = incoming.local_addr().unwrap();
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AggregatedDiscoveryServiceServer::new(Server {
                    seen: seen_tx,
                }))
                .serve_with_incoming(incoming),
        );
        let client = XdsClient::start(Bootstrap::new(addr.to_string(), "net-node")).unwrap();
        client.watch_listener("svc");
        let mut rx = client.snapshots();
        let snap = wait_for_real(&mut rx).await;
        assert!(matches!(snap.clusters["c"], ClusterState::Ready(_)));
        let first = timeout(Duration::from_secs(5), seen.recv())
            .await
            .expect("request seen")
            .unwrap();
        assert_eq!(first.node.map(|n| n.id).as_deref(), Some("net-node"));
        assert!(client.connected());
        assert!(
            client
                .dump()
                .iter()
                .all(|d| d.state == ResourceStatus::Acked)
        );
        server.abort();
    }

    async fn wait_for_real(rx: &mut watch::Receiver<Arc<XdsSnapshot>>) -> Arc<XdsSnapshot> {
        timeout(Duration::from_secs(10), async {
            loop {
                let s = Arc::clone(&rx.borrow_and_update());
                if listener_ready(&s, "svc") {
                    return s;
                }
                rx.changed().await.expect("worker gone");
            }
        })
        .await
        .expect("tonic_transport_against_a_loopback_ads_server: no ready snapshot within 10 s")
    }
}
