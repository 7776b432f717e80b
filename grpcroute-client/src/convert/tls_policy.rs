//! BackendTLSPolicy and ConfigMap → model.
//!
//! A policy whose targets can be read is kept even when its `validation` is wrong: it
//! still claims its Service ports, whose calls then fail naming the problem, rather than
//! fall back to plaintext (the spec: connections with an invalid policy must fail). The
//! same holds for a policy whose spec does not decode at all (a value of a newer Gateway
//! API release): if its `targetRefs` do, it is kept as an invalid policy naming the field
//! ([`undecodable_backend_tls_policy`]), besides being rejected.

use std::sync::Arc;

use gateway_api::backendtlspolicies::{
    BackendTlsPolicy as RawPolicy, BackendTlsPolicyTargetRefs as RawTarget,
    BackendTlsPolicyValidationSubjectAltNamesType as SanType,
};
use k8s_openapi::{api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use serde::Deserialize;
use serde_json::Value;

use super::{InvalidObject, ObjectKind, is_dns_label, is_dns_subdomain, object_key};
use crate::model::{
    BackendTlsPolicy, CaBundle, CaCertificates, CaRef, ObjectKey, PolicyProblem, PolicyTarget,
    SubjectAltName, TlsValidation,
};

/// The ConfigMap key a CA bundle is read from (the spec's Core support).
pub(crate) const CA_CRT: &str = "ca.crt";

pub(crate) fn backend_tls_policy(
    raw: &RawPolicy,
    default_namespace: &str,
) -> Result<BackendTlsPolicy, InvalidObject> {
    let key = object_key(
        ObjectKind::BackendTlsPolicy,
        &raw.metadata,
        default_namespace,
    )?;
    let targets = targets(&raw.spec.target_refs, &key)?;
    Ok(BackendTlsPolicy {
        key,
        created: raw.metadata.creation_timestamp.clone(),
        generation: raw.metadata.generation,
        targets,
        validation: validation(raw),
    })
}

/// The policy a BackendTLSPolicy whose spec did not decode (`field`: `message`, e.g. a
/// SAN `type` of a newer Gateway API release) still is for its targets, when its
/// `spec.targetRefs` decode on their own: invalid, naming that field, so that its targets'
/// connections fail as for any invalid policy instead of going out in plaintext. `None`
/// when the targets cannot be read, or name no valid Service: there is nothing to claim.
pub(crate) fn undecodable_backend_tls_policy(
    metadata: &ObjectMeta,
    spec: &Value,
    key: &ObjectKey,
    field: &str,
    message: &str,
) -> Option<BackendTlsPolicy> {
    let refs = Vec::<RawTarget>::deserialize(spec.get("targetRefs")?).ok()?;
    let targets = targets(&refs, key).ok()?;
    if targets.is_empty() {
        return None;
    }
    Some(BackendTlsPolicy {
        key: key.clone(),
        created: metadata.creation_timestamp.clone(),
        generation: metadata.generation,
        targets,
        validation: Err(PolicyProblem {
            field: field.to_string(),
            message: format!("this client cannot decode it: {message}"),
        }),
    })
}

/// `spec.targetRefs`, checked: the core Services among them (other kinds are another
/// implementation's), distinct and validly named.
fn targets(refs: &[RawTarget], key: &ObjectKey) -> Result<Vec<PolicyTarget>, InvalidObject> {
    let err = |field: String, message: String| {
        InvalidObject::new(ObjectKind::BackendTlsPolicy, key, field, message)
    };
    if refs.is_empty() {
        return Err(err(
            "spec.targetRefs".into(),
            "at least one entry is required".into(),
        ));
    }
    let mut targets: Vec<PolicyTarget> = Vec::new();
    for (i, t) in refs.iter().enumerate() {
        // Policies for other kinds (Gateways' backends of other implementations, ...) are
        // not this client's to honour.
        if !t.group.is_empty() || t.kind != "Service" {
            tracing::debug!(policy = %key, group = %t.group, kind = %t.kind, "ignoring a BackendTLSPolicy targetRef that is not a core Service");
            continue;
        }
        if !is_dns_label(&t.name) {
            return Err(err(
                format!("spec.targetRefs[{i}].name"),
                format!("{:?} is not a valid Service name", t.name),
            ));
        }
        let section_name = t.section_name.clone().filter(|s| !s.is_empty());
        let target = PolicyTarget {
            service: t.name.clone(),
            section_name,
        };
        if targets.contains(&target) {
            return Err(err(
                format!("spec.targetRefs[{i}]"),
                "targetRefs must be distinct".into(),
            ));
        }
        targets.push(target);
    }
    Ok(targets)
}

fn validation(raw: &RawPolicy) -> Result<TlsValidation, PolicyProblem> {
    let problem = |field: &str, message: String| PolicyProblem {
        field: format!("spec.validation{field}"),
        message,
    };
    let v = &raw.spec.validation;
    let refs = v.ca_certificate_refs.as_deref().unwrap_or_default();
    let well_known = v.well_known_ca_certificates.as_deref().unwrap_or_default();
    let ca = match (refs.is_empty(), well_known) {
        (false, "") => CaCertificates::Refs(
            refs.iter()
                .map(|r| CaRef {
                    group: r.group.clone(),
                    kind: r.kind.clone(),
                    name: r.name.clone(),
                })
                .collect(),
        ),
        (true, "System") => CaCertificates::System,
        (true, "") => {
            return Err(problem(
                "",
                "one of caCertificateRefs or wellKnownCACertificates is required".into(),
            ));
        }
        (false, _) => {
            return Err(problem(
                "",
                "caCertificateRefs and wellKnownCACertificates are mutually exclusive".into(),
            ));
        }
        (true, other) => {
            return Err(problem(
                ".wellKnownCACertificates",
                format!("{other:?} is not supported (only \"System\" is)"),
            ));
        }
    };
    if !is_hostname(&v.hostname) {
        return Err(problem(
            ".hostname",
            format!(
                "{:?} is not a DNS name (an IP address or wildcard is not allowed)",
                v.hostname
            ),
        ));
    }
    let mut subject_alt_names = Vec::new();
    for (i, san) in v.subject_alt_names.iter().flatten().enumerate() {
        let field = format!(".subjectAltNames[{i}]");
        let value = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        subject_alt_names.push(match san.r#type {
            SanType::Hostname => match value(&san.hostname) {
                Some(h) if is_san_hostname(&h) => SubjectAltName::Hostname(h),
                Some(h) => {
                    return Err(problem(
                        &format!("{field}.hostname"),
                        format!("{h:?} is not a DNS name"),
                    ));
                }
                None => {
                    return Err(problem(
                        &format!("{field}.hostname"),
                        "is required when type is Hostname".into(),
                    ));
                }
            },
            SanType::Uri => match value(&san.uri) {
                Some(u) if is_uri(&u) => SubjectAltName::Uri(u),
                Some(u) => {
                    return Err(problem(
                        &format!("{field}.uri"),
                        format!("{u:?} is not a URI with a scheme and a scheme-specific part"),
                    ));
                }
                None => {
                    return Err(problem(
                        &format!("{field}.uri"),
                        "is required when type is URI".into(),
                    ));
                }
            },
        });
    }
    Ok(TlsValidation {
        ca,
        hostname: v.hostname.clone(),
        subject_alt_names,
    })
}

