//! Property tests: on random worlds and policies, the compiled rulesets looked up the way the
//! kernel would (`interp`) agree with the evaluator on every source, destination, port and
//! protocol; and the incremental compiler, fed the world one event at a time, ends where a
//! full compile does, with every delta replaying exactly.

use std::collections::BTreeSet;
use std::net::IpAddr;

use podwall_policy::interp::{forward, Packet};
use podwall_policy::model::{
    Action, ClusterPeer, ClusterPolicy, ClusterPolicyFields, ClusterRule, ContainerPort,
    NamespaceScope, Peer, Peers, Phase, PodsSelector, PolicyFields, PortMatch, PortSpec, Rule,
    Tier,
};
use podwall_policy::selector::Labels;
use podwall_policy::{
    compile, evaluate, Compiler, Endpoint, Event, IpBlock, Namespace, Pod, PodKey, Policy,
    PolicyKey, Protocol, Query, Requirement, Ruleset, Selector, Snapshot,
};
use proptest::prelude::*;

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const NODES: [&str; 2] = ["n1", "n2"];
const PORT_NAMES: [&str; 2] = ["http", "dns"];
const PORTS: [u16; 4] = [53, 80, 81, 8080];
const EXTERNALS: [&str; 4] = ["192.0.2.1", "10.0.0.200", "2001:db8::1", "fd00::200"];

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![
        4 => Just(Protocol::Tcp),
        2 => Just(Protocol::Udp),
        1 => Just(Protocol::Sctp)
    ]
}

fn labels() -> impl Strategy<Value = Labels> {
    (
        prop::option::of(prop_oneof![Just("a"), Just("b")]),
        prop::option::of(Just("1")),
    )
        .prop_map(|(app, tier)| {
            let mut l = Labels::new();
            if let Some(app) = app {
                l.insert("app".into(), app.into());
            }
            if let Some(tier) = tier {
                l.insert("tier".into(), tier.into());
            }
            l
        })
}

fn requirement() -> impl Strategy<Value = Requirement> {
    let key = prop_oneof![Just("app".to_string()), Just("tier".to_string())];
    let values = prop::collection::btree_set(
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("1".to_string())
        ],
        1..3,
    );
    prop_oneof![
        (key.clone(), values.clone()).prop_map(|(key, values)| Requirement::In { key, values }),
        (key.clone(), values).prop_map(|(key, values)| Requirement::NotIn { key, values }),
        key.clone().prop_map(|key| Requirement::Exists { key }),
        key.prop_map(|key| Requirement::DoesNotExist { key }),
    ]
}

fn selector() -> impl Strategy<Value = Selector> {
    prop_oneof![
        2 => Just(Selector::everything()),
        3 => prop::collection::vec(requirement(), 1..3).prop_map(Selector::new),
    ]
}

fn ns_selector() -> impl Strategy<Value = Selector> {
    prop_oneof![
        Just(Selector::everything()),
        prop_oneof![Just("t"), Just("u")].prop_map(|v| Selector::from_labels([("team", v)])),
        prop::sample::select(NAMESPACES.to_vec())
            .prop_map(|ns| Selector::from_labels([("kubernetes.io/metadata.name", ns)])),
    ]
}

fn block() -> impl Strategy<Value = IpBlock> {
    let net = |s: &str| s.parse().unwrap();
    prop_oneof![
        Just(IpBlock::new(net("10.0.0.0/8"), vec![])),
        Just(IpBlock::new(net("10.0.0.0/24"), vec![net("10.0.0.0/29")])),
        Just(IpBlock::new(
            net("10.0.0.0/25"),
            vec![net("10.0.0.4/30"), net("10.0.0.64/26")]
        )),
        Just(IpBlock::new(net("0.0.0.0/0"), vec![net("10.0.0.0/28")])),
        Just(IpBlock::new(net("::/0"), vec![])),
        Just(IpBlock::new(net("fd00::/64"), vec![net("fd00::/120")])),
        Just(IpBlock::new(net("192.0.2.0/24"), vec![])),
    ]
}

fn peer(ns: &'static str) -> impl Strategy<Value = Peer> {
    prop_oneof![
        3 => (prop::option::of(ns_selector()), selector()).prop_map(move |(nss, pods)| Peer::Pods {
            namespaces: match nss {
                None => NamespaceScope::Named(ns.to_string()),
                Some(s) => NamespaceScope::Matching(s),
            },
            pods,
        }),
        2 => block().prop_map(Peer::Block),
    ]
}

