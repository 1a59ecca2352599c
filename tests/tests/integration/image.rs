//! Issue 16: podwall's image, built and run as a cluster would run it. `install/image.sh`
//! builds it FROM scratch with buildah, offline; its install-cni container (the image's
//! busybox, script and static plugin) handles every starting state of a node's CNI config
//! that the script's own tests cover, on a throw-away host tree; and its `podwalld` serves a
//! node from the image until healthy, attaching pods and enforcing their policy.

use podwall_tests::image::{remove_container, Image};
use podwall_tests::trio::{self, Trio, WEB_FROM_CLIENT};
use podwall_tests::{Node, NodeOptions};

use crate::install::{install_round_trip_in, malformed_config_left_untouched_in};

#[test]
#[ignore = "needs root: builds and runs containers, creates network namespaces"]
fn the_image_installs_the_plugin_on_every_starting_state_and_serves_a_node() {
    let image = Image::build();
    eprintln!("{}", image.report);
    assert!(image.report.contains(" MiB ("), "{}", image.report);

    for case in ["conflist", "kuberouter-conf", "empty", "installed"] {
        install_round_trip_in(case, Some(&image.tag));
    }
    malformed_config_left_untouched_in(Some(&image.tag));

    let tools = tempfile::tempdir().expect("a temp dir");
    let mut node = Node::with_options(
        "image",
        NodeOptions {
            manifests: true,
            daemon: Some(image.daemon_wrapper(tools.path())),
            ..NodeOptions::default()
        },
    );
    let container = format!("pwt-podwalld-{}", node.netns.name());
    let _removed = Removed(container);
    let dir = node.manifests();
    dir.write("world.yaml", &trio::world());
    dir.write("policy.yaml", WEB_FROM_CLIENT);
    node.start_daemon();
    Trio::attach(&node, "img").assert_enforced();
    let log = node.daemon_log();
    assert!(log.contains("attached pod=app/web"), "{log}");
    let status = node.stop_daemon();
    assert!(
        status.success(),
        "a clean stop: {status}\n{}",
        node.daemon_log()
    );
}

/// Removes the daemon's container, should the test end before the daemon stops.
struct Removed(String);

impl Drop for Removed {
    fn drop(&mut self) {
        remove_container(&self.0);
    }
}
