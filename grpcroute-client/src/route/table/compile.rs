//! [`Model`] → [`Table`].

use std::{cmp::Reverse, collections::HashMap, sync::Arc};

use super::{
    BackendSlot, Candidate, CompiledBackend, CompiledMirror, CompiledRule, FastMap, Filters,
    Frontend, InvalidBackend, RouteSet, RouteSetKind, RuleSeries, ServiceEntry, Table,
    memo::{Memo, PortRoutes, RouteMemo, Rules},
    status::{self, ParentOutcome},
};
use crate::{
    model::{
        AppProtocol, BackendRef, Filter, GrpcRoute, Model, ObjectKey, ParentRef, ReferenceGrant,
        Rule, Service, ServiceType,
    },
    route::BackendKey,
    series::SeriesSlot,
};

/// Whether cross-namespace backendRefs need a ReferenceGrant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum GrantPolicy {
    /// GEP-1294: mesh routes may send to any namespace without a grant (the default).
    #[default]
    Permissive,
    /// Every cross-namespace backendRef needs a ReferenceGrant in the backend's namespace;
    /// removing the grant revokes access at the next configuration update.
    Strict,
}

/// Builds the routing table. Pure: the same model gives the same table, whatever
/// `previous` is.
///
/// `previous`, the table in force, only saves work: the routes, statuses and frontends it
/// compiled from the same inputs are reused instead of compiled again (see
/// [`memo`](super::memo)), so a change to one route costs about that route and the
/// frontends it attaches to.
pub(crate) fn compile(model: &Model, policy: GrantPolicy, previous: Option<&Table>) -> Table {
    let mut cx = Context::new(model, policy);
    let reuse = previous.filter(|p| p.memo.reusable_for(model, policy));
    let mut memo = Memo::new(model, policy);

    // Rules are compiled once per route and shared by every frontend the route attaches to.
    let routes: Vec<RouteMemo> = model
        .routes
        .iter()
        .map(|route| match reuse.and_then(|p| p.memo.route(route)) {
            Some(kept) => RouteMemo {
                route: route.clone(),
                ..kept.clone()
            },
            None => {
                let rules: Rules = route
                    .rules
                    .iter()
                    .enumerate()
                    .map(|(i, rule)| Arc::new(cx.rule(route, i, rule)))
                    .collect();
                let parents: Arc<[(ParentRef, ParentOutcome)]> = route
                    .parent_refs
                    .iter()
                    .filter(|p| p.is_service())
                    .map(|p| (p.clone(), cx.attach(p)))
                    .collect();
                let status = status::accepted_route(route, &rules, &parents);
                RouteMemo {
                    route: route.clone(),
                    rules,
                    parents,
                    status,
                }
            }
        })
        .collect();

    // Which routes attach to which (Service, port), and as producer or consumer.
    let mut attachments: HashMap<(ObjectKey, u16), PortRoutes> = HashMap::new();
    for RouteMemo {
        route,
        rules,
        parents,
        ..
    } in &routes
    {
        for (_, outcome) in parents.iter() {
            if let ParentOutcome::Attached { service, ports } = outcome {
                for port in ports {
                    let entry = attachments.entry((service.clone(), *port)).or_default();
                    let list = if route.key.namespace() == service.namespace() {
                        &mut entry.producer
                    } else {
                        entry
                            .consumers
                            .entry(route.key.namespace().into())
                            .or_default()
                    };
                    // A route attached twice to one port (by port and by sectionName) counts once.
                    if !list.iter().any(|(r, _)| Arc::ptr_eq(r, route)) {
                        list.push((route.clone(), rules.clone()));
                    }
                }
            }
        }
    }

    // Frontends: every port of every Service. One whose routes are the ones the previous
    // table built it from is that table's frontend (its series slots included: they name
    // the same series).
    let mut services: FastMap<Box<str>, FastMap<Box<str>, ServiceEntry>> = FastMap::default();
    let mut cluster_ips = FastMap::default();
    let all_services: Vec<&Service> = cx.services.values().copied().collect();
    for svc in all_services {
        let mut ports = Vec::with_capacity(svc.ports.len());
        for port in &svc.ports {
            let key = (svc.key.clone(), port.port);
            let routes = attachments.remove(&key).unwrap_or_default();
            let kept = reuse.and_then(|p| {
                p.memo
                    .frontends
                    .get(&key)
                    .filter(|built_from| built_from.same_as(&routes))?;
                p.service(svc.key.namespace(), svc.key.name())?
                    .frontend(port.port)
                    .cloned()
            });
            let frontend = match kept {
                Some(frontend) => frontend,
                None => Arc::new(Frontend {
                    service: svc.key.clone(),
                    port: port.port,
                    producer: (!routes.producer.is_empty())
                        .then(|| Arc::new(route_set(RouteSetKind::Producer, &routes.producer))),
                    consumers: routes
                        .consumers
                        .iter()
                        .map(|(ns, list)| {
                            (
                                ns.clone(),
                                Arc::new(route_set(RouteSetKind::Consumer, list)),
                            )
                        })
                        .collect(),
                    passthrough: cx.target(svc, port.port),
                    passthrough_series: SeriesSlot::default(),
                    unmatched_series: SeriesSlot::default(),
                }),
            };
            memo.frontends.insert(key, routes);
            ports.push((port.port, frontend));
        }
        for ip in &svc.cluster_ips {
            cluster_ips.insert(*ip, svc.key.clone());
        }
        services
            .entry(svc.key.namespace().into())
            .or_default()
            .insert(
                svc.key.name().into(),
                ServiceEntry {
                    key: svc.key.clone(),
                    ports,
                },
            );
    }

    let statuses = status::compute(
        routes.iter().map(|r| r.status.clone()).collect(),
        &model.rejected,
    );
    memo.routes = routes
        .into_iter()
        .map(|r| (r.route.key.clone(), r))
        .collect();

    Table {
        services,
        cluster_ips,
        statuses,
        rejected: model.rejected.clone(),
        backends: cx.backends,
        backend_tls: crate::route::backend_tls::BackendTlsTable::compile(model),
        memo,
    }
}

