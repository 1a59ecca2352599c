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

/// The MAC address of `ifname` in `ns`.
fn mac(ns: &podwall_tests::TestNetns, ifname: &str) -> String {
    ns.exec(&["cat", &format!("/sys/class/net/{ifname}/address")])
        .and_then(Output::ok)
        .map(|out| out.stdout.trim().to_string())
        .unwrap_or_else(|e| panic!("reading the MAC of {ifname}: {e:#}"))
}

/// The MAC address the node's neighbour table holds for `ip`, if any.
fn neighbour(node: &Node, ip: IpAddr) -> Option<String> {
    let out = node
        .netns
        .exec(&["ip", "neigh", "show", &ip.to_string(), "dev", node.bridge()])
        .and_then(Output::ok)
        .unwrap_or_else(|e| panic!("reading the neighbour table: {e:#}"));
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "lladdr")
        .map(|w| w[1].to_string())
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn a_pod_cannot_answer_arp_for_another_pods_address() {
    let node = Node::standalone(
        "spoof-arp",
        NodeOptions::default(),
        &[(
            "world.yaml",
            documents(&[
                namespace("free", &[]),
                PodManifest::new("free", "liar").yaml(),
                PodManifest::new("free", "victim").yaml(),
            ]),
        )],
    );
    let liar = Pod::named("sa-liar", "free", "liar");
    let victim = Pod::named("sa-victim", "free", "victim");
    node.add_all(&[&liar, &victim]);
    let victim_ip = victim.ip4().to_string();
    // The node learns the victim's MAC, then waits out the neighbour lock time (1 s), after
    // which an ARP message may override the entry.
    node.netns
        .exec(&["busybox", "ping", "-c", "1", "-W", "2", &victim_ip])
        .and_then(Output::ok)
        .expect("the node reaches the victim");
    let victim_mac = mac(&victim.netns, &victim.ifname);
    assert_eq!(neighbour(&node, victim.ip4()), Some(victim_mac.clone()));
    std::thread::sleep(Duration::from_millis(1200));
    // The liar claims the victim's address (it must hold it to send from it) and announces
    // it with a gratuitous ARP, as an address thief does.
    for words in [
        vec![
            "ip",
            "addr",
            "add",
            &format!("{victim_ip}/32"),
            "dev",
            &liar.ifname,
        ],
        vec![
            "busybox",
            "arping",
            "-U",
            "-c",
            "2",
            "-s",
            &victim_ip,
            "-I",
            &liar.ifname,
            &victim_ip,
        ],
    ] {
        liar.netns
            .exec(&words)
            .and_then(Output::ok)
            .unwrap_or_else(|e| panic!("{words:?}: {e:#}"));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        neighbour(&node, victim.ip4()),
        Some(victim_mac),
        "the liar's ARP took over the victim's address (liar is {})\n{}",
        mac(&liar.netns, &liar.ifname),
        node.ruleset_text()
    );
}

/// The link-local address of the pod's interface.
fn link_local(pod: &Pod) -> std::net::Ipv6Addr {
    let out = pod
        .netns
        .exec(&[
            "ip",
            "-6",
            "-o",
            "addr",
            "show",
            "dev",
            &pod.ifname,
            "scope",
            "link",
        ])
        .and_then(Output::ok)
        .unwrap_or_else(|e| panic!("reading the link-local address: {e:#}"));
    out.stdout
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no link-local address in {:?}", out.stdout))
}

fn ifindex(pod: &Pod) -> u32 {
    let out = pod
        .netns
        .exec(&["cat", &format!("/sys/class/net/{}/ifindex", pod.ifname)])
        .and_then(Output::ok)
        .unwrap_or_else(|e| panic!("reading the ifindex: {e:#}"));
    out.stdout.trim().parse().expect("an ifindex")
}

