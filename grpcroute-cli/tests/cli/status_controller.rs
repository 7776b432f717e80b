//! `grpcroute status-controller` against the test Kubernetes API server (in this process,
//! on 127.0.0.1): the built binary runs with a generated kubeconfig, as it would against a
//! cluster, so arguments, client set-up, signals and the Lease release are covered too.
//! Writes are counted by the server.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use gateway_api::grpcroutes::GrpcRoute;
use grpcroute_test_apiserver::{ApiServer, Resource};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};
use tokio::time::{Instant, sleep};

use crate::support::{Run, closed_port, grpcroute, run};

const ME: &str = "grpcroute.dev/status-controller";

/// The test API server and a kubeconfig file pointing at it.
pub(crate) struct Cluster {
    pub(crate) server: ApiServer,
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Cluster {
    pub(crate) async fn start() -> Self {
        let server = ApiServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, server.kubeconfig()).unwrap();
        Self {
            server,
            _dir: dir,
            kubeconfig,
        }
    }

    /// Services `shop/checkout` and `shop/{backend}` for each of `backends`, and GRPCRoute
    /// `shop/r` attached to `checkout:50051`, sending every call to the first backend.
    pub(crate) async fn with_route(backends: &[&str]) -> Self {
        let cluster = Self::start().await;
        cluster.apply(service("shop", "checkout"));
        for backend in backends {
            cluster.apply(service("shop", backend));
        }
        let parents = json!([service_parent("checkout", 50051)]);
        cluster.apply(route("shop", "r", parents, self::backends(&backends[..1])));
        cluster
    }

    pub(crate) fn apply(&self, object: Value) {
        self.server.apply(object).unwrap();
    }

    /// Replaces the rules of a GRPCRoute in the server's store, keeping its status: a spec
    /// change that reaches the open watches even while the server fails every request.
    pub(crate) fn store_rules(&self, ns: &str, name: &str, rules: Value) {
        let mut changed = self.route(ns, name);
        changed["spec"]["rules"] = rules;
        self.apply(changed);
    }

    /// A JSON merge patch of a GRPCRoute through the API, as `kubectl patch` does: the
    /// status is left alone.
    async fn patch_route(&self, ns: &str, name: &str, patch: Value) {
        let api: Api<GrpcRoute> = Api::namespaced(self.server.client().unwrap(), ns);
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    fn route(&self, ns: &str, name: &str) -> Value {
        self.server
            .get(Resource::GrpcRoutes, ns, name)
            .unwrap_or_else(|| panic!("GRPCRoute {ns}/{name} exists"))
    }

    /// Our `status.parents` entries of a route.
    pub(crate) fn ours(&self, ns: &str, name: &str) -> Vec<Value> {
        entries(&self.route(ns, name))
            .into_iter()
            .filter(|p| p["controllerName"] == ME)
            .collect()
    }

    /// Status writes (and other GRPCRoute writes) the server has accepted.
    fn route_writes(&self) -> u64 {
        self.server.stats().resource(Resource::GrpcRoutes).writes
    }

    pub(crate) fn lease_holder(&self) -> Option<String> {
        self.server
            .get(Resource::Leases, "default", "grpcroute-status-controller")
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
    }

    /// `grpcroute status-controller --once ...` to completion.
    async fn once(&self, extra: &[&str]) -> Run {
        let mut args: Vec<String> = vec![
            "status-controller".into(),
            "--once".into(),
            "--kubeconfig".into(),
            self.kubeconfig.display().to_string(),
            "--sync-timeout".into(),
            "10".into(),
        ];
        args.extend(extra.iter().map(ToString::to_string));
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&args)
        })
        .await
        .unwrap()
    }

    pub(crate) async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

fn entries(route: &Value) -> Vec<Value> {
    route["status"]["parents"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// `[(type, status, reason)]` of one status entry.
fn conditions(entry: &Value) -> Vec<(String, String, String)> {
    entry["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap().to_string();
            (s("type"), s("status"), s("reason"))
        })
        .collect()
}

fn triples(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    list.iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

fn service(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ports": [{"name": "grpc", "port": 50051, "appProtocol": "kubernetes.io/grpc"}]},
    })
}

fn service_parent(name: &str, port: u16) -> Value {
    json!({"group": "", "kind": "Service", "name": name, "port": port})
}

fn route(ns: &str, name: &str, parents: Value, rules: Value) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"parentRefs": parents, "rules": rules},
    })
}

pub(crate) fn backends(names: &[&str]) -> Value {
    json!([{"backendRefs": names.iter().map(|n| json!({"name": n, "port": 50051})).collect::<Vec<_>>()}])
}

