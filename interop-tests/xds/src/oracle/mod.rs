//! The oracles: real gRPC xDS clients in subprocesses, gRPC C-core (PyPI `grpcio`) and
//! `@grpc/grpc-js-xds`, each with a bootstrap (and node id) of its own, driven by a
//! line-delimited JSON protocol on stdin/stdout (`python/xds_driver.py`,
//! `node/xds_driver.js`; see the README).

mod install;
mod protocol;

use std::{
    collections::{HashMap, VecDeque},
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    process::{Child, ChildStdin, Command},
    sync::oneshot,
    task::JoinHandle,
};

pub use self::{
    install::{PYTHON_ENV, crate_dir, node, node_dir, python, python_dir},
    protocol::{CallRecord, CallReport, CallSpec, CsdsResource, HoldReport, HoldSpec},
};
use crate::{Bootstrap, lock};

/// Which gRPC implementation an oracle runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OracleKind {
    /// gRPC C-core through PyPI `grpcio`.
    Python,
    /// `@grpc/grpc-js-xds` on `@grpc/grpc-js`.
    Node,
}

impl std::fmt::Display for OracleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OracleKind::Python => "grpcio (C-core)",
            OracleKind::Node => "grpc-js-xds",
        })
    }
}

/// Why an oracle could not run or answer.
#[derive(Clone, Debug, thiserror::Error)]
pub enum OracleError {
    /// A program the oracle needs is not installed.
    #[error("`{tool}` is not installed (needed by an xDS oracle)")]
    Missing {
        /// The program.
        tool: String,
    },
    /// Installing the oracle's packages failed.
    #[error("installing the oracle failed: {0}")]
    Install(String),
    /// The process could not start, or said something unexpected.
    #[error("oracle {kind}: {message}\nits stderr (tail):\n{stderr}")]
    Driver {
        /// The oracle.
        kind: OracleKind,
        /// What went wrong.
        message: String,
        /// The last lines of its stderr.
        stderr: String,
    },
    /// An operation did not answer in time.
    #[error("oracle {kind}: `{op}` did not answer within {after:?}\nits stderr (tail):\n{stderr}")]
    Timeout {
        /// The oracle.
        kind: OracleKind,
        /// The operation.
        op: String,
        /// The bound.
        after: Duration,
        /// The last lines of its stderr.
        stderr: String,
    },
    /// The driver reported an error for an operation.
    #[error("oracle {kind}: `{op}` failed: {message}")]
    Op {
        /// The oracle.
        kind: OracleKind,
        /// The operation.
        op: String,
        /// The driver's message.
        message: String,
    },
}

impl OracleError {
    /// Whether the error is a missing program (tests skip then, except under `CI=true`).
    pub fn is_missing_tool(&self) -> bool {
        matches!(self, OracleError::Missing { .. })
    }
}

/// What an oracle process reported about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OracleInfo {
    /// `grpcio` or `@grpc/grpc-js-xds`.
    pub library: String,
    /// Its version.
    pub version: String,
    /// E.g. `Python 3.11.7`, `Node v20.20.2`.
    pub runtime: String,
    /// Everything it said (e.g. `xds_protos`, `grpc_js` versions).
    pub hello: Value,
}

impl std::fmt::Display for OracleInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({})", self.library, self.version, self.runtime)?;
        if let Some(v) = self.hello.get("grpc_js").and_then(Value::as_str) {
            write!(f, ", @grpc/grpc-js {v}")?;
        }
        if let Some(v) = self.hello.get("xds_protos").and_then(Value::as_str) {
            write!(f, ", xds-protos {v}")?;
        }
        Ok(())
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

const STDERR_TAIL: usize = 60;
const HELLO_TIMEOUT: Duration = Duration::from_secs(60);
/// Added to the time an operation's own deadlines allow, as a hang detector.
const OP_MARGIN: Duration = Duration::from_secs(30);

