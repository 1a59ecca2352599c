//! Pods and namespaces as policy sees them: labels, addresses, declared ports and whether
//! policy applies at all.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{Name, PodKey, Protocol, Shared};
use crate::ipblock::Family;
use crate::selector::Labels;

/// The label the API server puts on every namespace (since Kubernetes 1.21), so that
/// `namespaceSelector` can pick a namespace by name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A port a container declares; named ones are what named policy ports resolve to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
}

/// The lifecycle phase of a pod, as far as policy cares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Pending, Running, Unknown or unset: the pod may send and receive.
    #[default]
    Active,
    /// Succeeded or Failed: the pod is ignored and its IPs may already belong to another pod.
    Finished,
}

/// A pod as policy sees it: its [`PodFields`], shared by the copies of the cluster.
pub type Pod = Shared<PodFields>;

/// What a [`Pod`] says. Fields a pod of another node rarely has (ports, host network, a
/// finished phase) are left out of the stored form when they are empty or the default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodFields {
    pub key: PodKey,
    pub labels: Labels,
    /// `spec.nodeName`; only pods of the compiling node get dispatch entries.
    pub node: Option<Name>,
    /// `status.podIPs` (or `status.podIP`), at most one per family in practice.
    pub ips: Vec<IpAddr>,
    /// The `containerPorts` of the pod's containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// hostNetwork pods share the node's addresses: never targets, never matched by selectors.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
    #[serde(default, skip_serializing_if = "Phase::is_active")]
    pub phase: Phase,
    /// An attached pod the source has not described yet: its labels and ports are unknown,
    /// so as a local pod it sends and receives nothing new until they are (the daemon sets
    /// this; no API object does).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quarantined: bool,
}

impl Phase {
    fn is_active(&self) -> bool {
        *self == Phase::Active
    }
}

impl Pod {
    /// A running, pod-network pod with the given IPs and labels; the rest empty.
    pub fn new(key: PodKey, labels: Labels, ips: Vec<IpAddr>) -> Self {
        Pod::from(PodFields {
            key,
            labels,
            node: None,
            ips,
            ports: Vec::new(),
            host_network: false,
            phase: Phase::Active,
            quarantined: false,
        })
    }
}

impl PodFields {
    /// Whether policy applies to this pod at all: as a target and as a selector peer.
    pub fn is_policed(&self) -> bool {
        !self.host_network && self.phase == Phase::Active
    }

    /// The number a named port resolves to on this pod for `protocol`, if any container
    /// declares it.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.protocol == protocol && p.name.as_deref() == Some(name))
            .map(|p| p.port)
    }

    /// The pod's first address of `family`.
    pub fn ip(&self, family: Family) -> Option<IpAddr> {
        self.ips.iter().copied().find(|ip| Family::of(ip) == family)
    }
}

/// A namespace and its labels (always including [`NAMESPACE_NAME_LABEL`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
}

impl Namespace {
    /// A namespace with `labels` plus the name label the API server adds.
    pub fn new(name: impl Into<String>, mut labels: Labels) -> Self {
        let name = name.into();
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.clone());
        Namespace { name, labels }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_to_one_copy_of_a_pod_leaves_the_others_as_they_were() {
        let pod = Pod::new(
            PodKey::new("x", "a"),
            Labels::new(),
            vec!["10.0.0.1".parse().unwrap()],
        );
        let mut moved = pod.clone();
        assert!(std::ptr::eq(&*pod, &*moved), "a clone shares the pod");
        moved.ips = vec!["10.0.0.2".parse().unwrap()];
        assert_eq!(pod.ips, ["10.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_ne!(pod, moved);
    }

    #[test]
    fn the_stored_form_leaves_out_what_is_empty_or_the_default_and_reads_it_back() {
        let pod = Pod::new(
            PodKey::new("x", "a"),
            Labels::from([("app", "web")]),
            Vec::new(),
        );
        let text = serde_json::to_string(&pod).unwrap();
        assert!(
            !text.contains("ports") && !text.contains("host_network") && !text.contains("phase"),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Pod>(&text).unwrap(), pod);
        // A record written before these were left out.
        let older = r#"{"key":{"namespace":"x","name":"a"},"labels":{"app":"web"},"node":null,
            "ips":[],"ports":[],"host_network":false,"phase":"Active"}"#;
        assert_eq!(serde_json::from_str::<Pod>(older).unwrap(), pod);
        let mut finished = pod.clone();
        finished.phase = Phase::Finished;
        finished.host_network = true;
        let text = serde_json::to_string(&finished).unwrap();
        assert_eq!(serde_json::from_str::<Pod>(&text).unwrap(), finished);
    }
}
