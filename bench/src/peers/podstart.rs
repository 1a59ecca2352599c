//! Pod start: CNI ADD and DEL through libcni (the runner a container runtime embeds), one
//! pod after another and 8 at once, for four chains on three nodes side by side:
//! - `bridge`: bridge + host-local alone, no enforcement;
//! - `bridge+podwall`: the podwall node of a world, its daemon up with the world loaded; the
//!   pods are new replicas of the world's workloads, so their policy group exists;
//! - `bridge+podwall, new group`: the same node, each pod selected by a policy of its own
//!   (with a peer), so its ADD creates its group's chain and sets;
//! - `bridge+podwall, policies changing`: replicas again, while a policy selecting every
//!   local pod of their namespace is added and deleted every 50 ms (each a structural change
//!   of the node's table), so ADDs meet bulk changes;
//! - `bridge+firewall`: Debian's `firewall` plugin chained after bridge (iptables backend),
//!   the stock way to add filtering to a chain.
//!
//! Every timing is one whole `pwt-cnitool` run, so it includes the runner's own start
//! (the same for all). For podwall, the daemon's `/metrics` also say where each ADD's time
//! went inside the daemon (`podwall_attach_phase_seconds_total`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use podwall_tests::cni::Pod;
use podwall_tests::manifests::PodManifest;
use podwall_tests::node::{Node, NodeOptions};
use serde_json::json;

use super::pair::Pair;
use super::podwall::PodwallNode;
use super::world::Spec;
use crate::stats::{order, Samples};

/// Pods started at once in the parallel runs.
pub const PARALLEL: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    Bridge,
    Podwall,
    PodwallNewGroup,
    PodwallChurn,
    Firewall,
}

impl Chain {
    pub const ALL: [Chain; 5] = [
        Chain::Bridge,
        Chain::Podwall,
        Chain::PodwallNewGroup,
        Chain::PodwallChurn,
        Chain::Firewall,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Chain::Bridge => "bridge",
            Chain::Podwall => "bridge+podwall",
            Chain::PodwallNewGroup => "bridge+podwall, new group",
            Chain::PodwallChurn => "bridge+podwall, policies changing",
            Chain::Firewall => "bridge+firewall",
        }
    }
}

/// The daemon's attach phases (`podwall_attach_phase_seconds_total`), as the table names them.
pub const PHASES: [&str; 5] = ["lookup", "queue", "compile", "kernel", "store"];

/// ADD and DEL samples of one chain, sequential and parallel.
#[derive(Debug, Clone)]
pub struct Row {
    pub chain: Chain,
    pub add: Samples,
    pub del: Samples,
    pub add_parallel: Samples,
    pub del_parallel: Samples,
    /// For podwall: the mean time per sequential ADD in each of `PHASES`, in the daemon.
    pub phases: Vec<Duration>,
}

/// Parts of an ADD outside the daemon, timed alone on the podwall node: the plugin binary's
/// run (`CNI_COMMAND=VERSION`, no socket) and one request on the daemon's socket (`status`),
/// means.
#[derive(Debug, Clone, Default)]
pub struct Outside {
    pub plugin_run: Samples,
    pub socket_round_trip: Samples,
}

/// Time `n` plugin runs and `n` socket round trips on `node`.
pub fn outside(node: &Node, n: usize) -> Result<Outside> {
    let mut out = Outside::default();
    let plugin = podwall_tests::bins::plugin();
    for _ in 0..n {
        let started = Instant::now();
        let status = std::process::Command::new(&plugin)
            .env("CNI_COMMAND", "VERSION")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .status()
            .context("running the plugin")?;
        out.plugin_run.push(started.elapsed());
        if !status.success() {
            bail!("the plugin's VERSION failed: {status}");
        }
        let started = Instant::now();
        node.call(&podwall::wire::Request::Status)
            .map_err(|e| anyhow!("status on the daemon's socket: {e}"))?;
        out.socket_round_trip.push(started.elapsed());
    }
    Ok(out)
}

/// The two nodes besides the world's podwall node.
pub struct Baselines {
    bridge: Node,
    bridge_conflist: PathBuf,
    firewall: Node,
    firewall_conflist: PathBuf,
}

impl Baselines {
    pub fn new() -> Self {
        let bridge = Node::with_options("start-bridge", NodeOptions::default());
        let bridge_conflist = bridge.write_conflist("bridge", &bridge.conflist_json("1.0.0", None));
        let firewall = Node::with_options("start-fw", NodeOptions::default());
        let firewall_conflist = firewall.write_conflist(
            "firewall",
            &firewall.conflist_json(
                "1.0.0",
                Some(json!({"type": "firewall", "backend": "iptables"})),
            ),
        );
        Baselines {
            bridge,
            bridge_conflist,
            firewall,
            firewall_conflist,
        }
    }
}