/// A running oracle client. Killed when dropped.
#[derive(Debug)]
pub struct Oracle {
    kind: OracleKind,
    info: OracleInfo,
    node_id: String,
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    pending: Pending,
    next_id: AtomicU64,
    stderr: Arc<Mutex<VecDeque<String>>>,
    child: Child,
    reader: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Oracle {
    /// A gRPC C-core (`grpcio`) xDS client with `bootstrap`.
    ///
    /// # Errors
    ///
    /// See [`start`](Self::start).
    pub async fn python(bootstrap: &Bootstrap) -> Result<Self, OracleError> {
        Self::start(OracleKind::Python, bootstrap, &[]).await
    }

    /// A `@grpc/grpc-js-xds` client with `bootstrap`.
    ///
    /// # Errors
    ///
    /// See [`start`](Self::start).
    pub async fn node(bootstrap: &Bootstrap) -> Result<Self, OracleError> {
        Self::start(OracleKind::Node, bootstrap, &[]).await
    }

    /// Starts an oracle of `kind` whose `GRPC_XDS_BOOTSTRAP` is `bootstrap`, with extra
    /// environment variables (e.g. `GRPC_TRACE`, `GRPC_EXPERIMENTAL_…` guards). Installs
    /// the runtime's packages on first use.
    ///
    /// # Errors
    ///
    /// [`OracleError::Missing`] when python3/node/npm is not installed, `Install` when the
    /// packages cannot be installed, `Driver`/`Timeout` when the process does not start.
    pub async fn start(
        kind: OracleKind,
        bootstrap: &Bootstrap,
        env: &[(&str, &str)],
    ) -> Result<Self, OracleError> {
        let driver_error = |message: String| OracleError::Driver {
            kind,
            message,
            stderr: String::new(),
        };
        let program = match kind {
            OracleKind::Python => tokio::task::spawn_blocking(install::python).await,
            OracleKind::Node => tokio::task::spawn_blocking(install::node).await,
        }
        .map_err(|e| driver_error(format!("installer panicked: {e}")))??;
        let dir = tempfile::tempdir().map_err(|e| driver_error(format!("temp dir: {e}")))?;
        let bootstrap_path = dir.path().join("bootstrap.json");
        bootstrap
            .write(&bootstrap_path)
            .map_err(|e| driver_error(format!("writing the bootstrap: {e}")))?;

        let mut command = Command::new(&program);
        match kind {
            OracleKind::Python => command
                .arg(python_dir().join("xds_driver.py"))
                .current_dir(python_dir()),
            OracleKind::Node => command
                .arg(node_dir().join("xds_driver.js"))
                .current_dir(node_dir()),
        };
        command
            .env("GRPC_XDS_BOOTSTRAP", &bootstrap_path)
            .env_remove("GRPC_XDS_BOOTSTRAP_CONFIG")
            // Python must not buffer its protocol lines.
            .env("PYTHONUNBUFFERED", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| driver_error(format!("starting {command:?}: {e}")))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(driver_error("no stdio pipes".to_string()));
        };

        let tail = Arc::new(Mutex::new(VecDeque::new()));
        tokio::spawn(keep_tail(BufReader::new(stderr), tail.clone()));

        let mut lines = BufReader::new(stdout).lines();
        let tail_text = || render_tail(&tail);
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, lines.next_line()).await {
            Err(_) => {
                return Err(OracleError::Timeout {
                    kind,
                    op: "hello".to_string(),
                    after: HELLO_TIMEOUT,
                    stderr: tail_text(),
                });
            }
            Ok(Ok(Some(line))) => line,
            Ok(_) => {
                // Give stderr a moment to be read: it says why the process exited.
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Err(OracleError::Driver {
                    kind,
                    message: "exited before saying hello".to_string(),
                    stderr: tail_text(),
                });
            }
        };
        let hello: Value = serde_json::from_str(&hello).map_err(|e| OracleError::Driver {
            kind,
            message: format!("bad hello {hello:?}: {e}"),
            stderr: tail_text(),
        })?;
        let hello = hello.get("hello").cloned().unwrap_or(Value::Null);
        let field = |k: &str| {
            hello
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string()
        };
        let info = OracleInfo {
            library: field("library"),
            version: field("version"),
            runtime: field("runtime"),
            hello: hello.clone(),
        };

