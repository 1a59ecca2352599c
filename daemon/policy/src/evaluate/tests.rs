//! The evaluator against Kubernetes' definition of NetworkPolicy, mostly in the world of the
//! upstream e2e suite. Matrices have sources as rows and destinations as columns, in the
//! order x/a x/b x/c y/a y/b y/c z/a z/b z/c; `.` is allowed, `X` denied.

use super::*;
use crate::model::{ObjectKey, Protocol::*};
use crate::testworld::{allowed, assert_matrix, ip4, ip6, world};

const ALL_OPEN: &str = "
    ... ... ...
    ... ... ...
    ... ... ...
    ... ... ...
    ... ... ...
    ... ... ...
    ... ... ...
    ... ... ...
    ... ... ...";

fn policy(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{}\n",
        spec.lines()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

#[test]
fn without_policies_everything_is_allowed() {
    assert_matrix("", Tcp, 80, ALL_OPEN);
    assert_matrix("", Udp, 81, ALL_OPEN);
}

#[test]
fn default_deny_ingress_isolates_every_pod_of_the_namespace() {
    let p = policy("x", "deny-all", "podSelector: {}\npolicyTypes: [Ingress]");
    // Nothing reaches x's pods but themselves; x's pods still reach everyone else.
    assert_matrix(
        &p,
        Tcp,
        80,
        "
        .XX ... ...
        X.X ... ...
        XX. ... ...
        XXX ... ...
        XXX ... ...
        XXX ... ...
        XXX ... ...
        XXX ... ...
        XXX ... ...",
    );
}

#[test]
fn default_deny_egress_stops_every_pod_of_the_namespace_sending() {
    let p = policy("x", "deny-egress", "podSelector: {}\npolicyTypes: [Egress]");
    assert_matrix(
        &p,
        Udp,
        81,
        "
        .XX XXX XXX
        X.X XXX XXX
        XX. XXX XXX
        ... ... ...
        ... ... ...
        ... ... ...
        ... ... ...
        ... ... ...
        ... ... ...",
    );
}

#[test]
fn allow_from_namespace_admits_every_pod_of_the_labelled_namespaces() {
    let p = policy(
        "x",
        "allow-from-y",
        "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: y}}",
    );
    assert_matrix(
        &p,
        Tcp,
        80,
        "
        ... ... ...
        X.. ... ...
        X.. ... ...
        ... ... ...
        ... ... ...
        ... ... ...
        X.. ... ...
        X.. ... ...
        X.. ... ...",
    );
}

#[test]
fn pod_selector_alone_admits_pods_of_the_policy_namespace_only() {
    let p = policy(
        "x",
        "allow-from-b",
        "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - podSelector: {matchLabels: {pod: b}}",
    );
    // y/b and z/b carry the same label but live elsewhere.
    assert_matrix(
        &p,
        Tcp,
        80,
        "
        ... ... ...
        ... ... ...
        X.. ... ...
        X.. ... ...
        X.. ... ...
        X.. ... ...
        X.. ... ...
        X.. ... ...
        X.. ... ...",
    );
}

#[test]
fn pod_and_namespace_selectors_in_one_peer_intersect() {
    let p = policy(
        "x",
        "allow-b-in-y",
        "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: y}}\n    podSelector: {matchLabels: {pod: b}}",
    );
    assert_matrix(
        &p,
        Tcp,
        80,
        "
        ... ... ...
        X.. ... ...
        X.. ... ...
        X.. ... ...
        ... ... ...
        X.. ... ...
        X.. ... ...
        X.. ... ...
        X.. ... ...",
    );
}

#[test]
fn pod_and_namespace_selectors_as_two_peers_unite() {
    let p = policy(
        "x",
        "allow-y-or-b",
        "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: y}}\n  - podSelector: {matchLabels: {pod: b}}",
    );
    assert_matrix(
        &p,
        Tcp,
        80,
        "
        ... ... ...
        ... ... ...
        X.. ... ...
        ... ... ...
        ... ... ...
        ... ... ...
        X.. ... ...
        X.. ... ...
        X.. ... ...",
    );
}

#[test]
fn empty_namespace_selector_means_every_namespace() {
    let p = policy(
        "x",
        "allow-c-anywhere",
        "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - namespaceSelector: {}\n    podSelector: {matchLabels: {pod: c}}",
    );
    let snap = world(&p);
    assert!(allowed(&snap, "z/c", "x/a", Tcp, 80));
    assert!(allowed(&snap, "x/c", "x/a", Tcp, 80));
    assert!(!allowed(&snap, "z/b", "x/a", Tcp, 80));
    // External addresses are not pods of any namespace.
    assert!(!allowed(&snap, "192.0.2.1", "x/a", Tcp, 80));
}

#[test]
fn namespace_name_label_selects_a_namespace_without_custom_labels() {
    let p = policy(
        "x",
        "allow-by-name",
        "podSelector: {}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: z}}",
    );
    let snap = world(&p);
    assert!(allowed(&snap, "z/a", "x/b", Tcp, 80));
    assert!(!allowed(&snap, "y/a", "x/b", Tcp, 80));
}

#[test]
fn match_expressions_select_like_kubernetes() {
    let cases = [
        (
            "{key: pod, operator: In, values: [b, c]}",
            [false, true, true],
        ),
        (
            "{key: pod, operator: NotIn, values: [b]}",
            [true, false, true],
        ),
        ("{key: pod, operator: Exists}", [true, true, true]),
        ("{key: pod, operator: DoesNotExist}", [false, false, false]),
    ];
    for (expr, want) in cases {
        let p = policy(
            "y",
            "expr",
            &format!("podSelector: {{}}\ningress:\n- from:\n  - namespaceSelector: {{}}\n    podSelector: {{matchExpressions: [{expr}]}}"),
        );
        let snap = world(&p);
        let got = ["x/a", "x/b", "x/c"].map(|from| allowed(&snap, from, "y/a", Tcp, 80));
        assert_eq!(got, want, "{expr}");
    }
}

#[test]
fn named_port_allows_only_the_port_it_names() {
    let p = policy(
        "x",
        "allow-named",
        "podSelector: {matchLabels: {pod: a}}\ningress:\n- ports: [{port: serve-80-tcp}]",
    );
    let snap = world(&p);
    assert!(allowed(&snap, "y/b", "x/a", Tcp, 80));
    assert!(!allowed(&snap, "y/b", "x/a", Tcp, 81));
    // serve-80-tcp is a TCP port; the rule's protocol defaults to TCP, so UDP 80 is not it.
    assert!(!allowed(&snap, "y/b", "x/a", Udp, 80));
}

#[test]
fn named_port_with_a_protocol_no_container_uses_matches_nothing() {
    let p = policy(
        "x",
        "allow-named-udp",
        "podSelector: {matchLabels: {pod: a}}\ningress:\n- ports: [{port: serve-80-tcp, protocol: UDP}]",
    );
    let snap = world(&p);
    for (proto, port) in [(Tcp, 80), (Udp, 80), (Tcp, 81), (Udp, 81)] {
        assert!(!allowed(&snap, "y/b", "x/a", proto, port), "{proto} {port}");
    }
}

#[test]
fn named_port_resolves_on_each_destination_pod() {
    let extra = "
---
apiVersion: v1
kind: Pod
metadata: {name: web1, namespace: y, labels: {app: web}}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 8080, name: http}]}]}
status: {podIP: 10.0.2.11}
---
apiVersion: v1
kind: Pod
metadata: {name: web2, namespace: y, labels: {app: web}}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 9090, name: http}, {containerPort: 8080, name: alt, protocol: UDP}]}]}
status: {podIP: 10.0.2.12}
";
    let p = policy(
        "x",
        "egress-http",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress:\n- ports: [{port: http}]",
    );
    let snap = world(&format!("{extra}{p}"));
    assert!(allowed(&snap, "x/a", "y/web1", Tcp, 8080));
    assert!(!allowed(&snap, "x/a", "y/web1", Tcp, 9090));
    assert!(allowed(&snap, "x/a", "y/web2", Tcp, 9090));
    assert!(!allowed(&snap, "x/a", "y/web2", Tcp, 8080));
    // A named port cannot resolve on an address outside the cluster.
    assert!(!allowed(&snap, "x/a", "192.0.2.1", Tcp, 8080));
    // The same port number under the same name, reached by address, resolves the same.
    assert!(allowed(&snap, "x/a", "10.0.2.12", Tcp, 9090));
}

