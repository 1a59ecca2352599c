//! The peer benchmark still runs: the tiny world, one round of everything. It checks that
//! every comparison produces its samples, never how fast anything is: the figures come
//! from `bash tests/bench.sh` (docs/benchmarks.md). Two outcomes are behaviour rather than
//! speed, and are asserted: no connection reaches a pod podwall isolates before its ADD
//! returns, and the kube-router-shaped baseline enforces the same verdicts (the change
//! cycles fail otherwise). The tier comparison (`--cluster-policies`) runs the same way.

use podwall_bench::peers::{self, change, packet, podstart, tiers, Options};

#[test]
#[ignore = "needs root: creates network namespaces"]
fn peer_benchmark_completes_every_comparison() {
    let options = Options::smoke();
    let report = peers::run(&options).expect("the benchmark runs");
    assert_eq!(report.worlds.len(), options.worlds.len());
    for w in &report.worlds {
        assert_eq!(w.podstart.len(), podstart::Chain::ALL.len());
        for r in &w.podstart {
            let n = options.rounds * options.sequential_starts;
            assert_eq!((r.add.len(), r.del.len()), (n, n), "{:?}", r.chain);
            let n = options.rounds * podstart::PARALLEL;
            assert_eq!(
                (r.add_parallel.len(), r.del_parallel.len()),
                (n, n),
                "{:?}",
                r.chain
            );
        }
        assert_eq!(w.changes.len(), change::Kind::ALL.len());
        for r in &w.changes {
            assert!(!r.podwall.latency.is_empty(), "{:?}", r.kind);
            assert_eq!(r.podwall.latency.len(), r.kuberouter.latency.len());
        }
        assert_eq!(w.cost.podwall.wall.len(), options.rounds);
        assert_eq!(w.cost.warm.wall.len(), options.rounds);
    }

    let (_, podwall, kuberouter) = report.isolation.as_ref().expect("isolation ran");
    let (_, starts, _) = options.isolation.unwrap();
    assert_eq!((podwall.starts, kuberouter.starts), (starts, starts));
    assert!(podwall.probes > 0);
    assert_eq!(
        (podwall.pods, podwall.connections),
        (0, 0),
        "a denied peer reached a pod podwall had isolated before its ADD returned"
    );
    assert_eq!(kuberouter.exposed.len(), starts);

    let (_, rows) = report.packet.as_ref().expect("per packet ran");
    assert_eq!(rows.len(), packet::Path::ALL.len());
    for (path, r) in rows {
        assert_eq!(r.gbits.len(), options.rounds, "{path:?}");
        assert!(r.gbits.iter().all(|g| *g > 0.0), "{path:?}: {:?}", r.gbits);
        assert!(!r.connect.is_empty(), "{path:?}");
    }

    assert_eq!(report.footprint.len(), options.footprint.0.len());
    assert!(report.footprint.iter().all(|r| r.rss_kib > 0));
    // The printed table has every section.
    let text = report.to_string();
    for section in ["## 1.", "## 2.", "## 3.", "## 4.", "## 5.", "## 6."] {
        assert!(text.contains(section), "no {section} in\n{text}");
    }
}

/// `--smoke --cluster-policies 100`: the tiny world with and without 100 cluster policies,
/// one round of each section. Asserted: every table has samples on both sides, the daemon
/// with them built Admin chains the target's path runs through, and the evaluator gives
/// every verdict the sections probe alike with and without them (the run stops otherwise;
/// the change cycles and the per-packet connections then see those verdicts on both nodes).
#[test]
#[ignore = "needs root: creates network namespaces"]
fn cluster_policy_comparison_completes_and_keeps_the_verdicts() {
    let options = Options {
        cluster_policies: Some(100),
        ..Options::smoke()
    };
    let report = tiers::run(&options).expect("the comparison runs");
    assert_eq!(report.worlds.len(), options.worlds.len());
    let both = |row: &tiers::Row| {
        let f = &row.figure;
        assert!(f.len(0) > 0 && f.len(1) > 0, "{}: {f:?}", row.label);
    };
    for w in &report.worlds {
        assert!(!w.verdicts.is_empty());
        for a in &w.verdicts {
            assert!(a.holds(), "{a:?}");
        }
        assert!(w.verdicts.iter().any(|a| a.what.starts_with("client")));
        let [without, with] = &w.tables;
        assert_eq!(without.target_path.len(), 1, "{without:?}");
        assert!(with.target_path.len() > 1, "an Admin chain first: {with:?}");
        assert_eq!(
            with.target_path.last(),
            without.target_path.last(),
            "the Admin chain ends in the same NetworkPolicy chain"
        );
        assert_eq!(w.podstart.rows.len(), 8);
        w.podstart.rows.iter().for_each(both);
        assert_eq!(w.changes.rows.len(), change::Kind::ALL.len() + 1);
        w.changes.rows.iter().for_each(both);
        w.cost.iter().for_each(both);
        assert_eq!(w.packet.len(), 3);
        w.packet.iter().for_each(both);
    }
    assert_eq!(report.footprint.len(), options.footprint.0.len());
    for (_, rows) in &report.footprint {
        rows.iter().for_each(both);
    }
    let text = report.to_string();
    for section in ["## Verdicts", "## 1.", "## 2.", "## 3.", "## 4.", "## 5."] {
        assert!(text.contains(section), "no {section} in\n{text}");
    }
}
