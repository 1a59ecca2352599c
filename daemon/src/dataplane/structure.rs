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
use std::net::IpAddr;

use podwall_policy::{Chain, End, Family, Set};

use super::elements::{
    element_lists, push_elements, ElementOp, Key, NFTA_DATA_VALUE, NFTA_SET_ELEM_KEY,
    NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_TABLE,
    NFT_MSG_DELSETELEM, NFT_MSG_NEWSETELEM,
};
use super::exprs::{self, Expr, ANONYMOUS_SET};
use super::names::TABLE;
use super::netlink::{
    c_string, push_attr, Batch, NFPROTO_INET, NLA_F_NESTED, NLM_F_APPEND, NLM_F_CREATE,
};
use super::render::rule_log_prefix;
use super::shape::RuleShape;
use super::Logging;

const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_DELSET: u16 = 11;

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
    // Every set a batch creates needs an id of its own in the batch.
    let mut set_id = 0;
    for (name, set) in &structure.new_sets {
        set_id += 1;
        push_set(&mut batch, name, set, set_id);
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
        push_set_elements(&mut batch, name, None, set_elements(set));
    }
    for (name, change) in &structure.chains {
        let kind = if change.new {
            NFT_MSG_NEWCHAIN
        } else {
            NFT_MSG_DELRULE
        };
        let (flags, what) = if change.new {
            (NLM_F_CREATE, format!("new chain {name}"))
        } else {
            // DELRULE without a handle empties the chain.
            (0, format!("flush of chain {name}"))
        };
        let mut body = Vec::new();
        push_attr(&mut body, 1, &c_string(TABLE)); // NFTA_CHAIN_TABLE / NFTA_RULE_TABLE
                                                   // NFTA_CHAIN_NAME is 3, NFTA_RULE_CHAIN is 2.
        push_attr(&mut body, if change.new { 3 } else { 2 }, &c_string(name));
        batch.push(kind, flags, NFPROTO_INET, body, what);
    }
    for (name, change) in &structure.chains {
        push_rule(&mut batch, name, &exprs::invalid_drop(), None);
        push_rule(&mut batch, name, &exprs::midstream_drop(), None);
        for (shape, policy_rule) in change.shapes.iter().zip(&change.chain.rules) {
            let log = rule_log_prefix(name, policy_rule, structure.logging);
            if let (Some(prefix), Some(logging)) = (log, structure.logging) {
                let rule = exprs::logged_allow(shape, set_id + 1, logging, &prefix);
                push_rule_with_set(&mut batch, &mut set_id, name, rule, None);
            }
            let rule = exprs::rule(shape, set_id + 1, &policy_rule.verdict);
            push_rule_with_set(&mut batch, &mut set_id, name, rule, Some(&shape.comment));
        }
        if let (Some(logging), End::Drop) = (structure.logging, &change.chain.end) {
            push_rule(&mut batch, name, &exprs::log(logging, name), None);
        }
        push_rule(&mut batch, name, &exprs::chain_end(&change.chain.end), None);
    }
    push_elements(&mut batch, &structure.elements);
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
    batch
}

/// A rule, after the anonymous port set it reads, if any: the rule was built to read set
/// `*set_id + 1` of the batch.
fn push_rule_with_set(
    batch: &mut Batch,
    set_id: &mut u32,
    chain: &str,
    rule: exprs::RuleExprs,
    comment: Option<&str>,
) {
    if let Some(ranges) = &rule.anonymous_set {
        *set_id += 1;
        push_port_set(batch, *set_id, ranges);
    }
    push_rule(batch, chain, &rule.exprs, comment);
}

fn push_rule(batch: &mut Batch, chain: &str, exprs: &[Expr], comment: Option<&str>) {
    let mut body = Vec::new();
    push_attr(&mut body, 1, &c_string(TABLE)); // NFTA_RULE_TABLE
    push_attr(&mut body, 2, &c_string(chain)); // NFTA_RULE_CHAIN
    push_attr(&mut body, 4 | NLA_F_NESTED, &exprs::encode(exprs)); // NFTA_RULE_EXPRESSIONS
    if let Some(comment) = comment {
        push_attr(&mut body, 7, &exprs::comment_userdata(comment)); // NFTA_RULE_USERDATA
    }
    let what = format!("rule {} of chain {chain}", comment.unwrap_or("(fixed)"));
    batch.push(
        NFT_MSG_NEWRULE,
        NLM_F_CREATE | NLM_F_APPEND,
        NFPROTO_INET,
        body,
        what,
    );
}

// Set types and flags (nf_tables.h; nft's datatype numbers).
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;
const NFT_SET_INTERVAL: u32 = 0x4;
const TYPE_IPV4_ADDR: u32 = 7;
const TYPE_IPV6_ADDR: u32 = 8;
const TYPE_INET_SERVICE: u32 = 13;
/// nft's concatenated type: each field's type shifted in by 6 bits.
const fn concat(first: u32, second: u32) -> u32 {
    (first << 6) | second
}
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;

