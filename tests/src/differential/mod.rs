//! The differential test (issue "Never silently diverge"): random cluster histories
//! driven into a real standalone `podwalld`, with the kernel's table read back after every
//! step and held to the policy evaluator.
//!
//! A seed gives one history ([`gen`]). The driver writes its manifests into the node's
//! `--manifests` directory, attaches and detaches local pods through the real
//! bridge + podwall CNI chain, and stops and starts the daemon. After each step it samples
//! packets ([`check`]), interprets `nft -j list table inet podwall` for each ([`kernel`]) and
//! compares with `podwall_policy::evaluate` on the same world, polling until the two agree
//! and `/healthz` says 200, or a deadline passes. The step fails when the verdicts still
//! differ (a silent divergence if `/healthz` says 200 all the same), or when `/healthz` is
//! not 200 although they agree. Nothing is sent: remote pods hold documentation addresses
//! or addresses of the node's own subnet, and only tables are read.
//!
//! Needs root (network namespaces). [`run_seed`] is one history; the integration test runs
//! a few fixed seeds, the `podwall-differential` binary ([`run`]) as many as time allows.

pub mod check;
pub mod gen;
pub mod kernel;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use podwall_policy::manifests::load;
use podwall_policy::{PodKey, Snapshot};

use crate::cni::{self, Pod};
use crate::manifests::ManifestDir;
use crate::metrics::Metrics;
use crate::node::{Node, NodeOptions};
use crate::reach::pod_key;
use crate::wait::eventually;
use gen::{Context, Features, Generator, Rng, Step};
use kernel::Table;

/// How long a step gets to show in the kernel (and `/healthz` to say 200).
const SETTLE: Duration = Duration::from_secs(6);
/// … after the daemon starts, or after a manifest of thousands of objects.
const SETTLE_LONG: Duration = Duration::from_secs(30);
/// A manifest this large counts as thousands of objects.
const LARGE_MANIFEST: usize = 100_000;
/// How long to wait for the daemon to pick a manifest change up before checking (it polls
/// its directory every 250 ms); only a hint, the check itself waits for agreement.
const PICKUP: Duration = Duration::from_secs(2);
/// The metric that counts the daemon's source updates and reconciles.
const SYNCS: &str = "podwall_syncs_total";
/// Lines of the daemon's log a failure shows (warnings and errors only).
const LOG_LINES: usize = 25;
/// How much of a note, a history line, a log line or `/healthz`'s body a failure shows
/// (nft's errors quote whole rules).
const NOTE_BYTES: usize = 300;
/// Disagreeing packets a failure lists.
const SHOWN_MISMATCHES: usize = 12;

/// A seed's history that went wrong: enough to replay it and to see why.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    /// The step (from 1) after which the check failed; 0 when setting the node up failed.
    pub step: usize,
    pub features: Features,
    /// What went wrong, one line.
    pub headline: String,
    /// The step as carried out, with its manifest.
    pub what: String,
    /// The disagreeing packets, or other details.
    pub details: Vec<String>,
    /// One line per step before it.
    pub history: Vec<String>,
    /// The daemon's last warnings and errors.
    pub log: Vec<String>,
}

impl Failure {
    /// The command that replays this history up to the failing step.
    pub fn replay(&self) -> String {
        let mut cmd = format!(
            "podwall-differential --seeds {} --steps {}",
            self.seed,
            self.step.max(1)
        );
        let off = self.features.off();
        if !off.is_empty() {
            cmd.push_str(&format!(" --without {}", off.join(",")));
        }
        cmd
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} step {}: {}",
            self.seed, self.step, self.headline
        )?;
        writeln!(f, "  step {}: {}", self.step, self.what)?;
        for line in &self.details {
            writeln!(f, "  {line}")?;
        }
        if !self.history.is_empty() {
            writeln!(f, "  history:")?;
            for (i, line) in self.history.iter().enumerate() {
                writeln!(f, "    {:>3}. {line}", i + 1)?;
            }
        }
        if !self.log.is_empty() {
            writeln!(f, "  podwalld's last warnings and errors:")?;
            for line in &self.log {
                writeln!(f, "    {line}")?;
            }
        }
        writeln!(f, "  replay: {}", self.replay())
    }
}

/// What one passing history did.
#[derive(Debug, Clone, Copy)]
pub struct Passed {
    pub steps: usize,
    pub packets: usize,
    /// Of which this node must drop.
    pub denied: usize,
}

