//! Test rig for podwall's root integration tests: throw-away nodes and pods in network
//! namespaces, the real CNI chain (libcni and direct plugin invocation), traffic probes and a
//! reader for the node's nftables table.
//!
//! Everything here needs root and is used only by tests marked `#[ignore = "needs root: …"]`,
//! by the `podwall-demo` and `podwall-differential` binaries, and by the benchmarks of
//! `podwall-bench`, which build on this rig. Every object the rig creates is named
//! `pwt-<pid>-…` and removed when its owner is dropped, also when a test panics.
//!
//! Dependencies: the `podwall` library for the socket protocol, `podwall-policy` for the
//! verdicts the tests expect (the evaluator over the same manifests the daemon reads),
//! external programs (`ip`, `nft`, `go`, the Debian CNI plugins, `podwall`, `podwalld`).
#![forbid(unsafe_code)]

pub mod apiserver;
pub mod bins;
pub mod cli;
pub mod cluster;
pub mod cmd;
pub mod cni;
pub mod differential;
pub mod e2e;
pub mod external;
pub mod image;
pub mod kubelet;
pub mod manifests;
pub mod metrics;
pub mod netns;
pub mod nft;
pub mod node;
pub mod probe;
pub mod rbac;
pub mod reach;
pub mod registry;
pub mod trio;
pub mod wait;

pub use cluster::Cluster;
pub use cni::{CniFailure, CniOutcome, Pod};
pub use external::ExternalHost;
pub use manifests::ManifestDir;
pub use metrics::Metrics;
pub use netns::{require_root, TestNetns};
pub use node::{Node, NodeOptions};
pub use wait::eventually;
