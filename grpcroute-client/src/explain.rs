//! What the router would do with a call, without making it: for operators (the CLI's
//! `explain`) and for tests.

use std::collections::BTreeMap;

use http::HeaderMap;
use serde::Serialize;

use crate::{
    error::CallError,
    model::matches::split_path,
    route::{
        decide as router,
        table::{BackendSlot, CompiledRule, Frontend, RouteSetKind},
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
pub struct Explanation {
    /// The Service port called, as far as the target names it.
    pub frontend: Option<FrontendRef>,
    /// Which routes applied: `consumer`, `producer` or `none`.
    pub route_set: &'static str,
    /// The route of the matching rule.
    pub route: Option<RouteRef>,
    /// The matching rule.
    pub rule: Option<RuleRef>,
    /// `forward`, `passthrough`, `unimplemented` or `unavailable`.
    pub outcome: &'static str,
    /// The gRPC code a call gets (`OK` when it is forwarded).
    pub status: &'static str,
    /// Why, in words.
    pub reason: String,
    /// The rule's backends (or, for pass-through, the Service itself).
    pub backends: Vec<BackendExplanation>,
    /// The call's metadata after the rule's request filters; names lower-case.
    pub request_headers: BTreeMap<String, Vec<String>>,
}

/// A Service port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FrontendRef {
    /// Namespace.
    pub namespace: String,
    /// Service name (or the ClusterIP when no Service has it).
    pub service: String,
    /// Port, if known.
    pub port: Option<u16>,
}

/// A route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
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
pub struct BackendExplanation {
    /// Namespace of the backend Service.
    pub namespace: String,
    /// Its name.
    pub service: String,
    /// The Service port.
    pub port: Option<u16>,
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
        Host::Service { name, namespace } => FrontendRef {
            namespace: namespace.clone().unwrap_or_else(|| client_ns.to_string()),
            service: name.clone(),
            port: target.port,
        },
        Host::ClusterIp(ip) => FrontendRef {
            namespace: String::new(),
            service: ip.to_string(),
            port: target.port,
        },
    });
    let frontend = match router::frontend(&snapshot.table, &target, client_ns) {
        Ok(f) => f,
        Err(e) => {
            out.reason = e.to_string();
            return out;
        }
    };
    out.frontend = Some(FrontendRef {
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
        let passthrough = target_backend(snapshot, &frontend.passthrough);
        let no_endpoints = passthrough.endpoints.is_empty();
        out.backends = vec![passthrough];
        if no_endpoints {
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
    out.route = Some(RouteRef {
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
    out.backends = rule_backends(snapshot, rule);

    let fail = |out: &mut Explanation, e: CallError| {
        out.outcome = if e.code() == tonic::Code::Unimplemented {
            "unimplemented"
        } else {
            "unavailable"
        };
        out.status = if e.code() == tonic::Code::Unimplemented {
            "UNIMPLEMENTED"
        } else {
            "UNAVAILABLE"
        };
        out.reason = e.to_string();
    };
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
    let usable = out
        .backends
        .iter()
        .filter(|b| b.valid && b.weight > 0 && !b.endpoints.is_empty())
        .count();
    let failing: Vec<String> = out
        .backends
        .iter()
        .filter(|b| b.weight > 0 && (!b.valid || b.endpoints.is_empty()))
        .map(|b| {
            format!(
                "{}/{} ({})",
                b.namespace,
                b.service,
                b.reason.as_deref().unwrap_or("no ready endpoints")
            )
        })
        .collect();
    if usable == 0 {
        out.reason = format!(
            "{} matched, but none of its backends can take calls: {}",
            rule.describe(),
            failing.join("; ")
        );
        return;
    }
    out.outcome = "forward";
    out.status = "OK";
    out.reason = if failing.is_empty() {
        format!("{} matched", rule.describe())
    } else {
        format!(
            "{} matched; the shares of {} fail UNAVAILABLE",
            rule.describe(),
            failing.join("; ")
        )
    };
}

fn rule_backends(snapshot: &Snapshot, rule: &CompiledRule) -> Vec<BackendExplanation> {
    let total = rule.total_weight();
    rule.backends
        .iter()
        .map(|b| {
            let share = if total == 0 {
                0.0
            } else {
                f64::from(b.weight) / total as f64
            };
            let (valid, reason, endpoints) = match &b.target {
                Ok(t) => {
                    let endpoints = endpoint_list(snapshot, t);
                    (
                        true,
                        endpoints
                            .is_empty()
                            .then(|| "no ready endpoints".to_string()),
                        endpoints,
                    )
                }
                Err(e) => (
                    false,
                    Some(format!("{}: {}", e.reason, e.message)),
                    Vec::new(),
                ),
            };
            let reason = reason.or_else(|| b.filters.unsupported.clone());
            BackendExplanation {
                namespace: b.namespace.to_string(),
                service: b.name.to_string(),
                port: b.port,
                weight: b.weight,
                share,
                valid,
                reason,
                endpoints,
            }
        })
        .collect()
}

fn target_backend(snapshot: &Snapshot, t: &BackendSlot) -> BackendExplanation {
    let endpoints = endpoint_list(snapshot, t);
    BackendExplanation {
        namespace: t.service.namespace().into(),
        service: t.service.name().into(),
        port: Some(t.port),
        weight: 1,
        share: 1.0,
        valid: true,
        reason: endpoints
            .is_empty()
            .then(|| "no ready endpoints".to_string()),
        endpoints,
    }
}

/// `address:port` of the endpoints the backend of `slot` has now.
fn endpoint_list(snapshot: &Snapshot, slot: &BackendSlot) -> Vec<String> {
    snapshot
        .backend(slot)
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
