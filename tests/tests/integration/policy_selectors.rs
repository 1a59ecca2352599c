//! Issue 4: who a policy's peers are, on a standalone node: namespace selectors, pod
//! selectors, both in one peer versus two peers, and pods of other nodes matched by the
//! addresses their manifests report. Probes are compared with the policy evaluator.

use std::time::Duration;

use podwall_policy::Protocol::Tcp;
use podwall_tests::manifests::{documents, namespace, PodManifest};
use podwall_tests::reach::{self, cell, Peer};
use podwall_tests::{ExternalHost, Node, NodeOptions, Pod};

const APPLY: Duration = Duration::from_secs(10);

#[test]
#[ignore = "needs root: creates network namespaces"]
fn namespace_selector_admits_only_pods_of_labelled_namespaces() {
    let world = documents(&[
        namespace("db", &[]),
        namespace("front", &[("team", "web")]),
        namespace("ops", &[("team", "ops")]),
        PodManifest::new("db", "main")
            .labels(&[("app", "db")])
            .yaml(),
        PodManifest::new("db", "tool").yaml(),
        PodManifest::new("front", "f").yaml(),
        PodManifest::new("ops", "o").yaml(),
    ]);
    let policy = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-web, namespace: db}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: web}}}]
";
    let node = Node::standalone(
        "ns-sel",
        NodeOptions::default(),
        &[("world.yaml", world), ("policy.yaml", policy.into())],
    );
    let pods = [
        Pod::named("nss-main", "db", "main"),
        Pod::named("nss-tool", "db", "tool"),
        Pod::named("nss-f", "front", "f"),
        Pod::named("nss-o", "ops", "o"),
    ];
    let local: Vec<&Pod> = pods.iter().collect();
    node.add_all(&local);
    let peers: Vec<Peer> = pods.iter().map(Peer::pod).collect();
    let _servers = reach::serve(&peers, &[5432]);
    let m = reach::assert_agree_within(APPLY, &node.manifests(), &node, &local, &peers, Tcp, 5432);
    assert!(cell(&m, "front/f", "db/main"));
    assert!(!cell(&m, "ops/o", "db/main"), "another label value");
    assert!(
        !cell(&m, "db/tool", "db/main"),
        "the policy's own namespace is not labelled"
    );
    assert!(cell(&m, "ops/o", "db/tool"), "an unselected pod stays open");
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn pod_selector_admits_only_labelled_pods_of_the_policys_namespace() {
    let world = documents(&[
        namespace("app", &[]),
        namespace("else", &[]),
        PodManifest::new("app", "api")
            .labels(&[("role", "api")])
            .yaml(),
        PodManifest::new("app", "client")
            .labels(&[("role", "client")])
            .yaml(),
        PodManifest::new("app", "random").yaml(),
        PodManifest::new("else", "client")
            .labels(&[("role", "client")])
            .yaml(),
    ]);
    let policy = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: clients, namespace: app}
spec:
  podSelector: {matchLabels: {role: api}}
  ingress:
  - from: [{podSelector: {matchExpressions: [{key: role, operator: In, values: [client]}]}}]
";
    let node = Node::standalone(
        "pod-sel",
        NodeOptions::default(),
        &[("world.yaml", world), ("policy.yaml", policy.into())],
    );
    let pods = [
        Pod::named("ps-api", "app", "api"),
        Pod::named("ps-client", "app", "client"),
        Pod::named("ps-random", "app", "random"),
        Pod::named("ps-else", "else", "client"),
    ];
    let local: Vec<&Pod> = pods.iter().collect();
    node.add_all(&local);
    let peers: Vec<Peer> = pods.iter().map(Peer::pod).collect();
    let _servers = reach::serve(&peers, &[8080]);
    let m = reach::assert_agree_within(APPLY, &node.manifests(), &node, &local, &peers, Tcp, 8080);
    assert!(cell(&m, "app/client", "app/api"));
    assert!(!cell(&m, "app/random", "app/api"));
    assert!(
        !cell(&m, "else/client", "app/api"),
        "a pod selector alone means the policy's namespace"
    );
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn pod_and_namespace_selector_in_one_peer_intersect_and_as_two_peers_unite() {
    let world = documents(&[
        namespace("t", &[]),
        namespace("x", &[("team", "a")]),
        namespace("y", &[("team", "b")]),
        PodManifest::new("t", "svc")
            .labels(&[("app", "svc")])
            .yaml(),
        PodManifest::new("t", "client")
            .labels(&[("role", "client")])
            .yaml(),
        PodManifest::new("x", "client")
            .labels(&[("role", "client")])
            .yaml(),
        PodManifest::new("x", "plain").yaml(),
        PodManifest::new("y", "client")
            .labels(&[("role", "client")])
            .yaml(),
    ]);
    let one_peer = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: peers, namespace: t}
