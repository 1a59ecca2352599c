//! The packet counts of the pod chains' rules, read back over netlink: each policy rule and
//! each chain's final drop carries a `counter`. Rules only are listed (no set elements), so a
//! read costs the same at any cluster size.
//!
//! The kernel's counters start at zero whenever a rule is created again (a chain refilled,
//! the table swapped). A rule created again in the same table has a new handle (the kernel
//! numbers a table's rules and never reuses a number); a table swapped in whole numbers its
//! rules anew, but has a new handle itself. `Tally` turns the readings into totals that only
//! grow, as Prometheus counters must.

use std::collections::BTreeMap;

use podwall_policy::{Direction, End, PolicyKey, PolicyTier, RuleVerdict, Ruleset};

use super::names::TABLE;
use super::netlink::{
    attribute, attributes, c_string, push_attr, NftSocket, NFPROTO_INET, NFT_MSG_GETRULE,
};
use super::render::rule_comment;
use super::DataplaneError;

const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
/// `NFTNL_UDATA_RULE_COMMENT`
const UDATA_COMMENT: u8 = 0;

/// One counted rule as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCount {
    pub chain: String,
    pub handle: u64,
    /// The policy rule's comment (`ns/name#index`); `None` for a chain's final drop.
    pub comment: Option<String>,
    pub packets: u64,
    pub bytes: u64,
}

/// One reading: the policy table it was taken of (its handle) and its counted rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub table: u64,
    pub rules: Vec<RuleCount>,
}

/// Every counted rule of podwall's policy table, in the kernel's order; `None` when there is
/// no table, or it was swapped while it was being read (the next reading counts it).
pub fn read(socket: &mut NftSocket) -> Result<Option<Reading>, DataplaneError> {
    let before = table_handle(socket)?;
    let mut attrs = Vec::new();
    push_attr(&mut attrs, NFTA_RULE_TABLE, &c_string(TABLE));
    let messages = socket.dump(
        "the rules of table inet podwall",
        NFT_MSG_GETRULE,
        NFPROTO_INET,
        &attrs,
    )?;
    let after = table_handle(socket)?;
    Ok(before.filter(|b| after == Some(*b)).map(|table| Reading {
        table,
        rules: messages.iter().filter_map(|m| rule_count(m)).collect(),
    }))
}

fn table_handle(socket: &mut NftSocket) -> Result<Option<u64>, DataplaneError> {
    Ok((socket.tables()?.into_iter())
        .find(|t| t.family == NFPROTO_INET && t.name == TABLE)
        .map(|t| t.handle))
}

/// The count of a rule message that has a counter. Never panics on what it reads.
pub fn rule_count(message: &[u8]) -> Option<RuleCount> {
    let attrs = message.get(20..)?; // nlmsghdr, nfgenmsg
    let chain = attribute(attrs, NFTA_RULE_CHAIN)?;
    let chain = std::str::from_utf8(chain.strip_suffix(&[0]).unwrap_or(chain)).ok()?;
    let exprs = attribute(attrs, NFTA_RULE_EXPRESSIONS)?;
    let counter = attributes(exprs)
        .filter(|(kind, _)| *kind == NFTA_LIST_ELEM)
        .find(|(_, elem)| attribute(elem, NFTA_EXPR_NAME) == Some(b"counter\0"))
        .and_then(|(_, elem)| attribute(elem, NFTA_EXPR_DATA))?;
    let value = |kind| {
        let bytes = attribute(counter, kind)?.get(..8)?;
        Some(u64::from_be_bytes(bytes.try_into().ok()?))
    };
    let handle = attribute(attrs, NFTA_RULE_HANDLE)?.get(..8)?;
    Some(RuleCount {
        chain: chain.to_string(),
        handle: u64::from_be_bytes(handle.try_into().ok()?),
        comment: attribute(attrs, NFTA_RULE_USERDATA).and_then(comment),
        packets: value(NFTA_COUNTER_PACKETS)?,
        bytes: value(NFTA_COUNTER_BYTES)?,
    })
}