impl Default for Baselines {
    fn default() -> Self {
        Self::new()
    }
}

/// `rounds` rounds of `sequential` pods one by one and [`PARALLEL`] pods at once, per chain.
pub fn measure(
    pair: &Pair,
    baselines: &Baselines,
    rounds: usize,
    sequential: usize,
) -> Result<Vec<Row>> {
    let slots = sequential.max(PARALLEL);
    let new_groups = new_group_pods(&pair.pw, &pair.spec, rounds, slots)?;
    let names = replicas(&pair.pw, &pair.spec, slots)?;
    let mut rows: Vec<Row> = Chain::ALL
        .iter()
        .map(|&chain| Row {
            chain,
            add: Samples::default(),
            del: Samples::default(),
            add_parallel: Samples::default(),
            del_parallel: Samples::default(),
            phases: Vec::new(),
        })
        .collect();
    let mut phase_totals = [[0.0; PHASES.len()]; 3];
    for (round, new_group) in new_groups.iter().enumerate() {
        for i in order(Chain::ALL.len(), round) {
            let chain = Chain::ALL[i];
            let (node, conflist) = match chain {
                Chain::Bridge => (&baselines.bridge, baselines.bridge_conflist.as_path()),
                Chain::Podwall | Chain::PodwallNewGroup | Chain::PodwallChurn => {
                    (pair.pw.node(), pair.pw.node().conflist())
                }
                Chain::Firewall => (&baselines.firewall, baselines.firewall_conflist.as_path()),
            };
            let names = match chain {
                Chain::PodwallNewGroup => new_group,
                _ => &names,
            };
            let row = &mut rows[i];
            let pods = new_pods(&names[..sequential], round, "s");
            let before = phase_seconds(node, chain);
            let stop = AtomicBool::new(false);
            std::thread::scope(|s| -> Result<()> {
                let churn = (chain == Chain::PodwallChurn).then(|| s.spawn(|| churn(pair, &stop)));
                let added = pods.iter().try_for_each(|pod| {
                    row.add.push(timed(node, "add", conflist, pod)?);
                    Ok(())
                });
                stop.store(true, Ordering::Relaxed);
                if let Some(churn) = churn {
                    churn
                        .join()
                        .map_err(|_| anyhow!("the policy churn panicked"))??;
                }
                added
            })?;
            let after = phase_seconds(node, chain);
            if let Some(totals) = match chain {
                Chain::Podwall => Some(&mut phase_totals[0]),
                Chain::PodwallNewGroup => Some(&mut phase_totals[1]),
                Chain::PodwallChurn => Some(&mut phase_totals[2]),
                _ => None,
            } {
                for (total, (a, b)) in totals.iter_mut().zip(after.iter().zip(&before)) {
                    *total += a - b;
                }
            }
            for pod in &pods {
                row.del.push(timed(node, "del", conflist, pod)?);
            }
            let pods = new_pods(&names[..PARALLEL], round, "p");
            let (adds, dels) = parallel(node, conflist, &pods)?;
            row.add_parallel.0.extend(adds);
            row.del_parallel.0.extend(dels);
        }
    }
    for (row, totals) in rows[1..=3].iter_mut().zip(phase_totals) {
        let adds = row.add.len().max(1) as f64;
        row.phases = (totals.iter())
            .map(|seconds| Duration::from_secs_f64((seconds / adds).max(0.0)))
            .collect();
    }
    Ok(rows)
}

