//! The routing decision for one call: pure, synchronous, and the same code for live calls
//! and for `explain`.

use std::sync::Arc;

use http::HeaderMap;

use crate::{
    authority::{Host, Target},
    error::CallError,
    metrics::CallStats,
    model::matches::split_path,
    table::{BackendTarget, CompiledBackend, CompiledRule, Frontend, RouteSetKind, Snapshot},
};

/// Where a call goes.
#[derive(Debug)]
pub(crate) struct Decision<'s> {
    /// The rule that matched; `None` for a pass-through call (no routes attached).
    pub(crate) rule: Option<&'s Arc<CompiledRule>>,
    /// The backendRef picked by weight; `None` for pass-through.
    pub(crate) backend: Option<&'s CompiledBackend>,
    /// The endpoints to send to.
    pub(crate) target: &'s Arc<BackendTarget>,
    /// The series the call counts in.
    pub(crate) stats: &'s Arc<CallStats>,
}

/// A call the router refused, with what it had chosen before refusing (so a caller can
/// tell which rule and backend a failed call was for).
#[derive(Debug)]
pub(crate) struct Refusal<'s> {
    pub(crate) error: CallError,
    /// The rule that matched, if one did.
    pub(crate) rule: Option<&'s Arc<CompiledRule>>,
    /// The backendRef picked by weight, if one was (it is then the one that failed).
    pub(crate) backend: Option<&'s CompiledBackend>,
    /// The series the call counts in.
    pub(crate) stats: &'s Arc<CallStats>,
}

impl From<Refusal<'_>> for CallError {
    fn from(r: Refusal<'_>) -> Self {
        r.error
    }
}

/// The frontend (Service port) a target names, as seen from `client_namespace`.
pub(crate) fn frontend<'s>(
    snapshot: &'s Snapshot,
    target: &Target,
    client_namespace: &str,
) -> Result<&'s Arc<Frontend>, CallError> {
    let service = match &target.host {
        Host::Service { name, namespace } => {
            let ns = namespace.as_deref().unwrap_or(client_namespace);
            snapshot
                .service(ns, name)
                .ok_or_else(|| CallError::UnknownService {
                    service: format!("{ns}/{name}"),
                })?
        }
        Host::ClusterIp(ip) => {
            snapshot
                .service_by_ip(*ip)
                .ok_or_else(|| CallError::UnknownService {
                    service: format!("with ClusterIP {ip}"),
                })?
        }
    };
    match target.port {
        Some(port) => service
            .frontend(port)
            .ok_or_else(|| CallError::UnknownPort {
                service: service.key.to_string(),
                port,
            }),
        None => match service.ports.as_slice() {
            [(_, only)] => Ok(only),
            ports => Err(CallError::AmbiguousPort {
                service: service.key.to_string(),
                ports: ports.len(),
            }),
        },
    }
}

/// Decides where a call to `frontend` goes. `random` drives the weighted pick.
pub(crate) fn decide<'s>(
    frontend: &'s Frontend,
    client_namespace: &str,
    path: &str,
    headers: &HeaderMap,
    random: u64,
) -> Result<Decision<'s>, Refusal<'s>> {
    let refuse = |error, rule, backend, stats| Refusal {
        error,
        rule,
        backend,
        stats,
    };
    let Some(set) = frontend.route_set(client_namespace) else {
        // No routes: the call proceeds to the Service's own endpoints (GEP-1294).
        return Ok(Decision {
            rule: None,
            backend: None,
            target: &frontend.passthrough,
            stats: &frontend.passthrough_stats,
        });
    };
    let (service, method) = split_path(path);
    let Some(candidate) = set.find(service, method, headers) else {
        return Err(refuse(
            CallError::NoMatch {
                frontend: format!("{}:{}", frontend.service, frontend.port),
                set: match set.kind {
                    RouteSetKind::Consumer => "consumer",
                    RouteSetKind::Producer => "producer",
                },
                routes: set.routes_label.clone(),
                path: path.to_string(),
            },
            None,
            None,
            &set.unmatched,
        ));
    };
    let rule = &candidate.rule;
    let stats = &candidate.stats;
    if let Some(detail) = &rule.filters.unsupported {
        return Err(refuse(
            CallError::UnsupportedFilter {
                place: rule.describe(),
                detail: detail.clone(),
            },
            Some(rule),
            None,
            &stats.rule,
        ));
    }
    if rule.backends.is_empty() {
        return Err(refuse(
            CallError::NoBackends {
                rule: rule.describe(),
            },
            Some(rule),
            None,
            &stats.rule,
        ));
    }
    // `pick_index` is within `backends`, and the stats have one series per backend.
    let picked = rule
        .pick_index(random)
        .and_then(|i| Some((rule.backends.get(i)?, stats.backends.get(i)?)));
    let Some((backend, backend_stats)) = picked else {
        return Err(refuse(
            CallError::AllWeightsZero {
                rule: rule.describe(),
            },
            Some(rule),
            None,
            &stats.rule,
        ));
    };
    let target = match &backend.target {
        Ok(target) => target,
        Err(invalid) => {
            return Err(refuse(
                CallError::InvalidBackend {
                    rule: rule.describe(),
                    backend: backend.describe(),
                    reason: invalid.reason,
                    message: invalid.message.clone(),
                },
                Some(rule),
                Some(backend),
                backend_stats,
            ));
        }
    };
    if let Some(detail) = &backend.filters.unsupported {
        return Err(refuse(
            CallError::UnsupportedFilter {
                place: format!("{} backendRef {}", rule.describe(), backend.describe()),
                detail: detail.clone(),
            },
            Some(rule),
            Some(backend),
            backend_stats,
        ));
    }
    Ok(Decision {
        rule: Some(rule),
        backend: Some(backend),
        target,
        stats: backend_stats,
    })
}