/// Polls `condition` every 20 ms for up to `limit`; how long it took.
pub(crate) async fn eventually(
    limit: Duration,
    what: &str,
    condition: impl Fn() -> bool,
) -> Duration {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// A running `grpcroute status-controller`, its stderr (the logs) collected; killed on
/// drop.
pub(crate) struct Controller {
    child: Child,
    log: Arc<Mutex<String>>,
    /// The thread copying stderr into `log`; it ends when the child's stderr closes.
    reader: Option<thread::JoinHandle<()>>,
}

impl Controller {
    fn start(cluster: &Cluster, identity: &str, lease_seconds: &str) -> Self {
        Self::start_with(cluster, identity, lease_seconds, &[])
    }

    pub(crate) fn start_with(
        cluster: &Cluster,
        identity: &str,
        lease_seconds: &str,
        extra: &[&str],
    ) -> Self {
        let mut child = grpcroute()
            .args(["status-controller", "--kubeconfig"])
            .arg(&cluster.kubeconfig)
            .args(["--identity", identity, "--lease-duration", lease_seconds])
            .args(extra)
            .env_remove("POD_NAMESPACE")
            .env_remove("POD_NAME")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the grpcroute binary runs");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        let reader = thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Self {
            child,
            log,
            reader: Some(reader),
        }
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Where it serves `/metrics` (started with `--metrics-addr 127.0.0.1:0`: the bound
    /// address is in the log).
    pub(crate) fn metrics_addr(&self) -> SocketAddr {
        let log = self.log();
        log.lines()
            .find(|l| l.contains("serving metrics"))
            .and_then(|l| l.split("addr=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"))
    }

    /// Its `/metrics` page.
    fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(self.metrics_addr()).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut page = String::new();
        stream.read_to_string(&mut page).unwrap();
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        page
    }

    /// The value of the sample `name` (with its labels, as encoded) on the metrics page.
    pub(crate) fn sample(&self, name: &str) -> Option<f64> {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// How many status writes it logged.
    fn writes(&self) -> usize {
        self.log().matches("status written").count()
    }

    /// Sends `signal` (`TERM`, `KILL`) and waits for the exit code; the log stays
    /// readable.
    async fn stop_and_keep_log(&mut self, signal: &str) -> Option<i32> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The child has exited, so its stderr ends: the reader has copied all of
                // the log once it finishes.
                if let Some(reader) = self.reader.take() {
                    tokio::time::timeout(
                        Duration::from_secs(5),
                        tokio::task::spawn_blocking(move || reader.join()),
                    )
                    .await
                    .expect("stderr ends when the controller exits")
                    .unwrap()
                    .unwrap();
                }
                return status.code();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "did not exit after SIG{signal}"
            );
            sleep(Duration::from_millis(10)).await;
        }
    }

    pub(crate) async fn signal(mut self, signal: &str) -> Option<i32> {
        self.stop_and_keep_log(signal).await
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_writes_the_conditions_and_reasons_of_every_kind_of_route() {
    let cluster = Cluster::start().await;
    for name in ["checkout", "checkout-v1", "checkout-v2"] {
        cluster.apply(service("shop", name));
    }
    let checkout = || json!([service_parent("checkout", 50051)]);
    cluster.apply(route(
        "shop",
        "accepted",
        checkout(),
        backends(&["checkout-v1", "checkout-v2"]),
    ));
    cluster.apply(route(
        "shop",
        "partial",
        checkout(),
        backends(&["checkout-v1", "gone"]),
    ));
    cluster.apply(route("shop", "unresolved", checkout(), backends(&["gone"])));
    cluster.apply(route(
        "shop",
        "wrong-kind",
        checkout(),
        json!([{"backendRefs": [{"group": "", "kind": "ConfigMap", "name": "cm"}]}]),
    ));
    cluster.apply(route(
        "shop",
        "wrong-port",
        json!([service_parent("checkout", 8080)]),
        backends(&["checkout-v1"]),
    ));
    cluster.apply(route(
        "shop",
        "bad-regex",
        checkout(),
        json!([{"matches": [{"headers": [{"type": "RegularExpression", "name": "x-tenant", "value": "(unclosed"}]}],
                "backendRefs": [{"name": "checkout-v1", "port": 50051}]}]),
    ));
    // Cross-namespace backend without a ReferenceGrant, with --strict-reference-grants.
    cluster.apply(route(
        "web",
        "cross",
        json!([{"group": "", "kind": "Service", "name": "checkout", "namespace": "shop", "port": 50051}]),
        json!([{"backendRefs": [{"name": "checkout-v1", "namespace": "shop", "port": 50051}]}]),
    ));
    // Not ours: Gateway parents only; and a route with both kinds of parent.
    let gateway = json!({"name": "gw"});
    cluster.apply(route(
        "shop",
        "gateway-only",
        json!([gateway]),
        backends(&["checkout-v1"]),
    ));
    cluster.apply(route(
        "shop",
        "mixed",
        json!([gateway, service_parent("checkout", 50051)]),
        backends(&["checkout-v1"]),
    ));

    let first = cluster.once(&["--strict-reference-grants"]).await;
    first.exits(0);
    assert_eq!(
        first.stdout, "9 GRPCRoutes: 8 status written, 1 up to date\n",
        "{first:#?}"
    );

    let ok = |t: &str| (t.to_string(), "True".to_string(), t.to_string());
    let expect = |name: &str, want: Vec<(String, String, String)>| {
        let ours = cluster.ours("shop", name);
        assert_eq!(ours.len(), 1, "{name}: {ours:#?}");
        assert_eq!(conditions(&ours[0]), want, "{name}");
        assert_eq!(ours[0]["parentRef"]["kind"], "Service");
        assert_eq!(ours[0]["parentRef"]["group"], "");
        assert_eq!(ours[0]["parentRef"]["name"], "checkout");
        for c in ours[0]["conditions"].as_array().unwrap() {
            assert_eq!(c["observedGeneration"], 1, "{name}");
            assert!(
                c["lastTransitionTime"]
                    .as_str()
                    .is_some_and(|t| t.ends_with('Z'))
            );
            assert!(c["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
        ours.into_iter().next().unwrap()
    };
    expect("accepted", vec![ok("Accepted"), ok("ResolvedRefs")]);
    let partial = expect(
        "partial",
        triples(&[
            ("Accepted", "True", "Accepted"),
            ("ResolvedRefs", "False", "BackendNotFound"),
        ]),
    );
    assert!(
        partial["conditions"][1]["message"]
            .as_str()
            .unwrap()
            .contains("Service shop/gone not found"),
        "{partial:#}"
    );
    expect(
        "unresolved",
        triples(&[
            ("Accepted", "True", "Accepted"),
            ("ResolvedRefs", "False", "BackendNotFound"),
        ]),
    );
    expect(
        "wrong-kind",
        triples(&[
            ("Accepted", "True", "Accepted"),
            ("ResolvedRefs", "False", "InvalidKind"),
        ]),
    );
    let wrong_port = expect(
        "wrong-port",
        triples(&[
            ("Accepted", "False", "NoMatchingParent"),
            ("ResolvedRefs", "True", "ResolvedRefs"),
        ]),
    );
    assert_eq!(wrong_port["parentRef"]["port"], 8080);
    let rejected = expect(
        "bad-regex",
        triples(&[("Accepted", "False", "UnsupportedValue")]),
    );
    assert!(
        rejected["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("regular expression")
    );
    expect("mixed", vec![ok("Accepted"), ok("ResolvedRefs")]);
    let cross = cluster.ours("web", "cross");
    assert_eq!(
        conditions(&cross[0]),
        triples(&[
            ("Accepted", "True", "Accepted"),
            ("ResolvedRefs", "False", "RefNotPermitted"),
        ])
    );
    assert_eq!(cross[0]["parentRef"]["namespace"], "shop");
    assert_eq!(
        cluster.route("shop", "gateway-only").get("status"),
        None,
        "a route with only Gateway parents gets nothing from us"
    );

    // Nothing changed: a second run writes nothing at all.
    let writes = cluster.route_writes();
    let versions: Vec<Value> = ["accepted", "partial", "bad-regex"]
        .iter()
        .map(|n| cluster.route("shop", n)["metadata"]["resourceVersion"].clone())
        .collect();
    let second = cluster.once(&["--strict-reference-grants"]).await;
    second.exits(0);
    assert_eq!(
        second.stdout,
        "9 GRPCRoutes: 0 status written, 9 up to date\n"
    );
    assert_eq!(
        cluster.route_writes(),
        writes,
        "no write when nothing changed"
    );
    let after: Vec<Value> = ["accepted", "partial", "bad-regex"]
        .iter()
        .map(|n| cluster.route("shop", n)["metadata"]["resourceVersion"].clone())
        .collect();
    assert_eq!(versions, after);

    // A ReferenceGrant makes the cross-namespace backend resolve.
    cluster.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "ReferenceGrant",
        "metadata": {"name": "from-web", "namespace": "shop"},
        "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "GRPCRoute", "namespace": "web"}],
                 "to": [{"group": "", "kind": "Service"}]},
    }));
    let third = cluster.once(&["--strict-reference-grants"]).await;
    third.exits(0);
    assert_eq!(
        third.stdout,
        "9 GRPCRoutes: 1 status written, 8 up to date\n"
    );
    assert_eq!(
        conditions(&cluster.ours("web", "cross")[0]),
        vec![ok("Accepted"), ok("ResolvedRefs")]
    );
    cluster.shutdown().await;
}

/// A route a newer CRD serves with a filter type the API types do not know does not stop
/// the controller (before, the route watch never synced and `--once` timed out): it gets
/// `Accepted=False`, `UnsupportedValue`, naming the field, the entry another controller
/// wrote on it is kept, and the other routes get their status.
#[tokio::test]
async fn once_reports_an_undecodable_route_and_writes_the_others() {
    let cluster = Cluster::with_route(&["checkout-v1"]).await;
    let mut future = route(
        "shop",
        "future",
        json!([service_parent("checkout", 50051)]),
        backends(&["checkout-v1"]),
    );
    future["spec"]["rules"][0]["filters"] =
        json!([{"type": "FutureFilter", "futureFilter": {"mode": "strict"}}]);
    cluster.apply(future.clone());
    let theirs = json!({"controllerName": "example.net/other", "parentRef": {"name": "gw"},
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                        "message": "theirs", "lastTransitionTime": "2024-01-01T00:00:00Z"}]});
    future["status"] = json!({"parents": [theirs.clone()]});
    cluster.server.apply_status(future).unwrap();

    let run = cluster.once(&[]).await;
    run.exits(0);
    assert_eq!(
        run.stdout, "2 GRPCRoutes: 2 status written, 0 up to date\n",
        "{run:#?}"
    );
    let ours = cluster.ours("shop", "future");
    assert_eq!(ours.len(), 1, "{ours:#?}");
    assert_eq!(
        conditions(&ours[0]),
        triples(&[("Accepted", "False", "UnsupportedValue")])
    );
    let message = ours[0]["conditions"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("spec.rules[0].filters[0].type: unknown variant `FutureFilter`"),
        "{message}"
    );
    assert_eq!(ours[0]["conditions"][0]["observedGeneration"], 1);
    assert_eq!(
        entries(&cluster.route("shop", "future"))[0],
        theirs,
        "the other controller's entry is kept"
    );
    assert_eq!(
        conditions(&cluster.ours("shop", "r")[0]),
        triples(&[
            ("Accepted", "True", "Accepted"),
            ("ResolvedRefs", "True", "ResolvedRefs")
        ])
    );
    cluster.shutdown().await;
}