fn port_match() -> impl Strategy<Value = PortMatch> {
    let spec = prop_oneof![
        1 => Just(PortSpec::Any),
        3 => (prop::sample::select(PORTS.to_vec()), 0u16..30)
            .prop_map(|(first, span)| PortSpec::Range { first, last: first.saturating_add(span % 2 * span) }),
        2 => prop::sample::select(PORT_NAMES.to_vec()).prop_map(|n| PortSpec::Named(n.to_string())),
    ];
    (protocol(), spec).prop_map(|(protocol, port)| PortMatch { protocol, port })
}

fn rule(ns: &'static str) -> impl Strategy<Value = Rule> {
    (
        prop_oneof![
            1 => Just(Peers::Any),
            3 => prop::collection::vec(peer(ns), 1..3).prop_map(Peers::Only),
        ],
        prop::collection::vec(port_match(), 0..3),
    )
        .prop_map(|(peers, ports)| Rule { peers, ports })
}

fn policy(index: usize) -> impl Strategy<Value = Policy> {
    prop::sample::select(NAMESPACES.to_vec()).prop_flat_map(move |ns| {
        (
            selector(),
            any::<bool>(),
            any::<bool>(),
            prop::collection::vec(rule(ns), 0..3),
            prop::collection::vec(rule(ns), 0..3),
            prop::bool::weighted(0.1),
        )
            .prop_map(move |(sel, ing, egr, ingress, egress, broken)| {
                // Same invariants as `Policy::from_api`: a direction's rules exist only if it
                // isolates, and a broken policy has none.
                let ing = ing || !egr;
                Policy::from(PolicyFields {
                    key: PolicyKey::new(ns, format!("p{index}")),
                    pod_selector: sel,
                    isolates_ingress: ing,
                    isolates_egress: egr,
                    ingress: if ing && !broken { ingress } else { vec![] },
                    egress: if egr && !broken { egress } else { vec![] },
                    broken,
                    log_allowed: false,
                })
            })
    })
}

fn pods_selector() -> impl Strategy<Value = PodsSelector> {
    (ns_selector(), selector()).prop_map(|(namespaces, pods)| PodsSelector { namespaces, pods })
}

fn cluster_rule() -> impl Strategy<Value = ClusterRule> {
    (
        prop_oneof![Just(Action::Accept), Just(Action::Deny), Just(Action::Pass)],
        prop::collection::vec(
            prop_oneof![
                3 => pods_selector().prop_map(ClusterPeer::Pods),
                1 => prop::collection::vec(block(), 1..3).prop_map(ClusterPeer::Networks),
            ],
            1..3,
        ),
        prop::collection::vec(port_match(), 0..3),
        prop::bool::weighted(0.05),
    )
        .prop_map(|(action, peers, ports, fails)| ClusterRule {
            name: String::new(),
            action,
            peers,
            ports,
            fails_closed: fails.then(|| "a field podwall does not know".to_string()),
        })
}

/// ClusterNetworkPolicies with few priorities, so that ties (taken by name) happen.
fn cluster_policy(index: usize) -> impl Strategy<Value = ClusterPolicy> {
    (
        prop_oneof![Just(Tier::Admin), Just(Tier::Baseline)],
        0u16..3,
        pods_selector(),
        prop::collection::vec(cluster_rule(), 0..3),
        prop::collection::vec(cluster_rule(), 0..3),
    )
        .prop_map(move |(tier, priority, subject, ingress, egress)| {
            ClusterPolicy::from(ClusterPolicyFields {
                name: format!("c{index}"),
                tier,
                priority,
                subject,
                ingress,
                egress,
                broken: false,
            })
        })
}

fn container_port() -> impl Strategy<Value = ContainerPort> {
    (
        prop::option::of(prop::sample::select(PORT_NAMES.to_vec())),
        prop::sample::select(PORTS.to_vec()),
        protocol(),
    )
        .prop_map(|(name, port, protocol)| ContainerPort {
            name: name.map(str::to_string),
            port,
            protocol,
        })
}

