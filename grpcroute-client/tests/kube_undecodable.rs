//! The Kubernetes source against objects its API types cannot decode, served by the test
//! API server as a newer Gateway API CRD would serve them: an unknown filter `type`, an
//! unknown enum value, a field of the wrong shape, and fields of a later release. Each
//! such object is rejected alone (metric, log, status) and every other object keeps
//! routing real calls; fields the types do not know are ignored.
//!
//! Every test runs on a current-thread runtime (`#[tokio::test]`'s default): the log
//! capture relies on it.

use std::{cell::RefCell, io::Write, time::Duration};

use grpcroute_client::{
    ConditionStatus, Mesh, RouteStatus,
    build::{Backend, Rule, endpoints, grant, route, service},
    source::KubeSource,
};
use grpcroute_echo::{
    EchoConfig, EchoServer,
    pb::{EchoRequest, grpc_echo_client::GrpcEchoClient},
};
use grpcroute_test_apiserver::ApiServer;
use serde_json::{Value, json};
use tonic::Code;

/// Every test ends within this, whatever happens.
const TEST_BOUND: Duration = Duration::from_secs(40);

fn value(object: impl serde::Serialize) -> Value {
    serde_json::to_value(object).unwrap()
}

/// Echo backends `echo-v1` and `echo-v2`, and Services `echo`, `echo-v1`, `echo-v2` and
/// `echo-new` (port 7070) in namespace `mesh`: `echo-v2`'s endpoint is the v2 server, the
/// others' the v1 server.
async fn backends(server: &ApiServer) -> (EchoServer, EchoServer) {
    let v1 = EchoServer::start(EchoConfig::new("echo-v1")).await.unwrap();
    let v2 = EchoServer::start(EchoConfig::new("echo-v2")).await.unwrap();
    for name in ["echo", "echo-v1", "echo-v2", "echo-new"] {
        server
            .apply(value(service("mesh", name).port("grpc", 7070).build()))
            .unwrap();
        let s = if name == "echo-v2" { &v2 } else { &v1 };
        let slice = endpoints("mesh", name)
            .name(&format!("{name}-slice"))
            .port("grpc", s.addr().port())
            .ready(s.addr().ip());
        server.apply(value(slice.build())).unwrap();
    }
    (v1, v2)
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

/// `forward(..)` with a filter of a type a later Gateway API release might add.
fn with_future_filter(mut route: Value) -> Value {
    route["spec"]["rules"][0]["filters"] =
        json!([{"type": "FutureFilter", "futureFilter": {"mode": "strict"}}]);
    route
}

fn mesh_for(server: &ApiServer) -> Mesh {
    let source =
        KubeSource::with_client(server.client().unwrap()).watch_timeout(Duration::from_secs(2));
    Mesh::builder()
        .namespace("mesh")
        .ready_timeout(Duration::from_secs(5))
        .build_with_source(source)
}

/// The backend that serves one Echo call to `target`, or the error.
async fn call(mesh: &Mesh, target: &str) -> Result<String, (Code, String)> {
    let mut client = GrpcEchoClient::new(mesh.channel(target).unwrap());
    let mut request = tonic::Request::new(EchoRequest {});
    request.set_timeout(Duration::from_secs(2));
    match client.echo(request).await {
        Ok(r) => Ok(r
            .metadata()
            .get("x-echo-backend")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()),
        Err(s) => Err((s.code(), s.message().to_string())),
    }
}

/// Calls `target` until `expected` answers; fails after 5 s.
async fn converge(mesh: &Mesh, target: &str, expected: &str) {
    let started = tokio::time::Instant::now();
    loop {
        let got = call(mesh, target).await;
        if got.as_deref() == Ok(expected) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{target} never reached {expected}; last answer {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn gauge(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .unwrap()
}

fn status_of<'a>(statuses: &'a [RouteStatus], name: &str) -> &'a RouteStatus {
    statuses
        .iter()
        .find(|s| s.route.name() == name)
        .unwrap_or_else(|| panic!("no status for {name}: {statuses:#?}"))
}

/// `(status, reason, message)` of the `Accepted` condition of a route's first parent.
fn accepted(statuses: &[RouteStatus], name: &str) -> (ConditionStatus, String, String) {
    let status = status_of(statuses, name);
    let c = &status.parents[0].conditions[0];
    assert_eq!(c.type_, "Accepted");
    (c.status, c.reason.clone(), c.message.clone())
}

/// Warnings, captured per thread: one global subscriber (scoped ones race with the
/// callsite interest cache when tests run in parallel) writing to the buffer of the
/// thread that logs. Each test runs its mesh on its own current-thread runtime, so its
/// thread's buffer holds what its mesh logged. Every test calls this first.
fn capture_logs() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(|| ThreadLogs)
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    });
}

