//! Rules as the kernel stores them: lists of nf_tables expressions (load a field into a
//! register, compare it, look it up in a set, set the verdict). Pure; each rule here is
//! the one `render` writes as text, expression for expression as nft 1.0 compiles that text,
//! so a rule added over netlink reads back exactly like one loaded with `nft -f` (a root
//! test compares the two tables).

use podwall_policy::{End, Family, RuleVerdict};

use super::shape::{protocol, Field, Ports, RuleShape};
use super::Logging;

/// Registers: the verdict, the first 16-byte register, and the 4-byte register after an
/// IPv4 address in it (nft puts a concatenation's second field there; after an IPv6 address
/// it takes the next 16-byte register).
pub(super) const REG_VERDICT: u32 = 0;
pub(super) const REG_1: u32 = 1;
pub(super) const REG_2: u32 = 2;
pub(super) const REG32_01: u32 = 9;

pub(super) const NFT_META_PROTOCOL: u32 = 1;
pub(super) const NFT_META_IIFNAME: u32 = 6;
const NFT_META_NFPROTO: u32 = 15;
pub(super) const NFT_META_L4PROTO: u32 = 16;
const NFT_CT_STATE: u32 = 0;
pub(super) const NFT_PAYLOAD_LL_HEADER: u32 = 0;
pub(super) const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
pub(super) const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
/// `ct state` bits (host byte order, as conntrack keeps them).
const CT_STATE_INVALID: u32 = 1;
pub(super) const CT_STATE_ESTABLISHED: u32 = 2;
pub(super) const CT_STATE_RELATED: u32 = 4;
const CT_STATE_NEW: u32 = 8;
/// TCP flags: fin | syn | rst | ack, and syn.
const TCP_FLAGS_MASK: u8 = 0x17;
const TCP_SYN: u8 = 0x02;

pub const NF_DROP: i32 = 0;
pub const NF_ACCEPT: i32 = 1;
pub const NFT_GOTO: i32 = -4;
pub const NFT_RETURN: i32 = -5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq = 0,
    Neq = 1,
    Lte = 3,
    Gte = 5,
}

/// One expression. Loads go to register 1 unless said otherwise; compares and lookups read
/// register 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Meta(u32),
    Ct(u32),
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    /// `reg1 = reg1 & mask`
    And(Vec<u8>),
    Cmp(CmpOp, Vec<u8>),
    /// A named set, or the anonymous set of this batch with this id.
    Lookup {
        set: String,
        id: Option<u32>,
    },
    /// The same lookup, matching what the set does not hold.
    NotIn {
        set: String,
        id: Option<u32>,
    },
    /// `vmap @map`: the verdict the map holds for register 1, if any.
    Vmap(String),
    /// `fib saddr type`: the type of the route to the source (local, unicast, …).
    FibSaddrType,
    Verdict(i32),
    /// `goto <chain>`.
    Goto(String),
    /// `counter`: packets and bytes that reached it, read back for `/metrics`.
    Counter,
    /// `limit rate N/second burst N packets`: matches while under the rate.
    Limit(u32),
    /// `log prefix "…" group N`: to nfnetlink_log.
    Log {
        prefix: String,
        group: u16,
    },
}

/// A rule's expressions, and the port ranges of the anonymous set its `Lookup` reads, when
/// it has one (the set must be created in the batch before the rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleExprs {
    pub exprs: Vec<Expr>,
    pub anonymous_set: Option<Vec<(u16, u16)>>,
}

/// `counter drop`: the last rule of every pod chain, what no policy allowed.
pub fn counted_drop() -> Vec<Expr> {
    vec![Expr::Counter, Expr::Verdict(NF_DROP)]
}

/// The log rule before a chain's final drop (`render::log_text`).
pub fn log(logging: Logging, prefix: &str) -> Vec<Expr> {
    vec![
        Expr::Limit(logging.rate),
        Expr::Log {
            prefix: prefix.to_string(),
            group: logging.group,
        },
    ]
}

/// `ct state invalid drop`: the first rule of every pod chain.
pub fn invalid_drop() -> Vec<Expr> {
    let mut exprs = ct_state(CT_STATE_INVALID);
    exprs.push(Expr::Verdict(NF_DROP));
    exprs
}

