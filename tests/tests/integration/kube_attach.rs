//! Issue 5: enforcement at attach time in Kubernetes mode. A pod whose Pod object appears in
//! the API server just before its ADD, in a namespace whose policy isolates it by label,
//! never accepts a connection from probers that started before the ADD — on its own node
//! and on the other node — while the same probers get into an unselected pod at once. The
//! same holds for a pod that an Admin ClusterNetworkPolicy Deny selects (issue 17), with no
//! NetworkPolicy at all.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use podwall_tests::manifests::{cluster_policy, cluster_policy_crd, namespace};
use podwall_tests::node::NETWORK;
use podwall_tests::probe::EchoServer;
use podwall_tests::{Cluster, Node, Pod, TestNetns};

/// How long the probers keep connecting after the ADD returned. Probing an address before
/// it exists leaves a failed neighbour entry behind, which the kernel retries after about a
/// second: the control pod is reached after that, so the isolated one gets probed for two
/// more seconds at least.
const HAMMER: Duration = Duration::from_millis(3000);
/// The control pod must be reached by then (the neighbour retry, and a margin).
const REACHED: f64 = 2.0;
/// Each attempt's connect timeout: a dropped SYN costs this.
const ATTEMPT: Duration = Duration::from_millis(5);

/// The address host-local hands out next on `node`: the one after the last it reserved.
fn next_address(node: &Node) -> IpAddr {
    let file = node
        .dir()
        .join("ipam")
        .join(NETWORK)
        .join("last_reserved_ip.0");
    let last: Ipv4Addr = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()))
        .trim()
        .parse()
        .expect("host-local writes an address");
    IpAddr::V4(Ipv4Addr::from(u32::from(last) + 1))
}

#[derive(Debug)]
struct Seen {
    attempts: usize,
    /// When, relative to the ADD's return, the first connection was accepted (negative
    /// times are before it returned).
    first_accepted: Option<f64>,
}

/// Probers in `from` hammer `target:port` from before the ADD of `pod` on node `i` until
/// `HAMMER` after it returned (or until one gets in).
fn hammer_through_add(cluster: &Cluster, i: usize, pod: &Pod, from: &[&TestNetns]) -> Vec<Seen> {
    let target = SocketAddr::new(next_address(cluster.node(i)), 80);
    let returned: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
    let started = AtomicBool::new(false);
    let (returned, started) = (&returned, &started);
    std::thread::scope(|s| {
        let probers: Vec<_> = from
            .iter()
            .map(|ns| {
                s.spawn(move || {
                    ns.run_in(move || {
                        let mut seen = Seen {
                            attempts: 0,
                            first_accepted: None,
                        };
                        let begin = Instant::now();
                        loop {
                            started.store(true, Ordering::Relaxed);
                            let ret = *returned.lock().unwrap();
                            if ret.is_some_and(|r| r.elapsed() > HAMMER)
                                || begin.elapsed() > Duration::from_secs(30)
                            {
                                return seen;
                            }
                            seen.attempts += 1;
                            if TcpStream::connect_timeout(&target, ATTEMPT).is_ok() {
                                let now = Instant::now();
                                seen.first_accepted = Some(match ret {
                                    Some(r) => now.duration_since(r).as_secs_f64(),
                                    None => -0.0,
                                });
                                return seen;
                            }
                        }
                    })
                })
            })
            .collect();
        while !started.load(Ordering::Relaxed) {
            std::thread::yield_now();
        }
        let result = cluster.attach(i, pod);
        *returned.lock().unwrap() = Some(Instant::now());
        let got = podwall_tests::cni::result_ips(&result);
        assert_eq!(
            got,
            vec![target.ip()],
            "host-local gave another address than the one probed"
        );
        probers
            .into_iter()
            .map(|p| p.join().expect("prober thread"))
            .collect()
    })
}