#[test]
fn end_port_range_is_inclusive() {
    let p = policy(
        "x",
        "range",
        "podSelector: {}\ningress:\n- ports: [{port: 80, endPort: 81, protocol: UDP}]",
    );
    let snap = world(&p);
    assert!(allowed(&snap, "y/a", "x/b", Udp, 80));
    assert!(allowed(&snap, "y/a", "x/b", Udp, 81));
    assert!(!allowed(&snap, "y/a", "x/b", Udp, 82));
    assert!(!allowed(&snap, "y/a", "x/b", Udp, 79));
    assert!(!allowed(&snap, "y/a", "x/b", Tcp, 80));
}

#[test]
fn protocol_defaults_to_tcp_and_missing_port_means_every_port() {
    let p = policy("x", "tcp-any", "podSelector: {}\ningress:\n- ports: [{}]");
    let snap = world(&p);
    assert!(allowed(&snap, "y/a", "x/b", Tcp, 80));
    assert!(allowed(&snap, "y/a", "x/b", Tcp, 65535));
    assert!(!allowed(&snap, "y/a", "x/b", Udp, 80));
    let p = policy(
        "x",
        "udp-any",
        "podSelector: {}\ningress:\n- ports: [{protocol: UDP}]",
    );
    let snap = world(&p);
    assert!(allowed(&snap, "y/a", "x/b", Udp, 81));
    assert!(!allowed(&snap, "y/a", "x/b", Tcp, 81));
}

