use super::*;
use crate::interp::{forward, lookup, Lookup, Packet};
use crate::manifests::load;
use crate::model::Protocol::*;
use crate::model::{ContainerPort, PolicyTier};
use crate::ruleset::End;
use crate::selector::Labels;
use crate::testworld::{ip4, ip6, world, world_manifests};

fn policy(ns: &str, name: &str, spec: &str) -> String {
    let body: Vec<String> = spec.lines().map(|l| format!("  {l}")).collect();
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{}\n",
        body.join("\n")
    )
}

/// Rulesets of every node of the world (pods a on node-a, b on node-b, c on node-c).
fn nodes(snap: &Snapshot) -> Vec<Ruleset> {
    ["node-a", "node-b", "node-c"]
        .iter()
        .map(|n| compile(snap, n))
        .collect()
}

fn verdict(rulesets: &[Ruleset], src: IpAddr, dst: IpAddr, protocol: Protocol, port: u16) -> bool {
    forward(
        rulesets,
        &Packet {
            src,
            dst,
            protocol,
            port,
        },
    )
}

#[test]
fn namespace_selector_admits_only_labelled_namespaces() {
    let snap = world(&policy(
        "x",
        "from-y",
        "podSelector: {matchLabels: {pod: a}}\ningress:\n- from: [{namespaceSelector: {matchLabels: {ns: y}}}]\n  ports: [{port: 80}]",
    ));
    let rs = nodes(&snap);
    assert!(verdict(&rs, ip4("y/b"), ip4("x/a"), Tcp, 80));
    assert!(verdict(&rs, ip6("y/b"), ip6("x/a"), Tcp, 80));
    assert!(!verdict(&rs, ip4("z/b"), ip4("x/a"), Tcp, 80));
    assert!(!verdict(&rs, ip4("y/b"), ip4("x/a"), Tcp, 81));
    assert!(verdict(&rs, ip4("z/b"), ip4("x/b"), Tcp, 81));
}

#[test]
fn only_local_pods_get_dispatch_entries() {
    let snap = world(&policy(
        "x",
        "deny",
        "podSelector: {}\npolicyTypes: [Ingress, Egress]",
    ));
    let rs = compile(&snap, "node-a");
    let local: BTreeSet<IpAddr> = snap
        .pods
        .values()
        .filter(|p| p.node.as_deref() == Some("node-a") && p.is_policed())
        .flat_map(|p| p.ips.iter().copied())
        .collect();
    assert!(local.contains(&ip4("x/a")) && local.len() > 2);
    for map in [&rs.ingress, &rs.egress] {
        assert_eq!(map.keys().copied().collect::<BTreeSet<_>>(), local);
        // The policy isolates x/a; every other local pod is dispatched to `open`.
        for (ip, chain) in map {
            let isolated = [ip4("x/a"), ip6("x/a")].contains(ip);
            assert_eq!(chain != names::OPEN_CHAIN, isolated, "{ip} → {chain}");
        }
    }
    // Peers elsewhere are still in the sets of policies that name them.
    assert!(compile(&snap, "node-q").ingress.is_empty());
}

#[test]
fn a_local_pod_with_unknown_labels_is_quarantined_until_described() {
    let snap = world(&policy(
        "x",
        "deny",
        "podSelector: {pod: a}\npolicyTypes: [Ingress]",
    ));
    let mut c = Compiler::new(snap, "node-a");
    let described = c.snapshot().pods[&PodKey::new("x", "a")].clone();
    let mut unknown = Pod::new(described.key.clone(), Labels::new(), described.ips.clone());
    unknown.node = described.node.clone();
    unknown.quarantined = true;
    c.apply(Event::Pod(unknown));
    for map in [&c.ruleset().ingress, &c.ruleset().egress] {
        assert_eq!(map[&ip4("x/a")], names::QUARANTINE_CHAIN);
    }
    assert!(c.ruleset().chains.is_empty(), "no pod holds the deny chain");
    c.apply(Event::Pod(described));
    assert!(c
        .ruleset()
        .chains
        .contains_key(&c.ruleset().ingress[&ip4("x/a")]));
    assert_eq!(c.ruleset().egress[&ip4("x/a")], names::OPEN_CHAIN);
}