/// `MIDSTREAM_DROP`: `ct state new tcp flags & (fin | syn | rst | ack) != syn drop`.
pub fn midstream_drop() -> Vec<Expr> {
    let mut exprs = ct_state(CT_STATE_NEW);
    exprs.extend(l4proto(6));
    exprs.extend([
        Expr::Payload {
            base: NFT_PAYLOAD_TRANSPORT_HEADER,
            offset: 13,
            len: 1,
            dreg: REG_1,
        },
        Expr::And(vec![TCP_FLAGS_MASK]),
        Expr::Cmp(CmpOp::Neq, vec![TCP_SYN]),
        Expr::Verdict(NF_DROP),
    ]);
    exprs
}

/// `ct state <bit>`: load, mask, non-zero.
pub(super) fn ct_state(bit: u32) -> Vec<Expr> {
    vec![
        Expr::Ct(NFT_CT_STATE),
        Expr::And(bit.to_ne_bytes().to_vec()),
        Expr::Cmp(CmpOp::Neq, vec![0; 4]),
    ]
}

pub(super) fn l4proto(number: u8) -> [Expr; 2] {
    [
        Expr::Meta(NFT_META_L4PROTO),
        Expr::Cmp(CmpOp::Eq, vec![number]),
    ]
}

/// `meta nfproto`: the packet is of `family`.
pub(super) fn nfproto(family: Family) -> [Expr; 2] {
    let number = match family {
        Family::V4 => NFPROTO_IPV4,
        Family::V6 => NFPROTO_IPV6,
    };
    [
        Expr::Meta(NFT_META_NFPROTO),
        Expr::Cmp(CmpOp::Eq, vec![number]),
    ]
}

/// The address field of `family` (IPv4 when the rule names none, as `ip` in the text).
pub(super) fn address(family: Option<Family>, field: Field, dreg: u32) -> Expr {
    let (offset, len) = match (family.unwrap_or(Family::V4), field) {
        (Family::V4, Field::Saddr) => (12, 4),
        (Family::V4, Field::Daddr) => (16, 4),
        (Family::V6, Field::Saddr) => (8, 16),
        (Family::V6, Field::Daddr) => (24, 16),
    };
    Expr::Payload {
        base: NFT_PAYLOAD_NETWORK_HEADER,
        offset,
        len,
        dreg,
    }
}

fn dport(dreg: u32) -> Expr {
    Expr::Payload {
        base: NFT_PAYLOAD_TRANSPORT_HEADER,
        offset: 2,
        len: 2,
        dreg,
    }
}

/// A policy rule, ending in its verdict (`return` for one that allows); `anonymous_id` is
/// the batch's id for its port set, if it needs one.
pub fn rule(shape: &RuleShape, anonymous_id: u32, verdict: &RuleVerdict) -> RuleExprs {
    let mut rule = matching(shape, anonymous_id);
    rule.exprs.extend([Expr::Counter, verdict_expr(verdict)]);
    rule
}

fn verdict_expr(verdict: &RuleVerdict) -> Expr {
    match verdict {
        RuleVerdict::Allow => Expr::Verdict(NFT_RETURN),
        RuleVerdict::Deny => Expr::Verdict(NF_DROP),
        RuleVerdict::Goto(chain) => Expr::Goto(chain.clone()),
    }
}

/// The last rule of a pod chain: `counter drop` (what no policy allowed), or, for a tier
/// chain, `counter return` or `counter goto <next tier's chain>`.
pub fn chain_end(end: &End) -> Vec<Expr> {
    match end {
        End::Drop => counted_drop(),
        End::Return => vec![Expr::Counter, Expr::Verdict(NFT_RETURN)],
        End::Goto(chain) => vec![Expr::Counter, Expr::Goto(chain.clone())],
    }
}

/// The log rule before an allow rule of a policy that logs what it allows: the same match,
/// then `log` (`render::log_text`).
pub fn logged_allow(
    shape: &RuleShape,
    anonymous_id: u32,
    logging: Logging,
    prefix: &str,
) -> RuleExprs {
    let mut rule = matching(shape, anonymous_id);
    rule.exprs.extend(log(logging, prefix));
    rule
}

