//! What the router would do with a call, without making it: for operators (the CLI's
//! `explain`) and for tests. It reads the same tables and runs the same matching as a
//! call, so what it predicts is what a call gets (a property test checks it over loopback).

use std::collections::BTreeMap;

use http::HeaderMap;
use serde::Serialize;

use crate::{
    backend::Backend,
    error::CallError,
    model::matches::split_path,
    route::{
        decide as router,
        table::{BackendSlot, CompiledBackend, CompiledRule, Frontend, RouteSetKind},
    },
    snapshot::Snapshot,
    target::{Host, Target},
};

/// A call to explain.
#[derive(Clone, Debug, Default)]
pub struct CallDescription {
    /// The target, as given to [`Mesh::channel`](crate::Mesh::channel).
    pub target: String,
    /// The gRPC path, `/package.Service/Method`.
    pub path: String,
    /// The call's metadata.
    pub metadata: HeaderMap,
    /// The client's namespace; the mesh's own when `None`.
    pub client_namespace: Option<String>,
}

/// The decision for a call. Serializes to the JSON the CLI prints (every key present,
/// `null` where it does not apply).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Explanation {
    /// The Service port or xDS listener called, as far as the target names it.
    pub frontend: Option<FrontendRef>,
    /// Which routes applied: `consumer`, `producer` or `none` for a Service; `xds` for an
    /// xDS listener.
    pub route_set: &'static str,
    /// The route of the matching rule.
    pub route: Option<RouteRef>,
    /// The matching GRPCRoute rule (`null` for xDS, whose routes have no rules).
    pub rule: Option<RuleRef>,
    /// `forward`, `passthrough`, `unimplemented` or `unavailable`.
    pub outcome: &'static str,
    /// The gRPC code a call gets (`OK` when it is forwarded).
    pub status: &'static str,
    /// Why, in words.
    pub reason: String,
    /// The rule's backends (or, for pass-through, the Service itself; for xDS, the route's
    /// clusters).
    pub backends: Vec<BackendExplanation>,
    /// The call's metadata after the rule's request filters; names lower-case.
    pub request_headers: BTreeMap<String, Vec<String>>,
}

/// What a call was addressed to. Serialized without a tag: a Service port as
/// `{"namespace", "service", "port"}`, an xDS listener as `{"listener"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum FrontendRef {
    /// A Service port.
    Service {
        /// Namespace.
        namespace: String,
        /// Service name (or the ClusterIP when no Service has it).
        service: String,
        /// Port, if known.
        port: Option<u16>,
    },
    /// An xDS listener.
    Listener {
        /// The listener name.
        listener: String,
    },
}

/// The route that took a call. Serialized without a tag: a GRPCRoute as
/// `{"namespace", "name"}`, an xDS route as `{"virtual_host", "index", "name"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum RouteRef {
    /// A GRPCRoute.
    GrpcRoute {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// A route of an xDS virtual host.
    Xds {
        /// The virtual host's name.
        virtual_host: String,
        /// The route's index in the virtual host, as configured.
        index: usize,
        /// The route's name, if it has one.
        name: Option<String>,
    },
}

/// An endpoint out of rotation: it kept failing.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct EjectedEndpoint {
    /// `address:port`.
    pub endpoint: String,
    /// Seconds until it takes a probe call (0 while its probe runs).
    pub for_seconds: f64,
}

/// A rule of a route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    /// 0-based index in the route.
    pub index: usize,
    /// The rule's name, if it has one.
    pub name: Option<String>,
}

