#!/usr/bin/env bash
# Runs every test of the workspace, doing its own set-up first:
#   - kubectl, for the API-server fidelity test: the machine's own if it has one, else
#     Debian's kubernetes-client (installed, or unpacked locally if installing fails);
#   - prometheus (and promtool), for the test of the metrics and the shipped alert rules
#     against a real Prometheus: the machine's own if it has one, else Debian's prometheus
#     package unpacked into target/tools/prometheus (not installed);
#   - the Python grpcio virtual environment, which the interop tests create themselves
#     on first use (interop-tests/.venv);
#   - the Node @grpc/grpc-js packages, which the interop tests install themselves with
#     `npm ci` on first use (interop-tests/node/node_modules; needs node and npm);
# then unit, integration, end-to-end, doc and benchmark-smoke tests.
set -euo pipefail
cd "$(dirname "$0")/.."

find_kubectl() {
    if [ -n "${KUBECTL:-}" ] && [ -x "$KUBECTL" ]; then return 0; fi
    if command -v kubectl >/dev/null 2>&1; then return 0; fi
    local local_kubectl="$PWD/target/tools/kubernetes-client/usr/bin/kubectl"
    if [ -x "$local_kubectl" ]; then export KUBECTL="$local_kubectl"; return 0; fi
    return 1
}

if ! find_kubectl && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing kubectl (Debian package kubernetes-client)"
    if [ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -q kubernetes-client >/dev/null 2>&1; then
        :
    else
        # Installing can fail (no root, or another package owns /usr/bin/kubectl):
        # unpack the package into target/tools instead.
        mkdir -p target/tools
        (cd target/tools && apt-get download kubernetes-client >/dev/null 2>&1 \
            && dpkg -x kubernetes-client_*.deb kubernetes-client) || true
    fi
    find_kubectl || true
fi
if find_kubectl; then
    # From here on a missing kubectl makes the fidelity test fail instead of skip.
    export GRPCROUTE_REQUIRE_KUBECTL=1
else
    echo "test.sh: kubectl is not available; the kubectl fidelity test will be skipped" >&2
fi

find_prometheus() {
    if [ -n "${PROMETHEUS:-}" ] && [ -x "$PROMETHEUS" ]; then return 0; fi
    if command -v prometheus >/dev/null 2>&1; then
        PROMETHEUS="$(command -v prometheus)"; export PROMETHEUS; return 0
    fi
    local local_prometheus="$PWD/target/tools/prometheus/usr/bin/prometheus"
    if [ -x "$local_prometheus" ]; then export PROMETHEUS="$local_prometheus"; return 0; fi
    return 1
}

if ! find_prometheus && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: unpacking Prometheus (Debian package prometheus) into target/tools"
    # Unpacked, not installed: the test needs only the prometheus and promtool binaries,
    # not the package's web-UI dependencies or its system service. A machine whose package
    # lists were never fetched needs `apt-get update` first.
    mkdir -p target/tools
    (cd target/tools && rm -f prometheus_*.deb \
        && { apt-get download prometheus >/dev/null 2>&1 \
            || { [ "$(id -u)" = 0 ] && apt-get update -q >/dev/null 2>&1 \
                && apt-get download prometheus >/dev/null 2>&1; }; } \
        && dpkg -x prometheus_*.deb prometheus) || true
    find_prometheus || true
fi
if find_prometheus; then
    # From here on a missing prometheus makes its test fail instead of skip.
    export GRPCROUTE_REQUIRE_PROMETHEUS=1
else
    echo "test.sh: prometheus is not available; the Prometheus alert-rule test will be skipped" >&2
fi

if ! command -v python3 >/dev/null 2>&1; then
    echo "test.sh: python3 is required for the gRPC C-core interop tests" >&2
    exit 1
fi
if ! { command -v node && command -v npm; } >/dev/null 2>&1 \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing Node.js and npm (Debian packages nodejs, npm)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >/dev/null 2>&1 || true
fi
for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "test.sh: $tool is required for the @grpc/grpc-js (Node.js) interop tests" >&2
        exit 1
    fi
done

# Every test target: lib, bins, integration tests, examples, and benches in test mode
# (criterion runs each benchmark once; the loopback harness runs a short pass).
cargo test --workspace --all-targets
cargo test --workspace --doc
