//! Issue 13: hairpin. A pod reaching itself through its own Service (A → VIP, DNAT back to
//! A) is allowed: the evaluator (and the upstream e2e expectations) never isolate a pod from
//! itself, and the kernel must agree even when the pod's ingress denies everything.
//!
//! The Service is what kube-proxy makes of one in iptables mode, in the node's namespace: a
//! DNAT of the VIP to the pod and a masquerade of the hairpinned packet (without it the pod
//! would see its own address as the source and drop the packet as a martian), with hairpin
//! mode on the bridge ports, as kubelet sets it.

use std::net::IpAddr;
use std::time::Duration;

use podwall_policy::Protocol::Tcp;
use podwall_tests::cmd::Output;
use podwall_tests::manifests::{documents, namespace, PodManifest};
use podwall_tests::probe::{tcp_connects, EchoServer};
use podwall_tests::reach::{self, Peer};
use podwall_tests::{eventually, Node, NodeOptions, Pod};

const VIP: &str = "10.96.0.10";
const SERVICE_PORT: u16 = 80;
const POD_PORT: u16 = 8080;

/// kube-proxy's iptables-mode Service for `pod` (VIP:80 → pod:8080), in the node namespace.
fn service(node: &Node, pod: IpAddr) {
    let rules = format!(
        "table ip pwt_service {{
            chain prerouting {{
                type nat hook prerouting priority dstnat; policy accept;
                ip daddr {VIP} tcp dport {SERVICE_PORT} dnat to {pod}:{POD_PORT}
            }}
            chain postrouting {{
                type nat hook postrouting priority srcnat; policy accept;
                ip saddr {pod} ip daddr {pod} masquerade
            }}
        }}"
    );
    let file = node.dir().join("service.nft");
    std::fs::write(&file, rules).expect("writing the service's NAT rules");
    node.netns
        .exec(&["nft", "-f", &file.display().to_string()])
        .and_then(Output::ok)
        .expect("loading the service's NAT rules");
    let ports = node
        .netns
        .exec(&["ip", "-o", "link", "show", "master", node.bridge()])
        .and_then(Output::ok)
        .expect("listing the bridge ports");
    for line in ports.stdout.lines() {
        let Some(port) = line.split(": ").nth(1).and_then(|p| p.split('@').next()) else {
            continue;
        };
        node.netns
            .exec(&[
                "ip",
                "link",
                "set",
                "dev",
                port,
                "type",
                "bridge_slave",
                "hairpin",
                "on",
            ])
            .and_then(Output::ok)
            .expect("hairpin mode on the pod's port");
    }
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn a_pod_reaches_itself_through_its_own_service_as_the_evaluator_says() {
    let deny = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: app}
spec: {podSelector: {}, policyTypes: [Ingress]}
";
    let node = Node::standalone(
        "hairpin",
        NodeOptions::default(),
        &[
            (
                "world.yaml",
                documents(&[
                    namespace("app", &[]),
                    PodManifest::new("app", "web").yaml(),
                    PodManifest::new("app", "other").yaml(),
                ]),
            ),
            ("deny.yaml", deny.into()),
        ],
    );
    let web = Pod::named("hp-web", "app", "web");
    let other = Pod::named("hp-other", "app", "other");
    node.add_all(&[&web, &other]);
    let _server = EchoServer::start(&web.netns, POD_PORT);
    let snap = reach::snapshot(&node.manifests(), &node, &[&web, &other]);
    assert!(
        reach::expect(&snap, &Peer::pod(&web), &Peer::pod(&web), Tcp, POD_PORT),
        "the evaluator lets a pod reach itself"
    );
    assert!(
        !reach::expect(&snap, &Peer::pod(&other), &Peer::pod(&web), Tcp, POD_PORT),
        "and denies the other pod"
    );
    service(&node, web.ip4());
    let vip: IpAddr = VIP.parse().unwrap();
    let timeout = Duration::from_millis(800);
    assert!(
        eventually(Duration::from_secs(5), || tcp_connects(
            &web.netns,
            vip,
            SERVICE_PORT,
            timeout
        )),
        "web cannot reach itself through its service\n{}",
        node.ruleset_text()
    );
    assert!(
        !tcp_connects(&other.netns, vip, SERVICE_PORT, timeout),
        "the deny-all policy still keeps the other pod out of the service"
    );
}
