#!/usr/bin/env bash
# The demo: a throw-away node with the real bridge + host-local + podwall chain, two pods
# attached through libcni, their kernel rules shown, then detached. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "demo.sh: the demo creates network namespaces: sudo bash tests/demo.sh" >&2
    exit 1
fi
bash tests/setup.sh
source tests/cargo-env.sh
cargo run --quiet -p podwall-tests --bin podwall-demo
