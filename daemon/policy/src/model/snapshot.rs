//! The snapshot: every namespace, pod and policy the evaluator and the compiler look at.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{ClusterPolicy, Namespace, Pod, PodKey, Policy, PolicyKey};
use crate::selector::Labels;

/// Everything the evaluator and the compiler need, already validated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub namespaces: BTreeMap<String, Namespace>,
    pub pods: BTreeMap<PodKey, Pod>,
    pub policies: BTreeMap<PolicyKey, Policy>,
    /// ClusterNetworkPolicies by name: the Admin and Baseline tiers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cluster_policies: BTreeMap<String, ClusterPolicy>,
}

impl Snapshot {
    /// An address that node `node` assigned (to a pod of that node) belongs to that pod: the
    /// claim of a pod of another node on it is stale (its delete is late) and is dropped, so
    /// that the node judges the address by its own pod alone, as its dispatch maps do.
    pub fn drop_stale_claims_on(&mut self, node: &str) {
        let local: BTreeSet<IpAddr> = self
            .pods
            .values()
            .filter(|p| p.node.as_deref() == Some(node) && p.is_policed())
            .flat_map(|p| p.ips.iter().copied())
            .collect();
        if local.is_empty() {
            return;
        }
        for pod in self.pods.values_mut() {
            // Touching a pod copies it (`Pod` copies on write): only those that lose one.
            if pod.node.as_deref() != Some(node) && pod.ips.iter().any(|ip| local.contains(ip)) {
                pod.ips.retain(|ip| !local.contains(ip));
            }
        }
    }

    /// Labels of namespace `name`; a namespace without an object still has its name label.
    pub fn namespace_labels(&self, name: &str) -> Labels {
        match self.namespaces.get(name) {
            Some(ns) => ns.labels.clone(),
            None => Namespace::new(name, Labels::new()).labels,
        }
    }

    /// Adds or replaces a namespace.
    pub fn upsert_namespace(&mut self, ns: Namespace) {
        self.namespaces.insert(ns.name.clone(), ns);
    }

    /// Adds or replaces a pod.
    pub fn upsert_pod(&mut self, pod: Pod) {
        self.pods.insert(pod.key.clone(), pod);
    }

    /// Adds or replaces a policy.
    pub fn upsert_policy(&mut self, policy: Policy) {
        self.policies.insert(policy.key.clone(), policy);
    }

    /// Adds `other`'s objects, replacing those of the same name: two manifest files read as
    /// one directory.
    pub fn merge(&mut self, other: Snapshot) {
        self.namespaces.extend(other.namespaces);
        self.pods.extend(other.pods);
        self.policies.extend(other.policies);
        self.cluster_policies.extend(other.cluster_policies);
    }

    /// The policed pod that owns `ip`, if any (the first by key if stale data gives two).
    pub fn pod_by_ip(&self, ip: &IpAddr) -> Option<&Pod> {
        self.pods
            .values()
            .find(|p| p.is_policed() && p.ips.contains(ip))
    }

    /// Namespaces that have pods or objects, sorted. The pods are keyed by namespace first,
    /// so this visits one pod per namespace, not every pod: the compiler asks for each new
    /// namespaceSelector peer, and a large cluster has a hundred times more pods than
    /// namespaces.
    pub fn namespace_names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.namespaces.keys().cloned().collect();
        let mut next = self.pods.keys().next();
        while let Some(key) = next {
            names.insert(key.namespace.to_string());
            // The least key of a later namespace: `ns` followed by NUL sorts after every
            // `ns/name` and before any other namespace that starts with `ns`.
            let after = PodKey::new(format!("{}\0", key.namespace), "");
            next = self.pods.range(after..).next().map(|(k, _)| k);
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_are_those_of_every_pod_and_namespace_object() {
        let mut snap = Snapshot::default();
        for (ns, name) in [
            ("a", "x"),
            ("a", "y"),
            ("a-b", "x"),
            ("a\u{1}", "x"),
            ("ab", "x"),
            ("ab", "\u{0}"),
            ("b", ""),
        ] {
            snap.upsert_pod(Pod::new(PodKey::new(ns, name), Labels::new(), Vec::new()));
        }
        snap.upsert_namespace(Namespace::new("z", Labels::new()));
        let every: BTreeSet<String> = snap
            .namespaces
            .keys()
            .cloned()
            .chain(snap.pods.keys().map(|k| k.namespace.to_string()))
            .collect();
        assert_eq!(snap.namespace_names(), every);
        assert_eq!(every.len(), 6);
    }
}