/// The CRD's `PreciseHostname`: a lowercase DNS name, no wildcard, no IP address.
fn is_hostname(s: &str) -> bool {
    is_dns_subdomain(s) && s.parse::<std::net::IpAddr>().is_err()
}

/// A SAN hostname may be a wildcard (`*.example.com`).
fn is_san_hostname(s: &str) -> bool {
    is_hostname(s.strip_prefix("*.").unwrap_or(s))
}

/// `scheme:rest`, with an RFC 3986 scheme.
fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
}

pub(crate) fn ca_bundle(
    raw: &ConfigMap,
    default_namespace: &str,
) -> Result<CaBundle, InvalidObject> {
    let key = object_key(ObjectKind::ConfigMap, &raw.metadata, default_namespace)?;
    let ca_crt = raw
        .data
        .as_ref()
        .and_then(|d| d.get(CA_CRT))
        .map(|s| Arc::from(s.as_str()));
    Ok(CaBundle { key, ca_crt })
}

#[cfg(test)]
mod tests {
    use gateway_api::backendtlspolicies::{
        BackendTlsPolicySpec, BackendTlsPolicyTargetRefs, BackendTlsPolicyValidation,
        BackendTlsPolicyValidationCaCertificateRefs, BackendTlsPolicyValidationSubjectAltNames,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn raw(validation: BackendTlsPolicyValidation) -> RawPolicy {
        RawPolicy {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("shop".into()),
                ..ObjectMeta::default()
            },
            spec: BackendTlsPolicySpec {
                target_refs: vec![BackendTlsPolicyTargetRefs {
                    group: String::new(),
                    kind: "Service".into(),
                    name: "cart".into(),
                    section_name: Some("grpc".into()),
                }],
                validation,
                options: None,
            },
            status: None,
        }
    }

