//! Pods and namespaces as policy sees them: labels, addresses, declared ports and whether
//! policy applies at all.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{Name, PodKey, Protocol};
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Pending, Running, Unknown or unset: the pod may send and receive.
    Active,
    /// Succeeded or Failed: the pod is ignored and its IPs may already belong to another pod.
    Finished,
}

/// A pod as policy sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    pub key: PodKey,
    pub labels: Labels,
    /// `spec.nodeName`; only pods of the compiling node get dispatch entries.
    pub node: Option<Name>,
    /// `status.podIPs` (or `status.podIP`), at most one per family in practice.
    pub ips: Vec<IpAddr>,
    /// The `containerPorts` of the pod's containers.
    pub ports: Vec<ContainerPort>,
    /// hostNetwork pods share the node's addresses: never targets, never matched by selectors.
    pub host_network: bool,
    pub phase: Phase,
    /// An attached pod the source has not described yet: its labels and ports are unknown,
    /// so as a local pod it sends and receives nothing new until they are (the daemon sets
    /// this; no API object does).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quarantined: bool,
}

impl Pod {
    /// A running, pod-network pod with the given IPs and labels; the rest empty.
    pub fn new(key: PodKey, labels: Labels, ips: Vec<IpAddr>) -> Self {
        Pod {
            key,
            labels,
            node: None,
            ips,
            ports: Vec::new(),
            host_network: false,
            phase: Phase::Active,
            quarantined: false,
        }
    }

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
