//! [`Channel`]: a tower service for one Service target, usable by tonic clients.

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response, uri::Authority};
use tonic::body::Body;
use tracing::Instrument;

use crate::{
    dispatch::{self, Core},
    target::Target,
};

/// A channel to one Service of the mesh. Pass it to a tonic-generated client
/// (`FooClient::new(channel)`); clone it freely, clones share everything.
///
/// Routing failures are answered the way a proxy would answer them: with a gRPC status
/// (`UNIMPLEMENTED`, `UNAVAILABLE`) whose message names the route, rule and backend. The
/// service itself never fails.
#[derive(Clone)]
pub struct Channel {
    core: Arc<Core>,
    /// Keeps the mesh (and the source feeding it) alive while the channel is.
    _mesh: Arc<dyn Send + Sync>,
    target: Arc<ChannelTarget>,
}

struct ChannelTarget {
    target: Target,
    authority: Authority,
    label: String,
    _interest: Option<Arc<dyn Send + Sync>>,
}

impl Channel {
    /// A channel to `target`. `mesh` (and `interest`, e.g. a watched xDS listener) are
    /// kept alive as long as the channel.
    pub(crate) fn new(
        core: Arc<Core>,
        mesh: Arc<dyn Send + Sync>,
        target: Target,
        interest: Option<Arc<dyn Send + Sync>>,
    ) -> Self {
        let label = target.to_string();
        // A parsed Service target always renders as a valid authority; an xDS listener's
        // name is the authority its calls carry (gRFC A27).
        let authority = match &target.host {
            crate::target::Host::Listener(name) => Authority::try_from(name.as_str()),
            _ => Authority::try_from(label.as_str()),
        }
        .unwrap_or_else(|_| Authority::from_static("localhost"));
        Self {
            core,
            _mesh: mesh,
            target: Arc::new(ChannelTarget {
                target,
                authority,
                label,
                _interest: interest,
            }),
        }
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("target", &self.target.label)
            .finish_non_exhaustive()
    }
}

impl tower::Service<Request<Body>> for Channel {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Every call is routed independently; readiness is per endpoint, decided per call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let core = self.core.clone();
        let target = self.target.clone();
        let span = call_span(&target.label);
        ResponseFuture {
            inner:
                Box::pin(
                    async move {
                        Ok(dispatch::route(&core, &target.target, &target.authority, req).await)
                    }
                    .instrument(span),
                ),
        }
    }
}

pub(crate) fn call_span(frontend: &str) -> tracing::Span {
    // No span at all unless a subscriber wants INFO here: tracing's disabled-span path
    // still renders the fields for the `log` crate when tracing's `log` feature is on (a
    // dependency turns it on), a visible share of a routed call's CPU (issue 10).
    if !tracing::enabled!(tracing::Level::INFO) {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "grpc_call",
        frontend,
        route = tracing::field::Empty,
        rule = tracing::field::Empty,
        backend = tracing::field::Empty,
        endpoint = tracing::field::Empty,
    )
}

/// The future of a [`Channel`] call.
pub struct ResponseFuture {
    inner: Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>,
}

impl Future for ResponseFuture {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
