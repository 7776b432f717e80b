//! [`MeshLayer`]: the mesh as a tower layer, for stacks that already have middleware.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use std::net::IpAddr;

use http::{Request, Response, uri::Authority};
use tokio::time::Instant;
use tonic::body::Body;
use tower::ServiceExt as _;
use tracing::Instrument;

use crate::{
    channel::call_span,
    deadline::Deadline,
    dispatch::{self, Core},
    route::decide as router,
    target::{Host, Target},
};

/// Routes calls whose URI authority names a Service of the mesh (`svc.ns:port`, a
/// ClusterIP, ...) and hands every other call to the wrapped service. Use it with clients
/// that set their origin (`FooClient::with_origin(svc, "http://checkout.shop:50051")`).
///
/// Which calls are the mesh's:
///
/// - never: calls without an authority, names that are no Kubernetes Service form
///   (`api.example.com`: more than two labels, not ending in `.svc[.<cluster domain>]`),
///   `localhost`, and loopback, unspecified, link-local and multicast IP addresses. These go
///   to the wrapped service at once.
/// - once the mesh has its configuration: calls whose authority names a Service (or
///   ClusterIP) of it. A two-label external name such as `example.com` that is no
///   `svc.ns` of the mesh, or an IP that is no ClusterIP, goes to the wrapped service.
/// - before the first configuration: every call that could be the mesh's by its form waits
///   for it (up to the ready timeout, or the call's own deadline), then is decided as
///   above; if none arrives, it fails `UNAVAILABLE` ("not synced") — fail closed, never
///   sent unrouted.
///
/// The wrapped service's readiness is awaited only by the calls that go to it.
#[derive(Clone)]
pub struct MeshLayer {
    core: Arc<Core>,
    /// Keeps the mesh (and the source feeding it) alive while the layer is.
    mesh: Arc<dyn Send + Sync>,
}

impl MeshLayer {
    pub(crate) fn new(core: Arc<Core>, mesh: Arc<dyn Send + Sync>) -> Self {
        Self { core, mesh }
    }
}

impl fmt::Debug for MeshLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshLayer").finish_non_exhaustive()
    }
}

impl<S> tower::Layer<S> for MeshLayer {
    type Service = Routed<S>;

    fn layer(&self, inner: S) -> Routed<S> {
        Routed {
            core: self.core.clone(),
            _mesh: self.mesh.clone(),
            inner,
        }
    }
}

/// The service [`MeshLayer`] produces.
#[derive(Clone)]
pub struct Routed<S> {
    core: Arc<Core>,
    _mesh: Arc<dyn Send + Sync>,
    inner: S,
}

impl<S> fmt::Debug for Routed<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Routed").finish_non_exhaustive()
    }
}

impl<S> tower::Service<Request<Body>> for Routed<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Whether a call goes to the wrapped service is decided per call, so its readiness
        // is awaited only by the calls that go there: calls the mesh routes never wait for
        // it (nor fail with its errors).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let core = self.core.clone();
        let inner = self.inner.clone();
        let Some((target, authority)) = claim(&req, &core.cluster_domain) else {
            return Box::pin(inner.oneshot(req));
        };
        Box::pin(async move {
            let deadline = Deadline::of(req.headers(), core.default_timeout, Instant::now());
            match core.snapshot(deadline).await {
                Ok(snapshot) => {
                    // After the first configuration, the configuration decides: a Service
                    // (or ClusterIP) it has is the mesh's, anything else is not.
                    if router::frontend(&snapshot.table, &target, &core.namespace).is_err() {
                        return inner.oneshot(req).await;
                    }
                    let span = call_span(authority.as_str());
                    Ok(dispatch::route(&core, &target, &authority, req)
                        .instrument(span)
                        .await)
                }
                // No configuration yet: a call that may be the mesh's fails closed rather
                // than leave the mesh unrouted.
                Err(error) => Ok(dispatch::refuse(&core, error)),
            }
        })
    }
}

/// The target of a call whose authority could name a Service of the mesh: `svc`,
/// `svc.ns`, `svc.ns.svc[.<cluster domain>]`, or an IP address that could be a ClusterIP.
/// `None` for every other call: no authority, names of other forms (`api.example.com`),
/// `localhost`, and loopback, unspecified, link-local and multicast addresses. Whether a
/// claimed call is the mesh's is then decided by the configuration, once there is one.
fn claim(req: &Request<Body>, cluster_domain: &str) -> Option<(Target, Authority)> {
    let authority = req.uri().authority()?;
    let target = Target::parse_authority(authority.as_str(), cluster_domain).ok()?;
    let never = match &target.host {
        Host::Service { name, namespace } => name == "localhost" && namespace.is_none(),
        Host::ClusterIp(ip) => {
            ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_multicast()
                || match ip {
                    IpAddr::V4(v4) => v4.is_link_local() || v4.is_broadcast(),
                    IpAddr::V6(v6) => v6.is_unicast_link_local(),
                }
        }
        // Not an authority form; listeners are reached through `Mesh::channel`.
        Host::Listener(_) => true,
    };
    (!never).then(|| (target, authority.clone()))
}
