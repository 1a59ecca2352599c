//! A change of the table's structure (a policy added, changed or removed, the first pod of a
//! new policy group) as one netlink batch that adds and deletes only the sets, chains and
//! rules that change, with the element changes of the same step: cost follows the change,
//! not the table, and the kernel still applies it all or nothing. Pure; the socket is
//! `netlink::NftSocket`.
//!
//! A chain whose rules change is flushed and refilled inside the batch, so no rule handle
//! is ever needed; a set replaced whole (an interval set) is flushed and refilled the same
//! way, because its rules keep referring to it.

use std::collections::{BTreeMap, BTreeSet};

use podwall_policy::ruleset::Rule as PolicyRule;
use podwall_policy::{Chain, End, Set};

use super::batch::{Batch, Sink};
use super::elements::{push_elements, ElementOp, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_TABLE};
use super::encode;
use super::exprs::{self, Expr};
use super::names::TABLE;
use super::netlink::{
    c_string, push_attr, push_nested, push_str, NFPROTO_INET, NFT_MSG_DELCHAIN, NFT_MSG_DELRULE,
    NFT_MSG_DELSET, NFT_MSG_DELSETELEM, NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE, NLM_F_APPEND,
    NLM_F_CREATE,
};
use super::render::rule_log_prefix;
use super::sets::{push_port_set, push_set, push_set_elements, set_elements};
use super::shape::RuleShape;
use super::Logging;

/// What changes in the table's structure, and the element changes that go with it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Structure {
    /// Sets created, with their elements.
    pub new_sets: BTreeMap<String, Set>,
    /// Sets that stay but are replaced whole: flushed and refilled.
    pub refilled_sets: BTreeMap<String, Set>,
    /// Chains created, or whose rules are replaced.
    pub chains: BTreeMap<String, ChainChange>,
    /// Element changes of existing sets and maps (the dispatch to new chains among them).
    pub elements: Vec<ElementOp>,
    /// In the order the kernel can delete them: a chain another one goes to (a tier's rest)
    /// after that one.
    pub removed_chains: Vec<String>,
    pub removed_sets: BTreeSet<String>,
    /// Whether the chains log their drops.
    pub logging: Option<Logging>,
}

/// A chain's new rules: the policy chain, and each of its rules resolved to its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainChange {
    /// Whether the chain is created (else it exists and is flushed first).
    pub new: bool,
    pub chain: Chain,
    pub shapes: Vec<RuleShape>,
}

/// The batch for `structure`, in the order the kernel needs within one transaction: what is
/// referred to exists before what refers to it, and nothing is deleted while referred to.
pub fn batch(structure: &Structure) -> Batch {
    let mut batch = Batch::default();
    let mut set_id = 0;
    push_sets(&mut batch, structure, &mut set_id);
    push_rest(&mut batch, structure, &mut set_id);
    batch
}

/// `structure`'s sets, after what `batch` holds; `set_id` is the last id a set of the batch
/// took (every set a batch creates needs an id of its own in the batch).
pub(super) fn push_sets(batch: &mut dyn Sink, structure: &Structure, set_id: &mut u32) {
    for (name, set) in &structure.new_sets {
        *set_id += 1;
        push_set(batch, name, set, *set_id);
    }
    for (name, set) in &structure.refilled_sets {
        // DELSETELEM without elements empties the set.
        let mut body = Vec::new();
        push_attr(&mut body, NFTA_SET_ELEM_LIST_TABLE, &c_string(TABLE));
        push_attr(&mut body, NFTA_SET_ELEM_LIST_SET, &c_string(name));
        batch.push(
            NFT_MSG_DELSETELEM,
            0,
            NFPROTO_INET,
            body,
            format!("flush of set {name}"),
        );
        push_set_elements(batch, NFPROTO_INET, name, None, set_elements(set));
    }
}

