//! The state store behind typed methods: the node's attachments, so that a restarted daemon
//! knows its pods before any API server answers, in sled; the last-known cluster state in a
//! file beside sled's, `cluster.json`; and how the last clean stop left the kernel,
//! `handover.json`, read once by the next start.
//!
//! sled allows one process per store; only the daemon opens it. Every write is flushed before
//! it returns: the plugin is told "attached" only once the attachment survives a crash. The
//! cluster state is not a sled value because sled keeps every value it wrote in memory, and
//! this one is about 120 bytes per cluster pod, rewritten every few seconds while the cluster
//! changes; the file is written whole, synced and renamed into place, streamed from the
//! snapshot without a buffer of its size. A state an older daemon left in sled is read when
//! there is no file, and removed once the file is written.

mod cluster;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, ErrorKind};
use std::path::{Path, PathBuf};

use podwall::wire::{Attachment, AttachmentId};

use crate::dataplane::Handover;

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
    #[error("cannot read or write the state file {path}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("state store holds an unreadable attachment under key {key:?}")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Tree and file names are part of the on-disk format.
const ATTACHMENTS: &str = "attachments/v1";
/// Where daemons before the cluster file kept the cluster state (read, then removed).
const LEGACY_CLUSTER: &str = "cluster/v1";
const SNAPSHOT_KEY: &[u8] = b"snapshot";
const CLUSTER_FILE: &str = "cluster.json";
const HANDOVER_FILE: &str = "handover.json";
/// sled's page cache: the store is read once, at start, and holds a few small records.
const CACHE_BYTES: u64 = 1 << 20;

/// A handle on the store; clones share it.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    attachments: sled::Tree,
    legacy_cluster: sled::Tree,
    dir: PathBuf,
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
        let legacy_cluster = db.open_tree(LEGACY_CLUSTER)?;
        Ok(Self {
            db,
            attachments,
            legacy_cluster,
            dir: dir.to_path_buf(),
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

impl Store {
    /// The last-known state of the cluster (API objects, converted), so that a restart
    /// enforces it while the API server is unreachable.
    pub fn cluster(&self) -> Result<Option<podwall_policy::Snapshot>, StoreError> {
        Ok(self.cluster_interned()?.map(|(snapshot, _)| snapshot))
    }

    /// `cluster()`, and the interner that holds the names and label sets its pods share.
    pub fn cluster_interned(
        &self,
    ) -> Result<Option<(podwall_policy::Snapshot, podwall_policy::model::Interner)>, StoreError>
    {
        let bytes = match std::fs::read(self.cluster_file()) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == ErrorKind::NotFound => {
                match self.legacy_cluster.get(SNAPSHOT_KEY)? {
                    Some(bytes) => bytes.to_vec(),
                    None => return Ok(None),
                }
            }
            Err(source) => return Err(self.file_error(source)),
        };
        cluster::read(&bytes)
            .map(Some)
            .map_err(StoreError::CorruptCluster)
    }

    /// Forget the stored cluster state (one that cannot be read): the next start relists.
    pub fn discard_cluster(&self) -> Result<(), StoreError> {
        match std::fs::remove_file(self.cluster_file()) {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(source) => return Err(self.file_error(source)),
        }
        self.legacy_cluster.remove(SNAPSHOT_KEY)?;
        self.db.flush()?;
        Ok(())
    }

    /// Writes the cluster state: streamed into a new file, synced, renamed over the last
    /// one, so that a crash leaves the old state or the new one, never half of one.
    pub fn put_cluster(&self, snapshot: &podwall_policy::Snapshot) -> Result<(), StoreError> {
        let path = self.cluster_file();
        let partial = self.dir.join(format!("{CLUSTER_FILE}.partial"));
        let write = || -> std::io::Result<()> {
            let mut out = BufWriter::new(File::create(&partial)?);
            cluster::write(snapshot, &mut out)?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&partial, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|source| self.file_error(source))?;
        if self.legacy_cluster.contains_key(SNAPSHOT_KEY)? {
            self.legacy_cluster.remove(SNAPSHOT_KEY)?;
            self.db.flush()?;
        }
        Ok(())
    }

    fn cluster_file(&self) -> PathBuf {
        self.dir.join(CLUSTER_FILE)
    }

    fn file_error(&self, source: std::io::Error) -> StoreError {
        StoreError::File {
            path: self.cluster_file().display().to_string(),
            source,
        }
    }

    /// Record how a clean stop left the kernel, for the next start only (see `take_handover`).
    pub fn put_handover(&self, handover: &Handover) -> Result<(), StoreError> {
        let path = self.dir.join(HANDOVER_FILE);
        let bytes = serde_json::to_vec(handover).map_err(StoreError::Encode)?;
        let partial = self.dir.join(format!("{HANDOVER_FILE}.partial"));
        let write = || -> std::io::Result<()> {
            std::fs::write(&partial, &bytes)?;
            File::open(&partial)?.sync_all()?;
            std::fs::rename(&partial, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|source| StoreError::File {
            path: path.display().to_string(),
            source,
        })
    }

    /// How the last clean stop left the kernel, removed as it is read: it speaks of the
    /// kernel at that moment only, and the first change after this start makes it untrue.
    /// A record that cannot be read is no record (the start then swaps the table in).
    pub fn take_handover(&self) -> Result<Option<Handover>, StoreError> {
        let path = self.dir.join(HANDOVER_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::File {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        std::fs::remove_file(&path).map_err(|source| StoreError::File {
            path: path.display().to_string(),
            source,
        })?;
        Ok(serde_json::from_slice(&bytes).ok())
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
        std::fs::write(dir.path().join(CLUSTER_FILE), b"{\"pods\": [").unwrap();
        assert!(matches!(
            store.cluster(),
            Err(StoreError::CorruptCluster(_))
        ));
        store.discard_cluster().unwrap();
        assert_eq!(store.cluster().unwrap(), None);
        // So is one an older daemon left in sled.
        (store.legacy_cluster)
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
    fn the_cluster_state_an_older_daemon_kept_in_sled_is_read_then_moved_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut snapshot = podwall_policy::Snapshot::default();
        snapshot.upsert_namespace(podwall_policy::Namespace::new(
            "shop",
            podwall_policy::selector::Labels::new(),
        ));
        let store = Store::open(dir.path()).unwrap();
        let older = serde_json::json!({"namespaces": [{"name": "shop", "labels": {"kubernetes.io/metadata.name": "shop"}}], "pods": [], "policies": []});
        (store.legacy_cluster)
            .insert(SNAPSHOT_KEY, serde_json::to_vec(&older).unwrap())
            .unwrap();
        assert_eq!(store.cluster().unwrap(), Some(snapshot.clone()));
        snapshot.upsert_namespace(podwall_policy::Namespace::new(
            "ops",
            podwall_policy::selector::Labels::new(),
        ));
        store.put_cluster(&snapshot).unwrap();
        assert_eq!(store.legacy_cluster.get(SNAPSHOT_KEY).unwrap(), None);
        assert!(dir.path().join(CLUSTER_FILE).is_file());
        assert!(!dir.path().join(format!("{CLUSTER_FILE}.partial")).exists());
        assert_eq!(store.cluster().unwrap(), Some(snapshot));
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