/// The probers got into the unselected pod at once, and never into the isolated one.
fn assert_isolated_from_the_start(cluster: &Cluster, seen: &[Seen], control: &[Seen]) {
    eprintln!("isolated pod: {seen:?}\nunselected pod: {control:?}");
    for c in control {
        assert!(
            c.first_accepted.is_some_and(|t| t < REACHED),
            "the probers work: an unselected pod accepts them at once: {control:?}"
        );
    }
    for s in seen {
        assert!(s.attempts >= 50, "the prober kept trying: {seen:?}");
        assert_eq!(
            s.first_accepted,
            None,
            "the isolated pod accepted a connection: {seen:?}\n{}",
            cluster.tables()
        );
    }
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn pod_created_in_an_isolated_namespace_has_its_rules_before_its_add_returns() {
    let cluster = Cluster::started("attach", 2);
    cluster.apply(&namespace("locked", &[]));
    cluster.apply(&namespace("probe", &[]));
    cluster.apply(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: isolate-targets, namespace: locked}\n\
         spec: {podSelector: {matchLabels: {app: target}}, policyTypes: [Ingress]}\n",
    );
    cluster.apply(&cluster.pod_yaml(0, "probe", "near", &[], &[]));
    cluster.apply(&cluster.pod_yaml(1, "probe", "far", &[], &[]));
    let near = Pod::named("att-near", "probe", "near");
    let far = Pod::named("att-far", "probe", "far");
    cluster.attach(0, &near);
    cluster.attach(1, &far);
    // The first pod on node 0 makes its bridge, so host-local has reserved an address there.
    let probers = [&near.netns, &far.netns];

    // The Pod object appears right before the ADD, as the scheduler and kubelet do it: the
    // daemon may not have it from its watch yet, and must not attach it without its labels.
    let target = Pod::named("att-target", "locked", "target");
    let _target_server = EchoServer::start(&target.netns, 80);
    cluster.apply(&cluster.pod_yaml(0, "locked", "target", &[("app", "target")], &[]));
    let seen = hammer_through_add(&cluster, 0, &target, &probers);

    let open = Pod::named("att-open", "locked", "open");
    let _open_server = EchoServer::start(&open.netns, 80);
    cluster.apply(&cluster.pod_yaml(0, "locked", "open", &[("app", "web")], &[]));
    let control = hammer_through_add(&cluster, 0, &open, &probers);

    assert_isolated_from_the_start(&cluster, &seen, &control);
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn pod_under_an_admin_deny_has_its_rules_before_its_add_returns() {
    let cluster = Cluster::started("attach-cnp", 2);
    cluster.apply(&cluster_policy_crd());
    cluster.apply(&namespace("guarded", &[]));
    cluster.apply(&namespace("probe", &[("role", "probe")]));
    cluster.apply(&cluster_policy(
        "no-probes",
        "Admin",
        0,
        "subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: target}}}}
ingress: [{action: Deny, from: [{namespaces: {matchLabels: {role: probe}}}]}]",
    ));
    cluster.apply(&cluster.pod_yaml(0, "probe", "near", &[], &[]));
    cluster.apply(&cluster.pod_yaml(1, "probe", "far", &[], &[]));
    let near = Pod::named("atc-near", "probe", "near");
    let far = Pod::named("atc-far", "probe", "far");
    cluster.attach(0, &near);
    cluster.attach(1, &far);
    let probers = [&near.netns, &far.netns];
    // Both daemons hold the policy before any target exists (it selects no pod yet, so it
    // shows in no chain).
    for i in 0..2 {
        let loaded = podwall_tests::eventually(Duration::from_secs(10), || {
            cluster.node(i).metrics().get("podwall_cluster_policies") == Some(1.0)
        });
        assert!(loaded, "{}", cluster.node(i).daemon_log());
    }

    let target = Pod::named("atc-target", "guarded", "target");
    let _target_server = EchoServer::start(&target.netns, 80);
    cluster.apply(&cluster.pod_yaml(0, "guarded", "target", &[("app", "target")], &[]));
    let seen = hammer_through_add(&cluster, 0, &target, &probers);

    let open = Pod::named("atc-open", "guarded", "open");
    let _open_server = EchoServer::start(&open.netns, 80);
    cluster.apply(&cluster.pod_yaml(0, "guarded", "open", &[("app", "web")], &[]));
    let control = hammer_through_add(&cluster, 0, &open, &probers);

    assert_isolated_from_the_start(&cluster, &seen, &control);
}