/// The rest of `structure` after its sets: chains, rules, elements, deletions.
pub(super) fn push_rest(batch: &mut dyn Sink, structure: &Structure, set_id: &mut u32) {
    for (name, change) in &structure.chains {
        if change.new {
            push_chain(batch, name);
        } else {
            // DELRULE without a handle empties the chain.
            let mut body = Vec::new();
            push_attr(&mut body, 1, &c_string(TABLE)); // NFTA_RULE_TABLE
            push_attr(&mut body, 2, &c_string(name)); // NFTA_RULE_CHAIN
            let what = format!("flush of chain {name}");
            batch.push(NFT_MSG_DELRULE, 0, NFPROTO_INET, body, what);
        }
    }
    for (name, change) in &structure.chains {
        let rules = (change.shapes.iter()).zip(&change.chain.rules);
        push_rules(
            batch,
            set_id,
            (name, &change.chain.end),
            rules,
            structure.logging,
        );
    }
    push_elements(batch, &structure.elements);
    for name in &structure.removed_chains {
        // The kernel deletes a chain's rules with it.
        let mut body = Vec::new();
        push_attr(&mut body, 1, &c_string(TABLE)); // NFTA_CHAIN_TABLE
        push_attr(&mut body, 3, &c_string(name)); // NFTA_CHAIN_NAME
        batch.push(
            NFT_MSG_DELCHAIN,
            0,
            NFPROTO_INET,
            body,
            format!("deletion of chain {name}"),
        );
    }
    for name in &structure.removed_sets {
        let mut body = Vec::new();
        push_attr(&mut body, 1, &c_string(TABLE)); // NFTA_SET_TABLE
        push_attr(&mut body, 2, &c_string(name)); // NFTA_SET_NAME
        batch.push(
            NFT_MSG_DELSET,
            0,
            NFPROTO_INET,
            body,
            format!("deletion of set {name}"),
        );
    }
}

/// NEWCHAIN for a regular chain of the `inet` table.
pub(super) fn push_chain(batch: &mut dyn Sink, name: &str) {
    let mut body = Vec::new();
    push_attr(&mut body, 1, &c_string(TABLE)); // NFTA_CHAIN_TABLE
    push_attr(&mut body, 3, &c_string(name)); // NFTA_CHAIN_NAME
    let what = format!("new chain {name}");
    batch.push(NFT_MSG_NEWCHAIN, NLM_F_CREATE, NFPROTO_INET, body, what);
}

/// The rules of a pod chain (`chain` is its name and end), each policy rule with its shape,
/// logging as `logging` says.
pub(super) fn push_rules<'a>(
    batch: &mut dyn Sink,
    set_id: &mut u32,
    (name, end): (&str, &End),
    rules: impl Iterator<Item = (&'a RuleShape, &'a PolicyRule)>,
    logging: Option<Logging>,
) {
    push_rule(batch, NFPROTO_INET, name, &exprs::invalid_drop(), None);
    push_rule(batch, NFPROTO_INET, name, &exprs::midstream_drop(), None);
    for (shape, policy_rule) in rules {
        let log = rule_log_prefix(name, policy_rule, logging);
        if let (Some(prefix), Some(logging)) = (log, logging) {
            let rule = exprs::logged_allow(shape, *set_id + 1, logging, &prefix);
            push_rule_with_set(batch, set_id, name, rule, None);
        }
        let rule = exprs::rule(shape, *set_id + 1, &policy_rule.verdict);
        push_rule_with_set(batch, set_id, name, rule, Some(&shape.comment));
    }
    if let (Some(logging), End::Drop) = (logging, end) {
        push_rule(batch, NFPROTO_INET, name, &exprs::log(logging, name), None);
    }
    push_rule(batch, NFPROTO_INET, name, &exprs::chain_end(end), None);
}

/// A rule, after the anonymous port set it reads, if any: the rule was built to read set
/// `*set_id + 1` of the batch.
fn push_rule_with_set(
    batch: &mut dyn Sink,
    set_id: &mut u32,
    chain: &str,
    rule: exprs::RuleExprs,
    comment: Option<&str>,
) {
    if let Some(ranges) = &rule.anonymous_set {
        *set_id += 1;
        push_port_set(batch, *set_id, ranges);
    }
    push_rule(batch, NFPROTO_INET, chain, &rule.exprs, comment);
}

/// NEWRULE appending `exprs` to `chain` of the `family` table.
pub(super) fn push_rule(
    batch: &mut dyn Sink,
    family: u8,
    chain: &str,
    exprs: &[Expr],
    comment: Option<&str>,
) {
    let mut body = Vec::new();
    push_str(&mut body, 1, TABLE); // NFTA_RULE_TABLE
    push_str(&mut body, 2, chain); // NFTA_RULE_CHAIN
    push_nested(&mut body, 4, |list| encode::encode_into(list, exprs)); // NFTA_RULE_EXPRESSIONS
    if let Some(comment) = comment {
        push_attr(&mut body, 7, &encode::comment_userdata(comment)); // NFTA_RULE_USERDATA
    }
    let what = format!("rule {} of chain {chain}", comment.unwrap_or("(fixed)"));
    batch.push(
        NFT_MSG_NEWRULE,
        NLM_F_CREATE | NLM_F_APPEND,
        family,
        body,
        what,
    );
}