/// One backend and its share of the rule's calls.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct BackendExplanation {
    /// Namespace of the backend Service (`null` for an xDS cluster).
    pub namespace: Option<String>,
    /// Its name (`null` for an xDS cluster).
    pub service: Option<String>,
    /// The Service port.
    pub port: Option<u16>,
    /// The xDS cluster (`null` for a Service).
    pub cluster: Option<String>,
    /// The configured weight.
    pub weight: u32,
    /// weight / sum of the rule's weights (0 for weight 0).
    pub share: f64,
    /// Whether the backendRef resolves.
    pub valid: bool,
    /// Why it is invalid or cannot take calls.
    pub reason: Option<String>,
    /// `address:port` of the endpoints calls would go to.
    pub endpoints: Vec<String>,
    /// The endpoints failure accrual took out of rotation, and for how long still.
    pub ejected: Vec<EjectedEndpoint>,
    /// The call's metadata as this backend receives it: after the rule's request filters,
    /// then this backendRef's own; names lower-case.
    pub request_headers: BTreeMap<String, Vec<String>>,
    /// How its connections are secured: `null` for plaintext with no BackendTLSPolicy
    /// applying to it.
    pub tls: Option<TlsExplanation>,
}

/// The TLS a backend's connections use, and the BackendTLSPolicy it comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TlsExplanation {
    /// `namespace/name` of the BackendTLSPolicy that applies, if one does.
    pub policy: Option<String>,
    /// Whether connections use TLS. `false` when the policy is not applied (the mesh's
    /// mode is plaintext) or cannot be (see `note`).
    pub enabled: bool,
    /// The SNI server name.
    pub server_name: Option<String>,
    /// The identities the server's certificate may name (any one): `DNS:name`, a SPIFFE
    /// ID or pattern, `URI:uri`.
    pub verify: Vec<String>,
    /// What the server's chain must lead to: `ConfigMap ns/name` (each), `system`, `mesh
    /// trust bundle`, or `N CA certificates`.
    pub roots: Vec<String>,
    /// Whether the client presents its certificate.
    pub client_certificate: bool,
    /// Why TLS is not used as the policy says, when it is not.
    pub note: Option<String>,
}

impl BackendExplanation {
    /// Whether calls picking this backend fail.
    fn fails(&self) -> bool {
        self.weight > 0 && (!self.valid || self.reason.is_some())
    }
}

pub(crate) fn explain(
    snapshot: &Snapshot,
    call: &CallDescription,
    own_namespace: &str,
    cluster_domain: &str,
) -> Explanation {
    let client_ns = call.client_namespace.as_deref().unwrap_or(own_namespace);
    let mut out = Explanation {
        frontend: None,
        route_set: "none",
        route: None,
        rule: None,
        outcome: "unavailable",
        status: "UNAVAILABLE",
        reason: String::new(),
        backends: Vec::new(),
        request_headers: headers_map(&call.metadata),
    };
    let target = match Target::parse(&call.target, cluster_domain) {
        Ok(t) => t,
        Err(e) => {
            out.reason = e.to_string();
            return out;
        }
    };
    out.frontend = Some(match &target.host {
        Host::Service { name, namespace } => FrontendRef::Service {
            namespace: namespace.clone().unwrap_or_else(|| client_ns.to_string()),
            service: name.clone(),
            port: target.port,
        },
        Host::ClusterIp(ip) => FrontendRef::Service {
            namespace: String::new(),
            service: ip.to_string(),
            port: target.port,
        },
        Host::Listener(name) => {
            out.route_set = "xds";
            out.frontend = Some(FrontendRef::Listener {
                listener: name.clone(),
            });
            #[cfg(feature = "xds")]
            xds::explain(snapshot, name, call, &mut out);
            return out;
        }
    });
    if !snapshot.kube_synced {
        out.reason = "the mesh has no configuration of Services yet".into();
        return out;
    }
    let frontend = match router::frontend(&snapshot.table, &target, client_ns) {
        Ok(f) => f,
        Err(e) => {
            out.reason = e.to_string();
            return out;
        }
    };
    out.frontend = Some(FrontendRef::Service {
        namespace: frontend.service.namespace().into(),
        service: frontend.service.name().into(),
        port: Some(frontend.port),
    });
    explain_frontend(snapshot, frontend, client_ns, call, &mut out);
    out
}

