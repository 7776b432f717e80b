//! Failure accrual (outlier ejection): an endpoint that fails call after call is taken out
//! of its backend's rotation for a while, then tried again with one probe call.
//!
//! Linkerd does this by default (consecutive failures), as do Envoy (`consecutive_5xx`) and
//! gRPC's outlier detection (gRFC A50, by rate). Here:
//! - a call fails, for accrual, when its connection cannot be made or breaks under it, or it
//!   ends with one of the failure codes (default `UNAVAILABLE`); any other outcome resets
//!   the endpoint's count;
//! - `consecutive_failures` in a row eject the endpoint for a back-off that doubles with
//!   each ejection in a row (from `base_ejection`, capped at `max_ejection`, ±20 % jitter so
//!   that clients do not return in step);
//! - when the back-off ends the next call to pick it is its probe, and the only call it
//!   takes until the probe ends: success restores the endpoint, failure ejects it again;
//! - never more than `max_ejected_percent` of a backend's endpoints are ejected at once
//!   (rounded down: a backend of one endpoint never loses it), so that a backend-wide
//!   outage still reaches the backend and its callers see the server's own status.

use std::time::Duration;

use tonic::Code;

pub(crate) use crate::transport::Outcome;
use crate::transport::{Endpoint, nanos};

/// How endpoints that keep failing are ejected. The default: 5 consecutive failures,
/// ejection from 1 s doubling to 60 s, at most 50 % of a backend's endpoints, `UNAVAILABLE`
/// counts as a failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureAccrual {
    /// Failures in a row that eject an endpoint (at least 1).
    pub consecutive_failures: u32,
    /// The first ejection's length.
    pub base_ejection: Duration,
    /// The longest ejection.
    pub max_ejection: Duration,
    /// The most a backend's endpoints that may be ejected at once, in percent.
    pub max_ejected_percent: u8,
    /// The gRPC codes that count as failures, besides broken connections.
    pub failure_codes: Vec<Code>,
}

impl Default for FailureAccrual {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(60),
            max_ejected_percent: 50,
            failure_codes: vec![Code::Unavailable],
        }
    }
}

/// [`FailureAccrual`] as the call path reads it: `Copy`, codes as a bit set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Accrual {
    pub(crate) consecutive_failures: u32,
    pub(crate) base_ns: u64,
    pub(crate) max_ns: u64,
    pub(crate) max_ejected_percent: u8,
    failure_codes: u32,
}

impl From<&FailureAccrual> for Accrual {
    fn from(c: &FailureAccrual) -> Self {
        Self {
            consecutive_failures: c.consecutive_failures.max(1),
            base_ns: nanos(c.base_ejection),
            max_ns: nanos(c.max_ejection.max(c.base_ejection)),
            max_ejected_percent: c.max_ejected_percent.min(100),
            failure_codes: c
                .failure_codes
                .iter()
                .fold(0, |mask, code| mask | (1 << (*code as u32).min(31))),
        }
    }
}

impl Accrual {
    pub(crate) fn fails(&self, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Broken => true,
            Outcome::Status(code) => self.failure_codes & (1 << (code as u32).min(31)) != 0,
        }
    }

    /// The length of ejection number `n` (from 1), before jitter.
    fn ejection_ns(&self, n: u32) -> u64 {
        let doubled = self
            .base_ns
            .saturating_mul(1u64 << n.saturating_sub(1).min(32));
        doubled.min(self.max_ns)
    }
}

/// What recording an outcome did to the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    None,
    /// Ejected, for this long.
    Ejected(Duration),
    /// Back in service after a successful probe.
    Restored,
}

/// Records `outcome` for `endpoint` at `now`. `may_eject` says whether the backend can
/// spare one more ejected endpoint. `jitter` is uniform in [0, 1).
pub(crate) fn record(
    accrual: &Accrual,
    endpoint: &Endpoint,
    outcome: Outcome,
    now: u64,
    jitter: f64,
    may_eject: impl FnOnce() -> bool,
) -> Transition {
    let h = &endpoint.health;
    if !accrual.fails(outcome) {
        if h.consecutive() != 0 {
            h.reset_consecutive();
        }
        if h.ejected_until() != 0 {
            h.restore();
            return Transition::Restored;
        }
        return Transition::None;
    }
    if h.ejected_until() != 0 {
        // A call that fails while the endpoint is out: its probe (or a call in flight when
        // it was ejected). Only the probe's failure ejects it again, for longer.
        if h.end_probe() {
            return eject(accrual, endpoint, now, jitter);
        }
        return Transition::None;
    }
    if h.add_failure() >= accrual.consecutive_failures && may_eject() {
        return eject(accrual, endpoint, now, jitter);
    }
    Transition::None
}

fn eject(accrual: &Accrual, endpoint: &Endpoint, now: u64, jitter: f64) -> Transition {
    let n = endpoint.health.next_ejection();
    let base = accrual.ejection_ns(n) as f64;
    let length = (base * (0.8 + 0.4 * jitter)) as u64;
    endpoint
        .health
        .eject_until(now.saturating_add(length).max(1));
    Transition::Ejected(Duration::from_nanos(length))
}

