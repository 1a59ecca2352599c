//! The propagation benchmark still runs: a tiny world, a few changes of each kind. It checks
//! that the benchmark works, never how fast anything is: the figures come from
//! `bench-propagation` (docs/benchmarks.md).

use podwall_bench::propagation::{self, Change, Options, Source};

#[test]
#[ignore = "needs root: creates network namespaces"]
fn propagation_benchmark_completes_with_a_row_per_size_and_change() {
    let options = Options::smoke();
    let report = propagation::run(&options).expect("the benchmark runs");
    assert_eq!(report.worlds.len(), options.sizes.len());
    for &pods in &options.sizes {
        for change in Change::ALL {
            let row = report
                .row(pods, change)
                .unwrap_or_else(|| panic!("no row for {pods} pods, {change:?}"));
            assert_eq!(row.samples.len(), options.changes, "{row:?}");
        }
    }
    assert_eq!(report.rows.len(), options.sizes.len() * Change::ALL.len());
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn propagation_benchmark_completes_from_a_manifests_directory() {
    let options = Options {
        source: Source::Manifests,
        ..Options::smoke()
    };
    let report = propagation::run(&options).expect("the benchmark runs");
    for change in Change::ALL {
        let row = report
            .row(options.sizes[0], change)
            .unwrap_or_else(|| panic!("no row for {change:?}"));
        assert_eq!(row.samples.len(), options.changes, "{row:?}");
    }
}
