//! A real Prometheus server against the mesh's metrics: finding the binary, serving
//! `Mesh::metrics()` on `/metrics`, turning the shipped PrometheusRule into a rule file,
//! running `prometheus` (and `promtool`) and reading its HTTP API; plus a gRPC server whose
//! every call fails, for a canary that breaks.

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail, ensure};
use bytes::Bytes;
use grpcroute_client::Metrics;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::{net::TcpListener, process::Child, task::JoinHandle};

use crate::cluster::LOOPBACK;

/// The content type of the OpenMetrics text format, as `Metrics::encode` writes it.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `prometheus` binary: `$PROMETHEUS`, else `prometheus` on `PATH`, else the one
/// `scripts/test.sh` unpacks into `target/tools/prometheus` (Debian's package).
pub fn find_prometheus() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PROMETHEUS") {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("prometheus"))
            .find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| {
        let unpacked = workspace_root().join("target/tools/prometheus/usr/bin/prometheus");
        unpacked.is_file().then_some(unpacked)
    })
}

/// [`find_prometheus`] for a test: `None` (the test skips, saying so) when there is no
/// Prometheus — unless a missing one must fail the test ([`crate::tools::required`]: `CI`
/// is set, or `GRPCROUTE_REQUIRE_PROMETHEUS`, which the test script sets once it has made
/// sure Prometheus is there).
///
/// # Panics
///
/// No Prometheus while it is required.
pub fn prometheus_for_test() -> Option<PathBuf> {
    let found = find_prometheus();
    if found.is_none() {
        crate::tools::missing(
            "prometheus",
            "GRPCROUTE_REQUIRE_PROMETHEUS",
            "not in PROMETHEUS, on PATH or in target/tools/prometheus; Debian: `apt-get download prometheus && dpkg -x prometheus_*.deb target/tools/prometheus`, as scripts/test.sh does",
        );
    }
    found
}

/// The rules shipped in `examples/kubernetes/prometheus-rule.yaml` as a rule file
/// ([`rule_file`]): the expressions unchanged, every `for:` replaced by `hold` so that
/// the alerts fire within seconds.
///
/// # Errors
///
/// The file cannot be read, or [`rule_file`] rejects it.
pub fn shipped_rules(hold: &str) -> anyhow::Result<Value> {
    let path = workspace_root().join("examples/kubernetes/prometheus-rule.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    rule_file(&text, hold).with_context(|| path.display().to_string())
}

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("interop-tests is inside the workspace")
        .to_path_buf()
}

/// Accepts connections on `listener` and serves each with `serve`; the connections end
/// with the returned task (they live in its `JoinSet`).
fn accept_loop<F, Fut>(listener: TcpListener, serve: F) -> JoinHandle<()>
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            // Small responses must not wait for delayed ACKs.
            let _ = stream.set_nodelay(true);
            connections.spawn(serve(stream));
            while connections.try_join_next().is_some() {}
        }
    })
}

