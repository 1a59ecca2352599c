//! Rules as the kernel stores them: lists of nf_tables expressions (load a field into a
//! register, compare it, look it up in a set, set the verdict). Pure; each rule here is
//! the one `render` writes as text, expression for expression as nft 1.0 compiles that text,
//! so a rule added over netlink reads back exactly like one loaded with `nft -f` (a root
//! test compares the two tables).

use podwall_policy::{End, Family, RuleVerdict};

use super::elements::{NFTA_DATA_VALUE, NFTA_DATA_VERDICT, NFTA_LIST_ELEM, NFTA_VERDICT_CODE};
use super::netlink::{c_string, push_attr, NLA_F_NESTED};
use super::shape::{protocol, Field, Ports, RuleShape};
use super::Logging;

const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;

/// Registers: the verdict, the first 16-byte register, and the 4-byte register after an
/// IPv4 address in it (nft puts a concatenation's second field there; after an IPv6 address
/// it takes the next 16-byte register).
const REG_VERDICT: u32 = 0;
const REG_1: u32 = 1;
const REG_2: u32 = 2;
const REG32_01: u32 = 9;

const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFT_CT_STATE: u32 = 0;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
/// `ct state` bits (host byte order, as conntrack keeps them).
const CT_STATE_INVALID: u32 = 1;
const CT_STATE_NEW: u32 = 8;
/// TCP flags: fin | syn | rst | ack, and syn.
const TCP_FLAGS_MASK: u8 = 0x17;
const TCP_SYN: u8 = 0x02;

pub const NF_DROP: i32 = 0;
pub const NFT_GOTO: i32 = -4;
pub const NFT_RETURN: i32 = -5;
/// NFTA_VERDICT_CHAIN: the chain of a jump or goto.
const NFTA_VERDICT_CHAIN: u16 = 2;

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
fn ct_state(bit: u32) -> Vec<Expr> {
    vec![
        Expr::Ct(NFT_CT_STATE),
        Expr::And(bit.to_ne_bytes().to_vec()),
        Expr::Cmp(CmpOp::Neq, vec![0; 4]),
    ]
}

fn l4proto(number: u8) -> [Expr; 2] {
    [
        Expr::Meta(NFT_META_L4PROTO),
        Expr::Cmp(CmpOp::Eq, vec![number]),
    ]
}

