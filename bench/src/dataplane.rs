//! The dataplane benchmark (issue 4): what an attach and a peer's label change cost in the
//! kernel, through the netlink hot path and through `nft -f`, side by side, with 0, 1k and
//! 10k remote peer pods and 1k policies in the table; and what a full rebuild costs.
//!
//! A benchmark, not a test: [`run`] returns figures and asserts nothing about them. The
//! `bench-dataplane` binary prints them; `bench/tests/integration/bench_smoke.rs` runs a tiny
//! world to check that the benchmark itself still works. Needs root: every world is loaded into a
//! throw-away network namespace of its own.
//!
//! Three ways to make the same change. The first two are measured interleaved, in rotating
//! order within each round, so that noise on a shared machine falls on both alike; the third
//! runs after them, on its own (its memory churn slowed whatever ran next):
//! - `netlink`: the daemon's hot path with the daemon's own parts: `Compiler::apply`, the
//!   `dataplane::transaction_for`, then `Kernel::apply_elements`
//!   (one netfilter netlink batch);
//! - `nft -f`: the same compiler step and the same element ops, committed by
//!   `NftKernel::apply_elements_with_nft` (one `nft -f` script);
//! - `core`: `podwalld::core::Core` itself, as a socket request or a source update reaches
//!   it (attach/detach requests, `set_cluster` for a relabel), with a sled store in a
//!   temporary directory: everything the daemon does except the socket.
//!
//! Each figure is split into userspace (everything before the kernel call) and kernel
//! (the commit), so that readers see where the time goes.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use podwall::wire::{Attachment, AttachmentId, PodRef, Reply, Request};
use podwall_policy::model::ContainerPort;
use podwall_policy::selector::Labels;
use podwall_policy::{
    Compiler, Event, Namespace, Pod, PodKey, Protocol, Ruleset, RulesetDelta, Snapshot,
};
use podwall_tests::netns::TestNetns;
use podwalld::core::Core;
use podwalld::dataplane::names::{GUARD_CHAIN, GUARD_PORTS, GUARD_SOURCES4, GUARD_SOURCES6};
use podwalld::dataplane::nft::NftKernel;
use podwalld::dataplane::render::render;
use podwalld::dataplane::{
    transaction_for, Desired, ElementOp, Fingerprint, Guard, Kernel, Transaction,
};
use podwalld::health::Health;
use podwalld::metrics::Metrics;
use podwalld::store::Store;

use crate::synthetic;

/// The node whose table is built.
pub const NODE: &str = "n1";

/// What to build and how often to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Remote peer pods per world, one world each.
    pub peer_counts: Vec<usize>,
    pub namespaces: usize,
    /// Policies per namespace (at least 10: the shapes repeat every 5, selectors every 10).
    pub policies_per_namespace: usize,
    /// Pods on the measured node.
    pub local_pods: usize,
    /// Measured rounds per world (one untimed warm-up round comes first).
    pub rounds: usize,
    /// Full rebuilds (whole-table swaps) timed per world.
    pub rebuilds: usize,
}

impl Options {
    /// The sizes: 1k policies (100 namespaces × 10), 110 pods on the node, and
    /// 0, 1k, 10k remote peers.
    pub fn full() -> Self {
        Options {
            peer_counts: vec![0, 1_000, 10_000],
            namespaces: 100,
            policies_per_namespace: 10,
            local_pods: 110,
            rounds: 30,
            rebuilds: 8,
        }
    }

    /// A tiny world, two rounds: checks that the benchmark runs, measures nothing.
    pub fn smoke() -> Self {
        Options {
            peer_counts: vec![0, 40],
            namespaces: 4,
            policies_per_namespace: 10,
            local_pods: 12,
            rounds: 2,
            rebuilds: 1,
        }
    }
}

/// The operations measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    /// A new local pod joins an existing policy group (its chains exist already).
    Attach,
    /// The same pod leaves again.
    Detach,
    /// A remote peer's labels change so that it moves between peer sets (both directions
    /// of the flip, pooled).
    Relabel,
}

impl Operation {
    pub const ALL: [Operation; 3] = [Operation::Attach, Operation::Detach, Operation::Relabel];

