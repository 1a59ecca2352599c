//! The container runtime's side of the node: pods attached through the node's CNI config,
//! and the workload pods the kubelet runs that way.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod as ApiPod;
use serde_json::json;

use super::host_root;
use crate::apiserver::{ApiServer, Kind};
use crate::cni::{CniOutcome, Pod};
use crate::node::Node;
use crate::probe::EchoServer;

/// The container runtime's side of a pod on `node`: `op` (`add`, `check`, `del`) through
/// libcni with the first config in the node's `/etc/cni/net.d` (the one a runtime picks),
/// the plugins of its `/opt/cni/bin` and the host's, and its libcni cache, with the node's
/// `/run/podwall` at that path, where the chained `podwall` entry finds the daemon's
/// socket. The host's `/run` is not touched: the runtime runs in a mount namespace of its
/// own, with a tmpfs on `/run` holding just `/run/netns` and the node's `/run/podwall`.
pub fn runtime(node: &Node, op: &str, pod: &Pod) -> CniOutcome {
    let root = host_root(node);
    let net_dir = root.join("etc/cni/net.d");
    let mut configs: Vec<PathBuf> = std::fs::read_dir(&net_dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    configs.retain(|p| {
        p.extension()
            .is_some_and(|e| e == "conflist" || e == "conf")
    });
    configs.sort();
    let config = configs
        .first()
        .unwrap_or_else(|| panic!("no CNI config in {}", net_dir.display()));
    let view = node.dir().join("kubelet/netns-view");
    let run = root.join("run/podwall");
    for dir in [&view, &run] {
        let _ = std::fs::create_dir_all(dir);
    }
    let script = "set -e; mount --rbind /run/netns \"$1\"; mount -t tmpfs pwt-run /run; \
                  mkdir /run/netns /run/podwall; mount --rbind \"$1\" /run/netns; \
                  mount --bind \"$2\" /run/podwall; shift 2; exec \"$@\"";
    let mut cmd = node.netns.command("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
    ])
    .arg(&view)
    .arg(&run)
    .arg(crate::bins::cnitool())
    .arg(op)
    .arg(config)
    .arg(pod.netns.path())
    .arg(&pod.container_id)
    .arg(&pod.ifname)
    .env(
        "CNI_PATH",
        format!("{}:/usr/lib/cni", root.join("opt/cni/bin").display()),
    )
    .env("CNI_CACHE_DIR", root.join("var/lib/cni"));
    match &pod.cni_args {
        Some(args) => cmd.env("CNI_ARGS", args),
        None => cmd.env_remove("CNI_ARGS"),
    };
    crate::cni::run_cni(&mut cmd, None)
}

/// A workload pod the kubelet runs: its sandbox and its echo servers.
pub struct Workload {
    pub pod: Pod,
    /// Which node (index) it runs on.
    pub node: usize,
    pub servers: Vec<EchoServer>,
}

/// The workload pods, by `namespace/name`, shared between the kubelet and a test.
pub type Workloads = Arc<Mutex<BTreeMap<String, Workload>>>;

/// Attach the Pods scheduled to the nodes that have no sandbox yet, publish their addresses,
/// and detach those whose Pod is gone. A failed ADD (the daemon not ready: CNI error 11) is
/// tried again at the next sync, as kubelet retries a sandbox.
pub(super) fn sync_workloads(api: &ApiServer, nodes: &[&Node], workloads: &Workloads) {
    let pods: Vec<ApiPod> = api
        .list(Kind::Pod)
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect();
    let mut live = Vec::new();
    for p in &pods {
        let spec = p.spec.clone().unwrap_or_default();
        let Some(node) = spec
            .node_name
            .as_deref()
            .and_then(|n| nodes.iter().position(|node| node.name() == n))
        else {
            continue;
        };
        if spec.host_network == Some(true) {
            continue;
        }
        let namespace = p.metadata.namespace.clone().unwrap_or_default();
        let name = p.metadata.name.clone().unwrap_or_default();
        let key = format!("{namespace}/{name}");
        live.push(key.clone());
        if lock(workloads).contains_key(&key) {
            continue;
        }
        let pod = Pod::named(&format!("k-{name}"), &namespace, &name);
        let result = match runtime(nodes[node], "add", &pod) {
            Ok(result) => result,
            Err(e) => {
                eprintln!("kubelet: sandbox of {key} on {}: {e}", nodes[node].name());
                continue;
            }
        };
        let ips = crate::cni::result_ips(&result);
        let status = json!({
            "phase": "Running",
            "podIP": ips.first().map(ToString::to_string),
            "podIPs": ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect::<Vec<_>>(),
        });
        let _ = api.set_status(Kind::Pod, &namespace, &name, status);
        let servers = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter(|port| port.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|port| u16::try_from(port.container_port).ok())
            .map(|port| EchoServer::start(&pod.netns, port))
            .collect();
        lock(workloads).insert(key, Workload { pod, node, servers });
    }
    let gone: Vec<String> = lock(workloads)
        .keys()
        .filter(|k| !live.contains(k))
        .cloned()
        .collect();
    for key in gone {
        if let Some(w) = lock(workloads).remove(&key) {
            let _ = runtime(nodes[w.node], "del", &w.pod);
        }
    }
}

/// Detach every workload pod (the kubelet stops).
pub(super) fn detach_all(nodes: &[&Node], workloads: &Workloads) {
    let all = std::mem::take(&mut *lock(workloads));
    for w in all.into_values() {
        let _ = runtime(nodes[w.node], "del", &w.pod);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
