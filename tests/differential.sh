#!/usr/bin/env bash
# The long differential run (docs/design.md, "Hunting divergence"), as root: setup (the
# test suite's Debian packages and release builds, with the podwall-differential binary),
# then random cluster histories against a real podwalld, one fresh node per seed.
#   bash tests/differential.sh --seeds 1..1000 --steps 50 --minutes 30
# Prints a line per seed and every failure with the seed and step that replay it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "differential.sh: needs root (network namespaces): sudo bash tests/differential.sh" >&2
    exit 1
fi

bash tests/setup.sh podwall-differential >&2
source tests/cargo-env.sh
# The daemon's debug log of thousands of steps would fill the disk of a long run.
export RUST_LOG=${RUST_LOG:-info}
target=${CARGO_TARGET_DIR:-target}
exec "$target/release/podwall-differential" "$@"