/// Run `steps` steps of `seed`'s history on a fresh node; `verbose` prints each step on
/// stderr as it passes. A panic of the rig (a daemon that does not stop, a CNI call that
/// hangs) is a failure too.
pub fn run_seed(
    seed: u64,
    steps: usize,
    features: Features,
    verbose: bool,
) -> Result<Passed, Box<Failure>> {
    let failure = |headline: String| {
        Box::new(Failure {
            seed,
            step: 0,
            features,
            headline,
            what: String::new(),
            details: Vec::new(),
            history: Vec::new(),
            log: Vec::new(),
        })
    };
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        let mut run = Run::new(seed, features, verbose);
        let result = run.steps(steps);
        result.map_err(|mut f| {
            f.log = run.log_tail();
            f
        })
    }));
    match outcome {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic without a message".to_string());
            Err(failure(format!("the rig panicked: {message}")))
        }
    }
}

/// One poll of a check: the disagreeing packets (or why the table could not be read) and
/// `/healthz` (status and body, or why it did not answer).
struct Observation {
    diff: Result<Vec<String>, String>,
    health: Result<(u16, String), String>,
}

/// The manifests directory parsed file by file, a file again only when its text changed,
/// so that a file of thousands of pods is parsed once rather than at every step. The union
/// is what `load` makes of the whole directory, since the generator never defines an
/// object twice.
#[derive(Default)]
struct Parsed {
    files: BTreeMap<String, (String, Snapshot)>,
}

impl Parsed {
    /// The cluster the directory describes; the fatal errors if a file cannot be read.
    fn load(&mut self, dir: &ManifestDir) -> Result<Snapshot, Vec<String>> {
        let files = dir.files().map_err(|e| vec![format!("{e:#}")])?;
        self.files
            .retain(|name, _| files.iter().any(|(n, _)| n == name));
        let mut cluster = Snapshot::default();
        for (name, text) in files {
            let fresh = !matches!(self.files.get(&name), Some((seen, _)) if *seen == text);
            if fresh {
                let loaded = load([(name.as_str(), text.as_str())]);
                if loaded.has_fatal_errors() {
                    return Err(loaded.errors.iter().map(ToString::to_string).collect());
                }
                self.files.insert(name.clone(), (text, loaded.snapshot));
            }
            let (_, snap) = &self.files[&name];
            cluster.namespaces.extend(snap.namespaces.clone());
            cluster.pods.extend(snap.pods.clone());
            cluster.policies.extend(snap.policies.clone());
        }
        Ok(cluster)
    }
}

/// A local pod the driver attached.
struct Attached {
    pod: Pod,
    key: PodKey,
    ips: Vec<IpAddr>,
}

/// One history in progress.
struct Run {
    seed: u64,
    features: Features,
    subnet4: Ipv4Addr,
    gen: Generator,
    attached: BTreeMap<usize, Attached>,
    /// Every address a local pod ever held: checked also after the pod is gone.
    seen: BTreeSet<IpAddr>,
    history: Vec<String>,
    parsed: Parsed,
    daemon_up: bool,
    verbose: bool,
    packets: usize,
    denied: usize,
    dir: ManifestDir,
    // Last: the pods' namespaces go before the node's.
    node: Node,
}

impl Run {
    fn new(seed: u64, features: Features, verbose: bool) -> Self {
        let options = NodeOptions {
            dual_stack: features.dual_stack(seed),
            ..NodeOptions::default()
        };
        let node = Node::standalone(&format!("diff{seed}"), options, &[]);
        let subnet4: Ipv4Addr = node
            .subnet4()
            .trim_end_matches("/24")
            .parse()
            .expect("the node's subnet is an IPv4 /24");
        let gen = Generator::new(
            seed,
            features,
            Context {
                node: node.name().to_string(),
                subnet4,
            },
        );
        Run {
            seed,
            features,
            subnet4,
            gen,
            attached: BTreeMap::new(),
            seen: BTreeSet::new(),
            history: Vec::new(),
            parsed: Parsed::default(),
            daemon_up: true,
            verbose,
            packets: 0,
            denied: 0,
            dir: node.manifests(),
            node,
        }
    }

