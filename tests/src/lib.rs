//! Test rig for podwall's root integration tests: throw-away nodes and pods in network
//! namespaces, the real CNI chain (libcni and direct plugin invocation), traffic probes and a
//! reader for the node's nftables table.
//!
//! Everything here needs root and is used only by tests marked `#[ignore = "needs root: …"]`
//! and by the `podwall-demo` binary. Every object the rig creates is named `pwt-<pid>-…` and
//! removed when its owner is dropped, also when a test panics.
//!
//! Dependencies: the `podwall` library for the socket protocol, external programs (`ip`,
//! `nft`, `go`, the Debian CNI plugins, `podwall`, `podwalld`), nothing of the daemon's code.
#![forbid(unsafe_code)]

pub mod bins;
pub mod cmd;
pub mod cni;
pub mod netns;
pub mod nft;
pub mod node;
pub mod probe;
pub mod wait;

pub use cni::{CniFailure, CniOutcome, Pod};
pub use netns::{require_root, TestNetns};
pub use node::{Node, NodeOptions};
pub use wait::eventually;
