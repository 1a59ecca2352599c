//! Test support: the upstream network-policy e2e world (namespaces x, y, z; pods a, b, c in
//! each; every pod serving 80 and 81 on TCP and UDP under the e2e suite's port names) and
//! helpers to ask it questions.
//!
//! Behind the `testing` feature; the helpers panic on a name outside the world or a manifest
//! that does not load, so that the test using them fails.

use std::fmt::Write;
use std::net::IpAddr;

use crate::evaluate::{evaluate, Endpoint, Query};
use crate::manifests::{load_with, Options};
use crate::model::{PodKey, Protocol, Snapshot};

/// Namespaces of the world, in order.
pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
/// Pod names in every namespace, in order.
pub const PODS: [&str; 3] = ["a", "b", "c"];

/// `x` → 1, `y` → 2, `z` → 3; `a` → 1 …: the address of pod `ns/name` is `10.0.<ns>.<name>`
/// and `fd00:<ns>::<name>`.
fn index(list: &[&str], item: &str) -> usize {
    list.iter().position(|s| *s == item).expect("a world name") + 1
}

/// The IPv4 address of a world pod.
pub fn ip4(pod: &str) -> IpAddr {
    address(pod, |ns, name| format!("10.0.{ns}.{name}"))
}

/// The IPv6 address of a world pod.
pub fn ip6(pod: &str) -> IpAddr {
    address(pod, |ns, name| format!("fd00:{ns}::{name}"))
}

fn address(pod: &str, text: fn(usize, usize) -> String) -> IpAddr {
    let key = PodKey::parse(pod).expect("ns/name");
    text(index(&NAMESPACES, &key.namespace), index(&PODS, &key.name))
        .parse()
        .expect("valid address")
}

/// The namespace and pod manifests of the world.
pub fn world_manifests() -> String {
    let mut out = String::new();
    for ns in NAMESPACES {
        writeln!(
            out,
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{ns: {ns}}}}}"
        )
        .expect("writing to a String cannot fail");
        for pod in PODS {
            let key = format!("{ns}/{pod}");
            writeln!(
                out,
                "---
apiVersion: v1
kind: Pod
metadata: {{name: {pod}, namespace: {ns}, labels: {{pod: {pod}}}}}
spec:
  nodeName: node-{pod}
  containers:
  - name: cont-80
    image: agnhost
    ports:
    - {{containerPort: 80, name: serve-80-tcp, protocol: TCP}}
    - {{containerPort: 80, name: serve-80-udp, protocol: UDP}}
  - name: cont-81
    image: agnhost
    ports:
    - {{containerPort: 81, name: serve-81-tcp, protocol: TCP}}
    - {{containerPort: 81, name: serve-81-udp, protocol: UDP}}
status:
  phase: Running
  podIPs: [{{ip: '{}'}}, {{ip: '{}'}}]",
                ip4(&key),
                ip6(&key)
            )
            .expect("writing to a String cannot fail");
        }
    }
    out
}

/// The world plus `extra` manifests (policies, ClusterNetworkPolicies, more pods); panics on
/// any manifest error.
pub fn world(extra: &str) -> Snapshot {
    let base = world_manifests();
    let options = Options {
        cluster_policies: true,
    };
    let loaded = load_with(
        options,
        [("world.yaml", base.as_str()), ("extra.yaml", extra)],
    );
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    loaded.snapshot
}

/// All world pods, `x/a` … `z/c`.
pub fn pods() -> Vec<String> {
    NAMESPACES
        .iter()
        .flat_map(|ns| PODS.iter().map(move |p| format!("{ns}/{p}")))
        .collect()
}

/// Parses `ns/name` as a pod, anything else as an address.
pub fn endpoint(text: &str) -> Endpoint {
    match text.parse::<IpAddr>() {
        Ok(ip) => Endpoint::Ip(ip),
        Err(_) => Endpoint::Pod(PodKey::parse(text).expect("ns/name or an address")),
    }
}

/// The evaluator's verdict for one connection.
pub fn allowed(snap: &Snapshot, from: &str, to: &str, protocol: Protocol, port: u16) -> bool {
    let query = Query {
        from: endpoint(from),
        to: endpoint(to),
        protocol,
        port,
    };
    evaluate(snap, &query).expect("known endpoints").allowed
}

/// The reachability matrix over the world's nine pods: one line per source, one character
/// per destination, `.` allowed and `X` denied, as the e2e suite prints it.
pub fn matrix(snap: &Snapshot, protocol: Protocol, port: u16) -> String {
    let pods = pods();
    pods.iter()
        .map(|from| {
            pods.iter()
                .map(|to| {
                    if allowed(snap, from, to, protocol, port) {
                        '.'
                    } else {
                        'X'
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Normalises an expected matrix written as an indented block in a test.
pub fn expected(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.split_whitespace().collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A ClusterNetworkPolicy manifest (v1beta1) as a document of a stream; `body` is its spec
/// after tier and priority, unindented.
pub fn cluster_policy(name: &str, tier: &str, priority: u16, body: &str) -> String {
    let body: Vec<String> = body.lines().map(|l| format!("  {l}")).collect();
    format!(
        "---\napiVersion: policy.networking.k8s.io/v1beta1\nkind: ClusterNetworkPolicy\n\
         metadata: {{name: {name}}}\nspec:\n  tier: {tier}\n  priority: {priority}\n{}\n",
        body.join("\n")
    )
}

/// Panics unless the world with `manifests` added has the matrix `want` (see [`expected`]).
#[track_caller]
pub fn assert_matrix(manifests: &str, protocol: Protocol, port: u16, want: &str) {
    let got = matrix(&world(manifests), protocol, port);
    let want = expected(want);
    assert_eq!(got, want, "\ngot:\n{got}\nwant:\n{want}");
}