fn explain_frontend(
    snapshot: &Snapshot,
    frontend: &Frontend,
    client_ns: &str,
    call: &CallDescription,
    out: &mut Explanation,
) {
    let Some(set) = frontend.route_set(client_ns) else {
        let passthrough = target_backend(snapshot, &frontend.passthrough, &call.metadata);
        let no_endpoints = passthrough.endpoints.is_empty();
        let unusable = unusable(snapshot.backend(&frontend.passthrough));
        out.backends = vec![passthrough];
        if let Some(reason) = unusable {
            out.reason = format!(
                "no GRPCRoute is attached; backend {} is invalid: {reason}",
                frontend.passthrough.describe()
            );
        } else if no_endpoints {
            out.reason = format!(
                "no GRPCRoute is attached; Service {} has no ready endpoints",
                frontend.passthrough.describe()
            );
        } else {
            out.outcome = "passthrough";
            out.status = "OK";
            out.reason = format!(
                "no GRPCRoute is attached; calls go to Service {} itself",
                frontend.passthrough.describe()
            );
        }
        return;
    };
    out.route_set = match set.kind {
        RouteSetKind::Consumer => "consumer",
        RouteSetKind::Producer => "producer",
    };
    let (service, method) = split_path(&call.path);
    let Some(rule) = set.find(service, method, &call.metadata).map(|c| &c.rule) else {
        // Reuse the router's error for the wording.
        let reason = router::decide(frontend, client_ns, &call.path, &call.metadata, 0)
            .err()
            .map(|r| r.error);
        out.outcome = "unimplemented";
        out.status = "UNIMPLEMENTED";
        out.reason = reason.map_or_else(String::new, |e| e.to_string());
        return;
    };
    out.route = Some(RouteRef::GrpcRoute {
        namespace: rule.route.namespace().into(),
        name: rule.route.name().into(),
    });
    out.rule = Some(RuleRef {
        index: rule.index,
        name: rule.name.as_deref().map(Into::into),
    });
    let mut metadata = call.metadata.clone();
    if let Some(m) = &rule.filters.request_headers {
        m.apply(&mut metadata);
    }
    out.request_headers = headers_map(&metadata);
    out.backends = rule_backends(snapshot, rule, &metadata);

    if let Some(detail) = &rule.filters.unsupported {
        return fail(
            out,
            CallError::UnsupportedFilter {
                place: rule.describe(),
                detail: detail.clone(),
            },
        );
    }
    if rule.backends.is_empty() {
        return fail(
            out,
            CallError::NoBackends {
                rule: rule.describe(),
            },
        );
    }
    if rule.total_weight() == 0 {
        return fail(
            out,
            CallError::AllWeightsZero {
                rule: rule.describe(),
            },
        );
    }
    shares(out, &rule.describe());
}

/// The outcome of a rule (or xDS route) whose backends are in `out`: forwarded if any
/// backend with a share can take calls; the shares of those that cannot fail.
fn shares(out: &mut Explanation, what: &str) {
    let usable = out
        .backends
        .iter()
        .filter(|b| b.weight > 0 && !b.fails())
        .count();
    let failing: Vec<String> = out
        .backends
        .iter()
        .filter(|b| b.fails())
        .map(|b| {
            format!(
                "{} ({})",
                b.name(),
                b.reason.as_deref().unwrap_or("invalid")
            )
        })
        .collect();
    if usable == 0 {
        out.reason = format!(
            "{what} matched, but none of its backends can take calls: {}",
            failing.join("; ")
        );
        return;
    }
    out.outcome = "forward";
    out.status = "OK";
    out.reason = if failing.is_empty() {
        format!("{what} matched")
    } else {
        format!(
            "{what} matched; the shares of {} fail UNAVAILABLE",
            failing.join("; ")
        )
    };
}

