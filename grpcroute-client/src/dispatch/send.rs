//! Sending a call to one of a backend's endpoints: the balancer's pick, the connection,
//! the retries a call may safely have, and the load the call puts on its endpoint.

use std::{net::SocketAddr, sync::Arc};

use http::{HeaderMap, Request, Response};
use tonic::body::Body;
use tracing::Span;

use super::Core;
use crate::{
    backend::{Backend, Pick},
    deadline::{Deadline, GRPC_TIMEOUT},
    error::CallError,
    series::{CallMeter, status_in_headers},
    transport::{
        BodyDeadline, LoadGuard, Outcome, OutcomeSink, ProbeGuard, Replay, ResponseBody, refused,
    },
};

/// Attempts per call (connects that fail, streams refused unprocessed), over distinct
/// endpoints of the chosen backend.
const MAX_CONNECT_ATTEMPTS: usize = 4;

/// Sends on an endpoint of `backend`, trying other endpoints when one cannot be connected
/// to or refuses the stream unprocessed. A call is only ever retried if it never reached
/// the server's application. `reached` is set to the endpoint the call was sent to; the
/// response body takes `meter` when the call's status is still to come in its trailers.
///
/// `deadline` bounds every step (each connect, each attempt, the response headers, and the
/// response body to its end); when it passes, the call fails `DEADLINE_EXCEEDED` naming
/// the step, and the stream, if one was opened, is reset (`RST_STREAM(CANCEL)`) so the
/// server stops working on it.
pub(crate) async fn send(
    core: &Core,
    backend: &Arc<Backend>,
    mut req: Request<Body>,
    reached: &mut Option<SocketAddr>,
    mut meter: Option<&mut CallMeter<'_>>,
    deadline: Option<Deadline>,
) -> Result<Response<Body>, CallError> {
    if let Some(reason) = &*backend.unusable() {
        return Err(CallError::BackendUnusable {
            backend: backend.label().to_string(),
            message: reason.to_string(),
        });
    }
    let expired = |during: String| {
        move |d: Deadline| CallError::DeadlineExceeded {
            timeout: d.timeout(),
            during,
        }
    };
    // Addresses this call already tried; a fixed array keeps the path free of allocation.
    let mut tried = [None::<SocketAddr>; MAX_CONNECT_ATTEMPTS];
    let mut attempts = 0;
    let mut last_error: Option<String> = None;
    let replay = Replay::capture(&mut req);
    // The circuit breaker (xDS `max_requests`): a call over the limit fails at once and
    // is not retried (gRFC A32). The place is held until the response ends.
    let policy = backend.endpoints().policy();
    let mut admitted = backend
        .admit(policy)
        .map_err(|max_requests| CallError::Overloaded {
            backend: backend.label().to_string(),
            max_requests,
        })?;
    loop {
        // Re-read on every attempt: an endpoint update may have replaced the set since the
        // call started (the endpoints it tried may be gone, new ones may have come).
        let picked = if attempts >= MAX_CONNECT_ATTEMPTS {
            if backend.endpoints().all().is_empty() {
                Pick::NoEndpoints
            } else {
                Pick::NoneUsable
            }
        } else {
            backend.pick_endpoint(&mut core.rng.handle(), |e| {
                tried[..attempts].contains(&Some(e.addr()))
            })
        };
        let (endpoint, now) = match picked {
            Pick::Endpoint(endpoint, now) => (endpoint, now),
            Pick::NoEndpoints => {
                return Err(CallError::NoEndpoints {
                    backend: backend.label().to_string(),
                    via: String::new(),
                });
            }
            Pick::NoneUsable => return Err(CallError::Unreachable {
                backend: backend.label().to_string(),
                attempts,
                last_error: last_error.unwrap_or_else(|| {
                    // Say why, or every call during a backoff would hide the cause (a TLS
                    // verification failure, say) that only the first one saw.
                    match backend
                        .endpoints()
                        .all()
                        .iter()
                        .find_map(|e| e.last_failure().map(|f| (e.addr(), f)))
                    {
                        Some((addr, failure)) => format!(
                            "every endpoint is backing off after failed connects, or ejected after failed calls; last: {addr}: {failure}"
                        ),
                        None => "every endpoint is backing off after failed connects, or ejected after failed calls".into(),
                    }
                }),
            }),
        };
        tried[attempts] = Some(endpoint.addr());
        attempts += 1;
        // An ejected endpoint whose back-off is over takes one call, its probe: claim it,
        // or leave the endpoint to the call that did. The guard releases the probe if this
        // call ends without an outcome.
        let probe = if endpoint.health.ejected_until() == 0 {
            None
        } else if endpoint.health.claim_probe(now) {
            Some(ProbeGuard(endpoint.clone()))
        } else {
            continue;
        };
        let connecting = within(deadline, endpoint.connection()).await.map_err(|d| {
            expired(format!(
                "connecting to endpoint {} of backend {}",
                endpoint.addr(),
                backend.label()
            ))(d)
        })?;
        let conn = match connecting {
            Ok(conn) => conn,
            Err(error) => {
                tracing::debug!(endpoint = %endpoint.addr(), %error, "endpoint unreachable; trying another");
                if error.is_failure() {
                    backend.record(&endpoint, Outcome::Broken);
                }
                last_error = Some(format!("{}: {error}", endpoint.addr()));
                continue;
            }
        };
        // Never send to an endpoint removed since it was picked.
        if endpoint.is_retired() {
            continue;
        }
        let span = Span::current();
        if !span.is_disabled() {
            span.record("endpoint", tracing::field::display(endpoint.addr()));
        }
        if let Some(d) = &deadline {
            req.headers_mut().insert(GRPC_TIMEOUT, d.remaining_header());
        }
        let guard = LoadGuard::new(endpoint.clone());
        // Calls in flight to this endpoint as this one goes out, itself included: the
        // latency sample is counted per call in flight (transport/load.rs says why).
        let in_flight = endpoint.load.pending();
        let started = tokio::time::Instant::now();
        let sent = within(deadline, conn.sender().try_send_request(req))
            .await
            .map_err(|d| {
                backend.record(&endpoint, Outcome::Status(tonic::Code::DeadlineExceeded));
                expired(format!(
                    "waiting for the response of endpoint {} (backend {})",
                    endpoint.addr(),
                    backend.label()
                ))(d)
            })?;
        match sent {
            Ok(response) => {
                *reached = Some(endpoint.addr());
                let (rtt, in_flight) = if fails_fast(response.headers()) {
                    (endpoint.config().failure_penalty, 1)
                } else {
                    (started.elapsed(), in_flight)
                };
                endpoint.load.observe(rtt, in_flight, endpoint.now());
                // A trailers-only answer settles the call's outcome now; otherwise the body
                // reports it when its trailers come.
                let settled = status_in_headers(response.status(), response.headers());
                let meter = match settled {
                    None => meter.as_mut().and_then(|m| m.hand_over()),
                    Some(code) => {
                        backend.record(&endpoint, Outcome::Status(code));
                        None
                    }
                };
                let sink = (settled.is_none() && policy.accrual.is_some())
                    .then(|| backend.clone() as Arc<dyn OutcomeSink>);
                let body_deadline = deadline.map(|d| BodyDeadline {
                    deadline: d,
                    during: format!(
                        "waiting for the rest of the response of endpoint {} (backend {})",
                        endpoint.addr(),
                        backend.label()
                    ),
                });
                let admitted = admitted.take();
                return Ok(response.map(|body| {
                    Body::new(
                        ResponseBody::new(body, guard, meter, body_deadline)
                            .holding(admitted)
                            .reporting(sink, probe),
                    )
                }));
            }
            Err(mut error) => {
                if let Some(unsent) = error.take_message() {
                    // Not sent (the connection closed under us): safe to send elsewhere.
                    req = unsent;
                    last_error = Some(format!("{}: {}", endpoint.addr(), error.error()));
                    continue;
                }
                endpoint.load.observe(
                    endpoint.config().failure_penalty.max(started.elapsed()),
                    1,
                    endpoint.now(),
                );
                if let (true, Some(replay)) = (refused(error.error()), &replay) {
                    tracing::debug!(endpoint = %endpoint.addr(), error = %error.error(), "stream refused unprocessed; trying again");
                    last_error = Some(format!("{}: {}", endpoint.addr(), error.error()));
                    req = replay.request();
                    continue;
                }
                *reached = Some(endpoint.addr());
                backend.record(&endpoint, Outcome::Broken);
                let status = crate::transport::status_from_hyper(error.error());
                return Err(CallError::Transport {
                    endpoint: endpoint.addr().to_string(),
                    code: status.code(),
                    message: status.message().to_string(),
                });
            }
        }
    }
}

/// `fut`, unless `deadline` passes first (then the deadline, to build the error).
async fn within<F: std::future::Future>(
    deadline: Option<Deadline>,
    fut: F,
) -> Result<F::Output, Deadline> {
    match deadline {
        None => Ok(fut.await),
        Some(d) => tokio::time::timeout_at(d.at(), fut).await.map_err(|_| d),
    }
}

/// A trailers-only UNAVAILABLE or RESOURCE_EXHAUSTED answer: the endpoint refused the call
/// quickly, which must not make it look fast to the balancer.
fn fails_fast(headers: &HeaderMap) -> bool {
    matches!(
        headers.get("grpc-status").map(|v| v.as_bytes()),
        Some(b"14" | b"8")
    )
}
