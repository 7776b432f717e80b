//! BackendTLSPolicy and the CA bundles it refers to, validated.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::ObjectKey;

/// A Gateway API `BackendTLSPolicy` (`gateway.networking.k8s.io/v1`): TLS, and how to
/// verify the server, for the Service ports it targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BackendTlsPolicy {
    pub(crate) key: ObjectKey,
    /// `metadata.creationTimestamp`: the older policy wins a conflict. Objects read from
    /// files have none; they sort after every timestamped one.
    pub(crate) created: Option<Time>,
    pub(crate) generation: Option<i64>,
    /// The Services (of the policy's namespace) it applies to.
    pub(crate) targets: Vec<PolicyTarget>,
    /// What the policy asks for, or why it cannot be honoured. An invalid policy still
    /// claims its targets: their connections fail rather than fall back to plaintext. So
    /// does one whose spec did not decode but whose `targetRefs` did (see
    /// [`InvalidObject::claimed_policy`](super::InvalidObject::claimed_policy)).
    pub(crate) validation: Result<TlsValidation, PolicyProblem>,
}

/// `spec.targetRefs[]` naming a core Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PolicyTarget {
    pub(crate) service: String,
    /// A port name; `None`: every port of the Service.
    pub(crate) section_name: Option<String>,
}

/// `spec.validation`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TlsValidation {
    pub(crate) ca: CaCertificates,
    /// SNI, and the name verified when there are no subjectAltNames.
    pub(crate) hostname: String,
    pub(crate) subject_alt_names: Vec<SubjectAltName>,
}

/// Where the roots the server's chain must lead to come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CaCertificates {
    /// `caCertificateRefs`, in the policy's namespace.
    Refs(Vec<CaRef>),
    /// `wellKnownCACertificates: System`: the platform's roots.
    System,
}

/// One `caCertificateRefs` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CaRef {
    pub(crate) group: String,
    pub(crate) kind: String,
    pub(crate) name: String,
}

impl CaRef {
    pub(crate) fn is_config_map(&self) -> bool {
        self.group.is_empty() && self.kind == "ConfigMap"
    }
}

/// One `subjectAltNames` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SubjectAltName {
    Hostname(String),
    Uri(String),
}

/// Why a policy's `validation` cannot be used: the field and the reason (`Invalid`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PolicyProblem {
    pub(crate) field: String,
    pub(crate) message: String,
}

/// A ConfigMap, reduced to what BackendTLSPolicy reads of it: its `ca.crt`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CaBundle {
    pub(crate) key: ObjectKey,
    /// The PEM text of `data["ca.crt"]`, if the ConfigMap has that key.
    pub(crate) ca_crt: Option<Arc<str>>,
}
