#!/usr/bin/env bash
# The peer benchmark (docs/benchmarks.md), as root: setup (the test suite's Debian
# packages and release builds), then podwall against bridge alone, the firewall plugin and
# the kube-router shape, side by side. Prints Markdown tables on stdout, progress on stderr.
#   bash tests/bench.sh            # the full run: worlds S, M, L with 1k and 10k remote pods
#   bash tests/bench.sh --smoke    # a tiny world, one round of everything
#   bash tests/bench.sh --cluster-policies 100   # podwall with and without 100 cluster policies
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "bench.sh: the benchmark needs root (network namespaces): sudo bash tests/bench.sh" >&2
    exit 1
fi

bash tests/setup.sh bench-peers >&2
source tests/cargo-env.sh
# The daemon's debug log would be part of what is measured.
export RUST_LOG=${RUST_LOG:-info}
target=${CARGO_TARGET_DIR:-target}
exec "$target/release/bench-peers" "$@"
