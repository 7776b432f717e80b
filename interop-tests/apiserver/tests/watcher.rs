//! kube-rs watchers and reflectors against the test apiserver, including every fault.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Watched, endpoint_slice, grpc_route, service, start, start_with, within};
use gateway_api::grpcroutes::GrpcRoute;
use grpcroute_test_apiserver::{ApiServer, Resource};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn config() -> watcher::Config {
    watcher::Config::default().timeout(2)
}

#[tokio::test]
async fn lists_then_streams_changes_for_every_kind() -> TestResult {
    let server = start().await;
    server.apply(service("mesh", "a", 80))?;
    server.apply(service("other", "z", 80))?;
    server.apply(endpoint_slice("mesh", "a-1", "a", &["10.0.0.1"]))?;
    server.apply(grpc_route("mesh", "r", "a", 1))?;
    let client = server.client()?;
    // Services cluster-wide, the others in one namespace.
    let services = Watched::start(Api::<Service>::all(client.clone()), config());
    let slices = Watched::start(
        Api::<EndpointSlice>::namespaced(client.clone(), "mesh"),
        config(),
    );
    let routes = Watched::start(
        Api::<GrpcRoute>::namespaced(client.clone(), "mesh"),
        config(),
    );
    services.ready().await;
    slices.ready().await;
    routes.ready().await;
    assert_eq!(services.names(), ["a", "z"]);
    assert_eq!(
        services.events()[..2],
        ["Init".to_owned(), "InitApply(a)".to_owned()]
    );
    assert_eq!(slices.names(), ["a-1"]);
    assert_eq!(routes.names(), ["r"]);

    // Writes through HTTP and direct writes both reach the watches.
    let api = Api::<Service>::namespaced(client.clone(), "mesh");
    api.create(
        &PostParams::default(),
        &serde_json::from_value(service("mesh", "b", 81))?,
    )
    .await?;
    server.apply(endpoint_slice(
        "mesh",
        "a-1",
        "a",
        &["10.0.0.1", "10.0.0.2"],
    ))?;
    server.apply(endpoint_slice("elsewhere", "x-1", "x", &["10.9.9.9"]))?;
    let patch = json!({"spec": {"rules": [{"backendRefs": [{"name": "b", "port": 50051}]}]}});
    Api::<GrpcRoute>::namespaced(client.clone(), "mesh")
        .patch("r", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    server.delete(Resource::Services, "other", "z")?;

    services.wait_for_names(&["a", "b"]).await;
    services.wait_for_event(0, |e| e == "Delete(z)").await;
    slices.wait_for_event(0, |e| e == "Apply(a-1)").await;
    routes.wait_for_event(0, |e| e == "Apply(r)").await;
    let slice = slices.store.state();
    assert_eq!(slice[0].endpoints.as_ref().map(Vec::len), Some(2));
    assert_eq!(slices.names(), ["a-1"], "other namespaces stay out");
    let route = &routes.store.state()[0];
    assert_eq!(
        route
            .spec
            .rules
            .as_ref()
            .map(|r| r[0].backend_refs.is_some()),
        Some(true)
    );
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn streaming_lists_use_initial_events() -> TestResult {
    let server = start().await;
    server.apply(service("default", "a", 80))?;
    server.apply(service("default", "b", 80))?;
    let api = Api::<Service>::default_namespaced(server.client()?);
    let watched = Watched::start(api, config().streaming_lists());
    watched.wait_for_names(&["a", "b"]).await;
    watched.wait_for_event(0, |e| e == "InitDone").await;
    server.apply(service("default", "c", 80))?;
    watched.wait_for_names(&["a", "b", "c"]).await;
    let stats = server.stats();
    assert_eq!(
        stats.lists(Resource::Services),
        0,
        "no LIST with streaming lists"
    );
    assert!(stats.watches(Resource::Services) >= 1);
    server.shutdown().await;
    Ok(())
}

/// Fills the history with EndpointSlice writes until the Service watch's resource
/// version is below the floor (history_limit 5), then drops watches.
async fn resume_after_unrelated_churn(
    bookmarks: bool,
) -> Result<(Watched<Service>, ApiServer), Box<dyn std::error::Error>> {
    let server = start_with(ApiServer::builder().history_limit(5)).await;
    server.apply(service("default", "a", 80))?;
    let mut config = config().timeout(30);
    if !bookmarks {
        config = config.disable_bookmarks();
    }
    let watched = Watched::start(Api::<Service>::default_namespaced(server.client()?), config);
    watched.ready().await;
    assert!(
        server
            .wait_for_stats(Duration::from_secs(5), |s| s.open_watches() == 1)
            .await
    );
    for i in 0..10 {
        server.apply(endpoint_slice(
            "default",
            &format!("s-{i}"),
            "a",
            &["10.0.0.1"],
        ))?;
    }
    if bookmarks {
        // A bookmark carrying the version of the last write is on its way to the watcher
        // (bookmarks carry the latest global version, every 100 ms): what it reads before
        // its watch ends.
        let latest = server.resource_version();
        assert!(
            server
                .wait_for_stats(Duration::from_secs(10), |s| {
                    s.resource(Resource::Services).bookmark_rv >= latest
                })
                .await,
            "no bookmark at version {latest}: {:?}",
            server.stats()
        );
    } else {
        // A few bookmark intervals, in which none may come.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    server.drop_watches();
    let rewatched = server
        .wait_for_stats(Duration::from_secs(5), |s| {
            s.watches(Resource::Services) >= 2 && s.open_watches() == 1
        })
        .await;
    assert!(
        rewatched,
        "the watcher never re-watched: {:?}",
        server.stats()
    );
    Ok((watched, server))
}

#[tokio::test]
async fn bookmarks_keep_the_resource_version_fresh() -> TestResult {
    let (watched, server) = resume_after_unrelated_churn(true).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        server.stats().lists(Resource::Services),
        1,
        "no relist: {:?}",
        watched.events()
    );
    assert!(
        !watched.events().iter().any(|e| e.starts_with("Err")),
        "{:?}",
        watched.events()
    );
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn without_bookmarks_churn_expires_the_watch() -> TestResult {
    let (watched, server) = resume_after_unrelated_churn(false).await?;
    watched
        .wait_for_event(0, |e| e.contains("too old resource version"))
        .await;
    let relisted = server
        .wait_for_stats(Duration::from_secs(5), |s| s.lists(Resource::Services) == 2)
        .await;
    assert!(relisted, "{:?}", server.stats());
    watched.wait_for_names(&["a"]).await;
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn compaction_forces_an_atomic_relist() -> TestResult {
    let server = start().await;
    for name in ["a", "b", "c"] {
        server.apply(service("default", name, 80))?;
    }
    let watched = Watched::start(
        Api::<Service>::default_namespaced(server.client()?),
        config(),
    );
    watched.ready().await;
    server.apply(service("default", "d", 80))?;
    watched.wait_for_event(0, |e| e == "Apply(d)").await;

    // Sample the store continuously: readers must never see a half-listed store.
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let (store, samples) = (watched.store.clone(), Arc::clone(&samples));
        tokio::spawn(async move {
            loop {
                let mut names: Vec<String> = store
                    .state()
                    .iter()
                    .map(|s| kube::ResourceExt::name_any(s.as_ref()))
                    .collect();
                names.sort();
                samples.lock().expect("samples").push(names);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let mark = watched.events().len();
    // Compaction first: the kill beats the following events (the `biased` select), so
    // the watcher learns about them only from the relist.
    server.compact();
    server.delete(Resource::Services, "default", "b")?;
    server.apply(service("default", "e", 80))?;
    watched.wait_for_names(&["a", "c", "d", "e"]).await;
    sampler.abort();

    let events = watched.events_since(mark);
    assert!(
        events
            .iter()
            .any(|e| e.contains("too old resource version")),
        "{events:?}"
    );
    let relist: Vec<&str> = events
        .iter()
        .map(String::as_str)
        .filter(|e| !e.starts_with("Err"))
        .collect();
    assert_eq!(
        relist,
        [
            "Init",
            "InitApply(a)",
            "InitApply(c)",
            "InitApply(d)",
            "InitApply(e)",
            "InitDone"
        ]
    );
    for names in samples.lock().expect("samples").iter() {
        let before = ["a", "b", "c", "d"];
        let after = ["a", "c", "d", "e"];
        assert!(
            names == &before || names == &after,
            "half-listed store seen: {names:?}"
        );
    }
    assert_eq!(server.stats().lists(Resource::Services), 2);
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn dropped_watches_resume_without_duplicates() -> TestResult {
    let server = start().await;
    server.apply(service("default", "a", 80))?;
    server.apply(service("default", "b", 80))?;
    let watched = Watched::start(
        Api::<Service>::default_namespaced(server.client()?),
        config().timeout(30),
    );
    watched.ready().await;
    server.apply(service("default", "c", 80))?;
    watched.wait_for_event(0, |e| e == "Apply(c)").await;
    let mark = watched.events().len();
    server.drop_watches();
    assert!(
        server
            .wait_for_stats(Duration::from_secs(5), |s| s.watches(Resource::Services)
                >= 2)
            .await
    );
    server.apply(service("default", "d", 80))?;
    watched.wait_for_names(&["a", "b", "c", "d"]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(watched.events_since(mark), ["Apply(d)"]);
    assert_eq!(server.stats().lists(Resource::Services), 1);
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn refused_connections_recover_on_the_same_port() -> TestResult {
    let server = start().await;
    server.apply(service("default", "a", 80))?;
    let url = server.url();
    let watched = Watched::start(
        Api::<Service>::default_namespaced(server.client()?),
        config(),
    );
    watched.ready().await;
    let mark = watched.events().len();

    server.refuse_connections(None).await;
    let refused = tokio::net::TcpStream::connect(server.addr()).await;
    assert!(refused.is_err(), "connect should be refused");
    // Changes while the server is unreachable.
    server.apply(service("default", "b", 80))?;
    server.delete(Resource::Services, "default", "a")?;
    watched.wait_for_event(mark, |e| e.starts_with("Err")).await;
    assert_eq!(watched.names(), ["a"]);

    server.accept_connections().await;
    assert_eq!(server.url(), url);
    watched.wait_for_names(&["b"]).await;
    let events = watched.events_since(mark);
    assert!(
        events.contains(&"Apply(b)".to_owned()) && events.contains(&"Delete(a)".to_owned()),
        "{events:?}"
    );
    assert_eq!(
        server.stats().lists(Resource::Services),
        1,
        "resumed from history, no relist"
    );

    // A timed refusal ends by itself.
    server
        .refuse_connections(Some(Duration::from_millis(300)))
        .await;
    server.apply(service("default", "c", 80))?;
    watched.wait_for_names(&["b", "c"]).await;
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn injected_failures_are_retried() -> TestResult {
    let server = start().await;
    server.apply(service("default", "a", 80))?;
    let api = Api::<Service>::default_namespaced(server.client()?);
    server.fail_requests(None);
    // The initial list fails too.
    let watched = Watched::start(api.clone(), config());
    watched.wait_for_event(0, |e| e.starts_with("Err")).await;
    let err = api.get("a").await.expect_err("500 while failing");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 500),
        "{err:?}"
    );
    server.stop_failing_requests();
    watched.ready().await;

    let mark = watched.events().len();
    server.fail_requests(Some(Duration::from_millis(700)));
    server.drop_watches();
    server.apply(service("default", "b", 80))?;
    watched.wait_for_names(&["a", "b"]).await;
    assert!(
        watched
            .events_since(mark)
            .iter()
            .any(|e| e.starts_with("Err"))
    );
    assert!(server.stats().injected_failures >= 2);
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn stalls_hold_requests_and_pause_watches() -> TestResult {
    let server = start().await;
    server.apply(service("default", "a", 80))?;
    let api = Api::<Service>::default_namespaced(server.client()?);
    let watched = Watched::start(api.clone(), config());
    watched.ready().await;

    server.stall_requests(Some(Duration::from_millis(1200)));
    server.apply(service("default", "b", 80))?;
    let started = tokio::time::Instant::now();
    let get = tokio::spawn(async move { api.get("a").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(watched.names(), ["a"], "nothing is delivered while stalled");
    let got = within(Duration::from_secs(5), "the held GET", get).await??;
    assert_eq!(got.metadata.name.as_deref(), Some("a"));
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    watched.wait_for_names(&["a", "b"]).await;
    assert!(
        !watched.events().iter().any(|e| e.starts_with("Err")),
        "{:?}",
        watched.events()
    );
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn restart_keeps_objects_and_resource_versions() -> TestResult {
    let server = start().await;
    server.apply(service("default", "a", 80))?;
    let watched = Watched::start(
        Api::<Service>::default_namespaced(server.client()?),
        config().timeout(30),
    );
    watched.ready().await;
    let rv = server.resource_version();
    let mark = watched.events().len();
    server.restart();
    server.apply(service("default", "b", 80))?;
    watched.wait_for_names(&["a", "b"]).await;
    assert_eq!(server.resource_version(), rv + 1);
    assert_eq!(
        server.stats().lists(Resource::Services),
        1,
        "resumed, no relist"
    );
    assert!(watched.events_since(mark).contains(&"Apply(b)".to_owned()));
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn stalled_watches_stay_open_and_silent_while_everything_else_is_served() -> TestResult {
    use futures_util::StreamExt as _;
    use kube::api::{WatchEvent, WatchParams};

    let server = start().await;
    server.apply(service("default", "a", 80))?;
    let client = server.client()?;
    let services = Api::<Service>::default_namespaced(client.clone());
    let slices = Api::<EndpointSlice>::default_namespaced(client.clone());
    let params = WatchParams::default().timeout(30);
    let mut stalled = services.watch(&params, "0").await?.boxed();
    let mut other = slices.watch(&params, "0").await?.boxed();
    // Bookmarks every 100 ms until the stall.
    let first = within(Duration::from_secs(5), "the first event", stalled.next()).await;
    assert!(matches!(first, Some(Ok(WatchEvent::Added(_)))), "{first:?}");
    let bookmark = within(Duration::from_secs(5), "a bookmark", stalled.next()).await;
    assert!(
        matches!(bookmark, Some(Ok(WatchEvent::Bookmark(_)))),
        "{bookmark:?}"
    );

    server.stall_open_watches(Some(Resource::Services));
    server.apply(service("default", "b", 80))?;
    let silent = tokio::time::timeout(Duration::from_millis(800), stalled.next()).await;
    assert!(
        silent.is_err(),
        "a stalled watch sends nothing, neither the event nor bookmarks: {silent:?}"
    );
    // Everything else is served: a GET, another resource's watch, a new watch that
    // replays what the stalled one missed.
    assert_eq!(services.get("b").await?.metadata.name.as_deref(), Some("b"));
    let bookmark = within(Duration::from_secs(5), "the other watch", other.next()).await;
    assert!(
        matches!(bookmark, Some(Ok(WatchEvent::Bookmark(_)))),
        "{bookmark:?}"
    );
    let mut again = services.watch(&params, "0").await?.boxed();
    let mut names = Vec::new();
    while names.len() < 2 {
        match within(Duration::from_secs(5), "the new watch", again.next()).await {
            Some(Ok(WatchEvent::Added(s))) => names.extend(s.metadata.name),
            Some(Ok(WatchEvent::Bookmark(_))) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    names.sort();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(server.stats().resource(Resource::Services).open_watches, 2);

    // The stalled watch ends only when its client goes away.
    drop(stalled);
    assert!(
        server
            .wait_for_stats(Duration::from_secs(5), |s| {
                s.resource(Resource::Services).open_watches == 1
            })
            .await,
        "{:?}",
        server.stats()
    );
    server.shutdown().await;
    Ok(())
}
