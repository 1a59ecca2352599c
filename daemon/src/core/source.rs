//! What the cluster's source reports (whole lists, changed objects, a pod fetched ahead of
//! its watch event) and the copy of the cluster the store keeps.

use std::time::Instant;

use podwall_policy::{Event, Pod, PodKey, Snapshot};

use super::transition::{describe, Scope};
use super::{Core, CoreError};
use crate::store::Store;

impl Core {
    /// Whether the source has told us about pod `key` (kube mode asks the API server directly
    /// on attach when it has not).
    pub fn knows_pod(&self, key: &PodKey) -> bool {
        self.cluster.pods.contains_key(key)
    }

    /// A pod fetched directly, ahead of the watch: the attach that follows uses its labels.
    pub fn learn_pod(&mut self, pod: Pod) {
        if !self.cluster.pods.contains_key(&pod.key) {
            self.claims.add(&pod);
            self.cluster.pods.insert(pod.key.clone(), pod);
        }
    }

    /// The cluster state to keep in the store, and the store: a copy, so that the caller
    /// writes it after releasing the core's lock (its pods are shared, not copied).
    pub fn cluster_to_store(&self) -> (Store, Snapshot) {
        (self.store.clone(), self.cluster.clone())
    }

    /// The source reported changed objects (the API watchers' events): only they are
    /// compared and compiled.
    pub fn apply_changes(&mut self, changes: Vec<Event>) -> Result<(), CoreError> {
        let started = Instant::now();
        let attachments = self.attachments.clone();
        let what = describe(&changes);
        let result = self.transition(attachments, None, Scope::Changes(changes), what);
        self.metrics.observe_sync(started.elapsed(), result.is_ok());
        result
    }

    /// Whether `cluster` is the cluster state the core holds.
    pub fn holds_cluster(&self, cluster: &Snapshot) -> bool {
        self.cluster == *cluster
    }

    /// The source reported a new state of the cluster.
    pub fn set_cluster(&mut self, cluster: Snapshot) -> Result<(), CoreError> {
        let started = Instant::now();
        let attachments = self.attachments.clone();
        // The transition names the objects that differ.
        let result = self.transition(attachments, Some(cluster), Scope::Everything, String::new());
        self.metrics.observe_sync(started.elapsed(), result.is_ok());
        result
    }
}
