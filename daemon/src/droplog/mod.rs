//! The drop log: every packet a pod chain drops (and each new flow a logged policy allows)
//! as one JSON line naming both ends and the policies, on a dedicated output.
//!
//! The chains' log rules (`dataplane::Logging`) send the packets to nfnetlink_log, at most
//! `KERNEL_FACTOR` × the per-pod rate a second per chain; this thread reads them, names the
//! chain's policies and the pods by the table the kernel holds and the cluster the daemon
//! knows, keeps one line per flow and `rate` lines a second per pod (`limit`), and writes.

pub mod limit;
pub mod line;
pub mod packet;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::core::{lock, Core};
use crate::dataplane::nflog::{Logged, NflogSocket, Read};
use crate::dataplane::nft::NftKernel;
use crate::dataplane::render::allow_log_prefix;
use crate::dataplane::Logging;
use crate::metrics::Metrics;
use limit::{Decision, Limiter};
use line::{Judged, Suppressed};

/// The kernel passes a chain this many times the per-pod rate: a bound on what a flood
/// costs, with room for many pods of one chain logging at once.
pub const KERNEL_FACTOR: u32 = 20;
/// How long a read waits: how late a suppression line and a shutdown can be.
const TICK: Duration = Duration::from_millis(250);

/// Where the lines go (`--drop-log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout,
    File(PathBuf),
    None,
}

/// The drop log's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub output: Output,
    /// Lines a second for any one pod (`--drop-log-rate`).
    pub rate: u32,
    /// The nfnetlink_log group (`--drop-log-group`).
    pub group: u16,
}

/// A bound drop log, ready to run once the core is.
pub struct DropLog {
    socket: NflogSocket,
    out: Box<dyn Write + Send>,
    settings: Settings,
}

impl DropLog {
    /// Bind the log group and open the output. `None` when the log is off; a group another
    /// process holds, a kernel without nfnetlink_log, or one that refuses the log rule, is
    /// logged and leaves it off: the chains then have no log rule, and enforcement is
    /// unchanged.
    pub fn open(settings: Settings) -> anyhow::Result<Option<Self>> {
        use anyhow::Context;
        let out: Box<dyn Write + Send> = match &settings.output {
            Output::None => return Ok(None),
            Output::Stdout => Box::new(std::io::stdout()),
            Output::File(path) => Box::new(std::io::BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening the drop log {}", path.display()))?,
            )),
        };
        let socket = match NflogSocket::bind(settings.group, TICK) {
            Ok(socket) => socket,
            Err(err) => {
                warn!(group = settings.group, error = %err, "cannot bind the drop log's nfnetlink_log group (another process holds it, or the kernel has no nfnetlink_log); running without the drop log");
                return Ok(None);
            }
        };
        let log = Self {
            socket,
            out,
            settings,
        };
        if let Err(err) = NftKernel::default().takes_log_rule(log.logging()) {
            warn!(error = %err, "the kernel refuses the drop log's rule (limit, log group); running without the drop log");
            return Ok(None);
        }
        Ok(Some(log))
    }

    /// The log rules the chains need for this log.
    pub fn logging(&self) -> Logging {
        Logging {
            group: self.settings.group,
            rate: self.settings.rate.saturating_mul(KERNEL_FACTOR),
        }
    }

    /// Read, name, limit and write until `shutdown`.
    pub fn run(
        mut self,
        core: Arc<Mutex<Core>>,
        node: String,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) {
        let mut limiter: Limiter<String, (bool, packet::Flow)> = Limiter::new(self.settings.rate);
        let counts = &metrics.drop_log;
        // A failing read or write is logged when it starts failing, not at every turn.
        let (mut reads_fail, mut writes_fail) = (false, false);
        while !shutdown.is_cancelled() {
            let read = self.socket.read();
            if let (Err(err), false) = (&read, reads_fail) {
                warn!(error = %err, "cannot read the drop log's socket; retrying");
            }
            reads_fail = read.is_err();
            let judged = match read {
                Ok(Read::Packets(packets)) => name_all(&lock(&core), &packets),
                Ok(Read::Idle) => Vec::new(),
                Ok(Read::Overrun) => {
                    counts.count_overrun();
                    Vec::new()
                }
                Err(_) => {
                    std::thread::sleep(TICK);
                    Vec::new()
                }
            };
            let now = Instant::now();
            let time = k8s_openapi::jiff::Timestamp::now().to_string();
            let mut text = String::new();
            for judged in &judged {
                let pod = judged.judged_pod();
                match limiter.admit(&pod, (judged.allowed, judged.flow), now) {
                    Decision::Write => {
                        let line = line::line(judged, &time, &node);
                        push_line(&mut text, &line);
                        counts.count_line(judged.allowed);
                    }
                    Decision::Repeat => {}
                    Decision::Suppressed => counts.count_suppressed(),
                }
            }
            for (pod, suppressed) in limiter.due(now) {
                let line = Suppressed {
                    time: &time,
                    node: &node,
                    pod: &pod,
                    suppressed,
                };
                push_line(&mut text, &line);
            }
            if !text.is_empty() {
                let written = self.out.write_all(text.as_bytes());
                let written = written.and_then(|()| self.out.flush());
                if let (Err(err), false) = (&written, writes_fail) {
                    warn!(error = %err, "cannot write the drop log; its lines are lost until it can");
                }
                writes_fail = written.is_err();
            }
        }
    }
}

fn push_line(text: &mut String, line: &impl serde::Serialize) {
    if let Ok(json) = serde_json::to_string(line) {
        text.push_str(&json);
        text.push('\n');
    }
}

/// Each logged packet the table the kernel holds can name (a packet logged by a chain a
/// change removed since is left out).
fn name_all(core: &Core, packets: &[Logged]) -> Vec<Judged> {
    packets.iter().filter_map(|p| name(core, p)).collect()
}

/// A packet logged with prefix `chain` was dropped at the end of that chain; one logged with
/// `allow_log_prefix(chain, rule)` was allowed by that rule.
fn name(core: &Core, logged: &Logged) -> Option<Judged> {
    let flow = packet::flow(logged.family, &logged.packet)?;
    let (chain_name, rule) = match logged.prefix.split_once(' ') {
        Some((chain, _)) => (chain, Some(logged.prefix.as_str())),
        None => (logged.prefix.as_str(), None),
    };
    let chain = core.applied_chain(chain_name)?;
    let policies = match rule {
        None => chain.policies.clone(),
        Some(prefix) => {
            let rule = (chain.rules.iter()).find(|r| allow_log_prefix(chain_name, r) == prefix)?;
            vec![rule.policy.clone()]
        }
    };
    Some(Judged {
        allowed: rule.is_some(),
        direction: chain.direction,
        policies,
        flow,
        src_pod: core.holder(&flow.src),
        dst_pod: core.holder(&flow.dst),
    })
}