/// Add and delete a policy that selects every local pod of the replicas' namespace, every
/// 50 ms, until `stop`.
fn churn(pair: &Pair, stop: &AtomicBool) -> Result<()> {
    let (ns, _) = pair.spec.replica(0);
    let yaml = format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {{name: start-churn, namespace: {ns}}}\n\
         spec:\n  podSelector: {{matchLabels: {{tier: local}}}}\n  ingress:\n\
         \x20 - from: [{{namespaceSelector: {{}}, podSelector: {{matchLabels: {{app: a1}}}}}}]\n"
    );
    while !stop.load(Ordering::Relaxed) {
        pair.pw
            .cluster
            .api
            .apply_yaml(&yaml)
            .map_err(|e| anyhow!("adding the churning policy: {e:?}"))?;
        std::thread::sleep(Duration::from_millis(50));
        pair.pw
            .cluster
            .api
            .delete_yaml(&yaml)
            .map_err(|e| anyhow!("deleting the churning policy: {e:?}"))?;
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Seconds the daemon spent in each of `PHASES` so far; zeros for a chain without podwall.
fn phase_seconds(node: &Node, chain: Chain) -> [f64; PHASES.len()] {
    match chain {
        Chain::Podwall | Chain::PodwallNewGroup | Chain::PodwallChurn => daemon_phases(node),
        Chain::Bridge | Chain::Firewall => [0.0; PHASES.len()],
    }
}

/// Seconds `node`'s daemon spent in each of `PHASES` so far.
pub(crate) fn daemon_phases(node: &Node) -> [f64; PHASES.len()] {
    let mut out = [0.0; PHASES.len()];
    let metrics = node.metrics();
    for (value, phase) in out.iter_mut().zip(PHASES) {
        let series = format!("podwall_attach_phase_seconds_total{{phase=\"{phase}\"}}");
        *value = metrics.samples.get(&series).copied().unwrap_or(0.0);
    }
    out
}

/// `slots` Pod objects on `pw`'s node that are new replicas of the world's workloads: they
/// exist before the ADD, as kubelet only starts pods the API server has scheduled.
pub(crate) fn replicas(
    pw: &PodwallNode,
    spec: &Spec,
    slots: usize,
) -> Result<Vec<(String, String)>> {
    let node = pw.node().name().to_string();
    let mut names = Vec::new();
    for k in 0..slots {
        let (ns, labels) = spec.replica(k);
        let labels: Vec<(&str, &str)> = labels
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let name = format!("start-{k}");
        let yaml = PodManifest::new(&ns, &name)
            .labels(&labels)
            .ports(&[("http", 8080, "TCP")])
            .remote(&node, &[])
            .yaml();
        pw.cluster
            .api
            .apply_yaml(&yaml)
            .map_err(|e| anyhow!("creating {ns}/{name}: {e:?}"))?;
        names.push((ns, name));
    }
    Ok(names)
}

/// For each round, `slots` pods of a local namespace that each start a policy group of their
/// own: a policy selects only that pod and admits one remote app to it, so its ADD creates
/// the group's chain and the policy's peer sets. Their objects exist before the ADDs.
pub(crate) fn new_group_pods(
    pw: &PodwallNode,
    spec: &Spec,
    rounds: usize,
    slots: usize,
) -> Result<Vec<Vec<(String, String)>>> {
    let pw_name = pw.node().name().to_string();
    let (ns, _) = spec.replica(0);
    let mut all = Vec::new();
    for round in 0..rounds {
        let mut names = Vec::new();
        for k in 0..slots {
            let name = format!("start-new-{round}-{k}");
            let policy = format!(
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
                 metadata: {{name: {name}, namespace: {ns}}}\n\
                 spec:\n  podSelector: {{matchLabels: {{grp: {name}}}}}\n  ingress:\n\
                 \x20 - from: [{{namespaceSelector: {{}}, podSelector: {{matchLabels: {{app: a{k}}}}}}}]\n\
                 \x20   ports: [{{port: 8080}}]\n"
            );
            let pod = PodManifest::new(&ns, &name)
                .labels(&[("grp", name.as_str()), ("tier", "local")])
                .ports(&[("http", 8080, "TCP")])
                .remote(&pw_name, &[])
                .yaml();
            for yaml in [policy, pod] {
                pw.cluster
                    .api
                    .apply_yaml(&yaml)
                    .map_err(|e| anyhow!("creating {ns}/{name}: {e:?}"))?;
            }
            names.push((ns.clone(), name));
        }
        all.push(names);
    }
    // Let the daemon's watchers deliver them, as they would have before kubelet's ADD.
    std::thread::sleep(Duration::from_secs(1));
    Ok(all)
}

pub(crate) fn new_pods(names: &[(String, String)], round: usize, tag: &str) -> Vec<Pod> {
    names
        .iter()
        .enumerate()
        .map(|(k, (ns, name))| Pod::named(&format!("st{tag}{round}-{k}"), ns, name))
        .collect()
}

pub(crate) fn timed(node: &Node, op: &str, conflist: &Path, pod: &Pod) -> Result<Duration> {
    let t0 = Instant::now();
    node.libcni(op, conflist, pod)
        .map_err(|e| anyhow!("{op} {} on {}: {e}", pod.container_id, node.name()))?;
    Ok(t0.elapsed())
}

/// ADD all `pods` at once, then DEL them all at once.
pub(crate) fn parallel(
    node: &Node,
    conflist: &Path,
    pods: &[Pod],
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let run = |op: &'static str| -> Result<Vec<Duration>> {
        let barrier = Barrier::new(pods.len());
        std::thread::scope(|s| {
            let handles: Vec<_> = pods
                .iter()
                .map(|pod| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        timed(node, op, conflist, pod)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a CNI thread panicked"))
                .collect()
        })
    };
    let adds = run("add")?;
    let dels = run("del")?;
    Ok((adds, dels))
}
