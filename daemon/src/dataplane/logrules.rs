//! The text of a pod chain's log rules and verdicts: which rules log (what a policy that
//! logs allows, what a ClusterNetworkPolicy denies) and under which prefix, which the drop
//! log reads back ([`LogPrefix`]) to name the rule or the chain that decided.

use podwall_policy::ruleset::Rule as PolicyRule;
use podwall_policy::RuleVerdict;

use super::render::rule_comment;
use super::Logging;

/// A rule's verdict as nft writes it.
pub(super) fn verdict_text(verdict: &RuleVerdict) -> String {
    match verdict {
        RuleVerdict::Allow => "return".to_string(),
        RuleVerdict::Deny => "drop".to_string(),
        RuleVerdict::Goto(chain) => format!("goto {chain}"),
    }
}

/// The prefix of the log rule before `rule`, if it has one: what it allows when its policy
/// logs that, what it denies (a ClusterNetworkPolicy's Deny) whenever the chains log. Both
/// name the rule, not just the chain, so that a Deny's line names its own policy rather
/// than every policy of the chain.
pub fn rule_log_prefix(chain: &str, rule: &PolicyRule, logging: Option<Logging>) -> Option<String> {
    logging?;
    match rule.verdict {
        RuleVerdict::Allow if rule.log => Some(rule_prefix(chain, rule)),
        RuleVerdict::Deny => Some(rule_prefix(chain, rule)),
        _ => None,
    }
}

/// A log rule: `prefix` is the chain's name (its drops) or `rule_prefix` (what a rule
/// allows or denies), which the drop log reads back to name the policies.
pub fn log_text(logging: Logging, prefix: &str) -> String {
    let Logging { group, rate } = logging;
    format!("limit rate {rate}/second burst {rate} packets log prefix \"{prefix}\" group {group}")
}

/// The log prefix of `rule` of `chain`: the chain, and [`rule_hash`].
pub fn rule_prefix(chain: &str, rule: &PolicyRule) -> String {
    format!("{chain} {:016x}", rule_hash(rule))
}

/// A hash of the rule's comment: a prefix is at most 127 bytes, and a comment may be 128.
pub fn rule_hash(rule: &PolicyRule) -> u64 {
    podwall_policy::ruleset::names::stable_hash(rule_comment(rule).as_bytes())
}

/// What the prefix of a logged packet names: the end of `chain` (its drops), or the rule of
/// that chain whose [`rule_hash`] is `rule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPrefix<'a> {
    pub chain: &'a str,
    pub rule: Option<u64>,
}

impl<'a> LogPrefix<'a> {
    /// Reads a prefix podwall's log rules write; `None` for any other text (another
    /// program's rule logging to the same group).
    pub fn parse(text: &'a str) -> Option<Self> {
        let (chain, rule) = match text.split_once(' ') {
            Some((chain, hash)) => (chain, Some(hash)),
            None => (text, None),
        };
        let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
        if chain.is_empty() || !chain.chars().all(is_name) {
            return None;
        }
        let rule = match rule {
            None => None,
            // Exactly what `rule_prefix` writes: `from_str_radix` alone would take a sign.
            Some(hash)
                if hash.len() == 16 && hash.bytes().all(|b| b"0123456789abcdef".contains(&b)) =>
            {
                Some(u64::from_str_radix(hash, 16).ok()?)
            }
            Some(_) => return None,
        };
        Some(LogPrefix { chain, rule })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podwall_policy::ruleset::{PeerMatch, PortMatch};
    use podwall_policy::PolicyKey;

    const LOGGING: Option<Logging> = Some(Logging {
        group: 1027,
        rate: 1000,
    });

    fn rule(verdict: RuleVerdict, log: bool) -> PolicyRule {
        PolicyRule {
            family: None,
            peer: PeerMatch::Any,
            ports: PortMatch::Any,
            policy: PolicyKey::new("", "guard"),
            index: 2,
            log,
            verdict,
        }
    }

    #[test]
    fn a_deny_and_a_logged_allow_name_their_rule_and_nothing_else_logs() {
        let deny = rule(RuleVerdict::Deny, false);
        let prefix = rule_log_prefix("in_a", &deny, LOGGING).expect("a Deny logs");
        assert_eq!(prefix, rule_prefix("in_a", &deny));
        assert_eq!(
            LogPrefix::parse(&prefix),
            Some(LogPrefix {
                chain: "in_a",
                rule: Some(rule_hash(&deny))
            })
        );
        let allow = rule(RuleVerdict::Allow, true);
        assert_eq!(
            rule_log_prefix("in_a", &allow, LOGGING),
            Some(rule_prefix("in_a", &allow))
        );
        let next = PolicyRule {
            index: 3,
            ..deny.clone()
        };
        assert_ne!(rule_hash(&next), rule_hash(&deny), "each rule its own");
        for silent in [
            rule(RuleVerdict::Allow, false),
            rule(RuleVerdict::Goto("in_b".into()), false),
        ] {
            assert_eq!(rule_log_prefix("in_a", &silent, LOGGING), None);
        }
        assert_eq!(rule_log_prefix("in_a", &deny, None), None, "the log is off");
    }

    #[test]
    fn a_prefix_names_a_chain_or_one_of_its_rules_and_nothing_else_reads() {
        assert_eq!(
            LogPrefix::parse("out_0123456789abcdef"),
            Some(LogPrefix {
                chain: "out_0123456789abcdef",
                rule: None
            })
        );
        assert_eq!(
            LogPrefix::parse("in_0 00000000000000ff"),
            Some(LogPrefix {
                chain: "in_0",
                rule: Some(255)
            })
        );
        for foreign in [
            "",
            " ",
            "in_a ",
            " 0123456789abcdef",
            "in_a 0123456789abcde",
            "in_a 0123456789abcdef0",
            "in_a +123456789abcdef",
            "in_a 0123456789ABCDEF",
            "in_a 0123456789abcdeg",
            "in_a 0123456789abcdef x",
            "in_a  0123456789abcdef",
            "in-a",
            "in_a\u{0}",
            "dropped: ",
            "in_é",
        ] {
            assert_eq!(LogPrefix::parse(foreign), None, "{foreign:?}");
        }
    }
}