#[test]
fn sctp_only_rule_isolates_and_never_admits_tcp() {
    let p = policy(
        "x",
        "sctp",
        "podSelector: {matchLabels: {pod: a}}\ningress:\n- ports: [{port: 80, protocol: SCTP}]",
    );
    let snap = world(&p);
    assert!(allowed(&snap, "y/a", "x/a", Sctp, 80));
    assert!(!allowed(&snap, "y/a", "x/a", Tcp, 80));
    assert!(!allowed(&snap, "y/a", "x/a", Udp, 80));
}

#[test]
fn ip_block_matches_pod_addresses_and_except_carves_them_out() {
    let p = policy(
        "x",
        "block",
        "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - ipBlock: {cidr: 10.0.0.0/16, except: [10.0.2.0/24]}",
    );
    // Every pod is in 10.0.0.0/16; y's pods are in the except.
    assert_matrix(
        &p,
        Tcp,
        80,
        "
        ... ... ...
        ... ... ...
        ... ... ...
        X.. ... ...
        X.. ... ...
        X.. ... ...
        ... ... ...
        ... ... ...
        ... ... ...",
    );
    let snap = world(&p);
    assert!(!allowed(&snap, "192.0.2.1", "x/a", Tcp, 80));
    assert!(allowed(&snap, "10.0.9.9", "x/a", Tcp, 80));
}

#[test]
fn except_narrows_only_its_own_peer() {
    let p = policy(
        "x",
        "block-or-y",
        "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - ipBlock: {cidr: 10.0.0.0/16, except: [10.0.2.0/24]}\n  - namespaceSelector: {matchLabels: {ns: y}}",
    );
    let other = policy(
        "x",
        "allow-y-b",
        "podSelector: {matchLabels: {pod: b}}\ningress:\n- from:\n  - ipBlock: {cidr: 10.0.2.0/24}",
    );
    let snap = world(&format!("{p}{other}"));
    // The except of one peer is no deny: another peer of the same rule admits y.
    assert!(allowed(&snap, "y/a", "x/a", Tcp, 80));
    assert!(allowed(&snap, "y/a", "x/b", Tcp, 80));
    assert!(!allowed(&snap, "10.0.2.200", "x/a", Tcp, 80));
}

