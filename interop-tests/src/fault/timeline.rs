//! Callers that call one target through a mesh without pause, recording for every call
//! when it started and ended (from the timeline's start) and who answered, so that a test
//! can tell the calls a fault caught in flight from those that came after, and print the
//! figures of the fault: calls made, failed, and how long until traffic moved.
//!
//! Every call is bounded: one that takes longer than the timeline's bound is recorded as
//! hung ([`CallRecord::hung`]) and abandoned, so a hang fails the test instead of stalling
//! it.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use grpcroute_client::Mesh;
use tokio::{task::JoinSet, time::Instant};
use tonic::{Code, Status};

use crate::calls::{ECHO, backend, call};

/// The message of a call abandoned at the timeline's bound.
const HUNG: &str = "hung: no answer within the timeline's bound";

/// One call.
#[derive(Clone, Debug)]
pub struct CallRecord {
    /// When it started, from the timeline's start.
    pub started: Duration,
    /// When it ended.
    pub ended: Duration,
    /// The backend that answered (`x-echo-backend`), or the failure.
    pub result: Result<String, Status>,
}

impl CallRecord {
    /// Whether it failed.
    pub fn failed(&self) -> bool {
        self.result.is_err()
    }

    /// Whether it was abandoned at the timeline's bound: a hang.
    pub fn hung(&self) -> bool {
        matches!(&self.result, Err(s) if s.code() == Code::DeadlineExceeded && s.message() == HUNG)
    }

    /// Whether it was in flight at `t`.
    pub fn in_flight_at(&self, t: Duration) -> bool {
        self.started <= t && self.ended > t
    }

    /// Whether `name` answered it.
    pub fn answered_by(&self, name: &str) -> bool {
        matches!(&self.result, Ok(b) if b == name)
    }

    /// How long it took.
    pub fn duration(&self) -> Duration {
        self.ended.saturating_sub(self.started)
    }
}

/// Callers running until [`Timeline::stop`].
#[derive(Debug)]
pub struct Timeline {
    start: Instant,
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
    workers: JoinSet<Vec<CallRecord>>,
}

impl Timeline {
    /// Starts `callers` tasks that each call [`ECHO`] on `target` through
    /// `mesh.channel`, one call after the other, with `metadata`; each call is abandoned
    /// as hung after `bound`.
    ///
    /// # Errors
    ///
    /// An invalid target.
    pub fn start(
        mesh: &Mesh,
        target: &str,
        callers: usize,
        metadata: &[(&str, &str)],
        bound: Duration,
    ) -> anyhow::Result<Self> {
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicU64::new(0));
        let metadata: Vec<(String, String)> = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut workers = JoinSet::new();
        for _ in 0..callers {
            let channel = mesh.channel(target)?;
            let (stop, calls, metadata) = (stop.clone(), calls.clone(), metadata.clone());
            workers.spawn(async move {
                let metadata: Vec<(&str, &str)> = metadata
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let mut records = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let started = start.elapsed();
                    let result =
                        match tokio::time::timeout(bound, call(channel.clone(), ECHO, &metadata))
                            .await
                        {
                            Err(_) => Err(Status::deadline_exceeded(HUNG)),
                            Ok(result) => result
                                .map(|r| backend(r.metadata()).unwrap_or_else(|| "?".to_string())),
                        };
                    records.push(CallRecord {
                        started,
                        ended: start.elapsed(),
                        result,
                    });
                    calls.fetch_add(1, Ordering::SeqCst);
                }
                records
            });
        }
        Ok(Self {
            start,
            stop,
            calls,
            workers,
        })
    }

    /// Now, on the timeline.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Calls completed so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Waits until `n` more calls than now have completed (at most `timeout`); whether
    /// they did.
    pub async fn more_calls(&self, n: u64, timeout: Duration) -> bool {
        let target = self.calls() + n;
        crate::eventually(timeout, || self.calls() >= target).await
    }

    /// Stops the callers (each finishes its call) and returns every record, by start.
    ///
    /// # Panics
    ///
    /// If a caller task panicked.
    pub async fn stop(mut self) -> Calls {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Vec::new();
        while let Some(records) = self.workers.join_next().await {
            match records {
                Ok(records) => all.extend(records),
                Err(e) => panic!("a caller task failed: {e}"),
            }
        }
        all.sort_by_key(|r| r.started);
        Calls(all)
    }
}

/// The calls of a [`Timeline`], by start.
#[derive(Clone, Debug)]
pub struct Calls(pub Vec<CallRecord>);

impl Calls {
    /// Calls made.
    pub fn made(&self) -> usize {
        self.0.len()
    }

    /// The failed calls.
    pub fn failed(&self) -> Vec<&CallRecord> {
        self.0.iter().filter(|r| r.failed()).collect()
    }

