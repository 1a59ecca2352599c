//! Issue 13: traffic with a pod's source address that leaves through the node's own stack
//! (kube-proxy in IPVS mode DNATs at LOCAL_IN and sends the packet out through LOCAL_OUT with
//! the client pod's address) is judged by the client's egress and the server's ingress, as on
//! the forward path; traffic the node sends from its own addresses (kubelet probes) passes.
//!
//! Without IPVS the same packet on the same path is a socket of the node's namespace bound to
//! a pod's address (`IP_FREEBIND`, `IP_TRANSPARENT`): UDP, so that no reply is needed, and a receiver in the
//! destination pod says whether it arrived.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use nix::sys::socket::setsockopt;
use nix::sys::socket::sockopt::{IpFreebind, IpTransparent};
use podwall_tests::manifests::{role_pods, DB_FROM_API};
use podwall_tests::{eventually, Node, NodeOptions, Pod, TestNetns};

const PORT: u16 = 5353;
const APPLY: Duration = Duration::from_secs(10);

/// Send one datagram from the node's namespace with source `from` (a pod's address the node
/// does not hold) to `to`, and say whether a receiver in `receiver` got it.
fn reaches_through_the_node(node: &Node, from: IpAddr, receiver: &TestNetns, to: IpAddr) -> bool {
    let listener = receiver
        .run_in(|| UdpSocket::bind((IpAddr::from([0, 0, 0, 0]), PORT)))
        .expect("binding the receiver");
    listener
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let sender = node
        .netns
        .run_in(|| free_bind_socket(from))
        .expect("a node socket bound to the pod's address");
    let payload = format!("from {from}");
    // A packet the output hook drops fails the send itself (EPERM): not delivered.
    if sender
        .send_to(payload.as_bytes(), SocketAddr::new(to, PORT))
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(listener.recv_from(&mut buf), Ok((n, src)) if &buf[..n] == payload.as_bytes() && src.ip() == from)
}

/// A UDP socket bound to `addr`, an address the namespace need not hold: `IP_FREEBIND` lets
/// it bind, `IP_TRANSPARENT` lets it send (as a transparent proxy does).
fn free_bind_socket(addr: IpAddr) -> nix::Result<UdpSocket> {
    use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let IpAddr::V4(v4) = addr else {
        return Err(nix::Error::EAFNOSUPPORT);
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::empty(),
        None,
    )?;
    setsockopt(&fd, IpFreebind, &true)?;
    setsockopt(&fd, IpTransparent, &true)?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(std::net::SocketAddrV4::new(v4, 0)),
    )?;
    Ok(UdpSocket::from(fd))
}

/// With `DB_FROM_API`: the pods labelled `role: jailed` may send nothing.
const JAIL: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: jail, namespace: app}
spec:
  podSelector: {matchLabels: {role: jailed}}
  policyTypes: [Egress]
";

#[test]
#[ignore = "needs root: creates network namespaces"]
fn pod_sourced_traffic_through_the_node_stack_is_judged_like_forwarded_traffic() {
    let world = role_pods("app", &["db", "api", "web", "jailed"]);
    let node = Node::standalone(
        "node-path",
        NodeOptions::default(),
        &[
            ("world.yaml", world),
            ("policy.yaml", DB_FROM_API.into()),
            ("jail.yaml", JAIL.into()),
        ],
    );
    let db = Pod::named("np-db", "app", "db");
    let api = Pod::named("np-api", "app", "api");
    let web = Pod::named("np-web", "app", "web");
    let jailed = Pod::named("np-jailed", "app", "jailed");
    node.add_all(&[&db, &api, &web, &jailed]);

    // The policy admits api to db: through the node as directly.
    assert!(
        eventually(APPLY, || reaches_through_the_node(
            &node,
            api.ip4(),
            &db.netns,
            db.ip4()
        )),
        "api → db is allowed"
    );
    // web is no peer of db's ingress: an IPVS-style packet from web must not reach it.
    assert!(
        !reaches_through_the_node(&node, web.ip4(), &db.netns, db.ip4()),
        "web → db through the node's stack bypassed db's ingress"
    );
    // jailed may send nothing: its egress holds also when a proxy on the node sends for it.
    assert!(
        !reaches_through_the_node(&node, jailed.ip4(), &web.netns, web.ip4()),
        "jailed → web through the node's stack bypassed jailed's egress"
    );
    // The node's own address (the bridge's, as kubelet's probes use) is no pod: it passes.
    assert!(
        reaches_through_the_node(&node, node.gateway4(), &db.netns, db.ip4()),
        "the node's own traffic to an isolated pod is not judged by policy"
    );
}
