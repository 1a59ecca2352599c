//! Attachments ↔ pods: the node's attachments (what CNI gave each pod) merged into the
//! cluster as the source reports it, the pods of this node adopted without an attachment,
//! the guard they imply, and which pods claim each address.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use podwall::wire::{Attachment, AttachmentId};
use podwall_policy::model::Phase;
use podwall_policy::selector::Labels;
use podwall_policy::{Pod, PodKey, Snapshot};

use crate::dataplane::Guard;

/// The cluster as this node enforces it: every pod as `Placement::pod` puts it. Compiling
/// this in full and following the same rule pod by pod (`Core::pod_event`) give the same
/// ruleset.
pub fn merged(
    cluster: &Snapshot,
    attachments: &BTreeMap<AttachmentId, Attachment>,
    node: &str,
    quarantine_unknown: bool,
) -> Snapshot {
    let claims = Claims::of(cluster);
    let place = Placement {
        cluster,
        attachments,
        node,
        quarantine_unknown,
        attached: &local_ips(attachments),
        claims: &claims,
    };
    let keys: BTreeSet<PodKey> = (cluster.pods.keys().cloned())
        .chain(attachments.values().map(pod_key))
        .collect();
    Snapshot {
        namespaces: cluster.namespaces.clone(),
        policies: cluster.policies.clone(),
        cluster_policies: cluster.cluster_policies.clone(),
        pods: keys
            .into_iter()
            .filter_map(|key| place.pod(&key).map(|pod| (key, pod)))
            .collect(),
    }
}

/// Where the pods of the cluster stand for this node's dispatch.
pub(super) struct Placement<'a> {
    pub cluster: &'a Snapshot,
    pub attachments: &'a BTreeMap<AttachmentId, Attachment>,
    pub node: &'a str,
    pub quarantine_unknown: bool,
    /// The addresses attached here.
    pub attached: &'a BTreeSet<IpAddr>,
    pub claims: &'a Claims,
}

impl Placement<'_> {
    /// Pod `key` as this node enforces it, if at all:
    /// - attached here: the source's labels and ports, the attachments' addresses;
    /// - reported on this node and running in the pod network with addresses, but not
    ///   attached (it ran before podwall, started while the daemon was down, or its record
    ///   was lost): adopted, as the source reports it, without the addresses attached here;
    /// - another node's: as the source reports it, without the addresses held here (an
    ///   address this node's CNI assigned belongs to the pod it was assigned to).
    pub fn pod(&self, key: &PodKey) -> Option<Pod> {
        if let Some(pod) = local_pod(
            self.cluster,
            self.attachments,
            key,
            self.node,
            self.quarantine_unknown,
        ) {
            return Some(pod);
        }
        let mut pod = self.cluster.pods.get(key)?.clone();
        if pod.node.as_deref() == Some(self.node) {
            if !adoptable(&pod, self.node) {
                return None;
            }
            pod.ips.retain(|ip| !self.attached.contains(ip));
            return (!pod.ips.is_empty()).then_some(pod);
        }
        // Only a pod that loses an address is changed: the unchanged ones stay shared with
        // the cluster's copy (`Pod` copies on write).
        if pod.ips.iter().any(|ip| self.held_here(ip)) {
            pod.ips.retain(|ip| !self.held_here(ip));
        }
        Some(pod)
    }

    /// Whether a pod of this node, attached or adopted, holds `ip`.
    fn held_here(&self, ip: &IpAddr) -> bool {
        self.attached.contains(ip)
            || self.claims.of_ip(ip).any(|key| {
                (self.cluster.pods.get(key)).is_some_and(|pod| adoptable(pod, self.node))
            })
    }
}

impl super::Core {
    /// The pods this node enforces: how, and by which policies in each direction (those of
    /// the chain its first address is dispatched to; none for `open`).
    pub(super) fn enforced_pods(&self) -> Vec<podwall::wire::EnforcedPod> {
        let attached: BTreeSet<PodKey> = self.attachments.values().map(pod_key).collect();
        let snapshot = self.compiler.snapshot();
        let rules = self.compiler.ruleset();
        let policies = |map: &BTreeMap<IpAddr, String>, ip: Option<&IpAddr>| -> Vec<String> {
            (ip.and_then(|ip| map.get(ip)))
                .and_then(|chain| rules.chains.get(chain))
                .map(|chain| chain.policies.iter().map(ToString::to_string).collect())
                .unwrap_or_default()
        };
        (self.compiler.local_pods())
            .filter_map(|key| snapshot.pods.get(key))
            .map(|pod| podwall::wire::EnforcedPod {
                namespace: pod.key.namespace.to_string(),
                name: pod.key.name.to_string(),
                ips: pod.ips.clone(),
                how: if pod.quarantined {
                    "quarantined"
                } else if attached.contains(&pod.key) {
                    "attached"
                } else {
                    "adopted"
                }
                .to_string(),
                ingress: policies(&rules.ingress, pod.ips.first()),
                egress: policies(&rules.egress, pod.ips.first()),
            })
            .collect()
    }
}

