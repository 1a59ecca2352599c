//! Which cluster objects changed since the stored state was last written, so that writing
//! it costs the objects that changed, and happens outside the core's lock: the core hands
//! out `ClusterChanges` (clones of the changed objects), the caller writes them.

use std::collections::BTreeSet;

use podwall_policy::{Event, PodKey, PolicyKey, Snapshot};

use crate::store::{ClusterChanges, ObjectRef};

/// Objects changed since the last write; `all` when the whole state must be written (the
/// first write, a whole new snapshot from the source, a write that failed).
#[derive(Debug)]
pub(super) struct Dirty {
    all: bool,
    namespaces: BTreeSet<String>,
    pods: BTreeSet<PodKey>,
    policies: BTreeSet<PolicyKey>,
}

impl Default for Dirty {
    /// Nothing is known to be stored yet.
    fn default() -> Self {
        Self {
            all: true,
            namespaces: BTreeSet::new(),
            pods: BTreeSet::new(),
            policies: BTreeSet::new(),
        }
    }
}

impl Dirty {
    /// Everything is stored as it is.
    pub(super) fn clean() -> Self {
        Self {
            all: false,
            ..Dirty::default()
        }
    }

    pub(super) fn mark_pod(&mut self, key: &PodKey) {
        if !self.all {
            self.pods.insert(key.clone());
        }
    }

    /// The object `event` adds, changes or removes. Nothing to keep while the next write is
    /// whole anyway (also: a source whose state is never stored never makes a write).
    pub(super) fn mark(&mut self, event: &Event) {
        if self.all {
            return;
        }
        match event {
            Event::Pod(pod) => self.pods.insert(pod.key.clone()),
            Event::PodDeleted(key) => self.pods.insert(key.clone()),
            Event::Namespace(ns) => self.namespaces.insert(ns.name.clone()),
            Event::NamespaceDeleted(name) => self.namespaces.insert(name.clone()),
            Event::Policy(policy) => self.policies.insert(policy.key.clone()),
            Event::PolicyDeleted(key) => self.policies.insert(key.clone()),
        };
    }

    pub(super) fn mark_all(&mut self) {
        *self = Dirty::default();
    }

    /// The changes to write for `cluster`, and a clean slate; `None` when nothing changed.
    pub(super) fn take(&mut self, cluster: &Snapshot) -> Option<ClusterChanges> {
        let dirty = std::mem::replace(self, Dirty::clean());
        if dirty.all {
            return Some(ClusterChanges {
                whole: true,
                namespaces: cluster.namespaces.values().cloned().collect(),
                pods: cluster.pods.values().cloned().collect(),
                policies: cluster.policies.values().cloned().collect(),
                removed: Vec::new(),
            });
        }
        if dirty.namespaces.is_empty() && dirty.pods.is_empty() && dirty.policies.is_empty() {
            return None;
        }
        let mut changes = ClusterChanges::default();
        for name in dirty.namespaces {
            match cluster.namespaces.get(&name) {
                Some(ns) => changes.namespaces.push(ns.clone()),
                None => changes.removed.push(ObjectRef::Namespace(name)),
            }
        }
        for key in dirty.pods {
            match cluster.pods.get(&key) {
                Some(pod) => changes.pods.push(pod.clone()),
                None => changes.removed.push(ObjectRef::Pod(key)),
            }
        }
        for key in dirty.policies {
            match cluster.policies.get(&key) {
                Some(policy) => changes.policies.push(policy.clone()),
                None => changes.removed.push(ObjectRef::Policy(key)),
            }
        }
        Some(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podwall_policy::manifests::load;

    const WORLD: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x}
spec: {nodeName: n1, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.0.0.2}]}
";

    #[test]
    fn the_first_write_is_whole_then_only_what_changed() {
        let cluster = load([("w.yaml", WORLD)]).snapshot;
        let mut dirty = Dirty::default();
        let first = dirty.take(&cluster).unwrap();
        assert!(first.whole && first.pods.len() == 1 && first.namespaces.len() == 1);
        assert_eq!(dirty.take(&cluster), None, "nothing changed since");
        let key = PodKey {
            namespace: "x".into(),
            name: "a".into(),
        };
        let gone = PodKey {
            namespace: "x".into(),
            name: "b".into(),
        };
        dirty.mark(&Event::Pod(cluster.pods[&key].clone()));
        dirty.mark(&Event::PodDeleted(gone.clone()));
        let changes = dirty.take(&cluster).unwrap();
        assert!(!changes.whole);
        assert_eq!(changes.pods, vec![cluster.pods[&key].clone()]);
        assert_eq!(changes.removed, vec![ObjectRef::Pod(gone)]);
        assert!(changes.namespaces.is_empty() && changes.policies.is_empty());
    }
}
