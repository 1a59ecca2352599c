//! Issue 2: the podwall plugin chained after bridge, driven through the real libcni and by
//! hand, against a real `podwalld` in a throw-away node.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use podwall_tests::cni::{self, entry_config};
use podwall_tests::probe::{self, EchoServer, PROBE_TIMEOUT};
use podwall_tests::{Node, NodeOptions, Pod};
use serde_json::{json, Value};

/// CNI error codes the tests expect (plugin/src/cni.rs, `code`).
const INVALID_CONFIG: u64 = 7;
const TRY_AGAIN_LATER: u64 = 11;
const NOT_AVAILABLE: u64 = 50;
const RULES_MISSING: u64 = 101;

fn ok(outcome: cni::CniOutcome, what: &str) -> Value {
    outcome.unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn code(outcome: cni::CniOutcome, what: &str) -> u64 {
    match outcome {
        Ok(v) => panic!("{what}: expected a CNI error, got success: {v}"),
        Err(e) => e
            .code
            .unwrap_or_else(|| panic!("{what}: no CNI error object: {e}")),
    }
}

/// A podwall entry of `node` with some keys changed.
fn podwall_with(node: &Node, changes: Value) -> Value {
    let mut entry = node.podwall_entry();
    for (k, v) in changes.as_object().expect("an object of changes") {
        entry[k] = v.clone();
    }
    entry
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn add_check_del_through_libcni_with_pods_talking() {
    let node = Node::started("acd");
    let a = Pod::named("acd-a", "shop", "front");
    let b = Pod::named("acd-b", "shop", "db");
    let ra = ok(node.add(&a), "ADD a");
    ok(node.add(&b), "ADD b");
    assert_eq!(
        cni::result_ips(&ra),
        vec![a.ip4()],
        "the chain's result is bridge's, naming the pod's address"
    );
    ok(node.check(&a), "CHECK a");
    ok(node.check(&b), "CHECK b");
    assert_eq!(node.status(), (true, 2));

    let at_b = EchoServer::start(&b.netns, 8080);
    let at_a = EchoServer::start(&a.netns, 9090);
    assert!(
        probe::tcp_connects(&a.netns, b.ip4(), at_b.port(), PROBE_TIMEOUT),
        "TCP a→b"
    );
    assert!(
        probe::tcp_connects(&b.netns, a.ip4(), at_a.port(), PROBE_TIMEOUT),
        "TCP b→a"
    );
    assert!(
        probe::udp_reaches(&a.netns, b.ip4(), at_b.port(), PROBE_TIMEOUT),
        "UDP a→b"
    );
    assert!(
        probe::udp_reaches(&b.netns, a.ip4(), at_a.port(), PROBE_TIMEOUT),
        "UDP b→a"
    );

    ok(node.del(&a), "DEL a");
    ok(node.del(&b), "DEL b");
    assert!(
        a.ips().is_empty() && b.ips().is_empty(),
        "bridge's DEL ran too"
    );
    assert_eq!(node.status(), (true, 0));
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn add_installs_pod_chains_and_map_elements_and_del_removes_them() {
    let node = Node::started("elems");
    let pod = Pod::new("elems");
    ok(node.add(&pod), "ADD");
    let ip = pod.ip4();
    let chains = node.expect_attached(ip);

    ok(node.del(&pod), "DEL");
    node.expect_detached(ip, &chains);
    let check = node.invoke_podwall(
        "CHECK",
        Some(&pod),
        &entry_config(&node.podwall_entry(), "1.0.0"),
    );
    assert_eq!(code(check, "CHECK after DEL"), RULES_MISSING);
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn del_twice_and_del_without_add_succeed() {
    let node = Node::started("del2");
    let pod = Pod::new("del2");
    ok(node.add(&pod), "ADD");
    ok(node.del(&pod), "first DEL");
    ok(node.del(&pod), "second DEL");

    let never = Pod::new("del2-never");
    ok(node.del(&never), "DEL through libcni of a pod never added");
    ok(
        node.invoke_podwall(
            "DEL",
            Some(&never),
            &entry_config(&node.podwall_entry(), "1.0.0"),
        ),
        "podwall DEL of a pod never added",
    );
    assert_eq!(node.status(), (true, 0));
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn del_succeeds_when_daemon_is_down() {
    let mut node = Node::started("deldown");
    let pod = Pod::new("deldown");
    ok(node.add(&pod), "ADD");
    node.stop_daemon();
    ok(node.del(&pod), "DEL with the daemon stopped");
    ok(node.del(&pod), "second DEL with the daemon stopped");
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn add_without_prev_result_fails_with_code_7_naming_prev_result() {
    let node = Node::started("noprev");
    let pod = Pod::new("noprev");

    let err = node
        .invoke_podwall(
            "ADD",
            Some(&pod),
            &entry_config(&node.podwall_entry(), "1.0.0"),
        )
        .expect_err("ADD without prevResult must fail");
    assert!(!err.output.success(), "exit status non-zero");
    let object = err
        .object
        .clone()
        .unwrap_or_else(|| panic!("stdout is a JSON error object: {err}"));
    assert_eq!(object["code"], INVALID_CONFIG, "{err}");
    assert_eq!(object["cniVersion"], "1.0.0", "{err}");
    assert!(
        format!("{} {}", err.msg, err.details).contains("prevResult"),
        "the message names prevResult: {err}"
    );

    // The same through libcni: a conflist where podwall is alone gets no prevResult.
    let alone = node.write_conflist(
        "alone",
        &json!({"cniVersion": "1.0.0", "name": "pwt", "plugins": [node.podwall_entry()]}),
    );
    let err = node
        .libcni("add", &alone, &pod)
        .expect_err("alone in a conflist");
    assert_eq!(err.code, Some(INVALID_CONFIG), "{err}");
    assert!(
        err.msg.contains("prevResult") || err.details.contains("prevResult"),
        "{err}"
    );
    assert_eq!(node.status(), (true, 0), "nothing was attached");
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn add_fails_with_code_11_when_daemon_is_down_and_policy_is_closed() {
    let mut node = Node::new("closed");
    let pod = Pod::new("closed");
    // Never started: no socket at all.
    assert_eq!(code(node.add(&pod), "ADD, no daemon"), TRY_AGAIN_LATER);
    let (_, podwall) = node.add_by_hand(&Pod::new("closed-hand"), "1.0.0", &node.podwall_entry());
    assert_eq!(code(podwall, "ADD by hand, no daemon"), TRY_AGAIN_LATER);

    // Killed: the socket file is left behind, nothing listens on it.
    node.start_daemon();
    node.kill_daemon();
    let late = Pod::new("closed-late");
    assert_eq!(code(node.add(&late), "ADD after kill -9"), TRY_AGAIN_LATER);
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn add_succeeds_and_echoes_prev_result_when_daemon_is_down_and_policy_is_open() {
    let node = Node::new("open");
    let entry = podwall_with(&node, json!({"failurePolicy": "open"}));
    let list = node.write_conflist("open", &node.conflist_json("1.0.0", Some(entry.clone())));
    let pod = Pod::new("open");
    let result = ok(node.libcni("add", &list, &pod), "ADD through libcni, open");
    assert_eq!(cni::result_ips(&result), vec![pod.ip4()]);

    let by_hand = Pod::new("open-hand");
    let (bridge, podwall) = node.add_by_hand(&by_hand, "1.0.0", &entry);
    assert_eq!(
        ok(podwall, "ADD by hand, open"),
        bridge,
        "prevResult echoed unchanged"
    );
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn add_gives_up_after_timeout_ms_when_daemon_does_not_answer() {
    let node = Node::started("frozen");
    node.signal_daemon(Signal::SIGSTOP);
    let closed = podwall_with(&node, json!({"timeoutMs": 500}));
    let open = podwall_with(&node, json!({"timeoutMs": 500, "failurePolicy": "open"}));

    let started = Instant::now();
    let (_, outcome) = node.add_by_hand(&Pod::new("frozen-c"), "1.0.0", &closed);
    let took = started.elapsed();
    let closed_code = code(outcome, "ADD to a frozen daemon, closed");
    let (bridge, outcome) = node.add_by_hand(&Pod::new("frozen-o"), "1.0.0", &open);
    let open_result = outcome.map_err(|e| e.to_string());
    node.signal_daemon(Signal::SIGCONT);

    assert_eq!(closed_code, TRY_AGAIN_LATER);
    assert!(
        took < Duration::from_secs(4),
        "timeoutMs 500 but ADD took {took:?}"
    );
    assert_eq!(open_result, Ok(bridge), "open: prevResult echoed");
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn twenty_concurrent_adds_all_get_distinct_attachments() {
    const PODS: usize = 20;
    let node = Node::started("twenty");
    let pods: Vec<Pod> = (0..PODS).map(|i| Pod::new(&format!("c{i}"))).collect();
    let outcomes: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = pods.iter().map(|p| s.spawn(|| node.add(p))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("ADD thread"))
            .collect()
    });
    for (pod, outcome) in pods.iter().zip(outcomes) {
        ok(outcome, &format!("ADD {}", pod.container_id));
    }
    let ips: BTreeSet<IpAddr> = pods.iter().map(Pod::ip4).collect();
    assert_eq!(ips.len(), PODS, "distinct addresses");

    let rules = node.ruleset().expect("table inet podwall exists");
    for map in ["ingress4", "egress4"] {
        let keyed: BTreeSet<IpAddr> = rules
            .map(map)
            .iter()
            .filter_map(|(k, _)| k.parse().ok())
            .collect();
        assert_eq!(keyed, ips, "{map} has exactly the pods' addresses");
        // Each pod jumps to an existing chain: its own, or one shared by pods that the same
        // policies select (here none: every pod is open).
        for ip in &ips {
            let chain = rules
                .target(map, *ip)
                .unwrap_or_else(|| panic!("{map} has no jump for {ip}"));
            assert!(
                rules.has_chain(chain),
                "{map}: {ip} jumps to missing {chain}"
            );
        }
    }
    assert_eq!(node.status(), (true, PODS));

    let outcomes: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = pods.iter().map(|p| s.spawn(|| node.del(p))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("DEL thread"))
            .collect()
    });
    for (pod, outcome) in pods.iter().zip(outcomes) {
        ok(outcome, &format!("DEL {}", pod.container_id));
    }
    let rules = node.ruleset().expect("the table stays");
    assert!(
        rules.pod_chains().is_empty(),
        "no pod chains left:\n{}",
        node.ruleset_text()
    );
    assert!(ips.iter().all(|ip| !rules.mentions(*ip)));
    assert_eq!(node.status(), (true, 0));
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn version_lists_the_spec_versions_runtimes_use() {
    let node = Node::new("version");
    let reply = ok(
        node.invoke_podwall("VERSION", None, &json!({"cniVersion": "1.0.0"})),
        "VERSION",
    );
    assert_eq!(reply["cniVersion"], "1.0.0");
    let listed: Vec<&str> = reply["supportedVersions"]
        .as_array()
        .expect("supportedVersions is a list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for v in ["0.3.1", "0.4.0", "1.0.0"] {
        assert!(listed.contains(&v), "{v} missing from {listed:?}");
    }
    let via_libcni = ok(node.libcni_version("podwall"), "libcni GetVersionInfo");
    assert_eq!(via_libcni["supportedVersions"], reply["supportedVersions"]);
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn add_and_del_work_with_conflists_at_cni_0_4_0_and_0_3_1() {
    let node = Node::started("oldver");
    for version in ["0.4.0", "0.3.1"] {
        let list = node.write_conflist(
            &format!("v{version}"),
            &node.conflist_json(version, Some(node.podwall_entry())),
        );
        let pod = Pod::new(&format!("v{}", version.replace('.', "")));
        let result = ok(
            node.libcni("add", &list, &pod),
            &format!("ADD at {version}"),
        );
        assert_eq!(
            result["cniVersion"], version,
            "libcni returns the list's version"
        );
        let ip = pod.ip4();
        let chains = node.expect_attached(ip);
        if version != "0.3.1" {
            ok(
                node.libcni("check", &list, &pod),
                &format!("CHECK at {version}"),
            );
        }
        ok(
            node.libcni("del", &list, &pod),
            &format!("DEL at {version}"),
        );
        node.expect_detached(ip, &chains);
    }
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn status_is_ok_while_daemon_serves_and_error_50_when_it_is_down() {
    let mut node = Node::started("status");
    let conf = entry_config(&node.podwall_entry(), "1.1.0");
    ok(
        node.invoke_podwall("STATUS", None, &conf),
        "STATUS, daemon up",
    );
    node.stop_daemon();
    assert_eq!(
        code(
            node.invoke_podwall("STATUS", None, &conf),
            "STATUS, daemon down"
        ),
        NOT_AVAILABLE
    );
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn gc_removes_the_rules_of_attachments_the_runtime_no_longer_lists() {
    let node = Node::started("gc");
    let (keep, drop) = (Pod::new("gc-keep"), Pod::new("gc-drop"));
    ok(node.add(&keep), "ADD keep");
    ok(node.add(&drop), "ADD drop");
    let keep_chains = node.expect_attached(keep.ip4());
    let drop_chains = node.expect_attached(drop.ip4());

    let mut conf = entry_config(&node.podwall_entry(), "1.1.0");
    conf["cni.dev/valid-attachments"] =
        json!([{"containerID": keep.container_id, "ifname": keep.ifname}]);
    ok(node.invoke_podwall("GC", None, &conf), "GC");

    assert_eq!(
        node.expect_attached(keep.ip4()),
        keep_chains,
        "kept untouched"
    );
    node.expect_detached(drop.ip4(), &drop_chains);
    assert_eq!(node.status(), (true, 1));
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn dual_stack_pod_gets_elements_in_both_families() {
    let mut node = Node::with_options(
        "dual",
        NodeOptions {
            dual_stack: true,
            ..NodeOptions::default()
        },
    );
    node.start_daemon();
    let pod = Pod::new("dual");
    let result = ok(node.add(&pod), "ADD");
    let ips = cni::result_ips(&result);
    assert!(
        ips.iter().any(IpAddr::is_ipv4) && ips.iter().any(IpAddr::is_ipv6),
        "{result}"
    );
    let chains: Vec<String> = ips
        .iter()
        .flat_map(|ip| node.expect_attached(*ip))
        .collect();
    ok(node.del(&pod), "DEL");
    for ip in &ips {
        node.expect_detached(*ip, &chains);
    }
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn bridged_pod_traffic_passes_through_the_pods_ingress_chain() {
    // Proves the dispatch path: a rule put into the destination pod's chain by hand acts on
    // pod↔pod traffic on the bridge, so podwall's chains really sit on that path.
    let node = Node::started("path");
    let (a, b) = (Pod::new("path-a"), Pod::new("path-b"));
    ok(node.add(&a), "ADD a");
    ok(node.add(&b), "ADD b");
    let ingress = node.expect_attached(b.ip4()).remove(0);
    let server = EchoServer::start(&b.netns, 8080);
    assert!(probe::tcp_connects(&a.netns, b.ip4(), 8080, PROBE_TIMEOUT));

    node.netns
        .exec(&[
            "nft", "insert", "rule", "inet", "podwall", &ingress, "tcp", "dport", "8080", "drop",
        ])
        .and_then(podwall_tests::cmd::Output::ok)
        .expect("adding a drop rule to the pod's ingress chain");
    assert!(
        !probe::tcp_connects(&a.netns, b.ip4(), server.port(), PROBE_TIMEOUT),
        "a drop in {ingress} stops new TCP connections to the pod"
    );
    assert!(
        probe::udp_reaches(&a.netns, b.ip4(), server.port(), PROBE_TIMEOUT),
        "and only those"
    );
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn daemon_turns_bridge_netfilter_on_in_its_node() {
    let mut node = Node::with_options(
        "brnf",
        NodeOptions {
            bridge_nf_call: Some(false),
            ..NodeOptions::default()
        },
    );
    node.start_daemon();
    assert_eq!(
        node.netns
            .sysctl("net.bridge.bridge-nf-call-iptables")
            .unwrap(),
        "1"
    );
    assert_eq!(
        node.netns
            .sysctl("net.bridge.bridge-nf-call-ip6tables")
            .unwrap(),
        "1"
    );
}
