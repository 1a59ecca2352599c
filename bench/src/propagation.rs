//! The propagation benchmark (issue 5): how long a change of the cluster takes to be
//! enforced. A kube-mode node watches the test API server, which holds 100, 1k or 10k pods
//! (nearly all of them on other nodes, with addresses; a few attached to the node for real),
//! and a prober connects to a local pod every ~2 ms. Each sample is the time from the control
//! call that changes the API server's state until the prober first sees the new verdict:
//! - `peer label`: a remote peer pod's label flips, which adds it to or removes it from the
//!   peers a local pod's policy admits (an element change in the kernel);
//! - `policy add/del`: a policy that isolates a local pod is created or deleted (a change of
//!   the table's structure).
//!
//! With [`Source::Manifests`] the same world is a standalone node's `--manifests` directory
//! (one file per namespace of 100 remote pods, ~2.5 MB at 10k pods), and a change is a file
//! written (`peer.yaml`, `isolate2.yaml`) or removed. There it also starts 30 new pods as
//! kubelet would (each one's manifest written a second before its ADD, its address
//! published after) and times their ADDs against ADDs through bridge alone on the node.
//!
//! The remote peer is a host behind the node at a documentation address, reported by a Pod
//! object of another node; the local pods are attached through the real CNI chain. A
//! benchmark, not a test: [`run`] returns figures and asserts nothing about them. The
//! `bench-propagation` binary prints them; `bench/tests/integration/bench_propagation_smoke.rs`
//! runs a tiny world to check that the benchmark itself works. Needs root.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use podwall_tests::apiserver::ApiServer;
use podwall_tests::cluster::Cluster;
use podwall_tests::cni::Pod;
use podwall_tests::external::ExternalHost;
use podwall_tests::manifests::{documents, namespace, ManifestDir, PodManifest};
use podwall_tests::probe::EchoServer;

use crate::stats::Samples;
use podwall_tests::{Node, NodeOptions};

/// The remote peer's address (RFC 5737), behind the node.
const PEER_ADDR: &str = "198.51.100.7";
/// Each probe's connect timeout: a dropped SYN costs this.
const ATTEMPT: Duration = Duration::from_millis(3);
/// Probes start this often (an attempt that is accepted takes well under a millisecond).
const CADENCE: Duration = Duration::from_millis(2);
/// A change that has not shown by then counts as lost and fails the run.
const GIVE_UP: Duration = Duration::from_secs(30);
/// Local pods attached besides the two targets, each selected by a policy whose peers are
/// a share of the remote pods (so the table has large peer sets, as in a real cluster).
const LOCAL_EXTRA: usize = 3;
/// Remote pods per namespace.
const PER_NAMESPACE: usize = 100;
/// The core's time per source update, as `/metrics` sums and counts it.
const SYNC_SECONDS_SUM: &str = "podwall_sync_duration_seconds_sum";
const SYNC_SECONDS_COUNT: &str = "podwall_sync_duration_seconds_count";
/// Distinct `app` labels among the remote pods.
const APPS: usize = 20;

/// Where the world lives and its changes are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The test API server, watched by a kube-mode node.
    Api,
    /// A standalone node's manifests directory.
    Manifests,
}

/// What to build and how often to change it.
#[derive(Debug, Clone)]
pub struct Options {
    /// Pods in the cluster, one world each.
    pub sizes: Vec<usize>,
    /// Changes measured per size and kind (half of them allow, half deny).
    pub changes: usize,
    pub source: Source,
}

impl Options {
    /// The figures of docs/benchmarks.md: 100, 1k and 10k pods, 20 changes of each kind.
    pub fn full() -> Self {
        Options {
            sizes: vec![100, 1_000, 10_000],
            changes: 20,
            source: Source::Api,
        }
    }

    /// A tiny world, to check that the benchmark works.
    pub fn smoke() -> Self {
        Options {
            sizes: vec![20],
            changes: 4,
            source: Source::Api,
        }
    }
}

/// What was changed in the API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    PeerLabel,
    Policy,
}

impl Change {
    pub const ALL: [Change; 2] = [Change::PeerLabel, Change::Policy];

    fn name(self) -> &'static str {
        match self {
            Change::PeerLabel => "peer label",
            Change::Policy => "policy add/del",
        }
    }
}

/// The samples of one (size, change).
#[derive(Debug, Clone)]
pub struct Row {
    pub pods: usize,
    pub change: Change,
    pub samples: Vec<Duration>,
}

impl Row {
    /// The `q` quantile (nearest rank) of the samples.
    pub fn quantile(&self, q: f64) -> Duration {
        crate::stats::quantile(&self.samples, q)
    }
}

