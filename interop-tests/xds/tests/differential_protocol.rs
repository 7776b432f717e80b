//! The differential harness (issue 11), xDS protocol scenarios: what each client asks the
//! control plane for (its logged DiscoveryRequests) and what its CSDS dump says, compared
//! between gRPC C-core (`grpcio`) and the library: NACKs (A46 partial ones too), the 15 s
//! does-not-exist timer (A57), a lost control plane, deleted resources (A88), reconnects.
//! grpc-js-xds runs every scenario but the convergence measurement as a second oracle,
//! held to its own documented behaviour where it differs from C-core.
//!
//! Also the convergence measurement: from the control plane's response to the first call
//! the new configuration answers (`cargo test … convergence -- --nocapture`).
//!
//! The 15 s timer scenario runs while the others do (the harness runs tests in parallel).

mod common;

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context as _, bail, ensure};
use common::{Client, Clients, UNARY, addrs, bounded, eventually, ping_pong, warm_up};
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use grpcroute_xds_control_plane::{
    CallSpec, ControlPlane, CsdsResource, OracleKind, ResourceType,
    builders::{
        ApiListener, ClusterBuilder, RouteBuilder, load_assignment, route_configuration,
        virtual_host,
    },
    control_plane::{LogMark, LoggedRequest},
    start_backends,
};

const LIMIT: Duration = Duration::from_secs(120);
const WAIT: Duration = Duration::from_secs(15);
const PY: OracleKind = OracleKind::Python;
const JS: OracleKind = OracleKind::Node;
const LDS: ResourceType = ResourceType::Listener;
const RDS: ResourceType = ResourceType::RouteConfiguration;
const CDS: ResourceType = ResourceType::Cluster;
const EDS: ResourceType = ResourceType::ClusterLoadAssignment;

/// The CSDS entry of `kind`/`name` of `client`, or an error naming the dump.
async fn csds(client: Client<'_>, kind: ResourceType, name: &str) -> anyhow::Result<CsdsResource> {
    let dump = client.csds().await?;
    dump.iter()
        .find(|r| r.kind() == Some(kind) && r.name == name)
        .cloned()
        .with_context(|| format!("{}: no {kind} {name} in CSDS {dump:#?}", client.name()))
}

fn rds_to(cluster: &str) -> envoy_types::pb::envoy::config::route::v3::RouteConfiguration {
    route_configuration(
        "svc-rc",
        vec![virtual_host(
            "vh",
            &["*"],
            vec![RouteBuilder::prefix("/").cluster(cluster).build()],
        )],
    )
}

/// S19: an invalid RDS update (a route without a path specifier) is NACKed with the last
/// ACKed version, the rejected response's nonce and an error; CSDS shows NACKED with the
/// old version and the rejected one; traffic stays on the old routes; the next valid
/// update is ACKed and applies. Then an invalid EDS update: NACKed with the last ACKed
/// version, the last good endpoints stay in use. Both oracles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_keeps_the_previous_version() -> anyhow::Result<()> {
    bounded("nack", LIMIT, async {
        let cp = ControlPlane::start().await?;
        let backends = start_backends("b", 2).await?;
        let mut resources = ping_pong("svc", &addrs(&backends[..1]));
        resources.push(ClusterBuilder::eds("other").build().into());
        resources.push(load_assignment("other", addrs(&backends[1..])).into());
        cp.set(resources);
        let clients = Clients::start(&cp, &[PY, JS], "nack").await?;
        for client in clients.all() {
            warm_up(client, "xds:///svc", &["b0"]).await?;
            cp.wait_for_ack(client.node_id(), RDS, "1", LogMark::START, WAIT)
                .await?;
        }
        let mark = cp.mark();
        cp.set_one(route_configuration(
            "svc-rc",
            vec![virtual_host(
                "vh",
                &["*"],
                vec![
                    RouteBuilder::with_match(Default::default())
                        .cluster("other")
                        .build(),
                ],
            )],
        ));
        let spec = CallSpec::new("xds:///svc", UNARY).count(20);
        let mut codes = BTreeMap::new();
        for client in clients.all() {
            let (who, node) = (client.name(), client.node_id());
            let nack = cp.wait_for_nack(node, RDS, mark, WAIT).await?;
            let rejected = cp
                .responses(node)
                .into_iter()
                .find(|r| r.type_url == RDS.type_url() && r.version_info == "2")
                .context("version 2 was not sent")?;
            ensure!(
                nack.version_info == "1",
                "{who}: the NACK keeps the ACKed version: {nack:?}"
            );
            ensure!(
                nack.response_nonce == rejected.nonce,
                "{who}: the NACK carries the rejected nonce: {nack:?}"
            );
            ensure!(nack.resource_names == ["svc-rc"], "{who}: {nack:?}");
            let error = nack.error.clone().context("no error detail")?;
            ensure!(!error.message.is_empty(), "{who}: {nack:?}");
            println!(
                "nack {who}: error_detail code {}: {}",
                error.code, error.message
            );
            codes.insert(who.clone(), error.code);
            let state = csds(client, RDS, "svc-rc").await?;
            println!("nack {who}: CSDS {state:?}");
            ensure!(
                state.status == "NACKED" && state.version == "1",
                "{who}: {state:?}"
            );
            ensure!(
                state.error_version.as_deref() == Some("2"),
                "{who}: {state:?}"
            );
            ensure!(
                state.error.as_deref().is_some_and(|e| !e.is_empty()),
                "{who}: {state:?}"
            );
            let r = client.call(&spec).await?;
            ensure!(
                r.peer("b0") == 20,
                "{who}: traffic stays on version 1: {r:?}"
            );
            // Nothing else: one NACK, no retry of it.
            let after: Vec<LoggedRequest> = cp
                .requests(node)
                .into_iter()
                .filter(|r| r.kind() == Some(RDS) && r.at >= nack.at)
                .collect();
            ensure!(
                after.len() == 1,
                "{who}: RDS requests after the NACK: {after:?}"
            );
        }
        // C-core answers INVALID_ARGUMENT, grpc-js UNAVAILABLE (README quirks); the library
        // follows C-core.
        if let Some(c) = codes.get(&PY.to_string()) {
            ensure!(*c == 3, "C-core NACK code {c}");
            ensure!(codes.get("library") == Some(c), "NACK codes: {codes:?}");
        }
        if let Some(c) = codes.get(&JS.to_string()) {
            ensure!(*c == 14, "grpc-js NACK code {c}");
        }
        let mark = cp.mark();
        cp.set_one(rds_to("other"));
        for client in clients.all() {
            let who = client.name();
            let ack = cp
                .wait_for_ack(client.node_id(), RDS, "3", mark, WAIT)
                .await?;
            ensure!(ack.error.is_none(), "{who}: {ack:?}");
            eventually(
                &format!("{who}: version 3 applies"),
                Duration::from_secs(5),
                Duration::from_millis(50),
                async || {
                    let r = client.call(&spec).await?;
                    ensure!(r.peer("b1") == 20, "{r:?}");
                    Ok(())
                },
            )
            .await?;
            let state = csds(client, RDS, "svc-rc").await?;
            ensure!(
                state.status == "ACKED" && state.version == "3",
                "{who}: {state:?}"
            );
        }
        // EDS too: an invalid assignment for `other` (a priority gap) is NACKed with the
        // last ACKed version; its endpoints stay in use.
        use grpcroute_xds_control_plane::builders::{LoadAssignmentBuilder, Locality};
        let good = cp.version_info(EDS);
        let mark = cp.mark();
        cp.set_one(
            LoadAssignmentBuilder::new("other")
                .locality(Locality::new("p0").priority(0).endpoint(backends[0].addr()))
                .locality(Locality::new("p2").priority(2).endpoint(backends[0].addr()))
                .build(),
        );
        for client in clients.all() {
            let who = client.name();
            let nack = cp.wait_for_nack(client.node_id(), EDS, mark, WAIT).await?;
            ensure!(
                nack.version_info == good,
                "{who}: EDS NACK keeps version {good}: {nack:?}"
            );
            let r = client.call(&spec).await?;
            ensure!(
                r.peer("b1") == 20,
                "{who}: the last good endpoints stay: {r:?}"
            );
            let state = csds(client, EDS, "other").await?;
            ensure!(
                state.status == "NACKED" && state.version == good,
                "{who}: {state:?}"
            );
            println!("nack {who}: EDS NACKed, version {good} kept, traffic on its endpoints");
        }
        Ok(())
    })
    .await
}

