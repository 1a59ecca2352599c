//! Daemon footprint: `podwalld`'s resident memory and CPU at idle, in Kubernetes mode, with
//! 1k, 10k and 100k pods in the cluster (world L's policies; a few pods of the node
//! attached, so the node has chains and peer sets to keep). Given another daemon binary (an
//! earlier build), each size measures both, in turn, in alternating order.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use podwall_tests::cluster::{Cluster, SEED};
use podwall_tests::cni::Pod;
use podwall_tests::node::NodeOptions;

use super::process;
use super::world::{Spec, L};

/// Pods of the node attached in each footprint world.
const ATTACHED: usize = 10;

#[derive(Debug, Clone)]
pub struct Row {
    /// The daemon measured: `None` for the build under test, or the other binary's path.
    pub baseline: Option<PathBuf>,
    pub cluster_pods: usize,
    /// Daemon start to healthy.
    pub sync: Duration,
    /// Resident set after the idle window, and the largest one the process had.
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
    /// CPU over the idle window, as a share of one core.
    pub idle_cpu: f64,
}

/// One world per size and daemon: load it, wait `settle`, then watch the daemon for `idle`.
/// With a `baseline` binary, each size measures it and the build under test, the first of
/// the two alternating from size to size.
pub fn measure(
    sizes: &[usize],
    settle: Duration,
    idle: Duration,
    baseline: Option<&Path>,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (i, &pods) in sizes.iter().enumerate() {
        let mut daemons = vec![None];
        if let Some(other) = baseline {
            daemons.insert(i % 2, Some(other));
        }
        for daemon in daemons {
            let row = one(pods, settle, idle, daemon, &[]).with_context(|| {
                let which = daemon.map_or("podwalld".to_string(), |d| d.display().to_string());
                format!("{which} with {pods} cluster pods")
            })?;
            rows.push(row);
        }
    }
    Ok(rows)
}

/// One daemon (`daemon`, or the build under test) in the world of `pods` cluster pods with
/// `extra` objects after the world's.
pub(crate) fn one(
    pods: usize,
    settle: Duration,
    idle: Duration,
    daemon: Option<&Path>,
    extra: &[String],
) -> Result<Row> {
    let spec = Spec::new(L, pods);
    let options = NodeOptions {
        daemon: daemon.map(Path::to_path_buf),
        ..NodeOptions::default()
    };
    let mut cluster = Cluster::empty(&format!("fp{pods}"), 1, options);
    cluster.apply(SEED);
    let node_name = cluster.node(0).name().to_string();
    let mut docs = spec.cluster_docs();
    docs.extend_from_slice(extra);
    docs.extend((0..ATTACHED).map(|i| spec.local_pod_yaml(i, &node_name)));
    (cluster.api.apply_documents(&docs))
        .map_err(|e| anyhow::anyhow!("loading the API server: {e:?}"))?;
    let node = &mut cluster.nodes[0];
    let started = Instant::now();
    node.spawn_daemon().context("starting podwalld")?;
    node.wait_healthy(Duration::from_secs(600))
        .with_context(|| format!("podwalld did not sync:\n{}", node.daemon_log()))?;
    let sync = started.elapsed();
    let local: Vec<Pod> = (0..ATTACHED)
        .map(|i| {
            let (ns, name, _) = spec.local_pod(i);
            Pod::named(&format!("fp{i}"), &ns, &name)
        })
        .collect();
    for pod in &local {
        cluster.attach(0, pod);
    }
    std::thread::sleep(settle);
    let pid = cluster
        .node(0)
        .daemon_pid()
        .context("podwalld is not running")?;
    let before = process::usage(pid)?;
    let t0 = Instant::now();
    std::thread::sleep(idle);
    let after = process::usage(pid)?;
    let idle_cpu = after.cpu.saturating_sub(before.cpu).as_secs_f64() / t0.elapsed().as_secs_f64();
    Ok(Row {
        baseline: daemon.map(Path::to_path_buf),
        cluster_pods: pods,
        sync,
        rss_kib: after.rss_kib,
        peak_rss_kib: after.peak_rss_kib,
        idle_cpu,
    })
}
