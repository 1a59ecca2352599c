//! Fuzzing of the kernel read-back: the netlink messages of the table's dumps as reconcile
//! reads them exactly and CHECK into a `Fingerprint`; and of `explain`'s matrix over fuzzed manifests
//! (their loading and compiling are fuzzed in the policy crate's `tests/fuzz.rs`). Every case
//! only has to return without a panic; the driver and the environment variables that run it
//! longer are in `fuzz/driver.rs`, the corpora in `fuzz/corpus/netlink/` (each message the
//! kernel's dumps gave for both tables of `daemon/src/dataplane/testdata/compiled_world.nft`,
//! one a file) and `fuzz/corpus/manifests/`.

#[path = "../../fuzz/driver.rs"]
mod driver;

use std::net::IpAddr;

use podwall_policy::{manifests, Protocol, Snapshot};
use podwalld::dataplane::listing;
use podwalld::explain::report;

/// Pods the fuzzed manifests are loaded next to, so that their policies select something.
const WORLD: &str = include_str!("../../fuzz/corpus/manifests/world.yaml");

/// `explain`'s matrix is quadratic in pods: past this many it adds time, not coverage.
const MATRIX_PODS: usize = 12;

#[test]
fn netlink_read_back_never_panics() {
    driver::run("netlink", 3_000, |message| {
        // Each reader takes one message of a dump, as `listing::read_table` hands them.
        let _ = listing::chain_of(message, "podwall");
        let _ = listing::rule_of(message, "podwall");
        let _ = listing::set_of(message, "podwall");
        let _ = listing::elements(message).count();
        let _ = listing::map_entries(message).count();
        // And as `listing::read_exact` hands them to the exact fold, as any kind of object.
        let mut fold = podwalld::dataplane::exact::Fold::default();
        for kind in [0, 3, 6, 9, 12] {
            fold.message(kind, 1, message.get(20..).unwrap_or_default());
        }
        let _ = fold.finish();
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