/// A running controller follows a route that an edit makes undecodable (the watch event
/// does not stop its reflector) and then valid again: `UnsupportedValue` at generation 2,
/// `Accepted` again at generation 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_controller_follows_a_route_turning_undecodable_and_back() {
    let cluster = Cluster::with_route(&["checkout-v1"]).await;
    let controller = Controller::start(&cluster, "only", "2");
    let state = || {
        let ours = cluster.ours("shop", "r");
        ours.first().map(|entry| {
            (
                conditions(entry),
                entry["conditions"][0]["observedGeneration"].clone(),
            )
        })
    };
    let accepted = triples(&[
        ("Accepted", "True", "Accepted"),
        ("ResolvedRefs", "True", "ResolvedRefs"),
    ]);
    eventually(Duration::from_secs(10), "accepted at generation 1", || {
        state() == Some((accepted.clone(), json!(1)))
    })
    .await;

    let mut rules = backends(&["checkout-v1"]);
    rules[0]["filters"] = json!([{"type": "FutureFilter", "futureFilter": {"mode": "strict"}}]);
    cluster.store_rules("shop", "r", rules);
    let unsupported = triples(&[("Accepted", "False", "UnsupportedValue")]);
    eventually(
        Duration::from_secs(10),
        "UnsupportedValue at generation 2",
        || state() == Some((unsupported.clone(), json!(2))),
    )
    .await;
    let message = cluster.ours("shop", "r")[0]["conditions"][0]["message"].clone();
    assert!(
        message
            .as_str()
            .is_some_and(|m| m.starts_with("spec.rules[0].filters[0].type: unknown variant")),
        "{message}"
    );

    cluster.store_rules("shop", "r", backends(&["checkout-v1"]));
    eventually(
        Duration::from_secs(10),
        "accepted again at generation 3",
        || state() == Some((accepted.clone(), json!(3))),
    )
    .await;
    let log = controller.log();
    assert!(!log.contains("watching GRPCRoutes failed"), "{log}");
    drop(controller);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_spec_changes_keeps_other_controllers_entries_and_writes_only_changes() {
    let cluster = Cluster::start().await;
    for name in ["checkout", "checkout-v1"] {
        cluster.apply(service("shop", name));
    }
    let theirs = json!({
        "controllerName": "example.net/gateway-controller",
        "parentRef": {"name": "gw", "sectionName": "grpc"},
        "conditions": [{"type": "Accepted", "status": "False", "reason": "NotAllowedByListeners",
                        "message": "theirs, untouched", "observedGeneration": 1,
                        "lastTransitionTime": "2024-01-01T00:00:00Z"}],
    });
    // A leftover entry of ours for a parentRef the route no longer has.
    let stale = json!({
        "controllerName": ME,
        "parentRef": {"group": "", "kind": "Service", "name": "old-frontend"},
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                        "message": "", "observedGeneration": 1,
                        "lastTransitionTime": "2024-01-01T00:00:00Z"}],
    });
    let gateway = json!({"name": "gw", "sectionName": "grpc"});
    let spec_rules = |names: &[&str]| backends(names);
    let mut object = route(
        "shop",
        "r",
        json!([gateway, service_parent("checkout", 50051)]),
        spec_rules(&["checkout-v1"]),
    );
    object["status"] = json!({"parents": [stale, theirs]});
    cluster.apply(object);

    let mut controller = Controller::start(&cluster, "only", "2");
    eventually(Duration::from_secs(10), "first status", || {
        let ours = cluster.ours("shop", "r");
        ours.len() == 1 && ours[0]["parentRef"]["name"] == "checkout"
    })
    .await;
    let status = cluster.route("shop", "r");
    let all = entries(&status);
    assert_eq!(all.len(), 2, "the stale entry of ours is gone: {all:#?}");
    assert_eq!(all[0], theirs, "another controller's entry is kept exactly");
    let first = &all[1];
    assert_eq!(
        conditions(first),
        triples(&[
            ("Accepted", "True", "Accepted"),
            ("ResolvedRefs", "True", "ResolvedRefs"),
        ])
    );
    let accepted_since = first["conditions"][0]["lastTransitionTime"].clone();
    eventually(Duration::from_secs(5), "the write is logged", || {
        controller.writes() == 1
    })
    .await;
    let log = controller.log();
    assert!(log.contains("route=shop/r"), "{log}");
    assert!(log.contains("+Service shop/checkout:50051"), "{log}");
    assert!(log.contains("-Service shop/old-frontend"), "{log}");

    // A spec change: a second backend that does not exist. observedGeneration follows,
    // Accepted keeps its transition time.
    cluster
        .patch_route(
            "shop",
            "r",
            json!({"spec": {"rules": spec_rules(&["checkout-v1", "gone"])}}),
        )
        .await;
    eventually(Duration::from_secs(5), "generation 2", || {
        cluster.ours("shop", "r")[0]["conditions"][1]["observedGeneration"] == 2
    })
    .await;
    let ours = cluster.ours("shop", "r");
    assert_eq!(
        conditions(&ours[0]),
        triples(&[
            ("Accepted", "True", "Accepted"),
            ("ResolvedRefs", "False", "BackendNotFound"),
        ])
    );
    assert_eq!(
        ours[0]["conditions"][0]["lastTransitionTime"],
        accepted_since
    );
    assert_eq!(ours[0]["conditions"][0]["observedGeneration"], 2);
    eventually(Duration::from_secs(5), "the change is logged", || {
        controller
            .log()
            .contains("ResolvedRefs True/ResolvedRefs -> False/BackendNotFound")
    })
    .await;

    // The missing Service appears: ResolvedRefs turns True without a spec change.
    cluster.apply(service("shop", "gone"));
    eventually(Duration::from_secs(5), "resolved", || {
        cluster.ours("shop", "r")[0]["conditions"][1]["status"] == "True"
    })
    .await;
    // (The log line follows the API's answer: wait for it too.)
    eventually(Duration::from_secs(5), "three writes logged", || {
        controller.writes() == 3
    })
    .await;

    // Changes that do not change the status write nothing: an unrelated Service, an
    // EndpointSlice, a label on the route.
    let writes = cluster.route_writes();
    cluster.apply(service("shop", "unrelated"));
    cluster.apply(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "checkout-v1-a", "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "checkout-v1"}},
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": 50051}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
    }));
    cluster
        .patch_route(
            "shop",
            "r",
            json!({"metadata": {"labels": {"team": "shop"}}}),
        )
        .await;
    sleep(Duration::from_millis(800)).await;
    assert_eq!(cluster.route_writes(), writes + 1, "only the label write");
    assert_eq!(controller.writes(), 3, "{}", controller.log());
    assert_eq!(entries(&cluster.route("shop", "r"))[0], theirs);

    // The Service parentRef goes: our entry goes, theirs stays.
    cluster
        .patch_route("shop", "r", json!({"spec": {"parentRefs": [gateway]}}))
        .await;
    eventually(Duration::from_secs(5), "our entry removed", || {
        cluster.ours("shop", "r").is_empty()
    })
    .await;
    assert_eq!(entries(&cluster.route("shop", "r")), vec![theirs]);

    // SIGTERM: it stops writing, releases the Lease and exits 0.
    assert_eq!(controller.stop_and_keep_log("TERM").await, Some(0));
    let log = controller.log();
    assert!(log.contains("released the lease"), "{log}");
    assert_eq!(cluster.lease_holder(), None);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_writes_and_a_standby_takes_over_when_it_stops() {
    let cluster = Cluster::with_route(&["checkout-v1"]).await;

    let metrics = ["--metrics-addr", "127.0.0.1:0"];
    let a = Controller::start_with(&cluster, "a", "2", &metrics);
    eventually(Duration::from_secs(10), "a leads", || {
        cluster.lease_holder().as_deref() == Some("a")
    })
    .await;
    let b = Controller::start_with(&cluster, "b", "2", &metrics);
    eventually(Duration::from_secs(10), "b stands by", || {
        b.log().contains("standing by")
    })
    .await;
    eventually(Duration::from_secs(5), "status written", || {
        !cluster.ours("shop", "r").is_empty()
    })
    .await;
    // Changes over a few lease renewals: only a writes.
    for (i, backend) in ["gone", "checkout-v1", "gone-again"].iter().enumerate() {
        cluster
            .patch_route(
                "shop",
                "r",
                json!({"spec": {"rules": backends(&[backend])}}),
            )
            .await;
        let generation = i64::try_from(i).unwrap() + 2;
        eventually(Duration::from_secs(5), "status follows", || {
            cluster.ours("shop", "r")[0]["conditions"][0]["observedGeneration"] == generation
        })
        .await;
        sleep(Duration::from_millis(700)).await;
    }
    // The store has each status before the controller has the answer, logs the write and
    // counts the pass: wait for the log and the counter rather than race them.
    eventually(Duration::from_secs(5), "a logs its four writes", || {
        a.writes() == 4
    })
    .await;
    assert_eq!(b.writes(), 0, "{}", b.log());
    assert_eq!(cluster.lease_holder().as_deref(), Some("a"));

    // The metrics say the same: who leads, how many statuses each wrote, and the mesh's
    // view of the route (its backendRef to `gone-again` does not resolve).
    let leader = "grpcroute_status_controller_leader";
    let writes = "grpcroute_status_controller_status_writes_total";
    eventually(Duration::from_secs(5), "a counts its four passes", || {
        a.sample(writes) == Some(4.0)
    })
    .await;
    assert_eq!(a.sample(leader), Some(1.0), "{}", a.metrics());
    assert_eq!(b.sample(leader), Some(0.0));
    assert_eq!(b.sample(writes), Some(0.0));
    let condition = |c: &str| {
        format!(
            "grpcroute_route_condition{{route=\"shop/r\",parent=\"shop/checkout:50051\",condition=\"{c}\"}}"
        )
    };
    for controller in [&a, &b] {
        // Each follows the route through its own watch.
        eventually(Duration::from_secs(5), "the route's conditions", || {
            controller.sample(&condition("Accepted")) == Some(1.0)
                && controller.sample(&condition("ResolvedRefs")) == Some(0.0)
        })
        .await;
        assert_eq!(controller.sample("grpcroute_source_connected"), Some(1.0));
    }

    // a stops cleanly: it releases the Lease, and b takes it at its next try.
    assert_eq!(a.signal("TERM").await, Some(0));
    let stopped = Instant::now();
    eventually(
        Duration::from_secs(2),
        "b leads within the lease duration",
        || cluster.lease_holder().as_deref() == Some("b"),
    )
    .await;
    println!("b took over {:?} after a stopped", stopped.elapsed());
    cluster
        .patch_route(
            "shop",
            "r",
            json!({"spec": {"rules": backends(&["checkout-v1"])}}),
        )
        .await;
    eventually(Duration::from_secs(5), "b writes", || {
        cluster.ours("shop", "r")[0]["conditions"][0]["observedGeneration"] == 5
    })
    .await;
    eventually(Duration::from_secs(5), "b logs its write", || {
        b.writes() == 1
    })
    .await;
    assert!(b.log().contains("became the leader"));
    assert_eq!(b.sample(leader), Some(1.0), "{}", b.metrics());
    // The pass is counted after its writes are logged.
    eventually(Duration::from_secs(5), "b counts its pass", || {
        b.sample(writes) == Some(1.0)
    })
    .await;

    // b is killed (no release): a new standby waits for the Lease to expire.
    let c = Controller::start(&cluster, "c", "2");
    eventually(Duration::from_secs(10), "c stands by", || {
        c.log().contains("standing by")
    })
    .await;
    assert_eq!(b.signal("KILL").await, None);
    let killed = Instant::now();
    let took = eventually(Duration::from_secs(4), "c leads after expiry", || {
        cluster.lease_holder().as_deref() == Some("c")
    })
    .await;
    assert!(
        took >= Duration::from_millis(500),
        "{took:?}: not before the lease could expire"
    );
    println!("c took over {:?} after b was killed", killed.elapsed());
    assert_eq!(c.signal("TERM").await, Some(0));
    assert_eq!(cluster.lease_holder(), None, "released");
    cluster.shutdown().await;
}

