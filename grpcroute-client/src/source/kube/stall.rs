//! Stall detection: a request to the API server that stays open but delivers nothing is
//! abandoned, so that the watcher starts it again.
//!
//! A healthy watch is never silent for long: besides its events, the API server sends a
//! BOOKMARK to every watch that asks for them (kube-rs's watcher does) about once a minute
//! (Kubernetes 1.27 and later). A watch that delivers neither — a stuck connection, a
//! proxy or API server instance that stopped forwarding — would otherwise keep the mesh
//! on a stale configuration until the watch's server-side timeout (kube-rs: 290 s, plus
//! 5 s of its own idle margin), with nothing in the source's health to show for it.
//!
//! The source's client is wrapped: every response must start within the bound, and its
//! body must deliver something (an event, a bookmark, a chunk of a list) at least once
//! per bound. Otherwise the request fails with [`Stalled`]; the watcher reports the error
//! (logged, and in [`Mesh::source_health`](crate::Mesh::source_health) as its last error)
//! and re-watches from the last resource version it saw, after its backoff.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use kube::Client;
use tokio::time::{Instant, Sleep, sleep};
use tower::BoxError;

/// A request that received nothing from the API server for the bound.
#[derive(Debug, thiserror::Error)]
#[error("{request} stalled: nothing from the API server for {bound:?} (no {expected})")]
pub(super) struct Stalled {
    /// `watch of <path>`, or `<METHOD> <path>`.
    request: String,
    bound: Duration,
    /// What should have arrived.
    expected: &'static str,
}

/// `client`, with every request bounded by `bound` of silence. A zero `bound` leaves the
/// client as it is.
pub(super) fn guard(client: Client, bound: Duration) -> Client {
    if bound.is_zero() {
        return client;
    }
    let default_namespace = client.default_namespace().to_string();
    let service = tower::service_fn(move |request: Request<kube::client::Body>| {
        let client = client.clone();
        async move {
            let name = describe(&request);
            match tokio::time::timeout(bound, client.send(request)).await {
                Err(_) => {
                    tracing::warn!(request = %name, ?bound, "API request got no response; abandoning it");
                    Err(BoxError::from(Stalled {
                        request: name,
                        bound,
                        expected: "response",
                    }))
                }
                Ok(Err(error)) => Err(BoxError::from(error)),
                Ok(Ok(response)) => Ok(response.map(|body| IdleBody::new(body, bound, name))),
            }
        }
    });
    Client::new(service, default_namespace)
}

/// `watch of /apis/…/endpointslices` for watches (the query says `watch=true` or `1`),
/// `GET /apis/…` for the rest.
fn describe<B>(request: &Request<B>) -> String {
    let uri = request.uri();
    let watch = uri.query().is_some_and(|q| {
        q.split('&')
            .any(|pair| pair == "watch=true" || pair == "watch=1")
    });
    if watch {
        format!("watch of {}", uri.path())
    } else {
        format!("{} {}", request.method(), uri.path())
    }
}

pin_project_lite::pin_project! {
    /// A response body that fails with [`Stalled`] when no frame arrived for `bound`.
    struct IdleBody<B> {
        #[pin]
        inner: B,
        #[pin]
        idle: Sleep,
        bound: Duration,
        request: String,
        stalled: bool,
    }
}

impl<B> IdleBody<B> {
    fn new(inner: B, bound: Duration, request: String) -> Self {
        Self {
            inner,
            idle: sleep(bound),
            bound,
            request,
            stalled: false,
        }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if *this.stalled {
            // Ended by the stall; the connection is dropped with the body.
            return Poll::Ready(None);
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.idle.as_mut().reset(Instant::now() + *this.bound);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(this.idle.poll(cx));
                *this.stalled = true;
                let expected = if this.request.starts_with("watch") {
                    "event, no bookmark"
                } else {
                    "data"
                };
                tracing::warn!(request = %this.request, bound = ?*this.bound, "API response stalled; abandoning it so that it is retried");
                Poll::Ready(Some(Err(BoxError::from(Stalled {
                    request: std::mem::take(this.request),
                    bound: *this.bound,
                    expected,
                }))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stalled || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::{BodyExt as _, StreamBody};

    use super::*;

    fn frames(
        rx: tokio::sync::mpsc::Receiver<Bytes>,
    ) -> impl Body<Data = Bytes, Error = Infallible> {
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            let bytes = rx.recv().await?;
            Some((Ok::<_, Infallible>(Frame::data(bytes)), rx))
        });
        StreamBody::new(stream)
    }

    #[tokio::test(start_paused = true)]
    async fn every_frame_restarts_the_bound_and_silence_ends_the_body() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let bound = Duration::from_secs(90);
        let mut body = std::pin::pin!(IdleBody::new(
            frames(rx),
            bound,
            "watch of /api/v1/services".into()
        ));
        let start = Instant::now();
        for _ in 0..3 {
            // A bookmark every 60 s keeps a watch alive well past the bound.
            tokio::time::sleep(Duration::from_secs(60)).await;
            tx.send(Bytes::from_static(b"{\"type\":\"BOOKMARK\"}\n"))
                .await
                .unwrap();
            let frame = body.frame().await.unwrap().unwrap();
            assert!(frame.is_data());
        }
        let silent_from = Instant::now();
        let error = body.frame().await.unwrap().unwrap_err();
        assert_eq!(silent_from.elapsed(), bound, "stalled exactly at the bound");
        assert!(start.elapsed() > Duration::from_secs(180));
        let stalled = error.downcast_ref::<Stalled>().expect("a Stalled error");
        assert_eq!(
            stalled.to_string(),
            "watch of /api/v1/services stalled: nothing from the API server for 90s (no event, no bookmark)"
        );
        assert!(
            body.frame().await.is_none(),
            "the body ends after the stall"
        );
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn a_request_without_a_response_fails_at_the_bound() {
        let server = grpcroute_test_apiserver::ApiServer::start().await;
        let bound = Duration::from_millis(300);
        let client = guard(server.client().unwrap(), bound);
        client.apiserver_version().await.expect("answered");
        server.stall_requests(None);
        let started = Instant::now();
        let error = tokio::time::timeout(Duration::from_secs(10), client.apiserver_version())
            .await
            .expect("bounded by the stall timeout, not by this test's 10 s")
            .unwrap_err();
        let took = started.elapsed();
        assert!(took >= bound && took < Duration::from_secs(5), "{took:?}");
        assert!(
            error.to_string().contains(
                "GET /version stalled: nothing from the API server for 300ms (no response)"
            ),
            "{error}"
        );
        server.stop_stalling();
        client.apiserver_version().await.expect("answered again");
        server.shutdown().await;
    }

    #[test]
    fn watches_are_told_apart_from_other_requests() {
        let watch = Request::get("/apis/discovery.k8s.io/v1/endpointslices?resourceVersion=5&watch=true&timeoutSeconds=290")
            .body(())
            .unwrap();
        assert_eq!(
            describe(&watch),
            "watch of /apis/discovery.k8s.io/v1/endpointslices"
        );
        let list = Request::get("/api/v1/services?limit=500").body(()).unwrap();
        assert_eq!(describe(&list), "GET /api/v1/services");
    }
}
