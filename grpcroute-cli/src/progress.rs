//! A progress bar on stderr for long `call` runs: drawn only when there are enough calls to
//! wait for and stderr is a terminal, so pipes and CI logs stay clean. Hand-rolled: one
//! line redrawn a few times a second needs no crate.

use std::{
    io::{IsTerminal, Write},
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

/// From how many calls a bar is worth drawing.
const MIN_CALLS: u64 = 200;
const WIDTH: u64 = 30;

/// A running progress bar (or nothing).
#[derive(Debug)]
pub(crate) struct Progress {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Starts redrawing `done / total` every 100 ms, if worth it.
    pub(crate) fn start(total: u64, done: Arc<AtomicU32>) -> Self {
        if total < MIN_CALLS || !std::io::stderr().is_terminal() {
            return Self { task: None };
        }
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let n = u64::from(done.load(Ordering::Relaxed)).min(total);
                let filled = n * WIDTH / total;
                let bar = format!(
                    "\r[{}{}] {n}/{total}",
                    "#".repeat(filled as usize),
                    "-".repeat((WIDTH - filled) as usize)
                );
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(bar.as_bytes());
                let _ = err.flush();
            }
        });
        Self { task: Some(task) }
    }

    /// Stops and erases the bar.
    pub(crate) fn finish(self) {
        if let Some(task) = self.task {
            task.abort();
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(b"\r\x1b[2K");
            let _ = err.flush();
        }
    }
}
