//! The echo servers of a benchmark, in a child process: the benchmark binary runs itself
//! again with [`ROLE_ENV`] set, so that the CPU time the servers spend is the child's and
//! the client's is the parent's, each readable from `/proc`.
//!
//! Protocol (lines on the child's standard input and output): the child prints
//! `addr <socket address>` for each server, then `ready`; it answers every `calls` line
//! with `calls <n0> <n1> ...` (calls answered per server so far), and exits when its
//! standard input closes, so it never outlives the benchmark.

use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio},
    time::Duration,
};

use grpcroute_echo::{EchoConfig, EchoServer};

/// Set in the child's environment to the servers to run: their answer delays in
/// milliseconds, comma-separated (`0,0,20`: three servers, the last one slow).
pub const ROLE_ENV: &str = "GRPCROUTE_BENCH_ECHO_SERVERS";

/// Runs the echo servers if this process is such a child: call first thing in `main`.
/// `None` when it is not one.
pub fn serve_if_child() -> Option<ExitCode> {
    let spec = std::env::var(ROLE_ENV).ok()?;
    let delays: Vec<u64> = spec
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("echo child: cannot start the runtime: {e}");
            return Some(ExitCode::FAILURE);
        }
    };
    let servers = match runtime.block_on(async {
        let mut servers = Vec::new();
        for (i, delay) in delays.iter().enumerate() {
            let mut config = EchoConfig::new(format!("echo-{i}"));
            if *delay > 0 {
                config = config.delay(Duration::from_millis(*delay));
            }
            servers.push(EchoServer::start(config).await?);
        }
        Ok::<_, grpcroute_echo::StartError>(servers)
    }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("echo child: {e}");
            return Some(ExitCode::FAILURE);
        }
    };
    let mut out = std::io::stdout().lock();
    for s in &servers {
        let _ = writeln!(out, "addr {}", s.addr());
    }
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    // The runtime's workers serve; this thread answers the parent until it goes away.
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "calls" {
            let counts: Vec<String> = servers.iter().map(|s| s.calls().to_string()).collect();
            let _ = writeln!(out, "calls {}", counts.join(" "));
            let _ = out.flush();
        }
    }
    drop(servers);
    runtime.shutdown_timeout(Duration::from_secs(1));
    Some(ExitCode::SUCCESS)
}

/// The parent's handle on a child running echo servers.
#[derive(Debug)]
pub struct EchoChild {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    addrs: Vec<SocketAddr>,
}

impl EchoChild {
    /// Starts this binary again as a child running one echo server per entry of
    /// `delays_ms` (TCP_NODELAY on every accepted socket, a tokio multi-thread runtime with
    /// one worker per CPU), and waits for their addresses.
    ///
    /// # Errors
    ///
    /// When the child cannot be started or does not report its servers.
    pub fn start(delays_ms: &[u64]) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let spec: Vec<String> = delays_ms.iter().map(u64::to_string).collect();
        let mut child = Command::new(exe)
            .env(ROLE_ENV, spec.join(","))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the echo child: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut this = Self {
            child,
            stdin,
            stdout,
            addrs: Vec::new(),
        };
        loop {
            let line = this.read_line()?;
            if line == "ready" {
                break;
            }
            if let Some(addr) = line.strip_prefix("addr ") {
                this.addrs.push(
                    addr.parse()
                        .map_err(|e| format!("bad address {addr}: {e}"))?,
                );
            }
        }
        if this.addrs.len() != delays_ms.len() {
            return Err(format!(
                "the echo child started {} servers of {}",
                this.addrs.len(),
                delays_ms.len()
            ));
        }
        Ok(this)
    }

    fn read_line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => Err("the echo child exited".into()),
            Ok(_) => Ok(line.trim().to_string()),
            Err(e) => Err(format!("reading from the echo child: {e}")),
        }
    }

    /// The servers' addresses, in the order of `delays_ms`.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The child's process id, for its CPU time.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Calls each server has answered so far. (Blocking, briefly: call between phases.)
    ///
    /// # Errors
    ///
    /// When the child does not answer.
    pub fn calls(&mut self) -> Result<Vec<u64>, String> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or("the echo child's stdin is closed")?;
        writeln!(stdin, "calls").map_err(|e| format!("writing to the echo child: {e}"))?;
        stdin
            .flush()
            .map_err(|e| format!("writing to the echo child: {e}"))?;
        let line = self.read_line()?;
        line.strip_prefix("calls")
            .ok_or_else(|| format!("unexpected answer {line:?}"))?
            .split_whitespace()
            .map(|n| n.parse().map_err(|e| format!("bad count {n}: {e}")))
            .collect()
    }
}

impl Drop for EchoChild {
    fn drop(&mut self) {
        // Closing stdin asks the child to exit; a child that does not is killed.
        drop(self.stdin.take());
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
