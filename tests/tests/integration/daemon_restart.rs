//! Issue 2: a daemon restart — graceful or a crash — keeps every attachment and every kernel
//! rule, and connections established before it keep flowing during and after it.

use std::time::Duration;

use podwall_tests::manifests::role_pods;
use podwall_tests::node::NodeOptions;
use podwall_tests::probe::{self, EchoServer, TcpConn, PROBE_TIMEOUT};
use podwall_tests::{eventually, nft, Node, Pod};

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

/// Issue 14: a restart after a clean stop keeps the table the last daemon left instead of
/// rewriting it, and still finds what changed while it was away; a crash swaps the table.
#[test]
#[ignore = "needs root: creates network namespaces"]
fn a_clean_restart_keeps_the_table_and_a_crash_keeps_it_only_when_it_reads_back_exactly() {
    let only_client = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-client, namespace: app}
spec:
  podSelector: {matchLabels: {role: web}}
  ingress: [{from: [{podSelector: {matchLabels: {role: client}}}], ports: [{port: 7000}]}]
";
    let mut node = Node::standalone(
        "handover",
        NodeOptions::default(),
        &[
            ("world.yaml", role_pods("app", &["web", "client", "other"])),
            ("policy.yaml", only_client.into()),
        ],
    );
    let pods = Pod::all_named("ho", "app", &["web", "client", "other"]);
    node.add_all(&pods.iter().collect::<Vec<_>>());
    let (web, client, other) = (&pods[0], &pods[1], &pods[2]);
    let server = EchoServer::start(&web.netns, 7000);
    let enforced = || {
        probe::tcp_connects(&client.netns, web.ip4(), server.port(), PROBE_TIMEOUT)
            && !probe::tcp_connects(&other.netns, web.ip4(), server.port(), PROBE_TIMEOUT)
    };
    assert!(enforced(), "{}", node.ruleset_text());
    let listing = nft::listing(&node.netns).expect("the listing");
    let handles = nft::table_handles(&node.netns).expect("the table handles");
    assert_eq!(handles.len(), 2, "both tables: {handles:?}");

    // A clean stop and start: the same tables, not rewritten, read back once.
    node.stop_daemon();
    node.start_daemon();
    let metrics = node.metrics();
    assert_eq!(
        (
            metrics.value("podwall_start_handovers_total"),
            metrics.value("podwall_full_replaces_total")
        ),
        (1.0, 0.0),
        "kept, not swapped:\n{}",
        node.daemon_log()
    );
    assert_eq!(nft::table_handles(&node.netns).unwrap(), handles);
    assert_eq!(nft::listing(&node.netns).unwrap(), listing);
    assert!(eventually(Duration::from_secs(5), || node.healthz().ok() == Some(200)));
    assert_eq!(node.metrics().value("podwall_reconcile_repairs_total"), 0.0);
    assert!(enforced());
    // It serves new pods at once.
    let late = Pod::named("ho-late", "app", "other");
    node.add(&late)
        .unwrap_or_else(|e| panic!("ADD after the restart: {e}"));
    node.del(&late)
        .unwrap_or_else(|e| panic!("DEL after the restart: {e}"));

    // Changed by hand while the daemon was away: kept (same tables), then repaired by the
    // read-back before /healthz turns 200.
    node.stop_daemon();
    let table = node.ruleset().expect("the table");
    let web_chain = table
        .target("ingress4", web.ip4())
        .expect("web's ingress chain")
        .to_string();
    node.netns
        .exec(&["nft", "flush", "chain", "inet", "podwall", &web_chain])
        .and_then(podwall_tests::cmd::Output::ok)
        .expect("flushing web's chain by hand");
    node.start_daemon();
    assert!(eventually(Duration::from_secs(5), || node.healthz().ok() == Some(200)));
    let metrics = node.metrics();
    assert_eq!(
        (
            metrics.value("podwall_start_handovers_total"),
            metrics.value("podwall_reconcile_repairs_total")
        ),
        (1.0, 1.0),
        "kept, then repaired:\n{}",
        node.daemon_log()
    );
    assert_eq!(nft::listing(&node.netns).unwrap(), listing);
    assert!(enforced());

    // A crash leaves no record: the next start reads both tables back whole, and keeps
    // them as they are, since they hold exactly its state.
    let handles = nft::table_handles(&node.netns).unwrap();
    node.kill_daemon();
    node.start_daemon();
    let metrics = node.metrics();
    assert_eq!(
        (
            metrics.value("podwall_start_handovers_total"),
            metrics.value("podwall_full_replaces_total")
        ),
        (1.0, 0.0),
        "read back exactly, kept:\n{}",
        node.daemon_log()
    );
    assert_eq!(nft::table_handles(&node.netns).unwrap(), handles);
    assert!(enforced());

    // One peer element swapped for another while the daemon was down: as many elements as
    // before, and still not this start's state, so a start after a crash swaps the tables in.
    node.kill_daemon();
    let table = node.ruleset().expect("the table");
    let peers = (table.sets.iter())
        .find(|(_, elements)| elements.contains(&client.ip4().to_string()))
        .map(|(name, _)| name.clone())
        .expect("the set of web's peers");
    for (verb, element) in [
        ("delete", client.ip4().to_string()),
        ("add", "10.99.99.99".into()),
    ] {
        node.netns
            .exec(&[
                "nft",
                verb,
                "element",
                "inet",
                "podwall",
                &peers,
                &format!("{{ {element} }}"),
            ])
            .and_then(podwall_tests::cmd::Output::ok)
            .unwrap_or_else(|e| panic!("{verb} an element of {peers} by hand: {e}"));
    }
    node.start_daemon();
    let metrics = node.metrics();
    assert_eq!(
        (
            metrics.value("podwall_start_handovers_total"),
            metrics.value("podwall_full_replaces_total")
        ),
        (0.0, 1.0),
        "not exactly its state: swapped\n{}",
        node.daemon_log()
    );
    assert_ne!(nft::table_handles(&node.netns).unwrap(), handles);
    assert_eq!(nft::listing(&node.netns).unwrap(), listing);
    assert!(enforced());
}
