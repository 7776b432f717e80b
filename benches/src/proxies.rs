//! The proxy-hop peers of the loopback harness: nginx (`grpc_pass`) and HAProxy (`proto
//! h2`), each started on 127.0.0.1 with a configuration generated into a temporary
//! directory, in front of the benchmark's echo servers, and stopped with the harness.
//!
//! Both are Debian's packages. The harness looks for them in `$NGINX` / `$HAPROXY`, then in
//! `target/tools/proxies` (where `scripts/bench-proxies.sh` unpacks them), then on the
//! `PATH`; when none is found it runs that script once and looks again. A proxy that still
//! cannot be found is reported with the reason (and fails the run under `CI=true`).
//!
//! Both proxies are configured as a sidecar would be for this traffic: HTTP/2 cleartext
//! (h2c) on the listener, HTTP/2 to the upstreams with idle connections kept for reuse,
//! TCP_NODELAY on both sides, round robin over the three servers, no logging, and one
//! worker process/thread (one client connection is served by one worker in both).

use std::{
    fmt::Write as _,
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use tokio::time::Instant;

use crate::cpu;

/// Which proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// nginx, `grpc_pass`.
    Nginx,
    /// HAProxy, `proto h2` on both sides.
    Haproxy,
}

impl Kind {
    /// The program's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Nginx => "nginx",
            Self::Haproxy => "haproxy",
        }
    }

    fn env(self) -> &'static str {
        match self {
            Self::Nginx => "NGINX",
            Self::Haproxy => "HAPROXY",
        }
    }
}

/// The workspace's root (the benches crate's parent).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Where `scripts/bench-proxies.sh` unpacks the packages.
pub fn tools_dir() -> PathBuf {
    workspace().join("target/tools/proxies")
}

/// A proxy program found on this machine, and the library directory it needs (for
/// packages unpacked rather than installed).
#[derive(Clone, Debug)]
pub struct Program {
    /// The executable.
    pub path: PathBuf,
    /// `LD_LIBRARY_PATH` for it, when its libraries were unpacked beside it.
    pub library_path: Option<PathBuf>,
    /// `--version` output's first line.
    pub version: String,
}

fn locate(kind: Kind) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(kind.env()).map(PathBuf::from)
        && p.is_file()
    {
        return Some(p);
    }
    let unpacked = tools_dir().join("usr/sbin").join(kind.name());
    if unpacked.is_file() {
        return Some(unpacked);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|d| d.join(kind.name()))
        .find(|p| p.is_file())
}

fn unpacked_libraries() -> Option<PathBuf> {
    let lib = tools_dir().join("usr/lib");
    std::fs::read_dir(&lib)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with("-linux-gnu"))
        })
}

fn version(kind: Kind, path: &Path, library_path: Option<&Path>) -> Result<String, String> {
    let mut cmd = Command::new(path);
    cmd.arg("-v");
    if let Some(lib) = library_path {
        cmd.env("LD_LIBRARY_PATH", lib);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("{} -v: {e}", path.display()))?;
    // nginx prints its version on stderr, HAProxy on stdout.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(format!(
            "{} -v failed ({}): {}",
            path.display(),
            out.status,
            text.trim()
        ));
    }
    Ok(text
        .lines()
        .next()
        .unwrap_or(kind.name())
        .trim()
        .to_string())
}

/// Finds `kind`, running `scripts/bench-proxies.sh` once (per process) if it is not
/// found.
///
/// # Errors
///
/// Why it is not available.
pub fn find(kind: Kind) -> Result<Program, String> {
    let path = match locate(kind) {
        Some(p) => p,
        None => {
            install_once()?;
            locate(kind).ok_or_else(|| {
                format!(
                    "{} not found after scripts/bench-proxies.sh (set ${} to the binary)",
                    kind.name(),
                    kind.env()
                )
            })?
        }
    };
    let library_path = path
        .starts_with(tools_dir())
        .then(unpacked_libraries)
        .flatten();
    let version = version(kind, &path, library_path.as_deref())?;
    Ok(Program {
        path,
        library_path,
        version,
    })
}

fn install_once() -> Result<(), String> {
    static RESULT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    RESULT
        .get_or_init(|| {
            let script = workspace().join("scripts/bench-proxies.sh");
            eprintln!("proxies: running {}", script.display());
            let out = Command::new("bash")
                .arg(&script)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{} failed ({}): {}",
                    script.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        })
        .clone()
}

