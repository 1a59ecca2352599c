//! The worlds of the peer benchmark, as Kubernetes objects: one YAML stream that the test
//! API server serves to `podwalld` and that `podwall_policy::manifests` turns into the
//! snapshot the kube-router-shaped generator reads, so both enforcers see the same world.
//!
//! A world has `local` pods on the measured node, in `loc*` namespaces, split into groups
//! (label `grp`); policy `j` lives in namespace `loc{j % namespaces}` and selects group
//! `g{j % groups}`, so every local pod is selected by exactly `per_pod` policies. Local
//! namespace `loc{n}` is labelled `env=prod` and `shard=s{n % 5}`, which no NetworkPolicy
//! reads (the cluster policies of `guardrails` select by them). Remote
//! pods (on 50 other nodes, addresses in 10.64.0.0/10) sit 100 to a namespace (`rem*`) with
//! an `app` label and a `team` label on their namespace, sized so that every selector of a
//! policy matches `peers` remote pods. Policies come in four shapes, `j % 4`:
//! 0. ingress from pods `app=a*` of any namespace, TCP 80;
//! 1. ingress from every pod of namespaces `team=t*`, on the named port `http`;
//! 2. ingress from an ipBlock with an except, TCP 443;
//! 3. egress to pods `app=a*` of any namespace, TCP 5432 and a port range.
//!
//! Every world also has the probe fixture the change benchmark flips: local pod `target`
//! (group `g0` of `loc0`, so behind `per_pod` policies too) with two policies that admit a
//! `role=client` pod or a namespace labelled `access=granted` on TCP 80, and a remote pod
//! `probe/prober` at [`PROBER_ADDR`] that starts out denied.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use podwall_policy::{manifests, Snapshot};
use podwall_tests::manifests::{documents, namespace, PodManifest};

/// The remote prober's address (RFC 5737), behind the measured node.
pub const PROBER_ADDR: &str = "198.51.100.7";
/// The port the target serves and the changes open and close.
pub const TARGET_PORT: u16 = 80;
/// The target pod, a world pod of namespace `loc0`.
pub const TARGET: (&str, &str) = ("loc0", "target");
/// The namespace pods start into in the isolation benchmark: its policy denies all ingress.
pub const ISOLATED_NAMESPACE: &str = "iso";
/// Remote pods per namespace.
const PER_NAMESPACE: usize = 100;
/// Other nodes the remote pods are spread over.
const REMOTE_NODES: usize = 50;
/// Values of the local namespaces' `shard` label.
pub const SHARDS: usize = 5;

/// A world's size: the S, M and L, or a tiny one for the smoke run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub name: &'static str,
    /// Pods on the measured node.
    pub local: usize,
    pub policies: usize,
    /// Policies that select each local pod.
    pub per_pod: usize,
    /// Remote pods each peer selector matches.
    pub peers: usize,
}

pub const S: Size = Size {
    name: "S",
    local: 30,
    policies: 20,
    per_pod: 5,
    peers: 200,
};
pub const M: Size = Size {
    name: "M",
    local: 110,
    policies: 200,
    per_pod: 10,
    peers: 200,
};
pub const L: Size = Size {
    name: "L",
    local: 110,
    policies: 1_000,
    per_pod: 20,
    peers: 200,
};
pub const TINY: Size = Size {
    name: "tiny",
    local: 4,
    policies: 4,
    per_pod: 2,
    peers: 10,
};

/// One world: a size and the number of remote pods in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub size: Size,
    pub remote: usize,
}

impl Spec {
    pub fn new(size: Size, remote: usize) -> Self {
        Spec { size, remote }
    }

    /// `L/10k`, as tables name it.
    pub fn label(&self) -> String {
        let remote = if self.remote >= 1000 && self.remote % 1000 == 0 {
            format!("{}k", self.remote / 1000)
        } else {
            self.remote.to_string()
        };
        format!("{}/{remote}", self.size.name)
    }

