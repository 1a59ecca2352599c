//! Issue 5: watches that break. After the API server compacts its history and drops every
//! watch, the daemon's watchers get 410 Gone and relist; the relist swaps in whole and,
//! finding nothing changed, changes nothing in the kernel. A change after it still applies.

use std::time::Duration;

use podwall_policy::Protocol::Tcp;
use podwall_tests::cluster::Check;
use podwall_tests::manifests::namespace;
use podwall_tests::metrics::{ELEMENT_TRANSACTIONS, FULL_REPLACES};
use podwall_tests::reach::{self, cell, Peer};
use podwall_tests::{eventually, Cluster, Pod};

const APPLY: Duration = Duration::from_secs(10);
const CHECKS: [Check; 1] = [(Tcp, 80)];
const WATCH_RESTARTS: &str = "podwall_watch_restarts_total";

#[test]
#[ignore = "needs root: creates network namespaces"]
fn relist_after_410_and_dropped_watches_causes_no_rule_churn() {
    let cluster = Cluster::started("relist", 2);
    cluster.apply(&namespace("shop", &[("team", "shop")]));
    cluster.apply(&cluster.pod_yaml(0, "shop", "db", &[("app", "db")], &[]));
    cluster.apply(&cluster.pod_yaml(1, "shop", "web", &[("app", "web")], &[]));
    cluster.apply(&cluster.pod_yaml(0, "shop", "tool", &[("app", "tool")], &[]));
    cluster.apply(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: db, namespace: shop}\n\
         spec:\n  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: web}}}]\n",
    );
    let pods = [
        (0, Pod::named("rl-db", "shop", "db")),
        (1, Pod::named("rl-web", "shop", "web")),
        (0, Pod::named("rl-tool", "shop", "tool")),
    ];
    for (node, pod) in &pods {
        cluster.attach(*node, pod);
    }
    let peers: Vec<Peer> = pods.iter().map(|(_, p)| Peer::pod(p)).collect();
    let _servers = reach::serve(&peers, &[80]);
    let m = cluster.assert_agree_within(APPLY, &peers, &CHECKS);
    assert!(cell(&m[0], "shop/web", "shop/db") && !cell(&m[0], "shop/tool", "shop/db"));

    let before: Vec<_> = cluster.nodes.iter().map(|n| n.metrics()).collect();
    cluster.api.compact();
    cluster.api.drop_watches();
    for (node, before) in cluster.nodes.iter().zip(&before) {
        // Each of the three kinds relists.
        let relisted = eventually(Duration::from_secs(15), || {
            node.metrics().delta(before, WATCH_RESTARTS) >= 3.0
        });
        assert!(
            relisted,
            "{} did not relist every kind: {} relists\n{}",
            node.name(),
            node.metrics().delta(before, WATCH_RESTARTS),
            node.daemon_log()
        );
    }
    // Every watch is back (three per daemon), and both daemons are healthy.
    assert!(
        eventually(Duration::from_secs(15), || cluster.api.open_watches() >= 6),
        "the watches came back: {} open",
        cluster.api.open_watches()
    );
    for (node, before) in cluster.nodes.iter().zip(&before) {
        assert_eq!(node.healthz().ok(), Some(200), "{}", node.name());
        let after = node.metrics();
        assert_eq!(
            after.delta(before, FULL_REPLACES),
            0.0,
            "{}: the relist swapped the tables",
            node.name()
        );
        assert_eq!(
            after.delta(before, ELEMENT_TRANSACTIONS),
            0.0,
            "{}: the relist changed elements",
            node.name()
        );
    }
    cluster.assert_agree_within(APPLY, &peers, &CHECKS);

    // The watchers deliver again: a relabel after the relist flips the verdict.
    cluster.label_pod("shop", "tool", &[("app", "web")]);
    let m = cluster.assert_agree_within(APPLY, &peers, &CHECKS);
    assert!(cell(&m[0], "shop/tool", "shop/db"), "the relabel applied");
}