    fn refs(name: &str) -> Option<Vec<BackendTlsPolicyValidationCaCertificateRefs>> {
        Some(vec![BackendTlsPolicyValidationCaCertificateRefs {
            group: String::new(),
            kind: "ConfigMap".into(),
            name: name.into(),
        }])
    }

    #[test]
    fn a_valid_policy_keeps_targets_ca_refs_hostname_and_sans() {
        let p = backend_tls_policy(
            &raw(BackendTlsPolicyValidation {
                ca_certificate_refs: refs("ca"),
                hostname: "cart.example.com".into(),
                subject_alt_names: Some(vec![
                    BackendTlsPolicyValidationSubjectAltNames {
                        r#type: SanType::Uri,
                        uri: Some("spiffe://td/ns/shop/sa/cart".into()),
                        hostname: None,
                    },
                    BackendTlsPolicyValidationSubjectAltNames {
                        r#type: SanType::Hostname,
                        hostname: Some("*.example.com".into()),
                        uri: None,
                    },
                ]),
                well_known_ca_certificates: None,
            }),
            "default",
        )
        .unwrap();
        assert_eq!(
            p.targets,
            [PolicyTarget {
                service: "cart".into(),
                section_name: Some("grpc".into())
            }]
        );
        let v = p.validation.unwrap();
        assert_eq!(v.hostname, "cart.example.com");
        assert!(
            matches!(&v.ca, CaCertificates::Refs(r) if r[0].name == "ca" && r[0].is_config_map())
        );
        assert_eq!(
            v.subject_alt_names,
            [
                SubjectAltName::Uri("spiffe://td/ns/shop/sa/cart".into()),
                SubjectAltName::Hostname("*.example.com".into())
            ]
        );
    }

    #[test]
    fn invalid_validation_keeps_the_targets_and_names_the_field() {
        let cases = [
            (
                BackendTlsPolicyValidation {
                    hostname: "cart.example.com".into(),
                    ..Default::default()
                },
                "spec.validation",
            ),
            (
                BackendTlsPolicyValidation {
                    ca_certificate_refs: refs("ca"),
                    well_known_ca_certificates: Some("System".into()),
                    hostname: "cart.example.com".into(),
                    ..Default::default()
                },
                "spec.validation",
            ),
            (
                BackendTlsPolicyValidation {
                    well_known_ca_certificates: Some("Other".into()),
                    hostname: "cart.example.com".into(),
                    ..Default::default()
                },
                "spec.validation.wellKnownCACertificates",
            ),
            (
                BackendTlsPolicyValidation {
                    well_known_ca_certificates: Some("System".into()),
                    hostname: "10.0.0.1".into(),
                    ..Default::default()
                },
                "spec.validation.hostname",
            ),
            (
                BackendTlsPolicyValidation {
                    well_known_ca_certificates: Some("System".into()),
                    hostname: "cart.example.com".into(),
                    subject_alt_names: Some(vec![BackendTlsPolicyValidationSubjectAltNames {
                        r#type: SanType::Uri,
                        uri: Some("no-scheme".into()),
                        hostname: None,
                    }]),
                    ..Default::default()
                },
                "spec.validation.subjectAltNames[0].uri",
            ),
        ];
        for (validation, field) in cases {
            let p = backend_tls_policy(&raw(validation), "default").unwrap();
            assert_eq!(p.targets.len(), 1);
            let problem = p.validation.unwrap_err();
            assert_eq!(problem.field, field, "{problem:?}");
        }
    }

    #[test]
    fn a_config_map_keeps_its_ca_crt() {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("ca".into()),
                ..ObjectMeta::default()
            },
            data: Some([("ca.crt".to_string(), "PEM".to_string())].into()),
            ..ConfigMap::default()
        };
        let b = ca_bundle(&cm, "shop").unwrap();
        assert_eq!(b.key.to_string(), "shop/ca");
        assert_eq!(b.ca_crt.as_deref(), Some("PEM"));
        let b = ca_bundle(&ConfigMap { data: None, ..cm }, "shop").unwrap();
        assert_eq!(b.ca_crt, None);
    }
}
