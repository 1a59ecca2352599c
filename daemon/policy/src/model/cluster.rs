//! A ClusterNetworkPolicy (`policy.networking.k8s.io`, v1beta1 and v1alpha2) as the evaluator
//! reads it: the cluster admin's rules, in the Admin tier (before every NetworkPolicy) or the
//! Baseline tier (after them), with every default applied.
//!
//! Unlike a NetworkPolicy, whose rules only allow, each rule has an action: Accept and Deny
//! decide, Pass hands the connection to the next tier. Within a tier, policies are ordered by
//! priority (lower first), then by name (the API leaves equal priorities to the
//! implementation), and a policy's rules by their order.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{PortMatch, Shared};
use crate::ipblock::IpBlock;
use crate::selector::Selector;

/// Where a ClusterNetworkPolicy sits in the evaluation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Tier {
    /// Before NetworkPolicy: namespace owners cannot override it.
    Admin,
    /// After NetworkPolicy: a namespace's policies override it for the pods they select.
    Baseline,
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tier::Admin => "Admin",
            Tier::Baseline => "Baseline",
        })
    }
}

/// The tier any policy judges in, in evaluation order: a ClusterNetworkPolicy's, or the
/// NetworkPolicies' own between them. What the counters and the drop log name.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum PolicyTier {
    Admin,
    #[default]
    NetworkPolicy,
    Baseline,
}

impl PolicyTier {
    /// The ClusterNetworkPolicy tier, `None` for NetworkPolicy.
    pub fn cluster(self) -> Option<Tier> {
        match self {
            PolicyTier::Admin => Some(Tier::Admin),
            PolicyTier::NetworkPolicy => None,
            PolicyTier::Baseline => Some(Tier::Baseline),
        }
    }

    pub fn is_network_policy(&self) -> bool {
        *self == PolicyTier::NetworkPolicy
    }

    /// The name the counters' `tier` label and the drop log give it.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyTier::Admin => "Admin",
            PolicyTier::NetworkPolicy => "NetworkPolicy",
            PolicyTier::Baseline => "Baseline",
        }
    }
}

impl From<Tier> for PolicyTier {
    fn from(tier: Tier) -> Self {
        match tier {
            Tier::Admin => PolicyTier::Admin,
            Tier::Baseline => PolicyTier::Baseline,
        }
    }
}

impl fmt::Display for PolicyTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rule does with the traffic it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Action {
    /// Allowed; no later rule of this direction, in any tier, is looked at.
    Accept,
    /// Dropped; no later rule is looked at.
    Deny,
    /// The rest of this tier is skipped; the next tier decides.
    Pass,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Accept => "Accept",
            Action::Deny => "Deny",
            Action::Pass => "Pass",
        })
    }
}

/// Pods by namespace labels and pod labels; `namespaces: {…}` alone is every pod of the
/// matching namespaces. Host-network pods are never selected.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodsSelector {
    pub namespaces: Selector,
    pub pods: Selector,
}

/// One entry of a rule's `from` / `to`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ClusterPeer {
    /// `namespaces` or `pods`.
    Pods(PodsSelector),
    /// `networks` (egress only): addresses in any of the CIDRs, pod addresses included.
    Networks(Vec<IpBlock>),
}

/// One ingress or egress rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRule {
    /// `name`, for explanations (may be empty).
    pub name: String,
    pub action: Action,
    /// The rule matches traffic with any of these peers (never empty in a valid rule).
    pub peers: Vec<ClusterPeer>,
    /// `protocols`: empty means every protocol and port.
    pub ports: Vec<PortMatch>,
    /// Why the rule fails closed, when it has a peer or protocol with no field podwall
    /// knows, or a field it cannot read: an Accept rule then matches nothing, a Deny or Pass
    /// rule denies everything (as the API says for a peer from a newer version).
    pub fails_closed: Option<String>,
}

impl ClusterRule {
    /// The action the rule takes when it matches; a failed-closed Pass denies.
    pub fn effective_action(&self) -> Action {
        match (&self.fails_closed, self.action) {
            (Some(_), Action::Pass) => Action::Deny,
            (_, action) => action,
        }
    }
}

/// A ClusterNetworkPolicy after defaulting and validation, shared by the copies of the
/// cluster.
pub type ClusterPolicy = Shared<ClusterPolicyFields>;

/// What a [`ClusterPolicy`] says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterPolicyFields {
    /// Cluster-scoped: the name alone.
    pub name: String,
    pub tier: Tier,
    /// 0 to 1000, lower first.
    pub priority: u16,
    /// The pods the policy applies to.
    pub subject: PodsSelector,
    pub ingress: Vec<ClusterRule>,
    pub egress: Vec<ClusterRule>,
    /// The object had errors outside its rules (tier, priority, subject): it stands in the
    /// Admin tier at priority 0 for every pod unless the field was readable, and its Accept
    /// rules match nothing (see `docs/semantics.md`).
    pub broken: bool,
}

impl ClusterPolicy {
    /// The rules for `direction`.
    pub fn rules(&self, direction: super::Direction) -> &[ClusterRule] {
        match direction {
            super::Direction::Ingress => &self.ingress,
            super::Direction::Egress => &self.egress,
        }
    }

    /// The order of evaluation within a tier.
    pub fn order(&self) -> (u16, &str) {
        (self.priority, &self.name)
    }
}
