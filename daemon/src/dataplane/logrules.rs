//! The text of a pod chain's log rules and verdicts: which rules log (what a policy that
//! logs allows, what a ClusterNetworkPolicy denies) and under which prefix, which the drop
//! log reads back to name the policies.

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
/// logs that, what it denies (a ClusterNetworkPolicy's Deny, logged as the chain's drops
/// are) whenever the chains log.
pub fn rule_log_prefix(chain: &str, rule: &PolicyRule, logging: Option<Logging>) -> Option<String> {
    logging?;
    match rule.verdict {
        RuleVerdict::Allow if rule.log => Some(allow_log_prefix(chain, rule)),
        RuleVerdict::Deny => Some(chain.to_string()),
        _ => None,
    }
}

/// A log rule: `prefix` is the chain's name (its drops) or `allow_log_prefix` (what a rule
/// allows), which the drop log reads back to name the policies.
pub fn log_text(logging: Logging, prefix: &str) -> String {
    let Logging { group, rate } = logging;
    format!("limit rate {rate}/second burst {rate} packets log prefix \"{prefix}\" group {group}")
}

/// The log prefix of `rule` of `chain` when its policy logs what it allows: the chain, and a
/// hash of the rule's comment (a prefix is at most 127 bytes; a comment may be 128).
pub fn allow_log_prefix(chain: &str, rule: &PolicyRule) -> String {
    let comment = rule_comment(rule);
    let hash = podwall_policy::ruleset::names::stable_hash(comment.as_bytes());
    format!("{chain} {hash:016x}")
}
