//! A throw-away Kubernetes cluster: one or two nodes in Kubernetes mode (`podwalld
//! --kubeconfig`), the test API server, and pods attached through the real bridge +
//! host-local + podwall chain.
//!
//! Two nodes are joined by a veth pair on a /30 of their own (`10.201.0.1` on the first node,
//! `10.201.0.2` on the second); each routes the other's pod /24 via the other's link address,
//! so pod↔pod traffic between nodes is routed by both nodes and meets both `forward` hooks, as
//! on a real cluster with host-gw routing. The API server listens inside the first node at
//! its link address (or its loopback when there is one node), so both daemons reach it and
//! nothing listens outside the namespaces the rig created.
//!
//! The test drives the cluster as kubelet and the control plane would: it creates Pod
//! objects (with `spec.nodeName`) in the API server, attaches the pods on their node, and
//! publishes the addresses the CNI result gave them to the Pod's `status.podIPs`
//! ([`Cluster::publish_ips`]), which is how the other node learns them as peers. What every
//! daemon should enforce comes from the same API objects, converted as the daemon converts
//! them ([`Cluster::snapshot`]: namespaces, pods, NetworkPolicies and ClusterNetworkPolicies),
//! and judged by `podwall_policy::evaluate`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace as ApiNamespace, Pod as ApiPod, PodIP, PodStatus};
use k8s_openapi::api::networking::v1::NetworkPolicy as ApiPolicy;
use podwall_policy::model::{ClusterNetworkPolicyApi, ClusterPolicy};
use podwall_policy::{Namespace, Pod as PolicyPod, Policy, Protocol, Snapshot};
use podwalld::explain::report::Matrix;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tempfile::TempDir;

use crate::apiserver::{ApiServer, Kind};
use crate::cmd::Output;
use crate::cni::Pod;
use crate::manifests::{PodManifest, PortDecl};
use crate::netns::next_id;
use crate::node::{Node, NodeOptions};
use crate::reach::{self, pod_key, Peer};

/// The first node's address on the link between the nodes (the API server listens there).
pub const LINK_A: &str = "10.201.0.1";
/// The second node's address on that link.
pub const LINK_B: &str = "10.201.0.2";

/// What the API server of a fresh cluster holds before a test adds its world: the
/// `default` and `kube-system` namespaces and a control-plane pod (on a node of its own,
/// at an address no test uses). No NetworkPolicy: a new cluster has none.
pub const SEED: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: Namespace
metadata: {name: kube-system}
---
apiVersion: v1
kind: Pod
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  nodeName: pwt-control-plane
  containers: [{name: coredns, image: coredns}]
status: {phase: Running, podIP: 10.202.0.10, podIPs: [{ip: 10.202.0.10}]}
";

/// A (protocol, port) a matrix is probed on.
pub type Check = (Protocol, u16);

/// Nodes and their API server; the nodes (and their daemons) go first on drop.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub api: ApiServer,
    dir: TempDir,
}

impl Cluster {
    /// `count` (1 or 2) kube-mode nodes and the API server holding what a fresh cluster
    /// holds ([`SEED`]), daemons not started yet (tests that break the API before the first
    /// start begin here).
    pub fn new(label: &str, count: usize) -> Self {
        let cluster = Self::empty(label, count, NodeOptions::default());
        cluster.apply(SEED);
        cluster
    }

    /// Like [`new`](Self::new), but the API server holds no object at all.
    pub fn empty(label: &str, count: usize, options: NodeOptions) -> Self {
        Self::with_options(label, count, options)
    }

