//! Building routing configuration in Rust: GRPCRoutes, Services and endpoints without YAML.
//!
//! The builders produce the same Kubernetes objects a manifest would hold, so what is built
//! here is validated exactly like a manifest (and can be printed as one).
//!
//! ```
//! use grpcroute_client::build::{Backend, Match, Rule, endpoints, route, service};
//! use grpcroute_client::Resources;
//!
//! let resources = Resources::new()
//!     .with(service("shop", "order").cluster_ip("10.96.0.20").port("grpc", 50051))
//!     .with(service("shop", "order-stable").port("grpc", 50051))
//!     .with(service("shop", "order-canary").port("grpc", 50051))
//!     .with(endpoints("shop", "order-stable").port("grpc", 9001).ready("10.1.0.1".parse().unwrap()))
//!     .with(endpoints("shop", "order-canary").port("grpc", 9001).ready("10.1.0.2".parse().unwrap()))
//!     // A 90/10 canary for every method of order.v1.OrderService...
//!     .with(
//!         route("shop", "order-canary")
//!             .parent_service("order", Some(50051))
//!             .rule(
//!                 Rule::new()
//!                     .matches(Match::service("order.v1.OrderService"))
//!                     .backend(Backend::service("order-stable", 50051).weight(90))
//!                     .backend(Backend::service("order-canary", 50051).weight(10)),
//!             )
//!             // ...except that testers in group "canary" always get the canary.
//!             .rule(
//!                 Rule::new()
//!                     .matches(Match::service("order.v1.OrderService").header("x-group", "canary"))
//!                     .backend(Backend::service("order-canary", 50051)),
//!             ),
//!     );
//! assert_eq!(resources.routes.len(), 1);
//! ```

use std::{collections::BTreeMap, net::IpAddr};

