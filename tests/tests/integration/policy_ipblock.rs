//! Issue 4: ipBlock peers with `except`, towards hosts outside the cluster (egress) and from
//! them (ingress). The external hosts sit behind the node at documentation addresses:
//! 203.0.113.10 inside the block, 203.0.113.200 in its except, 198.51.100.10 outside it.

use std::time::Duration;

use podwall_policy::Protocol::Tcp;
use podwall_tests::manifests::{documents, namespace, PodManifest};
use podwall_tests::reach::{self, cell, Peer};
use podwall_tests::{ExternalHost, Node, NodeOptions, Pod};

const APPLY: Duration = Duration::from_secs(10);

const INSIDE: &str = "203.0.113.10";
const EXCEPTED: &str = "203.0.113.200";
const OUTSIDE: &str = "198.51.100.10";

/// A standalone node, not started yet, with the three external hosts.
fn node_with_externals(label: &str) -> (Node, [ExternalHost; 3]) {
    let node = Node::with_options(
        label,
        NodeOptions {
            manifests: true,
            ..NodeOptions::default()
        },
    );
    let hosts = [INSIDE, EXCEPTED, OUTSIDE].map(|a| ExternalHost::attach(&node, a));
    (node, hosts)
}

fn world(ns: &str) -> String {
    documents(&[
        namespace(ns, &[]),
        PodManifest::new(ns, "a").labels(&[("app", "a")]).yaml(),
        PodManifest::new(ns, "b").yaml(),
    ])
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn egress_ip_block_reaches_its_cidr_but_not_the_except_or_beyond() {
    let (mut node, hosts) = node_with_externals("ipb-out");
    let dir = node.manifests();
    dir.write("world.yaml", &world("eg"));
    dir.write(
        "policy.yaml",
        "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: to-cidr, namespace: eg}
spec:
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 203.0.113.0/24, except: [203.0.113.128/25]}}]
",
    );
    node.start_daemon();
    let (a, b) = (
        Pod::named("ipbo-a", "eg", "a"),
        Pod::named("ipbo-b", "eg", "b"),
    );
    node.add_all(&[&a, &b]);
    let mut peers = vec![Peer::pod(&a), Peer::pod(&b)];
    peers.extend(hosts.iter().map(Peer::external));
    let _servers = reach::serve(&peers, &[443]);
    let m = reach::assert_agree_within(APPLY, &dir, &node, &[&a, &b], &peers, Tcp, 443);
    assert!(cell(&m, "eg/a", INSIDE));
    assert!(!cell(&m, "eg/a", EXCEPTED), "the except is cut out");
    assert!(!cell(&m, "eg/a", OUTSIDE));
    assert!(!cell(&m, "eg/a", "eg/b"), "pods are not in the block");
    assert!(cell(&m, "eg/b", OUTSIDE), "an unselected pod stays open");
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn ingress_ip_block_admits_its_cidr_but_not_the_except_or_beyond() {
    let (mut node, hosts) = node_with_externals("ipb-in");
    let dir = node.manifests();
    dir.write("world.yaml", &world("in"));
    dir.write(
        "policy.yaml",
        "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-cidr, namespace: in}
spec:
  podSelector: {matchLabels: {app: a}}
  ingress:
  - from: [{ipBlock: {cidr: 203.0.113.0/24, except: [203.0.113.128/25]}}]
    ports: [{port: 80}]
",
    );
    node.start_daemon();
    let (a, b) = (
        Pod::named("ipbi-a", "in", "a"),
        Pod::named("ipbi-b", "in", "b"),
    );
    node.add_all(&[&a, &b]);
    let mut peers = vec![Peer::pod(&a), Peer::pod(&b)];
    peers.extend(hosts.iter().map(Peer::external));
    let _servers = reach::serve(&peers, &[80, 81]);
    let m = reach::assert_agree_within(APPLY, &dir, &node, &[&a, &b], &peers, Tcp, 80);
    assert!(cell(&m, INSIDE, "in/a"));
    assert!(!cell(&m, EXCEPTED, "in/a"), "the except is cut out");
    assert!(!cell(&m, OUTSIDE, "in/a"));
    assert!(!cell(&m, "in/b", "in/a"));
    let m81 = reach::assert_agree_within(APPLY, &dir, &node, &[&a, &b], &peers, Tcp, 81);
    assert!(!cell(&m81, INSIDE, "in/a"), "only the rule's port");
}
