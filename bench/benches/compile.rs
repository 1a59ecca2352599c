//! Compile-time benchmark: a 10,000-pod, 1,000-policy cluster (100 namespaces of 100 pods,
//! ten policies each, 110 pods on the measured node). Times a full compile, what a start
//! does with the compiled table besides (the batch that swaps it in, written and folded as
//! the exact read-back compares it; the digest a clean stop records), then one pod's label
//! change through the incremental path, and prints the figures.
//!
//! Run with `cargo bench -p podwall-bench --bench compile`. Pure: no root, no kernel.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use podwall_bench::synthetic;
use podwall_policy::model::{ContainerPort, PortMatch, PortSpec};
use podwall_policy::selector::Labels;
use podwall_policy::{Compiler, Event, Namespace, Pod, PodKey, Protocol, Ruleset, Snapshot};
use podwalld::dataplane::{Desired, Digest, Exact, Guard};

const NAMESPACES: usize = 100;
const PODS_PER_NAMESPACE: usize = 100;
const POLICIES_PER_NAMESPACE: usize = 10;
const NODE: &str = "node-0";

fn labels(pairs: &[(&str, String)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn pod(ns: usize, i: usize) -> Pod {
    let n = ns * PODS_PER_NAMESPACE + i;
    let ip: IpAddr = format!("10.{}.{}.{}", n / 65536, (n / 256) % 256, n % 256)
        .parse()
        .expect("address");
    let mut pod = Pod::new(
        PodKey::new(format!("ns{ns}"), format!("pod{i}")),
        labels(&[
            ("app", format!("app{}", i % 20)),
            ("tier", format!("t{}", i % 3)),
        ]),
        vec![ip],
    );
    // 110 of the 10,000 pods run on the measured node.
    pod.node = Some(if n % 91 == 0 {
        NODE.into()
    } else {
        format!("node-{}", n % 90 + 1).into()
    });
    pod.ports = vec![ContainerPort {
        name: Some("http".into()),
        port: 8000 + (i % 5) as u16,
        protocol: Protocol::Tcp,
    }];
    pod
}

fn world() -> Snapshot {
    let mut snap = Snapshot::default();
    for ns in 0..NAMESPACES {
        snap.upsert_namespace(Namespace::new(
            format!("ns{ns}"),
            labels(&[("team", format!("team{}", ns % 10))]),
        ));
        for i in 0..PODS_PER_NAMESPACE {
            snap.upsert_pod(pod(ns, i));
        }
        for j in 0..POLICIES_PER_NAMESPACE {
            snap.upsert_policy(synthetic::policy(ns, j, 20));
        }
    }
    snap
}

fn main() {
    let snap = world();
    let start = Instant::now();
    let mut compiler = Compiler::new(snap.clone(), NODE);
    let full = start.elapsed();
    let rs = compiler.ruleset();
    let elements: usize = rs.sets.values().map(|s| s.len()).sum();
    println!(
        "world: {} pods, {} policies, {} namespaces; node {NODE}: {} map entries, {} chains, {} sets, {} set elements",
        snap.pods.len(),
        snap.policies.len(),
        snap.namespaces.len(),
        rs.ingress.len() + rs.egress.len(),
        rs.chains.len(),
        rs.sets.len(),
        elements
    );
    println!("full compile: {:.1} ms", full.as_secs_f64() * 1e3);
    table_work(rs);

    // One pod's label change at a time: every other one a pod of the measured node (so its
    // chain changes), each one flipping labels that peer sets select on.
    let rounds = 200;
    let mut total = Duration::ZERO;
    let mut worst = Duration::ZERO;
    let mut delta_sizes = 0;
    let mut current = snap.clone();
    for r in 0..rounds {
        let n = if r % 2 == 0 {
            91 * (r / 2 % 110)
        } else {
            (r * 37) % 10_000
        };
        let key = PodKey::new(
            format!("ns{}", n / PODS_PER_NAMESPACE),
            format!("pod{}", n % PODS_PER_NAMESPACE),
        );
        let mut changed = current.pods[&key].clone();
        changed
            .labels
            .insert("app".into(), format!("app{}", (r * 7) % 20));
        let tier = if changed.labels["tier"] == "t1" {
            "t0"
        } else {
            "t1"
        };
        changed.labels.insert("tier".into(), tier.into());
        current.upsert_pod(changed.clone());
        let start = Instant::now();
        let delta = compiler.apply(Event::Pod(changed));
        let took = start.elapsed();
        total += took;
        worst = worst.max(took);
        delta_sizes += delta.size();
    }
    println!(
        "one pod label change (incremental): mean {:.1} µs, worst {:.1} µs, mean delta {:.1} changes, over {rounds} changes",
        total.as_secs_f64() * 1e6 / rounds as f64,
        worst.as_secs_f64() * 1e6,
        delta_sizes as f64 / rounds as f64
    );
    let start = Instant::now();
    let recompiled = Compiler::new(current, NODE);
    println!(
        "full recompile after them: {:.1} ms (same ruleset as incremental: {})",
        start.elapsed().as_secs_f64() * 1e3,
        recompiled.ruleset() == compiler.ruleset()
    );

    let mut ns_labels = snap.namespaces["ns3"].labels.clone();
    ns_labels.insert("team".into(), "team9".into());
    let start = Instant::now();
    let delta = compiler.apply(Event::Namespace(Namespace::new("ns3", ns_labels)));
    println!(
        "one namespace label change (incremental): {:.1} µs, delta {} changes",
        start.elapsed().as_secs_f64() * 1e6,
        delta.size()
    );

    let start = Instant::now();
    let delta = compiler.apply(Event::Policy(synthetic::policy(0, 1, 20)));
    let _ = delta;
    let mut changed = synthetic::policy(0, 0, 20);
    changed.ingress[0].ports.push(PortMatch {
        protocol: Protocol::Tcp,
        port: PortSpec::Range {
            first: 443,
            last: 443,
        },
    });
    let start2 = Instant::now();
    let delta = compiler.apply(Event::Policy(changed));
    println!(
        "one policy change (incremental): {:.1} µs, delta {} changes (unchanged re-apply {:.1} µs)",
        start2.elapsed().as_secs_f64() * 1e6,
        delta.size(),
        (start2 - start).as_secs_f64() * 1e6
    );
}

/// The median of 9 runs of `work`, ms.
fn median_ms<T>(mut work: impl FnMut() -> T) -> f64 {
    let mut runs: Vec<f64> = (0..9)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(work());
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

/// What a start does with the compiled table besides the compile: after a crash, the
/// batch that would swap it in, written and folded (`Exact::of`) to compare with what the
/// kernel holds; after a clean stop, the digest of its script.
fn table_work(ruleset: &Ruleset) {
    let desired = Desired {
        ruleset: ruleset.clone(),
        guard: Guard::default(),
        logging: None,
    };
    let exact = Exact::of(&desired);
    println!(
        "its table written and folded (Exact::of): {:.2} ms; the fold's digest: {:.3} ms (median of 9)",
        median_ms(|| Exact::of(&desired)),
        median_ms(|| Digest::of(&exact))
    );
}