#[test]
fn pods_with_the_same_policies_share_one_chain() {
    let extra = "
---
apiVersion: v1
kind: Pod
metadata: {name: d, namespace: x, labels: {pod: d}}
spec: {nodeName: node-a}
status: {podIP: 10.0.1.4}
";
    let snap = world(&format!(
        "{extra}{}",
        policy("x", "deny", "podSelector: {}\ningress: []")
    ));
    let rs = compile(&snap, "node-a");
    assert_eq!(rs.chains.len(), 1);
    assert_eq!(
        rs.ingress[&ip4("x/a")],
        rs.ingress[&"10.0.1.4".parse().unwrap()]
    );
}

#[test]
fn attaching_a_pod_with_known_policies_adds_only_elements() {
    let snap = world(&policy(
        "x",
        "from-b",
        "podSelector: {}\ningress:\n- from: [{podSelector: {matchLabels: {pod: b}}}]",
    ));
    let mut c = Compiler::new(snap, "node-a");
    let mut pod = Pod::new(
        PodKey::new("x", "new"),
        [("pod".to_string(), "b".to_string())].into(),
        vec!["10.0.1.9".parse().unwrap()],
    );
    pod.node = Some("node-a".into());
    let delta = c.apply(Event::Pod(pod));
    assert!(
        delta.chains_set.is_empty() && delta.sets_added.is_empty(),
        "{delta:?}"
    );
    assert_eq!(delta.ingress.len(), 1);
    assert_eq!(
        delta
            .elements_added
            .values()
            .map(BTreeSet::len)
            .sum::<usize>(),
        1
    );
}

#[test]
fn label_change_moves_the_pod_between_peer_sets_only() {
    let snap = world(&policy(
        "x",
        "from-b",
        "podSelector: {matchLabels: {pod: a}}\ningress:\n- from: [{namespaceSelector: {}, podSelector: {matchLabels: {pod: b}}}]",
    ));
    let mut c = Compiler::new(snap.clone(), "node-a");
    let mut pod = snap.pods[&PodKey::new("z", "c")].clone();
    pod.labels.insert("pod".into(), "b".into());
    let before = c.ruleset().clone();
    let delta = c.apply(Event::Pod(pod));
    assert!(delta.chains_set.is_empty() && delta.ingress.is_empty() && delta.egress.is_empty());
    let added: Vec<Element> = delta.elements_added.values().flatten().copied().collect();
    assert_eq!(added.len(), 2, "the pod's v4 and v6 addresses: {delta:?}");
    let mut after = before;
    after.apply(&delta);
    assert_eq!(&after, c.ruleset());
    assert!(verdict(&[after], ip4("z/c"), ip4("x/a"), Tcp, 80));
}