/// Whether `witness` sees a router advertisement that `rogue` multicasts to all nodes.
fn router_advertisement_arrives(rogue: &Pod, witness: &Pod) -> bool {
    use nix::sys::socket::{
        recv, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockProtocol,
        SockType, SockaddrIn6,
    };
    let raw = |ns: &podwall_tests::TestNetns| {
        ns.run_in(|| {
            socket(
                AddressFamily::Inet6,
                SockType::Raw,
                SockFlag::SOCK_NONBLOCK,
                SockProtocol::IcmpV6,
            )
        })
        .expect("a raw ICMPv6 socket")
    };
    let listener = raw(&witness.netns);
    let sender = raw(&rogue.netns);
    setsockopt(&sender, sockopt::Ipv6MulticastHops, &255).expect("hop limit 255, as RAs need");
    // Type 134, code 0, checksum (the kernel's), hop limit 64, no flags, lifetime 1800 s.
    let advert = [134u8, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
    let all_nodes = std::net::SocketAddrV6::new("ff02::1".parse().unwrap(), 0, 0, ifindex(rogue));
    use std::os::fd::AsRawFd;
    for _ in 0..3 {
        sendto(
            sender.as_raw_fd(),
            &advert,
            &SockaddrIn6::from(all_nodes),
            MsgFlags::empty(),
        )
        .expect("sending the advertisement");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut buf = [0u8; 256];
    while let Ok(n) = recv(listener.as_raw_fd(), &mut buf, MsgFlags::empty()) {
        if n > 0 && buf[0] == 134 {
            return true;
        }
    }
    false
}

/// Whether `witness` receives a datagram `rogue` sends from `source`, a link-local address
/// it configures but was not given, to the witness's link-local address.
fn link_local_datagram_arrives(rogue: &Pod, source: std::net::Ipv6Addr, witness: &Pod) -> bool {
    use std::net::{SocketAddrV6, UdpSocket};
    rogue
        .netns
        .exec(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{source}/64"),
            "dev",
            &rogue.ifname,
            "nodad",
        ])
        .and_then(Output::ok)
        .unwrap_or_else(|e| panic!("adding {source}: {e:#}"));
    let listener = witness
        .netns
        .run_in(|| {
            UdpSocket::bind(SocketAddrV6::new(
                std::net::Ipv6Addr::UNSPECIFIED,
                7007,
                0,
                0,
            ))
        })
        .expect("binding the witness");
    listener
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let scope = ifindex(rogue);
    let sender = rogue
        .netns
        .run_in(|| UdpSocket::bind(SocketAddrV6::new(source, 0, 0, scope)))
        .expect("binding the foreign link-local source");
    let to = SocketAddrV6::new(link_local(witness), 7007, 0, scope);
    let mut buf = [0u8; 16];
    for _ in 0..3 {
        if sender.send_to(b"hello", to).is_err() {
            return false;
        }
        if let Ok((n, _)) = listener.recv_from(&mut buf) {
            return &buf[..n] == b"hello";
        }
    }
    false
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn a_pod_can_neither_advertise_a_router_nor_send_from_a_foreign_link_local_address() {
    let node = Node::standalone(
        "spoof-nd",
        NodeOptions {
            dual_stack: true,
            ..NodeOptions::default()
        },
        &[(
            "world.yaml",
            documents(&[
                namespace("free", &[]),
                PodManifest::new("free", "rogue").yaml(),
                PodManifest::new("free", "witness").yaml(),
            ]),
        )],
    );
    let rogue = Pod::named("snd-rogue", "free", "rogue");
    let witness = Pod::named("snd-witness", "free", "witness");
    node.add_all(&[&rogue, &witness]);
    let mut wrong = Vec::new();
    if router_advertisement_arrives(&rogue, &witness) {
        wrong.push("a pod's router advertisement reached another pod");
    }
    if link_local_datagram_arrives(&rogue, "fe80::bad:1".parse().unwrap(), &witness) {
        wrong.push("a datagram from a link-local address the pod was not given arrived");
    }
    assert!(
        wrong.is_empty(),
        "{}\n{}",
        wrong.join("\n"),
        node.ruleset_text()
    );
}
