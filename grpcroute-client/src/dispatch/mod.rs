//! The per-call path: decide, filter, mirror, pick an endpoint, send, and account for the
//! endpoint's load. Reads one immutable snapshot; takes no lock.

pub(crate) mod mirror;

use std::{net::SocketAddr, sync::Arc};

use http::{HeaderMap, Request, Response, Uri, uri::Authority};
use tonic::body::Body;
use tracing::Span;

use crate::{
    backend::balance,
    error::CallError,
    mesh::Shared,
    metrics::{CallMeter, status_in_headers},
    route::{
        decide::{self as router, Decision, Refusal},
        table::{BackendTarget, CompiledMirror, CompiledRule, SeriesRef, Snapshot},
    },
    routed::RoutedTo,
    target::Target,
    transport::{LoadGuard, Replay, ResponseBody, refused},
};

const USER_AGENT: &str = concat!("grpcroute-client/", env!("CARGO_PKG_VERSION"));

/// Attempts per call (connects that fail, streams refused unprocessed), over distinct
/// endpoints of the chosen backend.
const MAX_CONNECT_ATTEMPTS: usize = 4;

/// How many times an unsent call follows its backend to a newer table because the
/// endpoints it was routed to were removed; bounds the work under extreme churn.
const MAX_REFRESHES: usize = 8;

/// Routes one call to the Service `target` names. Failures become gRPC status responses,
/// as a proxy would send them. With `report_routing`, every response carries a
/// [`RoutedTo`] extension.
pub(crate) async fn route(
    shared: &Arc<Shared>,
    target: &Target,
    authority: &Authority,
    req: Request<Body>,
) -> Response<Body> {
    let mut routed = RoutedTo::default();
    // Dropped unfinished (the caller gave up), the call counts as cancelled.
    let mut meter = CallMeter::start(shared.series.unrouted());
    let mut response = match dispatch(shared, target, authority, req, &mut routed, &mut meter).await
    {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%error, "call failed in the mesh");
            tonic::Status::from(error).into_http()
        }
    };
    // Unless the response body took the meter to read the status from the trailers, the
    // headers settle it.
    meter.finish(
        status_in_headers(response.status(), response.headers()).unwrap_or(tonic::Code::Unknown),
    );
    if shared.report_routing {
        response.extensions_mut().insert(routed);
    }
    response
}

async fn dispatch(
    shared: &Arc<Shared>,
    target: &Target,
    authority: &Authority,
    mut req: Request<Body>,
    routed: &mut RoutedTo,
    meter: &mut CallMeter<'_>,
) -> Result<Response<Body>, CallError> {
    let snapshot = shared.snapshot().await?;
    let frontend = router::frontend(&snapshot, target, &shared.namespace)?;
    let decided = router::decide(
        frontend,
        &shared.namespace,
        req.uri().path(),
        req.headers(),
        shared.rng.next(),
    );
    let decision = match decided {
        Ok(decision) => decision,
        Err(Refusal { error, series }) => {
            meter.place(series.stats(&shared.series));
            if shared.report_routing {
                note_choice(routed, &series);
            }
            return Err(*error);
        }
    };
    meter.place(decision.series.stats(&shared.series));
    if shared.report_routing {
        note_choice(routed, &decision.series);
    }
    let Decision { target, series } = decision;
    let (rule, backend) = (series.of.rule(), series.of.backend());
    record(rule, target);

    set_uri(&mut req, authority);
    if let Some(m) = rule.and_then(|r| r.filters.request_headers.as_ref()) {
        m.apply(req.headers_mut());
    }
    let mirrors = rule
        .into_iter()
        .flat_map(|r| &r.filters.mirrors)
        .chain(backend.into_iter().flat_map(|b| &b.filters.mirrors));
    start_mirrors(shared, &mut req, mirrors);
    if let Some(m) = backend.and_then(|b| b.filters.request_headers.as_ref()) {
        m.apply(req.headers_mut());
    }

    let mut response = send(
        shared,
        &snapshot,
        target,
        req,
        &mut routed.endpoint,
        Some(meter),
    )
    .await
    .map_err(|e| match (e, rule) {
        (CallError::NoEndpoints { backend, .. }, Some(rule)) => CallError::NoEndpoints {
            backend,
            via: format!(" ({})", rule.describe()),
        },
        (e, _) => e,
    })?;

    // Response filters unwind in reverse: the backend's, then the rule's.
    if let Some(m) = backend.and_then(|b| b.filters.response_headers.as_ref()) {
        m.apply(response.headers_mut());
    }
    if let Some(m) = rule.and_then(|r| r.filters.response_headers.as_ref()) {
        m.apply(response.headers_mut());
    }
    Ok(response)
}

