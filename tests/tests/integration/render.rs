//! The compiled ruleset and the anti-spoofing guard, rendered, are accepted by the real
//! kernel: every policy feature's rule shape loads with `nft -f` into a fresh network namespace, and loading it again (the
//! daemon's atomic swap) works on a table that exists.

use podwall_policy::manifests::load;
use podwall_tests::netns::TestNetns;
use podwall_tests::nft;
use podwalld::dataplane::render::render;
use podwalld::dataplane::{Desired, Guard};

const WORLD: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {ns: x}}
---
apiVersion: v1
kind: Namespace
metadata: {name: y, labels: {ns: y, team: ops}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec:
  nodeName: n1
  containers:
  - name: c
    image: i
    ports: [{containerPort: 80, name: web}, {containerPort: 53, name: dns, protocol: UDP}]
status: {phase: Running, podIPs: [{ip: 10.9.0.2}, {ip: 'fd00:9::2'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: y, labels: {pod: b}}
spec: {nodeName: n2, containers: [{name: c, image: i, ports: [{containerPort: 8080, name: web}]}]}
status: {phase: Running, podIPs: [{ip: 10.9.1.2}, {ip: 'fd00:9:1::2'}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: features, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: ops}}
      podSelector: {matchExpressions: [{key: pod, operator: In, values: [b]}]}
    ports: [{port: web}, {port: dns, protocol: UDP}]
  - from: [{ipBlock: {cidr: 'fd00:9::/32', except: ['fd00:9:1::/48']}}]
    ports: [{port: 8000, endPort: 8100}, {protocol: SCTP, port: 9}]
  - ports: [{protocol: UDP}]
  egress:
  - to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}]
  - to: [{namespaceSelector: {}}]
    ports: [{port: web}]
";

#[test]
#[ignore = "needs root: creates network namespaces"]
fn every_rule_shape_the_compiler_makes_loads_into_the_kernel() {
    let loaded = load([("world.yaml", WORLD)]);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let ruleset = podwall_policy::compile(&loaded.snapshot, "n1");
    assert!(
        ruleset.chains.len() >= 2,
        "an ingress and an egress chain: {:?}",
        ruleset.chains.keys()
    );
    let a: std::net::IpAddr = "10.9.0.2".parse().unwrap();
    let a6: std::net::IpAddr = "fd00:9::2".parse().unwrap();
    let mut guard = Guard::default();
    guard.sources.insert("veth-a".into(), [a, a6].into());
    let desired = Desired {
        ruleset: ruleset.clone(),
        guard,
        logging: None,
    };
    let script = render(&desired);

    let node = TestNetns::new("render");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table.nft");
    std::fs::write(&path, &script).unwrap();
    let path = path.to_str().unwrap();
    for attempt in ["fresh table", "replacing the table"] {
        let out = node.exec(&["nft", "-f", path]).unwrap();
        assert!(
            out.success(),
            "{attempt}: nft refused the script: {}\n{script}",
            out.stderr
        );
    }

    let table = nft::read_table(&node).unwrap().expect("the table exists");
    for chain in ruleset.chains.keys() {
        assert!(table.has_chain(chain), "chain {chain} missing after load");
    }
    let a: std::net::IpAddr = "10.9.0.2".parse().unwrap();
    let a6: std::net::IpAddr = "fd00:9::2".parse().unwrap();
    assert_eq!(
        table.target("ingress4", a),
        ruleset.ingress.get(&a).map(String::as_str)
    );
    assert_eq!(
        table.target("egress6", a6),
        ruleset.egress.get(&a6).map(String::as_str)
    );
}
