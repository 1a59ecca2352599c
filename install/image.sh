#!/usr/bin/env bash
# Build podwall's image (install/Containerfile, FROM scratch) with buildah, offline: the
# binaries are built here, the root filesystem is staged from them and this machine's
# busybox-static and nft (with the shared libraries each loads), and the image gets the tag
# given (default podwall:0.1.0). Prints the image's size. As root, or with rootless buildah.
#   bash install/image.sh [TAG]
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-podwall:0.1.0}

for tool in buildah nft; do
    command -v "$tool" >/dev/null || {
        echo "image.sh: $tool not found (Debian: apt-get install buildah nftables busybox-static)" >&2
        exit 1
    }
done
busybox=/bin/busybox
if [[ ! -x $busybox ]] || ldd "$busybox" >/dev/null 2>&1; then
    echo "image.sh: $busybox is not static (Debian: apt-get install busybox-static)" >&2
    exit 1
fi

source tests/cargo-env.sh
target="$(uname -m)-unknown-linux-gnu"
echo "image.sh: building podwalld and the static plugin for $target" >&2
cargo build -q --release -p podwalld --bin podwalld
RUSTFLAGS='-C target-feature=+crt-static' cargo build -q --release --target "$target" -p podwall
build=${CARGO_TARGET_DIR:-target}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/rootfs
install -D -m 0755 "$build/$target/release/podwall" "$root/usr/local/bin/podwall"
install -D -m 0755 "$build/release/podwalld" "$root/usr/local/bin/podwalld"
install -D -m 0755 install/install-cni.sh "$root/usr/local/bin/install-cni.sh"
install -D -m 0755 "$(command -v nft)" "$root/usr/sbin/nft"
install -D -m 0755 "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
# The shared libraries of podwalld and nft, and the loader, at the paths ldd names.
for binary in "$root/usr/local/bin/podwalld" "$root/usr/sbin/nft"; do
    ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'
done | sort -u | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
# The tables podwalld and nft read at start, empty; /tmp for nft's cache.
mkdir -p "$root/etc" "$root/tmp" "$root/run" "$root/var/lib/podwall"
chmod 1777 "$root/tmp"
echo 'root:x:0:0:root:/:/bin/sh' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"
cp install/Containerfile "$stage/Containerfile"

buildah bud --quiet --layers=false -f "$stage/Containerfile" -t "$tag" "$stage" >/dev/null
bytes=$(buildah inspect --type image --format '{{.Docker.Size}}' "$tag" 2>/dev/null || echo 0)
if [[ $bytes == 0 ]]; then
    bytes=$(du -sb "$root" | cut -f1)
fi
echo "image.sh: built $tag: $((bytes / 1024 / 1024)) MiB ($bytes bytes)"
