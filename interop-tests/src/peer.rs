//! What the backends on other gRPC implementations ([`python`](crate::python),
//! [`node`](crate::node)) share: running set-up commands, and a server process that reports
//! `PORT <n> <library> <version>` on its first line and exits when its stdin closes.

use std::{net::SocketAddr, path::Path, process::Stdio, time::Duration};

use anyhow::{Context as _, anyhow, bail, ensure};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// The crate's folder, where the servers' sources and their installs live.
pub(crate) fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a command to completion (blocking), failing with its output on a non-zero exit.
pub(crate) fn run(command: &mut std::process::Command) -> anyhow::Result<()> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    ensure!(
        out.status.success(),
        "{command:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A running echo server on another gRPC implementation. Killed when dropped.
#[derive(Debug)]
pub struct PeerServer {
    name: String,
    addr: SocketAddr,
    library_version: String,
    child: Child,
}

impl PeerServer {
    /// Spawns `command` (a server named `name` of `runtime`, e.g. `Python`) and reads the
    /// port and the version of `library` from its first line.
    pub(crate) async fn start(
        mut command: Command,
        runtime: &str,
        library: &str,
        name: &str,
    ) -> anyhow::Result<Self> {
        let mut child = command
            // The server exits when its stdin closes, so it cannot outlive this process.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout pipe"))?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| anyhow!("{runtime} server {name} did not report its port in 30 s"))??
            .ok_or_else(|| anyhow!("{runtime} server {name} exited before reporting its port"))?;
        let mut words = line.split_whitespace();
        let (Some("PORT"), Some(port), Some(reported), Some(version)) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            bail!("unexpected first line from {runtime} server {name}: {line:?}");
        };
        ensure!(
            reported == library,
            "{runtime} server {name} runs {reported}, not {library}"
        );
        let port: u16 = port.parse().with_context(|| format!("port in {line:?}"))?;
        Ok(Self {
            name: name.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            library_version: version.to_string(),
            child,
        })
    }

    /// Its name (the `x-echo-backend` of its responses).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The version of the gRPC library it runs, as it reported it.
    pub fn library_version(&self) -> &str {
        &self.library_version
    }

    /// Kills the process and waits for it to exit.
    ///
    /// # Errors
    ///
    /// If the process could not be killed.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}
