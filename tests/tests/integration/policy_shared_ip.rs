//! A reused address: two pods of other nodes report one address (the old pod's delete is
//! late, as on a busy node) and both match a policy's peer. The address must stay admitted
//! until the last of them is gone, not lose its set element with the first.
//!
//! The two pods are a host behind the node at that address, as in
//! `pod_of_another_node_is_a_peer_by_the_address_its_manifest_reports`.

use std::time::Duration;

use podwall_policy::Protocol::Tcp;
use podwall_tests::manifests::{documents, namespace, PodManifest};
use podwall_tests::reach::{self, cell, Peer};
use podwall_tests::{ExternalHost, Node, NodeOptions, Pod};

const APPLY: Duration = Duration::from_secs(10);

/// The address both client pods report.
const REUSED: &str = "198.51.100.20";
/// A third client, in the old pod's file: once it is denied, the daemon has applied that
/// file's removal.
const MARKER: &str = "198.51.100.30";
/// Not a pod: denied throughout, so the policy is known to be enforced.
const STRANGER: &str = "198.51.100.10";

const POLICY: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: clients, namespace: svc}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: client}}}]
";

fn client(name: &str, node: &str, host: &ExternalHost) -> String {
    PodManifest::new("svc", name)
        .labels(&[("role", "client")])
        .remote(node, &[host.addr()])
        .yaml()
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn reused_address_stays_admitted_until_its_last_pod_is_deleted() {
    let mut node = Node::with_options(
        "shared-ip",
        NodeOptions {
            manifests: true,
            ..NodeOptions::default()
        },
    );
    let reused = ExternalHost::attach(&node, REUSED);
    let marker = ExternalHost::attach(&node, MARKER);
    let stranger = ExternalHost::attach(&node, STRANGER);
    let dir = node.manifests();
    dir.write(
        "world.yaml",
        &documents(&[
            namespace("svc", &[]),
            PodManifest::new("svc", "api")
                .labels(&[("app", "api")])
                .yaml(),
        ]),
    );
    dir.write("policy.yaml", POLICY);
    dir.write(
        "old.yaml",
        &documents(&[
            client("old", "pwt-node-old", &reused),
            client("marker", "pwt-node-old", &marker),
        ]),
    );
    dir.write("new.yaml", &client("new", "pwt-node-new", &reused));
    node.start_daemon();
    let api = Pod::named("sip-api", "svc", "api");
    node.add_all(&[&api]);
    let peers = [
        Peer::pod(&api),
        Peer::external(&reused),
        Peer::external(&marker),
        Peer::external(&stranger),
    ];
    let (to_api, from_reused, from_marker) = (&peers[0], &peers[1], &peers[2]);
    let _servers = reach::serve(&peers, &[8080]);
    let m = reach::assert_agree_within(APPLY, &dir, &node, &[&api], &peers, Tcp, 8080);
    assert!(
        cell(&m, REUSED, "svc/api"),
        "both pods at {REUSED} are clients"
    );
    assert!(cell(&m, MARKER, "svc/api"));
    assert!(!cell(&m, STRANGER, "svc/api"), "not a pod at all");

    // The old pod's delete arrives: its file goes, and the marker with it.
    dir.remove("old.yaml");
    assert!(
        reach::settles(APPLY, from_marker, to_api, Tcp, 8080, false),
        "the daemon did not apply the removal of old.yaml within {APPLY:?}\n{}",
        node.ruleset_text()
    );
    let m = reach::assert_agree_within(APPLY, &dir, &node, &[&api], &peers, Tcp, 8080);
    assert!(
        cell(&m, REUSED, "svc/api"),
        "svc/new still holds {REUSED} and is a client"
    );

    dir.remove("new.yaml");
    assert!(
        reach::settles(APPLY, from_reused, to_api, Tcp, 8080, false),
        "{REUSED} still admitted after its last pod went\n{}",
        node.ruleset_text()
    );
    reach::assert_agree_within(APPLY, &dir, &node, &[&api], &peers, Tcp, 8080);
}
