//! The tiers against the network-policy-api conformance scenarios (core ingress and egress
//! rules, priority, same priority, integration with NetworkPolicy, port ranges, named ports,
//! inline CIDRs), re-expressed in the e2e world of `testworld`: namespaces x, y, z labelled
//! `ns: <name>`, pods a, b, c labelled `pod: <name>`, each serving 80 and 81 (TCP, UDP) under
//! the names `serve-<port>-<tcp|udp>`, at 10.0.<ns>.<pod>. Matrices: sources as rows,
//! destinations as columns, x/a x/b x/c y/a … z/c; `.` allowed, `X` denied.

use crate::evaluate::{evaluate, Endpoint, Path, Query, Side};
use crate::model::Protocol::*;
use crate::model::{Action, PodKey, Tier};
use crate::testworld::{allowed, assert_matrix, cluster_policy as cnp, world};

fn np(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
    )
}

/// Admin, subject x: Accept from y on TCP 80, then Deny from y, then Pass from z.
fn x_guard() -> String {
    cnp(
        "x-guard",
        "Admin",
        10,
        "subject: {namespaces: {matchLabels: {ns: x}}}
ingress:
- {name: accept-y-80, action: Accept, from: [{namespaces: {matchLabels: {ns: y}}}], protocols: [{tcp: {destinationPort: {number: 80}}}]}
- {name: deny-y, action: Deny, from: [{namespaces: {matchLabels: {ns: y}}}]}
- {name: pass-z, action: Pass, from: [{namespaces: {matchLabels: {ns: z}}}]}",
    )
}

const X_DENY_ALL: &str = "{podSelector: {}, policyTypes: [Ingress]}";

