//! WATCH: a task per watch that replays history (or the current state), then streams
//! live events and bookmarks as newline-delimited JSON until a timeout, a kill signal,
//! or the client going away.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep_until};

use crate::body::Body;
use crate::error::ApiError;
use crate::faults::{Fault, StallWatches};
use crate::selector::ObjectFilter;
use crate::server::Shared;
use crate::store::{EventType, StoredEvent, WatchFrom, WatchStart};
use crate::wire::Wire;

/// A parsed watch request.
#[derive(Debug)]
pub(crate) struct WatchRequest {
    pub(crate) filter: ObjectFilter,
    /// How objects are shaped (the URL's version, or metadata only).
    pub(crate) wire: Wire,
    pub(crate) from: WatchFrom,
    pub(crate) timeout: Option<Duration>,
    pub(crate) bookmarks: bool,
    /// `sendInitialEvents=true`: end the initial events with the annotated bookmark.
    pub(crate) initial_events_end: bool,
}

/// Starts a watch and returns its body. An expired resource version is answered (as by
/// the real server) with a 200 whose body is one ERROR event, never an HTTP 410.
pub(crate) fn start(shared: &Arc<Shared>, request: WatchRequest) -> Body {
    let resource = request.filter.resource;
    let open = shared.stats.watch(resource);
    match shared.store.watch(resource, request.from) {
        Err(error) => {
            drop(open);
            Body::full(line(&json!({"type": "ERROR", "object": error.to_status()})))
        }
        Ok(start) => {
            let (tx, rx) = mpsc::channel(64);
            // Subscribed before the response is sent: an order given once the client has
            // its watch open reaches it.
            let stalls = shared.faults.stall_orders();
            let shared = Arc::clone(shared);
            tokio::spawn(async move {
                let _open = open;
                run(&shared, &request, start, stalls, &tx).await;
            });
            Body::Stream(rx)
        }
    }
}

async fn run(
    shared: &Shared,
    request: &WatchRequest,
    mut start: WatchStart,
    mut stalls: watch::Receiver<StallWatches>,
    tx: &mpsc::Sender<Bytes>,
) {
    let min_rv = match request.from {
        WatchFrom::Rv(rv) => rv,
        WatchFrom::Now => 0,
    };
    for event in std::mem::take(&mut start.initial) {
        if let Some(chunk) = render(request, &event)
            && tx.send(chunk).await.is_err()
        {
            return;
        }
    }
    if request.initial_events_end && tx.send(bookmark(request, start.rv, true)).await.is_err() {
        return;
    }
    let deadline = request.timeout.map(|t| Instant::now() + t);
    let period = shared.bookmark_interval;
    let mut ticker = interval_at(Instant::now() + period, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let stalled = shared.faults.active(Fault::Stall);
        // `biased`: a pending kill must win over a pending event. Otherwise a compaction
        // followed by a write could deliver the write first, moving the client's resource
        // version past the floor, and the expected 410 would never happen.
        tokio::select! {
            biased;
            _ = start.kill.changed() => return,
            _ = shutdown.changed() => return,
            () = tx.closed() => return,
            changed = stalls.changed() => {
                if changed.is_ok() && stalls.borrow_and_update().applies_to(request.filter.resource) {
                    // Stuck for good: nothing more is sent, and only the client going away
                    // (or the server stopping or cutting connections) ends it.
                    tokio::select! {
                        () = tx.closed() => {}
                        _ = shutdown.changed() => {}
                    }
                    return;
                }
            }
            () = shared.faults.over(Fault::Stall), if stalled => continue,
            () = sleep_until_opt(deadline), if !stalled => return,
            received = start.events.recv(), if !stalled => match received {
                Ok(event) => {
                    if event.rv <= min_rv {
                        continue;
                    }
                    if let Some(chunk) = render(request, &event)
                        && tx.send(chunk).await.is_err()
                    {
                        return;
                    }
                }
                // Lagged: the client re-watches from its last version and gets the rest
                // from the history.
                Err(RecvError::Lagged(_) | RecvError::Closed) => return,
            },
            _ = ticker.tick(), if request.bookmarks && !stalled => {
                if let Some(rv) = shared.store.bookmark_rv(&start.events, &start.kill)
                    && rv >= min_rv
                {
                    if tx.send(bookmark(request, rv, false)).await.is_err() {
                        return;
                    }
                    shared.stats.bookmark(request.filter.resource, rv);
                }
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The event this watch sees for a stored change, if any. Selector transitions follow
/// the real watch cache: starts matching → ADDED; stops matching → DELETED carrying the
/// previous state with the new resource version.
fn render(request: &WatchRequest, event: &StoredEvent) -> Option<Bytes> {
    let filter = &request.filter;
    if event.resource != filter.resource {
        return None;
    }
    let now = filter.matches(&event.object);
    let before = event.prev.as_ref().is_some_and(|p| filter.matches(p));
    let (kind, object) = match (event.kind, before, now) {
        (EventType::Added, _, true) => ("ADDED", event.object.clone()),
        (EventType::Modified, true, true) => ("MODIFIED", event.object.clone()),
        (EventType::Modified, false, true) => ("ADDED", event.object.clone()),
        (EventType::Modified, true, false) => {
            let mut prev = event.prev.clone()?;
            if let Some(meta) = prev.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("resourceVersion".into(), json!(event.rv.to_string()));
            }
            ("DELETED", prev)
        }
        (EventType::Deleted, _, true) => ("DELETED", event.object.clone()),
        _ => return None,
    };
    Some(line(
        &json!({"type": kind, "object": request.wire.object(object)}),
    ))
}

fn bookmark(request: &WatchRequest, rv: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let (api_version, kind) = request.wire.type_meta();
    line(&json!({
        "type": "BOOKMARK",
        "object": {"kind": kind, "apiVersion": api_version, "metadata": metadata},
    }))
}

fn line(value: &Value) -> Bytes {
    let mut bytes = value.to_string().into_bytes();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// Maps a `resourceVersion` query value to where a watch starts.
pub(crate) fn watch_from(
    rv: Option<&str>,
    send_initial_events: bool,
) -> Result<WatchFrom, ApiError> {
    match rv.filter(|rv| !rv.is_empty()) {
        _ if send_initial_events => Ok(WatchFrom::Now),
        None | Some("0") => Ok(WatchFrom::Now),
        Some(rv) => rv
            .parse()
            .map(WatchFrom::Rv)
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}"))),
    }
}
