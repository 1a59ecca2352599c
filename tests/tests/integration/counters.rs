//! Issue 15: every policy rule and every chain's final drop counts its packets, and
//! `/metrics` tells them per policy: the allowed connections a test opens are counted for the
//! policy that allowed them, the denied ones for the policy that isolates the pod, and in
//! `podwall_drops_total`; `podwalld status` shows them next to the pods.

use std::time::Duration;

use podwall_tests::manifests::role_pods;
use podwall_tests::probe::{self, EchoServer};
use podwall_tests::{eventually, Metrics, Node, NodeOptions, Pod};

const POLICY: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-client, namespace: app}
spec:
  podSelector: {matchLabels: {role: web}}
  ingress: [{from: [{podSelector: {matchLabels: {role: client}}}], ports: [{port: 7000}]}]
";
/// Short enough that a denied SYN is not sent again (Linux retransmits after 1 s).
const CONNECT: Duration = Duration::from_millis(300);
/// The counters are read every 10 s.
const READ: Duration = Duration::from_secs(25);

fn series(metrics: &Metrics, verdict: &str) -> f64 {
    let key = format!(
        "podwall_policy_packets_total{{namespace=\"app\",policy=\"web-from-client\",direction=\"ingress\",verdict=\"{verdict}\"}}"
    );
    metrics.samples.get(&key).copied().unwrap_or(0.0)
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn metrics_count_the_packets_each_policy_allowed_and_denied() {
    let world = role_pods("app", &["web", "client", "other"]);
    let node = Node::standalone(
        "counters",
        NodeOptions::default(),
        &[("world.yaml", world), ("policy.yaml", POLICY.into())],
    );
    let pods = Pod::all_named("ct", "app", &["web", "client", "other"]);
    node.add_all(&pods.iter().collect::<Vec<_>>());
    let (web, client, other) = (&pods[0], &pods[1], &pods[2]);
    let server = EchoServer::start(&web.netns, 7000);
    let (allowed, denied) = (7, 5);
    for _ in 0..allowed {
        assert!(probe::tcp_connects(
            &client.netns,
            web.ip4(),
            server.port(),
            CONNECT
        ));
    }
    for _ in 0..denied {
        assert!(!probe::tcp_connects(
            &other.netns,
            web.ip4(),
            server.port(),
            CONNECT
        ));
    }
    // One SYN each reaches web's chain: the rest of a connection is established traffic,
    // accepted before any pod chain.
    let counted = eventually(READ, || {
        let m = node.metrics();
        series(&m, "allow") == allowed as f64
            && series(&m, "deny") == denied as f64
            && m.samples.get("podwall_drops_total{direction=\"ingress\"}") == Some(&(denied as f64))
    });
    let m = node.metrics();
    assert!(
        counted,
        "allow {} (want {allowed}), deny {} (want {denied}), drops {:?}\n{}",
        series(&m, "allow"),
        series(&m, "deny"),
        m.series("podwall_drops_total"),
        node.ruleset_text()
    );
    assert_eq!(m.value("podwall_policies"), 1.0);
    assert_eq!(m.value("podwall_local_pods"), 3.0);

    // `podwalld status`, over the socket: ready, and web's policy with its counts.
    let out = std::process::Command::new(podwall_tests::bins::daemon())
        .args(["status", "--socket"])
        .arg(node.socket())
        .output()
        .expect("podwalld status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.starts_with("ready:"), "{text}");
    let web_line = text
        .lines()
        .find(|l| l.starts_with("app/web\t"))
        .unwrap_or_default();
    assert!(
        web_line.contains(&format!(
            "app/web-from-client (allowed {allowed}, denied {denied})"
        )),
        "{text}"
    );
}
