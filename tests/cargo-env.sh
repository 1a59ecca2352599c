# Sourced by the test scripts: find cargo also under sudo, whose PATH loses the invoking
# user's rustup install.
if ! command -v cargo >/dev/null && [[ -n ${SUDO_USER:-} ]]; then
    pwt_user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
    export PATH="$pwt_user_home/.cargo/bin:$PATH"
    if [[ -d $pwt_user_home/.rustup && -z ${RUSTUP_HOME:-} ]]; then
        export RUSTUP_HOME="$pwt_user_home/.rustup"
    fi
fi
if ! command -v cargo >/dev/null; then
    echo "cargo not found on PATH (install Rust, e.g. with rustup)" >&2
    exit 1
fi
