//! Issue 15: the drop log. A connection a policy denies gives exactly one JSON line, within
//! 2 s, naming both pods (or `external`) and the policies that isolate the side that dropped
//! it: between two pods of one node, from an external host, and across two nodes (one denied
//! at the receiver's ingress, one at the sender's egress). A policy annotated
//! `podwall.io/log: allow` logs what it allows too. A burst of 10,000 denied packets to one
//! pod gives the per-pod rate's lines and one line telling how many were held back.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use podwall_tests::cluster::Cluster;
use podwall_tests::external::ExternalHost;
use podwall_tests::manifests::namespace;
use podwall_tests::probe::{self, EchoServer};
use podwall_tests::trio::{self, Trio, QUICK, WEB_FROM_CLIENT};
use podwall_tests::{eventually, Node, NodeOptions, Pod};
use serde_json::Value;

/// `web-from-client`, logging what it allows too.
fn logged_policy() -> String {
    let logged = "namespace: app, annotations: {podwall.io/log: allow}}";
    WEB_FROM_CLIENT.replacen("namespace: app}", logged, 1)
}
/// How soon a denied connection must show in the log.
const LOGGED: Duration = Duration::from_secs(2);
/// The daemon's default lines a second per pod.
const RATE: usize = 50;

/// What a deny line says, in a form a test can compare.
#[derive(Debug, PartialEq, Eq)]
struct Said {
    verdict: String,
    direction: String,
    protocol: String,
    src_pod: String,
    dst_pod: String,
    dst_port: Option<u64>,
    policies: Vec<String>,
}

fn said(line: &Value) -> Said {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    Said {
        verdict: text(&line["verdict"]),
        direction: text(&line["direction"]),
        protocol: text(&line["protocol"]),
        src_pod: text(&line["src"]["pod"]),
        dst_pod: text(&line["dst"]["pod"]),
        dst_port: line["dst"]["port"].as_u64(),
        policies: (line["policies"].as_array().into_iter().flatten())
            .map(text)
            .collect(),
    }
}

fn deny(direction: &str, src: &str, dst: &str, port: u64, policy: &str) -> Said {
    Said {
        verdict: "deny".into(),
        direction: direction.into(),
        protocol: "tcp".into(),
        src_pod: src.into(),
        dst_pod: dst.into(),
        dst_port: Some(port),
        policies: vec![policy.into()],
    }
}