#[test]
fn egress_to_ip_block_allows_only_addresses_in_it() {
    let p = policy(
        "x",
        "egress-z",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress:\n- to:\n  - ipBlock: {cidr: 10.0.3.0/24}",
    );
    assert_matrix(
        &p,
        Tcp,
        80,
        "
        .XX XXX ...
        ... ... ...
        ... ... ...
        ... ... ...
        ... ... ...
        ... ... ...
        ... ... ...
        ... ... ...
        ... ... ...",
    );
}

#[test]
fn multiple_policies_selecting_a_pod_are_unioned() {
    let a = policy(
        "x",
        "from-y",
        "podSelector: {matchLabels: {pod: a}}\ningress:\n- from: [{namespaceSelector: {matchLabels: {ns: y}}}]",
    );
    let b = policy(
        "x",
        "from-z-81",
        "podSelector: {}\ningress:\n- from: [{namespaceSelector: {matchLabels: {ns: z}}}]\n  ports: [{port: 81}]",
    );
    let snap = world(&format!("{a}{b}"));
    assert!(allowed(&snap, "y/c", "x/a", Tcp, 80));
    assert!(!allowed(&snap, "z/c", "x/a", Tcp, 80));
    assert!(allowed(&snap, "z/c", "x/a", Tcp, 81));
    assert!(!allowed(&snap, "y/c", "x/b", Tcp, 80));
    let verdict = evaluate(
        &snap,
        &Query {
            from: Endpoint::Pod(ObjectKey::new("y", "c")),
            to: Endpoint::Pod(ObjectKey::new("x", "a")),
            protocol: Tcp,
            port: 81,
        },
    )
    .unwrap();
    let Path::Policies {
        ingress: Side::Allowed {
            isolated_by,
            allowed_by,
        },
        egress,
    } = verdict.path
    else {
        panic!("{verdict:?}");
    };
    assert_eq!(egress, Side::NotIsolated);
    let isolating: Vec<String> = isolated_by.iter().map(|i| i.policy.to_string()).collect();
    assert_eq!(isolating, ["x/from-y", "x/from-z-81"]);
    let rules: Vec<String> = allowed_by.iter().map(|r| r.to_string()).collect();
    assert_eq!(rules, ["x/from-y spec.ingress[0]"]);
}

#[test]
fn policy_types_default_as_the_api_server_defaults_them() {
    let deny_ingress_and_egress =
        "podSelector: {}\negress:\n- to: [{ipBlock: {cidr: 192.0.2.0/24}}]";
    let empty_egress_list = "podSelector: {}\negress: []";
    let egress_only = "podSelector: {}\npolicyTypes: [Egress]";
    let ingress_only_ignores_egress_rules = "podSelector: {}\npolicyTypes: [Ingress]\ningress: [{}]\negress:\n- to: [{ipBlock: {cidr: 192.0.2.0/24}}]";
    let empty_types = "podSelector: {}\npolicyTypes: []";
    // (spec, y/a → x/a allowed, x/a → y/a allowed, what Kubernetes does)
    let cases = [
        (
            deny_ingress_and_egress,
            false,
            false,
            "egress rules add Egress; Ingress is always there",
        ),
        (
            empty_egress_list,
            false,
            true,
            "egress: [] does not add Egress",
        ),
        (
            egress_only,
            true,
            false,
            "only Egress listed: ingress is not isolated",
        ),
        (
            ingress_only_ignores_egress_rules,
            true,
            true,
            "egress rules without Egress in policyTypes are ignored",
        ),
        (
            empty_types,
            false,
            true,
            "an empty policyTypes list defaults like a missing one",
        ),
    ];
    for (spec, inbound, outbound, what) in cases {
        let snap = world(&policy("x", "p", spec));
        assert_eq!(
            allowed(&snap, "y/a", "x/a", Tcp, 80),
            inbound,
            "{what}: ingress"
        );
        assert_eq!(
            allowed(&snap, "x/a", "y/a", Tcp, 80),
            outbound,
            "{what}: egress"
        );
    }
}