/// Pod `i` has 10.0.0.(i+1) and, if dual-stack, fd00::(i+1): addresses are unique.
fn pod(i: usize) -> impl Strategy<Value = Pod> {
    (
        prop::sample::select(NAMESPACES.to_vec()),
        labels(),
        prop::sample::select(NODES.to_vec()),
        any::<bool>(),
        prop::collection::vec(container_port(), 0..3),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
    )
        .prop_map(move |(ns, labels, node, dual, ports, host, finished)| {
            let mut ips: Vec<IpAddr> = vec![format!("10.0.0.{}", i + 1).parse().unwrap()];
            if dual {
                ips.push(format!("fd00::{}", i + 1).parse().unwrap());
            }
            let mut pod = Pod::new(PodKey::new(ns, format!("pod{i}")), labels, ips);
            pod.node = Some(node.into());
            pod.ports = ports;
            pod.host_network = host;
            pod.phase = if finished {
                Phase::Finished
            } else {
                Phase::Active
            };
            pod
        })
}

fn namespaces() -> impl Strategy<Value = Vec<Namespace>> {
    prop::collection::vec(prop::option::of(prop_oneof![Just("t"), Just("u")]), 3).prop_map(
        |teams| {
            NAMESPACES
                .iter()
                .zip(teams)
                .map(|(ns, team)| {
                    let labels = team
                        .map(|t| ("team".to_string(), t.to_string()))
                        .into_iter()
                        .collect();
                    Namespace::new(*ns, labels)
                })
                .collect()
        },
    )
}

fn world() -> impl Strategy<Value = Snapshot> {
    (
        namespaces(),
        (1usize..9).prop_flat_map(|n| (0..n).map(pod).collect::<Vec<_>>()),
        (0usize..5).prop_flat_map(|n| (0..n).map(policy).collect::<Vec<_>>()),
        (0usize..4).prop_flat_map(|n| (0..n).map(cluster_policy).collect::<Vec<_>>()),
    )
        .prop_map(|(namespaces, pods, policies, cluster_policies)| {
            let mut snap = Snapshot::default();
            // Leave one namespace without an object now and then: it still has its name label.
            for ns in namespaces
                .into_iter()
                .filter(|ns| ns.name != "z" || ns.labels.len() > 1)
            {
                snap.upsert_namespace(ns);
            }
            for p in pods {
                snap.upsert_pod(p);
            }
            for p in policies {
                snap.upsert_policy(p);
            }
            for p in cluster_policies {
                snap.cluster_policies.insert(p.name.clone(), p);
            }
            snap
        })
}

/// `world()` plus pods that hold another pod's addresses, as a reused address does while
/// the old pod's delete is late: each twin runs on the other node than its original (a
/// node's own pods never share an address: the daemon drops the stale attachment) and
/// declares its own ports.
fn world_with_twins() -> impl Strategy<Value = Snapshot> {
    (
        world(),
        prop::collection::vec(
            (
                any::<prop::sample::Index>(),
                prop::sample::select(NAMESPACES.to_vec()),
                labels(),
                prop::collection::vec(container_port(), 0..3),
                prop::bool::weighted(0.1),
            ),
            1..4,
        ),
    )
        .prop_map(|(mut snap, twins)| {
            let originals: Vec<Pod> = snap.pods.values().cloned().collect();
            let mut twinned = BTreeSet::new();
            for (i, (index, ns, labels, ports, finished)) in twins.into_iter().enumerate() {
                // One twin per address, or two twins would share it on one node.
                if !twinned.insert(index.index(originals.len())) {
                    continue;
                }
                let original = index.get(&originals);
                let mut twin = Pod::new(
                    PodKey::new(ns, format!("twin{i}")),
                    labels,
                    original.ips.clone(),
                );
                twin.node = NODES
                    .iter()
                    .find(|n| original.node.as_deref() != Some(**n))
                    .map(|n| (*n).into());
                twin.ports = ports;
                twin.phase = if finished {
                    Phase::Finished
                } else {
                    Phase::Active
                };
                snap.upsert_pod(twin);
            }
            snap
        })
}

fn addresses(snap: &Snapshot) -> Vec<IpAddr> {
    let mut all: BTreeSet<IpAddr> = snap
        .pods
        .values()
        .flat_map(|p| p.ips.iter().copied())
        .collect();
    all.extend(EXTERNALS.iter().map(|s| s.parse::<IpAddr>().unwrap()));
    all.into_iter().collect()
}

