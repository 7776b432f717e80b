//! The per-call path of a call to an xDS listener: wait for the listener's first complete
//! configuration (bounded by the call's deadline), route it by gRPC's rules, apply the
//! route's timeout (gRFC A31), and send it to the cluster picked.

use std::sync::Arc;

use http::{Request, Response, uri::Authority};
use tonic::body::Body;

use super::{Core, send, set_uri};
use crate::{
    deadline::Deadline,
    error::CallError,
    route::xds::{Lookup, XdsListener},
    routed::RoutedTo,
    series::CallMeter,
    snapshot::Snapshot,
};

pub(super) async fn dispatch(
    core: &Arc<Core>,
    listener: &str,
    authority: &Authority,
    mut req: Request<Body>,
    routed: &mut RoutedTo,
    meter: &mut CallMeter<'_>,
    caller: Option<Deadline>,
) -> Result<Response<Body>, CallError> {
    let snapshot = routable(core, listener, caller).await?;
    let lookup = snapshot.xds.decide(
        listener,
        req.uri().path(),
        req.headers(),
        || core.rng.next(),
        caller.map(|d| d.timeout()),
    );
    let decision = match lookup {
        // `routable` waited for the listener to leave this state in this very snapshot.
        Lookup::Waiting => {
            return Err(CallError::XdsUnavailable {
                listener: listener.to_string(),
                message: "no configuration yet".into(),
            });
        }
        Lookup::Decided(Err(refusal)) => {
            if let Some(series) = refusal.series {
                let (slot, key) = *series;
                meter.place(slot.get(&core.series, || key));
            }
            return Err(*refusal.error);
        }
        Lookup::Decided(Ok(decision)) => decision,
    };
    meter.place(decision.stats(&core.series));
    if core.report_routing {
        routed.rule = Some(decision.route.index);
        routed.cluster = Some(decision.cluster.name.to_string());
    }
    let Some(backend) = snapshot.xds_backends.get(decision.slot) else {
        return Err(CallError::XdsClusterUnavailable {
            cluster: decision.cluster.name.to_string(),
            route: decision.route.describe(),
            message: "internal error: cluster not bound".into(),
        });
    };
    // A31: the route's limits on top of the caller's own deadline, counted from the
    // call's start; the caller's deadline is never exceeded.
    let deadline = decision
        .timeout
        .map(|t| Deadline::after(meter.started(), t));
    set_uri(&mut req, authority);
    send(
        core,
        backend,
        req,
        &mut routed.endpoint,
        Some(meter),
        deadline,
    )
    .await
}

/// The current snapshot once listener `name` has a complete configuration or has failed,
/// waiting for it up to the call's deadline (gRPC's own clients queue such calls; the
/// listener fails by itself if it never arrives: gRFC A57's does-not-exist timer).
async fn routable(
    core: &Core,
    name: &str,
    deadline: Option<Deadline>,
) -> Result<Arc<Snapshot>, CallError> {
    let mut rx = core.ready.subscribe();
    loop {
        if let Some(snapshot) = core.snapshot.load_full()
            && snapshot
                .xds
                .listener(name)
                .is_some_and(|l| !matches!(**l, XdsListener::Waiting))
        {
            return Ok(snapshot);
        }
        let changed = match deadline {
            Some(d) => tokio::time::timeout_at(d.at(), rx.changed())
                .await
                .map_err(|_| CallError::DeadlineExceeded {
                    timeout: d.timeout(),
                    during: format!("waiting for the configuration of xDS listener {name}"),
                })?,
            None => rx.changed().await,
        };
        if changed.is_err() {
            return Err(CallError::XdsUnavailable {
                listener: name.to_string(),
                message: "the mesh is shutting down".into(),
            });
        }
    }
}
