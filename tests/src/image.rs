//! podwall's image (`install/image.sh`, `install/Containerfile`), built under a tag of its
//! own and run with podman, for the root tests.
//!
//! Containers run as podman runs them on this machine: with runc (crun, podman's default
//! here, refuses this kernel's hybrid cgroup layout: "cgroups in hybrid mode not
//! supported"), and with the open-files and processes limits set below root's own (root
//! lacks CAP_SYS_RESOURCE here, and podman's defaults are above them: "setrlimit: operation
//! not permitted"). Neither changes what runs inside.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::bins;
use crate::cmd::{self, Output};
use crate::netns::unique_name;

/// A built image; removed when dropped.
pub struct Image {
    pub tag: String,
    /// What image.sh said of the build (its last line names the size).
    pub report: String,
}

impl Image {
    /// `bash install/image.sh <tag>`; panics with its output when the build fails.
    pub fn build() -> Self {
        let tag = format!("localhost/podwall:{}", unique_name("image"));
        let mut build = Command::new("bash");
        build
            .arg(bins::workspace_root().join("install/image.sh"))
            .arg(&tag);
        let out = cmd::run(&mut build, None, Duration::from_secs(900))
            .and_then(Output::ok)
            .unwrap_or_else(|e| panic!("building the image: {e:#}"));
        Image {
            tag,
            report: out.stdout.trim().to_string(),
        }
    }

    /// A script that runs `podwalld` from this image in the network namespace it is started
    /// in (the rig starts daemons with `ip netns exec`), with the daemon's own privileges
    /// (NET_ADMIN) and the temp directory (where the rig keeps a node's socket, state and
    /// manifests) at the same path. podman itself runs in the test's mount and network
    /// namespaces: `ip netns exec` remounts /sys, which hides the cgroup mounts podman needs,
    /// and runc takes a container in its caller's own namespace for one on the host network,
    /// where podman's default sysctls are refused. The container is named
    /// `pwt-podwalld-<namespace>`.
    pub fn daemon_wrapper(&self, dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let tmp = std::env::temp_dir();
        let run = podman_run_words().join(" ");
        let script = format!(
            "#!/bin/sh\nns=$(ip netns identify)\n\
             exec nsenter --mount=/proc/{pid}/ns/mnt --net=/proc/{pid}/ns/net -- \
             {run} --name pwt-podwalld-$ns \
             --network ns:/run/netns/$ns --cap-drop ALL --cap-add NET_ADMIN \
             -v {tmp}:{tmp} {tag} \"$@\"\n",
            pid = std::process::id(),
            tmp = tmp.display(),
            tag = self.tag,
        );
        let path = dir.join("podwalld-in-image");
        std::fs::write(&path, script).expect("writing the daemon wrapper");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("making the wrapper executable");
        path
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rmi", "-f", &self.tag])
            .output();
    }
}

pub fn podman_run_words() -> Vec<&'static str> {
    vec![
        "podman",
        "run",
        "--rm",
        "--runtime",
        "runc",
        "--ulimit",
        "nofile=4096:4096",
        "--ulimit",
        "nproc=4096:4096",
    ]
}

/// `podman run --rm` with this machine's runtime and limits; the caller adds the rest.
pub fn podman_run() -> Command {
    let words = podman_run_words();
    let mut cmd = Command::new(words[0]);
    cmd.args(&words[1..]);
    cmd
}

/// Remove the container `name` if it still runs (a daemon the rig killed leaves it).
pub fn remove_container(name: &str) {
    let _ = Command::new("podman").args(["rm", "-f", name]).output();
}
