//! The sled store behind typed methods: the node's attachments, so that a restarted daemon
//! knows its pods before any API server answers.
//!
//! sled allows one process per store; only the daemon opens it. Every write is flushed before
//! it returns: the plugin is told "attached" only once the attachment survives a crash.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

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
const CLUSTER: &str = "cluster/v1";
const SNAPSHOT_KEY: &[u8] = b"snapshot";
/// sled's page cache. The store is read once at start and written to: it needs no cache
/// worth the name, and sled's default (1 GiB) keeps the last cluster snapshot written (one
/// value of about 120 bytes per cluster pod) in memory for good.
const CACHE_BYTES: u64 = 1 << 20;

pub struct Store {
    db: sled::Db,
    attachments: sled::Tree,
    cluster: sled::Tree,
    /// The size of the cluster state last written, to size the next one's buffer.
    cluster_bytes: AtomicUsize,
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
        Ok(Self {
            db,
            attachments,
            cluster,
            cluster_bytes: AtomicUsize::new(0),
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

/// `StoredCluster` as it is written: borrowed from the snapshot, not cloned.
#[derive(serde::Serialize)]
struct StoredClusterRef<'a> {
    namespaces: Vec<&'a podwall_policy::Namespace>,
    pods: Vec<&'a podwall_policy::Pod>,
    policies: Vec<&'a podwall_policy::Policy>,
}

impl Store {
    /// The last-known state of the cluster (API objects, converted), so that a restart
    /// enforces it while the API server is unreachable.
    pub fn cluster(&self) -> Result<Option<podwall_policy::Snapshot>, StoreError> {
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
        self.db.flush()?;
        Ok(())
    }

    /// Writes the cluster state. It is one value of about 120 bytes per pod, encoded into a
    /// buffer the size of the last one (and a little more), so that a large cluster's write
    /// does not leave the allocator the garbage of a buffer doubled again and again.
    pub fn put_cluster(&self, snapshot: &podwall_policy::Snapshot) -> Result<(), StoreError> {
        let stored = StoredClusterRef {
            namespaces: snapshot.namespaces.values().collect(),
            pods: snapshot.pods.values().collect(),
            policies: snapshot.policies.values().collect(),
        };
        let last = self.cluster_bytes.load(Ordering::Relaxed);
        let mut value = Vec::with_capacity(last + last / 16);
        serde_json::to_writer(&mut value, &stored).map_err(StoreError::Encode)?;
        self.cluster_bytes.store(value.len(), Ordering::Relaxed);
        self.cluster.insert(SNAPSHOT_KEY, value)?;
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

    #[test]
    fn the_cluster_snapshot_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
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
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.cluster().unwrap(), None);
            store.put_cluster(&loaded.snapshot).unwrap();
        }
        assert_eq!(
            Store::open(dir.path()).unwrap().cluster().unwrap(),
            Some(loaded.snapshot)
        );
    }

    #[test]
    fn a_second_open_of_a_store_in_use_fails() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        assert!(Store::open(dir.path()).is_err());
    }
}