#[test]
fn admin_rules_decide_in_order_before_network_policy() {
    let both = x_guard() + &np("x", "deny-all", X_DENY_ALL);
    // y → x on 80: the Accept rule overrides x's deny-all. z → x: Pass, so deny-all decides.
    assert_matrix(
        &both,
        Tcp,
        80,
        "
        .XX ... ...
        X.X ... ...
        XX. ... ...
        ... ... ...
        ... ... ...
        ... ... ...
        XXX ... ...
        XXX ... ...
        XXX ... ...",
    );
    // 81: the Accept rule does not match, the Deny rule does.
    assert_matrix(
        &both,
        Tcp,
        81,
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
    // Without a NetworkPolicy, what z passes is allowed by default.
    assert_matrix(
        &x_guard(),
        Udp,
        81,
        "
        ... ... ...
        ... ... ...
        ... ... ...
        XXX ... ...
        XXX ... ...
        XXX ... ...
        ... ... ...
        ... ... ...
        ... ... ...",
    );
}

#[test]
fn the_deciding_rule_is_explained() {
    let snap = world(&x_guard());
    let query = |from: &str, port| Query {
        from: Endpoint::Pod(PodKey::parse(from).expect("a pod")),
        to: Endpoint::Pod(PodKey::parse("x/a").expect("a pod")),
        protocol: Tcp,
        port,
    };
    let verdict = evaluate(&snap, &query("y/b", 81)).expect("known pods");
    let Path::Policies { ingress, egress } = verdict.path else {
        panic!("judged by policy: {verdict:?}");
    };
    assert_eq!(egress, Side::NotIsolated);
    let Side::Decided(d) = ingress else {
        panic!("decided by a tier: {ingress:?}");
    };
    assert_eq!(
        (
            d.tier,
            d.policy.as_str(),
            d.index,
            d.name.as_str(),
            d.action
        ),
        (Tier::Admin, "x-guard", 1, "deny-y", Action::Deny)
    );
    assert_eq!(
        d.to_string(),
        "Admin tier: clusternetworkpolicy x-guard spec.ingress[1] (deny-y): Deny"
    );
}

#[test]
fn lower_priority_first_and_equal_priorities_by_name() {
    let rule = |action: &str| {
        format!(
            "subject: {{namespaces: {{matchLabels: {{ns: x}}}}}}
ingress: [{{action: {action}, from: [{{namespaces: {{matchLabels: {{ns: y}}}}}}]}}]"
        )
    };
    let accept_first =
        cnp("b-deny", "Admin", 5, &rule("Deny")) + &cnp("a-accept", "Admin", 1, &rule("Accept"));
    assert!(allowed(&world(&accept_first), "y/a", "x/a", Tcp, 80));
    let deny_first =
        cnp("b-deny", "Admin", 1, &rule("Deny")) + &cnp("a-accept", "Admin", 5, &rule("Accept"));
    assert!(!allowed(&world(&deny_first), "y/a", "x/a", Tcp, 80));
    // Same priority: the API leaves the order to the implementation; podwall takes names in order.
    let tie =
        cnp("b-deny", "Admin", 3, &rule("Deny")) + &cnp("a-accept", "Admin", 3, &rule("Accept"));
    assert!(allowed(&world(&tie), "y/a", "x/a", Tcp, 80));
}

#[test]
fn baseline_applies_to_pods_no_network_policy_isolates() {
    let baseline = cnp(
        "default",
        "Baseline",
        0,
        "subject: {namespaces: {matchLabels: {ns: x}}}
ingress: [{action: Deny, from: [{namespaces: {matchLabels: {ns: y}}}]}]",
    );
    assert!(!allowed(&world(&baseline), "y/a", "x/b", Tcp, 80));
    assert!(allowed(&world(&baseline), "z/a", "x/b", Tcp, 80));
    // A NetworkPolicy that admits y overrides the Baseline Deny; the pods it isolates are
    // then judged by it alone (z is not admitted).
    let with_np = baseline.clone()
        + &np(
            "x",
            "from-y",
            "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]}",
        );
    assert!(allowed(&world(&with_np), "y/a", "x/b", Tcp, 80));
    assert!(!allowed(&world(&with_np), "z/a", "x/b", Tcp, 80));
}

#[test]
fn admin_pass_hands_over_to_network_policy_then_baseline() {
    // The conformance integration scenario: Admin passes y → x, a NetworkPolicy admits y, a
    // Baseline policy denies y. With the NetworkPolicy, y gets in; without it, Baseline denies.
    let admin = cnp(
        "pass-example",
        "Admin",
        10,
        "subject: {namespaces: {matchLabels: {ns: x}}}
ingress: [{action: Pass, from: [{namespaces: {matchLabels: {ns: y}}}]}]
egress: [{action: Pass, to: [{namespaces: {matchLabels: {ns: y}}}]}]",
    );
    let baseline = cnp(
        "default",
        "Baseline",
        10,
        "subject: {namespaces: {matchLabels: {ns: x}}}
ingress: [{action: Deny, from: [{namespaces: {matchLabels: {ns: y}}}]}]
egress: [{action: Deny, to: [{namespaces: {matchLabels: {ns: y}}}]}]",
    );
    let allow_y = np(
        "x",
        "allow-gress-y",
        "{podSelector: {}, policyTypes: [Ingress, Egress], ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}], egress: [{to: [{namespaceSelector: {matchLabels: {ns: y}}}]}]}",
    );
    let all = admin.clone() + &baseline + &allow_y;
    assert!(allowed(&world(&all), "y/a", "x/a", Tcp, 80));
    assert!(allowed(&world(&all), "x/a", "y/a", Tcp, 80));
    let without_np = admin + &baseline;
    assert!(!allowed(&world(&without_np), "y/a", "x/a", Tcp, 80));
    assert!(!allowed(&world(&without_np), "x/a", "y/a", Tcp, 80));
}

#[test]
fn an_egress_accept_still_meets_the_destinations_ingress() {
    let accept = cnp(
        "x-out",
        "Admin",
        1,
        "subject: {namespaces: {matchLabels: {ns: x}}}
egress: [{action: Accept, to: [{namespaces: {matchLabels: {ns: y}}}]}]",
    );
    let x_no_egress = np("x", "no-egress", "{podSelector: {}, policyTypes: [Egress]}");
    let snap = world(&(accept.clone() + &x_no_egress));
    // The Accept overrides x's own egress policy for y, not for z.
    assert!(allowed(&snap, "x/a", "y/a", Tcp, 80));
    assert!(!allowed(&snap, "x/a", "z/a", Tcp, 80));
    // y's ingress still decides at the destination.
    let y_deny = np("y", "deny-all", "{podSelector: {}, policyTypes: [Ingress]}");
    assert!(!allowed(
        &world(&(accept + &x_no_egress + &y_deny)),
        "x/a",
        "y/a",
        Tcp,
        80
    ));
}

#[test]
fn egress_networks_match_pod_addresses_too() {
    // Inline CIDRs: x's IPv4 pod range, denied to y, after an Accept for x/a alone.
    let cidr = cnp(
        "y-out",
        "Admin",
        1,
        "subject: {namespaces: {matchLabels: {ns: y}}}
egress:
- {action: Accept, to: [{pods: {namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {pod: a}}}}]}
- {action: Deny, to: [{networks: [10.0.1.0/24]}]}",
    );
    assert_matrix(
        &cidr,
        Tcp,
        80,
        "
        ... ... ...
        ... ... ...
        ... ... ...
        .XX ... ...
        .XX ... ...
        .XX ... ...
        ... ... ...
        ... ... ...
        ... ... ...",
    );
}