/// A46: one CDS response with a valid change to cluster `ca` (new endpoints) and an
/// invalid `cb` (a STATIC cluster): NACKed as a whole, but `ca`'s change applies and `cb`
/// keeps its last good copy. CSDS: `ca` ACKED at the new version, `cb` NACKED at the old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_nack_applies_the_valid_resources() -> anyhow::Result<()> {
    bounded("partial_nack", LIMIT, async {
        let cp = ControlPlane::start().await?;
        let backends = start_backends("b", 3).await?;
        cp.set([
            ApiListener::rds("svc", "rc").build().into(),
            route_configuration(
                "rc",
                vec![virtual_host(
                    "vh",
                    &["*"],
                    vec![
                        RouteBuilder::prefix("/a.").cluster("ca").build(),
                        RouteBuilder::prefix("/b.").cluster("cb").build(),
                    ],
                )],
            )
            .into(),
            ClusterBuilder::eds("ca").build().into(),
            ClusterBuilder::eds("cb").build().into(),
            load_assignment("ca", [backends[0].addr()]).into(),
            load_assignment("cb", [backends[1].addr()]).into(),
            load_assignment("ca2", [backends[2].addr()]).into(),
        ]);
        let clients = Clients::start(&cp, &[PY, JS], "pnack").await?;
        let (a, b) = (
            CallSpec::new("xds:///svc", "/a.S/M").count(10),
            CallSpec::new("xds:///svc", "/b.S/M").count(10),
        );
        for client in clients.all() {
            common::warm_up_on(client, "xds:///svc", "/a.S/M", &["b0"]).await?;
            common::warm_up_on(client, "xds:///svc", "/b.S/M", &["b1"]).await?;
            cp.wait_for_ack(client.node_id(), CDS, "1", LogMark::START, WAIT)
                .await?;
        }
        let mut invalid = ClusterBuilder::eds("cb");
        invalid.cluster_mut().cluster_discovery_type =
            Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32));
        let mark = cp.mark();
        cp.set([
            ClusterBuilder::eds("ca").service_name("ca2").build().into(),
            invalid.build().into(),
        ]);
        for client in clients.all() {
            let (who, node) = (client.name(), client.node_id());
            let nack = cp.wait_for_nack(node, CDS, mark, WAIT).await?;
            // C-core moves the version on when a response had valid resources, even if
            // it NACKs others: the NACK says "2".
            let rejected = cp
                .responses(node)
                .into_iter()
                .find(|r| r.type_url == CDS.type_url() && r.version_info == "2")
                .context("CDS version 2 was not sent")?;
            ensure!(
                nack.version_info == "2" && nack.response_nonce == rejected.nonce,
                "{who}: {nack:?}"
            );
            println!(
                "partial_nack {who}: NACK version {:?}: {:?}",
                nack.version_info, nack.error
            );
            // ca follows its new EDS service name.
            cp.wait_for_subscription(node, EDS, &["ca2", "cb"], mark, WAIT)
                .await?;
            eventually(
                &format!("{who}: ca moved"),
                Duration::from_secs(5),
                Duration::from_millis(50),
                async || {
                    let r = client.call(&a).await?;
                    ensure!(r.peer("b2") == 10, "{r:?}");
                    Ok(())
                },
            )
            .await?;
            let r = client.call(&b).await?;
            ensure!(
                r.peer("b1") == 10,
                "{who}: cb keeps its last good copy: {r:?}"
            );
            let (ca, cb) = (
                csds(client, CDS, "ca").await?,
                csds(client, CDS, "cb").await?,
            );
            println!("partial_nack {who}: CSDS ca {ca:?}\n  cb {cb:?}");
            ensure!(ca.status == "ACKED" && ca.version == "2", "{who}: {ca:?}");
            ensure!(
                cb.status == "NACKED"
                    && cb.version == "1"
                    && cb.error_version.as_deref() == Some("2"),
                "{who}: {cb:?}"
            );
        }
        Ok(())
    })
    .await
}

/// S20 / A57: a listener the control plane never sends (`nowhere`), and a cluster it
/// never sends (`nocluster-c`, named by the served listener `nocluster`). CSDS turns each
/// DOES_NOT_EXIST 15 s after its subscription; C-core and the library then fail the
/// waiting call UNAVAILABLE; grpc-js-xds keeps a call to the missing listener waiting
/// until its deadline (README quirk). Served later, both work. All clients and both
/// resources at once (one 15 s wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_resources_fail_after_the_timer() -> anyhow::Result<()> {
    bounded("missing_resources", Duration::from_secs(90), async {
        let cp = ControlPlane::start().await?;
        let backends = start_backends("b", 1).await?;
        let nocluster = ping_pong("nocluster", &addrs(&backends));
        // The listener and its routes; the cluster and its endpoints come later.
        cp.set(nocluster[..2].to_vec());
        let clients = Clients::start(&cp, &[PY, JS], "miss").await?;
        let deadline = Duration::from_secs(20);
        let missing = [("nowhere", LDS, "nowhere"), ("nocluster", CDS, "nocluster-c")];
        let one = async |client: Client<'_>, (listener, kind, name): (&str, ResourceType, &str)| -> anyhow::Result<String> {
            let who = client.name();
            let started = tokio::time::Instant::now();
            let target = format!("xds:///{listener}");
            let call = async {
                let r = client.call(&CallSpec::new(&target, UNARY).timeout(deadline)).await?;
                anyhow::Ok((r, started.elapsed()))
            };
            let timer = async {
                let subscribed = cp
                    .wait_for_request(client.node_id(), LogMark::START, WAIT, &format!("{kind} {name} subscribed"), |r| {
                        r.kind() == Some(kind) && r.resource_names.iter().any(|n| n == name)
                    })
                    .await?
                    .at;
                loop {
                    let state = client.csds_of(kind, name).await?.map(|r| r.status);
                    if state.as_deref() == Some("DOES_NOT_EXIST") {
                        return anyhow::Ok(subscribed.elapsed());
                    }
                    ensure!(subscribed.elapsed() < Duration::from_secs(20), "{who}: {kind} {name} still {state:?} after 20 s");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            };
            let ((r, call_took), timer_took) = tokio::try_join!(call, timer)?;
            let line = format!("{who}: {kind} {name} DOES_NOT_EXIST after {timer_took:.1?}; the call {:?} after {call_took:.1?} {:?}", r.by_status, r.errors);
            println!("missing_resources {line}");
            // The timer is 15 s. The upper bounds leave room for a busy machine (an oracle's
            // call was seen failing at 18.3 s under load) while staying below the 20 s
            // deadline: an UNAVAILABLE before it is the timer's doing, not the deadline's.
            ensure!(timer_took >= Duration::from_secs(14) && timer_took <= Duration::from_secs(19), "{line}");
            if client.c_core_like() || kind == CDS {
                ensure!(r.status("UNAVAILABLE") == 1, "{line}");
                ensure!(call_took >= Duration::from_secs(14) && call_took < deadline - Duration::from_millis(500), "{line}");
            } else {
                ensure!(r.status("DEADLINE_EXCEEDED") == 1 && call_took >= deadline - Duration::from_secs(1), "{line}");
            }
            ensure!(
                cp.responses(client.node_id()).iter().all(|r| !r.resource_names.iter().any(|n| n == name)),
                "{who}: {}",
                cp.render_log(client.node_id())
            );
            Ok(line)
        };
        let runs = clients.all().into_iter().flat_map(|c| missing.iter().map(move |m| one(c, *m)));
        for l in futures_util::future::join_all(runs).await {
            l?;
        }
        // Served later: the subscriptions are still there, calls work.
        let mut later = ping_pong("nowhere", &addrs(&backends));
        later.extend(nocluster[2..].iter().cloned());
        cp.set(later);
        let served = tokio::time::Instant::now();
        let recover = async |client: Client<'_>, (listener, kind, name): (&str, ResourceType, &str)| -> anyhow::Result<()> {
            let who = client.name();
            let spec = CallSpec::new(&format!("xds:///{listener}"), UNARY).count(5).timeout(Duration::from_secs(2));
            let mut failed = 0;
            eventually(&format!("{who}: {listener} once served"), Duration::from_secs(30), Duration::from_millis(20), async || {
                let r = client.call(&spec).await?;
                failed += r.failures();
                ensure!(r.peer("b0") == 5, "{r:?}");
                Ok(())
            })
            .await?;
            println!("missing_resources {who}: {listener} served {:.1?} after {kind} {name} appeared ({failed} calls failed meanwhile)", served.elapsed());
            let state = csds(client, kind, name).await?;
            ensure!(state.status == "ACKED", "{who}: {state:?}");
            Ok(())
        };
        let runs = clients.all().into_iter().flat_map(|c| missing.iter().map(move |m| recover(c, *m)));
        for r in futures_util::future::join_all(runs).await {
            r?;
        }
        Ok(())
    })
    .await
}

