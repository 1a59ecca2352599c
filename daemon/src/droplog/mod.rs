//! The drop log: every packet a pod chain drops (and each new flow a logged policy allows)
//! as one JSON line naming both ends, the tier and the policies, on a dedicated output.
//!
//! The chains' log rules (`dataplane::Logging`) send the packets to nfnetlink_log, at most
//! `KERNEL_FACTOR` × the per-pod rate a second per chain; this thread reads them, names the
//! tier, policies and rule that decided (`decided`) and the pods by the table the kernel
//! holds and the cluster the daemon knows, keeps one line per flow and `rate` lines a second
//! per pod (`limit`), and writes.

mod decided;
pub mod limit;
pub mod line;
pub mod packet;

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::core::{lock, Core};
use crate::dataplane::nflog::{Logged, NflogSocket, Read};
use crate::dataplane::nft::NftKernel;
use crate::dataplane::render::LogPrefix;
use crate::dataplane::Logging;
use crate::metrics::{DropLogCounts, Metrics};
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
                Ok(Read::Packets(packets)) => name_all(&lock(&core), &packets, counts),
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
/// change removed since is left out). A prefix podwall does not write is counted and left
/// out. Runs under the core's lock, so a prefix is read against its chain once per batch: a
/// flood repeats a few prefixes, and finding a rule hashes the chain's rules.
fn name_all(core: &Core, packets: &[Logged], counts: &DropLogCounts) -> Vec<Judged> {
    let mut named: HashMap<&str, Option<Named>> = HashMap::new();
    let mut judged = Vec::new();
    for logged in packets {
        let Some(prefix) = LogPrefix::parse(&logged.prefix) else {
            counts.count_malformed();
            continue;
        };
        let decided = named
            .entry(logged.prefix.as_str())
            .or_insert_with(|| decide(core, &prefix));
        let (Some(decided), Some(flow)) = (decided, packet::flow(logged.family, &logged.packet))
        else {
            continue;
        };
        judged.push(Judged {
            allowed: decided.allowed,
            direction: decided.direction,
            tier: decided.tier,
            policies: decided.policies.clone(),
            rule: decided.rule.clone(),
            flow,
            src_pod: core.holder(&flow.src),
            dst_pod: core.holder(&flow.dst),
        });
    }
    judged
}

/// What a prefix says decided, as a line names it.
struct Named {
    allowed: bool,
    direction: podwall_policy::Direction,
    tier: podwall_policy::PolicyTier,
    policies: Vec<podwall_policy::PolicyKey>,
    rule: Option<String>,
}

/// The policies, tier and rule that decided a packet logged with `prefix`, by the chain of
/// that name in the table the kernel holds.
fn decide(core: &Core, prefix: &LogPrefix<'_>) -> Option<Named> {
    let chain = core.applied_chain(prefix.chain)?;
    let decided = decided::decided(prefix, chain)?;
    let rule = (decided.rule).and_then(|rule| {
        core.cluster_rule_name(decided.tier, &rule.policy, chain.direction, rule.index)
    });
    Some(Named {
        allowed: decided.allowed,
        direction: chain.direction,
        tier: decided.tier,
        policies: decided.policies,
        rule,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Options;
    use crate::dataplane::render::rule_prefix;
    use crate::dataplane::RecordingKernel;
    use podwall_policy::{PodKey, PolicyKey, PolicyTier, RuleVerdict};

    /// web (on n1) denied from other by the Admin policy `guard`'s rule `no-other`.
    const WORLD: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: app}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: app, labels: {role: web}}
spec: {nodeName: n1, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.1.0.7}]}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: app, labels: {role: other}}
spec: {nodeName: n2, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.1.0.9}]}
---
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: guard}
spec:
  tier: Admin
  priority: 1
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {role: web}}}}
  ingress:
  - {name: no-other, action: Deny, from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {role: other}}}}]}
";

    /// A TCP SYN's first bytes, 10.1.0.9:40960 → 10.1.0.7:7000.
    fn other_to_web() -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0];
        p.extend([10, 1, 0, 9, 10, 1, 0, 7, 0xa0, 0x00, 0x1b, 0x58]);
        p
    }

    #[test]
    fn a_logged_deny_names_its_tier_policy_and_rule_and_a_foreign_prefix_is_counted() {
        let loaded = podwall_policy::manifests::load([("world.yaml", WORLD)]);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        // Kernel object names are the same in every compile: the core's table has these.
        let compiled = podwall_policy::compile(&loaded.snapshot, "n1");
        let chain = compiled.ingress[&"10.1.0.7".parse().unwrap()].clone();
        let deny = (compiled.chains[&chain].rules.iter())
            .find(|r| r.verdict == RuleVerdict::Deny)
            .expect("the Deny rule");
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let core = Core::start(
            "n1".into(),
            loaded.snapshot.clone(),
            crate::store::Store::open(dir.path()).unwrap(),
            Box::new(RecordingKernel::default()),
            Options::default(),
            metrics.clone(),
            Arc::default(),
        )
        .unwrap();
        let logged = |prefix: String| Logged {
            prefix,
            family: 2,
            packet: other_to_web(),
        };
        let packets = [
            logged(rule_prefix(&chain, deny)),
            logged(format!("{chain} not-a-hash")),
            logged(String::new()),
        ];
        let judged = name_all(&core, &packets, &metrics.drop_log);
        assert_eq!(judged.len(), 1, "{judged:?}");
        let judged = &judged[0];
        assert_eq!(
            (
                judged.allowed,
                judged.tier,
                &judged.policies,
                judged.rule.as_deref()
            ),
            (
                false,
                PolicyTier::Admin,
                &vec![PolicyKey::new("", "guard")],
                Some("no-other")
            )
        );
        assert_eq!(judged.src_pod, Some(PodKey::new("app", "other")));
        assert!(
            metrics
                .render()
                .contains("podwall_drop_log_malformed_total 2\n"),
            "{}",
            metrics.render()
        );
    }
}