fn fail(out: &mut Explanation, e: CallError) {
    let unimplemented = e.code() == tonic::Code::Unimplemented;
    out.outcome = if unimplemented {
        "unimplemented"
    } else {
        "unavailable"
    };
    out.status = if unimplemented {
        "UNIMPLEMENTED"
    } else {
        "UNAVAILABLE"
    };
    out.reason = e.to_string();
}

impl BackendExplanation {
    /// `namespace/service` or the cluster, for messages.
    fn name(&self) -> String {
        match (&self.cluster, &self.namespace, &self.service) {
            (Some(c), _, _) => format!("cluster {c}"),
            (None, Some(ns), Some(svc)) => format!("{ns}/{svc}"),
            _ => String::new(),
        }
    }
}

fn rule_backends(
    snapshot: &Snapshot,
    rule: &CompiledRule,
    metadata: &HeaderMap,
) -> Vec<BackendExplanation> {
    let total = rule.total_weight();
    rule.backends
        .iter()
        .map(|b| backend_ref(snapshot, b, total, metadata))
        .collect()
}

fn backend_ref(
    snapshot: &Snapshot,
    b: &CompiledBackend,
    total: u64,
    metadata: &HeaderMap,
) -> BackendExplanation {
    let share = if total == 0 {
        0.0
    } else {
        f64::from(b.weight) / total as f64
    };
    let ejected = b
        .target
        .as_ref()
        .map_or_else(|_| Vec::new(), |t| ejected_list(snapshot.backend(t)));
    let (valid, reason, endpoints) = match &b.target {
        Ok(t) => {
            let endpoints = endpoint_list(snapshot.backend(t));
            let reason = b
                .filters
                .unsupported
                .clone()
                .or_else(|| unusable(snapshot.backend(t)))
                .or_else(|| {
                    endpoints
                        .is_empty()
                        .then(|| "no ready endpoints".to_string())
                });
            (true, reason, endpoints)
        }
        Err(e) => (
            false,
            Some(format!("{}: {}", e.reason, e.message)),
            Vec::new(),
        ),
    };
    // What this backend receives: the rule's filters applied, then its own.
    let mut headers = metadata.clone();
    if let Some(m) = &b.filters.request_headers {
        m.apply(&mut headers);
    }
    BackendExplanation {
        namespace: Some(b.namespace.to_string()),
        service: Some(b.name.to_string()),
        port: b.port,
        cluster: None,
        weight: b.weight,
        share,
        valid,
        reason,
        endpoints,
        ejected,
        request_headers: headers_map(&headers),
        tls: b
            .target
            .as_ref()
            .ok()
            .and_then(|t| tls_explanation(snapshot, t)),
    }
}

/// Why a backend cannot take calls, when its configuration says so (a BackendTLSPolicy
/// that cannot be honoured).
fn unusable(backend: Option<&std::sync::Arc<Backend>>) -> Option<String> {
    backend.and_then(|b| b.unusable().as_ref().map(|r| r.as_str().to_owned()))
}

/// The TLS of a Service port's backend: its connections' settings, and the policy.
fn tls_explanation(snapshot: &Snapshot, t: &BackendSlot) -> Option<TlsExplanation> {
    let key = crate::route::BackendKey::Service {
        service: t.service.clone(),
        port: t.port,
    };
    let applied = snapshot.table.backend_tls.get(&key);
    let policy = applied.map(|a| a.policy.to_string());
    #[cfg(feature = "tls")]
    let roots = |settings: &crate::transport::tls::TlsSettings| match (
        settings.roots(),
        applied.map(|a| &a.settings),
    ) {
        (_, Some(Ok(policy))) => match &policy.roots {
            crate::route::backend_tls::PolicyRoots::Pem(bundles) => bundles
                .iter()
                .map(|(config_map, _)| format!("ConfigMap {config_map}"))
                .collect(),
            crate::route::backend_tls::PolicyRoots::System => vec!["system".into()],
        },
        (crate::tls::TrustRoots::Certificates(c), _) => {
            vec![format!("{} CA certificates", c.len())]
        }
        (crate::tls::TrustRoots::System, _) => vec!["system".into()],
        _ => vec!["mesh trust bundle".into()],
    };
    #[cfg(not(feature = "tls"))]
    let roots = ();
    if let Some(out) = connection_tls(snapshot.backend(t), policy.clone(), roots) {
        return Some(out);
    }
    // Plaintext. Only worth saying when a policy asked for TLS: the mesh's mode
    // (plaintext) leaves policies unapplied.
    let mut out = blank_tls(Some(policy?));
    out.note = Some("not applied: the mesh's TLS mode is plaintext (MeshBuilder::tls)".into());
    Some(out)
}