/// A57: the 15 s does-not-exist timer starts only once the client is connected. The
/// control plane is down when the clients start (port closed) and stays down for 17 s:
/// a call fails UNAVAILABLE at once (C-core and the library; grpc-js-xds waits, README
/// quirk), and after 16.5 s the listener is still REQUESTED, not DOES_NOT_EXIST. Back
/// up, calls succeed (after each client's reconnect backoff) and the listener is ACKED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn does_not_exist_timer_waits_for_a_connection() -> anyhow::Result<()> {
    bounded("timer_waits_for_a_connection", LIMIT, async {
        let cp = ControlPlane::start().await?;
        let backends = start_backends("b", 1).await?;
        cp.set(ping_pong("svc", &addrs(&backends)));
        cp.stop();
        let clients = Clients::start(&cp, &[PY, JS], "down").await?;
        let down_for = Duration::from_secs(17);
        let started = tokio::time::Instant::now();
        let one = async |client: Client<'_>| -> anyhow::Result<String> {
            let who = client.name();
            let r = client
                .call(&CallSpec::new("xds:///svc", UNARY).timeout(Duration::from_secs(2)).record(true))
                .await?;
            let ms = r.calls.first().map_or(f64::NAN, |c| c.ms);
            let want = if client.c_core_like() { "UNAVAILABLE" } else { "DEADLINE_EXCEEDED" };
            ensure!(r.status(want) == 1, "{who}: a call while down: {r:?}");
            tokio::time::sleep_until(started + down_for - Duration::from_millis(500)).await;
            let state = client.csds_of(LDS, "svc").await?.map(|r| r.status);
            ensure!(state.as_deref() == Some("REQUESTED"), "{who}: after 16.5 s down: {state:?}");
            let spec = CallSpec::new("xds:///svc", UNARY).timeout(Duration::from_secs(2));
            eventually(&format!("{who}: calls once the control plane is back"), Duration::from_secs(50), Duration::from_millis(200), async || {
                let r = client.call(&spec).await?;
                ensure!(r.peer("b0") == 1, "{r:?}");
                Ok(())
            })
            .await?;
            let state = csds(client, LDS, "svc").await?;
            ensure!(state.status == "ACKED", "{who}: {state:?}");
            let line = format!(
                "{who}: a call while down {want} after {ms:.0} ms; REQUESTED after 16.5 s down; served {:.1?} after the start ({:.1?} after the restart)",
                started.elapsed(),
                started.elapsed().saturating_sub(down_for)
            );
            println!("timer_waits_for_a_connection {line}");
            Ok(line)
        };
        let restart = async {
            tokio::time::sleep_until(started + down_for).await;
            cp.restart().await?;
            anyhow::Ok(())
        };
        let calls = futures_util::future::join_all(clients.all().into_iter().map(one));
        let (restarted, lines) = tokio::join!(restart, calls);
        restarted?;
        for l in lines {
            l?;
        }
        Ok(())
    })
    .await
}

/// The first request of each type on `stream`.
fn first_requests(requests: &[LoggedRequest], stream: u64) -> BTreeMap<String, LoggedRequest> {
    let mut out = BTreeMap::new();
    for r in requests.iter().filter(|r| r.stream == stream) {
        out.entry(r.type_url.clone()).or_insert_with(|| r.clone());
    }
    out
}

/// Per type, the version and names of the last ACK on streams before `stream`.
fn last_acks(requests: &[LoggedRequest], stream: u64) -> BTreeMap<String, (String, Vec<String>)> {
    let mut out = BTreeMap::new();
    for r in requests
        .iter()
        .filter(|r| r.stream < stream && r.error.is_none() && !r.response_nonce.is_empty())
    {
        out.insert(
            r.type_url.clone(),
            (r.version_info.clone(), r.sorted_names()),
        );
    }
    out
}

/// Asserts that `node`'s newest stream opened by resending every subscription with its
/// last ACKed version and an empty nonce, the node on its first request only.
fn resent_on_new_stream(cp: &ControlPlane, who: &str, node: &str) -> anyhow::Result<()> {
    let requests = cp.requests(node);
    let stream = requests
        .iter()
        .map(|r| r.stream)
        .max()
        .context("no requests")?;
    let firsts = first_requests(&requests, stream);
    let acks = last_acks(&requests, stream);
    ensure!(
        firsts.keys().collect::<Vec<_>>() == acks.keys().collect::<Vec<_>>(),
        "{who}: types resent {:?}, ACKed before {:?}\n{}",
        firsts.keys(),
        acks.keys(),
        cp.render_log(node)
    );
    for (t, r) in &firsts {
        let (version, names) = &acks[t];
        ensure!(
            r.version_info == *version && r.response_nonce.is_empty() && r.sorted_names() == *names,
            "{who}: first {t} request on the new stream {r:?}, last ACK {version} {names:?}"
        );
    }
    let on_stream: Vec<&LoggedRequest> = requests.iter().filter(|r| r.stream == stream).collect();
    ensure!(
        on_stream.first().is_some_and(|r| r.has_node),
        "{who}: node on the new stream's first request"
    );
    ensure!(
        on_stream.iter().skip(1).all(|r| !r.has_node),
        "{who}: node only on the first request"
    );
    println!(
        "{who}: new stream {stream} resent {:?}",
        firsts
            .iter()
            .map(|(t, r)| (
                t.rsplit('.').next().unwrap_or(t).to_string(),
                r.version_info.clone(),
                r.sorted_names()
            ))
            .collect::<Vec<_>>()
    );
    Ok(())
}

/// A57 reconnect: the control plane ends the stream (the connection stays): the client
/// opens a new one resending every subscription with its last version and an empty nonce,
/// the node on the first request only; traffic never stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_resends_subscriptions() -> anyhow::Result<()> {
    bounded("reconnect", LIMIT, async {
        let cp = ControlPlane::start().await?;
        let backends = start_backends("b", 2).await?;
        cp.set(ping_pong("svc", &addrs(&backends)));
        // A second version of every type, so the versions resent are not all "1".
        cp.resend(RDS);
        cp.resend(EDS);
        let clients = Clients::start(&cp, &[PY, JS], "rec").await?;
        for client in clients.all() {
            warm_up(client, "xds:///svc", &["b0", "b1"]).await?;
            for (t, v) in [(LDS, "1"), (RDS, "2"), (CDS, "1"), (EDS, "2")] {
                cp.wait_for_ack(client.node_id(), t, v, LogMark::START, WAIT)
                    .await?;
            }
        }
        let mark = cp.mark();
        ensure!(cp.kill_streams() >= 2, "streams killed");
        for client in clients.all() {
            let who = client.name();
            // Each type comes back on a new stream; the control plane answers again (SotW).
            for t in ResourceType::ALL {
                cp.wait_for_request(
                    client.node_id(),
                    mark,
                    WAIT,
                    &format!("{t} on a new stream"),
                    |r| r.kind() == Some(t) && r.response_nonce.is_empty(),
                )
                .await?;
            }
            resent_on_new_stream(&cp, &who, client.node_id())?;
            let r = client
                .call(&CallSpec::new("xds:///svc", UNARY).count(20))
                .await?;
            ensure!(r.failures() == 0, "{who}: {r:?}");
        }
        Ok(())
    })
    .await
}

