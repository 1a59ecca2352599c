//! `podwall-demo`: podwall on a throw-away node, step by step. Needs root (tests/demo.sh).
//!
//! Builds a node (a network namespace with the real bridge + host-local + podwall chain and
//! its own `podwalld`), attaches two pods through libcni as a container runtime would, shows
//! them talking, shows the rules podwall committed to the kernel, detaches the pods, shows
//! the rules gone, and removes everything.
#![forbid(unsafe_code)]

use podwall_tests::probe::{self, EchoServer, PROBE_TIMEOUT};
use podwall_tests::{cni, Node, Pod};

fn step(text: &str) {
    println!("\n==> {text}");
}

fn main() {
    podwall_tests::require_root();

    step("creating a throw-away node");
    let mut node = Node::new("demo");
    println!("node netns:  {}", node.netns.name());
    println!("bridge:      {}", node.bridge());
    println!("pod subnet:  {}", node.subnet4());
    println!("conflist:    {}", node.conflist().display());
    print!(
        "{}",
        std::fs::read_to_string(node.conflist()).expect("the rig wrote the conflist")
    );

    step("starting podwalld inside the node namespace");
    node.start_daemon();
    println!(
        "podwalld pid {} is healthy; socket {}",
        node.daemon_pid().expect("just started"),
        node.socket().display()
    );

    step("attaching two pods through libcni (bridge -> host-local -> podwall)");
    let front = Pod::named("front", "shop", "front");
    let db = Pod::named("db", "shop", "db");
    for pod in [&front, &db] {
        let result = node
            .add(pod)
            .unwrap_or_else(|e| panic!("ADD {}: {e}", pod.container_id));
        println!(
            "ADD {} -> {:?}",
            pod.cni_args.as_deref().unwrap_or(&pod.container_id),
            cni::result_ips(&result)
        );
    }
    for pod in [&front, &db] {
        node.check(pod)
            .unwrap_or_else(|e| panic!("CHECK {}: {e}", pod.container_id));
    }
    println!("CHECK: both pods' rules are in the kernel");

    step("the pods talk: TCP and UDP echo from front to db:8080");
    let server = EchoServer::start(&db.netns, 8080);
    let tcp = probe::tcp_connects(&front.netns, db.ip4(), server.port(), PROBE_TIMEOUT);
    let udp = probe::udp_reaches(&front.netns, db.ip4(), server.port(), PROBE_TIMEOUT);
    println!(
        "front {} -> db {}:8080  TCP: {}  UDP: {}",
        front.ip4(),
        db.ip4(),
        verdict(tcp),
        verdict(udp)
    );
    drop(server);
    // A demo that cannot show the pods talking has nothing to show: stop (and clean up).
    assert!(tcp && udp, "the pods could not talk");

    step("the kernel's view: nft list table inet podwall (in the node namespace)");
    print!("{}", node.ruleset_text());
    if let Some(rules) = node.ruleset() {
        println!("pod chains: {:?}", rules.pod_chains());
        for map in ["ingress4", "egress4"] {
            for (ip, verdict) in rules.map(map) {
                println!("{map:>9}: {ip} -> {verdict}");
            }
        }
    }

    step("detaching both pods (DEL through libcni)");
    for pod in [&front, &db] {
        node.del(pod)
            .unwrap_or_else(|e| panic!("DEL {}: {e}", pod.container_id));
        println!("DEL {}", pod.container_id);
    }
    print!("{}", node.ruleset_text());
    let left = node.ruleset().map(|r| r.pod_chains().len()).unwrap_or(0);
    println!("pod chains left: {left}");

    step("cleaning up: stopping podwalld, deleting the namespaces and temp files");
    node.stop_daemon();
    drop((front, db, node));
    println!("done");
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "FAILED"
    }
}
