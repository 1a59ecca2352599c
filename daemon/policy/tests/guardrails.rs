//! The README's ClusterNetworkPolicy guardrail does what the README says: nothing reaches
//! `payments` but `gateway`, and every namespace is default-deny unless its own policies say
//! otherwise.

use podwall_policy::manifests::load;
use podwall_policy::{evaluate, Endpoint, PodKey, Protocol, Query, Snapshot};

const WORLD: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: payments}
---
apiVersion: v1
kind: Namespace
metadata: {name: gateway}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: payments}
status: {phase: Running, podIP: 10.1.0.1, podIPs: [{ip: 10.1.0.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: edge, namespace: gateway}
status: {phase: Running, podIP: 10.1.0.2, podIPs: [{ip: 10.1.0.2}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}
status: {phase: Running, podIP: 10.1.0.3, podIPs: [{ip: 10.1.0.3}]}
---
apiVersion: v1
kind: Pod
metadata: {name: cart, namespace: shop}
status: {phase: Running, podIP: 10.1.0.4, podIPs: [{ip: 10.1.0.4}]}
";

/// The first `yaml` block of the README's guardrail section.
fn guardrail() -> String {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split_once("## Cluster guardrails")
        .expect("the README has the section")
        .1;
    let block = section
        .split_once("```yaml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("a yaml block")
        .0;
    block.to_string()
}

fn snapshot(extra: &str) -> Snapshot {
    let guard = guardrail();
    let loaded = load([
        ("world.yaml", WORLD),
        ("guard.yaml", &guard),
        ("extra.yaml", extra),
    ]);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    assert_eq!(loaded.snapshot.cluster_policies.len(), 2);
    loaded.snapshot
}

fn allowed(snap: &Snapshot, from: &str, to: &str) -> bool {
    let pod = |s: &str| Endpoint::Pod(PodKey::parse(s).expect("ns/name"));
    let query = Query {
        from: pod(from),
        to: pod(to),
        protocol: Protocol::Tcp,
        port: 8080,
    };
    evaluate(snap, &query).expect("known pods").allowed
}

#[test]
fn only_the_gateway_reaches_payments_and_the_rest_is_default_deny() {
    let snap = snapshot("");
    assert!(allowed(&snap, "gateway/edge", "payments/api"));
    assert!(!allowed(&snap, "shop/web", "payments/api"));
    assert!(
        !allowed(&snap, "shop/web", "shop/cart"),
        "default-deny in shop"
    );
    assert!(
        !allowed(&snap, "payments/api", "gateway/edge"),
        "and in gateway"
    );
}

#[test]
fn a_namespaces_own_policy_overrides_the_baseline_but_not_the_admin_tier() {
    let shop_open = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: within-shop, namespace: shop}
spec: {podSelector: {}, ingress: [{from: [{podSelector: {}}]}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-anyone, namespace: payments}
spec: {podSelector: {}, ingress: [{}]}
";
    let snap = snapshot(shop_open);
    assert!(allowed(&snap, "shop/web", "shop/cart"));
    assert!(
        !allowed(&snap, "shop/web", "payments/api"),
        "the Admin Deny still holds"
    );
}
