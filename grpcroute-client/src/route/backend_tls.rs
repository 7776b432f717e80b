//! BackendTLSPolicies resolved against the Services and ConfigMaps of a [`Model`]: the
//! policy each Service port connects under, with its CA certificates read (or why it
//! cannot be used), and what happened to each policy, for status and `grpcroute check`.
//!
//! Precedence, per Service port: a policy naming the port (`sectionName`) beats one naming
//! the whole Service; between policies equally specific the older one wins
//! (`creationTimestamp`, then `namespace/name`, as the spec says). Objects read from files
//! have no timestamp and sort after every timestamped one. Pure: the same model gives the
//! same result.

use std::{collections::HashMap, sync::Arc};

use crate::{
    model::{
        BackendTlsPolicy, CaBundle, CaCertificates, Model, ObjectKey, Service, SubjectAltName,
    },
    route::{
        BackendKey,
        table::{Condition, ConditionStatus},
    },
};

/// Every Service port a BackendTLSPolicy applies to, and every policy's outcome.
#[derive(Debug, Default)]
pub(crate) struct BackendTlsTable {
    by_port: HashMap<(ObjectKey, u16), Arc<AppliedTls>>,
    /// One per policy of the model, in `namespace/name` order.
    pub(crate) policies: Vec<PolicyOutcome>,
}

/// The policy a Service port connects under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AppliedTls {
    pub(crate) policy: ObjectKey,
    /// The settings, or why the port's calls fail (naming the policy and what is wrong).
    pub(crate) settings: Result<PolicyTls, String>,
}

/// What a valid policy asks of the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PolicyTls {
    /// SNI; also the name verified when `subject_alt_names` is empty.
    pub(crate) hostname: String,
    pub(crate) subject_alt_names: Vec<SubjectAltName>,
    pub(crate) roots: PolicyRoots,
}

/// The roots a server's chain must lead to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PolicyRoots {
    /// The `ca.crt` of each referenced ConfigMap, with the ConfigMap.
    Pem(Vec<(ObjectKey, Arc<str>)>),
    /// The platform's roots (`wellKnownCACertificates: System`).
    System,
}

/// What became of one policy: its `Accepted` and `ResolvedRefs` conditions and the ports it
/// applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PolicyOutcome {
    pub(crate) policy: ObjectKey,
    pub(crate) generation: Option<i64>,
    /// The Services it targets (its status ancestors).
    pub(crate) targets: Vec<ObjectKey>,
    /// The Service ports it won.
    pub(crate) applied: Vec<(ObjectKey, u16)>,
    /// `Accepted`: `Ok` or the reason (`Invalid`, `Conflicted`, `TargetNotFound`,
    /// `NoValidCACertificate`) and message.
    pub(crate) accepted: Result<(), (&'static str, String)>,
    /// `ResolvedRefs`: `Ok` or the reason (`InvalidCACertificateRef`, `InvalidKind`) and
    /// message.
    pub(crate) resolved_refs: Result<(), (&'static str, String)>,
}

/// What became of one BackendTLSPolicy: the conditions its status reports, the Services
/// it targets and the Service ports it applies to.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendTlsPolicyStatus {
    /// The policy.
    pub policy: ObjectKey,
    /// `metadata.generation` of the policy this describes (`observedGeneration`).
    pub generation: Option<i64>,
    /// The Services it targets (its status ancestors).
    pub targets: Vec<ObjectKey>,
    /// The Service ports it applies to: those no policy took precedence on.
    pub applied: Vec<(ObjectKey, u16)>,
    /// `Accepted`, then `ResolvedRefs`.
    pub conditions: Vec<Condition>,
}

impl From<&PolicyOutcome> for BackendTlsPolicyStatus {
    fn from(o: &PolicyOutcome) -> Self {
        let condition =
            |type_: &'static str, r: &Result<(), (&'static str, String)>, ok: &str| match r {
                Ok(()) => Condition {
                    type_,
                    status: ConditionStatus::True,
                    reason: type_.into(),
                    message: ok.into(),
                },
                Err((reason, message)) => Condition {
                    type_,
                    status: ConditionStatus::False,
                    reason: (*reason).into(),
                    message: message.clone(),
                },
            };
        Self {
            policy: o.policy.clone(),
            generation: o.generation,
            targets: o.targets.clone(),
            applied: o.applied.clone(),
            conditions: vec![
                condition("Accepted", &o.accepted, "Policy accepted"),
                condition("ResolvedRefs", &o.resolved_refs, "Resolved all references"),
            ],
        }
    }
}

impl BackendTlsTable {
    /// The policy `key` connects under, if one applies.
    pub(crate) fn get(&self, key: &BackendKey) -> Option<&Arc<AppliedTls>> {
        match key {
            BackendKey::Service { service, port } => self.by_port.get(&(service.clone(), *port)),
            BackendKey::Cluster(_) => None,
        }
    }

