//! Issue 4: isolation on a standalone node (`--manifests`): default deny in each direction,
//! replies to a pod's own connections, and the node's own traffic. Every test compares real
//! probes with the verdicts the policy evaluator gives for the same manifests.

use std::time::Duration;

use podwall_policy::Protocol::{Tcp, Udp};
use podwall_tests::manifests::{documents, namespace, PodManifest};
use podwall_tests::reach::{self, cell, Peer};
use podwall_tests::{Node, NodeOptions, Pod};

/// How long the daemon gets to apply a manifests change (it polls the directory about
/// every second) before the probes must agree with the evaluator.
const APPLY: Duration = Duration::from_secs(10);

/// Namespaces `web` and `other`, pods `web/a`, `web/b`, `other/c`.
fn world() -> String {
    documents(&[
        namespace("web", &[("team", "web")]),
        namespace("other", &[]),
        PodManifest::new("web", "a").labels(&[("app", "a")]).yaml(),
        PodManifest::new("web", "b").labels(&[("app", "b")]).yaml(),
        PodManifest::new("other", "c")
            .labels(&[("app", "c")])
            .yaml(),
    ])
}

const DENY_INGRESS: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: web}
spec: {podSelector: {}, policyTypes: [Ingress]}
";

const DENY_EGRESS: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: web}
spec: {podSelector: {}, policyTypes: [Egress]}
";

struct Pods {
    a: Pod,
    b: Pod,
    c: Pod,
}

fn attach(node: &Node) -> Pods {
    let pods = Pods {
        a: Pod::named("iso-a", "web", "a"),
        b: Pod::named("iso-b", "web", "b"),
        c: Pod::named("iso-c", "other", "c"),
    };
    node.add_all(&[&pods.a, &pods.b, &pods.c]);
    pods
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn default_deny_ingress_drops_new_connections_to_the_namespace_only() {
    let node = Node::standalone(
        "deny-in",
        NodeOptions::default(),
        &[("world.yaml", world()), ("deny.yaml", DENY_INGRESS.into())],
    );
    let p = attach(&node);
    let peers = [Peer::pod(&p.a), Peer::pod(&p.b), Peer::pod(&p.c)];
    let _servers = reach::serve(&peers, &[80]);
    let local = [&p.a, &p.b, &p.c];
    let m = reach::assert_agree_within(APPLY, &node.manifests(), &node, &local, &peers, Tcp, 80);
    assert!(
        !cell(&m, "other/c", "web/a"),
        "the world exercises the deny"
    );
    assert!(!cell(&m, "web/b", "web/a"));
    assert!(cell(&m, "web/a", "other/c"), "egress stays open");
    reach::assert_agree_within(APPLY, &node.manifests(), &node, &local, &peers, Udp, 80);
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn default_deny_egress_drops_new_connections_from_the_namespace_only() {
    let node = Node::standalone(
        "deny-out",
        NodeOptions::default(),
        &[("world.yaml", world()), ("deny.yaml", DENY_EGRESS.into())],
    );
    let p = attach(&node);
    let peers = [Peer::pod(&p.a), Peer::pod(&p.b), Peer::pod(&p.c)];
    let _servers = reach::serve(&peers, &[80]);
    let local = [&p.a, &p.b, &p.c];
    let m = reach::assert_agree_within(APPLY, &node.manifests(), &node, &local, &peers, Tcp, 80);
    assert!(
        !cell(&m, "web/a", "other/c"),
        "the world exercises the deny"
    );
    assert!(!cell(&m, "web/a", "web/b"));
    assert!(cell(&m, "other/c", "web/a"), "ingress stays open");
    reach::assert_agree_within(APPLY, &node.manifests(), &node, &local, &peers, Udp, 80);
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn replies_to_a_pods_own_connections_pass_its_deny_all_ingress() {
    // web/a and web/b accept no connections, yet their own connections to other/c get
    // their replies: replies belong to an allowed connection, not new ingress.
    let node = Node::standalone(
        "replies",
        NodeOptions::default(),
        &[("world.yaml", world()), ("deny.yaml", DENY_INGRESS.into())],
    );
    let p = attach(&node);
    let peers = [Peer::pod(&p.a), Peer::pod(&p.b), Peer::pod(&p.c)];
    let _servers = reach::serve(&peers, &[7000]);
    let local = [&p.a, &p.b, &p.c];
    for protocol in [Tcp, Udp] {
        let m = reach::assert_agree_within(
            APPLY,
            &node.manifests(),
            &node,
            &local,
            &peers,
            protocol,
            7000,
        );
        assert!(
            cell(&m, "web/a", "other/c"),
            "{protocol}: a's connection and its replies"
        );
        assert!(!cell(&m, "other/c", "web/a"), "{protocol}: a is isolated");
    }
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn node_reaches_pods_under_deny_all_ingress() {
    let node = Node::standalone(
        "from-node",
        NodeOptions::default(),
        &[("world.yaml", world()), ("deny.yaml", DENY_INGRESS.into())],
    );
    let p = attach(&node);
    let peers = [
        Peer::node(&node),
        Peer::pod(&p.a),
        Peer::pod(&p.b),
        Peer::pod(&p.c),
    ];
    let _servers = reach::serve(&peers, &[8080]);
    let local = [&p.a, &p.b, &p.c];
    for protocol in [Tcp, Udp] {
        let m = reach::assert_agree_within(
            APPLY,
            &node.manifests(),
            &node,
            &local,
            &peers,
            protocol,
            8080,
        );
        assert!(
            cell(&m, "node", "web/a"),
            "{protocol}: kubelet-style probes pass"
        );
        assert!(!cell(&m, "other/c", "web/a"), "{protocol}: pods do not");
    }
}