/// A free port on 127.0.0.1 (bound, read, released: the proxy binds it right after).
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// A running proxy.
#[derive(Debug)]
pub struct Proxy {
    kind: Kind,
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts `program` as a `kind` proxy on 127.0.0.1 in front of `backends`, and waits
    /// (up to 5 s) until it accepts connections.
    ///
    /// # Errors
    ///
    /// When it cannot be configured or started, or never listens.
    pub fn start(kind: Kind, program: &Program, backends: &[SocketAddr]) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("grpcroute-bench-{}-", kind.name()))
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let d = dir.path();
        let mut cmd = Command::new(&program.path);
        match kind {
            Kind::Nginx => {
                let conf = d.join("nginx.conf");
                std::fs::write(&conf, nginx_config(d, addr, backends))
                    .map_err(|e| format!("writing {}: {e}", conf.display()))?;
                cmd.arg("-p")
                    .arg(d)
                    .arg("-c")
                    .arg(&conf)
                    .arg("-e")
                    .arg(d.join("error.log"));
            }
            Kind::Haproxy => {
                let conf = d.join("haproxy.cfg");
                std::fs::write(&conf, haproxy_config(addr, backends))
                    .map_err(|e| format!("writing {}: {e}", conf.display()))?;
                cmd.arg("-f").arg(&conf).arg("-db");
            }
        }
        if let Some(lib) = &program.library_path {
            cmd.env("LD_LIBRARY_PATH", lib);
        }
        let log =
            std::fs::File::create(d.join("stderr.log")).map_err(|e| format!("log file: {e}"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.path.display()))?;
        let mut proxy = Self {
            kind,
            child,
            addr,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(proxy);
            }
            if let Ok(Some(status)) = proxy.child.try_wait() {
                return Err(format!(
                    "{} exited at start ({status}): {}",
                    kind.name(),
                    proxy.logs()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} never listened on {addr}: {}",
                    kind.name(),
                    proxy.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Which proxy it is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Its processes (nginx: master and worker).
    pub fn pids(&self) -> Vec<u32> {
        cpu::descendants(self.child.id())
    }

    /// What it wrote to its logs (for error messages).
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for f in ["stderr.log", "error.log"] {
            if let Ok(s) = std::fs::read_to_string(self.dir.path().join(f)) {
                let _ = write!(all, "{} ", s.trim());
            }
        }
        all.trim().to_string()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // SIGKILL to the process we started; nginx's worker exits when its master dies
        // (it watches the master's channel), and is also killed explicitly.
        let pids = self.pids();
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in pids.into_iter().skip(1) {
            let _ = Command::new("kill")
                .arg("-9")
                .arg(pid.to_string())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// nginx: h2c listener, `grpc_pass` to an upstream of the servers with idle connections
/// kept (nginx's gRPC proxy carries one call per upstream connection at a time).
pub fn nginx_config(dir: &Path, listen: SocketAddr, backends: &[SocketAddr]) -> String {
    let d = dir.display();
    let mut servers = String::new();
    for b in backends {
        let _ = writeln!(servers, "        server {b};");
    }
    let user = if cpu::is_root() { "user root;\n" } else { "" };
    format!(
        r#"# Generated by the grpcroute-client loopback benchmark.
{user}daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    tcp_nodelay on;
    # One client connection for the whole run: never close it for its age or count.
    keepalive_timeout 3600s;
    keepalive_requests 1000000000;
    http2_max_concurrent_streams 1024;
    upstream echo {{
{servers}        keepalive 512;
        keepalive_requests 1000000000;
        keepalive_timeout 3600s;
    }}
    server {{
        listen {listen} http2;
        location / {{
            grpc_pass grpc://echo;
        }}
    }}
}}
"#
    )
}

/// HAProxy: HTTP/2 on the listener and to the servers, idle server connections reused by
/// any client stream, TCP_NODELAY (HAProxy sets it on its sockets; `http-no-delay` also
/// stops it from delaying sends to merge them).
pub fn haproxy_config(listen: SocketAddr, backends: &[SocketAddr]) -> String {
    let mut servers = String::new();
    for (i, b) in backends.iter().enumerate() {
        let _ = writeln!(servers, "    server s{i} {b} proto h2");
    }
    format!(
        r#"# Generated by the grpcroute-client loopback benchmark.
global
    nbthread 1
    maxconn 4000
    tune.h2.max-concurrent-streams 1024

defaults
    mode http
    option http-no-delay
    timeout connect 1s
    timeout client 1h
    timeout server 1h
    timeout http-keep-alive 1h

frontend grpc_in
    bind {listen} proto h2
    default_backend echo

backend echo
    balance roundrobin
    http-reuse always
{servers}"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_name_every_backend_and_listen_on_loopback_only() {
        let backends: Vec<SocketAddr> = (0..3)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
            .collect();
        let listen = SocketAddr::from(([127, 0, 0, 1], 8443));
        let n = nginx_config(Path::new("/tmp/x"), listen, &backends);
        let h = haproxy_config(listen, &backends);
        for b in &backends {
            assert!(n.contains(&format!("server {b};")), "{n}");
            assert!(h.contains(&format!("{b} proto h2")), "{h}");
        }
        assert!(n.contains("listen 127.0.0.1:8443 http2;"), "{n}");
        assert!(n.contains("grpc_pass grpc://echo;"), "{n}");
        assert!(h.contains("bind 127.0.0.1:8443 proto h2"), "{h}");
        assert_eq!(n.matches("listen ").count(), 1);
        assert_eq!(h.matches("bind ").count(), 1);
    }
}