#[test]
fn empty_and_missing_rule_lists_mean_what_kubernetes_says() {
    // (spec, y/a → x/a TCP 80, y/a → x/a UDP 81, what)
    let cases = [
        (
            "podSelector: {}\ningress: []",
            false,
            false,
            "ingress: [] allows nothing",
        ),
        (
            "podSelector: {}\npolicyTypes: [Ingress]",
            false,
            false,
            "missing ingress allows nothing",
        ),
        (
            "podSelector: {}\ningress: [{}]",
            true,
            true,
            "one empty rule allows everything",
        ),
        (
            "podSelector: {}\ningress: [{from: []}]",
            true,
            true,
            "from: [] means every source",
        ),
        (
            "podSelector: {}\ningress: [{from: [], ports: [{port: 80}]}]",
            true,
            false,
            "ports without peers: every source on those ports",
        ),
        (
            "podSelector: {}\ningress: [{ports: []}]",
            true,
            true,
            "ports: [] means every port",
        ),
    ];
    for (spec, tcp80, udp81, what) in cases {
        let snap = world(&policy("x", "p", spec));
        assert_eq!(
            allowed(&snap, "y/a", "x/a", Tcp, 80),
            tcp80,
            "{what}: TCP 80"
        );
        assert_eq!(
            allowed(&snap, "y/a", "x/a", Udp, 81),
            udp81,
            "{what}: UDP 81"
        );
        assert_eq!(
            allowed(&snap, "198.51.100.7", "x/a", Tcp, 80),
            tcp80,
            "{what}: external"
        );
    }
}

#[test]
fn ipv6_blocks_match_ipv6_addresses_only() {
    let p = policy(
        "x",
        "v6",
        "podSelector: {}\ningress:\n- from: [{ipBlock: {cidr: '::/0'}}]",
    );
    let snap = world(&p);
    assert!(allowed(&snap, "2001:db8::1", "x/a", Tcp, 80));
    assert!(allowed(
        &snap,
        &ip6("y/a").to_string(),
        &ip6("x/a").to_string(),
        Tcp,
        80
    ));
    assert!(!allowed(
        &snap,
        &ip4("y/a").to_string(),
        &ip4("x/a").to_string(),
        Tcp,
        80
    ));
    assert!(!allowed(&snap, "192.0.2.1", "x/a", Tcp, 80));
    // Between two dual-stack pods the connection is judged on IPv4.
    assert!(!allowed(&snap, "y/a", "x/a", Tcp, 80));
}

#[test]
fn an_address_of_a_pod_is_that_pod() {
    let p = policy(
        "x",
        "from-b",
        "podSelector: {matchLabels: {pod: a}}\ningress:\n- from: [{podSelector: {matchLabels: {pod: b}}}]",
    );
    let snap = world(&p);
    assert!(allowed(&snap, &ip4("x/b").to_string(), "x/a", Tcp, 80));
    assert!(allowed(
        &snap,
        &ip6("x/b").to_string(),
        &ip6("x/a").to_string(),
        Tcp,
        80
    ));
    assert!(!allowed(&snap, &ip4("x/c").to_string(), "x/a", Tcp, 80));
}