/// S21 / A57, A88: the control plane goes down (port closed). Cached configuration keeps
/// serving; a new target fails at once (UNAVAILABLE); back up, each client resends its
/// subscriptions with the last versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_loss_keeps_the_cache() -> anyhow::Result<()> {
    bounded("control_plane_loss", LIMIT, async {
        let cp = ControlPlane::start().await?;
        let backends = start_backends("b", 2).await?;
        cp.set(ping_pong("svc", &addrs(&backends)));
        let clients = Clients::start(&cp, &[PY, JS], "loss").await?;
        for client in clients.all() {
            warm_up(client, "xds:///svc", &["b0", "b1"]).await?;
            cp.wait_for_ack(client.node_id(), EDS, "1", LogMark::START, WAIT).await?;
        }
        cp.stop();
        for client in clients.all() {
            let who = client.name();
            // Let the client see the stream break.
            eventually(&format!("{who}: sees the loss"), Duration::from_secs(5), Duration::from_millis(50), async || {
                ensure!(cp.open_streams(client.node_id()) == 0);
                Ok(())
            })
            .await?;
            let r = client.call(&CallSpec::new("xds:///svc", UNARY).count(20)).await?;
            ensure!(r.failures() == 0, "{who}: cached config keeps serving: {r:?}");
            let fresh = client.call(&CallSpec::new("xds:///fresh", UNARY).timeout(Duration::from_secs(3)).record(true)).await?;
            let ms = fresh.calls.first().map_or(f64::NAN, |c| c.ms);
            println!("control_plane_loss {who}: cached target {:?}; new target {:?} {:?} after {ms:.0} ms", r.by_peer, fresh.by_status, fresh.errors);
            if client.c_core_like() {
                ensure!(fresh.status("UNAVAILABLE") == 1 && ms < 2_000.0, "{who}: a new target while down: {fresh:?}");
            } else {
                // grpc-js-xds keeps calls "waiting for name resolution" until their
                // deadline (README quirks), as with a missing listener.
                ensure!(fresh.status("DEADLINE_EXCEEDED") == 1, "{who}: a new target while down: {fresh:?}");
            }
            let state = csds(client, LDS, "svc").await?;
            ensure!(state.status == "ACKED" && state.version == "1", "{who}: {state:?}");
        }
        // Streams numbered above these are the ones opened after the restart.
        let old_streams: BTreeMap<String, u64> = clients
            .all()
            .into_iter()
            .map(|c| {
                let last = cp.requests(c.node_id()).iter().map(|r| r.stream).max().unwrap_or(0);
                (c.node_id().to_string(), last)
            })
            .collect();
        let mark = cp.mark();
        cp.restart().await?;
        for client in clients.all() {
            let who = client.name();
            let old_stream = old_streams.get(client.node_id()).copied().unwrap_or(0);
            for t in ResourceType::ALL {
                cp.wait_for_request(client.node_id(), mark, Duration::from_secs(30), &format!("{t} after the restart"), |r| r.kind() == Some(t)).await?;
            }
            // The new target was asked for too (C-core: by its own XdsClient, on a stream
            // of its own): look at the latest stream since the restart that resends `svc`,
            // every type of it. (Under load C-core was seen with a later stream carrying
            // RDS but not, or not yet, LDS: wait for a complete one rather than take the
            // highest number.)
            let (svc_stream, firsts) = eventually(&format!("{who}: a new stream resending every type of svc"), Duration::from_secs(10), Duration::from_millis(50), async || {
                let requests = cp.requests(client.node_id());
                let mut streams: Vec<u64> = requests
                    .iter()
                    .filter(|r| r.stream > old_stream && r.kind() == Some(RDS) && r.sorted_names() == ["svc-rc"])
                    .map(|r| r.stream)
                    .collect();
                streams.sort_unstable();
                streams.dedup();
                let complete = streams.iter().rev().find_map(|&s| {
                    let firsts = first_requests(&requests, s);
                    ResourceType::ALL
                        .iter()
                        .all(|t| firsts.contains_key(t.type_url()))
                        .then_some((s, firsts))
                });
                complete.with_context(|| format!("streams with its RDS: {streams:?}:\n{}", cp.render_log(client.node_id())))
            })
            .await?;
            for (t, v) in [(LDS, "1"), (RDS, "1"), (CDS, "1"), (EDS, "1")] {
                let r = firsts.get(t.type_url()).with_context(|| format!("{who}: no {t} on stream {svc_stream}"))?;
                ensure!(r.version_info == v && r.response_nonce.is_empty(), "{who}: {r:?}");
            }
            println!("control_plane_loss {who}: LDS names on the new stream {:?}", firsts.get(LDS.type_url()).map(|r| r.sorted_names()));
            let r = client.call(&CallSpec::new("xds:///svc", UNARY).count(20)).await?;
            ensure!(r.failures() == 0, "{who}: {r:?}");
        }
        Ok(())
    })
    .await
}

/// S25 stream churn (A57): the control plane ends every stream each 250 ms for 3 s while
/// the endpoints change: no call fails, and the last change applies. Then it ends the
/// streams and refuses new ones (UNAVAILABLE before any response) for 3 s: the cached
/// target keeps serving; a new target fails UNAVAILABLE at once meanwhile (C-core and the
/// library; grpc-js-xds keeps it waiting, README quirk) and works once the control
/// plane answers again (after the client's backoff).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_churn_and_refused_streams() -> anyhow::Result<()> {
    bounded("stream_churn", LIMIT, async {
        let cp = ControlPlane::start().await?;
        let backends = start_backends("b", 2).await?;
        let mut resources = ping_pong("svc", &addrs(&backends));
        resources.extend(ping_pong("fresh", &addrs(&backends[..1])));
        cp.set(resources);
        let clients = Clients::start(&cp, &[PY, JS], "churn").await?;
        for client in clients.all() {
            warm_up(client, "xds:///svc", &["b0", "b1"]).await?;
        }
        let churn = async {
            for i in 0..12u32 {
                tokio::time::sleep(Duration::from_millis(250)).await;
                cp.kill_streams();
                let b = if i % 2 == 0 { &backends[..1] } else { &backends[..] };
                cp.set_one(load_assignment("svc-c", addrs(b)));
            }
            // The last change: b1 only.
            cp.set_one(load_assignment("svc-c", addrs(&backends[1..])));
            anyhow::Ok(())
        };
        let calls = async |client: Client<'_>| -> anyhow::Result<()> {
            let spec = CallSpec::new("xds:///svc", UNARY).count(1);
            let mut failed = Vec::new();
            for _ in 0..60 {
                let r = client.call(&spec).await?;
                if r.failures() > 0 {
                    failed.push(format!("{:?}", r.errors));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ensure!(failed.is_empty(), "{}: calls failed during the churn: {failed:?}", client.name());
            Ok(())
        };
        let during = futures_util::future::join_all(clients.all().into_iter().map(calls));
        let (churned, during) = tokio::join!(churn, during);
        churned?;
        for r in during {
            r?;
        }
        let only_b1 = CallSpec::new("xds:///svc", UNARY).count(10);
        for client in clients.all() {
            let who = client.name();
            eventually(&format!("{who}: the last change applies"), Duration::from_secs(10), Duration::from_millis(50), async || {
                let r = client.call(&only_b1).await?;
                ensure!(r.peer("b1") == 10, "{r:?}");
                Ok(())
            })
            .await?;
            println!("stream_churn {who}: no failure during the churn; the last change applied");
        }
        // Streams refused for 3 s.
        let refused_at = tokio::time::Instant::now();
        cp.kill_streams_and_refuse(Duration::from_secs(3));
        let refused = async |client: Client<'_>| -> anyhow::Result<()> {
            let who = client.name();
            let r = client.call(&CallSpec::new("xds:///svc", UNARY).count(10)).await?;
            ensure!(r.peer("b1") == 10, "{who}: the cached target while refused: {r:?}");
            let fresh = client
                .call(&CallSpec::new("xds:///fresh", UNARY).timeout(Duration::from_millis(1500)).record(true))
                .await?;
            let during = fresh.by_status.keys().cloned().collect::<Vec<_>>().join("+");
            let ms = fresh.calls.first().map_or(f64::NAN, |c| c.ms);
            let want = if client.c_core_like() { "UNAVAILABLE" } else { "DEADLINE_EXCEEDED" };
            ensure!(during == want, "{who}: a new target while refused: {fresh:?}");
            if client.c_core_like() {
                ensure!(ms < 1_000.0, "{who}: a new target while refused must fail at once: {fresh:?}");
            }
            let spec = CallSpec::new("xds:///fresh", UNARY).count(3).timeout(Duration::from_secs(2));
            eventually(&format!("{who}: the new target once answered"), Duration::from_secs(30), Duration::from_millis(100), async || {
                let r = client.call(&spec).await?;
                ensure!(r.peer("b0") == 3, "{r:?}");
                Ok(())
            })
            .await?;
            println!(
                "stream_churn {who}: refused streams: cached target served, new target {during} after {ms:.0} ms, then served {:.1?} after the refusal began",
                refused_at.elapsed()
            );
            Ok(())
        };
        for r in futures_util::future::join_all(clients.all().into_iter().map(refused)).await {
            r?;
        }
        Ok(())
    })
    .await
}