/// One world's start-up: how long the daemon took from its start to a healthy `/healthz`.
#[derive(Debug, Clone)]
pub struct World {
    pub pods: usize,
    pub sync: Duration,
    /// How long the core took, on average, to apply one source update during the changes
    /// (`podwall_sync_duration_seconds`, reconciles included): it holds its lock that long,
    /// and an ADD that comes meanwhile waits.
    pub per_update: Duration,
    /// Standalone only: ADDs of new pods whose manifests were written a second before, with
    /// podwall and through bridge alone on the same node, interleaved.
    pub adds: Option<(Samples, Samples)>,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub source: Source,
    pub worlds: Vec<World>,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn row(&self, pods: usize, change: Change) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.pods == pods && r.change == change)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
        let what = match self.source {
            Source::Api => "API change",
            Source::Manifests => "manifests file change",
        };
        writeln!(f, "{what} -> enforced (prober every ~2 ms), milliseconds")?;
        writeln!(
            f,
            "{:>7}  {:<15} {:>4} {:>8} {:>8} {:>8}",
            "pods", "change", "n", "p50", "p99", "max"
        )?;
        for row in &self.rows {
            writeln!(
                f,
                "{:>7}  {:<15} {:>4} {:>8} {:>8} {:>8}",
                row.pods,
                row.change.name(),
                row.samples.len(),
                ms(row.quantile(0.5)),
                ms(row.quantile(0.99)),
                ms(row.quantile(1.0)),
            )?;
        }
        for w in &self.worlds {
            writeln!(
                f,
                "{:>7} pods: daemon start to healthy in {} ms; the core applied a source update in {} ms on average",
                w.pods,
                ms(w.sync),
                ms(w.per_update)
            )?;
            if let Some((podwall, bridge)) = &w.adds {
                writeln!(
                    f,
                    "{:>7} pods: ADD of {} new pods (manifest written 1 s before, IP published after): \
                     p50 {} ms, p99 {} ms; bridge alone p50 {} ms, p99 {} ms; p50 ×{:.2}",
                    w.pods,
                    podwall.len(),
                    ms(podwall.p50()),
                    ms(podwall.p99()),
                    ms(bridge.p50()),
                    ms(bridge.p99()),
                    podwall.p50().as_secs_f64() / bridge.p50().as_secs_f64().max(1e-9),
                )?;
            }
        }
        Ok(())
    }
}

/// Build each world and measure it.
pub fn run(options: &Options) -> Result<Report> {
    let mut report = Report {
        source: options.source,
        worlds: Vec::new(),
        rows: Vec::new(),
    };
    for &pods in &options.sizes {
        let (world, rows) = measure_world(pods, options.changes, options.source)
            .with_context(|| format!("world of {pods} pods"))?;
        report.worlds.push(world);
        report.rows.extend(rows);
    }
    Ok(report)
}

fn remote_ip(i: usize) -> IpAddr {
    // 10.250.0.0/16: no node of the rig uses it; nothing is ever sent there.
    IpAddr::V4(Ipv4Addr::new(10, 250, (i / 250) as u8, (i % 250 + 1) as u8))
}

fn policy(name: &str, selects: &str, spec_ingress: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: bench}}\n\
         spec:\n  podSelector: {{matchLabels: {{app: {selects}}}}}\n  policyTypes: [Ingress]\n{spec_ingress}"
    )
}

fn peer_yaml(role: &str) -> String {
    let ip: IpAddr = PEER_ADDR.parse().expect("a valid address");
    PodManifest::new("bench", "peer")
        .labels(&[("role", role)])
        .remote("pwt-remote-0", &[ip])
        .yaml()
}

/// Where the changes are made: the API server, or files of the manifests directory.
enum Editor<'a> {
    Api(&'a ApiServer),
    Dir(ManifestDir),
}

impl Editor<'_> {
    /// Create or replace the object `yaml` (file `file` of the directory); the time just
    /// before.
    fn put(&self, file: &str, yaml: &str) -> Result<Instant> {
        let t0 = Instant::now();
        match self {
            Editor::Api(api) => api
                .apply_yaml(yaml)
                .map(drop)
                .map_err(|e| anyhow::anyhow!("changing the API server: {e:?}"))?,
            Editor::Dir(dir) => dir.write(file, yaml),
        }
        Ok(t0)
    }

    /// Delete the object `yaml` (file `file`); the time just before.
    fn delete(&self, file: &str, yaml: &str) -> Result<Instant> {
        let t0 = Instant::now();
        match self {
            Editor::Api(api) => api
                .delete_yaml(yaml)
                .map(drop)
                .map_err(|e| anyhow::anyhow!("changing the API server: {e:?}"))?,
            Editor::Dir(dir) => dir.remove(file),
        }
        Ok(t0)
    }
}

