//! What the machine is and how busy it is: printed with every result, because on a shared
//! machine a figure means little without the load it was taken under.

use std::{fmt, fs, process::Command};

/// A description of the machine.
#[derive(Clone, Debug)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub cpus: usize,
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// `rustc --version`.
    pub rustc: String,
    /// The kernel release.
    pub kernel: String,
}

impl Machine {
    /// Reads the description (missing parts read `?`).
    pub fn describe() -> Self {
        let cpu_model = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "?".into());
        let run = |cmd: &str, arg: &str| {
            Command::new(cmd)
                .arg(arg)
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "?".into())
        };
        Self {
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model,
            rustc: run("rustc", "--version"),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "?".into()),
        }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} CPUs ({}), Linux {}, {}",
            self.cpus, self.cpu_model, self.kernel, self.rustc
        )
    }
}

/// How busy the machine is at one moment.
#[derive(Clone, Debug)]
pub struct Load {
    /// The 1, 5 and 15 minute load averages (`/proc/loadavg`).
    pub average: [f64; 3],
    /// Processes named `rustc` or `cc`/`ld` running: other people's builds.
    pub compilers: usize,
}

impl Load {
    /// Reads the current load.
    pub fn now() -> Self {
        let mut average = [f64::NAN; 3];
        if let Ok(s) = fs::read_to_string("/proc/loadavg") {
            for (slot, field) in average.iter_mut().zip(s.split_whitespace()) {
                *slot = field.parse().unwrap_or(f64::NAN);
            }
        }
        Self {
            average,
            compilers: count_processes(&["rustc", "cc1", "cc1plus", "ld", "cargo-clippy"]),
        }
    }
}

impl fmt::Display for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c] = self.average;
        write!(
            f,
            "load average {a:.2} {b:.2} {c:.2}, {} compiler processes running",
            self.compilers
        )
    }
}

/// Running processes whose command name is one of `names`.
fn count_processes(names: &[&str]) -> usize {
    let Ok(dir) = fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| fs::read_to_string(e.path().join("comm")).ok())
        .filter(|comm| names.contains(&comm.trim()))
        .count()
}