    pub(crate) fn compile(model: &Model) -> Self {
        let services: HashMap<&ObjectKey, &Service> =
            model.services.iter().map(|s| (&s.key, &**s)).collect();
        let bundles: HashMap<&ObjectKey, &CaBundle> =
            model.ca_bundles.iter().map(|b| (&b.key, &**b)).collect();

        // A policy targeting no Service (a Gateway's backends, say) is another
        // implementation's: it gets no outcome here, and no status from us.
        let mut order: Vec<&BackendTlsPolicy> = model
            .tls_policies
            .iter()
            .map(|p| &**p)
            .filter(|p| !p.targets.is_empty())
            .collect();
        order.sort_by(|a, b| {
            (a.created.is_none(), &a.created, &a.key).cmp(&(
                b.created.is_none(),
                &b.created,
                &b.key,
            ))
        });

        let mut outcomes: HashMap<&ObjectKey, Resolution> = HashMap::new();
        for policy in &order {
            outcomes.insert(&policy.key, Resolution::new(policy, &bundles));
        }

        let mut table = Self::default();
        // Port-specific targets first, so they win over whole-Service ones.
        for specific in [true, false] {
            for policy in &order {
                let Some(res) = outcomes.get_mut(&policy.key) else {
                    continue;
                };
                for target in policy
                    .targets
                    .iter()
                    .filter(|t| t.section_name.is_some() == specific)
                {
                    let key = ObjectKey::new(policy.key.namespace(), target.service.as_str());
                    let Some(svc) = services.get(&key) else {
                        res.not_found.push(format!("Service {key} not found"));
                        continue;
                    };
                    let ports: Vec<u16> = match &target.section_name {
                        Some(name) => match svc.port_named(name) {
                            Some(p) => vec![p.port],
                            None => {
                                res.not_found
                                    .push(format!("Service {key} has no port named {name:?}"));
                                continue;
                            }
                        },
                        None => svc.ports.iter().map(|p| p.port).collect(),
                    };
                    res.found = true;
                    for port in ports {
                        match table.by_port.entry((key.clone(), port)) {
                            std::collections::hash_map::Entry::Vacant(e) => {
                                e.insert(res.applied.clone());
                                res.won.push((key.clone(), port));
                            }
                            std::collections::hash_map::Entry::Occupied(e) => {
                                res.lost.push(format!(
                                    "{key}:{port} uses BackendTLSPolicy {}, which takes precedence",
                                    e.get().policy
                                ));
                            }
                        }
                    }
                }
            }
        }

        let mut policies: Vec<PolicyOutcome> = order
            .iter()
            .filter_map(|p| Some(outcomes.remove(&p.key)?.outcome(p)))
            .collect();
        policies.sort_by(|a, b| a.policy.cmp(&b.policy));
        table.policies = policies;
        table
    }
}

