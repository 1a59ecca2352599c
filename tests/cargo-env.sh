# Sourced by the test scripts: find cargo also under sudo, whose PATH loses the invoking
# user's rustup install.
if ! command -v cargo >/dev/null && [[ -n ${SUDO_USER:-} ]]; then
    pwt_user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
    export PATH="$pwt_user_home/.cargo/bin:$PATH"
    if [[ -d $pwt_user_home/.rustup && -z ${RUSTUP_HOME:-} ]]; then
        export RUSTUP_HOME="$pwt_user_home/.rustup"
    fi
fi
if ! command -v cargo >/dev/null && [[ -d $HOME/.cargo/bin ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
# The workspace's rust-version (Cargo.toml); Debian's own cargo is older.
pwt_rust_min=1.85
pwt_rust_help="install Rust $pwt_rust_min or newer with rustup: curl --proto '=https' -sSf https://sh.rustup.rs | sh -s -- -y (then open a new shell, or: source \$HOME/.cargo/env)"
if ! command -v cargo >/dev/null; then
    echo "cargo not found on PATH: $pwt_rust_help" >&2
    exit 1
fi
pwt_rust_have=$(cargo --version | awk '{print $2}')
if [[ $(printf '%s\n' "$pwt_rust_min" "$pwt_rust_have" | sort -V | head -1) != "$pwt_rust_min" ]]; then
    echo "cargo $pwt_rust_have is too old to build podwall: $pwt_rust_help" >&2
    exit 1
fi
