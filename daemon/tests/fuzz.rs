//! Fuzzing of the kernel read-back: `nft -j` output as reconcile and CHECK read it, into a
//! `Fingerprint` and compared with the expected one; and of `explain`'s matrix over fuzzed
//! manifests (their loading and compiling are fuzzed in the policy crate's `tests/fuzz.rs`).
//! Every case only has to return without a panic; the driver and the environment variables
//! that run it longer are in `fuzz/driver.rs`, the corpora in `fuzz/corpus/nft/` (real
//! `nft -j` output of both tables, as applied and after drift by hand) and
//! `fuzz/corpus/manifests/`.

#[path = "../../fuzz/driver.rs"]
mod driver;

use std::net::IpAddr;

use podwall_policy::{manifests, Protocol, Snapshot};
use podwalld::dataplane::readback::fingerprint_from_json;
use podwalld::explain::report;

/// Pods the fuzzed manifests are loaded next to, so that their policies select something.
const WORLD: &str = include_str!("../../fuzz/corpus/manifests/world.yaml");

/// `explain`'s matrix is quadratic in pods: past this many it adds time, not coverage.
const MATRIX_PODS: usize = 12;

#[test]
fn nft_read_back_never_panics() {
    let expected = fingerprint_from_json(include_str!("../../fuzz/corpus/nft/inet.json"))
        .expect("the corpus dump reads back");
    driver::run("nft", 3_000, |bytes| {
        // `NftKernel` reads nft's stdout lossily, then parses it.
        let text = String::from_utf8_lossy(bytes);
        let Ok(actual) = fingerprint_from_json(&text) else {
            return;
        };
        let _ = actual.differences(&expected);
        let _ = expected.differences(&actual);
    });
}

#[test]
fn explain_matrix_of_manifests_never_panics() {
    let externals: Vec<IpAddr> = vec!["203.0.113.10".parse().unwrap(), "fd00::99".parse().unwrap()];
    let world = world();
    driver::run("manifests", 1_500, |bytes| {
        // `explain` reads manifests as UTF-8 text.
        let text = String::from_utf8_lossy(bytes);
        let loaded = manifests::load([("fuzz.yaml", &*text)]);
        let mut snapshot = world.clone();
        snapshot.merge(loaded.snapshot);
        if snapshot.pods.len() <= MATRIX_PODS {
            let _ = report::matrix(&snapshot, &externals, Protocol::Tcp, 80).to_table();
        }
    });
}

/// The world's pods and namespaces, parsed once: YAML in a debug build costs more than all
/// the rest of a case.
fn world() -> Snapshot {
    let loaded = manifests::load([("world.yaml", WORLD)]);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    loaded.snapshot
}