/// While the API server answers 500, a status write fails: the failure is counted (what
/// the shipped `GRPCRouteStatusWritesFailing` alert watches), logged, and retried with
/// backoff until the write lands, without losing the leadership.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_status_write_is_counted_and_retried_until_it_lands() {
    let cluster = Cluster::with_route(&["checkout-v1"]).await;

    // A lease long enough (renewed every 10 s, given up after 20 s without renewal) that
    // the fault below cannot cost the leadership.
    let a = Controller::start_with(&cluster, "a", "30", &["--metrics-addr", "127.0.0.1:0"]);
    let generation = |g: i64| {
        let ours = cluster.ours("shop", "r");
        !ours.is_empty() && ours[0]["conditions"][0]["observedGeneration"] == g
    };
    eventually(Duration::from_secs(10), "the first status", || {
        generation(1)
    })
    .await;
    let failures = "grpcroute_status_controller_write_failures_total";
    let writes = "grpcroute_status_controller_status_writes_total";
    // The store has the status before the controller has the answer and counts the pass.
    eventually(Duration::from_secs(5), "the first pass is counted", || {
        a.sample(writes) == Some(1.0)
    })
    .await;
    assert_eq!(a.sample(failures), Some(0.0), "{}", a.metrics());

    // The spec changes (written to the store, status kept) while every request fails;
    // the open watches still deliver it.
    let fault = Duration::from_secs(3);
    cluster.server.fail_requests(Some(fault));
    let failing = Instant::now();
    cluster.store_rules("shop", "r", backends(&["gone"]));
    eventually(
        Duration::from_secs(5),
        "the failed write is counted",
        || a.sample(failures).is_some_and(|f| f >= 1.0),
    )
    .await;
    assert!(
        failing.elapsed() < fault,
        "counted only after the fault ended"
    );
    assert!(generation(1), "nothing was written during the fault");
    // The log arrives through a pipe and a reader thread: it may trail the metrics.
    eventually(Duration::from_secs(5), "the failed write is logged", || {
        a.log().contains("could not write the status; will retry")
    })
    .await;

    eventually(Duration::from_secs(15), "the retry lands", || generation(2)).await;
    println!(
        "the status landed {:?} after the {fault:?} fault began",
        failing.elapsed()
    );
    assert_eq!(
        cluster.ours("shop", "r")[0]["conditions"][1]["reason"],
        "BackendNotFound"
    );
    // The store has the status before the controller has the answer and counts the pass.
    eventually(Duration::from_secs(5), "the write is counted", || {
        a.sample(writes) == Some(2.0)
    })
    .await;
    assert_eq!(a.sample("grpcroute_status_controller_leader"), Some(1.0));
    assert_eq!(cluster.lease_holder().as_deref(), Some("a"));
    assert_eq!(a.signal("TERM").await, Some(0));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_and_an_unreachable_api_server_are_one_line_errors() {
    let cluster = Cluster::start().await;
    let kubeconfig = cluster.kubeconfig.display().to_string();
    let blocking = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&args)
        })
    };
    let args = |extra: &[&str]| -> Vec<String> {
        ["status-controller", "--kubeconfig", &kubeconfig]
            .iter()
            .chain(extra)
            .map(ToString::to_string)
            .collect()
    };
    blocking(args(&["--controller-name", "no-path"]))
        .await
        .unwrap()
        .input_error(&["--controller-name", "DOMAIN/PATH"]);
    blocking(args(&["--lease-duration", "0"]))
        .await
        .unwrap()
        .input_error(&["--lease-duration"]);
    blocking(args(&["--metrics-addr", "localhost"]))
        .await
        .unwrap()
        .input_error(&["--metrics-addr"]);
    // An address this machine does not have: the listener cannot be made.
    blocking(args(&["--metrics-addr", "192.0.2.1:9090"]))
        .await
        .unwrap()
        .input_error(&["--metrics-addr 192.0.2.1:9090", "cannot listen"]);
    blocking(vec![
        "status-controller".into(),
        "--kubeconfig".into(),
        "/nonexistent/kubeconfig".into(),
    ])
    .await
    .unwrap()
    .input_error(&["--kubeconfig /nonexistent/kubeconfig"]);
    let url = format!("http://127.0.0.1:{}", closed_port());
    blocking(
        [
            "status-controller",
            "--once",
            "--server",
            &url,
            "--sync-timeout",
            "1",
        ]
        .iter()
        .map(ToString::to_string)
        .collect(),
    )
    .await
    .unwrap()
    .input_error(&["did not sync within 1 s"]);
    cluster.shutdown().await;
}

