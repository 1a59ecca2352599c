//! Which rule or chain end decided a logged packet: its log prefix read against the chain
//! the kernel holds under the name the prefix gives. Pure.

use podwall_policy::ruleset::Rule;
use podwall_policy::{Chain, PolicyKey, PolicyTier, RuleVerdict};

use crate::dataplane::render::{rule_hash, LogPrefix};

/// What decided a logged packet, and in which tier.
#[derive(Debug, PartialEq, Eq)]
pub struct Decided<'a> {
    /// A rule allowed it (a policy that logs what it allows); otherwise it was dropped.
    pub allowed: bool,
    /// The chain's: a chain holds one tier's policies.
    pub tier: PolicyTier,
    /// The rule's policy, or every policy of the chain at whose end it was dropped.
    pub policies: Vec<PolicyKey>,
    /// The rule that decided, if a rule did.
    pub rule: Option<&'a Rule>,
}

/// What `prefix` says decided in `chain`, the chain it names. `None` when the chain has no
/// rule of the prefix's hash that logs (it changed since the packet was logged).
pub fn decided<'a>(prefix: &LogPrefix<'_>, chain: &'a Chain) -> Option<Decided<'a>> {
    let Some(hash) = prefix.rule else {
        return Some(Decided {
            allowed: false,
            tier: chain.tier,
            policies: chain.policies.clone(),
            rule: None,
        });
    };
    let rule = chain.rules.iter().find(|r| rule_hash(r) == hash)?;
    let allowed = match rule.verdict {
        RuleVerdict::Allow => true,
        RuleVerdict::Deny => false,
        // A Pass has no log rule: the chain it goes to logs.
        RuleVerdict::Goto(_) => return None,
    };
    Some(Decided {
        allowed,
        tier: chain.tier,
        policies: vec![rule.policy.clone()],
        rule: Some(rule),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::render::rule_prefix;
    use podwall_policy::ruleset::{PeerMatch, PortMatch};
    use podwall_policy::{Direction, End};

    fn rule(policy: &PolicyKey, index: usize, verdict: RuleVerdict, log: bool) -> Rule {
        Rule {
            family: None,
            peer: PeerMatch::Any,
            ports: PortMatch::Any,
            policy: policy.clone(),
            index,
            log,
            verdict,
        }
    }

    fn chain(tier: PolicyTier, policies: &[PolicyKey], rules: Vec<Rule>, end: End) -> Chain {
        Chain {
            direction: Direction::Ingress,
            policies: policies.to_vec(),
            rules,
            end,
            tier,
        }
    }

    fn read<'a>(prefix: &str, chain: &'a Chain) -> Option<Decided<'a>> {
        decided(
            &LogPrefix::parse(prefix).expect("a prefix podwall writes"),
            chain,
        )
    }

    #[test]
    fn a_cluster_policys_deny_is_told_by_its_tier_policy_and_rule() {
        let (first, guard) = (PolicyKey::new("", "first"), PolicyKey::new("", "guard"));
        let pass = rule(&first, 0, RuleVerdict::Goto("in_np".into()), false);
        let deny = rule(&guard, 1, RuleVerdict::Deny, false);
        let admin = chain(
            PolicyTier::Admin,
            &[first, guard.clone()],
            vec![pass, deny.clone()],
            End::Goto("in_np".into()),
        );
        assert_eq!(
            read(&rule_prefix("in_t", &deny), &admin),
            Some(Decided {
                allowed: false,
                tier: PolicyTier::Admin,
                policies: vec![guard.clone()],
                rule: Some(&deny),
            })
        );
        let baseline = Chain {
            tier: PolicyTier::Baseline,
            end: End::Return,
            ..admin.clone()
        };
        let said = read(&rule_prefix("in_t", &deny), &baseline).expect("the Deny");
        assert_eq!(
            (said.tier, said.policies),
            (PolicyTier::Baseline, vec![guard])
        );
        // A rule the chain no longer has: a change landed after the packet was logged.
        let gone = rule(&PolicyKey::new("", "gone"), 0, RuleVerdict::Deny, false);
        assert_eq!(read(&rule_prefix("in_t", &gone), &admin), None);
    }

    #[test]
    fn a_network_policy_chain_drops_for_all_its_policies_and_allows_for_one() {
        let (db, all) = (PolicyKey::new("shop", "db"), PolicyKey::new("shop", "all"));
        let allow = rule(&db, 0, RuleVerdict::Allow, true);
        let np = chain(
            PolicyTier::NetworkPolicy,
            &[all.clone(), db.clone()],
            vec![allow.clone()],
            End::Drop,
        );
        assert_eq!(
            read("in_n", &np),
            Some(Decided {
                allowed: false,
                tier: PolicyTier::NetworkPolicy,
                policies: vec![all, db.clone()],
                rule: None,
            })
        );
        assert_eq!(
            read(&rule_prefix("in_n", &allow), &np),
            Some(Decided {
                allowed: true,
                tier: PolicyTier::NetworkPolicy,
                policies: vec![db],
                rule: Some(&allow),
            })
        );
    }
}
