//! Issue 5: the upstream NetworkPolicy e2e world on a two-node cluster in Kubernetes mode.
//! Namespaces x, y, z; pods a, b, c in each, spread over both nodes; TCP and UDP on 80 and
//! 81. The classic policies are applied one step after the other through the API server,
//! and after each step every pod probes every pod — same node and across nodes — and the
//! four matrices are compared with the evaluator over the same API objects.

use std::time::{Duration, Instant};

use podwall_policy::Protocol::{Tcp, Udp};
use podwall_tests::e2e::{at, node_of, World, CHECKS};
use podwall_tests::manifests::namespace;
use podwall_tests::Cluster;

/// How long a step may take to show in every probe.
const APPLY: Duration = Duration::from_secs(10);

fn policy(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}"
    )
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn upstream_e2e_policies_agree_with_the_evaluator_across_two_nodes() {
    let started = Instant::now();
    let cluster = Cluster::started("e2e", 2);
    let world = World::start(&cluster, "e2e");
    let peers = world.peers();
    let ip_of = |name: &str| {
        peers
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pod {name}"))
            .addr
    };
    let step = |what: &str| {
        let t = Instant::now();
        let ms = cluster.assert_agree_within(APPLY, &peers, &CHECKS);
        eprintln!("step {what}: agreed in {:?}", t.elapsed());
        ms
    };

    let m = step("no policies");
    assert!(
        at(&m, (Tcp, 80), "x/a", "x/b") && at(&m, (Udp, 81), "y/b", "z/a"),
        "everything is open, across nodes too"
    );

    cluster.apply(&policy(
        "x",
        "deny-ingress",
        "  podSelector: {}\n  policyTypes: [Ingress]\n",
    ));
    let m = step("default deny ingress in x");
    assert!(!at(&m, (Tcp, 80), "y/a", "x/b"), "another node's pod");
    assert!(!at(&m, (Udp, 80), "x/a", "x/c"), "the same node's pod");
    assert!(at(&m, (Tcp, 80), "x/a", "y/b"), "x's egress stays open");

    cluster.apply(&policy(
        "x",
        "allow-from-y",
        "  podSelector: {}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: y}}}]\n",
    ));
    let m = step("allow from namespace y");
    assert!(at(&m, (Tcp, 81), "y/a", "x/b") && at(&m, (Udp, 80), "y/c", "x/a"));
    assert!(!at(&m, (Tcp, 80), "z/a", "x/b"));

    cluster.apply(&policy(
        "x",
        "allow-zb",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: z}}\n      podSelector: {matchLabels: {pod: b}}\n",
    ));
    let m = step("allow from pod b of namespace z (one combined peer)");
    assert!(at(&m, (Tcp, 80), "z/b", "x/a"));
    assert!(!at(&m, (Tcp, 80), "z/a", "x/a"), "another pod of z");
    assert!(
        !at(&m, (Tcp, 80), "x/b", "x/a"),
        "pod b of another namespace"
    );
    assert!(!at(&m, (Tcp, 80), "z/b", "x/b"), "another target");

    cluster.label_pod("z", "b", &[("pod", "d")]);
    let m = step("pod label change of z/b");
    assert!(!at(&m, (Tcp, 80), "z/b", "x/a"), "z/b no longer matches");

    cluster.apply(&namespace("y", &[("ns", "yy")]));
    let m = step("namespace label change of y");
    assert!(!at(&m, (Tcp, 80), "y/a", "x/b"), "y no longer matches");

    cluster.apply(&policy(
        "x",
        "allow-from-y",
        "  podSelector: {}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: yy}}}]\n",
    ));
    let m = step("policy update: allow-from-y selects the new label");
    assert!(at(&m, (Tcp, 80), "y/a", "x/b"));

    cluster.apply(&policy(
        "y",
        "named-ports",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports: [{port: serve-81-tcp}, {port: serve-80-udp, protocol: UDP}]\n",
    ));
    let m = step("named ports on y/a");
    assert!(at(&m, (Tcp, 81), "z/c", "y/a") && at(&m, (Udp, 80), "x/b", "y/a"));
    assert!(!at(&m, (Tcp, 80), "z/c", "y/a") && !at(&m, (Udp, 81), "x/b", "y/a"));

    // x/c also accepts the second node's pod subnet, but for x/b, cut out of it.
    assert_eq!(node_of(0, 1), 1, "x/b runs on the second node");
    cluster.apply(&policy(
        "x",
        "from-node-b",
        &format!(
            "  podSelector: {{matchLabels: {{pod: c}}}}\n  ingress:\n  - from: [{{ipBlock: {{cidr: {}, except: [{}/32]}}}}]\n",
            cluster.node(1).subnet4(),
            ip_of("x/b")
        ),
    ));
    let m = step("ipBlock: the second node's pod subnet, except x/b");
    assert!(
        at(&m, (Tcp, 80), "z/b", "x/c"),
        "z/b runs on the second node"
    );
    assert!(!at(&m, (Tcp, 80), "x/b", "x/c"), "the except");
    assert!(
        !at(&m, (Tcp, 80), "z/a", "x/c"),
        "z/a runs on the first node"
    );

    cluster.apply(&policy(
        "z",
        "egress-range",
        "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to: [{namespaceSelector: {matchLabels: {ns: yy}}}]\n    ports: [{protocol: TCP, port: 81, endPort: 90}]\n",
    ));
    let m = step("default deny egress in z, TCP 81-90 to y");
    assert!(at(&m, (Tcp, 81), "z/a", "y/b"));
    assert!(!at(&m, (Tcp, 80), "z/a", "y/b"), "below the range");
    assert!(!at(&m, (Udp, 81), "z/a", "y/b"), "another protocol");
    assert!(!at(&m, (Tcp, 81), "z/a", "x/b"), "another namespace");

    cluster.apply(&policy(
        "y",
        "deny-all",
        "  podSelector: {}\n  policyTypes: [Ingress, Egress]\n",
    ));
    let m = step("default deny ingress and egress in y");
    assert!(
        at(&m, (Tcp, 81), "z/c", "y/a"),
        "policies add up: named-ports still admits TCP 81 into y/a"
    );
    assert!(!at(&m, (Tcp, 80), "y/b", "x/a"), "y's egress is closed");
    assert!(!at(&m, (Udp, 80), "x/b", "y/c"), "y's ingress is closed");

    cluster.delete(&policy("y", "deny-all", "  podSelector: {}\n"));
    cluster.delete(&policy("x", "deny-ingress", "  podSelector: {}\n"));
    let m = step("policies deleted");
    assert!(at(&m, (Udp, 80), "x/b", "y/c"));

    eprintln!("whole world in {:?}", started.elapsed());
}