/// The daemon's CPU time so far, every thread's, to the nanosecond (the scheduler's own
/// account: `/proc/<pid>/task/*/schedstat` starts with the time run).
fn cpu_time(pid: u32) -> Duration {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon's threads");
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn denied_connections_on_one_node_and_from_outside_are_logged_once_with_pods_and_policies() {
    let node = Node::standalone(
        "droplog",
        NodeOptions::default(),
        &[
            ("world.yaml", trio::world()),
            ("policy.yaml", logged_policy()),
        ],
    );
    let pods = Trio::attach(&node, "dl");
    let (web, other) = (&pods.web, &pods.other);
    let outside = ExternalHost::attach(&node, "192.0.2.10");

    // Allowed, by a policy that logs what it allows: one line. Denied from another pod, long
    // enough for the SYN to be sent again (after 1 s): still one line. Denied from outside.
    assert!(pods.reaches_web(&pods.client));
    let retried = Duration::from_millis(1_300);
    let port = pods.server.port();
    assert!(!probe::tcp_connects(&other.netns, web.ip4(), port, retried));
    assert!(!probe::tcp_connects(&outside.netns, web.ip4(), port, QUICK));
    let logged = eventually(LOGGED, || node.drop_log().len() >= 3);
    let lines = node.drop_log();
    assert!(
        logged,
        "within {LOGGED:?}: {lines:#?}\n{}",
        node.daemon_log()
    );
    let policy = "app/web-from-client";
    assert_eq!(
        lines.iter().map(said).collect::<Vec<_>>(),
        [
            Said {
                verdict: "allow".into(),
                ..deny("ingress", "app/client", "app/web", 7000, policy)
            },
            deny("ingress", "app/other", "app/web", 7000, policy),
            deny("ingress", "external", "app/web", 7000, policy),
        ]
    );
    assert_eq!(lines[1]["src"]["addr"], other.ip4().to_string());
    assert_eq!(lines[2]["src"]["addr"], "192.0.2.10");
    assert_eq!(lines[0]["node"], node.name());
    assert!(lines[0]["time"].as_str().is_some_and(|t| t.ends_with('Z')));

    // A burst: 10,000 datagrams from one pod to as many ports of another, in a fresh second
    // of web's rate.
    std::thread::sleep(Duration::from_millis(1_100));
    let pid = node.daemon_pid().expect("the daemon runs");
    let cpu_before = cpu_time(pid);
    let socket = (other.netns)
        .run_in(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
        .expect("a UDP socket in the pod");
    let target = web.ip4();
    let started = Instant::now();
    for port in 1..=10_000u16 {
        let _ = socket.send_to(b"x", (target, port));
    }
    let sent_in = started.elapsed();
    let is_burst = |l: &Value| l["protocol"] == "udp";
    let told = |lines: &[Value]| lines.iter().any(|l| l["suppressed"].is_u64());
    let settled = eventually(Duration::from_secs(5), || told(&node.drop_log()));
    let cpu = cpu_time(pid).saturating_sub(cpu_before);
    let lines = node.drop_log();
    let burst: Vec<&Value> = lines.iter().filter(|l| is_burst(l)).collect();
    let suppressions: Vec<&Value> = lines.iter().filter(|l| l["suppressed"].is_u64()).collect();
    eprintln!(
        "10,000 denied datagrams sent in {sent_in:?}: {} lines, suppressed {:?}; the daemon's CPU for them: {cpu:?}",
        burst.len(),
        suppressions.iter().map(|l| &l["suppressed"]).collect::<Vec<_>>()
    );
    assert!(settled, "no suppression line: {lines:#?}");
    assert_eq!(burst.len(), RATE, "one second of web's rate");
    assert_eq!(suppressions.len(), 1, "{suppressions:#?}");
    assert_eq!(suppressions[0]["pod"], "app/web");
    let held = suppressions[0]["suppressed"].as_u64().unwrap_or(0);
    assert!(
        held > 0 && held as usize + RATE <= 10_000,
        "suppressed {held}"
    );
    assert!(burst.iter().all(|l| said(l).src_pod == "app/other"
        && said(l).dst_pod == "app/web"
        && said(l).policies == [policy]));
    let m = node.metrics();
    assert_eq!(m.value("podwall_drop_log_suppressed_total"), held as f64);
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn denied_connections_across_nodes_are_logged_by_the_node_that_dropped_them() {
    let cluster = Cluster::started("droplog", 2);
    cluster.apply(&namespace("x", &[("ns", "x")]));
    // a and c on the first node, b and d on the second.
    let placed = [(0, "a"), (1, "b"), (0, "c"), (1, "d")];
    let mut pods = Vec::new();
    for (node, name) in placed {
        cluster.apply(&cluster.pod_yaml(node, "x", name, &[("pod", name)], &[]));
        let pod = Pod::named(&format!("dlx-{name}"), "x", name);
        cluster.attach(node, &pod);
        pods.push(pod);
    }
    let (a, b, c, d) = (&pods[0], &pods[1], &pods[2], &pods[3]);
    let _servers = [b, d].map(|p| EchoServer::start(&p.netns, 80));
    cluster.apply(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-closed, namespace: x}
spec: {podSelector: {matchLabels: {pod: b}}, policyTypes: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-silent, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress]}
",
    );
    // Until both policies are in both kernels, a probe may pass; once they are, none does.
    let closed = eventually(Duration::from_secs(10), || {
        !probe::tcp_connects(&c.netns, b.ip4(), 80, QUICK)
            && !probe::tcp_connects(&a.netns, d.ip4(), 80, QUICK)
    });
    assert!(closed, "{}", cluster.tables());
    // The probes that ran while the policies landed have their lines: once those are
    // written, one more attempt each must give exactly one new line each.
    let (first, second) = (cluster.node(0), cluster.node(1));
    std::thread::sleep(Duration::from_secs(1));
    let before = (first.drop_log().len(), second.drop_log().len());
    assert!(!probe::tcp_connects(&c.netns, b.ip4(), 80, QUICK));
    assert!(!probe::tcp_connects(&a.netns, d.ip4(), 80, QUICK));
    let logged = eventually(LOGGED, || {
        first.drop_log().len() > before.0 && second.drop_log().len() > before.1
    });
    let new = |node: &Node, from: usize| -> Vec<Said> {
        node.drop_log()[from..].iter().map(said).collect()
    };
    assert!(logged, "{:#?}\n{:#?}", first.drop_log(), second.drop_log());
    assert_eq!(
        new(second, before.1),
        [deny("ingress", "x/c", "x/b", 80, "x/b-closed")],
        "the receiver's node"
    );
    assert_eq!(
        new(first, before.0),
        [deny("egress", "x/a", "x/d", 80, "x/a-silent")],
        "the sender's node"
    );
    let remote: IpAddr = d.ip4();
    assert_eq!(
        first.drop_log()[before.0]["dst"]["addr"],
        remote.to_string()
    );
}

/// A podwalld whose `nft` refuses any script with a log rule, as a kernel without the `log`
/// or `limit` expression would.
fn daemon_refusing_log_rules(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let nft = dir.join("nft");
    let refusing = "#!/bin/sh\nscript=$(cat)\ncase \"$script\" in *'log prefix'*) \
        echo 'Error: Could not process rule: No such file or directory' >&2; exit 1;; esac\n\
        printf '%s\\n' \"$script\" | exec /usr/sbin/nft \"$@\"\n";
    std::fs::write(&nft, refusing).expect("writing the refusing nft");
    let daemon = dir.join("podwalld");
    let wrapper = format!(
        "#!/bin/sh\nPATH={}:$PATH exec {} \"$@\"\n",
        dir.display(),
        podwall_tests::bins::daemon().display()
    );
    std::fs::write(&daemon, wrapper).expect("writing the daemon wrapper");
    for file in [&nft, &daemon] {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o755))
            .expect("making it executable");
    }
    daemon
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn a_kernel_that_refuses_the_log_rule_leaves_the_drop_log_off_and_enforcement_whole() {
    let tools = tempfile::tempdir().expect("a temp dir");
    let mut node = Node::with_options(
        "droplog-refused",
        NodeOptions {
            manifests: true,
            daemon: Some(daemon_refusing_log_rules(tools.path())),
            ..NodeOptions::default()
        },
    );
    let dir = node.manifests();
    dir.write("world.yaml", &trio::world());
    dir.write("policy.yaml", WEB_FROM_CLIENT);
    let drop_log = node.drop_log_path().display().to_string();
    node.daemon_args = vec!["--drop-log".into(), drop_log];
    node.start_daemon();
    Trio::attach(&node, "dlr").assert_enforced();
    assert_eq!(node.healthz().ok(), Some(200), "{}", node.daemon_log());
    let table = node.ruleset_text();
    assert!(
        table.contains("chain in_") && !table.contains("log prefix"),
        "{table}"
    );
    assert!(
        node.daemon_log()
            .contains("the kernel refuses the drop log's rule"),
        "{}",
        node.daemon_log()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(node.drop_log().is_empty(), "{:#?}", node.drop_log());
}
