//! Issue 4: the ports of a rule on a standalone node: named ports resolved on each
//! destination pod, `endPort` ranges, UDP. Probes are compared with the policy evaluator on
//! the ports around each edge.

use std::time::Duration;

use podwall_policy::Protocol::{self, Tcp, Udp};
use podwall_tests::manifests::{documents, namespace, PodManifest};
use podwall_tests::reach::{self, cell, Peer};
use podwall_tests::{Node, NodeOptions, Pod};

const APPLY: Duration = Duration::from_secs(10);

/// A standalone node with `world` and `policy`, pods `ns/names` attached in that order.
fn setup(label: &str, world: String, policy: &str, pods: &[(&str, &str)]) -> (Node, Vec<Pod>) {
    let node = Node::standalone(
        label,
        NodeOptions::default(),
        &[("world.yaml", world), ("policy.yaml", policy.into())],
    );
    let pods: Vec<Pod> = pods
        .iter()
        .map(|(ns, name)| Pod::named(&format!("{label}-{name}"), ns, name))
        .collect();
    node.add_all(&pods.iter().collect::<Vec<_>>());
    (node, pods)
}

/// Agreement on each `(protocol, port)`; returns the matrices in the same order.
fn agree_on(
    node: &Node,
    pods: &[Pod],
    ports: &[(Protocol, u16)],
) -> Vec<podwalld::explain::report::Matrix> {
    let local: Vec<&Pod> = pods.iter().collect();
    let peers: Vec<Peer> = pods.iter().map(Peer::pod).collect();
    let mut numbers: Vec<u16> = ports.iter().map(|(_, p)| *p).collect();
    numbers.sort();
    numbers.dedup();
    let _servers = reach::serve(&peers, &numbers);
    ports
        .iter()
        .map(|(protocol, port)| {
            reach::assert_agree_within(
                APPLY,
                &node.manifests(),
                node,
                &local,
                &peers,
                *protocol,
                *port,
            )
        })
        .collect()
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn named_port_resolves_on_each_destination_pod() {
    let world = documents(&[
        namespace("np", &[]),
        PodManifest::new("np", "web1")
            .labels(&[("tier", "web")])
            .ports(&[("http", 8080, "TCP")])
            .yaml(),
        PodManifest::new("np", "web2")
            .labels(&[("tier", "web")])
            .ports(&[("http", 9090, "TCP"), ("metrics", 8080, "UDP")])
            .yaml(),
        PodManifest::new("np", "client").yaml(),
    ]);
    let policy = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: http-only, namespace: np}
spec:
  podSelector: {matchLabels: {tier: web}}
  ingress:
  - ports: [{port: http}]
";
    let (node, pods) = setup(
        "named",
        world,
        policy,
        &[("np", "web1"), ("np", "web2"), ("np", "client")],
    );
    let m = agree_on(&node, &pods, &[(Tcp, 8080), (Tcp, 9090), (Udp, 8080)]);
    assert!(cell(&m[0], "np/client", "np/web1"), "web1's http is 8080");
    assert!(!cell(&m[1], "np/client", "np/web1"));
    assert!(cell(&m[1], "np/client", "np/web2"), "web2's http is 9090");
    assert!(!cell(&m[0], "np/client", "np/web2"));
    assert!(
        !cell(&m[2], "np/client", "np/web2"),
        "a TCP name never opens the UDP port of the same number"
    );
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn end_port_range_admits_both_ends_and_nothing_outside() {
    let world = documents(&[
        namespace("rng", &[]),
        PodManifest::new("rng", "target")
            .labels(&[("app", "t")])
            .yaml(),
        PodManifest::new("rng", "client").yaml(),
    ]);
    let policy = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: range, namespace: rng}
spec:
  podSelector: {matchLabels: {app: t}}
  ingress:
  - ports: [{protocol: TCP, port: 8000, endPort: 8002}]
";
    let (node, pods) = setup(
        "endport",
        world,
        policy,
        &[("rng", "target"), ("rng", "client")],
    );
    let ports = [7999, 8000, 8002, 8003];
    let m = agree_on(&node, &pods, &ports.map(|p| (Tcp, p)));
    let admitted: Vec<u16> = ports
        .iter()
        .zip(&m)
        .filter(|(_, m)| cell(m, "rng/client", "rng/target"))
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(admitted, [8000, 8002]);
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn udp_rule_admits_its_udp_port_and_not_tcp() {
    let world = documents(&[
        namespace("dns", &[]),
        PodManifest::new("dns", "server")
            .labels(&[("app", "dns")])
            .yaml(),
        PodManifest::new("dns", "client").yaml(),
    ]);
    let policy = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: udp-53, namespace: dns}
spec:
  podSelector: {matchLabels: {app: dns}}
  ingress:
  - ports: [{protocol: UDP, port: 5353}]
";
    let (node, pods) = setup(
        "udp",
        world,
        policy,
        &[("dns", "server"), ("dns", "client")],
    );
    let m = agree_on(&node, &pods, &[(Udp, 5353), (Udp, 5354), (Tcp, 5353)]);
    assert!(cell(&m[0], "dns/client", "dns/server"));
    assert!(!cell(&m[1], "dns/client", "dns/server"));
    assert!(!cell(&m[2], "dns/client", "dns/server"));
}
