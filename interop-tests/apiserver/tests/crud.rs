//! kube `Api` writes: create/get/replace/patch/delete, conflicts, the status
//! subresource, generation rules, finalizers, cluster-scoped kinds.

mod common;

use common::{grpc_route, service, start};
use gateway_api::grpcroutes::GrpcRoute;
use grpcroute_test_apiserver::Resource;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.reason),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn generation<K: kube::Resource>(object: &K) -> i64 {
    object.meta().generation.unwrap_or_default()
}

fn rv<K: kube::Resource>(object: &K) -> u64 {
    object
        .resource_version()
        .unwrap_or_default()
        .parse()
        .unwrap_or_default()
}

#[tokio::test]
async fn create_get_replace_delete() -> TestResult {
    let server = start().await;
    let api = Api::<Service>::namespaced(server.client()?, "mesh");
    let svc: Service = serde_json::from_value(service("mesh", "a", 80))?;
    let created = api.create(&PostParams::default(), &svc).await?;
    let meta = &created.metadata;
    assert_eq!(meta.namespace.as_deref(), Some("mesh"));
    assert_eq!(meta.generation, Some(1));
    assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(rv(&created), server.resource_version());
    assert_eq!(
        api_error(api.create(&PostParams::default(), &svc).await),
        (409, "AlreadyExists".into())
    );

    let mut fetched = api.get("a").await?;
    assert_eq!(fetched, created);
    fetched
        .spec
        .as_mut()
        .ok_or("spec")?
        .ports
        .as_mut()
        .ok_or("ports")?[0]
        .port = 81;
    let replaced = api.replace("a", &PostParams::default(), &fetched).await?;
    assert_eq!(generation(&replaced), 2);
    assert!(rv(&replaced) > rv(&created));
    // `fetched` still carries the old resourceVersion: optimistic concurrency says no.
    assert_eq!(
        api_error(api.replace("a", &PostParams::default(), &fetched).await),
        (409, "Conflict".into())
    );
    // Without a resourceVersion the update is unconditional.
    let mut unconditional = replaced.clone();
    unconditional.metadata.resource_version = None;
    unconditional.labels_mut().insert("x".into(), "y".into());
    let relabeled = api
        .replace("a", &PostParams::default(), &unconditional)
        .await?;
    assert_eq!(
        generation(&relabeled),
        2,
        "metadata-only changes keep the generation"
    );
    assert_eq!(
        api_error(
            api.replace("b", &PostParams::default(), &unconditional)
                .await
        ),
        (400, "BadRequest".into())
    );
    // A no-op replace changes nothing, not even the resource version.
    let same = api.replace("a", &PostParams::default(), &relabeled).await?;
    assert_eq!(rv(&same), rv(&relabeled));

    let deleted = api.delete("a", &DeleteParams::default()).await?;
    assert_eq!(deleted.left().map(|s| s.name_any()).as_deref(), Some("a"));
    assert_eq!(api_error(api.get("a").await), (404, "NotFound".into()));
    assert_eq!(
        api_error(api.delete("a", &DeleteParams::default()).await),
        (404, "NotFound".into())
    );

    // generateName, and a stale delete precondition.
    let generated: Service =
        serde_json::from_value(json!({"metadata": {"generateName": "gen-"}, "spec": {}}))?;
    let generated = api.create(&PostParams::default(), &generated).await?;
    let name = generated.name_any();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    let stale = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            resource_version: Some("1".into()),
            uid: None,
        }),
        ..DeleteParams::default()
    };
    assert_eq!(
        api_error(api.delete(&name, &stale).await),
        (409, "Conflict".into())
    );
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn every_patch_type() -> TestResult {
    let server = start().await;
    let api = Api::<Service>::default_namespaced(server.client()?);
    let params = PatchParams::default();
    // Server-side apply creates...
    let applied = api
        .patch(
            "a",
            &PatchParams::apply("test").force(),
            &Patch::Apply(service("default", "a", 80)),
        )
        .await?;
    assert_eq!(generation(&applied), 1);
    // ...and merges into the live object.
    let apply = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
        "spec": {"selector": {"app": "a"}}});
    let applied = api
        .patch("a", &PatchParams::apply("test"), &Patch::Apply(&apply))
        .await?;
    let spec = applied.spec.clone().ok_or("spec")?;
    assert_eq!(spec.ports.as_ref().map(Vec::len), Some(1));
    assert_eq!(
        spec.selector
            .as_ref()
            .and_then(|s| s.get("app"))
            .map(String::as_str),
        Some("a")
    );
    assert_eq!(generation(&applied), 2);
    let missing_manager = api.patch("a", &params, &Patch::Apply(&apply)).await;
    assert_eq!(api_error(missing_manager), (400, "BadRequest".into()));

    let merged = api
        .patch(
            "a",
            &params,
            &Patch::Merge(json!({"metadata": {"labels": {"app": null, "tier": "web"}}})),
        )
        .await?;
    assert_eq!(merged.labels().get("tier").map(String::as_str), Some("web"));
    assert!(!merged.labels().contains_key("app"));

    let strategic = json!({"spec": {"ports": [{"port": 81, "name": "second"}]}});
    let patched = api
        .patch("a", &params, &Patch::Strategic(strategic))
        .await?;
    let ports: Vec<i32> = patched
        .spec
        .and_then(|s| s.ports)
        .unwrap_or_default()
        .iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(ports, [80, 81], "strategic merge merges ports by port");

    let json_patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/spec/ports/0/port", "value": 90},
        {"op": "test", "path": "/metadata/labels/tier", "value": "web"},
    ]))?;
    let patched = api
        .patch("a", &params, &Patch::<()>::Json(json_patch))
        .await?;
    assert_eq!(
        patched.spec.and_then(|s| s.ports).map(|p| p[0].port),
        Some(90)
    );
    let failing: json_patch::Patch = serde_json::from_value(
        json!([{"op": "test", "path": "/metadata/labels/tier", "value": "db"}]),
    )?;
    assert_eq!(
        api_error(api.patch("a", &params, &Patch::<()>::Json(failing)).await).0,
        422
    );

    // A merge patch carrying a stale resourceVersion conflicts.
    let stale = json!({"metadata": {"resourceVersion": "1"}, "spec": {"type": "ClusterIP"}});
    assert_eq!(
        api_error(api.patch("a", &params, &Patch::Merge(stale)).await),
        (409, "Conflict".into())
    );
    assert_eq!(
        api_error(api.patch("nope", &params, &Patch::Merge(json!({}))).await),
        (404, "NotFound".into())
    );
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn status_subresource_and_generation() -> TestResult {
    let server = start().await;
    let api = Api::<GrpcRoute>::namespaced(server.client()?, "mesh");
    let mut route = grpc_route("mesh", "r", "a", 1);
    route["status"] =
        json!({"parents": [{"controllerName": "x", "parentRef": {"name": "a"}, "conditions": []}]});
    let created = api
        .create(&PostParams::default(), &serde_json::from_value(route)?)
        .await?;
    assert!(created.status.is_none(), "status is dropped on create");

    let status = json!({"status": {"parents": [{"controllerName": "mesh.example/ctl", "parentRef": {"group": "", "kind": "Service", "name": "a"},
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "", "lastTransitionTime": "2024-01-01T00:00:00Z", "observedGeneration": 1}]}]}});
    let with_status = api
        .patch_status("r", &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    assert_eq!(
        generation(&with_status),
        1,
        "status writes keep the generation"
    );
    assert!(rv(&with_status) > rv(&created));
    let parents = |r: &GrpcRoute| {
        r.status
            .as_ref()
            .map(|s| s.parents.len())
            .unwrap_or_default()
    };
    assert_eq!(parents(&with_status), 1);

    // Main-resource writes ignore .status; spec changes bump the generation.
    let mut edited = with_status.clone();
    edited.status = None;
    edited.spec.hostnames = Some(vec!["echo.example".into()]);
    let replaced = api.replace("r", &PostParams::default(), &edited).await?;
    assert_eq!(
        parents(&replaced),
        1,
        "status survives a main-resource replace"
    );
    assert_eq!(generation(&replaced), 2);
    let relabeled = api
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}, "status": null})),
        )
        .await?;
    assert_eq!((generation(&relabeled), parents(&relabeled)), (2, 1));

    // Status writes ignore everything else, and PUT /status checks the resourceVersion.
    let mut status_put = relabeled.clone();
    status_put.spec.hostnames = None;
    status_put.status = None;
    let after = api
        .replace_status("r", &PostParams::default(), &status_put)
        .await?;
    assert_eq!(
        after.spec.hostnames.as_deref(),
        Some(&["echo.example".to_owned()][..])
    );
    assert_eq!((generation(&after), parents(&after)), (2, 0));
    let stale = api
        .replace_status("r", &PostParams::default(), &status_put)
        .await;
    assert_eq!(api_error(stale), (409, "Conflict".into()));
    let status = api.get_status("r").await?;
    assert_eq!(rv(&status), rv(&after));

    // Direct access: apply_status writes status the same way.
    let mut direct = serde_json::to_value(&after)?;
    direct["status"] = json!({"parents": []});
    server.apply_status(direct)?;
    let stored = server
        .get(Resource::GrpcRoutes, "mesh", "r")
        .ok_or("stored")?;
    assert_eq!(stored["status"], json!({"parents": []}));
    assert_eq!(stored["metadata"]["generation"], 2);
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn finalizers_delay_deletion() -> TestResult {
    let server = start().await;
    let api = Api::<Service>::default_namespaced(server.client()?);
    let mut svc = service("default", "a", 80);
    svc["metadata"]["finalizers"] = json!(["example.com/hold"]);
    api.create(&PostParams::default(), &serde_json::from_value(svc)?)
        .await?;
    let marked = api
        .delete("a", &DeleteParams::default())
        .await?
        .left()
        .ok_or("object")?;
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(
        api.get("a").await.is_ok(),
        "still there while finalizers remain"
    );
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    assert_eq!(api_error(api.get("a").await).0, 404);
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn cluster_scoped_namespaces_and_leases() -> TestResult {
    let server = start().await;
    let client = server.client()?;
    let namespaces = Api::<Namespace>::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "mesh"}}))?;
    let created = namespaces.create(&PostParams::default(), &ns).await?;
    assert_eq!(
        created.status.and_then(|s| s.phase).as_deref(),
        Some("Active")
    );
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await?
        .iter()
        .map(|n| n.name_any())
        .collect();
    assert_eq!(names, ["default", "mesh"]);

    // Leader-election style use of a Lease.
    let leases = Api::<Lease>::namespaced(client.clone(), "mesh");
    let lease: Lease = serde_json::from_value(
        json!({"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 10}}),
    )?;
    let mut lease = leases.create(&PostParams::default(), &lease).await?;
    lease.spec.as_mut().ok_or("spec")?.holder_identity = Some("b".into());
    let taken = leases
        .replace("leader", &PostParams::default(), &lease)
        .await?;
    assert_eq!(
        taken.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("b")
    );
    assert_eq!(
        api_error(
            leases
                .replace("leader", &PostParams::default(), &lease)
                .await
        )
        .0,
        409
    );

    // Deleting a namespace does not cascade (documented simplification).
    namespaces.delete("mesh", &DeleteParams::default()).await?;
    assert!(server.get(Resource::Leases, "mesh", "leader").is_some());
    assert_eq!(server.list(Resource::Namespaces, None).len(), 1);
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn delete_collection_and_direct_access() -> TestResult {
    let server = start().await;
    for name in ["a", "b", "c"] {
        let mut svc = service("default", name, 80);
        svc["metadata"]["labels"]["group"] = json!(if name == "c" { "keep" } else { "drop" });
        server.apply(svc)?;
    }
    let api = Api::<Service>::default_namespaced(server.client()?);
    let deleted = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("group=drop"),
        )
        .await?;
    assert_eq!(deleted.left().map(|l| l.items.len()), Some(2));
    let left: Vec<String> = server
        .list(Resource::Services, Some("default"))
        .iter()
        .filter_map(|s| s["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(left, ["c"]);
    // A direct apply of an unchanged object is a no-op.
    let before = server.resource_version();
    server.apply(server.get(Resource::Services, "default", "c").ok_or("c")?)?;
    assert_eq!(server.resource_version(), before);
    let bad = server
        .apply(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}));
    assert_eq!(bad.map_err(|e| e.code), Err(400));
    server.shutdown().await;
    Ok(())
}
