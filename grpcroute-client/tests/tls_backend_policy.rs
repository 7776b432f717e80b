//! BackendTLSPolicy from a folder of manifests, end to end: a backendRef to the targeted
//! Service port connects with TLS, sends the policy's hostname as SNI and verifies the
//! server against the policy's CA ConfigMap and hostname (or subjectAltNames); a policy
//! that cannot be honoured fails the calls `UNAVAILABLE` naming the policy and the
//! ConfigMap, never falling back to plaintext. So does a policy this client cannot even
//! decode (a value of a newer Gateway API release), whose targets can still be read.

mod tls_support;

use std::{net::SocketAddr, path::Path, time::Duration};

use grpcroute_client::{Mesh, source::ManifestDir, tls::TlsMode};
use grpcroute_test_identity::{Ca, Issued, Leaf, TlsServer, TlsServerOptions};
use tls_support::{BACKEND, BOUND, SERVER_ID, call};
use tonic::Code;

const HOSTNAME: &str = "cart.example.com";

/// A TLS server (no client certificates asked) presenting `cert`.
async fn server(cert: &Issued) -> TlsServer {
    TlsServer::start(TlsServerOptions {
        name: "cart".into(),
        chain_pem: cert.cert_pem.clone(),
        key_pem: cert.key_pem.clone(),
        client_ca_pem: None,
        alpn_h2: true,
    })
    .await
    .unwrap()
}

/// `shop/cart` (port `grpc` 50051) with `addr` as its endpoint, and a route from `web`
/// clients' frontend `shop/front` to it, so the policy applies to a backendRef.
fn service_yaml(addr: SocketAddr) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: cart, namespace: shop}}
spec:
  clusterIP: 10.96.0.10
  ports: [{{name: grpc, port: 50051}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: cart-1
  namespace: shop
  labels: {{kubernetes.io/service-name: cart}}
addressType: IPv4
ports: [{{name: grpc, port: {port}}}]
endpoints: [{{addresses: ["{ip}"], conditions: {{ready: true}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: front, namespace: shop}}
spec:
  clusterIP: 10.96.0.11
  ports: [{{name: grpc, port: 50051}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: to-cart, namespace: shop}}
spec:
  parentRefs: [{{group: "", kind: Service, name: front, port: 50051}}]
  rules:
  - backendRefs: [{{name: cart, port: 50051}}]
"#,
        port = addr.port(),
        ip = addr.ip(),
    )
}

fn config_map_yaml(name: &str, ca: &Ca) -> String {
    let indented: String = ca
        .cert_pem()
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: shop}}\ndata:\n  ca.crt: |\n{indented}"
    )
}

fn policy_yaml(config_map: &str, hostname: &str, sans: &str) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: cart-tls, namespace: shop}}
spec:
  targetRefs: [{{group: "", kind: Service, name: cart, sectionName: grpc}}]
  validation:
    caCertificateRefs: [{{group: "", kind: ConfigMap, name: {config_map}}}]
    hostname: {hostname}
{sans}"#
    )
}

/// A mesh reading `dir`, in `TlsMode::Policy`, once it has its configuration.
async fn mesh(dir: &Path) -> Mesh {
    let mesh = Mesh::builder()
        .namespace("web")
        .tls(TlsMode::Policy)
        .connect_backoff(Duration::from_millis(10), Duration::from_millis(50))
        .build_with_source(ManifestDir::new(dir).debounce(Duration::from_millis(10)));
    tokio::time::timeout(BOUND, mesh.ready())
        .await
        .expect("the mesh reads the manifests within the bound");
    assert!(mesh.source_error().is_none(), "{:?}", mesh.source_error());
    mesh
}

