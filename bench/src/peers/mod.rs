//! The peer benchmark (issue 7): podwall against what users would run instead, side by
//! side on one machine in one run: pod start against `bridge` alone and Debian's `firewall`
//! plugin; isolation before the first packet, change → enforced, programming cost and the
//! per-packet path against the kube-router shape (`kuberouter`: iptables chains and ipsets
//! from the same policies, applied by a full resync); and the daemon's idle footprint.
//!
//! With [`Options::cluster_policies`], [`tiers`] compares podwall with and without
//! ClusterNetworkPolicies instead, with the same sections.
//!
//! Every comparison is interleaved (A B, B A, …) over its rounds, so drift on a shared
//! machine falls on both sides alike. A benchmark, not a test: [`run`] returns figures and
//! asserts nothing about them. The `bench-peers` binary prints them;
//! `bench/tests/integration/bench_peers_smoke.rs` runs the tiny world to check the benchmark
//! works.
//! Needs root: every node is a throw-away network namespace.

pub mod change;
pub mod cost;
pub mod footprint;
pub mod guardrails;
pub mod isolation;
pub mod packet;
pub mod pair;
pub mod podstart;
pub mod podwall;
pub mod process;
mod report;
pub mod tiers;
pub mod world;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::dataplane::Machine;
use pair::Pair;
use world::Spec;

/// What to build and how often to measure.
#[derive(Debug, Clone)]
pub struct Options {
    pub worlds: Vec<Spec>,
    /// Rounds of every interleaved comparison (pod start, isolation, programming cost, per
    /// packet).
    pub rounds: usize,
    /// The worlds pod start is measured in (the chains' cost hardly depends on the world,
    /// so the smallest and the largest).
    pub podstart: Vec<Spec>,
    /// Pods started one after another per chain and round (8 more start in parallel).
    pub sequential_starts: usize,
    /// Rounds of the change cycles: each gives one sample of every kind (two of labels).
    pub change_rounds: usize,
    /// The world the isolation benchmark runs in, its pod starts and probing window.
    pub isolation: Option<(Spec, usize, Duration)>,
    /// The world of the per-packet benchmark, its stream length and connection burst.
    pub packet: Option<(Spec, Duration, Duration)>,
    /// Cluster sizes of the footprint benchmark, its settle and idle windows.
    pub footprint: (Vec<usize>, Duration, Duration),
    /// Another daemon binary (an earlier build) the footprint benchmark measures too.
    pub footprint_baseline: Option<std::path::PathBuf>,
    /// Instead of the peers, compare podwall with and without this many
    /// ClusterNetworkPolicies ([`tiers`]): every section that measures podwall, in every
    /// world, and the footprint.
    pub cluster_policies: Option<usize>,
}

impl Options {
    /// The worlds and counts.
    pub fn full() -> Self {
        let worlds: Vec<Spec> = [world::S, world::M, world::L]
            .into_iter()
            .flat_map(|size| [Spec::new(size, 1_000), Spec::new(size, 10_000)])
            .collect();
        Options {
            worlds,
            rounds: 5,
            podstart: vec![Spec::new(world::S, 1_000), Spec::new(world::L, 10_000)],
            sequential_starts: 8,
            // 13 rounds: 104 timed changes per enforcer and world.
            change_rounds: 13,
            isolation: Some((
                Spec::new(world::M, 1_000),
                1_000,
                Duration::from_millis(100),
            )),
            packet: Some((
                Spec::new(world::L, 10_000),
                Duration::from_secs(1),
                Duration::from_secs(1),
            )),
            footprint: (
                vec![1_000, 10_000, 100_000],
                Duration::from_secs(3),
                Duration::from_secs(5),
            ),
            footprint_baseline: None,
            cluster_policies: None,
        }
    }

    /// The tier comparison with `n` cluster policies: worlds M/1k and L/10k, 8 rounds (an
    /// even number, so each side goes first as often), 24 of the change cycles, the
    /// footprint at 10k cluster pods; about 7 minutes on 2 cores.
    pub fn cluster_policies(n: usize) -> Self {
        Options {
            worlds: vec![Spec::new(world::M, 1_000), Spec::new(world::L, 10_000)],
            rounds: 8,
            podstart: Vec::new(),
            change_rounds: 24,
            isolation: None,
            footprint: (vec![10_000], Duration::from_secs(3), Duration::from_secs(5)),
            cluster_policies: Some(n),
            ..Options::full()
        }
    }

