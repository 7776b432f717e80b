//! Running the built `grpcroute` binary: one-shot commands with a time limit, and echo
//! servers that are killed when the test drops them.

use std::{
    io::{BufRead, BufReader, Read},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use serde_json::Value;

/// The fixtures folder; commands run there so that file names in messages are short.
pub(crate) fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub(crate) fn grpcroute() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_grpcroute"));
    cmd.current_dir(fixtures())
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null());
    cmd
}

/// What a finished command printed, and its exit code.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs `grpcroute ARGS...` to completion (at most a minute).
pub(crate) fn run(args: &[&str]) -> Run {
    let mut child = grpcroute()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the grpcroute binary runs");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let mut waited = Duration::ZERO;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if waited > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("grpcroute {args:?} did not finish within a minute");
        }
        thread::sleep(Duration::from_millis(10));
        waited += Duration::from_millis(10);
    };
    Run {
        code: status.code().expect("exited, not killed by a signal"),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

impl Run {
    /// Stdout as JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    /// Asserts the exit code, showing the output when it differs.
    pub(crate) fn exits(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "exit code; output:\n{self:#?}");
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        self
    }

    /// Asserts a usage or input error: exit 2, nothing on stdout, and exactly one line on
    /// stderr that mentions every one of `needles`.
    pub(crate) fn input_error(&self, needles: &[&str]) {
        self.exits(2);
        assert_eq!(self.stdout, "", "nothing on stdout");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {:?}", self.stderr);
        assert!(lines[0].starts_with("grpcroute: "), "{}", lines[0]);
        for needle in needles {
            assert!(lines[0].contains(needle), "{:?} in {:?}", needle, lines[0]);
        }
        assert!(!self.stderr.to_lowercase().contains("backtrace"));
    }
}

/// The keys of a JSON object, sorted.
pub(crate) fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// `grpcroute echo` on a free loopback port; killed on drop.
#[derive(Debug)]
pub(crate) struct Echo {
    child: Child,
    pub(crate) addr: SocketAddr,
    /// The first line it printed.
    pub(crate) banner: String,
}

impl Echo {
    /// Starts an echo server named `name` and reads the address it bound from its
    /// `--json` line.
    pub(crate) fn start(name: &str) -> Self {
        let (child, banner) = spawn_echo(&["--name", name, "--json"]);
        let line: Value = serde_json::from_str(&banner).expect("a JSON line");
        assert_eq!(line["name"], name);
        let addr = line["listen"].as_str().unwrap().parse().unwrap();
        Self {
            child,
            addr,
            banner,
        }
    }

    /// Starts one named `name` serving mutual TLS with the files in `dir`
    /// (`--tls-dir`), and reads its `--json` line.
    pub(crate) fn start_tls(name: &str, dir: &Path) -> Self {
        let dir = dir.to_str().expect("a UTF-8 temporary path");
        let (child, banner) = spawn_echo(&["--name", name, "--json", "--tls-dir", dir]);
        let line: Value = serde_json::from_str(&banner).expect("a JSON line");
        let addr = line["listen"].as_str().unwrap().parse().unwrap();
        Self {
            child,
            addr,
            banner,
        }
    }

    /// Starts one with the human banner.
    pub(crate) fn start_human(name: &str) -> Self {
        let (child, banner) = spawn_echo(&["--name", name]);
        let addr = banner
            .split_whitespace()
            .find_map(|word| word.parse().ok())
            .expect("the banner names the address");
        Self {
            child,
            addr,
            banner,
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Sends SIGTERM and returns the exit code.
    pub(crate) fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        self.child.wait().unwrap().code()
    }
}

fn spawn_echo(extra: &[&str]) -> (Child, String) {
    let mut child = grpcroute()
        .args(["echo", "--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the grpcroute binary runs");
    let mut banner = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    if stdout.read_line(&mut banner).unwrap_or(0) == 0 {
        let _ = child.kill();
        let _ = child.wait();
        panic!("grpcroute echo printed no address");
    }
    (child, banner.trim_end().to_string())
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A folder with the call fixture, its endpoints pointing at `v1` and `v2`.
pub(crate) fn split_manifests(v1: u16, v2: u16) -> tempfile::TempDir {
    let template = std::fs::read_to_string(fixtures().join("call-split.yaml.tmpl")).unwrap();
    let yaml = template
        .replace("{V1_PORT}", &v1.to_string())
        .replace("{V2_PORT}", &v2.to_string());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), yaml).unwrap();
    dir
}

/// A port nothing listens on (bound, then released).
pub(crate) fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
