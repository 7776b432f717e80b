//! [`Meter`]: records one call in its series when the call ends, however it ends.

use std::sync::Arc;

use http::{HeaderMap, StatusCode};
use tokio::time::Instant;
use tonic::Code;

use super::series::CallStats;

/// One call being measured. Finishing it records the final status and the time since the
/// call started; dropping it unfinished records `CANCELLED` (the caller gave up on the
/// response before its end).
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

    /// Counts the call in `stats` instead (once the router knows where it goes).
    pub(crate) fn retarget(&mut self, stats: &Arc<CallStats>) {
        if let Some((current, _)) = &mut self.pending {
            *current = stats.clone();
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
        let other = Arc::new(CallStats::default());
        let mut moved = Meter::new(other.clone(), Instant::now());
        moved.retarget(&stats);
        moved.finish(Code::Unimplemented);
        assert_eq!(stats.count(Code::Ok), 1);
        assert_eq!(stats.count(Code::Cancelled), 1);
        assert_eq!(stats.count(Code::Unimplemented), 1);
        assert_eq!(other.count(Code::Unimplemented), 0);
        assert!((stats.sum_seconds() - 0.02).abs() < 1e-9);
    }
}
