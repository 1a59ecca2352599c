//! The nodes' podman: each node with an image store of its own, pulling as a kubelet does.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Container;

use crate::cmd;
use crate::node::Node;

/// How the nodes' podman is run: each node with an image store of its own (so an image is
/// on a node only once that node pulled it), and the registries' settings.
#[derive(Debug, Clone)]
pub struct Podman {
    /// Node `n`'s store is `<store>/<n's name>` (`--root`, `--runroot` under it: podman
    /// takes a runroot of 50 bytes at most, so keep `store` short).
    pub store: PathBuf,
    /// `CONTAINERS_REGISTRIES_CONF`.
    pub registries_conf: Option<PathBuf>,
}

impl Podman {
    /// The nodes' podman with stores in a new temp dir (removed when the returned `TempDir`
    /// is dropped: clear the stores first), pulling from the registries `registries_conf`
    /// lists.
    pub fn in_temp_dir(registries_conf: Option<PathBuf>) -> (Podman, tempfile::TempDir) {
        // A short path: podman refuses a runroot longer than 50 bytes.
        let dir = tempfile::Builder::new()
            .prefix("pwt-")
            .tempdir()
            .expect("a directory for the nodes' images");
        let podman = Podman {
            store: dir.path().to_path_buf(),
            registries_conf,
        };
        (podman, dir)
    }

    /// `podman` with `node`'s store.
    pub(super) fn command(&self, node: &Node) -> Command {
        let mut cmd = Command::new("podman");
        self.configure(&mut cmd, node);
        cmd
    }

    /// `podman` inside the node's network namespace, to reach the registry from there.
    fn command_on(&self, node: &Node) -> Command {
        let mut cmd = node.netns.command("podman");
        self.configure(&mut cmd, node);
        cmd
    }

    fn configure(&self, cmd: &mut Command, node: &Node) {
        let store = self.store.join(node.name());
        // All three: `--tmpdir` too, or podman shares the host's /run/libpod with the
        // host's own podman (which `system reset` would remove).
        cmd.arg(format!("--root={}", store.join("storage").display()))
            .arg(format!("--runroot={}", store.join("run").display()))
            .arg(format!("--tmpdir={}", store.join("tmp").display()));
        if let Some(conf) = &self.registries_conf {
            cmd.env("CONTAINERS_REGISTRIES_CONF", conf);
        }
    }

    pub(super) fn remove(&self, node: &Node, name: &str) {
        let _ = self
            .command(node)
            .args(["rm", "-f", "-t", "5", name])
            .output();
    }

    pub(super) fn running(&self, node: &Node, name: &str) -> bool {
        self.inspect(node, name, "{{.State.Running}}") == "true"
    }

    /// `podman inspect --format FORMAT` of the container `name` on `node`.
    pub fn inspect(&self, node: &Node, name: &str, format: &str) -> String {
        self.command(node)
            .args(["inspect", "--format", format, name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }

    /// Remove `node`'s images (its containers are gone by then); the caller removes the
    /// store's directory.
    pub fn clear(&self, node: &Node) {
        let _ = self
            .command(node)
            .args(["rmi", "--all", "--force"])
            .output();
    }

    /// Pull the container's image on `node` as its pull policy says.
    pub(super) fn pull(
        &self,
        node: &Node,
        c: &Container,
        auth: Option<&Path>,
    ) -> Result<(), String> {
        let image = c
            .image
            .as_deref()
            .ok_or_else(|| format!("container {}: no image", c.name))?;
        let present = self
            .command(node)
            .args(["image", "exists", image])
            .status()
            .is_ok_and(|s| s.success());
        if present && c.image_pull_policy.as_deref() != Some("Always") {
            return Ok(());
        }
        let mut pull = self.command_on(node);
        pull.args(["pull", "--quiet"]);
        if let Some(auth) = auth {
            pull.arg(format!("--authfile={}", auth.display()));
        }
        pull.arg(image);
        let out = cmd::run(&mut pull, None, Duration::from_secs(300))
            .map_err(|e| format!("pulling {image}: {e:#}"))?;
        if !out.status.success() {
            return Err(format!("pulling {image}: {}", out.stderr.trim()));
        }
        Ok(())
    }
}