/// Every document of the shipped status-controller manifests.
fn shipped_manifests() -> Vec<Value> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/kubernetes/status-controller");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in text.split("\n---\n") {
            let value: Value =
                serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if !value.is_null() {
                docs.push(value);
            }
        }
    }
    docs
}

/// The RBAC that ships with the controller grants exactly what it uses, and the
/// Deployment runs it with arguments it accepts.
#[test]
fn the_shipped_rbac_and_deployment_fit_the_controller() {
    let docs = shipped_manifests();
    let find = |kind: &str| -> Vec<&Value> { docs.iter().filter(|d| d["kind"] == kind).collect() };
    let rules = |role: &Value| -> Vec<(String, String, Vec<String>)> {
        let mut out = Vec::new();
        for rule in role["rules"].as_array().unwrap() {
            let list = |k: &str| -> Vec<String> {
                rule[k]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect()
            };
            let mut verbs = list("verbs");
            verbs.sort();
            for group in list("apiGroups") {
                for resource in list("resources") {
                    out.push((group.clone(), resource, verbs.clone()));
                }
            }
        }
        out.sort();
        out
    };
    let read = || vec!["get".to_string(), "list".into(), "watch".into()];
    let cluster_roles = find("ClusterRole");
    assert_eq!(cluster_roles.len(), 1);
    assert_eq!(
        rules(cluster_roles[0]),
        vec![
            (
                "".to_string(),
                "configmaps".to_string(),
                vec!["list".into(), "watch".into()]
            ),
            ("".into(), "services".into(), read()),
            ("discovery.k8s.io".into(), "endpointslices".into(), read()),
            (
                "gateway.networking.k8s.io".into(),
                "backendtlspolicies".into(),
                read()
            ),
            (
                "gateway.networking.k8s.io".into(),
                "backendtlspolicies/status".into(),
                vec!["get".into(), "patch".into(), "update".into()]
            ),
            (
                "gateway.networking.k8s.io".into(),
                "grpcroutes".into(),
                read()
            ),
            (
                "gateway.networking.k8s.io".into(),
                "grpcroutes/status".into(),
                vec!["get".into(), "patch".into(), "update".into()]
            ),
            (
                "gateway.networking.k8s.io".into(),
                "referencegrants".into(),
                read()
            ),
        ]
    );
    let roles = find("Role");
    assert_eq!(roles.len(), 1);
    assert_eq!(
        rules(roles[0]),
        vec![(
            "coordination.k8s.io".to_string(),
            "leases".to_string(),
            vec!["create".into(), "get".into(), "update".into()]
        )]
    );

    let account = find("ServiceAccount")[0];
    let (sa, ns) = (
        &account["metadata"]["name"],
        &account["metadata"]["namespace"],
    );
    assert_eq!(
        &roles[0]["metadata"]["namespace"], ns,
        "the Lease Role is namespaced"
    );
    for binding in find("ClusterRoleBinding")
        .into_iter()
        .chain(find("RoleBinding"))
    {
        assert_eq!(&binding["subjects"][0]["name"], sa);
        assert_eq!(&binding["subjects"][0]["namespace"], ns);
    }
    let deployment = find("Deployment")[0];
    assert_eq!(&deployment["metadata"]["namespace"], ns);
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(&pod["serviceAccountName"], sa);
    let container = &pod["containers"][0];
    assert!(container["resources"]["requests"]["cpu"].is_string());
    assert!(container["resources"]["requests"]["memory"].is_string());
    let env: Vec<(&str, &str)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?,
                e["valueFrom"]["fieldRef"]["fieldPath"].as_str()?,
            ))
        })
        .collect();
    assert!(env.contains(&("POD_NAMESPACE", "metadata.namespace")));
    assert!(env.contains(&("POD_NAME", "metadata.name")));

    // Its arguments parse: with --once against nothing, it gets as far as syncing.
    let mut args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(args[0], "status-controller");
    let url = format!("http://127.0.0.1:{}", closed_port());
    args.extend(["--once", "--server", &url, "--sync-timeout", "0.2"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&args).input_error(&["did not sync"]);
}

