//! Failures, shaped like the Kubernetes `Status` object the real server answers with.

use serde_json::{Value, json};

use crate::resources::Resource;

/// A failed request, as the server reports it: an HTTP code, a machine-readable
/// `reason` (`NotFound`, `AlreadyExists`, `Conflict`, ...) and a human message.
///
/// The direct object-access methods of [`ApiServerHandle`](crate::ApiServerHandle) return
/// the same errors an HTTP client would see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} ({code}): {message}")]
pub struct ApiError {
    /// HTTP status code (404, 409, ...).
    pub code: u16,
    /// `Status.reason`, e.g. `NotFound`.
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
    /// `Status.details` (`name`, `group`, `kind`), when the error is about one object.
    details: Option<(Resource, String)>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn about(mut self, resource: Resource, name: &str) -> Self {
        self.details = Some((resource, name.to_owned()));
        self
    }

    /// 404 for a missing object, worded like the real server (`services "x" not found`).
    pub(crate) fn not_found(resource: Resource, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{resource} \"{name}\" not found")).about(resource, name)
    }

    /// 404 for a path no resource is served at.
    pub(crate) fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub(crate) fn already_exists(resource: Resource, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{resource} \"{name}\" already exists"),
        )
        .about(resource, name)
    }

    /// 409 for a stale `resourceVersion` (optimistic concurrency) or a failed precondition.
    pub(crate) fn conflict(resource: Resource, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {resource} \"{name}\": {why}"),
        )
        .about(resource, name)
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 422, as the real server answers a structurally invalid object.
    pub(crate) fn invalid(resource: Resource, name: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {message}", resource.kind()),
        )
        .about(resource, name)
    }

    /// 422 for a patch that cannot be applied (a failed JSON-patch `test`, a bad path).
    pub(crate) fn invalid_patch(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }

    pub(crate) fn method_not_allowed(method: &http::Method) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource: {method}"),
        )
    }

    pub(crate) fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/merge-patch+json, application/strategic-merge-patch+json, application/json-patch+json, application/apply-patch+yaml (got {content_type:?})"
            ),
        )
    }

    /// 410 `Expired`: a resource version older than the compaction floor.
    pub(crate) fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 500, what the fault injector answers with.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some((resource, name)) = &self.details {
            status["details"] = json!({
                "name": name,
                "group": resource.group(),
                "kind": resource.plural(),
            });
        }
        status
    }
}
