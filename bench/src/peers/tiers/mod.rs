//! The tier comparison (`bench-peers --cluster-policies N`): podwall in a world of the peer
//! benchmark with N ClusterNetworkPolicies (`guardrails`), side by side with podwall in the
//! same world without them. Two nodes, each with its own test API server holding the world,
//! the ClusterNetworkPolicy CRD and the `quarantine` and `monitoring` fixture; only one also
//! holds the policies. Every section of the peer benchmark that measures podwall runs on
//! both, interleaved (A B, B A, …) round by round: pod start, change → enforced, restart,
//! per packet, and the idle footprint. Before measuring, the evaluator must give every
//! verdict the sections probe alike on both sides, or the run stops: the figures compare
//! the cost of the policies, not different verdicts.
//!
//! Like the rest of the benchmark it returns figures and asserts nothing about them.

mod figure;
mod report;
mod sections;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use podwall_tests::cluster::snapshot_of;
use podwall_tests::cni::Pod;
use podwall_tests::manifests::cluster_policy_crd;
use podwall_tests::nft;

use super::guardrails::{self, Agreement};
use super::packet::podwall_client;
use super::podwall::PodwallNode;
use super::world::Spec;
use super::Options;
use crate::dataplane::Machine;
use crate::stats::order;
pub use figure::{Figure, SIDES};
pub use sections::{Changes, Footprint, PodStart, Row};

/// How long the daemon may take to report the cluster policies it was given.
const LOADED: Duration = Duration::from_secs(30);

/// What one world measured on both sides.
#[derive(Debug, Clone)]
pub struct WorldReport {
    pub spec: Spec,
    /// The evaluator's verdicts for what the sections probe, without and with the policies.
    pub verdicts: Vec<Agreement>,
    /// The size of each side's table, and of the target's ingress path in it.
    pub tables: [Table; SIDES],
    pub podstart: PodStart,
    pub changes: Changes,
    /// The first sync and the restarts.
    pub cost: Vec<Row>,
    /// Client → target.
    pub packet: Vec<Row>,
}

/// The whole comparison.
#[derive(Debug, Clone)]
pub struct Report {
    pub machine: Machine,
    pub cluster_policies: usize,
    pub rounds: usize,
    pub worlds: Vec<WorldReport>,
    pub footprint: Footprint,
    pub took: Duration,
}

/// What a side's `inet podwall` table holds.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub chains: usize,
    pub rules: usize,
    pub sets: usize,
    pub elements: usize,
    /// The chains a new IPv4 connection to the target may walk (its dispatch entry's chain
    /// and those it goes to), with their rules.
    pub target_path: Vec<(String, usize)>,
}

/// One world on two podwall nodes: side 0 without the cluster policies, side 1 with them.
pub struct Twins {
    pub spec: Spec,
    pub sides: [PodwallNode; SIDES],
    /// Each side's `probe/client` pod, which the target admits (the per-packet path).
    pub clients: [Pod; SIDES],
}

impl Twins {
    /// Build both nodes of `spec`'s world, the one of side 1 with `n` cluster policies, in
    /// the order `first` says (each daemon's first sync is timed alone).
    pub fn build(spec: Spec, n: usize, first: usize) -> Result<Twins> {
        let label = spec.label().replace('/', "-").to_lowercase();
        let mut docs = vec![cluster_policy_crd()];
        docs.extend(spec.cluster_docs());
        docs.extend(guardrails::fixture());
        let mut guarded = docs.clone();
        guarded.extend(guardrails::policies(&spec, n));
        let start = |side: usize| {
            let (tag, docs) = [("tw", &docs), ("tg", &guarded)][side];
            PodwallNode::start(&spec, &format!("{tag}-{label}"), tag, docs)
                .with_context(|| format!("building side {side} of {label}"))
        };
        let mut started = [None, None];
        for side in order(SIDES, first) {
            started[side] = Some(start(side)?);
        }
        let [Some(without), Some(with)] = started else {
            unreachable!("both sides were started")
        };
        // Attaching the pods is not measured: both nodes at once.
        std::thread::scope(|s| {
            let attached = s.spawn(|| without.attach_pods());
            with.attach_pods();
            if let Err(panic) = attached.join() {
                std::panic::resume_unwind(panic);
            }
        });
        let sides = [without, with];
        for (side, want) in [(0, 0), (1, n)] {
            expect_cluster_policies(&sides[side], want)?;
        }
        let clients = [
            podwall_client(&sides[0], "tcw")?,
            podwall_client(&sides[1], "tcg")?,
        ];
        Ok(Twins {
            spec,
            sides,
            clients,
        })
    }