/// The comment in a rule's user data: type-length-value records, the comment NUL-ended.
pub(super) fn comment(mut udata: &[u8]) -> Option<String> {
    while let [kind, len, rest @ ..] = udata {
        let (value, after) = rest.split_at_checked(usize::from(*len))?;
        if *kind == UDATA_COMMENT {
            let text = value.strip_suffix(&[0]).unwrap_or(value);
            return std::str::from_utf8(text).ok().map(str::to_string);
        }
        udata = after;
    }
    None
}

/// Totals that only grow, from readings of counters that restart at zero when their rule is
/// created again (under a new rule handle, or in a new table).
#[derive(Debug, Default)]
pub struct Tally {
    /// The table the last reading was of.
    table: Option<u64>,
    /// Each rule's packets at the last reading, by rule handle.
    last: BTreeMap<u64, u64>,
    /// The next reading only sets the baseline (see `resumed`).
    resuming: bool,
}

impl Tally {
    /// A tally that lost its predecessor's readings: its first reading counts nothing, so
    /// that no packet already in the totals is counted twice.
    pub fn resumed() -> Self {
        Tally {
            resuming: true,
            ..Tally::default()
        }
    }

    /// The packets each rule of `reading` counted since the last reading: all of them for a
    /// rule not seen before.
    pub fn packets_since<'a>(&mut self, reading: &'a Reading) -> Vec<(&'a RuleCount, u64)> {
        let same_table = self.table.replace(reading.table) == Some(reading.table);
        let last = std::mem::take(&mut self.last);
        let counted = (reading.rules.iter())
            .map(|count| {
                let before = match last.get(&count.handle) {
                    Some(before) if same_table => *before,
                    _ if self.resuming => count.packets,
                    _ => 0,
                };
                self.last.insert(count.handle, count.packets);
                (count, count.packets.saturating_sub(before))
            })
            .collect();
        self.resuming = false;
        counted
    }
}

/// What a count is for: a policy of a tier (a ClusterNetworkPolicy's key has no namespace),
/// in one direction.
pub type Counted = (PolicyTier, PolicyKey, Direction);

/// Packets counted since the last reading, by what they say of the policies.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ByPolicy {
    /// Allowed by a rule of the policy (by the first rule that matched: a flow two
    /// policies allow is counted for the one whose rule comes first in the chain).
    pub allowed: BTreeMap<Counted, u64>,
    /// Dropped by a ClusterNetworkPolicy's Deny rule, or at the end of a chain the policy
    /// isolates: none of its policies allowed it. Every isolating policy counts such a packet.
    pub denied: BTreeMap<Counted, u64>,
    /// Dropped at the end of a chain, by direction (ingress, egress): each packet once.
    pub drops: [u64; 2],
}

