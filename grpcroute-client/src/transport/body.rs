//! The response body of a routed call: keeps the endpoint's outstanding-call count until
//! the stream ends, and turns transport errors into gRPC statuses.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use super::Endpoint;
use crate::deadline::Deadline;
use crate::series::{Meter, status_in_trailers};

/// How a call ended, for failure accrual.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It ended with this gRPC status.
    Status(tonic::Code),
    /// Its connection could not be made, or broke under it.
    Broken,
}

/// Where a call's outcome is reported (its backend's failure accrual).
pub(crate) trait OutcomeSink: Send + Sync + std::fmt::Debug {
    fn call_ended(&self, endpoint: &Endpoint, outcome: Outcome);
}

/// Releases an endpoint's probe if the call that holds it ends without an outcome
/// (cancelled by its caller).
#[derive(Debug)]
pub(crate) struct ProbeGuard(pub(crate) Arc<Endpoint>);

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        self.0.health.end_probe();
    }
}

/// Holds one unit of a counter (e.g. a backend's calls in flight) until dropped.
#[derive(Debug)]
pub(crate) struct CountGuard(Arc<std::sync::atomic::AtomicU32>);

impl CountGuard {
    /// A guard for a unit the caller already added to `counter`.
    pub(crate) fn counted(counter: Arc<std::sync::atomic::AtomicU32>) -> Self {
        Self(counter)
    }
}

impl Drop for CountGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Counts one outstanding call on an endpoint until dropped.
#[derive(Debug)]
pub(crate) struct LoadGuard(Arc<Endpoint>);

impl LoadGuard {
    pub(crate) fn new(endpoint: Arc<Endpoint>) -> Self {
        endpoint.load.start();
        Self(endpoint)
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.load.finish();
    }
}

/// How long a response body may take to its end, and what to say when it takes longer.
#[derive(Debug)]
pub(crate) struct BodyDeadline {
    pub(crate) deadline: Deadline,
    pub(crate) during: String,
}

/// A response body from an endpoint.
#[derive(Debug)]
pub(crate) struct ResponseBody {
    /// `None` once the body failed or its deadline passed: dropping the stream resets it
    /// (`RST_STREAM(CANCEL)`), which tells the server to stop.
    inner: Option<Incoming>,
    guard: Option<LoadGuard>,
    // Records the call's status when the trailers bring it (or CANCELLED if the caller
    // drops the body first).
    meter: Option<Meter>,
    deadline: Option<(Pin<Box<Sleep>>, BodyDeadline)>,
    /// A place the call holds until its response ends (the backend's circuit breaker).
    held: Option<CountGuard>,
    /// Where the call's outcome goes (failure accrual), when the trailers bring it.
    sink: Option<(Arc<dyn OutcomeSink>, Option<ProbeGuard>)>,
}

impl ResponseBody {
    pub(crate) fn new(
        inner: Incoming,
        guard: LoadGuard,
        meter: Option<Meter>,
        deadline: Option<BodyDeadline>,
    ) -> Self {
        Self {
            inner: Some(inner),
            guard: Some(guard),
            meter,
            deadline: deadline.map(|d| (Box::pin(tokio::time::sleep_until(d.deadline.at())), d)),
            held: None,
            sink: None,
        }
    }

    /// Reports the call's outcome to `sink` when it comes.
    pub(crate) fn reporting(
        mut self,
        sink: Option<Arc<dyn OutcomeSink>>,
        probe: Option<ProbeGuard>,
    ) -> Self {
        self.sink = sink.map(|s| (s, probe));
        self
    }

    fn report(&mut self, outcome: Outcome) {
        if let (Some((sink, _probe)), Some(guard)) = (self.sink.take(), &self.guard) {
            sink.call_ended(&guard.0, outcome);
        }
    }

    /// Holds `guard` until the response ends.
    pub(crate) fn holding(mut self, guard: Option<CountGuard>) -> Self {
        self.held = guard;
        self
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if polled.is_pending()
            && let Some((sleep, d)) = &mut this.deadline
            && sleep.as_mut().poll(cx).is_ready()
        {
            let status = tonic::Status::deadline_exceeded(format!(
                "deadline of {:?} exceeded while {}",
                d.deadline.timeout(),
                d.during
            ));
            this.report(Outcome::Status(status.code()));
            this.inner = None;
            this.guard = None;
            this.held = None;
            if let Some(meter) = this.meter.take() {
                meter.finish(status.code());
            }
            return Poll::Ready(Some(Err(status)));
        }
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = status_in_trailers(trailers);
                    this.report(Outcome::Status(code));
                    if let Some(meter) = this.meter.take() {
                        meter.finish(code);
                    }
                }
            }
            // The stream is over: the call no longer loads the endpoint.
            Poll::Ready(None) => {
                // Ended without trailers: no status came.
                this.report(Outcome::Status(tonic::Code::Unknown));
                this.guard.take();
                this.held.take();
                this.deadline = None;
                // Ended without trailers: no status came.
                if let Some(meter) = this.meter.take() {
                    meter.finish(tonic::Code::Unknown);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                this.report(Outcome::Broken);
                this.guard.take();
                this.held.take();
                this.deadline = None;
            }
            Poll::Pending => {}
        }
        polled.map(|frame| {
            frame.map(|r| {
                r.map_err(|e| {
                    let status = status_from_hyper(&e);
                    if let Some(meter) = this.meter.take() {
                        meter.finish(status.code());
                    }
                    status
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}

/// Maps a transport error to the gRPC status the gRPC spec's HTTP/2 mapping gives it
/// (`doc/PROTOCOL-HTTP2.md`, "Errors").
pub(crate) fn status_from_hyper(error: &hyper::Error) -> tonic::Status {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            // A stream above the last one a server going away accepted was never processed:
            // "Clients should consider [it] as UNAVAILABLE and retry the call elsewhere."
            if h2.is_go_away() && h2.is_remote() {
                return tonic::Status::unavailable(format!(
                    "the server is going away and refused the stream: {h2}"
                ));
            }
            // A connection error this client detected (the peer sent what is not HTTP/2,
            // e.g. a TLS server's alert to a plaintext client): the connection broke, as
            // gRPC's clients report it (UNAVAILABLE), not a stream the server failed.
            if h2.is_go_away() && h2.is_library() {
                return tonic::Status::unavailable(format!("the connection broke: {h2}"));
            }
            if let Some(reason) = h2.reason() {
                let code = match reason {
                    h2::Reason::REFUSED_STREAM => tonic::Code::Unavailable,
                    h2::Reason::CANCEL => tonic::Code::Cancelled,
                    h2::Reason::ENHANCE_YOUR_CALM => tonic::Code::ResourceExhausted,
                    h2::Reason::INADEQUATE_SECURITY => tonic::Code::PermissionDenied,
                    _ => tonic::Code::Internal,
                };
                return tonic::Status::new(code, format!("HTTP/2 stream error: {h2}"));
            }
            if h2.is_io() {
                break;
            }
        }
        source = e.source();
    }
    if error.is_canceled() {
        return tonic::Status::cancelled(format!("call cancelled: {error}"));
    }
    tonic::Status::unavailable(format!("connection error: {error}"))
}