    /// The inverse of [`label`](Self::label): `S/1k`, `M/10000`, `tiny/50`.
    pub fn parse(text: &str) -> Option<Spec> {
        let (size, remote) = text.split_once('/')?;
        let size = [S, M, L, TINY]
            .into_iter()
            .find(|s| s.name.eq_ignore_ascii_case(size))?;
        let remote = match remote.strip_suffix(['k', 'K']) {
            Some(thousands) => thousands.parse::<usize>().ok()? * 1000,
            None => remote.parse().ok()?,
        };
        Some(Spec::new(size, remote))
    }

    /// Policy groups of local pods (label `grp=g<i>`).
    pub fn groups(&self) -> usize {
        (self.size.policies / self.size.per_pod).max(1)
    }

    /// Local namespaces: a divisor of the group count, so a group stays in one namespace.
    fn local_namespaces(&self) -> usize {
        let groups = self.groups();
        [10, 5, 2, 1]
            .into_iter()
            .find(|n| groups % n == 0)
            .unwrap_or(1)
    }

    fn apps(&self) -> usize {
        (self.remote / self.size.peers).max(1)
    }

    fn remote_namespaces(&self) -> usize {
        self.remote.div_ceil(PER_NAMESPACE).max(1)
    }

    fn teams(&self) -> usize {
        (self.remote_namespaces() * PER_NAMESPACE / self.size.peers).max(1)
    }

    /// The `(namespace, name, labels)` of local pod `i`; pod 0 is the target.
    pub fn local_pod(&self, i: usize) -> (String, String, Vec<(String, String)>) {
        let mut labels = vec![
            ("grp".to_string(), format!("g{}", i % self.groups())),
            ("tier".to_string(), "local".to_string()),
        ];
        if i == 0 {
            labels.push(("probe".into(), "target".into()));
            return (TARGET.0.into(), TARGET.1.into(), labels);
        }
        let ns = format!("loc{}", i % self.local_namespaces());
        (ns, format!("pod{i}"), labels)
    }

    /// The labels of a new pod joining local group `group` (what the pod-start benchmark
    /// starts: another replica of an existing workload) and its namespace.
    pub fn replica(&self, group: usize) -> (String, Vec<(String, String)>) {
        let group = group % self.groups();
        let ns = format!("loc{}", group % self.local_namespaces());
        let labels = vec![
            ("grp".to_string(), format!("g{group}")),
            ("tier".to_string(), "local".to_string()),
        ];
        (ns, labels)
    }