/// C-core guards A88 (data errors: deletions, `fail_on_data_errors`) behind this variable
/// until it passes interop testing; without it, C-core 1.85 honours an LDS/CDS deletion
/// unless the bootstrap says `ignore_resource_deletion` (gRFC A53). The library implements
/// A88, so it is compared with C-core under the guard; C-core's default is recorded.
const A88_GUARD: (&str, &str) = ("GRPC_EXPERIMENTAL_XDS_DATA_ERROR_HANDLING", "true");

/// Two listeners: `lds` (whose Listener gets deleted) and `cds` (whose Cluster does).
fn deletion_setup(cp: &ControlPlane, backends: &[grpcroute_xds_control_plane::Backend]) {
    let mut resources = ping_pong("lds", &addrs(&backends[..1]));
    resources.extend(ping_pong("cds", &addrs(&backends[1..])));
    cp.set(resources);
}

/// What calls to each listener did after the deletions, and the CSDS states.
#[derive(Debug, PartialEq, Eq)]
struct AfterDeletion {
    lds_calls: String,
    cds_calls: String,
    lds_state: String,
    cds_state: String,
}

/// Deletes Listener `lds` and Cluster `cds-c`; returns, per client, what calls and CSDS
/// say afterwards.
async fn delete_and_call(
    cp: &ControlPlane,
    clients: &[Client<'_>],
) -> anyhow::Result<Vec<(String, AfterDeletion)>> {
    for client in clients {
        warm_up(*client, "xds:///lds", &["b0"]).await?;
        warm_up(*client, "xds:///cds", &["b1"]).await?;
        cp.wait_for_ack(client.node_id(), CDS, "1", LogMark::START, WAIT)
            .await?;
    }
    cp.delete(LDS, &["lds"]);
    cp.delete(CDS, &["cds-c"]);
    let mut out = Vec::new();
    for client in clients {
        let who = client.name();
        cp.wait_for_ack(client.node_id(), LDS, "2", LogMark::START, WAIT)
            .await?;
        cp.wait_for_ack(client.node_id(), CDS, "2", LogMark::START, WAIT)
            .await?;
        // Let a deletion that is honoured reach the data plane.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let spec = |l: &str| {
            CallSpec::new(&format!("xds:///{l}"), UNARY)
                .count(10)
                .timeout(Duration::from_secs(3))
        };
        let (l, c) = (
            client.call(&spec("lds")).await?,
            client.call(&spec("cds")).await?,
        );
        let state = async |kind, name| -> anyhow::Result<String> {
            Ok(client.csds_of(kind, name).await?.map_or_else(
                || "absent".to_string(),
                |r| {
                    format!(
                        "{} version {:?} failed version {:?}",
                        r.status, r.version, r.error_version
                    )
                },
            ))
        };
        let after = AfterDeletion {
            lds_calls: l.by_status.keys().cloned().collect::<Vec<_>>().join("+"),
            cds_calls: c.by_status.keys().cloned().collect::<Vec<_>>().join("+"),
            lds_state: state(LDS, "lds").await?,
            cds_state: state(CDS, "cds-c").await?,
        };
        println!(
            "deletion {who} ({}): {after:?}; errors {:?} {:?}",
            client.node_id(),
            l.errors,
            c.errors
        );
        out.push((who, after));
    }
    Ok(out)
}

/// S22 / A88 default: deleting a cached Listener or Cluster from the SotW responses is
/// ignored: calls keep working on the cached copies (C-core under the A88 guard, and the
/// library; the two compared exactly, CSDS states included). Recorded alongside: C-core
/// without the guard (its default in 1.85) and grpc-js-xds 1.14.1 (no A88) honour both
/// deletions; grpc-js-xds with the A53 server feature `ignore_resource_deletion` ignores
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_is_ignored_by_default() -> anyhow::Result<()> {
    bounded("deletion_ignored", LIMIT, async {
        let cp = ControlPlane::start().await?;
        let backends = start_backends("b", 2).await?;
        deletion_setup(&cp, &backends);
        let clients = Clients::start_with(&cp, &[PY], "del", |b| b, &[A88_GUARD]).await?;
        let legacy = Clients::start(&cp, &[PY, JS], "del-legacy").await?;
        let js_a53 = common::start_oracle(
            JS,
            &cp.bootstrap("del-a53-js")
                .server_feature("ignore_resource_deletion"),
            &[],
        )
        .await?;
        let mut all = clients.all();
        let compared_len = all.len();
        all.extend(legacy.oracle(PY));
        all.extend(legacy.oracle(JS));
        all.extend(js_a53.as_ref().map(Client::Oracle));
        let outcomes = delete_and_call(&cp, &all).await?;
        let (compared, others) = outcomes.split_at(compared_len);
        for (who, after) in compared {
            ensure!(
                after.lds_calls == "OK" && after.cds_calls == "OK",
                "{who}: deletions must be ignored: {after:?}"
            );
        }
        ensure!(
            compared.windows(2).all(|w| w[0].1 == w[1].1),
            "C-core (A88) vs library: {compared:?}"
        );
        for ((who, after), client) in others.iter().zip(&all[compared_len..]) {
            let ignored = client.node_id() == "del-a53-js";
            let want = if ignored { "OK" } else { "UNAVAILABLE" };
            ensure!(
                after.lds_calls == want && after.cds_calls == want,
                "{who} ({}): expected {want}: {after:?}",
                client.node_id()
            );
        }
        Ok(())
    })
    .await
}

