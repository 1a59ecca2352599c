//! The peer benchmark's podwall sections, run on both sides of a [`Twins`] world in
//! rotating order round by round, each value kept with its round and side ([`Figure`]).
//! They call the sections' own parts, so that what is measured is what the peer benchmark
//! measures.

use std::time::Duration;

use anyhow::{Context, Result};
use podwall_tests::manifests::cluster_policy_crd;
use podwall_tests::netns::TestNetns;
use podwall_tests::probe::EchoServer;

use super::figure::{Figure, SIDES};
use super::report::SIDE_NAMES;
use super::Twins;
use crate::peers::change::{cycles, Kind, Podwall};
use crate::peers::footprint;
use crate::peers::guardrails;
use crate::peers::packet::{connections, iperf};
use crate::peers::pair::Stop;
use crate::peers::podstart::{
    daemon_phases, new_group_pods, new_pods, parallel, replicas, timed, PARALLEL, PHASES,
};
use crate::peers::world::{Spec, L, TARGET_PORT};
use crate::stats::order;

/// One printed row: a figure, and whether its tail (p99) means something.
#[derive(Debug, Clone)]
pub struct Row {
    pub label: String,
    pub figure: Figure,
    pub tail: bool,
}

impl Row {
    fn new(label: impl Into<String>, tail: bool) -> Row {
        Row {
            label: label.into(),
            figure: Figure::default(),
            tail,
        }
    }
}

/// Pod start, ms: ADD and DEL of new replicas of the world's workloads and of pods that
/// each start a policy group, one after another and [`PARALLEL`] at once.
#[derive(Debug, Clone, Default)]
pub struct PodStart {
    pub rows: Vec<Row>,
    /// Per kind of pod and side: the daemon's mean time per sequential ADD in each of
    /// `PHASES`, ms.
    pub phases: Vec<(&'static str, [[f64; PHASES.len()]; SIDES])>,
}

/// The kinds of pod started, and what is timed of each.
const STARTS: [&str; 2] = ["replica", "new group"];
const OPS: [&str; 4] = ["ADD", "DEL", "ADD ×8", "DEL ×8"];

pub fn podstart(twins: &Twins, rounds: usize, sequential: usize) -> Result<PodStart> {
    let slots = sequential.max(PARALLEL);
    let mut names = Vec::new();
    for pw in &twins.sides {
        let groups = new_group_pods(pw, &twins.spec, rounds, slots)?;
        names.push((replicas(pw, &twins.spec, slots)?, groups));
    }
    let mut rows: Vec<Row> = (STARTS.iter())
        .flat_map(|s| {
            OPS.iter()
                .map(move |op| Row::new(format!("{s}: {op}"), true))
        })
        .collect();
    let mut phases = [[[0.0; PHASES.len()]; SIDES]; STARTS.len()];
    for round in 0..rounds {
        for side in order(SIDES, round) {
            let node = twins.sides[side].node();
            let conflist = node.conflist();
            let (replicas, groups) = &names[side];
            for (k, names) in [replicas, &groups[round]].into_iter().enumerate() {
                let row = |op: usize| k * OPS.len() + op;
                let pods = new_pods(&names[..sequential], round, &format!("{k}{side}s"));
                let before = daemon_phases(node);
                for pod in &pods {
                    rows[row(0)]
                        .figure
                        .push_ms(round, side, timed(node, "add", conflist, pod)?);
                }
                let after = daemon_phases(node);
                for (total, (a, b)) in phases[k][side].iter_mut().zip(after.iter().zip(before)) {
                    *total += a - b;
                }
                for pod in &pods {
                    rows[row(1)]
                        .figure
                        .push_ms(round, side, timed(node, "del", conflist, pod)?);
                }
                let pods = new_pods(&names[..PARALLEL], round, &format!("{k}{side}p"));
                let (adds, dels) = parallel(node, conflist, &pods)?;
                for (op, times) in [(2, adds), (3, dels)] {
                    for d in times {
                        rows[row(op)].figure.push_ms(round, side, d);
                    }
                }
            }
        }
    }
    let adds = (rounds * sequential).max(1) as f64;
    let phases = (STARTS.iter().zip(phases))
        .map(|(kind, sides)| (*kind, sides.map(|p| p.map(|seconds| seconds * 1e3 / adds))))
        .collect();
    Ok(PodStart { rows, phases })
}

/// Change → enforced, ms, per kind of change and over all of them; podwalld's CPU per
/// change, ms, per kind and side; its largest resident set over the changes, MiB.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub rows: Vec<Row>,
    pub cpu: Vec<[f64; SIDES]>,
    pub rss_mib: [f64; SIDES],
}

