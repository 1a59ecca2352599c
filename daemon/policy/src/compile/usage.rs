//! Policies are compiled (their rules built, the sets those match on programmed) only while
//! a chain judges with them, so a policy that selects no pod of this node costs the node
//! nothing. In a cluster of many namespaces most policies, and their peer sets of pods all
//! over the cluster, belong to other nodes.
//!
//! The first holder of a chain compiles the policies the chain judges with; the end of an
//! event releases those it left unused. Releasing at the end rather than at once keeps a
//! regroup, which detaches every pod before attaching them again, from deleting and making
//! again the sets of a policy that is still used.

use super::*;
use crate::model::PolicyTier;
use tiers::ClusterCompiled;

/// A compiled policy and how many chains judge with it.
pub(super) struct Used<T> {
    pub(super) policy: T,
    chains: usize,
}

/// The policies compiled but perhaps no longer used, to release at the end of the event.
#[derive(Default)]
pub(super) struct Unused {
    policies: BTreeSet<PolicyKey>,
    cluster_policies: BTreeSet<String>,
}

impl Compiler {
    /// NetworkPolicy `key`, compiled now if no chain uses it yet; `None` if there is none.
    pub(super) fn use_policy(&mut self, key: &PolicyKey) -> Option<&Compiled> {
        if !self.compiled.contains_key(key) {
            let policy = self.snap.policies.get(key)?.clone();
            let policy = self.compile_policy(&policy);
            self.compiled
                .insert(key.clone(), Used { policy, chains: 0 });
            self.unused.policies.insert(key.clone());
        }
        self.compiled.get(key).map(|used| &used.policy)
    }

    /// ClusterNetworkPolicy `name`, compiled now if no chain uses it yet; `None` if there is
    /// none.
    pub(super) fn use_cluster_policy(&mut self, name: &str) -> Option<&ClusterCompiled> {
        if !self.cluster_compiled.contains_key(name) {
            let policy = self.snap.cluster_policies.get(name)?.clone();
            let policy = self.compile_cluster_policy(&policy);
            self.cluster_compiled
                .insert(name.to_string(), Used { policy, chains: 0 });
            self.unused.cluster_policies.insert(name.to_string());
        }
        self.cluster_compiled.get(name).map(|used| &used.policy)
    }

    /// Puts a new chain under `name`, counting it as a user of its policies.
    pub(super) fn make_chain(&mut self, name: &ChainName, chain: Chain) {
        self.count_users(chain.tier, &chain.policies, true);
        self.chain_set(name, Some(chain));
    }

    /// Deletes chain `name`, which its policies then count as a user no more.
    pub(super) fn delete_chain(&mut self, name: &ChainName) {
        if let Some(chain) = self.rs.chains.get(name) {
            let (tier, policies) = (chain.tier, chain.policies.clone());
            self.count_users(tier, &policies, false);
        }
        self.chain_set(name, None);
    }

    fn count_users(&mut self, tier: PolicyTier, policies: &[PolicyKey], made: bool) {
        for key in policies {
            match tier {
                PolicyTier::NetworkPolicy => {
                    count(&mut self.compiled, &mut self.unused.policies, key, made);
                }
                PolicyTier::Admin | PolicyTier::Baseline => count(
                    &mut self.cluster_compiled,
                    &mut self.unused.cluster_policies,
                    key.name.as_str(),
                    made,
                ),
            }
        }
    }

    /// Releases the policies, and the sets only they matched on, that no chain uses now that
    /// the event is done.
    pub(super) fn release_unused(&mut self) {
        let Unused {
            policies,
            cluster_policies,
        } = std::mem::take(&mut self.unused);
        for policy in take_unused(&mut self.compiled, policies) {
            self.release(policy);
        }
        for policy in take_unused(&mut self.cluster_compiled, cluster_policies) {
            self.release(policy.compiled);
        }
    }
}

/// One chain more (`made`) or fewer using `key`. A policy not found is one the event
/// changed or deleted: the event releases its old form itself, and the new one is counted
/// from the chains made again with it.
fn count<K, Q, T>(used: &mut BTreeMap<K, Used<T>>, unused: &mut BTreeSet<K>, key: &Q, made: bool)
where
    K: Ord + std::borrow::Borrow<Q>,
    Q: Ord + ToOwned<Owned = K> + ?Sized,
{
    let Some(entry) = used.get_mut(key) else {
        return;
    };
    if made {
        entry.chains += 1;
    } else {
        entry.chains = entry.chains.saturating_sub(1);
        if entry.chains == 0 {
            unused.insert(key.to_owned());
        }
    }
}

/// The policies of `keys` that no chain uses, taken out of `used`.
fn take_unused<K: Ord, T>(used: &mut BTreeMap<K, Used<T>>, keys: BTreeSet<K>) -> Vec<T> {
    let mut out = Vec::new();
    for key in keys {
        if used.get(&key).is_some_and(|u| u.chains == 0) {
            out.extend(used.remove(&key).map(|u| u.policy));
        }
    }
    out
}