/// Whether a backend of `total` endpoints, `ejected` of them out, may eject one more.
pub(crate) fn may_eject(accrual: &Accrual, ejected: usize, total: usize) -> bool {
    let allowed = total * usize::from(accrual.max_ejected_percent) / 100;
    ejected < allowed
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, sync::Arc};

    use super::*;
    use crate::transport::{Pool, TransportConfig};

    const SEC: u64 = 1_000_000_000;

    fn endpoint() -> Arc<Endpoint> {
        Pool::new(TransportConfig::default()).join_all(
            &[SocketAddr::from(([127, 0, 0, 1], 9))],
            &crate::transport::Security::Plaintext,
        )[0]
        .clone()
    }

    fn accrual() -> Accrual {
        Accrual::from(&FailureAccrual {
            consecutive_failures: 3,
            ..FailureAccrual::default()
        })
    }

    #[test]
    fn consecutive_failures_eject_and_any_success_resets_the_count() {
        let a = accrual();
        let e = endpoint();
        let fail = Outcome::Status(Code::Unavailable);
        for _ in 0..2 {
            assert_eq!(record(&a, &e, fail, 0, 0.5, || true), Transition::None);
        }
        assert_eq!(
            record(&a, &e, Outcome::Status(Code::NotFound), 0, 0.5, || true),
            Transition::None,
            "NOT_FOUND is the application's answer, not a failure"
        );
        assert_eq!(e.health.consecutive(), 0);
        for _ in 0..2 {
            record(&a, &e, Outcome::Broken, 0, 0.5, || true);
        }
        assert_eq!(
            record(&a, &e, fail, 0, 0.5, || true),
            Transition::Ejected(Duration::from_secs(1)),
            "the third in a row; jitter 0.5 is the middle of ±20 %"
        );
        assert!(!e.is_available(SEC / 2), "out while ejected");
        assert!(e.is_available(SEC), "its probe is due after the back-off");
    }

    #[test]
    fn a_failed_probe_ejects_for_twice_as_long_and_a_successful_one_restores() {
        let a = accrual();
        let e = endpoint();
        for _ in 0..3 {
            record(&a, &e, Outcome::Broken, 0, 0.5, || true);
        }
        assert!(
            e.health.claim_probe(SEC),
            "the first call after the back-off probes"
        );
        assert!(!e.health.claim_probe(SEC), "one probe at a time");
        assert!(!e.is_available(SEC), "no other call while the probe runs");
        assert_eq!(
            record(&a, &e, Outcome::Broken, SEC, 0.5, || true),
            Transition::Ejected(Duration::from_secs(2))
        );
        assert!(!e.is_available(2 * SEC));
        assert!(e.health.claim_probe(3 * SEC));
        assert_eq!(
            record(&a, &e, Outcome::Status(Code::Ok), 3 * SEC, 0.5, || true),
            Transition::Restored
        );
        assert!(e.is_available(3 * SEC));
        // The back-off starts over.
        for _ in 0..3 {
            record(&a, &e, Outcome::Broken, 4 * SEC, 0.5, || true);
        }
        assert!(e.is_available(5 * SEC), "1 s again, not 4 s");
    }

    #[test]
    fn ejections_grow_to_the_cap_with_jitter() {
        let a = Accrual::from(&FailureAccrual {
            consecutive_failures: 1,
            ..FailureAccrual::default()
        });
        let e = endpoint();
        let mut last = Duration::ZERO;
        for i in 0..10u32 {
            let now = u64::from(i) * 1000 * SEC;
            if i > 0 {
                assert!(e.health.claim_probe(now));
            }
            let Transition::Ejected(d) = record(&a, &e, Outcome::Broken, now, 1.0, || true) else {
                panic!("ejected")
            };
            assert!(
                d >= last || d >= Duration::from_secs(60),
                "{d:?} after {last:?}"
            );
            assert!(d <= Duration::from_secs(72), "capped at 60 s + 20 %: {d:?}");
            last = d;
        }
        assert_eq!(last, Duration::from_secs(72));
    }

    #[test]
    fn never_more_than_the_allowed_share_is_ejected() {
        let a = Accrual::from(&FailureAccrual::default());
        assert!(
            !may_eject(&a, 0, 1),
            "one endpoint is never ejected at 50 %"
        );
        assert!(may_eject(&a, 0, 3));
        assert!(!may_eject(&a, 1, 3), "1 of 3 is the most at 50 %");
        assert!(may_eject(&a, 1, 4));
        assert!(!may_eject(&a, 2, 4));
        let e = endpoint();
        for _ in 0..10 {
            assert_eq!(
                record(&a, &e, Outcome::Broken, 0, 0.5, || false),
                Transition::None
            );
        }
        assert!(e.is_available(0), "kept when the backend cannot spare it");
    }
}