#[test]
fn ip_block_becomes_an_interval_set_without_its_excepts() {
    let snap = world(&policy(
        "x",
        "block",
        "podSelector: {}\ningress:\n- from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.2.0/24]}}]",
    ));
    let rs = compile(&snap, "node-a");
    let ranges: Vec<String> = rs
        .sets
        .values()
        .filter_map(|s| match s {
            Set::Intervals { ranges, .. } => Some(ranges.iter().map(|r| r.to_string())),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(ranges, ["10.0.0.0-10.0.1.255", "10.0.3.0-10.0.255.255"]);
    assert!(!verdict(
        std::slice::from_ref(&rs),
        ip4("y/a"),
        ip4("x/a"),
        Udp,
        53
    ));
    assert!(verdict(&[rs], ip4("z/a"), ip4("x/a"), Udp, 53));
}

#[test]
fn named_port_set_holds_each_pods_own_number() {
    let extra = "
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: y, labels: {app: web}}
spec: {nodeName: node-b, containers: [{name: c, image: i, ports: [{containerPort: 8080, name: serve-80-tcp}]}]}
status: {podIP: 10.0.2.20}
";
    let snap = world(&format!(
        "{extra}{}",
        policy(
            "x",
            "out",
            "podSelector: {}\npolicyTypes: [Egress]\negress: [{ports: [{port: serve-80-tcp}]}]"
        )
    ));
    let rs = nodes(&snap);
    let web: IpAddr = "10.0.2.20".parse().unwrap();
    assert!(verdict(&rs, ip4("x/a"), web, Tcp, 8080));
    assert!(!verdict(&rs, ip4("x/a"), web, Tcp, 80));
    assert!(verdict(&rs, ip4("x/a"), ip4("y/a"), Tcp, 80));
    assert!(!verdict(
        &rs,
        ip4("x/a"),
        "192.0.2.1".parse().unwrap(),
        Tcp,
        80
    ));
}

#[test]
fn broken_policy_compiles_to_a_chain_that_allows_nothing() {
    let text = policy(
        "x",
        "bad",
        "podSelector: {matchLabels: {pod: a}}\ningress: [{ports: [{protocol: ICMP}]}]",
    );
    let base = world_manifests();
    let loaded = load([("w.yaml", base.as_str()), ("p.yaml", text.as_str())]);
    assert_eq!(loaded.errors.len(), 1);
    let rs = compile(&loaded.snapshot, "node-a");
    let packet = Packet {
        src: ip4("y/a"),
        dst: ip4("x/a"),
        protocol: Tcp,
        port: 80,
    };
    assert_eq!(lookup(&rs, Direction::Ingress, &packet), Lookup::Dropped);
}

#[test]
fn sctp_only_rule_drops_tcp_in_the_chain() {
    let snap = world(&policy(
        "x",
        "sctp",
        "podSelector: {}\ningress: [{ports: [{protocol: SCTP, port: 80}]}]",
    ));
    let rs = nodes(&snap);
    assert!(verdict(&rs, ip4("y/a"), ip4("x/a"), Sctp, 80));
    assert!(!verdict(&rs, ip4("y/a"), ip4("x/a"), Tcp, 80));
}

#[test]
fn object_names_are_short_valid_nftables_identifiers() {
    let snap = world(&format!(
        "{}{}",
        policy("x", "a-very-long-policy-name-that-goes-on-and-on-and-on-and-on-forever", "podSelector: {}\ningress: [{from: [{podSelector: {}}], ports: [{port: serve-80-tcp}]}]"),
        policy("x", "b", "podSelector: {}\negress: [{to: [{ipBlock: {cidr: 10.0.0.0/8}}]}]"),
    ));
    let rs = compile(&snap, "node-a");
    let names: Vec<&String> = rs.sets.keys().chain(rs.chains.keys()).collect();
    assert!(names.len() >= 6, "{names:?}");
    for name in names {
        assert!(name.len() <= 32, "{name}");
        assert!(name.chars().next().unwrap().is_ascii_lowercase(), "{name}");
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{name}"
        );
    }
}

/// The address a stale pod and its successor both hold in the shared-address tests.
const REUSED: &str = "10.1.0.9";

/// Pod `ns/name` on `node` (not node-a) holding [`REUSED`].
fn holder(key: &str, node: &str, labels: &[(&str, &str)]) -> Pod {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut pod = Pod::new(
        PodKey::parse(key).unwrap(),
        labels,
        vec![REUSED.parse().unwrap()],
    );
    pod.node = Some(node.into());
    pod
}

/// `holder` declaring TCP port `web` as `port`.
fn web_holder(key: &str, node: &str, port: u16) -> Pod {
    let mut pod = holder(key, node, &[]);
    pod.ports = vec![ContainerPort {
        name: Some("web".into()),
        port,
        protocol: Tcp,
    }];
    pod
}

/// Applies `event`, checking that its delta replays and that the compiler ends where a
/// full compile of its snapshot does.
fn step(c: &mut Compiler, event: Event) {
    let mut replay = c.ruleset().clone();
    let delta = c.apply(event.clone());
    replay.apply(&delta);
    assert_eq!(&replay, c.ruleset(), "delta of {event:?} does not replay");
    assert_eq!(
        c.ruleset(),
        &compile(c.snapshot(), c.node()),
        "after {event:?}"
    );
}

