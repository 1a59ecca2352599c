//! Issue 4: dual stack. Pods get an IPv4 and an IPv6 address (host-local with two ranges);
//! selector rules apply to both families, an IPv6 ipBlock only to IPv6.

use std::time::Duration;

use podwall_policy::Protocol::{Tcp, Udp};
use podwall_tests::manifests::{documents, namespace, PodManifest};
use podwall_tests::reach::{self, cell, Peer};
use podwall_tests::{Node, NodeOptions, Pod};

const APPLY: Duration = Duration::from_secs(10);

#[test]
#[ignore = "needs root: creates network namespaces"]
fn dual_stack_pods_are_enforced_in_both_families() {
    let world = documents(&[
        namespace("v6", &[]),
        namespace("other", &[]),
        PodManifest::new("v6", "a").labels(&[("app", "a")]).yaml(),
        PodManifest::new("v6", "b").yaml(),
        PodManifest::new("other", "c").yaml(),
    ]);
    let same_namespace = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: same-ns, namespace: v6}
spec:
  podSelector: {matchLabels: {app: a}}
  ingress:
  - from: [{podSelector: {}}]
";
    let node = Node::standalone(
        "dual",
        NodeOptions {
            dual_stack: true,
            ..NodeOptions::default()
        },
        &[
            ("world.yaml", world),
            ("same-ns.yaml", same_namespace.into()),
        ],
    );
    let (a, b, c) = (
        Pod::named("v6-a", "v6", "a"),
        Pod::named("v6-b", "v6", "b"),
        Pod::named("v6-c", "other", "c"),
    );
    node.add_all(&[&a, &b, &c]);
    let local = [&a, &b, &c];
    let dir = node.manifests();
    let v4 = [Peer::pod(&a), Peer::pod(&b), Peer::pod(&c)];
    let v6 = [Peer::pod6(&a), Peer::pod6(&b), Peer::pod6(&c)];
    let _servers = reach::serve(&v4, &[80, 8080]);

    for peers in [&v4, &v6] {
        for protocol in [Tcp, Udp] {
            let m = reach::assert_agree_within(APPLY, &dir, &node, &local, peers, protocol, 80);
            assert!(cell(&m, "v6/b", "v6/a"), "{protocol} {}", peers[0].addr);
            assert!(!cell(&m, "other/c", "v6/a"), "{protocol} {}", peers[0].addr);
        }
    }

    // An IPv6 ipBlock naming c's IPv6 address admits c over IPv6 only.
    let c6 = v6[2].addr;
    dir.write(
        "from-c6.yaml",
        &format!(
            "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: from-c6, namespace: v6}}
spec:
  podSelector: {{matchLabels: {{app: a}}}}
  ingress:
  - from: [{{ipBlock: {{cidr: '{c6}/128'}}}}]
    ports: [{{port: 8080}}]
"
        ),
    );
    let m6 = reach::assert_agree_within(APPLY, &dir, &node, &local, &v6, Tcp, 8080);
    assert!(cell(&m6, "other/c", "v6/a"), "IPv6 from c6 on 8080");
    let m4 = reach::assert_agree_within(APPLY, &dir, &node, &local, &v4, Tcp, 8080);
    assert!(
        !cell(&m4, "other/c", "v6/a"),
        "the IPv6 block names no IPv4"
    );
    let m6_80 = reach::assert_agree_within(APPLY, &dir, &node, &local, &v6, Tcp, 80);
    assert!(!cell(&m6_80, "other/c", "v6/a"), "only the rule's port");
}
