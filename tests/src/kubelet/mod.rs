//! A kubelet and DaemonSet controller for the rig's nodes, as far as installing podwall needs
//! them: what `kubectl apply` puts in the API server runs on the nodes as a cluster would run
//! it.
//!
//! Every DaemonSet whose `nodeSelector` a node's labels match gets a pod on that node, run
//! with podman: its init containers one after the other to completion, then its containers,
//! each as the template says (command and args, env with `spec.nodeName`, privileged or the
//! capabilities it lists, a read-only root, the image pull policy and pull secrets), on the
//! node's network (`hostNetwork`). Volumes: a `hostPath` is that path under the node's host
//! tree ([`host_root`]: the node's own `/etc/cni/net.d`, `/opt/cni/bin`, `/run/podwall`,
//! `/var/lib/podwall`, …), a `configMap` its keys as files, an `emptyDir` a tmpfs; the service
//! account's token and CA are mounted where in-cluster clients look, with
//! `KUBERNETES_SERVICE_HOST`/`PORT` naming the API server. A container that exits is started
//! again; readiness is the pod's `httpGet` probe, asked on the node; a changed template
//! replaces the pod; a deleted DaemonSet's pods are removed. The DaemonSet's status says what
//! the controller would (desired, updated, ready, observed generation), which is what
//! `kubectl rollout status` waits for.
//!
//! Pods of other workloads (Pod objects with a `spec.nodeName` of the rig, not on the host
//! network) get a sandbox: a network namespace attached through the node's CNI config as a
//! container runtime attaches it ([`runtime`]), their addresses published to the Pod's
//! status, an echo server on each TCP `containerPort`; a deleted Pod is detached. Tests
//! reach them through [`Workloads`].
//!
//! Not modelled: Pod objects for the DaemonSets' pods, tolerations and taints, rolling one
//! node at a time (every node's pod is replaced at once), liveness probes, resource limits,
//! containers of workload pods (their sandbox is all there is).

mod pod;
mod podman;
mod runtime;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Node as ApiNode;
use serde_json::json;

use crate::apiserver::{ApiServer, Kind};
use crate::node::Node;
use pod::{ready, Runner};

pub use podman::Podman;
pub use runtime::{runtime, Workload, Workloads};

/// Where a node's host paths live: `hostPath: /etc/cni/net.d` is `<root>/etc/cni/net.d`.
pub fn host_root(node: &Node) -> PathBuf {
    node.dir().join("host")
}

/// How long a failed pod start waits before the next try (kubelet backs off, too).
const RETRY: Duration = Duration::from_secs(3);

/// The pods of one cluster's DaemonSets and workloads on its nodes.
pub struct Kubelet<'a> {
    runner: Runner<'a>,
    nodes: Vec<&'a Node>,
    pods: BTreeMap<(usize, String), PodRun>,
    /// Every container started, by node, for the teardown.
    started: Vec<(usize, String)>,
    workloads: Workloads,
}

/// One DaemonSet pod on one node.
struct PodRun {
    template: String,
    containers: Vec<String>,
    ready: bool,
    /// Why the last start failed, and when to try again.
    failed: Option<(String, Instant)>,
}

impl<'a> Kubelet<'a> {
    /// `service` is the API server's address as pods reach it.
    pub fn new(
        api: &'a ApiServer,
        nodes: Vec<&'a Node>,
        service: SocketAddr,
        podman: Podman,
    ) -> Self {
        Kubelet {
            runner: Runner {
                api,
                podman,
                service,
            },
            nodes,
            pods: BTreeMap::new(),
            started: Vec::new(),
            workloads: Workloads::default(),
        }
    }

    /// The workload pods it runs, shared with the caller.
    pub fn workloads(&self) -> Workloads {
        self.workloads.clone()
    }

