//! The kube-router baseline of the peer benchmark enforces what the policy evaluator says:
//! on a bridge-only node (no podwall in the chain, no daemon), the generated ipsets and
//! filter table are loaded and probed over TCP and UDP, through pod selectors, namespace
//! selectors, an ipBlock with an except, egress isolation, a named port and a port range,
//! and the cases where kube-router itself departs from Kubernetes (a policy's egress rule
//! admitting traffic into another pod it selects, one block's except cutting into another
//! block, an egress named port without `to`); then the world changes and a resync must
//! agree again and leave nothing stale behind.

use std::collections::BTreeSet;
use std::time::Duration;

use podwall_bench::kuberouter::{self, Scripts};
use podwall_policy::Protocol::{self, Tcp, Udp};
use podwall_policy::Snapshot;
use podwall_tests::manifests::{documents, namespace, PodManifest};
use podwall_tests::reach::{self, cell, Peer};
use podwall_tests::{ExternalHost, Node, Pod, TestNetns};

const INSIDE: &str = "203.0.113.10";
const EXCEPTED: &str = "203.0.113.200";

/// The ports every matrix is probed on: the database, the two numbers `http` resolves to,
/// and the UDP range.
const PORTS: [(Protocol, u16); 4] = [(Tcp, 5432), (Tcp, 8080), (Tcp, 8001), (Udp, 5050)];

/// The namespaces and pods; `ops_team` labels the ops namespace, `front_role` web/front.
fn world(ops_team: &str, front_role: &str) -> String {
    documents(&[
        namespace("app", &[]),
        namespace("web", &[("team", "web")]),
        namespace("ops", &[("team", ops_team)]),
        PodManifest::new("app", "db")
            .labels(&[("app", "db")])
            .yaml(),
        PodManifest::new("app", "api")
            .labels(&[("app", "api")])
            .ports(&[("http", 8080, "TCP")])
            .yaml(),
        PodManifest::new("app", "worker")
            .labels(&[("app", "worker")])
            .ports(&[("http", 8001, "TCP")])
            .yaml(),
        PodManifest::new("web", "front")
            .labels(&[("role", front_role)])
            .yaml(),
        PodManifest::new("ops", "probe")
            .ports(&[("http", 8080, "TCP")])
            .yaml(),
        PodManifest::new("ops", "tool").yaml(),
    ])
}

/// db: two policies (api and worker on 5432, the outside block on 5432); api and worker:
/// `http` from team=web namespaces; worker: egress to db, to two overlapping blocks and to
/// `http` anywhere; front: a UDP range from anywhere; ops, last: egress only within ops,
/// ingress only from team=web namespaces.
const POLICIES: [&str; 6] = [
    "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-api, namespace: app}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: api}}}, {podSelector: {matchLabels: {app: worker}}}]
    ports: [{protocol: TCP, port: 5432}]
",
    "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-outside, namespace: app}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{ipBlock: {cidr: 203.0.113.0/24, except: [203.0.113.128/25]}}]
    ports: [{port: 5432}]
",
    "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: http-from-web, namespace: app}
spec:
  podSelector: {matchExpressions: [{key: app, operator: In, values: [api, worker]}]}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: web}}}]
    ports: [{port: http}]
",
    "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: worker-egress, namespace: app}
spec:
  podSelector: {matchLabels: {app: worker}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: db}}}]
    ports: [{port: 5432}]
  - to:
    - ipBlock: {cidr: 203.0.113.0/25}
    - ipBlock: {cidr: 203.0.113.0/24, except: [203.0.113.0/26, 203.0.113.128/25]}
  - ports: [{port: http}]
",
    "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: front-range, namespace: web}
spec:
  podSelector: {matchLabels: {role: front}}
  ingress:
  - ports: [{protocol: UDP, port: 5000, endPort: 5100}]
",
    "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: lockdown, namespace: ops}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: web}}}]
  egress:
  - to: [{podSelector: {}}]
",
];

