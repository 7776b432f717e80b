//! The per-call path: decide, filter, mirror, pick an endpoint, send, and account for the
//! endpoint's load. Reads one immutable snapshot; takes no lock.

pub(crate) mod mirror;
mod send;
#[cfg(feature = "xds")]
mod xds;

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwapOption;
use http::{Request, Response, Uri, uri::Authority};
use tokio::{sync::watch, time::Instant};
use tonic::body::Body;
use tracing::Span;

pub(crate) use self::send::send;
use crate::{
    backend::Backend,
    deadline::Deadline,
    error::CallError,
    rng::SharedRng,
    route::{
        decide::{self as router, Decision, Refusal},
        table::{CompiledMirror, CompiledRule, SeriesRef},
    },
    routed::RoutedTo,
    series::{CallMeter, SeriesRegistry, status_in_headers},
    snapshot::Snapshot,
    target::Target,
};

const USER_AGENT: &str = concat!("grpcroute-client/", env!("CARGO_PKG_VERSION"));

/// What every call of a mesh reads: the current snapshot and the settings of the call path.
/// Channels and layers hold it; configuration updates replace its snapshot.
pub(crate) struct Core {
    pub(crate) namespace: Arc<str>,
    pub(crate) cluster_domain: String,
    pub(crate) ready_timeout: Duration,
    /// The timeout of calls that carry none (`grpc-timeout`); `None`: no limit, as for
    /// tonic's own channel.
    pub(crate) default_timeout: Option<Duration>,
    /// Mirrored calls per mirror backend at most in flight; more are dropped.
    pub(crate) mirror_max_in_flight: usize,
    /// How long a mirrored call may take before it is abandoned (and its stream reset).
    pub(crate) mirror_timeout: Duration,
    pub(crate) report_routing: bool,
    /// The configuration every call reads; `None` until the first update.
    pub(crate) snapshot: ArcSwapOption<Snapshot>,
    /// The version of the configuration in force; 0 until the first update.
    pub(crate) ready: watch::Sender<u64>,
    pub(crate) rng: SharedRng,
    /// Call statistics, which the tables hold and calls record into.
    pub(crate) series: SeriesRegistry,
    /// The source's last error, for calls that find no configuration. Only sources and
    /// such calls take the lock.
    pub(crate) last_error: std::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("namespace", &self.namespace)
            .field("ready", &self.snapshot.load().is_some())
            .finish_non_exhaustive()
    }
}

