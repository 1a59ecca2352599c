//! Attachments ↔ pods: the node's attachments (what CNI gave each pod) merged into the
//! cluster as the source reports it, the guard they imply, and which pods of other nodes
//! claim an address attached here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use podwall::wire::{Attachment, AttachmentId};
use podwall_policy::model::Phase;
use podwall_policy::selector::Labels;
use podwall_policy::{Pod, PodKey, Snapshot};

use crate::dataplane::Guard;

/// The cluster with this node's pods as the attachments say: a pod is here once it is
/// attached (whatever the source claims), with the addresses the CNI result gave it and the
/// labels and ports the source knows for it. With `quarantine_unknown`, an attached pod the
/// source has not described is quarantined (see `Pod::quarantined`).
pub fn merged(
    cluster: &Snapshot,
    attachments: &BTreeMap<AttachmentId, Attachment>,
    node: &str,
    quarantine_unknown: bool,
) -> Snapshot {
    let mut snap = cluster.clone();
    snap.pods.retain(|_, pod| pod.node.as_deref() != Some(node));
    for pod in local_pods(cluster, attachments, node, quarantine_unknown).into_values() {
        snap.pods.insert(pod.key.clone(), pod);
    }
    snap.drop_stale_claims_on(node);
    snap
}

pub(super) fn local_pods(
    cluster: &Snapshot,
    attachments: &BTreeMap<AttachmentId, Attachment>,
    node: &str,
    quarantine_unknown: bool,
) -> BTreeMap<PodKey, Pod> {
    let keys: BTreeSet<PodKey> = attachments.values().map(pod_key).collect();
    keys.into_iter()
        .filter_map(|key| {
            local_pod(cluster, attachments, &key, node, quarantine_unknown).map(|pod| (key, pod))
        })
        .collect()
}

/// Pod `key` as attached here: the source's labels and ports, the attachments' addresses (two
/// attachments of one pod, two interfaces, give it both). `None` if it is not attached.
pub(super) fn local_pod(
    cluster: &Snapshot,
    attachments: &BTreeMap<AttachmentId, Attachment>,
    key: &PodKey,
    node: &str,
    quarantine_unknown: bool,
) -> Option<Pod> {
    let ips: Vec<IpAddr> = attachments
        .values()
        .filter(|a| pod_key(a) == *key)
        .flat_map(|a| a.ips.iter().copied())
        .collect();
    if ips.is_empty() {
        return None;
    }
    let mut pod = match cluster.pods.get(key) {
        Some(pod) => pod.clone(),
        None => {
            // The watch lags or the API server is unreachable: the pod's labels exist, we
            // just do not know them, so no policy that would select it may be bypassed.
            let mut pod = Pod::new(key.clone(), Labels::new(), Vec::new());
            pod.quarantined = quarantine_unknown;
            pod
        }
    };
    pod.node = Some(node.to_string());
    pod.ips = ips;
    pod.phase = Phase::Active;
    pod.host_network = false;
    Some(pod)
}

pub(super) fn pod_key(attachment: &Attachment) -> PodKey {
    PodKey {
        namespace: attachment.pod.namespace.clone(),
        name: attachment.pod.name.clone(),
    }
}

/// Each attached pod's host-side veth may send only from the pod's addresses. A result
/// that names no host interface leaves that pod unguarded (logged at attach).
pub(super) fn guard(attachments: &BTreeMap<AttachmentId, Attachment>) -> Guard {
    let mut guard = Guard::default();
    for attachment in attachments.values() {
        if let Some(port) = &attachment.host_interface {
            guard
                .sources
                .entry(port.clone())
                .or_default()
                .extend(attachment.ips.iter().copied());
        }
    }
    guard
}

pub(super) fn local_ips(attachments: &BTreeMap<AttachmentId, Attachment>) -> BTreeSet<IpAddr> {
    attachments
        .values()
        .flat_map(|a| a.ips.iter().copied())
        .collect()
}

/// Which pods of other nodes claim each address: those `merged` takes an address attached
/// here from. Kept beside `Core::cluster`, so that an attach finds them without scanning
/// every pod of the cluster.
#[derive(Debug, Default)]
pub(super) struct Claims(BTreeMap<IpAddr, BTreeSet<PodKey>>);

impl Claims {
    pub(super) fn of(cluster: &Snapshot, node: &str) -> Self {
        let mut claims = Self::default();
        for pod in cluster.pods.values() {
            claims.add(pod, node);
        }
        claims
    }

    pub(super) fn add(&mut self, pod: &Pod, node: &str) {
        if pod.node.as_deref() == Some(node) {
            return;
        }
        for ip in &pod.ips {
            self.0.entry(*ip).or_default().insert(pod.key.clone());
        }
    }

    pub(super) fn remove(&mut self, pod: &Pod) {
        for ip in &pod.ips {
            if let Some(keys) = self.0.get_mut(ip) {
                keys.remove(&pod.key);
                if keys.is_empty() {
                    self.0.remove(ip);
                }
            }
        }
    }

    /// The pods of other nodes that claim any of `ips`.
    pub(super) fn on(&self, ips: &BTreeSet<IpAddr>) -> BTreeSet<PodKey> {
        ips.iter()
            .filter_map(|ip| self.0.get(ip))
            .flatten()
            .cloned()
            .collect()
    }
}