/// Every disagreement between the evaluator and the compiled rulesets.
fn disagreements(snap: &Snapshot, rulesets: &[Ruleset]) -> Vec<String> {
    let addrs = addresses(snap);
    let mut out = Vec::new();
    for src in &addrs {
        for dst in addrs.iter().filter(|d| d.is_ipv4() == src.is_ipv4()) {
            for protocol in Protocol::ALL {
                for port in PORTS {
                    let query = Query {
                        from: Endpoint::Ip(*src),
                        to: Endpoint::Ip(*dst),
                        protocol,
                        port,
                    };
                    let expected = evaluate(snap, &query).unwrap();
                    let packet = Packet {
                        src: *src,
                        dst: *dst,
                        protocol,
                        port,
                    };
                    if forward(rulesets, &packet) != expected.allowed {
                        out.push(format!(
                            "{src} -> {dst} {port}/{protocol}: evaluator {expected:?}"
                        ));
                    }
                }
            }
        }
    }
    out
}

fn node_rulesets(snap: &Snapshot) -> Vec<Ruleset> {
    NODES.iter().map(|n| compile(snap, n)).collect()
}

/// The world as a sequence of events, namespaces and pods first, then policies, then some
/// changes: pods relabelled and deleted, a namespace relabelled, a policy deleted.
fn events(snap: &Snapshot, twist: u8) -> (Vec<Event>, Snapshot) {
    let mut events: Vec<Event> = Vec::new();
    let mut end = snap.clone();
    events.extend(snap.namespaces.values().cloned().map(Event::Namespace));
    // Policies before some of the pods, so that pods attach to existing chains too.
    let (early, late): (Vec<_>, Vec<_>) = snap
        .pods
        .values()
        .cloned()
        .partition(|p| p.key.name.ends_with(['0', '2', '4']));
    events.extend(early.into_iter().map(Event::Pod));
    events.extend(snap.policies.values().cloned().map(Event::Policy));
    events.extend(
        snap.cluster_policies
            .values()
            .cloned()
            .map(Event::ClusterPolicy),
    );
    events.extend(late.into_iter().map(Event::Pod));
    if let Some(pod) = snap
        .pods
        .values()
        .nth(usize::from(twist) % snap.pods.len().max(1))
    {
        let mut changed = pod.clone();
        let app = if changed.labels.get("app").map(String::as_str) == Some("a") {
            "b"
        } else {
            "a"
        };
        changed.labels.insert("app".into(), app.into());
        end.upsert_pod(changed.clone());
        events.push(Event::Pod(changed));
    }
    if twist & 1 == 1 {
        if let Some(key) = snap.pods.keys().next().cloned() {
            end.pods.remove(&key);
            events.push(Event::PodDeleted(key));
        }
    }
    if twist & 2 == 2 {
        let ns = Namespace::new("y", [("team".to_string(), "u".to_string())].into());
        end.upsert_namespace(ns.clone());
        events.push(Event::Namespace(ns));
    } else if twist & 4 == 4 {
        end.namespaces.remove("x");
        events.push(Event::NamespaceDeleted("x".into()));
    }
    if twist & 8 == 8 {
        if let Some(key) = snap.policies.keys().next().cloned() {
            end.policies.remove(&key);
            events.push(Event::PolicyDeleted(key));
        }
    }
    if twist & 32 == 32 {
        if let Some(name) = snap.cluster_policies.keys().next().cloned() {
            end.cluster_policies.remove(&name);
            events.push(Event::ClusterPolicyDeleted(name));
        }
    } else if let Some(policy) = snap.cluster_policies.values().last() {
        // A Cluster policy moves to other pods: those it selected leave its chains.
        let mut moved = policy.clone();
        moved.subject.namespaces = if twist & 64 == 64 {
            Selector::from_labels([("kubernetes.io/metadata.name", "y")])
        } else {
            Selector::everything()
        };
        moved.subject.pods = Selector::everything();
        end.cluster_policies
            .insert(moved.name.clone(), moved.clone());
        events.push(Event::ClusterPolicy(moved));
    }
    (events, end)
}

