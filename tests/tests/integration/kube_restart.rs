//! Issue 5: a daemon crash in Kubernetes mode. `kill -9` under traffic keeps established
//! connections flowing; restarted while the API server is down, the daemon serves ADDs from
//! its stored cluster state and enforces the stored policies; when the API server is back,
//! what changed meanwhile takes effect and `/healthz` turns 200.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use podwall::wire::Request;
use podwall_policy::Protocol::Tcp;
use podwall_tests::cluster::{with_ips, Check};
use podwall_tests::manifests::namespace;
use podwall_tests::probe::{EchoServer, TcpConn, PROBE_TIMEOUT};
use podwall_tests::reach::{self, cell, Peer};
use podwall_tests::{cmd, eventually, Cluster, Pod};
use podwalld::store::Store;

const APPLY: Duration = Duration::from_secs(10);
const CHECKS: [Check; 1] = [(Tcp, 80)];
/// The watchers back off up to 30 s after failing for a while; the API is down for seconds.
const RESYNC: Duration = Duration::from_secs(40);

/// An echo on one established connection every 20 ms until stopped, counting failures.
struct Traffic {
    echoes: Arc<AtomicUsize>,
    failures: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Traffic {
    fn start(mut conn: TcpConn) -> Self {
        let (echoes, failures, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (e, f, s) = (echoes.clone(), failures.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match conn.echo(PROBE_TIMEOUT) {
                    Ok(()) => e.fetch_add(1, Ordering::Relaxed),
                    Err(_) => f.fetch_add(1, Ordering::Relaxed),
                };
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Traffic {
            echoes,
            failures,
            stop,
            thread: Some(thread),
        }
    }

    fn echoes(&self) -> usize {
        self.echoes.load(Ordering::Relaxed)
    }

    fn failures(&self) -> usize {
        self.failures.load(Ordering::Relaxed)
    }

    /// Wait until `n` more echoes went through (the connection carries data right now).
    fn flows(&self, n: usize) -> bool {
        let target = self.echoes() + n;
        eventually(Duration::from_secs(5), || self.echoes() >= target)
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The daemon's store, read from a copy (sled holds a lock on the live one).
fn stored_cluster(state_dir: &std::path::Path) -> Option<podwall_policy::Snapshot> {
    let copy = tempfile::tempdir().expect("a temp dir");
    cmd::sh(&[
        "cp",
        "-a",
        &format!("{}/.", state_dir.display()),
        &copy.path().display().to_string(),
    ])
    .ok()?;
    Store::open(copy.path()).ok()?.cluster().ok()?
}

fn policy(name: &str, selects: &str, from: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: app}}\n\
         spec:\n  podSelector: {{matchLabels: {{role: {selects}}}}}\n  ingress:\n\
         \x20 - from: [{{podSelector: {{matchLabels: {{role: {from}}}}}}}]\n    ports: [{{port: 80}}]\n"
    )
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn crash_under_traffic_then_restart_without_api_serves_from_store_and_reconciles() {
    let mut cluster = Cluster::started("restart", 1);
    cluster.apply(&namespace("app", &[]));
    for (name, role) in [
        ("server", "server"),
        ("client", "client"),
        ("other", "other"),
        ("late", "late"),
    ] {
        cluster.apply(&cluster.pod_yaml(0, "app", name, &[("role", role)], &[]));
    }
    cluster.apply(&policy("server-ingress", "server", "client"));
    cluster.apply(&policy("late-ingress", "late", "client"));
    let pods: Vec<Pod> = ["server", "client", "other"]
        .iter()
        .map(|n| Pod::named(&format!("rst-{n}"), "app", n))
        .collect();
    for pod in &pods {
        cluster.attach(0, pod);
    }
    let (server, client) = (&pods[0], &pods[1]);
    let late = Pod::named("rst-late", "app", "late");
    let _late_server = EchoServer::start(&late.netns, 80);
    let peers: Vec<Peer> = pods.iter().map(Peer::pod).collect();
    let _servers = reach::serve(&peers, &[80]);
    let m = cluster.assert_agree_within(APPLY, &peers, &CHECKS);
    assert!(cell(&m[0], "app/client", "app/server") && !cell(&m[0], "app/other", "app/server"));

    let traffic = Traffic::start(
        TcpConn::open(&client.netns, server.ip4(), 80, PROBE_TIMEOUT).expect("client→server"),
    );
    assert!(traffic.flows(3), "the connection carries data");

    // What the daemon knew a persist period (5 s) ago is in its store.
    let want = cluster.snapshot();
    let state_dir = cluster.node(0).state_dir();
    let stored_ok = eventually(Duration::from_secs(15), || {
        stored_cluster(&state_dir)
            .is_some_and(|s| s.policies == want.policies && s.pods == want.pods)
    });
    assert!(
        stored_ok,
        "the store does not hold the cluster state 15 s after the last change\nstored: {:?}\nwant: {want:?}",
        stored_cluster(&state_dir)
    );

    let node = &mut cluster.nodes[0];
    node.kill_daemon();
    assert!(traffic.flows(5), "traffic flows with the daemon dead");
    cluster.api.stop();

    let node = &mut cluster.nodes[0];
    node.spawn_daemon().expect("restarting podwalld");
    let serving = eventually(Duration::from_secs(10), || {
        node.call(&Request::Status).is_ok()
    });
    assert!(
        serving,
        "the restarted daemon does not serve its socket while the API server is down\n{}",
        node.daemon_log()
    );
    let (code, body) = node.http_get("/healthz").expect("GET /healthz");
    assert_eq!(code, 503, "not synced yet: {body}");
    assert!(
        body.contains("pods"),
        "the reason names the unsynced kinds: {body}"
    );
    // Issue 15: /readyz is /healthz; /livez and CNI STATUS say the daemon works and serves
    // ADDs, an API outage notwithstanding.
    assert_eq!(node.http_get("/readyz").expect("GET /readyz"), (code, body));
    assert_eq!(node.http_get("/livez").expect("GET /livez").0, 200);
    let conf = podwall_tests::cni::entry_config(&node.podwall_entry(), "1.1.0");
    let status = node.invoke_podwall("STATUS", None, &conf);
    assert!(
        status.is_ok(),
        "STATUS with the API server down: {status:?}"
    );

    let added = Instant::now();
    let result = node
        .add(&late)
        .unwrap_or_else(|e| panic!("ADD with the API server down: {e}\n{}", node.daemon_log()));
    eprintln!("ADD with the API down took {:?}", added.elapsed());
    assert_eq!(podwall_tests::cni::result_ips(&result), late.ips());
    let mut peers = peers;
    peers.push(Peer::pod(&late));
    let stored = with_ips(cluster.snapshot(), &late);
    let m = cluster.assert_agree_with(&stored, APPLY, &peers, &CHECKS);
    assert!(
        cell(&m[0], "app/client", "app/late"),
        "the stored policy admits the client"
    );
    assert!(!cell(&m[0], "app/other", "app/late"), "and no one else");

    // Changed while the API server is down: the daemon cannot know yet.
    cluster.apply(&policy("late-ingress", "late", "other"));
    cluster.assert_agree_with(&stored, Duration::from_secs(1), &peers, &CHECKS);

    cluster.api.restart();
    cluster.publish_ips(&late, &late.ips());
    let node = &mut cluster.nodes[0];
    let healthy = node.wait_healthy(RESYNC);
    assert!(healthy.is_ok(), "{healthy:?}\n{}", node.daemon_log());
    let m = cluster.assert_agree_within(APPLY, &peers, &CHECKS);
    assert!(
        cell(&m[0], "app/other", "app/late"),
        "the change made while down took effect"
    );
    assert!(!cell(&m[0], "app/client", "app/late"));
    assert!(traffic.flows(3));
    assert_eq!(
        traffic.failures(),
        0,
        "the established connection never stalled"
    );
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn a_pod_attached_while_its_labels_are_unknown_is_isolated_until_they_are() {
    let mut cluster = Cluster::started("unknown", 1);
    cluster.apply(&namespace("app", &[]));
    for (name, role) in [("client", "client"), ("other", "other")] {
        cluster.apply(&cluster.pod_yaml(0, "app", name, &[("role", role)], &[]));
    }
    // Selects the new pod by a label the daemon will not know when it is attached.
    cluster.apply(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: db-clients-only, namespace: app}\n\
         spec:\n  podSelector: {matchLabels: {role: db}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {role: client}}}]\n",
    );
    let pods: Vec<Pod> = ["client", "other"]
        .iter()
        .map(|n| Pod::named(&format!("unk-{n}"), "app", n))
        .collect();
    for pod in &pods {
        cluster.attach(0, pod);
    }
    let state_dir = cluster.node(0).state_dir();
    let stored_ok = eventually(Duration::from_secs(15), || {
        stored_cluster(&state_dir).is_some_and(|s| !s.policies.is_empty())
    });
    assert!(stored_ok, "the store holds the policy");

    // The daemon restarts while the API server is down; then a pod it has never heard of
    // is created and attached.
    cluster.nodes[0].stop_daemon();
    cluster.api.stop();
    let node = &mut cluster.nodes[0];
    node.spawn_daemon().expect("restarting podwalld");
    assert!(eventually(Duration::from_secs(10), || node
        .call(&Request::Status)
        .is_ok()));
    let new = Pod::named("unk-new", "app", "new");
    let _server = EchoServer::start(&new.netns, 80);
    node.add(&new)
        .unwrap_or_else(|e| panic!("ADD with the API server down: {e}\n{}", node.daemon_log()));
    let (client, other, to) = (Peer::pod(&pods[0]), Peer::pod(&pods[1]), Peer::pod(&new));
    assert!(
        reach::settles(APPLY, &other, &to, Tcp, 80, false),
        "a pod whose labels are unknown is not open\n{}",
        node.daemon_log()
    );

    // Its labels arrive: the policy's verdicts take over.
    cluster.api.restart();
    cluster.apply(&cluster.pod_yaml(0, "app", "new", &[("role", "db")], &[]));
    cluster.publish_ips(&new, &new.ips());
    assert!(
        reach::settles(RESYNC, &client, &to, Tcp, 80, true),
        "the client is let in once the labels are known\n{}",
        cluster.nodes[0].daemon_log()
    );
    assert!(reach::settles(APPLY, &other, &to, Tcp, 80, false));
}
