#!/usr/bin/env bash
# Runs every test of the workspace, doing its own set-up first:
#   - cargo-nextest, which runs each test in its own process under the time limits of
#     .config/nextest.toml (a hang fails with the test's name): the machine's own, else
#     `cargo install cargo-nextest --locked` from crates.io;
#   - kubectl, for the API-server fidelity test: the machine's own if it has one, else
#     Debian's kubernetes-client (installed, or unpacked into target/tools if installing
#     fails);
#   - prometheus (and promtool), for the test of the metrics and the shipped alert rules
#     against a real Prometheus: the machine's own if it has one, else Debian's prometheus
#     package unpacked into target/tools/prometheus (not installed);
#   - python3 with venv, for the gRPC C-core interop tests, which create their grpcio
#     virtual environment themselves on first use (interop-tests/.venv);
#   - node and npm, for the @grpc/grpc-js interop tests, which install their packages
#     themselves with `npm ci` on first use (interop-tests/node/node_modules);
# then unit, integration, end-to-end and fault tests (nextest), the benchmarks in test
# mode and the doc tests (cargo test, bounded by `timeout`).
#
# Debian packages are installed only as root; `apt-get update` runs once, before the
# first package this script needs to fetch. A tool that cannot be provided makes its
# tests skip (saying SKIPPED) on a developer machine, and FAIL under CI=true (or with
# GRPCROUTE_REQUIRE_<TOOL> set, which this script sets for every tool it provides).
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
log() { echo "test.sh: $*" >&2; }
in_ci() { [ -n "${CI:-}" ] && [ "${CI,,}" != "false" ] && [ "$CI" != "0" ]; }
is_root() { [ "$(id -u)" = 0 ]; }
have() { command -v "$1" >/dev/null 2>&1; }

apt_updated=
# Fetches the package lists, once, before the first install or download that needs them
# (a fresh machine may have none, or stale ones whose package versions are gone).
apt_update_once() {
    [ -n "$apt_updated" ] && return 0
    apt_updated=1
    if is_root; then
        log "apt-get update"
        apt-get update -q >/dev/null 2>&1 || log "apt-get update failed; trying the lists at hand"
    fi
}
apt_install() {
    have apt-get && is_root || return 1
    apt_update_once
    log "installing $* (Debian)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1
}
# Unpacks Debian package $1 into target/tools/$1 (needs no root).
apt_unpack() {
    have apt-get || return 1
    apt_update_once
    log "unpacking $1 (Debian) into target/tools/$1"
    mkdir -p target/tools
    (cd target/tools && rm -f "$1"_*.deb && apt-get download "$1" >/dev/null 2>&1 \
        && dpkg -x "$1"_*.deb "$1")
}
# What happens to the tests of a tool that is missing.
missing() {
    if in_ci; then
        log "$1 is not available: under CI its tests FAIL"
    else
        log "$1 is not available: its tests will be skipped (they fail under CI=true)"
    fi
}

# --- cargo-nextest -------------------------------------------------------------------
if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest (cargo install cargo-nextest --locked)"
    cargo install cargo-nextest --locked
fi

# --- kubectl ---------------------------------------------------------------------------
find_kubectl() {
    if [ -n "${KUBECTL:-}" ] && [ -x "$KUBECTL" ]; then return 0; fi
    if have kubectl; then return 0; fi
    local local_kubectl="$PWD/target/tools/kubernetes-client/usr/bin/kubectl"
    if [ -x "$local_kubectl" ]; then export KUBECTL="$local_kubectl"; return 0; fi
    return 1
}
if ! find_kubectl; then
    # Installing can fail (no root, or another package owns /usr/bin/kubectl): unpack
    # the package into target/tools instead.
    apt_install kubernetes-client || apt_unpack kubernetes-client || true
    find_kubectl || true
fi
if find_kubectl; then
    # From here on a missing kubectl makes the fidelity test fail instead of skip.
    export GRPCROUTE_REQUIRE_KUBECTL=1
else
    missing kubectl
fi

# --- prometheus ------------------------------------------------------------------------
find_prometheus() {
    if [ -n "${PROMETHEUS:-}" ] && [ -x "$PROMETHEUS" ]; then return 0; fi
    if have prometheus; then
        PROMETHEUS="$(command -v prometheus)"; export PROMETHEUS; return 0
    fi
    local local_prometheus="$PWD/target/tools/prometheus/usr/bin/prometheus"
    if [ -x "$local_prometheus" ]; then export PROMETHEUS="$local_prometheus"; return 0; fi
    return 1
}
if ! find_prometheus; then
    # Unpacked, not installed: the tests need only the prometheus and promtool binaries,
    # not the package's web-UI dependencies or its system service.
    apt_unpack prometheus || true
    find_prometheus || true
fi
if find_prometheus; then
    export GRPCROUTE_REQUIRE_PROMETHEUS=1
else
    missing prometheus
fi

# --- python3 (with venv) and node/npm: their interop tests never skip -------------------
if ! { have python3 && python3 -c 'import venv, ensurepip' >/dev/null 2>&1; }; then
    apt_install python3 python3-venv || true
fi
if ! have python3; then
    log "python3 (with venv) is required for the gRPC C-core interop tests"
    exit 1
fi
if ! { have node && have npm; }; then
    apt_install nodejs npm || true
fi
for tool in node npm; do
    if ! have "$tool"; then
        log "$tool is required for the @grpc/grpc-js (Node.js) interop tests"
        exit 1
    fi
done
log "set-up done in $((SECONDS - started)) s"

# --- the tests -------------------------------------------------------------------------
# Libraries, binaries, integration and end-to-end tests, examples: each test in its own
# process, killed and reported under its name if it outlives its time limit.
cargo nextest run --workspace --lib --bins --tests --examples
# The benchmarks in test mode (criterion runs each benchmark once, the loopback harness a
# short pass), and the doc tests: neither can be listed by nextest (custom harnesses,
# rustdoc), so each run is bounded as a whole. Built first, so that the bound is the
# tests' alone.
cargo test --workspace --bench '*' --no-run
timeout --kill-after=10 600 cargo test --workspace --bench '*'
timeout --kill-after=10 1800 cargo test --workspace --doc
log "all tests passed in $((SECONDS - started)) s"
