//! podwall's benchmarks and the baseline they compare against, built on the root test rig of
//! `podwall-tests` (throw-away nodes and pods in network namespaces, the real CNI chain,
//! reach probes):
//! - [`dataplane`]: what an attach and a relabel cost in the kernel, netlink against `nft -f`;
//! - [`droplog`]: what the drop log costs per packet, on allowed and on denied traffic;
//! - [`propagation`]: from an API change to the verdict a packet meets, in Kubernetes mode;
//! - [`peers`]: podwall against `bridge` alone, Debian's `firewall` plugin and
//!   [`kuberouter`], a re-implementation of kube-router's iptables and ipset firewall;
//! - [`objects`]: realistic Pod, Namespace and NetworkPolicy objects as watch events, their
//!   bytes and what decoding and folding each costs the daemon's source (docs/scale.md);
//! - `benches/compile.rs`: the policy compiler alone at 10,000 pods and 1,000 policies;
//! - [`synthetic`]: the policy shapes the large worlds of the compile and dataplane
//!   benchmarks are built of.
//!
//! The `bench-*` binaries print figures; the root tests (`#[ignore = "needs root: …"]`) only
//! check that each benchmark still runs and that the baseline enforces what the evaluator
//! says. Nothing here asserts on timings. Running a benchmark needs root, like the rig, except
//! the compile benchmark and `bench-objects`; the generators (`synthetic`,
//! `kuberouter::generate`, `peers::world`) are pure.
//!
//! Dependencies: the rig (`podwall-tests`), the daemon's own parts (`podwalld`) for the
//! dataplane benchmark and the source's fold, `kube` and `k8s-openapi` for decoding watch
//! events as the daemon does, `podwall-policy` for the worlds and the verdicts, and external
//! programs: those of the rig, `ipset` and `iptables-nft-restore` for the kube-router
//! baseline, `iperf3` for the per-packet figures.
//!
//! No `unsafe` but one `wait4` call, in `kuberouter`'s child accounting (nix wraps none).
#![deny(unsafe_code)]

pub mod dataplane;
pub mod droplog;
pub mod kuberouter;
pub mod objects;
pub mod peers;
pub mod propagation;
pub mod stats;
pub mod synthetic;