fn from_reused(c: &Compiler) -> bool {
    let src = REUSED.parse().unwrap();
    verdict(std::slice::from_ref(c.ruleset()), src, ip4("x/a"), Tcp, 80)
}

fn to_reused(c: &Compiler, port: u16) -> bool {
    let dst = REUSED.parse().unwrap();
    verdict(
        std::slice::from_ref(c.ruleset()),
        ip4("x/a"),
        dst,
        Tcp,
        port,
    )
}

fn from_clients() -> Compiler {
    let snap = world(&policy(
        "x",
        "clients",
        "podSelector: {matchLabels: {pod: a}}\ningress:\n- from: [{podSelector: {matchLabels: {role: client}}}]",
    ));
    Compiler::new(snap, "node-a")
}

#[test]
fn shared_address_stays_in_the_peer_set_until_its_last_holder_goes() {
    for (first, second) in [("x/old", "x/new"), ("x/new", "x/old")] {
        let mut c = from_clients();
        step(
            &mut c,
            Event::Pod(holder("x/old", "node-b", &[("role", "client")])),
        );
        step(
            &mut c,
            Event::Pod(holder("x/new", "node-c", &[("role", "client")])),
        );
        assert!(from_reused(&c));
        step(&mut c, Event::PodDeleted(PodKey::parse(first).unwrap()));
        assert!(from_reused(&c), "{second} still holds {REUSED}");
        step(&mut c, Event::PodDeleted(PodKey::parse(second).unwrap()));
        assert!(!from_reused(&c));
    }
}

#[test]
fn shared_address_stays_in_the_peer_set_while_a_holder_matches() {
    let mut c = from_clients();
    let client = [("role", "client")];
    let server = [("role", "server")];
    step(&mut c, Event::Pod(holder("x/old", "node-b", &client)));
    step(&mut c, Event::Pod(holder("x/new", "node-c", &client)));
    step(&mut c, Event::Pod(holder("x/old", "node-b", &server)));
    assert!(from_reused(&c), "x/new still matches");
    step(&mut c, Event::Pod(holder("x/new", "node-c", &server)));
    assert!(!from_reused(&c));
    step(&mut c, Event::Pod(holder("x/old", "node-b", &client)));
    assert!(from_reused(&c));
}

#[test]
fn shared_address_stays_in_a_peer_set_built_with_both_holders() {
    // Both holders are in the snapshot before the policy's set is made: by namespace (the
    // pods of one namespace) and by namespaceSelector (the label groups of a full compile).
    for from in [
        "podSelector: {matchLabels: {role: client}}",
        "namespaceSelector: {}, podSelector: {matchLabels: {role: client}}",
    ] {
        let mut snap = world(&policy(
            "x",
            "clients",
            &format!("podSelector: {{matchLabels: {{pod: a}}}}\ningress:\n- from: [{{{from}}}]"),
        ));
        snap.upsert_pod(holder("x/old", "node-b", &[("role", "client")]));
        snap.upsert_pod(holder("x/new", "node-c", &[("role", "client")]));
        let mut c = Compiler::new(snap, "node-a");
        step(&mut c, Event::PodDeleted(PodKey::new("x", "old")));
        assert!(from_reused(&c), "{from}: x/new still holds {REUSED}");
        step(&mut c, Event::PodDeleted(PodKey::new("x", "new")));
        assert!(!from_reused(&c), "{from}");
    }
}

#[test]
fn holders_are_counted_beyond_the_first() {
    let (distinct, extra) = sets::holders(vec![3, 1, 3, 2, 3], |n| {
        Element::Address(IpAddr::from([10, 0, 0, n]))
    });
    assert_eq!(distinct, [1, 2, 3]);
    let three = Element::Address(IpAddr::from([10, 0, 0, 3]));
    assert_eq!(extra, BTreeMap::from([(three, 2)]));
}

