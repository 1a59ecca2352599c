//! The example policies in `conf/policies/` do what their comments say, and their
//! `extensions/v1beta1` originals load to exactly the same policies.

use podwall_policy::manifests::load;
use podwall_policy::{evaluate, Endpoint, PodKey, Protocol, Query, Snapshot};

macro_rules! example {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!("../../../conf/policies/", $name)),
            include_str!(concat!("fixtures/v1beta1/", $name)),
        )
    };
}

const EXAMPLES: [(&str, &str, &str); 5] = [
    example!("1-nsa-allow-same-namespace.yaml"),
    example!("2-nsa-deny-all-ingress.yaml"),
    example!("3-nsa-allow-from-nsb-6379.yaml"),
    example!("4-nsa-egress-to-cidr-5978.yaml"),
    example!("5-default-allow-from-cidr-80.yaml"),
];

const WORLD: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: nsa}
---
apiVersion: v1
kind: Namespace
metadata: {name: nsb, labels: {app: nsb}}
---
apiVersion: v1
kind: Namespace
metadata: {name: nsc}
---
apiVersion: v1
kind: Pod
metadata: {name: a1, namespace: nsa}
status: {podIP: 10.244.0.11}
---
apiVersion: v1
kind: Pod
metadata: {name: a2, namespace: nsa}
status: {podIP: 10.244.0.12}
---
apiVersion: v1
kind: Pod
metadata: {name: b1, namespace: nsb}
status: {podIP: 10.244.0.21}
---
apiVersion: v1
kind: Pod
metadata: {name: c1, namespace: nsc}
status: {podIP: 10.244.0.31}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default}
status: {podIP: 10.244.0.41}
";

fn with(policy: &str) -> Snapshot {
    let loaded = load([("world.yaml", WORLD), ("policy.yaml", policy)]);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    loaded.snapshot
}

fn endpoint(text: &str) -> Endpoint {
    match text.parse() {
        Ok(ip) => Endpoint::Ip(ip),
        Err(_) => Endpoint::Pod(PodKey::parse(text).unwrap()),
    }
}

fn allowed(snap: &Snapshot, from: &str, to: &str, port: u16) -> bool {
    let query = Query {
        from: endpoint(from),
        to: endpoint(to),
        protocol: Protocol::Tcp,
        port,
    };
    evaluate(snap, &query).unwrap().allowed
}

#[test]
fn v1beta1_originals_load_to_the_same_policies() {
    for (name, v1, legacy) in EXAMPLES {
        let new = load([(name, v1)]);
        let old = load([(name, legacy)]);
        assert!(new.errors.is_empty() && old.errors.is_empty(), "{name}");
        assert_eq!(new.snapshot.policies.len(), 1, "{name}");
        assert_eq!(new.snapshot, old.snapshot, "{name}");
    }
}

#[test]
fn same_namespace_example_admits_only_nsa() {
    let snap = with(EXAMPLES[0].1);
    assert!(allowed(&snap, "nsa/a1", "nsa/a2", 80));
    assert!(!allowed(&snap, "nsb/b1", "nsa/a2", 80));
    assert!(!allowed(&snap, "203.0.113.5", "nsa/a2", 80));
    assert!(allowed(&snap, "nsa/a1", "nsb/b1", 80));
}

#[test]
fn deny_all_example_admits_nothing_into_nsa() {
    let snap = with(EXAMPLES[1].1);
    assert!(!allowed(&snap, "nsa/a1", "nsa/a2", 80));
    assert!(!allowed(&snap, "nsb/b1", "nsa/a1", 6379));
    assert!(allowed(&snap, "nsa/a1", "nsb/b1", 80));
}

#[test]
fn nsb_example_admits_labelled_namespaces_on_6379_only() {
    let snap = with(EXAMPLES[2].1);
    assert!(allowed(&snap, "nsb/b1", "nsa/a1", 6379));
    assert!(!allowed(&snap, "nsb/b1", "nsa/a1", 6380));
    assert!(!allowed(&snap, "nsc/c1", "nsa/a1", 6379));
    assert!(!allowed(&snap, "nsa/a2", "nsa/a1", 6379));
}

#[test]
fn egress_example_lets_nsa_reach_only_the_cidr_on_5978() {
    let snap = with(EXAMPLES[3].1);
    assert!(allowed(&snap, "nsa/a1", "203.0.113.7", 5978));
    assert!(!allowed(&snap, "nsa/a1", "203.0.113.7", 80));
    assert!(!allowed(&snap, "nsa/a1", "198.51.100.7", 5978));
    assert!(!allowed(&snap, "nsa/a1", "nsa/a2", 5978));
    assert!(
        allowed(&snap, "nsb/b1", "nsa/a1", 80),
        "ingress is not isolated"
    );
}

#[test]
fn cidr_example_admits_only_the_cidr_into_default_on_80() {
    let snap = with(EXAMPLES[4].1);
    assert!(allowed(&snap, "203.0.113.7", "default/web", 80));
    assert!(!allowed(&snap, "203.0.113.7", "default/web", 443));
    assert!(!allowed(&snap, "198.51.100.7", "default/web", 80));
    assert!(!allowed(&snap, "nsa/a1", "default/web", 80));
    assert!(allowed(&snap, "203.0.113.7", "nsa/a1", 443));
}
