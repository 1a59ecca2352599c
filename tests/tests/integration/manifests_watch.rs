//! Issue 14: standalone mode follows its directory file by file. A policy written into a
//! directory of many files is enforced within a moment, through inotify, and only that file
//! is read again; a broken edit of it keeps its last readable version enforcing, and the
//! fixed version and the file's removal apply as quickly.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use podwall_tests::manifests::{documents, namespace, PodManifest};
use podwall_tests::metrics::MANIFEST_FILES_READ;
use podwall_tests::probe::{tcp_connects, EchoServer};
use podwall_tests::{eventually, Node, NodeOptions, Pod};

/// Files of remote pods besides the test's own: a change must not read them again.
const OTHER_FILES: usize = 50;
const PODS_PER_FILE: usize = 20;
/// inotify brings a change well within this. While the watch works, the only other way a
/// change is seen is the safety poll, every 10 s.
const QUICK: Duration = Duration::from_secs(2);
const PROBE: Duration = Duration::from_millis(300);

/// A policy on the server admitting only pods labelled `role: <role>`.
fn only(role: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: only, namespace: w}}\n\
         spec:\n  podSelector: {{matchLabels: {{app: server}}}}\n  ingress:\n  - from: [{{podSelector: {{matchLabels: {{role: {role}}}}}}}]\n"
    )
}

/// The daemon's thread names (`/proc/<pid>/task/*/comm`).
fn threads(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon's tasks");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn a_policy_file_is_enforced_through_inotify_reading_only_that_file() {
    let mut files = vec![(
        "world.yaml",
        documents(&[
            namespace("w", &[]),
            PodManifest::new("w", "server")
                .labels(&[("app", "server")])
                .yaml(),
            PodManifest::new("w", "client")
                .labels(&[("role", "client")])
                .yaml(),
        ]),
    )];
    let names: Vec<String> = (0..OTHER_FILES).map(|n| format!("r{n}.yaml")).collect();
    for (n, name) in names.iter().enumerate() {
        let mut docs = vec![namespace(&format!("r{n}"), &[])];
        for i in 0..PODS_PER_FILE {
            let ip = IpAddr::V4(Ipv4Addr::new(10, 250, n as u8, i as u8 + 1));
            docs.push(
                PodManifest::new(&format!("r{n}"), &format!("p{i}"))
                    .labels(&[("role", "client")])
                    .remote("pwt-elsewhere", &[ip])
                    .yaml(),
            );
        }
        files.push((name.as_str(), documents(&docs)));
    }
    let node = Node::standalone("mwatch", NodeOptions::default(), &files);
    let pid = node.daemon_pid().expect("the daemon runs");
    assert!(
        threads(pid).iter().any(|t| t.starts_with("manifests-ino")),
        "inotify watches the directory: {:?}",
        threads(pid)
    );
    let (server, client) = (
        Pod::named("mw-server", "w", "server"),
        Pod::named("mw-client", "w", "client"),
    );
    node.add_all(&[&server, &client]);
    let _echo = EchoServer::start(&server.netns, 80);
    let reaches = || tcp_connects(&client.netns, server.ip4(), 80, PROBE);
    assert!(eventually(QUICK, reaches), "no policy yet: open");
    let dir = node.manifests();
    let read = || node.metrics().value(MANIFEST_FILES_READ);
    let loaded = read();
    assert_eq!(
        loaded,
        (OTHER_FILES + 1) as f64,
        "the first load reads each file"
    );

    // A policy that admits nobody the client is: denied quickly, one file read.
    let t0 = Instant::now();
    dir.write("policy.yaml", &only("nobody"));
    assert!(
        eventually(QUICK, || !reaches()),
        "the policy is enforced within {QUICK:?}"
    );
    eprintln!(
        "denied {:?} after the write, the denied probe's {PROBE:?} timeout included",
        t0.elapsed()
    );
    assert_eq!(read() - loaded, 1.0, "only the new file is read");

    // A broken edit: read, and the last readable version keeps enforcing.
    dir.write(
        "policy.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: [unclosed\n",
    );
    assert!(
        eventually(QUICK, || read() - loaded == 2.0),
        "the edit is read"
    );
    assert!(!reaches(), "the last readable version still denies");
    assert_eq!(node.healthz().expect("/healthz answers"), 200);

    // Fixed to admit clients: allowed again, as quickly; then the file goes: open.
    dir.write("policy.yaml", &only("client"));
    assert!(eventually(QUICK, reaches), "the fixed version is enforced");
    dir.write("policy.yaml", &only("nobody"));
    assert!(eventually(QUICK, || !reaches()), "denied again");
    dir.remove("policy.yaml");
    assert!(
        eventually(QUICK, reaches),
        "the removed file's policy is gone"
    );
    assert_eq!(
        read() - loaded,
        4.0,
        "each write read its file once, and nothing else"
    );
}
