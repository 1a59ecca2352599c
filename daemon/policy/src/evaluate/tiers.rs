//! The Admin and Baseline tiers: which ClusterNetworkPolicy rule, if any, decides one side of
//! a connection.
//!
//! The policies of the tier whose subject selects the pod are taken by priority, then name;
//! each one's rules of the direction in order. The first rule that matches decides: Accept
//! and Deny are the answer, Pass ends the tier without one (the next tier decides).

use serde::Serialize;

use super::{holders, port_matches, Resolved};
use crate::model::{
    Action, ClusterPeer, ClusterPolicy, ClusterRule, Direction, Pod, PodsSelector, Protocol,
    Snapshot, Tier,
};

/// One side of a connection, as a tier asks about it.
#[derive(Clone, Copy)]
pub(super) struct Ask<'a> {
    /// The pod whose side it is (destination for ingress, source for egress).
    pub pod: &'a Pod,
    pub direction: Direction,
    /// The other end.
    pub peer: Resolved<'a>,
    /// The destination, where named ports resolve.
    pub dst: Resolved<'a>,
    pub protocol: Protocol,
    pub port: u16,
}

/// The ClusterNetworkPolicy rule that decided a side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub tier: Tier,
    pub policy: String,
    pub direction: Direction,
    /// Index of the rule in `spec.ingress` or `spec.egress`.
    pub index: usize,
    /// The rule's `name`, when it has one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Accept or Deny (a Pass rule that fails closed denies).
    pub action: Action,
    /// Why the rule failed closed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fails_closed: Option<String>,
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} tier: clusternetworkpolicy {} spec.{}[{}]",
            self.tier, self.policy, self.direction, self.index
        )?;
        if !self.name.is_empty() {
            write!(f, " ({})", self.name)?;
        }
        write!(f, ": {}", self.action)
    }
}

/// The decision of `tier` on the side `ask` describes: `None` when no rule matched or a Pass
/// rule did.
pub(super) fn decide(snap: &Snapshot, tier: Tier, ask: &Ask<'_>) -> Option<Decision> {
    let mut policies: Vec<&ClusterPolicy> = snap
        .cluster_policies
        .values()
        .filter(|p| p.tier == tier && selects(snap, &p.subject, ask.pod))
        .collect();
    policies.sort_by(|a, b| a.order().cmp(&b.order()));
    for policy in policies {
        for (index, rule) in policy.rules(ask.direction).iter().enumerate() {
            if !matches(snap, rule, ask) {
                continue;
            }
            return match rule.effective_action() {
                Action::Pass => None,
                action => Some(Decision {
                    tier,
                    policy: policy.name.clone(),
                    direction: ask.direction,
                    index,
                    name: rule.name.clone(),
                    action,
                    fails_closed: rule.fails_closed.clone(),
                }),
            };
        }
    }
    None
}

/// Whether `sel` selects `pod` (host-network pods are never selected: the caller does not
/// ask for them).
fn selects(snap: &Snapshot, sel: &PodsSelector, pod: &Pod) -> bool {
    sel.namespaces
        .matches(&snap.namespace_labels(&pod.key.namespace))
        && sel.pods.matches(&pod.labels)
}

/// Whether `rule` matches the side. A rule that fails closed matches nothing when it
/// Accepts and everything when it Denies or Passes (then denying).
fn matches(snap: &Snapshot, rule: &ClusterRule, ask: &Ask<'_>) -> bool {
    if rule.fails_closed.is_some() {
        return rule.action != Action::Accept;
    }
    let peer_ok = rule.peers.iter().any(|peer| match peer {
        ClusterPeer::Pods(sel) => holders(snap, ask.peer)
            .into_iter()
            .any(|p| selects(snap, sel, p)),
        ClusterPeer::Networks(blocks) => ask
            .peer
            .ip
            .is_some_and(|ip| blocks.iter().any(|b| b.contains(&ip))),
    });
    peer_ok
        && (rule.ports.is_empty()
            || rule
                .ports
                .iter()
                .any(|pm| port_matches(snap, pm, ask.dst, ask.protocol, ask.port)))
}

#[cfg(test)]
mod tests;
