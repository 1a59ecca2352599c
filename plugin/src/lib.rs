//! Shared pieces of the `podwall` CNI plugin and the `podwalld` daemon.
//!
//! `wire` is the plugin↔daemon socket protocol; `cni` is the part of the CNI spec the plugin
//! speaks. Neither does I/O beyond what a caller hands it, and neither depends on tokio, kube
//! or sled, so the plugin stays a small static binary. `install` is `podwall install` and
//! `podwall uninstall`, which chain the plugin into a node's CNI config (pure planning, thin
//! file I/O).
#![forbid(unsafe_code)]

pub mod cni;
pub mod install;
pub mod wire;

/// Where the daemon listens unless told otherwise (contract: `socket`, `--socket`).
pub const DEFAULT_SOCKET: &str = "/run/podwall/podwall.sock";

/// An error and its sources on one line, as `{:#}` prints an `anyhow::Error`:
/// "cannot reach podwalld at /run/x.sock: No such file or directory (os error 2)".
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
