//! The sled store behind typed methods: the node's attachments, so that a restarted daemon
//! knows its pods before any API server answers, and the last-known cluster state, one
//! record per object, so that writing it costs the objects that changed.
//!
//! sled allows one process per store; only the daemon opens it. Every write is flushed before
//! it returns: the plugin is told "attached" only once the attachment survives a crash.

use std::collections::BTreeMap;
use std::path::Path;

use podwall::wire::{Attachment, AttachmentId};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open state store {path}")]
    Open {
        path: String,
        #[source]
        source: sled::Error,
    },
    #[error("state store i/o failed")]
    Io(#[from] sled::Error),
    #[error("cannot encode a record for the state store")]
    Encode(#[source] serde_json::Error),
    #[error("state store holds an unreadable cluster snapshot")]
    CorruptCluster(#[source] serde_json::Error),
    #[error("state store holds an unreadable attachment under key {key:?}")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Tree names are part of the on-disk format.
const ATTACHMENTS: &str = "attachments/v1";
/// The cluster as one snapshot record (read, for an upgrade, and then removed).
const CLUSTER: &str = "cluster/v1";
const SNAPSHOT_KEY: &[u8] = b"snapshot";
/// The cluster, one record per object (see `object_key`).
const CLUSTER_OBJECTS: &str = "cluster/v2";
/// sled's page cache. The store is read once at start and written to: it needs no cache
/// worth the name, and sled's default (1 GiB) keeps the last cluster snapshot written (one
/// value of about 120 bytes per cluster pod) in memory for good.
const CACHE_BYTES: u64 = 1 << 20;

/// A handle on the store; clones share it.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    attachments: sled::Tree,
    cluster: sled::Tree,
    objects: sled::Tree,
}

/// Changes to the stored cluster state: objects written and objects removed, or, when
/// `whole`, the new state of everything (what is not written is removed).
#[derive(Debug, Default, PartialEq)]
pub struct ClusterChanges {
    pub whole: bool,
    pub namespaces: Vec<podwall_policy::Namespace>,
    pub pods: Vec<podwall_policy::Pod>,
    pub policies: Vec<podwall_policy::Policy>,
    pub removed: Vec<ObjectRef>,
}

/// A cluster object by kind and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ObjectRef {
    Namespace(String),
    Pod(podwall_policy::PodKey),
    Policy(podwall_policy::PolicyKey),
}

/// `kind NUL namespace NUL name`: NUL appears in no Kubernetes name.
fn object_key(object: &ObjectRef) -> Vec<u8> {
    let (kind, namespace, name) = match object {
        ObjectRef::Namespace(name) => ("ns", "", name.as_str()),
        ObjectRef::Pod(key) => ("pod", key.namespace.as_str(), key.name.as_str()),
        ObjectRef::Policy(key) => ("policy", key.namespace.as_str(), key.name.as_str()),
    };
    [kind, namespace, name].join("\0").into_bytes()
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|source| StoreError::Open {
                path: dir.display().to_string(),
                source,
            })?;
        let attachments = db.open_tree(ATTACHMENTS)?;
        let cluster = db.open_tree(CLUSTER)?;
        let objects = db.open_tree(CLUSTER_OBJECTS)?;
        Ok(Self {
            db,
            attachments,
            cluster,
            objects,
        })
    }

    /// Every recorded attachment that can be read, and those that cannot. An unreadable
    /// record is removed (it can never become readable) and returned, so that the daemon
    /// starts and rebuilds or reports it instead of failing every ADD on the node.
    pub fn attachments(
        &self,
    ) -> Result<(BTreeMap<AttachmentId, Attachment>, Vec<Unreadable>), StoreError> {
        let mut all = BTreeMap::new();
        let mut unreadable = Vec::new();
        for entry in self.attachments.iter() {
            let (key, value) = entry?;
            match serde_json::from_slice::<Attachment>(&value) {
                Ok(attachment) => {
                    all.insert(attachment.id.clone(), attachment);
                }
                Err(source) => {
                    self.attachments.remove(&key)?;
                    unreadable.push(Unreadable {
                        id: id_of(&key),
                        error: StoreError::Corrupt {
                            key: String::from_utf8_lossy(&key).into_owned(),
                            source,
                        },
                    });
                }
            }
        }
        if !unreadable.is_empty() {
            self.db.flush()?;
        }
        Ok((all, unreadable))
    }

    pub fn put_attachment(&self, attachment: &Attachment) -> Result<(), StoreError> {
        let value = serde_json::to_vec(attachment).map_err(StoreError::Encode)?;
        self.attachments.insert(key(&attachment.id), value)?;
        self.db.flush()?;
        Ok(())
    }

    /// Returns whether there was such an attachment.
    pub fn remove_attachment(&self, id: &AttachmentId) -> Result<bool, StoreError> {
        let existed = self.attachments.remove(key(id))?.is_some();
        self.db.flush()?;
        Ok(existed)
    }
}

/// The snapshot as lists: its maps are keyed by structs, which JSON object keys cannot be.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredCluster {
    namespaces: Vec<podwall_policy::Namespace>,
    pods: Vec<podwall_policy::Pod>,
    policies: Vec<podwall_policy::Policy>,
}