#[test]
fn shared_address_survives_a_namespace_relabel_while_a_holder_matches() {
    let snap = world(&policy(
        "x",
        "teams",
        "podSelector: {matchLabels: {pod: a}}\ningress:\n- from: [{namespaceSelector: {matchLabels: {team: t}}, podSelector: {matchLabels: {role: client}}}]",
    ));
    let team = |name: &str| Namespace::new(name, [("team".to_string(), "t".to_string())].into());
    let mut c = Compiler::new(snap, "node-a");
    step(&mut c, Event::Namespace(team("y")));
    step(&mut c, Event::Namespace(team("z")));
    step(
        &mut c,
        Event::Pod(holder("y/old", "node-b", &[("role", "client")])),
    );
    step(
        &mut c,
        Event::Pod(holder("z/new", "node-c", &[("role", "client")])),
    );
    assert!(from_reused(&c));
    step(&mut c, Event::Namespace(Namespace::new("y", Labels::new())));
    assert!(from_reused(&c), "z/new is still in a team namespace");
    step(&mut c, Event::Namespace(team("y")));
    step(&mut c, Event::NamespaceDeleted("z".into()));
    assert!(from_reused(&c), "y/old is back in a team namespace");
    step(&mut c, Event::Namespace(Namespace::new("y", Labels::new())));
    assert!(!from_reused(&c));
}

#[test]
fn shared_address_keeps_a_named_port_while_a_holder_declares_it() {
    let snap = world(&policy(
        "x",
        "web",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress: [{ports: [{port: web}]}]",
    ));
    for (first, second) in [("x/old", "x/new"), ("x/new", "x/old")] {
        let mut c = Compiler::new(snap.clone(), "node-a");
        step(&mut c, Event::Pod(web_holder("x/old", "node-b", 8080)));
        step(&mut c, Event::Pod(web_holder("x/new", "node-c", 8080)));
        assert!(to_reused(&c, 8080));
        step(&mut c, Event::PodDeleted(PodKey::parse(first).unwrap()));
        assert!(to_reused(&c, 8080), "{second} still declares web");
        step(&mut c, Event::PodDeleted(PodKey::parse(second).unwrap()));
        assert!(!to_reused(&c, 8080));
    }
}

#[test]
fn shared_address_named_port_follows_each_holders_number() {
    let snap = world(&policy(
        "x",
        "web",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress: [{ports: [{port: web}]}]",
    ));
    let mut c = Compiler::new(snap, "node-a");
    step(&mut c, Event::Pod(web_holder("x/old", "node-b", 8080)));
    step(&mut c, Event::Pod(web_holder("x/new", "node-c", 8080)));
    step(&mut c, Event::Pod(web_holder("x/new", "node-c", 9090)));
    assert!(to_reused(&c, 8080), "x/old still declares web as 8080");
    assert!(to_reused(&c, 9090));
    step(&mut c, Event::PodDeleted(PodKey::new("x", "old")));
    assert!(!to_reused(&c, 8080));
    assert!(to_reused(&c, 9090));
    step(&mut c, Event::Pod(web_holder("x/new", "node-c", 8080)));
    assert!(to_reused(&c, 8080));
    assert!(!to_reused(&c, 9090));
}

#[test]
fn deleting_the_last_policy_removes_its_chains_and_sets() {
    let snap = world(&policy(
        "x",
        "p",
        "podSelector: {}\ningress: [{from: [{podSelector: {}}]}]",
    ));
    let mut c = Compiler::new(snap, "node-a");
    let before = c.ruleset().clone();
    assert!(!before.chains.is_empty());
    let delta = c.apply(Event::PolicyDeleted(PolicyKey::new("x", "p")));
    let after = c.ruleset();
    assert!(after.chains.is_empty() && after.sets.is_empty());
    // Only the local pods' `open` entries are left.
    assert!(!after.ingress.is_empty());
    for map in [&after.ingress, &after.egress] {
        assert!(map.values().all(|chain| chain == names::OPEN_CHAIN));
    }
    let mut replay = before;
    replay.apply(&delta);
    assert_eq!(&replay, after);
}