impl Core {
    /// The current snapshot, waiting for the first configuration of Services up to the
    /// ready timeout or the call's deadline, whichever comes first.
    pub(crate) async fn snapshot(
        &self,
        deadline: Option<Deadline>,
    ) -> Result<Arc<Snapshot>, CallError> {
        let synced = |s: &Option<Arc<Snapshot>>| s.as_ref().is_some_and(|s| s.kube_synced);
        if let Some(s) = self.snapshot.load_full().filter(|s| s.kube_synced) {
            return Ok(s);
        }
        let started = Instant::now();
        let ready_at = started + self.ready_timeout;
        let until = deadline.map_or(ready_at, |d| d.at().min(ready_at));
        let mut rx = self.ready.subscribe();
        let waited =
            tokio::time::timeout_at(until, rx.wait_for(|_| synced(&self.snapshot.load_full())))
                .await;
        match (waited, self.snapshot.load_full()) {
            (Ok(_), Some(s)) => Ok(s),
            _ => match deadline {
                Some(d) if d.at() <= ready_at => Err(CallError::DeadlineExceeded {
                    timeout: d.timeout(),
                    during: format!(
                        "waiting for the mesh's first configuration{}",
                        self.last_error()
                            .map(|e| format!(" (last source error: {e})"))
                            .unwrap_or_default()
                    ),
                }),
                _ => Err(CallError::NotSynced {
                    waited: self.ready_timeout,
                    last_error: self.last_error(),
                }),
            },
        }
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Routes one call to the Service `target` names. Failures become gRPC status responses,
/// as a proxy would send them. With `report_routing`, every response carries a
/// [`RoutedTo`] extension.
pub(crate) async fn route(
    core: &Arc<Core>,
    target: &Target,
    authority: &Authority,
    req: Request<Body>,
) -> Response<Body> {
    let mut routed = RoutedTo::default();
    // Dropped unfinished (the caller gave up), the call counts as cancelled.
    let mut meter = CallMeter::start(core.series.unrouted());
    let mut response = match dispatch(core, target, authority, req, &mut routed, &mut meter).await {
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
    if core.report_routing {
        response.extensions_mut().insert(routed);
    }
    response
}

/// The response of a call the mesh refuses before routing it (e.g. no configuration yet),
/// counted as unrouted.
pub(crate) fn refuse(core: &Core, error: CallError) -> Response<Body> {
    tracing::debug!(%error, "call failed in the mesh");
    let meter = CallMeter::start(core.series.unrouted());
    let mut response = tonic::Status::from(error).into_http();
    meter.finish(
        status_in_headers(response.status(), response.headers()).unwrap_or(tonic::Code::Unknown),
    );
    if core.report_routing {
        response.extensions_mut().insert(RoutedTo::default());
    }
    response
}

async fn dispatch(
    core: &Arc<Core>,
    target: &Target,
    authority: &Authority,
    mut req: Request<Body>,
    routed: &mut RoutedTo,
    meter: &mut CallMeter<'_>,
) -> Result<Response<Body>, CallError> {
    let deadline = Deadline::of(req.headers(), core.default_timeout, meter.started());
    #[cfg(feature = "xds")]
    if let crate::target::Host::Listener(name) = &target.host {
        return xds::dispatch(core, name, authority, req, routed, meter, deadline).await;
    }
    let snapshot = core.snapshot(deadline).await?;
    let frontend = router::frontend(&snapshot.table, target, &core.namespace)?;
    let decided = router::decide(
        frontend,
        &core.namespace,
        req.uri().path(),
        req.headers(),
        core.rng.next(),
    );
    let decision = match decided {
        Ok(decision) => decision,
        Err(Refusal { error, series }) => {
            meter.place(series.stats(&core.series));
            if core.report_routing {
                note_choice(routed, &series);
            }
            return Err(*error);
        }
    };
    meter.place(decision.series.stats(&core.series));
    if core.report_routing {
        note_choice(routed, &decision.series);
    }
    let Decision { target, series } = decision;
    let (rule, backend_ref) = (series.of.rule(), series.of.backend());
    let Some(backend) = snapshot.backend(target) else {
        return Err(unbound(target.describe()));
    };
    record(rule, backend);

    set_uri(&mut req, authority);
    if let Some(m) = rule.and_then(|r| r.filters.request_headers.as_ref()) {
        m.apply(req.headers_mut());
    }
    let mirrors = rule
        .into_iter()
        .flat_map(|r| &r.filters.mirrors)
        .chain(backend_ref.into_iter().flat_map(|b| &b.filters.mirrors));
    start_mirrors(core, &snapshot, &mut req, mirrors);
    if let Some(m) = backend_ref.and_then(|b| b.filters.request_headers.as_ref()) {
        m.apply(req.headers_mut());
    }

    let mut response = send(
        core,
        backend,
        req,
        &mut routed.endpoint,
        Some(meter),
        deadline,
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
    if let Some(m) = backend_ref.and_then(|b| b.filters.response_headers.as_ref()) {
        m.apply(response.headers_mut());
    }
    if let Some(m) = rule.and_then(|r| r.filters.response_headers.as_ref()) {
        m.apply(response.headers_mut());
    }
    Ok(response)
}

/// A slot without a bound backend cannot happen (the mesh binds every slot of a table when
/// it builds the snapshot); if it ever did, the call fails like a backend without
/// endpoints rather than panicking.
fn unbound(backend: String) -> CallError {
    CallError::NoEndpoints {
        backend,
        via: " (internal error: backend not bound)".into(),
    }
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

fn record(rule: Option<&CompiledRule>, backend: &Backend) {
    let span = Span::current();
    if span.is_disabled() {
        return;
    }
    if let Some(rule) = rule {
        span.record("route", tracing::field::display(&rule.route));
        span.record("rule", rule.index);
    }
    span.record("backend", tracing::field::display(backend.label()));
}

/// Points the request at the original authority (a sidecar would forward `:authority`
/// unchanged too); the endpoint address is the connection's, not the request's.
pub(super) fn set_uri(req: &mut Request<Body>, authority: &Authority) {
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
    core: &Arc<Core>,
    snapshot: &Snapshot,
    req: &mut Request<Body>,
    mirrors: impl Iterator<Item = &'a CompiledMirror>,
) {
    let mut chosen: Vec<Arc<Backend>> = Vec::new();
    for m in mirrors {
        let Some(backend) = m.target.as_ref().ok().and_then(|t| snapshot.backend(t)) else {
            continue;
        };
        // numerator / denominator of the calls, decided per call.
        let roll = core.rng.next() % u64::from(m.denominator.max(1));
        if roll < u64::from(m.numerator) && !backend.endpoints().is_empty() {
            chosen.push(backend.clone());
        }
    }
    if chosen.is_empty() {
        return;
    }
    // A slot per mirror, or the mirror is dropped (and counted): a mirror backend that
    // stops answering holds at most `mirror_max_in_flight` calls, each for at most
    // `mirror_timeout`.
    let slotted: Vec<_> = chosen
        .into_iter()
        .filter_map(|backend| {
            let slot = backend.mirrors.start(core.mirror_max_in_flight);
            if slot.is_none() {
                tracing::debug!(backend = %backend.label(), "mirrored call dropped: too many in flight");
            }
            slot.map(|slot| (backend, slot))
        })
        .collect();
    if slotted.is_empty() {
        return;
    }
    for (copy, (backend, slot)) in mirror::tee(req, slotted.len()).into_iter().zip(slotted) {
        let core = core.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mirrored = async {
                let response = send(&core, &backend, copy, &mut None, None, None).await?;
                // The mirror's response is ignored; reading it to the end lets the stream
                // finish cleanly.
                use http_body_util::BodyExt;
                let _ = response.into_body().collect().await;
                Ok::<_, CallError>(())
            };
            match tokio::time::timeout(core.mirror_timeout, mirrored).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%error, "mirrored call failed"),
                Err(_) => {
                    backend.mirrors.timed_out();
                    tracing::debug!(backend = %backend.label(), timeout = ?core.mirror_timeout, "mirrored call abandoned at its timeout");
                }
            }
        });
    }
}