/// Probe every port and compare with the evaluator; panic with both matrices and the
/// node's filter table on any difference. Returns the agreed matrices, in `PORTS` order.
fn assert_agree(
    node: &Node,
    snap: &Snapshot,
    peers: &[Peer],
) -> Vec<podwalld::explain::report::Matrix> {
    PORTS
        .iter()
        .map(|(protocol, port)| {
            let want = reach::expected(snap, peers, *protocol, *port);
            let got = reach::observed(peers, *protocol, *port);
            if !reach::mismatches(&want, &got).is_empty() {
                panic!(
                    "the kube-router baseline disagrees with the evaluator\n{}\n--- filter table ---\n{}",
                    reach::report(&want, &got),
                    iptables_save(&node.netns)
                );
            }
            want
        })
        .collect()
}

fn exec(ns: &TestNetns, words: &[&str]) -> String {
    ns.exec(words)
        .and_then(|o| o.ok())
        .unwrap_or_else(|e| panic!("{e:#}"))
        .stdout
}

fn iptables_save(ns: &TestNetns) -> String {
    exec(ns, &["iptables-nft-save", "-t", "filter"])
}

fn ipsets(ns: &TestNetns) -> BTreeSet<String> {
    exec(ns, &["ipset", "list", "-n"])
        .lines()
        .map(str::to_string)
        .collect()
}

/// The kernel holds exactly what `scripts` describe: its chains, each rule once, its sets.
fn assert_loaded_exactly(ns: &TestNetns, scripts: &Scripts) {
    let saved = iptables_save(ns);
    let chains = |text: &str| -> BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(':'))
            .map(|l| l.split(' ').next().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(chains(&saved), chains(&scripts.iptables), "chains\n{saved}");
    let rules = |text: &str| text.lines().filter(|l| l.starts_with("-A ")).count();
    assert_eq!(
        rules(&saved),
        rules(&scripts.iptables),
        "every rule once\n{saved}"
    );
    assert_eq!(ipsets(ns), scripts.sets, "no stale or TMP sets");
}

