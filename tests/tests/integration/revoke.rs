//! Issue 13: a deny means deny, also for connections opened while they were allowed. Without
//! a cut, `ct state established,related accept` lets a long-lived connection (a database
//! session, a websocket) or a UDP exchange flow past the policy that now denies it.
//! podwall deletes the conntrack entries of the flows a change revoked, within a second;
//! connections the change still allows keep flowing.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use podwall_tests::manifests::{documents, namespace, role_pods, PodManifest, DB_FROM_API};
use podwall_tests::probe::{EchoServer, TcpConn};
use podwall_tests::{eventually, Node, NodeOptions, Pod, TestNetns};

const PORT: u16 = 5432;
const TIMEOUT: Duration = Duration::from_millis(500);
/// The manifests are polled every 250 ms, then the change is committed and the flows it
/// revoked are cut within a second.
const CUT: Duration = Duration::from_secs(3);

/// A UDP socket of `from` connected to `to:PORT`, and whether one exchange with the echo
/// server works on it (the same 5-tuple every time, so the same conntrack entry).
struct UdpFlow(UdpSocket);

impl UdpFlow {
    fn open(from: &TestNetns, to: IpAddr) -> Self {
        let any = match to {
            IpAddr::V4(_) => IpAddr::from([0, 0, 0, 0]),
            IpAddr::V6(_) => IpAddr::from([0u16; 8]),
        };
        let socket = from
            .run_in(|| UdpSocket::bind(SocketAddr::new(any, 0)))
            .expect("binding the client");
        socket.connect((to, PORT)).expect("connecting the client");
        socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        UdpFlow(socket)
    }

