//! Issue 5: a NetworkPolicy that does not convert (an ipBlock CIDR of /33) fails closed for
//! the pods it selects, leaves every other pod alone, and is reported with a Warning Event
//! `InvalidNetworkPolicy` on the policy. Issue 17: so does a ClusterNetworkPolicy rule that
//! does not convert (its Deny then denies every peer), with `InvalidClusterNetworkPolicy`.

use std::time::Duration;

use podwall_policy::Protocol::Tcp;
use podwall_tests::cluster::Check;
use podwall_tests::manifests::{cluster_policy, cluster_policy_crd, namespace};
use podwall_tests::reach::{self, cell, Peer};
use podwall_tests::{eventually, Cluster, Pod};

const APPLY: Duration = Duration::from_secs(10);
const CHECKS: [Check; 1] = [(Tcp, 80)];

#[test]
#[ignore = "needs root: creates network namespaces"]
fn broken_policy_isolates_the_pods_it_selects_and_posts_an_event() {
    let cluster = Cluster::started("broken", 2);
    cluster.apply(&namespace("bad", &[]));
    cluster.apply(&cluster.pod_yaml(0, "bad", "target", &[("app", "target")], &[]));
    cluster.apply(&cluster.pod_yaml(1, "bad", "peer", &[("app", "peer")], &[]));
    cluster.apply(&cluster.pod_yaml(0, "bad", "bystander", &[("app", "bystander")], &[]));
    let pods = [
        (0, Pod::named("brk-target", "bad", "target")),
        (1, Pod::named("brk-peer", "bad", "peer")),
        (0, Pod::named("brk-bystander", "bad", "bystander")),
    ];
    for (node, pod) in &pods {
        cluster.attach(*node, pod);
    }
    let peers: Vec<Peer> = pods.iter().map(|(_, p)| Peer::pod(p)).collect();
    let _servers = reach::serve(&peers, &[80]);
    cluster.assert_agree_within(APPLY, &peers, &CHECKS);

    cluster.apply(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: broken, namespace: bad}\n\
         spec:\n  podSelector: {matchLabels: {app: target}}\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/33}}]\n",
    );
    let m = cluster.assert_agree_within(APPLY, &peers, &CHECKS);
    assert!(
        !cell(&m[0], "bad/peer", "bad/target"),
        "fail closed, across nodes"
    );
    assert!(
        !cell(&m[0], "bad/bystander", "bad/target"),
        "fail closed, same node"
    );
    assert!(
        cell(&m[0], "bad/peer", "bad/bystander"),
        "other pods are untouched"
    );

    let posted = eventually(Duration::from_secs(10), || {
        cluster.api.events().iter().any(|e| {
            let s = e.subject();
            e.reason() == "InvalidNetworkPolicy"
                && e.event_type() == "Warning"
                && s.kind == "NetworkPolicy"
                && s.namespace == "bad"
                && s.name == "broken"
        })
    });
    assert!(
        posted,
        "no InvalidNetworkPolicy Event on bad/broken; events: {:#?}",
        cluster.api.events()
    );

    cluster.apply(&cluster_policy_crd());
    cluster.apply(&cluster_policy(
        "odd",
        "Admin",
        3,
        "subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: bystander}}}}
ingress: [{action: Deny, from: [{pods: {namespaceSelector: {}, podSelector: {matchExpressions: [{key: app, operator: Near}]}}}]}]",
    ));
    let m = cluster.assert_agree_within(APPLY, &peers, &CHECKS);
    assert!(
        !cell(&m[0], "bad/peer", "bad/bystander"),
        "the Deny of a rule that does not convert denies every peer"
    );
    let posted = eventually(Duration::from_secs(10), || {
        cluster.api.events().iter().any(|e| {
            let s = e.subject();
            e.reason() == "InvalidClusterNetworkPolicy"
                && s.kind == "ClusterNetworkPolicy"
                && s.name == "odd"
        })
    });
    assert!(
        posted,
        "no InvalidClusterNetworkPolicy Event on odd; events: {:#?}",
        cluster.api.events()
    );
}
