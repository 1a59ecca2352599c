//! Issue 2: a daemon restart — graceful or a crash — keeps every attachment and every kernel
//! rule, and connections established before it keep flowing during and after it.

use podwall_tests::probe::{self, EchoServer, TcpConn, PROBE_TIMEOUT};
use podwall_tests::{Node, Pod};

#[derive(Clone, Copy, Debug)]
enum Restart {
    /// SIGTERM, as the kubelet stops a DaemonSet pod.
    Graceful,
    /// SIGKILL, as after an OOM kill: no chance to clean up, the socket file stays.
    Crash,
}

fn restart_keeps_attachments_and_traffic(how: Restart) {
    let mut node = Node::started(&format!("{how:?}").to_lowercase());
    let pods: Vec<Pod> = (0..3).map(|i| Pod::new(&format!("rs{i}"))).collect();
    for pod in &pods {
        node.add(pod)
            .unwrap_or_else(|e| panic!("ADD {}: {e}", pod.container_id));
    }
    let server = EchoServer::start(&pods[0].netns, 7000);
    let mut conn = TcpConn::open(&pods[1].netns, pods[0].ip4(), server.port(), PROBE_TIMEOUT)
        .expect("connection before the restart");
    conn.echo(PROBE_TIMEOUT).expect("echo before the restart");
    let before = node.ruleset().expect("table before the restart");
    let (_, attachments) = node.status();
    assert_eq!(attachments, pods.len());

    match how {
        Restart::Graceful => node.stop_daemon(),
        Restart::Crash => node.kill_daemon(),
    };
    assert_eq!(
        node.ruleset().as_ref().map(|r| &r.maps),
        Some(&before.maps),
        "the kernel keeps every element while the daemon is away"
    );
    conn.echo(PROBE_TIMEOUT)
        .expect("the established connection flows while the daemon is away");

    node.start_daemon();
    assert_eq!(
        node.status(),
        (true, pods.len()),
        "the store kept the attachments"
    );
    for pod in &pods {
        node.check(pod)
            .unwrap_or_else(|e| panic!("CHECK {} after the restart: {e}", pod.container_id));
    }
    let after = node.ruleset().expect("table after the restart");
    assert_eq!(
        after.maps,
        before.maps,
        "the restart left the pods' elements as they were:\n{}",
        node.ruleset_text()
    );
    conn.echo(PROBE_TIMEOUT)
        .expect("the established connection survives the restart");
    assert!(probe::tcp_connects(
        &pods[2].netns,
        pods[0].ip4(),
        server.port(),
        PROBE_TIMEOUT
    ));

    // And the restarted daemon serves new pods.
    let late = Pod::new("rs-late");
    node.add(&late)
        .unwrap_or_else(|e| panic!("ADD after the restart: {e}"));
    node.expect_attached(late.ip4());
    assert_eq!(node.status(), (true, pods.len() + 1));
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn graceful_restart_keeps_attachments_rules_and_connections() {
    restart_keeps_attachments_and_traffic(Restart::Graceful);
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn crash_restart_keeps_attachments_rules_and_connections() {
    restart_keeps_attachments_and_traffic(Restart::Crash);
}