#[test]
#[ignore = "needs root: run tests/run.sh"]
fn baseline_agrees_with_the_evaluator_and_resyncs_cleanly() {
    let node = Node::new("kr");
    let bridge_only = node.write_conflist("bridge", &node.conflist_json("1.0.0", None));
    let inside = ExternalHost::attach(&node, INSIDE);
    let excepted = ExternalHost::attach(&node, EXCEPTED);
    let pods = [
        Pod::named("kr-db", "app", "db"),
        Pod::named("kr-api", "app", "api"),
        Pod::named("kr-worker", "app", "worker"),
        Pod::named("kr-front", "web", "front"),
        Pod::named("kr-probe", "ops", "probe"),
        Pod::named("kr-tool", "ops", "tool"),
    ];
    for pod in &pods {
        node.libcni("add", &bridge_only, pod)
            .unwrap_or_else(|e| panic!("ADD {}: {e}", pod.container_id));
    }
    let local: Vec<&Pod> = pods.iter().collect();
    let mut peers: Vec<Peer> = pods.iter().map(Peer::pod).collect();
    peers.push(Peer::external(&inside));
    peers.push(Peer::external(&excepted));
    peers.push(Peer::node(&node));
    let mut numbers: Vec<u16> = PORTS.iter().map(|(_, p)| *p).collect();
    numbers.sort();
    numbers.dedup();
    let _servers = reach::serve(&peers, &numbers);

    // First sync.
    let dir = node.manifests();
    dir.write("world.yaml", &world("ops", "front"));
    dir.write("policies.yaml", &documents(&POLICIES));
    let snap = reach::snapshot(&dir, &node, &local);
    let scripts = kuberouter::generate(&snap, node.name());
    let cost = kuberouter::apply(&node.netns, &scripts).unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("first sync: {cost:?}");
    assert!(
        cost.wall > Duration::ZERO && cost.cpu > Duration::ZERO && cost.max_rss_kib > 0,
        "{cost:?}"
    );
    assert_loaded_exactly(&node.netns, &scripts);
    let m = assert_agree(&node, &snap, &peers);
    let [db, http, http2, udp] = [&m[0], &m[1], &m[2], &m[3]];
    // The world does what it says, so agreement is not agreement on "everything open".
    assert!(cell(db, "app/api", "app/db") && cell(db, "app/worker", "app/db"));
    assert!(!cell(db, "web/front", "app/db"));
    assert!(cell(db, INSIDE, "app/db") && !cell(db, EXCEPTED, "app/db"));
    assert!(cell(http, "web/front", "app/api") && !cell(http2, "web/front", "app/api"));
    assert!(cell(http2, "web/front", "app/worker") && !cell(http, "web/front", "app/worker"));
    assert!(
        !cell(http, "app/worker", "web/front"),
        "worker's egress is isolated"
    );
    assert!(cell(udp, "app/db", "web/front") && !cell(db, "app/db", "web/front"));
    assert!(
        !cell(udp, "ops/probe", "web/front"),
        "ops' egress stays in ops"
    );
    assert!(cell(db, "web/front", "ops/tool"));
    assert!(
        !cell(db, "ops/probe", "ops/tool"),
        "probe's egress admits tool, tool's ingress does not admit probe"
    );
    assert!(
        cell(http, "app/worker", INSIDE),
        "in the first block, cut out of the second"
    );
    assert!(!cell(http, "app/worker", EXCEPTED), "in neither block");
    assert!(cell(db, "node", "app/db"), "the node reaches its pods");
    assert_host_untouched(&scripts);

    // A resync of the same world changes nothing.
    kuberouter::apply(&node.netns, &scripts).unwrap_or_else(|e| panic!("{e:#}"));
    assert_loaded_exactly(&node.netns, &scripts);

    // The ops lockdown goes, ops becomes a team=web namespace, front is relabelled out of
    // its policy: a resync of the changed world.
    dir.write("world.yaml", &world("web", "back"));
    dir.write("policies.yaml", &documents(&POLICIES[..5]));
    let changed = reach::snapshot(&dir, &node, &local);
    assert_eq!(changed.policies.len(), snap.policies.len() - 1);
    let rescripts = kuberouter::generate(&changed, node.name());
    assert!(
        scripts.sets.difference(&rescripts.sets).count() > 0,
        "the lockdown's sets are no longer wanted"
    );
    kuberouter::apply(&node.netns, &rescripts).unwrap_or_else(|e| panic!("{e:#}"));
    assert_loaded_exactly(&node.netns, &rescripts);
    let m = assert_agree(&node, &changed, &peers);
    assert!(
        cell(&m[1], "ops/probe", "app/api"),
        "ops is a team=web namespace now"
    );
    assert!(
        cell(&m[0], "app/db", "web/front"),
        "front is no longer selected"
    );

    // Clearing leaves the namespace as it was: no table, no sets, everything open.
    kuberouter::clear(&node.netns).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(ipsets(&node.netns).is_empty());
    let tables = exec(&node.netns, &["nft", "list", "tables"]);
    assert!(!tables.contains("table ip filter"), "{tables}");
    assert!(
        reach::probe_once(&peers[4], &peers[3], Tcp, 5432),
        "ops/probe -> web/front"
    );
}

/// The sets and chains live in the node's namespace and go with it: the host's own (only
/// read here) have none of them.
fn assert_host_untouched(scripts: &Scripts) {
    let host = |words: &[&str]| {
        podwall_tests::cmd::sh(words)
            .unwrap_or_else(|e| panic!("{e:#}"))
            .stdout
    };
    let sets = host(&["ipset", "list", "-n"]);
    assert!(
        sets.lines().all(|set| !scripts.sets.contains(set)),
        "a set of the node is in the host's namespace:\n{sets}"
    );
    let table = host(&["iptables-nft-save", "-t", "filter"]);
    let ours = scripts
        .iptables
        .lines()
        .filter_map(|l| l.strip_prefix(":KUBE-POD-FW-"))
        .map(|l| l.split(' ').next().unwrap_or_default());
    for chain in ours {
        assert!(
            !table.contains(chain),
            "chain KUBE-POD-FW-{chain} is in the host's table"
        );
    }
}