    /// The evaluator's verdicts for what the sections probe, over what each side's API
    /// server holds; an error when they differ or are not what the sections expect.
    pub fn verdicts(&self) -> Result<Vec<Agreement>> {
        let agreed = guardrails::compare(
            &snapshot_of(&self.sides[0].cluster.api),
            &snapshot_of(&self.sides[1].cluster.api),
        )?;
        let differ: Vec<String> = (agreed.iter())
            .filter(|a| !a.holds())
            .map(|a| format!("{a:?}"))
            .collect();
        if !differ.is_empty() {
            bail!(
                "the cluster policies change verdicts the benchmark probes, so the figures would not compare: {}",
                differ.join("; ")
            );
        }
        Ok(agreed)
    }

    /// Each side's table, read from the kernel.
    pub fn tables(&self) -> Result<[Table; SIDES]> {
        let table = |side: usize| -> Result<Table> {
            let pw = &self.sides[side];
            let ruleset = nft::read_table(&pw.node().netns)?.context("no inet podwall table")?;
            Ok(Table {
                chains: ruleset.chains.len(),
                rules: ruleset.rules.values().map(Vec::len).sum(),
                sets: ruleset.sets.len(),
                elements: ruleset.sets.values().map(Vec::len).sum(),
                target_path: target_path(&ruleset, pw),
            })
        };
        Ok([table(0)?, table(1)?])
    }
}

/// The chains from the target's IPv4 ingress dispatch entry on, following each chain's
/// `goto` and `jump` to another pod chain.
fn target_path(ruleset: &nft::Ruleset, pw: &PodwallNode) -> Vec<(String, usize)> {
    let mut path: Vec<(String, usize)> = Vec::new();
    let mut next = ruleset
        .target("ingress4", pw.pods[0].ip4())
        .map(str::to_string);
    while let Some(chain) = next.take() {
        if path.iter().any(|(c, _)| *c == chain) || !nft::is_pod_chain(&chain) {
            break;
        }
        let rules = ruleset.chain_rules(&chain);
        next = rules.iter().find_map(|rule| {
            let expr: serde_json::Value = serde_json::from_str(rule).ok()?;
            expr.as_array()?.iter().find_map(|e| {
                let to = e.get("goto").or_else(|| e.get("jump"))?;
                to["target"].as_str().map(str::to_string)
            })
        });
        path.push((chain, rules.len()));
    }
    path
}

/// Wait until `pw`'s daemon says it holds `n` cluster policies.
fn expect_cluster_policies(pw: &PodwallNode, n: usize) -> Result<()> {
    let started = Instant::now();
    loop {
        let held = pw.node().metrics().get("podwall_cluster_policies");
        if held == Some(n as f64) {
            return Ok(());
        }
        if started.elapsed() > LOADED {
            bail!(
                "podwalld reports {held:?} cluster policies, not {n}:\n{}",
                pw.node().daemon_log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Build every world on two nodes and measure both; then the footprint worlds.
pub fn run(options: &Options) -> Result<Report> {
    let n = options
        .cluster_policies
        .context("the tier comparison needs a number of cluster policies")?;
    let started = Instant::now();
    let say = |what: &str| {
        eprintln!(
            "bench-peers [{:>4.0} s]: {what}",
            started.elapsed().as_secs_f64()
        )
    };
    let mut worlds = Vec::new();
    for (i, &spec) in options.worlds.iter().enumerate() {
        let label = spec.label();
        say(&format!(
            "world {label}: building, with and without {n} cluster policies"
        ));
        let mut twins = Twins::build(spec, n, i).with_context(|| format!("building {label}"))?;
        let verdicts = twins.verdicts()?;
        let tables = twins
            .tables()
            .with_context(|| format!("reading {label}'s tables"))?;
        say(&format!("world {label}: pod start"));
        let podstart = sections::podstart(&twins, options.rounds, options.sequential_starts)
            .with_context(|| format!("pod start in {label}"))?;
        say(&format!("world {label}: change -> enforced"));
        let changes = sections::changes(&twins, options.change_rounds)
            .with_context(|| format!("changes in {label}"))?;
        say(&format!("world {label}: restart"));
        let cost = sections::cost(&mut twins, options.rounds)
            .with_context(|| format!("restart in {label}"))?;
        expect_cluster_policies(&twins.sides[1], n).context("after the restarts")?;
        say(&format!("world {label}: per packet"));
        let (stream, burst) = options
            .packet
            .map_or((Duration::from_secs(1), Duration::from_secs(1)), |p| {
                (p.1, p.2)
            });
        let packet = sections::packet(&twins, options.rounds, stream, burst)
            .with_context(|| format!("per packet in {label}"))?;
        worlds.push(WorldReport {
            spec,
            verdicts,
            tables,
            podstart,
            changes,
            cost,
            packet,
        });
    }
    say("footprint");
    let (sizes, settle, idle) = &options.footprint;
    let footprint =
        sections::footprint(n, sizes, *settle, *idle, options.rounds).context("footprint")?;
    Ok(Report {
        machine: Machine::probe(),
        cluster_policies: n,
        rounds: options.rounds,
        worlds,
        footprint,
        took: started.elapsed(),
    })
}