/// Notes the rule and backend chosen for a call in its [`RoutedTo`]: what its series
/// counts it under.
fn note_choice(routed: &mut RoutedTo, series: &SeriesRef<'_>) {
    if let Some(rule) = series.of.rule() {
        routed.route = Some(rule.route.clone());
        routed.rule = Some(rule.index);
    }
    routed.backend = series.backend_service();
}

fn record(rule: Option<&CompiledRule>, target: &BackendTarget) {
    let span = Span::current();
    if span.is_disabled() {
        return;
    }
    if let Some(rule) = rule {
        span.record("route", tracing::field::display(&rule.route));
        span.record("rule", rule.index);
    }
    span.record("backend", tracing::field::display(target.describe()));
}

/// Points the request at the original authority (a sidecar would forward `:authority`
/// unchanged too); the endpoint address is the connection's, not the request's.
fn set_uri(req: &mut Request<Body>, authority: &Authority) {
    // gRPC clients identify themselves; tonic's own channel adds this below a layer, which
    // the mesh replaces.
    req.headers_mut()
        .entry(http::header::USER_AGENT)
        .or_insert(http::HeaderValue::from_static(USER_AGENT));
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(authority.clone());
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    // Scheme, authority and path are all set and individually valid.
    *req.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
}

fn start_mirrors<'a>(
    shared: &Arc<Shared>,
    req: &mut Request<Body>,
    mirrors: impl Iterator<Item = &'a CompiledMirror>,
) {
    let mut chosen: Vec<Arc<BackendTarget>> = Vec::new();
    for m in mirrors {
        let Ok(target) = &m.target else { continue };
        // numerator / denominator of the calls, decided per call.
        let roll = shared.rng.next() % u64::from(m.denominator.max(1));
        if roll < u64::from(m.numerator) && !target.endpoints.is_empty() {
            chosen.push(target.clone());
        }
    }
    if chosen.is_empty() {
        return;
    }
    for (copy, target) in mirror::tee(req, chosen.len()).into_iter().zip(chosen) {
        let shared = shared.clone();
        tokio::spawn(async move {
            let snapshot = match shared.snapshot.load_full() {
                Some(s) => s,
                None => return,
            };
            match send(&shared, &snapshot, &target, copy, &mut None, None).await {
                // The mirror's response is ignored; reading it to the end lets the stream
                // finish cleanly.
                Ok(response) => {
                    use http_body_util::BodyExt;
                    let _ = response.into_body().collect().await;
                }
                Err(error) => tracing::debug!(%error, "mirrored call failed"),
            }
        });
    }
}