/// One call through the route (`front.shop` → `cart`).
async fn call_front(mesh: &Mesh) -> Result<(), tonic::Status> {
    let channel = mesh.channel("front.shop:50051").expect("a Service address");
    let mut grpc = tonic::client::Grpc::new(channel);
    tokio::time::timeout(BOUND, async {
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unknown(e.to_string()))?;
        grpc.unary(
            tonic::Request::new(bytes::Bytes::new()),
            "/test.Svc/Call".parse().expect("a path"),
            grpcroute_echo::RawCodec,
        )
        .await
        .map(|_| ())
    })
    .await
    .expect("call_front: the call finishes within the bound")
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[tokio::test]
async fn the_policy_ca_and_hostname_make_the_call_succeed_over_tls() {
    let ca = Ca::new("backend CA").unwrap();
    let s = server(&ca.issue(&Leaf::dns(HOSTNAME)).unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "cart.yaml", &service_yaml(s.addr()));
    write(dir.path(), "ca.yaml", &config_map_yaml("cart-ca", &ca));
    write(
        dir.path(),
        "policy.yaml",
        &policy_yaml("cart-ca", HOSTNAME, ""),
    );
    let mesh = mesh(dir.path()).await;

    call_front(&mesh)
        .await
        .expect("the routed call succeeds over TLS");
    // The direct call to the targeted Service port uses the policy too.
    call(&mesh)
        .await
        .expect("the direct call succeeds over TLS");
    assert_eq!(s.calls(), 2, "both calls reached the TLS server");
    assert!(
        !s.presented().is_empty(),
        "the server completed TLS handshakes"
    );
}

#[tokio::test]
async fn a_uri_subject_alt_name_is_verified_instead_of_the_hostname() {
    let ca = Ca::new("backend CA").unwrap();
    // A SPIFFE certificate without the hostname: only the SAN can make it acceptable.
    let s = server(&ca.issue(&Leaf::spiffe(SERVER_ID)).unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "cart.yaml", &service_yaml(s.addr()));
    write(dir.path(), "ca.yaml", &config_map_yaml("cart-ca", &ca));
    let sans = format!("    subjectAltNames: [{{type: URI, uri: \"{SERVER_ID}\"}}]\n");
    write(
        dir.path(),
        "policy.yaml",
        &policy_yaml("cart-ca", HOSTNAME, &sans),
    );
    let mesh = mesh(dir.path()).await;
    call_front(&mesh)
        .await
        .expect("the server presents the policy's URI SAN");
}

#[tokio::test]
async fn a_wrong_hostname_fails_unavailable_naming_the_san_mismatch() {
    let ca = Ca::new("backend CA").unwrap();
    let s = server(&ca.issue(&Leaf::dns(HOSTNAME)).unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "cart.yaml", &service_yaml(s.addr()));
    write(dir.path(), "ca.yaml", &config_map_yaml("cart-ca", &ca));
    write(
        dir.path(),
        "policy.yaml",
        &policy_yaml("cart-ca", "other.example.com", ""),
    );
    let mesh = mesh(dir.path()).await;
    let status = call_front(&mesh)
        .await
        .expect_err("the hostname does not match");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let message = status.message();
    for part in [
        BACKEND,
        "SAN mismatch",
        "expected DNS:other.example.com",
        HOSTNAME,
    ] {
        assert!(message.contains(part), "says {part:?}: {message}");
    }
    assert_eq!(s.calls(), 0, "nothing was sent to the unverified server");
}