spec:
  podSelector: {matchLabels: {app: svc}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: a}}
      podSelector: {matchLabels: {role: client}}
";
    let two_peers = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: peers, namespace: t}
spec:
  podSelector: {matchLabels: {app: svc}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: a}}
    - podSelector: {matchLabels: {role: client}}
";
    let node = Node::standalone(
        "combined",
        NodeOptions::default(),
        &[("world.yaml", world), ("peers.yaml", one_peer.into())],
    );
    let pods = [
        Pod::named("cb-svc", "t", "svc"),
        Pod::named("cb-tc", "t", "client"),
        Pod::named("cb-xc", "x", "client"),
        Pod::named("cb-xp", "x", "plain"),
        Pod::named("cb-yc", "y", "client"),
    ];
    let local: Vec<&Pod> = pods.iter().collect();
    node.add_all(&local);
    let peers: Vec<Peer> = pods.iter().map(Peer::pod).collect();
    let _servers = reach::serve(&peers, &[80]);
    let dir = node.manifests();

    let one = reach::assert_agree_within(APPLY, &dir, &node, &local, &peers, Tcp, 80);
    let admitted = |m: &podwalld::explain::report::Matrix| -> Vec<&str> {
        ["t/client", "x/client", "x/plain", "y/client"]
            .into_iter()
            .filter(|s| cell(m, s, "t/svc"))
            .collect()
    };
    assert_eq!(
        admitted(&one),
        ["x/client"],
        "one peer: clients in team=a namespaces"
    );

    dir.write("peers.yaml", two_peers);
    let two = reach::assert_agree_within(APPLY, &dir, &node, &local, &peers, Tcp, 80);
    assert_eq!(
        admitted(&two),
        ["t/client", "x/client", "x/plain"],
        "two peers: every pod of team=a namespaces, and clients of the policy's namespace"
    );
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn pod_of_another_node_is_a_peer_by_the_address_its_manifest_reports() {
    // The "remote pod" is a host behind the node whose address a Pod manifest on another
    // node reports: selectors match it by that address, a host beside it stays out.
    let mut node = Node::with_options(
        "remote",
        NodeOptions {
            manifests: true,
            ..NodeOptions::default()
        },
    );
    let far = ExternalHost::attach(&node, "198.51.100.20");
    let stranger = ExternalHost::attach(&node, "198.51.100.10");
    let world = documents(&[
        namespace("svc", &[]),
        namespace("clients", &[("trusted", "yes")]),
        PodManifest::new("svc", "api")
            .labels(&[("app", "api")])
            .yaml(),
        PodManifest::new("clients", "far")
            .labels(&[("role", "client")])
            .remote("pwt-elsewhere", &[far.addr()])
            .yaml(),
    ]);
    let policy = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: trusted-clients, namespace: svc}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {trusted: 'yes'}}
      podSelector: {matchLabels: {role: client}}
";
    let dir = node.manifests();
    dir.write("world.yaml", &world);
    dir.write("policy.yaml", policy);
    node.start_daemon();
    let api = Pod::named("rm-api", "svc", "api");
    node.add_all(&[&api]);
    let peers = [
        Peer::pod(&api),
        Peer::external(&far),
        Peer::external(&stranger),
    ];
    let _servers = reach::serve(&peers, &[443]);
    let m = reach::assert_agree_within(APPLY, &dir, &node, &[&api], &peers, Tcp, 443);
    assert!(
        cell(&m, "198.51.100.20", "svc/api"),
        "the remote client pod"
    );
    assert!(!cell(&m, "198.51.100.10", "svc/api"), "not a pod at all");
}
