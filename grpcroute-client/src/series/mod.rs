//! Per-series call statistics: lock-free counters that the compiled table hands to every
//! call, and the registry that keeps them across configuration changes.

mod meter;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tonic::Code;

pub(crate) use self::meter::{CallMeter, Meter, status_in_headers, status_in_trailers};
use crate::{BackendService, model::ObjectKey};

/// Upper bounds of the latency buckets, in seconds: from half a millisecond (a loopback
/// call) to ten seconds (a slow streaming call).
pub(crate) const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// [`BUCKETS`] in nanoseconds, so that recording compares integers.
const BUCKETS_NANOS: [u64; BUCKETS.len()] = {
    let mut out = [0; BUCKETS.len()];
    let mut i = 0;
    while i < BUCKETS.len() {
        // Every bound is a whole number of microseconds, exact in f64.
        out[i] = (BUCKETS[i] * 1e6) as u64 * 1000;
        i += 1;
    }
    out
};

/// The 17 gRPC status codes, by number.
pub(crate) const CODES: usize = 17;

/// What one series counts: calls by final gRPC status, and their duration. Every field is
/// an atomic, so calls record without a lock.
#[derive(Debug, Default)]
pub(crate) struct CallStats {
    codes: [AtomicU64; CODES],
    /// One count per bucket of [`BUCKETS`], then one for longer calls.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl CallStats {
    pub(crate) fn record(&self, code: Code, elapsed: Duration) {
        let index = (code as usize).min(CODES - 1);
        self.codes[index].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_NANOS.partition_point(|&b| b < nanos);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Calls that ended with `code`.
    pub(crate) fn count(&self, code: Code) -> u64 {
        self.codes[(code as usize).min(CODES - 1)].load(Ordering::Relaxed)
    }

    /// Per-bucket counts (not cumulative), the last one for calls above every bound.
    pub(crate) fn buckets(&self) -> [u64; BUCKETS.len() + 1] {
        std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed))
    }

    pub(crate) fn sum_seconds(&self) -> f64 {
        Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)).as_secs_f64()
    }
}

/// Which calls one series counts. Labels are rendered from it at scrape time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum SeriesKey {
    /// Calls to a Kubernetes Service port, routed by GRPCRoutes.
    Service(ServiceSeries),
    /// Calls to an xDS listener.
    #[cfg_attr(not(feature = "xds"), allow(dead_code))]
    Listener(ListenerSeries),
}

/// The series of calls to a Service port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ServiceSeries {
    /// The Service port called; `None` for calls to a Service the mesh does not know.
    pub(crate) frontend: Option<(ObjectKey, u16)>,
    /// The GRPCRoute rule (route, index) that took the call.
    pub(crate) rule: Option<(ObjectKey, usize)>,
    /// The backend picked (for a pass-through call, the frontend itself).
    pub(crate) backend: Option<BackendService>,
}

/// The series of calls to an xDS listener.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ListenerSeries {
    /// The listener.
    pub(crate) listener: Arc<str>,
    /// The route (`<route configuration>/<virtual host>`, and the route's configured
    /// index) that took the call.
    pub(crate) route: Option<(Arc<str>, usize)>,
    /// The cluster picked.
    pub(crate) cluster: Option<Arc<str>>,
}

/// A series of a routing table, looked up (or created) in the registry by the first call
/// that records into it: a table of many rules costs a pointer per rule and backend until
/// calls reach them, and calls after the first read it without a lock.
#[derive(Debug, Default)]
pub(crate) struct SeriesSlot(OnceLock<Arc<CallStats>>);

impl SeriesSlot {
    pub(crate) fn get(
        &self,
        registry: &SeriesRegistry,
        key: impl FnOnce() -> SeriesKey,
    ) -> &Arc<CallStats> {
        self.0.get_or_init(|| registry.get(key()))
    }
}

/// Every series that calls have recorded into, by key. Only a table's first call into a
/// series, configuration updates and scrapes take the lock.
#[derive(Debug, Default)]
pub(crate) struct SeriesRegistry {
    series: Mutex<HashMap<SeriesKey, Arc<CallStats>>>,
    /// Calls that named no Service the mesh knows, or came before the first configuration.
    unrouted: CallStats,
}