pub fn changes(twins: &Twins, rounds: usize) -> Result<Changes> {
    let _servers: Vec<EchoServer> = (twins.sides.iter())
        .map(|pw| EchoServer::start(&pw.pods[0].netns, TARGET_PORT))
        .collect();
    let mut podwalls = [
        Podwall::new(&twins.sides[0])?,
        Podwall::new(&twins.sides[1])?,
    ];
    let mut rows: Vec<Row> = (Kind::ALL.iter())
        .map(|k| Row::new(k.name(), true))
        .chain([Row::new("all", true)])
        .collect();
    let all = Kind::ALL.len();
    for round in 0..rounds {
        let seen = podwalls.each_ref().map(|p| {
            let lengths: Vec<usize> = p.sides.iter().map(|s| s.latency.len()).collect();
            lengths
        });
        for cycle in cycles() {
            for side in order(SIDES, round) {
                for step in &cycle {
                    podwalls[side].step(&twins.sides[side], step)?;
                }
            }
        }
        for (side, podwall) in podwalls.iter().enumerate() {
            for (k, s) in podwall.sides.iter().enumerate() {
                for d in &s.latency.0[seen[side][k]..] {
                    rows[k].figure.push_ms(round, side, *d);
                    rows[all].figure.push_ms(round, side, *d);
                }
            }
        }
    }
    let [a, b] = podwalls;
    let done = [a.finish(&twins.sides[0])?, b.finish(&twins.sides[1])?];
    let cpu = (0..all)
        .map(|k| {
            [0, 1].map(|side| {
                let s = &done[side][k];
                s.cpu.as_secs_f64() * 1e3 / s.latency.len().max(1) as f64
            })
        })
        .collect();
    let rss_mib = [0, 1].map(|side| {
        let kib = done[side].iter().map(|s| s.rss_kib).max().unwrap_or(0);
        kib as f64 / 1024.0
    });
    Ok(Changes { rows, cpu, rss_mib })
}

/// Restart cost: the first sync, then restarts after a clean stop (→ serving ADDs, →
/// healthy, CPU ms and peak RSS MiB up to healthy) and after a crash (→ serving).
pub fn cost(twins: &mut Twins, rounds: usize) -> Result<Vec<Row>> {
    let mut rows = [
        "first sync → healthy, ms",
        "restart → serving, ms",
        "restart → healthy, ms",
        "restart CPU, ms",
        "restart peak RSS, MiB",
        "after a crash → serving, ms",
    ]
    .map(|label| Row::new(label, true));
    for side in 0..SIDES {
        rows[0]
            .figure
            .push_ms(0, side, twins.sides[side].first_sync);
    }
    for round in 0..rounds {
        for side in order(SIDES, round) {
            let pw = &mut twins.sides[side];
            let (crashed, _, _) = pw.restart(Stop::Crash)?;
            let (serving, healthy, usage) = pw.restart(Stop::Clean)?;
            rows[1].figure.push_ms(round, side, serving);
            rows[2].figure.push_ms(round, side, healthy);
            rows[3].figure.push_ms(round, side, usage.cpu);
            rows[4]
                .figure
                .push(round, side, usage.peak_rss_kib as f64 / 1024.0);
            rows[5].figure.push_ms(round, side, crashed);
        }
    }
    Ok(rows.into())
}

/// Per packet, client → target: one stream's Gbit/s and the new connections a second per
/// round, and every connect's latency, µs.
pub fn packet(twins: &Twins, rounds: usize, stream: Duration, burst: Duration) -> Result<Vec<Row>> {
    let mut rows = [
        Row::new("stream, Gbit/s", false),
        Row::new("new connections a second", false),
        Row::new("connect, µs", true),
    ];
    for round in 0..rounds {
        for side in order(SIDES, round) {
            let client = &twins.clients[side].netns;
            let target = &twins.sides[side].pods[0];
            let (server, addr) = (&target.netns, target.ip4());
            rows[0]
                .figure
                .push(round, side, iperf(client, server, addr, stream)?);
            let (rate, latencies) =
                connections(client, server, addr, burst).with_context(|| failed_on(twins, side))?;
            rows[1].figure.push(round, side, rate);
            for d in latencies {
                rows[2].figure.push(round, side, d.as_secs_f64() * 1e6);
            }
        }
    }
    Ok(rows.into())
}

