//! Programming cost of a full sync, side by side on one world:
//! - podwall: `podwalld` stopped (SIGTERM) and started with its state (attachments and the
//!   stored cluster), until it serves ADDs (it compiled the stored state and kept the table
//!   the stopped daemon handed over), and until healthy (it read the table back, listed the
//!   API server and applied what changed). CPU and peak memory are the daemon's own, up to
//!   that point. And after a crash (SIGKILL: no handover), until it serves: the stored state
//!   compiled and swapped in whole.
//! - kube-router shape, cold: its chains and sets removed, then a full resync (what a
//!   restarted kube-router does).
//! - kube-router shape, warm: a full resync over what is loaded (what each of its periodic
//!   and event-driven syncs does).

use std::time::Duration;

use anyhow::Result;

use super::pair::{Pair, Stop};
use crate::kuberouter;
use crate::stats::{order, Samples};

#[derive(Debug, Clone, Default)]
pub struct Side {
    pub wall: Samples,
    pub cpu: Samples,
    pub peak_rss_kib: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Row {
    /// podwalld's restart until its socket serves ADDs (the stored state enforced).
    pub serving: Samples,
    /// The same after a crash.
    pub crash_serving: Samples,
    pub podwall: Side,
    pub cold: Side,
    pub warm: Side,
}

pub fn measure(pair: &mut Pair, rounds: usize) -> Result<Row> {
    let mut row = Row::default();
    for round in 0..rounds {
        for i in order(2, round) {
            if i == 0 {
                let (crashed, _, _) = pair.pw.restart(Stop::Crash)?;
                row.crash_serving.push(crashed);
                let (serving, took, usage) = pair.pw.restart(Stop::Clean)?;
                row.serving.push(serving);
                row.podwall.wall.push(took);
                row.podwall.cpu.push(usage.cpu);
                row.podwall.peak_rss_kib = row.podwall.peak_rss_kib.max(usage.peak_rss_kib);
            } else {
                kuberouter::clear(&pair.kr.netns)?;
                let cold = pair.resync()?;
                record(
                    &mut row.cold,
                    cold.wall(),
                    cold.cpu(),
                    cold.apply.max_rss_kib,
                );
                let warm = pair.resync()?;
                record(
                    &mut row.warm,
                    warm.wall(),
                    warm.cpu(),
                    warm.apply.max_rss_kib,
                );
            }
        }
    }
    Ok(row)
}

fn record(side: &mut Side, wall: Duration, cpu: Duration, rss: u64) {
    side.wall.push(wall);
    side.cpu.push(cpu);
    side.peak_rss_kib = side.peak_rss_kib.max(rss);
}