impl Store {
    /// The last-known state of the cluster (API objects, converted), so that a restart
    /// enforces it while the API server is unreachable.
    pub fn cluster(&self) -> Result<Option<podwall_policy::Snapshot>, StoreError> {
        if self.objects.is_empty() {
            return self.cluster_v1();
        }
        let mut snapshot = podwall_policy::Snapshot::default();
        for entry in self.objects.iter() {
            let (key, value) = entry?;
            let corrupt = StoreError::CorruptCluster;
            if key.starts_with(b"ns\0") {
                snapshot.upsert_namespace(serde_json::from_slice(&value).map_err(corrupt)?);
            } else if key.starts_with(b"pod\0") {
                snapshot.upsert_pod(serde_json::from_slice(&value).map_err(corrupt)?);
            } else if key.starts_with(b"policy\0") {
                snapshot.upsert_policy(serde_json::from_slice(&value).map_err(corrupt)?);
            }
        }
        Ok(Some(snapshot))
    }

    /// Whether the cluster state is stored one record per object (not by an earlier
    /// version, not empty).
    pub fn holds_cluster_by_object(&self) -> bool {
        !self.objects.is_empty()
    }

    /// The state an earlier version stored as one record.
    fn cluster_v1(&self) -> Result<Option<podwall_policy::Snapshot>, StoreError> {
        let Some(bytes) = self.cluster.get(SNAPSHOT_KEY)? else {
            return Ok(None);
        };
        let stored: StoredCluster =
            serde_json::from_slice(&bytes).map_err(StoreError::CorruptCluster)?;
        let mut snapshot = podwall_policy::Snapshot::default();
        for ns in stored.namespaces {
            snapshot.upsert_namespace(ns);
        }
        for pod in stored.pods {
            snapshot.upsert_pod(pod);
        }
        for policy in stored.policies {
            snapshot.upsert_policy(policy);
        }
        Ok(Some(snapshot))
    }

    /// Forget the stored cluster state (one that cannot be read): the next start relists.
    pub fn discard_cluster(&self) -> Result<(), StoreError> {
        self.cluster.remove(SNAPSHOT_KEY)?;
        self.objects.clear()?;
        self.db.flush()?;
        Ok(())
    }

    /// Write `changes` to the stored cluster state in one atomic batch.
    pub fn put_cluster_changes(&self, changes: &ClusterChanges) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let mut written = std::collections::BTreeSet::new();
        let mut put = |object: ObjectRef, value: Result<Vec<u8>, serde_json::Error>| {
            let key = object_key(&object);
            batch.insert(key.clone(), value.map_err(StoreError::Encode)?);
            written.insert(key);
            Ok::<(), StoreError>(())
        };
        for ns in &changes.namespaces {
            put(
                ObjectRef::Namespace(ns.name.clone()),
                serde_json::to_vec(ns),
            )?;
        }
        for pod in &changes.pods {
            put(ObjectRef::Pod(pod.key.clone()), serde_json::to_vec(pod))?;
        }
        for policy in &changes.policies {
            put(
                ObjectRef::Policy(policy.key.clone()),
                serde_json::to_vec(policy),
            )?;
        }
        for object in &changes.removed {
            batch.remove(object_key(object));
        }
        if changes.whole {
            for key in self.objects.iter().keys() {
                let key = key?;
                if !written.contains(key.as_ref()) {
                    batch.remove(key);
                }
            }
        }
        self.objects.apply_batch(batch)?;
        // Written whole in the new form: the old form's record is not needed any more.
        if changes.whole {
            self.cluster.remove(SNAPSHOT_KEY)?;
        }
        self.db.flush()?;
        Ok(())
    }
}

/// An attachment record that could not be read, and the attachment its key names.
#[derive(Debug)]
pub struct Unreadable {
    pub id: Option<AttachmentId>,
    pub error: StoreError,
}

/// The attachment a record's key names (see `key`).
fn id_of(key: &[u8]) -> Option<AttachmentId> {
    let text = std::str::from_utf8(key).ok()?;
    let (container_id, ifname) = text.split_once('\0')?;
    Some(AttachmentId {
        container_id: container_id.to_string(),
        ifname: ifname.to_string(),
    })
}

