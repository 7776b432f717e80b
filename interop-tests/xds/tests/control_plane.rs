//! The control plane and the backends on their own, driven by a Rust ADS client and plain
//! gRPC calls over loopback: every stated behaviour of the control surface.

mod common;

use std::time::Duration;

use anyhow::ensure;
use common::{AdsStream, EMPTY, UNARY, bounded, channel, eventually, names, ping_pong, unary};
use envoy_types::pb::{
    envoy::{config::listener::v3::Listener, service::discovery::v3::DiscoveryResponse},
    google::protobuf::Any,
};
use grpcroute_xds_control_plane::{
    Backend, ControlPlane, LogMark, Resource, ResourceType, ResponseOverride,
    builders::{ApiListener, ClusterBuilder},
    control_plane::LogEntry,
};
use tonic::Code;

const LDS: ResourceType = ResourceType::Listener;
const CDS: ResourceType = ResourceType::Cluster;
const EDS: ResourceType = ResourceType::ClusterLoadAssignment;
const STEP: Duration = Duration::from_secs(20);

#[tokio::test]
async fn sotw_answers_each_stream_with_what_it_subscribed() -> anyhow::Result<()> {
    bounded("sotw", STEP, async {
        let cp = ControlPlane::start().await?;
        cp.set([
            ClusterBuilder::eds("a").build().into(),
            ClusterBuilder::eds("b").build().into(),
            ClusterBuilder::eds("c").build().into(),
        ]);
        let mut n1 = AdsStream::open(&cp, "n1").await?;
        let mut n2 = AdsStream::open(&cp, "n2").await?;
        n1.subscribe(CDS, &["a", "b"]).await?;
        n2.subscribe(CDS, &["c"]).await?;
        let r1 = n1.next().await?;
        let r2 = n2.next().await?;
        ensure!(names(&r1) == ["a", "b"] && r1.version_info == "1", "{r1:?}");
        ensure!(names(&r2) == ["c"], "{r2:?}");
        ensure!(r1.nonce != r2.nonce, "nonces are unique across streams");
        // An ACK gets no response.
        n1.ack(&r1, &["a", "b"]).await?;
        n1.silent_for(Duration::from_millis(200)).await?;
        // A change of one cluster is a new version for every subscriber, each with its own.
        cp.set_one(ClusterBuilder::eds("c").service_name("c2").build());
        let r1 = n1.next().await?;
        let r2 = n2.next().await?;
        ensure!(names(&r1) == ["a", "b"] && r1.version_info == "2", "{r1:?}");
        ensure!(names(&r2) == ["c"] && r2.version_info == "2", "{r2:?}");
        // A wider subscription is answered at once.
        n2.send(CDS, &["a", "c"], &r2.version_info, &r2.nonce, None)
            .await?;
        ensure!(names(&n2.next().await?) == ["a", "c"]);
        // A deletion is an absent resource.
        cp.delete(CDS, &["b"]);
        ensure!(names(&n1.next().await?) == ["a"]);
        // The log has every request per node.
        let requests = cp.requests("n1");
        ensure!(requests.len() == 2, "{requests:?}");
        ensure!(requests[0].has_node && !requests[1].has_node);
        ensure!(requests[1].is_ack_of(CDS, "1"));
        ensure!(cp.requests("n2")[1].sorted_names() == ["a", "c"]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn never_answers_a_resource_that_never_existed_but_answers_its_deletion() -> anyhow::Result<()>
{
    bounded("missing", STEP, async {
        let cp = ControlPlane::start().await?;
        let mut s = AdsStream::open(&cp, "n").await?;
        s.subscribe(LDS, &["svc"]).await?;
        cp.set_one(ApiListener::rds("other", "rc").build());
        s.silent_for(Duration::from_millis(300)).await?;
        cp.set_one(ApiListener::rds("svc", "rc").build());
        let r = s.next().await?;
        ensure!(names(&r) == ["svc"], "{r:?}");
        s.ack(&r, &["svc"]).await?;
        cp.delete(LDS, &["svc"]);
        let r = s.next().await?;
        ensure!(r.resources.is_empty() && r.version_info == "3", "{r:?}");
        // Wildcard: an empty first LDS request gets everything.
        let mut w = AdsStream::open(&cp, "w").await?;
        w.subscribe(LDS, &[]).await?;
        ensure!(names(&w.next().await?) == ["other"]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn waits_on_acks_and_nacks_with_the_log_in_the_error() -> anyhow::Result<()> {
    bounded("waits", STEP, async {
        let cp = ControlPlane::start().await?;
        cp.set_one(ClusterBuilder::eds("a").build());
        let mut s = AdsStream::open(&cp, "n").await?;
        let mark = cp.mark();
        s.subscribe(CDS, &["a"]).await?;
        let r = s.next().await?;
        s.ack(&r, &["a"]).await?;
        let ack = cp
            .wait_for_ack("n", CDS, "1", mark, Duration::from_secs(2))
            .await?;
        ensure!(ack.response_nonce == r.nonce);
        cp.set_one(ClusterBuilder::eds("a").service_name("x").build());
        let r2 = s.next().await?;
        let mark = cp.mark();
        s.send(CDS, &["a"], "1", &r2.nonce, Some("bad cluster"))
            .await?;
        let nack = cp
            .wait_for_nack("n", CDS, mark, Duration::from_secs(2))
            .await?;
        ensure!(nack.version_info == "1" && nack.response_nonce == r2.nonce);
        ensure!(
            nack.error
                .as_ref()
                .is_some_and(|e| e.message == "bad cluster")
        );
        cp.wait_for_subscription("n", CDS, &["a"], LogMark::START, Duration::from_secs(1))
            .await?;
        // A wait that cannot succeed fails in time, with the node's log.
        let err = cp
            .wait_for_ack("n", CDS, "9", LogMark::START, Duration::from_millis(200))
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("an ACK of version 9 was found"))?;
        let text = err.to_string();
        ensure!(
            text.contains("ACK of Cluster version \"9\"") && text.contains("NACK(3: bad cluster)"),
            "{text}"
        );
        // The log also has the responses, with the nonce of each version.
        let responses = cp.responses("n");
        ensure!(responses.len() == 2 && responses[1].nonce == r2.nonce);
        ensure!(responses[1].resource_names == ["a"]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn overrides_stop_on_request_pause_and_raw_responses() -> anyhow::Result<()> {
    bounded("hooks", STEP, async {
        let cp = ControlPlane::start().await?;
        cp.set([
            ClusterBuilder::eds("a").build().into(),
            ClusterBuilder::eds("b").build().into(),
        ]);
        cp.set_override(
            CDS,
            ResponseOverride {
                version_info: Some("v-fixed".into()),
                nonce: Some("nonce-fixed".into()),
            },
        );
        let mut s = AdsStream::open(&cp, "n").await?;
        s.subscribe(CDS, &["a"]).await?;
        let r = s.next().await?;
        ensure!(
            r.version_info == "v-fixed" && r.nonce == "nonce-fixed",
            "{r:?}"
        );
        ensure!(cp.version_info(CDS) == "v-fixed");
        cp.clear_override(CDS);
        cp.resend(CDS);
        let r = s.next().await?;
        ensure!(r.version_info == "2" && r.nonce != "nonce-fixed", "{r:?}");

        // StopOnRequest: naming b silences CDS for this stream.
        cp.stop_on_request(CDS, "b");
        s.send(CDS, &["a", "b"], "2", &r.nonce, None).await?;
        s.silent_for(Duration::from_millis(300)).await?;
        cp.resume_on_request(CDS, "b");
        ensure!(names(&s.next().await?) == ["a", "b"]);

        // Pause: requests are logged, nothing is sent; resume sends what is due.
        cp.pause();
        cp.set_one(ClusterBuilder::eds("a").service_name("p").build());
        let mut e = AdsStream::open(&cp, "n").await?;
        e.subscribe(EDS, &["a"]).await?;
        s.silent_for(Duration::from_millis(300)).await?;
        cp.resume();
        ensure!(s.next().await?.version_info == "3");

        // A raw response goes as is to the node's streams.
        let raw = DiscoveryResponse {
            version_info: "raw".into(),
            resources: vec![Any {
                type_url: ResourceType::Listener.type_url().into(),
                value: vec![0xff, 0xff],
            }],
            type_url: ResourceType::Listener.type_url().into(),
            nonce: "raw-nonce".into(),
            ..Default::default()
        };
        ensure!(cp.push_raw("n", raw.clone()) == 2);
        ensure!(s.next().await? == raw);
        ensure!(cp.push_raw("nobody", raw) == 0);
        let logged = cp.responses("n");
        ensure!(
            logged.last().is_some_and(|r| r.raw
                && r.resource_names == ["<type.googleapis.com/envoy.config.listener.v3.Listener>"]),
            "{logged:?}"
        );
        // A raw resource set under a name is served under that name.
        cp.set_one(Resource::raw(
            LDS,
            "junk",
            Any {
                type_url: "x".into(),
                value: vec![1],
            },
        ));
        let mut l = AdsStream::open(&cp, "l").await?;
        l.subscribe(LDS, &["junk"]).await?;
        let r = l.next().await?;
        ensure!(r.resources[0].type_url == "x");
        ensure!(cp.responses("l")[0].resource_names == ["junk"]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn kill_refuse_stop_and_restart() -> anyhow::Result<()> {
    bounded("faults", STEP, async {
        let cp = ControlPlane::start().await?;
        cp.set_one(ClusterBuilder::eds("a").build());
        let mut s = AdsStream::open(&cp, "n").await?;
        s.subscribe(CDS, &["a"]).await?;
        s.next().await?;
        ensure!(cp.open_streams("n") == 1);

        // Kill: the stream ends UNAVAILABLE; refusing: a new one fails before any response.
        ensure!(cp.kill_streams_and_refuse(Duration::from_millis(500)) == 1);
        let status = s.end().await?;
        ensure!(status.code() == Code::Unavailable, "{status:?}");
        match AdsStream::open(&cp, "n").await {
            Err(status) => ensure!(status.code() == Code::Unavailable, "{status:?}"),
            Ok(mut s) => {
                let status = s.end().await?;
                ensure!(status.code() == Code::Unavailable, "{status:?}");
            }
        }
        ensure!(
            cp.log()
                .iter()
                .any(|e| matches!(e, LogEntry::Refused { .. }))
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        let mut s = AdsStream::open(&cp, "n").await?;
        s.subscribe(CDS, &["a"]).await?;
        ensure!(s.next().await?.version_info == "1");

        // Stop: the port is closed and the stream dropped; restart: same port, same data.
        let addr = cp.addr();
        cp.stop();
        ensure!(!cp.is_serving());
        let status = s.end().await?;
        ensure!(status.code() != Code::Ok, "{status:?}");
        ensure!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "port still open"
        );
        cp.set_one(ClusterBuilder::eds("a").service_name("later").build());
        cp.restart().await?;
        ensure!(cp.addr() == addr && cp.is_serving());
        let mut s = AdsStream::open(&cp, "n").await?;
        s.send(CDS, &["a"], "1", "", None).await?;
        ensure!(s.next().await?.version_info == "2");
        let events = cp.stream_events("n");
        ensure!(
            events.iter().filter(|e| e.ended.is_some()).count() >= 2,
            "{events:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn ping_pong_resources_decode_as_grpc_expects() -> anyhow::Result<()> {
    use prost::Message as _;
    let addr = "127.0.0.1:1".parse()?;
    let resources = ping_pong("svc", &[addr]);
    let kinds: Vec<_> = resources
        .iter()
        .map(|r| (r.kind, r.name.as_str()))
        .collect();
    ensure!(
        kinds
            == [
                (LDS, "svc"),
                (ResourceType::RouteConfiguration, "svc-rc"),
                (CDS, "svc-c"),
                (EDS, "svc-c")
            ]
    );
    ensure!(Listener::decode(resources[0].body.value.as_slice())?.name == "svc");
    Ok(())
}

#[tokio::test]
async fn backends_answer_with_their_hostname_and_honour_rpc_behavior() -> anyhow::Result<()> {
    bounded("backends", STEP, async {
        let mut b = Backend::start("b1").await?;
        let ch = channel(b.addr()).await?;
        let md = unary(&ch, UNARY, &[], Duration::from_secs(5)).await?;
        ensure!(md.get("hostname").is_some_and(|v| v == "b1"));
        ensure!(md.get("x-echo-backend").is_some_and(|v| v == "b1"));

        let err = unary(
            &ch,
            EMPTY,
            &[("rpc-behavior", "error-code-7")],
            Duration::from_secs(5),
        )
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("error-code-7 succeeded"))?;
        ensure!(err.code() == Code::PermissionDenied, "{err:?}");
        // The hostname= prefix applies the behaviour only on the named backend.
        unary(
            &ch,
            UNARY,
            &[("rpc-behavior", "hostname=other error-code-7")],
            Duration::from_secs(5),
        )
        .await?;

        let t = tokio::time::Instant::now();
        unary(
            &ch,
            UNARY,
            &[("rpc-behavior", "sleep-1")],
            Duration::from_secs(5),
        )
        .await?;
        ensure!(t.elapsed() >= Duration::from_secs(1));

        // keep-open: in flight until the deadline.
        let held = {
            let ch = ch.clone();
            tokio::spawn(async move {
                unary(
                    &ch,
                    UNARY,
                    &[("rpc-behavior", "keep-open")],
                    Duration::from_secs(3),
                )
                .await
            })
        };
        // The server counts the call once its handler runs; polled, as a busy machine may
        // take a while to get there (well within the 3 s deadline).
        eventually(
            "the held call in flight",
            Duration::from_secs(2),
            Duration::from_millis(10),
            async || {
                ensure!(b.in_flight() == 1, "in flight: {}", b.in_flight());
                Ok(())
            },
        )
        .await?;
        let err = held
            .await?
            .err()
            .ok_or_else(|| anyhow::anyhow!("keep-open answered"))?;
        // tonic enforces the deadline itself and reports it as CANCELLED "Timeout expired".
        ensure!(
            matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
            "{err:?}"
        );
        // The server lets go of the call when its connection task handles the reset the
        // client sent at the deadline.
        eventually(
            "the call let go",
            Duration::from_secs(5),
            Duration::from_millis(10),
            async || {
                ensure!(b.in_flight() == 0, "still in flight: {}", b.in_flight());
                Ok(())
            },
        )
        .await?;

        // A default behaviour applies to every call.
        b.set_behavior(Some("error-code-14"));
        ensure!(
            unary(&ch, UNARY, &[], Duration::from_secs(5))
                .await
                .is_err()
        );
        b.set_behavior(None);

        // Stop and restart on the same port.
        let addr = b.addr();
        b.stop();
        ensure!(!b.is_running());
        ensure!(
            unary(&ch, UNARY, &[], Duration::from_millis(500))
                .await
                .is_err()
        );
        b.restart().await?;
        ensure!(b.addr() == addr);
        let ch = channel(addr).await?;
        unary(&ch, UNARY, &[], Duration::from_secs(5)).await?;
        ensure!(b.calls() >= 7, "calls {}", b.calls());
        Ok(())
    })
    .await
}