    /// The calls abandoned at the bound.
    pub fn hung(&self) -> Vec<&CallRecord> {
        self.0.iter().filter(|r| r.hung()).collect()
    }

    /// The calls in flight at `t`.
    pub fn in_flight_at(&self, t: Duration) -> Vec<&CallRecord> {
        self.0.iter().filter(|r| r.in_flight_at(t)).collect()
    }

    /// The calls started at or after `t`.
    pub fn started_from(&self, t: Duration) -> Vec<&CallRecord> {
        self.0.iter().filter(|r| r.started >= t).collect()
    }

    /// Answers by backend.
    pub fn by_backend(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for r in &self.0 {
            if let Ok(name) = &r.result {
                *out.entry(name.clone()).or_default() += 1;
            }
        }
        out
    }

    /// Failures by gRPC code.
    pub fn failures_by_code(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for r in self.failed() {
            if let Err(s) = &r.result {
                *out.entry(format!("{:?}", s.code())).or_default() += 1;
            }
        }
        out
    }

    /// The figures of a fault at `fault` that concerned backend `victim`.
    pub fn figures(&self, fault: Duration, victim: &str) -> Figures {
        let after: Vec<&CallRecord> = self.0.iter().filter(|r| r.ended > fault).collect();
        let in_flight = self.in_flight_at(fault);
        let started_after = self.started_from(fault);
        // Traffic has moved once no call ends failed or answered by the victim any more.
        let moved = after
            .iter()
            .filter(|r| r.failed() || r.answered_by(victim))
            .map(|r| r.ended.saturating_sub(fault))
            .max()
            .unwrap_or_default();
        Figures {
            made: self.made(),
            failed: self.failed().len(),
            in_flight_at_fault: in_flight.len(),
            failed_in_flight: in_flight.iter().filter(|r| r.failed()).count(),
            started_after: started_after.len(),
            failed_started_after: started_after.iter().filter(|r| r.failed()).count(),
            answered_by_victim_after: started_after
                .iter()
                .filter(|r| r.answered_by(victim))
                .count(),
            moved_after: moved,
            longest: self
                .0
                .iter()
                .map(CallRecord::duration)
                .max()
                .unwrap_or_default(),
        }
    }
}

/// What a fault did to the calls around it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Figures {
    /// Calls made.
    pub made: usize,
    /// Calls failed.
    pub failed: usize,
    /// Calls in flight when the fault struck.
    pub in_flight_at_fault: usize,
    /// ... of which failed.
    pub failed_in_flight: usize,
    /// Calls started after the fault.
    pub started_after: usize,
    /// ... of which failed.
    pub failed_started_after: usize,
    /// ... of which the victim answered.
    pub answered_by_victim_after: usize,
    /// From the fault until the last call that failed or reached the victim ended: from
    /// then on every call went elsewhere and succeeded.
    pub moved_after: Duration,
    /// The longest call.
    pub longest: Duration,
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} calls made, {} failed; at the fault {} in flight ({} failed); after it {} \
             started ({} failed, {} answered by the victim); traffic moved {:.0} ms after \
             the fault; longest call {:.0} ms",
            self.made,
            self.failed,
            self.in_flight_at_fault,
            self.failed_in_flight,
            self.started_after,
            self.failed_started_after,
            self.answered_by_victim_after,
            self.moved_after.as_secs_f64() * 1e3,
            self.longest.as_secs_f64() * 1e3,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(started: u64, ended: u64, result: Result<&str, Code>) -> CallRecord {
        CallRecord {
            started: Duration::from_millis(started),
            ended: Duration::from_millis(ended),
            result: result.map(str::to_string).map_err(|c| Status::new(c, "x")),
        }
    }

    #[test]
    fn figures_tell_calls_in_flight_from_later_ones() {
        let calls = Calls(vec![
            record(0, 50, Ok("a")),
            record(80, 120, Err(Code::Unavailable)),
            record(90, 400, Ok("b")),
            record(110, 130, Ok("a")),
            record(130, 300, Err(Code::Unavailable)),
            record(300, 310, Ok("b")),
        ]);
        let f = calls.figures(Duration::from_millis(100), "a");
        assert_eq!(f.made, 6);
        assert_eq!(f.failed, 2);
        assert_eq!((f.in_flight_at_fault, f.failed_in_flight), (2, 1));
        assert_eq!(
            (
                f.started_after,
                f.failed_started_after,
                f.answered_by_victim_after
            ),
            (3, 1, 1)
        );
        assert_eq!(f.moved_after, Duration::from_millis(200));
        assert_eq!(f.longest, Duration::from_millis(310));
        assert!(calls.hung().is_empty());
        assert_eq!(calls.failures_by_code()["Unavailable"], 2);
    }
}
