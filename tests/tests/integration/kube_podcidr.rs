//! Issue 16: each node's pod range. The conflist install-cni writes on a node without a CNI
//! config of its own (the ConfigMap's, one for every node) names no range; the daemon fills
//! it from its Node's `spec.podCIDRs`. Until the Node has one, `/readyz` says why and the
//! file is left as it is; once it has, the range is written within a retry, a pod attached
//! through that conflist gets an address in it, and a config of the node's own is never
//! touched.

use std::net::IpAddr;
use std::time::Duration;

use podwall_tests::cni::{default_conflist, node_yaml, result_ips};
use podwall_tests::{eventually, Cluster, Pod};
use serde_json::{json, Value};

#[test]
#[ignore = "needs root: creates network namespaces"]
fn the_default_conflist_gets_this_node_s_pod_range_and_readiness_waits_for_it() {
    let mut cluster = Cluster::new("podcidr", 1);
    let name = cluster.node(0).name().to_string();
    cluster.apply(&node_yaml(&name, &[]));
    let net_dir = cluster.node(0).cni_net_dir();
    std::fs::create_dir_all(&net_dir).expect("the node's CNI config directory");
    // The ConfigMap's conflist, its paths moved into the test node's directory (the
    // daemon's socket, host-local's state): nothing else of it changes.
    let mut default: Value = serde_json::from_str(&default_conflist()).expect("JSON");
    let node_dir = cluster.node(0).dir().to_path_buf();
    default["plugins"][0]["ipam"]["dataDir"] = json!(node_dir.join("ipam").display().to_string());
    default["plugins"][1]["socket"] = json!(cluster.node(0).socket().display().to_string());
    let path = net_dir.join("10-podwall.conflist");
    let written = serde_json::to_vec_pretty(&default).expect("JSON");
    std::fs::write(&path, &written).expect("writing the default conflist");
    let own = net_dir.join("20-own.conflist");
    let own_bytes = br#"{"cniVersion":"1.0.0","name":"own","plugins":[{"type":"bridge","ipam":{"type":"host-local","ranges":[]}}]}"#;
    std::fs::write(&own, own_bytes).expect("writing a config of the node's own");

    let node = &mut cluster.nodes[0];
    node.spawn_daemon().expect("spawning podwalld");
    let mut last = None;
    let waiting = eventually(Duration::from_secs(15), || {
        last = node.http_get("/readyz").ok();
        last.as_ref().is_some_and(|(code, body)| {
            *code == 503 && body.contains("cni:") && body.contains("no spec.podCIDR")
        })
    });
    assert!(waiting, "/readyz: {last:?}\n{}", node.daemon_log());
    assert_eq!(
        std::fs::read(&path).expect("the conflist"),
        written,
        "left as it is"
    );

    cluster.apply(&node_yaml(&name, &["10.244.7.0/24", "fd00:7::/64"]));
    let node = &mut cluster.nodes[0];
    let ready = node.wait_healthy(Duration::from_secs(20));
    assert!(ready.is_ok(), "{ready:?}\n{}", node.daemon_log());
    let filled: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("the conflist")).expect("JSON");
    assert_eq!(
        filled["plugins"][0]["ipam"]["ranges"],
        json!([[{"subnet": "10.244.7.0/24"}], [{"subnet": "fd00:7::/64"}]])
    );
    let mut rest = filled.clone();
    rest["plugins"][0]["ipam"]["ranges"] = json!([]);
    assert_eq!(rest, default, "only the ranges changed");
    assert_eq!(
        std::fs::read(&own).expect("own config"),
        own_bytes,
        "never touched"
    );

    let pod = Pod::named("cidr-a", "default", "a");
    let result = node
        .libcni("add", &path, &pod)
        .unwrap_or_else(|e| panic!("ADD through the filled conflist: {e}"));
    let ips = result_ips(&result);
    let in_range = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => v4.octets()[..3] == [10, 244, 7],
        IpAddr::V6(v6) => v6.segments()[..4] == [0xfd00, 7, 0, 0],
    };
    assert!(ips.len() == 2 && ips.iter().all(in_range), "{ips:?}");
    let _ = node.libcni("del", &path, &pod);
}
