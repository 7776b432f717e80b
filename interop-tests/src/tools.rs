//! External tools some tests run (kubectl, prometheus): whether a missing one skips its test
//! or fails it.
//!
//! A missing tool fails its test when `CI` is set (to anything but `false`, `0` or nothing:
//! CI systems set `CI=true`), or when the tool's `GRPCROUTE_REQUIRE_<TOOL>` is set
//! (`scripts/test.sh` sets it once it has provided the tool). Otherwise the test prints
//! `SKIPPED: ...` and passes, so that `cargo test` on a machine without the tool still
//! runs everything else. The Python and Node interop tests never skip: without their
//! runtime they always fail.

/// Whether the tests run in CI (`CI` set, and not to `false` or `0`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && !v.eq_ignore_ascii_case("false") && v != "0")
}

/// Whether a missing tool must fail its test: in CI, or when `require_var` is set.
pub fn required(require_var: &str) -> bool {
    in_ci() || std::env::var_os(require_var).is_some()
}

/// For a test that did not find `tool`: fails it (panics) when the tool is
/// [`required`], otherwise prints `SKIPPED: <tool> not found (<hint>)`. Call it, then
/// return from the test.
///
/// # Panics
///
/// When the tool is required.
#[track_caller]
pub fn missing(tool: &str, require_var: &str, hint: &str) {
    assert!(
        !required(require_var),
        "{tool} not found ({hint}), and it is required: CI={:?}, {require_var}={:?}",
        std::env::var("CI").unwrap_or_default(),
        std::env::var(require_var).unwrap_or_default(),
    );
    println!("SKIPPED: {tool} not found ({hint}); set CI=true or {require_var}=1 to fail instead");
    eprintln!("SKIPPED: {tool} not found ({hint})");
}
