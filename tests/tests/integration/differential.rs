//! Issue "Never silently diverge": a few fixed seeds of random cluster histories against a
//! real standalone daemon; after every step the kernel's table must give every sampled
//! packet the evaluator's verdict, and `/healthz` must say 200 exactly when it does. The
//! long hunt over many seeds is `tests/differential.sh` (docs/design.md).

use podwall_tests::differential::gen::Features;
use podwall_tests::differential::run_seed;

/// Seeds of the short run, each with the generator features it leaves out. Chosen for what
/// their first steps do (and what they caught before it was fixed): 15 names a policy with
/// 253 characters (nft refused its rule comments), 36 has pods of other nodes claim
/// addresses attached here, 42 adds thousands of pods matching a peer at once (a netlink
/// batch beyond one 64 KiB attribute). Between them: relabels, bursts, restarts, deny-all.
const RUNS: [(u64, &[&str]); 3] = [(15, &[]), (36, &[]), (42, &["long-names", "shared-ips"])];
/// Steps per seed.
const STEPS: usize = 40;

#[test]
#[ignore = "needs root: creates network namespaces"]
fn kernel_agrees_with_the_evaluator_along_random_histories() {
    podwall_tests::require_root();
    let failures: Vec<String> = RUNS
        .iter()
        .filter_map(|(seed, without)| {
            let features = without.iter().fold(Features::all(), |f, name| {
                f.without(name).expect("a feature name")
            });
            run_seed(*seed, STEPS, features, false).err()
        })
        .map(|failure| failure.to_string())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} seeds diverged:\n\n{}",
        failures.len(),
        RUNS.len(),
        failures.join("\n")
    );
}
