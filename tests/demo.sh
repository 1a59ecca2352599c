#!/usr/bin/env bash
# The demo: a throw-away node with the real bridge + host-local + podwall chain and podwalld
# reading manifests from a temp dir; five pods attached through libcni and two external
# hosts; the five example policies of conf/policies applied one at a time, each with the
# reachability the policy evaluator expects next to what real probes observe. Needs root.
#
# The demo removes what it created when it ends; if it is killed (Ctrl-C), this script
# removes what is left: the network namespaces and temp dirs named pwt-<demo pid>-…, and
# the processes still running in those namespaces (the demo's podwalld).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "demo.sh: the demo creates network namespaces: sudo bash tests/demo.sh" >&2
    exit 1
fi
bash tests/setup.sh
source tests/cargo-env.sh
cargo build --quiet -p podwall-tests --bin podwall-demo
demo="${CARGO_TARGET_DIR:-target}/debug/podwall-demo"

sweep() {
    local prefix="pwt-$1-" ns pid
    for ns in $(ip netns list | awk -v p="$prefix" 'index($1, p) == 1 {print $1}'); do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -TERM "$pid" 2>/dev/null || true
        done
        timeout 5 bash -c "while [[ -n \$(ip netns pids '$ns' 2>/dev/null) ]]; do sleep 0.1; done" ||
            for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        timeout 20 ip netns del "$ns" || true
        echo "demo.sh: removed leftover netns $ns" >&2
    done
    rm -rf "${TMPDIR:-/tmp}/$prefix"*
}

# The demo runs in the foreground, so Ctrl-C reaches it; this shell only notes the signal
# and sweeps once the demo is gone. Its pid names everything it created.
pidfile=$(mktemp)
trap 'kill -TERM "$(cat "$pidfile")" 2>/dev/null || true' TERM HUP
trap 'true' INT
status=0
bash -c 'echo $$ >"$1"; exec "$2"' demo "$pidfile" "$demo" || status=$?
pid=$(cat "$pidfile")
rm -f "$pidfile"
[[ -n $pid ]] && sweep "$pid"
exit "$status"
