//! Issue 5: the first start in Kubernetes mode. With an empty store the daemon waits for the
//! first list of every kind; an unreachable API server makes it exit within
//! `--cache-sync-timeout` with one line saying so, and a kind whose first list is empty
//! (no NetworkPolicy yet, the usual case) still completes the sync when it comes last. The
//! first list of a large cluster arrives in pages, never in one response.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use podwall_tests::manifests::{documents, namespace, PodManifest};
use podwall_tests::{eventually, Cluster, NodeOptions};

#[test]
#[ignore = "needs root: creates network namespaces"]
fn first_start_with_the_api_unreachable_and_an_empty_store_exits_at_the_sync_timeout() {
    let options = NodeOptions {
        cache_sync_timeout: Some("2s".into()),
        ..NodeOptions::default()
    };
    let mut cluster = Cluster::empty("unreachable", 1, options);
    cluster.api.stop(); // connection refused from now on
    let node = &mut cluster.nodes[0];
    let spawned = Instant::now();
    node.spawn_daemon().expect("spawning podwalld");
    let status = loop {
        if let Some(status) = node.daemon_exit_status().expect("waiting for podwalld") {
            break status;
        }
        assert!(
            spawned.elapsed() < Duration::from_secs(12),
            "podwalld still runs {:?} after its start with --cache-sync-timeout 2s\n{}",
            spawned.elapsed(),
            node.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = spawned.elapsed();
    let log = node.daemon_log();
    assert!(!status.success(), "exit status {status}\n{log}");
    assert!(
        took >= Duration::from_secs(2),
        "it waited the timeout: {took:?}\n{log}"
    );
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("did not sync")).collect();
    assert_eq!(
        lines.len(),
        1,
        "one line says the caches did not sync:\n{log}"
    );
    assert!(
        lines[0].starts_with("podwalld: "),
        "the exit line is the program's own: {}",
        lines[0]
    );
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn first_start_syncs_when_the_kind_listed_last_has_no_objects() {
    let options = NodeOptions {
        cache_sync_timeout: Some("30s".into()),
        ..NodeOptions::default()
    };
    let mut cluster = Cluster::empty("lastempty", 1, options);
    // A cluster without NetworkPolicies (the usual case), whose RBAC for them arrives after
    // the daemon started (a Helm chart applying the DaemonSet before the ClusterRole): the
    // policies' first list, empty, is the last to complete.
    cluster.apply(&namespace("default", &[]));
    cluster.apply(&namespace("kube-system", &[]));
    cluster.apply(&cluster.pod_yaml(0, "kube-system", "coredns", &[("k8s-app", "kube-dns")], &[]));
    cluster.api.deny("list", "networkpolicies");
    let node = &mut cluster.nodes[0];
    node.spawn_daemon().expect("spawning podwalld");
    let mut last = None;
    let only_policies_wait = eventually(Duration::from_secs(10), || {
        last = node.http_get("/healthz").ok();
        last.as_ref().is_some_and(|(code, body)| {
            *code == 503
                && body.contains("networkpolicies: forbidden")
                && !body.contains("pods:")
                && !body.contains("namespaces:")
        })
    });
    assert!(
        only_policies_wait,
        "pods and namespaces synced, policies forbidden: {last:?}\n{}",
        node.daemon_log()
    );
    cluster.api.allow_all();
    let node = &mut cluster.nodes[0];
    let healthy = node.wait_healthy(Duration::from_secs(15));
    assert!(
        healthy.is_ok(),
        "the daemon never synced after the empty policy list: {healthy:?}\n{}",
        node.daemon_log()
    );
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn the_first_list_of_pods_arrives_in_pages_of_500() {
    let mut cluster = Cluster::new("paged", 1);
    let pods: Vec<String> = (0..1200u32)
        .map(|i| {
            let ip = IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 64, 0, 1)) + i));
            PodManifest::new(&format!("ns{}", i / 100), &format!("p{i}"))
                .labels(&[("app", "web")])
                .remote("elsewhere", &[ip])
                .yaml()
        })
        .collect();
    cluster
        .api
        .apply_yaml(&documents(&pods))
        .expect("loading 1200 pods");
    cluster.nodes[0].start_daemon();
    let lists: Vec<String> = (cluster.api.requests().into_iter())
        .filter(|r| r.verb == "list" && r.resource == "pods")
        .map(|r| r.uri)
        .collect();
    assert_eq!(lists.len(), 3, "1200 pods and more, 500 a page: {lists:?}");
    assert!(lists.iter().all(|u| u.contains("limit=500")), "{lists:?}");
    assert!(
        lists[1..].iter().all(|u| u.contains("continue=")),
        "{lists:?}"
    );
}
