//! Why a call failed before (or while) reaching a backend, and the gRPC status the caller
//! sees for it.

use std::time::Duration;

use tonic::{Code, Status};

/// A routing or delivery failure. Every variant maps to one gRPC code (see
/// [`CallError::code`]); the message names the Service, route, rule and backend involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No configuration has arrived from the source yet; the call waited for it.
    /// `UNAVAILABLE`.
    #[error("the mesh has not synced its configuration (waited {waited:?}){}", last_error.as_ref().map(|e| format!("; last source error: {e}")).unwrap_or_default())]
    NotSynced {
        /// How long the call waited.
        waited: Duration,
        /// The source's last error, if it reported one.
        last_error: Option<String>,
    },
    /// The target names no known Service. `UNAVAILABLE`.
    #[error("Service {service} not found")]
    UnknownService {
        /// `namespace/name`, or the ClusterIP.
        service: String,
    },
    /// The Service has no such port. `UNAVAILABLE`.
    #[error("Service {service} has no port {port}")]
    UnknownPort {
        /// `namespace/name`.
        service: String,
        /// The port asked for.
        port: u16,
    },
    /// The target gave no port and the Service has several. `UNAVAILABLE`.
    #[error("Service {service} has {ports} ports; the target must name one")]
    AmbiguousPort {
        /// `namespace/name`.
        service: String,
        /// How many ports the Service has.
        ports: usize,
    },
    /// Routes are attached to the Service but no rule matches the call. `UNIMPLEMENTED`.
    #[error(
        "no rule of the {set} GRPCRoutes attached to Service {frontend} ({routes}) matches {path}"
    )]
    NoMatch {
        /// `namespace/name:port`.
        frontend: String,
        /// `producer` or `consumer`.
        set: &'static str,
        /// The routes of the set, comma-separated.
        routes: std::sync::Arc<str>,
        /// The call's `:path`.
        path: String,
    },
    /// The matched rule has no backendRefs. `UNIMPLEMENTED`.
    #[error("{rule} has no backendRefs")]
    NoBackends {
        /// The route and rule.
        rule: String,
    },
    /// Every backendRef of the matched rule has weight 0. `UNAVAILABLE`.
    #[error("{rule}: every backendRef has weight 0")]
    AllWeightsZero {
        /// The route and rule.
        rule: String,
    },
    /// The backendRef picked for this call is invalid. `UNAVAILABLE`.
    #[error("{rule} backendRef {backend} is invalid ({reason}): {message}")]
    InvalidBackend {
        /// The route and rule.
        rule: String,
        /// `namespace/name:port` of the backendRef.
        backend: String,
        /// The `ResolvedRefs` reason (`BackendNotFound`, `InvalidKind`, ...).
        reason: &'static str,
        /// Details.
        message: String,
    },
    /// A filter on the call's path cannot be applied. `UNAVAILABLE`.
    #[error("{place}: {detail}")]
    UnsupportedFilter {
        /// The route and rule (and backendRef).
        place: String,
        /// Which filter, and why.
        detail: String,
    },
    /// The chosen backend cannot take calls under the configuration in force: a
    /// BackendTLSPolicy applies to it that cannot be honoured (an invalid policy, a CA
    /// ConfigMap missing or without `ca.crt`). The call is not sent, in plaintext or
    /// otherwise. `UNAVAILABLE`.
    #[error("backend {backend} is invalid: {message}")]
    BackendUnusable {
        /// `namespace/name:port`.
        backend: String,
        /// Why, naming the policy and the object at fault.
        message: String,
    },
    /// The chosen backend has no ready endpoints. `UNAVAILABLE`.
    #[error("backend {backend}{via} has no ready endpoints")]
    NoEndpoints {
        /// `namespace/name:port`.
        backend: String,
        /// Which rule chose it, if any.
        via: String,
    },
    /// No endpoint of the backend could be connected to; the call never left the client.
    /// `UNAVAILABLE`.
    #[error(
        "backend {backend}: no endpoint could be reached ({attempts} tried; last error: {last_error})"
    )]
    Unreachable {
        /// `namespace/name:port`.
        backend: String,
        /// How many endpoints were tried.
        attempts: usize,
        /// The last connect error.
        last_error: String,
    },
    /// The xDS listener the target names cannot be used (it does not exist, was rejected,
    /// or the control plane was unreachable before it arrived). `UNAVAILABLE`.
    #[error("xDS listener {listener}: {message}")]
    XdsUnavailable {
        /// The listener.
        listener: String,
        /// Why.
        message: String,
    },
    /// No route of the listener's virtual host matches the call (gRFC A28). `UNAVAILABLE`.
    #[error("xDS listener {listener}: no route of virtual host {virtual_host:?} matches {path}")]
    XdsNoRoute {
        /// The listener.
        listener: String,
        /// The virtual host.
        virtual_host: String,
        /// The call's `:path`.
        path: String,
    },
    /// The matching route does not forward (gRFC A28: "matched route does not have a
    /// supported route action type"). `UNAVAILABLE`.
    #[error("xDS listener {listener}: {route} matched, but it does not forward to a cluster")]
    XdsNonForwarding {
        /// The listener.
        listener: String,
        /// The route.
        route: String,
    },
    /// The cluster picked cannot be used. `UNAVAILABLE`.
    #[error("xDS cluster {cluster} ({route}): {message}")]
    XdsClusterUnavailable {
        /// The cluster.
        cluster: String,
        /// The route that picked it.
        route: String,
        /// Why.
        message: String,
    },
    /// The backend already has its limit of calls in flight (xDS circuit breaking,
    /// `max_requests`); the call is not sent, nor retried. `UNAVAILABLE`.
    #[error(
        "backend {backend}: {max_requests} calls in flight, the circuit breaker's limit (max_requests)"
    )]
    Overloaded {
        /// The backend.
        backend: String,
        /// Its limit.
        max_requests: u32,
    },
    /// The call's deadline passed (its `grpc-timeout`, or the mesh's default timeout) while
    /// the mesh was still working on it. `DEADLINE_EXCEEDED`.
    #[error("deadline of {timeout:?} exceeded while {during}")]
    DeadlineExceeded {
        /// The call's timeout.
        timeout: Duration,
        /// Where the time went: what the mesh was waiting for when it ran out.
        during: String,
    },
    /// The call reached an endpoint and the connection failed under it. The code follows
    /// gRPC's HTTP/2 error mapping (`UNAVAILABLE` for a lost connection).
    #[error("endpoint {endpoint}: {message}")]
    Transport {
        /// The endpoint address.
        endpoint: String,
        /// The gRPC code.
        code: Code,
        /// Details.
        message: String,
    },
}