    fn name(self) -> &'static str {
        match self {
            Operation::Attach => "attach",
            Operation::Detach => "detach",
            Operation::Relabel => "relabel",
        }
    }
}

/// The ways into the kernel compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Path {
    /// A: the hot path, element ops over netfilter netlink.
    Netlink,
    /// B: the same element ops as an `nft -f` script.
    NftScript,
    /// The daemon's `Core`, end to end (netlink underneath).
    Core,
}

impl Path {
    pub const ALL: [Path; 3] = [Path::Netlink, Path::NftScript, Path::Core];

    fn name(self) -> &'static str {
        match self {
            Path::Netlink => "netlink",
            Path::NftScript => "nft -f",
            Path::Core => "core",
        }
    }
}

/// One timed change: userspace part, kernel part, and how many element ops it carried.
#[derive(Debug, Clone, Copy)]
struct Sample {
    user: Duration,
    kernel: Duration,
    ops: usize,
}

/// Percentiles of a set of durations.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub p50: Duration,
    pub p99: Duration,
    pub mean: Duration,
}

impl Stats {
    /// Nearest-rank percentiles: with 30 samples, p99 is the slowest one.
    fn of(samples: &[Duration]) -> Stats {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let rank = |p: f64| {
            let n = sorted.len();
            let i = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
            sorted[i]
        };
        let total: Duration = sorted.iter().sum();
        Stats {
            p50: rank(0.50),
            p99: rank(0.99),
            mean: total / sorted.len() as u32,
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub peers: usize,
    pub operation: Operation,
    pub path: Path,
    pub samples: usize,
    /// Element ops per change (the median; the same for every path).
    pub ops: usize,
    /// Userspace + kernel.
    pub total: Stats,
    pub user_p50: Duration,
    pub kernel_p50: Duration,
}

/// What one world looked like and what swapping it in whole cost.
#[derive(Debug, Clone)]
pub struct WorldReport {
    pub peers: usize,
    pub pods: usize,
    pub policies: usize,
    pub chains: usize,
    pub sets: usize,
    /// Set elements (ranges for interval sets) plus dispatch map entries.
    pub elements: usize,
    pub script_bytes: usize,
    /// `Compiler::new` over the whole snapshot.
    pub compile: Duration,
    /// `render_ruleset`: the script text.
    pub render: Duration,
    /// `NftKernel::replace` into an empty namespace.
    pub first_load: Duration,
    /// `NftKernel::replace` over the loaded table (a start without a handover, a repair, a
    /// refused change's fallback): one netlink batch.
    pub rebuild: Stats,
    /// The same swap through `nft -f` (`NftKernel::replace_with_nft`), the path before.
    pub rebuild_nft: Stats,
}

/// The machine the figures come from.
#[derive(Debug, Clone)]
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub kernel: String,
    pub nft: String,
}

/// `machine: N cpus (model), kernel K, nft V`: the line every report opens with.
impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Machine {
            nproc,
            cpu,
            kernel,
            nft,
        } = self;
        write!(f, "machine: {nproc} cpus ({cpu}), kernel {kernel}, {nft}")
    }
}

impl Machine {
    pub fn probe() -> Machine {
        let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let nft = std::process::Command::new("nft")
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        Machine {
            nproc,
            cpu,
            kernel,
            nft,
        }
    }
}

/// Everything a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub machine: Machine,
    pub rounds: usize,
    pub worlds: Vec<WorldReport>,
    pub rows: Vec<Row>,
}

impl Report {
    /// The row for one (world, operation, path).
    pub fn row(&self, peers: usize, operation: Operation, path: Path) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.peers == peers && r.operation == operation && r.path == path)
    }
}

/// Build every world, load it into its own namespace, and measure.
pub fn run(options: &Options) -> Result<Report> {
    if options.namespaces < 2 || options.policies_per_namespace < 10 {
        bail!("the world needs at least 2 namespaces and 10 policies per namespace");
    }
    let machine = Machine::probe();
    let mut worlds = Vec::new();
    let mut rows = Vec::new();
    for &peers in &options.peer_counts {
        let netns = TestNetns::new(&format!("bench-{peers}"));
        let (world, world_rows) = netns
            .run_in(|| measure_world(options, peers))
            .with_context(|| format!("world with {peers} peers"))?;
        worlds.push(world);
        rows.extend(world_rows);
    }
    Ok(Report {
        machine,
        rounds: options.rounds,
        worlds,
        rows,
    })
}

