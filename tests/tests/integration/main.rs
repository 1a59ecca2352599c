//! podwall's integration tests, in one binary. The root tests (`#[ignore]`d, run by
//! `tests/run.sh` with `--ignored`) build throw-away nodes and pods in network namespaces; the
//! others check the rig and the renderer without root.
//!
//! One binary rather than one per file: each links the daemon, kube and the test API server,
//! so thirty of them took minutes of linking and gigabytes of disk.

mod adopt;
mod apiserver;
mod apiserver_crd;
mod cleanup;
mod cni_chain;
mod counters;
mod daemon_restart;
mod deploy;
mod differential;
mod divergence;
mod drop_log;
mod explain_live;
mod hairpin;
mod health_port;
mod image;
pub(crate) mod install;
mod install_caps;
mod kube_attach;
mod kube_broken;
mod kube_e2e;
mod kube_podcidr;
mod kube_rbac;
mod kube_relist;
mod kube_restart;
mod kube_sync;
mod kube_tiers;
mod kustomize;
mod layout;
mod manifests_watch;
mod node_path;
mod policy_attach;
mod policy_drift;
mod policy_incremental;
mod policy_ipblock;
mod policy_ipv6;
mod policy_isolation;
mod policy_ports;
mod policy_selectors;
mod policy_shared_ip;
mod policy_spoofing;
mod readme;
mod render;
mod revoke;
mod rig;
mod socket;
mod structure;
mod tiers;