/// Feeds `events` to a compiler per node, checking that every delta replays, and that each
/// ends with snapshot `end` and the ruleset a full compile of it gives; returns the rulesets.
fn compile_incrementally(
    events: Vec<Event>,
    end: &Snapshot,
) -> Result<Vec<Ruleset>, TestCaseError> {
    let mut compilers: Vec<Compiler> = NODES
        .iter()
        .map(|n| Compiler::new(Snapshot::default(), n))
        .collect();
    for event in events {
        for c in &mut compilers {
            let mut replay = c.ruleset().clone();
            let delta = c.apply(event.clone());
            replay.apply(&delta);
            prop_assert_eq!(&replay, c.ruleset(), "delta of {:?} does not replay", event);
            prop_assert_eq!(replay.diff(c.ruleset()).is_empty(), true);
        }
    }
    for c in &compilers {
        prop_assert_eq!(c.snapshot(), end);
        prop_assert_eq!(c.ruleset(), &compile(end, c.node()));
    }
    Ok(compilers.iter().map(|c| c.ruleset().clone()).collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn compiled_rulesets_agree_with_the_evaluator(snap in world()) {
        let rulesets = node_rulesets(&snap);
        let wrong = disagreements(&snap, &rulesets);
        prop_assert!(wrong.is_empty(), "{} disagreements, first: {}", wrong.len(), wrong[0]);
    }

    #[test]
    fn incremental_compile_ends_where_a_full_compile_does(snap in world(), twist in any::<u8>()) {
        let (events, end) = events(&snap, twist);
        let rulesets = compile_incrementally(events, &end)?;
        let wrong = disagreements(&end, &rulesets);
        prop_assert!(wrong.is_empty(), "{} disagreements, first: {}", wrong.len(), wrong[0]);
    }

    #[test]
    fn a_policy_no_chain_judges_with_adds_nothing_to_the_ruleset(snap in world()) {
        for node in NODES {
            let ruleset = compile(&snap, node);
            let used: BTreeSet<&PolicyKey> =
                ruleset.chains.values().flat_map(|c| &c.policies).collect();
            let mut only_used = snap.clone();
            only_used.policies.retain(|key, _| used.contains(key));
            // Chains name a ClusterNetworkPolicy by a key without a namespace.
            only_used
                .cluster_policies
                .retain(|name, _| used.contains(&PolicyKey::new("", name.as_str())));
            prop_assert_eq!(&ruleset, &compile(&only_used, node), "on {}", node);
        }
    }

    // Not held to the evaluator: with an address held twice, `explain` judges the first pod
    // by name, while a set holds the address for as long as any of its holders belongs.
    #[test]
    fn incremental_compile_with_reused_addresses_ends_where_a_full_compile_does(
        snap in world_with_twins(),
        twist in any::<u8>(),
    ) {
        let (mut events, mut end) = events(&snap, twist);
        // Then the late deletes: one holder of each shared address goes, the old pods or
        // (by the twist) the new ones, and the other must keep the address.
        let twins = |p: &&Pod| p.key.name.starts_with("twin");
        let doomed: Vec<PodKey> = end
            .pods
            .values()
            .filter(|p| twins(p) == (twist & 16 == 16))
            .filter(|p| {
                end.pods
                    .values()
                    .any(|q| q.key != p.key && q.ips.iter().any(|ip| p.ips.contains(ip)))
            })
            .map(|p| p.key.clone())
            .collect();
        for key in doomed {
            end.pods.remove(&key);
            events.push(Event::PodDeleted(key));
        }
        compile_incrementally(events, &end)?;
    }
}

#[test]
fn diff_between_rulesets_replays_to_the_new_one() {
    let runner_world = {
        let mut snap = Snapshot::default();
        snap.upsert_namespace(Namespace::new("x", Labels::new()));
        let mut pod = Pod::new(
            PodKey::new("x", "a"),
            Labels::new(),
            vec!["10.0.0.1".parse().unwrap()],
        );
        pod.node = Some("n1".into());
        snap.upsert_pod(pod);
        snap
    };
    let before = compile(&runner_world, "n1");
    let mut with_policy = runner_world.clone();
    with_policy.upsert_policy(Policy::fail_closed(PolicyKey::new("x", "deny")));
    let after = compile(&with_policy, "n1");
    assert_ne!(before, after);
    let mut replay = before.clone();
    replay.apply(&before.diff(&after));
    assert_eq!(replay, after);
}