/// A88 `fail_on_data_errors`: the same deletions are honoured: calls fail UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_is_honoured_with_fail_on_data_errors() -> anyhow::Result<()> {
    bounded("deletion_honoured", LIMIT, async {
        let cp = ControlPlane::start().await?;
        let backends = start_backends("b", 2).await?;
        deletion_setup(&cp, &backends);
        let clients = Clients::start_with(
            &cp,
            &[PY, JS],
            "delf",
            |b| b.server_feature("fail_on_data_errors"),
            &[A88_GUARD],
        )
        .await?;
        let all = clients.all();
        let outcomes = delete_and_call(&cp, &all).await?;
        for (who, after) in &outcomes {
            ensure!(
                after.lds_calls == "UNAVAILABLE" && after.cds_calls == "UNAVAILABLE",
                "{who}: deletions must be honoured: {after:?}"
            );
        }
        // grpc-js-xds's CSDS keeps the deleted copy's version and no failed version
        // (README quirks): C-core and the library are compared exactly.
        let c_core_like: Vec<_> = outcomes
            .iter()
            .zip(&all)
            .filter(|(_, c)| c.c_core_like())
            .map(|(o, _)| o)
            .collect();
        ensure!(
            c_core_like.windows(2).all(|w| w[0].1 == w[1].1),
            "C-core vs library: {outcomes:?}"
        );
        Ok(())
    })
    .await
}

/// S10/S11 resource validation: one CDS and one EDS response, each with valid and
/// invalid resources (unsupported LB policies and discovery types, aggregate and
/// LOGICAL_DNS clusters, outlier detection; EDS priority gaps, duplicate addresses, zero
/// and overflowing weights, bad addresses, empty assignments). Each resource's CSDS status
/// (ACKED / NACKED) is compared between C-core and the library exactly; grpc-js-xds's
/// differences are recorded (printed), not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_accepts_and_rejects_as_c_core() -> anyhow::Result<()> {
    use envoy_types::pb::envoy::config::{cluster::v3::cluster::LbPolicy, core::v3::HealthStatus};
    use grpcroute_xds_control_plane::{
        Resource,
        builders::{LoadAssignmentBuilder, Locality, outlier_detection},
    };
    bounded("validation", LIMIT, async {
        let cp = ControlPlane::start().await?;
        let backends = start_backends("b", 2).await?;
        let (a0, a1) = (backends[0].addr(), backends[1].addr());
        let one = |name: &str| load_assignment(name, [a0]);
        let lb = |name: &str, p: LbPolicy| ClusterBuilder::eds(name).lb_policy(p).build();
        let mut static_cluster = ClusterBuilder::eds("v-c-static");
        static_cluster.cluster_mut().cluster_discovery_type =
            Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32));
        let mut no_eds_config = ClusterBuilder::eds("v-c-noedsconfig");
        if let Some(e) = &mut no_eds_config.cluster_mut().eds_cluster_config {
            e.eds_config = None;
        }
        let clusters: Vec<(String, Resource)> = vec![
            (
                "v-c-roundrobin".into(),
                lb("v-c-roundrobin", LbPolicy::RoundRobin).into(),
            ),
            (
                "v-c-ringhash".into(),
                lb("v-c-ringhash", LbPolicy::RingHash).into(),
            ),
            (
                "v-c-leastrequest".into(),
                lb("v-c-leastrequest", LbPolicy::LeastRequest).into(),
            ),
            (
                "v-c-maglev".into(),
                lb("v-c-maglev", LbPolicy::Maglev).into(),
            ),
            (
                "v-c-random".into(),
                lb("v-c-random", LbPolicy::Random).into(),
            ),
            ("v-c-static".into(), static_cluster.build().into()),
            ("v-c-noedsconfig".into(), no_eds_config.build().into()),
            // C-core checks `lb_policy` of an aggregate cluster too: Envoy's
            // CLUSTER_PROVIDED is NACKed, the default ROUND_ROBIN accepted.
            (
                "v-c-aggregate".into(),
                ClusterBuilder::aggregate("v-c-aggregate", &["v-c-roundrobin"])
                    .lb_policy(LbPolicy::RoundRobin)
                    .build()
                    .into(),
            ),
            (
                "v-c-aggregate-cp".into(),
                ClusterBuilder::aggregate("v-c-aggregate-cp", &["v-c-roundrobin"])
                    .build()
                    .into(),
            ),
            (
                "v-c-dns".into(),
                ClusterBuilder::logical_dns("v-c-dns", "localhost", a0.port())
                    .build()
                    .into(),
            ),
            (
                "v-c-outlier".into(),
                ClusterBuilder::eds("v-c-outlier")
                    .outlier_detection(outlier_detection(
                        Duration::from_secs(1),
                        Duration::from_secs(30),
                        10,
                    ))
                    .build()
                    .into(),
            ),
        ];
        let eds = |name: &str| LoadAssignmentBuilder::new(name);
        let assignments: Vec<(String, Resource)> = vec![
            ("v-e-ok".into(), one("v-e-ok").into()),
            (
                "v-e-gap".into(),
                eds("v-e-gap")
                    .locality(Locality::new("p0").priority(0).endpoint(a0))
                    .locality(Locality::new("p2").priority(2).endpoint(a1))
                    .build()
                    .into(),
            ),
            (
                "v-e-dup".into(),
                eds("v-e-dup")
                    .locality(Locality::new("z1").endpoint(a0))
                    .locality(Locality::new("z2").endpoint(a0))
                    .build()
                    .into(),
            ),
            (
                "v-e-loc0".into(),
                eds("v-e-loc0")
                    .locality(Locality::new("z1").endpoint(a0))
                    .locality(Locality::new("z0").weight(Some(0)).endpoint(a1))
                    .build()
                    .into(),
            ),
            (
                "v-e-ep0".into(),
                eds("v-e-ep0")
                    .locality(Locality::new("z1").endpoint_with(a0, 0, HealthStatus::Healthy))
                    .build()
                    .into(),
            ),
            (
                "v-e-bigsum".into(),
                eds("v-e-bigsum")
                    .locality(Locality::new("z1").weight(Some(u32::MAX)).endpoint(a0))
                    .locality(Locality::new("z2").weight(Some(u32::MAX)).endpoint(a1))
                    .build()
                    .into(),
            ),
            ("v-e-empty".into(), eds("v-e-empty").build().into()),
            (
                "v-e-badaddr".into(),
                eds("v-e-badaddr")
                    .locality(Locality::new("z1").hostname_endpoint("not-an-ip", 80))
                    .build()
                    .into(),
            ),
        ];
        // Every cluster and every assignment's cluster is named by a route, so each is
        // subscribed; the EDS cases have valid clusters of their own.
        let mut resources: Vec<Resource> = Vec::new();
        let mut routes = Vec::new();
        for (name, r) in &clusters {
            resources.push(r.clone());
            resources.push(one(name).into());
            routes.push(
                RouteBuilder::prefix(&format!("/{name}."))
                    .cluster(name)
                    .build(),
            );
        }
        for (name, r) in &assignments {
            resources.push(ClusterBuilder::eds(name).build().into());
            resources.push(r.clone());
            routes.push(
                RouteBuilder::prefix(&format!("/{name}."))
                    .cluster(name)
                    .build(),
            );
        }
        routes.push(RouteBuilder::prefix("/").cluster("v-e-ok").build());
        resources.push(ApiListener::rds("val", "val-rc").build().into());
        resources
            .push(route_configuration("val-rc", vec![virtual_host("vh", &["*"], routes)]).into());
        cp.set(resources);
        let clients = Clients::start(&cp, &[PY, JS], "val").await?;
        let watched: Vec<(ResourceType, &str)> = clusters
            .iter()
            .map(|(n, _)| (CDS, n.as_str()))
            .chain(assignments.iter().map(|(n, _)| (EDS, n.as_str())))
            .collect();
        compare_acceptance(
            "validation",
            &clients,
            &["xds:///val"],
            &watched,
            // The library's deliberate differences from C-core 1.85 (README): it has no
            // ring hash yet, and it maps LEAST_REQUEST onto its P2C balancer (gRFC A48,
            // as grpc-java and grpc-go do; C-core and grpc-js NACK it).
            &[
                ("Cluster v-c-ringhash", "NACKED"),
                ("Cluster v-c-leastrequest", "ACKED"),
            ],
            // grpc-js-xds 1.14.1 accepts an endpoint weight of 0.
            &[("ClusterLoadAssignment v-e-ep0", "ACKED")],
            &[],
        )
        .await
    })
    .await
}