#[test]
fn host_network_pods_are_never_targets_nor_selected_peers() {
    let extra = "
---
apiVersion: v1
kind: Pod
metadata: {name: agent, namespace: x, labels: {pod: b}}
spec: {hostNetwork: true, containers: [{name: c, image: i}]}
status: {podIP: 192.168.0.10}
";
    let deny = policy("x", "deny", "podSelector: {}\ningress: []");
    let from_b = policy(
        "x",
        "from-b",
        "podSelector: {matchLabels: {pod: a}}\ningress:\n- from: [{podSelector: {matchLabels: {pod: b}}}]",
    );
    let snap = world(&format!("{extra}{deny}{from_b}"));
    // Default deny in x does not touch the hostNetwork pod.
    assert!(allowed(&snap, "y/a", "x/agent", Tcp, 80));
    // It carries pod=b, yet the selector does not match it.
    assert!(!allowed(&snap, "x/agent", "x/a", Tcp, 80));
    assert!(allowed(&snap, "x/b", "x/a", Tcp, 80));
}

#[test]
fn finished_pods_are_ignored_and_their_address_belongs_to_the_new_pod() {
    let extra = "
---
apiVersion: v1
kind: Pod
metadata: {name: old, namespace: y, labels: {pod: b}}
status: {phase: Succeeded, podIP: 10.0.2.50}
---
apiVersion: v1
kind: Pod
metadata: {name: new, namespace: y, labels: {pod: other}}
status: {phase: Running, podIP: 10.0.2.50}
";
    let p = policy(
        "x",
        "from-b",
        "podSelector: {}\ningress:\n- from: [{namespaceSelector: {}, podSelector: {matchLabels: {pod: b}}}]",
    );
    let snap = world(&format!("{extra}{p}"));
    assert!(!allowed(&snap, "10.0.2.50", "x/a", Tcp, 80));
    assert!(allowed(&snap, "y/b", "x/a", Tcp, 80));
}

#[test]
fn traffic_from_the_node_and_to_oneself_is_always_allowed() {
    let p = policy(
        "x",
        "deny",
        "podSelector: {}\npolicyTypes: [Ingress, Egress]",
    );
    let snap = world(&p);
    let from_node = Query {
        from: Endpoint::Node,
        to: Endpoint::Pod(ObjectKey::new("x", "a")),
        protocol: Tcp,
        port: 8080,
    };
    let verdict = evaluate(&snap, &from_node).unwrap();
    assert!(verdict.allowed);
    assert_eq!(verdict.path, Path::FromNode);
    assert!(allowed(&snap, "x/a", "x/a", Udp, 80));
    assert!(!allowed(&snap, "x/a", "x/b", Udp, 80));
}

#[test]
fn external_to_external_is_not_policed() {
    let p = policy(
        "x",
        "deny",
        "podSelector: {}\npolicyTypes: [Ingress, Egress]",
    );
    let snap = world(&p);
    assert!(allowed(&snap, "192.0.2.1", "198.51.100.1", Tcp, 80));
    assert!(!allowed(&snap, "192.0.2.1", "x/a", Tcp, 80));
    assert!(!allowed(&snap, "x/a", "192.0.2.1", Tcp, 80));
}

#[test]
fn broken_policy_keeps_its_pods_isolated_and_others_still_apply() {
    let broken = policy(
        "x",
        "broken",
        "podSelector: {matchLabels: {pod: a}}\ningress:\n- from: [{ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16]}}]",
    );
    let good = policy(
        "x",
        "from-y",
        "podSelector: {matchLabels: {pod: a}}\ningress:\n- from: [{namespaceSelector: {matchLabels: {ns: y}}}]",
    );
    let base = crate::testworld::world_manifests();
    let policies = format!("{broken}{good}");
    let loaded = crate::manifests::load([("w.yaml", base.as_str()), ("p.yaml", policies.as_str())]);
    assert_eq!(loaded.errors.len(), 1);
    let snap = loaded.snapshot;
    // The broken policy allows nothing (its ipBlock would have admitted z), the good one applies.
    assert!(!allowed(&snap, "z/a", "x/a", Tcp, 80));
    assert!(allowed(&snap, "y/a", "x/a", Tcp, 80));
    // Pods the broken policy does not select are untouched.
    assert!(allowed(&snap, "z/a", "x/b", Tcp, 80));
    let verdict = evaluate(
        &snap,
        &Query {
            from: Endpoint::Pod(ObjectKey::new("z", "a")),
            to: Endpoint::Pod(ObjectKey::new("x", "a")),
            protocol: Tcp,
            port: 80,
        },
    )
    .unwrap();
    let Path::Policies {
        ingress: Side::Denied { isolated_by },
        ..
    } = verdict.path
    else {
        panic!("{verdict:?}");
    };
    assert!(isolated_by
        .iter()
        .any(|i| i.policy.name == "broken" && i.broken));
}

