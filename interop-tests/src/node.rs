//! gRPC backends served by Node's `@grpc/grpc-js` (pure JavaScript over Node's `http2`
//! module): another independent implementation of the wire protocol, next to
//! [`python`](crate::python)'s gRPC C-core.
//!
//! `node` and `npm` come from `PATH`. The first use runs `npm ci` in `interop-tests/node`,
//! which installs exactly what `package-lock.json` pins into `interop-tests/node/node_modules`
//! (install scripts disabled: none is needed). It is idempotent and guarded by a file lock,
//! so test binaries running in parallel do not race; later runs reuse `node_modules` while
//! the lock file is unchanged. Missing `node` or `npm` is an error, never a skip.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::OnceLock,
};

use anyhow::{Context as _, anyhow, bail, ensure};
use tokio::process::Command;

use crate::peer::{PeerServer, crate_dir, run};

/// The npm package the servers run on.
pub const GRPC_JS: &str = "@grpc/grpc-js";

/// The folder of the Node sources, `package.json` and `package-lock.json`.
pub fn node_dir() -> PathBuf {
    crate_dir().join("node")
}

/// The exact `@grpc/grpc-js` version `package.json` pins (and `package-lock.json` locks).
///
/// # Errors
///
/// Unreadable files, a range instead of an exact version, or a lock file that disagrees.
pub fn pinned_grpc_js() -> anyhow::Result<String> {
    let read = |name: &str| -> anyhow::Result<serde_json::Value> {
        let path = node_dir().join(name);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    };
    let package = read("package.json")?;
    let pinned = package["dependencies"][GRPC_JS]
        .as_str()
        .with_context(|| format!("package.json has no dependency {GRPC_JS}"))?;
    ensure!(
        !pinned.is_empty() && pinned.chars().all(|c| c.is_ascii_digit() || c == '.'),
        "package.json must pin an exact {GRPC_JS} version, not {pinned:?}"
    );
    let lock = read("package-lock.json")?;
    let locked = lock["packages"][format!("node_modules/{GRPC_JS}")]["version"].as_str();
    ensure!(
        locked == Some(pinned),
        "package-lock.json locks {GRPC_JS} {locked:?}, package.json pins {pinned}: \
         run `npm install --package-lock-only` in {}",
        node_dir().display()
    );
    Ok(pinned.to_string())
}

/// The `node` program, after installing the pinned packages on first use. Blocks (run it
/// with `spawn_blocking` from async code, or call [`start`]).
///
/// # Errors
///
/// No `node` or `npm` on `PATH`, or `npm ci` failed (e.g. no access to the npm registry).
pub fn node() -> anyhow::Result<PathBuf> {
    static NODE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    NODE.get_or_init(|| install().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn install() -> anyhow::Result<PathBuf> {
    let node = PathBuf::from("node");
    tool_version(&node).context("Node.js is required for the grpc-js interop tests")?;
    tool_version(Path::new("npm")).context("npm is required for the grpc-js interop tests")?;
    let dir = node_dir();
    let lock_path = dir.join("package-lock.json");
    let locked = std::fs::read_to_string(&lock_path)
        .with_context(|| format!("reading {}", lock_path.display()))?;
    // Outside node_modules, which `npm ci` deletes: a lock on a deleted file excludes no one.
    let lock = std::fs::File::create(dir.join(".grpcroute-npm.lock"))?;
    // Held until this function returns: one process installs, the others wait and reuse.
    lock.lock().context("locking the npm install")?;
    let modules = dir.join("node_modules");
    // Written after a successful install; `npm ci` removes it with the rest of node_modules.
    let marker = modules.join(".grpcroute-package-lock.json");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(locked.as_str())
        && check_grpc_js(&node).is_ok()
    {
        return Ok(node);
    }
    run(std::process::Command::new("npm")
        .args([
            "ci",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ])
        .current_dir(&dir))
    .context("installing the Node packages from the npm registry (`npm ci`)")?;
    check_grpc_js(&node)?;
    std::fs::write(&marker, locked)?;
    Ok(node)
}

/// `program --version`, failing clearly when the program is not on `PATH`.
fn tool_version(program: &Path) -> anyhow::Result<String> {
    let out = std::process::Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("`{}` is not on PATH", program.display())
        }
        out => out.with_context(|| format!("running `{} --version`", program.display()))?,
    };
    ensure!(
        out.status.success(),
        "`{} --version` failed ({})",
        program.display(),
        out.status
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn check_grpc_js(node: &Path) -> anyhow::Result<()> {
    run(std::process::Command::new(node)
        .args(["-e", &format!("require('{GRPC_JS}')")])
        .current_dir(node_dir()))
    .with_context(|| format!("{} cannot load {GRPC_JS}", node.display()))
}

/// Starts a Node echo server (`node/echo_server.js`) whose responses name it `name`,
/// answering the method paths `methods` (grpc-js has no catch-all handler: any other path
/// is UNIMPLEMENTED), on a free port of 127.0.0.1.
///
/// # Errors
///
/// No `node` (see [`node`]), or the server did not report its port within 30 s.
pub async fn start(name: &str, methods: &[&str]) -> anyhow::Result<PeerServer> {
    ensure!(
        !methods.is_empty(),
        "a Node server needs a method to answer"
    );
    let node = tokio::task::spawn_blocking(node).await??;
    let mut command = Command::new(&node);
    command
        .arg(node_dir().join("echo_server.js"))
        .args(["--name", name])
        .current_dir(node_dir());
    for method in methods {
        command.args(["--method", method]);
    }
    PeerServer::start(command, "Node", "grpc-js", name).await
}
