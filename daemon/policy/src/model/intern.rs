//! One copy of what many pods share: namespace and node names and label sets. The replicas
//! of a workload carry the same labels, and a namespace or a node holds many pods, so a
//! large cluster has far fewer of each than it has pods.

use std::collections::HashSet;

use super::{Name, Pod, Snapshot};
use crate::selector::Labels;

/// Entries below this many are never swept: a sweep would cost more than it frees.
const SWEEP_FLOOR: usize = 1024;

/// The shared copies handed out so far. Entries that no pod holds any more are swept when
/// the table has doubled since the last sweep, so it stays within twice what is in use.
#[derive(Debug, Default)]
pub struct Interner {
    names: HashSet<Name>,
    labels: HashSet<Labels>,
    /// Entries (names and label sets) after the last sweep.
    kept: usize,
}

impl Interner {
    pub fn new() -> Self {
        Interner::default()
    }

    /// The shared copy of `name`.
    pub fn name(&mut self, name: &Name) -> Name {
        if let Some(shared) = self.names.get(name.as_str()) {
            return shared.clone();
        }
        self.sweep_if_grown();
        self.names.insert(name.clone());
        name.clone()
    }

    /// The shared copy of `labels`.
    pub fn labels(&mut self, labels: &Labels) -> Labels {
        if let Some(shared) = self.labels.get(labels) {
            return shared.clone();
        }
        self.sweep_if_grown();
        self.labels.insert(labels.clone());
        labels.clone()
    }

    /// `pod` holding the shared copies of its namespace, node and labels.
    pub fn pod(&mut self, mut pod: Pod) -> Pod {
        pod.key.namespace = self.name(&pod.key.namespace);
        pod.node = pod.node.as_ref().map(|node| self.name(node));
        pod.labels = self.labels(&pod.labels);
        pod
    }

    /// `snapshot` with every pod holding shared copies (a snapshot read back from a store).
    pub fn snapshot(&mut self, mut snapshot: Snapshot) -> Snapshot {
        // The map's keys are rebuilt from the pods' keys, so they share the names too.
        snapshot.pods = std::mem::take(&mut snapshot.pods)
            .into_values()
            .map(|pod| {
                let pod = self.pod(pod);
                (pod.key.clone(), pod)
            })
            .collect();
        snapshot
    }

    /// How many entries the table holds.
    pub fn len(&self) -> usize {
        self.names.len() + self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn sweep_if_grown(&mut self) {
        if self.len() < SWEEP_FLOOR.max(2 * self.kept) {
            return;
        }
        self.names.retain(|name| !name.is_unique());
        self.labels.retain(|labels| !labels.is_unique());
        self.kept = self.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PodKey;

    fn pod(ns: &str, name: &str, app: &str) -> Pod {
        let mut pod = Pod::new(
            PodKey::new(ns, name),
            Labels::from([("app", app)]),
            vec!["10.0.0.1".parse().unwrap()],
        );
        pod.node = Some("n1".into());
        pod
    }

    #[test]
    fn pods_with_equal_labels_share_one_copy_of_them_and_of_their_names() {
        let mut interner = Interner::new();
        let a = interner.pod(pod("x", "a", "web"));
        let b = interner.pod(pod("x", "b", "web"));
        let c = interner.pod(pod("x", "c", "db"));
        assert!(std::ptr::eq(&*a.labels, &*b.labels));
        assert!(!std::ptr::eq(&*a.labels, &*c.labels));
        assert!(std::ptr::eq(
            a.key.namespace.as_str(),
            b.key.namespace.as_str()
        ));
        assert!(std::ptr::eq(
            a.node.as_deref().unwrap(),
            c.node.as_deref().unwrap()
        ));
        assert_eq!(a, pod("x", "a", "web"), "interning changes no value");
    }

    #[test]
    fn entries_no_pod_holds_are_swept_once_the_table_has_doubled() {
        let mut interner = Interner::new();
        for i in 0..SWEEP_FLOOR {
            drop(interner.pod(pod("x", "a", &format!("app{i}"))));
        }
        let kept = interner.pod(pod("x", "a", "kept"));
        assert!(
            interner.len() < 10,
            "the dropped pods' label sets are swept: {} entries",
            interner.len()
        );
        let again = interner.pod(pod("y", "b", "kept"));
        assert!(std::ptr::eq(&*kept.labels, &*again.labels));
    }

    #[test]
    fn a_snapshot_keys_its_pods_by_the_names_they_hold() {
        let mut snapshot = Snapshot::default();
        snapshot.upsert_pod(pod("x", "a", "web"));
        snapshot.upsert_pod(pod("x", "b", "web"));
        let snapshot = Interner::new().snapshot(snapshot);
        let (key, pod) = snapshot.pods.iter().next().unwrap();
        assert!(std::ptr::eq(key.name.as_str(), pod.key.name.as_str()));
        let labels: Vec<_> = snapshot.pods.values().map(|p| &*p.labels).collect();
        assert!(std::ptr::eq(labels[0], labels[1]));
    }
}