#[test]
fn protocols_match_numbers_ranges_and_named_ports() {
    let ports = |protocols: &str| {
        cnp(
            "ports",
            "Admin",
            1,
            &format!(
                "subject: {{namespaces: {{matchLabels: {{ns: x}}}}}}
ingress: [{{action: Deny, from: [{{namespaces: {{}}}}], protocols: {protocols}}}]"
            ),
        )
    };
    let range = world(&ports(
        "[{tcp: {destinationPort: {range: {start: 80, end: 81}}}}]",
    ));
    assert!(!allowed(&range, "y/a", "x/a", Tcp, 80));
    assert!(!allowed(&range, "y/a", "x/a", Tcp, 81));
    assert!(allowed(&range, "y/a", "x/a", Udp, 80));
    // A named port resolves on the destination pod, for its own protocol only.
    let named = world(&ports("[{destinationNamedPort: serve-81-tcp}]"));
    assert!(!allowed(&named, "y/a", "x/a", Tcp, 81));
    assert!(allowed(&named, "y/a", "x/a", Tcp, 80));
    assert!(allowed(&named, "y/a", "x/a", Udp, 81));
    let udp = world(&ports("[{udp: {}}]"));
    assert!(!allowed(&udp, "y/a", "x/a", Udp, 80));
    assert!(allowed(&udp, "y/a", "x/a", Tcp, 80));
}

#[test]
fn a_peer_podwall_does_not_know_fails_closed_as_the_api_says() {
    let rule = |action: &str| {
        cnp(
            "future",
            "Admin",
            1,
            &format!(
                "subject: {{pods: {{namespaceSelector: {{matchLabels: {{ns: x}}}}, podSelector: {{matchLabels: {{pod: a}}}}}}}}
ingress: [{{action: {action}, from: [{{someFutureField: {{}}}}]}}]"
            ),
        )
    };
    // Accept: matches nothing, so nothing changes.
    assert!(allowed(&world(&rule("Accept")), "y/a", "x/a", Tcp, 80));
    // Deny and Pass: deny everything into the subject, and nothing else.
    for action in ["Deny", "Pass"] {
        let snap = world(&rule(action));
        assert!(!allowed(&snap, "y/a", "x/a", Tcp, 80), "{action}");
        assert!(!allowed(&snap, "x/b", "x/a", Tcp, 80), "{action}");
        assert!(allowed(&snap, "y/a", "x/b", Tcp, 80), "{action}");
    }
    // An unsupported peer (nodes) is the same, and so is `networks` in an ingress rule.
    let nodes = cnp(
        "nodes",
        "Admin",
        1,
        "subject: {namespaces: {}}\negress: [{action: Deny, to: [{nodes: {}}]}]",
    );
    assert!(!allowed(&world(&nodes), "y/a", "z/a", Tcp, 80));
    let snap = world(&rule("Deny"));
    let Path::Policies {
        ingress: Side::Decided(d),
        ..
    } = evaluate(
        &snap,
        &Query {
            from: Endpoint::Pod(PodKey::parse("y/a").expect("a pod")),
            to: Endpoint::Pod(PodKey::parse("x/a").expect("a pod")),
            protocol: Tcp,
            port: 80,
        },
    )
    .expect("known pods")
    .path
    else {
        panic!("decided by the rule that failed closed");
    };
    assert!(d
        .fails_closed
        .is_some_and(|why| why.contains("someFutureField")));
}