/// The TLS of an xDS cluster's connections, from its CDS transport socket (gRFC A29):
/// `None` for plaintext.
#[cfg(feature = "xds")]
fn cluster_tls(backend: Option<&std::sync::Arc<Backend>>) -> Option<TlsExplanation> {
    #[cfg(feature = "tls")]
    let roots = |settings: &crate::transport::tls::TlsSettings| match settings.xds_providers() {
        Some(providers) => vec![format!("certificate providers {providers}")],
        None => vec!["mesh trust bundle".into()],
    };
    #[cfg(not(feature = "tls"))]
    let roots = ();
    connection_tls(backend, None, roots)
}

fn blank_tls(policy: Option<String>) -> TlsExplanation {
    TlsExplanation {
        policy,
        enabled: false,
        server_name: None,
        verify: Vec::new(),
        roots: Vec::new(),
        client_certificate: false,
        note: None,
    }
}

/// What a backend of either source says about its connections' TLS: why it is unusable,
/// or the settings its connector uses, with `roots` naming the trust roots in the source's
/// terms. `None`: plaintext.
fn connection_tls(
    backend: Option<&std::sync::Arc<Backend>>,
    policy: Option<String>,
    #[cfg(feature = "tls")] roots: impl FnOnce(&crate::transport::tls::TlsSettings) -> Vec<String>,
    #[cfg(not(feature = "tls"))] _roots: (),
) -> Option<TlsExplanation> {
    let mut out = blank_tls(policy);
    if let Some(reason) = unusable(backend) {
        out.note = Some(reason);
        return Some(out);
    }
    #[cfg(feature = "tls")]
    if let Some(backend) = backend
        && let crate::transport::Security::Tls(connector) = backend.security()
    {
        let settings = connector.settings();
        out.enabled = true;
        // Empty for xDS clusters: A29 sends no SNI.
        out.server_name = Some(settings.server_name().to_owned()).filter(|s| !s.is_empty());
        out.verify = settings.expected();
        out.client_certificate = settings.client_certificate();
        out.roots = roots(settings);
        return Some(out);
    }
    None
}

fn target_backend(
    snapshot: &Snapshot,
    t: &BackendSlot,
    metadata: &HeaderMap,
) -> BackendExplanation {
    let endpoints = endpoint_list(snapshot.backend(t));
    let ejected = ejected_list(snapshot.backend(t));
    BackendExplanation {
        namespace: Some(t.service.namespace().into()),
        service: Some(t.service.name().into()),
        port: Some(t.port),
        cluster: None,
        weight: 1,
        share: 1.0,
        valid: true,
        reason: unusable(snapshot.backend(t)).or_else(|| {
            endpoints
                .is_empty()
                .then(|| "no ready endpoints".to_string())
        }),
        endpoints,
        ejected,
        request_headers: headers_map(metadata),
        tls: tls_explanation(snapshot, t),
    }
}

