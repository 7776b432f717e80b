#!/usr/bin/env bash
# Fails if any package of the dependency graph that Cargo.lock pins (every workspace member,
# normal, dev and build dependencies, all features, every platform) declares a
# `rust-version` above the workspace's own (Cargo.toml, [workspace.package]).
#
# Only Rust 1.95 exists on the machines this runs on, so the declared 1.92 cannot be
# compiled against. This script and clippy's `incompatible_msrv` lint (which reads
# `rust-version`, in .ci/run) are what can be checked instead: a dependency that needs a
# newer compiler, and a standard-library API used before it was stable. Neither proves
# that 1.92 compiles the workspace (language features are not checked, nor APIs clippy
# does not know the stabilisation of).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo metadata --format-version 1 --locked --all-features | python3 -c '
import json, sys

def version(text):
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))

meta = json.load(sys.stdin)
members = set(meta["workspace_members"])
ours = {p["rust_version"] for p in meta["packages"] if p["id"] in members}
if len(ours) != 1 or None in ours:
    sys.exit(f"workspace members declare rust-version {sorted(map(str, ours))}, not one value")
ours = ours.pop()
newer = sorted(
    (p["name"], p["version"], p["rust_version"])
    for p in meta["packages"]
    if p.get("rust_version") and version(p["rust_version"]) > version(ours)
)
declared = sum(1 for p in meta["packages"] if p.get("rust_version"))
for name, ver, rv in newer:
    print(f"{name} {ver} requires Rust {rv}, above our rust-version {ours}")
if newer:
    sys.exit(1)
top = max(
    (version(p["rust_version"]), p["name"])
    for p in meta["packages"]
    if p.get("rust_version") and p["id"] not in members
)
total = len(meta["packages"])
top_version = ".".join(map(str, top[0]))
print(f"rust-version {ours}: {total} packages, {declared} declare a rust-version, "
      f"none above ours (highest dependency: {top[1]}, {top_version})")
'
