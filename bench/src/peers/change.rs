//! Change → enforced: how long after a change the prober sees the new verdict, on the
//! podwall node (the change is an API write; `podwalld` watches it) and on the
//! kube-router-shaped node (the change triggers a full resync of the world, started at
//! once: the baseline pays no watch latency, which favours it).
//!
//! The prober is a remote pod behind each node, connecting to the target pod every ~2 ms.
//! Every change is undone by the next, so each cycle leaves the world as it found it, and
//! the two nodes take their turns in alternating order.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use podwall_tests::probe::EchoServer;

use super::pair::{Op, Pair};
use super::podwall::PodwallNode;
use super::process;
use super::world::{allow_prober_policy, probe_namespace_yaml, prober_yaml, TARGET_PORT};
use crate::propagation::wait_for;
use crate::stats::{order, Samples};

/// What was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    PolicyAdd,
    PolicyDelete,
    PodLabel,
    NamespaceLabel,
    NewPeer,
    PeerGone,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::PolicyAdd,
        Kind::PolicyDelete,
        Kind::PodLabel,
        Kind::NamespaceLabel,
        Kind::NewPeer,
        Kind::PeerGone,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::PolicyAdd => "policy add",
            Kind::PolicyDelete => "policy delete",
            Kind::PodLabel => "pod label",
            Kind::NamespaceLabel => "namespace label",
            Kind::NewPeer => "new peer pod",
            Kind::PeerGone => "peer pod deleted",
        }
    }
}

/// One step of a cycle: a change, and the verdict it leads to (`None`: not timed, the
/// verdict stays).
pub(crate) struct Step {
    pub(crate) op: Op,
    pub(crate) timed: Option<(Kind, bool)>,
}

/// The cycles, each leaving the world as it began: the prober denied.
pub(crate) fn cycles() -> Vec<Vec<Step>> {
    let step = |op, kind, allow| Step {
        op,
        timed: Some((kind, allow)),
    };
    let quiet = |op| Step { op, timed: None };
    vec![
        vec![
            step(Op::Apply(allow_prober_policy()), Kind::PolicyAdd, true),
            step(Op::Delete(allow_prober_policy()), Kind::PolicyDelete, false),
        ],
        vec![
            step(Op::Apply(prober_yaml("client")), Kind::PodLabel, true),
            step(Op::Apply(prober_yaml("stranger")), Kind::PodLabel, false),
        ],
        vec![
            step(
                Op::Apply(probe_namespace_yaml(true)),
                Kind::NamespaceLabel,
                true,
            ),
            step(
                Op::Apply(probe_namespace_yaml(false)),
                Kind::NamespaceLabel,
                false,
            ),
        ],
        vec![
            quiet(Op::Delete(prober_yaml("stranger"))),
            step(Op::Apply(prober_yaml("client")), Kind::NewPeer, true),
            step(Op::Delete(prober_yaml("client")), Kind::PeerGone, false),
            quiet(Op::Apply(prober_yaml("stranger"))),
        ],
    ]
}

/// The samples and costs of one enforcer for one kind of change.
#[derive(Debug, Clone, Default)]
pub struct Side {
    pub latency: Samples,
    /// CPU spent on these changes: podwalld's, or the resyncs' (generator + restores).
    pub cpu: Duration,
    /// The largest resident set seen: podwalld's, or the restore commands'.
    pub rss_kib: u64,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub kind: Kind,
    pub podwall: Side,
    pub kuberouter: Side,
}

/// Run `rounds` rounds of every cycle on both nodes of `pair`.
pub fn measure(pair: &mut Pair, rounds: usize) -> Result<Vec<Row>> {
    let kr_target = SocketAddr::new(pair.kr_pods[0].ip4(), TARGET_PORT);
    let _servers = [
        EchoServer::start(&pair.pw.pods[0].netns, TARGET_PORT),
        EchoServer::start(&pair.kr_pods[0].netns, TARGET_PORT),
    ];
    let mut rows: Vec<Row> = Kind::ALL
        .iter()
        .map(|&kind| Row {
            kind,
            podwall: Side::default(),
            kuberouter: Side::default(),
        })
        .collect();
    let mut podwall = Podwall::new(&pair.pw)?;
    pair.kr_prober
        .netns
        .run_in(|| wait_for(kr_target, false, Instant::now()))
        .context("the kube-router node's target never denied the prober")?;
    for round in 0..rounds {
        for cycle in cycles() {
            for side in order(2, round) {
                for step in &cycle {
                    if side == 0 {
                        podwall.step(&pair.pw, step)?;
                    } else {
                        kuberouter_step(pair, kr_target, step, &mut rows)?;
                    }
                }
            }
        }
    }
    for (row, side) in rows.iter_mut().zip(podwall.finish(&pair.pw)?) {
        row.podwall = side;
    }
    Ok(rows)
}