thread_local! {
    static LOGS: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

struct ThreadLogs;

impl Write for ThreadLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.with(|logs| logs.borrow_mut().extend_from_slice(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What this thread logged.
fn logs() -> String {
    LOGS.with(|logs| String::from_utf8_lossy(&logs.borrow()).into_owned())
}

/// One LIST holds valid routes and routes a newer CRD would serve: the valid ones route
/// real calls, the undecodable ones are rejected alone — counted, logged with
/// namespace/name and field, and given `Accepted=False` — and fields of a later release
/// are ignored with a warning.
#[tokio::test]
async fn undecodable_objects_in_the_initial_list_are_rejected_alone() {
    capture_logs();
    tokio::time::timeout(TEST_BOUND, async {
        let server = ApiServer::start().await;
        let (_v1, _v2) = backends(&server).await;
        server.apply(forward("good", "echo", "echo-v2")).unwrap();
        // Applied, it would send echo-v1's calls to echo-v2.
        server
            .apply(with_future_filter(forward("future-filter", "echo-v1", "echo-v2")))
            .unwrap();
        // Applied, it would send echo-v2's calls to echo-v1.
        let mut future_match = forward("future-match", "echo-v2", "echo-v1");
        future_match["spec"]["rules"][0]["matches"] =
            json!([{"method": {"type": "Prefix", "service": "grpc.echo"}}]);
        server.apply(future_match).unwrap();
        // Fields of a later (or the experimental) release: ignored, the route works.
        let mut newer = forward("newer-fields", "echo-new", "echo-v2");
        newer["spec"]["rules"][0]["sessionPersistence"] =
            json!({"type": "Cookie", "sessionName": "s"});
        newer["spec"]["rules"][0]["backendRefs"][0]["futureKnob"] = json!(3);
        server.apply(newer).unwrap();
        // A ReferenceGrant of the wrong shape.
        let mut bad_grant = value(grant("mesh", "bad-grant", "web", None));
        bad_grant["spec"]["from"] = json!("everyone");
        server.apply(bad_grant).unwrap();
        // A BackendTLSPolicy with an enum value of a later release (a SAN type); it
        // targets a Service no call here uses.
        server
            .apply(json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "BackendTLSPolicy",
                "metadata": {"namespace": "mesh", "name": "future-tls"},
                "spec": {
                    "targetRefs": [{"group": "", "kind": "Service", "name": "unused"}],
                    "validation": {
                        "hostname": "unused.mesh",
                        "wellKnownCACertificates": "System",
                        "subjectAltNames": [{"type": "IPAddress", "ipAddress": "10.0.0.1"}]
                    }
                }
            }))
            .unwrap();

        let mesh = mesh_for(&server);
        tokio::time::timeout(Duration::from_secs(10), mesh.ready())
            .await
            .expect("undecodable_objects_in_the_initial_list: the source never synced");

        assert_eq!(call(&mesh, "echo:7070").await.unwrap(), "echo-v2", "valid route");
        assert_eq!(
            call(&mesh, "echo-new:7070").await.unwrap(),
            "echo-v2",
            "the route with fields of a later release"
        );
        assert_eq!(
            call(&mesh, "echo-v1:7070").await.unwrap(),
            "echo-v1",
            "the route with a future filter is not applied"
        );
        assert_eq!(
            call(&mesh, "echo-v2:7070").await.unwrap(),
            "echo-v2",
            "the route with a future method match type is not applied"
        );

        let rejected = mesh.rejected();
        let fields: Vec<(String, &str)> = rejected
            .iter()
            .map(|r| (r.key().to_string(), r.field()))
            .collect();
        assert_eq!(
            fields,
            [
                (
                    "mesh/future-filter".to_string(),
                    "spec.rules[0].filters[0].type"
                ),
                (
                    "mesh/future-match".to_string(),
                    "spec.rules[0].matches[0].method.type"
                ),
                ("mesh/bad-grant".to_string(), "spec.from"),
                (
                    "mesh/future-tls".to_string(),
                    "spec.validation.subjectAltNames[0].type"
                ),
            ]
        );
        assert!(
            rejected[0].message().contains("unknown variant `FutureFilter`"),
            "{}",
            rejected[0]
        );
        assert_eq!(
            gauge(&mesh.metrics().encode(), "grpcroute_config_rejected_objects"),
            4.0
        );

        let statuses = mesh.statuses();
        let (status, reason, message) = accepted(&statuses, "future-filter");
        assert_eq!((status, reason.as_str()), (ConditionStatus::False, "UnsupportedValue"));
        assert!(
            message.starts_with("spec.rules[0].filters[0].type: unknown variant `FutureFilter`"),
            "{message}"
        );
        assert_eq!(status_of(&statuses, "future-filter").generation, Some(1));
        let (status, reason, message) = accepted(&statuses, "future-match");
        assert_eq!((status, reason.as_str()), (ConditionStatus::False, "UnsupportedValue"));
        assert!(message.contains("`Prefix`"), "{message}");
        assert_eq!(accepted(&statuses, "good").0, ConditionStatus::True);
        assert_eq!(accepted(&statuses, "newer-fields").0, ConditionStatus::True);

        let logs = logs();
        for expected in [
            "GRPCRoute mesh/future-filter: spec.rules[0].filters[0].type: unknown variant `FutureFilter`",
            "GRPCRoute mesh/future-match: spec.rules[0].matches[0].method.type: unknown variant `Prefix`",
            "ReferenceGrant mesh/bad-grant: spec.from: invalid type",
            "BackendTLSPolicy mesh/future-tls: spec.validation.subjectAltNames[0].type: unknown variant `IPAddress`",
            "spec.rules[0].backendRefs[0].futureKnob, spec.rules[0].sessionPersistence",
        ] {
            assert!(logs.contains(expected), "no {expected:?} in the logs:\n{logs}");
        }
        drop(mesh);
        server.shutdown().await;
    })
    .await
    .expect("undecodable_objects_in_the_initial_list_are_rejected_alone timed out");
}

/// A watch event (MODIFIED) that makes a working route undecodable drops that route (its
/// previous version does not keep routing) and reports it; the next valid version routes
/// again. Other routes are never disturbed, and the watch keeps following changes.
#[tokio::test]
async fn a_route_modified_to_undecodable_and_back() {
    capture_logs();
    tokio::time::timeout(TEST_BOUND, async {
        let server = ApiServer::start().await;
        let (_v1, _v2) = backends(&server).await;
        server.apply(forward("good", "echo", "echo-v2")).unwrap();
        server.apply(forward("flip", "echo-v1", "echo-v2")).unwrap();
        let mesh = mesh_for(&server);
        tokio::time::timeout(Duration::from_secs(10), mesh.ready())
            .await
            .expect("a_route_modified_to_undecodable_and_back: initial sync");
        assert_eq!(call(&mesh, "echo-v1:7070").await.unwrap(), "echo-v2");
        assert!(mesh.rejected().is_empty());

        server
            .apply(with_future_filter(forward("flip", "echo-v1", "echo-v2")))
            .unwrap();
        converge(&mesh, "echo-v1:7070", "echo-v1").await;
        let rejected = mesh.rejected();
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert_eq!(rejected[0].key().name(), "flip");
        assert_eq!(rejected[0].field(), "spec.rules[0].filters[0].type");
        assert_eq!(
            gauge(
                &mesh.metrics().encode(),
                "grpcroute_config_rejected_objects"
            ),
            1.0
        );
        let statuses = mesh.statuses();
        assert_eq!(
            accepted(&statuses, "flip").1,
            "UnsupportedValue",
            "{statuses:#?}"
        );
        assert_eq!(status_of(&statuses, "flip").generation, Some(2));
        assert_eq!(
            call(&mesh, "echo:7070").await.unwrap(),
            "echo-v2",
            "undisturbed"
        );

        // Still following: another route changes while `flip` is rejected...
        server.apply(forward("good", "echo", "echo-v1")).unwrap();
        converge(&mesh, "echo:7070", "echo-v1").await;
        // ...and `flip` comes back once it decodes again.
        server.apply(forward("flip", "echo-v1", "echo-v2")).unwrap();
        converge(&mesh, "echo-v1:7070", "echo-v2").await;
        assert!(mesh.rejected().is_empty(), "{:?}", mesh.rejected());
        assert_eq!(
            gauge(
                &mesh.metrics().encode(),
                "grpcroute_config_rejected_objects"
            ),
            0.0
        );
        let statuses = mesh.statuses();
        assert_eq!(accepted(&statuses, "flip").0, ConditionStatus::True);
        assert_eq!(status_of(&statuses, "flip").generation, Some(3));
        drop(mesh);
        server.shutdown().await;
    })
    .await
    .expect("a_route_modified_to_undecodable_and_back timed out");
}
