//! Resilience end to end: a connect-refused endpoint among live ones costs no call and is
//! avoided afterwards; configuration changes under concurrent load lose no call and never
//! send one to an endpoint outside the configuration of the moment; removed endpoints
//! drain; a watched manifest folder reloads, and a broken file keeps the last good
//! configuration serving.

use std::{
    collections::BTreeSet,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use grpcroute_client::{
    Mesh, Object, Resources,
    build::{Backend, Rule, endpoints, route, service},
    source::ManifestDir,
};
use grpcroute_echo::{EchoConfig, EchoServer};
use grpcroute_interop_tests::{
    Delivery, EchoService, Feed, GRPC_PORT, LOOPBACK, backend, backends::add_all, call,
    calls::ECHO, each_delivery, eventually, refused_port, tally,
};

const NS: &str = "r";

/// A slice publishing `server` as a ready endpoint of Service `service`.
fn slice_for(service_name: &str, slice: &str, server: &EchoServer) -> Object {
    endpoints(NS, service_name)
        .name(slice)
        .port("grpc", server.addr().port())
        .ready(LOOPBACK)
        .into()
}

each_delivery! { #[tokio::test] refused_endpoint_is_retried_elsewhere_then_avoided }
/// A connect-refused endpoint among two live ones: no call fails (the call is tried on
/// another endpoint), and afterwards the dead endpoint is avoided: a server started on its
/// port during the backoff gets no call.
async fn refused_endpoint_is_retried_elsewhere_then_avoided(
    delivery: Delivery,
) -> anyhow::Result<()> {
    let live = EchoService::start(NS, "svc", 2).await?;
    let dead_port = refused_port()?;
    let mut resources = Resources::new();
    add_all(&mut resources, live.objects());
    resources.push(
        endpoints(NS, "svc")
            .name("svc-dead")
            .port("grpc", dead_port)
            .ready(LOOPBACK),
    );
    let feed = Feed::with(delivery, resources).await?;
    let mesh = feed
        .mesh(
            Mesh::builder()
                .namespace(NS)
                .seed(41)
                .connect_backoff(Duration::from_secs(60), Duration::from_secs(120)),
        )
        .await?;
    let channel = mesh.channel("svc:7070")?;

    // With three endpoints and no history, the dead one is among the first picks with
    // overwhelming probability; every one of those calls must still succeed.
    let t = tally(100, |_| call(channel.clone(), ECHO, &[])).await;
    t.assert_no_errors();
    assert_eq!(live.calls(), 100, "each call answered exactly once");

    let revived = EchoServer::start(
        EchoConfig::new("revived").listen(std::net::SocketAddr::new(LOOPBACK, dead_port)),
    )
    .await?;
    let t = tally(100, |_| call(channel.clone(), ECHO, &[])).await;
    t.assert_no_errors();
    assert_eq!(
        revived.calls(),
        0,
        "the endpoint that refused connections must be avoided while it backs off"
    );
    revived.shutdown().await;
    live.shutdown().await;
    feed.shutdown().await;
    Ok(())
}

each_delivery! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    configuration_changes_under_load_lose_nothing
}
/// Eight tasks call continuously while the configuration changes 20 times (the endpoints of
/// two backends and their weights). No call fails, and each is answered by a server that
/// was in the configuration at some moment during the call.
async fn configuration_changes_under_load_lose_nothing(delivery: Delivery) -> anyhow::Result<()> {
    let pool = EchoService::start(NS, "pool", 6).await?;
    let updates = 20;
    // Configuration i: backend a on pool servers i, i+1; backend b on server i+3 (mod 6).
    let members =
        |i: usize| -> (Vec<usize>, Vec<usize>) { (vec![i % 6, (i + 1) % 6], vec![(i + 3) % 6]) };
    let configs: Vec<(Resources, BTreeSet<String>)> = (0..=updates)
        .map(|i| {
            let (a, b) = members(i);
            let mut r = Resources::new()
                .with(service(NS, "front").port("grpc", GRPC_PORT))
                .with(service(NS, "a").port("grpc", GRPC_PORT))
                .with(service(NS, "b").port("grpc", GRPC_PORT))
                .with(
                    route(NS, "split").parent_service("front", None).rule(
                        Rule::new()
                            .backend(Backend::service("a", GRPC_PORT).weight(1 + (i % 3) as u32))
                            .backend(Backend::service("b", GRPC_PORT).weight(1 + (i % 2) as u32)),
                    ),
                );
            let mut names = BTreeSet::new();
            for (svc, list) in [("a", &a), ("b", &b)] {
                for &j in list {
                    r.push(slice_for(svc, &format!("{svc}-{j}"), &pool.servers[j]));
                    names.insert(format!("pool-{j}"));
                }
            }
            (r, names)
        })
        .collect();

    let feed = Feed::with(delivery, configs[0].0.clone()).await?;
    let mesh = feed.mesh(Mesh::builder().namespace(NS).seed(42)).await?;
    let epoch = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let channel = mesh.channel("front:7070")?;
        let (epoch, stop) = (epoch.clone(), stop.clone());
        workers.spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let before = epoch.load(Ordering::SeqCst);
                let result = call(channel.clone(), ECHO, &[]).await;
                let after = epoch.load(Ordering::SeqCst);
                seen.push((before, after, result.map(|r| backend(r.metadata()))));
            }
            seen
        });
    }
    for (i, (config, _)) in configs.iter().enumerate().skip(1) {
        tokio::time::sleep(Duration::from_millis(15)).await;
        feed.set(config.clone()).await?;
        epoch.store(i, Ordering::SeqCst);
    }
    tokio::time::sleep(Duration::from_millis(15)).await;
    stop.store(true, Ordering::SeqCst);

    let mut total = 0;
    while let Some(seen) = workers.join_next().await {
        let seen = seen?;
        assert!(!seen.is_empty(), "a worker made no call");
        for (before, after, result) in seen {
            total += 1;
            let name = match result {
                Ok(Some(name)) => name,
                other => anyhow::bail!("call failed during configuration changes: {other:?}"),
            };
            // The call read the table at some version in before..=after+1 (an update may
            // have been applied but not yet counted when the call ended).
            let allowed = (before..=(after + 1).min(updates)).any(|v| configs[v].1.contains(&name));
            assert!(
                allowed,
                "{name} answered a call made during versions {before}..={after}"
            );
        }
    }
    assert!(total >= 8);

    // Settled: only the last configuration's servers.
    let last = &configs[updates].1;
    let channel = mesh.channel("front:7070")?;
    let t = tally(40, |_| call(channel.clone(), ECHO, &[])).await;
    t.assert_no_errors();
    for name in t.backends.keys() {
        assert!(
            last.contains(name),
            "{name} is not in the final configuration"
        );
    }
    pool.shutdown().await;
    feed.shutdown().await;
    Ok(())
}