/// One podwall node's changes: the samples of each kind (in [`Kind::ALL`] order), and the
/// last timed change, whose CPU is still being counted: podwalld's CPU from the change
/// until its next change, so that work done after the verdict counts too.
pub(crate) struct Podwall {
    target: SocketAddr,
    pub(crate) sides: Vec<Side>,
    open: Option<(Kind, process::Usage)>,
}

impl Podwall {
    /// Ready to change `pw`'s world once the prober is denied at the target (the caller
    /// keeps an [`EchoServer`] on the target).
    pub(crate) fn new(pw: &PodwallNode) -> Result<Podwall> {
        let target = SocketAddr::new(pw.pods[0].ip4(), TARGET_PORT);
        pw.prober
            .netns
            .run_in(|| wait_for(target, false, Instant::now()))
            .context("the podwall node's target never denied the prober")?;
        Ok(Podwall {
            target,
            sides: vec![Side::default(); Kind::ALL.len()],
            open: None,
        })
    }

    /// Make `step`'s change and, when it is timed, wait for the prober to see its verdict.
    pub(crate) fn step(&mut self, pw: &PodwallNode, step: &Step) -> Result<()> {
        let before = self.close(pw)?;
        let t0 = Instant::now();
        pw.apply(&step.op)?;
        let Some((kind, allow)) = step.timed else {
            // Let the daemon take the untimed change in before the next one is timed.
            std::thread::sleep(Duration::from_millis(50));
            return Ok(());
        };
        let target = self.target;
        let took = pw
            .prober
            .netns
            .run_in(|| wait_for(target, allow, t0))
            .with_context(|| format!("podwall: {} (want allowed={allow})", kind.name()))?;
        self.side(kind).latency.push(took);
        self.open = Some((kind, before));
        Ok(())
    }

    /// The samples, once the last change's trailing work is counted.
    pub(crate) fn finish(mut self, pw: &PodwallNode) -> Result<Vec<Side>> {
        std::thread::sleep(Duration::from_millis(200));
        self.close(pw)?;
        Ok(self.sides)
    }

    fn close(&mut self, pw: &PodwallNode) -> Result<process::Usage> {
        let now = pw.usage()?;
        if let Some((kind, before)) = self.open.take() {
            let side = self.side(kind);
            side.cpu += now.cpu.saturating_sub(before.cpu);
            side.rss_kib = side.rss_kib.max(now.rss_kib);
        }
        Ok(now)
    }

    fn side(&mut self, kind: Kind) -> &mut Side {
        let i = Kind::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("every kind is in ALL");
        &mut self.sides[i]
    }
}

fn row(rows: &mut [Row], kind: Kind) -> &mut Row {
    rows.iter_mut()
        .find(|r| r.kind == kind)
        .expect("a row per kind")
}

fn kuberouter_step(
    pair: &mut Pair,
    target: SocketAddr,
    step: &Step,
    rows: &mut [Row],
) -> Result<()> {
    let t0 = Instant::now();
    pair.kr_apply(&step.op);
    let Some((kind, allow)) = step.timed else {
        // kube-router would resync for this change too; untimed, the snapshot is enough.
        return Ok(());
    };
    let resync = pair.resync()?;
    let took = pair
        .kr_prober
        .netns
        .run_in(|| wait_for(target, allow, t0))
        .with_context(|| format!("kube-router shape: {} (want allowed={allow})", kind.name()))?;
    let side = &mut row(rows, kind).kuberouter;
    side.latency.push(took);
    side.cpu += resync.cpu();
    side.rss_kib = side.rss_kib.max(resync.apply.max_rss_kib);
    Ok(())
}
