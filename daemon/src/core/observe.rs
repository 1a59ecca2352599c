//! What the core tells `/metrics` of the state it holds: the table's size, the cluster's,
//! and what the rules' counters say of each policy.

use super::Core;
use crate::dataplane::counters::{by_policy, RuleCount};

impl Core {
    /// The table's size and the cluster's, after each transaction.
    pub(super) fn record_size(&self) {
        let ruleset = &self.applied.ruleset;
        let elements = ruleset
            .sets
            .values()
            .map(podwall_policy::Set::len)
            .sum::<usize>()
            + ruleset.ingress.len()
            + ruleset.egress.len();
        self.metrics
            .set_table_size(ruleset.chains.len(), ruleset.sets.len(), elements);
        self.metrics.set_attachments(self.attachments.len());
        self.metrics.set_cluster_size(
            (
                self.cluster.policies.len(),
                self.cluster.cluster_policies.len(),
            ),
            self.cluster.pods.len(),
            self.compiler.local_pods().count(),
        );
    }

    /// Tell `/metrics` what a reading of the rules' counters says of the policies (see
    /// `dataplane::counters`), by the table the kernel holds.
    pub fn count(&self, deltas: &[(&RuleCount, u64)]) {
        let counted = by_policy(&self.applied.ruleset, deltas);
        (self.metrics.policy_packets).add(&counted, |tier, p| match tier.cluster() {
            None => self.cluster.policies.contains_key(p),
            Some(tier) => (self.cluster.cluster_policies.get(p.name.as_str()))
                .is_some_and(|policy| policy.tier == tier),
        });
    }
}

impl Core {
    /// The chain of the table the kernel holds that `name` names: what a logged packet's
    /// prefix says of the policies that judged it.
    pub fn applied_chain(&self, name: &str) -> Option<&podwall_policy::Chain> {
        self.applied.ruleset.chains.get(name)
    }

    /// The `name` of rule `index` of `direction` of the ClusterNetworkPolicy `policy` of
    /// `tier`, when it has one. Names never reach the kernel (renaming a rule changes no
    /// chain), so they come from the cluster the daemon knows, as the pods' names do.
    pub fn cluster_rule_name(
        &self,
        tier: podwall_policy::PolicyTier,
        policy: &podwall_policy::PolicyKey,
        direction: podwall_policy::Direction,
        index: usize,
    ) -> Option<String> {
        let tier = tier.cluster()?;
        let policy =
            (self.cluster.cluster_policies.get(policy.name.as_str())).filter(|p| p.tier == tier)?;
        let name = &policy.rules(direction).get(index)?.name;
        (!name.is_empty()).then(|| name.clone())
    }

    /// The pod that holds `ip` as this node sees it: a local pod by its attachment, any
    /// other by what the source says (the first, if a late delete leaves two claims).
    pub fn holder(&self, ip: &std::net::IpAddr) -> Option<podwall_policy::PodKey> {
        (self.attachments.values())
            .find(|a| a.ips.contains(ip))
            .map(super::pod_key)
            .or_else(|| self.claims.of_ip(ip).next().cloned())
    }
}
