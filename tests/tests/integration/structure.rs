//! Structural changes over netlink build the same table as `nft -f`: a world with every rule
//! shape the compiler makes is added, changed and removed through netlink batches in one
//! namespace, and after each step the kernel's table reads back (`nft -j list ruleset`)
//! exactly as the same world loaded whole with `nft -f` in another; so does the whole-table
//! swap, one netlink batch, in every state and at thousands of rules. Through the daemon,
//! policies added, changed and deleted while traffic flows never let a packet see half a
//! change, and never swap the whole table.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use podwall_policy::manifests::{load, load_with};
use podwall_policy::Ruleset;
use podwall_tests::manifests::{documents, PodManifest};
use podwall_tests::metrics::{FULL_REPLACES, STRUCTURAL_FALLBACKS, STRUCTURAL_TRANSACTIONS};
use podwall_tests::netns::TestNetns;
use podwall_tests::nft::{listing, listing_differences};
use podwall_tests::probe::tcp_connects;
use podwall_tests::reach::{self, Peer};
use podwall_tests::{wait, Node, NodeOptions, Pod};
use podwalld::dataplane::nft::NftKernel;
use podwalld::dataplane::render::render;
use podwalld::dataplane::{
    transaction_for, Desired, Exact, Fingerprint, Guard, Kernel, Logging, Transaction,
};

const CLUSTER: &str = "
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
metadata: {name: c, namespace: x, labels: {pod: c}}
spec: {nodeName: n1, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.9.0.3}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: y, labels: {pod: b}}
spec: {nodeName: n2, containers: [{name: c, image: i, ports: [{containerPort: 8080, name: web}]}]}
status: {phase: Running, podIPs: [{ip: 10.9.1.2}, {ip: 'fd00:9:1::2'}]}
";

/// Every rule shape: selectors with a named port in both families, ipBlocks with excepts
/// (one reaching the top of the address space, one the whole space), one port, one range,
/// several ports (an anonymous set) up to 65535, a bare protocol, and deny-all.
const FEATURES: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: features, namespace: x, annotations: {podwall.io/log: allow}}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: ops}}
      podSelector: {matchExpressions: [{key: pod, operator: In, values: [b]}]}
    ports: [{port: web}, {port: dns, protocol: UDP}]
  - from: [{ipBlock: {cidr: 'fd00:9::/32', except: ['fd00:9:1::/48']}}]
    ports: [{port: 8000, endPort: 8100}, {protocol: SCTP, port: 9}]
  - from: [{ipBlock: {cidr: 192.0.2.0/24}}]
    ports: [{port: 22}, {port: 80, endPort: 90}, {port: 85}, {port: 65000, endPort: 65535}]
  - ports: [{protocol: UDP}]
  egress:
  - to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}]
  - to: [{ipBlock: {cidr: '::/0'}}]
    ports: [{port: 443}]
  - to: [{namespaceSelector: {}}]
    ports: [{port: web}]
";

/// FEATURES changed: one policy's rules changed (same chain name, refilled), one removed,
/// one added.
const CHANGED: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: features, namespace: x, annotations: {podwall.io/log: allow}}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{ipBlock: {cidr: 198.51.100.0/24, except: [198.51.100.255/32]}}]
    ports: [{port: 80}, {port: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-only, namespace: x}
spec:
  podSelector: {matchLabels: {pod: c}}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: a}}}]
    ports: [{port: web}]
";

/// ClusterNetworkPolicies over FEATURES or CHANGED: an Admin chain for x's pods (Accept,
/// Pass to the NetworkPolicy or Baseline chain, Deny; egress to networks and a named port),
/// and a Baseline chain for c (which returns), so that chains go to chains and are deleted
/// while another goes to them.
const TIERS: &str = "
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: guard}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {matchLabels: {ns: x}}}
  ingress:
  - {name: ops-ssh, action: Accept, from: [{namespaces: {matchLabels: {team: ops}}}], protocols: [{tcp: {destinationPort: {number: 22}}}]}
  - {name: pass-y, action: Pass, from: [{namespaces: {matchLabels: {ns: y}}}]}
  - {name: deny-rest, action: Deny, from: [{namespaces: {}}]}
  egress:
  - {action: Deny, to: [{networks: [203.0.113.0/24]}], protocols: [{udp: {destinationPort: {range: {start: 5000, end: 5100}}}}]}
  - {action: Pass, to: [{networks: ['::/0']}]}
