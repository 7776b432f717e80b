//! URL paths → what they address.

use crate::error::ApiError;
use crate::resources::{ReferenceGrantVersions, Resource};

/// What a request path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/version`
    Version,
    /// `/healthz`, `/livez`, `/readyz`
    Health,
    /// `/api`
    CoreVersions,
    /// `/openapi/v3`
    OpenApiRoot,
    /// `/openapi/v3/api/v1`, `/openapi/v3/apis/{group}/{version}`
    OpenApiGroupVersion { group: String, version: String },
    /// `/apis`
    GroupList,
    /// `/apis/{group}`
    Group(String),
    /// `/api/v1`, `/apis/{group}/{version}`
    ResourceList { group: String, version: String },
    /// `.../[namespaces/{ns}/]{plural}`
    Collection(Scope),
    /// `.../[namespaces/{ns}/]{plural}/{name}[/status]`
    Object {
        scope: Scope,
        name: String,
        status: bool,
    },
}

/// A resource, the version the URL named, and the namespace (None: all namespaces, or
/// a cluster-scoped resource).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scope {
    pub(crate) resource: Resource,
    pub(crate) version: String,
    pub(crate) namespace: Option<String>,
}

impl Scope {
    pub(crate) fn api_version(&self) -> String {
        crate::resources::api_version(self.resource.group(), &self.version)
    }
}

/// Parses a path; unknown paths (including `/openapi/*`) are 404 `NotFound`.
pub(crate) fn parse(path: &str, rg: ReferenceGrantVersions) -> Result<Route, ApiError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let route = match segments.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "livez" | "readyz", ..] => Route::Health,
        ["api"] => Route::CoreVersions,
        ["openapi", "v3"] => Route::OpenApiRoot,
        ["openapi", "v3", rest @ ..] => {
            let (group, version) = crate::openapi::parse_gv(rest).ok_or_else(ApiError::no_route)?;
            Route::OpenApiGroupVersion { group, version }
        }
        ["api", "v1"] => Route::ResourceList {
            group: String::new(),
            version: "v1".into(),
        },
        ["api", "v1", rest @ ..] => resource_route("", "v1", rest, rg)?,
        ["apis"] => Route::GroupList,
        ["apis", group] if served_group(group) => Route::Group((*group).to_owned()),
        ["apis", group, version] if served_version(group, version, rg) => Route::ResourceList {
            group: (*group).to_owned(),
            version: (*version).to_owned(),
        },
        ["apis", group, version, rest @ ..] => resource_route(group, version, rest, rg)?,
        _ => return Err(ApiError::no_route()),
    };
    Ok(route)
}

fn served_group(group: &str) -> bool {
    Resource::ALL
        .iter()
        .any(|r| !r.group().is_empty() && r.group() == group)
}

fn served_version(group: &str, version: &str, rg: ReferenceGrantVersions) -> bool {
    Resource::ALL
        .iter()
        .any(|r| !r.group().is_empty() && r.group() == group && r.versions(rg).contains(&version))
}

fn resource_route(
    group: &str,
    version: &str,
    rest: &[&str],
    rg: ReferenceGrantVersions,
) -> Result<Route, ApiError> {
    // Namespaces are cluster-scoped objects at `namespaces/{name}`, which shares its
    // prefix with namespaced collections at `namespaces/{ns}/{plural}`.
    let (namespace, rest) = match rest {
        ["namespaces", _] | ["namespaces", _, "status"] if group.is_empty() => (None, rest),
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some((*ns).to_owned()), tail),
        _ => (None, rest),
    };
    let (plural, name, status) = match rest {
        [plural] => (*plural, None, false),
        [plural, name] => (*plural, Some(*name), false),
        [plural, name, "status"] => (*plural, Some(*name), true),
        _ => return Err(ApiError::no_route()),
    };
    let resource =
        Resource::from_path(group, version, plural, rg).ok_or_else(ApiError::no_route)?;
    let scope_ok = match (&namespace, resource.namespaced(), name) {
        (Some(_), false, _) => false,
        // A namespaced object needs its namespace; its collection may be cluster-wide.
        (None, true, Some(_)) => false,
        _ => true,
    };
    if !scope_ok || (status && !resource.has_status()) {
        return Err(ApiError::no_route());
    }
    let scope = Scope {
        resource,
        version: version.to_owned(),
        namespace,
    };
    Ok(match name {
        None => Route::Collection(scope),
        Some(name) => Route::Object {
            scope,
            name: name.to_owned(),
            status,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(resource: Resource, version: &str, namespace: Option<&str>) -> Scope {
        Scope {
            resource,
            version: version.into(),
            namespace: namespace.map(Into::into),
        }
    }

    #[test]
    fn paths() -> Result<(), ApiError> {
        let rg = ReferenceGrantVersions::Both;
        assert_eq!(
            parse("/api/v1/namespaces/a/services", rg)?,
            Route::Collection(scope(Resource::Services, "v1", Some("a")))
        );
        assert_eq!(
            parse("/api/v1/services", rg)?,
            Route::Collection(scope(Resource::Services, "v1", None))
        );
        assert_eq!(
            parse("/api/v1/namespaces/a", rg)?,
            Route::Object {
                scope: scope(Resource::Namespaces, "v1", None),
                name: "a".into(),
                status: false
            }
        );
        assert_eq!(
            parse("/api/v1/namespaces/a/status", rg)?,
            Route::Object {
                scope: scope(Resource::Namespaces, "v1", None),
                name: "a".into(),
                status: true
            }
        );
        assert_eq!(
            parse(
                "/apis/gateway.networking.k8s.io/v1/namespaces/n/grpcroutes/r/status",
                rg
            )?,
            Route::Object {
                scope: scope(Resource::GrpcRoutes, "v1", Some("n")),
                name: "r".into(),
                status: true
            }
        );
        assert_eq!(
            parse(
                "/apis/gateway.networking.k8s.io/v1beta1/referencegrants",
                rg
            )?,
            Route::Collection(scope(Resource::ReferenceGrants, "v1beta1", None))
        );
        assert!(
            parse(
                "/apis/gateway.networking.k8s.io/v1beta1/referencegrants",
                ReferenceGrantVersions::V1Only
            )
            .is_err()
        );
        assert!(
            parse(
                "/apis/gateway.networking.k8s.io/v1/referencegrants",
                ReferenceGrantVersions::V1Beta1Only
            )
            .is_err()
        );
        assert!(parse("/api/v1/services/x", rg).is_err());
        assert!(parse("/api/v1/namespaces/a/services/x/status/y", rg).is_err());
        assert!(
            parse(
                "/apis/discovery.k8s.io/v1/namespaces/a/endpointslices/x/status",
                rg
            )
            .is_err()
        );
        assert!(parse("/openapi/v2", rg).is_err());
        assert_eq!(
            parse("/apis/coordination.k8s.io", rg)?,
            Route::Group("coordination.k8s.io".into())
        );
        Ok(())
    }
}