#[test]
fn a_full_compile_groups_pods_by_label_set_and_agrees_with_adding_the_policy_later() {
    // Pods of a label set in several namespaces, labelled and not, one of them finished and
    // one on the host network: a namespaceSelector peer counts only those in scope.
    let peers = policy(
        "x",
        "from-team",
        "podSelector: {}\ningress:\n- from: [{namespaceSelector: {matchLabels: {team: web}}, podSelector: {matchLabels: {app: api}}}]\n- from: [{namespaceSelector: {}, podSelector: {matchExpressions: [{key: app, operator: NotIn, values: [api]}]}}]",
    );
    let snap = {
        let mut snap = world(&peers);
        for (i, (ns, app)) in [
            ("x", "api"),
            ("y", "api"),
            ("y", "db"),
            ("z", "api"),
            ("z", "api"),
        ]
        .into_iter()
        .enumerate()
        {
            let mut pod = Pod::new(
                PodKey::new(ns, format!("p{i}")),
                Labels::from([("app", app)]),
                vec![format!("10.9.0.{i}").parse().unwrap()],
            );
            pod.node = Some("node-b".into());
            pod.host_network = i == 3;
            snap.upsert_pod(pod);
        }
        snap.upsert_namespace(Namespace::new("y", Labels::from([("team", "web")])));
        snap
    };
    let full = Compiler::new(snap.clone(), "node-a");
    let mut without = snap;
    let policies = std::mem::take(&mut without.policies);
    let mut later = Compiler::new(without, "node-a");
    for policy in policies.into_values() {
        later.apply(Event::Policy(policy));
    }
    assert_eq!(full.ruleset(), later.ruleset());
    let members: usize = full
        .ruleset()
        .sets
        .values()
        .map(|set| match set {
            Set::Addresses { elements, .. } => elements.len(),
            _ => 0,
        })
        .sum();
    assert!(
        members > 0,
        "the peers have members: {:?}",
        full.ruleset().sets
    );
}

/// The policy and rule index (`policy#index`) each rule of `pod`'s ingress chain comes
/// from, in order.
fn ingress_origins(rs: &Ruleset, pod: &str) -> Vec<String> {
    let chain = &rs.chains[&rs.ingress[&ip4(pod)]];
    (chain.rules.iter())
        .map(|r| format!("{}#{}", r.policy, r.index))
        .collect()
}

#[test]
fn a_rule_that_repeats_an_earlier_match_is_left_out_of_the_chain() {
    let same = "podSelector: {matchLabels: {pod: a}}\ningress:\n- from: [{podSelector: {matchLabels: {pod: b}}}]\n  ports: [{port: 80}]";
    let other = "podSelector: {matchLabels: {pod: a}}\ningress:\n- from: [{podSelector: {matchLabels: {pod: b}}}]\n  ports: [{port: 81}]\n- from: [{podSelector: {matchLabels: {pod: b}}}]\n  ports: [{port: 80}]";
    let snap = world(&format!(
        "{}{}{}",
        policy("x", "team-1", same),
        policy("x", "team-2", same),
        policy("x", "team-3", other)
    ));
    let rs = compile(&snap, "node-a");
    let chain = &rs.chains[&rs.ingress[&ip4("x/a")]];
    assert_eq!(chain.policies.len(), 3, "every isolating policy is named");
    // Each family once: team-1's rule, then team-3's port 81; team-2's and team-3's
    // second rule repeat team-1's.
    assert_eq!(
        ingress_origins(&rs, "x/a"),
        ["x/team-1#0", "x/team-1#0", "x/team-3#0", "x/team-3#0"]
    );
    // The incremental path builds the same chain.
    let mut compiler = Compiler::new(world(""), "node-a");
    for (_, p) in snap.policies.clone() {
        compiler.apply(Event::Policy(p));
    }
    assert_eq!(compiler.ruleset(), &rs);
    let rs = nodes(&snap);
    assert!(verdict(&rs, ip4("x/b"), ip4("x/a"), Tcp, 80));
    assert!(verdict(&rs, ip4("x/b"), ip4("x/a"), Tcp, 81));
    assert!(!verdict(&rs, ip4("x/b"), ip4("x/a"), Tcp, 82));
    assert!(!verdict(&rs, ip4("y/b"), ip4("x/a"), Tcp, 80));
}