    /// Sync every half second until `stop`, then remove every container it started and
    /// detach every workload pod.
    pub fn run(mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            self.sync();
            runtime::sync_workloads(self.runner.api, &self.nodes, &self.workloads);
            std::thread::sleep(Duration::from_millis(500));
        }
        for (i, name) in &self.started {
            self.runner.podman.remove(self.nodes[*i], name);
        }
        runtime::detach_all(&self.nodes, &self.workloads);
    }

    fn sync(&mut self) {
        let sets: Vec<DaemonSet> = self
            .runner
            .api
            .list(Kind::DaemonSet)
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect();
        let mut wanted = Vec::new();
        for (i, node) in self.nodes.clone().into_iter().enumerate() {
            let labels = self
                .runner
                .api
                .get::<ApiNode>("", node.name())
                .and_then(|n| n.metadata.labels)
                .unwrap_or_default();
            for ds in &sets {
                let spec = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref());
                let selector = spec
                    .and_then(|s| s.node_selector.clone())
                    .unwrap_or_default();
                if selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                    let key = (i, key_of(ds));
                    self.ensure(&key, ds);
                    wanted.push(key);
                }
            }
        }
        let gone: Vec<_> = self
            .pods
            .keys()
            .filter(|k| !wanted.contains(k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(run) = self.pods.remove(&key) {
                self.remove(key.0, &run.containers);
            }
        }
        for ds in &sets {
            self.report(ds);
        }
    }

    /// Start, replace, restart or probe the pod of `ds` on node `key.0`.
    fn ensure(&mut self, key: &(usize, String), ds: &DaemonSet) {
        let template =
            serde_json::to_string(&ds.spec.as_ref().map(|s| &s.template)).unwrap_or_default();
        let node = self.nodes[key.0];
        let current = self.pods.get(&key.clone());
        let start = match current {
            None => true,
            Some(run) if run.template != template => {
                self.remove(key.0, &run.containers);
                true
            }
            Some(run) => run
                .failed
                .as_ref()
                .is_some_and(|(_, retry)| Instant::now() >= *retry),
        };
        if start {
            let result = self.runner.start(node, ds);
            let (containers, failed) = match result {
                Ok(names) => (names, None),
                Err(why) => {
                    eprintln!("kubelet: {} on {}: {why}", key.1, node.name());
                    (Vec::new(), Some((why, Instant::now() + RETRY)))
                }
            };
            self.started
                .extend(containers.iter().map(|name| (key.0, name.clone())));
            self.pods.insert(
                key.clone(),
                PodRun {
                    template,
                    containers,
                    ready: false,
                    failed,
                },
            );
        }
        let Some(run) = self.pods.get_mut(key) else {
            return;
        };
        if run.failed.is_some() {
            return;
        }
        for name in &run.containers {
            if !self.runner.podman.running(node, name) {
                let _ = self
                    .runner
                    .podman
                    .command(node)
                    .args(["start", name])
                    .output();
            }
        }
        let spec = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref());
        run.ready = spec.is_some_and(|s| s.containers.iter().all(|c| ready(node, c)));
    }

    fn remove(&self, node: usize, containers: &[String]) {
        for name in containers {
            self.runner.podman.remove(self.nodes[node], name);
        }
    }

    /// The DaemonSet's status, as its controller reports it.
    fn report(&self, ds: &DaemonSet) {
        let key = key_of(ds);
        let runs: Vec<&PodRun> = self
            .pods
            .iter()
            .filter(|((_, k), _)| *k == key)
            .map(|(_, run)| run)
            .collect();
        let ready = runs.iter().filter(|r| r.ready).count();
        let scheduled = runs.iter().filter(|r| r.failed.is_none()).count();
        let status = json!({
            "observedGeneration": ds.metadata.generation.unwrap_or(0),
            "desiredNumberScheduled": runs.len(),
            "currentNumberScheduled": scheduled,
            "updatedNumberScheduled": scheduled,
            "numberReady": ready,
            "numberAvailable": ready,
            "numberUnavailable": runs.len() - ready,
            "numberMisscheduled": 0,
        });
        let namespace = ds.metadata.namespace.as_deref().unwrap_or("");
        let name = ds.metadata.name.as_deref().unwrap_or("");
        let _ = self
            .runner
            .api
            .set_status(Kind::DaemonSet, namespace, name, status);
    }
}

fn key_of(ds: &DaemonSet) -> String {
    format!(
        "{}/{}",
        ds.metadata.namespace.as_deref().unwrap_or(""),
        ds.metadata.name.as_deref().unwrap_or("")
    )
}