/// The world's objects: the remote pods' namespaces with their pods (a group each), then
/// the bench namespace, its policies and the stranger peer.
fn world_docs(remotes: usize, local_names: &[String]) -> (Vec<Vec<String>>, Vec<String>) {
    let mut groups = Vec::new();
    for n in 0..remotes.div_ceil(PER_NAMESPACE) {
        let mut docs = vec![namespace(&format!("r{n}"), &[("tier", "remote")])];
        for i in n * PER_NAMESPACE..remotes.min((n + 1) * PER_NAMESPACE) {
            let app = format!("app{}", i % APPS);
            docs.push(
                PodManifest::new(&format!("r{n}"), &format!("p{i}"))
                    .labels(&[("app", &app)])
                    .remote(&format!("pwt-remote-{}", i % 50), &[remote_ip(i)])
                    .yaml(),
            );
        }
        groups.push(docs);
    }
    let mut bench = vec![namespace("bench", &[])];
    for (k, name) in local_names.iter().skip(2).enumerate() {
        bench.push(policy(
            name,
            name,
            &format!(
                "  ingress:\n  - from: [{{namespaceSelector: {{matchLabels: {{tier: remote}}}}, podSelector: {{matchLabels: {{app: app{k}}}}}}}]\n"
            ),
        ));
    }
    bench.push(policy(
        "target",
        "target",
        "  ingress:\n  - from: [{podSelector: {matchLabels: {role: client}}}]\n",
    ));
    (groups, bench)
}

fn measure_world(pods: usize, changes: usize, source: Source) -> Result<(World, Vec<Row>)> {
    let locals = 2 + LOCAL_EXTRA;
    if pods < locals + 1 {
        bail!("a world needs at least {} pods", locals + 1);
    }
    let remotes = pods - locals - 1;
    let mut local_names = vec!["target".to_string(), "target2".to_string()];
    local_names.extend((0..LOCAL_EXTRA).map(|k| format!("local{k}")));
    let (groups, mut bench) = world_docs(remotes, &local_names);
    let local: Vec<Pod> = local_names
        .iter()
        .map(|n| Pod::named(&format!("prop-{n}"), "bench", n))
        .collect();

    // The world is in place before the daemon starts (its first list or load has it all).
    let (mut cluster, mut node) = (None, None);
    let started;
    match source {
        Source::Api => {
            let cluster = cluster.insert(Cluster::new(&format!("prop{pods}"), 1));
            for name in &local_names {
                bench.push(cluster.pod_yaml(0, "bench", name, &[("app", name)], &[]));
            }
            bench.push(peer_yaml("stranger"));
            let docs: Vec<String> = groups.into_iter().flatten().chain(bench).collect();
            (cluster.api.apply_documents(&docs))
                .map_err(|e| anyhow::anyhow!("loading the API server: {e:?}"))?;
            let node = &mut cluster.nodes[0];
            started = Instant::now();
            node.spawn_daemon().context("starting podwalld")?;
            node.wait_healthy(Duration::from_secs(120))
                .with_context(|| format!("podwalld did not sync:\n{}", node.daemon_log()))?;
        }
        Source::Manifests => {
            let options = NodeOptions {
                manifests: true,
                ..NodeOptions::default()
            };
            let node = node.insert(Node::with_options(&format!("propm{pods}"), options));
            let dir = node.manifests();
            for name in &local_names {
                bench.push(
                    PodManifest::new("bench", name)
                        .labels(&[("app", name)])
                        .yaml(),
                );
            }
            for (n, docs) in groups.iter().enumerate() {
                dir.write(&format!("r{n}.yaml"), &documents(docs));
            }
            dir.write("bench.yaml", &documents(&bench));
            dir.write("peer.yaml", &peer_yaml("stranger"));
            started = Instant::now();
            node.spawn_daemon().context("starting podwalld")?;
            node.wait_healthy(Duration::from_secs(120))
                .with_context(|| format!("podwalld did not load:\n{}", node.daemon_log()))?;
        }
    }
    let sync = started.elapsed();

    let servers: Vec<EchoServer> = local[..2]
        .iter()
        .map(|p| EchoServer::start(&p.netns, 80))
        .collect();
    let daemon = match (&cluster, &node) {
        (Some(cluster), _) => cluster.node(0),
        (None, Some(node)) => node,
        (None, None) => bail!("no world was built"),
    };
    let metrics = daemon.metrics();
    let (host, editor) = match (&cluster, &node) {
        (Some(cluster), _) => {
            for pod in &local {
                cluster.attach(0, pod);
            }
            let host = ExternalHost::attach(cluster.node(0), PEER_ADDR);
            (host, Editor::Api(&cluster.api))
        }
        (None, Some(node)) => {
            for pod in &local {
                node.add(pod)
                    .map_err(|e| anyhow::anyhow!("ADD {}: {e}", pod.container_id))?;
            }
            (
                ExternalHost::attach(node, PEER_ADDR),
                Editor::Dir(node.manifests()),
            )
        }
        (None, None) => bail!("no world was built"),
    };
    let targets = [
        SocketAddr::new(local[0].ip4(), 80),
        SocketAddr::new(local[1].ip4(), 80),
    ];
    let isolate = policy(
        "isolate2",
        "target2",
        "  ingress:\n  - from: [{podSelector: {matchLabels: {role: nobody}}}]\n",
    );
    let rows = host.netns.run_in(|| -> Result<Vec<Row>> {
        // Both targets start as the changes leave them: target denies the stranger,
        // target2 is open.
        settle(targets[0], false)?;
        settle(targets[1], true)?;
        let mut rows = Vec::new();
        for change in Change::ALL {
            let mut samples = Vec::new();
            for i in 0..changes {
                let (target, allow, t0) = match change {
                    Change::PeerLabel => {
                        let allow = i % 2 == 0;
                        let yaml = peer_yaml(if allow { "client" } else { "stranger" });
                        (targets[0], allow, editor.put("peer.yaml", &yaml)?)
                    }
                    Change::Policy if i % 2 == 1 => {
                        (targets[1], true, editor.delete("isolate2.yaml", &isolate)?)
                    }
                    Change::Policy => (targets[1], false, editor.put("isolate2.yaml", &isolate)?),
                };
                samples.push(wait_for(target, allow, t0).with_context(|| {
                    format!("{} change {i} (want allowed={allow})", change.name())
                })?);
            }
            rows.push(Row {
                pods,
                change,
                samples,
            });
        }
        Ok(rows)
    })?;
    let (after, sum, count) = (daemon.metrics(), SYNC_SECONDS_SUM, SYNC_SECONDS_COUNT);
    let per_update = after.delta(&metrics, sum) / after.delta(&metrics, count).max(1.0);
    drop(servers);
    let per_update = Duration::from_secs_f64(per_update);
    let adds = match &node {
        Some(node) => Some(standalone_adds(node, STANDALONE_ADDS)?),
        None => None,
    };
    Ok((
        World {
            pods,
            sync,
            per_update,
            adds,
        },
        rows,
    ))
}