    fn steps(&mut self, steps: usize) -> Result<Passed, Box<Failure>> {
        for n in 1..=steps {
            let step = self.gen.next_step();
            let what = step.to_string();
            let fail = |run: &Run, headline: String, details: Vec<String>| {
                Box::new(Failure {
                    seed: run.seed,
                    step: n,
                    features: run.features,
                    headline,
                    what: what.clone(),
                    details,
                    history: run.history.clone(),
                    log: Vec::new(),
                })
            };
            let syncs = self.syncs();
            let notes = match self.apply(&step) {
                Ok(notes) => notes,
                Err(err) => return Err(fail(self, format!("{err:#}"), Vec::new())),
            };
            let mut summary = step.summary();
            if !notes.is_empty() {
                summary.push_str(&format!(" [{}]", notes.join("; ")));
            }
            if self.daemon_up {
                if step.is_manifest() {
                    self.wait_for_pickup(syncs);
                }
                let settle = match &step {
                    Step::Start => SETTLE_LONG,
                    step if step.written() > LARGE_MANIFEST => SETTLE_LONG,
                    _ => SETTLE,
                };
                if self.verbose {
                    eprintln!("seed {} step {n}: {summary}", self.seed);
                }
                if let Err(bad) = self.check(n, settle) {
                    let (headline, mut details) = *bad;
                    details.extend(notes.iter().map(|n| cut(&format!("note: {n}"), NOTE_BYTES)));
                    return Err(fail(self, headline, details));
                }
            }
            if self.verbose && !self.daemon_up {
                eprintln!("seed {} step {n}: {summary} (daemon down)", self.seed);
            }
            self.history.push(cut(&summary, NOTE_BYTES));
        }
        Ok(Passed {
            steps,
            packets: self.packets,
            denied: self.denied,
        })
    }