---
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: baseline}
spec:
  tier: Baseline
  priority: 5
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {pod: c}}}}
  ingress: [{action: Deny, from: [{namespaces: {matchLabels: {ns: y}}}]}]
  egress: [{action: Deny, to: [{networks: [198.51.100.0/24]}]}]
";

fn world(policies: &str) -> Desired {
    let options = podwall_policy::manifests::Options {
        cluster_policies: true,
    };
    let loaded = load_with(
        options,
        [("cluster.yaml", CLUSTER), ("policies.yaml", policies)],
    );
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let mut guard = Guard::default();
    guard.sources.insert(
        "veth-a".into(),
        ["10.9.0.2".parse().unwrap(), "fd00:9::2".parse().unwrap()].into(),
    );
    Desired {
        ruleset: podwall_policy::compile(&loaded.snapshot, "n1"),
        guard,
        logging: Some(LOGGING),
    }
}

/// The chains log their drops, as with the daemon's default drop log.
const LOGGING: Logging = Logging {
    group: 1027,
    rate: 1000,
};

fn load_whole(node: &TestNetns, desired: &Desired) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table.nft");
    std::fs::write(&path, render(desired)).unwrap();
    let out = node.exec(&["nft", "-f", path.to_str().unwrap()]).unwrap();
    assert!(out.success(), "nft refused the script: {}", out.stderr);
}

/// Apply the structural change from `applied` to `next` over netlink in `node`, load `next`
/// whole with `nft -f` in a namespace of its own, and return both listings.
type Listing = std::collections::BTreeMap<String, Vec<String>>;
fn built_and_loaded(
    step: &str,
    node: &TestNetns,
    applied: &Desired,
    next: &Desired,
) -> (Listing, Listing) {
    let delta = applied.ruleset.diff(&next.ruleset);
    let Transaction::Structure(structure) = transaction_for(applied, &delta, &next.guard) else {
        panic!("{step}: a structural change")
    };
    node.run_in(|| NftKernel::default().apply_structure(&structure))
        .unwrap_or_else(|e| panic!("{step}: the kernel refused the batch: {e}"));
    let whole = TestNetns::new("struct-nft");
    load_whole(&whole, next);
    (listing(node).unwrap(), listing(&whole).unwrap())
}

/// The tables of `node` read back as the daemon's CHECK reads them.
fn fingerprint(node: &TestNetns) -> Fingerprint {
    node.run_in(|| NftKernel::default().dump())
        .unwrap_or_else(|e| panic!("reading the tables of {} back: {e}", node.name()))
        .unwrap_or_else(|| panic!("no podwall table in {}", node.name()))
}

