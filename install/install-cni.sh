#!/bin/sh
# install-cni: put the podwall CNI plugin on the host and chain it into the node's CNI
# config, or take it out again. POSIX sh; the DaemonSet runs it under busybox sh.
#
#   install-cni.sh [install|uninstall]
#
# Environment (the DaemonSet's mounts are the defaults):
#   CNI_BIN_DIR       host CNI plugin dir            /host/opt/cni/bin
#   CNI_NET_DIR       host CNI config dir            /host/etc/cni/net.d
#   PODWALL_BIN       the plugin to install          /usr/local/bin/podwall
#   DEFAULT_CONFLIST  conflist for a node without one (the ConfigMap's), used if it exists
#                                                    /etc/podwall/10-podwall.conflist
#   PODWALL_ENTRY     the podwall entry to append, JSON (default {"type":"podwall"})
#   REMOVE_BINARY     uninstall: also remove the plugin binary (1), default keep (0)
#
# install copies the plugin only when it differs (to a temp name in the same dir, then a
# rename, so the runtime never runs a half-written file and a running copy keeps its inode),
# then `podwall install` does the JSON: it writes nothing when podwall is already chained, so
# a restart changes no byte. A config it cannot read is left untouched and the script fails
# with podwall's one-line reason.
set -eu

CNI_BIN_DIR=${CNI_BIN_DIR:-/host/opt/cni/bin}
CNI_NET_DIR=${CNI_NET_DIR:-/host/etc/cni/net.d}
PODWALL_BIN=${PODWALL_BIN:-/usr/local/bin/podwall}
DEFAULT_CONFLIST=${DEFAULT_CONFLIST:-/etc/podwall/10-podwall.conflist}
PODWALL_ENTRY=${PODWALL_ENTRY:-}
REMOVE_BINARY=${REMOVE_BINARY:-0}

say() { echo "install-cni: $*"; }
die() { echo "install-cni: $*" >&2; exit 1; }

install_binary() {
    target=$CNI_BIN_DIR/podwall
    if [ -f "$target" ] && cmp -s "$PODWALL_BIN" "$target"; then
        say "$target is up to date"
        return 0
    fi
    tmp=$CNI_BIN_DIR/.podwall.$$.tmp
    trap 'rm -f "$tmp"' EXIT
    cp "$PODWALL_BIN" "$tmp"
    chmod 0755 "$tmp"
    mv -f "$tmp" "$target"
    trap - EXIT
    say "installed $target"
}

install() {
    [ -f "$PODWALL_BIN" ] || die "$PODWALL_BIN: no such file"
    mkdir -p "$CNI_BIN_DIR" "$CNI_NET_DIR"
    install_binary
    # The binary that will run as the plugin also does the JSON work.
    set -- install --net-dir "$CNI_NET_DIR"
    if [ -f "$DEFAULT_CONFLIST" ]; then
        set -- "$@" --default "$DEFAULT_CONFLIST"
    fi
    if [ -n "$PODWALL_ENTRY" ]; then
        set -- "$@" --entry "$PODWALL_ENTRY"
    fi
    "$PODWALL_BIN" "$@" || die "CNI config not changed"
}

uninstall() {
    [ -d "$CNI_NET_DIR" ] || die "$CNI_NET_DIR: no such directory"
    "$PODWALL_BIN" uninstall --net-dir "$CNI_NET_DIR" || die "CNI config not changed"
    # By default the binary stays: pods attached through podwall may still be deleted, and a
    # runtime that kept the old config needs the plugin for their DEL (which then succeeds
    # without the daemon). It is inert once no config names it.
    if [ "$REMOVE_BINARY" = 1 ] && [ -e "$CNI_BIN_DIR/podwall" ]; then
        rm -f "$CNI_BIN_DIR/podwall"
        say "removed $CNI_BIN_DIR/podwall"
    fi
}

case ${1:-install} in
    install) install ;;
    uninstall) uninstall ;;
    *) die "usage: install-cni.sh [install|uninstall]" ;;
esac