#[test]
fn broken_selector_fails_closed_for_the_whole_namespace() {
    let broken = policy(
        "x",
        "broken",
        "podSelector: {matchExpressions: [{key: pod, operator: Equals, values: [a]}]}\ningress: [{}]",
    );
    let base = crate::testworld::world_manifests();
    let loaded = crate::manifests::load([("w.yaml", base.as_str()), ("p.yaml", broken.as_str())]);
    assert_eq!(loaded.errors.len(), 1);
    let snap = loaded.snapshot;
    assert!(!allowed(&snap, "y/a", "x/b", Tcp, 80));
    assert!(!allowed(&snap, "y/a", "x/c", Tcp, 80));
    assert!(allowed(&snap, "y/a", "z/c", Tcp, 80));
}

#[test]
fn unknown_pod_is_an_error() {
    let snap = world("");
    let q = Query {
        from: Endpoint::Pod(ObjectKey::new("x", "nope")),
        to: Endpoint::Pod(ObjectKey::new("x", "a")),
        protocol: Tcp,
        port: 80,
    };
    assert_eq!(
        evaluate(&snap, &q),
        Err(EvaluateError::UnknownPod(ObjectKey::new("x", "nope")))
    );
}

/// A pod of another node that still claims y/b's address: its delete is late.
const STALE_CLIENT: &str = "
---
apiVersion: v1
kind: Pod
metadata: {name: stale, namespace: zz, labels: {role: client}}
spec: {nodeName: elsewhere, containers: [{name: c, image: i, ports: [{containerPort: 8080, name: web}]}]}
status: {phase: Running, podIPs: [{ip: 10.0.2.2}]}
";

#[test]
fn an_address_two_pods_claim_matches_a_selector_when_either_pod_matches() {
    assert_eq!(ip4("y/b").to_string(), "10.0.2.2");
    let from_clients = policy(
        "x",
        "clients",
        "podSelector: {}\ningress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {role: client}}}]}]",
    );
    let snap = world(&format!("{STALE_CLIENT}{from_clients}"));
    // The kernel's address sets hold the address for each pod that matches.
    assert!(allowed(&snap, "10.0.2.2", "x/a", Tcp, 80));
    assert!(
        !allowed(&snap, "10.0.2.3", "x/a", Tcp, 80),
        "y/c alone is no client"
    );
    // So do the named-port sets: the stale pod's `web` is 8080 at this address.
    let to_web = policy(
        "y",
        "web",
        "podSelector: {}\ningress: [{ports: [{port: web}]}]",
    );
    let snap = world(&format!("{STALE_CLIENT}{to_web}"));
    assert!(allowed(&snap, "x/a", "10.0.2.2", Tcp, 8080));
    assert!(!allowed(&snap, "x/a", "10.0.2.3", Tcp, 8080));
}

#[test]
fn a_node_s_own_pod_owns_its_address_against_stale_claims_of_other_nodes() {
    let mut snap = world(STALE_CLIENT);
    let b = PodKey::parse("y/b").unwrap();
    snap.pods.get_mut(&b).unwrap().node = Some("here".into());
    snap.drop_stale_claims_on("here");
    let stale = &snap.pods[&PodKey::parse("zz/stale").unwrap()];
    assert!(stale.ips.is_empty(), "{:?}", stale.ips);
    assert_eq!(
        snap.pods[&b].ips.len(),
        2,
        "the node's pod keeps both families"
    );
}