/// The tables of `node` read back as the daemon's reconcile reads them: exactly.
fn exact(node: &TestNetns) -> Exact {
    node.run_in(|| NftKernel::default().exact())
        .unwrap_or_else(|e| panic!("reading the tables of {} back exactly: {e}", node.name()))
        .unwrap_or_else(|| panic!("no podwall table in {}", node.name()))
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn structural_changes_over_netlink_read_back_as_the_same_table_loaded_whole() {
    let empty = Desired {
        ruleset: Ruleset::default(),
        guard: world(FEATURES).guard,
        logging: Some(LOGGING),
    };
    let with_tiers = |policies: &str| world(&format!("{policies}\n---\n{TIERS}"));
    let steps = [
        ("policies added", world(FEATURES)),
        ("cluster policies added", with_tiers(FEATURES)),
        ("policies changed under the tiers", with_tiers(CHANGED)),
        ("cluster policies removed", world(CHANGED)),
        ("the tiers again", with_tiers(CHANGED)),
        ("every policy removed", empty.clone()),
    ];
    let node = TestNetns::new("struct-nl");
    load_whole(&node, &empty);
    let mut applied = empty;
    for (step, next) in steps {
        let (built, loaded) = built_and_loaded(step, &node, &applied, &next);
        assert!(
            loaded.len() > 10,
            "{step}: the listing holds the tables: {loaded:?}"
        );
        let differences = listing_differences(&built, &loaded);
        assert!(
            differences.is_empty(),
            "{step}:\n{}",
            differences.join("\n")
        );
        // And the table reads back as what the daemon expects of it.
        let drift = fingerprint(&node).differences(&Fingerprint::of(&next));
        assert!(drift.is_empty(), "{step}: {drift:?}");
        // Exactly what a swap of the same state writes.
        let drift = exact(&node).differences(&Exact::of(&next));
        assert!(drift.is_empty(), "{step}: {drift:?}");
        applied = next;
    }
}

/// `nft list ruleset` as text: unlike the JSON listing, it prints each set's key as nft's
/// user data describes it (`typeof …`), which a set declared over netlink must get right too.
fn text_listing(node: &TestNetns) -> String {
    let out = node.exec(&["nft", "list", "ruleset"]).unwrap();
    assert!(out.success(), "nft list ruleset: {}", out.stderr);
    // Element order follows each set's hash and differs from table to table.
    (out.stdout.lines())
        .filter(|line| {
            !line.trim_start().starts_with("elements = ") && !line.starts_with("\t\t\t     ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn an_element_changed_by_hand_reads_back_as_not_what_was_written() {
    let desired = world(FEATURES);
    let node = TestNetns::new("exact-drift");
    node.run_in(|| NftKernel::default().replace(&desired))
        .expect("the kernel takes the tables");
    let (set, elements) = (desired.ruleset.sets.iter())
        .find_map(|(name, set)| match set {
            podwall_policy::Set::Addresses { elements, .. } if !elements.is_empty() => {
                Some((name.clone(), elements.clone()))
            }
            _ => None,
        })
        .expect("an address set with elements");
    let old = elements.iter().next().expect("an element").to_string();
    let new = if old.contains(':') {
        "fd00:99::99"
    } else {
        "10.99.99.99"
    };
    // One element for another: as many as before, so no count tells.
    for (verb, element) in [("delete", old.as_str()), ("add", new)] {
        let element = format!("{{ {element} }}");
        let out = node
            .exec(&["nft", verb, "element", "inet", "podwall", &set, &element])
            .unwrap();
        assert!(out.success(), "{verb}: {}", out.stderr);
    }
    assert!(
        fingerprint(&node)
            .differences(&Fingerprint::of(&desired))
            .is_empty(),
        "a fingerprint counts elements: it does not see this"
    );
    let drift = exact(&node).differences(&Exact::of(&desired));
    assert_eq!(drift, [format!("set {set} (inet) not as written")]);
}

/// `rules` ingress rules for pod a, each its own port: one message each in a batch, far
/// more acknowledgements than a socket's default receive buffer holds.
fn many_rules(rules: u16) -> String {
    let ports: Vec<String> = (1..=rules).map(|p| format!("{{port: {p}}}")).collect();
    let ingress: Vec<String> = ports.iter().map(|p| format!("  - ports: [{p}]")).collect();
    format!(
        "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: many, namespace: x}}
spec:
  podSelector: {{matchLabels: {{pod: a}}}}
  ingress:
{}
",
        ingress.join("\n")
    )
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn a_whole_table_built_over_netlink_reads_back_as_the_same_table_loaded_with_nft() {
    let unguarded = Desired {
        logging: None,
        ..Desired::default()
    };
    let states = [
        ("nothing", unguarded),
        ("every rule shape", world(FEATURES)),
        ("the tiers", world(&format!("{CHANGED}\n---\n{TIERS}"))),
        (
            "no drop log",
            Desired {
                logging: None,
                ..world(FEATURES)
            },
        ),
        ("thousands of rules", world(&many_rules(3000))),
    ];
    let node = TestNetns::new("whole-nl");
    for (step, desired) in states {
        // Into a namespace without the tables, then over the tables of the last state.
        let fresh = TestNetns::new("whole-fresh");
        for target in [&fresh, &node] {
            target
                .run_in(|| NftKernel::default().replace(&desired))
                .unwrap_or_else(|e| panic!("{step}: the kernel refused the batch: {e}"));
        }
        let whole = TestNetns::new("whole-nft");
        load_whole(&whole, &desired);
        let loaded = listing(&whole).unwrap();
        assert!(
            loaded.len() > 10,
            "{step}: the listing holds the tables: {loaded:?}"
        );
        // Exactly what the batch writes, in each. (Not nft's table: nft sizes an anonymous
        // set by another count, a hint to the kernel that no listing shows.)
        let expected = Exact::of(&desired);
        for (target, built) in [("fresh", &fresh), ("swapped", &node)] {
            let read = exact(built);
            let differences = read.differences(&expected);
            assert!(differences.is_empty(), "{step} ({target}): {differences:?}");
            assert_eq!(read, expected, "{step} ({target})");
        }
        for (target, built) in [("fresh", &fresh), ("swapped", &node)] {
            let differences = listing_differences(&listing(built).unwrap(), &loaded);
            assert!(
                differences.is_empty(),
                "{step} ({target}):\n{}",
                differences.join("\n")
            );
            assert_eq!(
                text_listing(built),
                text_listing(&whole),
                "{step} ({target})"
            );
        }
        let drift = fingerprint(&node).differences(&Fingerprint::of(&desired));
        assert!(drift.is_empty(), "{step}: {drift:?}");
    }
}

const APPLY: Duration = Duration::from_secs(10);

const PODS: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: flip}
";

/// Isolates the server; `steady` may always reach it, `stranger` never.
const BASE: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: steady, namespace: flip}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: steady}}}]
    ports: [{port: 80}]
