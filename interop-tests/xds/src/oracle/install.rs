//! Installing the oracles' runtimes, once per machine (idempotent, under file locks so
//! parallel test binaries do not race):
//!
//! - Python: a virtualenv at `interop-tests/xds/python/.venv` filled from the pinned
//!   `python/requirements.txt` (or the interpreter named by `GRPCROUTE_XDS_PYTHON`, which
//!   must already have `grpcio` and `xds-protos`);
//! - Node: `npm ci --ignore-scripts` in `interop-tests/xds/node` from the committed
//!   `package-lock.json`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

use super::OracleError;

/// The environment variable naming a Python interpreter to use instead of the virtualenv.
pub const PYTHON_ENV: &str = "GRPCROUTE_XDS_PYTHON";

/// This crate's folder (where `python/` and `node/` live).
pub fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Python driver's folder.
pub fn python_dir() -> PathBuf {
    crate_dir().join("python")
}

/// The Node driver's folder.
pub fn node_dir() -> PathBuf {
    crate_dir().join("node")
}

/// Runs a command to completion, failing with its output on a non-zero exit; a program
/// that is not installed is [`OracleError::Missing`].
fn run(command: &mut Command, tool: &str) -> Result<String, OracleError> {
    let out = command.stdin(Stdio::null()).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            OracleError::Missing {
                tool: tool.to_string(),
            }
        } else {
            OracleError::Install(format!("running {command:?}: {e}"))
        }
    })?;
    if !out.status.success() {
        return Err(OracleError::Install(format!(
            "{command:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> OracleError {
    OracleError::Install(format!("{what} {}: {e}", path.display()))
}

/// An interpreter with the pinned packages, creating the virtualenv on first use. Blocks.
///
/// # Errors
///
/// [`OracleError::Missing`] without `python3`; [`OracleError::Install`] when the
/// virtualenv or `pip install` fails.
pub fn python() -> Result<PathBuf, OracleError> {
    static PYTHON: OnceLock<Result<PathBuf, OracleError>> = OnceLock::new();
    PYTHON.get_or_init(install_python).clone()
}

fn install_python() -> Result<PathBuf, OracleError> {
    if let Some(python) = std::env::var_os(PYTHON_ENV) {
        let python = PathBuf::from(python);
        check_python(&python)?;
        return Ok(python);
    }
    let requirements_path = python_dir().join("requirements.txt");
    let requirements = std::fs::read_to_string(&requirements_path)
        .map_err(|e| io_error("reading", &requirements_path, e))?;
    let venv = python_dir().join(".venv");
    std::fs::create_dir_all(&venv).map_err(|e| io_error("creating", &venv, e))?;
    let lock_path = venv.join(".grpcroute.lock");
    let lock =
        std::fs::File::create(&lock_path).map_err(|e| io_error("creating", &lock_path, e))?;
    // Held until this function returns: one process installs, the others wait and reuse.
    lock.lock()
        .map_err(|e| io_error("locking", &lock_path, e))?;
    let python = venv.join("bin").join("python");
    let marker = venv.join(".grpcroute-requirements.txt");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(requirements.as_str())
        && check_python(&python).is_ok()
    {
        return Ok(python);
    }
    run(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "python3",
    )?;
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-q",
                "-r",
            ])
            .arg(&requirements_path),
        "pip",
    )?;
    check_python(&python)?;
    std::fs::write(&marker, requirements).map_err(|e| io_error("writing", &marker, e))?;
    Ok(python)
}

fn check_python(python: &Path) -> Result<(), OracleError> {
    run(
        Command::new(python).args(["-c", "import grpc, envoy.service.status.v3.csds_pb2"]),
        "python3",
    )
    .map(drop)
}

/// `node`, after `npm ci` on first use. Blocks.
///
/// # Errors
///
/// [`OracleError::Missing`] without `node` or `npm`; [`OracleError::Install`] when
/// `npm ci` fails.
pub fn node() -> Result<PathBuf, OracleError> {
    static NODE: OnceLock<Result<PathBuf, OracleError>> = OnceLock::new();
    NODE.get_or_init(install_node).clone()
}

fn install_node() -> Result<PathBuf, OracleError> {
    let node = PathBuf::from("node");
    run(Command::new(&node).arg("--version"), "node")?;
    run(Command::new("npm").arg("--version"), "npm")?;
    let dir = node_dir();
    let lock_path = dir.join("package-lock.json");
    let locked =
        std::fs::read_to_string(&lock_path).map_err(|e| io_error("reading", &lock_path, e))?;
    // Outside node_modules, which `npm ci` deletes: a lock on a deleted file excludes no one.
    let file_lock_path = dir.join(".grpcroute-npm.lock");
    let file_lock = std::fs::File::create(&file_lock_path)
        .map_err(|e| io_error("creating", &file_lock_path, e))?;
    file_lock
        .lock()
        .map_err(|e| io_error("locking", &file_lock_path, e))?;
    let marker = dir
        .join("node_modules")
        .join(".grpcroute-package-lock.json");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(locked.as_str())
        && check_node(&node).is_ok()
    {
        return Ok(node);
    }
    run(
        Command::new("npm")
            .args([
                "ci",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .current_dir(&dir),
        "npm",
    )?;
    check_node(&node)?;
    std::fs::write(&marker, locked).map_err(|e| io_error("writing", &marker, e))?;
    Ok(node)
}

fn check_node(node: &Path) -> Result<(), OracleError> {
    run(
        Command::new(node)
            .args([
                "-e",
                "require('@grpc/grpc-js-xds'); require('@grpc/proto-loader')",
            ])
            .current_dir(node_dir()),
        "node",
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_that_is_not_installed_is_missing_not_failed() {
        let err = run(
            &mut Command::new("grpcroute-no-such-program"),
            "grpcroute-no-such-program",
        )
        .unwrap_err();
        assert!(err.is_missing_tool(), "{err}");
        let err = run(Command::new("sh").args(["-c", "exit 3"]), "sh").unwrap_err();
        assert!(!err.is_missing_tool(), "{err}");
    }
}
