//! Issue 4: drift. Someone deletes podwall's table, flushes one of its chains or swaps an
//! element for another by hand; the next periodic reconcile (`--sync-period 1s` here) puts
//! the rules back, enforcement comes back, and `/metrics` counts the repair.

use std::time::Duration;

use podwall_policy::Protocol::Tcp;
use podwall_tests::cmd::Output;
use podwall_tests::manifests::{documents, namespace, PodManifest};
use podwall_tests::metrics::{FULL_REPLACES, RECONCILE_REPAIRS};
use podwall_tests::probe::EchoServer;
use podwall_tests::reach::{self, Peer};
use podwall_tests::{eventually, nft, Node, NodeOptions, Pod};

/// Reconciles and source updates, counted when they finish.
const SYNCS: &str = "podwall_syncs_total";

/// A reconcile every second: the repair must show within a few periods.
const REPAIR: Duration = Duration::from_secs(10);

const DENY: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: d}
spec: {podSelector: {}}
";

fn node() -> Node {
    Node::standalone(
        "drift",
        NodeOptions {
            sync_period: Some("1s".into()),
            ..NodeOptions::default()
        },
        &[
            (
                "world.yaml",
                documents(&[
                    namespace("d", &[]),
                    namespace("other", &[]),
                    PodManifest::new("d", "a").yaml(),
                    PodManifest::new("other", "b").yaml(),
                ]),
            ),
            ("deny.yaml", DENY.into()),
        ],
    )
}

/// What the table holds, whatever order the kernel lists its chains in (a repaired table is
/// written in one piece, the original partly grew element by element).
fn contents(mut rules: nft::Ruleset) -> nft::Ruleset {
    rules.chains.sort();
    rules
}

/// Damage the table with `nft words…`, see the damage take effect, then see the reconcile
/// undo it: the same maps and chains as before, `b → a` denied again, a repair counted.
fn damage_is_repaired(node: &Node, a: &Pod, b: &Pod, words: &[&str]) {
    let (pa, pb) = (Peer::pod(a), Peer::pod(b));
    let before = node.ruleset().expect("the table exists");
    let metrics = node.metrics();

    node.netns
        .exec(words)
        .and_then(Output::ok)
        .unwrap_or_else(|e| panic!("damaging the table: {e:#}"));
    // Either the damage shows (b gets in) or a reconcile was quicker than the probe; what
    // must hold is that it ends repaired.
    let repaired = eventually(REPAIR, || {
        node.ruleset().map(contents) == Some(contents(before.clone()))
            && node.metrics().delta(&metrics, RECONCILE_REPAIRS) >= 1.0
    });
    assert!(
        repaired,
        "`{}` not repaired within {REPAIR:?}: repairs {} -> {}\n{}",
        words.join(" "),
        metrics.value(RECONCILE_REPAIRS),
        node.metrics().value(RECONCILE_REPAIRS),
        node.ruleset_text()
    );
    assert!(
        reach::settles(REPAIR, &pb, &pa, Tcp, 80, false),
        "b → a denied again after the repair"
    );
    assert!(
        reach::settles(REPAIR, &pa, &pb, Tcp, 80, true),
        "a → b still allowed"
    );
}

/// Pods `d/a` and `other/b` (netns names `{tag}-a`, `{tag}-b`) attached to `node`, serving
/// TCP 80, and enforced as the policies say before any damage.
fn served(node: &Node, tag: &str) -> (Pod, Pod, Vec<EchoServer>) {
    let a = Pod::named(&format!("{tag}-a"), "d", "a");
    let b = Pod::named(&format!("{tag}-b"), "other", "b");
    node.add_all(&[&a, &b]);
    let peers = [Peer::pod(&a), Peer::pod(&b)];
    let servers = reach::serve(&peers, &[80]);
    reach::assert_agree_within(REPAIR, &node.manifests(), node, &[&a, &b], &peers, Tcp, 80);
    (a, b, servers)
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn table_deleted_by_hand_is_restored_by_the_next_reconcile() {
    let node = node();
    let (a, b, _servers) = served(&node, "dr");
    damage_is_repaired(
        &node,
        &a,
        &b,
        &["nft", "delete", "table", nft::FAMILY, nft::TABLE],
    );
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn chain_flushed_by_hand_is_restored_by_the_next_reconcile() {
    let node = node();
    let (a, b, _servers) = served(&node, "df");
    let chain = node
        .ruleset()
        .and_then(|r| r.target("ingress4", a.ip4()).map(str::to_string))
        .expect("a's ingress chain");
    assert_ne!(chain, "open", "a is isolated by the deny policy");
    let rules = node.ruleset().expect("the table exists");
    assert!(
        !rules.chain_rules(&chain).is_empty(),
        "{chain} has rules for the flush to remove:\n{}",
        node.ruleset_text()
    );
    damage_is_repaired(
        &node,
        &a,
        &b,
        &["nft", "flush", "chain", nft::FAMILY, nft::TABLE, &chain],
    );
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn an_untouched_table_is_not_repaired() {
    let node = node();
    let (a, b) = (
        Pod::named("dn-a", "d", "a"),
        Pod::named("dn-b", "other", "b"),
    );
    node.add_all(&[&a, &b]);
    let start = node.metrics();
    // Several reconciles run (one a second) and each finds both tables as applied.
    let reconciled = eventually(REPAIR, || node.metrics().delta(&start, SYNCS) >= 3.0);
    assert!(reconciled, "no reconcile ran within {REPAIR:?}");
    let now = node.metrics();
    assert_eq!(
        now.delta(&start, RECONCILE_REPAIRS),
        0.0,
        "a reconcile saw drift in a healthy table"
    );
    assert_eq!(
        now.delta(&start, FULL_REPLACES),
        0.0,
        "a reconcile swapped a healthy table"
    );
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn an_element_swapped_for_another_by_hand_is_restored_by_the_next_reconcile() {
    let node = node();
    let (a, b, _servers) = served(&node, "de");
    // As many elements as before: only reading the elements themselves tells.
    let (pair, stranger) = (format!("{0} . {0}", a.ip4()), "10.99.99.99 . 10.99.99.99");
    let swap = format!(
        "delete element inet podwall hairpin4 {{ {pair} }}; add element inet podwall hairpin4 {{ {stranger} }}"
    );
    damage_is_repaired(&node, &a, &b, &["nft", &swap]);
}
