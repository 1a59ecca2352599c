//! The dataplane benchmark still runs: a tiny world, two rounds, one row per (world,
//! operation, path). It checks that the benchmark works, never how fast anything is: the
//! figures come from `bench-dataplane` (docs/benchmarks.md).

use podwall_bench::dataplane::{self, Operation, Options, Path};

#[test]
#[ignore = "needs root: creates network namespaces"]
fn dataplane_benchmark_completes_with_a_row_per_world_operation_and_path() {
    let options = Options::smoke();
    let report = dataplane::run(&options).expect("the benchmark runs");
    assert_eq!(report.worlds.len(), options.peer_counts.len());
    for &peers in &options.peer_counts {
        for operation in Operation::ALL {
            for path in Path::ALL {
                let row = report
                    .row(peers, operation, path)
                    .unwrap_or_else(|| panic!("no row for {peers} peers, {operation:?}, {path:?}"));
                // A relabel round flips the labels and flips them back: two samples.
                let per_round = if operation == Operation::Relabel {
                    2
                } else {
                    1
                };
                assert_eq!(row.samples, options.rounds * per_round, "{row:?}");
                assert!(row.ops > 0, "the change reached the kernel: {row:?}");
            }
        }
    }
    assert_eq!(
        report.rows.len(),
        options.peer_counts.len() * Operation::ALL.len() * Path::ALL.len()
    );
}