each_delivery! { #[tokio::test] removed_endpoints_drain }
/// A slow call in flight on an endpoint that a configuration change removes completes
/// normally; afterwards no new call reaches that endpoint.
async fn removed_endpoints_drain(delivery: Delivery) -> anyhow::Result<()> {
    let slow =
        EchoService::start_with(NS, "slow", 1, |c| c.delay(Duration::from_millis(300))).await?;
    let fresh = EchoService::start(NS, "fresh", 1).await?;
    let config = |server: &EchoServer| {
        Resources::new()
            .with(service(NS, "svc").port("grpc", GRPC_PORT))
            .with(slice_for("svc", "svc-slice", server))
    };
    let feed = Feed::with(delivery, config(&slow.servers[0])).await?;
    let mesh = feed.mesh(Mesh::builder().namespace(NS).seed(43)).await?;
    let channel = mesh.channel("svc:7070")?;
    let in_flight = tokio::spawn(call(channel.clone(), ECHO, &[]));
    assert!(
        eventually(Duration::from_secs(5), || slow.calls() == 1).await,
        "the slow call never arrived"
    );
    feed.set(config(&fresh.servers[0])).await?;
    let explained = mesh.explain(&grpcroute_client::CallDescription {
        target: "svc:7070".into(),
        path: ECHO.into(),
        ..Default::default()
    });
    assert_eq!(
        explained.backends[0].endpoints,
        [fresh.servers[0].addr().to_string()],
        "{explained:?}"
    );

    let response = in_flight.await??;
    assert_eq!(backend(response.metadata()).as_deref(), Some("slow-0"));
    let t = tally(20, |_| call(channel.clone(), ECHO, &[])).await;
    t.assert_no_errors();
    assert_eq!(t.by_prefix("fresh-0"), 20);
    assert_eq!(slow.calls(), 1, "a removed endpoint took a new call");
    slow.shutdown().await;
    fresh.shutdown().await;
    feed.shutdown().await;
    Ok(())
}

/// Writes `name` in `dir` atomically (a hidden temporary file, then a rename), so the
/// watcher never reads half a file.
fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(name))?;
    Ok(())
}

