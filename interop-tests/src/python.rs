//! gRPC backends served by Python `grpcio` (gRPC C-core): an independent implementation of
//! the wire protocol, to check that what the mesh sends and relays is plain gRPC.
//!
//! The interpreter comes from `GRPCROUTE_PYTHON` if set (it must already have `grpcio`);
//! otherwise a virtualenv at `interop-tests/.venv` is created with `python3 -m venv` and
//! filled from `interop-tests/python/requirements.txt` (pinned versions). Creation is
//! idempotent and guarded by a file lock, so test binaries running in parallel do not race.
//! Missing Python or pip is an error, never a skip.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::OnceLock,
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail, ensure};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// The environment variable naming an interpreter to use instead of the virtualenv.
pub const PYTHON_ENV: &str = "GRPCROUTE_PYTHON";

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The folder of the Python sources and requirements.
pub fn python_dir() -> PathBuf {
    crate_dir().join("python")
}

/// An interpreter with the pinned `grpcio`, creating the virtualenv on first use. Blocks
/// (run it with `spawn_blocking` from async code, or call [`PythonServer::start`]).
///
/// # Errors
///
/// No `python3`, no `venv`/`pip`, no network to PyPI, or `GRPCROUTE_PYTHON` names an
/// interpreter without `grpcio`.
pub fn interpreter() -> anyhow::Result<PathBuf> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| find_or_create().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn find_or_create() -> anyhow::Result<PathBuf> {
    if let Some(python) = std::env::var_os(PYTHON_ENV) {
        let python = PathBuf::from(python);
        check_grpcio(&python)
            .with_context(|| format!("{PYTHON_ENV}={} cannot run the servers", python.display()))?;
        return Ok(python);
    }
    let requirements_path = python_dir().join("requirements.txt");
    let requirements = std::fs::read_to_string(&requirements_path)
        .with_context(|| format!("reading {}", requirements_path.display()))?;
    let venv = crate_dir().join(".venv");
    std::fs::create_dir_all(&venv).with_context(|| format!("creating {}", venv.display()))?;
    let lock = std::fs::File::create(venv.join(".grpcroute.lock"))?;
    // Held until this function returns: one process installs, the others wait and reuse.
    lock.lock().context("locking the virtualenv")?;
    let python = venv.join("bin").join("python");
    let marker = venv.join(".grpcroute-requirements.txt");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(requirements.as_str())
        && check_grpcio(&python).is_ok()
    {
        return Ok(python);
    }
    run(std::process::Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv))
    .context("creating the virtualenv (is python3 with venv installed?)")?;
    run(std::process::Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            "-r",
        ])
        .arg(&requirements_path))
    .context("installing the Python requirements from PyPI")?;
    check_grpcio(&python)?;
    std::fs::write(&marker, requirements)?;
    Ok(python)
}

/// Runs a command to completion (blocking), failing with its output on a non-zero exit.
fn run(command: &mut std::process::Command) -> anyhow::Result<()> {
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

fn check_grpcio(python: &Path) -> anyhow::Result<()> {
    run(std::process::Command::new(python).args(["-c", "import grpc"]))
        .with_context(|| format!("{} cannot import grpc", python.display()))
}

/// A running Python echo server (`python/echo_server.py`). Killed when dropped.
#[derive(Debug)]
pub struct PythonServer {
    name: String,
    addr: SocketAddr,
    grpcio: String,
    child: Child,
}

impl PythonServer {
    /// Starts a server whose responses name it `name`, on a free port of 127.0.0.1.
    ///
    /// # Errors
    ///
    /// No interpreter (see [`interpreter`]), or the server did not report its port within
    /// 30 s.
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        let python = tokio::task::spawn_blocking(interpreter).await??;
        let mut child = Command::new(&python)
            .arg(python_dir().join("echo_server.py"))
            .args(["--name", name])
            // The server exits when its stdin closes, so it cannot outlive this process.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", python.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout pipe"))?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| anyhow!("Python server {name} did not report its port in 30 s"))??
            .ok_or_else(|| anyhow!("Python server {name} exited before reporting its port"))?;
        // "PORT <n> grpcio <version>"
        let mut words = line.split_whitespace();
        let (Some("PORT"), Some(port), Some("grpcio"), Some(version)) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            bail!("unexpected first line from Python server {name}: {line:?}");
        };
        let port: u16 = port.parse().with_context(|| format!("port in {line:?}"))?;
        Ok(Self {
            name: name.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            grpcio: version.to_string(),
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

    /// The `grpcio` version it runs.
    pub fn grpcio_version(&self) -> &str {
        &self.grpcio
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
