#!/usr/bin/env bash
# Runs every test of the workspace, doing its own set-up first:
#   - kubectl (Debian package kubernetes-client), for the API-server fidelity test;
#   - the Python grpcio virtual environment, which the interop tests create themselves
#     on first use (interop-tests/.venv), so nothing to do here;
# then unit, integration, end-to-end, doc and benchmark-smoke tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v kubectl >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "test.sh: installing kubectl (Debian package kubernetes-client)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q kubernetes-client >/dev/null \
            || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q kubernetes-client >/dev/null; }
    fi
fi
if command -v kubectl >/dev/null 2>&1; then
    # With kubectl present, the kubectl fidelity test must run (not skip).
    export GRPCROUTE_REQUIRE_KUBECTL=1
else
    echo "test.sh: kubectl is not available; the kubectl fidelity test will be skipped" >&2
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "test.sh: python3 is required for the gRPC C-core interop tests" >&2
    exit 1
fi

# Every test target: lib, bins, integration tests, examples, and benches in test mode
# (criterion runs each benchmark once; the loopback harness runs a short pass).
cargo test --workspace --all-targets
cargo test --workspace --doc
