//! The upstream NetworkPolicy e2e world on a cluster in Kubernetes mode: namespaces x, y, z
//! labelled `ns: <name>`, pods a, b, c in each labelled `pod: <name>`, spread over two nodes,
//! each serving TCP and UDP on 80 and 81 (named `serve-<port>-<protocol>`). The evaluator's
//! `testworld` is the same world offline.

use podwall_policy::Protocol::{Tcp, Udp};

use podwalld::explain::report::Matrix;

use crate::cluster::{Check, Cluster};
use crate::manifests::namespace;
use crate::probe::EchoServer;
use crate::reach::{self, cell, Peer};
use crate::Pod;

/// The four matrices every step probes.
pub const CHECKS: [Check; 4] = [(Tcp, 80), (Tcp, 81), (Udp, 80), (Udp, 81)];
pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const PODS: [&str; 3] = ["a", "b", "c"];

/// The node of pod `ns/name` (by index): alternating, so every namespace has pods on both
/// nodes and most pairs of pods cross nodes.
pub fn node_of(ns: usize, pod: usize) -> usize {
    (ns * 3 + pod) % 2
}

/// Cell `from -> to` of the matrix of `check`, of matrices probed in `CHECKS` order.
pub fn at(ms: &[Matrix], check: Check, from: &str, to: &str) -> bool {
    let i = (CHECKS.iter().position(|c| *c == check)).expect("a probed check");
    cell(&ms[i], from, to)
}

/// The world's pods, attached and serving.
pub struct World {
    pods: Vec<Pod>,
    _servers: Vec<EchoServer>,
}

impl World {
    /// Namespaces and Pod objects through the API server, then each pod attached on its
    /// node; sandboxes are named `<prefix>-<ns><pod>`.
    pub fn start(cluster: &Cluster, prefix: &str) -> Self {
        for ns in NAMESPACES {
            cluster.apply(&namespace(ns, &[("ns", ns)]));
        }
        let ports = [
            ("serve-80-tcp", 80, "TCP"),
            ("serve-80-udp", 80, "UDP"),
            ("serve-81-tcp", 81, "TCP"),
            ("serve-81-udp", 81, "UDP"),
        ];
        let mut pods = Vec::new();
        for (n, ns) in NAMESPACES.iter().enumerate() {
            for (p, name) in PODS.iter().enumerate() {
                let labels = [("pod", *name)];
                cluster.apply(&cluster.pod_yaml(node_of(n, p), ns, name, &labels, &ports));
                let pod = Pod::named(&format!("{prefix}-{ns}{name}"), ns, name);
                cluster.attach(node_of(n, p), &pod);
                pods.push(pod);
            }
        }
        let peers: Vec<Peer> = pods.iter().map(Peer::pod).collect();
        let servers = reach::serve(&peers, &[80, 81]);
        World {
            pods,
            _servers: servers,
        }
    }

    /// Every pod as a probe peer, named `ns/pod`.
    pub fn peers(&self) -> Vec<Peer<'_>> {
        self.pods.iter().map(Peer::pod).collect()
    }
}