    /// A tiny world and one round of everything, to check that the benchmark works.
    pub fn smoke() -> Self {
        let tiny = Spec::new(world::TINY, 50);
        Options {
            worlds: vec![tiny],
            rounds: 1,
            podstart: vec![tiny],
            sequential_starts: 2,
            change_rounds: 1,
            isolation: Some((tiny, 16, Duration::from_millis(100))),
            packet: Some((tiny, Duration::from_secs(1), Duration::from_millis(200))),
            footprint: (
                vec![200],
                Duration::from_millis(500),
                Duration::from_secs(1),
            ),
            footprint_baseline: None,
            cluster_policies: None,
        }
    }
}

/// Everything one world measured.
/// Plugin runs and socket round trips timed alone per world.
const OUTSIDE_SAMPLES: usize = 40;

#[derive(Debug, Clone)]
pub struct WorldReport {
    pub spec: Spec,
    /// podwalld start to healthy with the world in the API server (before any pod).
    pub first_sync: Duration,
    pub podstart: Vec<podstart::Row>,
    /// The plugin's run and a socket round trip, alone, where pod start was measured.
    pub outside: Option<podstart::Outside>,
    pub changes: Vec<change::Row>,
    pub cost: cost::Row,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub machine: Machine,
    pub worlds: Vec<WorldReport>,
    pub isolation: Option<(Spec, isolation::Leaks, isolation::Leaks)>,
    pub packet: Option<(Spec, Vec<(packet::Path, packet::Row)>)>,
    pub footprint: Vec<footprint::Row>,
    pub took: Duration,
}

/// Build every world and measure it; then the footprint worlds.
pub fn run(options: &Options) -> Result<Report> {
    let started = Instant::now();
    let say = |what: &str| {
        eprintln!(
            "bench-peers [{:>4.0} s]: {what}",
            started.elapsed().as_secs_f64()
        )
    };
    // The bridge-only and firewall nodes serve only pod start.
    let baselines = (!options.podstart.is_empty()).then(podstart::Baselines::new);
    let mut report = Report {
        machine: Machine::probe(),
        worlds: Vec::new(),
        isolation: None,
        packet: None,
        footprint: Vec::new(),
        took: Duration::ZERO,
    };
    for &spec in &options.worlds {
        let label = spec.label();
        say(&format!("world {label}: building"));
        let mut pair = Pair::build(spec).with_context(|| format!("building world {label}"))?;
        let (mut podstart, mut outside) = (Vec::new(), None);
        if let (true, Some(baselines)) = (options.podstart.contains(&spec), &baselines) {
            say(&format!("world {label}: pod start"));
            podstart =
                podstart::measure(&pair, baselines, options.rounds, options.sequential_starts)
                    .with_context(|| format!("pod start in {label}"))?;
            outside = Some(
                podstart::outside(pair.pw.node(), OUTSIDE_SAMPLES)
                    .with_context(|| format!("plugin and socket in {label}"))?,
            );
        }
        say(&format!("world {label}: change -> enforced"));
        let changes = change::measure(&mut pair, options.change_rounds)
            .with_context(|| format!("changes in {label}"))?;
        say(&format!("world {label}: full sync"));
        let cost = cost::measure(&mut pair, options.rounds)
            .with_context(|| format!("full sync in {label}"))?;
        if let Some((iso, starts, window)) = options.isolation {
            if iso == spec {
                say(&format!("world {label}: isolation, {starts} pod starts"));
                let (pw, kr) = isolation::measure(&pair, starts, window, options.rounds)
                    .with_context(|| format!("isolation in {label}"))?;
                report.isolation = Some((spec, pw, kr));
            }
        }
        if let Some((world, stream, burst)) = options.packet {
            if world == spec {
                say(&format!("world {label}: per packet"));
                let rows = packet::measure(&mut pair, options.rounds, stream, burst)
                    .with_context(|| format!("per packet in {label}"))?;
                report.packet = Some((spec, rows));
            }
        }
        report.worlds.push(WorldReport {
            spec,
            first_sync: pair.pw.first_sync,
            podstart,
            outside,
            changes,
            cost,
        });
    }
    let (sizes, settle, idle) = &options.footprint;
    say("footprint");
    report.footprint =
        footprint::measure(sizes, *settle, *idle, options.footprint_baseline.as_deref())
            .context("footprint")?;
    report.took = started.elapsed();
    Ok(report)
}