/// The endpoints of a backend that failure accrual ejected.
fn ejected_list(backend: Option<&std::sync::Arc<Backend>>) -> Vec<EjectedEndpoint> {
    backend
        .map(|b| {
            b.ejected()
                .into_iter()
                .map(|(addr, left)| EjectedEndpoint {
                    endpoint: addr.to_string(),
                    for_seconds: (left.as_secs_f64() * 1000.0).round() / 1000.0,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `address:port` of the endpoints a backend has now.
fn endpoint_list(backend: Option<&std::sync::Arc<Backend>>) -> Vec<String> {
    backend
        .map(|b| {
            b.endpoints()
                .all()
                .iter()
                .map(|e| e.addr().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn headers_map(headers: &HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        out.entry(name.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    out
}

#[cfg(feature = "xds")]
mod xds {
    //! `explain` for an xDS listener: the route that matches (first in configured order),
    //! its clusters with their weights, shares and endpoints, and the outcome in gRPC's
    //! terms (every failure `UNAVAILABLE`).

    use super::{
        BackendExplanation, CallDescription, Explanation, RouteRef, cluster_tls, ejected_list,
        endpoint_list, unusable,
    };
    use crate::{
        route::xds::{XdsListener, matching},
        snapshot::Snapshot,
    };

    pub(super) fn explain(
        snapshot: &Snapshot,
        name: &str,
        call: &CallDescription,
        out: &mut Explanation,
    ) {
        let routes = match snapshot.xds.listener(name).map(|l| &**l) {
            None => {
                out.reason = format!(
                    "xDS listener {name} is not watched yet (make a channel to xds:///{name} first)"
                );
                return;
            }
            Some(XdsListener::Waiting) => {
                out.reason = format!("xDS listener {name} has no complete configuration yet");
                return;
            }
            Some(XdsListener::Failed(message)) => {
                out.reason = format!("xDS listener {name}: {message}");
                return;
            }
            Some(XdsListener::Ready(routes)) => routes,
        };
        let vh = &routes.config.virtual_host;
        // `runtime_fraction` routes are explained as matching when their fraction is
        // above zero (a call matches them with that probability).
        let matched = vh.routes.iter().position(|r| {
            let mut random = || 0;
            matching::route_matches(r, &call.path, &call.metadata, &mut random)
        });
        let Some(route) = matched.and_then(|i| routes.routes.get(i)) else {
            out.reason = format!(
                "no route of virtual host {:?} matches {} (gRPC fails it UNAVAILABLE)",
                vh.name, call.path
            );
            return;
        };
        out.route = Some(RouteRef::Xds {
            virtual_host: vh.name.clone(),
            index: route.index,
            name: route.name.clone(),
        });
        if route.clusters.is_empty() {
            out.reason = format!(
                "{} matched, but it does not forward to a cluster (gRPC fails it UNAVAILABLE)",
                route.describe()
            );
            return;
        }
        let total: u64 = route.clusters.iter().map(|c| u64::from(c.weight)).sum();
        out.backends = route
            .clusters
            .iter()
            .map(|c| {
                let backend = c
                    .slot
                    .as_ref()
                    .ok()
                    .and_then(|&s| snapshot.xds_backends.get(s));
                let endpoints = endpoint_list(backend);
                let ejected = ejected_list(backend);
                let reason = match &c.slot {
                    Err(message) => Some(message.to_string()),
                    // A TLS cluster whose certificate providers cannot be used fails its
                    // calls, whatever its endpoints.
                    Ok(_) => unusable(backend).or_else(|| {
                        endpoints
                            .is_empty()
                            .then(|| "no usable endpoints".to_string())
                    }),
                };
                BackendExplanation {
                    namespace: None,
                    service: None,
                    port: None,
                    cluster: Some(c.name.to_string()),
                    weight: c.weight,
                    share: if total == 0 {
                        0.0
                    } else {
                        f64::from(c.weight) / total as f64
                    },
                    valid: c.slot.is_ok(),
                    reason,
                    endpoints,
                    ejected,
                    request_headers: out.request_headers.clone(),
                    tls: cluster_tls(backend),
                }
            })
            .collect();
        super::shares(out, &route.describe());
    }
}
