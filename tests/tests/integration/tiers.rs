//! Issue 17: ClusterNetworkPolicy tiers enforced live by a standalone node, as the evaluator
//! judges them: an Admin Deny isolates a new pod from its first packet, an Admin Pass hands
//! a connection to the namespace's NetworkPolicy, a Baseline Deny stands until a
//! NetworkPolicy admits the peer, and the counters and the drop log name the tier and the
//! cluster policy that denied.

use std::time::Duration;

use podwall_tests::trio::{self, Trio, WEB_FROM_CLIENT};
use podwall_tests::{eventually, Node, NodeOptions};
use serde_json::{json, Value};

/// How long the daemon gets to pick up a manifests change.
const APPLY: Duration = Duration::from_secs(10);
/// The counters are read every 10 s.
const READ: Duration = Duration::from_secs(25);
/// How soon a denied connection shows in the drop log.
const LOGGED: Duration = Duration::from_secs(2);

/// Whether `tier`'s policy `name` (a ClusterNetworkPolicy's, without a namespace) is counted
/// as denying web's ingress, within [`READ`].
fn deny_counted(node: &Node, tier: &str, name: &str) -> bool {
    let key = format!(
        "podwall_policy_packets_total{{tier=\"{tier}\",namespace=\"\",policy=\"{name}\",direction=\"ingress\",verdict=\"deny\"}}"
    );
    eventually(READ, || {
        node.metrics().samples.get(&key).is_some_and(|v| *v >= 1.0)
    })
}

/// Whether the drop log has, within [`LOGGED`], a line denying `src` → web that says
/// `tier`, `policies` and `rule`.
fn deny_logged(node: &Node, src: &str, tier: &str, policies: &[&str], rule: Option<&str>) -> bool {
    let said = |l: &Value| {
        l["verdict"] == "deny"
            && l["direction"] == "ingress"
            && l["src"]["pod"] == src
            && l["dst"]["pod"] == "app/web"
            && l["tier"] == tier
            && l["policies"] == json!(policies)
            && l["rule"].as_str() == rule
    };
    eventually(LOGGED, || node.drop_log().iter().any(said))
}

fn cnp(name: &str, tier: &str, ingress: &str) -> String {
    format!(
        "apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {{name: {name}}}
spec:
  tier: {tier}
  priority: 1
  subject: {{pods: {{namespaceSelector: {{}}, podSelector: {{matchLabels: {{role: web}}}}}}}}
  ingress: {ingress}
"
    )
}

const FROM_OTHER: &str =
    "[{pods: {namespaceSelector: {}, podSelector: {matchLabels: {role: other}}}}]";
const FROM_CLIENT: &str =
    "[{pods: {namespaceSelector: {}, podSelector: {matchLabels: {role: client}}}}]";

#[test]
#[ignore = "needs root: creates network namespaces"]
fn the_tiers_are_enforced_from_the_first_packet_and_follow_changes() {
    // Admin: Deny from other, before any pod exists.
    let guard = cnp(
        "guard",
        "Admin",
        &format!("[{{name: no-other, action: Deny, from: {FROM_OTHER}}}]"),
    );
    let node = Node::standalone(
        "tiers",
        NodeOptions::default(),
        &[("world.yaml", trio::world()), ("guard.yaml", guard)],
    );
    let dir = node.manifests();
    let pods = Trio::attach(&node, "tr");
    // No NetworkPolicy isolates web: the Admin Deny alone keeps other out, from the start.
    assert!(
        !pods.reaches_web(&pods.other),
        "other is denied by the Admin tier"
    );
    assert!(pods.reaches_web(&pods.client), "client is not");

    // The Deny is logged and counted for the Admin tier's policy that denied, and its rule.
    assert!(
        deny_logged(&node, "app/other", "Admin", &["guard"], Some("no-other")),
        "{:#?}",
        node.drop_log()
    );
    assert!(
        deny_counted(&node, "Admin", "guard"),
        "{:?}",
        node.metrics().series("podwall_policy_packets_total")
    );
    // `podwalld status` names it by its name and tier, with its count.
    let text = node.status_text();
    let line = (text.lines()).find(|l| l.starts_with("guard\tAdmin\tingress\t"));
    assert!(
        line.is_some_and(|l| !l.ends_with("\t0")),
        "the Admin policy's denies: {text}"
    );

    // Admin Pass for other, and a NetworkPolicy admitting client alone: the NetworkPolicy
    // decides, so other stays out and client gets in.
    dir.write(
        "guard.yaml",
        &cnp(
            "guard",
            "Admin",
            &format!(
                "[{{action: Pass, from: {FROM_OTHER}}}, {{action: Deny, from: {FROM_CLIENT}}}]"
            ),
        ),
    );
    assert!(
        eventually(APPLY, || !pods.reaches_web(&pods.client)),
        "the Admin Deny of client applies"
    );
    dir.write("policy.yaml", WEB_FROM_CLIENT);
    dir.write(
        "guard.yaml",
        &cnp(
            "guard",
            "Admin",
            &format!("[{{action: Pass, from: {FROM_OTHER}}}]"),
        ),
    );
    assert!(
        eventually(APPLY, || pods.reaches_web(&pods.client)),
        "the NetworkPolicy admits client once the Admin tier stops denying it"
    );
    assert!(
        !pods.reaches_web(&pods.other),
        "passed to the NetworkPolicy, which denies it"
    );
    assert!(
        deny_logged(
            &node,
            "app/other",
            "NetworkPolicy",
            &["app/web-from-client"],
            None
        ),
        "{:#?}",
        node.drop_log()
    );

    // Baseline, for every pod of app: Deny from client. The NetworkPolicy isolates web, so it
    // decides and client still gets in; without it, the Baseline Deny stands.
    dir.remove("guard.yaml");
    let baseline = cnp(
        "baseline",
        "Baseline",
        &format!("[{{action: Deny, from: {FROM_CLIENT}}}]"),
    )
    .replace("podSelector: {matchLabels: {role: web}}", "podSelector: {}");
    dir.write("baseline.yaml", &baseline);
    // Loaded: the pods no NetworkPolicy isolates (client, other) have its chain.
    assert!(
        eventually(APPLY, || node.ruleset_text().contains("/baseline#0")),
        "{}",
        node.ruleset_text()
    );
    assert!(
        pods.reaches_web(&pods.client),
        "the NetworkPolicy overrides the Baseline Deny"
    );
    dir.remove("policy.yaml");
    assert!(
        eventually(APPLY, || !pods.reaches_web(&pods.client)),
        "without a NetworkPolicy, the Baseline Deny stands"
    );
    // Its rule has no name: the line names the tier and the policy alone.
    assert!(
        deny_logged(&node, "app/client", "Baseline", &["baseline"], None),
        "{:#?}",
        node.drop_log()
    );
    assert!(
        deny_counted(&node, "Baseline", "baseline"),
        "{:?}",
        node.metrics().series("podwall_policy_packets_total")
    );
    assert!(
        pods.reaches_web(&pods.other),
        "and other, which Baseline does not name, gets in"
    );
}
