//! The status a GAMMA implementation reports on each GRPCRoute (`status.parents[]`), derived
//! from the same compilation that routes calls, so what `check` prints is what happens.

use std::{fmt, sync::Arc};

use super::{CompiledRule, InvalidBackend};
use crate::{
    model::{GrpcRoute, ObjectKey, ParentRef},
    model::{InvalidObject, ObjectKind},
};

/// The status of one GRPCRoute, for each of its Service parentRefs.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteStatus {
    /// The route.
    pub route: ObjectKey,
    /// `metadata.generation` of the route this status describes (`observedGeneration`).
    pub generation: Option<i64>,
    /// One entry per parentRef that is a Service. Parents of other kinds (Gateways) are
    /// not this implementation's and get no entry, as the spec asks.
    pub parents: Vec<ParentStatus>,
}

/// The conditions for one parentRef.
#[derive(Clone, Debug, PartialEq)]
pub struct ParentStatus {
    /// The parentRef as written in the route.
    pub parent_ref: ParentReference,
    /// `Accepted`, then `ResolvedRefs` (absent when the route was rejected outright).
    pub conditions: Vec<Condition>,
}

/// A parentRef, with the optional fields as the route wrote them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentReference {
    /// API group (`""` for Service).
    pub group: String,
    /// Kind (`Service`).
    pub kind: String,
    /// Namespace, if the route named one.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// Port, if the route named one.
    pub port: Option<u16>,
    /// Port name (`sectionName`), if the route named one.
    pub section_name: Option<String>,
}

/// One condition, as in `metav1.Condition`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    /// `Accepted` or `ResolvedRefs`.
    pub type_: &'static str,
    /// Whether the condition holds.
    pub status: ConditionStatus,
    /// A CamelCase reason from the Gateway API (`Accepted`, `NoMatchingParent`,
    /// `BackendNotFound`, ...).
    pub reason: String,
    /// A human-readable explanation.
    pub message: String,
}

/// `True`, `False` or `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// It does not.
    False,
    /// Not yet known.
    Unknown,
}

impl fmt::Display for ConditionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        })
    }
}

impl Condition {
    /// A condition that holds (`ok`) or not, with its reason and message.
    pub fn new(
        type_: &'static str,
        ok: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status: if ok {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            },
            reason: reason.into(),
            message: message.into(),
        }
    }
}

impl From<&ParentRef> for ParentReference {
    fn from(p: &ParentRef) -> Self {
        Self {
            group: p.group.clone(),
            kind: p.kind.clone(),
            namespace: p.namespace_explicit.then(|| p.namespace.clone()),
            name: p.name.clone(),
            port: p.port,
            section_name: p.section_name.clone(),
        }
    }
}

pub(super) enum ParentOutcome {
    Attached { service: ObjectKey, ports: Vec<u16> },
    NoMatchingParent(String),
}

/// The statuses of the accepted routes (`accepted`, from [`accepted_route`]) and of the
/// rejected ones, sorted by route.
pub(super) fn compute(mut out: Vec<RouteStatus>, rejected: &[InvalidObject]) -> Vec<RouteStatus> {
    for invalid in rejected
        .iter()
        .filter(|i| i.kind() == ObjectKind::GrpcRoute)
    {
        let parents = invalid
            .parent_refs()
            .iter()
            .filter(|p| p.is_service())
            .map(|p| ParentStatus {
                parent_ref: p.into(),
                conditions: vec![Condition::new(
                    "Accepted",
                    false,
                    invalid.reason(),
                    format!("{}: {}", invalid.field(), invalid.message()),
                )],
            })
            .collect();
        out.push(RouteStatus {
            route: invalid.key().clone(),
            generation: invalid.generation(),
            parents,
        });
    }
    out.sort_by(|a, b| a.route.cmp(&b.route));
    out
}

/// The status of a route that compiled to `rules` and attached as `parents` say.
pub(super) fn accepted_route(
    route: &GrpcRoute,
    rules: &[Arc<CompiledRule>],
    parents: &[(ParentRef, ParentOutcome)],
) -> RouteStatus {
    let resolved = resolved_refs(rules);
    let unsupported: Vec<String> = rules
        .iter()
        .filter_map(|r| {
            r.filters
                .unsupported
                .as_ref()
                .map(|why| format!("{}: {why}", r.describe()))
        })
        .collect();
    let all_unsupported = !rules.is_empty() && unsupported.len() == rules.len();

    let parents = parents
        .iter()
        .map(|(parent, outcome)| {
            let accepted = match outcome {
                ParentOutcome::NoMatchingParent(why) => {
                    Condition::new("Accepted", false, "NoMatchingParent", why.clone())
                }
                ParentOutcome::Attached { .. } if all_unsupported => Condition::new(
                    "Accepted",
                    false,
                    "IncompatibleFilters",
                    format!(
                        "every rule has a filter this client cannot apply: {}",
                        unsupported.join("; ")
                    ),
                ),
                ParentOutcome::Attached { service, ports } => {
                    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
                    let mut message =
                        format!("attached to Service {service} port(s) {}", ports.join(", "));
                    if !unsupported.is_empty() {
                        message.push_str(&format!(
                            "; calls reaching these rules fail UNAVAILABLE: {}",
                            unsupported.join("; ")
                        ));
                    }
                    Condition::new("Accepted", true, "Accepted", message)
                }
            };
            ParentStatus {
                parent_ref: parent.into(),
                conditions: vec![accepted, resolved.clone()],
            }
        })
        .collect();
    RouteStatus {
        route: route.key.clone(),
        generation: route.generation,
        parents,
    }
}

fn resolved_refs(rules: &[Arc<CompiledRule>]) -> Condition {
    let mut problems: Vec<(&InvalidBackend, String)> = Vec::new();
    for rule in rules {
        let mirrors = rule
            .filters
            .mirrors
            .iter()
            .chain(rule.backends.iter().flat_map(|b| &b.filters.mirrors));
        for b in rule.backends.iter() {
            if let Err(e) = &b.target {
                problems.push((
                    e,
                    format!("{} backendRef {}", rule.describe(), b.describe()),
                ));
            }
        }
        for m in mirrors {
            if let Err(e) = &m.target {
                problems.push((e, format!("{} RequestMirror backendRef", rule.describe())));
            }
        }
    }
    match problems.first() {
        None => Condition::new(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "all references resolved",
        ),
        Some((first, _)) => {
            let message = problems
                .iter()
                .map(|(e, place)| format!("{place}: {}", e.message))
                .collect::<Vec<_>>()
                .join("; ");
            Condition::new("ResolvedRefs", false, first.reason, message)
        }
    }
}
