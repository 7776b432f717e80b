//! A call's deadline: from its `grpc-timeout` header (what tonic's `Request::set_timeout`
//! sends), else from the mesh's default. It bounds everything the mesh does for the call.

use std::{fmt, time::Duration};

use http::{HeaderMap, HeaderValue};
use tokio::time::Instant;

/// The header gRPC carries a call's timeout in (gRPC over HTTP/2, "Timeout").
pub(crate) const GRPC_TIMEOUT: &str = "grpc-timeout";

/// When a call must be over, and the timeout it was given (for messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Deadline {
    at: Instant,
    timeout: Duration,
}

impl Deadline {
    /// The call's deadline, counted from `started`: its `grpc-timeout`, else `default`.
    /// A malformed header is ignored, as tonic's own channel ignores it.
    pub(crate) fn of(
        headers: &HeaderMap,
        default: Option<Duration>,
        started: Instant,
    ) -> Option<Self> {
        let timeout = headers
            .get(GRPC_TIMEOUT)
            .and_then(|v| parse(v.as_bytes()))
            .or(default)?;
        Some(Self {
            at: started.checked_add(timeout).unwrap_or_else(far_future),
            timeout,
        })
    }

    /// A deadline `timeout` after `started`.
    #[cfg_attr(not(feature = "xds"), allow(dead_code))]
    pub(crate) fn after(started: Instant, timeout: Duration) -> Self {
        Self {
            at: started.checked_add(timeout).unwrap_or_else(far_future),
            timeout,
        }
    }

    pub(crate) fn at(&self) -> Instant {
        self.at
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The time left, as a `grpc-timeout` value, for the request sent to the endpoint: the
    /// server then knows how long the caller still waits (gRPC clients send the remaining
    /// time, not the original timeout).
    pub(crate) fn remaining_header(&self) -> HeaderValue {
        encode(self.at.saturating_duration_since(Instant::now()))
    }
}

impl fmt::Display for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.timeout)
    }
}

/// About 30 years: what an unrepresentable deadline becomes (tokio's own choice).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365 * 30)
}

/// Parses a `grpc-timeout` value: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`,
/// `n`).
pub(crate) fn parse(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The most precise `grpc-timeout` value that fits in 8 digits, never longer than `d`.
pub(crate) fn encode(d: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = d.as_nanos();
    let (value, unit) = [
        (1u128, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ]
    .into_iter()
    .map(|(per, unit)| (nanos / per, unit))
    .find(|(v, _)| *v <= MAX)
    .unwrap_or((MAX, 'H'));
    // Digits and an ASCII letter: always a valid header value.
    HeaderValue::from_str(&format!("{value}{unit}")).unwrap_or(HeaderValue::from_static("0n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_refuses_malformed_values() {
        assert_eq!(parse(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse(b"3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse(b"99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse(b"7n"), Some(Duration::from_nanos(7)));
        for bad in [&b""[..], b"m", b"100", b"123456789m", b"-1S", b"1s", b"1 S"] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn encodes_the_most_precise_unit_that_fits() {
        assert_eq!(encode(Duration::from_millis(25)), "25000000n");
        assert_eq!(encode(Duration::from_millis(250)), "250000u");
        assert_eq!(encode(Duration::from_millis(2500)), "2500000u");
        assert_eq!(encode(Duration::from_secs(3600)), "3600000m");
        assert_eq!(encode(Duration::from_secs(86400 * 365)), "31536000S");
        assert_eq!(encode(Duration::from_secs(86400 * 365 * 30)), "15768000M");
        for d in [
            Duration::from_nanos(1),
            Duration::from_millis(123),
            Duration::from_secs(7),
        ] {
            assert!(parse(encode(d).as_bytes()).unwrap() <= d);
        }
    }

    #[test]
    fn the_header_wins_over_the_default() {
        let now = Instant::now();
        let mut headers = HeaderMap::new();
        assert_eq!(Deadline::of(&headers, None, now), None);
        let d = Deadline::of(&headers, Some(Duration::from_secs(5)), now).unwrap();
        assert_eq!(d.timeout(), Duration::from_secs(5));
        headers.insert(GRPC_TIMEOUT, HeaderValue::from_static("100m"));
        let d = Deadline::of(&headers, Some(Duration::from_secs(5)), now).unwrap();
        assert_eq!(d.at(), now + Duration::from_millis(100));
        headers.insert(GRPC_TIMEOUT, HeaderValue::from_static("bogus"));
        assert_eq!(
            Deadline::of(&headers, Some(Duration::from_secs(5)), now).map(|d| d.timeout()),
            Some(Duration::from_secs(5)),
            "a malformed header is ignored"
        );
    }
}