/// S19 listener and route validation: listeners with and without the router filter,
/// unknown filters (required and optional), no `api_listener`, an inline route
/// configuration; route configurations with a bad path or header regex, weighted clusters
/// summing to 0 (and one with a zero weight), an empty header range, a domain pattern with
/// an inner wildcard, duplicate or missing domains, a `cluster_header` action, no path
/// specifier. Each listener is a target of its own; each resource's CSDS status is
/// compared with C-core's exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_and_route_validation_as_c_core() -> anyhow::Result<()> {
    use envoy_types::pb::{
        envoy::config::{
            listener::v3::Listener,
            route::v3::{RouteMatch, route::Action, route_action::ClusterSpecifier},
        },
        google::protobuf::Any,
    };
    use grpcroute_xds_control_plane::{
        Resource,
        builders::{header, http_filter, router_filter},
    };
    bounded("route_validation", LIMIT, async {
        let cp = ControlPlane::start().await?;
        let backends = start_backends("b", 1).await?;
        let mut resources: Vec<Resource> = vec![
            ClusterBuilder::eds("vc").build().into(),
            load_assignment("vc", addrs(&backends)).into(),
            ClusterBuilder::eds("vc2").build().into(),
            load_assignment("vc2", addrs(&backends)).into(),
        ];
        let unknown = || Any {
            type_url: "type.googleapis.com/grpcroute.test.UnknownFilter".to_string(),
            value: Vec::new(),
        };
        let ok_routes = || vec![RouteBuilder::prefix("/").cluster("vc").build()];
        resources.push(
            route_configuration("vl-rc", vec![virtual_host("vh", &["*"], ok_routes())]).into(),
        );
        let listeners: Vec<(&str, Resource)> = vec![
            ("vl-ok", ApiListener::rds("vl-ok", "vl-rc").build().into()),
            (
                "vl-nofilters",
                ApiListener::rds("vl-nofilters", "vl-rc")
                    .http_filters(vec![])
                    .build()
                    .into(),
            ),
            (
                "vl-unknown",
                ApiListener::rds("vl-unknown", "vl-rc")
                    .http_filters(vec![
                        http_filter("unknown", unknown(), false),
                        router_filter(),
                    ])
                    .build()
                    .into(),
            ),
            (
                "vl-unknown-opt",
                ApiListener::rds("vl-unknown-opt", "vl-rc")
                    .http_filters(vec![
                        http_filter("unknown", unknown(), true),
                        router_filter(),
                    ])
                    .build()
                    .into(),
            ),
            (
                "vl-router-not-last",
                ApiListener::rds("vl-router-not-last", "vl-rc")
                    .http_filters(vec![
                        router_filter(),
                        http_filter("unknown", unknown(), true),
                    ])
                    .build()
                    .into(),
            ),
            (
                "vl-noapi",
                Listener {
                    name: "vl-noapi".to_string(),
                    ..Default::default()
                }
                .into(),
            ),
            (
                "vl-inline",
                ApiListener::inline(
                    "vl-inline",
                    route_configuration(
                        "vl-inline-rc",
                        vec![virtual_host("vh", &["*"], ok_routes())],
                    ),
                )
                .build()
                .into(),
            ),
        ];
        let mut cluster_header = RouteBuilder::prefix("/").cluster("vc").build();
        if let Some(Action::Route(a)) = &mut cluster_header.action {
            a.cluster_specifier = Some(ClusterSpecifier::ClusterHeader("x-cluster".to_string()));
        }
        let vh = |routes| vec![virtual_host("vh", &["*"], routes)];
        let route_configs: Vec<(&str, Vec<_>)> = vec![
            ("vr-ok", vh(ok_routes())),
            (
                "vr-badregex",
                vh(vec![RouteBuilder::safe_regex("(").cluster("vc").build()]),
            ),
            (
                "vr-badheaderregex",
                vh(vec![
                    RouteBuilder::prefix("/")
                        .header(header::safe_regex("x", "["))
                        .cluster("vc")
                        .build(),
                ]),
            ),
            (
                "vr-range",
                vh(vec![
                    RouteBuilder::prefix("/")
                        .header(header::range("x", 10, 5))
                        .cluster("vc")
                        .build(),
                ]),
            ),
            (
                "vr-wsum0",
                vh(vec![
                    RouteBuilder::prefix("/")
                        .weighted_clusters(&[("vc", 0), ("vc2", 0)])
                        .build(),
                ]),
            ),
            (
                "vr-wzero",
                vh(vec![
                    RouteBuilder::prefix("/")
                        .weighted_clusters(&[("vc", 0), ("vc2", 5)])
                        .build(),
                ]),
            ),
            ("vr-clusterheader", vh(vec![cluster_header])),
            (
                "vr-nopath",
                vh(vec![
                    RouteBuilder::with_match(RouteMatch::default())
                        .cluster("vc")
                        .build(),
                ]),
            ),
            (
                "vr-innerwildcard",
                vec![virtual_host("vh", &["a*b"], ok_routes())],
            ),
            (
                "vr-dupdomain",
                vec![
                    virtual_host("vh1", &["*"], ok_routes()),
                    virtual_host("vh2", &["*"], ok_routes()),
                ],
            ),
            (
                "vr-nodomains",
                vec![
                    virtual_host("vh0", &[], ok_routes()),
                    virtual_host("vh", &["*"], ok_routes()),
                ],
            ),
        ];
        let mut targets = Vec::new();
        let mut watched: Vec<(ResourceType, String)> = vec![(RDS, "vl-rc".to_string())];
        for (name, l) in listeners {
            resources.push(l);
            targets.push(format!("xds:///{name}"));
            watched.push((LDS, name.to_string()));
        }
        for (name, hosts) in route_configs {
            let rc = format!("{name}-rc");
            resources.push(ApiListener::rds(name, &rc).build().into());
            resources.push(route_configuration(&rc, hosts).into());
            targets.push(format!("xds:///{name}"));
            watched.push((RDS, rc));
        }
        cp.set(resources);
        let clients = Clients::start(&cp, &[PY, JS], "rval").await?;
        let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
        let watched: Vec<(ResourceType, &str)> =
            watched.iter().map(|(k, n)| (*k, n.as_str())).collect();
        // grpc-js-xds 1.14.1 dies on an invalid RE2 pattern (re2-wasm throws a
        // SyntaxError nobody catches; README quirks): it is not shown those two.
        compare_acceptance(
            "route_validation",
            &clients,
            &targets,
            &watched,
            &[],
            // grpc-js-xds 1.14.1: accepts a listener without HTTP filters, a virtual host
            // without domains and an empty header range; rejects a router followed by an
            // optional unknown filter (C-core drops the optional filter first).
            &[
                ("Listener vl-nofilters", "ACKED"),
                ("Listener vl-router-not-last", "NACKED"),
                ("RouteConfiguration vr-nodomains-rc", "ACKED"),
                ("RouteConfiguration vr-range-rc", "ACKED"),
            ],
            &["vr-badregex", "vr-badheaderregex"],
        )
        .await
    })
    .await
}

/// `(kind name, status)` pairs as a map.
fn statuses(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(r, s)| (r.to_string(), s.to_string()))
        .collect()
}

