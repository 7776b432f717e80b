//! What every custom harness reads from its command line and environment: knobs, and
//! whether to run in quick mode.

use std::str::FromStr;

/// The environment variable `name` parsed as `T`, or `default` when it is unset or does not
/// parse.
pub fn env<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether the harness runs in quick mode: without `--bench` (as under `cargo test
/// --benches`, which CI runs), with `--test`, or with `variable` set to anything but `0`.
pub fn quick(variable: &str) -> bool {
    let mut bench = false;
    let mut test = false;
    for arg in std::env::args() {
        bench |= arg == "--bench";
        test |= arg == "--test";
    }
    !bench || test || std::env::var(variable).is_ok_and(|v| !v.is_empty() && v != "0")
}
