//! Our own Pod, Namespace, NetworkPolicy and ClusterNetworkPolicy types, converted once from
//! the k8s-openapi objects at the edge, with every Kubernetes default applied and every field
//! validated.
//!
//! Nothing past this module sees an API object or a raw string from a manifest. A policy
//! that fails validation is not dropped: [`Policy::from_api`] returns a fail-closed
//! stand-in (it isolates what the policy would isolate and allows nothing) together with
//! the errors, so that a typo never opens a hole.
//!
//! The types and their conversions from the API objects are in separate files: [`Policy`]
//! and its rules, [`Pod`] and [`Namespace`], the [`ObjectKey`] they are known by, the
//! [`Snapshot`] that holds them all; `policy_api` and `pod_api` hold the `from_api`
//! conversions; [`Interner`] gives pods one shared copy of their namespace, node and labels.
//! Everything is re-exported here, so `model::Pod` is the one path to each name.

mod cluster;
pub mod cluster_api;
mod intern;
mod key;
mod pod;
mod pod_api;
mod policy;
mod policy_api;
mod shared;
mod snapshot;

pub use cluster::{
    Action, ClusterPeer, ClusterPolicy, ClusterPolicyFields, ClusterRule, PodsSelector, PolicyTier,
    Tier,
};
pub use cluster_api::ClusterNetworkPolicyApi;
pub use intern::Interner;
pub use key::{Name, ObjectKey, PodKey, PolicyKey, DEFAULT_NAMESPACE};
pub use pod::{ContainerPort, Namespace, Phase, Pod, PodFields, NAMESPACE_NAME_LABEL};
pub use policy::{
    Direction, NamespaceScope, Peer, Peers, Policy, PolicyFields, PortMatch, PortSpec, Protocol,
    Rule,
};
pub use shared::Shared;
pub use snapshot::Snapshot;
