//! The rig checked on its own, without podwall in the chain: if these fail, the podwall
//! tests' failures say nothing about podwall.

use podwall_tests::probe::{self, EchoServer, TcpConn, PROBE_TIMEOUT};
use podwall_tests::{cni, ExternalHost, Node, Pod, TestNetns};

#[test]
#[ignore = "needs root: creates network namespaces"]
fn pods_on_a_bridge_only_node_talk_tcp_and_udp() {
    let node = Node::new("rig");
    let list = node.write_conflist("bridge-only", &node.conflist_json("1.0.0", None));
    let (a, b) = (Pod::new("rig-a"), Pod::new("rig-b"));
    let ra = node
        .libcni("add", &list, &a)
        .unwrap_or_else(|e| panic!("{e}"));
    node.libcni("add", &list, &b)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cni::result_ips(&ra),
        vec![a.ip4()],
        "libcni's result names the pod's address"
    );

    let server = EchoServer::start(&b.netns, 8080);
    assert!(probe::tcp_connects(
        &a.netns,
        b.ip4(),
        server.port(),
        PROBE_TIMEOUT
    ));
    assert!(probe::udp_reaches(
        &a.netns,
        b.ip4(),
        server.port(),
        PROBE_TIMEOUT
    ));
    assert!(
        !probe::tcp_connects(&a.netns, b.ip4(), 8081, PROBE_TIMEOUT),
        "nothing listens on 8081: the probe must say so"
    );
    let mut conn = TcpConn::open(&a.netns, b.ip4(), server.port(), PROBE_TIMEOUT).unwrap();
    assert!(conn.echoes(PROBE_TIMEOUT));

    node.libcni("check", &list, &a)
        .unwrap_or_else(|e| panic!("{e}"));
    node.libcni("del", &list, &a)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(a.ips().is_empty(), "DEL removed the pod's interface");
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn netns_closure_runs_inside_and_the_caller_stays_outside() {
    let ns = TestNetns::new("rig-ns");
    let inside = ns.run_in(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap());
    let outside = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    assert_ne!(inside, outside);
    ns.set_sysctl("net.ipv4.ip_forward", "1").unwrap();
    assert_eq!(ns.sysctl("net.ipv4.ip_forward").unwrap(), "1");
    let links = ns.exec(&["ip", "-o", "link"]).unwrap().ok().unwrap().stdout;
    assert_eq!(
        links.lines().count(),
        1,
        "a fresh netns has only lo: {links}"
    );
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn external_hosts_and_pods_reach_each_other_through_the_node() {
    let node = Node::new("rig-ext");
    let list = node.write_conflist("bridge-only", &node.conflist_json("1.0.0", None));
    let pod = Pod::new("rig-ext-a");
    node.libcni("add", &list, &pod)
        .unwrap_or_else(|e| panic!("{e}"));
    let inside = ExternalHost::attach(&node, "203.0.113.10");
    let outside = ExternalHost::attach(&node, "198.51.100.10");
    let at_pod = EchoServer::start(&pod.netns, 8080);
    let at_inside = EchoServer::start(&inside.netns, 8080);
    let _at_outside = EchoServer::start(&outside.netns, 8080);

    for host in [&inside, &outside] {
        assert!(
            probe::tcp_connects(&pod.netns, host.addr(), 8080, PROBE_TIMEOUT),
            "pod → {} through its default route via the node",
            host.addr()
        );
        assert!(
            probe::tcp_connects(&host.netns, pod.ip4(), at_pod.port(), PROBE_TIMEOUT),
            "{} → pod through the node",
            host.addr()
        );
        assert!(
            probe::udp_reaches(&host.netns, pod.ip4(), at_pod.port(), PROBE_TIMEOUT),
            "UDP {} → pod",
            host.addr()
        );
        assert!(
            probe::tcp_connects(&node.netns, host.addr(), 8080, PROBE_TIMEOUT),
            "node → {}",
            host.addr()
        );
    }
    assert!(probe::tcp_connects(
        &outside.netns,
        inside.addr(),
        at_inside.port(),
        PROBE_TIMEOUT
    ));
}
