//! gRPC backends served by Python `grpcio` (gRPC C-core): an independent implementation of
//! the wire protocol, to check that what the mesh sends and relays is plain gRPC.
//!
//! The interpreter comes from `GRPCROUTE_PYTHON` if set (it must already have `grpcio`);
//! otherwise a virtualenv at `interop-tests/.venv` is created with `python3 -m venv` and
//! filled from `interop-tests/python/requirements.txt` (pinned versions). Creation is
//! idempotent and guarded by a file lock, so test binaries running in parallel do not race.
//! Missing Python or pip is an error, never a skip.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use anyhow::{Context as _, anyhow};
use tokio::process::Command;

use crate::peer::{PeerServer, crate_dir, run};

/// The environment variable naming an interpreter to use instead of the virtualenv.
pub const PYTHON_ENV: &str = "GRPCROUTE_PYTHON";

/// The folder of the Python sources and requirements.
pub fn python_dir() -> PathBuf {
    crate_dir().join("python")
}

/// An interpreter with the pinned `grpcio`, creating the virtualenv on first use. Blocks
/// (run it with `spawn_blocking` from async code, or call [`start`]).
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

fn check_grpcio(python: &Path) -> anyhow::Result<()> {
    run(std::process::Command::new(python).args(["-c", "import grpc"]))
        .with_context(|| format!("{} cannot import grpc", python.display()))
}

/// Starts a Python echo server (`python/echo_server.py`) whose responses name it `name`,
/// on a free port of 127.0.0.1.
///
/// # Errors
///
/// No interpreter (see [`interpreter`]), or the server did not report its port within 30 s.
pub async fn start(name: &str) -> anyhow::Result<PeerServer> {
    let python = tokio::task::spawn_blocking(interpreter).await??;
    let mut command = Command::new(&python);
    command
        .arg(python_dir().join("echo_server.py"))
        .args(["--name", name]);
    PeerServer::start(command, "Python", "grpcio", name).await
}
