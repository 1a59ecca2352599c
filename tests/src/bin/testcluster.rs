//! `podwall-testcluster DIR`: the test suite's two-node cluster, up until Ctrl-C (or
//! SIGTERM), for rehearsing an install by hand (docs/install.md, "Rehearse on the test
//! cluster"). Needs root.
//!
//! Two nodes in network namespaces, linked and routing each other's pod range, each with a
//! CNI config of its own (`bridge` + `host-local`) and nothing of podwall's; the test API
//! server (HTTPS) and a private registry (login required) on the first node's link address;
//! and the rig's kubelet, which runs what `kubectl apply` installs with podman, and gives
//! Pods scheduled to a node a sandbox attached through that node's CNI config. It writes
//! `DIR/env` (to source: `KUBECONFIG`, `REGISTRY`, `REGISTRY_USER`, `NODES`, `ON_NODE` — the
//! API server and the registry are reachable from inside the first node, so commands run
//! through `$ON_NODE` — and the registry settings podman reads), `DIR/registry-password`, and
//! `DIR/pods/<namespace>/<name>`, the network namespace of each pod it runs. Everything is
//! removed when it exits.
#![forbid(unsafe_code)]

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use podwall_tests::kubelet::{Kubelet, Podman, Workloads};
use podwall_tests::registry::{self, Registry};
use podwall_tests::Cluster;

fn main() -> ExitCode {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: podwall-testcluster DIR");
        return ExitCode::FAILURE;
    };
    podwall_tests::require_root();
    // Block the stop signals before any thread starts, so that every thread inherits the
    // mask and the main thread alone takes them (sigwait below).
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    if let Err(e) = signals.thread_block() {
        eprintln!("podwall-testcluster: blocking signals: {e}");
        return ExitCode::FAILURE;
    }
    let dir = Path::new(&dir);
    if let Err(e) = std::fs::create_dir_all(dir.join("pods")) {
        eprintln!("podwall-testcluster: {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let cluster = Cluster::for_install("tc");
    let registry = Registry::start_for(&cluster);
    let (podman, _images) = Podman::in_temp_dir(Some(registry.registries_conf()));
    let nodes: Vec<&str> = cluster.nodes.iter().map(|n| n.name()).collect();
    let env = format!(
        "export KUBECONFIG={kubeconfig}\n\
         export CONTAINERS_REGISTRIES_CONF={conf}\n\
         export REGISTRY_AUTH_FILE={dir}/auth.json\n\
         export REGISTRY={addr}\n\
         export REGISTRY_USER={user}\n\
         export NODES='{nodes}'\n\
         export ON_NODE='ip netns exec {first}'\n",
        kubeconfig = cluster.kubeconfig().display(),
        conf = registry.registries_conf().display(),
        dir = dir.display(),
        addr = registry.addr,
        user = registry::USER,
        nodes = nodes.join(" "),
        first = cluster.nodes[0].netns.name(),
    );
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let kubelet = Kubelet::new(
            &cluster.api,
            cluster.nodes.iter().collect(),
            cluster.api.addr(),
            podman.clone(),
        );
        let workloads = kubelet.workloads();
        let stopping = &stop;
        s.spawn(move || kubelet.run(stopping));
        s.spawn(move || publish_pods(dir, &workloads, stopping));
        let written = std::fs::write(dir.join("registry-password"), registry::PASSWORD)
            .and_then(|()| std::fs::write(dir.join("env"), &env));
        match written {
            Ok(()) => println!(
                "podwall-testcluster: up: nodes {}, API server {}, registry {}; . {}/env",
                nodes.join(" "),
                cluster.api.url(),
                registry.addr,
                dir.display()
            ),
            Err(e) => eprintln!("podwall-testcluster: writing {}: {e}", dir.display()),
        }
        let _ = signals.wait();
        println!("podwall-testcluster: stopping");
        stop.store(true, Ordering::Relaxed);
    });
    for node in &cluster.nodes {
        podman.clear(node);
    }
    for file in ["env", "registry-password", "auth.json"] {
        let _ = std::fs::remove_file(dir.join(file));
    }
    let _ = std::fs::remove_dir_all(dir.join("pods"));
    ExitCode::SUCCESS
}

/// Keep `DIR/pods/<namespace>/<name>` naming the network namespace of each running pod.
fn publish_pods(dir: &Path, workloads: &Workloads, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let running: Vec<(String, String)> = workloads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(key, w)| (key.clone(), w.pod.netns.name().to_string()))
            .collect();
        for (key, netns) in &running {
            let path = dir.join("pods").join(key);
            if let Some(parent) = path.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            let _ = std::fs::write(path, netns);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}