/// What `deltas` (a reading, with the packets each rule counted since the last) say of the
/// policies of `ruleset`, the table the kernel holds. A rule the ruleset does not know (a
/// change landed between the reading and now) is left out: its packets are counted at the
/// next reading's rule.
pub fn by_policy(ruleset: &Ruleset, deltas: &[(&RuleCount, u64)]) -> ByPolicy {
    let mut out = ByPolicy::default();
    for (count, packets) in deltas.iter().filter(|(_, p)| *p > 0) {
        let Some(chain) = ruleset.chains.get(&count.chain) else {
            continue;
        };
        let direction = chain.direction;
        // A chain holds the policies of one tier: its rules and its end count for that tier.
        let key = |policy: &PolicyKey| (chain.tier, policy.clone(), direction);
        let drops = &mut out.drops[usize::from(direction == Direction::Egress)];
        match &count.comment {
            Some(comment) => {
                let owner = chain.rules.iter().find(|r| rule_comment(r) == *comment);
                match owner.map(|r| (r, &r.verdict)) {
                    Some((rule, RuleVerdict::Allow)) => {
                        *out.allowed.entry(key(&rule.policy)).or_default() += packets;
                    }
                    // A ClusterNetworkPolicy's Deny: that policy denied it.
                    Some((rule, RuleVerdict::Deny)) => {
                        *drops += packets;
                        *out.denied.entry(key(&rule.policy)).or_default() += packets;
                    }
                    // A Pass: the next tier's chain counts it.
                    Some((_, RuleVerdict::Goto(_))) | None => {}
                }
            }
            // The end of a chain that drops; a tier chain that returns or goes on does not.
            None if chain.end == End::Drop => {
                *drops += packets;
                for policy in &chain.policies {
                    *out.denied.entry(key(policy)).or_default() += packets;
                }
            }
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::encode::{comment_userdata, encode};
    use super::super::exprs::{self, Expr};
    use super::super::netlink::{push_message, NLA_F_NESTED};
    use super::*;

    /// A rule message as the kernel lists one: counters filled in.
    fn rule(chain: &str, comment: Option<&str>, packets: u64) -> Vec<u8> {
        let mut counter = Vec::new();
        push_attr(
            &mut counter,
            NFTA_COUNTER_BYTES,
            &(packets * 60).to_be_bytes(),
        );
        push_attr(&mut counter, NFTA_COUNTER_PACKETS, &packets.to_be_bytes());
        let mut elem = Vec::new();
        push_attr(&mut elem, NFTA_EXPR_NAME, &c_string("counter"));
        push_attr(&mut elem, NFTA_EXPR_DATA | NLA_F_NESTED, &counter);
        let mut encoded = Vec::new();
        push_attr(&mut encoded, NFTA_LIST_ELEM | NLA_F_NESTED, &elem);
        encoded.extend(encode(&[Expr::Verdict(exprs::NF_DROP)]));
        let mut attrs = Vec::new();
        push_attr(&mut attrs, NFTA_RULE_TABLE, &c_string(TABLE));
        push_attr(&mut attrs, NFTA_RULE_CHAIN, &c_string(chain));
        push_attr(&mut attrs, NFTA_RULE_HANDLE, &42u64.to_be_bytes());
        push_attr(&mut attrs, NFTA_RULE_EXPRESSIONS | NLA_F_NESTED, &encoded);
        if let Some(comment) = comment {
            push_attr(&mut attrs, NFTA_RULE_USERDATA, &comment_userdata(comment));
        }
        let mut message = Vec::new();
        push_message(&mut message, (10 << 8) | 6, 0, 1, NFPROTO_INET, 0, &attrs);
        message
    }

    #[test]
    fn a_rule_message_gives_its_chain_comment_and_counts() {
        let count = rule_count(&rule("in_1", Some("x/allow#0"), 7)).expect("a count");
        assert_eq!(
            count,
            RuleCount {
                chain: "in_1".into(),
                handle: 42,
                comment: Some("x/allow#0".into()),
                packets: 7,
                bytes: 420
            }
        );
        let drop = rule_count(&rule("in_1", None, 3)).expect("a count");
        assert_eq!((drop.comment, drop.packets), (None, 3));
        let message = rule("in_1", Some("x/allow#0"), 7);
        for cut in 0..message.len() {
            let _ = rule_count(&message[..cut]);
        }
    }

    #[test]
    fn totals_grow_across_a_rule_or_a_table_created_again() {
        let count = |handle, packets| RuleCount {
            chain: "in_1".into(),
            handle,
            comment: None,
            packets,
            bytes: 0,
        };
        let reading = |table, rules: Vec<RuleCount>| Reading { table, rules };
        let deltas = |tally: &mut Tally, reading: &Reading| -> Vec<u64> {
            tally
                .packets_since(reading)
                .iter()
                .map(|(_, d)| *d)
                .collect()
        };
        let mut tally = Tally::default();
        assert_eq!(
            deltas(&mut tally, &reading(1, vec![count(1, 5), count(2, 2)])),
            [5, 2]
        );
        assert_eq!(
            deltas(&mut tally, &reading(1, vec![count(1, 9), count(2, 2)])),
            [4, 0]
        );
        // The chain was refilled: new rules, new handles, counting from zero, and one that
        // counted more than its predecessor had is still counted whole.
        assert_eq!(
            deltas(&mut tally, &reading(1, vec![count(3, 12), count(4, 1)])),
            [12, 1]
        );
        // The table was swapped in whole: its rules are numbered anew, from the same handles.
        assert_eq!(
            deltas(&mut tally, &reading(2, vec![count(3, 20), count(4, 1)])),
            [20, 1]
        );
        let mut resumed = Tally::resumed();
        assert_eq!(
            deltas(&mut resumed, &reading(2, vec![count(3, 20)])),
            [0],
            "baseline first"
        );
        assert_eq!(deltas(&mut resumed, &reading(2, vec![count(3, 25)])), [5]);
    }

    #[test]
    fn counts_are_told_by_policy_and_drops_by_every_isolating_policy() {
        let desired = super::super::render::tests::world_desired();
        let ruleset = &desired.ruleset;
        let (name, chain) = (ruleset.chains.iter())
            .find(|(_, c)| !c.rules.is_empty())
            .expect("a chain with rules");
        let rule = &chain.rules[0];
        let count = |comment: Option<String>, handle| RuleCount {
            chain: name.clone(),
            handle,
            comment,
            packets: 0,
            bytes: 0,
        };
        let (allow, drop, stranger) = (
            count(Some(rule_comment(rule)), 1),
            count(None, 2),
            RuleCount {
                chain: "in_gone".into(),
                ..count(None, 3)
            },
        );
        let counted = by_policy(ruleset, &[(&allow, 4), (&drop, 3), (&stranger, 9)]);
        let (direction, tier) = (chain.direction, PolicyTier::NetworkPolicy);
        assert_eq!(
            counted.allowed,
            [((tier, rule.policy.clone(), direction), 4)].into()
        );
        assert_eq!(
            counted.denied,
            (chain.policies.iter())
                .map(|p| ((tier, p.clone(), direction), 3))
                .collect()
        );
        assert_eq!(
            counted.drops.iter().sum::<u64>(),
            3,
            "a chain the table lacks is left out"
        );
    }

    #[test]
    fn a_tier_chain_counts_its_denies_and_not_what_it_passes_on() {
        use podwall_policy::ruleset::{PeerMatch, PortMatch, Rule};
        let rule = |index, verdict| Rule {
            family: None,
            peer: PeerMatch::Any,
            ports: PortMatch::Any,
            policy: PolicyKey::new("", "guard"),
            index,
            log: false,
            verdict,
        };
        let (deny, pass) = (
            rule(0, RuleVerdict::Deny),
            rule(1, RuleVerdict::Goto("in_np".into())),
        );
        let mut ruleset = Ruleset::default();
        ruleset.chains.insert(
            "in_t".into(),
            podwall_policy::Chain {
                direction: Direction::Ingress,
                policies: vec![PolicyKey::new("", "guard")],
                rules: vec![deny.clone(), pass.clone()],
                end: End::Goto("in_np".into()),
                tier: PolicyTier::Admin,
            },
        );
        let count = |comment: Option<String>, handle| RuleCount {
            chain: "in_t".into(),
            handle,
            comment,
            packets: 0,
            bytes: 0,
        };
        let (denied, passed, end) = (
            count(Some(rule_comment(&deny)), 1),
            count(Some(rule_comment(&pass)), 2),
            count(None, 3),
        );
        let counted = by_policy(&ruleset, &[(&denied, 5), (&passed, 6), (&end, 7)]);
        assert!(counted.allowed.is_empty(), "{counted:?}");
        let guard = PolicyKey::new("", "guard");
        assert_eq!(
            counted.denied,
            [((PolicyTier::Admin, guard, Direction::Ingress), 5)].into(),
            "counted for the tier of the chain whose rule denied"
        );
        assert_eq!(
            counted.drops,
            [5, 0],
            "what the chain goes on with is not a drop"
        );
    }
}
