#!/usr/bin/env bash
# Prepare a machine for podwall's root tests and demo: install the Debian packages they
# use, then build the release daemon and the static CNI plugin. Safe to run again.
# Arguments name release binaries of podwall-tests or podwall-bench to build with the
# daemon (differential.sh: its long run; bench.sh: its benchmark), in the same cargo run so
# that they compile side by side.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
    nftables                      # nft, to read the node's table back
    iproute2                      # ip netns, ip link
    containernetworking-plugins   # bridge, host-local (/usr/lib/cni)
    golang-go                     # builds the libcni runner
    golang-github-appc-cni-dev    # libcni source for the runner
    conntrack
    busybox-static                # the install-cni script's sh, in the tests and the image
    buildah podman runc           # the image: built FROM scratch, run (runc: see tests/src/image.rs)
    docker-registry apache2-utils # the deploy test's private registry, and its htpasswd
    openssl                       # the test API server's certificates
    util-linux                    # setpriv, for the non-root socket peer
    kmod                          # modprobe br_netfilter
    ca-certificates
    iptables ipset iperf3         # the kube-router-shaped baseline and the per-packet figures
)

# kubectl renders the kustomizations (`kubectl kustomize`) and runs the README's deploy
# commands against the test API server; any kubectl will do, and where
# there is none, Debian's (1.20, whose kustomize the overlays are written for too).
command -v kubectl >/dev/null || packages+=(kubernetes-client)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup.sh: missing packages ${missing[*]}; run as root to install them" >&2
        exit 1
    fi
    echo "setup.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update
    timeout 1200 apt-get install -y --no-install-recommends "${missing[@]}"
fi

source tests/cargo-env.sh

# A clean build of the daemon, the plugin and the tests takes about 3 GB; a disk that fills
# up shows only as a linker crash (SIGBUS), so say so first.
target=${CARGO_TARGET_DIR:-target}
mkdir -p "$target"
free_mib=$(df -Pm "$target" | awk 'NR == 2 {print $4}')
if ((free_mib < 4096)); then
    echo "setup.sh: warning: only ${free_mib} MiB free for $target; a clean build needs about 3 GB" >&2
fi

echo "setup.sh: building podwalld${1:+ and $*} (release)"
build=(-p podwalld --bin podwalld)
if (($#)); then
    # Cargo takes each --bin from whichever of the two packages has it.
    build+=(-p podwall-tests -p podwall-bench)
    for bin in "$@"; do build+=(--bin "$bin"); done
fi
cargo build --release "${build[@]}"
# crt-static in a config file would also apply to proc-macros and break them, so the
# plugin is built alone with an explicit target.
echo "setup.sh: building the static podwall plugin"
RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --target x86_64-unknown-linux-gnu -p podwall

echo "setup.sh: daemon: $target/release/podwalld"
echo "setup.sh: plugin: $target/x86_64-unknown-linux-gnu/release/podwall"