/// nft's user data of a set (how `nft list` prints its keys), byte for byte as nft 1.0
/// writes it for each kind of set podwall makes: the key's byte order (big endian) for an
/// address set; for an address-port set a byte order of 0 and the type of its last field;
/// for a port set, also that its elements merge and that the key is `th dport`.
fn set_userdata(kind: SetKind) -> Vec<u8> {
    let u32_tlv = |kind: u8, value: u32| {
        let mut tlv = vec![kind, 4];
        tlv.extend(value.to_ne_bytes());
        tlv
    };
    match kind {
        SetKind::Addresses => u32_tlv(0, 2),
        SetKind::AddressPorts => {
            let mut out = u32_tlv(0, 0);
            out.extend([3, 8]);
            out.extend(u32_tlv(0, TYPE_INET_SERVICE));
            out.extend([1, 0]);
            out
        }
        SetKind::Ports => {
            let mut out = u32_tlv(0, 2);
            out.extend(u32_tlv(2, 1));
            let mut typeof_data = u32_tlv(0, 11);
            typeof_data.extend(u32_tlv(1, 2));
            let mut typeof_key = u32_tlv(0, 7);
            typeof_key.push(1);
            typeof_key.push(typeof_data.len() as u8);
            typeof_key.extend(typeof_data);
            out.push(3);
            out.push(typeof_key.len() as u8);
            out.extend(typeof_key);
            out
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum SetKind {
    Addresses,
    AddressPorts,
    Ports,
}

fn addr_type(family: Family) -> (u32, u32) {
    match family {
        Family::V4 => (TYPE_IPV4_ADDR, 4),
        Family::V6 => (TYPE_IPV6_ADDR, 16),
    }
}

/// NEWSET for a named set, numbered `id` in the batch, then its elements.
fn push_set(batch: &mut Batch, name: &str, set: &Set, id: u32) {
    let (addr, len) = addr_type(set.family());
    let (flags, key_type, key_len, kind) = match set {
        Set::Addresses { .. } => (0, addr, len, SetKind::Addresses),
        Set::Intervals { .. } => (NFT_SET_INTERVAL, addr, len, SetKind::Addresses),
        // Each field of a concatenation takes a multiple of 4 bytes.
        Set::AddressPorts { .. } => (
            0,
            concat(addr, TYPE_INET_SERVICE),
            len + 4,
            SetKind::AddressPorts,
        ),
    };
    let mut body = Vec::new();
    push_attr(&mut body, 1, &c_string(TABLE)); // NFTA_SET_TABLE
    push_attr(&mut body, 2, &c_string(name)); // NFTA_SET_NAME
    push_attr(&mut body, 3, &flags.to_be_bytes()); // NFTA_SET_FLAGS
    push_attr(&mut body, 4, &key_type.to_be_bytes()); // NFTA_SET_KEY_TYPE
    push_attr(&mut body, 5, &key_len.to_be_bytes()); // NFTA_SET_KEY_LEN
    push_attr(&mut body, 10, &id.to_be_bytes()); // NFTA_SET_ID
    push_attr(&mut body, 13, &set_userdata(kind)); // NFTA_SET_USERDATA
    batch.push(
        NFT_MSG_NEWSET,
        NLM_F_CREATE,
        NFPROTO_INET,
        body,
        format!("new set {name}"),
    );
    push_set_elements(batch, name, None, set_elements(set));
}

/// The anonymous set of a rule's ports (`th dport { 53, 80-90 }`), numbered `id` in the batch.
fn push_port_set(batch: &mut Batch, id: u32, ranges: &[(u16, u16)]) {
    let ranges: Vec<(u128, u128)> = (ranges.iter())
        .map(|(a, b)| (u128::from(*a), u128::from(*b)))
        .collect();
    let elements = interval_elements(&ranges, 2);
    let flags = NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_INTERVAL;
    let mut body = Vec::new();
    push_attr(&mut body, 1, &c_string(TABLE)); // NFTA_SET_TABLE
    push_attr(&mut body, 2, &c_string(ANONYMOUS_SET)); // NFTA_SET_NAME
    push_attr(&mut body, 3, &flags.to_be_bytes()); // NFTA_SET_FLAGS
    push_attr(&mut body, 4, &TYPE_INET_SERVICE.to_be_bytes()); // NFTA_SET_KEY_TYPE
    push_attr(&mut body, 5, &2u32.to_be_bytes()); // NFTA_SET_KEY_LEN
    push_attr(&mut body, 10, &id.to_be_bytes()); // NFTA_SET_ID
    let mut desc = Vec::new();
    push_attr(&mut desc, 1, &(elements.len() as u32).to_be_bytes()); // NFTA_SET_DESC_SIZE
    push_attr(&mut body, 9 | NLA_F_NESTED, &desc); // NFTA_SET_DESC
    push_attr(&mut body, 13, &set_userdata(SetKind::Ports)); // NFTA_SET_USERDATA
    batch.push(
        NFT_MSG_NEWSET,
        NLM_F_CREATE,
        NFPROTO_INET,
        body,
        "a port set".into(),
    );
    push_set_elements(batch, ANONYMOUS_SET, Some(id), elements);
}

/// NEWSETELEM messages carrying `elements` (each its `NFTA_SET_ELEM_*` attributes).
fn push_set_elements(batch: &mut Batch, set: &str, id: Option<u32>, elements: Vec<Vec<u8>>) {
    for list in element_lists(elements.into_iter()) {
        let mut body = Vec::new();
        push_attr(&mut body, NFTA_SET_ELEM_LIST_TABLE, &c_string(TABLE));
        push_attr(&mut body, NFTA_SET_ELEM_LIST_SET, &c_string(set));
        if let Some(id) = id {
            push_attr(&mut body, NFTA_SET_ELEM_LIST_SET_ID, &id.to_be_bytes());
        }
        push_attr(&mut body, NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, &list);
        let what = format!("elements of set {set}");
        batch.push(NFT_MSG_NEWSETELEM, NLM_F_CREATE, NFPROTO_INET, body, what);
    }
}

/// A set's elements as the kernel takes them.
fn set_elements(set: &Set) -> Vec<Vec<u8>> {
    match set {
        Set::Addresses { elements, .. } => (elements.iter())
            .map(|ip| key_element(&Key::Addr(*ip).bytes(), None, false))
            .collect(),
        Set::AddressPorts { elements, .. } => (elements.iter())
            .map(|(ip, port)| key_element(&Key::AddrPort(*ip, *port).bytes(), None, false))
            .collect(),
        Set::Intervals { family, ranges } => {
            let width = addr_type(*family).1 as usize;
            let ranges: Vec<(u128, u128)> = (ranges.iter())
                .map(|r| (to_u128(&r.first), to_u128(&r.last)))
                .collect();
            interval_elements(&ranges, width)
        }
    }
}

fn to_u128(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(*v4)),
        IpAddr::V6(v6) => u128::from(*v6),
    }
}

/// Inclusive ranges of `width`-byte keys as an interval set's elements, the way nft writes
/// them: each range a start and, one past its end, an end marker; a marker at 0 when the
/// first range does not start there; a range that reaches the top has no end marker and is
/// flagged open. Touching ranges are merged first (nft would).
fn interval_elements(ranges: &[(u128, u128)], width: usize) -> Vec<Vec<u8>> {
    let top = if width >= 16 {
        u128::MAX
    } else {
        (1u128 << (8 * width)) - 1
    };
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut merged: Vec<(u128, u128)> = Vec::new();
    for (first, last) in sorted {
        match merged.last_mut() {
            Some(prev) if prev.1 == top || first <= prev.1 + 1 => prev.1 = prev.1.max(last),
            _ => merged.push((first, last)),
        }
    }
    let bytes = |value: u128| value.to_be_bytes()[16 - width..].to_vec();
    let mut out = Vec::new();
    if merged.first().is_some_and(|(first, _)| *first != 0) {
        out.push(key_element(&bytes(0), None, true));
    }
    for (first, last) in merged {
        if last >= top {
            // NFTNL_UDATA_SET_ELEM_FLAGS: NFTNL_SET_ELEM_F_INTERVAL_OPEN.
            let mut open = vec![1, 4];
            open.extend(1u32.to_ne_bytes());
            out.push(key_element(&bytes(first), Some(&open), false));
        } else {
            out.push(key_element(&bytes(first), None, false));
            out.push(key_element(&bytes(last + 1), None, true));
        }
    }
    out
}

/// One element: its key, user data, and whether it ends an interval.
fn key_element(key: &[u8], userdata: Option<&[u8]>, end: bool) -> Vec<u8> {
    let mut elem = Vec::new();
    if end {
        push_attr(
            &mut elem,
            NFTA_SET_ELEM_FLAGS,
            &NFT_SET_ELEM_INTERVAL_END.to_be_bytes(),
        );
    }
    let mut key_attr = Vec::new();
    push_attr(&mut key_attr, NFTA_DATA_VALUE, key);
    push_attr(&mut elem, NFTA_SET_ELEM_KEY | NLA_F_NESTED, &key_attr);
    if let Some(data) = userdata {
        push_attr(&mut elem, NFTA_SET_ELEM_USERDATA, data);
    }
    elem
}