#[tokio::test]
async fn a_missing_config_map_fails_unavailable_naming_policy_and_config_map() {
    let ca = Ca::new("backend CA").unwrap();
    let s = server(&ca.issue(&Leaf::dns(HOSTNAME)).unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "cart.yaml", &service_yaml(s.addr()));
    write(
        dir.path(),
        "policy.yaml",
        &policy_yaml("cart-ca", HOSTNAME, ""),
    );
    let mesh = mesh(dir.path()).await;
    let status = call_front(&mesh).await.expect_err("no CA ConfigMap");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let message = status.message();
    for part in [
        BACKEND,
        "BackendTLSPolicy shop/cart-tls",
        "ConfigMap shop/cart-ca not found",
    ] {
        assert!(message.contains(part), "says {part:?}: {message}");
    }

    // The ConfigMap arrives without `ca.crt`: still invalid, saying so.
    write(
        dir.path(),
        "ca.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cart-ca, namespace: shop}\ndata: {other: x}\n",
    );
    let message = eventually_fails_with(&mesh, "has no key \"ca.crt\"").await;
    assert!(message.contains("ConfigMap shop/cart-ca"), "{message}");

    // With its CA the backend recovers, over TLS.
    write(dir.path(), "ca.yaml", &config_map_yaml("cart-ca", &ca));
    tokio::time::timeout(BOUND, async {
        while call_front(&mesh).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the call succeeds once the ConfigMap has its CA");
    assert!(s.calls() >= 1);
}

/// Calls until one fails with a message containing `part` (bounded); that message.
async fn eventually_fails_with(mesh: &Mesh, part: &str) -> String {
    tokio::time::timeout(BOUND, async {
        loop {
            if let Err(status) = call_front(mesh).await
                && status.message().contains(part)
            {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                return status.message().to_string();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no call failed saying {part:?} within {BOUND:?}"))
}

/// Through the Kubernetes source (the test API server on loopback): a BackendTLSPolicy and
/// its ConfigMap added while calls run switch the backend to TLS for the calls that follow;
/// removing the policy switches it back to plaintext (which the TLS-only server refuses).
#[tokio::test]
async fn kube_a_policy_added_and_removed_while_calls_run() {
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, Ordering},
    };

    use grpcroute_client::source::KubeSource;
    use grpcroute_test_apiserver::{ApiServer, Resource};

    let ca = Ca::new("backend CA").unwrap();
    let s = server(&ca.issue(&Leaf::dns(HOSTNAME)).unwrap()).await;
    let api = ApiServer::start().await;
    let json = |yaml: &str| -> Vec<serde_json::Value> {
        yaml.split("\n---\n")
            .map(|doc| serde_saphyr::from_str(doc).unwrap())
            .collect()
    };
    for object in json(&service_yaml(s.addr())) {
        api.apply(object).unwrap();
    }
    let source =
        KubeSource::with_client(api.client().unwrap()).watch_timeout(Duration::from_secs(2));
    let mesh = Mesh::builder()
        .namespace("web")
        .tls(TlsMode::Policy)
        .ready_timeout(BOUND)
        .connect_backoff(Duration::from_millis(5), Duration::from_millis(20))
        .build_with_source(source);
    tokio::time::timeout(BOUND, mesh.ready())
        .await
        .expect("initial sync within the bound");

    // No policy: plaintext to a TLS-only server fails, and nothing reaches it.
    let status = call_front(&mesh)
        .await
        .expect_err("plaintext to a TLS server");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(s.calls(), 0);

    // Callers run throughout; each call is recorded with the phase it started in.
    let phase = Arc::new(AtomicU8::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    /// Each call's phase at its start, and its outcome.
    type Results = Arc<Mutex<Vec<(u8, Result<(), String>)>>>;
    let results: Results = Arc::default();
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let (mesh, phase, stop, results) =
                (mesh.clone(), phase.clone(), stop.clone(), results.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let p = phase.load(Ordering::SeqCst);
                    let r = call_front(&mesh).await.map_err(|s| format!("{s:?}"));
                    results.lock().unwrap().push((p, r));
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();
    let wait_until = |want_ok: bool, step: &'static str| {
        let results = results.clone();
        async move {
            tokio::time::timeout(BOUND, async {
                loop {
                    if results
                        .lock()
                        .unwrap()
                        .last()
                        .is_some_and(|(_, r)| r.is_ok() == want_ok)
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{step}: no call {} within {BOUND:?}",
                    if want_ok { "succeeded" } else { "failed" }
                )
            });
        }
    };
    let calls_in = |p: u8| -> Vec<Result<(), String>> {
        results
            .lock()
            .unwrap()
            .iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, r)| r.clone())
            .collect()
    };
    let settle = |p: u8, step: &'static str| {
        let calls_in = &calls_in;
        async move {
            tokio::time::timeout(BOUND, async {
                while calls_in(p).len() < 20 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{step}: 20 calls did not finish within {BOUND:?}"));
        }
    };

    // Add the CA ConfigMap and the policy while the calls run.
    for object in json(&config_map_yaml("cart-ca", &ca)) {
        api.apply(object).unwrap();
    }
    for object in json(&policy_yaml("cart-ca", HOSTNAME, "")) {
        api.apply(object).unwrap();
    }
    wait_until(true, "policy added").await;
    phase.store(2, Ordering::SeqCst);
    settle(2, "with the policy").await;
    let with_policy = calls_in(2);
    assert!(
        with_policy.iter().all(Result::is_ok),
        "every call after the switch succeeds over TLS: {with_policy:?}"
    );
    let handshakes = s.presented().len();
    assert!(handshakes >= 1, "the server completed TLS handshakes");

    // Remove the policy: new connections are plaintext again, which the server refuses.
    api.delete(Resource::BackendTlsPolicies, "shop", "cart-tls")
        .unwrap();
    wait_until(false, "policy removed").await;
    phase.store(3, Ordering::SeqCst);
    let served = s.calls();
    settle(3, "without the policy").await;
    let without = calls_in(3);
    assert!(
        without.iter().all(Result::is_err),
        "every call after the removal goes out in plaintext and fails: {without:?}"
    );
    assert!(
        without
            .iter()
            .all(|r| r.as_ref().is_err_and(|e| !e.contains("BackendTLSPolicy"))),
        "{without:?}"
    );
    assert_eq!(s.calls(), served, "nothing more reached the server");

    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        tokio::time::timeout(BOUND, caller)
            .await
            .expect("callers stop within the bound")
            .unwrap();
    }
}

/// `KubeSource::config_map_selector`: a ConfigMap outside the selector is not seen (the
/// policy's backend fails naming it as missing) until it is labelled; and
/// `backend_tls_policies(false)` leaves policies unread (plaintext).
#[tokio::test]
async fn kube_config_map_selector_and_turning_policies_off() {
    use grpcroute_client::source::KubeSource;
    use grpcroute_test_apiserver::ApiServer;

    let ca = Ca::new("backend CA").unwrap();
    let s = server(&ca.issue(&Leaf::dns(HOSTNAME)).unwrap()).await;
    let api = ApiServer::start().await;
    let json = |yaml: &str| -> Vec<serde_json::Value> {
        yaml.split("\n---\n")
            .map(|doc| serde_saphyr::from_str(doc).unwrap())
            .collect()
    };
    for yaml in [
        service_yaml(s.addr()),
        config_map_yaml("cart-ca", &ca),
        policy_yaml("cart-ca", HOSTNAME, ""),
    ] {
        for object in json(&yaml) {
            api.apply(object).unwrap();
        }
    }
    let mesh_with = |source: KubeSource| {
        Mesh::builder()
            .namespace("web")
            .tls(TlsMode::Policy)
            .ready_timeout(BOUND)
            .build_with_source(source.watch_timeout(Duration::from_secs(2)))
    };

    let selected = mesh_with(
        KubeSource::with_client(api.client().unwrap()).config_map_selector("grpcroute.dev/ca=true"),
    );
    tokio::time::timeout(BOUND, selected.ready())
        .await
        .expect("kube_config_map_selector: initial sync within the bound");
    let status = call_front(&selected)
        .await
        .expect_err("the unlabelled ConfigMap is not watched");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .contains("ConfigMap shop/cart-ca not found"),
        "{status:?}"
    );
    let mut labelled = json(&config_map_yaml("cart-ca", &ca)).remove(0);
    labelled["metadata"]["labels"] = serde_json::json!({"grpcroute.dev/ca": "true"});
    api.apply(labelled).unwrap();
    tokio::time::timeout(BOUND, async {
        while call_front(&selected).await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("kube_config_map_selector: the labelled ConfigMap is seen and the call succeeds");

    let off = mesh_with(KubeSource::with_client(api.client().unwrap()).backend_tls_policies(false));
    tokio::time::timeout(BOUND, off.ready())
        .await
        .expect("backend_tls_policies(false): initial sync within the bound");
    let served = s.calls();
    let status = call_front(&off)
        .await
        .expect_err("without policies the call is plaintext, which the TLS server refuses");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(!status.message().contains("BackendTLSPolicy"), "{status:?}");
    assert_eq!(s.calls(), served);
}

/// A BackendTLSPolicy `shop/cart-tls` this client cannot decode: a SAN `type` of a later
/// Gateway API release. It targets `cart`'s port `grpc` and the whole of Service `plain`.
const UNDECODABLE_POLICY: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: cart-tls, namespace: shop}
spec:
  targetRefs:
  - {group: "", kind: Service, name: cart, sectionName: grpc}
  - {group: "", kind: Service, name: plain}
  validation:
    caCertificateRefs: [{group: "", kind: ConfigMap, name: cart-ca}]
    hostname: cart.example.com
    subjectAltNames: [{type: IPAddress, ipAddress: 127.0.0.1}]
"#;

/// The field of [`UNDECODABLE_POLICY`] that does not decode.
const UNDECODABLE_FIELD: &str = "spec.validation.subjectAltNames[0].type";

/// Services `plain` and `other` (port `grpc` 50051), both served by the plaintext echo
/// server at `addr`.
fn plain_services_yaml(addr: SocketAddr) -> String {
    ["plain", "other"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            format!(
                r#"apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: shop}}
spec:
  clusterIP: 10.96.0.2{i}
  ports: [{{name: grpc, port: 50051}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: shop
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: grpc, port: {port}}}]
endpoints: [{{addresses: ["{ip}"], conditions: {{ready: true}}}}]
"#,
                port = addr.port(),
                ip = addr.ip(),
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// One Echo call to `{service}.shop:50051`: the backend that answered, or the status.
async fn echo(mesh: &Mesh, service: &str) -> Result<String, tonic::Status> {
    use grpcroute_echo::pb::{EchoRequest, grpc_echo_client::GrpcEchoClient};
    let channel = mesh
        .channel(&format!("{service}.shop:50051"))
        .expect("a Service address");
    let mut request = tonic::Request::new(EchoRequest {});
    request.set_timeout(Duration::from_secs(2));
    let response = tokio::time::timeout(BOUND, GrpcEchoClient::new(channel).echo(request))
        .await
        .unwrap_or_else(|_| panic!("echo to {service}: the call finishes within the bound"))?;
    Ok(response
        .metadata()
        .get("x-echo-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string())
}

/// `shop/cart-tls`'s `Accepted` condition: `(status, reason, message)`.
fn cart_tls_accepted(mesh: &Mesh) -> (grpcroute_client::ConditionStatus, String, String) {
    let statuses = mesh.backend_tls_policies();
    let status = statuses
        .iter()
        .find(|s| s.policy.to_string() == "shop/cart-tls")
        .unwrap_or_else(|| panic!("no status for shop/cart-tls: {statuses:#?}"));
    let c = &status.conditions[0];
    assert_eq!(c.type_, "Accepted");
    (c.status, c.reason.clone(), c.message.clone())
}

/// With [`UNDECODABLE_POLICY`] in force: every call to its targets fails `UNAVAILABLE`
/// naming the policy and the field (nothing goes out in plaintext, which `plain`'s echo
/// server would have answered), the Service it does not target keeps working, its status
/// and `explain` say why, and it is still counted as rejected. `step` names the check.
async fn assert_fails_closed(mesh: &Mesh, s: &TlsServer, step: &str) {
    let served = s.calls();
    let routed = call_front(mesh)
        .await
        .expect_err("the routed call to cart fails");
    let direct = call(mesh).await.expect_err("the direct call to cart fails");
    let plain = echo(mesh, "plain")
        .await
        .expect_err("the call to plain fails: no plaintext fallback");
    for status in [&routed, &direct, &plain] {
        assert_eq!(status.code(), Code::Unavailable, "{step}: {status:?}");
        for part in [
            "BackendTLSPolicy shop/cart-tls is invalid",
            UNDECODABLE_FIELD,
            "unknown variant `IPAddress`",
        ] {
            assert!(
                status.message().contains(part),
                "{step}: says {part:?}: {status:?}"
            );
        }
    }
    assert!(routed.message().contains(BACKEND), "{step}: {routed:?}");
    assert_eq!(s.calls(), served, "{step}: nothing reached cart");
    assert_eq!(
        echo(mesh, "other").await.as_deref().ok(),
        Some("plain"),
        "{step}: the Service no policy targets keeps working"
    );

    let (status, reason, message) = cart_tls_accepted(mesh);
    assert_eq!(
        (status, reason.as_str()),
        (grpcroute_client::ConditionStatus::False, "Invalid"),
        "{step}: {message}"
    );
    assert!(message.contains(UNDECODABLE_FIELD), "{step}: {message}");
    let statuses = mesh.backend_tls_policies();
    let targets: Vec<String> = statuses[0]
        .targets
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(targets, ["shop/cart", "shop/plain"], "{step}");

    let rejected = mesh.rejected();
    assert_eq!(rejected.len(), 1, "{step}: {rejected:?}");
    assert_eq!(rejected[0].key().to_string(), "shop/cart-tls", "{step}");
    assert_eq!(rejected[0].field(), UNDECODABLE_FIELD, "{step}");

    let explanation = mesh.explain(&grpcroute_client::CallDescription {
        target: "plain.shop:50051".into(),
        path: "/grpc.echo.Echo/Echo".into(),
        ..grpcroute_client::CallDescription::default()
    });
    let tls = explanation.backends[0]
        .tls
        .as_ref()
        .unwrap_or_else(|| panic!("{step}: explain shows the policy: {explanation:#?}"));
    assert_eq!(tls.policy.as_deref(), Some("shop/cart-tls"), "{step}");
    assert!(!tls.enabled, "{step}: {tls:?}");
    let note = tls.note.as_deref().unwrap_or_default();
    assert!(note.contains(UNDECODABLE_FIELD), "{step}: {tls:?}");
}

/// After the policy was edited to a valid one (targeting `cart` only): `cart`'s calls
/// succeed over TLS, `plain` is plaintext again, the policy is accepted and nothing is
/// rejected.
async fn assert_recovered(mesh: &Mesh, s: &TlsServer, step: &str) {
    tokio::time::timeout(BOUND, async {
        while call_front(mesh).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{step}: cart's calls never succeeded over TLS"));
    call(mesh).await.expect("the direct call succeeds over TLS");
    assert!(
        !s.presented().is_empty(),
        "{step}: TLS handshakes completed"
    );
    assert_eq!(
        echo(mesh, "plain").await.as_deref().ok(),
        Some("plain"),
        "{step}"
    );
    assert_eq!(
        cart_tls_accepted(mesh).0,
        grpcroute_client::ConditionStatus::True,
        "{step}"
    );
    assert!(mesh.rejected().is_empty(), "{step}: {:?}", mesh.rejected());
}

/// A policy the manifests hold that this client cannot decode fails its targets closed
/// (the documented fail-open gap, closed); fixed, TLS works; broken again, closed again.
#[tokio::test]
async fn manifests_an_undecodable_policy_fails_its_targets_closed() {
    let ca = Ca::new("backend CA").unwrap();
    let s = server(&ca.issue(&Leaf::dns(HOSTNAME)).unwrap()).await;
    let plain = grpcroute_echo::EchoServer::start(grpcroute_echo::EchoConfig::new("plain"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "cart.yaml", &service_yaml(s.addr()));
    write(dir.path(), "plain.yaml", &plain_services_yaml(plain.addr()));
    write(dir.path(), "ca.yaml", &config_map_yaml("cart-ca", &ca));
    write(dir.path(), "policy.yaml", UNDECODABLE_POLICY);
    let mesh = mesh(dir.path()).await;
    assert_fails_closed(&mesh, &s, "manifests, initially").await;

    write(
        dir.path(),
        "policy.yaml",
        &policy_yaml("cart-ca", HOSTNAME, ""),
    );
    assert_recovered(&mesh, &s, "manifests, fixed").await;

    write(dir.path(), "policy.yaml", UNDECODABLE_POLICY);
    tokio::time::timeout(BOUND, async {
        while echo(&mesh, "plain").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("manifests, broken again: plain's calls fail within the bound");
    assert_fails_closed(&mesh, &s, "manifests, broken again").await;
}

/// The same through the Kubernetes source (the test API server serving the policy's JSON
/// as a newer CRD would): in the initial list, edited to valid, and edited back (a
/// MODIFIED event) to undecodable.
#[tokio::test]
async fn kube_an_undecodable_policy_fails_its_targets_closed() {
    use grpcroute_client::source::KubeSource;
    use grpcroute_test_apiserver::ApiServer;

    let ca = Ca::new("backend CA").unwrap();
    let s = server(&ca.issue(&Leaf::dns(HOSTNAME)).unwrap()).await;
    let plain = grpcroute_echo::EchoServer::start(grpcroute_echo::EchoConfig::new("plain"))
        .await
        .unwrap();
    let api = ApiServer::start().await;
    let apply = |yaml: &str| {
        for doc in yaml.split("\n---\n").filter(|d| !d.trim().is_empty()) {
            let object: serde_json::Value = serde_saphyr::from_str(doc).unwrap();
            api.apply(object).unwrap();
        }
    };
    apply(&service_yaml(s.addr()));
    apply(&plain_services_yaml(plain.addr()));
    apply(&config_map_yaml("cart-ca", &ca));
    apply(UNDECODABLE_POLICY);
    let source =
        KubeSource::with_client(api.client().unwrap()).watch_timeout(Duration::from_secs(2));
    let mesh = Mesh::builder()
        .namespace("web")
        .tls(TlsMode::Policy)
        .ready_timeout(BOUND)
        .connect_backoff(Duration::from_millis(5), Duration::from_millis(20))
        .build_with_source(source);
    tokio::time::timeout(BOUND, mesh.ready())
        .await
        .expect("kube_an_undecodable_policy: initial sync within the bound");
    assert_fails_closed(&mesh, &s, "kube, initial list").await;

    apply(&policy_yaml("cart-ca", HOSTNAME, ""));
    assert_recovered(&mesh, &s, "kube, fixed").await;

    apply(UNDECODABLE_POLICY);
    tokio::time::timeout(BOUND, async {
        while echo(&mesh, "plain").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("kube, broken again: plain's calls fail within the bound");
    assert_fails_closed(&mesh, &s, "kube, broken again").await;
}
