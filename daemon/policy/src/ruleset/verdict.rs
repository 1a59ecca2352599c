//! What a chain does with a packet: a rule's verdict, and the end of a chain no rule of which
//! matched. NetworkPolicy chains allow by rule and drop at the end; the ClusterNetworkPolicy
//! tiers also deny, go to the next tier's chain, and return.

use serde::{Deserialize, Serialize};

use super::ChainName;

/// What a rule does with a packet it matches: a NetworkPolicy rule allows; a
/// ClusterNetworkPolicy rule may also deny, or go to the chain of the next tier (Pass).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RuleVerdict {
    /// Allowed in the chain's direction (`return`).
    #[default]
    Allow,
    /// Dropped (`drop`).
    Deny,
    /// Judged by that chain instead (`goto`).
    Goto(ChainName),
}

impl RuleVerdict {
    pub fn is_allow(&self) -> bool {
        *self == RuleVerdict::Allow
    }
}

/// What happens to a packet no rule of a chain matched.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum End {
    /// Dropped: the pod is isolated and nothing allowed it.
    #[default]
    Drop,
    /// Allowed: no tier decided (the Baseline tier of a pod no NetworkPolicy isolates).
    Return,
    /// Judged by that chain (the Admin tier's rules end in the next tier's chain).
    Goto(ChainName),
}

impl End {
    pub fn is_drop(&self) -> bool {
        *self == End::Drop
    }
}
