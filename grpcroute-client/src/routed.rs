//! [`RoutedTo`]: where the mesh sent a call, attached to its response so that callers (and
//! tools such as the `grpcroute call` command) can tally the distribution they observe.

use std::{fmt, net::SocketAddr};

use crate::model::ObjectKey;

/// Where the mesh sent a call. When the mesh is built with
/// [`MeshBuilder::report_routing`](crate::MeshBuilder::report_routing),
/// [`Channel`](crate::Channel) and [`MeshLayer`](crate::MeshLayer) insert one into the
/// extensions of every response they route, including the status responses of calls that
/// failed inside the mesh.
///
/// ```no_run
/// # async fn example(mesh: grpcroute_client::Mesh) -> Result<(), Box<dyn std::error::Error>> {
/// use grpcroute_client::RoutedTo;
/// use tower::ServiceExt;
///
/// let channel = mesh.channel("checkout.shop:50051")?;
/// # let request = http::Request::new(tonic::body::Body::empty());
/// let response = channel.oneshot(request).await?;
/// if let Some(routed) = response.extensions().get::<RoutedTo>() {
///     println!("backend {:?}, endpoint {:?}", routed.backend, routed.endpoint);
/// }
/// # Ok(()) }
/// ```
///
/// With tonic clients the extension reaches `tonic::Response::extensions()` of successful
/// calls; a failed call's `tonic::Status` carries no extensions, so read it from the HTTP
/// response (for instance with `tower::ServiceExt::map_response` around the channel).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoutedTo {
    /// The GRPCRoute whose rule took the call; `None` for a pass-through call (no route
    /// attached) and for a call that matched no rule or named no known Service.
    pub route: Option<ObjectKey>,
    /// The 0-based index of that rule in the route.
    pub rule: Option<usize>,
    /// The backend picked by weight (for a pass-through call, the Service called); `None`
    /// when the call failed before a backend was picked. A picked backend that is invalid
    /// or has no endpoints is reported here too: it is the one that failed the call.
    pub backend: Option<BackendService>,
    /// The endpoint the call was sent to; `None` when it never reached one.
    pub endpoint: Option<SocketAddr>,
    /// For a call to an xDS listener: the cluster picked (`route` and `backend` are then
    /// `None`, and `rule` is the index of the route in its virtual host).
    pub cluster: Option<String>,
}

/// A Service port that calls are sent to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendService {
    /// The Service.
    pub service: ObjectKey,
    /// Its port, as the backendRef names it.
    pub port: Option<u16>,
}

impl fmt::Display for BackendService {
    /// `namespace/name:port` (or `namespace/name` without a port), as in error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.service),
            None => write!(f, "{}", self.service),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_displays_like_error_messages() {
        let b = BackendService {
            service: ObjectKey::new("shop", "checkout-v2"),
            port: Some(50051),
        };
        assert_eq!(b.to_string(), "shop/checkout-v2:50051");
        let b = BackendService { port: None, ..b };
        assert_eq!(b.to_string(), "shop/checkout-v2");
    }
}
