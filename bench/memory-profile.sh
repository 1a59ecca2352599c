#!/usr/bin/env bash
# Where podwalld's memory goes (docs/benchmarks.md, "Where the memory goes"), as root: the
# footprint benchmark's world (world L's policies) with PODS cluster pods, the daemon run
# under heaptrack, then what it holds after the benchmark's idle window, by allocation site.
# The daemon is the release build with line tables (cargo profile `profiling`).
#   bash bench/memory-profile.sh            # 10000 cluster pods
#   bash bench/memory-profile.sh 100000 40  # the size, and how many sites to print
set -euo pipefail
cd "$(dirname "$0")/.."

pods=${1:-10000}
sites=${2:-25}
if [[ $(id -u) -ne 0 ]]; then
    echo "memory-profile.sh: the footprint world needs root (network namespaces)" >&2
    exit 1
fi
if ! command -v heaptrack >/dev/null; then
    echo "memory-profile.sh: installing heaptrack" >&2
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update >&2
    timeout 600 apt-get install -y --no-install-recommends heaptrack >&2
fi

bash tests/setup.sh bench-peers >&2
source tests/cargo-env.sh
target=${CARGO_TARGET_DIR:-target}
cargo build --profile profiling -p podwalld --bin podwalld >&2

# The recording stays there for heaptrack's other views (heaptrack_gui, heaptrack_print -F).
out=$(realpath "$target")/memory-profile
rm -rf "$out"
mkdir -p "$out"
# The rig runs $PODWALLD inside the node's namespace with the daemon's arguments. heaptrack
# runs the daemon as its child, so the daemon outlives the rig's SIGTERM to this wrapper:
# what it holds is read from the recording while it still runs, and then it is stopped.
cat >"$out/podwalld" <<EOF
#!/bin/bash
heaptrack -o "$out/heap" "$(realpath "$target")/profiling/podwalld" "\$@" &
tracker=\$!
for _ in \$(seq 100); do
    daemon=\$(pgrep -P "\$tracker" -x podwalld) && break
    sleep 0.1
done
echo "\$daemon" >"$out/daemon.pid"
wait "\$tracker"
EOF
chmod +x "$out/podwalld"
stop_daemon() {
    local pid
    pid=$(cat "$out/daemon.pid" 2>/dev/null) || return 0
    if [[ -n $pid ]]; then kill -TERM "$pid" 2>/dev/null || true; fi
}
trap stop_daemon EXIT
PODWALLD="$out/podwalld" RUST_LOG=${RUST_LOG:-info} \
    "$target/release/bench-peers" --worlds none --footprint "$pods" >&2
# "Leaks" are the allocations live at the end of the recording so far: what the daemon holds
# at idle. They are summed by the innermost frame of podwall's own code, with the next one
# out.
heaptrack_print -f "$out"/heap.* --print-leaks 1 --print-peaks 0 --print-allocators 0 \
    --print-temporary 0 --merge-backtraces 0 -n 1000000 -s 1000000 2>/dev/null | awk '
    function bytes(s,   n, u) {
        n = s + 0; u = substr(s, length(s), 1)
        if (u == "K") n *= 1024; else if (u == "M") n *= 1048576; else if (u == "G") n *= 1073741824
        return n
    }
    function flush() {
        if (size > 0) {
            key = site == "" ? "(outside podwall code)" : site
            sum[key] += size; calls[key] += count
        }
        size = 0; site = ""; depth = 0
    }
    /^(peak heap memory consumption|total memory leaked)/ { print > "/dev/stderr" }
    /^[0-9.]+[KMGB]* leaked over [0-9]+ calls from/ { flush(); size = bytes($1); count = $4; next }
    /^  +at (daemon|plugin)\// && depth < 2 { site = (depth ? site " < " : "") $2; depth++ }
    END {
        flush()
        for (k in sum) printf "%8.2f MiB %9d allocations  %s\n", sum[k] / 1048576, calls[k], k
    }' | sort -rn | sed -n "1,${sites}p"
