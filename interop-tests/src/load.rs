//! A steady load of calls: callers that call one target through a mesh channel back to
//! back, recording every outcome together with the configuration epochs the call
//! overlapped, so a test can check each answer against the configuration of its moment.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use grpcroute_client::Mesh;
use tokio::task::JoinSet;
use tonic::Status;

use crate::calls::{ECHO, backend, call};

/// One call: the epochs current when it started and when it ended, and the backend that
/// answered (or the status).
#[derive(Debug)]
pub struct Record {
    /// [`Load::set_epoch`] value when the call started.
    pub before: usize,
    /// ... and when it ended.
    pub after: usize,
    /// The answering backend (pod name), or the failure.
    pub result: Result<String, Status>,
}

/// Callers running until [`Load::stop`].
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    epoch: Arc<AtomicUsize>,
    calls: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    workers: JoinSet<Vec<Record>>,
}

impl Load {
    /// Starts `callers` tasks that each call `ECHO` on `target` (through `mesh.channel`)
    /// one call after the other.
    ///
    /// # Errors
    ///
    /// An invalid target.
    pub fn start(mesh: &Mesh, target: &str, callers: usize) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Arc::new(AtomicUsize::new(0));
        let calls = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let mut workers = JoinSet::new();
        for _ in 0..callers {
            let channel = mesh.channel(target)?;
            let (stop, epoch, calls, failed) =
                (stop.clone(), epoch.clone(), calls.clone(), failed.clone());
            workers.spawn(async move {
                let mut records = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let before = epoch.load(Ordering::SeqCst);
                    let result = call(channel.clone(), ECHO, &[])
                        .await
                        .map(|r| backend(r.metadata()).unwrap_or_else(|| "?".to_string()));
                    let after = epoch.load(Ordering::SeqCst);
                    calls.fetch_add(1, Ordering::SeqCst);
                    if result.is_err() {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                    records.push(Record {
                        before,
                        after,
                        result,
                    });
                }
                records
            });
        }
        Ok(Self {
            stop,
            epoch,
            calls,
            failed,
            workers,
        })
    }

    /// Marks the start of configuration epoch `epoch` (call it once the mesh applies
    /// it).
    pub fn set_epoch(&self, epoch: usize) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// Calls completed so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Calls failed so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    /// Waits until `n` more calls than now have completed (at most `timeout`); whether
    /// they did.
    pub async fn more_calls(&self, n: u64, timeout: Duration) -> bool {
        let target = self.calls() + n;
        crate::eventually(timeout, || self.calls() >= target).await
    }

    /// Stops the callers and returns every record.
    ///
    /// # Panics
    ///
    /// If a caller task panicked.
    pub async fn stop(mut self) -> Records {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Vec::new();
        while let Some(records) = self.workers.join_next().await {
            match records {
                Ok(records) => all.extend(records),
                Err(e) => panic!("a caller task failed: {e}"),
            }
        }
        Records(all)
    }
}

/// The outcomes of a [`Load`].
#[derive(Debug)]
pub struct Records(pub Vec<Record>);

impl Records {
    /// Calls made.
    pub fn total(&self) -> usize {
        self.0.len()
    }

    /// Failed calls.
    pub fn failures(&self) -> Vec<&Status> {
        self.0
            .iter()
            .filter_map(|r| r.result.as_ref().err())
            .collect()
    }

    /// Successful calls by backend.
    pub fn by_backend(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for r in &self.0 {
            if let Ok(name) = &r.result {
                *out.entry(name.clone()).or_default() += 1;
            }
        }
        out
    }

    /// Panics unless every call succeeded.
    #[track_caller]
    pub fn assert_no_failures(&self) {
        let failures = self.failures();
        assert!(
            failures.is_empty(),
            "{} of {} calls failed; first: {:?}",
            failures.len(),
            self.total(),
            failures.first()
        );
    }

    /// Panics unless every answer came from a backend `allowed(epoch, name)` accepts for
    /// some epoch the call overlapped (`before..=after`). For this to be exact, a test
    /// marks an epoch with [`Load::set_epoch`] *before* the configuration it stands for
    /// can reach the mesh: typically a transition epoch (old and new allowed) before a
    /// change is written, then the new one once the mesh has it.
    #[track_caller]
    pub fn assert_answers(&self, allowed: impl Fn(usize, &str) -> bool) {
        for r in &self.0 {
            if let Ok(name) = &r.result {
                let ok = (r.before..=r.after).any(|e| allowed(e, name));
                assert!(
                    ok,
                    "{name} answered a call made during epochs {}..={}",
                    r.before, r.after
                );
            }
        }
    }
}