    /// Two nodes for installing podwall as an operator does, with nothing of podwall's on
    /// them: the API server speaks HTTPS (pods use its in-cluster address and CA), holds
    /// what a fresh cluster holds and a Node object per node (its pod range, no labels), and
    /// each node's host tree ([`crate::kubelet::host_root`]) has the node's CNI config of
    /// its own, `bridge` + `host-local` alone, as a node before podwall has it. The pods of
    /// what `kubectl apply` installs are run by [`crate::kubelet::Kubelet`].
    pub fn for_install(label: &str) -> Self {
        let cluster = Self::build(label, 2, NodeOptions::default(), true);
        cluster.apply(SEED);
        for node in &cluster.nodes {
            cluster.apply(&crate::cni::node_yaml(node.name(), &[&node.subnet4()]));
            let root = crate::kubelet::host_root(node);
            let net_dir = root.join("etc/cni/net.d");
            std::fs::create_dir_all(&net_dir).expect("creating the node's CNI config dir");
            let mut list = node.conflist_json("1.0.0", None);
            list["plugins"][0]["ipam"]["dataDir"] = root
                .join("var/lib/cni/networks")
                .display()
                .to_string()
                .into();
            std::fs::write(
                net_dir.join("10-bridge.conflist"),
                serde_json::to_vec_pretty(&list).expect("json serialises"),
            )
            .expect("writing the node's CNI config");
        }
        cluster
    }

    /// Nodes with `options` (the kubeconfig is the cluster's) and an empty API server.
    fn with_options(label: &str, count: usize, options: NodeOptions) -> Self {
        Self::build(label, count, options, false)
    }

    fn build(label: &str, count: usize, options: NodeOptions, tls: bool) -> Self {
        assert!(
            (1..=2).contains(&count),
            "a test cluster has one or two nodes, not {count}"
        );
        let mut nodes: Vec<Node> = ["a", "b"][..count]
            .iter()
            .map(|n| Node::with_options(&format!("{label}-{n}"), options.clone()))
            .collect();
        let api = if count == 2 {
            assert_ne!(
                nodes[0].subnet4(),
                nodes[1].subnet4(),
                "the nodes' pod subnets must differ"
            );
            link(&nodes[0], &nodes[1]);
            let addr: SocketAddr = format!("{LINK_A}:0").parse().expect("a valid address");
            let builder = ApiServer::builder().addr(addr);
            match tls {
                true => builder.tls().start_in(&nodes[0].netns),
                false => builder.start_in(&nodes[0].netns),
            }
        } else {
            ApiServer::start_in(&nodes[0].netns)
        };
        let dir = tempfile::Builder::new()
            .prefix(&format!("pwt-{}-cluster-", std::process::id()))
            .tempdir()
            .expect("creating the cluster's temp dir");
        let kubeconfig = api.kubeconfig(dir.path());
        for node in &mut nodes {
            node.set_kubeconfig(kubeconfig.clone());
        }
        Cluster { nodes, api, dir }
    }

    /// `count` nodes with their daemons started and healthy (synced with the API server).
    pub fn started(label: &str, count: usize) -> Self {
        let mut cluster = Self::new(label, count);
        for node in &mut cluster.nodes {
            node.start_daemon();
        }
        cluster
    }

    /// The kubeconfig every node's daemon uses.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Create or replace every object of a YAML stream; panics on an API error.
    pub fn apply(&self, yaml: &str) {
        self.api
            .apply_yaml(yaml)
            .unwrap_or_else(|e| panic!("applying to the API server: {e:?}\n{yaml}"));
    }

    /// Delete every object a YAML stream names; panics on an API error.
    pub fn delete(&self, yaml: &str) {
        self.api
            .delete_yaml(yaml)
            .unwrap_or_else(|e| panic!("deleting from the API server: {e:?}\n{yaml}"));
    }

    /// A Pod object scheduled to node `i` (no addresses yet: they come with the ADD).
    pub fn pod_yaml(
        &self,
        i: usize,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        ports: &[PortDecl],
    ) -> String {
        PodManifest::new(namespace, name)
            .labels(labels)
            .ports(ports)
            .remote(self.nodes[i].name(), &[])
            .yaml()
    }

