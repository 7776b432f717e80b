//! [`MeshLayer`]: the mesh as a tower layer, for stacks that already have middleware.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tonic::body::Body;
use tracing::Instrument;

use crate::{
    channel::call_span,
    dispatch::{self, Core},
    route::decide as router,
    target::Target,
};

/// Routes calls whose URI authority names a Service of the mesh (`svc.ns:port`, a
/// ClusterIP, ...) and hands every other call to the wrapped service. Use it with clients
/// that set their origin (`FooClient::with_origin(svc, "http://checkout.shop:50051")`).
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

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The call may go to `inner`, so it must be ready.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let core = self.core.clone();
        let target = req.uri().authority().and_then(|a| {
            Target::parse(a.as_str(), &core.cluster_domain)
                .ok()
                .map(|t| (t, a.clone()))
        });
        // Keep the service that was polled ready; leave a clone for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some((target, authority)) = target else {
            return Box::pin(inner.call(req));
        };
        Box::pin(async move {
            // Only a target that names a Service of the mesh is the mesh's to route.
            let ours = match core.snapshot().await {
                Ok(snapshot) => router::frontend(&snapshot.table, &target, &core.namespace).is_ok(),
                Err(_) => false,
            };
            if !ours {
                return inner.call(req).await;
            }
            let span = call_span(authority.as_str());
            Ok(dispatch::route(&core, &target, &authority, req)
                .instrument(span)
                .await)
        })
    }
}
