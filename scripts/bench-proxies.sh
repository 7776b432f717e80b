#!/usr/bin/env bash
# Makes nginx and HAProxy available to the loopback benchmark's proxy-hop variants
# (benches/benches/loopback.rs, `nginx-hop` and `haproxy-hop`).
#
# Debian's packages are downloaded and unpacked into target/tools/proxies (not installed),
# with the libraries HAProxy needs that a minimal Debian lacks. Unpacking needs no root and,
# unlike `apt-get install`, starts no system service: installing nginx would start one
# listening on port 80 of every interface. The benchmark starts its own instances on
# 127.0.0.1 with generated configurations and finds the binaries here by itself (and runs
# this script when they are missing). A machine whose package lists were never fetched
# needs `apt-get update` first, which this script runs when it is root.
#
# Prints the paths of the two binaries. Exits non-zero, saying why, when either cannot be
# had.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=target/tools/proxies
packages=(nginx haproxy liblua5.3-0 libopentracing-c-wrapper0 libopentracing1)
libdir() { find "$dir/usr/lib" -maxdepth 1 -type d -name '*-linux-gnu' 2>/dev/null | head -n1; }

works() {
    local lib
    lib="$(libdir)"
    [ -x "$dir/usr/sbin/nginx" ] && [ -x "$dir/usr/sbin/haproxy" ] \
        && "$dir/usr/sbin/nginx" -v >/dev/null 2>&1 \
        && LD_LIBRARY_PATH="$lib" "$dir/usr/sbin/haproxy" -v >/dev/null 2>&1
}

if ! works; then
    for tool in apt-get dpkg; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "bench-proxies.sh: $tool is not available (not a Debian-based machine?)" >&2
            exit 1
        fi
    done
    echo "bench-proxies.sh: unpacking Debian's ${packages[*]} into $dir" >&2
    mkdir -p "$dir/debs"
    (
        cd "$dir/debs"
        rm -f ./*.deb
        download() { apt-get download "${packages[@]}" >/dev/null 2>&1; }
        if ! download; then
            if [ "$(id -u)" = 0 ]; then
                echo "bench-proxies.sh: apt-get download failed; running apt-get update" >&2
                apt-get update -q >/dev/null 2>&1 || true
                download
            else
                echo "bench-proxies.sh: apt-get download failed (not root: cannot apt-get update)" >&2
                exit 1
            fi
        fi
        for deb in ./*.deb; do dpkg -x "$deb" ..; done
    )
    if ! works; then
        echo "bench-proxies.sh: unpacked, but the binaries do not run:" >&2
        "$dir/usr/sbin/nginx" -v 2>&1 | sed 's/^/  /' >&2 || true
        LD_LIBRARY_PATH="$(libdir)" ldd "$dir/usr/sbin/haproxy" 2>&1 | grep 'not found' | sed 's/^/  /' >&2 || true
        exit 1
    fi
fi
echo "$PWD/$dir/usr/sbin/nginx"
echo "$PWD/$dir/usr/sbin/haproxy"
