//! The drop log benchmark still runs: one short round on each node. It checks that the
//! benchmark works and that what it compares differs as it says (the node with the drop
//! log on wrote lines for the flood, the one with it off none), never how fast anything is:
//! the figures come from `bench-droplog` (docs/benchmarks.md).

use podwall_bench::droplog::{self, Options};

#[test]
#[ignore = "needs root: creates network namespaces"]
fn droplog_benchmark_completes_with_a_row_per_node() {
    let report = droplog::run(&Options::smoke()).expect("the benchmark runs");
    let names: Vec<&str> = report.rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["drop log on", "drop log off"]);
    for row in &report.rows {
        assert_eq!((row.rate.len(), row.flood_rate.len()), (1, 1), "{row:?}");
        assert!(row.rate[0] > 0.0 && row.flood_rate[0] > 0.0, "{row:?}");
    }
    assert!(report.rows[0].lines > 0, "the flood was logged");
    assert_eq!(report.rows[1].lines, 0, "no log rules, no lines");
}