/// One policy while it is being resolved.
struct Resolution {
    applied: Arc<AppliedTls>,
    invalid: Option<String>,
    resolved_refs: Result<(), (&'static str, String)>,
    /// Every CA reference failed.
    no_valid_ca: bool,
    found: bool,
    not_found: Vec<String>,
    won: Vec<(ObjectKey, u16)>,
    lost: Vec<String>,
}

impl Resolution {
    fn new(policy: &BackendTlsPolicy, bundles: &HashMap<&ObjectKey, &CaBundle>) -> Self {
        let mut resolved_refs = Ok(());
        let mut no_valid_ca = false;
        let mut invalid = None;
        let settings = match &policy.validation {
            Err(problem) => {
                let message = format!("{}: {}", problem.field, problem.message);
                invalid = Some(message.clone());
                Err(format!(
                    "BackendTLSPolicy {} is invalid: {message}",
                    policy.key
                ))
            }
            Ok(v) => {
                let roots = match &v.ca {
                    CaCertificates::System => Ok(PolicyRoots::System),
                    CaCertificates::Refs(refs) => {
                        let mut pems = Vec::new();
                        let mut errors: Vec<(&'static str, String)> = Vec::new();
                        for (i, r) in refs.iter().enumerate() {
                            let field = format!("validation.caCertificateRefs[{i}]");
                            if !r.is_config_map() {
                                let kind = if r.group.is_empty() {
                                    r.kind.clone()
                                } else {
                                    format!("{}.{}", r.kind, r.group)
                                };
                                errors.push((
                                    "InvalidKind",
                                    format!(
                                        "{field}: kind {kind} is not supported (only ConfigMap is)"
                                    ),
                                ));
                                continue;
                            }
                            let key = ObjectKey::new(policy.key.namespace(), r.name.as_str());
                            match bundles.get(&key).map(|b| b.ca_crt.as_ref()) {
                                None => errors.push((
                                    "InvalidCACertificateRef",
                                    format!("{field}: ConfigMap {key} not found"),
                                )),
                                Some(None) => errors.push((
                                    "InvalidCACertificateRef",
                                    format!(
                                        "{field}: ConfigMap {key} has no key {:?}",
                                        crate::convert::CA_CRT
                                    ),
                                )),
                                Some(Some(pem)) if !pem.contains("-----BEGIN CERTIFICATE-----") => {
                                    errors.push((
                                        "InvalidCACertificateRef",
                                        format!(
                                            "{field}: {:?} of ConfigMap {key} holds no PEM certificate",
                                            crate::convert::CA_CRT
                                        ),
                                    ));
                                }
                                Some(Some(pem)) => pems.push((key, pem.clone())),
                            }
                        }
                        no_valid_ca = pems.is_empty();
                        if errors.is_empty() {
                            Ok(PolicyRoots::Pem(pems))
                        } else {
                            let messages: Vec<&str> =
                                errors.iter().map(|(_, m)| m.as_str()).collect();
                            let message = messages.join("; ");
                            resolved_refs = Err((errors[0].0, message.clone()));
                            // The spec: connections using an invalid reference fail.
                            Err(format!("BackendTLSPolicy {}: {message}", policy.key))
                        }
                    }
                };
                roots.map(|roots| PolicyTls {
                    hostname: v.hostname.clone(),
                    subject_alt_names: v.subject_alt_names.clone(),
                    roots,
                })
            }
        };
        Self {
            applied: Arc::new(AppliedTls {
                policy: policy.key.clone(),
                settings,
            }),
            invalid,
            resolved_refs,
            no_valid_ca,
            found: false,
            not_found: Vec::new(),
            won: Vec::new(),
            lost: Vec::new(),
        }
    }

    fn outcome(self, policy: &BackendTlsPolicy) -> PolicyOutcome {
        let accepted = if let Some(message) = self.invalid {
            Err(("Invalid", message))
        } else if !self.found {
            Err(("TargetNotFound", self.not_found.join("; ")))
        } else if self.won.is_empty() {
            Err(("Conflicted", self.lost.join("; ")))
        } else if self.no_valid_ca && self.resolved_refs.is_err() {
            Err((
                "NoValidCACertificate",
                "no caCertificateRefs entry could be used".into(),
            ))
        } else {
            Ok(())
        };
        let mut targets: Vec<ObjectKey> = Vec::new();
        for t in &policy.targets {
            let key = ObjectKey::new(policy.key.namespace(), t.service.as_str());
            if !targets.contains(&key) {
                targets.push(key);
            }
        }
        PolicyOutcome {
            policy: policy.key.clone(),
            generation: policy.generation,
            targets,
            applied: self.won,
            accepted,
            resolved_refs: self.resolved_refs,
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::model::{AppProtocol, CaRef, PolicyTarget, ServicePort, ServiceType, TlsValidation};

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn service(name: &str, ports: &[(&str, u16)]) -> Arc<Service> {
        Arc::new(Service {
            key: ObjectKey::new("shop", name),
            service_type: ServiceType::ClusterIp,
            cluster_ips: Vec::new(),
            ip_family: None,
            ports: ports
                .iter()
                .map(|(n, p)| ServicePort {
                    name: (*n).into(),
                    port: *p,
                    app_protocol: AppProtocol::Compatible,
                })
                .collect(),
        })
    }

    fn policy(
        name: &str,
        created: Option<&str>,
        section: Option<&str>,
        ca: &str,
    ) -> Arc<BackendTlsPolicy> {
        Arc::new(BackendTlsPolicy {
            key: ObjectKey::new("shop", name),
            created: created.map(|t| Time(t.parse().unwrap())),
            generation: Some(1),
            targets: vec![PolicyTarget {
                service: "cart".into(),
                section_name: section.map(Into::into),
            }],
            validation: Ok(TlsValidation {
                ca: CaCertificates::Refs(vec![CaRef {
                    group: String::new(),
                    kind: "ConfigMap".into(),
                    name: ca.into(),
                }]),
                hostname: format!("{name}.example.com"),
                subject_alt_names: Vec::new(),
            }),
        })
    }

    fn bundle(name: &str, pem: Option<&str>) -> Arc<CaBundle> {
        Arc::new(CaBundle {
            key: ObjectKey::new("shop", name),
            ca_crt: pem.map(Into::into),
        })
    }

    fn cart(port: u16) -> BackendKey {
        BackendKey::Service {
            service: ObjectKey::new("shop", "cart"),
            port,
        }
    }

    fn winner(table: &BackendTlsTable, port: u16) -> String {
        table.get(&cart(port)).unwrap().policy.name().to_string()
    }

    #[test]
    fn the_oldest_policy_wins_then_the_first_by_name_and_the_others_are_conflicted() {
        let model = Model {
            services: vec![service("cart", &[("grpc", 50051)])],
            ca_bundles: vec![bundle("ca", Some(PEM))],
            tls_policies: vec![
                policy("b-newer", Some("2026-01-02T00:00:00Z"), None, "ca"),
                policy("z-oldest", Some("2026-01-01T00:00:00Z"), None, "ca"),
                policy("a-file", None, None, "ca"),
            ],
            ..Model::default()
        };
        let table = BackendTlsTable::compile(&model);
        assert_eq!(winner(&table, 50051), "z-oldest");
        let by_name: HashMap<&str, &PolicyOutcome> = table
            .policies
            .iter()
            .map(|o| (o.policy.name(), o))
            .collect();
        assert_eq!(by_name["z-oldest"].accepted, Ok(()));
        for loser in ["b-newer", "a-file"] {
            let (reason, message) = by_name[loser].accepted.clone().unwrap_err();
            assert_eq!(reason, "Conflicted");
            assert!(message.contains("shop/z-oldest"), "{message}");
        }

        // Same timestamp: namespace/name decides. No timestamps at all: the name does.
        let model = Model {
            tls_policies: vec![
                policy("b", Some("2026-01-01T00:00:00Z"), None, "ca"),
                policy("a", Some("2026-01-01T00:00:00Z"), None, "ca"),
            ],
            ..model.clone()
        };
        assert_eq!(winner(&BackendTlsTable::compile(&model), 50051), "a");
    }

    #[test]
    fn a_port_named_by_section_name_beats_a_policy_for_the_whole_service() {
        let model = Model {
            services: vec![service("cart", &[("grpc", 50051), ("admin", 9000)])],
            ca_bundles: vec![bundle("ca", Some(PEM))],
            tls_policies: vec![
                policy("whole", Some("2026-01-01T00:00:00Z"), None, "ca"),
                policy(
                    "grpc-only",
                    Some("2026-01-02T00:00:00Z"),
                    Some("grpc"),
                    "ca",
                ),
            ],
            ..Model::default()
        };
        let table = BackendTlsTable::compile(&model);
        assert_eq!(winner(&table, 50051), "grpc-only");
        assert_eq!(winner(&table, 9000), "whole");
        assert!(table.policies.iter().all(|o| o.accepted.is_ok()));
    }

    #[test]
    fn a_missing_config_map_or_ca_crt_makes_the_port_fail_naming_policy_and_config_map() {
        let model = Model {
            services: vec![service("cart", &[("grpc", 50051)])],
            ca_bundles: vec![bundle("empty", None)],
            tls_policies: vec![policy("p", None, None, "gone")],
            ..Model::default()
        };
        let table = BackendTlsTable::compile(&model);
        let err = table
            .get(&cart(50051))
            .unwrap()
            .settings
            .clone()
            .unwrap_err();
        assert!(err.contains("BackendTLSPolicy shop/p"), "{err}");
        assert!(err.contains("ConfigMap shop/gone not found"), "{err}");
        let outcome = &table.policies[0];
        assert_eq!(
            outcome.resolved_refs.as_ref().unwrap_err().0,
            "InvalidCACertificateRef"
        );
        assert_eq!(
            outcome.accepted.as_ref().unwrap_err().0,
            "NoValidCACertificate"
        );

        let model = Model {
            tls_policies: vec![policy("p", None, None, "empty")],
            ..model
        };
        let table = BackendTlsTable::compile(&model);
        let err = table
            .get(&cart(50051))
            .unwrap()
            .settings
            .clone()
            .unwrap_err();
        assert!(
            err.contains("ConfigMap shop/empty has no key \"ca.crt\""),
            "{err}"
        );
    }

    #[test]
    fn a_policy_for_no_service_is_not_ours() {
        let mut gateway_only = (*policy("gw", None, None, "ca")).clone();
        gateway_only.targets.clear();
        let model = Model {
            services: vec![service("cart", &[("grpc", 50051)])],
            tls_policies: vec![Arc::new(gateway_only)],
            ..Model::default()
        };
        let table = BackendTlsTable::compile(&model);
        assert!(table.policies.is_empty());
        assert!(table.get(&cart(50051)).is_none());
    }

    #[test]
    fn a_missing_target_or_port_name_is_target_not_found() {
        let model = Model {
            services: vec![service("cart", &[("grpc", 50051)])],
            ca_bundles: vec![bundle("ca", Some(PEM))],
            tls_policies: vec![policy("p", None, Some("nope"), "ca")],
            ..Model::default()
        };
        let table = BackendTlsTable::compile(&model);
        assert!(table.get(&cart(50051)).is_none());
        let (reason, message) = table.policies[0].accepted.clone().unwrap_err();
        assert_eq!(reason, "TargetNotFound");
        assert!(message.contains("no port named \"nope\""), "{message}");
    }
}