    /// Carry a step out; notes say what happened that the step does not (a failed ADD).
    fn apply(&mut self, step: &Step) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        match step {
            Step::Burst(steps) => {
                for step in steps {
                    notes.extend(self.apply(step)?);
                }
            }
            Step::Write { file, doc, .. } => self.dir.write(file, &doc.to_string()),
            Step::Remove { file, .. } => self.dir.remove(file),
            Step::Attach { slot, pod } => {
                let label = format!("d{}-{slot}", self.seed);
                let pod = match pod {
                    Some(key) => Pod::named(&label, &key.namespace, &key.name),
                    None => Pod::new(&label),
                };
                match self.node.add(&pod) {
                    Ok(result) => {
                        let ips = cni::result_ips(&result);
                        let key = pod_key(&pod);
                        self.seen.extend(ips.iter().copied());
                        notes.push(format!("{key} got {ips:?}"));
                        self.gen.attached(*slot, key.clone(), ips.clone());
                        self.attached.insert(*slot, Attached { pod, key, ips });
                    }
                    Err(failure) => {
                        // As a runtime does after a failed ADD: DEL, so the lease goes back.
                        let _ = self.node.del(&pod);
                        self.gen.attach_failed(*slot);
                        notes.push(format!(
                            "ADD failed: CNI error {:?}: {} ({})",
                            failure.code, failure.msg, failure.details
                        ));
                    }
                }
            }
            Step::Detach { slot, .. } => {
                let Some(attached) = self.attached.remove(slot) else {
                    bail!("the generator detached slot {slot}, which is not attached");
                };
                if let Err(failure) = self.node.del(&attached.pod) {
                    bail!("CNI DEL of {} failed: {failure}", attached.key);
                }
            }
            Step::Stop { kill } => {
                let status = if *kill {
                    self.node.kill_daemon()
                } else {
                    self.node.stop_daemon()
                };
                if !*kill && !status.success() {
                    notes.push(format!("podwalld exited with {status} on SIGTERM"));
                }
                self.daemon_up = false;
            }
            Step::Start => {
                self.node.spawn_daemon()?;
                self.daemon_up = true;
            }
        }
        Ok(notes)
    }

    /// The daemon's count of source updates, if it answers.
    fn syncs(&self) -> Option<f64> {
        if !self.daemon_up {
            return None;
        }
        match self.node.http_get("/metrics") {
            Ok((200, body)) => Metrics::parse(&body).get(SYNCS),
            _ => None,
        }
    }

    /// Wait (briefly) until the daemon has applied a source update since `before`.
    fn wait_for_pickup(&self, before: Option<f64>) {
        let Some(before) = before else { return };
        eventually(PICKUP, || self.syncs().is_some_and(|now| now > before));
    }

    /// Poll until the kernel agrees with the evaluator on every sampled packet and
    /// `/healthz` says 200, or `settle` passes. The error is a headline and details.
    fn check(&mut self, n: usize, settle: Duration) -> Result<(), Box<(String, Vec<String>)>> {
        let cluster = match self.parsed.load(&self.dir) {
            Ok(cluster) => cluster,
            Err(errors) => {
                return Err(Box::new((
                    "the generator wrote an unreadable manifest".to_string(),
                    errors,
                )))
            }
        };
        let node_name = self.node.name().to_string();
        let snap = check::snapshot(
            &cluster,
            &node_name,
            self.attached.values().map(|a| (&a.key, a.ips.as_slice())),
        );
        let mut rng = Rng::new(self.seed.wrapping_mul(0x9e37_79b9) ^ (n as u64) << 40);
        let stale: BTreeSet<IpAddr> = self
            .seen
            .iter()
            .copied()
            .filter(|ip| snap.pod_by_ip(ip).is_none())
            .collect();
        let packets = check::sample(&snap, &node_name, self.subnet4, &stale, &mut rng);
        let expected = check::expect(&snap, &node_name, &packets);
        self.packets += expected.len();
        let denied = expected.iter().filter(|e| !e.allowed).count();
        self.denied += denied;
        let started = Instant::now();
        let mut last: Option<Observation> = None;
        let agreed = eventually(settle, || {
            if let Some(status) = self.exit_status() {
                last = Some(Observation {
                    diff: Err(status),
                    health: Err("podwalld is not running".into()),
                });
                return true;
            }
            let health = self.node.http_get("/healthz").map_err(|e| format!("{e:#}"));
            let diff = Table::read(&self.node.netns)
                .and_then(|table| check::mismatches(table.as_ref(), &snap, &expected))
                .map_err(|e| format!("cannot interpret the kernel's table: {e:#}"));
            let done = matches!((&diff, &health), (Ok(d), Ok((200, _))) if d.is_empty());
            last = Some(Observation { diff, health });
            done
        });
        let Observation { diff, health } = last.expect("eventually polls at least once");
        if agreed && matches!(health, Ok((200, _))) {
            if self.verbose {
                eprintln!(
                    "seed {} step {n}: {} packets ({denied} denied) agree after {:.1?}",
                    self.seed,
                    expected.len(),
                    started.elapsed()
                );
            }
            return Ok(());
        }
        let waited = started.elapsed();
        let health_text = match &health {
            Ok((code, body)) => cut(&format!("/healthz {code} {}", body.trim()), NOTE_BYTES),
            Err(e) => cut(&format!("/healthz unanswered: {e}"), NOTE_BYTES),
        };
        let (headline, mut details) = match diff {
            Err(e) => (e, Vec::new()),
            Ok(d) if d.is_empty() => (
                format!("the kernel agrees with the evaluator but {health_text}"),
                Vec::new(),
            ),
            Ok(d) => {
                let kind = if matches!(health, Ok((200, _))) {
                    "SILENT divergence: /healthz 200"
                } else {
                    "divergence, reported"
                };
                let mut lines = vec![format!(
                    "{} of {} sampled packets disagree after {waited:.1?}:",
                    d.len(),
                    expected.len()
                )];
                lines.extend(d.iter().take(SHOWN_MISMATCHES).cloned());
                if d.len() > SHOWN_MISMATCHES {
                    lines.push(format!("… and {} more", d.len() - SHOWN_MISMATCHES));
                }
                (format!("kernel and evaluator disagree ({kind})"), lines)
            }
        };
        details.insert(0, health_text);
        Err(Box::new((headline, details)))
    }

    /// `Some(status)` when the daemon the driver started has exited.
    fn exit_status(&mut self) -> Option<String> {
        match self.node.daemon_exit_status() {
            Ok(Some(status)) => {
                self.daemon_up = false;
                Some(format!("podwalld exited with {status}"))
            }
            _ => None,
        }
    }

    /// The daemon's last warnings and errors.
    fn log_tail(&self) -> Vec<String> {
        let log = self.node.daemon_log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        lines[lines.len().saturating_sub(LOG_LINES)..]
            .iter()
            .map(|l| cut(l, NOTE_BYTES))
            .collect()
    }
}

/// The first line of `text`, cut to at most `max` bytes; `…` marks what was left out.
fn cut(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    let end = (0..=max.min(line.len()))
        .rev()
        .find(|i| line.is_char_boundary(*i))
        .unwrap_or(0);
    if end == text.len() {
        return text.to_string();
    }
    format!("{}…", &line[..end])
}

/// What the `podwall-differential` binary runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub seeds: Vec<RangeInclusive<u64>>,
    pub steps: usize,
    /// Start no new seed after this long.
    pub budget: Option<Duration>,
    pub features: Features,
    /// Print every step as it passes.
    pub verbose: bool,
    /// Print each seed's steps instead of running them.
    pub plan: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seeds: vec![1..=1000],
            steps: 50,
            budget: None,
            features: Features::all(),
            verbose: false,
            plan: false,
        }
    }
}

