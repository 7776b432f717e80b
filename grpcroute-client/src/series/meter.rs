//! [`Meter`]: records one call in its series when the call ends, however it ends.

use std::sync::Arc;

use http::{HeaderMap, StatusCode};
use tokio::time::Instant;
use tonic::Code;

use super::CallStats;

/// One call being measured, once the router has placed it in a series. Finishing it
/// records the final status and the time since the call started; dropping it unfinished
/// records `CANCELLED` (the caller gave up on the response before its end).
#[derive(Debug)]
pub(crate) struct Meter {
    pending: Option<(Arc<CallStats>, Instant)>,
}

impl Meter {
    pub(crate) fn new(stats: Arc<CallStats>, started: Instant) -> Self {
        Self {
            pending: Some((stats, started)),
        }
    }

    pub(crate) fn finish(mut self, code: Code) {
        self.record(code);
    }

    fn record(&mut self, code: Code) {
        if let Some((stats, started)) = self.pending.take() {
            stats.record(code, started.elapsed());
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.record(Code::Cancelled);
    }
}

/// The meter of a call while the mesh handles it: counted as unrouted (a borrowed series,
/// so the common path touches no shared reference count) until the router places it, and
/// handed to the response body when the status is still to come.
#[derive(Debug)]
pub(crate) struct CallMeter<'a> {
    unrouted: &'a CallStats,
    started: Instant,
    placed: Option<Meter>,
    /// Recorded, or handed over to the body, which records it.
    done: bool,
}

impl<'a> CallMeter<'a> {
    pub(crate) fn start(unrouted: &'a CallStats) -> Self {
        Self {
            unrouted,
            started: Instant::now(),
            placed: None,
            done: false,
        }
    }

    /// When the call entered the mesh.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// Counts the call in `stats`.
    pub(crate) fn place(&mut self, stats: &Arc<CallStats>) {
        self.placed = Some(Meter::new(stats.clone(), self.started));
    }

    /// The placed meter, for a response body that will read the status in its trailers.
    pub(crate) fn hand_over(&mut self) -> Option<Meter> {
        let meter = self.placed.take();
        self.done |= meter.is_some();
        meter
    }

    /// Records `code`, unless the body took the meter.
    pub(crate) fn finish(mut self, code: Code) {
        self.record(code);
    }

    fn record(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        match self.placed.take() {
            Some(meter) => meter.finish(code),
            None => self.unrouted.record(code, self.started.elapsed()),
        }
    }
}

impl Drop for CallMeter<'_> {
    fn drop(&mut self) {
        self.record(Code::Cancelled);
    }
}

/// The status of a response whose headers already settle it: a trailers-only response
/// (`grpc-status` in the headers) or an HTTP error, mapped as gRPC's
/// `doc/http-grpc-status-mapping.md` says. `None` when the status comes in the trailers.
pub(crate) fn status_in_headers(status: StatusCode, headers: &HeaderMap) -> Option<Code> {
    if let Some(code) = headers.get("grpc-status") {
        return Some(parse_code(code.as_bytes()));
    }
    if status == StatusCode::OK {
        return None;
    }
    Some(match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    })
}

/// The status in a response's trailers; a stream that ends without one is `UNKNOWN`.
pub(crate) fn status_in_trailers(trailers: &HeaderMap) -> Code {
    trailers
        .get("grpc-status")
        .map_or(Code::Unknown, |v| parse_code(v.as_bytes()))
}

fn parse_code(value: &[u8]) -> Code {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .map_or(Code::Unknown, Code::from_i32)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::HeaderValue;

    use super::*;

    fn headers(status: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_str(status).unwrap());
        h
    }

    #[test]
    fn statuses_from_headers_trailers_and_http() {
        assert_eq!(
            status_in_headers(StatusCode::OK, &headers("14")),
            Some(Code::Unavailable)
        );
        assert_eq!(status_in_headers(StatusCode::OK, &HeaderMap::new()), None);
        assert_eq!(
            status_in_headers(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new()),
            Some(Code::Unavailable)
        );
        assert_eq!(
            status_in_headers(StatusCode::NOT_FOUND, &HeaderMap::new()),
            Some(Code::Unimplemented)
        );
        assert_eq!(status_in_trailers(&headers("0")), Code::Ok);
        assert_eq!(status_in_trailers(&headers("garbage")), Code::Unknown);
        assert_eq!(status_in_trailers(&headers("99")), Code::Unknown);
        assert_eq!(status_in_trailers(&HeaderMap::new()), Code::Unknown);
    }

    #[tokio::test(start_paused = true)]
    async fn finish_records_once_and_drop_records_cancelled() {
        let stats = Arc::new(CallStats::default());
        let meter = Meter::new(stats.clone(), Instant::now());
        tokio::time::advance(Duration::from_millis(20)).await;
        meter.finish(Code::Ok);
        drop(Meter::new(stats.clone(), Instant::now()));
        assert_eq!(stats.count(Code::Ok), 1);
        assert_eq!(stats.count(Code::Cancelled), 1);
        assert!((stats.sum_seconds() - 0.02).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_counts_as_unrouted_until_placed_and_once_in_all() {
        let unrouted = CallStats::default();
        let placed = Arc::new(CallStats::default());

        CallMeter::start(&unrouted).finish(Code::Unavailable);
        drop(CallMeter::start(&unrouted));
        assert_eq!(unrouted.count(Code::Unavailable), 1);
        assert_eq!(unrouted.count(Code::Cancelled), 1);

        let mut m = CallMeter::start(&unrouted);
        m.place(&placed);
        m.finish(Code::Unimplemented);
        let mut m = CallMeter::start(&unrouted);
        m.place(&placed);
        drop(m);
        assert_eq!(placed.count(Code::Unimplemented), 1);
        assert_eq!(placed.count(Code::Cancelled), 1);

        // Handed to a body: the body records, the call meter does not.
        let mut m = CallMeter::start(&unrouted);
        m.place(&placed);
        let body = m.hand_over().unwrap();
        tokio::time::advance(Duration::from_millis(5)).await;
        m.finish(Code::Internal);
        body.finish(Code::Ok);
        assert_eq!(placed.count(Code::Ok), 1);
        assert_eq!(placed.count(Code::Internal), 0);
        assert!((placed.sum_seconds() - 0.005).abs() < 1e-9);
        assert_eq!(unrouted.count(Code::Internal), 0);
        assert_eq!(unrouted.buckets().iter().sum::<u64>(), 2);
    }
}
