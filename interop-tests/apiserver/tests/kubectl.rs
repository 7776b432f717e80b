//! kubectl against the test apiserver: apply a multi-document manifest, get (table,
//! `-A`, `-o yaml`), apply again, watch, delete.
//!
//! Skipped (with a message) when no kubectl is found, unless `CI` is set (to anything but
//! `false`/`0`) or `GRPCROUTE_REQUIRE_KUBECTL` is (the test script sets it), which makes
//! that a failure. `KUBECTL=/path/to/kubectl` overrides the one on PATH, which overrides
//! the one `scripts/test.sh` may unpack into `target/tools/kubernetes-client`. kubectl ≥ 1.27 validates through the server (the skeletal
//! OpenAPI v3); older ones (Debian's 1.20 `kubernetes-client`) need the protobuf OpenAPI
//! v2 for client-side validation, so they run with `--validate=false`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::start;
use grpcroute_test_apiserver::Resource;
use serde_json::{Value, json};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: mesh
---
apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: mesh
  labels: {app: echo}
spec:
  selector: {app: echo}
  ports:
  - {name: grpc, port: 50051, targetPort: 50051, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-abc
  namespace: mesh
  labels: {kubernetes.io/service-name: echo}
addressType: IPv4
ports:
- {name: grpc, port: 50051, protocol: TCP}
endpoints:
- addresses: ["10.0.0.1"]
  conditions: {ready: true}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: echo-route
  namespace: mesh
spec:
  parentRefs:
  - {group: "", kind: Service, name: echo}
  rules:
  - matches:
    - method: {service: echo.Echo, method: Say}
    backendRefs:
    - {name: echo, port: 50051, weight: 90}
    - {name: echo-v2, namespace: other, port: 50051, weight: 10}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata:
  name: allow-mesh-beta
  namespace: other
spec:
  from:
  - {group: gateway.networking.k8s.io, kind: GRPCRoute, namespace: mesh}
  to:
  - {group: "", kind: Service}
---
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata:
  name: allow-mesh
  namespace: other
spec:
  from:
  - {group: gateway.networking.k8s.io, kind: GRPCRoute, namespace: mesh}
  to:
  - {group: "", kind: Service, name: echo-v2}
"#;

fn find_kubectl() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KUBECTL") {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("kubectl"))
            .find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| {
        let unpacked = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/tools/kubernetes-client/usr/bin/kubectl");
        unpacked.is_file().then_some(unpacked)
    })
}

/// Whether a missing kubectl fails the test: in CI (`CI` set, not to `false` or `0`), or
/// when `GRPCROUTE_REQUIRE_KUBECTL` is set. (The same rule as
/// `grpcroute_interop_tests::tools`, which this crate cannot depend on.)
fn kubectl_required() -> bool {
    let ci = std::env::var("CI")
        .is_ok_and(|v| !v.is_empty() && !v.eq_ignore_ascii_case("false") && v != "0");
    ci || std::env::var_os("GRPCROUTE_REQUIRE_KUBECTL").is_some()
}

/// kubectl with a private kubeconfig and discovery cache.
struct Kubectl {
    binary: PathBuf,
    dir: tempfile::TempDir,
    minor: u32,
}

impl Kubectl {
    async fn run(&self, args: &[&str]) -> Result<Output, Box<dyn std::error::Error>> {
        let mut command = Command::new(&self.binary);
        command
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("HOME", self.dir.path())
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .arg("--request-timeout=10s")
            .args(args);
        // kubectl blocks; the server runs on this runtime, so wait off-thread.
        Ok(tokio::task::spawn_blocking(move || command.output()).await??)
    }

    /// Runs kubectl, failing the test with its output unless it succeeds.
    async fn ok(&self, args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
        let out = self.run(args).await?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {stdout}\n{stderr}"
        );
        Ok(stdout)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

async fn kubectl_for(
    server: &grpcroute_test_apiserver::ApiServer,
) -> Result<Option<Kubectl>, Box<dyn std::error::Error>> {
    let Some(binary) = find_kubectl() else {
        // In CI, or once the test script has made sure kubectl is installed, a missing
        // kubectl is a failure, not a skip.
        assert!(
            !kubectl_required(),
            "kubectl not found (KUBECTL, PATH, target/tools/kubernetes-client), and it is \
             required (CI or GRPCROUTE_REQUIRE_KUBECTL is set)"
        );
        println!(
            "SKIPPED: kubectl not found on PATH (Debian: `apt-get install -y kubernetes-client`), and KUBECTL is not set; set CI=true or GRPCROUTE_REQUIRE_KUBECTL=1 to fail instead"
        );
        return Ok(None);
    };
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("kubeconfig"), server.kubeconfig())?;
    let mut kubectl = Kubectl {
        binary,
        dir,
        minor: 0,
    };
    let version: Value =
        serde_json::from_str(&kubectl.ok(&["version", "--client", "-o", "json"]).await?)?;
    let minor = version["clientVersion"]["minor"].as_str().unwrap_or("0");
    kubectl.minor = minor.trim_end_matches('+').parse().unwrap_or(0);
    println!(
        "using {} (client 1.{})",
        kubectl.binary.display(),
        kubectl.minor
    );
    Ok(Some(kubectl))
}