    /// Replace the labels of Pod object `namespace/name`, keeping its spec and status (as
    /// `kubectl label --overwrite` does). Panics when there is no such object.
    pub fn label_pod(&self, namespace: &str, name: &str, labels: &[(&str, &str)]) {
        let mut object: ApiPod = self
            .api
            .get(namespace, name)
            .unwrap_or_else(|| panic!("no Pod object {namespace}/{name} in the API server"));
        object.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        self.api
            .apply(&object)
            .unwrap_or_else(|e| panic!("labelling {namespace}/{name}: {e:?}"));
    }

    /// ADD `pod` on node `i` through libcni, then publish its addresses to its Pod object as
    /// kubelet would. Panics when the ADD fails. Returns the CNI result.
    pub fn attach(&self, i: usize, pod: &Pod) -> Value {
        let result = self.nodes[i].add(pod).unwrap_or_else(|e| {
            panic!("ADD {} on {}: {e}", pod.container_id, self.nodes[i].name())
        });
        self.publish_ips(pod, &crate::cni::result_ips(&result));
        result
    }

    /// Set the Pod object's `status.podIP`/`podIPs` to `ips` and its phase to Running, as
    /// kubelet does once the sandbox has its network. Panics when there is no such object.
    pub fn publish_ips(&self, pod: &Pod, ips: &[IpAddr]) {
        let key = pod_key(pod);
        let mut object: ApiPod = self
            .api
            .get(&key.namespace, &key.name)
            .unwrap_or_else(|| panic!("no Pod object {key} in the API server"));
        let status = object.status.get_or_insert_with(PodStatus::default);
        status.phase = Some("Running".into());
        status.pod_ip = ips.first().map(ToString::to_string);
        status.pod_ips = Some(ips.iter().map(|ip| PodIP { ip: ip.to_string() }).collect());
        self.api
            .apply(&object)
            .unwrap_or_else(|e| panic!("publishing the addresses of {key}: {e:?}"));
    }

    /// The cluster as the API server holds it, converted as the daemons convert it (a policy
    /// with errors becomes its fail-closed stand-in).
    pub fn snapshot(&self) -> Snapshot {
        snapshot_of(&self.api)
    }

    /// Probe every `(protocol, port)` matrix over `peers` (all of them side by side) until
    /// each agrees with the evaluator over [`snapshot`](Self::snapshot), or panic after
    /// `deadline` showing the matrices and every node's table. Returns the agreed matrices.
    pub fn assert_agree_within(
        &self,
        deadline: Duration,
        peers: &[Peer],
        checks: &[Check],
    ) -> Vec<Matrix> {
        self.assert_agree_with(&self.snapshot(), deadline, peers, checks)
    }

    /// Like [`assert_agree_within`](Self::assert_agree_within), judged over `snap` (e.g. a
    /// snapshot taken before the API server went away, or with addresses not yet published).
    pub fn assert_agree_with(
        &self,
        snap: &Snapshot,
        deadline: Duration,
        peers: &[Peer],
        checks: &[Check],
    ) -> Vec<Matrix> {
        let want: Vec<Matrix> = checks
            .iter()
            .map(|(proto, port)| reach::expected(snap, peers, *proto, *port))
            .collect();
        let end = Instant::now() + deadline;
        loop {
            let got = observe_all(peers, checks);
            let differ: Vec<usize> = (0..checks.len())
                .filter(|&i| !reach::mismatches(&want[i], &got[i]).is_empty())
                .collect();
            if differ.is_empty() {
                return want;
            }
            if Instant::now() >= end {
                let mut text = String::new();
                for i in differ {
                    text.push_str(&reach::report(&want[i], &got[i]));
                    text.push('\n');
                }
                panic!(
                    "probes disagree with the evaluator after {deadline:?}\n{text}{}",
                    self.tables()
                );
            }
        }
    }

    /// Every node's `inet podwall` table, for failure messages.
    pub fn tables(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let text = crate::nft::table_text(&n.netns)
                    .unwrap_or_else(|e| format!("(cannot list: {e:#})"));
                format!("--- table of {} ---\n{text}\n", n.name())
            })
            .collect()
    }
}

