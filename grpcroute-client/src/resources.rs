//! [`Resources`]: a set of Kubernetes objects, the common input of every source.

use gateway_api::{
    backendtlspolicies::BackendTlsPolicy, grpcroutes::GrpcRoute, referencegrants::ReferenceGrant,
};
use k8s_openapi::api::{
    core::v1::{ConfigMap, Service},
    discovery::v1::EndpointSlice,
};

use std::{collections::HashSet, sync::Arc};

use crate::{
    convert,
    model::{self, Model, ObjectKey},
};

/// The routing configuration as Kubernetes objects: GRPCRoutes, Services, EndpointSlices,
/// ReferenceGrants, BackendTLSPolicies and the ConfigMaps holding their CA certificates,
/// exactly as `kubectl apply` takes them.
///
/// Build it from manifests ([`crate::manifest::load`]), from code (the [`crate::build`]
/// helpers, or the API types directly), or from anything else, then hand it to
/// [`Mesh::update`](crate::Mesh::update). Objects without a namespace are taken to be in
/// `default`, as `kubectl` does.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    /// `gateway.networking.k8s.io/v1` GRPCRoutes.
    pub routes: Vec<GrpcRoute>,
    /// Core `v1` Services.
    pub services: Vec<Service>,
    /// `discovery.k8s.io/v1` EndpointSlices.
    pub endpoint_slices: Vec<EndpointSlice>,
    /// ReferenceGrants (`v1beta1` objects are read as `v1`; the shapes are identical).
    pub reference_grants: Vec<ReferenceGrant>,
    /// `gateway.networking.k8s.io/v1` BackendTLSPolicies.
    pub backend_tls_policies: Vec<BackendTlsPolicy>,
    /// Core `v1` ConfigMaps: only their `ca.crt` is read, for BackendTLSPolicies'
    /// `caCertificateRefs`.
    pub config_maps: Vec<ConfigMap>,
}

/// One object of any kind [`Resources`] holds.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Object {
    /// A GRPCRoute.
    GrpcRoute(GrpcRoute),
    /// A Service.
    Service(Service),
    /// An EndpointSlice.
    EndpointSlice(EndpointSlice),
    /// A ReferenceGrant.
    ReferenceGrant(ReferenceGrant),
    /// A BackendTLSPolicy.
    BackendTlsPolicy(BackendTlsPolicy),
    /// A ConfigMap.
    ConfigMap(ConfigMap),
}

macro_rules! object_from {
    ($($variant:ident($ty:ty)),*) => {$(
        impl From<$ty> for Object {
            fn from(o: $ty) -> Self {
                Self::$variant(o)
            }
        }
    )*};
}
object_from!(
    GrpcRoute(GrpcRoute),
    Service(Service),
    EndpointSlice(EndpointSlice),
    ReferenceGrant(ReferenceGrant),
    BackendTlsPolicy(BackendTlsPolicy),
    ConfigMap(ConfigMap)
);

impl Resources {
    /// No objects.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an object (builder style).
    #[must_use]
    pub fn with(mut self, object: impl Into<Object>) -> Self {
        self.push(object);
        self
    }

    /// Adds an object.
    pub fn push(&mut self, object: impl Into<Object>) {
        match object.into() {
            Object::GrpcRoute(o) => self.routes.push(o),
            Object::Service(o) => self.services.push(o),
            Object::EndpointSlice(o) => self.endpoint_slices.push(o),
            Object::ReferenceGrant(o) => self.reference_grants.push(o),
            Object::BackendTlsPolicy(o) => self.backend_tls_policies.push(o),
            Object::ConfigMap(o) => self.config_maps.push(o),
        }
    }

    /// Adds every object of `other`.
    pub fn extend(&mut self, other: Resources) {
        self.routes.extend(other.routes);
        self.services.extend(other.services);
        self.endpoint_slices.extend(other.endpoint_slices);
        self.reference_grants.extend(other.reference_grants);
        self.backend_tls_policies.extend(other.backend_tls_policies);
        self.config_maps.extend(other.config_maps);
    }

    /// Validates every object; invalid ones are set aside with their reason.
    pub(crate) fn to_model(&self) -> Model {
        const NS: &str = "default";
        let mut model = Model::default();
        convert_all(
            &self.services,
            |o| convert::service(o, NS),
            &mut model.services,
            &mut model.rejected,
        );
        convert_all(
            &self.endpoint_slices,
            |o| convert::endpoint_slice(o, NS),
            &mut model.endpoint_slices,
            &mut model.rejected,
        );
        convert_all(
            &self.routes,
            |o| convert::grpc_route(o, NS),
            &mut model.routes,
            &mut model.rejected,
        );
        convert_all(
            &self.reference_grants,
            |o| convert::reference_grant(o, NS),
            &mut model.grants,
            &mut model.rejected,
        );
        convert_all(
            &self.backend_tls_policies,
            |o| convert::backend_tls_policy(o, NS),
            &mut model.tls_policies,
            &mut model.rejected,
        );
        convert_all(
            &self.config_maps,
            |o| convert::ca_bundle(o, NS),
            &mut model.ca_bundles,
            &mut model.rejected,
        );
        model
    }
}

/// Converts each object; a second object with the same namespace and name is rejected
/// rather than silently shadowing the first.
fn convert_all<R, M: Keyed>(
    raw: &[R],
    convert: impl Fn(&R) -> Result<M, convert::InvalidObject>,
    out: &mut Vec<Arc<M>>,
    rejected: &mut Vec<convert::InvalidObject>,
) {
    let mut seen = HashSet::new();
    for object in raw {
        match convert(object) {
            Ok(m) if !seen.insert(m.key().clone()) => rejected.push(convert::InvalidObject::new(
                M::KIND,
                m.key(),
                "metadata.name",
                "is defined more than once; the first definition is used",
            )),
            Ok(m) => out.push(Arc::new(m)),
            Err(e) => rejected.push(e),
        }
    }
}

trait Keyed {
    const KIND: convert::ObjectKind;
    fn key(&self) -> &ObjectKey;
}

macro_rules! keyed {
    ($($ty:ty => $kind:ident),*) => {$(
        impl Keyed for $ty {
            const KIND: convert::ObjectKind = convert::ObjectKind::$kind;
            fn key(&self) -> &ObjectKey {
                &self.key
            }
        }
    )*};
}
keyed!(
    model::Service => Service,
    model::EndpointSlice => EndpointSlice,
    model::GrpcRoute => GrpcRoute,
    model::ReferenceGrant => ReferenceGrant,
    model::BackendTlsPolicy => BackendTlsPolicy,
    model::CaBundle => ConfigMap
);