/// Orders every match of every rule of the set by the spec's precedence, continuing on
/// ties: characters of service, characters of method, number of header matches (all
/// larger first), then the oldest route, then `{namespace}/{name}`, then rule order (and
/// match order, which never changes the outcome since matches of one rule share a target).
fn route_set(kind: RouteSetKind, routes: &[(Arc<GrpcRoute>, Rules)]) -> RouteSet {
    let mut keyed = Vec::new();
    for (route, rules) in routes {
        for rule in rules.iter() {
            let series = Arc::new(RuleSeries::new(rule));
            let source = &route.rules[rule.index];
            for (m, matcher) in source.matches.iter().enumerate() {
                let key = (
                    Reverse(matcher.service_len()),
                    Reverse(matcher.method_len()),
                    Reverse(matcher.headers.len()),
                    // A route with no creation time (a manifest, code) counts as the newest.
                    route.created.unwrap_or(i64::MAX),
                    route.key.clone(),
                    rule.index,
                    m,
                );
                keyed.push((
                    key,
                    Candidate {
                        matcher: Arc::new(matcher.clone()),
                        rule: rule.clone(),
                        service_indexed: false,
                        series: series.clone(),
                    },
                ));
            }
        }
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let ordered: Vec<Candidate> = keyed.into_iter().map(|(_, c)| c).collect();

    let generic: Box<[Candidate]> = ordered
        .iter()
        .filter(|c| exact_service(c).is_none())
        .cloned()
        .collect();
    let mut by_service: FastMap<Box<str>, Box<[Candidate]>> = FastMap::default();
    for service in ordered.iter().filter_map(exact_service) {
        if by_service.contains_key(service) {
            continue;
        }
        let list = ordered
            .iter()
            .filter(|c| exact_service(c).is_none_or(|s| s == service))
            .map(|c| Candidate {
                service_indexed: exact_service(c).is_some(),
                ..c.clone()
            })
            .collect();
        by_service.insert(service.into(), list);
    }
    let routes_label = routes
        .iter()
        .map(|(r, _)| r.key.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    RouteSet {
        kind,
        routes_label: routes_label.into(),
        by_service,
        generic,
    }
}

fn exact_service(c: &Candidate) -> Option<&str> {
    c.matcher.method.as_ref().and_then(|m| m.exact_service())
}

struct Context<'a> {
    policy: GrantPolicy,
    services: HashMap<ObjectKey, &'a Service>,
    grants: HashMap<&'a str, Vec<&'a ReferenceGrant>>,
    targets: HashMap<(ObjectKey, u16), Arc<BackendSlot>>,
    backends: Vec<BackendKey>,
}

impl<'a> Context<'a> {
    fn new(model: &'a Model, policy: GrantPolicy) -> Self {
        let mut services = HashMap::new();
        for svc in &model.services {
            services.insert(svc.key.clone(), &**svc);
        }
        let mut grants: HashMap<&str, Vec<&ReferenceGrant>> = HashMap::new();
        for grant in &model.grants {
            grants.entry(grant.key.namespace()).or_default().push(grant);
        }
        let mut cx = Self {
            policy,
            services,
            grants,
            targets: HashMap::new(),
            backends: Vec::new(),
        };
        // Every port of every Service gets its slot up front, in the model's order: slot
        // ids then depend on the Services alone, not on which routes name them first, so
        // a table that reuses rules compiled by the previous one (whose slots carry those
        // ids) is the table a fresh compile would build.
        for svc in &model.services {
            if cx
                .services
                .get(&svc.key)
                .is_some_and(|kept| std::ptr::eq(*kept, &**svc))
            {
                for port in &svc.ports {
                    cx.target(svc, port.port);
                }
            }
        }
        cx
    }

    fn rule(&mut self, route: &GrpcRoute, index: usize, rule: &Rule) -> CompiledRule {
        let filters = self.filters(route, &rule.filters);
        let backends: Box<[CompiledBackend]> = rule
            .backends
            .iter()
            .map(|b| CompiledBackend {
                namespace: b.namespace.as_str().into(),
                name: b.name.as_str().into(),
                port: b.port,
                weight: b.weight,
                target: self.resolve(route, b),
                filters: self.filters(route, &b.filters),
            })
            .collect();
        let mut sum = 0u64;
        let cumulative = if backends.iter().all(|b| b.weight == 0) {
            Box::default()
        } else {
            backends
                .iter()
                .map(|b| {
                    sum += u64::from(b.weight);
                    sum
                })
                .collect()
        };
        CompiledRule {
            route: route.key.clone(),
            index,
            name: rule.name.as_deref().map(Arc::from),
            filters,
            backends,
            cumulative,
        }
    }

    fn filters(&mut self, route: &GrpcRoute, filters: &[Filter]) -> Filters {
        let mut out = Filters::default();
        for filter in filters {
            match filter {
                Filter::RequestHeaders(m) => out.request_headers = Some(m.clone()),
                Filter::ResponseHeaders(m) => out.response_headers = Some(m.clone()),
                Filter::Mirror(m) => out.mirrors.push(CompiledMirror {
                    numerator: m.numerator,
                    denominator: m.denominator,
                    target: self.resolve(route, &m.backend),
                }),
                Filter::Unsupported { detail, .. } => {
                    out.unsupported.get_or_insert_with(|| detail.clone());
                }
            }
        }
        out
    }

    /// Resolves a backendRef to the Service port it names, or says why it cannot take
    /// traffic (the `ResolvedRefs` reasons).
    fn resolve(
        &mut self,
        route: &GrpcRoute,
        b: &BackendRef,
    ) -> Result<Arc<BackendSlot>, InvalidBackend> {
        let invalid = |reason, message: String| Err(InvalidBackend { reason, message });
        if !b.is_service() {
            let kind = if b.group.is_empty() {
                b.kind.clone()
            } else {
                format!("{}.{}", b.kind, b.group)
            };
            return invalid(
                "InvalidKind",
                format!("backendRef kind {kind} is not supported (only core Services are)"),
            );
        }
        let Some(port) = b.port else {
            return invalid(
                "BackendNotFound",
                format!(
                    "backendRef to Service {}/{} has no port",
                    b.namespace, b.name
                ),
            );
        };
        if b.namespace != route.key.namespace()
            && self.policy == GrantPolicy::Strict
            && !self.granted(route.key.namespace(), &b.namespace, &b.name)
        {
            return invalid(
                "RefNotPermitted",
                format!(
                    "no ReferenceGrant in namespace {} allows GRPCRoutes from {} to reach Service {}",
                    b.namespace,
                    route.key.namespace(),
                    b.name
                ),
            );
        }
        let key = ObjectKey::new(b.namespace.as_str(), b.name.as_str());
        let Some(svc) = self.services.get(&key).copied() else {
            return invalid("BackendNotFound", format!("Service {key} not found"));
        };
        if svc.service_type == ServiceType::ExternalName {
            return invalid(
                "InvalidKind",
                format!("Service {key} is an ExternalName Service, which cannot be a backend"),
            );
        }
        let Some(svc_port) = svc.port(port) else {
            return invalid(
                "BackendNotFound",
                format!("Service {key} has no port {port}"),
            );
        };
        if let AppProtocol::Unsupported(proto) = &svc_port.app_protocol {
            return invalid(
                "UnsupportedProtocol",
                format!(
                    "port {port} of Service {key} has appProtocol {proto:?}, which cannot carry gRPC"
                ),
            );
        }
        Ok(self.target(svc, port))
    }

    fn granted(&self, from_namespace: &str, to_namespace: &str, service: &str) -> bool {
        self.grants.get(to_namespace).is_some_and(|grants| {
            grants
                .iter()
                .any(|g| g.permits_route_to_service(from_namespace, service))
        })
    }

    /// The slot of Service `svc` at `port`, shared by everything that sends there.
    fn target(&mut self, svc: &Service, port: u16) -> Arc<BackendSlot> {
        let key = (svc.key.clone(), port);
        if let Some(t) = self.targets.get(&key) {
            return t.clone();
        }
        let slot = Arc::new(BackendSlot {
            id: self.backends.len(),
            service: svc.key.clone(),
            port,
        });
        self.backends.push(BackendKey::Service {
            service: svc.key.clone(),
            port,
        });
        self.targets.insert(key, slot.clone());
        slot
    }

    /// Resolves a Service parentRef to the ports it attaches to.
    fn attach(&self, parent: &crate::model::ParentRef) -> ParentOutcome {
        let key = ObjectKey::new(parent.namespace.as_str(), parent.name.as_str());
        let Some(svc) = self.services.get(&key) else {
            return ParentOutcome::NoMatchingParent(format!("Service {key} not found"));
        };
        match svc.service_type {
            ServiceType::Headless => {
                return ParentOutcome::NoMatchingParent(format!(
                    "Service {key} is headless and has no frontend to attach to"
                ));
            }
            ServiceType::ExternalName => {
                return ParentOutcome::NoMatchingParent(format!(
                    "Service {key} is an ExternalName Service, which cannot be a parent"
                ));
            }
            _ => {}
        }
        let by_port = parent.port.map(|p| svc.port(p));
        let by_name = parent.section_name.as_deref().map(|n| svc.port_named(n));
        let ports = match (by_port, by_name) {
            (None, None) => svc.ports.iter().map(|p| p.port).collect(),
            (Some(None), _) => {
                return ParentOutcome::NoMatchingParent(format!(
                    "Service {key} has no port {}",
                    parent.port.unwrap_or_default()
                ));
            }
            (_, Some(None)) => {
                return ParentOutcome::NoMatchingParent(format!(
                    "Service {key} has no port named {:?}",
                    parent.section_name.as_deref().unwrap_or_default()
                ));
            }
            (Some(Some(a)), Some(Some(b))) if a.port != b.port => {
                return ParentOutcome::NoMatchingParent(format!(
                    "port {} and sectionName {:?} name different ports of Service {key}",
                    a.port, b.name
                ));
            }
            (Some(Some(p)), _) | (None, Some(Some(p))) => vec![p.port],
        };
        ParentOutcome::Attached {
            service: key,
            ports,
        }
    }
}