/// What a policy rule matches.
fn matching(shape: &RuleShape, anonymous_id: u32) -> RuleExprs {
    let mut exprs = Vec::new();
    let mut anonymous_set = None;
    if let Some(family) = shape.family {
        exprs.extend(nfproto(family));
    }
    if let Some((field, set)) = &shape.peer {
        exprs.push(address(shape.family, *field, REG_1));
        exprs.push(Expr::Lookup {
            set: set.clone(),
            id: None,
        });
    }
    match &shape.ports {
        Ports::Any => {}
        Ports::Protocol(p) => exprs.extend(l4proto(protocol(*p).1)),
        Ports::Numbers {
            protocol: p,
            ranges,
        } => {
            exprs.extend(l4proto(protocol(*p).1));
            exprs.push(dport(REG_1));
            // nft turns a set of one port or one range into comparisons.
            match ranges.as_slice() {
                [(first, last)] if first == last => {
                    exprs.push(Expr::Cmp(CmpOp::Eq, first.to_be_bytes().to_vec()));
                }
                [(first, last)] => {
                    exprs.push(Expr::Cmp(CmpOp::Gte, first.to_be_bytes().to_vec()));
                    exprs.push(Expr::Cmp(CmpOp::Lte, last.to_be_bytes().to_vec()));
                }
                _ => {
                    exprs.push(Expr::Lookup {
                        set: ANONYMOUS_SET.into(),
                        id: Some(anonymous_id),
                    });
                    anonymous_set = Some(ranges.clone());
                }
            }
        }
        Ports::Named { protocol: p, set } => {
            exprs.extend(l4proto(protocol(*p).1));
            exprs.push(address(shape.family, Field::Daddr, REG_1));
            let port_reg = match shape.family {
                Some(Family::V6) => REG_2,
                _ => REG32_01,
            };
            exprs.push(dport(port_reg));
            exprs.push(Expr::Lookup {
                set: set.clone(),
                id: None,
            });
        }
    }
    RuleExprs {
        exprs,
        anonymous_set,
    }
}

/// The name an anonymous set is created under; the kernel numbers it.
pub const ANONYMOUS_SET: &str = "__set%d";

#[cfg(test)]
mod tests {
    use super::*;
    use podwall_policy::Protocol;

    fn shape(ports: Ports, family: Option<Family>) -> RuleShape {
        RuleShape {
            family,
            peer: Some((Field::Saddr, "pods6_x".into())),
            ports,
            comment: "ns/p#0".into(),
        }
    }

    #[test]
    fn a_rule_with_a_peer_and_a_named_port_loads_each_field_where_nft_does() {
        let named = Ports::Named {
            protocol: Protocol::Tcp,
            set: "port6_x".into(),
        };
        let allowed = rule(&shape(named, Some(Family::V6)), 1, &RuleVerdict::Allow);
        assert_eq!(allowed.anonymous_set, None);
        let loads: Vec<(u32, u32, u32)> = (allowed.exprs.iter())
            .filter_map(|e| match e {
                Expr::Payload {
                    offset, len, dreg, ..
                } => Some((*offset, *len, *dreg)),
                _ => None,
            })
            .collect();
        // ip6 saddr, then ip6 daddr . th dport (the port in the next 16-byte register).
        assert_eq!(loads, vec![(8, 16, 1), (24, 16, 1), (2, 2, 2)]);
        assert_eq!(allowed.exprs.last(), Some(&Expr::Verdict(NFT_RETURN)));
    }

    #[test]
    fn ports_become_a_comparison_a_range_or_an_anonymous_set() {
        let numbers = |ranges: Vec<(u16, u16)>| Ports::Numbers {
            protocol: Protocol::Udp,
            ranges,
        };
        let one = rule(
            &shape(numbers(vec![(53, 53)]), None),
            1,
            &RuleVerdict::Allow,
        );
        assert!(one.exprs.contains(&Expr::Cmp(CmpOp::Eq, vec![0, 53])));
        let range = rule(
            &shape(numbers(vec![(80, 90)]), None),
            1,
            &RuleVerdict::Allow,
        );
        assert!(range.exprs.contains(&Expr::Cmp(CmpOp::Gte, vec![0, 80])));
        assert!(range.exprs.contains(&Expr::Cmp(CmpOp::Lte, vec![0, 90])));
        let many = rule(
            &shape(numbers(vec![(53, 53), (80, 90)]), None),
            7,
            &RuleVerdict::Allow,
        );
        assert_eq!(many.anonymous_set, Some(vec![(53, 53), (80, 90)]));
        assert!(many.exprs.contains(&Expr::Lookup {
            set: ANONYMOUS_SET.into(),
            id: Some(7)
        }));
    }
}