#[test]
fn a_rule_an_earlier_one_covers_is_left_out_of_the_chain() {
    let spec = |rules: &str| format!("podSelector: {{matchLabels: {{pod: a}}}}\ningress:\n{rules}");
    let from_b = "- from: [{podSelector: {matchLabels: {pod: b}}}]\n";
    let snap = world(&format!(
        "{}{}{}",
        policy("x", "team-1", &spec(&format!("{from_b}  ports: [{{port: 80}}]"))),
        // Every port from b: team-1's rule is narrower and stays.
        policy("x", "team-2", &spec(from_b)),
        // Port 81 from b is team-2's already; the block is new.
        policy(
            "x",
            "team-3",
            &spec(&format!(
                "{from_b}  ports: [{{port: 81}}]\n- from: [{{ipBlock: {{cidr: 192.0.2.0/24}}}}]\n  ports: [{{port: 80}}]"
            ))
        ),
    ));
    let rs = compile(&snap, "node-a");
    assert_eq!(
        ingress_origins(&rs, "x/a"),
        [
            "x/team-1#0",
            "x/team-1#0",
            "x/team-2#0",
            "x/team-2#0",
            "x/team-3#1"
        ]
    );
    let rs = nodes(&snap);
    for port in [80, 81, 82] {
        assert!(verdict(&rs, ip4("x/b"), ip4("x/a"), Tcp, port), "{port}");
    }
    assert!(!verdict(&rs, ip4("y/b"), ip4("x/a"), Tcp, 80));
}

#[test]
fn each_chain_says_the_tier_it_judges_for() {
    let cnp = |name: &str, tier: &str, subject: &str| {
        crate::testworld::cluster_policy(
            name,
            tier,
            1,
            &format!("subject: {subject}\ningress: [{{action: Deny, from: [{{namespaces: {{matchLabels: {{ns: z}}}}}}]}}]"),
        )
    };
    // x/a: the Admin chain, going on to its NetworkPolicy chain; y/a: the Baseline chain.
    let snap = world(&format!(
        "{}{}{}",
        cnp(
            "guard",
            "Admin",
            "{pods: {namespaceSelector: {matchLabels: {ns: x}}, podSelector: {}}}"
        ),
        cnp("floor", "Baseline", "{namespaces: {matchLabels: {ns: y}}}"),
        policy("x", "deny-all", "podSelector: {}\npolicyTypes: [Ingress]")
    ));
    let rs = compile(&snap, "node-a");
    let tier_of = |pod: &str| {
        let chain = &rs.chains[&rs.ingress[&ip4(pod)]];
        (chain.tier, chain.policies.clone(), chain.end.clone())
    };
    let (tier, policies, end) = tier_of("x/a");
    assert_eq!(
        (tier, policies),
        (PolicyTier::Admin, vec![PolicyKey::new("", "guard")])
    );
    let End::Goto(rest) = end else {
        panic!("the Admin chain goes on: {end:?}");
    };
    assert_eq!(rs.chains[&rest].tier, PolicyTier::NetworkPolicy);
    assert_eq!(rs.chains[&rest].policies, [PolicyKey::new("x", "deny-all")]);
    let (tier, policies, _) = tier_of("y/a");
    assert_eq!(
        (tier, policies),
        (PolicyTier::Baseline, vec![PolicyKey::new("", "floor")])
    );
}

/// A NetworkPolicy and a ClusterNetworkPolicy that select only pods labelled `pod: b` (on
/// node-b), matching on peer sets, a named-port set and an ipBlock set between them.
fn policies_of_b() -> String {
    format!(
        "{}{}",
        policy(
            "x",
            "to-b",
            "podSelector: {matchLabels: {pod: b}}\ningress:\n- from: [{podSelector: {matchLabels: {role: client}}}]\n  ports: [{port: web}]"
        ),
        crate::testworld::cluster_policy(
            "guard-b",
            "Admin",
            1,
            "subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {pod: b}}}}\ningress:\n- {action: Deny, from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {role: tenant}}}}]}\negress:\n- {action: Accept, to: [{networks: [10.8.0.0/16]}]}"
        )
    )
}

