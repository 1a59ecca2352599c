//! `podwall-demo`: NetworkPolicy enforced for real on a throw-away node. Needs root
//! (tests/demo.sh).
//!
//! Builds a node (a network namespace with the real bridge + host-local + podwall chain and
//! its own `podwalld` in standalone mode, reading manifests from a temp dir), attaches five
//! pods through libcni as a container runtime would (namespaces `nsa` ×2, `nsb` labelled
//! `app: nsb`, `nsc`, `default`), and puts two hosts outside the cluster behind the node:
//! 203.0.113.10 (inside 203.0.113.0/24, "the external CIDR" of the example policies) and
//! 198.51.100.10 (outside it). Then it applies the five policies of `conf/policies/` one at a
//! time and, for each, prints the reachability matrix the policy evaluator EXPECTS and the one
//! real TCP probes OBSERVE. Exits non-zero when any differ. Everything it creates is removed
//! when it ends or panics (its values are dropped); tests/demo.sh also sweeps what a
//! killed demo (Ctrl-C) left, by the `pwt-<pid>-` prefix of its names.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use podwall_policy::model::PortSpec;
use podwall_policy::Protocol;
use podwall_tests::manifests::{documents, namespace};
use podwall_tests::metrics::{ELEMENT_TRANSACTIONS, FULL_REPLACES};
use podwall_tests::reach::{self, Peer};
use podwall_tests::{bins, cni, ExternalHost, Metrics, Node, NodeOptions, Pod};
use podwalld::explain::report::Matrix;

/// How long the daemon gets to pick up a manifests change and commit it.
const APPLY: Duration = Duration::from_secs(10);
/// After the commit, how long probes may take to agree (conntrack, a second poll).
const SETTLE: Duration = Duration::from_secs(3);

/// Listeners in every pod and external host: the ports the example policies talk about.
const PORTS: [u16; 3] = [80, 6379, 5978];

fn main() -> ExitCode {
    podwall_tests::require_root();
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn step(text: &str) {
    println!("\n==> {text}");
}

/// Everything the demo builds lives in this function's locals: returning (or unwinding
/// from a panic) drops them, which stops the daemon and deletes namespaces and temp files.
fn run() -> Result<bool> {
    let started = Instant::now();
    step("a throw-away node: a network namespace with a bridge, host-local IPAM and podwall");
    let mut node = Node::with_options(
        "demo",
        NodeOptions {
            manifests: true,
            ..NodeOptions::default()
        },
    );
    let dir = node.manifests();
    println!("node netns:     {}", node.netns.name());
    println!("pod subnet:     {}", node.subnet4());
    println!("manifests dir:  {}", dir.path().display());

    let world = documents(&[
        namespace("default", &[]),
        namespace("nsa", &[]),
        namespace("nsb", &[("app", "nsb")]),
        namespace("nsc", &[]),
    ]);
    dir.write("namespaces.yaml", &world);
    println!("namespaces.yaml: default, nsa, nsb (labels app=nsb), nsc");

    step("podwalld --manifests <dir>: standalone, no API server");
    node.start_daemon();
    println!(
        "podwalld pid {} is healthy",
        node.daemon_pid().expect("just started")
    );

    step("attaching five pods through libcni (bridge -> host-local -> podwall)");
    let pods = [
        Pod::named("demo-d1", "default", "d1"),
        Pod::named("demo-a1", "nsa", "a1"),
        Pod::named("demo-a2", "nsa", "a2"),
        Pod::named("demo-b1", "nsb", "b1"),
        Pod::named("demo-c1", "nsc", "c1"),
    ];
    for pod in &pods {
        let result = node
            .add(pod)
            .map_err(|e| anyhow::anyhow!("ADD {}: {e}", pod.container_id))?;
        println!(
            "{:<11} {:?}",
            reach::pod_key(pod).to_string(),
            cni::result_ips(&result)
        );
    }

    step("two hosts outside the cluster, routed through the node");
    let inside = ExternalHost::attach(&node, "203.0.113.10");
    let outside = ExternalHost::attach(&node, "198.51.100.10");
    println!(
        "{}  inside 203.0.113.0/24, the example policies' external CIDR",
        inside.addr()
    );
    println!("{}  outside it", outside.addr());

    let mut peers: Vec<Peer> = pods.iter().map(Peer::pod).collect();
    peers.push(Peer::external(&inside));
    peers.push(Peer::external(&outside));
    let servers = reach::serve(&peers, &PORTS);
    let local: Vec<&Pod> = pods.iter().collect();
    println!("TCP listeners on {PORTS:?} in every pod and external host");

    let mut results = Vec::new();
    step("no policies: everything is allowed");
    results.push((
        "no policies".to_string(),
        show(&node, &local, &peers, 80, None)?,
    ));

    let policies = policy_files()?;
    for (i, path) in policies.iter().enumerate() {
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .context("a policy file name")?
            .to_string();
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        step(&format!("policy {}/{}: {file}", i + 1, policies.len()));
        println!("{}", description(&text));
        let port = port_of(&text);
        let before = node.metrics();
        dir.copy_from(path, &file);
        results.push((
            file.clone(),
            show(&node, &local, &peers, port, Some(&before))?,
        ));

        let before = node.metrics();
        dir.remove(&file);
        wait_for_commit(&node, &before)?;
        match agree(&node, &local, &peers, 80)? {
            Agreement::Match(_) => {
                println!("removed {file}: back to everything allowed");
                results.push((format!("{file} removed"), true));
            }
            Agreement::Differ(e, o) => {
                println!("removed {file}, but the probes disagree:\n{}", both(&e, &o));
                for line in reach::mismatches(&e, &o) {
                    println!("MISMATCH {line}");
                }
                results.push((format!("{file} removed"), false));
            }
        }
    }

    step("summary");
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| name.as_str())
        .collect();
    println!(
        "{} of {} checks: OBSERVED matches EXPECTED ({:.0?})",
        results.len() - failed.len(),
        results.len(),
        started.elapsed()
    );
    if !failed.is_empty() {
        println!("MISMATCH: {}", failed.join(", "));
    }

    step("cleaning up: stopping podwalld, deleting the namespaces and temp files");
    node.stop_daemon();
    drop(servers);
    drop(peers);
    drop((inside, outside, pods, node));
    println!("done");
    Ok(failed.is_empty())
}