fn write(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_get_watch_delete() -> TestResult {
    let server = start().await;
    let Some(kubectl) = kubectl_for(&server).await? else {
        return Ok(());
    };
    let manifest = kubectl.path("manifest.yaml");
    write(&manifest, MANIFEST)?;
    let file = manifest.to_str().ok_or("utf-8 path")?;
    let mut apply = vec!["apply", "-f", file];
    if kubectl.minor < 27 {
        apply.push("--validate=false");
    }
    let out = kubectl.ok(&apply).await?;
    for line in [
        "namespace/mesh created",
        "service/echo created",
        "endpointslice.discovery.k8s.io/echo-abc created",
        "grpcroute.gateway.networking.k8s.io/echo-route created",
        "referencegrant.gateway.networking.k8s.io/allow-mesh-beta created",
        "referencegrant.gateway.networking.k8s.io/allow-mesh created",
    ] {
        assert!(out.contains(line), "missing {line:?} in {out}");
    }
    assert!(
        server
            .get(Resource::ReferenceGrants, "other", "allow-mesh-beta")
            .is_some()
    );
    assert_eq!(kubectl.ok(&apply).await?.matches("unchanged").count(), 6);

    let table = kubectl.ok(&["get", "grpcroute", "-A"]).await?;
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][..2], ["NAMESPACE", "NAME"], "{table}");
    assert_eq!(rows[1][..2], ["mesh", "echo-route"], "{table}");
    let grants = kubectl
        .ok(&["get", "refgrant", "-n", "other", "-o", "name"])
        .await?;
    assert_eq!(grants.lines().count(), 2, "{grants}");

    let yaml = kubectl
        .ok(&["get", "grpcroute", "echo-route", "-n", "mesh", "-o", "yaml"])
        .await?;
    let route: Value = serde_saphyr::from_str(&yaml)?;
    assert_eq!(route["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(route["kind"], "GRPCRoute");
    assert_eq!(route["metadata"]["generation"], 1);
    assert!(route["metadata"]["resourceVersion"].is_string());
    assert_eq!(
        route["spec"]["parentRefs"][0],
        json!({"group": "", "kind": "Service", "name": "echo"})
    );
    assert_eq!(
        route["spec"]["rules"][0]["matches"][0]["method"],
        json!({"service": "echo.Echo", "method": "Say"})
    );
    assert_eq!(
        route["spec"]["rules"][0]["backendRefs"][1]["namespace"],
        "other"
    );
    let svc: Value = serde_json::from_str(
        &kubectl
            .ok(&["get", "svc", "echo", "-n", "mesh", "-o", "json"])
            .await?,
    )?;
    assert_eq!(svc["spec"]["ports"][0]["port"], 50051);

    // A changed manifest: a strategic merge patch for the Service, a JSON merge patch for
    // the route.
    write(
        &manifest,
        &MANIFEST
            .replace("targetPort: 50051", "targetPort: 9090")
            .replace("weight: 90", "weight: 80"),
    )?;
    let out = kubectl.ok(&apply).await?;
    assert!(
        out.contains("service/echo configured")
            && out.contains("grpcroute.gateway.networking.k8s.io/echo-route configured"),
        "{out}"
    );
    let stored = server
        .get(Resource::GrpcRoutes, "mesh", "echo-route")
        .ok_or("route")?;
    assert_eq!(stored["spec"]["rules"][0]["backendRefs"][0]["weight"], 80);
    assert_eq!(stored["metadata"]["generation"], 2);
    let stored = server
        .get(Resource::Services, "mesh", "echo")
        .ok_or("service")?;
    assert_eq!(
        stored["spec"]["ports"],
        json!([{"name": "grpc", "port": 50051, "targetPort": 9090, "protocol": "TCP"}])
    );

    // `get -w` sees a change made meanwhile, then ends with --request-timeout.
    let watch = {
        let args = [
            "get",
            "grpcroute",
            "-n",
            "mesh",
            "-w",
            "--output-watch-events",
            "--request-timeout=2s",
        ];
        let mut command = Command::new(&kubectl.binary);
        command
            .env("KUBECONFIG", kubectl.path("kubeconfig"))
            .env("HOME", kubectl.dir.path())
            .arg("--cache-dir")
            .arg(kubectl.path("cache"))
            .args(args);
        tokio::task::spawn_blocking(move || command.output())
    };
    let label = server
        .wait_for_stats(std::time::Duration::from_secs(5), |s| {
            s.resource(Resource::GrpcRoutes).open_watches > 0
        })
        .await;
    assert!(label, "kubectl never opened its watch");
    kubectl
        .ok(&["label", "grpcroute", "echo-route", "-n", "mesh", "tier=web"])
        .await?;
    let watched = String::from_utf8_lossy(&watch.await??.stdout).into_owned();
    assert!(
        watched
            .lines()
            .any(|l| l.starts_with("MODIFIED") && l.contains("echo-route")),
        "{watched}"
    );

    if kubectl.minor >= 27 {
        let out = kubectl.ok(&["apply", "--server-side", "-f", file]).await?;
        assert_eq!(out.matches("serverside-applied").count(), 6, "{out}");
    }

    let out = kubectl.ok(&["delete", "-f", file]).await?;
    assert!(
        out.contains("grpcroute.gateway.networking.k8s.io \"echo-route\" deleted"),
        "{out}"
    );
    for resource in [
        Resource::Services,
        Resource::EndpointSlices,
        Resource::GrpcRoutes,
        Resource::ReferenceGrants,
    ] {
        assert!(
            server.list(resource, None).is_empty(),
            "{resource} left behind"
        );
    }
    let out = kubectl
        .run(&["get", "grpcroute", "echo-route", "-n", "mesh"])
        .await?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));
    server.shutdown().await;
    Ok(())
}