        let pending: Pending = Arc::default();
        let reader = tokio::spawn(read_replies(lines, pending.clone()));
        Ok(Self {
            kind,
            info,
            node_id: bootstrap.node_id.clone(),
            stdin: tokio::sync::Mutex::new(Some(stdin)),
            pending,
            next_id: AtomicU64::new(1),
            stderr: tail,
            child,
            reader,
            _dir: dir,
        })
    }

    /// Its kind.
    pub fn kind(&self) -> OracleKind {
        self.kind
    }

    /// Library, version and runtime, as the process reported them.
    pub fn info(&self) -> &OracleInfo {
        &self.info
    }

    /// The node id of its bootstrap.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The last lines the process wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        render_tail(&self.stderr)
    }

    async fn request(
        &self,
        op: &str,
        mut command: Value,
        bound: Duration,
    ) -> Result<Value, OracleError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Some(obj) = command.as_object_mut() {
            obj.insert("id".to_string(), json!(id));
            obj.insert("op".to_string(), json!(op));
        }
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let driver_error = |message: String| OracleError::Driver {
            kind: self.kind,
            message,
            stderr: self.stderr_tail(),
        };
        {
            let mut stdin = self.stdin.lock().await;
            let stdin = stdin
                .as_mut()
                .ok_or_else(|| driver_error("already quit".to_string()))?;
            let mut line = command.to_string();
            line.push('\n');
            if let Err(e) = stdin.write_all(line.as_bytes()).await {
                lock(&self.pending).remove(&id);
                return Err(driver_error(format!("writing `{op}`: {e}")));
            }
            let _ = stdin.flush().await;
        }
        match tokio::time::timeout(bound, rx).await {
            Err(_) => {
                lock(&self.pending).remove(&id);
                Err(OracleError::Timeout {
                    kind: self.kind,
                    op: op.to_string(),
                    after: bound,
                    stderr: self.stderr_tail(),
                })
            }
            Ok(Err(_)) => Err(driver_error(format!("exited while running `{op}`"))),
            Ok(Ok(Err(message))) => Err(OracleError::Op {
                kind: self.kind,
                op: op.to_string(),
                message,
            }),
            Ok(Ok(Ok(result))) => Ok(result),
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        op: &str,
        value: Value,
    ) -> Result<T, OracleError> {
        serde_json::from_value(value.clone()).map_err(|e| OracleError::Driver {
            kind: self.kind,
            message: format!("unexpected `{op}` result {value}: {e}"),
            stderr: String::new(),
        })
    }

    /// Makes `spec.count` calls (at most `spec.concurrency` at a time) and tallies them.
    ///
    /// # Errors
    ///
    /// The driver failed, or did not answer within the calls' deadlines plus 30 s.
    pub async fn call(&self, spec: &CallSpec) -> Result<CallReport, OracleError> {
        let rounds = spec.count.div_ceil(spec.concurrency.max(1));
        let bound = Duration::from_millis(spec.timeout_ms.saturating_mul(u64::from(rounds)))
            .min(Duration::from_secs(600))
            + OP_MARGIN;
        let value = self.request("call", spec.to_json(), bound).await?;
        self.decode("call", value)
    }

    /// Starts `spec.call.count` calls (`spec.interval_ms` apart), waits `spec.settle_ms`,
    /// and reports how many are
    /// still in flight and how the others ended; the calls stay open until
    /// [`release`](Self::release) (or their deadline).
    ///
    /// # Errors
    ///
    /// The driver failed or did not answer in time.
    pub async fn hold(&self, spec: &HoldSpec) -> Result<HoldReport, OracleError> {
        let starting = spec
            .interval_ms
            .saturating_mul(u64::from(spec.call.count.saturating_sub(1)));
        let bound = Duration::from_millis(spec.settle_ms.saturating_add(starting)) + OP_MARGIN;
        let value = self.request("hold", spec.to_json(), bound).await?;
        self.decode("hold", value)
    }

    /// Cancels the calls of a [`hold`](Self::hold) still in flight and reports the final
    /// tally (cancelled calls count as `CANCELLED`).
    ///
    /// # Errors
    ///
    /// The driver failed or did not answer in time.
    pub async fn release(&self, hold: u64) -> Result<HoldReport, OracleError> {
        let value = self
            .request("release", json!({ "hold": hold }), OP_MARGIN)
            .await?;
        self.decode("release", value)
    }

    /// The client's CSDS view: every resource it knows with version, status and error.
    ///
    /// # Errors
    ///
    /// The driver failed or did not answer in time.
    pub async fn csds(&self) -> Result<Vec<CsdsResource>, OracleError> {
        self.csds_with(false).await
    }

    /// Like [`csds`](Self::csds), with each ACKed resource as JSON in `config` (Python
    /// only: grpc-js-xds's dump is read without the config types).
    ///
    /// # Errors
    ///
    /// As [`csds`](Self::csds).
    pub async fn csds_with(&self, configs: bool) -> Result<Vec<CsdsResource>, OracleError> {
        let value = self
            .request("csds", json!({ "configs": configs }), OP_MARGIN)
            .await?;
        let resources = value.get("resources").cloned().unwrap_or(Value::Null);
        self.decode("csds", resources)
    }

    /// Closes the channel to `target` (the next call creates a new one).
    ///
    /// # Errors
    ///
    /// The driver failed or did not answer in time.
    pub async fn close_channel(&self, target: &str) -> Result<(), OracleError> {
        self.request("close", json!({ "target": target }), OP_MARGIN)
            .await
            .map(drop)
    }

    /// Asks the process to exit and waits for it (killing it after 10 s).
    ///
    /// # Errors
    ///
    /// The process could not be waited for.
    pub async fn quit(mut self) -> Result<(), OracleError> {
        let _ = self
            .request("quit", json!({}), Duration::from_secs(10))
            .await;
        self.stdin.lock().await.take();
        let kind = self.kind;
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(OracleError::Driver {
                kind,
                message: format!("waiting for exit: {e}"),
                stderr: String::new(),
            }),
            Err(_) => {
                let _ = self.child.kill().await;
                Ok(())
            }
        }
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        self.reader.abort();
        // kill_on_drop ends the process with the Child.
    }
}

async fn read_replies(
    mut lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    pending: Pending,
) {
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(reply) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let Some(id) = reply.get("id").and_then(Value::as_u64) else {
            continue;
        };
        let Some(tx) = lock(&pending).remove(&id) else {
            continue;
        };
        let result = if reply.get("ok").and_then(Value::as_bool) == Some(true) {
            Ok(reply.get("result").cloned().unwrap_or(Value::Null))
        } else {
            Err(reply
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("unknown error")
                .to_string())
        };
        let _ = tx.send(result);
    }
    // EOF: every waiting request learns that the process is gone.
    lock(&pending).clear();
}

async fn keep_tail(
    stderr: BufReader<tokio::process::ChildStderr>,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = stderr.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut tail = lock(&tail);
        if tail.len() == STDERR_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

fn render_tail(tail: &Mutex<VecDeque<String>>) -> String {
    let tail = lock(tail);
    if tail.is_empty() {
        return "(empty)".to_string();
    }
    tail.iter().cloned().collect::<Vec<_>>().join("\n")
}