/// Which side a per-packet probe failed on, with the last drops its daemon logged: whether
/// a podwall chain dropped the connection, and by which policy.
fn failed_on(twins: &Twins, side: usize) -> String {
    let node = twins.sides[side].node();
    let log = std::fs::read_to_string(node.drop_log_path()).unwrap_or_default();
    let last: Vec<&str> = log.lines().rev().take(3).collect();
    let drops = match last.is_empty() {
        true => "none".to_string(),
        false => last.join("\n"),
    };
    let target = &twins.sides[side].pods[0].netns;
    format!(
        "{} the cluster policies; the target's listen queue: {}; the node's conntrack: {}; its last logged drops: {drops}",
        SIDE_NAMES[side],
        counters(target, "netstat", &["ListenOverflows", "ListenDrops"]),
        counters(&node.netns, "stat/nf_conntrack", &["drop", "early_drop", "insert_failed", "invalid"]),
    )
}

/// The named counters of `/proc/net/<file>` in `netns`, summed over its rows (netstat's
/// groups, or conntrack's CPUs, in hex): whether the kernel lost a SYN that no podwall chain
/// dropped.
fn counters(netns: &TestNetns, file: &str, names: &[&str]) -> String {
    let path = format!("/proc/thread-self/net/{file}");
    let Ok(text) = netns.run_in(|| std::fs::read_to_string(&path)) else {
        return format!("{path} unreadable");
    };
    let sums = sum_counters(&text, file.starts_with("stat/"), names);
    (names.iter().zip(sums))
        .map(|(name, sum)| format!("{name} {sum}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `names`' values in `text`, summed over its rows.
fn sum_counters(text: &str, hex: bool, names: &[&str]) -> Vec<u64> {
    // netstat: per group, a line of names and a line of values, each after the group's
    // name; stat/*: the names once, then a line of values per CPU, in hex.
    let number = |field: &str| match hex {
        true => u64::from_str_radix(field, 16).ok(),
        false => field.parse::<u64>().ok(),
    };
    let mut sums = vec![0u64; names.len()];
    let mut header: Vec<&str> = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().skip(usize::from(!hex)).collect();
        if fields.iter().any(|field| number(field).is_none()) {
            header = fields;
            continue;
        }
        for (name, sum) in names.iter().zip(&mut sums) {
            let at = header.iter().position(|h| h == name);
            *sum += at
                .and_then(|at| fields.get(at))
                .and_then(|v| number(v))
                .unwrap_or(0);
        }
    }
    sums
}

/// The idle footprint per cluster size: start to healthy, RSS and peak RSS after the idle
/// window, idle CPU as a share of a core.
pub type Footprint = Vec<(usize, Vec<Row>)>;

/// Footprint worlds (world L's policies and a few attached pods, as the peer benchmark's)
/// of each size, without and with the `n` cluster policies, `rounds` times each.
pub fn footprint(
    n: usize,
    sizes: &[usize],
    settle: Duration,
    idle: Duration,
    rounds: usize,
) -> Result<Footprint> {
    let mut out = Vec::new();
    for (i, &pods) in sizes.iter().enumerate() {
        let mut extra = vec![cluster_policy_crd()];
        extra.extend(guardrails::fixture());
        let mut guarded = extra.clone();
        guarded.extend(guardrails::policies(&Spec::new(L, pods), n));
        let mut rows = [
            Row::new("start → healthy, s", false),
            Row::new("RSS, MiB", false),
            Row::new("peak RSS, MiB", false),
            Row::new("idle CPU, % of a core", false),
        ];
        for round in 0..rounds {
            for side in order(SIDES, round + i) {
                let docs = [&extra, &guarded][side];
                let row = footprint::one(pods, settle, idle, None, docs)?;
                rows[0].figure.push(round, side, row.sync.as_secs_f64());
                rows[1]
                    .figure
                    .push(round, side, row.rss_kib as f64 / 1024.0);
                rows[2]
                    .figure
                    .push(round, side, row.peak_rss_kib as f64 / 1024.0);
                rows[3].figure.push(round, side, row.idle_cpu * 100.0);
            }
        }
        out.push((pods, rows.into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::sum_counters;

    #[test]
    fn counters_are_read_by_name_and_summed_over_rows() {
        let netstat = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 3 4\n\
                       IpExt: InNoRoutes ListenDrops\nIpExt: 9 9\n";
        assert_eq!(
            sum_counters(netstat, false, &["ListenOverflows", "ListenDrops"]),
            [3, 13]
        );
        let conntrack =
            "entries  drop early_drop\n0000000a 00000001 00000000\n00000002 0000000f 00000000\n";
        assert_eq!(
            sum_counters(conntrack, true, &["drop", "early_drop"]),
            [16, 0]
        );
    }
}
