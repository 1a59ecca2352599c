//! `podwalld cleanup` removes everything podwall put in a node's kernel — the policy table
//! and the anti-spoofing table — and is harmless to run again.

use podwall_tests::{bins, nft, Node, Pod};

/// The families in which a `podwall` table exists in the node's namespace.
fn podwall_tables(node: &Node) -> Vec<String> {
    let out = node
        .netns
        .exec(&["nft", "-j", "list", "tables"])
        .expect("nft list tables");
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("nft -j prints JSON");
    doc["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("table"))
        .filter(|t| t["name"] == nft::TABLE)
        .filter_map(|t| t["family"].as_str().map(str::to_string))
        .collect()
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn cleanup_removes_both_tables_and_is_idempotent() {
    let mut node = Node::started("cleanup");
    let pod = Pod::named("cl-a", "x", "a");
    node.add_all(&[&pod]);
    let mut tables = podwall_tables(&node);
    tables.sort();
    assert_eq!(
        tables,
        ["bridge", "inet"],
        "an attached pod leaves both tables"
    );
    node.stop_daemon();
    assert_eq!(
        podwall_tables(&node).len(),
        2,
        "stopping the daemon keeps the rules"
    );

    let daemon = bins::daemon();
    let daemon = daemon.to_str().expect("utf-8 path");
    let first = node
        .netns
        .exec(&[daemon, "cleanup"])
        .expect("podwalld cleanup");
    assert!(first.success(), "cleanup failed: {}", first.stderr);
    assert!(first.stdout.contains("removed"), "{}", first.stdout);
    assert!(podwall_tables(&node).is_empty(), "both tables are gone");

    let again = node
        .netns
        .exec(&[daemon, "cleanup"])
        .expect("podwalld cleanup again");
    assert!(again.success(), "a second cleanup fails: {}", again.stderr);
    assert!(
        again.stdout.contains("no podwall table"),
        "{}",
        again.stdout
    );
}