// ---- the world ----

fn labels(pairs: &[(&str, String)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn ns_name(ns: usize) -> String {
    format!("ns{ns}")
}

fn http_port(n: usize) -> Vec<ContainerPort> {
    vec![ContainerPort {
        name: Some("http".into()),
        port: 8000 + (n % 5) as u16,
        protocol: Protocol::Tcp,
    }]
}

fn pod(namespace: String, name: String, ip: Ipv4Addr, app: usize, tier: usize) -> Pod {
    let mut pod = Pod::new(
        PodKey::new(namespace, name),
        labels(&[("app", format!("app{app}")), ("tier", format!("t{tier}"))]),
        vec![IpAddr::V4(ip)],
    );
    pod.ports = http_port(app);
    pod
}

/// Local pod `i`: namespace `i % namespaces`, apps 0..9 (the ones policies select).
fn local_pod(options: &Options, i: usize) -> Pod {
    let ip = Ipv4Addr::new(10, 244, (i / 250) as u8, (i % 250 + 2) as u8);
    let mut pod = pod(
        ns_name(i % options.namespaces),
        format!("local{i}"),
        ip,
        i % 10,
        i % 3,
    );
    pod.node = Some(NODE.into());
    pod
}

/// Remote peer `k`, on one of 50 other nodes.
fn peer_pod(options: &Options, k: usize) -> Pod {
    let ip = Ipv4Addr::new(
        10,
        64 + (k / 65536) as u8,
        (k / 256 % 256) as u8,
        (k % 256) as u8,
    );
    let mut pod = pod(
        ns_name(k % options.namespaces),
        format!("peer{k}"),
        ip,
        k % 20,
        k % 3,
    );
    pod.node = Some(format!("n{}", 2 + k % 50).into());
    pod
}

/// The pod attached and detached: the twin of `local0` (same namespace, same labels), so
/// it joins `local0`'s chains and needs elements only.
fn new_pod(options: &Options) -> Pod {
    let mut pod = local_pod(options, 0);
    pod.key = PodKey::new(ns_name(0), "new");
    pod.ips = vec![IpAddr::V4(Ipv4Addr::new(10, 244, 255, 2))];
    pod
}

/// The remote pod relabelled, present in every world (so "0 peers" has this one): in ns1,
/// flipping between `app1, tier t1` and `app6, tier t0`. Policies 0 and 5 of ns1 admit
/// app1 and app6 respectively, and policies 3 and 8 of every namespace reach tier t1: each
/// flip leaves two peer sets and joins one, or the other way round.
fn mover(moved: bool) -> Pod {
    let (app, tier) = if moved { (6, 0) } else { (1, 1) };
    let mut pod = pod(
        ns_name(1),
        "mover".into(),
        Ipv4Addr::new(10, 63, 255, 1),
        app,
        tier,
    );
    pod.ports = http_port(1);
    pod.node = Some("n2".into());
    pod
}

/// The cluster: namespaces, policies, local pods, `peers` remote pods and the mover. The
/// new pod is not in it yet.
fn world(options: &Options, peers: usize) -> Snapshot {
    let mut snap = Snapshot::default();
    for ns in 0..options.namespaces {
        snap.upsert_namespace(Namespace::new(
            ns_name(ns),
            labels(&[("team", format!("team{}", ns % 10))]),
        ));
        for j in 0..options.policies_per_namespace {
            snap.upsert_policy(synthetic::policy(ns, j, 10));
        }
    }
    for i in 0..options.local_pods {
        snap.upsert_pod(local_pod(options, i));
    }
    for k in 0..peers {
        snap.upsert_pod(peer_pod(options, k));
    }
    snap.upsert_pod(mover(false));
    snap
}

fn attachment_of(pod: &Pod) -> Attachment {
    Attachment {
        id: AttachmentId {
            container_id: format!("bench-{}-{}", pod.key.namespace, pod.key.name),
            ifname: "eth0".into(),
        },
        pod: PodRef {
            namespace: pod.key.namespace.to_string(),
            name: pod.key.name.to_string(),
            uid: None,
        },
        netns: format!("/run/netns/bench-{}", pod.key.name),
        ips: pod.ips.clone(),
        host_interface: Some(host_interface(pod)),
    }
}

/// The host side of a pod's veth, as `bridge` would report it: `vb` and 8 hex digits.
fn host_interface(pod: &Pod) -> String {
    let key = format!("{}/{}", pod.key.namespace, pod.key.name);
    let hash = podwall_policy::ruleset::names::stable_hash(key.as_bytes());
    format!("vb{:08x}", hash as u32)
}

/// The anti-spoofing guard `Core` keeps for these local pods.
fn guard_of<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Guard {
    let mut guard = Guard::default();
    for pod in pods {
        guard
            .sources
            .entry(host_interface(pod))
            .or_default()
            .extend(pod.ips.iter().copied());
    }
    guard
}

// ---- the two element paths, driven like Core drives them ----

/// The compiler and what the kernel holds, kept as `Core` keeps them, minus the store and
/// the snapshot bookkeeping.
struct HotPath {
    compiler: Compiler,
    applied: Desired,
}

impl HotPath {
    /// Apply one event; return the element ops for the kernel (userspace only).
    fn plan(&mut self, event: Event) -> Result<(Vec<ElementOp>, RulesetDelta, Guard)> {
        let mut guard = self.applied.guard.clone();
        match &event {
            Event::Pod(pod) if pod.node.as_deref() == Some(NODE) => {
                guard = guard_of([pod]);
                guard.sources.extend(self.applied.guard.sources.clone());
            }
            Event::PodDeleted(key) => {
                if let Some(pod) = self.compiler.snapshot().pods.get(key) {
                    guard.sources.remove(&host_interface(pod));
                }
            }
            _ => {}
        }
        let delta = self.compiler.apply(event);
        match transaction_for(&self.applied, &delta, &guard) {
            Transaction::Elements(ops) => Ok((ops, delta, guard)),
            Transaction::None => Ok((Vec::new(), delta, guard)),
            Transaction::Structure(_) | Transaction::Replace => {
                bail!("the change is structural: not an element-only change")
            }
        }
    }

    /// Plan, commit through `path`, keep the result; time both parts.
    fn change(&mut self, kernel: &mut NftKernel, path: Path, event: Event) -> Result<Sample> {
        let started = Instant::now();
        let (ops, delta, guard) = self.plan(event)?;
        let user = started.elapsed();
        let started = Instant::now();
        match path {
            Path::Netlink => kernel.apply_elements(&ops),
            Path::NftScript => kernel.apply_elements_with_nft(&ops),
            Path::Core => unreachable!("core has its own driver"),
        }
        .with_context(|| {
            format!(
                "committing {} element ops through {}",
                ops.len(),
                path.name()
            )
        })?;
        let kernel_time = started.elapsed();
        self.applied.ruleset.apply(&delta);
        self.applied.guard = guard;
        Ok(Sample {
            user,
            kernel: kernel_time,
            ops: ops.len(),
        })
    }
}

// ---- Core, with its kernel calls timed ----

/// A kernel that adds the time spent in each call to a shared clock, and counts the ops.
struct TimedKernel {
    inner: NftKernel,
    spent: Arc<Mutex<(Duration, usize)>>,
}

impl TimedKernel {
    fn time<T>(&mut self, ops: usize, f: impl FnOnce(&mut NftKernel) -> T) -> T {
        let started = Instant::now();
        let out = f(&mut self.inner);
        let mut spent = self.spent.lock().expect("the clock is never poisoned");
        spent.0 += started.elapsed();
        spent.1 += ops;
        out
    }
}

impl Kernel for TimedKernel {
    fn replace(&mut self, desired: &Desired) -> Result<(), podwalld::dataplane::DataplaneError> {
        self.time(0, |k| k.replace(desired))
    }

    fn apply_elements(
        &mut self,
        ops: &[ElementOp],
    ) -> Result<(), podwalld::dataplane::DataplaneError> {
        self.time(ops.len(), |k| k.apply_elements(ops))
    }

    fn apply_structure(
        &mut self,
        structure: &podwalld::dataplane::Structure,
    ) -> Result<(), podwalld::dataplane::DataplaneError> {
        let ops = structure.elements.len() + structure.chains.len();
        self.time(ops, |k| k.apply_structure(structure))
    }

    fn dump(&mut self) -> Result<Option<Fingerprint>, podwalld::dataplane::DataplaneError> {
        self.time(0, |k| k.dump())
    }

    fn exact(
        &mut self,
    ) -> Result<Option<podwalld::dataplane::Exact>, podwalld::dataplane::DataplaneError> {
        self.time(0, |k| k.exact())
    }

    fn forget_flows_of(
        &mut self,
        ips: &[std::net::IpAddr],
    ) -> Result<usize, podwalld::dataplane::DataplaneError> {
        self.inner.forget_flows_of(ips)
    }

    fn tables_id(
        &mut self,
    ) -> Result<Option<podwalld::dataplane::TablesId>, podwalld::dataplane::DataplaneError> {
        self.inner.tables_id()
    }

    fn host_ports(
        &mut self,
        ips: &std::collections::BTreeSet<IpAddr>,
    ) -> Result<BTreeMap<IpAddr, String>, podwalld::dataplane::DataplaneError> {
        self.inner.host_ports(ips)
    }
}

struct CoreDriver {
    core: Core,
    spent: Arc<Mutex<(Duration, usize)>>,
    // Dropped after the core, which holds the store open.
    _dir: tempfile::TempDir,
}

impl CoreDriver {
    fn start(cluster: Snapshot, locals: &[Pod]) -> Result<Self> {
        let dir = tempfile::tempdir().context("creating a directory for the store")?;
        let store = Store::open(dir.path())?;
        for pod in locals {
            store.put_attachment(&attachment_of(pod))?;
        }
        let spent = Arc::new(Mutex::new((Duration::ZERO, 0)));
        let kernel = TimedKernel {
            inner: NftKernel::default(),
            spent: spent.clone(),
        };
        let core = Core::start(
            NODE.into(),
            cluster,
            store,
            Box::new(kernel),
            Default::default(),
            Arc::new(Metrics::default()),
            Arc::new(Health::default()),
        )?;
        Ok(CoreDriver {
            core,
            spent,
            _dir: dir,
        })
    }

    fn timed(&mut self, f: impl FnOnce(&mut Core) -> Result<()>) -> Result<Sample> {
        *self.spent.lock().expect("the clock is never poisoned") = (Duration::ZERO, 0);
        let started = Instant::now();
        f(&mut self.core)?;
        let total = started.elapsed();
        let (kernel, ops) = *self.spent.lock().expect("the clock is never poisoned");
        Ok(Sample {
            user: total.saturating_sub(kernel),
            kernel,
            ops,
        })
    }

    fn request(&mut self, request: Request) -> Result<Sample> {
        self.timed(|core| match core.handle(request) {
            Ok(Reply::Attached { .. } | Reply::Detached { existed: true }) => Ok(()),
            Ok(other) => bail!("core answered {other:?}"),
            Err(e) => bail!("core refused: {e:?}"),
        })
    }

    fn set_cluster(&mut self, cluster: Snapshot) -> Result<Sample> {
        self.timed(|core| {
            core.set_cluster(cluster)
                .map_err(|e| anyhow::anyhow!("core refused the update: {e:?}"))
        })
    }
}

// ---- one world ----

fn ruleset_size(rs: &Ruleset) -> (usize, usize, usize) {
    let elements =
        rs.sets.values().map(|s| s.len()).sum::<usize>() + rs.ingress.len() + rs.egress.len();
    (rs.chains.len(), rs.sets.len(), elements)
}

fn measure_world(options: &Options, peers: usize) -> Result<(WorldReport, Vec<Row>)> {
    let cluster = world(options, peers);
    let locals: Vec<Pod> = (0..options.local_pods)
        .map(|i| local_pod(options, i))
        .collect();
    let fresh = new_pod(options);

    // Full build: compile, render, load into the empty namespace, then swap it again.
    let started = Instant::now();
    let compiler = Compiler::new(cluster.clone(), NODE);
    let compile = started.elapsed();
    let applied = Desired {
        ruleset: compiler.ruleset().clone(),
        guard: guard_of(&locals),
        logging: None,
    };
    let started = Instant::now();
    let script = render(&applied);
    let render = started.elapsed();
    let mut kernel = NftKernel::default();
    let started = Instant::now();
    kernel.replace(&applied).context("loading the table")?;
    let first_load = started.elapsed();
    // The swap over netlink and through `nft -f`, side by side in rotating order.
    let (mut rebuilds, mut rebuilds_nft) = (Vec::new(), Vec::new());
    for round in 0..options.rebuilds.max(1) {
        for netlink in [round % 2 == 0, round % 2 == 1] {
            let started = Instant::now();
            if netlink {
                kernel.replace(&applied).context("swapping the table")?;
                rebuilds.push(started.elapsed());
            } else {
                (kernel.replace_with_nft(&applied)).context("swapping the table with nft")?;
                rebuilds_nft.push(started.elapsed());
            }
        }
    }
    let (chains, sets, elements) = ruleset_size(&applied.ruleset);
    let report = WorldReport {
        peers,
        pods: cluster.pods.len(),
        policies: cluster.policies.len(),
        chains,
        sets,
        elements,
        script_bytes: script.len(),
        compile,
        render,
        first_load,
        rebuild: Stats::of(&rebuilds),
        rebuild_nft: Stats::of(&rebuilds_nft),
    };

    // The daemon's core over the same state: the new pod is known to the source (scheduled
    // here, labelled) but not attached, so it is not in the table yet.
    let mut core_cluster = cluster.clone();
    let mut scheduled = fresh.clone();
    scheduled.ips.clear();
    core_cluster.upsert_pod(scheduled);
    let mut moved_cluster = core_cluster.clone();
    moved_cluster.upsert_pod(mover(true));
    let mut core = CoreDriver::start(core_cluster.clone(), &locals)?;

    let mut hot = HotPath { compiler, applied };
    check_table(&mut kernel, &hot.applied, "before the rounds")?;

    let fresh_attachment = attachment_of(&fresh);
    let mut samples: BTreeMap<(Operation, Path), Vec<Sample>> = BTreeMap::new();
    // A and B interleaved, then core on its own: core clones the whole cluster snapshot
    // several times per change, and run in between it made the next netlink commit pay
    // ~15 ms of CPU in this thread that was not the commit's (see docs/benchmarks.md).
    for phase in [&[Path::Netlink, Path::NftScript][..], &[Path::Core][..]] {
        for round in 0..=options.rounds {
            let warm_up = round == 0;
            let mut order = phase.to_vec();
            order.rotate_left(round % phase.len());
            let mut taken: Vec<(Operation, Path, Sample)> = Vec::new();
            for &path in &order {
                let (attach, detach) = match path {
                    Path::Core => (
                        core.request(Request::Attach {
                            attachment: fresh_attachment.clone(),
                        })?,
                        core.request(Request::Detach {
                            id: fresh_attachment.id.clone(),
                        })?,
                    ),
                    _ => (
                        hot.change(&mut kernel, path, Event::Pod(fresh.clone()))?,
                        hot.change(&mut kernel, path, Event::PodDeleted(fresh.key.clone()))?,
                    ),
                };
                taken.push((Operation::Attach, path, attach));
                taken.push((Operation::Detach, path, detach));
            }
            for &path in &order {
                for moved in [true, false] {
                    let sample = match path {
                        Path::Core => core.set_cluster(if moved {
                            moved_cluster.clone()
                        } else {
                            core_cluster.clone()
                        })?,
                        _ => hot.change(&mut kernel, path, Event::Pod(mover(moved)))?,
                    };
                    taken.push((Operation::Relabel, path, sample));
                }
            }
            if !warm_up {
                for (operation, path, sample) in taken {
                    samples.entry((operation, path)).or_default().push(sample);
                }
            }
        }
    }
    check_table(&mut kernel, &hot.applied, "after the rounds")?;

    let mut rows = Vec::new();
    for ((operation, path), samples) in samples {
        let totals: Vec<Duration> = samples.iter().map(|s| s.user + s.kernel).collect();
        let users: Vec<Duration> = samples.iter().map(|s| s.user).collect();
        let kernels: Vec<Duration> = samples.iter().map(|s| s.kernel).collect();
        let mut ops: Vec<usize> = samples.iter().map(|s| s.ops).collect();
        ops.sort_unstable();
        rows.push(Row {
            peers,
            operation,
            path,
            samples: samples.len(),
            ops: ops[ops.len() / 2],
            total: Stats::of(&totals),
            user_p50: Stats::of(&users).p50,
            kernel_p50: Stats::of(&kernels).p50,
        });
    }
    Ok((report, rows))
}

/// The kernel's table must read back as the ruleset we think it holds: every attach was
/// undone, every relabel flipped back.
fn check_table(kernel: &mut NftKernel, applied: &Desired, when: &str) -> Result<()> {
    let actual = kernel
        .dump()
        .context("reading the table back")?
        .context("the table is missing")?;
    // Only the policy table is compared: `NftKernel::dump` does not read the bridge (guard)
    // table back yet, so its objects always look missing.
    let guard = [GUARD_PORTS, GUARD_SOURCES4, GUARD_SOURCES6, GUARD_CHAIN];
    let drift: Vec<String> = actual
        .differences(&Fingerprint::of(applied))
        .into_iter()
        .filter(|d| !guard.iter().any(|name| d.contains(&format!(" {name} "))))
        .collect();
    if !drift.is_empty() {
        bail!("the table drifted {when}: {drift:?}");
    }
    Ok(())
}

// ---- printing ----

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.3}")
    } else {
        format!("{ms:.1}")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.machine)?;
        writeln!(
            f,
            "rounds: {} per world after one warm-up round; netlink and nft -f interleaved in rotating order, core after them\n",
            self.rounds
        )?;
        writeln!(
            f,
            "Full rebuild (both tables swapped in one transaction: one netlink batch, or one `nft -f` script; ratio = nft -f / netlink):\n"
        )?;
        writeln!(
            f,
            "| peers | pods | policies | chains | sets | elements | script | compile ms | render ms | first load ms | netlink p50 ms | netlink max ms | nft -f p50 ms | nft -f max ms | ratio |"
        )?;
        writeln!(
            f,
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )?;
        for w in &self.worlds {
            writeln!(
                f,
                "| {} | {} | {} | {} | {} | {} | {} KiB | {} | {} | {} | {} | {} | {} | {} | ×{:.2} |",
                w.peers,
                w.pods,
                w.policies,
                w.chains,
                w.sets,
                w.elements,
                w.script_bytes / 1024,
                ms(w.compile),
                ms(w.render),
                ms(w.first_load),
                ms(w.rebuild.p50),
                ms(w.rebuild.p99),
                ms(w.rebuild_nft.p50),
                ms(w.rebuild_nft.p99),
                w.rebuild_nft.p50.as_secs_f64() / w.rebuild.p50.as_secs_f64().max(1e-9),
            )?;
        }
        writeln!(
            f,
            "\nElement changes (times in ms; ratio = this path's p50 / netlink's p50):\n"
        )?;
        writeln!(
            f,
            "| peers | operation | path | ops | p50 | p99 | mean | userspace p50 | kernel p50 | ratio |"
        )?;
        writeln!(f, "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|")?;
        for r in &self.rows {
            let base = self.row(r.peers, r.operation, Path::Netlink);
            let ratio = base.map_or("-".to_string(), |b| {
                format!(
                    "×{:.1}",
                    r.total.p50.as_secs_f64() / b.total.p50.as_secs_f64().max(1e-9)
                )
            });
            writeln!(
                f,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.peers,
                r.operation.name(),
                r.path.name(),
                r.ops,
                ms(r.total.p50),
                ms(r.total.p99),
                ms(r.total.mean),
                ms(r.user_p50),
                ms(r.kernel_p50),
                ratio
            )?;
        }
        Ok(())
    }
}