/// `container_id NUL ifname`: NUL appears in neither (the runtime passes them as env vars).
fn key(id: &AttachmentId) -> Vec<u8> {
    let mut key = id.container_id.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(id.ifname.as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use podwall::wire::PodRef;

    fn attachment(container: &str, ip: &str) -> Attachment {
        Attachment {
            id: AttachmentId {
                container_id: container.into(),
                ifname: "eth0".into(),
            },
            pod: PodRef {
                namespace: "x".into(),
                name: container.into(),
                uid: None,
            },
            netns: format!("/run/netns/{container}"),
            ips: vec![ip.parse().unwrap()],
            host_interface: None,
        }
    }

    #[test]
    fn attachments_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.put_attachment(&attachment("a", "10.0.0.2")).unwrap();
            store.put_attachment(&attachment("b", "10.0.0.3")).unwrap();
            assert!(store
                .remove_attachment(&attachment("a", "10.0.0.2").id)
                .unwrap());
        }
        let store = Store::open(dir.path()).unwrap();
        let (all, _) = store.attachments().unwrap();
        assert_eq!(
            all.values().cloned().collect::<Vec<_>>(),
            vec![attachment("b", "10.0.0.3")]
        );
    }

    #[test]
    fn removing_an_unknown_attachment_reports_absence() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(!store
            .remove_attachment(&attachment("nope", "10.0.0.9").id)
            .unwrap());
    }

    #[test]
    fn a_corrupt_record_is_removed_and_reported_by_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .put_attachment(&attachment("good", "10.0.0.2"))
            .unwrap();
        store
            .attachments
            .insert(b"c1\0eth0", b"{not json".to_vec())
            .unwrap();
        let (all, unreadable) = store.attachments().unwrap();
        assert_eq!(all.len(), 1, "the readable record is kept");
        assert_eq!(unreadable.len(), 1);
        let error = unreadable[0].error.to_string();
        assert!(error.contains("c1"), "{error}");
        assert_eq!(
            unreadable[0].id,
            Some(AttachmentId {
                container_id: "c1".into(),
                ifname: "eth0".into()
            })
        );
        let (_, again) = store.attachments().unwrap();
        assert!(again.is_empty(), "reported once, then gone");
    }

    #[test]
    fn a_corrupt_cluster_snapshot_can_be_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .cluster
            .insert(SNAPSHOT_KEY, b"{\"pods\": [".to_vec())
            .unwrap();
        assert!(matches!(
            store.cluster(),
            Err(StoreError::CorruptCluster(_))
        ));
        store.discard_cluster().unwrap();
        assert_eq!(store.cluster().unwrap(), None);
    }

    fn world() -> podwall_policy::Snapshot {
        let loaded = podwall_policy::manifests::load([(
            "world.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: web}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: db, namespace: shop, labels: {app: db}}\n\
             spec: {nodeName: n2, containers: [{name: c, image: i, ports: [{containerPort: 5432, name: pg}]}]}\n\
             status: {phase: Running, podIPs: [{ip: 10.0.0.7}]}\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: shop}\n\
             spec: {podSelector: {}, ingress: [{ports: [{port: pg}]}]}\n",
        )]);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        assert_eq!(
            (loaded.snapshot.pods.len(), loaded.snapshot.policies.len()),
            (1, 1)
        );
        loaded.snapshot
    }

    fn whole(snapshot: &podwall_policy::Snapshot) -> ClusterChanges {
        ClusterChanges {
            whole: true,
            namespaces: snapshot.namespaces.values().cloned().collect(),
            pods: snapshot.pods.values().cloned().collect(),
            policies: snapshot.policies.values().cloned().collect(),
            removed: Vec::new(),
        }
    }

    #[test]
    fn the_cluster_state_survives_reopening_and_changes_by_object() {
        let dir = tempfile::tempdir().unwrap();
        let mut snapshot = world();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.cluster().unwrap(), None);
            store.put_cluster_changes(&whole(&snapshot)).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.cluster().unwrap(), Some(snapshot.clone()));
        // One pod relabelled, the policy removed: only they are written.
        let key = snapshot.pods.keys().next().unwrap().clone();
        let mut pod = snapshot.pods[&key].clone();
        pod.labels = [("app".to_string(), "web".to_string())].into();
        snapshot.upsert_pod(pod.clone());
        let policy = snapshot.policies.keys().next().unwrap().clone();
        snapshot.policies.remove(&policy);
        store
            .put_cluster_changes(&ClusterChanges {
                pods: vec![pod],
                removed: vec![ObjectRef::Policy(policy)],
                ..ClusterChanges::default()
            })
            .unwrap();
        assert_eq!(store.cluster().unwrap(), Some(snapshot.clone()));
        // A whole write removes what it does not name.
        let mut smaller = snapshot.clone();
        smaller.pods.clear();
        store.put_cluster_changes(&whole(&smaller)).unwrap();
        assert_eq!(store.cluster().unwrap(), Some(smaller));
    }

    #[test]
    fn a_cluster_stored_as_one_record_is_read_then_replaced_by_objects() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = world();
        let store = Store::open(dir.path()).unwrap();
        let old = StoredCluster {
            namespaces: snapshot.namespaces.values().cloned().collect(),
            pods: snapshot.pods.values().cloned().collect(),
            policies: snapshot.policies.values().cloned().collect(),
        };
        store
            .cluster
            .insert(SNAPSHOT_KEY, serde_json::to_vec(&old).unwrap())
            .unwrap();
        assert_eq!(store.cluster().unwrap(), Some(snapshot.clone()));
        store.put_cluster_changes(&whole(&snapshot)).unwrap();
        assert_eq!(store.cluster.get(SNAPSHOT_KEY).unwrap(), None);
        assert_eq!(store.cluster().unwrap(), Some(snapshot));
    }

    #[test]
    fn a_second_open_of_a_store_in_use_fails() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        assert!(Store::open(dir.path()).is_err());
    }
}