/// Opens a channel to each of `targets` on every client, waits until each `watched`
/// resource is ACKED or NACKED in its CSDS dump, and compares the statuses with C-core's:
/// the library must differ exactly by `library_divergences`, grpc-js-xds by `js_quirks`
/// (`"Cluster name"` → its status).
async fn compare_acceptance(
    scenario: &str,
    clients: &Clients,
    targets: &[&str],
    watched: &[(ResourceType, &str)],
    library_divergences: &[(&str, &str)],
    js_quirks: &[(&str, &str)],
    js_excluded: &[&str],
) -> anyhow::Result<()> {
    // What grpc-js-xds is not shown: the excluded listeners (targets) and their
    // `{name}-rc` route configurations.
    let excluded = |client: Client<'_>, name: &str| {
        client.kind() == Some(JS)
            && js_excluded
                .iter()
                .any(|x| name == *x || name == format!("xds:///{x}") || name == format!("{x}-rc"))
    };
    let state_of = async |client: Client<'_>| -> anyhow::Result<(
        String,
        Option<OracleKind>,
        BTreeMap<String, String>,
    )> {
        let who = client.name();
        // A call per target opens its channel (the call itself may fail: a rejected
        // listener never serves).
        let opens = targets
            .iter()
            .filter(|t| !excluded(client, t))
            .map(|t| async move {
                client
                    .call(&CallSpec::new(t, UNARY).timeout(Duration::from_secs(2)))
                    .await
            });
        for r in futures_util::future::join_all(opens).await {
            r?;
        }
        let got = eventually(
            &format!("{who}: every resource ACKED or NACKED"),
            Duration::from_secs(10),
            Duration::from_millis(100),
            async || {
                let dump = client.csds().await?;
                let mut out = BTreeMap::new();
                for (kind, name) in watched.iter().filter(|(_, n)| !excluded(client, n)) {
                    let status = dump
                        .iter()
                        .find(|r| r.kind() == Some(*kind) && r.name == *name)
                        .map_or("absent", |r| r.status.as_str());
                    ensure!(
                        status != "REQUESTED" && status != "absent",
                        "{kind} {name}: {status}"
                    );
                    if let Some(e) = dump
                        .iter()
                        .find(|r| r.kind() == Some(*kind) && r.name == *name)
                        .and_then(|r| r.error.as_ref())
                    {
                        println!("{scenario} {who}: {kind} {name}: {e}");
                    }
                    out.insert(format!("{kind} {name}"), status.to_string());
                }
                Ok(out)
            },
        )
        .await?;
        println!("{scenario} {who}: {got:?}");
        Ok((who, client.kind(), got))
    };
    let states = futures_util::future::join_all(clients.all().into_iter().map(state_of))
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    let library_divergences = statuses(library_divergences);
    let js_quirks = statuses(js_quirks);
    let reference = states.iter().find(|s| s.1 == Some(PY)).map(|s| s.2.clone());
    let mut errors = Vec::new();
    if let Some(reference) = &reference {
        for (who, kind, got) in &states {
            let differences: BTreeMap<String, String> = got
                .iter()
                .filter(|(r, status)| reference[*r] != **status)
                .map(|(r, status)| (r.clone(), status.clone()))
                .collect();
            for (r, status) in &differences {
                println!(
                    "{scenario}: {who} differs from C-core on {r}: {status} vs {}",
                    reference[r]
                );
            }
            let allowed = match kind {
                Some(JS) => &js_quirks,
                None => &library_divergences,
                _ => continue,
            };
            if &differences != allowed {
                errors.push(format!(
                    "{who}: differences from C-core {differences:?}, expected {allowed:?}"
                ));
            }
        }
    }
    ensure!(errors.is_empty(), "{scenario}:\n{}", errors.join("\n"));
    Ok(())
}

/// p50, p90 and max of `samples` (sorted in place).
fn percentiles(samples: &mut [Duration]) -> (Duration, Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.9), at(1.0))
}

/// How a convergence round changes the configuration.
#[derive(Clone, Copy, Debug)]
enum Change {
    /// The route's cluster, to a cluster another route keeps subscribed: one RDS response.
    Route,
    /// The route's cluster, to a cluster no route uses: the RDS response, then the
    /// client subscribes to the cluster and its endpoints (CDS and EDS round trips).
    RouteToNewCluster,
    /// The cluster's endpoint (EDS only).
    Endpoints,
}

/// The routes of the convergence listener: `/` to `cluster`; with `keep`, a second route
/// keeps the other cluster subscribed.
fn convergence_routes(
    cluster: &str,
    keep: bool,
) -> envoy_types::pb::envoy::config::route::v3::RouteConfiguration {
    let other = if cluster == "svc-c" { "other" } else { "svc-c" };
    let mut routes = Vec::new();
    if keep {
        routes.push(RouteBuilder::prefix("/keep.").cluster(other).build());
    }
    routes.push(RouteBuilder::prefix("/").cluster(cluster).build());
    route_configuration("svc-rc", vec![virtual_host("vh", &["*"], routes)])
}

/// Convergence: from the control plane's response (its log's timestamp) to the first call
/// answered by the new configuration, with calls made back to back (C-core's calls go
/// through its driver process, which adds about a millisecond per call). 30 rounds per
/// kind of change and client. Printed (`--nocapture`); bounded loosely (5 s a round).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn convergence() -> anyhow::Result<()> {
    bounded("convergence", Duration::from_secs(180), async {
        let cp = ControlPlane::start().await?;
        let backends = start_backends("b", 2).await?;
        let mut resources = ping_pong("svc", &addrs(&backends[..1]));
        resources.push(ClusterBuilder::eds("other").build().into());
        resources.push(load_assignment("other", addrs(&backends[1..])).into());
        cp.set(resources);
        let clients = Clients::start(&cp, &[PY], "conv").await?;
        let rounds = 30;
        let mut lines = Vec::new();
        for client in clients.all() {
            let who = client.name();
            let node = client.node_id().to_string();
            for change in [Change::Route, Change::RouteToNewCluster, Change::Endpoints] {
                let keep = matches!(change, Change::Route);
                cp.set([
                    convergence_routes("svc-c", keep).into(),
                    load_assignment("svc-c", addrs(&backends[..1])).into(),
                ]);
                warm_up(client, "xds:///svc", &["b0"]).await?;
                let requests_before = cp.requests(&node).len();
                let mut samples = Vec::new();
                for round in 0..rounds {
                    let (to_b1, peer) = if round % 2 == 0 { (true, "b1") } else { (false, "b0") };
                    let kind = match change {
                        Change::Route | Change::RouteToNewCluster => {
                            cp.set_one(convergence_routes(if to_b1 { "other" } else { "svc-c" }, keep));
                            RDS
                        }
                        Change::Endpoints => {
                            let b = if to_b1 { &backends[1..] } else { &backends[..1] };
                            cp.set_one(load_assignment("svc-c", addrs(b)));
                            EDS
                        }
                    };
                    let version = cp.version_info(kind);
                    let one = CallSpec::new("xds:///svc", UNARY);
                    let until = tokio::time::Instant::now() + Duration::from_secs(5);
                    let answered = loop {
                        let r = client.call(&one).await?;
                        if r.peer(peer) == 1 {
                            break tokio::time::Instant::now();
                        }
                        if tokio::time::Instant::now() > until {
                            bail!("{who}: {change:?} round {round}: {peer} did not answer within 5 s");
                        }
                    };
                    let sent = cp
                        .responses(&node)
                        .into_iter()
                        .find(|r| r.type_url == kind.type_url() && r.version_info == version)
                        .map(|r| r.at)
                        .with_context(|| format!("{who}: round {round}: {kind} {version} not logged"))?;
                    samples.push(answered.saturating_duration_since(sent));
                }
                let requests = cp.requests(&node)[requests_before..].to_vec();
                let per_type = |t: ResourceType| requests.iter().filter(|r| r.kind() == Some(t)).count();
                let (p50, p90, max) = percentiles(&mut samples);
                let line = format!(
                    "{who:16} {change:18?} p50 {p50:>9.2?}  p90 {p90:>9.2?}  max {max:>9.2?}   (requests RDS {} CDS {} EDS {})",
                    per_type(RDS), per_type(CDS), per_type(EDS)
                );
                println!("convergence {line}");
                lines.push(line);
            }
        }
        println!("convergence, {rounds} rounds each, ADS response → first call answered by the new configuration:\n{}", lines.join("\n"));
        Ok(())
    })
    .await
}