/// Wait for the daemon to commit a change, then print EXPECTED and OBSERVED.
fn show(
    node: &Node,
    local: &[&Pod],
    peers: &[Peer],
    port: u16,
    before: Option<&Metrics>,
) -> Result<bool> {
    let applied = Instant::now();
    if let Some(before) = before {
        let how = wait_for_commit(node, before)?;
        println!("applied in {:.1?} ({how})", applied.elapsed());
    }
    let outcome = agree(node, local, peers, port)?;
    match &outcome {
        Agreement::Match(m) => println!("{}match", both(m, m)),
        Agreement::Differ(e, o) => {
            print!("{}", both(e, o));
            for line in reach::mismatches(e, o) {
                println!("MISMATCH {line}");
            }
        }
    }
    Ok(outcome.is_ok())
}

/// What the probes made of the expected matrix.
enum Agreement {
    Match(Matrix),
    /// Expected, observed.
    Differ(Matrix, Matrix),
}

impl Agreement {
    fn is_ok(&self) -> bool {
        matches!(self, Agreement::Match(_))
    }
}

/// Probe until the observed matrix equals the expected one, for up to `SETTLE`.
fn agree(node: &Node, local: &[&Pod], peers: &[Peer], port: u16) -> Result<Agreement> {
    let snap = reach::snapshot(&node.manifests(), node, local);
    let expected = reach::expected(&snap, peers, Protocol::Tcp, port);
    let end = Instant::now() + SETTLE;
    loop {
        let observed = reach::observed(peers, Protocol::Tcp, port);
        if reach::mismatches(&expected, &observed).is_empty() {
            return Ok(Agreement::Match(expected));
        }
        if Instant::now() >= end {
            return Ok(Agreement::Differ(expected, observed));
        }
    }
}

/// Wait until `/metrics` shows a commit since `before`; say what kind it was.
fn wait_for_commit(node: &Node, before: &Metrics) -> Result<String> {
    let end = Instant::now() + APPLY;
    loop {
        let now = node.metrics();
        let swaps = now.delta(before, FULL_REPLACES);
        let elements = now.delta(before, ELEMENT_TRANSACTIONS);
        if swaps > 0.0 {
            return Ok("the table swapped in one nft transaction".into());
        }
        if elements > 0.0 {
            return Ok("element-only netlink transaction".into());
        }
        if Instant::now() >= end {
            return Ok(format!("no commit seen in {APPLY:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The example policies, in file order.
fn policy_files() -> Result<Vec<PathBuf>> {
    let dir = bins::workspace_root().join("conf/policies");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_yaml(p))
        .collect();
    files.sort();
    Ok(files)
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// The policy's one-line description: its first comment line.
fn description(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix('#'))
        .map(|l| l.trim().to_string())
        .unwrap_or_default()
}

/// The port the policy is about: the first TCP port it names, else 80.
fn port_of(text: &str) -> u16 {
    let loaded = podwall_policy::manifests::load([("policy.yaml", text)]);
    loaded
        .snapshot
        .policies
        .values()
        .flat_map(|p| p.ingress.iter().chain(&p.egress))
        .flat_map(|r| &r.ports)
        .find_map(|m| match (m.protocol, &m.port) {
            (Protocol::Tcp, PortSpec::Range { first, .. }) => Some(*first),
            _ => None,
        })
        .unwrap_or(80)
}

/// The two tables, one under the other, under their titles.
fn both(expected: &Matrix, observed: &Matrix) -> String {
    format!(
        "EXPECTED (policy evaluator)\n{}OBSERVED (TCP probes)\n{}",
        expected.to_table(),
        observed.to_table()
    )
}
