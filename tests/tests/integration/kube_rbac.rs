//! Issue 5: what the daemon asks of the API server. A 403 on listing pods shows on
//! `/healthz` at once, naming the resource; once allowed, the daemon syncs. And the calls a
//! daemon makes through start, sync, an attach of a pod the API does not know (a direct GET),
//! a broken policy (an Event, then a patch for its repeat), the default conflist's pod
//! range (a GET of its Node) and the ClusterNetworkPolicy CRD installed while it runs (its
//! watch, then the kind's) are exactly the permissions of
//! `podwall_tests::rbac::DAEMON_PERMISSIONS`, the list the ClusterRole is checked against.

use std::collections::BTreeSet;
use std::time::Duration;

use podwall_tests::cni::{default_conflist, node_yaml};
use podwall_tests::manifests::{cluster_policy_crd, namespace};
use podwall_tests::rbac::DAEMON_PERMISSIONS;
use podwall_tests::{eventually, Cluster, Pod};

#[test]
#[ignore = "needs root: creates network namespaces"]
fn forbidden_pod_list_turns_healthz_red_naming_pods_until_allowed() {
    red_until_allowed("pods");
}

/// Without the CRD's list, the daemon cannot know whether the cluster has guardrails: red,
/// not "no CRD".
#[test]
#[ignore = "needs root: creates network namespaces"]
fn forbidden_crd_list_turns_healthz_red_naming_it_until_allowed() {
    red_until_allowed("customresourcedefinitions");
}

fn red_until_allowed(resource: &str) {
    let mut cluster = Cluster::new("rbac", 1);
    cluster.api.deny("list", resource);
    let node = &mut cluster.nodes[0];
    node.spawn_daemon().expect("spawning podwalld");
    let mut last = None;
    let red = eventually(Duration::from_secs(10), || {
        last = node.http_get("/healthz").ok();
        last.as_ref().is_some_and(|(code, body)| {
            *code == 503 && body.contains(resource) && body.contains("forbidden")
        })
    });
    assert!(red, "/healthz: {last:?}\n{}", node.daemon_log());
    cluster.api.allow_all();
    let node = &mut cluster.nodes[0];
    let healthy = node.wait_healthy(Duration::from_secs(30));
    assert!(healthy.is_ok(), "{healthy:?}\n{}", node.daemon_log());
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn daemon_uses_exactly_the_permissions_of_its_cluster_role_list() {
    let mut cluster = Cluster::new("perms", 1);
    // The node runs podwall's default conflist: the daemon reads its Node's pod range.
    let net_dir = cluster.node(0).cni_net_dir();
    std::fs::create_dir_all(&net_dir).expect("the node's CNI config directory");
    std::fs::write(net_dir.join("10-podwall.conflist"), default_conflist())
        .expect("writing the default conflist");
    cluster.apply(&node_yaml(cluster.node(0).name(), &["10.244.9.0/24"]));
    cluster.nodes[0].start_daemon();
    cluster.apply(&cluster_policy_crd());
    cluster.apply(&namespace("shop", &[]));
    // Attached without a Pod object: the daemon asks the API server for it directly.
    let ghost = Pod::named("perm-ghost", "shop", "ghost");
    cluster
        .node(0)
        .add(&ghost)
        .unwrap_or_else(|e| panic!("ADD of a pod the API does not know: {e}"));
    let broken = |note: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
             metadata: {{name: broken, namespace: shop, annotations: {{note: {note}}}}}\n\
             spec:\n  podSelector: {{}}\n  ingress:\n  - from: [{{ipBlock: {{cidr: 10.0.0.0/33}}}}]\n"
        )
    };
    cluster.apply(&broken("first"));
    let verbs = |cluster: &Cluster| -> BTreeSet<String> {
        cluster
            .api
            .events()
            .iter()
            .filter(|e| e.reason() == "InvalidNetworkPolicy")
            .map(|e| e.verb.clone())
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(10), || verbs(&cluster)
            .contains("create")),
        "the broken policy got its Event: {:?}",
        cluster.api.events()
    );
    // A new version of the same broken policy repeats the Event: a patch of its series.
    cluster.apply(&broken("second"));
    assert!(
        eventually(Duration::from_secs(10), || verbs(&cluster)
            .contains("patch")),
        "the repeat patched the Event: {:?}",
        cluster.api.events()
    );

    let used = |cluster: &Cluster| -> BTreeSet<(String, String, String)> {
        cluster
            .api
            .permissions()
            .into_iter()
            .map(|p| (p.group, p.resource, p.verb))
            .collect()
    };
    let listed: BTreeSet<(String, String, String)> = DAEMON_PERMISSIONS
        .iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    // A request is logged once its response is built, a moment after the Event it wrote
    // is stored: wait for the log to catch up before comparing.
    eventually(Duration::from_secs(10), || used(&cluster) == listed);
    let used = used(&cluster);
    let unlisted: Vec<_> = used.difference(&listed).collect();
    let unused: Vec<_> = listed.difference(&used).collect();
    assert!(
        unlisted.is_empty(),
        "the daemon made calls DAEMON_PERMISSIONS does not grant: {unlisted:?}"
    );
    assert!(
        unused.is_empty(),
        "DAEMON_PERMISSIONS grants what the daemon never used: {unused:?}"
    );
}