impl CallError {
    /// The gRPC code the caller gets.
    pub fn code(&self) -> Code {
        match self {
            Self::NoMatch { .. } | Self::NoBackends { .. } => Code::Unimplemented,
            Self::NotSynced { .. }
            | Self::UnknownService { .. }
            | Self::UnknownPort { .. }
            | Self::AmbiguousPort { .. }
            | Self::AllWeightsZero { .. }
            | Self::InvalidBackend { .. }
            | Self::BackendUnusable { .. }
            | Self::UnsupportedFilter { .. }
            | Self::NoEndpoints { .. }
            | Self::Unreachable { .. }
            | Self::Overloaded { .. }
            | Self::XdsUnavailable { .. }
            | Self::XdsNoRoute { .. }
            | Self::XdsNonForwarding { .. }
            | Self::XdsClusterUnavailable { .. } => Code::Unavailable,
            Self::DeadlineExceeded { .. } => Code::DeadlineExceeded,
            Self::Transport { code, .. } => *code,
        }
    }
}

impl From<CallError> for Status {
    fn from(e: CallError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

impl From<&CallError> for Status {
    fn from(e: &CallError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_spec() {
        let no_match = CallError::NoMatch {
            frontend: "shop/checkout:50051".into(),
            set: "producer",
            routes: "shop/split".into(),
            path: "/pkg.Svc/M".into(),
        };
        assert_eq!(Status::from(&no_match).code(), Code::Unimplemented);
        assert!(no_match.to_string().contains("shop/split"));
        assert_eq!(
            CallError::NoBackends { rule: "r".into() }.code(),
            Code::Unimplemented
        );
        assert_eq!(
            CallError::AllWeightsZero { rule: "r".into() }.code(),
            Code::Unavailable
        );
        let invalid = CallError::InvalidBackend {
            rule: "GRPCRoute shop/split rule 0".into(),
            backend: "shop/gone:50051".into(),
            reason: "BackendNotFound",
            message: "Service shop/gone not found".into(),
        };
        let status = Status::from(invalid);
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("GRPCRoute shop/split rule 0"));
        assert!(status.message().contains("shop/gone:50051"));
    }
}