#[test]
fn subjects_select_by_namespace_and_pod_labels() {
    let pods_subject = cnp(
        "xa-only",
        "Admin",
        1,
        "subject: {pods: {namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {pod: a}}}}
ingress: [{action: Deny, from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {pod: b}}}}]}]",
    );
    let snap = world(&pods_subject);
    assert!(!allowed(&snap, "y/b", "x/a", Tcp, 80));
    assert!(allowed(&snap, "y/a", "x/a", Tcp, 80));
    assert!(allowed(&snap, "y/b", "x/c", Tcp, 80));
}

#[test]
fn v1alpha2_reads_the_same_and_loading_skips_them_only_when_asked() {
    let v1beta1 = x_guard();
    let v1alpha2 = v1beta1.replace("v1beta1", "v1alpha2");
    assert_eq!(
        world(&v1beta1).cluster_policies,
        world(&v1alpha2).cluster_policies
    );
    let skipping = crate::manifests::Options {
        cluster_policies: false,
    };
    let loaded = crate::manifests::load_with(skipping, [("cnp.yaml", v1beta1.as_str())]);
    assert!(loaded.snapshot.cluster_policies.is_empty());
    assert_eq!(
        loaded.skipped,
        ["cnp.yaml: policy.networking.k8s.io/v1beta1 ClusterNetworkPolicy x-guard"]
    );
    let other_version = v1beta1.replace("v1beta1", "v1");
    let loaded = crate::manifests::load([("cnp.yaml", other_version.as_str())]);
    assert!(
        loaded.snapshot.cluster_policies.is_empty(),
        "an unknown version is skipped"
    );
}

#[test]
fn a_broken_policy_stands_in_the_admin_tier_and_accepts_nothing() {
    let broken = cnp(
        "broken",
        "Middle",
        1,
        "subject: {namespaces: {matchLabels: {ns: x}}}
ingress:
- {action: Accept, from: [{namespaces: {}}]}
- {action: Deny, from: [{namespaces: {matchLabels: {ns: y}}}]}",
    );
    let loaded = crate::manifests::load_with(
        crate::manifests::Options {
            cluster_policies: true,
        },
        [("cnp.yaml", broken.as_str())],
    );
    assert_eq!(loaded.errors.len(), 1, "{:?}", loaded.errors);
    assert!(loaded.errors[0].to_string().contains("spec.tier"));
    let policy = &loaded.snapshot.cluster_policies["broken"];
    assert!(policy.broken);
    assert_eq!(policy.tier, Tier::Admin);
    assert!(policy.ingress[0].fails_closed.is_some());
    assert!(policy.ingress[1].fails_closed.is_none());
}

#[test]
fn pass_skips_the_rest_of_its_tier() {
    // A Pass rule skips the later rules of its policy and every later policy of its tier.
    let pass_then_deny = cnp(
        "a-pass",
        "Admin",
        1,
        "subject: {namespaces: {matchLabels: {ns: x}}}
ingress:
- {action: Pass, from: [{namespaces: {matchLabels: {ns: y}}}]}
- {action: Deny, from: [{namespaces: {}}]}",
    ) + &cnp(
        "b-deny",
        "Admin",
        2,
        "subject: {namespaces: {}}\ningress: [{action: Deny, from: [{namespaces: {}}]}]",
    );
    let snap = world(&pass_then_deny);
    assert!(allowed(&snap, "y/a", "x/a", Tcp, 80));
    assert!(!allowed(&snap, "z/a", "x/a", Tcp, 80));
    assert!(!allowed(&snap, "y/a", "z/a", Tcp, 80));
}