/// Sends on an endpoint of `target`, trying other endpoints when one cannot be connected
/// to or refuses the stream unprocessed. A call is only ever retried if it never reached
/// the server's application. `reached` is set to the endpoint the call was sent to; the
/// response body takes `meter` when the call's status is still to come in its trailers.
pub(crate) async fn send(
    shared: &Shared,
    snapshot: &Arc<Snapshot>,
    target: &Arc<BackendTarget>,
    mut req: Request<Body>,
    reached: &mut Option<SocketAddr>,
    mut meter: Option<&mut CallMeter<'_>>,
) -> Result<Response<Body>, CallError> {
    let mut target = target.clone();
    let mut current = snapshot.clone();
    // Addresses this call already tried; a fixed array keeps the path free of allocation.
    let mut tried = [None::<SocketAddr>; MAX_CONNECT_ATTEMPTS];
    let mut attempts = 0;
    let mut refreshes = 0;
    let mut last_error: Option<String> = None;
    let replay = Replay::capture(&mut req);
    loop {
        if target.endpoints.is_empty() {
            return Err(CallError::NoEndpoints {
                backend: target.describe(),
                via: String::new(),
            });
        }
        let now = target.endpoints[0].now();
        let picked = if attempts >= MAX_CONNECT_ATTEMPTS {
            None
        } else {
            balance::pick(&target.endpoints, now, &mut shared.rng.handle(), |i| {
                tried[..attempts].contains(&Some(target.endpoints[i].addr()))
            })
        };
        let Some(i) = picked else {
            // The endpoints this call was routed to were removed by a configuration change
            // before it could be sent: follow the backend to the newest table.
            if refreshes < MAX_REFRESHES
                && target.endpoints.iter().any(|e| e.is_retired())
                && let Some((newest, newer)) = newest_target(shared, &current, &target)
            {
                refreshes += 1;
                current = newest;
                target = newer;
                continue;
            }
            return Err(CallError::Unreachable {
                backend: target.describe(),
                attempts,
                last_error: last_error.unwrap_or_else(|| {
                    "every endpoint is backing off after failed connects".into()
                }),
            });
        };
        let endpoint = target.endpoints[i].clone();
        tried[attempts] = Some(endpoint.addr());
        attempts += 1;
        let conn = match endpoint.connection().await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::debug!(endpoint = %endpoint.addr(), %error, "endpoint unreachable; trying another");
                last_error = Some(format!("{}: {error}", endpoint.addr()));
                continue;
            }
        };
        // Never send to an endpoint removed since it was picked.
        if endpoint.is_retired() {
            continue;
        }
        Span::current().record("endpoint", tracing::field::display(endpoint.addr()));
        let guard = LoadGuard::new(endpoint.clone());
        let started = tokio::time::Instant::now();
        match conn.sender().try_send_request(req).await {
            Ok(response) => {
                *reached = Some(endpoint.addr());
                let rtt = if fails_fast(response.headers()) {
                    endpoint.config().failure_penalty
                } else {
                    started.elapsed()
                };
                endpoint.load.observe(rtt, endpoint.now());
                let meter = if status_in_headers(response.status(), response.headers()).is_none() {
                    meter.as_mut().and_then(|m| m.hand_over())
                } else {
                    None
                };
                return Ok(response.map(|body| Body::new(ResponseBody::new(body, guard, meter))));
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
                    endpoint.now(),
                );
                if let (true, Some(replay)) = (refused(error.error()), &replay) {
                    tracing::debug!(endpoint = %endpoint.addr(), error = %error.error(), "stream refused unprocessed; trying again");
                    last_error = Some(format!("{}: {}", endpoint.addr(), error.error()));
                    req = replay.request();
                    continue;
                }
                *reached = Some(endpoint.addr());
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

/// The same backend in the newest table, if there is a newer one than `current`.
fn newest_target(
    shared: &Shared,
    current: &Arc<Snapshot>,
    target: &BackendTarget,
) -> Option<(Arc<Snapshot>, Arc<BackendTarget>)> {
    let newest = shared.snapshot.load_full()?;
    if Arc::ptr_eq(&newest, current) {
        return None;
    }
    let service = newest.service(target.service.namespace(), target.service.name())?;
    let target = service.frontend(target.port)?.passthrough.clone();
    Some((newest, target))
}

/// A trailers-only UNAVAILABLE or RESOURCE_EXHAUSTED answer: the endpoint refused the call
/// quickly, which must not make it look fast to the balancer.
fn fails_fast(headers: &HeaderMap) -> bool {
    matches!(
        headers.get("grpc-status").map(|v| v.as_bytes()),
        Some(b"14" | b"8")
    )
}
