//! The cluster state file's format. Pods name their namespace, node and label set by index
//! into tables written once: a cluster has far fewer of each than it has pods (replicas
//! share their labels), so a read parses each distinct one once and builds every pod holding
//! the shared copies, the way the watchers intern them. At 10k pods this reads in about a
//! third of the time the plain form took, and restart time is mostly this read.
//!
//! `{"format":2,...}` opens the file; anything else is the plain form an older daemon wrote
//! (lists of whole objects), which is read and rewritten in this one at the next write.

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;

use podwall_policy::model::{ClusterPolicy, ContainerPort, Interner, Name, Phase, PodFields};
use podwall_policy::selector::Labels;
use podwall_policy::{Namespace, Pod, PodKey, Policy, Snapshot};
use serde::{Deserialize, Serialize};

const FORMAT: u32 = 2;
/// How a file of this format begins, as `serde_json` writes it (fields in order, compact).
const OPENING: &[u8] = b"{\"format\":2,";

/// The file: tables, then the objects.
#[derive(Serialize, Deserialize)]
struct File<N, L, Ns, Pol, Pd, Cp> {
    format: u32,
    /// Namespace and node names of pods.
    names: Vec<N>,
    labels: Vec<L>,
    namespaces: Vec<Ns>,
    policies: Vec<Pol>,
    pods: Vec<Pd>,
    /// ClusterNetworkPolicies (absent from files of daemons that did not know them).
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    cluster_policies: Vec<Cp>,
}

/// A pod: its namespace, node and labels as indices into the tables.
#[derive(Serialize, Deserialize)]
struct Record<S> {
    ns: u32,
    name: S,
    labels: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<u32>,
    ips: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ports: Vec<ContainerPort>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    host_network: bool,
    #[serde(default, skip_serializing_if = "is_active")]
    phase: Phase,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    quarantined: bool,
}

fn is_active(phase: &Phase) -> bool {
    *phase == Phase::Active
}

/// The plain form older daemons wrote.
#[derive(Deserialize)]
struct Plain {
    namespaces: Vec<Namespace>,
    pods: Vec<Pod>,
    policies: Vec<Policy>,
}

/// Write `snapshot` to `out`, borrowing from it rather than copying it.
pub(super) fn write(snapshot: &Snapshot, out: impl Write) -> serde_json::Result<()> {
    let mut names: Table<&str> = Table::default();
    let mut labels: Table<&Labels> = Table::default();
    let pods: Vec<Record<&str>> = (snapshot.pods.values())
        .map(|pod| Record {
            ns: names.index(pod.key.namespace.as_str()),
            name: pod.key.name.as_str(),
            labels: labels.index(&pod.labels),
            node: pod.node.as_ref().map(|node| names.index(node.as_str())),
            ips: pod.ips.clone(),
            ports: pod.ports.clone(),
            host_network: pod.host_network,
            phase: pod.phase,
            quarantined: pod.quarantined,
        })
        .collect();
    let file = File {
        format: FORMAT,
        names: names.entries,
        labels: labels.entries,
        namespaces: snapshot.namespaces.values().collect(),
        policies: snapshot.policies.values().collect(),
        pods,
        cluster_policies: snapshot.cluster_policies.values().collect(),
    };
    serde_json::to_writer(out, &file)
}

/// Read a file of either form: the snapshot, and the interner that holds the copies its
/// pods share (for the watchers to go on sharing them).
pub(super) fn read(bytes: &[u8]) -> serde_json::Result<(Snapshot, Interner)> {
    let mut interner = Interner::new();
    let mut snapshot = Snapshot::default();
    if !bytes.starts_with(OPENING) {
        let plain: Plain = serde_json::from_slice(bytes)?;
        for ns in plain.namespaces {
            snapshot.upsert_namespace(ns);
        }
        for pod in plain.pods {
            snapshot.upsert_pod(pod);
        }
        for policy in plain.policies {
            snapshot.upsert_policy(policy);
        }
        return Ok((interner.snapshot(snapshot), interner));
    }
    let file: File<Name, Labels, Namespace, Policy, Record<String>, ClusterPolicy> =
        serde_json::from_slice(bytes)?;
    let names: Vec<Name> = file.names.iter().map(|n| interner.name(n)).collect();
    let labels: Vec<Labels> = file.labels.iter().map(|l| interner.labels(l)).collect();
    for record in file.pods {
        let key = PodKey {
            namespace: entry(&names, record.ns, "name")?,
            name: record.name.into(),
        };
        let pod = Pod::from(PodFields {
            key,
            labels: entry(&labels, record.labels, "label set")?,
            node: record.node.map(|i| entry(&names, i, "name")).transpose()?,
            ips: record.ips,
            ports: record.ports,
            host_network: record.host_network,
            phase: record.phase,
            quarantined: record.quarantined,
        });
        snapshot.upsert_pod(pod);
    }
    for ns in file.namespaces {
        snapshot.upsert_namespace(ns);
    }
    for policy in file.policies {
        snapshot.upsert_policy(policy);
    }
    for policy in file.cluster_policies {
        snapshot
            .cluster_policies
            .insert(policy.name.clone(), policy);
    }
    Ok((snapshot, interner))
}