/// The address field of `family` (IPv4 when the rule names none, as `ip` in the text).
fn address(family: Option<Family>, field: Field, dreg: u32) -> Expr {
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
        let number = match family {
            Family::V4 => NFPROTO_IPV4,
            Family::V6 => NFPROTO_IPV6,
        };
        exprs.push(Expr::Meta(NFT_META_NFPROTO));
        exprs.push(Expr::Cmp(CmpOp::Eq, vec![number]));
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

/// The `NFTA_RULE_EXPRESSIONS` payload.
pub fn encode(exprs: &[Expr]) -> Vec<u8> {
    let mut list = Vec::new();
    for expr in exprs {
        let (name, data) = encode_one(expr);
        let mut elem = Vec::new();
        push_attr(&mut elem, NFTA_EXPR_NAME, &c_string(name));
        push_attr(&mut elem, NFTA_EXPR_DATA | NLA_F_NESTED, &data);
        push_attr(&mut list, NFTA_LIST_ELEM | NLA_F_NESTED, &elem);
    }
    list
}

fn be32(out: &mut Vec<u8>, kind: u16, value: u32) {
    push_attr(out, kind, &value.to_be_bytes());
}

/// A value in `NFTA_DATA_VALUE`, nested in attribute `kind`.
fn data(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let mut nested = Vec::new();
    push_attr(&mut nested, NFTA_DATA_VALUE, value);
    push_attr(out, kind | NLA_F_NESTED, &nested);
}

fn encode_one(expr: &Expr) -> (&'static str, Vec<u8>) {
    let mut out = Vec::new();
    let name = match expr {
        Expr::Meta(key) => {
            be32(&mut out, 2, *key); // NFTA_META_KEY
            be32(&mut out, 1, REG_1); // NFTA_META_DREG
            "meta"
        }
        Expr::Ct(key) => {
            be32(&mut out, 2, *key); // NFTA_CT_KEY
            be32(&mut out, 1, REG_1); // NFTA_CT_DREG
            "ct"
        }
        Expr::Payload {
            base,
            offset,
            len,
            dreg,
        } => {
            be32(&mut out, 1, *dreg); // NFTA_PAYLOAD_DREG
            be32(&mut out, 2, *base); // NFTA_PAYLOAD_BASE
            be32(&mut out, 3, *offset); // NFTA_PAYLOAD_OFFSET
            be32(&mut out, 4, *len); // NFTA_PAYLOAD_LEN
            "payload"
        }
        Expr::And(mask) => {
            be32(&mut out, 1, REG_1); // NFTA_BITWISE_SREG
            be32(&mut out, 2, REG_1); // NFTA_BITWISE_DREG
            be32(&mut out, 3, mask.len() as u32); // NFTA_BITWISE_LEN
            data(&mut out, 4, mask); // NFTA_BITWISE_MASK
            data(&mut out, 5, &vec![0; mask.len()]); // NFTA_BITWISE_XOR
            "bitwise"
        }
        Expr::Cmp(op, value) => {
            be32(&mut out, 1, REG_1); // NFTA_CMP_SREG
            be32(&mut out, 2, *op as u32); // NFTA_CMP_OP
            data(&mut out, 3, value); // NFTA_CMP_DATA
            "cmp"
        }
        Expr::Lookup { set, id } => {
            push_attr(&mut out, 1, &c_string(set)); // NFTA_LOOKUP_SET
            be32(&mut out, 2, REG_1); // NFTA_LOOKUP_SREG
            if let Some(id) = id {
                be32(&mut out, 4, *id); // NFTA_LOOKUP_SET_ID
            }
            "lookup"
        }
        Expr::Counter => {
            // As nft sends it: both values, zero.
            push_attr(&mut out, 1, &0u64.to_be_bytes()); // NFTA_COUNTER_BYTES
            push_attr(&mut out, 2, &0u64.to_be_bytes()); // NFTA_COUNTER_PACKETS
            "counter"
        }
        Expr::Limit(rate) => {
            // As nft sends it: rate and burst in packets, per second, no flags.
            push_attr(&mut out, 1, &u64::from(*rate).to_be_bytes()); // NFTA_LIMIT_RATE
            push_attr(&mut out, 2, &1u64.to_be_bytes()); // NFTA_LIMIT_UNIT
            be32(&mut out, 3, *rate); // NFTA_LIMIT_BURST
            be32(&mut out, 4, 0); // NFTA_LIMIT_TYPE: NFT_LIMIT_PKTS
            be32(&mut out, 5, 0); // NFTA_LIMIT_FLAGS
            "limit"
        }
        Expr::Log { prefix, group } => {
            push_attr(&mut out, 2, &c_string(prefix)); // NFTA_LOG_PREFIX
            push_attr(&mut out, 1, &group.to_be_bytes()); // NFTA_LOG_GROUP
            "log"
        }
        Expr::Verdict(code) => {
            immediate_verdict(&mut out, *code, None);
            "immediate"
        }
        Expr::Goto(chain) => {
            immediate_verdict(&mut out, NFT_GOTO, Some(chain));
            "immediate"
        }
    };
    (name, out)
}

/// An `immediate` of a verdict into the verdict register; `chain` for a jump or goto.
fn immediate_verdict(out: &mut Vec<u8>, code: i32, chain: Option<&str>) {
    be32(out, 1, REG_VERDICT); // NFTA_IMMEDIATE_DREG
    let mut verdict = Vec::new();
    push_attr(&mut verdict, NFTA_VERDICT_CODE, &code.to_be_bytes());
    if let Some(chain) = chain {
        push_attr(&mut verdict, NFTA_VERDICT_CHAIN, &c_string(chain));
    }
    let mut value = Vec::new();
    push_attr(&mut value, NFTA_DATA_VERDICT | NLA_F_NESTED, &verdict);
    push_attr(out, 2 | NLA_F_NESTED, &value); // NFTA_IMMEDIATE_DATA
}

/// A rule's comment as nft stores it in the rule's user data (`NFTNL_UDATA_RULE_COMMENT`).
/// Comments are at most `MAX_COMMENT` (128) bytes, so the length fits its byte.
pub fn comment_userdata(comment: &str) -> Vec<u8> {
    let text = c_string(comment);
    let mut out = vec![0, u8::try_from(text.len()).unwrap_or(u8::MAX)];
    out.extend(text);
    out
}

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

    #[test]
    fn a_comment_is_stored_with_its_nul_and_length() {
        assert_eq!(comment_userdata("s#1"), vec![0, 4, b's', b'#', b'1', 0]);
    }
}
