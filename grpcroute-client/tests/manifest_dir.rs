//! [`ManifestDir`] as a source: an object whose content the API types cannot decode (a
//! filter type of a later Gateway API release) is rejected alone while the other
//! manifests route real calls; a document that cannot be read at all keeps the last good
//! configuration.

use std::{path::Path, time::Duration};

use grpcroute_client::{
    ConditionStatus, Mesh,
    build::{Backend, Rule, endpoints, route, service},
    source::ManifestDir,
};
use grpcroute_echo::{
    EchoConfig, EchoServer,
    pb::{EchoRequest, grpc_echo_client::GrpcEchoClient},
};
use serde_json::{Value, json};

/// Every test ends within this, whatever happens.
const TEST_BOUND: Duration = Duration::from_secs(30);

fn value(object: impl serde::Serialize) -> Value {
    serde_json::to_value(object).unwrap()
}

fn write(dir: &Path, name: &str, objects: &[Value]) {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    std::fs::write(dir.join(name), serde_json::to_vec_pretty(&list).unwrap()).unwrap();
}

/// GRPCRoute `mesh/{name}` sending every call to Service `parent` to `backend`.
fn forward(name: &str, parent: &str, backend: &str) -> Value {
    value(
        route("mesh", name)
            .parent_service(parent, Some(7070))
            .rule(Rule::new().backend(Backend::service(backend, 7070)))
            .build(),
    )
}

async fn call(mesh: &Mesh, target: &str) -> Result<String, tonic::Status> {
    let mut client = GrpcEchoClient::new(mesh.channel(target).unwrap());
    let mut request = tonic::Request::new(EchoRequest {});
    request.set_timeout(Duration::from_secs(2));
    let r = client.echo(request).await?;
    Ok(r.metadata()
        .get("x-echo-backend")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string())
}

/// Calls `target` until `expected` answers; fails after 5 s.
async fn converge(mesh: &Mesh, target: &str, expected: &str) {
    let started = tokio::time::Instant::now();
    loop {
        let got = call(mesh, target).await;
        if got.as_deref().ok() == Some(expected) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{target} never reached {expected}; last answer {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_undecodable_manifest_object_is_rejected_alone() {
    tokio::time::timeout(TEST_BOUND, async {
        let v1 = EchoServer::start(EchoConfig::new("echo-v1")).await.unwrap();
        let v2 = EchoServer::start(EchoConfig::new("echo-v2")).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut base = Vec::new();
        for (name, server) in [("echo", &v1), ("echo-v1", &v1), ("echo-v2", &v2)] {
            base.push(value(service("mesh", name).port("grpc", 7070).build()));
            base.push(value(
                endpoints("mesh", name)
                    .name(&format!("{name}-slice"))
                    .port("grpc", server.addr().port())
                    .ready(server.addr().ip())
                    .build(),
            ));
        }
        base.push(forward("good", "echo", "echo-v2"));
        write(dir.path(), "10-base.json", &base);
        // Applied, it would send echo-v1's calls to echo-v2.
        let mut future = forward("future", "echo-v1", "echo-v2");
        future["spec"]["rules"][0]["filters"] =
            json!([{"type": "FutureFilter", "futureFilter": {"mode": "strict"}}]);
        write(dir.path(), "20-future.json", &[future]);

        let source = ManifestDir::new(dir.path())
            .debounce(Duration::from_millis(10))
            .poll_interval(Duration::from_millis(100));
        let mesh = Mesh::builder()
            .namespace("mesh")
            .ready_timeout(Duration::from_secs(5))
            .build_with_source(source);
        tokio::time::timeout(Duration::from_secs(5), mesh.ready())
            .await
            .expect(
                "an_undecodable_manifest_object_is_rejected_alone: the manifests never applied",
            );
        assert_eq!(call(&mesh, "echo:7070").await.unwrap(), "echo-v2");
        assert_eq!(
            call(&mesh, "echo-v1:7070").await.unwrap(),
            "echo-v1",
            "the undecodable route is not applied"
        );
        let rejected = mesh.rejected();
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert_eq!(rejected[0].key().to_string(), "mesh/future");
        assert_eq!(rejected[0].field(), "spec.rules[0].filters[0].type");
        let text = mesh.metrics().encode();
        assert!(
            text.lines()
                .any(|l| l == "grpcroute_config_rejected_objects 1.0"),
            "{text}"
        );
        let statuses = mesh.statuses();
        let status = statuses
            .iter()
            .find(|s| s.route.name() == "future")
            .unwrap();
        let accepted = &status.parents[0].conditions[0];
        assert_eq!(
            (accepted.status, accepted.reason.as_str()),
            (ConditionStatus::False, "UnsupportedValue")
        );

        // A document that cannot be read at all keeps the last good configuration...
        std::fs::write(dir.path().join("30-broken.yaml"), "kind: [unclosed\n").unwrap();
        let mut changed = base.clone();
        *changed.last_mut().unwrap() = forward("good", "echo", "echo-v1");
        write(dir.path(), "10-base.json", &changed);
        // The folder is re-read on a change (debounced) or every 100 ms: wait for the error
        // it reports, then check that nothing was applied.
        while !mesh
            .source_error()
            .is_some_and(|e| e.contains("30-broken.yaml"))
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(call(&mesh, "echo:7070").await.unwrap(), "echo-v2", "kept");
        // ...and once it is gone, the new base and a fixed route apply.
        std::fs::remove_file(dir.path().join("30-broken.yaml")).unwrap();
        write(
            dir.path(),
            "20-future.json",
            &[forward("future", "echo-v1", "echo-v2")],
        );
        converge(&mesh, "echo:7070", "echo-v1").await;
        converge(&mesh, "echo-v1:7070", "echo-v2").await;
        assert!(mesh.rejected().is_empty(), "{:?}", mesh.rejected());
    })
    .await
    .expect("an_undecodable_manifest_object_is_rejected_alone timed out");
}