    fn echoes(&self) -> bool {
        let mut buf = [0u8; 64];
        self.0.send(b"ping").is_ok() && matches!(self.0.recv(&mut buf), Ok(4))
    }
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn connections_a_policy_now_denies_are_cut_and_allowed_ones_keep_flowing() {
    let world = role_pods("app", &["db", "api", "web"]);
    let node = Node::standalone("revoke", NodeOptions::default(), &[("world.yaml", world)]);
    let db = Pod::named("rv-db", "app", "db");
    let api = Pod::named("rv-api", "app", "api");
    let web = Pod::named("rv-web", "app", "web");
    node.add_all(&[&db, &api, &web]);
    let _server = EchoServer::start(&db.netns, PORT);

    // No policy yet: web and api both talk to db, over TCP and UDP.
    let mut web_tcp = TcpConn::open(&web.netns, db.ip4(), PORT, TIMEOUT).expect("web → db");
    let mut api_tcp = TcpConn::open(&api.netns, db.ip4(), PORT, TIMEOUT).expect("api → db");
    let web_udp = UdpFlow::open(&web.netns, db.ip4());
    assert!(web_tcp.echoes(TIMEOUT) && api_tcp.echoes(TIMEOUT) && web_udp.echoes());

    // db now admits only api.
    node.manifests().write("policy.yaml", DB_FROM_API);
    assert!(
        eventually(CUT, || !web_tcp.echoes(TIMEOUT)),
        "web's TCP connection to db outlived the policy that denies it"
    );
    assert!(
        eventually(CUT, || !web_udp.echoes()),
        "web's UDP flow to db outlived the policy that denies it"
    );
    assert!(api_tcp.echoes(TIMEOUT), "api's allowed connection was cut");
    assert!(node.metrics().value("podwall_revoked_flows_total") >= 2.0);
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn an_ipv6_flow_a_policy_now_denies_is_cut() {
    let world = role_pods("app", &["db", "web"]);
    let options = NodeOptions {
        dual_stack: true,
        ..NodeOptions::default()
    };
    let node = Node::standalone("revoke-v6", options, &[("world.yaml", world)]);
    let db = Pod::named("rv6-db", "app", "db");
    let web = Pod::named("rv6-web", "app", "web");
    node.add_all(&[&db, &web]);
    let _server = EchoServer::start(&db.netns, PORT);
    let db6 = (db.ips().into_iter())
        .find(IpAddr::is_ipv6)
        .expect("db has an IPv6 address");
    let web_udp = UdpFlow::open(&web.netns, db6);
    assert!(web_udp.echoes(), "web → db over IPv6, before the policy");
    // db now admits only api: the conntrack listing must hold IPv6 flows too.
    node.manifests().write("policy.yaml", DB_FROM_API);
    assert!(
        eventually(CUT, || !web_udp.echoes()),
        "web's IPv6 UDP flow to db outlived the policy that denies it"
    );
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn a_flow_toward_a_reused_address_does_not_bypass_the_new_pods_ingress() {
    let world = documents(&[
        namespace("app", &[]),
        PodManifest::new("app", "new")
            .labels(&[("role", "locked")])
            .yaml(),
    ]);
    let locked = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: locked, namespace: app}
spec: {podSelector: {matchLabels: {role: locked}}, policyTypes: [Ingress]}
";
    let node = Node::standalone(
        "revoke-reuse",
        NodeOptions::default(),
        &[("world.yaml", world), ("locked.yaml", locked.into())],
    );
    let client = Pod::named("rr-client", "app", "client");
    let old = Pod::named("rr-old", "app", "old");
    node.add_all(&[&client, &old]);
    let reused = old.ip4();
    let server = EchoServer::start(&old.netns, PORT);
    let flow = UdpFlow::open(&client.netns, reused);
    assert!(flow.echoes(), "the old pod is open to the client");
    drop(server);
    // The old pod goes; a pod its policy locks gets its address (host-local's IP= argument,
    // as an address handed out again would).
    node.del(&old).expect("DEL of the old pod");
    let mut new = Pod::named("rr-new", "app", "new");
    new.cni_args = new.cni_args.map(|args| format!("{args};IP={reused}"));
    node.add(&new)
        .expect("ADD of the new pod at the old address");
    assert_eq!(new.ip4(), reused);
    // Before it returned, the ADD forgot the flows conntrack tracked toward the address:
    // none is the new pod's (it has not started), and one would let the client in past its
    // ingress until the sweep, and a reply in flight as the sweep cut it would open the
    // flow again from the new pod's side, where its policy does not look.
    let tracked = (node.netns)
        .exec(&["conntrack", "-L", "-d", &reused.to_string()])
        .expect("listing the node's flows")
        .stdout;
    assert!(
        !tracked.contains(&format!("dst={reused} ")),
        "a flow toward the reused address outlived the ADD:\n{tracked}"
    );
    let _server = EchoServer::start(&new.netns, PORT);
    // The client resolves the address again, to the new pod (its old neighbour entry would
    // send to a MAC that is gone).
    client
        .netns
        .exec(&["ip", "neigh", "flush", "dev", &client.ifname])
        .expect("flushing the client's neighbours");
    assert!(
        eventually(CUT, || !flow.echoes()),
        "the client's flow to the old pod reached the new one past its ingress"
    );
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn a_connection_from_another_node_is_cut_where_its_server_runs() {
    let cluster = podwall_tests::Cluster::started("revoke-x", 2);
    cluster.apply(&namespace("app", &[]));
    cluster.apply(&cluster.pod_yaml(0, "app", "db", &[("role", "db")], &[]));
    cluster.apply(&cluster.pod_yaml(1, "app", "web", &[("role", "web")], &[]));
    let db = Pod::named("rx-db", "app", "db");
    let web = Pod::named("rx-web", "app", "web");
    cluster.attach(0, &db);
    cluster.attach(1, &web);
    let _server = EchoServer::start(&db.netns, PORT);
    let mut conn = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            conn = TcpConn::open(&web.netns, db.ip4(), PORT, TIMEOUT).ok();
            conn.as_mut().is_some_and(|c| c.echoes(TIMEOUT))
        }),
        "web reaches db across nodes"
    );
    let mut conn = conn.expect("a connection");
    cluster.apply(DB_FROM_API);
    assert!(
        eventually(CUT, || !conn.echoes(TIMEOUT)),
        "web's connection from the other node outlived the policy that denies it"
    );
}
