//! Issue 6: the DaemonSet gives `podwalld` CAP_NET_ADMIN and nothing else, with no privilege
//! escalation and `/proc/sys` read-only, as the runtime mounts it in an unprivileged container.
//! This runs a real daemon confined the same way and checks that pods attach and are enforced.
//! The confinement is a wrapper the rig runs as the daemon (`NodeOptions::daemon`).

use std::os::unix::fs::PermissionsExt;

use podwall_tests::manifests::{documents, namespace, PodManifest};
use podwall_tests::probe::{self, EchoServer, PROBE_TIMEOUT};
use podwall_tests::{bins, Node, NodeOptions, Pod};

/// The container's view: its own mount namespace with `/proc/sys` read-only, and
/// capabilities NET_ADMIN only in every set, under no_new_privs
/// (`allowPrivilegeEscalation: false`). Every step execs, so the daemon keeps the pid the rig
/// signals.
fn confined_daemon(dir: &std::path::Path) -> std::path::PathBuf {
    let wrapper = dir.join("podwalld-net-admin-only");
    let script = format!(
        "#!/bin/sh\nexec unshare --mount sh -c 'mount --bind /proc/sys /proc/sys && \
         mount -o remount,bind,ro /proc/sys && exec setpriv --bounding-set=-all,+net_admin \
         --inh-caps=-all,+net_admin --ambient-caps=-all,+net_admin --no-new-privs -- \"$0\" \"$@\"' \
         {} \"$@\"\n",
        bins::daemon().display()
    );
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn daemon_with_only_net_admin_and_read_only_proc_sys_attaches_and_enforces() {
    podwall_tests::require_root();
    let dir = tempfile::Builder::new()
        .prefix("pwt-caps-")
        .tempdir()
        .unwrap();
    let world = documents(&[
        namespace("web", &[]),
        namespace("other", &[]),
        PodManifest::new("web", "a").yaml(),
        PodManifest::new("other", "c").yaml(),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: web}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n".to_string(),
    ]);
    let node = Node::standalone(
        "caps",
        NodeOptions {
            daemon: Some(confined_daemon(dir.path())),
            ..NodeOptions::default()
        },
        &[("world.yaml", world)],
    );
    let a = Pod::named("caps-a", "web", "a");
    let c = Pod::named("caps-c", "other", "c");
    node.add_all(&[&a, &c]);
    node.expect_attached(a.ip4());
    let at_a = EchoServer::start(&a.netns, 80);
    let at_c = EchoServer::start(&c.netns, 80);
    assert!(
        !probe::tcp_connects(&c.netns, a.ip4(), at_a.port(), PROBE_TIMEOUT),
        "other/c → web/a is dropped"
    );
    assert!(
        probe::tcp_connects(&a.netns, c.ip4(), at_c.port(), PROBE_TIMEOUT),
        "web/a → other/c connects"
    );
    node.del(&a).unwrap_or_else(|e| panic!("DEL a: {e}"));
    node.del(&c).unwrap_or_else(|e| panic!("DEL c: {e}"));
    let log = node.daemon_log();
    assert!(!log.contains("Operation not permitted"), "{log}");
}
