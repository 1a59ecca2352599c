//! Issue 4: anti-spoofing. A pod may send only from its own addresses: a packet from a pod's
//! interface with any other source address is dropped, whatever the policies say. Without
//! it, a pod whose egress is denied could slip out by sending from an address that is in
//! no dispatch map (so no egress chain ever judges it).
//!
//! The spoofing pod adds an unused address of the node's subnet to its interface and routes
//! to its target with that address as source; replies come back to it because it owns the
//! address, so an unguarded node would let the connection complete.

use std::net::IpAddr;
use std::time::Duration;

use podwall_policy::Protocol::{Tcp, Udp};
use podwall_tests::cmd::Output;
use podwall_tests::manifests::{documents, namespace, PodManifest};
use podwall_tests::reach::{self, Peer};
use podwall_tests::{Node, NodeOptions, Pod};

const APPLY: Duration = Duration::from_secs(10);

/// Make `pod` send to `target` from `spoofed`, an address it configures but was not given.
fn spoof(pod: &Pod, spoofed: IpAddr, target: IpAddr) {
    for words in [
        vec![
            "ip".to_string(),
            "addr".into(),
            "add".into(),
            format!("{spoofed}/32"),
            "dev".into(),
            pod.ifname.clone(),
        ],
        vec![
            "ip".to_string(),
            "route".into(),
            "replace".into(),
            format!("{target}/32"),
            "dev".into(),
            pod.ifname.clone(),
            "src".into(),
            spoofed.to_string(),
        ],
    ] {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        pod.netns
            .exec(&words)
            .and_then(Output::ok)
            .unwrap_or_else(|e| panic!("spoofing from {}: {e:#}", pod.container_id));
    }
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn pod_sending_from_an_address_it_was_not_given_is_dropped() {
    let deny_egress = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: no-egress, namespace: jail}
spec: {podSelector: {}, policyTypes: [Egress]}
";
    let node = Node::standalone(
        "spoof",
        NodeOptions::default(),
        &[
            (
                "world.yaml",
                documents(&[
                    namespace("free", &[]),
                    namespace("jail", &[]),
                    PodManifest::new("free", "liar").yaml(),
                    PodManifest::new("free", "target").yaml(),
                    PodManifest::new("free", "witness").yaml(),
                    PodManifest::new("jail", "inmate").yaml(),
                ]),
            ),
            ("no-egress.yaml", deny_egress.into()),
        ],
    );
    let liar = Pod::named("sp-liar", "free", "liar");
    let target = Pod::named("sp-target", "free", "target");
    let witness = Pod::named("sp-witness", "free", "witness");
    let inmate = Pod::named("sp-inmate", "jail", "inmate");
    let local = [&liar, &target, &witness, &inmate];
    node.add_all(&local);
    let peers = [
        Peer::pod(&liar),
        Peer::pod(&target),
        Peer::pod(&witness),
        Peer::pod(&inmate),
    ];
    let _servers = reach::serve(&peers, &[80]);
    // With their own addresses every pod gets what the evaluator says: the inmate nothing.
    reach::assert_agree_within(APPLY, &node.manifests(), &node, &local, &peers, Tcp, 80);

    let unused = |last: u8| -> IpAddr {
        let IpAddr::V4(gw) = node.gateway4() else {
            unreachable!("the gateway is IPv4")
        };
        let [a, b, c, _] = gw.octets();
        IpAddr::V4([a, b, c, last].into())
    };
    let (pt, pw) = (Peer::pod(&target), Peer::pod(&witness));
    spoof(&liar, unused(250), target.ip4());
    spoof(&inmate, unused(251), target.ip4());
    // Every case is probed before judging, so a failure names all that went wrong.
    let mut wrong = Vec::new();
    for protocol in [Tcp, Udp] {
        let cases = [
            (
                &liar,
                &pt,
                false,
                "an open pod sending from a foreign source is dropped",
            ),
            (
                &inmate,
                &pt,
                false,
                "a spoofed source does not let a denied pod out",
            ),
            (
                &liar,
                &pw,
                true,
                "the same pod with its own address still gets through",
            ),
        ];
        for (from, to, want, what) in cases {
            if reach::probe_once(&Peer::pod(from), to, protocol, 80) != want {
                wrong.push(format!("{protocol}: {what}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "spoofing not stopped:\n  {}\n{}",
        wrong.join("\n  "),
        node.ruleset_text()
    );
}
