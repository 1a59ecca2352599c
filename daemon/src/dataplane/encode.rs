//! Expressions as the kernel takes them: the `NFTA_RULE_EXPRESSIONS` of a rule, each
//! expression its name and attributes as nf_tables.h numbers them, and a rule's comment as
//! nft stores it. Pure.

use super::elements::{NFTA_DATA_VALUE, NFTA_DATA_VERDICT, NFTA_LIST_ELEM, NFTA_VERDICT_CODE};
use super::exprs::{Expr, NFT_GOTO, REG_1, REG_VERDICT};
use super::netlink::{c_string, push_attr, push_nested, push_str};

const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFT_LOOKUP_F_INV: u32 = 1;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFTA_FIB_F_SADDR: u32 = 1;
/// NFTA_VERDICT_CHAIN: the chain of a jump or goto.
const NFTA_VERDICT_CHAIN: u16 = 2;

/// The `NFTA_RULE_EXPRESSIONS` payload.
#[cfg(test)]
pub fn encode(exprs: &[Expr]) -> Vec<u8> {
    let mut list = Vec::new();
    encode_into(&mut list, exprs);
    list
}

/// The `NFTA_RULE_EXPRESSIONS` payload, written at the end of `out`.
pub(super) fn encode_into(out: &mut Vec<u8>, exprs: &[Expr]) {
    for expr in exprs {
        push_nested(out, NFTA_LIST_ELEM, |elem| {
            push_str(elem, NFTA_EXPR_NAME, name(expr));
            push_nested(elem, NFTA_EXPR_DATA, |data| encode_data(data, expr));
        });
    }
}

fn be32(out: &mut Vec<u8>, kind: u16, value: u32) {
    push_attr(out, kind, &value.to_be_bytes());
}

/// A value in `NFTA_DATA_VALUE`, nested in attribute `kind`.
fn data(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    push_nested(out, kind, |nested| {
        push_attr(nested, NFTA_DATA_VALUE, value)
    });
}

/// The kernel's name of `expr`'s expression.
fn name(expr: &Expr) -> &'static str {
    match expr {
        Expr::Meta(_) => "meta",
        Expr::Ct(_) => "ct",
        Expr::Payload { .. } => "payload",
        Expr::And(_) => "bitwise",
        Expr::Cmp(..) => "cmp",
        Expr::Lookup { .. } | Expr::NotIn { .. } | Expr::Vmap(_) => "lookup",
        Expr::FibSaddrType => "fib",
        Expr::Counter => "counter",
        Expr::Limit(_) => "limit",
        Expr::Log { .. } => "log",
        Expr::Verdict(_) | Expr::Goto(_) => "immediate",
    }
}

/// `expr`'s attributes (`NFTA_EXPR_DATA`).
fn encode_data(out: &mut Vec<u8>, expr: &Expr) {
    match expr {
        Expr::Meta(key) => {
            be32(out, 2, *key); // NFTA_META_KEY
            be32(out, 1, REG_1); // NFTA_META_DREG
        }
        Expr::Ct(key) => {
            be32(out, 2, *key); // NFTA_CT_KEY
            be32(out, 1, REG_1); // NFTA_CT_DREG
        }
        Expr::Payload {
            base,
            offset,
            len,
            dreg,
        } => {
            be32(out, 1, *dreg); // NFTA_PAYLOAD_DREG
            be32(out, 2, *base); // NFTA_PAYLOAD_BASE
            be32(out, 3, *offset); // NFTA_PAYLOAD_OFFSET
            be32(out, 4, *len); // NFTA_PAYLOAD_LEN
        }
        Expr::And(mask) => {
            be32(out, 1, REG_1); // NFTA_BITWISE_SREG
            be32(out, 2, REG_1); // NFTA_BITWISE_DREG
            be32(out, 3, mask.len() as u32); // NFTA_BITWISE_LEN
            data(out, 4, mask); // NFTA_BITWISE_MASK
            data(out, 5, &vec![0; mask.len()]); // NFTA_BITWISE_XOR
        }
        Expr::Cmp(op, value) => {
            be32(out, 1, REG_1); // NFTA_CMP_SREG
            be32(out, 2, *op as u32); // NFTA_CMP_OP
            data(out, 3, value); // NFTA_CMP_DATA
        }
        Expr::Lookup { set, id } => lookup(out, set, *id),
        Expr::NotIn { set, id } => {
            lookup(out, set, *id);
            be32(out, 5, NFT_LOOKUP_F_INV); // NFTA_LOOKUP_FLAGS
        }
        Expr::Vmap(map) => {
            lookup(out, map, None);
            be32(out, 3, REG_VERDICT); // NFTA_LOOKUP_DREG
        }
        Expr::FibSaddrType => {
            be32(out, 1, REG_1); // NFTA_FIB_DREG
            be32(out, 2, NFT_FIB_RESULT_ADDRTYPE); // NFTA_FIB_RESULT
            be32(out, 3, NFTA_FIB_F_SADDR); // NFTA_FIB_FLAGS
        }
        Expr::Counter => {
            // As nft sends it: both values, zero.
            push_attr(out, 1, &0u64.to_be_bytes()); // NFTA_COUNTER_BYTES
            push_attr(out, 2, &0u64.to_be_bytes()); // NFTA_COUNTER_PACKETS
        }
        Expr::Limit(rate) => {
            // As nft sends it: rate and burst in packets, per second, no flags.
            push_attr(out, 1, &u64::from(*rate).to_be_bytes()); // NFTA_LIMIT_RATE
            push_attr(out, 2, &1u64.to_be_bytes()); // NFTA_LIMIT_UNIT
            be32(out, 3, *rate); // NFTA_LIMIT_BURST
            be32(out, 4, 0); // NFTA_LIMIT_TYPE: NFT_LIMIT_PKTS
            be32(out, 5, 0); // NFTA_LIMIT_FLAGS
        }
        Expr::Log { prefix, group } => {
            push_str(out, 2, prefix); // NFTA_LOG_PREFIX
            push_attr(out, 1, &group.to_be_bytes()); // NFTA_LOG_GROUP
        }
        Expr::Verdict(code) => immediate_verdict(out, *code, None),
        Expr::Goto(chain) => immediate_verdict(out, NFT_GOTO, Some(chain)),
    }
}

/// A lookup of register 1 in the named set, or in the batch's set `id`.
fn lookup(out: &mut Vec<u8>, set: &str, id: Option<u32>) {
    push_str(out, 1, set); // NFTA_LOOKUP_SET
    be32(out, 2, REG_1); // NFTA_LOOKUP_SREG
    if let Some(id) = id {
        be32(out, 4, id); // NFTA_LOOKUP_SET_ID
    }
}

/// An `immediate` of a verdict into the verdict register; `chain` for a jump or goto.
fn immediate_verdict(out: &mut Vec<u8>, code: i32, chain: Option<&str>) {
    be32(out, 1, REG_VERDICT); // NFTA_IMMEDIATE_DREG
    push_nested(out, 2, |value| {
        // NFTA_IMMEDIATE_DATA
        push_nested(value, NFTA_DATA_VERDICT, |verdict| {
            push_attr(verdict, NFTA_VERDICT_CODE, &code.to_be_bytes());
            if let Some(chain) = chain {
                push_str(verdict, NFTA_VERDICT_CHAIN, chain);
            }
        });
    });
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

    #[test]
    fn a_comment_is_stored_with_its_nul_and_length() {
        assert_eq!(comment_userdata("s#1"), vec![0, 4, b's', b'#', b'1', 0]);
    }
}