fn services_yaml(a: &EchoService, b: &EchoService) -> String {
    let mut out = String::new();
    for name in ["front", "a", "b"] {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {NS}}}\n\
             spec: {{ports: [{{name: grpc, port: {GRPC_PORT}}}]}}\n"
        ));
    }
    for svc in [a, b] {
        out.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {name}-0, namespace: {NS}, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nports: [{{name: grpc, port: {port}}}]\n\
             endpoints: [{{addresses: [\"127.0.0.1\"], conditions: {{ready: true}}}}]\n",
            name = svc.name,
            port = svc.servers[0].addr().port(),
        ));
    }
    out
}

fn route_yaml(weight_a: u32, weight_b: u32) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\n\
         metadata: {{name: split, namespace: {NS}}}\n\
         spec:\n  parentRefs: [{{group: \"\", kind: Service, name: front}}]\n\
         \x20 rules:\n  - backendRefs:\n\
         \x20   - {{name: a, port: {GRPC_PORT}, weight: {weight_a}}}\n\
         \x20   - {{name: b, port: {GRPC_PORT}, weight: {weight_b}}}\n"
    )
}

/// Calls until one is answered by a pod of `prefix` (at most 5 s).
async fn until_served_by(mesh: &Mesh, prefix: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = call(mesh.channel("front:7070")?, ECHO, &[]).await?;
        if backend(r.metadata()).is_some_and(|b| b.starts_with(prefix)) {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the reload to {prefix} never took effect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn all_served_by(mesh: &Mesh, prefix: &str) -> anyhow::Result<()> {
    let channel = mesh.channel("front:7070")?;
    let t = tally(20, |_| call(channel.clone(), ECHO, &[])).await;
    t.assert_no_errors();
    assert_eq!(t.by_prefix(prefix), 20, "{:?}", t.backends);
    Ok(())
}

/// A `ManifestDir` source on a temporary folder: rewriting the weights reroutes; a file of
/// broken YAML is reported (`source_error` names it) while the last good configuration
/// keeps serving, and nothing of a reload with a broken file is applied; removing the
/// broken file applies the current files again.
#[tokio::test]
async fn manifest_folder_reloads_and_survives_broken_files() -> anyhow::Result<()> {
    let a = EchoService::start(NS, "a", 1).await?;
    let b = EchoService::start(NS, "b", 1).await?;
    let dir = tempfile::tempdir()?;
    write(dir.path(), "services.yaml", &services_yaml(&a, &b))?;
    write(dir.path(), "route.yaml", &route_yaml(100, 0))?;
    let mesh = Mesh::builder().namespace(NS).seed(44).build_with_source(
        ManifestDir::new(dir.path())
            .debounce(Duration::from_millis(10))
            .poll_interval(Duration::from_millis(250)),
    );
    tokio::time::timeout(Duration::from_secs(5), mesh.ready())
        .await
        .context("the folder was never loaded")?;
    all_served_by(&mesh, "a-").await?;

    write(dir.path(), "route.yaml", &route_yaml(0, 100))?;
    until_served_by(&mesh, "b-").await?;
    all_served_by(&mesh, "b-").await?;

    write(
        dir.path(),
        "broken.yaml",
        "kind: [this is not\n  valid: yaml\n",
    )?;
    assert!(
        eventually(Duration::from_secs(5), || mesh
            .source_error()
            .is_some_and(|e| e.contains("broken.yaml")))
        .await,
        "source_error: {:?}",
        mesh.source_error()
    );
    all_served_by(&mesh, "b-").await?;
    // A valid change next to the broken file is not applied either: all or nothing.
    write(dir.path(), "route.yaml", &route_yaml(100, 0))?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    all_served_by(&mesh, "b-").await?;

    std::fs::remove_file(dir.path().join("broken.yaml"))?;
    until_served_by(&mesh, "a-").await?;
    all_served_by(&mesh, "a-").await?;
    assert_eq!(mesh.source_error(), None);
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

each_delivery! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    graceful_backend_shutdown_under_load_loses_nothing
}
/// One of two replicas shuts down gracefully (HTTP/2 GOAWAY, then its port closes) while
/// four tasks call continuously and before any configuration change removes it, as when a
/// pod is terminated ahead of its endpoint update. Calls in flight on it complete; new
/// calls that it refuses (GOAWAY, or a refused connect) were never processed, so they are
/// retried on the other replica: no call fails.
async fn graceful_backend_shutdown_under_load_loses_nothing(
    delivery: Delivery,
) -> anyhow::Result<()> {
    let mut svc = EchoService::start(NS, "svc", 2).await?;
    let mut resources = Resources::new();
    add_all(&mut resources, svc.objects());
    let feed = Feed::with(delivery, resources).await?;
    let mesh = feed.mesh(Mesh::builder().namespace(NS).seed(45)).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let channel = mesh.channel("svc:7070")?;
        let stop = stop.clone();
        workers.spawn(async move {
            let mut results = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                results.push(
                    call(channel.clone(), ECHO, &[])
                        .await
                        .map(|r| backend(r.metadata())),
                );
            }
            results
        });
    }
    assert!(eventually(Duration::from_secs(5), || svc.servers[0].calls() >= 50).await);
    let leaving = svc.servers.remove(0);
    leaving.shutdown().await;
    let after_shutdown = svc.servers[0].calls();
    assert!(
        eventually(Duration::from_secs(5), || svc.servers[0].calls()
            >= after_shutdown + 200)
        .await
    );
    stop.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    let mut total = 0;
    while let Some(results) = workers.join_next().await {
        for r in results? {
            total += 1;
            if let Err(status) = r {
                failures.push(status);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} calls failed; first: {:?}",
        failures.len(),
        failures.first()
    );
    svc.shutdown().await;
    feed.shutdown().await;
    Ok(())
}

/// A minimal HTTP/2 server on 127.0.0.1 that answers every request's HEADERS with
/// `GOAWAY(last_stream_id = 0, NO_ERROR)`: the server's way to say the stream was not
/// processed (what a gracefully shutting-down server tells streams that raced its
/// shutdown). Returns its port and the count of requests it refused.
async fn goaway_server() -> anyhow::Result<(u16, Arc<AtomicUsize>, tokio::task::JoinHandle<()>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind((LOOPBACK, 0)).await?;
    let port = listener.local_addr()?.port();
    let refused = Arc::new(AtomicUsize::new(0));
    let counter = refused.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let _ = socket.set_nodelay(true);
                let mut preface = [0u8; 24];
                if socket.read_exact(&mut preface).await.is_err() {
                    return;
                }
                // Our (empty) SETTINGS.
                if socket
                    .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
                    .await
                    .is_err()
                {
                    return;
                }
                loop {
                    let mut header = [0u8; 9];
                    if socket.read_exact(&mut header).await.is_err() {
                        return;
                    }
                    let len = usize::from(header[0]) << 16
                        | usize::from(header[1]) << 8
                        | usize::from(header[2]);
                    let mut payload = vec![0u8; len];
                    if socket.read_exact(&mut payload).await.is_err() {
                        return;
                    }
                    let reply: &[u8] = match (header[3], header[4] & 1) {
                        // SETTINGS, not an ACK: acknowledge it.
                        (4, 0) => &[0, 0, 0, 4, 1, 0, 0, 0, 0],
                        // HEADERS: refuse every stream, processed none.
                        (1, _) => {
                            counter.fetch_add(1, Ordering::SeqCst);
                            &[0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
                        }
                        _ => &[],
                    };
                    if socket.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok((port, refused, task))
}

each_delivery! { #[tokio::test] goaway_refused_call_is_unavailable }
/// A stream the server refuses with GOAWAY was never processed. gRPC's HTTP/2 transport
/// spec (PROTOCOL-HTTP2.md, "GOAWAY Frame"): "Clients should consider any stream initiated
/// after the last successfully accepted stream as UNAVAILABLE and retry the call
/// elsewhere." With no other endpoint to go to, the caller must see UNAVAILABLE.
async fn goaway_refused_call_is_unavailable(delivery: Delivery) -> anyhow::Result<()> {
    let (port, refused, server) = goaway_server().await?;
    let resources = Resources::new()
        .with(service(NS, "svc").port("grpc", GRPC_PORT))
        .with(endpoints(NS, "svc").port("grpc", port).ready(LOOPBACK));
    let feed = Feed::with(delivery, resources).await?;
    let mesh = feed.mesh(Mesh::builder().namespace(NS).seed(46)).await?;
    let status = call(mesh.channel("svc:7070")?, ECHO, &[])
        .await
        .err()
        .context("a refused stream cannot succeed")?;
    assert_eq!(
        refused.load(Ordering::SeqCst),
        1,
        "the request reached the server"
    );
    assert_eq!(
        status.code(),
        tonic::Code::Unavailable,
        "a stream refused by GOAWAY must fail UNAVAILABLE: {status:?}"
    );
    server.abort();
    feed.shutdown().await;
    Ok(())
}

each_delivery! { #[tokio::test] goaway_refused_call_is_retried_elsewhere }
/// The same refusal with a healthy second endpoint: the refused call is retried there, so
/// no call fails (and the refusing endpoint did refuse some).
async fn goaway_refused_call_is_retried_elsewhere(delivery: Delivery) -> anyhow::Result<()> {
    let (port, refused, server) = goaway_server().await?;
    let live = EchoService::start(NS, "svc", 1).await?;
    let mut resources = Resources::new();
    add_all(&mut resources, live.objects());
    resources.push(
        endpoints(NS, "svc")
            .name("svc-goaway")
            .port("grpc", port)
            .ready(LOOPBACK),
    );
    let feed = Feed::with(delivery, resources).await?;
    let mesh = feed.mesh(Mesh::builder().namespace(NS).seed(47)).await?;
    let channel = mesh.channel("svc:7070")?;
    let t = tally(50, |_| call(channel.clone(), ECHO, &[])).await;
    assert!(
        refused.load(Ordering::SeqCst) >= 1,
        "the refusing endpoint was never tried"
    );
    t.assert_no_errors();
    assert_eq!(t.by_prefix("svc-0"), 50);
    server.abort();
    live.shutdown().await;
    feed.shutdown().await;
    Ok(())
}

/// A listener on 127.0.0.1 whose accept queue is full and never drained: TCP connects to it
/// hang (the kernel drops the SYNs) until the client gives up.
async fn hanging_listener()
-> anyhow::Result<(u16, Vec<tokio::net::TcpStream>, tokio::net::TcpListener)> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::new(LOOPBACK, 0))?;
    let listener = socket.listen(0)?;
    let addr = listener.local_addr()?;
    let mut held = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(stream)) => held.push(stream),
            Ok(Err(e)) => return Err(e.into()),
            // The queue is full: the next connect hangs too.
            Err(_) => return Ok((addr.port(), held, listener)),
        }
    }
    anyhow::bail!("could not fill the accept queue of {addr}")
}

each_delivery! { #[tokio::test] call_follows_endpoints_replaced_twice_before_it_is_sent }
/// A call that has not been sent yet when its backend's endpoints are replaced, twice in a
/// row, must go to the newest endpoints: it never left the client. Here the call is held up
/// connecting (to endpoints whose connects hang) while the configuration changes: e1 → e2
/// (e1's connect times out, the call moves to e2), then e2 → a live server (e2's connect
/// times out, the call must move again).
async fn call_follows_endpoints_replaced_twice_before_it_is_sent(
    delivery: Delivery,
) -> anyhow::Result<()> {
    let (port1, _held1, _l1) = hanging_listener().await?;
    let (port2, _held2, _l2) = hanging_listener().await?;
    let live = EchoService::start(NS, "live", 1).await?;
    let config = |port: u16| {
        Resources::new()
            .with(service(NS, "svc").port("grpc", GRPC_PORT))
            .with(
                endpoints(NS, "svc")
                    .name("svc-slice")
                    .port("grpc", port)
                    .ready(LOOPBACK),
            )
    };
    let feed = Feed::with(delivery, config(port1)).await?;
    let mesh = feed
        .mesh(
            Mesh::builder()
                .namespace(NS)
                .seed(48)
                // Long enough that each configuration change lands well inside the connect
                // it must interrupt, however slowly a busy machine delivers it.
                .connect_timeout(Duration::from_secs(3)),
        )
        .await?;
    let pending = tokio::spawn(call(mesh.channel("svc:7070")?, ECHO, &[]));
    // t ≈ 0.1 s: e1 is replaced while the call waits for e1's connect (times out at 3 s).
    tokio::time::sleep(Duration::from_millis(100)).await;
    feed.set(config(port2)).await?;
    // t ≈ 4.5 s: e2 is replaced while the call waits for e2's connect (3 s to 6 s).
    tokio::time::sleep(Duration::from_millis(4_400)).await;
    feed.set(config(live.servers[0].addr().port())).await?;
    let response = pending.await?;
    assert!(
        response.is_ok(),
        "a call that was never sent failed after two configuration changes: {:?}",
        response.err()
    );
    assert_eq!(live.calls(), 1);
    live.shutdown().await;
    feed.shutdown().await;
    Ok(())
}