    /// Every object of the world except the local pods, whose Pod objects depend on the
    /// node they run on ([`local_pod_yaml`]).
    pub fn cluster_docs(&self) -> Vec<String> {
        let mut docs = Vec::new();
        for n in 0..self.local_namespaces() {
            let shard = format!("s{}", n % SHARDS);
            docs.push(namespace(
                &format!("loc{n}"),
                &[("env", "prod"), ("shard", &shard)],
            ));
        }
        for n in 0..self.remote_namespaces() {
            let team = format!("t{}", n % self.teams());
            docs.push(namespace(&format!("rem{n}"), &[("team", &team)]));
        }
        for r in 0..self.remote {
            let app = format!("a{}", r % self.apps());
            docs.push(
                PodManifest::new(&format!("rem{}", r / PER_NAMESPACE), &format!("r{r}"))
                    .labels(&[("app", &app)])
                    .remote(&format!("pwt-remote-{}", r % REMOTE_NODES), &[remote_ip(r)])
                    .yaml(),
            );
        }
        for j in 0..self.size.policies {
            docs.push(self.policy(j));
        }
        docs.push(namespace(ISOLATED_NAMESPACE, &[]));
        docs.push(format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: deny-all, namespace: {ISOLATED_NAMESPACE}}}\n\
             spec:\n  podSelector: {{}}\n  policyTypes: [Ingress]\n"
        ));
        docs.push(namespace("probe", &[]));
        docs.push(prober_yaml("stranger"));
        docs.push(target_policy(
            "probe-by-label",
            "[{namespaceSelector: {}, podSelector: {matchLabels: {role: client}}}]",
        ));
        docs.push(target_policy(
            "probe-by-namespace",
            "[{namespaceSelector: {matchLabels: {access: granted}}}]",
        ));
        docs
    }

    fn policy(&self, j: usize) -> String {
        let ns = format!("loc{}", j % self.local_namespaces());
        let group = format!("g{}", j % self.groups());
        let app = format!("a{}", j % self.apps());
        let spec = match j % 4 {
            0 => format!(
                "  policyTypes: [Ingress]\n  ingress:\n  - from: [{{namespaceSelector: {{}}, podSelector: {{matchLabels: {{app: {app}}}}}}}]\n    ports: [{{protocol: TCP, port: 80}}]\n"
            ),
            1 => format!(
                "  policyTypes: [Ingress]\n  ingress:\n  - from: [{{namespaceSelector: {{matchLabels: {{team: t{}}}}}}}]\n    ports: [{{protocol: TCP, port: http}}]\n",
                j % self.teams()
            ),
            2 => format!(
                "  policyTypes: [Ingress]\n  ingress:\n  - from: [{{ipBlock: {{cidr: 10.96.0.0/12, except: [10.96.{}.0/24]}}}}]\n    ports: [{{protocol: TCP, port: 443}}]\n",
                j % 256
            ),
            _ => format!(
                "  policyTypes: [Egress]\n  egress:\n  - to: [{{namespaceSelector: {{}}, podSelector: {{matchLabels: {{app: {app}}}}}}}]\n    ports: [{{protocol: TCP, port: 5432}}, {{protocol: TCP, port: 6000, endPort: 6100}}]\n"
            ),
        };
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p{j}, namespace: {ns}}}\nspec:\n  podSelector: {{matchLabels: {{grp: {group}}}}}\n{spec}"
        )
    }

    /// The snapshot of the world with the local pods on `node` at `local_ips` (pod `i` at
    /// `local_ips[i]`), as a daemon of that node would hold it.
    pub fn snapshot(&self, node: &str, local_ips: &[IpAddr]) -> Snapshot {
        self.snapshot_with(node, local_ips, &[])
    }

    /// [`snapshot`](Self::snapshot) with `extra` objects besides the world's.
    pub fn snapshot_with(&self, node: &str, local_ips: &[IpAddr], extra: &[String]) -> Snapshot {
        let mut docs = self.cluster_docs();
        docs.extend_from_slice(extra);
        for (i, ip) in local_ips.iter().enumerate() {
            docs.push(self.local_pod_manifest(i).remote(node, &[*ip]).yaml());
        }
        load(&documents(&docs))
    }

    /// Pod `i`'s object on `node` before it has an address (what kubelet is given).
    pub fn local_pod_yaml(&self, i: usize, node: &str) -> String {
        self.local_pod_manifest(i).remote(node, &[]).yaml()
    }

    fn local_pod_manifest(&self, i: usize) -> PodManifest {
        let (ns, name, labels) = self.local_pod(i);
        let labels: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        PodManifest::new(&ns, &name)
            .labels(&labels)
            .ports(&[("http", 8080, "TCP")])
    }
}

/// Remote pod `r`'s address: 10.64.0.0/10, which no node of the rig uses and nothing is
/// ever sent to (room for 4M pods; the footprint benchmark uses 100k).
pub fn remote_ip(r: usize) -> IpAddr {
    let n = u32::from(Ipv4Addr::new(10, 64, 0, 1)) + r as u32;
    IpAddr::V4(Ipv4Addr::from(n))
}

/// The prober's Pod object with label `role`.
pub fn prober_yaml(role: &str) -> String {
    let ip: IpAddr = PROBER_ADDR.parse().expect("a valid address");
    PodManifest::new("probe", "prober")
        .labels(&[("role", role)])
        .remote("pwt-remote-0", &[ip])
        .yaml()
}

/// The prober's namespace, with or without `access=granted`.
pub fn probe_namespace_yaml(granted: bool) -> String {
    if granted {
        namespace("probe", &[("access", "granted")])
    } else {
        namespace("probe", &[])
    }
}

/// A policy that admits the prober on the target's port whatever its labels.
pub fn allow_prober_policy() -> String {
    target_policy(
        "probe-allow",
        &format!("[{{ipBlock: {{cidr: {PROBER_ADDR}/32}}}}]"),
    )
}

fn target_policy(name: &str, from: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {}}}\n\
         spec:\n  podSelector: {{matchLabels: {{probe: target}}}}\n  policyTypes: [Ingress]\n  ingress:\n  - from: {from}\n    ports: [{{protocol: TCP, port: {TARGET_PORT}}}]\n",
        TARGET.0
    );
    out
}

