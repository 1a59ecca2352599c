//! Issue 13: the cutover from kube-router's firewall to podwall on a node with live pods, as
//! docs/install.md's runbook does it: start podwall while kube-router's rules still filter,
//! confirm with `podwalld pods` that every pod is enforced by the policies that select it,
//! then remove kube-router's rules. Probes run the whole time: at no moment may a denied
//! connection get through, nor an allowed one fail.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use podwall::wire::{Reply, Request};
use podwall_bench::kuberouter;
use podwall_tests::manifests::DB_FROM_API;
use podwall_tests::probe::{tcp_connects, EchoServer};
use podwall_tests::{eventually, reach, Node, NodeOptions, Pod};

const PORT: u16 = 5432;

#[test]
#[ignore = "needs root: creates network namespaces"]
fn a_node_cuts_over_from_kube_router_without_a_moment_unenforced() {
    let mut node = Node::with_options(
        "cutover",
        NodeOptions {
            manifests: true,
            ..NodeOptions::default()
        },
    );
    // The node as kube-router left it: pods attached by the bridge alone.
    let db = Pod::named("co-db", "app", "db");
    let api = Pod::named("co-api", "app", "api");
    let web = Pod::named("co-web", "app", "web");
    node.pods_without_podwall("app", &[(&db, "db"), (&api, "api"), (&web, "web")]);
    let dir = node.manifests();
    dir.write("policy.yaml", DB_FROM_API);
    let snap = reach::snapshot(&dir, &node, &[]);
    kuberouter::apply(&node.netns, &kuberouter::generate(&snap, node.name()))
        .unwrap_or_else(|e| panic!("loading kube-router's rules: {e:#}"));
    let _server = EchoServer::start(&db.netns, PORT);
    let (db_ip, timeout) = (db.ip4(), Duration::from_millis(400));
    assert!(
        tcp_connects(&api.netns, db_ip, PORT, timeout),
        "kube-router admits api"
    );
    assert!(
        !tcp_connects(&web.netns, db_ip, PORT, timeout),
        "kube-router keeps web out"
    );

    // Probe both pairs without pause until the cutover is over.
    let phase = Mutex::new("kube-router alone");
    let violations: Mutex<Vec<String>> = Mutex::default();
    let stop = AtomicBool::new(false);
    let probe = || {
        let mut rounds = 0;
        while !stop.load(Ordering::Relaxed) {
            let now = *phase.lock().unwrap();
            if !tcp_connects(&api.netns, db_ip, PORT, timeout) {
                violations
                    .lock()
                    .unwrap()
                    .push(format!("{now}: api → db failed"));
            }
            if tcp_connects(&web.netns, db_ip, PORT, timeout) {
                violations
                    .lock()
                    .unwrap()
                    .push(format!("{now}: web → db got through"));
            }
            rounds += 1;
        }
        rounds
    };
    let set = |now| *phase.lock().unwrap() = now;
    let rounds = std::thread::scope(|scope| {
        let prober = scope.spawn(probe);
        // 1. podwall starts beside kube-router and adopts the running pods.
        set("both enforcing");
        node.start_daemon();
        // 2. `podwalld pods` says every pod is enforced, db by its policy.
        let confirmed = eventually(Duration::from_secs(10), || {
            let Ok(Reply::Pods { pods, .. }) = node.call(&Request::Pods) else {
                return false;
            };
            let db = pods.iter().find(|p| p.name == "db");
            pods.len() == 3 && db.is_some_and(|p| p.ingress == ["app/db-from-api"])
        });
        // 3. kube-router's rules go (its pod is gone from the node; what it left is cleaned).
        if confirmed {
            kuberouter::clear(&node.netns)
                .unwrap_or_else(|e| panic!("removing kube-router's rules: {e:#}"));
            set("podwall alone");
            std::thread::sleep(Duration::from_secs(2));
        }
        stop.store(true, Ordering::Relaxed);
        let rounds = prober.join().expect("the prober");
        assert!(
            confirmed,
            "podwall does not enforce every pod: {:?}",
            node.call(&Request::Pods)
        );
        rounds
    });
    let violations = violations.into_inner().unwrap();
    assert!(rounds > 3, "the probes ran {rounds} rounds only");
    assert!(
        violations.is_empty(),
        "during the cutover:\n{}\n{}",
        violations.join("\n"),
        node.ruleset_text()
    );
}
