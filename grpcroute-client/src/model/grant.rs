use super::ObjectKey;

/// A ReferenceGrant: lets objects of the `from` kinds in other namespaces refer to the `to`
/// objects in the grant's namespace.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ReferenceGrant {
    pub(crate) key: ObjectKey,
    pub(crate) from: Vec<GrantFrom>,
    pub(crate) to: Vec<GrantTo>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GrantFrom {
    pub(crate) group: String,
    pub(crate) kind: String,
    pub(crate) namespace: String,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GrantTo {
    pub(crate) group: String,
    pub(crate) kind: String,
    /// `None` grants every object of the kind.
    pub(crate) name: Option<String>,
}

impl ReferenceGrant {
    /// Whether this grant lets a GRPCRoute in `from_namespace` refer to Service `service`
    /// in the grant's namespace.
    pub(crate) fn permits_route_to_service(&self, from_namespace: &str, service: &str) -> bool {
        let from = self.from.iter().any(|f| {
            f.group == crate::GATEWAY_GROUP
                && f.kind == "GRPCRoute"
                && f.namespace == from_namespace
        });
        let to = self.to.iter().any(|t| {
            t.group.is_empty()
                && t.kind == "Service"
                && t.name.as_deref().is_none_or(|n| n == service)
        });
        from && to
    }
}
