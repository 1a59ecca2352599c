//! podwall-bench's integration tests, in one binary: the root tests (`#[ignore]`d, run by
//! `tests/run.sh` with `--ignored`) that check each benchmark still runs on a tiny world, and
//! that the kube-router baseline enforces what the evaluator says.
//!
//! One binary rather than one per file, as in `tests/`: each links the daemon and the rig.

mod bench_droplog_smoke;
mod bench_peers_smoke;
mod bench_propagation_smoke;
mod bench_smoke;
mod cutover;
mod kuberouter;
