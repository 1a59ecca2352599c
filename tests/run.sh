#!/usr/bin/env bash
# The whole test suite, as CI runs it (as root): setup, unit tests, root tests in network
# namespaces, then a sweep of anything a crashed test left behind. Exits non-zero when any
# step failed. Extra arguments go to the root test run (e.g. a test name filter).
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "run.sh: the root tests need root: sudo bash tests/run.sh" >&2
    exit 1
fi

bash tests/setup.sh || exit 1
source tests/cargo-env.sh

# Each root test runs a daemon and a few CNI chains; more threads than this only queue on
# a small machine.
threads=${PWT_TEST_THREADS:-4}
status=0

# Tests remove what they create on drop; a killed test process cannot, so sweep what is
# named pwt-<pid>-… after a process that no longer runs (never another run's live objects).
gone() { [[ $1 =~ ^pwt-([0-9]+)- ]] && [[ ! -d /proc/${BASH_REMATCH[1]} ]]; }
# After the tests a leftover is a leak (a test that did not clean up) and fails the run.
sweep() {
    local when=$1 ns dir
    for ns in $(ip netns list | awk '$1 ~ /^pwt-[0-9]+-/ {print $1}'); do
        if gone "$ns"; then
            echo "run.sh: removing leftover netns $ns ($when)"
            timeout 20 ip netns del "$ns" || status=1
            [[ $when == after ]] && status=1
        fi
    done
    for dir in "${TMPDIR:-/tmp}"/pwt-[0-9]*-node-*; do
        if [[ -d $dir ]] && gone "$(basename "$dir")"; then
            rm -rf "$dir"
        fi
    done
    # The image test's daemon container (pwt-podwalld-<netns>) and image (podwall:pwt-…).
    if command -v podman >/dev/null; then
        local name tag
        for name in $(podman ps -a --format '{{.Names}}' 2>/dev/null); do
            if gone "${name#pwt-podwalld-}"; then
                echo "run.sh: removing leftover container $name ($when)"
                podman rm -f "$name" >/dev/null || status=1
                [[ $when == after ]] && status=1
            fi
        done
        # The deploy tests' containers (pwt-k-<netns>-…) live in image stores of their own,
        # which `podman ps` does not list: their conmon processes name them.
        local pid
        while read -r pid name; do
            if gone "${name#pwt-k-}"; then
                echo "run.sh: stopping leftover container $name ($when)"
                pkill -KILL -P "$pid" || true
                kill -KILL "$pid" 2>/dev/null || true
                [[ $when == after ]] && status=1
            fi
        done < <(pgrep -a conmon | sed -n 's/^\([0-9]*\) .* -n \(pwt-k-[^ ]*\) .*/\1 \2/p')
        for tag in $(podman images --format '{{.Tag}}' 'localhost/podwall' 2>/dev/null); do
            if gone "$tag"; then
                echo "run.sh: removing leftover image localhost/podwall:$tag ($when)"
                podman rmi -f "localhost/podwall:$tag" >/dev/null || status=1
                [[ $when == after ]] && status=1
            fi
        done
    fi
}

sweep before

echo "run.sh: unit tests"
cargo test --workspace || status=1

# The dependency graph against deny.toml: banned crates, licences, sources. (Advisories
# need the RustSec database from GitHub: run `cargo deny check advisories` where it can.)
echo "run.sh: dependencies (cargo deny check bans licenses sources)"
if ! cargo deny --version >/dev/null 2>&1; then
    cargo install --locked cargo-deny@0.20.2 || status=1
fi
cargo deny check bans licenses sources || status=1

echo "run.sh: root tests (--test-threads=$threads)"
cargo test -p podwall-tests -- --ignored --test-threads="$threads" "$@" || status=1

# The benchmarks' own root tests: each benchmark still runs on a tiny world, and the
# kube-router baseline enforces what the evaluator says.
echo "run.sh: benchmark root tests (--test-threads=$threads)"
cargo test -p podwall-bench -- --ignored --test-threads="$threads" "$@" || status=1

sweep after

if ((status)); then
    echo "run.sh: FAILED" >&2
else
    echo "run.sh: all tests passed"
fi
exit "$status"
