//! Issue 13: pods that were running before podwall (a node migrating from kube-router) or
//! that started while the daemon was down (`failurePolicy: open`) are enforced from what the
//! source says of them: their node, their addresses, their labels. A later ADD of the same
//! pod takes it over without a gap.
//!
//! The pods here are attached by a conflist without podwall (bridge and host-local only), so
//! the daemon never hears of them from the plugin; the manifests report them on this node
//! with the addresses the bridge gave them, as the API server's `status.podIPs` would.

use std::time::Duration;

use podwall_policy::Protocol::Tcp;
use podwall_tests::cni::entry_config;
use podwall_tests::manifests::DB_FROM_API;
use podwall_tests::reach::{self, cell, Peer};
use podwall_tests::{Node, NodeOptions, Pod};

const APPLY: Duration = Duration::from_secs(10);

#[test]
#[ignore = "needs root: creates network namespaces"]
fn pods_running_before_the_daemon_are_adopted_and_enforced() {
    let mut node = Node::with_options(
        "adopt",
        NodeOptions {
            manifests: true,
            ..NodeOptions::default()
        },
    );
    let db = Pod::named("ad-db", "app", "db");
    let api = Pod::named("ad-api", "app", "api");
    let web = Pod::named("ad-web", "app", "web");
    let results = node.pods_without_podwall("app", &[(&db, "db"), (&api, "api"), (&web, "web")]);
    let dir = node.manifests();
    dir.write("policy.yaml", DB_FROM_API);
    // The node has talked to its pods (kubelet's probes do): the kernel knows the port each
    // is behind, which the daemon guards them on.
    for pod in [&db, &api, &web] {
        node.netns
            .exec(&[
                "busybox",
                "ping",
                "-c",
                "1",
                "-W",
                "2",
                &pod.ip4().to_string(),
            ])
            .and_then(podwall_tests::cmd::Output::ok)
            .expect("the node reaches its pod");
    }
    node.start_daemon();

    let local = [&db, &api, &web];
    let peers: Vec<Peer> = local.iter().map(|p| Peer::pod(p)).collect();
    let _servers = reach::serve(&peers, &[5432]);
    let m = reach::assert_agree_within(APPLY, &dir, &node, &[], &peers, Tcp, 5432);
    assert!(cell(&m, "app/api", "app/db"));
    assert!(
        !cell(&m, "app/web", "app/db"),
        "a pod running before the daemon must be enforced"
    );
    assert_eq!(node.metrics().value("podwall_adopted_pods"), 3.0);

    // podwall's ADD for db comes later (the chain re-run with podwall, bridge's result as
    // prevResult): it takes db over from adoption, and db is enforced throughout.
    let mut conf = entry_config(&node.podwall_entry(), "1.0.0");
    conf["prevResult"] = results[0].clone();
    node.invoke_podwall("ADD", Some(&db), &conf)
        .expect("podwall's ADD of an adopted pod");
    let m = reach::assert_agree_within(APPLY, &dir, &node, &[&db], &peers, Tcp, 5432);
    assert!(
        !cell(&m, "app/web", "app/db"),
        "enforced after the takeover"
    );
    assert_eq!(node.metrics().value("podwall_adopted_pods"), 2.0);

    // An adopted pod is guarded too (on the port the kernel found for it): web may not send from an address it was not given.
    let foreign = {
        let std::net::IpAddr::V4(gw) = node.gateway4() else {
            unreachable!("the gateway is IPv4")
        };
        let [a, b, c, _] = gw.octets();
        std::net::IpAddr::V4([a, b, c, 250].into())
    };
    for words in [
        vec![
            "ip".to_string(),
            "addr".into(),
            "add".into(),
            format!("{foreign}/32"),
            "dev".into(),
            web.ifname.clone(),
        ],
        vec![
            "ip".to_string(),
            "route".into(),
            "replace".into(),
            format!("{}/32", api.ip4()),
            "dev".into(),
            web.ifname.clone(),
            "src".into(),
            foreign.to_string(),
        ],
    ] {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        web.netns
            .exec(&words)
            .and_then(podwall_tests::cmd::Output::ok)
            .expect("configuring the foreign source");
    }
    assert!(
        !reach::probe_once(&Peer::pod(&web), &Peer::pod(&api), Tcp, 5432),
        "an adopted pod sent from an address it was not given"
    );
}