use gateway_api::{
    grpcroutes::{
        GrpcRoute, GrpcRouteParentRefs, GrpcRouteRules, GrpcRouteRulesBackendRefs,
        GrpcRouteRulesBackendRefsFilters, GrpcRouteRulesBackendRefsFiltersRequestHeaderModifier,
        GrpcRouteRulesBackendRefsFiltersRequestHeaderModifierAdd,
        GrpcRouteRulesBackendRefsFiltersRequestHeaderModifierSet,
        GrpcRouteRulesBackendRefsFiltersType, GrpcRouteRulesFilters,
        GrpcRouteRulesFiltersRequestHeaderModifier, GrpcRouteRulesFiltersRequestHeaderModifierAdd,
        GrpcRouteRulesFiltersRequestHeaderModifierSet, GrpcRouteRulesFiltersRequestMirror,
        GrpcRouteRulesFiltersRequestMirrorBackendRef, GrpcRouteRulesFiltersResponseHeaderModifier,
        GrpcRouteRulesFiltersResponseHeaderModifierSet, GrpcRouteRulesFiltersType,
        GrpcRouteRulesMatches, GrpcRouteRulesMatchesHeaders, GrpcRouteRulesMatchesHeadersType,
        GrpcRouteRulesMatchesMethod, GrpcRouteRulesMatchesMethodType, GrpcRouteSpec,
    },
    referencegrants::{ReferenceGrant, ReferenceGrantFrom, ReferenceGrantSpec, ReferenceGrantTo},
};
use k8s_openapi::{
    api::{
        core::v1::{Service, ServicePort, ServiceSpec},
        discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use crate::{convert::SERVICE_NAME_LABEL, resources::Object};

fn meta(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(namespace.to_string()),
        name: Some(name.to_string()),
        ..Default::default()
    }
}

/// A ClusterIP Service `namespace/name`; add ports with [`ServiceBuilder::port`].
pub fn service(namespace: &str, name: &str) -> ServiceBuilder {
    ServiceBuilder(Service {
        metadata: meta(namespace, name),
        spec: Some(ServiceSpec {
            ports: Some(Vec::new()),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Builds a [`Service`].
#[derive(Clone, Debug)]
pub struct ServiceBuilder(Service);

impl ServiceBuilder {
    fn spec(&mut self) -> &mut ServiceSpec {
        self.0.spec.get_or_insert_with(Default::default)
    }

    /// Sets the ClusterIP, so calls can address the Service by it.
    #[must_use]
    pub fn cluster_ip(mut self, ip: &str) -> Self {
        self.spec().cluster_ip = Some(ip.to_string());
        self
    }

    /// Adds a TCP port named `name` (may be empty for a single unnamed port).
    #[must_use]
    pub fn port(mut self, name: &str, port: u16) -> Self {
        self.spec()
            .ports
            .get_or_insert_with(Vec::new)
            .push(ServicePort {
                name: (!name.is_empty()).then(|| name.to_string()),
                port: i32::from(port),
                app_protocol: Some("kubernetes.io/h2c".to_string()),
                ..Default::default()
            });
        self
    }

    /// The Service object.
    pub fn build(self) -> Service {
        self.0
    }
}

impl From<ServiceBuilder> for Object {
    fn from(b: ServiceBuilder) -> Self {
        Object::Service(b.0)
    }
}

/// An EndpointSlice for Service `namespace/service` (named `<service>-<n>` unless
/// [`EndpointsBuilder::name`] says otherwise).
pub fn endpoints(namespace: &str, service: &str) -> EndpointsBuilder {
    let mut metadata = meta(namespace, &format!("{service}-manual"));
    metadata.labels = Some(BTreeMap::from([(
        SERVICE_NAME_LABEL.to_string(),
        service.to_string(),
    )]));
    EndpointsBuilder {
        slice: EndpointSlice {
            metadata,
            address_type: "IPv4".into(),
            ports: Some(Vec::new()),
            endpoints: Default::default(),
        },
        endpoints: Vec::new(),
    }
}

/// Builds an [`EndpointSlice`].
#[derive(Clone, Debug)]
pub struct EndpointsBuilder {
    slice: EndpointSlice,
    endpoints: Vec<Endpoint>,
}

impl EndpointsBuilder {
    /// Names the slice (a Service may have several).
    #[must_use]
    pub fn name(mut self, name: &str) -> Self {
        self.slice.metadata.name = Some(name.to_string());
        self
    }

    /// The target port for the Service port named `name`.
    #[must_use]
    pub fn port(mut self, name: &str, port: u16) -> Self {
        self.slice
            .ports
            .get_or_insert_with(Vec::new)
            .push(EndpointPort {
                name: Some(name.to_string()),
                port: Some(i32::from(port)),
                ..Default::default()
            });
        self
    }

    fn endpoint(mut self, ip: IpAddr, ready: bool, serving: bool, terminating: bool) -> Self {
        if ip.is_ipv6() {
            self.slice.address_type = "IPv6".into();
        }
        self.endpoints.push(Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            ..Default::default()
        });
        self
    }

    /// Adds a ready endpoint.
    #[must_use]
    pub fn ready(self, ip: IpAddr) -> Self {
        self.endpoint(ip, true, true, false)
    }

    /// Adds an endpoint that is not ready (it takes no traffic).
    #[must_use]
    pub fn not_ready(self, ip: IpAddr) -> Self {
        self.endpoint(ip, false, false, false)
    }

    /// Adds an endpoint that is shutting down but still serving: used only when the Service
    /// has no ready endpoint left.
    #[must_use]
    pub fn terminating(self, ip: IpAddr) -> Self {
        self.endpoint(ip, false, true, true)
    }

    /// The EndpointSlice object.
    pub fn build(self) -> EndpointSlice {
        let mut slice = self.slice;
        #[allow(clippy::useless_conversion)]
        {
            slice.endpoints = self.endpoints.into();
        }
        slice
    }
}

impl From<EndpointsBuilder> for Object {
    fn from(b: EndpointsBuilder) -> Self {
        Object::EndpointSlice(b.build())
    }
}

/// A GRPCRoute `namespace/name`.
pub fn route(namespace: &str, name: &str) -> RouteBuilder {
    RouteBuilder(GrpcRoute {
        metadata: meta(namespace, name),
        spec: GrpcRouteSpec {
            parent_refs: Some(Vec::new()),
            hostnames: None,
            rules: Some(Vec::new()),
        },
        status: None,
    })
}

/// Builds a [`GrpcRoute`].
#[derive(Clone, Debug)]
pub struct RouteBuilder(GrpcRoute);

impl RouteBuilder {
    /// Attaches the route to Service `name` in the route's namespace (a producer route), on
    /// `port` or on every port.
    #[must_use]
    pub fn parent_service(self, name: &str, port: Option<u16>) -> Self {
        self.parent(None, name, port)
    }

    /// Attaches the route to Service `namespace/name`; from another namespace this is a
    /// consumer route, applying to clients in the route's namespace only.
    #[must_use]
    pub fn parent_service_in(self, namespace: &str, name: &str, port: Option<u16>) -> Self {
        self.parent(Some(namespace), name, port)
    }

    fn parent(mut self, namespace: Option<&str>, name: &str, port: Option<u16>) -> Self {
        self.0
            .spec
            .parent_refs
            .get_or_insert_with(Vec::new)
            .push(GrpcRouteParentRefs {
                group: Some(String::new()),
                kind: Some("Service".into()),
                name: name.into(),
                namespace: namespace.map(Into::into),
                port: port.map(i32::from),
                section_name: None,
            });
        self
    }

    /// Adds a rule.
    #[must_use]
    pub fn rule(mut self, rule: Rule) -> Self {
        self.0.spec.rules.get_or_insert_with(Vec::new).push(rule.0);
        self
    }

    /// The GRPCRoute object.
    pub fn build(self) -> GrpcRoute {
        self.0
    }
}

impl From<RouteBuilder> for Object {
    fn from(b: RouteBuilder) -> Self {
        Object::GrpcRoute(b.0)
    }
}

/// A route rule: calls that satisfy any of its [`Match`]es go to its backends.
#[derive(Clone, Debug, Default)]
pub struct Rule(GrpcRouteRules);

impl Rule {
    /// A rule with no matches (it matches every call) and no backends.
    pub fn new() -> Self {
        Self::default()
    }

    /// Names the rule.
    #[must_use]
    pub fn name(mut self, name: &str) -> Self {
        self.0.name = Some(name.into());
        self
    }

    /// Adds a match; the rule applies when any of its matches does.
    #[must_use]
    pub fn matches(mut self, m: Match) -> Self {
        self.0.matches.get_or_insert_with(Vec::new).push(m.0);
        self
    }

    /// Adds a backend.
    #[must_use]
    pub fn backend(mut self, backend: Backend) -> Self {
        self.0
            .backend_refs
            .get_or_insert_with(Vec::new)
            .push(backend.0);
        self
    }

    fn filter(mut self, f: GrpcRouteRulesFilters) -> Self {
        self.0.filters.get_or_insert_with(Vec::new).push(f);
        self
    }

    /// Edits the rule's RequestHeaderModifier, adding one if there is none (a rule may
    /// have only one).
    fn request_headers(
        mut self,
        edit: impl FnOnce(&mut GrpcRouteRulesFiltersRequestHeaderModifier),
    ) -> Self {
        let filters = self.0.filters.get_or_insert_with(Vec::new);
        match filters
            .iter_mut()
            .find_map(|f| f.request_header_modifier.as_mut())
        {
            Some(m) => edit(m),
            None => {
                let mut m = GrpcRouteRulesFiltersRequestHeaderModifier::default();
                edit(&mut m);
                filters.push(GrpcRouteRulesFilters {
                    r#type: GrpcRouteRulesFiltersType::RequestHeaderModifier,
                    request_header_modifier: Some(m),
                    ..Default::default()
                });
            }
        }
        self
    }

    /// Sets request metadata `name: value` on matching calls (overwriting).
    #[must_use]
    pub fn set_request_header(self, name: &str, value: &str) -> Self {
        let entry = GrpcRouteRulesFiltersRequestHeaderModifierSet {
            name: name.into(),
            value: value.into(),
        };
        self.request_headers(|m| m.set.get_or_insert_with(Vec::new).push(entry))
    }

    /// Appends `value` to request metadata `name` on matching calls.
    #[must_use]
    pub fn add_request_header(self, name: &str, value: &str) -> Self {
        let entry = GrpcRouteRulesFiltersRequestHeaderModifierAdd {
            name: name.into(),
            value: value.into(),
        };
        self.request_headers(|m| m.add.get_or_insert_with(Vec::new).push(entry))
    }

    /// Removes request metadata `name` from matching calls.
    #[must_use]
    pub fn remove_request_header(self, name: &str) -> Self {
        self.request_headers(|m| m.remove.get_or_insert_with(Vec::new).push(name.into()))
    }

    /// Sets response metadata `name: value` on the responses of matching calls.
    #[must_use]
    pub fn set_response_header(mut self, name: &str, value: &str) -> Self {
        let entry = GrpcRouteRulesFiltersResponseHeaderModifierSet {
            name: name.into(),
            value: value.into(),
        };
        let filters = self.0.filters.get_or_insert_with(Vec::new);
        match filters
            .iter_mut()
            .find_map(|f| f.response_header_modifier.as_mut())
        {
            Some(m) => m.set.get_or_insert_with(Vec::new).push(entry),
            None => filters.push(GrpcRouteRulesFilters {
                r#type: GrpcRouteRulesFiltersType::ResponseHeaderModifier,
                response_header_modifier: Some(GrpcRouteRulesFiltersResponseHeaderModifier {
                    set: Some(vec![entry]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
        self
    }

    /// Mirrors `percent` % of matching calls to Service `name` (same namespace) at `port`.
    #[must_use]
    pub fn mirror(self, name: &str, port: u16, percent: u8) -> Self {
        self.filter(GrpcRouteRulesFilters {
            r#type: GrpcRouteRulesFiltersType::RequestMirror,
            request_mirror: Some(GrpcRouteRulesFiltersRequestMirror {
                backend_ref: GrpcRouteRulesFiltersRequestMirrorBackendRef {
                    name: name.into(),
                    port: Some(i32::from(port)),
                    ..Default::default()
                },
                percent: Some(i32::from(percent)),
                fraction: None,
            }),
            ..Default::default()
        })
    }
}

/// What a call must look like for a rule to apply: gRPC service and method, and metadata.
/// All conditions of one match must hold.
#[derive(Clone, Debug, Default)]
pub struct Match(GrpcRouteRulesMatches);

impl Match {
    /// Every call.
    pub fn any() -> Self {
        Self::default()
    }

    /// Every method of gRPC service `service` (e.g. `order.v1.OrderService`).
    pub fn service(service: &str) -> Self {
        Self::method_match(Some(service), None, false)
    }

    /// Method `method` of gRPC service `service`.
    pub fn method(service: &str, method: &str) -> Self {
        Self::method_match(Some(service), Some(method), false)
    }

    /// Method `method` of any service.
    pub fn method_of_any_service(method: &str) -> Self {
        Self::method_match(None, Some(method), false)
    }

    /// Service and/or method by regular expression (each must match in full).
    pub fn regex(service: Option<&str>, method: Option<&str>) -> Self {
        Self::method_match(service, method, true)
    }

    fn method_match(service: Option<&str>, method: Option<&str>, regex: bool) -> Self {
        Self(GrpcRouteRulesMatches {
            method: Some(GrpcRouteRulesMatchesMethod {
                service: service.map(Into::into),
                method: method.map(Into::into),
                r#type: Some(if regex {
                    GrpcRouteRulesMatchesMethodType::RegularExpression
                } else {
                    GrpcRouteRulesMatchesMethodType::Exact
                }),
            }),
            headers: None,
        })
    }

    /// Also requires metadata `name` to equal `value` (case-sensitive; names are not).
    #[must_use]
    pub fn header(self, name: &str, value: &str) -> Self {
        self.header_match(name, value, GrpcRouteRulesMatchesHeadersType::Exact)
    }

    /// Also requires metadata `name` to match regular expression `pattern` in full.
    #[must_use]
    pub fn header_regex(self, name: &str, pattern: &str) -> Self {
        self.header_match(
            name,
            pattern,
            GrpcRouteRulesMatchesHeadersType::RegularExpression,
        )
    }

    fn header_match(
        mut self,
        name: &str,
        value: &str,
        kind: GrpcRouteRulesMatchesHeadersType,
    ) -> Self {
        self.0
            .headers
            .get_or_insert_with(Vec::new)
            .push(GrpcRouteRulesMatchesHeaders {
                name: name.into(),
                value: value.into(),
                r#type: Some(kind),
            });
        self
    }
}

/// A backendRef: a Service port that takes a weighted share of a rule's calls.
#[derive(Clone, Debug)]
pub struct Backend(GrpcRouteRulesBackendRefs);

impl Backend {
    /// Service `name` in the route's namespace, at Service port `port`, weight 1.
    pub fn service(name: &str, port: u16) -> Self {
        Self(GrpcRouteRulesBackendRefs {
            name: name.into(),
            port: Some(i32::from(port)),
            ..Default::default()
        })
    }

    /// The backend Service's namespace, when not the route's.
    #[must_use]
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.0.namespace = Some(namespace.into());
        self
    }

    /// The weight (0 to 1,000,000); shares are weight / sum of the rule's weights.
    #[must_use]
    pub fn weight(mut self, weight: u32) -> Self {
        self.0.weight = Some(i32::try_from(weight).unwrap_or(i32::MAX));
        self
    }

    /// Edits this backend's RequestHeaderModifier, adding one if there is none.
    fn request_headers(
        mut self,
        edit: impl FnOnce(&mut GrpcRouteRulesBackendRefsFiltersRequestHeaderModifier),
    ) -> Self {
        let filters = self.0.filters.get_or_insert_with(Vec::new);
        match filters
            .iter_mut()
            .find_map(|f| f.request_header_modifier.as_mut())
        {
            Some(m) => edit(m),
            None => {
                let mut m = GrpcRouteRulesBackendRefsFiltersRequestHeaderModifier::default();
                edit(&mut m);
                filters.push(GrpcRouteRulesBackendRefsFilters {
                    r#type: GrpcRouteRulesBackendRefsFiltersType::RequestHeaderModifier,
                    request_header_modifier: Some(m),
                    ..Default::default()
                });
            }
        }
        self
    }

    /// Sets request metadata on calls sent to this backend only.
    #[must_use]
    pub fn set_request_header(self, name: &str, value: &str) -> Self {
        let entry = GrpcRouteRulesBackendRefsFiltersRequestHeaderModifierSet {
            name: name.into(),
            value: value.into(),
        };
        self.request_headers(|m| m.set.get_or_insert_with(Vec::new).push(entry))
    }

    /// Appends to request metadata on calls sent to this backend only.
    #[must_use]
    pub fn add_request_header(self, name: &str, value: &str) -> Self {
        let entry = GrpcRouteRulesBackendRefsFiltersRequestHeaderModifierAdd {
            name: name.into(),
            value: value.into(),
        };
        self.request_headers(|m| m.add.get_or_insert_with(Vec::new).push(entry))
    }
}

/// A ReferenceGrant in `namespace` letting GRPCRoutes from `from_namespace` send to the
/// Service `service` (or every Service, with `None`) in `namespace`.
pub fn grant(
    namespace: &str,
    name: &str,
    from_namespace: &str,
    service: Option<&str>,
) -> ReferenceGrant {
    ReferenceGrant {
        metadata: meta(namespace, name),
        spec: ReferenceGrantSpec {
            from: vec![ReferenceGrantFrom {
                group: crate::GATEWAY_GROUP.into(),
                kind: "GRPCRoute".into(),
                namespace: from_namespace.into(),
            }],
            to: vec![ReferenceGrantTo {
                group: String::new(),
                kind: "Service".into(),
                name: service.map(Into::into),
            }],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_edits_share_one_filter_per_list() {
        let rule = Rule::new()
            .set_request_header("x-a", "1")
            .add_request_header("x-b", "2")
            .remove_request_header("x-c")
            .set_response_header("x-d", "4")
            .set_response_header("x-e", "5");
        let filters = rule.0.filters.unwrap();
        assert_eq!(filters.len(), 2, "one request and one response modifier");
        let req = filters[0].request_header_modifier.as_ref().unwrap();
        assert_eq!(req.set.as_ref().unwrap()[0].name, "x-a");
        assert_eq!(req.add.as_ref().unwrap()[0].value, "2");
        assert_eq!(req.remove.as_ref().unwrap(), &["x-c".to_string()]);
        assert_eq!(
            filters[1]
                .response_header_modifier
                .as_ref()
                .unwrap()
                .set
                .as_ref()
                .unwrap()
                .len(),
            2
        );

        let backend = Backend::service("b", 1)
            .set_request_header("x-a", "1")
            .add_request_header("x-b", "2");
        let filters = backend.0.filters.unwrap();
        assert_eq!(filters.len(), 1);
        let m = filters[0].request_header_modifier.as_ref().unwrap();
        assert_eq!(
            (m.set.as_ref().unwrap().len(), m.add.as_ref().unwrap().len()),
            (1, 1)
        );
    }

    #[test]
    fn built_objects_are_valid() {
        let resources = crate::Resources::new()
            .with(service("ns", "s").cluster_ip("10.0.0.1").port("grpc", 7070))
            .with(
                endpoints("ns", "s")
                    .port("grpc", 9000)
                    .ready("10.1.0.1".parse().unwrap())
                    .terminating("10.1.0.2".parse().unwrap()),
            )
            .with(
                route("ns", "r").parent_service("s", Some(7070)).rule(
                    Rule::new()
                        .name("a")
                        .matches(Match::method("p.S", "M").header_regex("x", "a.*"))
                        .mirror("s", 7070, 10)
                        .backend(Backend::service("s", 7070).weight(3)),
                ),
            )
            .with(grant("ns", "g", "other", None));
        let model = resources.to_model();
        assert!(model.rejected.is_empty(), "{:?}", model.rejected);
        assert_eq!(
            (
                model.services.len(),
                model.endpoint_slices.len(),
                model.routes.len(),
                model.grants.len()
            ),
            (1, 1, 1, 1)
        );
    }
}
