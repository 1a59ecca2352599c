//! Shared pieces of the `podwall` CNI plugin and the `podwalld` daemon.
//!
//! `wire` is the plugin↔daemon socket protocol; `cni` is the part of the CNI spec the plugin
//! speaks. Neither does I/O beyond what a caller hands it, and neither depends on tokio, kube
//! or sled, so the plugin stays a small static binary.
#![forbid(unsafe_code)]

pub mod cni;
pub mod wire;

/// Where the daemon listens unless told otherwise (contract: `socket`, `--socket`).
pub const DEFAULT_SOCKET: &str = "/run/podwall/podwall.sock";