/// `snap` with attached `pod`'s addresses read from its interface, as its node's daemon has
/// them from the CNI result before they are published to the API server.
pub fn with_ips(mut snap: Snapshot, pod: &Pod) -> Snapshot {
    let key = pod_key(pod);
    let entry = snap
        .pods
        .get_mut(&key)
        .unwrap_or_else(|| panic!("no pod {key} in the snapshot"));
    entry.ips = pod.ips();
    snap
}

/// Every `(protocol, port)` matrix over `peers`, probed at once.
pub fn observe_all(peers: &[Peer], checks: &[Check]) -> Vec<Matrix> {
    std::thread::scope(|s| {
        let handles: Vec<_> = checks
            .iter()
            .map(|(proto, port)| s.spawn(move || reach::observed(peers, *proto, *port)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("probe thread"))
            .collect()
    })
}

/// The API server's objects as a policy snapshot, converted like the daemon's watchers do.
pub fn snapshot_of(api: &ApiServer) -> Snapshot {
    fn typed<K: DeserializeOwned>(value: Value) -> K {
        serde_json::from_value(value).expect("the API server stores objects of their kind")
    }
    let mut snap = Snapshot::default();
    for value in api.list(Kind::Namespace) {
        if let Ok(ns) = Namespace::from_api(&typed::<ApiNamespace>(value)) {
            snap.namespaces.insert(ns.name.clone(), ns);
        }
    }
    for value in api.list(Kind::Pod) {
        let (pod, _) = PolicyPod::from_api(&typed::<ApiPod>(value));
        snap.pods.insert(pod.key.clone(), pod);
    }
    for value in api.list(Kind::NetworkPolicy) {
        let (policy, _) = Policy::from_api(&typed::<ApiPolicy>(value));
        snap.policies.insert(policy.key.clone(), policy);
    }
    for value in api.list(Kind::ClusterNetworkPolicy) {
        let policy = cluster_policy(value);
        snap.cluster_policies.insert(policy.name.clone(), policy);
    }
    snap
}

/// A stored ClusterNetworkPolicy converted; one not even of the right shape (the server
/// checks no schema) is the broken stand-in, as the manifest loader makes it.
fn cluster_policy(value: Value) -> ClusterPolicy {
    let name = value["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    match serde_json::from_value::<ClusterNetworkPolicyApi>(value) {
        Ok(api) => ClusterPolicy::from_api(&api).0,
        Err(_) => {
            let (mut policy, _) = ClusterPolicy::from_api(&ClusterNetworkPolicyApi::default());
            policy.name = name;
            policy
        }
    }
}

/// Join two nodes with a veth pair on a /30 and route each one's pod subnet via the other.
fn link(a: &Node, b: &Node) {
    let id = next_id() % 100_000;
    let (va, vb) = (format!("pwl{id}"), format!("pwl{id}p"));
    let run = |node: &Node, words: &[&str]| {
        node.netns
            .exec(words)
            .and_then(Output::ok)
            .unwrap_or_else(|e| panic!("linking nodes {} and {}: {e:#}", a.name(), b.name()));
    };
    run(
        a,
        &[
            "ip",
            "link",
            "add",
            &va,
            "type",
            "veth",
            "peer",
            "name",
            &vb,
            "netns",
            b.netns.name(),
        ],
    );
    for (node, dev, local, other) in [(a, &va, LINK_A, b), (b, &vb, LINK_B, a)] {
        let gateway = if local == LINK_A { LINK_B } else { LINK_A };
        run(
            node,
            &["ip", "addr", "add", &format!("{local}/30"), "dev", dev],
        );
        run(node, &["ip", "link", "set", dev, "up"]);
        run(
            node,
            &["ip", "route", "add", &other.subnet4(), "via", gateway],
        );
    }
}
