//! The wire protocol as kube's raw `Api::watch`/`Api::list` and plain HTTP see it.

mod common;

use std::time::Duration;

use common::{service, start, start_with, within};
use futures_util::StreamExt;
use grpcroute_test_apiserver::{ApiServer, ReferenceGrantVersions, Resource};
use k8s_openapi::api::core::v1::Service;
use kube::api::{ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use kube::discovery::{Discovery, verbs};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn describe(event: &WatchEvent<Service>) -> String {
    match event {
        WatchEvent::Added(s) => format!("ADDED {}", s.name_any()),
        WatchEvent::Modified(s) => format!("MODIFIED {}", s.name_any()),
        WatchEvent::Deleted(s) => format!("DELETED {}", s.name_any()),
        WatchEvent::Bookmark(b) => format!("BOOKMARK {}", b.metadata.resource_version),
        WatchEvent::Error(e) => format!("ERROR {} {}", e.code, e.reason),
    }
}

async fn get_json(client: &kube::Client, path: &str) -> Result<Value, Box<dyn std::error::Error>> {
    let request = http::Request::get(path).body(Vec::new())?;
    Ok(serde_json::from_str(&client.request_text(request).await?)?)
}

#[tokio::test]
async fn selector_transitions_become_added_and_deleted() -> TestResult {
    let server = start().await;
    server.apply(service("default", "a", 80))?;
    let api = Api::<Service>::default_namespaced(server.client()?);
    let rv = server.resource_version().to_string();
    let params = WatchParams::default().labels("app=a").timeout(5);
    let mut stream = api.watch(&params, &rv).await?.boxed();
    let mut next = async || -> Result<String, Box<dyn std::error::Error>> {
        loop {
            let event = within(Duration::from_secs(3), "a watch event", stream.next()).await;
            let event = event.ok_or("watch ended")??;
            if !matches!(event, WatchEvent::Bookmark(_)) {
                return Ok(describe(&event));
            }
        }
    };
    let relabel = |app: &str| json!({"metadata": {"labels": {"app": app}}});
    api.patch("a", &PatchParams::default(), &Patch::Merge(&relabel("x")))
        .await?;
    assert_eq!(next().await?, "DELETED a");
    server.apply(service("default", "other", 80))?; // never matches
    api.patch("a", &PatchParams::default(), &Patch::Merge(&relabel("a")))
        .await?;
    assert_eq!(next().await?, "ADDED a");
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"type": "ClusterIP"}})),
    )
    .await?;
    assert_eq!(next().await?, "MODIFIED a");
    server.delete(Resource::Services, "default", "a")?;
    assert_eq!(next().await?, "DELETED a");
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn expired_versions_get_one_error_event_with_http_200() -> TestResult {
    let server = start().await;
    server.apply(service("default", "a", 80))?;
    let old = server.resource_version();
    server.compact();
    let client = server.client()?;
    let api = Api::<Service>::default_namespaced(client.clone());
    let events: Vec<_> = api
        .watch(&WatchParams::default(), &old.to_string())
        .await?
        .collect()
        .await;
    assert_eq!(events.len(), 1, "{events:?}");
    let Ok(WatchEvent::Error(status)) = &events[0] else {
        panic!("expected an ERROR event: {events:?}");
    };
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
    assert_eq!(
        status.message,
        format!("too old resource version: {old} ({})", old + 1)
    );

    // The raw body: HTTP 200 (request_text fails on error statuses), one line.
    let path = format!("/api/v1/namespaces/default/services?watch=1&resourceVersion={old}");
    let body = client
        .request_text(http::Request::get(path).body(Vec::new())?)
        .await?;
    assert_eq!(body.lines().count(), 1);
    let line: Value = serde_json::from_str(body.trim())?;
    assert_eq!(line["type"], "ERROR");
    assert_eq!(line["object"]["kind"], "Status");
    assert_eq!(line["object"]["status"], "Failure");

    // Lists stay valid and report a version at the new floor.
    let list = api.list(&ListParams::default()).await?;
    let list_rv: u64 = list
        .metadata
        .resource_version
        .as_deref()
        .unwrap_or("0")
        .parse()?;
    assert!(list_rv > old);
    let resumed = api
        .watch(&WatchParams::default().timeout(1), &list_rv.to_string())
        .await?;
    let resumed: Vec<_> = resumed.collect().await;
    assert!(
        resumed
            .iter()
            .all(|e| matches!(e, Ok(WatchEvent::Bookmark(_)))),
        "{resumed:?}"
    );
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn watch_timeouts_end_cleanly_and_bookmarks_carry_the_latest_version() -> TestResult {
    let server = start().await;
    server.apply(service("default", "a", 80))?;
    let api = Api::<Service>::default_namespaced(server.client()?);
    let from = server.resource_version();
    server.apply(service("default", "b", 80))?;
    server.apply(
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "l", "namespace": "default"}, "spec": {}}),
    )?;
    let started = tokio::time::Instant::now();
    let events: Vec<String> = api
        .watch(&WatchParams::default().timeout(1), &from.to_string())
        .await?
        .map(|e| {
            e.map(|e| describe(&e))
                .unwrap_or_else(|e| format!("error {e}"))
        })
        .collect()
        .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert_eq!(events[0], "ADDED b", "history replay: {events:?}");
    let latest = format!("BOOKMARK {}", server.resource_version());
    assert!(events.contains(&latest), "{events:?}");

    // From "0" (or no version): synthetic ADDED events for the current state.
    let now: Vec<String> = api
        .watch(
            &WatchParams {
                bookmarks: false,
                ..WatchParams::default().timeout(1)
            },
            "0",
        )
        .await?
        .map(|e| e.map(|e| describe(&e)).unwrap_or_default())
        .collect()
        .await;
    assert_eq!(now, ["ADDED a", "ADDED b"]);

    // Streaming list: ADDED events, then the annotated bookmark.
    let path = "/api/v1/namespaces/default/services?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1";
    let client = server.client()?;
    let body = client
        .request_text(http::Request::get(path).body(Vec::new())?)
        .await?;
    let lines: Vec<Value> = body
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines[0]["type"], "ADDED");
    assert_eq!(lines[2]["type"], "BOOKMARK");
    assert_eq!(
        lines[2]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn lists_paginate_and_filter() -> TestResult {
    let server = start().await;
    for (ns, name, tier) in [
        ("a", "s1", "front"),
        ("a", "s2", "back"),
        ("b", "s3", "front"),
        ("b", "s4", "db"),
        ("c", "s5", "front"),
    ] {
        let mut svc = service(ns, name, 80);
        svc["metadata"]["labels"]["tier"] = json!(tier);
        server.apply(svc)?;
    }
    let client = server.client()?;
    let all = Api::<Service>::all(client.clone());
    let names = |list: kube::core::ObjectList<Service>| {
        list.items.iter().map(|s| s.name_any()).collect::<Vec<_>>()
    };

    let mut pages = Vec::new();
    let mut params = ListParams::default().limit(2);
    loop {
        let page = all.list(&params).await?;
        let token = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        pages.push(names(page));
        match token {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    assert_eq!(pages, [vec!["s1", "s2"], vec!["s3", "s4"], vec!["s5"]]);

    for (selector, expected) in [
        ("tier=front", vec!["s1", "s3", "s5"]),
        ("tier!=front", vec!["s2", "s4"]),
        ("tier in (back,db)", vec!["s2", "s4"]),
        ("tier notin (back,db),app in (s1,s5)", vec!["s1", "s5"]),
        ("tier", vec!["s1", "s2", "s3", "s4", "s5"]),
        ("!tier", vec![]),
    ] {
        let got = names(all.list(&ListParams::default().labels(selector)).await?);
        assert_eq!(got, expected, "{selector}");
    }
    let by_name = all
        .list(&ListParams::default().fields("metadata.name=s4"))
        .await?;
    assert_eq!(names(by_name), ["s4"]);
    let by_ns = all
        .list(&ListParams::default().fields("metadata.namespace=b"))
        .await?;
    assert_eq!(names(by_ns), ["s3", "s4"]);
    let namespaced = Api::<Service>::namespaced(client.clone(), "b");
    assert_eq!(
        names(namespaced.list(&ListParams::default().match_any()).await?),
        ["s3", "s4"]
    );

    // The raw shape: typed list with apiVersion/kind on every item.
    let raw = get_json(&client, "/api/v1/services?limit=1").await?;
    assert_eq!(raw["kind"], "ServiceList");
    assert_eq!(raw["apiVersion"], "v1");
    assert_eq!(
        raw["metadata"]["resourceVersion"],
        json!(server.resource_version().to_string())
    );
    assert_eq!(raw["metadata"]["remainingItemCount"], 4);
    assert_eq!(raw["items"][0]["kind"], "Service");
    assert!(raw["items"][0]["metadata"]["resourceVersion"].is_string());

    // A continue token is refused once its version is compacted away.
    let first = all.list(&ListParams::default().limit(2)).await?;
    server.compact();
    let token = first.metadata.continue_.unwrap_or_default();
    let err = all
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect_err("expired token");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 410 && s.reason == "Expired"),
        "{err:?}"
    );
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn discovery_documents_serve_kube_discovery() -> TestResult {
    let server = start().await;
    let client = server.client()?;
    let version = client.apiserver_version().await?;
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "36")
    );
    let discovery = Discovery::new(client.clone()).run().await?;
    let group = discovery
        .get("gateway.networking.k8s.io")
        .ok_or("gateway group")?;
    assert_eq!(group.preferred_version_or_latest(), "v1");
    let (route, caps) = group
        .recommended_resources()
        .into_iter()
        .find(|(r, _)| r.kind == "GRPCRoute")
        .ok_or("GRPCRoute discovered")?;
    assert_eq!(route.plural, "grpcroutes");
    assert!(caps.supports_operation(verbs::WATCH));
    assert!(
        caps.subresources
            .iter()
            .any(|(r, _)| r.plural == "grpcroutes/status" || r.plural == "status")
    );
    let core = discovery.get("").ok_or("core group")?;
    assert!(
        core.recommended_resources()
            .iter()
            .any(|(r, c)| r.kind == "Namespace" && c.scope == kube::discovery::Scope::Cluster)
    );

    // Aggregated discovery (one request for /api, one for /apis) agrees.
    let aggregated = Discovery::new(client.clone()).run_aggregated().await?;
    let group = aggregated
        .get("gateway.networking.k8s.io")
        .ok_or("aggregated gateway group")?;
    let (route, caps) = group
        .recommended_kind("GRPCRoute")
        .ok_or("aggregated GRPCRoute")?;
    assert_eq!(
        (route.plural.as_str(), route.version.as_str()),
        ("grpcroutes", "v1")
    );
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(
        aggregated
            .get("")
            .is_some_and(|core| core.recommended_kind("Service").is_some())
    );

    let raw = get_json(&client, "/apis/gateway.networking.k8s.io/v1").await?;
    let names: Vec<&str> = raw["resources"]
        .as_array()
        .ok_or("resources")?
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "grpcroutes",
            "grpcroutes/status",
            "referencegrants",
            "backendtlspolicies",
            "backendtlspolicies/status"
        ]
    );
    let missing = client
        .request_text(http::Request::get("/openapi/v2").body(Vec::new())?)
        .await;
    assert!(
        matches!(missing, Err(kube::Error::Api(ref s)) if s.code == 404),
        "{missing:?}"
    );
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn reference_grants_can_be_served_as_v1beta1_only() -> TestResult {
    let server = start_with(
        ApiServer::builder().reference_grant_versions(ReferenceGrantVersions::V1Beta1Only),
    )
    .await;
    let client = server.client()?;
    let discovery = Discovery::new(client.clone()).run().await?;
    let group = discovery
        .get("gateway.networking.k8s.io")
        .ok_or("gateway group")?;
    let versions: Vec<&str> = group.versions().collect();
    assert_eq!(versions, ["v1", "v1beta1"]);
    let grants: Vec<_> = group
        .versioned_resources("v1")
        .into_iter()
        .filter(|(r, _)| r.kind == "ReferenceGrant")
        .collect();
    assert!(grants.is_empty(), "no v1 ReferenceGrant");
    let beta: Vec<_> = group
        .versioned_resources("v1beta1")
        .into_iter()
        .filter(|(r, _)| r.kind == "ReferenceGrant")
        .collect();
    assert_eq!(beta.len(), 1);

    // The typed v1 API is a 404; v1beta1 works through a dynamic API.
    let v1 =
        Api::<gateway_api::referencegrants::ReferenceGrant>::default_namespaced(client.clone());
    let err = v1
        .list(&ListParams::default())
        .await
        .expect_err("v1 not served");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404),
        "{err:?}"
    );
    let resource = &beta[0].0;
    let dynamic =
        Api::<kube::api::DynamicObject>::namespaced_with(client.clone(), "default", resource);
    let grant: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
        "metadata": {"name": "g"},
        "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "GRPCRoute", "namespace": "x"}],
                 "to": [{"group": "", "kind": "Service"}]},
    }))?;
    dynamic.create(&Default::default(), &grant).await?;
    let listed = dynamic.list(&ListParams::default()).await?;
    assert_eq!(listed.items.len(), 1);
    assert_eq!(
        listed.items[0]
            .types
            .as_ref()
            .map(|t| t.api_version.as_str()),
        Some("gateway.networking.k8s.io/v1beta1")
    );
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn both_reference_grant_versions_share_storage() -> TestResult {
    let server = start().await;
    let client = server.client()?;
    server.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
        "metadata": {"name": "g", "namespace": "default"},
        "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "GRPCRoute", "namespace": "x"}],
                 "to": [{"group": "", "kind": "Service"}]},
    }))?;
    let v1 =
        Api::<gateway_api::referencegrants::ReferenceGrant>::default_namespaced(client.clone());
    let grant = v1.get("g").await?;
    assert_eq!(grant.spec.from[0].namespace, "x");
    let beta = get_json(
        &client,
        "/apis/gateway.networking.k8s.io/v1beta1/namespaces/default/referencegrants/g",
    )
    .await?;
    assert_eq!(beta["apiVersion"], "gateway.networking.k8s.io/v1beta1");
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn metadata_only_lists_and_watches() -> TestResult {
    use kube::core::PartialObjectMeta;
    use kube::runtime::{WatchStreamExt, watcher};
    let server = start().await;
    server.apply(service("default", "a", 80))?;
    let client = server.client()?;
    let api = Api::<Service>::default_namespaced(client.clone());
    let listed = api.list_metadata(&ListParams::default()).await?;
    assert_eq!(listed.items[0].name_any(), "a");
    let request = http::Request::get("/api/v1/namespaces/default/services")
        .header(
            "accept",
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
        )
        .body(Vec::new())?;
    let raw: Value = serde_json::from_str(&client.request_text(request).await?)?;
    assert_eq!(raw["kind"], "PartialObjectMetadataList");
    assert_eq!(raw["items"][0]["kind"], "PartialObjectMetadata");
    assert!(raw["items"][0].get("spec").is_none());

    let metadata_api = Api::<PartialObjectMeta<Service>>::default_namespaced(client.clone());
    let mut names = watcher(metadata_api, watcher::Config::default().timeout(2))
        .applied_objects()
        .map(|o| o.map(|o| o.name_any()))
        .boxed();
    assert_eq!(
        within(Duration::from_secs(5), "initial", names.next())
            .await
            .ok_or("end")??,
        "a"
    );
    server.apply(service("default", "b", 80))?;
    assert_eq!(
        within(Duration::from_secs(5), "live", names.next())
            .await
            .ok_or("end")??,
        "b"
    );
    server.shutdown().await;
    Ok(())
}
