//! A DaemonSet's pod on one node, as podman containers: what the template says, translated.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Secret};
use serde_json::{json, Value};

use super::{host_root, Podman};
use crate::apiserver::ApiServer;
use crate::cmd;
use crate::image::podman_run_words;
use crate::node::Node;

/// What starting a pod needs: the API server (config maps, secrets, the service account),
/// the nodes' podman, and the API server's address as pods reach it.
pub(super) struct Runner<'a> {
    pub api: &'a ApiServer,
    pub podman: Podman,
    /// `KUBERNETES_SERVICE_HOST` and `_PORT`.
    pub service: SocketAddr,
}

impl Runner<'_> {
    /// Run the pod's init containers to completion and start its containers; the names of
    /// the long-running ones, or why it failed.
    pub(super) fn start(&self, node: &Node, ds: &DaemonSet) -> Result<Vec<String>, String> {
        let name = ds.metadata.name.clone().unwrap_or_default();
        let namespace = ds.metadata.namespace.clone().unwrap_or_default();
        let spec = ds
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.clone())
            .ok_or("no pod template")?;
        let dir = node.dir().join("kubelet").join(&name);
        let mounts = self.volumes(&spec, node, &namespace, &dir)?;
        let auth = self.pull_auth(&spec, &namespace, &dir)?;
        let prefix = format!("pwt-k-{}-{name}", node.netns.name());
        for c in spec.init_containers.iter().flatten() {
            self.podman.pull(node, c, auth.as_deref())?;
            let mut run = self.podman_run(node, c, &mounts, &spec);
            run.arg("--rm");
            run.args(["--name", &format!("{prefix}-{}", c.name)]);
            image_and_args(&mut run, c);
            let out = cmd::run(&mut run, None, Duration::from_secs(120))
                .map_err(|e| format!("init container {}: {e:#}", c.name))?;
            if !out.status.success() {
                return Err(format!(
                    "init container {} exited with {}: {}{}",
                    c.name, out.status, out.stdout, out.stderr
                ));
            }
        }
        let mut names = Vec::new();
        for c in &spec.containers {
            self.podman.pull(node, c, auth.as_deref())?;
            let container = format!("{prefix}-{}", c.name);
            self.podman.remove(node, &container);
            let mut run = self.podman_run(node, c, &mounts, &spec);
            run.args(["-d", "--name", &container]);
            image_and_args(&mut run, c);
            let started = match cmd::run(&mut run, None, Duration::from_secs(60)) {
                Ok(out) if out.status.success() => Ok(()),
                Ok(out) => Err(format!("container {}: {}", c.name, out.stderr)),
                Err(e) => Err(format!("container {}: {e:#}", c.name)),
            };
            if let Err(why) = started {
                // A pod starts whole or not at all: the next try starts it again.
                for name in names.iter().chain([&container]) {
                    self.podman.remove(node, name);
                }
                return Err(why);
            }
            names.push(container);
        }
        Ok(names)
    }

    /// `podman run` with the node's network, the container's privileges, env and mounts.
    fn podman_run(
        &self,
        node: &Node,
        c: &Container,
        mounts: &BTreeMap<String, Mount>,
        spec: &PodSpec,
    ) -> Command {
        let mut run = self.podman.command(node);
        // `podman_run_words` is a `podman run --rm …` line; the caller says whether to remove.
        run.args(podman_run_words()[1..].iter().filter(|w| **w != "--rm"));
        if spec.host_network == Some(true) {
            run.arg(format!("--network=ns:{}", node.netns.path().display()));
        }
        let security = c.security_context.clone().unwrap_or_default();
        if security.privileged == Some(true) {
            run.arg("--privileged");
        } else if let Some(caps) = &security.capabilities {
            for cap in caps.drop.iter().flatten() {
                run.args(["--cap-drop", cap]);
            }
            for cap in caps.add.iter().flatten() {
                run.args(["--cap-add", cap]);
            }
        }
        if security.read_only_root_filesystem == Some(true) {
            run.arg("--read-only");
        }
        if let Some(uid) = security.run_as_user {
            run.args(["--user", &uid.to_string()]);
        }
        run.args([
            "-e",
            &format!("KUBERNETES_SERVICE_HOST={}", self.service.ip()),
            "-e",
            &format!("KUBERNETES_SERVICE_PORT={}", self.service.port()),
        ]);
        for env in c.env.iter().flatten() {
            let field = env
                .value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.as_str());
            let value = match field {
                Some("spec.nodeName") => node.name().to_string(),
                Some(_) => continue,
                None => env.value.clone().unwrap_or_default(),
            };
            run.args(["-e", &format!("{}={value}", env.name)]);
        }
        for vm in c.volume_mounts.iter().flatten() {
            match mounts.get(&vm.name) {
                Some(Mount::Tmpfs) => {
                    run.args(["--tmpfs", &vm.mount_path]);
                }
                Some(Mount::Dir(dir)) => {
                    let ro = if vm.read_only == Some(true) {
                        ":ro"
                    } else {
                        ""
                    };
                    run.args(["-v", &format!("{}:{}{ro}", dir.display(), vm.mount_path)]);
                }
                None => {}
            }
        }
        if let Some(Mount::Dir(sa)) = mounts.get(SERVICE_ACCOUNT) {
            run.args([
                "-v",
                &format!(
                    "{}:/var/run/secrets/kubernetes.io/serviceaccount:ro",
                    sa.display()
                ),
            ]);
        }
        run
    }

    /// Each volume as podman mounts it, the service account's under [`SERVICE_ACCOUNT`].
    fn volumes(
        &self,
        spec: &PodSpec,
        node: &Node,
        namespace: &str,
        dir: &Path,
    ) -> Result<BTreeMap<String, Mount>, String> {
        let mut out = BTreeMap::new();
        for v in spec.volumes.iter().flatten() {
            let mount = if let Some(host) = &v.host_path {
                let path = host_root(node).join(host.path.trim_start_matches('/'));
                std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                Mount::Dir(path)
            } else if let Some(cm) = &v.config_map {
                let obj: ConfigMap = self
                    .api
                    .get(namespace, &cm.name)
                    .ok_or_else(|| format!("configmap {namespace}/{} not found", cm.name))?;
                let path = dir.join("configmaps").join(&v.name);
                write_files(&path, obj.data.unwrap_or_default())?;
                Mount::Dir(path)
            } else if v.empty_dir.is_some() {
                Mount::Tmpfs
            } else {
                return Err(format!(
                    "volume {}: a kind this kubelet does not mount",
                    v.name
                ));
            };
            out.insert(v.name.clone(), mount);
        }
        if spec.automount_service_account_token != Some(false) {
            let path = dir.join("serviceaccount");
            let ca = self
                .api
                .ca()
                .map(|ca| std::fs::read_to_string(ca).unwrap_or_default())
                .unwrap_or_default();
            let files = [
                ("token".to_string(), self.api.token().to_string()),
                ("ca.crt".to_string(), ca),
                ("namespace".to_string(), namespace.to_string()),
            ];
            write_files(&path, files.into_iter().collect())?;
            out.insert(SERVICE_ACCOUNT.to_string(), Mount::Dir(path));
        }
        Ok(out)
    }

    /// An auth file for podman from the pod's pull secrets (`.dockerconfigjson`), if any.
    fn pull_auth(
        &self,
        spec: &PodSpec,
        namespace: &str,
        dir: &Path,
    ) -> Result<Option<PathBuf>, String> {
        let mut auths = serde_json::Map::new();
        for secret in spec.image_pull_secrets.iter().flatten() {
            let obj: Secret = self
                .api
                .get(namespace, &secret.name)
                .ok_or_else(|| format!("pull secret {namespace}/{} not found", secret.name))?;
            let config = obj
                .data
                .and_then(|d| d.get(".dockerconfigjson").cloned())
                .ok_or_else(|| format!("pull secret {} has no .dockerconfigjson", secret.name))?;
            let config: Value = serde_json::from_slice(&config.0)
                .map_err(|e| format!("pull secret {}: {e}", secret.name))?;
            if let Some(map) = config.get("auths").and_then(Value::as_object) {
                auths.extend(map.clone());
            }
        }
        if auths.is_empty() {
            return Ok(None);
        }
        let path = dir.join("auth.json");
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::write(&path, json!({ "auths": auths }).to_string())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Some(path))
    }
}

