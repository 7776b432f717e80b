//! The routing decision for one call: pure, synchronous, and the same code for live calls
//! and for `explain`.

use std::sync::Arc;

use http::HeaderMap;

use crate::{
    error::CallError,
    model::matches::split_path,
    route::table::{BackendSlot, Frontend, RouteSetKind, SeriesOf, SeriesRef, Table},
    target::{Host, Target},
};

/// Where a call goes.
#[derive(Debug)]
pub(crate) struct Decision<'s> {
    /// The backend to send to.
    pub(crate) target: &'s Arc<BackendSlot>,
    /// The series the call counts in, which names the rule that matched and the backendRef
    /// picked (neither for a pass-through call).
    pub(crate) series: SeriesRef<'s>,
}

/// A call the router refused, with the series it counts in, which says what the router
/// had chosen before refusing (the rule that matched and the backend picked, if any).
#[derive(Debug)]
pub(crate) struct Refusal<'s> {
    /// Boxed: refusals are the rare path, and they allocate their messages anyway.
    pub(crate) error: Box<CallError>,
    pub(crate) series: SeriesRef<'s>,
}

impl From<Refusal<'_>> for CallError {
    fn from(r: Refusal<'_>) -> Self {
        *r.error
    }
}

/// The frontend (Service port) a target names, as seen from `client_namespace`.
pub(crate) fn frontend<'s>(
    table: &'s Table,
    target: &Target,
    client_namespace: &str,
) -> Result<&'s Arc<Frontend>, CallError> {
    let service = match &target.host {
        Host::Service { name, namespace } => {
            let ns = namespace.as_deref().unwrap_or(client_namespace);
            table
                .service(ns, name)
                .ok_or_else(|| CallError::UnknownService {
                    service: format!("{ns}/{name}"),
                })?
        }
        Host::ClusterIp(ip) => {
            table
                .service_by_ip(*ip)
                .ok_or_else(|| CallError::UnknownService {
                    service: format!("with ClusterIP {ip}"),
                })?
        }
        Host::Listener(name) => {
            return Err(CallError::UnknownService {
                service: format!("(xds:///{name} is an xDS listener, not a Service)"),
            });
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
    let refuse = |error, series| Refusal {
        error: Box::new(error),
        series,
    };
    let series = |slot, of| SeriesRef { slot, frontend, of };
    let Some(set) = frontend.route_set(client_namespace) else {
        // No routes: the call proceeds to the Service's own endpoints (GEP-1294).
        return Ok(Decision {
            target: &frontend.passthrough,
            series: series(&frontend.passthrough_series, SeriesOf::Passthrough),
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
            series(&frontend.unmatched_series, SeriesOf::Unmatched),
        ));
    };
    let rule = &candidate.rule;
    let slots = &candidate.series;
    if let Some(detail) = &rule.filters.unsupported {
        return Err(refuse(
            CallError::UnsupportedFilter {
                place: rule.describe(),
                detail: detail.clone(),
            },
            series(&slots.rule, SeriesOf::Rule(rule)),
        ));
    }
    if rule.backends.is_empty() {
        return Err(refuse(
            CallError::NoBackends {
                rule: rule.describe(),
            },
            series(&slots.rule, SeriesOf::Rule(rule)),
        ));
    }
    // `pick_index` is within `backends`, and there is one series slot per backend.
    let picked = rule
        .pick_index(random)
        .and_then(|i| Some((rule.backends.get(i)?, slots.backends.get(i)?)));
    let Some((backend, slot)) = picked else {
        return Err(refuse(
            CallError::AllWeightsZero {
                rule: rule.describe(),
            },
            series(&slots.rule, SeriesOf::Rule(rule)),
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
                series(slot, SeriesOf::Backend(rule, backend)),
            ));
        }
    };
    if let Some(detail) = &backend.filters.unsupported {
        return Err(refuse(
            CallError::UnsupportedFilter {
                place: format!("{} backendRef {}", rule.describe(), backend.describe()),
                detail: detail.clone(),
            },
            series(slot, SeriesOf::Backend(rule, backend)),
        ));
    }
    Ok(Decision {
        target,
        series: series(slot, SeriesOf::Backend(rule, backend)),
    })
}
