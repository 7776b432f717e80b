//! CPU time of processes, from `/proc`: what a benchmark phase cost the client process, the
//! proxy processes and the echo servers' process, separately.
//!
//! Process figures are `utime + stime` of `/proc/<pid>/stat` (every thread of the process,
//! including threads that have exited), in clock ticks of 10 ms: over a phase of a few
//! seconds on two busy CPUs that is a resolution of well under 1 %. The calling thread's
//! own time comes from `/proc/thread-self/schedstat` (nanoseconds, updated at scheduler
//! ticks: good for spans of many milliseconds, not for single short operations).

use std::{fs, process::Command, sync::OnceLock, time::Duration};

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 on Linux).
fn ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// The fields of `/proc/<pid>/stat` after the command name (which may contain spaces).
fn stat_fields(pid: &str) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// User plus system CPU time of process `pid` so far (every thread, living or exited);
/// `None` when the process is gone.
pub fn process(pid: u32) -> Option<Duration> {
    cpu_of(&pid.to_string())
}

/// [`process`] of this process.
pub fn this_process() -> Duration {
    cpu_of("self").unwrap_or_default()
}

fn cpu_of(pid: &str) -> Option<Duration> {
    let f = stat_fields(pid)?;
    // After the name: state(0) ppid(1) ... utime(11) stime(12).
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let ticks = utime + stime;
    Some(Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / ticks_per_second(),
    ))
}

/// Process `root` and every process descending from it (e.g. nginx's master and workers).
pub fn descendants(root: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return vec![root];
    };
    let parents: Vec<(u32, u32)> = dir
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let ppid = stat_fields(&pid.to_string())?.get(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    tree
}

/// Summed CPU time of `pids` (processes that are gone count nothing).
pub fn processes(pids: &[u32]) -> Duration {
    pids.iter().filter_map(|p| process(*p)).sum()
}

/// CPU time of the calling thread so far (`/proc/thread-self/schedstat`, in nanoseconds,
/// but brought up to date only at scheduler ticks and switches: time a few ms at least);
/// `None` where the kernel does not provide it.
pub fn this_thread() -> Option<Duration> {
    let s = fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Resident set size of this process (`VmRSS` of `/proc/self/status`), in bytes.
pub fn resident_bytes() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Whether this process runs as root (`Uid` of `/proc/self/status`).
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_uses_cpu_and_has_itself_as_a_descendant() {
        let before = this_process();
        let thread_before = this_thread();
        // Burn CPU until this thread has been charged 20 ms. Counted in CPU time, not wall
        // time: on a busy machine 50 ms of wall time may buy this thread far less. The
        // wall-time bound makes a clock that never advances fail instead of hang.
        let start = tokio::time::Instant::now();
        let mut x = 0u64;
        let burnt = |b: Duration| this_thread().map(|a| a - b);
        loop {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            let enough = match thread_before {
                Some(b) => burnt(b).is_some_and(|d| d >= Duration::from_millis(20)),
                None => start.elapsed() >= Duration::from_millis(50),
            };
            if enough {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "thread CPU time did not reach 20 ms in 10 s: {:?}",
                thread_before.and_then(burnt)
            );
        }
        assert!(this_process() > before, "process CPU time grew");
        let me = std::process::id();
        assert_eq!(descendants(me)[0], me);
        assert!(resident_bytes().is_some_and(|b| b > 0));
    }
}
