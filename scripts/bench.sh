#!/usr/bin/env bash
# Runs the performance benchmarks of issue 10 and keeps their markdown output:
#
#   scripts/bench.sh              # loopback (all peers + tail), churn, kube_scale, callpath, accrual
#   scripts/bench.sh loopback     # only these (any of: loopback churn kube_scale callpath
#                                 #   accrual scale decision)
#
# Output: target/bench-results/<UTC time>/<bench>.md (stdout: the tables) and
# <bench>.log (stderr: progress, per repetition). The proxies (nginx, HAProxy) are
# unpacked first by scripts/bench-proxies.sh. Knobs are environment variables, see
# benches/README.md (e.g. LOOPBACK_REPS=8 scripts/bench.sh loopback).
#
# Run on a quiet machine: each benchmark prints the load average and the compiler processes
# running before, during and after, so a busy run shows as such.
set -euo pipefail
cd "$(dirname "$0")/.."

benches=("$@")
if [ ${#benches[@]} -eq 0 ]; then
    benches=(loopback churn kube_scale callpath accrual)
fi
out="target/bench-results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
scripts/bench-proxies.sh >/dev/null
cargo bench -p grpcroute-benches --no-run
git rev-parse HEAD >"$out/commit" 2>/dev/null || true
for b in "${benches[@]}"; do
    echo "=== $b ($(date -u +%H:%M:%S)) -> $out/$b.md" >&2
    cargo bench -q -p grpcroute-benches --bench "$b" >"$out/$b.md" 2>"$out/$b.log"
    cat "$out/$b.md"
done
echo "results in $out" >&2
