//! Issue 13: `/healthz` and `/metrics` name namespaces, policies and kernel errors, and
//! pod→node traffic is not filtered: by default they must not be reachable from a pod. The
//! daemon serves them on the node's loopback, where kubelet's probes (`host: 127.0.0.1` in
//! the DaemonSet) reach them.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use podwall_tests::{Node, Pod};

#[test]
#[ignore = "needs root: creates network namespaces"]
fn the_health_port_is_on_the_nodes_loopback_not_reachable_from_pods() {
    // Started with the daemon's default --health-addr, as every rig node is.
    let node = Node::started("health-port");
    let pod = Pod::new("hp-pod");
    node.add_all(&[&pod]);
    assert_eq!(node.healthz().expect("the node reaches /healthz"), 200);
    let port = SocketAddr::new(node.gateway4(), 20244);
    let reached = pod
        .netns
        .run_in(|| TcpStream::connect_timeout(&port, Duration::from_millis(800)))
        .is_ok();
    assert!(
        !reached,
        "a pod reached the health and metrics port on the node's address"
    );
}
