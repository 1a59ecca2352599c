//! Issue 15: every policy rule and every chain's final drop counts its packets, and
//! `/metrics` tells them per policy: the allowed connections a test opens are counted for the
//! policy that allowed them, the denied ones for the policy that isolates the pod, and in
//! `podwall_drops_total`; `podwalld status` shows them next to the pods.

use std::time::Duration;

use podwall_tests::trio::{self, Trio, WEB_FROM_CLIENT};
use podwall_tests::{eventually, Metrics, Node, NodeOptions};

/// The counters are read every 10 s.
const READ: Duration = Duration::from_secs(25);

fn series(metrics: &Metrics, verdict: &str) -> f64 {
    let key = format!(
        "podwall_policy_packets_total{{tier=\"NetworkPolicy\",namespace=\"app\",policy=\"web-from-client\",direction=\"ingress\",verdict=\"{verdict}\"}}"
    );
    metrics.samples.get(&key).copied().unwrap_or(0.0)
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn metrics_count_the_packets_each_policy_allowed_and_denied() {
    let node = Node::standalone(
        "counters",
        NodeOptions::default(),
        &[
            ("world.yaml", trio::world()),
            ("policy.yaml", WEB_FROM_CLIENT.into()),
        ],
    );
    let pods = Trio::attach(&node, "ct");
    let (allowed, denied) = (7, 5);
    for _ in 0..allowed {
        assert!(pods.reaches_web(&pods.client));
    }
    for _ in 0..denied {
        assert!(!pods.reaches_web(&pods.other));
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
    let text = node.status_text();
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
