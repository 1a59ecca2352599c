//! The sled store behind typed methods: the node's attachments, so that a restarted daemon
//! knows its pods before any API server answers.
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

pub struct Store {
    db: sled::Db,
    attachments: sled::Tree,
    cluster: sled::Tree,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::open(dir).map_err(|source| StoreError::Open {
            path: dir.display().to_string(),
            source,
        })?;
        let attachments = db.open_tree(ATTACHMENTS)?;
        let cluster = db.open_tree(CLUSTER)?;
        Ok(Self {
            db,
            attachments,
            cluster,
        })
    }

    /// Every recorded attachment. A record that cannot be read is an error, not skipped: a
    /// pod silently forgotten would lose its rules on the next commit.
    pub fn attachments(&self) -> Result<BTreeMap<AttachmentId, Attachment>, StoreError> {
        let mut all = BTreeMap::new();
        for entry in self.attachments.iter() {
            let (key, value) = entry?;
            let attachment: Attachment =
                serde_json::from_slice(&value).map_err(|source| StoreError::Corrupt {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    source,
                })?;
            all.insert(attachment.id.clone(), attachment);
        }
        Ok(all)
    }

    pub fn put_attachment(&self, attachment: &Attachment) -> Result<(), StoreError> {
        let value = serde_json::to_vec(attachment).expect("attachments serialise");
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

    pub fn put_cluster(&self, snapshot: &podwall_policy::Snapshot) -> Result<(), StoreError> {
        let stored = StoredCluster {
            namespaces: snapshot.namespaces.values().cloned().collect(),
            pods: snapshot.pods.values().cloned().collect(),
            policies: snapshot.policies.values().cloned().collect(),
        };
        let value = serde_json::to_vec(&stored).expect("pods, namespaces and policies serialise");
        self.cluster.insert(SNAPSHOT_KEY, value)?;
        self.db.flush()?;
        Ok(())
    }
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
        let all = store.attachments().unwrap();
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
    fn a_corrupt_record_is_an_error_naming_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .attachments
            .insert(b"c1\0eth0", b"{not json".to_vec())
            .unwrap();
        let err = store.attachments().unwrap_err();
        assert!(err.to_string().contains("c1"), "{err}");
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