";

/// The policy that changes: it admits client `a` or `b` (same policy, new rules: its chain
/// is refilled), or is gone (the server's chain changes name: chains created and deleted).
fn admitting(client: &str) -> String {
    format!(
        "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: flipping, namespace: flip}}
spec:
  podSelector: {{matchLabels: {{app: server}}}}
  ingress:
  - from: [{{podSelector: {{matchLabels: {{role: {client}}}}}}}]
    ports: [{{port: 80}}, {{port: 8000, endPort: 8100}}, {{port: 9000}}]
"
    )
}

/// Connect from `from` to `to` again and again until `stop`: how many connections got
/// through and how many did not.
fn probe_until(stop: &AtomicBool, from: &Pod, to: std::net::IpAddr) -> (usize, usize) {
    let (mut through, mut refused) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        // Under a second: a dropped SYN is not saved by its retransmission.
        if tcp_connects(&from.netns, to, 80, Duration::from_millis(900)) {
            through += 1;
        } else {
            refused += 1;
        }
    }
    (through, refused)
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn policies_added_changed_and_deleted_while_traffic_flows_apply_whole_over_netlink() {
    let mut node = Node::with_options(
        "struct",
        NodeOptions {
            manifests: true,
            ..NodeOptions::default()
        },
    );
    let dir = node.manifests();
    let pod =
        |name: &str, labels: &[(&str, &str)]| PodManifest::new("flip", name).labels(labels).yaml();
    dir.write(
        "pods.yaml",
        &documents(&[
            PODS.to_string(),
            pod("server", &[("app", "server")]),
            pod("steady", &[("role", "steady")]),
            pod("stranger", &[("role", "stranger")]),
            pod("a", &[("role", "a")]),
            pod("b", &[("role", "b")]),
        ]),
    );
    dir.write("base.yaml", BASE);
    node.start_daemon();
    let named = |name: &str| Pod::named(&format!("flip-{name}"), "flip", name);
    let (server, steady, stranger, a, b) = (
        named("server"),
        named("steady"),
        named("stranger"),
        named("a"),
        named("b"),
    );
    node.add_all(&[&server, &steady, &stranger, &a, &b]);
    let _echo = reach::serve(&[Peer::pod(&server)], &[80]);
    let to = server.ip4();
    let reaches = |client: &Pod| tcp_connects(&client.netns, to, 80, Duration::from_millis(900));
    assert!(reaches(&steady) && !reaches(&stranger) && !reaches(&a));

    let before = node.metrics();
    let versions = [Some("a"), Some("b"), None, Some("b"), Some("a"), None];
    let stop = AtomicBool::new(false);
    let ((steady_through, steady_refused), (stranger_through, stranger_refused)) =
        std::thread::scope(|s| {
            let steady = s.spawn(|| probe_until(&stop, &steady, to));
            let stranger = s.spawn(|| probe_until(&stop, &stranger, to));
            for (i, admitted) in versions.iter().enumerate() {
                match admitted {
                    Some(client) => dir.write("flipping.yaml", &admitting(client)),
                    None => dir.remove("flipping.yaml"),
                }
                let (want_a, want_b) = (*admitted == Some("a"), *admitted == Some("b"));
                let applied =
                    wait::eventually(APPLY, || reaches(&a) == want_a && reaches(&b) == want_b);
                assert!(applied, "step {i}: admitting {admitted:?} was not enforced");
            }
            stop.store(true, Ordering::Relaxed);
            (
                steady.join().expect("prober"),
                stranger.join().expect("prober"),
            )
        });
    assert_eq!(
        (steady_refused, stranger_through),
        (0, 0),
        "no packet saw a half-applied policy: steady got through {steady_through} times, \
         stranger was refused {stranger_refused} times"
    );
    assert!(
        steady_through > 10 && stranger_refused > 2,
        "the probers ran"
    );

    let after = node.metrics();
    let log = node.daemon_log();
    assert_eq!(
        after.delta(&before, FULL_REPLACES),
        0.0,
        "no whole-table swap; the daemon said:\n{log}"
    );
    assert_eq!(after.delta(&before, STRUCTURAL_FALLBACKS), 0.0, "{log}");
    assert!(
        after.delta(&before, STRUCTURAL_TRANSACTIONS) >= versions.len() as f64,
        "each change was a structural netlink batch: {after:?}"
    );

    // What the batches built reads back as what a restart swaps in whole from the same state.
    let built = listing(&node.netns).unwrap();
    node.stop_daemon();
    node.start_daemon();
    let swapped = listing(&node.netns).unwrap();
    let differences = listing_differences(&built, &swapped);
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn a_new_policy_whose_peer_set_holds_thousands_of_pods_lands_in_one_batch() {
    // 6,000 peers: their elements are cut into several messages of one batch.
    let mut peers = String::new();
    for i in 0..6_000u32 {
        peers.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: y, labels: {{pod: b}}}}\n\
             spec: {{nodeName: n2, containers: [{{name: c, image: i}}]}}\n\
             status: {{phase: Running, podIPs: [{{ip: 10.{}.{}.{}}}]}}\n",
            100 + i / 65536,
            i / 256 % 256,
            i % 256
        ));
    }
    let policy = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: many, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {pod: b}}}]}]
";
    let compile = |policies: &str| {
        let loaded = load([
            ("cluster.yaml", CLUSTER),
            ("peers.yaml", peers.as_str()),
            ("policies.yaml", policies),
        ]);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        Desired {
            ruleset: podwall_policy::compile(&loaded.snapshot, "n1"),
            guard: Guard::default(),
            logging: None,
        }
    };
    let (before, after) = (compile(""), compile(policy));
    let node = TestNetns::new("struct-big");
    load_whole(&node, &before);
    let (built, loaded) = built_and_loaded("6,000 peers", &node, &before, &after);
    let differences = listing_differences(&built, &loaded);
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    let largest = (after.ruleset.sets.values())
        .map(podwall_policy::Set::len)
        .max()
        .unwrap_or(0);
    assert!(largest >= 6_000, "the peer set holds every peer: {largest}");
}
