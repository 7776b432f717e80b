//! A [`DelayServer`](super::DelayServer) in a child process: the `fault-backend` binary of
//! this crate. A process can die the way pods die — SIGKILL, with calls in flight and
//! nothing sent to the clients; its kernel closes the sockets — which a server inside the
//! test process cannot.
//!
//! The binary prints `PORT <port>` once it listens, then `STARTED <n>` each time a call
//! arrives (so the test knows which calls it has in flight). Closing its stdin (or
//! SIGTERM) stops it gracefully, like a pod's SIGTERM: GOAWAY, calls in flight finish,
//! then it exits; it therefore never outlives the test process. Integration tests of this
//! crate find the binary as `env!("CARGO_BIN_EXE_fault-backend")`.

use std::{net::SocketAddr, path::Path, process::Stdio, time::Duration};

use anyhow::{Context as _, anyhow, bail};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, ChildStdin, Command},
    sync::watch,
    task::JoinHandle,
};

use crate::cluster::LOOPBACK;

/// A running `fault-backend` process. Killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct BackendProcess {
    name: String,
    addr: SocketAddr,
    child: Child,
    stdin: Option<ChildStdin>,
    started: watch::Receiver<u64>,
    reader: JoinHandle<()>,
}

impl BackendProcess {
    /// Starts `binary` (the `fault-backend` binary) as backend `name` on a free port of
    /// 127.0.0.1.
    ///
    /// # Errors
    ///
    /// The process cannot be started, or does not report its port within 10 s.
    pub async fn start(binary: impl AsRef<Path>, name: &str) -> anyhow::Result<Self> {
        let binary = binary.as_ref();
        let mut child = Command::new(binary)
            .args(["--name", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout pipe"))?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .map_err(|_| anyhow!("backend process {name} did not report its port in 10 s"))??
            .ok_or_else(|| anyhow!("backend process {name} exited before reporting its port"))?;
        let Some(port) = first.strip_prefix("PORT ") else {
            bail!("unexpected first line from backend process {name}: {first:?}");
        };
        let port: u16 = port.parse().with_context(|| format!("port in {first:?}"))?;
        let (tx, started) = watch::channel(0);
        let reader = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(n) = line.strip_prefix("STARTED ").and_then(|n| n.parse().ok()) {
                    tx.send_replace(n);
                }
            }
        });
        Ok(Self {
            name: name.to_string(),
            addr: SocketAddr::from((LOOPBACK, port)),
            stdin: child.stdin.take(),
            child,
            started,
            reader,
        })
    }

    /// Its name, the `x-echo-backend` of its answers.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Calls it has reported receiving.
    pub fn started(&self) -> u64 {
        *self.started.borrow()
    }

    /// Waits until it has received `n` calls in all (at most `timeout`).
    ///
    /// # Errors
    ///
    /// Not within `timeout`.
    pub async fn wait_for_started(&self, n: u64, timeout: Duration) -> anyhow::Result<()> {
        let mut started = self.started.clone();
        tokio::time::timeout(timeout, started.wait_for(|s| *s >= n))
            .await
            .map_err(|_| {
                anyhow!(
                    "backend process {} received {} calls, not {n}, within {timeout:?}",
                    self.name,
                    self.started()
                )
            })?
            .map_err(|_| anyhow!("backend process {} stopped reporting", self.name))?;
        Ok(())
    }

    /// Kills it with SIGKILL and waits until it is gone: its calls in flight are
    /// abandoned, and its kernel closes its sockets.
    ///
    /// # Errors
    ///
    /// The signal could not be sent, or the process not waited for.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.start_kill().context("sending SIGKILL")?;
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .context("the killed process did not exit within 10 s")??;
        self.reader.abort();
        Ok(())
    }

    /// Stops it gracefully (stdin closed: GOAWAY, calls in flight finish, the port
    /// closes) and waits until it has exited (at most `timeout`).
    ///
    /// # Errors
    ///
    /// It did not exit within `timeout`, or exited with a failure.
    pub async fn shutdown(mut self, timeout: Duration) -> anyhow::Result<()> {
        drop(self.stdin.take());
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .with_context(|| {
                format!(
                    "backend process {} did not stop within {timeout:?}",
                    self.name
                )
            })??;
        self.reader.abort();
        anyhow::ensure!(
            status.success(),
            "backend process {} exited with {status}",
            self.name
        );
        Ok(())
    }
}