/// Whether a pod the source reports is one this node adopts while nothing attached it:
/// scheduled here, running (or starting) in the pod network, with addresses.
pub(super) fn adoptable(pod: &Pod, node: &str) -> bool {
    pod.node.as_deref() == Some(node) && pod.is_policed() && !pod.ips.is_empty()
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
    // Compared in place: a full compile asks this of every pod in the cluster.
    let ips: Vec<IpAddr> = attachments
        .values()
        .filter(|a| key.namespace == a.pod.namespace && key.name == a.pod.name)
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
    pod.node = Some(node.into());
    pod.ips = ips;
    pod.phase = Phase::Active;
    pod.host_network = false;
    Some(pod)
}

pub(super) fn pod_key(attachment: &Attachment) -> PodKey {
    PodKey::new(&attachment.pod.namespace, &attachment.pod.name)
}

/// Each attached pod's host-side veth may send only from the pod's addresses. A result
/// that names no host interface leaves that pod unguarded (logged at attach). An adopted
/// pod's addresses are guarded on the ports the kernel placed them behind (`adopted`).
pub(super) fn guard(
    attachments: &BTreeMap<AttachmentId, Attachment>,
    adopted: &BTreeMap<IpAddr, String>,
) -> Guard {
    let mut guard = Guard::default();
    for (ip, port) in adopted {
        guard.sources.entry(port.clone()).or_default().insert(*ip);
    }
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

/// Which pods the source says hold each address: those whose placement an address attached,
/// adopted or released here can change. Kept beside `Core::cluster`, so that an attach finds
/// them without scanning every pod of the cluster. An address almost always has one claim,
/// held in the map's own node; only an address two pods claim (a late delete) allocates a
/// list. A `BTreeSet` per address was a tree node with room for eleven keys: the largest part
/// of the daemon's memory per pod.
#[derive(Debug, Default)]
pub(super) struct Claims(BTreeMap<IpAddr, Claim>);

#[derive(Debug)]
enum Claim {
    One(PodKey),
    /// Sorted, two or more.
    Many(Vec<PodKey>),
}

impl Claim {
    fn keys(&self) -> &[PodKey] {
        match self {
            Claim::One(key) => std::slice::from_ref(key),
            Claim::Many(keys) => keys,
        }
    }
}

impl Claims {
    pub(super) fn of(cluster: &Snapshot) -> Self {
        let mut claims = Self::default();
        for pod in cluster.pods.values() {
            claims.add(pod);
        }
        claims
    }

    pub(super) fn add(&mut self, pod: &Pod) {
        for ip in &pod.ips {
            let key = &pod.key;
            match self.0.get_mut(ip) {
                None => {
                    self.0.insert(*ip, Claim::One(key.clone()));
                }
                Some(claim) => {
                    let mut keys = claim.keys().to_vec();
                    if let Err(at) = keys.binary_search(key) {
                        keys.insert(at, key.clone());
                        *claim = Claim::Many(keys);
                    }
                }
            }
        }
    }

    pub(super) fn remove(&mut self, pod: &Pod) {
        for ip in &pod.ips {
            let Some(claim) = self.0.get_mut(ip) else {
                continue;
            };
            let mut keys: Vec<PodKey> = (claim.keys().iter())
                .filter(|key| **key != pod.key)
                .cloned()
                .collect();
            match keys.len() {
                0 => {
                    self.0.remove(ip);
                }
                1 => *claim = Claim::One(keys.remove(0)),
                _ => *claim = Claim::Many(keys),
            }
        }
    }

    /// The pods that claim `ip`.
    pub(super) fn of_ip<'a>(&'a self, ip: &IpAddr) -> impl Iterator<Item = &'a PodKey> + 'a {
        self.0.get(ip).map(Claim::keys).unwrap_or_default().iter()
    }

    /// The pods that claim any of `ips`.
    pub(super) fn on(&self, ips: &BTreeSet<IpAddr>) -> BTreeSet<PodKey> {
        ips.iter()
            .filter_map(|ip| self.0.get(ip))
            .flat_map(Claim::keys)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ips: &[&str]) -> Pod {
        let ips = ips.iter().map(|ip| ip.parse().unwrap()).collect();
        Pod::new(PodKey::new("x", name), Labels::new(), ips)
    }

    #[test]
    fn an_address_keeps_each_claim_once_until_its_last_claim_goes() {
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        let (old, new) = (
            pod("old", &["10.0.0.2"]),
            pod("new", &["10.0.0.2", "fd00::2"]),
        );
        let mut claims = Claims::default();
        claims.add(&new);
        claims.add(&old);
        claims.add(&new);
        let names = |c: &Claims| c.of_ip(&ip).map(|k| k.name.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&claims), ["new", "old"]);
        claims.remove(&old);
        assert_eq!(names(&claims), ["new"]);
        claims.remove(&new);
        assert!(claims.0.is_empty(), "{claims:?}");
    }
}