/// The service account volume's key in the mount map (no volume name has a slash).
const SERVICE_ACCOUNT: &str = "kubelet/serviceaccount";

enum Mount {
    Dir(PathBuf),
    Tmpfs,
}

fn write_files(dir: &Path, files: BTreeMap<String, String>) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// The image, then the command (as the entrypoint) and args.
fn image_and_args(run: &mut Command, c: &Container) {
    if let Some(command) = &c.command {
        run.arg(format!(
            "--entrypoint={}",
            serde_json::to_string(command).unwrap_or_default()
        ));
    }
    run.arg(c.image.as_deref().unwrap_or(""));
    run.args(c.args.iter().flatten());
}

/// The container's readiness probe (`httpGet`), asked inside the node; no probe is ready.
pub(super) fn ready(node: &Node, c: &Container) -> bool {
    let Some(get) = c.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref()) else {
        return true;
    };
    let port = match &get.port {
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p) => *p,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(_) => return false,
    };
    let host = get.host.as_deref().unwrap_or("127.0.0.1");
    let Ok(addr) = format!("{host}:{port}").parse::<SocketAddr>() else {
        return false;
    };
    let path = get.path.as_deref().unwrap_or("/");
    matches!(
        crate::probe::http_get(&node.netns, addr, path),
        Ok((200..=399, _))
    )
}