#[test]
fn a_policy_that_selects_no_local_pod_costs_the_node_nothing_until_one_arrives() {
    let mut c = Compiler::new(world(&policies_of_b()), "node-a");
    let nothing = |c: &Compiler| c.ruleset().sets.is_empty() && c.ruleset().chains.is_empty();
    assert!(nothing(&c), "{:?}", c.ruleset().sets.keys());
    let mut client = holder("y/client", "node-c", &[("role", "client")]);
    client.ips = vec!["10.9.0.1".parse().unwrap()];
    step(&mut c, Event::Pod(client));
    assert!(nothing(&c), "{:?}", c.ruleset().sets.keys());

    // The first local pod they select brings their chains and every set they match on …
    let mut local = holder("x/b2", "node-a", &[("pod", "b")]);
    local.ips = vec!["10.9.0.2".parse().unwrap()];
    step(&mut c, Event::Pod(local.clone()));
    let rs = c.ruleset();
    let chain = &rs.chains[&rs.ingress[&local.ips[0]]];
    assert_eq!(chain.policies, [PolicyKey::new("", "guard-b")]);
    // Peer sets (v4, v6) of clients and tenants, named-port sets (v4, v6), one block.
    assert_eq!(rs.sets.len(), 7, "{:?}", rs.sets.keys());
    let client = "10.9.0.1".parse().unwrap();
    assert!(!verdict(
        std::slice::from_ref(rs),
        client,
        local.ips[0],
        Tcp,
        80
    ));

    // … and the last one to leave takes them away.
    step(&mut c, Event::PodDeleted(local.key.clone()));
    assert!(nothing(&c), "{:?}", c.ruleset().sets.keys());
}

#[test]
fn a_regroup_keeps_the_sets_of_the_policies_still_used() {
    // With a ClusterNetworkPolicy in the cluster, relabelling a namespace re-attaches its
    // pods, freeing their chains for a moment: the sets those use must stay, not be
    // deleted and made again.
    let mut c = Compiler::new(world(&policies_of_b()), "node-b");
    assert!(!c.ruleset().sets.is_empty());
    let labels = Labels::from([("ns", "x"), ("team", "web")]);
    let delta = c.apply(Event::Namespace(Namespace::new("x", labels)));
    assert!(
        delta.sets_added.is_empty() && delta.sets_removed.is_empty(),
        "{delta:?}"
    );
    assert_eq!(c.ruleset(), &compile(c.snapshot(), c.node()));
}

#[test]
fn a_namespace_that_joins_a_subject_and_its_peer_at_once_counts_each_pod_once() {
    // Relabelling y makes its pods the policy's subjects, whose chain is made with the
    // peer's set from the namespace as it is now, and makes them the peer's members: a
    // member counted twice would keep a deleted pod's address in the set.
    let snap = world(&crate::testworld::cluster_policy(
        "teams",
        "Admin",
        1,
        "subject: {namespaces: {matchLabels: {team: u}}}\negress:\n- {action: Accept, to: [{namespaces: {matchLabels: {team: u}}}]}",
    ));
    let mut c = Compiler::new(snap, "node-a");
    assert!(
        c.ruleset().sets.is_empty(),
        "nothing selects a local pod yet"
    );
    let labels = Labels::from([("ns", "y"), ("team", "u")]);
    step(&mut c, Event::Namespace(Namespace::new("y", labels)));
    let held = |c: &Compiler| {
        c.ruleset()
            .sets
            .values()
            .any(|s| s.contains(&Element::Address(ip4("y/b"))))
    };
    assert!(held(&c));
    step(&mut c, Event::PodDeleted(PodKey::new("y", "b")));
    assert!(!held(&c), "y/b's address left the peer's set with it");
}
