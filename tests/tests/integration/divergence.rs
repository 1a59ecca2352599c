//! Issue 11: the kernel holds what the policies say, or `/healthz` says why and the daemon
//! retries. Each test is an input a real cluster produces that once left the kernel behind
//! the policies while health said ok: an element batch larger than one netlink attribute, a
//! policy name at its length limit, a kernel that refuses a transaction for a while, and
//! br_netfilter switched off behind the daemon's back.

use std::path::Path;
use std::time::Duration;

use podwall_policy::Protocol::Tcp;
use podwall_tests::manifests::{documents, namespace, PodManifest};
use podwall_tests::nft::OwnedTable;
use podwall_tests::reach::{self, Peer};
use podwall_tests::{eventually, ExternalHost, Node, NodeOptions, Pod};

/// Long enough for a daemon on a loaded 2-core machine to read a large manifests directory.
const APPLY: Duration = Duration::from_secs(30);

/// A policy on `app/srv` that admits only pods of namespaces labelled `team: big`.
const FROM_BIG: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-big, namespace: app}
spec:
  podSelector: {}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: big}}}]
";

fn healthz(node: &Node) -> (u16, String) {
    node.http_get("/healthz")
        .unwrap_or_else(|e| panic!("GET /healthz: {e:#}"))
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn a_namespace_of_thousands_of_pods_starting_to_match_is_enforced_in_one_batch() {
    let mut node = Node::with_options(
        "bigns",
        NodeOptions {
            manifests: true,
            ..NodeOptions::default()
        },
    );
    let far = ExternalHost::attach(&node, "198.51.100.20");
    // 8,000 pods of another node in namespace `big`: their addresses fill ~4 netlink
    // attributes' worth of elements. Only the last one is a host that sends traffic.
    let mut pods: Vec<String> = (0..8_000u32)
        .map(|i| {
            let ip = std::net::Ipv4Addr::from(0x0afa_0000 + i).into();
            PodManifest::new("big", &format!("p{i}"))
                .remote("pwt-elsewhere", &[ip])
                .yaml()
        })
        .collect();
    pods.push(
        PodManifest::new("big", "far")
            .remote("pwt-elsewhere", &[far.addr()])
            .yaml(),
    );
    let dir = node.manifests();
    dir.write("big.yaml", &documents(&pods));
    dir.write("ns-big.yaml", &namespace("big", &[]));
    dir.write(
        "app.yaml",
        &documents(&[namespace("app", &[]), PodManifest::new("app", "srv").yaml()]),
    );
    dir.write("policy.yaml", FROM_BIG);
    node.start_daemon();
    let srv = Pod::named("big-srv", "app", "srv");
    node.add_all(&[&srv]);
    let (to, from) = (Peer::pod(&srv), Peer::external(&far));
    let _servers = reach::serve(std::slice::from_ref(&to), &[80]);
    assert!(
        reach::settles(APPLY, &from, &to, Tcp, 80, false),
        "namespace big is not selected yet"
    );

    dir.write("ns-big.yaml", &namespace("big", &[("team", "big")]));
    assert!(
        reach::settles(APPLY, &from, &to, Tcp, 80, true),
        "a pod of the newly labelled namespace is let in\n{}",
        node.daemon_log()
    );
    let (code, body) = healthz(&node);
    assert_eq!(code, 200, "{body}");
}

/// A name of 253 characters, the most Kubernetes allows.
fn long_name() -> String {
    let mut name = "deny-".to_string();
    name.push_str(&"x".repeat(253 - name.len()));
    name
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn a_policy_named_at_the_length_limit_isolates_its_pods_also_after_a_restart() {
    let policy = format!(
        "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {}, namespace: long}}
spec:
  podSelector: {{matchLabels: {{app: db}}}}
  ingress:
  - from: [{{podSelector: {{matchLabels: {{role: client}}}}}}]
",
        long_name()
    );
    let world = documents(&[
        namespace("long", &[]),
        PodManifest::new("long", "db")
            .labels(&[("app", "db")])
            .yaml(),
        PodManifest::new("long", "db2")
            .labels(&[("app", "db")])
            .yaml(),
        PodManifest::new("long", "client")
            .labels(&[("role", "client")])
            .yaml(),
        PodManifest::new("long", "other").yaml(),
    ]);
    let mut node = Node::standalone("longname", NodeOptions::default(), &[("world.yaml", world)]);
    let (db, client, other) = (
        Pod::named("ln-db", "long", "db"),
        Pod::named("ln-client", "long", "client"),
        Pod::named("ln-other", "long", "other"),
    );
    node.add_all(&[&db, &client, &other]);
    let peers = [Peer::pod(&db), Peer::pod(&client), Peer::pod(&other)];
    let _servers = reach::serve(&peers, &[5432]);

    // Added after its pod: the pod must leave `open`.
    node.manifests().write("policy.yaml", &policy);
    assert!(
        reach::settles(APPLY, &peers[2], &peers[0], Tcp, 5432, false),
        "the policy isolates db\n{}",
        node.daemon_log()
    );
    assert!(reach::settles(APPLY, &peers[1], &peers[0], Tcp, 5432, true));

    // A restart with the policy present serves, and a new selected pod attaches isolated.
    node.stop_daemon();
    node.start_daemon();
    let db2 = Pod::named("ln-db2", "long", "db2");
    node.add_all(&[&db2]);
    let to = Peer::pod(&db2);
    let _more = reach::serve(std::slice::from_ref(&to), &[5432]);
    assert!(reach::settles(APPLY, &peers[2], &to, Tcp, 5432, false));
    assert!(reach::settles(APPLY, &peers[1], &to, Tcp, 5432, true));
    assert_eq!(healthz(&node).0, 200);
}

/// Denies namespace `r` all but pods labelled `app: admin` (there are none): its chain
/// needs a set of their addresses.
const DENY: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: r}
spec:
  podSelector: {}
  ingress: [{from: [{podSelector: {matchLabels: {app: admin}}}]}]
";

#[test]
#[ignore = "needs root: creates network namespaces"]
fn a_change_the_kernel_refuses_stays_pending_named_in_healthz_until_it_lands() {
    let mut node = Node::with_options(
        "refuse",
        NodeOptions {
            manifests: true,
            // Reconciles come often: none of them may call a pending change healthy.
            sync_period: Some("1s".into()),
            ..NodeOptions::default()
        },
    );
    let world = documents(&[
        namespace("r", &[]),
        namespace("other", &[]),
        PodManifest::new("r", "a").yaml(),
        PodManifest::new("other", "b").yaml(),
    ]);
    node.manifests().write("world.yaml", &world);
    node.start_daemon();
    let (a, b) = (
        Pod::named("rf-a", "r", "a"),
        Pod::named("rf-b", "other", "b"),
    );
    node.add_all(&[&a, &b]);
    let (pa, pb) = (Peer::pod(&a), Peer::pod(&b));
    let _servers = reach::serve(&[pa.clone(), pb.clone()], &[80]);
    assert!(reach::settles(APPLY, &pb, &pa, Tcp, 80, true));

    // The kernel refuses every change the daemon makes: its structural batch for the policy,
    // and the whole-table swap it falls back to.
    let owner = OwnedTable::take_over(&node.netns).unwrap();
    node.manifests().write("deny.yaml", DENY);
    assert!(
        eventually(APPLY, || {
            let (code, body) = healthz(&node);
            code == 503 && body.contains("policy r/deny")
        }),
        "healthz names the refused policy: {:?}",
        healthz(&node)
    );
    // Several reconciles later it is still red, and counted.
    std::thread::sleep(Duration::from_secs(3));
    let (code, body) = healthz(&node);
    assert_eq!(
        code, 503,
        "a reconcile must not call a pending change healthy: {body}"
    );
    let metrics = node.metrics();
    assert!(metrics.value("podwall_pending_changes") >= 1.0);
    assert!(metrics.value("podwall_pending_oldest_seconds") > 0.0);

    // The kernel takes it again: the policy lands with no further change from the source.
    drop(owner);
    assert!(
        reach::settles(APPLY, &pb, &pa, Tcp, 80, false),
        "the policy is enforced once the kernel takes it\n{}",
        node.daemon_log()
    );
    assert!(eventually(APPLY, || healthz(&node).0 == 200));
    assert_eq!(node.metrics().value("podwall_pending_changes"), 0.0);
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn br_netfilter_switched_off_at_runtime_is_switched_back_on_and_counted() {
    let world = documents(&[
        namespace("n", &[]),
        PodManifest::new("n", "a").yaml(),
        PodManifest::new("n", "b").yaml(),
    ]);
    let deny = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: n}
spec: {podSelector: {matchLabels: {}}, ingress: []}
";
    let node = Node::standalone(
        "brnf",
        NodeOptions::default(),
        &[("world.yaml", world), ("deny.yaml", deny.into())],
    );
    let (a, b) = (Pod::named("bn-a", "n", "a"), Pod::named("bn-b", "n", "b"));
    node.add_all(&[&a, &b]);
    let (pa, pb) = (Peer::pod(&a), Peer::pod(&b));
    let _servers = reach::serve(&[pa.clone(), pb.clone()], &[80]);
    assert!(reach::settles(APPLY, &pb, &pa, Tcp, 80, false));

    let knob = "net.bridge.bridge-nf-call-iptables";
    node.netns
        .exec(&["sysctl", "-qw", &format!("{knob}=0")])
        .and_then(podwall_tests::cmd::Output::ok)
        .unwrap_or_else(|e| panic!("switching {knob} off: {e:#}"));
    assert!(
        eventually(APPLY, || {
            node.metrics()
                .value("podwall_bridge_netfilter_restores_total")
                >= 1.0
        }),
        "the daemon notices and counts it\n{}",
        node.daemon_log()
    );
    let value = node
        .netns
        .exec(&["sysctl", "-n", knob])
        .and_then(podwall_tests::cmd::Output::ok)
        .unwrap_or_else(|e| panic!("reading {knob}: {e:#}"));
    assert_eq!(value.stdout.trim(), "1");
    assert!(
        reach::settles(APPLY, &pb, &pa, Tcp, 80, false),
        "same-node traffic is filtered again"
    );
    assert_eq!(healthz(&node).0, 200);
}

/// Damage the stopped daemon's store: the value under `key` of `tree` no longer parses.
fn damage_store(state_dir: &Path, tree: &str, key: &[u8]) {
    let db = sled::open(state_dir).unwrap_or_else(|e| panic!("opening the store: {e}"));
    let tree = db.open_tree(tree).unwrap();
    assert!(
        tree.get(key).unwrap().is_some(),
        "nothing stored under {key:?}"
    );
    tree.insert(key, b"{\"truncated".to_vec()).unwrap();
    db.flush().unwrap();
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn an_unreadable_attachment_record_is_rebuilt_from_the_runtimes_cni_cache() {
    let mut node = Node::standalone(
        "lostrec",
        NodeOptions::default(),
        &[(
            "world.yaml",
            documents(&[
                namespace("r", &[]),
                PodManifest::new("r", "a").yaml(),
                PodManifest::new("r", "b").yaml(),
            ]),
        )],
    );
    node.daemon_args.extend([
        "--cni-cache-dir".to_string(),
        node.cni_cache_dir().display().to_string(),
    ]);
    node.stop_daemon();
    node.start_daemon();
    let (a, b) = (Pod::named("lr-a", "r", "a"), Pod::named("lr-b", "r", "b"));
    node.add_all(&[&a, &b]);
    node.manifests().write("deny.yaml", DENY);
    let (pa, pb) = (Peer::pod(&a), Peer::pod(&b));
    let _servers = reach::serve(&[pa.clone(), pb.clone()], &[80]);
    assert!(reach::settles(APPLY, &pb, &pa, Tcp, 80, false));

    node.stop_daemon();
    let key = [a.container_id.as_bytes(), b"\0", a.ifname.as_bytes()].concat();
    damage_store(&node.state_dir(), "attachments/v1", &key);
    node.start_daemon();
    assert_eq!(healthz(&node).0, 200, "{}", node.daemon_log());
    assert!(
        node.metrics().value("podwall_store_discards_total") >= 1.0,
        "the damage is counted"
    );
    assert!(
        reach::settles(APPLY, &pb, &pa, Tcp, 80, false),
        "a is still enforced: its attachment was rebuilt\n{}",
        node.ruleset_text()
    );
    node.expect_attached(a.ip4());
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn an_unreadable_stored_cluster_state_is_discarded_and_relisted() {
    let mut cluster = podwall_tests::Cluster::started("lostsnap", 1);
    cluster.apply(&namespace("app", &[]));
    for name in ["a", "b"] {
        cluster.apply(&cluster.pod_yaml(0, "app", name, &[("app", name)], &[]));
    }
    cluster.apply(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: app}\n\
         spec: {podSelector: {matchLabels: {app: a}}}\n",
    );
    let (a, b) = (
        Pod::named("ls-a", "app", "a"),
        Pod::named("ls-b", "app", "b"),
    );
    cluster.attach(0, &a);
    cluster.attach(0, &b);
    let (pa, pb) = (Peer::pod(&a), Peer::pod(&b));
    let _servers = reach::serve(&[pa.clone(), pb.clone()], &[80]);
    assert!(reach::settles(APPLY, &pb, &pa, Tcp, 80, false));
    // The cluster state reaches the store within a persist period (5 s).
    std::thread::sleep(Duration::from_secs(6));

    let node = &mut cluster.nodes[0];
    node.stop_daemon();
    let file = node.state_dir().join("cluster.json");
    assert!(file.is_file(), "nothing stored in {}", file.display());
    std::fs::write(&file, b"{\"truncated").expect("damaging the stored cluster state");
    node.start_daemon();
    assert!(node.metrics().value("podwall_store_discards_total") >= 1.0);
    assert!(reach::settles(APPLY, &pb, &pa, Tcp, 80, false));
    assert!(reach::settles(APPLY, &pa, &pb, Tcp, 80, true));
}