/// Parse a YAML stream of the world's objects; panics on an error (the generator's bug).
pub fn load(yaml: &str) -> Snapshot {
    let loaded = manifests::load([("world.yaml", yaml)]);
    assert!(
        loaded.errors.is_empty(),
        "the generated world does not load: {:?}",
        loaded.errors
    );
    loaded.snapshot
}

#[cfg(test)]
mod tests {
    use super::*;
    use podwall_policy::Direction;

    fn selected(snap: &Snapshot, ns: &str, labels: &podwall_policy::selector::Labels) -> usize {
        snap.policies
            .values()
            .filter(|p| p.key.namespace == ns && p.pod_selector.matches(labels))
            .count()
    }

    #[test]
    fn every_local_pod_is_selected_by_per_pod_policies() {
        for size in [S, M, L] {
            let spec = Spec::new(size, 1_000);
            let ips: Vec<IpAddr> = (0..size.local)
                .map(|i| format!("10.200.1.{}", i + 2).parse().unwrap())
                .collect();
            let snap = spec.snapshot("n1", &ips);
            assert_eq!(
                snap.policies.len(),
                size.policies + 3,
                "{}: the world's policies, the two probe policies and iso's deny-all",
                size.name
            );
            for i in 1..size.local {
                let (ns, name, _) = spec.local_pod(i);
                let pod = &snap.pods[&podwall_policy::PodKey::new(ns.clone(), name)];
                assert_eq!(pod.node.as_deref(), Some("n1"));
                assert_eq!(selected(&snap, &ns, &pod.labels), size.per_pod, "pod {i}");
            }
            let target = &snap.pods[&podwall_policy::PodKey::new("loc0", "target")];
            assert_eq!(selected(&snap, "loc0", &target.labels), size.per_pod + 2);
        }
    }

    #[test]
    fn every_peer_selector_matches_peers_remote_pods() {
        for remote in [1_000, 10_000] {
            let spec = Spec::new(L, remote);
            let snap = spec.snapshot("n1", &[]);
            assert_eq!(snap.pods.len(), remote + 1, "remote pods and the prober");
            for j in [0, 1, 3, 4, 5, 7] {
                let policy = &snap.policies[&podwall_policy::PolicyKey::new(
                    format!("loc{}", j % spec.local_namespaces()),
                    format!("p{j}"),
                )];
                let direction = if j % 4 == 3 {
                    Direction::Egress
                } else {
                    Direction::Ingress
                };
                let rule = &policy.rules(direction)[0];
                let podwall_policy::model::Peers::Only(peers) = &rule.peers else {
                    panic!("policy {j} has explicit peers");
                };
                let podwall_policy::model::Peer::Pods { namespaces, pods } = &peers[0] else {
                    panic!("policy {j} selects pods");
                };
                let matched = snap
                    .pods
                    .values()
                    .filter(|p| {
                        let in_scope = match namespaces {
                            podwall_policy::model::NamespaceScope::Named(n) => {
                                *n == p.key.namespace
                            }
                            podwall_policy::model::NamespaceScope::Matching(sel) => {
                                sel.matches(&snap.namespace_labels(&p.key.namespace))
                            }
                        };
                        in_scope && pods.matches(&p.labels)
                    })
                    .count();
                assert_eq!(matched, 200, "policy {j} at {remote} remote pods");
            }
        }
    }

    #[test]
    fn remote_addresses_are_distinct_and_outside_the_node_subnets() {
        let a = remote_ip(0);
        let b = remote_ip(99_999);
        assert_eq!(a, "10.64.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(b, "10.65.134.160".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn labels_name_the_world() {
        assert_eq!(Spec::new(L, 10_000).label(), "L/10k");
        assert_eq!(Spec::new(TINY, 50).label(), "tiny/50");
        assert_eq!(Spec::parse("l/10k"), Some(Spec::new(L, 10_000)));
        assert_eq!(Spec::parse("S/1000"), Some(Spec::new(S, 1_000)));
        assert_eq!(Spec::parse("XL/1k"), None);
        assert_eq!(Spec::parse("M"), None);
    }
}
