//! Issue 13: a deny means deny, also for connections opened while they were allowed. Without
//! a cut, `ct state established,related accept` lets a long-lived connection (a database
//! session, a websocket) or a UDP exchange flow past the policy that now denies it.
//! podwall deletes the conntrack entries of the flows a change revoked, within a second;
//! connections the change still allows keep flowing.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use podwall_tests::manifests::{documents, namespace, PodManifest};
use podwall_tests::probe::{EchoServer, TcpConn};
use podwall_tests::{eventually, Node, NodeOptions, Pod, TestNetns};

const PORT: u16 = 5432;
const TIMEOUT: Duration = Duration::from_millis(500);
/// The manifests are polled every 250 ms, then the change is committed and the flows it
/// revoked are cut within a second.
const CUT: Duration = Duration::from_secs(3);

const ONLY_API: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-api, namespace: app}
spec:
  podSelector: {matchLabels: {role: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: api}}}]
";

/// A UDP socket of `from` connected to `to:PORT`, and whether one exchange with the echo
/// server works on it (the same 5-tuple every time, so the same conntrack entry).
struct UdpFlow(UdpSocket);

impl UdpFlow {
    fn open(from: &TestNetns, to: IpAddr) -> Self {
        let socket = from
            .run_in(|| UdpSocket::bind(SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0)))
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
    let world = documents(&[
        namespace("app", &[]),
        PodManifest::new("app", "db")
            .labels(&[("role", "db")])
            .yaml(),
        PodManifest::new("app", "api")
            .labels(&[("role", "api")])
            .yaml(),
        PodManifest::new("app", "web")
            .labels(&[("role", "web")])
            .yaml(),
    ]);
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
    node.manifests().write("policy.yaml", ONLY_API);
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
