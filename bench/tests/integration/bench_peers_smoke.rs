//! The peer benchmark still runs: the tiny world, one round of everything. It checks that
//! every comparison produces its samples, never how fast anything is: the figures come
//! from `bash tests/bench.sh` (docs/benchmarks.md). Two outcomes are behaviour rather than
//! speed, and are asserted: no connection reaches a pod podwall isolates before its ADD
//! returns, and the kube-router-shaped baseline enforces the same verdicts (the change
//! cycles fail otherwise).

use podwall_bench::peers::{self, change, packet, podstart, Options};

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