impl SeriesRegistry {
    /// The series for `key`, the same one every time while it is kept, so counts survive
    /// configuration changes.
    pub(crate) fn get(&self, key: SeriesKey) -> Arc<CallStats> {
        self.lock().entry(key).or_default().clone()
    }

    pub(crate) fn unrouted(&self) -> &CallStats {
        &self.unrouted
    }

    /// Forgets the series of routes, rules, backends and Services that the configuration
    /// no longer has (`reachable` says which remain), so that churning configuration does
    /// not grow the registry. A call still in flight keeps its own series to the end.
    pub(crate) fn retain_reachable(&self, reachable: impl Fn(&SeriesKey) -> bool) {
        self.lock().retain(|key, _| reachable(key));
    }

    /// A copy of the current series, sorted by key, for a scrape.
    pub(crate) fn snapshot(&self) -> Vec<(SeriesKey, Arc<CallStats>)> {
        let mut all: Vec<_> = self
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SeriesKey, Arc<CallStats>>> {
        // The map stays consistent even if a holder panicked: every operation is one call.
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(route: &str) -> SeriesKey {
        SeriesKey::Service(ServiceSeries {
            frontend: Some((ObjectKey::new("shop", "checkout"), 50051)),
            rule: Some((ObjectKey::new("shop", route), 0)),
            backend: None,
        })
    }

    #[test]
    fn records_codes_buckets_and_sum() {
        let stats = CallStats::default();
        stats.record(Code::Ok, Duration::from_micros(300));
        stats.record(Code::Ok, Duration::from_millis(3));
        stats.record(Code::Unavailable, Duration::from_secs(60));
        assert_eq!(stats.count(Code::Ok), 2);
        assert_eq!(stats.count(Code::Unavailable), 1);
        assert_eq!(stats.count(Code::Internal), 0);
        let buckets = stats.buckets();
        assert_eq!(buckets[0], 1, "0.3 ms is in the 0.5 ms bucket");
        assert_eq!(buckets[3], 1, "3 ms is in the 5 ms bucket");
        assert_eq!(buckets[BUCKETS.len()], 1, "60 s is above every bound");
        assert_eq!(buckets.iter().sum::<u64>(), 3);
        assert!((stats.sum_seconds() - 60.0033).abs() < 1e-9);
    }

    #[test]
    fn integer_bounds_are_the_bounds() {
        for (nanos, seconds) in BUCKETS_NANOS.iter().zip(BUCKETS) {
            assert_eq!(Duration::from_nanos(*nanos).as_secs_f64(), seconds);
        }
    }

    #[test]
    fn a_bound_itself_falls_in_its_bucket() {
        let stats = CallStats::default();
        stats.record(Code::Ok, Duration::from_millis(1));
        assert_eq!(stats.buckets()[1], 1, "le=0.001 includes 1 ms");
    }

    #[test]
    fn series_survive_while_reachable_and_are_forgotten_after() {
        let registry = SeriesRegistry::default();
        let slot = SeriesSlot::default();
        let a = slot.get(&registry, || key("a"));
        a.record(Code::Ok, Duration::ZERO);
        let b = registry.get(key("b"));
        assert!(Arc::ptr_eq(a, &registry.get(key("a"))));
        assert!(Arc::ptr_eq(
            a,
            slot.get(&registry, || unreachable!("set once"))
        ));

        registry.retain_reachable(|k| {
            matches!(k, SeriesKey::Service(s) if s.rule.as_ref().is_some_and(|(r, _)| r.name() == "a"))
        });
        assert_eq!(registry.snapshot().len(), 1);
        assert_eq!(
            registry.get(key("a")).count(Code::Ok),
            1,
            "kept with its counts"
        );
        b.record(Code::Ok, Duration::ZERO);
        assert_eq!(
            registry.get(key("b")).count(Code::Ok),
            0,
            "forgotten: a new series"
        );
    }
}