/// `Metrics::encode` served over HTTP/1.1 at `http://127.0.0.1:<port>/metrics`, as an
/// application would serve it. Stops on drop.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    scrapes: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// Starts serving `metrics` on a free loopback port.
    ///
    /// # Errors
    ///
    /// If no port can be bound.
    pub async fn start(metrics: Metrics) -> std::io::Result<Self> {
        let listener = TcpListener::bind((LOOPBACK, 0)).await?;
        let addr = listener.local_addr()?;
        let scrapes = Arc::new(AtomicU64::new(0));
        let counter = scrapes.clone();
        let task = accept_loop(listener, move |stream| {
            let metrics = metrics.clone();
            let scrapes = counter.clone();
            async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let response = if request.uri().path() == "/metrics" {
                        scrapes.fetch_add(1, Ordering::Relaxed);
                        Response::builder()
                            .header(header::CONTENT_TYPE, OPENMETRICS)
                            .body(Full::new(Bytes::from(metrics.encode())))
                    } else {
                        Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::new()))
                    };
                    async move { Ok::<_, Infallible>(response.expect("a valid response")) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        });
        Ok(Self {
            addr,
            scrapes,
            task,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many times `/metrics` was fetched.
    pub fn scrapes(&self) -> u64 {
        self.scrapes.load(Ordering::Relaxed)
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A gRPC server (HTTP/2 on loopback) that answers every call at once with status `code`
/// in a Trailers-Only response, as a tonic or grpc-go server does when its handler
/// returns an error. Stops on drop.
#[derive(Debug)]
pub struct FailingServer {
    addr: SocketAddr,
    calls: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl FailingServer {
    /// Starts the server on a free loopback port.
    ///
    /// # Errors
    ///
    /// If no port can be bound.
    pub async fn start(code: tonic::Code, message: &'static str) -> std::io::Result<Self> {
        let listener = TcpListener::bind((LOOPBACK, 0)).await?;
        let addr = listener.local_addr()?;
        let calls = Arc::new(AtomicU64::new(0));
        let counter = calls.clone();
        let task = accept_loop(listener, move |stream| {
            let calls = counter.clone();
            async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    calls.fetch_add(1, Ordering::Relaxed);
                    async move {
                        let _ = request.into_body().collect().await;
                        let response = Response::builder()
                            .header(header::CONTENT_TYPE, "application/grpc")
                            .header("grpc-status", (code as i32).to_string())
                            .header("grpc-message", message)
                            .body(Empty::<Bytes>::new())
                            .expect("a valid response");
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        });
        Ok(Self { addr, calls, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Calls it has answered.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

impl Drop for FailingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The Prometheus rule file (`{"groups": [...]}`; JSON is YAML) made of `spec.groups` of
/// the `PrometheusRule` document in the multi-document YAML `text`, with every rule's
/// `for:` replaced by `hold`. Nothing else is changed.
///
/// # Errors
///
/// Invalid YAML, no `PrometheusRule` document, or one without `spec.groups`.
pub fn rule_file(text: &str, hold: &str) -> anyhow::Result<Value> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| anyhow!("invalid YAML: {e}"))?;
    let rule = docs
        .into_iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .context("no PrometheusRule document")?;
    let mut groups = rule["spec"]["groups"].clone();
    let list = groups
        .as_array_mut()
        .context("PrometheusRule without spec.groups")?;
    for group in list {
        for rule in group["rules"].as_array_mut().into_iter().flatten() {
            if let Some(hold_for) = rule.get_mut("for") {
                *hold_for = json!(hold);
            }
        }
    }
    Ok(json!({ "groups": groups }))
}

/// A `prometheus` server on 127.0.0.1 scraping one target every second and evaluating a
/// rule file every second, with its data in a temporary folder. Killed on drop.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Writes the rule file and a `prometheus.yml` scraping `http://{target}/metrics` as
    /// job `grpcroute`, checks the rules with `promtool` when it is next to `binary`, then
    /// starts `binary` and waits until it is ready (at most `timeout`).
    ///
    /// # Errors
    ///
    /// `promtool` rejecting the rules, or missing while Prometheus is required
    /// ([`crate::tools::required`]), or a server that exits or is not ready in time.
    pub async fn start(
        binary: &Path,
        target: SocketAddr,
        rules: &Value,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let rule_path = dir.path().join("rules.yml");
        std::fs::write(&rule_path, serde_json::to_string_pretty(rules)?)?;
        let promtool = binary.with_file_name("promtool");
        if promtool.is_file() {
            let out = tokio::process::Command::new(&promtool)
                .arg("check")
                .arg("rules")
                .arg(&rule_path)
                .output()
                .await
                .with_context(|| format!("running {}", promtool.display()))?;
            ensure!(
                out.status.success(),
                "promtool check rules failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            eprint!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            // Part of the Prometheus tool set: required when Prometheus is.
            ensure!(
                !crate::tools::required("GRPCROUTE_REQUIRE_PROMETHEUS"),
                "no promtool next to {}, and Prometheus is required (CI or \
                 GRPCROUTE_REQUIRE_PROMETHEUS): the rules cannot be checked",
                binary.display()
            );
            eprintln!(
                "SKIPPED (rule check only): no promtool next to {}: rules not checked",
                binary.display()
            );
        }
        let config = json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [rule_path],
            "scrape_configs": [{
                "job_name": "grpcroute",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [target.to_string()]}],
            }],
        });
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, serde_json::to_string_pretty(&config)?)?;
        // A free port (bound, then released) for the server to listen on.
        let addr = SocketAddr::from((LOOPBACK, crate::refused_port()?));
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = tokio::process::Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut prometheus = Self { child, addr, dir };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = prometheus.child.try_wait()? {
                bail!("prometheus exited with {status}:\n{}", prometheus.log());
            }
            if let Ok((StatusCode::OK, _)) = http_get(addr, "/-/ready").await {
                return Ok(prometheus);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "prometheus not ready after {timeout:?}:\n{}",
                    prometheus.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Where its HTTP API listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `data` of the API answer at `path` (e.g. `/api/v1/targets`).
    ///
    /// # Errors
    ///
    /// A failed request, or an answer whose `status` is not `success`.
    pub async fn api(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = http_get(self.addr, path).await?;
        let answer: Value = serde_json::from_slice(&body)
            .with_context(|| format!("GET {path}: {status} {}", String::from_utf8_lossy(&body)))?;
        ensure!(
            status == StatusCode::OK && answer["status"] == "success",
            "GET {path}: {status} {answer}"
        );
        Ok(answer["data"].clone())
    }

    /// The instant vector `promql` evaluates to now: each element's labels and value.
    ///
    /// # Errors
    ///
    /// As [`Prometheus::api`], or an answer that is not a vector.
    pub async fn query(&self, promql: &str) -> anyhow::Result<Vec<(Value, f64)>> {
        let data = self
            .api(&format!("/api/v1/query?query={}", percent_encode(promql)))
            .await?;
        ensure!(data["resultType"] == "vector", "not a vector: {data}");
        data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let value = r["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .with_context(|| format!("no value in {r}"))?;
                Ok((r["metric"].clone(), value))
            })
            .collect()
    }

    /// The alerts pending or firing now (`/api/v1/alerts`).
    ///
    /// # Errors
    ///
    /// As [`Prometheus::api`].
    pub async fn alerts(&self) -> anyhow::Result<Vec<Value>> {
        let data = self.api("/api/v1/alerts").await?;
        Ok(data["alerts"].as_array().cloned().unwrap_or_default())
    }

    /// Kills the server and waits for it to exit.
    ///
    /// # Errors
    ///
    /// If it cannot be killed.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// Percent-encodes everything but the unreserved characters, for a query parameter.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One HTTP/1.1 `GET http://{addr}{path}` on its own connection: the status and body.
///
/// # Errors
///
/// A connection or protocol failure (10 s at most).
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
    let get = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let connection = tokio::spawn(connection);
        let request = Request::get(path)
            .header(header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        connection.abort();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(10), get)
        .await
        .map_err(|_| anyhow!("GET http://{addr}{path}: no answer in 10 s"))?
}
