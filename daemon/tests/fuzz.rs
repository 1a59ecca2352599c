//! Fuzzing of the kernel read-back: `nft -j` output as reconcile and CHECK read it, into a
//! `Fingerprint` and compared with the expected one. Every case only has to return without a
//! panic; the driver and the environment variables that run it longer are in
//! `fuzz/driver.rs`, the corpus (real `nft -j` output of both tables, as applied and after
//! drift by hand) in `fuzz/corpus/nft/`.

#[path = "../../fuzz/driver.rs"]
mod driver;

use podwalld::dataplane::nft::fingerprint_from_json;
use serde_json::Value;

#[test]
fn nft_read_back_never_panics() {
    let applied: Value = serde_json::from_str(include_str!("../../fuzz/corpus/nft/inet.json"))
        .expect("the corpus dump is JSON");
    let expected = fingerprint_from_json(&applied).expect("the corpus dump reads back");
    driver::run("nft", 3_000, |bytes| {
        // `NftKernel` reads nft's stdout lossily, then parses it.
        let text = String::from_utf8_lossy(bytes);
        let Ok(doc) = serde_json::from_str::<Value>(&text) else {
            return;
        };
        let Ok(actual) = fingerprint_from_json(&doc) else {
            return;
        };
        let _ = actual.differences(&expected);
        let _ = expected.differences(&actual);
    });
}