/// Entry `i` of a table, or an error naming it.
fn entry<T: Clone>(table: &[T], i: u32, what: &str) -> serde_json::Result<T> {
    let found = table.get(i as usize).cloned();
    found.ok_or_else(|| serde::de::Error::custom(format!("no {what} number {i}")))
}

/// Distinct entries in the order first seen, and the index of each.
struct Table<T> {
    entries: Vec<T>,
    index: HashMap<T, u32>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<T: std::hash::Hash + Eq + Copy> Table<T> {
    fn index(&mut self, entry: T) -> u32 {
        *self.index.entry(entry).or_insert_with(|| {
            self.entries.push(entry);
            // A table holds at most one entry per pod: far below u32's range.
            u32::try_from(self.entries.len() - 1).unwrap_or(u32::MAX)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> Snapshot {
        let loaded = podwall_policy::manifests::load([(
            "world.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: web}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: db, namespace: shop, labels: {app: db}}\n\
             spec: {nodeName: n2, containers: [{name: c, image: i, ports: [{containerPort: 5432, name: pg}]}]}\n\
             status: {phase: Running, podIPs: [{ip: 10.0.0.7}, {ip: 'fd00::7'}]}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: db2, namespace: shop, labels: {app: db}}\n\
             spec: {nodeName: n2, hostNetwork: true}\nstatus: {phase: Succeeded}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: front}\n\
             status: {phase: Pending}\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: shop}\n\
             spec: {podSelector: {}, ingress: [{ports: [{port: pg}]}]}\n---\n\
             apiVersion: policy.networking.k8s.io/v1beta1\nkind: ClusterNetworkPolicy\nmetadata: {name: guard}\n\
             spec: {tier: Admin, priority: 3, subject: {namespaces: {}}, ingress: [{action: Deny, from: [{namespaces: {matchLabels: {team: web}}}]}]}\n",
        )]);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        let mut snapshot = loaded.snapshot;
        let key = PodKey::new("shop", "db");
        if let Some(pod) = snapshot.pods.get_mut(&key) {
            pod.quarantined = true;
        }
        snapshot
    }

    #[test]
    fn a_written_snapshot_reads_back_equal_with_shared_copies() {
        let snapshot = world();
        assert_eq!(snapshot.pods.len(), 3);
        let mut bytes = Vec::new();
        write(&snapshot, &mut bytes).unwrap();
        assert!(
            bytes.starts_with(OPENING),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        let (back, interner) = read(&bytes).unwrap();
        assert_eq!(back, snapshot);
        let db = &back.pods[&PodKey::new("shop", "db")];
        let db2 = &back.pods[&PodKey::new("shop", "db2")];
        assert!(std::ptr::eq(&*db.labels, &*db2.labels), "one label set");
        assert!(std::ptr::eq(
            db.key.namespace.as_str(),
            db2.key.namespace.as_str()
        ));
        assert!(!interner.is_empty());
    }

    #[test]
    fn the_plain_form_an_older_daemon_wrote_is_read() {
        let snapshot = world();
        let plain = serde_json::json!({
            "namespaces": snapshot.namespaces.values().collect::<Vec<_>>(),
            "pods": snapshot.pods.values().collect::<Vec<_>>(),
            "policies": snapshot.policies.values().collect::<Vec<_>>(),
        });
        let (back, _) = read(&serde_json::to_vec(&plain).unwrap()).unwrap();
        // Older daemons knew no ClusterNetworkPolicy.
        let mut older = snapshot;
        older.cluster_policies.clear();
        assert_eq!(back, older);
    }

    #[test]
    fn an_index_out_of_its_table_is_an_error_not_a_panic() {
        let mut bytes = Vec::new();
        write(&world(), &mut bytes).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let broken = text.replacen("\"labels\":0", "\"labels\":99", 1);
        assert_ne!(broken, text);
        let err = read(broken.as_bytes()).expect_err("an error");
        assert!(err.to_string().contains("no label set number 99"), "{err}");
    }
}
