//! Objects that failed validation: what is wrong with them, for status and operators.

use std::{fmt, sync::Arc};

use super::{BackendTlsPolicy, ObjectKey, ParentRef};

/// The kinds of object this crate reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// `gateway.networking.k8s.io/v1` GRPCRoute.
    GrpcRoute,
    /// Core `v1` Service.
    Service,
    /// `discovery.k8s.io/v1` EndpointSlice.
    EndpointSlice,
    /// `gateway.networking.k8s.io` ReferenceGrant (`v1` or `v1beta1`).
    ReferenceGrant,
    /// `gateway.networking.k8s.io/v1` BackendTLSPolicy.
    BackendTlsPolicy,
    /// Core `v1` ConfigMap (read for the CA certificates of BackendTLSPolicies).
    ConfigMap,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::GrpcRoute => "GRPCRoute",
            Self::Service => "Service",
            Self::EndpointSlice => "EndpointSlice",
            Self::ReferenceGrant => "ReferenceGrant",
            Self::BackendTlsPolicy => "BackendTLSPolicy",
            Self::ConfigMap => "ConfigMap",
        })
    }
}

/// An object that failed validation. It is left out of routing; everything else keeps
/// working.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} {}: {}: {}", .0.kind, .0.key, .0.field, .0.message)]
pub struct InvalidObject(Box<Details>);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Details {
    kind: ObjectKind,
    key: ObjectKey,
    field: String,
    message: String,
    reason: &'static str,
    /// For routes: the parentRefs that could still be read, so status can be reported.
    parent_refs: Vec<ParentRef>,
    generation: Option<i64>,
    /// For a BackendTLSPolicy whose spec did not decode but whose targets did: the policy,
    /// invalid, that still claims those targets (so that they fail closed).
    claimed_policy: Option<Arc<BackendTlsPolicy>>,
}

impl InvalidObject {
    pub(crate) fn new(
        kind: ObjectKind,
        key: &ObjectKey,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self(Box::new(Details {
            kind,
            key: key.clone(),
            field: field.into(),
            message: message.into(),
            reason: "UnsupportedValue",
            parent_refs: Vec::new(),
            generation: None,
            claimed_policy: None,
        }))
    }

    pub(crate) fn with_reason(mut self, reason: &'static str) -> Self {
        self.0.reason = reason;
        self
    }

    /// Attaches what status reporting needs of a rejected route.
    pub(crate) fn with_route_context(
        mut self,
        parent_refs: &[ParentRef],
        generation: Option<i64>,
    ) -> Self {
        self.0.parent_refs = parent_refs.to_vec();
        self.0.generation = generation;
        self
    }

    /// Attaches the policy a rejected BackendTLSPolicy still is for its targets: whoever
    /// builds a [`Model`](super::Model) of the rejected object adds that policy too (see
    /// [`Model::claim_for_rejected_policies`](super::Model::claim_for_rejected_policies)).
    pub(crate) fn with_claimed_policy(mut self, policy: BackendTlsPolicy) -> Self {
        self.0.claimed_policy = Some(Arc::new(policy));
        self
    }

    /// The invalid policy that still claims the targets of this rejected BackendTLSPolicy.
    pub(crate) fn claimed_policy(&self) -> Option<&Arc<BackendTlsPolicy>> {
        self.0.claimed_policy.as_ref()
    }

    pub(crate) fn parent_refs(&self) -> &[ParentRef] {
        &self.0.parent_refs
    }

    pub(crate) fn generation(&self) -> Option<i64> {
        self.0.generation
    }

    /// The kind of the rejected object.
    pub fn kind(&self) -> ObjectKind {
        self.0.kind
    }

    /// Its namespace and name.
    pub fn key(&self) -> &ObjectKey {
        &self.0.key
    }

    /// The path of the offending field, e.g. `spec.rules[0].matches[1].method.service`.
    pub fn field(&self) -> &str {
        &self.0.field
    }

    /// Why the field is invalid.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The status reason a GRPCRoute gets for this (`UnsupportedValue` or
    /// `IncompatibleFilters`).
    pub fn reason(&self) -> &'static str {
        self.0.reason
    }
}
