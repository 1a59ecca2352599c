//! One world loaded twice, side by side: a podwall node ([`PodwallNode`]: `podwalld` in
//! Kubernetes mode, watching the test API server that holds the world) and a
//! kube-router-shaped node (the same world as iptables chains and ipsets, programmed by a
//! full resync), each with the world's local pods attached through the real CNI chain and
//! a prober host behind it.
//!
//! The kube-router side has no daemon of its own: [`Pair::resync`] is its controller, which
//! regenerates everything from the snapshot and applies it with `ipset restore` and
//! `iptables-restore`, as kube-router's full sync does. Changes reach it as the same YAML
//! the API server gets ([`Pair::kr_apply`]), so both sides always enforce one world.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use podwall_policy::Snapshot;
use podwall_tests::cni::{result_ips, Pod};
use podwall_tests::external::ExternalHost;
use podwall_tests::node::{Node, NodeOptions};

use super::podwall::PodwallNode;
use super::process;
use super::world::{self, Spec, PROBER_ADDR};
use crate::kuberouter::{self, Cost};

/// What one kube-router-shaped resync cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct Resync {
    /// Generating the scripts, in-process.
    pub generate: Duration,
    pub generate_cpu: Duration,
    /// `ipset restore` + `iptables-restore`.
    pub apply: Cost,
}

impl Resync {
    pub fn wall(&self) -> Duration {
        self.generate + self.apply.wall
    }

    pub fn cpu(&self) -> Duration {
        self.generate_cpu + self.apply.cpu
    }
}

pub struct Pair {
    pub spec: Spec,
    /// The podwall node, with its API server.
    pub pw: PodwallNode,
    pub kr: Node,
    /// The kube-router node's conflist: bridge alone (the enforcer is not in the chain).
    pub kr_conflist: PathBuf,
    pub kr_pods: Vec<Pod>,
    pub kr_prober: ExternalHost,
    /// What the kube-router-shaped controller believes the cluster holds.
    pub kr_snapshot: Snapshot,
}

impl Pair {
    pub fn build(spec: Spec) -> Result<Pair> {
        let label = spec.label().replace('/', "-").to_lowercase();
        let pw = PodwallNode::start(&spec, &format!("peer-{label}"), "pw", &spec.cluster_docs())?;
        let kr = Node::with_options(&format!("kr-{label}"), NodeOptions::default());
        let kr_conflist = kr.write_conflist("bridge", &kr.conflist_json("1.0.0", None));
        let kr_pods = local_pods(&spec, "kr");
        // Both nodes' pods start side by side: building the world is not measured.
        let ips = std::thread::scope(|s| {
            let attached = s.spawn(|| pw.attach_pods());
            let ips = kr_pods
                .iter()
                .map(|pod| {
                    let result = kr.libcni("add", &kr_conflist, pod).map_err(|e| {
                        anyhow::anyhow!("ADD {} on the kube-router node: {e}", pod.container_id)
                    })?;
                    first_v4(&result_ips(&result)).context("no IPv4 address from bridge")
                })
                .collect::<Result<Vec<_>>>();
            if let Err(panic) = attached.join() {
                std::panic::resume_unwind(panic);
            }
            ips
        })?;
        let kr_snapshot = spec.snapshot(kr.name(), &ips);
        let kr_prober = ExternalHost::attach(&kr, PROBER_ADDR);
        let mut pair = Pair {
            spec,
            pw,
            kr,
            kr_conflist,
            kr_pods,
            kr_prober,
            kr_snapshot,
        };
        pair.resync().context("the kube-router node's first sync")?;
        Ok(pair)
    }

    /// The kube-router-shaped full sync: everything regenerated from the snapshot, applied
    /// with `ipset restore` and `iptables-restore`.
    pub fn resync(&mut self) -> Result<Resync> {
        resync(&self.kr, &self.kr_snapshot)
    }

    /// The same change to the kube-router side's snapshot (no resync yet).
    pub fn kr_apply(&mut self, op: &Op) {
        apply_to(&mut self.kr_snapshot, op);
    }
}

/// How podwalld is stopped before a restart.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// SIGTERM, as the kubelet stops a DaemonSet pod: it hands the kernel over.
    Clean,
    /// SIGKILL: no handover, the next start swaps the table in.
    Crash,
}

/// A change, as the YAML a user would `kubectl apply` or `kubectl delete`.
#[derive(Debug, Clone)]
pub enum Op {
    Apply(String),
    Delete(String),
}

/// Apply `op` to a snapshot as the API server applies it to its store.
pub fn apply_to(snap: &mut Snapshot, op: &Op) {
    match op {
        Op::Apply(yaml) => {
            let loaded = world::load(yaml);
            for (_, ns) in loaded.namespaces {
                snap.upsert_namespace(ns);
            }
            for (_, pod) in loaded.pods {
                snap.upsert_pod(pod);
            }
            for (_, policy) in loaded.policies {
                snap.upsert_policy(policy);
            }
        }
        Op::Delete(yaml) => {
            let loaded = world::load(yaml);
            for name in loaded.namespaces.keys() {
                snap.namespaces.remove(name);
            }
            for key in loaded.pods.keys() {
                snap.pods.remove(key);
            }
            for key in loaded.policies.keys() {
                snap.policies.remove(key);
            }
        }
    }
}

/// A kube-router-shaped full sync of `snap` into `node`.
pub fn resync(node: &Node, snap: &Snapshot) -> Result<Resync> {
    let cpu0 = process::thread_cpu();
    let t0 = Instant::now();
    let scripts = kuberouter::generate(snap, node.name());
    let generate = t0.elapsed();
    let generate_cpu = process::thread_cpu().saturating_sub(cpu0);
    let apply =
        kuberouter::apply(&node.netns, &scripts).context("applying the kube-router shape")?;
    Ok(Resync {
        generate,
        generate_cpu,
        apply,
    })
}

fn local_pods(spec: &Spec, side: &str) -> Vec<Pod> {
    (0..spec.size.local)
        .map(|i| {
            let (ns, name, _) = spec.local_pod(i);
            Pod::named(&format!("{side}{i}"), &ns, &name)
        })
        .collect()
}

pub fn first_v4(ips: &[IpAddr]) -> Option<IpAddr> {
    ips.iter().copied().find(IpAddr::is_ipv4)
}
