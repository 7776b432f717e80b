#!/usr/bin/env bash
# Where does the client's CPU go, per variant of the loopback harness? For each variant
# named (default: balance routed-even), runs the loopback benchmark with only that variant
# at 32 calls in flight, attaches `perf record -e cpu-clock -g` to the CLIENT process only
# (the echo servers run in a child process and are not sampled) for PERF_SECS seconds of
# the timed phase, and prints its samples per 1,000 calls by crate (the first segment of
# each symbol's path; `[kernel]`, `libc` for malloc/free/memcpy).
#
#   scripts/bench-perf.sh                      # balance routed-even
#   scripts/bench-perf.sh balance routed raw-h2
#   PERF_SECS=10 scripts/bench-perf.sh
#   PERF_LEVEL=1 scripts/bench-perf.sh          # sequential calls (1 in flight) instead of 32
#
# Needs `perf` (Debian: linux-perf) able to sample cpu-clock (perf_event_paranoid ≤ 2 for
# your own processes, or root). Output and perf data: target/bench-results/perf-<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."

variants=("$@")
[ ${#variants[@]} -eq 0 ] && variants=(balance routed-even)
secs=${PERF_SECS:-8}
level=${PERF_LEVEL:-32}
out="target/bench-results/perf-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
command -v perf >/dev/null || { echo "bench-perf.sh: perf is not installed" >&2; exit 1; }
scripts/bench-proxies.sh >/dev/null
bin=$(cargo bench -q -p grpcroute-benches --bench loopback --no-run --message-format=json \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("executable") and m.get("target", {}).get("name") == "loopback":
        print(m["executable"])')
for v in "${variants[@]}"; do
    # One timed phase of about secs+3 s; perf samples secs of it, from 2 s in.
    if [ "$level" = 1 ]; then
        LOOPBACK_VARIANTS="$v" LOOPBACK_CALLS=$(((secs + 3) * 8000)) LOOPBACK_WARMUP=0 \
            LOOPBACK_CONCURRENCY=0 LOOPBACK_REPS=1 LOOPBACK_TAIL=0 \
            "$bin" --bench >"$out/$v.md" 2>"$out/$v.log" &
    else
        LOOPBACK_VARIANTS="$v" LOOPBACK_CALLS=1 LOOPBACK_WARMUP=0 LOOPBACK_CONCURRENCY="$level" \
            LOOPBACK_SECS=$((secs + 3)) LOOPBACK_REPS=1 LOOPBACK_TAIL=0 \
            "$bin" --bench >"$out/$v.md" 2>"$out/$v.log" &
    fi
    pid=$!
    sleep 2
    perf record -q -e cpu-clock -F 2999 -g -p "$pid" -o "$out/$v.data" -- sleep "$secs" 2>/dev/null
    wait "$pid"
    # calls/s of the phase: the per-repetition table (in flight) or the latency table (1).
    rate=$(python3 -c 'import sys, re
rows = [[x.strip() for x in l.split("|")] for l in open(sys.argv[1])]
for c in rows:
    if sys.argv[3] != "1" and len(c) > 6 and c[1] == "1" and c[2] == sys.argv[2]:
        print(c[5]); break
    if sys.argv[3] == "1" and len(c) > 5 and c[1] == sys.argv[2]:
        print(re.split(r"\s", c[5])[0]); break' "$out/$v.md" "$v" "$level")
    perf report -i "$out/$v.data" --no-children --sort sym --stdio -g none 2>/dev/null \
        >"$out/$v.symbols.txt"
    python3 - "$out/$v.symbols.txt" "$rate" "$secs" "$v" "$level" <<'EOF'
import re, sys, collections
path, rate, secs, variant = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
total_samples = 0
by_crate = collections.Counter()
for line in open(path):
    if line.startswith("# Samples:"):
        m = re.search(r"Samples: (\S+)", line)
        n = m.group(1).upper()
        total_samples = float(n[:-1]) * 1000 if n.endswith("K") else float(n)
    m = re.match(r"\s+([\d.]+)%\s+\[(.)\]\s+(.*)", line)
    if not m:
        continue
    pct, kind, sym = float(m.group(1)), m.group(2), m.group(3).strip()
    if kind == "k":
        crate = "[kernel]"
    else:
        s = sym.lstrip("<&*(").replace("dyn ", "")
        crate = re.split(r"::|<| ", s)[0] or sym
        if crate.startswith("0x"):
            crate = "[unknown]"
        elif "::" not in sym:
            crate = "libc/other"
    by_crate[crate] += pct
calls = rate * secs
print(f"\n## {variant} ({sys.argv[5]} in flight): {total_samples:.0f} samples at 2999 Hz over {secs:.0f} s, {rate:.0f} calls/s"
      f" -> {total_samples / calls * 1000 / 2.999:.1f} ms of client CPU per 1,000 calls")
print("| crate | share of client samples | µs per call |")
print("|---|---|---|")
for crate, pct in by_crate.most_common(14):
    us = pct / 100 * total_samples / 2999 / calls * 1e6
    print(f"| {crate} | {pct:.1f} % | {us:.2f} |")
EOF
done
echo "perf data in $out" >&2