/// BackendTLSPolicies get `status.ancestors`: one entry per targeted Service with this
/// controller's name, `Accepted`/`ResolvedRefs` as `grpcroute check` computes them
/// (oldest wins a conflict; a missing ConfigMap is `InvalidCACertificateRef`); other
/// controllers' entries are kept.
#[tokio::test]
async fn once_writes_backend_tls_policy_ancestors() {
    let cluster = Cluster::start().await;
    for name in ["checkout", "checkout-v1"] {
        cluster.apply(service("shop", name));
    }
    cluster.apply(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "ca", "namespace": "shop"},
        "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"},
    }));
    let policy = |name: &str, service: &str, config_map: &str| {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "BackendTLSPolicy",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {
                "targetRefs": [{"group": "", "kind": "Service", "name": service}],
                "validation": {
                    "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": config_map}],
                    "hostname": "checkout.example.com",
                },
            },
        })
    };
    cluster.apply(policy("a-first", "checkout", "ca"));
    // Same target, created in the same second or later: loses by age, then by name.
    cluster.apply(policy("b-second", "checkout", "ca"));
    cluster.apply(policy("c-missing", "checkout-v1", "gone"));
    // Another controller's entry on c-missing stays.
    let theirs = json!({"controllerName": "example.net/gateway",
        "ancestorRef": {"name": "gw"},
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                        "message": "theirs", "lastTransitionTime": "2024-01-01T00:00:00Z"}]});
    let mut with_theirs = policy("c-missing", "checkout-v1", "gone");
    with_theirs["status"] = json!({"ancestors": [theirs.clone()]});
    cluster.apply(with_theirs);

    let first = cluster.once(&[]).await;
    first.exits(0);
    assert!(
        first.stdout.contains("3 status written") && first.stdout.contains("3 BackendTLSPolicies"),
        "{first:#?}"
    );
    let ancestors = |name: &str| -> Vec<Value> {
        cluster
            .server
            .get(Resource::BackendTlsPolicies, "shop", name)
            .unwrap()["status"]["ancestors"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let ours = |name: &str| -> Value {
        let mine: Vec<Value> = ancestors(name)
            .into_iter()
            .filter(|a| a["controllerName"] == ME)
            .collect();
        assert_eq!(mine.len(), 1, "{name}: {mine:#?}");
        mine.into_iter().next().unwrap()
    };
    let a = ours("a-first");
    assert_eq!(
        a["ancestorRef"],
        json!({"group": "", "kind": "Service", "name": "checkout", "namespace": "shop"})
    );
    assert_eq!(
        conditions(&a),
        triples(&[
            ("Accepted", "True", "Accepted"),
            ("ResolvedRefs", "True", "ResolvedRefs")
        ])
    );
    assert_eq!(a["conditions"][0]["observedGeneration"], 1);
    let b = ours("b-second");
    assert_eq!(
        conditions(&b)[0],
        ("Accepted".into(), "False".into(), "Conflicted".into())
    );
    assert!(
        b["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("shop/a-first"),
        "{b:#}"
    );
    let c = ours("c-missing");
    assert_eq!(
        conditions(&c),
        triples(&[
            ("Accepted", "False", "NoValidCACertificate"),
            ("ResolvedRefs", "False", "InvalidCACertificateRef")
        ])
    );
    assert!(
        c["conditions"][1]["message"]
            .as_str()
            .unwrap()
            .contains("ConfigMap shop/gone not found")
    );
    assert_eq!(ancestors("c-missing")[0], theirs, "kept, in place");

    // Nothing changed: nothing is written.
    let again = cluster.once(&[]).await;
    again.exits(0);
    assert!(again.stdout.contains("0 status written"), "{again:#?}");
    cluster.shutdown().await;
}

/// A BackendTLSPolicy of a newer release (a subjectAltNames type this client does not
/// know) neither stops the controller from seeing the others nor goes without a status:
/// policies are read as raw JSON like routes, and the undecodable one, whose targets the
/// mesh fails closed, is written `Accepted=False` with the field that did not decode.
#[tokio::test]
async fn once_writes_an_undecodable_policy_and_the_others() {
    let cluster = Cluster::start().await;
    for name in ["checkout", "checkout-v1"] {
        cluster.apply(service("shop", name));
    }
    cluster.apply(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "ca", "namespace": "shop"},
        "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"},
    }));
    let policy = |name: &str, service: &str, sans: Value| {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "BackendTLSPolicy",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {
                "targetRefs": [{"group": "", "kind": "Service", "name": service}],
                "validation": {
                    "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "ca"}],
                    "hostname": "checkout.example.com",
                    "subjectAltNames": sans,
                },
            },
        })
    };
    cluster.apply(policy(
        "a-valid",
        "checkout",
        json!([{"type": "Hostname", "hostname": "checkout.example.com"}]),
    ));
    cluster.apply(policy(
        "z-newer",
        "checkout-v1",
        json!([{"type": "IPAddress", "ipAddress": "10.0.0.1"}]),
    ));

    let first = cluster.once(&[]).await;
    first.exits(0);
    assert!(
        first.stdout.contains("2 status written") && first.stdout.contains("2 BackendTLSPolicies"),
        "{first:#?}"
    );
    let ours = |name: &str| -> Value {
        let ancestors = cluster
            .server
            .get(Resource::BackendTlsPolicies, "shop", name)
            .unwrap()["status"]["ancestors"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mine: Vec<Value> = ancestors
            .into_iter()
            .filter(|a| a["controllerName"] == ME)
            .collect();
        assert_eq!(mine.len(), 1, "{name}: {mine:#?}");
        mine.into_iter().next().unwrap()
    };
    assert_eq!(
        conditions(&ours("a-valid"))[0],
        ("Accepted".into(), "True".into(), "Accepted".into())
    );
    let newer = ours("z-newer");
    assert_eq!(
        newer["ancestorRef"],
        json!({"group": "", "kind": "Service", "name": "checkout-v1", "namespace": "shop"})
    );
    assert_eq!(
        conditions(&newer)[0],
        ("Accepted".into(), "False".into(), "Invalid".into())
    );
    assert!(
        newer["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("subjectAltNames"),
        "{newer:#}"
    );
    cluster.shutdown().await;
}
