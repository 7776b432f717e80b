//! Validated, wire-format-free configuration: what every source (manifests, Kubernetes,
//! in-code, xDS) converts its objects into before anything is compiled for routing.
//!
//! Nothing here does I/O. Types are built only by [`crate::convert`], which checks every
//! field, so code that consumes the model never re-validates.

mod endpoints;
mod filter;
mod grant;
mod invalid;
pub(crate) mod matches;
mod route;
mod service;
mod tls_policy;
#[cfg(feature = "xds")]
pub(crate) mod xds;

use std::{fmt, sync::Arc};

pub use self::invalid::{InvalidObject, ObjectKind};
pub(crate) use self::{
    endpoints::{Endpoint, EndpointPort, EndpointSlice},
    filter::{Filter, HeaderModifier, Mirror},
    grant::{GrantFrom, GrantTo, ReferenceGrant},
    matches::{HeaderMatch, MethodMatch, RouteMatch, StringMatch},
    route::{BackendRef, GrpcRoute, ParentRef, Rule},
    service::{AppProtocol, IpFamily, Service, ServicePort, ServiceType},
    tls_policy::{
        BackendTlsPolicy, CaBundle, CaCertificates, CaRef, PolicyProblem, PolicyTarget,
        SubjectAltName, TlsValidation,
    },
};

/// A namespaced object name, cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    namespace: Arc<str>,
    name: Arc<str>,
}

impl ObjectKey {
    /// A key for `name` in `namespace`.
    pub fn new(namespace: impl Into<Arc<str>>, name: impl Into<Arc<str>>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The object's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn namespace_arc(&self) -> &Arc<str> {
        &self.namespace
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The whole validated configuration, as one source last reported it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Model {
    pub(crate) services: Vec<Arc<Service>>,
    pub(crate) endpoint_slices: Vec<Arc<EndpointSlice>>,
    pub(crate) routes: Vec<Arc<GrpcRoute>>,
    pub(crate) grants: Vec<Arc<ReferenceGrant>>,
    pub(crate) tls_policies: Vec<Arc<BackendTlsPolicy>>,
    /// ConfigMaps, for the CA certificates BackendTLSPolicies refer to.
    pub(crate) ca_bundles: Vec<Arc<CaBundle>>,
    /// Objects that failed validation; they take no part in routing but their routes still
    /// get a status.
    pub(crate) rejected: Vec<InvalidObject>,
}

impl Model {
    /// Adds to the policies the invalid policy each rejected BackendTLSPolicy still is for
    /// its targets (one whose spec did not decode but whose `targetRefs` did), so that
    /// their connections fail rather than go out in plaintext. The rejection stays in
    /// `rejected` (metric, log, `Mesh::rejected`): the object was not understood. A policy
    /// of the same name already present keeps its place. Sources call this once they have
    /// collected `rejected`.
    pub(crate) fn claim_for_rejected_policies(&mut self) {
        let claims: Vec<Arc<BackendTlsPolicy>> = self
            .rejected
            .iter()
            .filter_map(InvalidObject::claimed_policy)
            .filter(|p| !self.tls_policies.iter().any(|q| q.key == p.key))
            .cloned()
            .collect();
        if claims.is_empty() {
            return;
        }
        self.tls_policies.extend(claims);
        self.tls_policies.sort_by(|a, b| a.key.cmp(&b.key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, validation: Result<TlsValidation, PolicyProblem>) -> BackendTlsPolicy {
        BackendTlsPolicy {
            key: ObjectKey::new("shop", name),
            created: None,
            generation: Some(1),
            targets: vec![PolicyTarget {
                service: "cart".into(),
                section_name: None,
            }],
            validation,
        }
    }

    fn problem() -> Result<TlsValidation, PolicyProblem> {
        Err(PolicyProblem {
            field: "spec.validation.subjectAltNames[0].type".into(),
            message: "unknown variant".into(),
        })
    }

    #[test]
    fn rejected_policies_claim_their_targets_unless_their_name_is_taken() {
        let valid = Arc::new(policy(
            "b",
            Ok(TlsValidation {
                ca: CaCertificates::System,
                hostname: "cart.example.com".into(),
                subject_alt_names: Vec::new(),
            }),
        ));
        let rejected = |name: &str| {
            InvalidObject::new(
                ObjectKind::BackendTlsPolicy,
                &ObjectKey::new("shop", name),
                "spec.validation.subjectAltNames[0].type",
                "unknown variant",
            )
            .with_claimed_policy(policy(name, problem()))
        };
        let mut model = Model {
            tls_policies: vec![valid.clone()],
            rejected: vec![
                rejected("c"),
                rejected("a"),
                // The same name as a policy that decoded: that one stays.
                rejected("b"),
                // Rejected without a claim: nothing to add.
                InvalidObject::new(
                    ObjectKind::BackendTlsPolicy,
                    &ObjectKey::new("shop", "d"),
                    "spec.targetRefs",
                    "invalid type",
                ),
            ],
            ..Model::default()
        };
        model.claim_for_rejected_policies();
        let names: Vec<&str> = model.tls_policies.iter().map(|p| p.key.name()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(model.tls_policies[1], valid);
        assert_eq!(model.tls_policies[0].validation, problem());
        assert_eq!(model.rejected.len(), 4, "the rejections stay");
    }
}