/// New pods started on the standalone node in the way.
const STANDALONE_ADDS: usize = 30;

/// `n` pods started as kubelet would on a standalone node: each one's manifest (no address
/// yet) is written a second before its ADD, and rewritten with its address after. Each ADD
/// is paired with one through bridge alone on the same node (its own network), in
/// alternating order.
fn standalone_adds(node: &Node, n: usize) -> Result<(Samples, Samples)> {
    let dir = node.manifests();
    // The same network (so the same address pool) without podwall.
    let bare = node.write_conflist("bare", &node.conflist_json("1.0.0", None));
    let (mut podwall, mut bridge) = (Samples::default(), Samples::default());
    for i in 0..n {
        let name = format!("new{i}");
        let file = format!("{name}.yaml");
        dir.write(&file, &PodManifest::new("bench", &name).yaml());
        std::thread::sleep(Duration::from_secs(1));
        let pod = Pod::named(&format!("prop-{name}"), "bench", &name);
        let plain = Pod::new(&format!("prop-bare{i}"));
        let mut run = |with_podwall: bool| -> Result<()> {
            let started = Instant::now();
            if with_podwall {
                node.add(&pod)
                    .map_err(|e| anyhow::anyhow!("ADD {}: {e}", pod.container_id))?;
                podwall.push(started.elapsed());
            } else {
                node.libcni("add", &bare, &plain)
                    .map_err(|e| anyhow::anyhow!("ADD {} (bridge): {e}", plain.container_id))?;
                bridge.push(started.elapsed());
            }
            Ok(())
        };
        run(i % 2 == 0)?;
        run(i % 2 == 1)?;
        let yaml = PodManifest::new("bench", &name)
            .remote(node.name(), &[pod.ip4()])
            .yaml();
        dir.write(&file, &yaml);
    }
    Ok((podwall, bridge))
}

/// One probe: does a TCP connection to `target` open within `ATTEMPT`?
fn connects(target: SocketAddr) -> bool {
    TcpStream::connect_timeout(&target, ATTEMPT).is_ok()
}

/// Probe every `CADENCE` until the verdict is `allow`; the time since `t0`. The peer
/// benchmark's change prober too.
pub fn wait_for(target: SocketAddr, allow: bool, t0: Instant) -> Result<Duration> {
    loop {
        let attempt = Instant::now();
        if connects(target) == allow {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > GIVE_UP {
            bail!("the verdict did not change within {GIVE_UP:?}");
        }
        if let Some(rest) = CADENCE.checked_sub(attempt.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}

/// Wait for the starting verdict (the world's first program).
fn settle(target: SocketAddr, allow: bool) -> Result<()> {
    wait_for(target, allow, Instant::now())
        .map(|_| ())
        .with_context(|| format!("{target} never became allowed={allow}"))
}