/// How a run of many seeds went.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub passed: usize,
    pub failed: Vec<(u64, usize)>,
    pub packets: usize,
    pub denied: usize,
    pub elapsed: Duration,
    /// The budget ran out before the last seed.
    pub cut_short: bool,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} seeds passed, {} failed, {} packets checked ({} denied) in {:.0?}{}",
            self.passed,
            self.failed.len(),
            self.packets,
            self.denied,
            self.elapsed,
            if self.cut_short {
                " (time budget reached)"
            } else {
                ""
            }
        )?;
        for (seed, step) in &self.failed {
            writeln!(f, "  seed {seed} failed at step {step}")?;
        }
        Ok(())
    }
}

/// Run every seed of `options` (until the budget runs out), printing a line per seed on
/// stdout and every failure in full; an error when any seed failed.
pub fn run(options: &Options) -> Result<Summary> {
    let started = Instant::now();
    let mut summary = Summary::default();
    'seeds: for range in &options.seeds {
        for seed in range.clone() {
            if options.budget.is_some_and(|b| started.elapsed() >= b) {
                summary.cut_short = true;
                break 'seeds;
            }
            if options.plan {
                println!("seed {seed}:");
                let steps = gen::plan(seed, options.steps, options.features, "pwt-node-plan");
                for (n, step) in steps.iter().enumerate() {
                    println!("  {:>3}. {}", n + 1, cut(&step.summary(), NOTE_BYTES));
                }
                continue;
            }
            let t = Instant::now();
            match run_seed(seed, options.steps, options.features, options.verbose) {
                Ok(passed) => {
                    summary.passed += 1;
                    summary.packets += passed.packets;
                    summary.denied += passed.denied;
                    println!(
                        "seed {seed}: {} steps agree ({} packets, {} denied, {:.1?})",
                        passed.steps,
                        passed.packets,
                        passed.denied,
                        t.elapsed()
                    );
                }
                Err(failure) => {
                    println!(
                        "seed {seed}: FAILED at step {} ({:.1?})\n{failure}",
                        failure.step,
                        t.elapsed()
                    );
                    summary.failed.push((seed, failure.step));
                }
            }
        }
    }
    summary.elapsed = started.elapsed();
    if !summary.failed.is_empty() {
        print!("{summary}");
        let replays: Vec<String> = summary
            .failed
            .iter()
            .map(|(seed, step)| format!("{seed}@{step}"))
            .collect();
        bail!(
            "{} seed(s) diverged (seed@step: {})",
            summary.failed.len(),
            replays.join(", ")
        );
    }
    Ok(summary)
}

/// `1..1000` (both ends included), `1..=1000` or `7`.
pub fn parse_seeds(text: &str) -> Option<RangeInclusive<u64>> {
    match text.split_once("..") {
        Some((a, b)) => {
            let a = a.trim().parse().ok()?;
            let b = b.trim().trim_start_matches('=').parse().ok()?;
            (a <= b).then_some(a..=b)
        }
        None => text.trim().parse().ok().map(|n| n..=n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_and_multi_line_notes_are_cut() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("0123456789abc", 10), "0123456789…");
        assert_eq!(cut("first\nsecond", 100), "first…");
        assert_eq!(cut("é", 1), "…");
    }

    #[test]
    fn seed_ranges_include_both_ends() {
        assert_eq!(parse_seeds("1..1000"), Some(1..=1000));
        assert_eq!(parse_seeds("1..=3"), Some(1..=3));
        assert_eq!(parse_seeds("7"), Some(7..=7));
        assert_eq!(parse_seeds("5..2"), None);
        assert_eq!(parse_seeds("x"), None);
    }

    #[test]
    fn a_failure_names_its_replay() {
        let failure = Failure {
            seed: 12,
            step: 7,
            features: Features::all().without("restarts").unwrap(),
            headline: "kernel and evaluator disagree".into(),
            what: "write policy-1.json".into(),
            details: vec!["10.0.0.1 -> 10.0.0.2 TCP/80: kernel allowed, evaluator denied".into()],
            history: vec!["a".into(), "b".into()],
            log: Vec::new(),
        };
        let text = failure.to_string();
        assert!(
            text.starts_with("seed 12 step 7: kernel and evaluator disagree"),
            "{text}"
        );
        assert!(
            text.contains("replay: podwall-differential --seeds 12 --steps 7 --without restarts")
        );
    }
}
