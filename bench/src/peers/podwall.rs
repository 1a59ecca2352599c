//! A podwall node of a world: the release `podwalld --kubeconfig` watching a test API server
//! of its own that holds the world, the world's local pods attached through the real CNI
//! chain, and the remote prober behind it. The peer comparison runs one beside the
//! kube-router shape (`pair`); the cluster-policy comparison runs two, the same world with
//! and without the guardrails (`tiers`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use podwall_tests::cluster::Cluster;
use podwall_tests::cni::Pod;
use podwall_tests::external::ExternalHost;
use podwall_tests::node::Node;

use super::pair::{Op, Stop};
use super::process;
use super::world::{Spec, PROBER_ADDR};

/// How long a world's daemon may take to list and program it.
const SYNC_DEADLINE: Duration = Duration::from_secs(300);

pub struct PodwallNode {
    /// The API server and the node (`cluster.nodes[0]`).
    pub cluster: Cluster,
    /// World pod `i` on the node.
    pub pods: Vec<Pod>,
    pub prober: ExternalHost,
    /// Daemon start to healthy, with the world in the API server (the first full sync).
    pub first_sync: Duration,
}

impl PodwallNode {
    /// A node named after `label` whose API server holds `docs` and the world's local Pod
    /// objects, its daemon started and healthy, the prober attached; the local pods are not
    /// attached yet ([`attach_pods`](Self::attach_pods)). `tag` prefixes the pods' netns names.
    pub fn start(spec: &Spec, label: &str, tag: &str, docs: &[String]) -> Result<PodwallNode> {
        let mut cluster = Cluster::new(label, 1);
        let name = cluster.node(0).name().to_string();
        let local: Vec<String> = (0..spec.size.local)
            .map(|i| spec.local_pod_yaml(i, &name))
            .collect();
        let world: Vec<&String> = docs.iter().chain(&local).collect();
        (cluster.api.apply_documents(&world))
            .map_err(|e| anyhow::anyhow!("loading the world into the API server: {e:?}"))?;
        let node = &mut cluster.nodes[0];
        let started = Instant::now();
        node.spawn_daemon().context("starting podwalld")?;
        node.wait_healthy(SYNC_DEADLINE)
            .with_context(|| format!("podwalld did not sync:\n{}", node.daemon_log()))?;
        let first_sync = started.elapsed();
        let pods = (0..spec.size.local)
            .map(|i| {
                let (ns, name, _) = spec.local_pod(i);
                Pod::named(&format!("{tag}{i}"), &ns, &name)
            })
            .collect();
        let prober = ExternalHost::attach(cluster.node(0), PROBER_ADDR);
        Ok(PodwallNode {
            cluster,
            pods,
            prober,
            first_sync,
        })
    }

    /// ADD every world pod through the real chain and publish its addresses, as kubelet
    /// would; panics on a failed ADD, as the rig does.
    pub fn attach_pods(&self) {
        for pod in &self.pods {
            self.cluster.attach(0, pod);
        }
    }

    pub fn node(&self) -> &Node {
        self.cluster.node(0)
    }

    /// The daemon's pid.
    pub fn pid(&self) -> Result<u32> {
        self.node().daemon_pid().context("podwalld is not running")
    }

    pub fn usage(&self) -> Result<process::Usage> {
        process::usage(self.pid()?)
    }

    /// A change as YAML, to the API server; timed by the caller.
    pub fn apply(&self, op: &Op) -> Result<()> {
        let api = &self.cluster.api;
        match op {
            Op::Apply(yaml) => api.apply_yaml(yaml),
            Op::Delete(yaml) => api.delete_yaml(yaml),
        }
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("changing the API server: {e:?}"))
    }

    /// Stop podwalld as `stop` says and start it again with its state (attachments and
    /// stored cluster): how long until it serves ADDs (its socket answers, the stored state
    /// enforced), how long until it is healthy (the lists arrived and were applied), and its
    /// resources up to then.
    pub fn restart(&mut self, stop: Stop) -> Result<(Duration, Duration, process::Usage)> {
        let node = &mut self.cluster.nodes[0];
        match stop {
            Stop::Clean => node.stop_daemon(),
            Stop::Crash => node.kill_daemon(),
        };
        let started = Instant::now();
        node.spawn_daemon().context("restarting podwalld")?;
        while node.call(&podwall::wire::Request::Status).is_err() {
            if started.elapsed() > SYNC_DEADLINE {
                bail!("podwalld does not serve its socket:\n{}", node.daemon_log());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let serving = started.elapsed();
        node.wait_healthy(SYNC_DEADLINE)
            .with_context(|| format!("podwalld did not sync again:\n{}", node.daemon_log()))?;
        let took = started.elapsed();
        let pid = node.daemon_pid().context("podwalld is not running")?;
        Ok((serving, took, process::usage(pid)?))
    }
}
